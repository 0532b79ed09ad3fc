//! `jumpstarter-edge`: runs beside an unmodified jumpstarter 0.9.0 exporter (`jmp run`) or
//! client (`jmp`, `j`), speaks 0.9.0 gRPC to it on localhost, and carries its traffic over
//! QUIC: router sessions always (one QUIC session per `RouterService.Stream`, with a
//! per-lease certificate), controller calls too unless `--controller-transport tcp`.
//!
//! ```text
//! jumpstarter-edge exporter --config board-1.yaml --write-config edge.yaml -- \
//!     jmp run --exporter-config edge.yaml
//! jumpstarter-edge client --config alice.yaml --write-config edge.yaml -- \
//!     jmp shell --client-config edge.yaml -l board=mock -- j power on
//! ```
//!
//! Map:
//! - `config`: the tool's ExporterConfig / ClientConfig, and the copy pointing at the edge;
//! - `local_ca`: the in-memory CA the tool trusts, and the local listener's certificate;
//! - `listener`: the local TLS port (local router + forwarder);
//! - `forwarder`: controller calls passed through; `endpoint_rewrite`: Listen/Dial
//!   responses pointed at the local router;
//! - `upstream`: the channel to the controller (QUIC or TCP) and the tool's credentials;
//! - `session`: `RouterService.Stream` ↔ QUIC session; `router_token`: its `sub` and
//!   `lease`; `token_ledger`: the tokens the controller handed out through this edge (the
//!   only ones served); `lease_link`: per-lease certificates and router connections;
//! - `child`: the tool run as a child.
//!
//! Logging, signals, the advertised address, error chains and the TLS accept loop come
//! from `jumpstarter_shell`. The log format is `JUMPSTARTER_LOG_FORMAT` (the earlier
//! `JUMPSTARTER_EDGE_LOG_FORMAT` still works, deprecated).

mod child;
mod config;
mod endpoint_rewrite;
mod forwarder;
mod lease_link;
mod listener;
mod local_ca;
mod router_token;
mod session;
mod token_ledger;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser};
use jumpstarter_shell::advertised_address::advertised;
use jumpstarter_shell::env_alias::{self, EnvAlias};
use jumpstarter_shell::error_chain::error_chain;
use jumpstarter_shell::logging::{self, LogArgs};
use jumpstarter_shell::signal;
use jumpstarter_tunnel::{EndpointRole, QuicTransportArgs, TransportGauges};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Role, ToolConfig};
use crate::forwarder::Forwarder;
use crate::lease_link::LeaseLinks;
use crate::local_ca::LocalCa;
use crate::session::LocalRouter;
use crate::token_ledger::TokenLedger;
use crate::upstream::{Credentials, Transport};

#[derive(Debug, Parser)]
#[command(
    name = "jumpstarter-edge",
    version,
    about = "Runs beside a jumpstarter 0.9.0 exporter or client and carries its traffic over QUIC",
    arg_required_else_help = true
)]
enum Cli {
    /// Beside an exporter (`jmp run`): reads its ExporterConfig.
    Exporter(EdgeArgs),
    /// Beside a client (`jmp`, `j`): reads its ClientConfig.
    Client(EdgeArgs),
}

#[derive(Debug, Args)]
struct EdgeArgs {
    /// The tool's configuration file (ExporterConfig or ClientConfig YAML).
    #[arg(long, env = "JUMPSTARTER_EDGE_CONFIG")]
    config: PathBuf,
    /// Local TCP address the tool connects to (TLS with the edge's own CA).
    #[arg(long, env = "JUMPSTARTER_EDGE_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the configuration for the tool here: the same file with `endpoint` set to the
    /// edge and `tls.ca` to the edge's CA (mode 0600).
    #[arg(long, env = "JUMPSTARTER_EDGE_WRITE_CONFIG")]
    write_config: Option<PathBuf>,
    /// How controller calls travel.
    #[arg(long, env = "JUMPSTARTER_EDGE_CONTROLLER_TRANSPORT", value_enum, default_value_t = Transport::Quic)]
    controller_transport: Transport,
    /// UDP `host:port` of the controller's QUIC listener [default: the config's endpoint].
    #[arg(long, env = "JUMPSTARTER_EDGE_CONTROLLER_QUIC")]
    controller_quic: Option<String>,
    #[command(flatten)]
    quic_transport: QuicTransportArgs,
    #[command(flatten)]
    log: LogArgs,
    /// The tool to run with the written configuration; the edge exits with its status.
    #[arg(last = true, requires = "write_config", value_name = "COMMAND")]
    command: Vec<String>,
}

