//! Keeping the controller's token keys and serving certificate current while it runs.
//!
//! - [`follow_keys`] re-reads [`super::KEYS_SECRET`] every `--keys-reload-interval` and
//!   installs changed token keys ([`super::reload`]); a Secret that does not parse is
//!   logged (once per distinct error) and counted, and the keys in use stay.
//! - [`renew_serving_cert`] re-mints the gRPC serving certificate from the CA when it has
//!   less than [`RENEW_BEFORE`] left, so a controller that runs for longer than the
//!   certificate's year never serves an expired certificate; new TLS connections get the
//!   new one, established ones keep theirs.
//!
//! Metrics ([`RefreshMetrics`]): `jumpstarter_controller_key_reloads_total{result}`
//! (`applied`, `rejected`) and `jumpstarter_controller_tls_certificate_expiry_timestamp_seconds`.

use std::sync::Arc;

use jumpstarter_certs::ServingCert;
use jumpstarter_shell::error_chain::error_chain;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use time::{Duration, OffsetDateTime};
use tokio_util::sync::CancellationToken;

use super::Keys;
use super::live::TokenKeySet;
use crate::flags::GoDuration;
use crate::settings::Settings;
use crate::store::Store;

/// How often the keys Secret is re-read by default: a rotated key is in use within
/// seconds, and one GET of one Secret that often is nothing for the API server.
pub const DEFAULT_KEYS_RELOAD_INTERVAL: Duration = Duration::seconds(10);

/// The serving certificate is re-minted when it has less than this left (it is minted for
/// a year): a month leaves ample time for a process that checks every few seconds.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// How often the serving certificate's remaining validity is checked: with a month of
/// margin, hourly is plenty.
pub const RENEW_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Flags of the key reloading.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyReloadArgs {
    /// How often the keys Secret is re-read for rotated token keys, as a Go duration.
    #[arg(
        long,
        env = "JUMPSTARTER_KEYS_RELOAD_INTERVAL",
        default_value_t = GoDuration(DEFAULT_KEYS_RELOAD_INTERVAL)
    )]
    pub keys_reload_interval: GoDuration,
}

