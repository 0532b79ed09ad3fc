//! The router's credential files, re-read while it runs: the serving certificate and its
//! key, the lease CA that QUIC peers' certificates chain to, and the bundle of public keys
//! that may sign router tokens.
//!
//! [`Reloader::load`] reads them at start (a bad file is fatal then). [`Reloader::run`]
//! then polls them every [`ReloadArgs::reload_interval`]: when the bytes of a file changed,
//! it parses the new content completely and installs it for new TLS connections and new
//! streams; established connections and running streams keep what they started with. A
//! file that does not parse (malformed PEM, a key that is not the certificate's) is logged
//! with the reason and counted, and the old content keeps serving; the same bad content is
//! reported once, not at every poll. Kubernetes updates mounted Secrets and ConfigMaps by
//! swapping a symlink, so a reader sees either the old or the new files; other writers may
//! replace the certificate and the key one after the other, and the pair is installed once
//! both match.
//!
//! Metrics: `jumpstarter_router_tls_certificate_expiry_timestamp_seconds` (the `notAfter`
//! of the certificate served now), `jumpstarter_router_token_keys` (keys accepted now),
//! `jumpstarter_router_credential_reloads_total{file, result}` (`file`: `tls`, `client_ca`,
//! `token_keys`; `result`: `applied`, `rejected`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jumpstarter_certs::{ServingCert, TlsCredentials, TrustedRoots};
use jumpstarter_shell::duration_flag::DurationArg;
use jumpstarter_shell::error_chain::error_chain;
use jumpstarter_shell::metrics_registrar::Registrar;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::authentication::{KeyBundleError, TokenKeys, public_keys_from_pem};

/// How often the files are looked at by default: a rotated certificate or key is in use
/// within seconds, and reading three small files that often costs nothing measurable.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Flags of the file reloading.
#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    /// How often the certificate, key, client CA and token key files are checked for
    /// changes, as a Go duration; changed files are used for new connections and streams.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_RELOAD_INTERVAL",
        default_value_t = DurationArg(DEFAULT_RELOAD_INTERVAL),
    )]
    pub reload_interval: DurationArg,
}

/// The files a router serves with.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    /// PEM certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// PEM private key of the leaf.
    pub tls_key: PathBuf,
    /// PEM bundle of PUBLIC KEY blocks that may sign router tokens.
    pub token_public_keys: PathBuf,
    /// PEM bundle of the lease CA (QUIC listener only).
    pub client_ca: Option<PathBuf>,
}

/// Why a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} from {path} cannot be used")]
    Certificate {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<jumpstarter_certs::Error>,
    },
    #[error("token public keys from {path} cannot be used")]
    TokenKeys {
        path: PathBuf,
        #[source]
        source: KeyBundleError,
    },
}

/// Which file a reload concerned, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watched {
    Tls,
    ClientCa,
    TokenKeys,
}

impl Watched {
    fn label(self) -> &'static str {
        match self {
            Watched::Tls => "tls",
            Watched::ClientCa => "client_ca",
            Watched::TokenKeys => "token_keys",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    file: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone)]
struct ReloadMetrics {
    expiry: Gauge,
    token_keys: Gauge,
    reloads: Family<ReloadLabels, Counter>,
}

impl ReloadMetrics {
    fn register(registry: &mut Registry) -> Self {
        let mut r = Registrar::with_prefix(registry, "router");
        ReloadMetrics {
            expiry: r.add(
                "tls_certificate_expiry_timestamp_seconds",
                "notAfter of the serving certificate presented to new connections, Unix seconds",
            ),
            token_keys: r.add("token_keys", "Public keys router tokens are accepted from"),
            reloads: r.add(
                "credential_reloads",
                "Changed credential files, by file and whether they were applied",
            ),
        }
    }

    fn count(&self, file: Watched, result: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                file: file.label(),
                result,
            })
            .inc();
    }
}

