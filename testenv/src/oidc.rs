//! A real OpenID Connect provider for the SSO tests: Dex on loopback.
//!
//! [`Dex::start`] runs the `dex` binary built by `tools/dex-bin/build.sh` (or the one env
//! `DEX_BIN` names) in its own temporary directory, on its own loopback port, over TLS
//! with a CA made for it, and kills it when the [`Dex`] value is dropped. Its setup is the
//! one `tools/oidc-testenv.sh` writes: in-memory storage, static users (the password
//! database, connector id `local`), and the public client `jumpstarter-cli` that the
//! 0.9.0 `jmp login` uses, allowed the password, refresh-token and authorization-code
//! grants (any `http://localhost:<port>/…` redirect).
//!
//! The password grant takes the user's **email** as the login name (Dex's password
//! database is keyed by email): `alice@example.com` for the user `alice`.
//!
//! # Claims
//! Access tokens (like ID tokens) are RS256 JWTs with a `kid`, carrying
//! - `iss`: [`Dex::issuer`] (`https://127.0.0.1:<port>/dex`),
//! - `sub`: an opaque string (base64 of the user id and the connector id `local`),
//! - `aud`: the client id as a single string (`"jumpstarter-cli"`),
//! - `exp`, `iat` ([`DexOptions::token_ttl`] apart), `at_hash`,
//! - with scope `profile` (which `jmp login` requests): `name` and `preferred_username`,
//!   both the user name (`"alice"`),
//! - with scope `email`: `email` (`"alice@example.com"`) and `email_verified` (`true`),
//! - with scope `groups`: `groups` (`["jumpstarter-users"]`).
//!
//! `jmp login` asks for `openid profile` (+ `offline_access`), so its tokens have no
//! `email`; tests map users by `preferred_username` (e.g. prefix `dex:` → `dex:alice`).
//!
//! There is no skip: a missing binary fails with the command that builds it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use jumpstarter_certs::{Ca, ServerCertParams};
use rustls_pki_types::ServerName;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The client id of the 0.9.0 `jmp login` (its `--client-id` default).
pub const CLIENT_ID: &str = "jumpstarter-cli";

/// The id of Dex's password-database connector (part of every `sub`).
pub const CONNECTOR_ID: &str = "local";

/// The scopes `jmp login` requests (with `--offline-access`, its default).
pub const JMP_SCOPES: &[&str] = &["openid", "profile", "offline_access"];

/// How long Dex may take to serve its discovery document after it is spawned (it starts
/// in well under a second; the bound only keeps a broken start from hanging a test).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between discovery probes while Dex starts.
const START_POLL: Duration = Duration::from_millis(50);

/// Bound of one HTTPS exchange with Dex (a token request takes milliseconds).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts to start Dex: the port is picked free before Dex binds it, and another process
/// may take it in between.
const START_ATTEMPTS: u32 = 3;

/// bcrypt cost of the static users' hashes: the lowest Dex accepts at login (Go's
/// `bcrypt.DefaultCost`), since every password grant pays it.
const BCRYPT_COST: u32 = 10;

/// Lifetime of the generated CA and server certificate (longer than any test).
const CERT_VALIDITY: time::Duration = time::Duration::days(2);

/// A static user of the provider.
#[derive(Clone)]
pub struct DexUser {
    /// The user name: the `name` and `preferred_username` claims.
    pub username: String,
    /// The email: the password grant's login name and the `email` claim.
    pub email: String,
    /// The password (random unless set).
    pub password: String,
    /// The `groups` claim (with scope `groups`).
    pub groups: Vec<String>,
    /// Dex's user id (encoded into `sub`).
    pub user_id: String,
}

