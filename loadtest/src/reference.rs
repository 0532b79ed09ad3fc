//! The upstream Go router (`cmd/router` of the Go module
//! `github.com/jumpstarter-dev/jumpstarter-controller`, v0.7.1) as the reference of the h2
//! rows: its process and what it needs, its certificate, and router tokens it accepts.
//!
//! What that router needs, as its source shows: a Kubernetes API (kubeconfig) holding the
//! ConfigMap `jumpstarter-controller` in namespace `$NAMESPACE` with a `config` entry
//! (only its `grpc.keepalive` part is read), which the caller prepares; the HMAC key of its
//! router tokens in `$ROUTER_KEY`; and `$GRPC_ROUTER_ENDPOINT`, whose host becomes the only
//! name of the self-signed RSA certificate it makes at every start. It always listens on
//! TCP port 8083 (all addresses). Tokens are HS256 JWTs with issuer
//! `https://jumpstarter.dev/stream`, audience `https://jumpstarter.dev/router`, an expiry,
//! and the stream name as subject; two streams with the same subject are paired.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::router_process::spawn_logged;

/// The Go module of the reference router.
const MODULE: &str = "github.com/jumpstarter-dev/jumpstarter-controller";
/// The module version the label names (what `tools/reference-router.sh` builds).
pub(crate) const VERSION: &str = "v0.7.1";
/// Row label of sessions through the reference router.
pub(crate) const LABEL: &str = "h2 via Go router v0.7.1";
/// Column of the Go router's rows: our h2 router's figure divided by the Go router's.
pub(crate) const OURS_OVER_GO: &str = "ours/Go";
/// The port the Go router always listens on.
const PORT: u16 = 8083;
/// How long the Go router may take to read its ConfigMap and listen.
const START_WAIT: Duration = Duration::from_secs(30);
const ISSUER: &str = "https://jumpstarter.dev/stream";
const AUDIENCE: &str = "https://jumpstarter.dev/router";

/// How to run the reference router.
#[derive(Debug, Clone)]
pub(crate) struct ReferenceConfig {
    pub(crate) binary: PathBuf,
    /// A kubeconfig of an API server that holds the router's ConfigMap.
    pub(crate) kubeconfig: PathBuf,
    /// The namespace of that ConfigMap (`jumpstarter-controller`).
    pub(crate) namespace: String,
}

/// A running reference router.
#[derive(Debug)]
pub(crate) struct ReferenceRouter {
    child: Child,
    pub(crate) target: ReferenceTarget,
}

/// What sessions through the reference router need: its address, the certificate it
/// presented (trusted as is), and its token key.
#[derive(Debug, Clone)]
pub(crate) struct ReferenceTarget {
    pub(crate) addr: SocketAddr,
    /// The router's self-signed certificate, PEM.
    pub(crate) cert_pem: Arc<str>,
    key: Arc<str>,
}

#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// The reference of a run: not asked for, asked for but unavailable (and why), or running.
#[derive(Debug)]
pub(crate) enum Reference {
    Off,
    Unavailable(String),
    Running(Box<ReferenceRouter>),
}

impl Reference {
    /// Starts the reference router when `config` is given; a failure to start is kept as
    /// the reason, so that the rest of the run goes on without it.
    pub(crate) async fn start(
        config: Option<&ReferenceConfig>,
        unavailable: Option<String>,
        log_dir: &Path,
    ) -> Reference {
        if let Some(reason) = unavailable {
            return Reference::Unavailable(reason);
        }
        let Some(config) = config else {
            return Reference::Off;
        };
        match ReferenceRouter::start(config, log_dir).await {
            Ok(router) => Reference::Running(Box::new(router)),
            Err(e) => Reference::Unavailable(format!("{e:#}")),
        }
    }

    /// Its process id, when it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Reference::Running(router) => router.child.id(),
            _ => None,
        }
    }

    /// Where sessions through it go, when it runs.
    pub(crate) fn target(&self) -> Option<ReferenceTarget> {
        match self {
            Reference::Running(router) => Some(router.target.clone()),
            _ => None,
        }
    }

    /// One sentence for the report.
    pub(crate) fn summary(&self) -> String {
        match self {
            Reference::Off => "h2 rows were not compared with the upstream Go router in this run \
                 (no --reference-router)."
                .to_owned(),
            Reference::Unavailable(reason) => format!(
                "the upstream Go router ({MODULE} {VERSION}, `cmd/router`) could not be run, so \
                 its h2 rows are missing: {reason}"
            ),
            Reference::Running(_) => format!(
                "the h2 rows of scenarios 1–4 are repeated against the upstream Go router \
                 ({MODULE} {VERSION}, `cmd/router`, built from the Go module proxy) in this \
                 run, on the same machine at the same time; \"ours/Go\" columns divide our \
                 h2 router's figure by the Go router's. Each router keeps its own credentials: \
                 the Go router its self-signed RSA-2048 certificate and HS256 tokens, ours an \
                 ECDSA P-256 certificate and ES256 tokens."
            ),
        }
    }
}