/// The environment names of earlier releases, deprecated.
const ENV_ALIASES: &[EnvAlias] = &[EnvAlias::new(
    "JUMPSTARTER_EDGE_LOG_FORMAT",
    "JUMPSTARTER_LOG_FORMAT",
)];

fn main() -> ExitCode {
    let cli: Cli = env_alias::parse(ENV_ALIASES);
    let (role, args) = match cli {
        Cli::Exporter(args) => (Role::Exporter, args),
        Cli::Client(args) => (Role::Client, args),
    };
    logging::init(args.log.log_format, "info");
    let result = tokio::runtime::Runtime::new()
        .context("start the async runtime")
        .and_then(|runtime| runtime.block_on(run(role, args)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(role: Role, args: EdgeArgs) -> anyhow::Result<u8> {
    let config = ToolConfig::load(&args.config, role)?;
    let quic_transport = args.quic_transport.transport();
    // What the edge's QUIC connections run with: the kernel's offloads on a socket like
    // theirs (each connection gets its own socket).
    let probe = jumpstarter_tunnel::socket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0).into())
        .context("open a UDP socket")?;
    TransportGauges::log(
        EndpointRole::Edge,
        &quic_transport,
        jumpstarter_tunnel::socket::offloads(&probe),
    );
    drop(probe);
    let controller = upstream::channel(
        &config,
        args.controller_transport,
        args.controller_quic.as_deref(),
        &quic_transport,
    )?;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind the local listener on {}", args.listen))?;
    let local = advertised(listener.local_addr().context("local listener address")?);
    let local_ca = LocalCa::generate(local, OffsetDateTime::now_utc())
        .context("generate the edge's local CA")?;
    let local_endpoint = local.to_string();

    let credentials = Credentials::of(&config);
    let links = Arc::new(LeaseLinks::new(
        controller.clone(),
        credentials,
        quic_transport,
    ));
    let ledger = Arc::new(TokenLedger::default());
    let routes = listener::routes(
        LocalRouter::new(links, ledger.clone()),
        Forwarder::new(controller, local_endpoint.clone(), ledger),
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(listener::serve(
        listener,
        Arc::new(local_ca.tls),
        routes,
        shutdown.clone(),
    ));

    if let Some(path) = &args.write_config {
        config
            .write_for_edge(path, &local_endpoint, &local_ca.ca_pem)
            .with_context(|| format!("write the tool's configuration {}", path.display()))?;
    }
    tracing::info!(
        role = role.metadata_kind(),
        config = %config.path().display(),
        local = %local_endpoint,
        controller = %config.endpoint,
        controller_transport = ?args.controller_transport,
        controller_quic = args.controller_quic.as_deref().unwrap_or(&config.endpoint),
        written = ?args.write_config,
        "edge ready"
    );

    let stop = CancellationToken::new();
    signal::spawn_watch(stop.clone());
    let code = if args.command.is_empty() {
        stop.cancelled().await;
        0
    } else {
        let status = child::run(&args.command, stop.clone()).await?;
        tracing::info!(%status, "tool exited");
        child::exit_code(status)
    };
    shutdown.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = %error_chain(&error), "local listener failed"),
        Err(error) => tracing::warn!(%error, "local listener task failed"),
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn flags_are_consistent_with_defaults_and_the_child_command() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "jumpstarter-edge",
            "client",
            "--config",
            "c.yaml",
            "--write-config",
            "e.yaml",
            "--",
            "jmp",
            "shell",
            "-l",
            "a=b",
        ])
        .unwrap();
        let Cli::Client(args) = cli else {
            panic!("client")
        };
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.controller_transport, Transport::Quic);
        assert_eq!(args.command, ["jmp", "shell", "-l", "a=b"]);
        let without_config = Cli::try_parse_from([
            "jumpstarter-edge",
            "exporter",
            "--config",
            "e.yaml",
            "--",
            "jmp",
            "run",
        ])
        .unwrap_err();
        assert_eq!(
            without_config.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }
}