impl DexUser {
    /// A user `<username>` with email `<username>@example.com`, a random password and
    /// the group `jumpstarter-users`.
    pub fn new(username: &str) -> DexUser {
        DexUser {
            username: username.to_owned(),
            email: format!("{username}@example.com"),
            password: uuid::Uuid::new_v4().simple().to_string(),
            groups: vec!["jumpstarter-users".to_owned()],
            user_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

impl fmt::Debug for DexUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DexUser")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .field("groups", &self.groups)
            .field("user_id", &self.user_id)
            .finish()
    }
}

/// A confidential client of the provider, for a web application's authorization-code
/// logins (such as the dashboard's).
#[derive(Clone)]
pub struct DexWebClient {
    pub id: String,
    pub secret: String,
    /// The redirect URIs Dex accepts for it (exactly).
    pub redirect_uris: Vec<String>,
}

impl fmt::Debug for DexWebClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DexWebClient")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

/// How to set up the provider.
#[derive(Debug, Clone)]
pub struct DexOptions {
    /// Lifetime of ID and access tokens (Dex's `expiry.idTokens`).
    pub token_ttl: Duration,
    /// The static users.
    pub users: Vec<DexUser>,
    /// Confidential clients besides the public `jumpstarter-cli`.
    pub web_clients: Vec<DexWebClient>,
}

impl Default for DexOptions {
    /// Tokens valid for an hour; users `alice` and `bob`.
    fn default() -> DexOptions {
        DexOptions {
            token_ttl: Duration::from_secs(3600),
            users: vec![DexUser::new("alice"), DexUser::new("bob")],
            web_clients: Vec::new(),
        }
    }
}

/// A token response of Dex's token endpoint.
#[derive(Clone, Deserialize)]
pub struct Tokens {
    /// The access token: a JWT (see the module docs for its claims).
    pub access_token: String,
    /// The refresh token (present when scope `offline_access` was granted).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The ID token.
    #[serde(default)]
    pub id_token: Option<String>,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// `bearer`.
    pub token_type: String,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// A running Dex, killed on drop.
pub struct Dex {
    child: Child,
    https: Https,
    issuer: String,
    ca_file: PathBuf,
    ca_pem: String,
    log_file: PathBuf,
    users: Vec<DexUser>,
    // Last: removed after the process is gone.
    dir: tempfile::TempDir,
}

/// HTTPS to Dex's port, trusting only Dex's CA.
struct Https {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for Dex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dex")
            .field("pid", &self.child.id())
            .field("issuer", &self.issuer)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Dex {
    /// Starts Dex and waits until it serves its discovery document.
    ///
    /// # Errors
    /// When the binary is missing (the message names the build command), the
    /// certificates cannot be made, or Dex does not come up (the message has its log).
    pub async fn start(options: DexOptions) -> anyhow::Result<Dex> {
        let bin = dex_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("jumpstarter-dex-")
            .tempdir()
            .context("creating Dex's directory")?;
        let (ca_pem, tls) = write_certificates(dir.path())?;
        let users_config = options
            .users
            .iter()
            .map(|user| {
                let hash = bcrypt::hash(&user.password, BCRYPT_COST)
                    .with_context(|| format!("hashing the password of {}", user.username))?;
                Ok(json!({
                    "email": user.email,
                    "username": user.username,
                    "preferredUsername": user.username,
                    "emailVerified": true,
                    "userID": user.user_id,
                    "groups": user.groups,
                    "hash": hash,
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        let mut static_clients =
            vec![json!({"id": CLIENT_ID, "name": "Jumpstarter CLI", "public": true})];
        static_clients.extend(options.web_clients.iter().map(|client| {
            json!({
                "id": client.id,
                "name": client.id,
                "secret": client.secret,
                "redirectURIs": client.redirect_uris,
            })
        }));
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let issuer = format!("https://127.0.0.1:{port}/dex");
            let config = json!({
                "issuer": issuer,
                "storage": {"type": "memory"},
                "web": {
                    "https": format!("127.0.0.1:{port}"),
                    "tlsCert": dir.path().join("server.crt"),
                    "tlsKey": dir.path().join("server.key"),
                },
                "logger": {"level": "info"},
                "expiry": {"idTokens": format!("{}ms", options.token_ttl.as_millis())},
                "oauth2": {
                    "grantTypes": ["authorization_code", "refresh_token", "password"],
                    "responseTypes": ["code"],
                    "skipApprovalScreen": true,
                    "passwordConnector": CONNECTOR_ID,
                },
                "enablePasswordDB": true,
                "staticClients": static_clients,
                "staticPasswords": users_config,
            });
            // JSON is YAML, which is what Dex reads.
            let config_file = dir.path().join("config.yaml");
            std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)
                .context("writing Dex's config")?;
            let log_file = dir.path().join("dex.log");
            let log = std::fs::File::create(&log_file).context("creating Dex's log")?;
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config_file)
                // Dex expands $VARS in parts of its config; nothing here needs it.
                .env("DEX_EXPAND_ENV", "false")
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("Dex's log")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("running {}", bin.display()))?;
            let https = Https {
                port,
                tls: tls.clone(),
            };
            match wait_ready(&mut child, &https, &issuer).await {
                Ok(()) => {
                    return Ok(Dex {
                        child,
                        https,
                        issuer,
                        ca_file: dir.path().join("ca.crt"),
                        ca_pem,
                        log_file,
                        users: options.users,
                        dir,
                    });
                }
                Err(err) => {
                    // Errors mean the process is already gone.
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
                    let port_taken = log.contains("address already in use");
                    last_error = Some(err.context(format!("Dex's log:\n{}", tail(&log, 30))));
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("Dex did not start")))
    }

    /// The issuer URL (`https://127.0.0.1:<port>/dex`), exactly as in the tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The PEM file of the CA that signed Dex's serving certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The public client's id (`jumpstarter-cli`).
    pub fn client_id(&self) -> &str {
        CLIENT_ID
    }

    /// The token endpoint (`<issuer>/token`).
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Dex's log file (stdout and stderr).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The static users.
    pub fn users(&self) -> &[DexUser] {
        &self.users
    }

    /// The static user of that user name.
    ///
    /// # Panics
    /// When there is no such user (a mistake in the test).
    pub fn user(&self, username: &str) -> &DexUser {
        self.users
            .iter()
            .find(|user| user.username == username)
            .unwrap_or_else(|| panic!("Dex has no user {username:?}"))
    }

    /// Signs `username` in with the password grant and the scopes `jmp login` requests
    /// ([`JMP_SCOPES`]).
    pub async fn login(&self, username: &str) -> anyhow::Result<Tokens> {
        let user = self.user(username);
        self.password_grant(&user.email, &user.password).await
    }

    /// The password grant (as `jmp login --username … --password …` does it: public client,
    /// no secret, [`JMP_SCOPES`]). `login` is the user's email.
    pub async fn password_grant(&self, login: &str, password: &str) -> anyhow::Result<Tokens> {
        self.password_grant_with_scopes(login, password, JMP_SCOPES)
            .await
    }

    /// The password grant with other scopes (e.g. `email`, `groups`).
    pub async fn password_grant_with_scopes(
        &self,
        login: &str,
        password: &str,
        scopes: &[&str],
    ) -> anyhow::Result<Tokens> {
        self.token_request(&[
            ("grant_type", "password"),
            ("client_id", CLIENT_ID),
            ("scope", &scopes.join(" ")),
            ("username", login),
            ("password", password),
        ])
        .await
    }

    /// The refresh-token grant (as `jmp login` does it with a stored refresh token).
    pub async fn refresh_grant(&self, refresh_token: &str) -> anyhow::Result<Tokens> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// The discovery document.
    pub async fn discovery(&self) -> anyhow::Result<serde_json::Value> {
        self.https.discovery().await
    }

    /// The JSON Web Key Set that signs the tokens (`<issuer>/keys`).
    pub async fn jwks(&self) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.https.request(Method::GET, "/dex/keys", None).await?;
        if status != StatusCode::OK {
            bail!("keys answered {status}");
        }
        serde_json::from_slice(&body).context("JSON Web Key Set")
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> anyhow::Result<Tokens> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let (status, body) = self
            .https
            .request(Method::POST, "/dex/token", Some(body))
            .await?;
        if status != StatusCode::OK {
            // Dex's error bodies carry the OAuth error and its description, no secrets.
            bail!(
                "token endpoint answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body).context("token response")
    }

    fn stop(&mut self) {
        // Errors mean the process is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Https {
    /// One HTTP/1.1 exchange over TLS that trusts only Dex's CA.
    async fn request(
        &self,
        method: Method,
        path: &str,
        form: Option<String>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let exchange = async {
            let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await?;
            let name = ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            let driver = tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, format!("127.0.0.1:{}", self.port));
            if form.is_some() {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            }
            let request = request.body(Full::new(Bytes::from(form.unwrap_or_default())))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            driver.abort();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{path}: no answer from Dex within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{path}: request to Dex"))
    }

    async fn discovery(&self) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self
            .request(Method::GET, "/dex/.well-known/openid-configuration", None)
            .await?;
        if status != StatusCode::OK {
            bail!("discovery answered {status}");
        }
        serde_json::from_slice(&body).context("discovery document")
    }
}

/// Waits until the spawned Dex serves its discovery document for `issuer`.
async fn wait_ready(child: &mut Child, https: &Https, issuer: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("dex exited during start ({status})");
        }
        if let Ok(document) = https.discovery().await {
            if document["issuer"] != issuer {
                bail!(
                    "discovery names issuer {}, not {issuer}",
                    document["issuer"]
                );
            }
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("dex did not serve its discovery document within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(START_POLL).await;
    }
}

impl Drop for Dex {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The dex binary: env `DEX_BIN`, else where `tools/dex-bin/build.sh` puts it.
fn dex_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("DEX_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!(
                "DEX_BIN={} is not a file; build Dex with `tools/dex-bin/build.sh` and set DEX_BIN \
                 to the path it prints",
                bin.display()
            );
        }
        return Ok(bin);
    }
    let dir = match std::env::var_os("DEX_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = match std::env::var_os("XDG_CACHE_HOME") {
                Some(cache) => PathBuf::from(cache),
                None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
            };
            cache.join("jumpstarter-rs").join("dex-bin")
        }
    };
    let bin = dir.join("dex");
    if !bin.is_file() {
        bail!(
            "no dex binary at {} (and DEX_BIN is not set): build it with `tools/dex-bin/build.sh` \
             (the repository's test command tools/test-all.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Makes the CA and Dex's serving certificate (127.0.0.1 and localhost) in `dir`; returns
/// the CA's PEM and a client TLS config that trusts only it.
fn write_certificates(dir: &Path) -> anyhow::Result<(String, Arc<rustls::ClientConfig>)> {
    let now = OffsetDateTime::now_utc();
    let ca = Ca::generate("jumpstarter test OIDC CA", now, CERT_VALIDITY)?;
    let server = ca.issue_server_cert(
        &ServerCertParams {
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            validity: CERT_VALIDITY,
        },
        now,
    )?;
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).context("writing ca.crt")?;
    std::fs::write(dir.join("server.crt"), &server.chain_pem).context("writing server.crt")?;
    std::fs::write(dir.join("server.key"), &server.key_pem).context("writing server.key")?;
    let tls = jumpstarter_certs::client_config(vec![ca.cert_der().clone()], None, Vec::new())?;
    Ok((ca.cert_pem().to_owned(), Arc::new(tls)))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("picking a free port")?;
    Ok(listener.local_addr()?.port())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
