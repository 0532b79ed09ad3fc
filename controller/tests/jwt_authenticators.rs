//! JWT authenticators against a real HTTPS issuer served on loopback (discovery + JWKS,
//! TLS with a CA minted in the test, signing keys made in the test): verification, the
//! go-oidc error texts 0.9.0 clients see, key rotation, claim rules and mappings, and the
//! CA file reload.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jumpstarter_certs::{Ca, ClientAuth, ServerCertParams, server_config};
use jumpstarter_controller::jwt::{
    Authenticators, FetchLabels, JwtError, JwtMetrics, JwtOptions, parse_authenticators,
};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// An OIDC issuer on 127.0.0.1: `/.well-known/openid-configuration` and `/keys`.
struct TestIssuer {
    url: String,
    ca: Ca,
    state: Arc<Mutex<IssuerState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct IssuerState {
    url: String,
    /// The `issuer` the discovery document claims (default: the URL).
    claimed_issuer: Option<String>,
    keys: Vec<Value>,
    discovery_hits: usize,
    jwks_hits: usize,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// TLS over TCP for `axum::serve`; failed handshakes are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl TestIssuer {
    async fn start(keys: &[&TestKey]) -> TestIssuer {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate("test oidc ca", now, Duration::days(1)).expect("ca");
        let cert = ca
            .issue_server_cert(
                &ServerCertParams {
                    dns_names: vec![],
                    ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                    validity: Duration::days(1),
                },
                now,
            )
            .expect("server cert");
        let tls = server_config(cert.credentials(), vec![], ClientAuth::None).expect("tls");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}", tcp.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(IssuerState {
            url: url.clone(),
            keys: keys.iter().map(|key| key.jwk.clone()).collect(),
            ..IssuerState::default()
        }));
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(state): State<Arc<Mutex<IssuerState>>>| async move {
                    let mut state = state.lock().expect("state");
                    state.discovery_hits += 1;
                    let issuer = state.claimed_issuer.clone().unwrap_or(state.url.clone());
                    json_response(&json!({
                        "issuer": issuer,
                        "jwks_uri": format!("{}/keys", state.url),
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    }))
                }),
            )
            .route(
                "/keys",
                get(|State(state): State<Arc<Mutex<IssuerState>>>| async move {
                    let mut state = state.lock().expect("state");
                    state.jwks_hits += 1;
                    json_response(&json!({"keys": state.keys}))
                }),
            )
            .with_state(state.clone());
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        TestIssuer {
            url,
            ca,
            state,
            task,
        }
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        self.state.lock().expect("state").keys = keys.iter().map(|key| key.jwk.clone()).collect();
    }

    fn hits(&self) -> (usize, usize) {
        let state = self.state.lock().expect("state");
        (state.discovery_hits, state.jwks_hits)
    }

    /// An authenticator config for this issuer: audience `jumpstarter-cli`, username from
    /// `email` with prefix `dex:`, groups, uid, inline CA; `extra` merged into it.
    fn config(&self, extra: Value) -> Value {
        let mut config = json!({
            "issuer": {
                "url": self.url,
                "audiences": ["jumpstarter-cli"],
                "certificateAuthority": self.ca.cert_pem(),
            },
            "claimMappings": {
                "username": {"claim": "email", "prefix": "dex:"},
                "groups": {"claim": "groups", "prefix": "oidc:"},
                "uid": {"claim": "sub"},
            },
        });
        merge(&mut config, extra);
        config
    }

    fn claims(&self, now: OffsetDateTime) -> Value {
        json!({
            "iss": self.url,
            "sub": "CiQwOGE4Njg0Yi1kYjg4",
            "aud": "jumpstarter-cli",
            "email": "alice@example.com",
            "email_verified": true,
            "groups": ["lab", "admins"],
            "iat": now.unix_timestamp(),
            "exp": (now + Duration::hours(1)).unix_timestamp(),
        })
    }
}