impl KeyReloadArgs {
    /// The interval as a standard duration.
    pub fn interval(&self) -> std::time::Duration {
        // Go-duration flags are positive, so the conversion cannot fail.
        std::time::Duration::try_from(self.keys_reload_interval.0)
            .unwrap_or(std::time::Duration::from_secs(10))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Metrics of key reloads and the serving certificate.
#[derive(Debug, Clone, Default)]
pub struct RefreshMetrics {
    reloads: Family<ResultLabels, Counter>,
    expiry: Gauge,
}

impl RefreshMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> RefreshMetrics {
        let metrics = RefreshMetrics::default();
        registry.register(
            "jumpstarter_controller_key_reloads",
            "Changes of the keys Secret, by whether they were applied",
            metrics.reloads.clone(),
        );
        registry.register(
            "jumpstarter_controller_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the gRPC serving certificate presented to new connections, Unix seconds",
            metrics.expiry.clone(),
        );
        metrics
    }

    fn count(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Records the certificate served now.
    pub fn serving(&self, cert: &ServingCert) {
        self.expiry.set(cert.not_after().unix_timestamp());
    }
}

/// Re-reads the keys Secret every `interval` until `shutdown`; `on_change` hears every
/// key set installed (an embedded router takes its router token keys from it).
pub async fn follow_keys<S: Store>(
    store: S,
    settings: Arc<Settings>,
    keys: Arc<Keys>,
    interval: std::time::Duration,
    metrics: RefreshMetrics,
    on_change: impl Fn(&TokenKeySet) + Send + 'static,
    shutdown: CancellationToken,
) {
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match super::reload(&store, &settings, &keys).await {
            Ok(true) => {
                metrics.count("applied");
                on_change(&keys.tokens.current());
                last_error = None;
            }
            Ok(false) => last_error = None,
            Err(error) => {
                let text = error_chain(&error);
                if last_error.as_ref() != Some(&text) {
                    metrics.count("rejected");
                    tracing::warn!(error = %text, "keys Secret not applied; the keys in use stay");
                    last_error = Some(text);
                }
            }
        }
    }
}

/// Whether a certificate valid until `not_after` is due for renewal at `now`.
pub(crate) fn renewal_due(not_after: OffsetDateTime, now: OffsetDateTime) -> bool {
    not_after - now < RENEW_BEFORE
}

/// Re-mints the serving certificate with `mint` when it is due, checking every `interval`
/// until `shutdown`.
pub async fn renew_serving_cert<F>(
    cert: Arc<ServingCert>,
    mint: F,
    interval: std::time::Duration,
    metrics: RefreshMetrics,
    shutdown: CancellationToken,
) where
    F: Fn(OffsetDateTime) -> Result<jumpstarter_certs::TlsCredentials, super::KeysError>
        + Send
        + 'static,
{
    metrics.serving(&cert);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = OffsetDateTime::now_utc();
        if !renewal_due(cert.not_after(), now) {
            continue;
        }
        let result = mint(now)
            .map_err(|e| error_chain(&e))
            .and_then(|credentials| cert.replace(credentials).map_err(|e| error_chain(&e)));
        match result {
            Ok(()) => {
                metrics.serving(&cert);
                tracing::info!(serial = %cert.serial(), not_after = %cert.not_after(), "serving certificate renewed");
            }
            Err(error) => {
                tracing::warn!(%error, not_after = %cert.not_after(), "renewing the serving certificate failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use jumpstarter_certs::{Ca, ServerCertParams, client_config, reloadable_server_config};
    use rustls::pki_types::ServerName;

    use super::*;

    fn issue(ca: &Ca, days: i64) -> jumpstarter_certs::IssuedCert {
        ca.issue_server_cert(
            &ServerCertParams {
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                validity: Duration::days(days),
            },
            OffsetDateTime::now_utc(),
        )
        .expect("cert")
    }

    /// notAfter of what a new TLS connection to `addr` is served.
    async fn served_not_after(addr: std::net::SocketAddr, ca: &Ca) -> i64 {
        let config = client_config(vec![ca.cert_der().clone()], None, vec![b"h2".to_vec()])
            .expect("client config");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        let leaf = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
        parsed.validity().not_after.timestamp()
    }

    #[tokio::test]
    async fn a_certificate_close_to_expiry_is_renewed_for_new_connections() {
        let ca =
            Ca::generate("renewal-ca", OffsetDateTime::now_utc(), Duration::days(800)).expect("ca");
        let short = issue(&ca, 10);
        let serving = ServingCert::new(short.credentials()).expect("serving");
        let config = Arc::new(
            reloadable_server_config(serving.clone(), vec![b"h2".to_vec()], None).expect("tls"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        tokio::spawn({
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // The handshake is all the test needs; keep it open briefly.
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            drop(tls);
                        }
                    });
                }
            }
        });
        let before = served_not_after(addr, &ca).await;
        assert_eq!(before, short.not_after.unix_timestamp());

        let mut registry = Registry::default();
        let metrics = RefreshMetrics::new(&mut registry);
        let mint_ca = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).expect("ca copy");
        tokio::spawn(renew_serving_cert(
            serving.clone(),
            move |now| {
                mint_ca
                    .issue_server_cert(
                        &ServerCertParams {
                            dns_names: vec!["localhost".into()],
                            ip_addresses: vec![],
                            validity: Duration::days(365),
                        },
                        now,
                    )
                    .map(|c| c.credentials())
                    .map_err(|source| super::super::KeysError::Certificate {
                        subject: "localhost".into(),
                        source: Box::new(source),
                    })
            },
            std::time::Duration::from_millis(20),
            metrics,
            shutdown.clone(),
        ));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let after = loop {
            let seen = served_not_after(addr, &ca).await;
            if seen != before {
                break seen;
            }
            assert!(std::time::Instant::now() < deadline, "not renewed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(after > before + 300 * 86_400, "{after} vs {before}");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(&format!(
                "jumpstarter_controller_tls_certificate_expiry_timestamp_seconds {after}"
            )),
            "{text}"
        );
    }

    #[test]
    fn renewal_is_due_a_month_ahead() {
        let now = OffsetDateTime::now_utc();
        assert!(!renewal_due(now + Duration::days(365), now));
        assert!(!renewal_due(now + Duration::days(31), now));
        assert!(renewal_due(now + Duration::days(29), now));
        assert!(renewal_due(now - Duration::days(1), now));
    }
}
