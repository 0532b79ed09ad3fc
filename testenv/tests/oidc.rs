//! The test OIDC provider (real Dex on loopback): the password grant gives a JWT signed by
//! the issuer's published key with the claims the SSO tests rely on, the refresh grant
//! works, and the 0.9.0 `jmp login` signs in against it and refreshes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use jumpstarter_testenv::oidc::{CLIENT_ID, Dex, DexOptions, DexUser};
use serde_json::Value;

const TTL: Duration = Duration::from_secs(600);

fn part(token: &str, index: usize) -> Value {
    let encoded = token.split('.').nth(index).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).expect("base64url")).expect("JSON")
}

/// Verifies the token's signature with the key of its `kid` in the issuer's JWKS, its
/// `iss`, `aud` and `exp`, and returns its claims.
async fn verify(dex: &Dex, token: &str) -> anyhow::Result<Value> {
    let header = jsonwebtoken::decode_header(token)?;
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.context("no kid in the token header")?;
    let jwks = dex.jwks().await?;
    let key = jwks["keys"]
        .as_array()
        .context("no keys")?
        .iter()
        .find(|key| key["kid"] == kid.as_str())
        .with_context(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_rsa_components(
        key["n"].as_str().context("n")?,
        key["e"].as_str().context("e")?,
    )?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[dex.issuer()]);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    Ok(jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test]
async fn password_grant_gives_a_signed_jwt_and_refresh_works() {
    let dex = Dex::start(DexOptions {
        token_ttl: TTL,
        ..DexOptions::default()
    })
    .await
    .expect("Dex starts");
    assert!(
        dex.issuer().starts_with("https://127.0.0.1:"),
        "{}",
        dex.issuer()
    );
    assert!(dex.issuer().ends_with("/dex"), "{}", dex.issuer());
    assert!(
        std::fs::read_to_string(dex.ca_file())
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let discovery = dex.discovery().await.unwrap();
    assert_eq!(discovery["issuer"], dex.issuer());
    assert_eq!(discovery["token_endpoint"], dex.token_endpoint());
    let grants = discovery["grant_types_supported"].to_string();
    assert!(
        grants.contains("\"password\"") && grants.contains("\"refresh_token\""),
        "{grants}"
    );

    let tokens = dex.login("alice").await.expect("password grant");
    assert_eq!(tokens.token_type.to_lowercase(), "bearer");
    assert!(
        tokens.expires_in <= TTL.as_secs() && tokens.expires_in + 60 >= TTL.as_secs(),
        "expires_in {}",
        tokens.expires_in
    );
    let claims = verify(&dex, &tokens.access_token)
        .await
        .expect("a valid JWT");
    assert_eq!(claims["iss"], dex.issuer());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["preferred_username"], "alice");
    // jmp's scopes (openid profile offline_access) carry no email and no groups.
    assert!(claims.get("email").is_none(), "{claims}");
    assert!(claims.get("groups").is_none(), "{claims}");
    let sub = claims["sub"].as_str().expect("sub").to_owned();
    assert!(!sub.is_empty());
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, TTL.as_secs(), "{claims}");
    assert!(iat.abs_diff(now()) < 60, "iat {iat}");
    assert_eq!(part(&tokens.access_token, 0)["alg"], "RS256");

    // Another user has another subject.
    let bob = verify(&dex, &dex.login("bob").await.unwrap().access_token)
        .await
        .unwrap();
    assert_eq!(bob["preferred_username"], "bob");
    assert_ne!(bob["sub"], sub.as_str());

    // Wrong password and unknown user are refused with Dex's own error.
    let alice = dex.user("alice").clone();
    let err = dex
        .password_grant(&alice.email, "not-the-password")
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("Invalid username or password"),
        "{err:#}"
    );
    let err = dex
        .password_grant("nobody@example.com", &alice.password)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("Invalid username or password"),
        "{err:#}"
    );

    // The refresh grant gives a new access token of the same subject.
    let refresh = tokens
        .refresh_token
        .clone()
        .expect("refresh token (offline_access)");
    let refreshed = dex.refresh_grant(&refresh).await.expect("refresh grant");
    let refreshed_claims = verify(&dex, &refreshed.access_token).await.unwrap();
    assert_eq!(refreshed_claims["sub"], sub.as_str());
    assert_eq!(refreshed_claims["preferred_username"], "alice");
    assert!(refreshed.refresh_token.is_some());
    let err = dex.refresh_grant("not-a-refresh-token").await.unwrap_err();
    assert!(format!("{err:#}").contains("invalid_request"), "{err:#}");

    // Scopes email and groups add those claims.
    let tokens = dex
        .password_grant_with_scopes(
            &alice.email,
            &alice.password,
            &["openid", "email", "groups"],
        )
        .await
        .unwrap();
    let claims = verify(&dex, &tokens.access_token).await.unwrap();
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], serde_json::json!(["jumpstarter-users"]));
}

#[tokio::test]
async fn token_lifetime_follows_the_option_and_users_are_configurable() {
    let carol = DexUser::new("carol");
    let dex = Dex::start(DexOptions {
        token_ttl: Duration::from_secs(90),
        users: vec![carol.clone()],
        ..DexOptions::default()
    })
    .await
    .unwrap();
    let tokens = dex
        .password_grant(&carol.email, &carol.password)
        .await
        .unwrap();
    let claims = verify(&dex, &tokens.access_token).await.unwrap();
    assert_eq!(claims["preferred_username"], "carol");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        90
    );
    // Only the configured users exist.
    let alice = DexUser::new("alice");
    assert!(
        dex.password_grant(&alice.email, &alice.password)
            .await
            .is_err()
    );

    // Dropping the fixture stops Dex: its port no longer answers.
    let issuer = dex.issuer().to_owned();
    let port: u16 = issuer
        .trim_start_matches("https://127.0.0.1:")
        .trim_end_matches("/dex")
        .parse()
        .unwrap();
    drop(dex);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// `jmp login` (0.9.0) as a user runs it: password grant through authlib with the public