fn json_response(value: &Value) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// A signing key and its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn ec(kid: &str) -> TestKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("pem");
        TestKey::new(kid, Algorithm::ES256, encoding)
    }

    /// RS256 with the fixture key (ring cannot generate RSA keys; made with
    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`).
    fn rsa(kid: &str) -> TestKey {
        let pem = include_bytes!("fixtures/jwt-issuer-rsa.pem");
        let encoding = EncodingKey::from_rsa_pem(pem).expect("rsa pem");
        TestKey::new(kid, Algorithm::RS256, encoding)
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> TestKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_string());
        TestKey {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk: serde_json::to_value(jwk).expect("jwk json"),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

fn build(configs: &[Value], options: JwtOptions) -> (Authenticators, JwtMetrics) {
    let metrics = JwtMetrics::default();
    let configs = parse_authenticators(configs).expect("valid configuration");
    let authenticators = Authenticators::new(configs, options, &metrics).expect("authenticators");
    (authenticators, metrics)
}

async fn refused(authenticators: &Authenticators, token: &str, now: OffsetDateTime) -> JwtError {
    authenticators
        .authenticate(token, now)
        .await
        .expect_err("token must be refused")
}

#[tokio::test]
async fn a_valid_token_maps_to_the_prefixed_username() {
    let es = TestKey::ec("es-1");
    let rs = TestKey::rsa("rs-1");
    let issuer = TestIssuer::start(&[&es, &rs]).await;
    let (authenticators, metrics) = build(&[issuer.config(json!({}))], JwtOptions::default());
    let now = OffsetDateTime::now_utc();

    for key in [&es, &rs] {
        let identity = authenticators
            .authenticate(&key.sign(&issuer.claims(now)), now)
            .await
            .expect("token accepted")
            .expect("issuer configured");
        assert_eq!(identity.username, "dex:alice@example.com");
        assert_eq!(identity.uid.as_deref(), Some("CiQwOGE4Njg0Yi1kYjg4"));
        assert_eq!(identity.groups, ["oidc:lab", "oidc:admins"]);
        assert_eq!(identity.issuer, issuer.url);
    }
    // One discovery and one key fetch served both tokens.
    assert_eq!(issuer.hits(), (1, 1));
    for document in ["discovery", "jwks"] {
        let fetches = metrics
            .fetches
            .get_or_create(&FetchLabels {
                issuer: issuer.url.clone(),
                document,
                result: "ok",
            })
            .get();
        assert_eq!(fetches, 1, "{document} fetches");
    }
}

#[tokio::test]
async fn refusals_carry_the_0_9_0_texts() {
    let key = TestKey::ec("k1");
    let issuer = TestIssuer::start(&[&key]).await;
    let (authenticators, _) = build(&[issuer.config(json!({}))], JwtOptions::default());
    let now = OffsetDateTime::now_utc();

    // Expired: the text jmp looks for to refresh its token.
    let mut claims = issuer.claims(now);
    claims["exp"] = json!(1_796_292_000); // 2026-12-03T10:00:00Z
    let error = refused(
        &authenticators,
        &key.sign(&claims),
        now.max(time::macros::datetime!(2026-12-04 0:00 UTC)),
    )
    .await;
    assert_eq!(
        error.to_string(),
        "oidc: verify token: oidc: token is expired (Token Expiry: 2026-12-03 10:00:00 +0000 UTC)"
    );
    assert_eq!(error.reason(), "jwt_expired");

    // No exp: go-oidc compares Go's zero time, so the token is expired.
    let mut claims = issuer.claims(now);
    claims.as_object_mut().expect("object").remove("exp");
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert_eq!(
        error.to_string(),
        "oidc: verify token: oidc: token is expired (Token Expiry: 0001-01-01 00:00:00 +0000 UTC)"
    );

    // Wrong audience.
    let mut claims = issuer.claims(now);
    claims["aud"] = json!(["other"]);
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert_eq!(
        error.to_string(),
        r#"oidc: verify token: oidc: expected audience "jumpstarter-cli" got ["other"]"#
    );

    // Signed by another key under the issuer's kid.
    let impostor = TestKey::ec("k1");
    let error = refused(&authenticators, &impostor.sign(&issuer.claims(now)), now).await;
    assert_eq!(
        error.to_string(),
        "oidc: verify token: failed to verify signature: failed to verify id token signature"
    );
    assert!(!error.is_unavailable());

    // An HMAC token naming the issuer: refused by algorithm, no key is used as a secret.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hmac = jsonwebtoken::encode(
        &header,
        &issuer.claims(now),
        &EncodingKey::from_secret(b"secret").expect("hmac key"),
    )
    .expect("sign");
    let error = refused(&authenticators, &hmac, now).await;
    assert_eq!(
        error.to_string(),
        r#"oidc: verify token: oidc: id token signed with unsupported algorithm, expected ["RS256" "RS384" "RS512" "ES256" "ES384" "PS256" "PS384" "PS512"] got "HS256""#
    );

    // Not yet valid beyond go-oidc's 5 minutes of leeway; within it, accepted.
    let mut claims = issuer.claims(now);
    claims["nbf"] = json!((now + Duration::minutes(4)).unix_timestamp());
    authenticators
        .authenticate(&key.sign(&claims), now)
        .await
        .expect("nbf within leeway");
    claims["nbf"] = json!((now + Duration::minutes(6)).unix_timestamp());
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert!(
        error
            .to_string()
            .starts_with("oidc: verify token: oidc: current time "),
        "{error}"
    );

    // Unverified email with the email username claim (the apiserver's rule).
    let mut claims = issuer.claims(now);
    claims["email_verified"] = json!(false);
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert_eq!(error.to_string(), "oidc: email not verified");

    // No username claim.
    let mut claims = issuer.claims(now);
    claims.as_object_mut().expect("object").remove("email");
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert_eq!(
        error.to_string(),
        r#"oidc: parse username claims "email": claim not present"#
    );
}

#[tokio::test]
async fn tokens_of_other_issuers_are_left_to_other_authenticators() {
    let key = TestKey::ec("k1");
    let issuer = TestIssuer::start(&[&key]).await;
    let (authenticators, _) = build(&[issuer.config(json!({}))], JwtOptions::default());
    let now = OffsetDateTime::now_utc();

    let mut claims = issuer.claims(now);
    claims["iss"] = json!("https://localhost:8085");
    assert_eq!(
        authenticators.authenticate(&key.sign(&claims), now).await,
        Ok(None)
    );
    for token in ["", "not-a-jwt", "a.b.c", "a.b"] {
        assert_eq!(
            authenticators.authenticate(token, now).await,
            Ok(None),
            "{token}"
        );
    }
    // Nothing was fetched for them.
    assert_eq!(issuer.hits(), (0, 0));
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_at_most_once_per_interval() {
    let old = TestKey::ec("old");
    let new = TestKey::rsa("new");
    let issuer = TestIssuer::start(&[&old]).await;
    let (authenticators, _) = build(&[issuer.config(json!({}))], JwtOptions::default());
    let now = OffsetDateTime::now_utc();

    authenticators
        .authenticate(&old.sign(&issuer.claims(now)), now)
        .await
        .expect("old key accepted");
    assert_eq!(issuer.hits(), (1, 1));

    // A kid the cache lacks, right after the first fetch: no fetch within the interval.
    let rotated = new.sign(&issuer.claims(now));
    let error = refused(&authenticators, &rotated, now + Duration::seconds(3)).await;
    assert!(matches!(error, JwtError::BadSignature), "{error}");
    assert_eq!(issuer.hits(), (1, 1));

    // After the interval: one refetch, the kid is still unknown, refused.
    let error = refused(&authenticators, &rotated, now + Duration::seconds(11)).await;
    assert!(matches!(error, JwtError::BadSignature), "{error}");
    assert_eq!(issuer.hits(), (1, 2));

    // The issuer rotates; within the interval of that refetch the keys are not fetched.
    issuer.set_keys(&[&old, &new]);
    let error = refused(&authenticators, &rotated, now + Duration::seconds(15)).await;
    assert!(matches!(error, JwtError::BadSignature), "{error}");
    assert_eq!(issuer.hits(), (1, 2));

    // After it, the unknown kid makes one fetch that finds the new key.
    let later = now + Duration::seconds(22);
    let identity = authenticators
        .authenticate(&rotated, later)
        .await
        .expect("rotated key accepted after the refetch")
        .expect("issuer configured");
    assert_eq!(identity.username, "dex:alice@example.com");
    assert_eq!(issuer.hits(), (1, 3));
    // Both keys now verify without any fetch.
    authenticators
        .authenticate(&old.sign(&issuer.claims(later)), later)
        .await
        .expect("old key still accepted");
    assert_eq!(issuer.hits(), (1, 3));
}

#[tokio::test]
async fn claim_rules_and_several_audiences() {
    let key = TestKey::ec("k1");
    let issuer = TestIssuer::start(&[&key]).await;
    let config = issuer.config(json!({
        "issuer": {"audiences": ["jumpstarter-cli", "kubernetes"], "audienceMatchPolicy": "MatchAny"},
        "claimValidationRules": [{"claim": "hd", "requiredValue": "example.com"}],
        "claimMappings": {"username": {"claim": "sub", "prefix": ""}},
    }));
    let (authenticators, _) = build(&[config], JwtOptions::default());
    let now = OffsetDateTime::now_utc();

    let mut claims = issuer.claims(now);
    claims["hd"] = json!("example.com");
    claims["aud"] = json!(["kubernetes"]);
    let identity = authenticators
        .authenticate(&key.sign(&claims), now)
        .await
        .expect("accepted")
        .expect("issuer configured");
    assert_eq!(identity.username, "CiQwOGE4Njg0Yi1kYjg4");

    claims["hd"] = json!("evil.com");
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert_eq!(
        error.to_string(),
        "oidc: required claim hd value does not match. Got = evil.com, want = example.com"
    );
    claims.as_object_mut().expect("object").remove("hd");
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert_eq!(error.to_string(), "oidc: parse claim hd: claim not present");

    claims["hd"] = json!("example.com");
    claims["aud"] = json!("other");
    let error = refused(&authenticators, &key.sign(&claims), now).await;
    assert_eq!(
        error.to_string(),
        r#"oidc: expected audience in ["jumpstarter-cli" "kubernetes"] got ["other"]"#
    );
}

#[tokio::test]
async fn a_ca_file_is_reread_when_it_changes() {
    let key = TestKey::ec("k1");
    let issuer = TestIssuer::start(&[&key]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.crt");
    let now = OffsetDateTime::now_utc();
    let stranger = Ca::generate("another ca", now, Duration::days(1)).expect("ca");
    std::fs::write(&ca_file, stranger.cert_pem()).expect("write ca");
    let config = issuer.config(json!({
        "issuer": {"certificateAuthority": ca_file.display().to_string()},
    }));
    let (authenticators, metrics) = build(&[config], JwtOptions::default());
    let token = key.sign(&issuer.claims(now));

    // The file's CA did not sign the issuer's certificate: the keys are unavailable.
    let error = refused(&authenticators, &token, now).await;
    assert!(error.is_unavailable(), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("oidc: verify token: failed to verify signature: fetching keys GET "),
        "{error}"
    );
    assert_eq!(
        metrics
            .fetches
            .get_or_create(&FetchLabels {
                issuer: issuer.url.clone(),
                document: "discovery",
                result: "request",
            })
            .get(),
        1
    );

    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );

    // The file is replaced (as a mounted Secret or ConfigMap is): the next attempt reads it.
    std::fs::write(&ca_file, issuer.ca.cert_pem()).expect("write ca");
    let error = refused(&authenticators, &token, now + Duration::seconds(1)).await;
    assert!(
        error.is_unavailable(),
        "within the refetch interval: {error}"
    );
    let later = now + Duration::seconds(11);
    let identity = authenticators
        .authenticate(&token, later)
        .await
        .expect("accepted with the new CA")
        .expect("issuer configured");
    assert_eq!(identity.username, "dex:alice@example.com");

    // A CA file that is missing at start is refused with its field.
    let config = issuer.config(json!({
        "issuer": {"certificateAuthority": dir.path().join("missing.crt").display().to_string()},
    }));
    let configs = parse_authenticators(&[config]).expect("valid configuration");
    let error = Authenticators::new(configs, JwtOptions::default(), &JwtMetrics::default())
        .expect_err("missing CA file");
    assert!(
        error
            .to_string()
            .starts_with("jwt[0].issuer.certificateAuthority: Invalid value: "),
        "{error}"
    );
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let key = TestKey::ec("k1");
    let issuer = TestIssuer::start(&[&key]).await;
    issuer.state.lock().expect("state").claimed_issuer =
        Some("https://elsewhere.example.com".into());
    let (authenticators, _) = build(&[issuer.config(json!({}))], JwtOptions::default());
    let now = OffsetDateTime::now_utc();
    let error = refused(&authenticators, &key.sign(&issuer.claims(now)), now).await;
    assert!(error.is_unavailable(), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "oidc: verify token: failed to verify signature: fetching keys oidc: issuer did not match the issuer returned by provider, expected {:?} got \"https://elsewhere.example.com\"",
            issuer.url
        )
    );

    // With discoveryURL set, the document's issuer is not compared (go-oidc).
    let config = issuer.config(json!({
        "issuer": {"discoveryURL": format!("{}/.well-known/openid-configuration", issuer.url)},
    }));
    let (authenticators, _) = build(&[config], JwtOptions::default());
    authenticators
        .authenticate(&key.sign(&issuer.claims(now)), now)
        .await
        .expect("accepted through discoveryURL");
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_a_refusal() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("https://127.0.0.1:{port}");
    let ca = Ca::generate("unused", OffsetDateTime::now_utc(), Duration::days(1)).expect("ca");
    let config = json!({
        "issuer": {"url": url, "audiences": ["a"], "certificateAuthority": ca.cert_pem()},
        "claimMappings": {"username": {"claim": "sub", "prefix": ""}},
    });
    let (authenticators, _) = build(&[config], JwtOptions::default());
    let key = TestKey::ec("k1");
    let now = OffsetDateTime::now_utc();
    let token = key.sign(&json!({
        "iss": url, "aud": "a", "sub": "x", "exp": (now + Duration::hours(1)).unix_timestamp(),
    }));
    let error = refused(&authenticators, &token, now).await;
    assert!(error.is_unavailable(), "{error}");
    assert_eq!(error.reason(), "jwt_keys_unavailable");
}