/// The router's credential material, shared with the servers, and the files it comes from.
#[derive(Debug)]
pub struct Reloader {
    files: CredentialFiles,
    cert: Arc<ServingCert>,
    client_ca: Option<Arc<TrustedRoots>>,
    token_keys: TokenKeys,
    metrics: ReloadMetrics,
    /// The bytes last looked at, applied or not, per file: a change is a difference.
    seen_tls: (Vec<u8>, Vec<u8>),
    seen_client_ca: Vec<u8>,
    seen_token_keys: Vec<u8>,
}

impl Reloader {
    /// Reads every file; any that cannot be used is an error. Registers the metrics.
    pub fn load(files: CredentialFiles, registry: &mut Registry) -> Result<Self, ReloadError> {
        let cert_bytes = read(&files.tls_cert)?;
        let key_bytes = read(&files.tls_key)?;
        let cert =
            ServingCert::new(credentials(&files, &cert_bytes, &key_bytes)?).map_err(|source| {
                ReloadError::Certificate {
                    what: "the serving certificate",
                    path: files.tls_cert.clone(),
                    source: Box::new(source),
                }
            })?;
        let (client_ca, seen_client_ca) = match &files.client_ca {
            Some(path) => {
                let bytes = read(path)?;
                let roots = TrustedRoots::new(roots(path, &bytes)?).map_err(|source| {
                    ReloadError::Certificate {
                        what: "the client CA",
                        path: path.clone(),
                        source: Box::new(source),
                    }
                })?;
                (Some(roots), bytes)
            }
            None => (None, Vec::new()),
        };
        let key_bundle = read(&files.token_public_keys)?;
        let keys = token_keys(&files.token_public_keys, &key_bundle)?;
        let metrics = ReloadMetrics::register(registry);
        metrics.expiry.set(cert.not_after().unix_timestamp());
        metrics.token_keys.set(gauge_value(keys.len()));
        Ok(Reloader {
            files,
            cert,
            client_ca,
            token_keys: TokenKeys::from(keys),
            metrics,
            seen_tls: (cert_bytes, key_bytes),
            seen_client_ca,
            seen_token_keys: key_bundle,
        })
    }

    /// The serving certificate, for the TLS configurations of both listeners.
    pub fn serving_cert(&self) -> Arc<ServingCert> {
        self.cert.clone()
    }

    /// The lease CA, when a client CA file was given.
    pub fn client_ca(&self) -> Option<Arc<TrustedRoots>> {
        self.client_ca.clone()
    }

    /// The token keys, for the router's configuration.
    pub fn token_keys(&self) -> TokenKeys {
        self.token_keys.clone()
    }