impl ReferenceRouter {
    /// Starts the reference router; logs go to `log_dir`.
    pub(crate) async fn start(
        config: &ReferenceConfig,
        log_dir: &Path,
    ) -> anyhow::Result<ReferenceRouter> {
        // It binds the port on every address; fail clearly when someone holds it.
        drop(
            std::net::TcpListener::bind(("0.0.0.0", PORT))
                .with_context(|| format!("TCP port {PORT}, which the Go router needs, is taken"))?,
        );
        let addr: SocketAddr = ([127, 0, 0, 1], PORT).into();
        let key = random_hex(32)?;
        let log_path = log_dir.join("reference-router.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = spawn_logged(
            Command::new(&config.binary)
                // Errors only, as the router under test runs with warnings only.
                .arg("--zap-log-level=error")
                .env("KUBECONFIG", &config.kubeconfig)
                .env("NAMESPACE", &config.namespace)
                .env("ROUTER_KEY", &key)
                .env("GRPC_ROUTER_ENDPOINT", addr.to_string()),
            log,
        )
        .with_context(|| format!("starting {}", config.binary.display()))?;
        let deadline = Instant::now() + START_WAIT;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                let last = tail.lines().last().unwrap_or("").to_owned();
                bail!("the Go router exited with {status} before listening: {last}");
            }
            if Instant::now() > deadline {
                bail!("the Go router did not listen within {START_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cert = presented_certificate(addr)
            .await
            .context("reading the Go router's certificate")?;
        Ok(ReferenceRouter {
            child,
            target: ReferenceTarget {
                addr,
                cert_pem: pem(&cert).into(),
                key: key.into(),
            },
        })
    }
}

impl ReferenceTarget {
    /// The name its certificate carries.
    pub(crate) fn server_name(&self) -> String {
        self.addr.ip().to_string()
    }

    /// A token for stream `stream`, valid for 30 minutes, as the Go router checks it.
    pub(crate) fn token(&self, stream: &str) -> anyhow::Result<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            iss: ISSUER,
            aud: AUDIENCE,
            sub: stream,
            iat: now,
            nbf: now,
            exp: now + 30 * 60,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.key.as_bytes())
                .context("the Go router's token key")?,
        )
        .context("signing a Go router token")
    }
}

/// `bytes` random bytes, hex: the Go router's token key.
fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A certificate as PEM (64-column lines, LF), as the Go router's `--ca` file.
fn pem(der: &CertificateDer<'_>) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new("CERTIFICATE", der.as_ref()), config)
}

/// The leaf certificate the server at `addr` presents. The Go router makes a new
/// self-signed one at every start and publishes it nowhere else, so the load test trusts
/// what the process it just started on loopback presents (signatures are still checked).
async fn presented_certificate(addr: SocketAddr) -> anyhow::Result<CertificateDer<'static>> {
    let provider = rustls::crypto::ring::default_provider();
    let verifier = jumpstarter_certs::AnyServerCertificate::new();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.clone().into_owned())
        .context("no certificate presented")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_claims_the_go_router_checks() {
        let target = ReferenceTarget {
            addr: ([127, 0, 0, 1], PORT).into(),
            cert_pem: "".into(),
            key: "secret".into(),
        };
        let token = target.token("stream-7").expect("token");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret").expect("key"),
            &validation,
        )
        .expect("valid HS256 token");
        assert_eq!(data.claims["sub"], "stream-7");
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &jsonwebtoken::DecodingKey::from_secret(b"other").expect("key"),
                &validation,
            )
            .is_err()
        );
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        use base64::Engine as _;
        let text = pem(&CertificateDer::from(vec![0u8; 100]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END CERTIFICATE-----"));
        let body: String = lines[1..lines.len() - 1].concat();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64");
        assert_eq!(decoded, vec![0u8; 100]);
    }
}