/// client, verifying Dex's TLS with SSL_CERT_FILE; then a second `jmp login` refreshes.
#[tokio::test]
async fn jmp_login_signs_in_and_refreshes() {
    let dex = Dex::start(DexOptions::default()).await.unwrap();
    let alice = dex.user("alice").clone();
    let home = tempfile::tempdir().unwrap();
    let jmp = jumpstarter_testenv::venv().join("bin/jmp");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&jmp)
            .args(args)
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env("SSL_CERT_FILE", dex.ca_file())
            .output()
            .expect("run jmp");
        assert!(
            output.status.success(),
            "jmp {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&[
        "login",
        "--client",
        "alice",
        "--endpoint",
        "127.0.0.1:1",
        "--namespace",
        "default",
        "--name",
        "alice",
        "--issuer",
        dex.issuer(),
        "--username",
        &alice.email,
        "--password",
        &alice.password,
        "--unsafe",
        "--nointeractive",
    ]);
    let config_file = home.path().join(".config/jumpstarter/clients/alice.yaml");
    let config = std::fs::read_to_string(&config_file).unwrap();
    let field = |config: &str, key: &str| {
        config
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}: ")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {key} in {config_file:?}"))
    };
    let token = field(&config, "token");
    let claims = verify(&dex, &token)
        .await
        .expect("jmp's token is Dex's JWT");
    assert_eq!(claims["preferred_username"], "alice");
    assert!(!field(&config, "refresh_token").is_empty());

    let out = run(&["login", "--client", "alice", "--nointeractive"]);
    assert!(out.contains("Refreshed access token"), "{out}");
    let refreshed = field(&std::fs::read_to_string(&config_file).unwrap(), "token");
    let refreshed_claims = verify(&dex, &refreshed).await.unwrap();
    assert_eq!(refreshed_claims["sub"], claims["sub"]);
}

/// Stops the script's Dex however the test ends.
struct ScriptGuard {
    script: PathBuf,
    dir: PathBuf,
}

impl Drop for ScriptGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.script)
            .arg("stop")
            .env("OIDC_DIR", &self.dir)
            .status();
    }
}

/// `tools/oidc-testenv.sh start` prints the env file on its last line; its issuer answers
/// the password grant of OIDC_USERNAME/OIDC_PASSWORD over TLS verified with OIDC_CA_FILE,
/// with tokens of OIDC_TOKEN_TTL; `stop` stops Dex.
#[test]
fn oidc_testenv_script_starts_and_stops_dex() {
    let dir = tempfile::tempdir().unwrap();
    let guard = ScriptGuard {
        script: jumpstarter_testenv::repo_root().join("tools/oidc-testenv.sh"),
        dir: dir.path().join("state"),
    };
    let output = std::process::Command::new(&guard.script)
        .arg("start")
        .env("OIDC_DIR", &guard.dir)
        .env("OIDC_TOKEN_TTL", "7m")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "start: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let env_file = stdout.lines().last().expect("env file on the last line");
    let env: std::collections::BTreeMap<String, String> = std::fs::read_to_string(env_file)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    for key in [
        "OIDC_ISSUER",
        "OIDC_CA_FILE",
        "OIDC_CLIENT_ID",
        "OIDC_USERNAME",
        "OIDC_PASSWORD",
    ] {
        assert!(env.contains_key(key), "{key} missing from {env_file}");
    }
    assert_eq!(env["OIDC_CLIENT_ID"], CLIENT_ID);
    let token = |user: &str, password: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", &env["OIDC_CA_FILE"]])
            .args([
                "-d",
                "grant_type=password",
                "-d",
                "client_id=jumpstarter-cli",
            ])
            .args(["-d", "scope=openid profile offline_access"])
            .args(["--data-urlencode", &format!("username={user}")])
            .args(["--data-urlencode", &format!("password={password}")])
            .arg(format!("{}/token", env["OIDC_ISSUER"]))
            .output()
            .unwrap()
    };
    let answer = token(&env["OIDC_USERNAME"], &env["OIDC_PASSWORD"]);
    let answer: Value = serde_json::from_slice(&answer.stdout).expect("token response JSON");
    let access_token = answer["access_token"].as_str().expect("access_token");
    let claims = part(access_token, 1);
    assert_eq!(claims["iss"], env["OIDC_ISSUER"].as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        420
    );
    let refused = token(&env["OIDC_USERNAME"], "wrong");
    assert!(String::from_utf8_lossy(&refused.stdout).contains("Invalid username or password"));

    let pid: i32 = std::fs::read_to_string(guard.dir.join("dex.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::process::Command::new(&guard.script)
        .arg("stop")
        .env("OIDC_DIR", &guard.dir)
        .status()
        .unwrap();
    assert!(status.success());
    // Gone, or a zombie waiting for its reaper (the script's shell has exited).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "dex {pid} still runs: {state}"
    );
    assert!(
        token(&env["OIDC_USERNAME"], &env["OIDC_PASSWORD"])
            .stdout
            .is_empty()
    );
}