    /// Polls the files every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.check();
        }
    }

    /// Looks at every file once and applies what changed.
    pub fn check(&mut self) {
        self.check_tls();
        self.check_client_ca();
        self.check_token_keys();
    }

    fn check_tls(&mut self) {
        let (Some(cert_bytes), Some(key_bytes)) = (
            self.read_logged(Watched::Tls, &self.files.tls_cert),
            self.read_logged(Watched::Tls, &self.files.tls_key),
        ) else {
            return;
        };
        if (&cert_bytes, &key_bytes) == (&self.seen_tls.0, &self.seen_tls.1) {
            return;
        }
        let result = credentials(&self.files, &cert_bytes, &key_bytes).and_then(|c| {
            self.cert
                .replace(c)
                .map_err(|source| ReloadError::Certificate {
                    what: "the serving certificate",
                    path: self.files.tls_cert.clone(),
                    source: Box::new(source),
                })
        });
        self.seen_tls = (cert_bytes, key_bytes);
        match result {
            Ok(()) => {
                let not_after = self.cert.not_after();
                self.metrics.expiry.set(not_after.unix_timestamp());
                self.metrics.count(Watched::Tls, "applied");
                info!(
                    serial = %self.cert.serial(),
                    %not_after,
                    "serving certificate reloaded; new connections get it"
                );
            }
            Err(error) => self.rejected(Watched::Tls, &error, "the serving certificate"),
        }
    }

    fn check_client_ca(&mut self) {
        let (Some(path), Some(trusted)) = (self.files.client_ca.clone(), self.client_ca.clone())
        else {
            return;
        };
        let Some(bytes) = self.read_logged(Watched::ClientCa, &path) else {
            return;
        };
        if bytes == self.seen_client_ca {
            return;
        }
        let result = roots(&path, &bytes).and_then(|r| {
            trusted
                .replace(r)
                .map_err(|source| ReloadError::Certificate {
                    what: "the client CA",
                    path: path.clone(),
                    source: Box::new(source),
                })
        });
        self.seen_client_ca = bytes;
        match result {
            Ok(()) => {
                self.metrics.count(Watched::ClientCa, "applied");
                info!(path = %path.display(), "client CA reloaded; new QUIC connections are checked against it");
            }
            Err(error) => self.rejected(Watched::ClientCa, &error, "the client CA"),
        }
    }

    fn check_token_keys(&mut self) {
        let path = self.files.token_public_keys.clone();
        let Some(bytes) = self.read_logged(Watched::TokenKeys, &path) else {
            return;
        };
        if bytes == self.seen_token_keys {
            return;
        }
        let result = token_keys(&path, &bytes);
        self.seen_token_keys = bytes;
        match result {
            Ok(keys) => {
                let count = keys.len();
                self.token_keys.replace(keys);
                self.metrics.token_keys.set(gauge_value(count));
                self.metrics.count(Watched::TokenKeys, "applied");
                info!(
                    keys = count,
                    "token public keys reloaded; new streams are verified with them"
                );
            }
            Err(error) => self.rejected(Watched::TokenKeys, &error, "the token public keys"),
        }
    }

    fn rejected(&self, file: Watched, error: &ReloadError, what: &str) {
        self.metrics.count(file, "rejected");
        warn!(
            error = error_chain(error),
            "changed file not applied; still serving the previous {what}"
        );
    }

    /// The file's bytes; a read failure (a file being replaced) is logged and retried at
    /// the next poll.
    fn read_logged(&self, file: Watched, path: &Path) -> Option<Vec<u8>> {
        match read(path) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                warn!(
                    file = file.label(),
                    error = error_chain(&error),
                    "cannot read a credential file; keeping the previous content"
                );
                None
            }
        }
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn read(path: &Path) -> Result<Vec<u8>, ReloadError> {
    std::fs::read(path).map_err(|source| ReloadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn text<'a>(path: &Path, bytes: &'a [u8], what: &'static str) -> Result<&'a str, ReloadError> {
    std::str::from_utf8(bytes).map_err(|_| ReloadError::Certificate {
        what,
        path: path.to_owned(),
        source: Box::new(jumpstarter_certs::Error::CertificateParse {
            what,
            reason: "not UTF-8 text".to_owned(),
        }),
    })
}

fn credentials(
    files: &CredentialFiles,
    cert: &[u8],
    key: &[u8],
) -> Result<TlsCredentials, ReloadError> {
    let cert_text = text(&files.tls_cert, cert, "certificate chain")?;
    let key_text = text(&files.tls_key, key, "private key")?;
    TlsCredentials::from_pem(cert_text, key_text).map_err(|source| ReloadError::Certificate {
        what: "the serving certificate and key",
        path: files.tls_cert.clone(),
        source: Box::new(source),
    })
}

fn roots(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, ReloadError> {
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ReloadError::Certificate {
            what: "the client CA",
            path: path.to_owned(),
            source: Box::new(jumpstarter_certs::Error::CertificateParse {
                what: "root certificate",
                reason: e.to_string(),
            }),
        })
}

fn token_keys(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<jumpstarter_token::VerifyingKey>, ReloadError> {
    // Bytes that are not UTF-8 cannot be inside a PEM block; the parse reports them.
    public_keys_from_pem(&String::from_utf8_lossy(bytes)).map_err(|source| ReloadError::TokenKeys {
        path: path.to_owned(),
        source,
    })
}
