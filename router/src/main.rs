//! `jumpstarter-router`: the stream router as a standalone process. Parses flags, loads
//! the TLS certificate and the token public keys (and re-reads them when they change, see
//! [`jumpstarter_router::Reloader`]), and runs [`jumpstarter_router::Router`] plus the
//! telemetry listener until SIGTERM or SIGINT (a second signal exits at once).
//!
//! Every flag can be set through its `JUMPSTARTER_ROUTER_*` environment variable (the log
//! format through `JUMPSTARTER_LOG_FORMAT`); the `ROUTER_*` names of earlier releases still
//! work, deprecated. Durations are Go durations (`30s`); integer seconds still work,
//! deprecated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use jumpstarter_certs::{TlsCredentials, reloadable_server_config};
use jumpstarter_router::bounds::BoundsArgs;
use jumpstarter_router::telemetry::Probe;
use jumpstarter_router::{
    CredentialFiles, QuicRouter, QuicRouterConfig, ReloadArgs, Reloader, ResetKey, Router,
    RouterConfig, serve_telemetry,
};
use jumpstarter_router::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_PAIR_TIMEOUT};
use jumpstarter_shell::duration_flag::DurationArg;
use jumpstarter_shell::env_alias::{self, EnvAlias};
use jumpstarter_shell::logging::{self, LogArgs};
use jumpstarter_shell::signal;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The router's gRPC port, as the Helm chart's `routers.port` and `jumpstarter serve` use it,
/// on every interface.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8083);

/// Pairs client and exporter streams by router token and relays frames between them.
#[derive(Debug, Parser)]
#[command(
    name = "jumpstarter-router",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("JUMPSTARTER_GIT_COMMIT"), ")")
)]
struct Cli {
    /// Address of the gRPC (TLS) listener.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_LISTEN",
        default_value_t = DEFAULT_LISTEN
    )]
    listen: SocketAddr,
    /// PEM file with the server certificate chain, leaf first.
    #[arg(long, env = "JUMPSTARTER_ROUTER_TLS_CERT")]
    tls_cert: PathBuf,
    /// PEM file with the server certificate's private key.
    #[arg(long, env = "JUMPSTARTER_ROUTER_TLS_KEY")]
    tls_key: PathBuf,
    /// PEM file with one or more PUBLIC KEY blocks that may sign router tokens.
    #[arg(long, env = "JUMPSTARTER_ROUTER_TOKEN_PUBLIC_KEYS")]
    token_public_keys: PathBuf,
    /// UDP address of the QUIC session listener (off unless given; needs --client-ca).
    #[arg(long, env = "JUMPSTARTER_ROUTER_QUIC_LISTEN", requires = "client_ca")]
    quic_listen: Option<SocketAddr>,
    /// PEM bundle of the lease CA: QUIC peers must present a lease certificate from it.
    #[arg(long, env = "JUMPSTARTER_ROUTER_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// How long a stream waits for its peer before it ends with DEADLINE_EXCEEDED, as a Go
    /// duration.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_PAIR_TIMEOUT",
        default_value_t = DurationArg(DEFAULT_PAIR_TIMEOUT),
    )]
    pair_timeout: DurationArg,
    /// Streams that may wait for a peer at once; beyond, RESOURCE_EXHAUSTED.
    #[arg(long, env = "JUMPSTARTER_ROUTER_MAX_PENDING", default_value_t = jumpstarter_router::pairing::DEFAULT_MAX_PENDING)]
    max_pending: usize,
    /// Paired stream ids remembered (until their token expires) to refuse replayed tokens.
    #[arg(long, env = "JUMPSTARTER_ROUTER_MAX_REMEMBERED", default_value_t = jumpstarter_router::pairing::DEFAULT_MAX_REMEMBERED)]
    max_remembered: usize,
    /// Time between SIGTERM and the start of the drain, as a Go duration: `/readyz` fails at
    /// once, but the router keeps accepting streams meanwhile, so peers routed here just
    /// before the load balancer noticed still pair.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_SHUTDOWN_DELAY",
        default_value_t = DurationArg(std::time::Duration::ZERO),
    )]
    shutdown_delay: DurationArg,
    /// How long live pairs may go on after SIGTERM before they are stopped, as a Go duration.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_DRAIN_TIMEOUT",
        default_value_t = DurationArg(DEFAULT_DRAIN_TIMEOUT),
    )]
    drain_timeout: DurationArg,
    /// Address of the plain-HTTP listener for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    metrics_listen: SocketAddr,
    #[command(flatten)]
    bounds: BoundsArgs,
    #[command(flatten)]
    reload: ReloadArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    limits: jumpstarter_shell::port_limits::PortLimits,
    #[command(flatten)]
    http2_windows: jumpstarter_shell::http2_windows::Http2Windows,
}

/// The environment names of earlier releases, deprecated.
const ENV_ALIASES: &[EnvAlias] = &[
    EnvAlias::new("ROUTER_LISTEN", "JUMPSTARTER_ROUTER_LISTEN"),
    EnvAlias::new("ROUTER_TLS_CERT", "JUMPSTARTER_ROUTER_TLS_CERT"),
    EnvAlias::new("ROUTER_TLS_KEY", "JUMPSTARTER_ROUTER_TLS_KEY"),
    EnvAlias::new(
        "ROUTER_TOKEN_PUBLIC_KEYS",
        "JUMPSTARTER_ROUTER_TOKEN_PUBLIC_KEYS",
    ),
    EnvAlias::new("ROUTER_QUIC_LISTEN", "JUMPSTARTER_ROUTER_QUIC_LISTEN"),
    EnvAlias::new("ROUTER_CLIENT_CA", "JUMPSTARTER_ROUTER_CLIENT_CA"),
    EnvAlias::new("ROUTER_PAIR_TIMEOUT", "JUMPSTARTER_ROUTER_PAIR_TIMEOUT"),
    EnvAlias::new("ROUTER_MAX_PENDING", "JUMPSTARTER_ROUTER_MAX_PENDING"),
    EnvAlias::new("ROUTER_MAX_REMEMBERED", "JUMPSTARTER_ROUTER_MAX_REMEMBERED"),
    EnvAlias::new("ROUTER_SHUTDOWN_DELAY", "JUMPSTARTER_ROUTER_SHUTDOWN_DELAY"),
    EnvAlias::new("ROUTER_DRAIN_TIMEOUT", "JUMPSTARTER_ROUTER_DRAIN_TIMEOUT"),
    EnvAlias::new("ROUTER_METRICS_LISTEN", "JUMPSTARTER_ROUTER_METRICS_LISTEN"),
    EnvAlias::new("ROUTER_LOG_FORMAT", "JUMPSTARTER_LOG_FORMAT"),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let aliases = [ENV_ALIASES, jumpstarter_router::bounds::ENV_ALIASES].concat();
    let cli: Cli = env_alias::parse(&aliases);
    logging::init(cli.log.log_format, "info");

    // Process and build metrics keep their usual names; the router's are `jumpstarter_*`.
    let mut root = Registry::default();
    jumpstarter_shell::process_metrics::register(
        &mut root,
        env!("CARGO_PKG_VERSION"),
        env!("JUMPSTARTER_GIT_COMMIT"),
    );
    let registry = root.sub_registry_with_prefix("jumpstarter");
    let registry = &mut *registry;
    let files = CredentialFiles {
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        token_public_keys: cli.token_public_keys.clone(),
        client_ca: cli.quic_listen.and(cli.client_ca.clone()),
    };
    let reloader = Reloader::load(files, registry).context("loading the credential files")?;
    let tls = reloadable_server_config(reloader.serving_cert(), vec![b"h2".to_vec()], None)
        .context("building the TLS configuration")?;

    let mut config = RouterConfig::new(tls, reloader.token_keys());
    config.pair_timeout = cli.pair_timeout.0;
    config.max_pending = cli.max_pending;
    config.max_remembered = cli.max_remembered;
    config.drain_timeout = cli.drain_timeout.0;
    config.limits = cli.limits;
    config.http2_windows = cli.http2_windows;

    let router = Router::new(config, registry);
    router.set_pair_limits(cli.bounds.pair_limits());
    let quic = match (cli.quic_listen, reloader.client_ca()) {
        (Some(addr), Some(client_ca)) => {
            // Stateless resets are keyed by the key the router starts with.
            let key = read(&cli.tls_key)?;
            let credentials = TlsCredentials::from_pem(&read(&cli.tls_cert)?, &key)
                .context("loading the TLS certificate")?;
            let reset_key = ResetKey::derive(credentials.key.secret_der());
            let mut quic_config =
                QuicRouterConfig::reloadable(reloader.serving_cert(), client_ca, reset_key)
                    .context("building the QUIC TLS configuration")?;
            quic_config.pair_timeout = cli.pair_timeout.0;
            quic_config.max_pending = cli.max_pending;
            quic_config.max_remembered = cli.max_remembered;
            quic_config.drain_timeout = cli.drain_timeout.0;
            cli.bounds.apply_quic(&mut quic_config);
            let mut quic = QuicRouter::bind(quic_config, addr, registry)
                .with_context(|| format!("starting the QUIC listener on {addr}"))?;
            // QUIC sessions carrying a router token pair with 0.9.0 h2 streams.
            quic.pair_with_h2(&router);
            info!(quic_listen = %addr, "QUIC listener bound");
            Some(quic)
        }
        _ => None,
    };
    let registry = Arc::new(root);

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let metrics_listener = TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("binding {}", cli.metrics_listen))?;
    info!(listen = %cli.listen, metrics = %cli.metrics_listen, "starting");

    let stopping = CancellationToken::new();
    tokio::spawn(reloader.run(cli.reload.reload_interval.0, stopping.clone()));
    let probe = Probe::new(router.readiness());
    let telemetry = tokio::spawn(serve_telemetry(
        metrics_listener,
        registry,
        probe.clone(),
        stopping.clone().cancelled_owned(),
    ));
    let terminated = CancellationToken::new();
    let shutdown_delay = cli.shutdown_delay.0;
    let signalled = CancellationToken::new();
    signal::spawn_watch(signalled.clone());
    tokio::spawn({
        let terminated = terminated.clone();
        async move {
            signalled.cancelled().await;
            probe.start_draining();
            if !shutdown_delay.is_zero() {
                info!(
                    ?shutdown_delay,
                    "not ready any more; still serving until the drain starts"
                );
                tokio::time::sleep(shutdown_delay).await;
            }
            terminated.cancel();
        }
    });
    let quic_task = quic.map(|quic| tokio::spawn(quic.serve(terminated.clone().cancelled_owned())));
    router
        .serve(listener, terminated.clone().cancelled_owned())
        .await?;
    terminated.cancel();
    if let Some(quic_task) = quic_task {
        quic_task.await.context("QUIC listener task")?;
    }
    stopping.cancel();
    telemetry
        .await
        .context("telemetry task")?
        .context("telemetry listener")?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The binary's name and the flags without defaults.
    const REQUIRED: [&str; 7] = [
        "jumpstarter-router",
        "--tls-cert",
        "c.pem",
        "--tls-key",
        "k.pem",
        "--token-public-keys",
        "keys.pem",
    ];

    #[test]
    fn flags_are_consistent_and_have_defaults() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(REQUIRED).expect("parse");
        assert_eq!(cli.listen.port(), 8083);
        assert_eq!(cli.pair_timeout.0, std::time::Duration::from_secs(30));
        assert_eq!(cli.max_pending, 10_000);
        assert_eq!(cli.quic_listen, None);
        assert_eq!(cli.shutdown_delay.0, std::time::Duration::ZERO);
        assert_eq!(cli.drain_timeout.0, std::time::Duration::from_secs(30));
        assert_eq!(
            cli.reload.reload_interval.0,
            jumpstarter_router::DEFAULT_RELOAD_INTERVAL
        );
    }

    #[test]
    fn quic_listen_needs_the_client_ca() {
        let base = REQUIRED
            .into_iter()
            .chain(["--quic-listen", "127.0.0.1:8443"]);
        assert!(Cli::try_parse_from(base.clone()).is_err());
        let cli = Cli::try_parse_from(base.chain(["--client-ca", "ca.pem"])).expect("parse");
        assert_eq!(cli.quic_listen.map(|a| a.port()), Some(8443));
    }
}
