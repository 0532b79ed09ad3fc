//! `jumpstarter`: Jumpstarter without Kubernetes, in one binary.
//!
//! - `jumpstarter serve`: controller (gRPC over TLS), reconcile loop, router, probes and
//!   metrics in one process, with all state in one file of the data directory.
//! - `jumpstarter completion bash|zsh|fish|…`: the shell completion script.
//! - `jumpstarter admin …`: create, get/list and delete clients, exporters and leases;
//!   `create client|exporter` writes the 0.9.0 configuration `jmp` reads, `create lease`
//!   leases exporters for a client as `jmp create lease` would; `apply -f` creates or
//!   updates any of them and ExporterAccessPolicies from YAML, as `kubectl apply -f`;
//!   `get|delete policies` shows and removes access policies. Through the
//!   running service's admin socket, or with `--kubeconfig`/`--context`/`--kubernetes`
//!   through the Kubernetes API of a cluster running `jumpstarter-controller`. kubectl
//!   habits hold: `get -l SELECTOR`, `-o name`, an `AGE` column, `delete
//!   --ignore-not-found`, `<kind>.jumpstarter.dev/<name> created|deleted` lines.
//!
//! `--version` names the commit the binary was built from (`shell/build/version.rs`).
//!
//! Every flag can also be set through its `JUMPSTARTER_*` environment variable. The
//! credential-lifetime and TLS-SAN flags are the controller's groups
//! (`jumpstarter_controller::flags`), the log format the shell's
//! (`jumpstarter_shell::logging`).
//!
//! Map:
//! - `serve`: the service process;
//! - `admin_command`: the admin commands and their two backends;
//! - `admin_api`: the service's admin API on a Unix socket (server and client);
//! - `check`: `admin check`, the health report of a Kubernetes installation;
//! - `data_dir`: the data directory's default location and layout.

mod admin_api;
mod admin_command;
mod check;
mod data_dir;
mod serve;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use jumpstarter_controller::admin::{self as admin_ops, Kind, LeaseOrder, OutputFormat};
use jumpstarter_controller::flags::exporter_labels::ExporterLabelArgs;
use jumpstarter_controller::flags::upstream::UpstreamFileArgs;
use jumpstarter_controller::flags::{LifetimeArgs, TlsSanArgs};
use jumpstarter_controller::limits::LimitArgs;
use jumpstarter_controller::upstream::GivenFlags;
use jumpstarter_lease::selector::{self, LabelSelector};
use jumpstarter_shell::logging::{self, LogArgs, LogFormat};

use crate::admin_command::{AdminCommand, Target};
use crate::data_dir::DataDir;
use crate::serve::ServeOptions;

#[derive(Debug, Parser)]
#[command(
    name = "jumpstarter",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("JUMPSTARTER_GIT_COMMIT"), ")"),
    about = "Jumpstarter service without Kubernetes: controller, router and admin in one binary",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the large variant would only add noise to clap's derive.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: controller gRPC, reconcile loop, router, probes and metrics.
    Serve(ServeArgs),
    /// Manage clients, exporters, leases and access policies (of the running service, or of
    /// a cluster).
    #[command(after_help = ADMIN_EXAMPLES)]
    Admin(AdminArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or PowerShell.
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Examples after the help of `completion`.
const COMPLETION_EXAMPLES: &str = "\
Examples:
  # bash, for this shell, then for every new one
  source <(jumpstarter completion bash)
  jumpstarter completion bash > ~/.local/share/bash-completion/completions/jumpstarter

  # zsh (a directory on $fpath), fish
  jumpstarter completion zsh > \"${fpath[1]}/_jumpstarter\"
  jumpstarter completion fish > ~/.config/fish/completions/jumpstarter.fish";

/// Examples after the help of `admin`.
const ADMIN_EXAMPLES: &str = "\
Examples:
  # Standalone: the running `jumpstarter serve` of the default data directory
  jumpstarter admin create client alice --out alice.yaml
  jumpstarter admin get exporters -l board=mock

  # Kubernetes: a context of a kubeconfig, as kubectl selects it
  jumpstarter admin get leases --kubeconfig ~/.kube/config --context lab -n lab";

#[derive(Debug, Args)]
struct ServeArgs {
    /// Directory of the state file and the admin socket
    /// [default: `$XDG_DATA_HOME/jumpstarter`, else `~/.local/share/jumpstarter`].
    #[arg(long, env = "JUMPSTARTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Namespace of every object.
    #[arg(short, long, env = "JUMPSTARTER_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Address of the controller's gRPC (TLS) listener.
    #[arg(
        long,
        env = "JUMPSTARTER_GRPC_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    grpc_listen: SocketAddr,
    /// Address of the router's gRPC (TLS) listener.
    #[arg(
        long,
        env = "JUMPSTARTER_ROUTER_LISTEN",
        default_value = "127.0.0.1:8083"
    )]
    router_listen: SocketAddr,
    /// UDP address of the router's QUIC session listener (per-lease certificates; advertised
    /// with them) [default: the address of --router-listen: TCP and UDP ports do not clash].
    #[arg(long, env = "JUMPSTARTER_QUIC_LISTEN", conflicts_with = "no_quic")]
    quic_listen: Option<SocketAddr>,
    /// UDP address of the controller's gRPC-over-QUIC listener (the same services and
    /// certificate as --grpc-listen, for hosts that reach the service only over UDP)
    /// [default: the address of --grpc-listen].
    #[arg(
        long,
        env = "JUMPSTARTER_CONTROLLER_QUIC_LISTEN",
        conflicts_with = "no_quic"
    )]
    controller_quic_listen: Option<SocketAddr>,
    /// Start neither QUIC listener (sessions, controller).
    #[arg(long, env = "JUMPSTARTER_NO_QUIC")]
    no_quic: bool,
    #[command(flatten)]
    quic_transport: jumpstarter_tunnel::QuicTransportArgs,
    /// Address of the HTTP listener: `/healthz`, `/readyz`, `/metrics`.
    #[arg(
        long,
        env = "JUMPSTARTER_HTTP_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    http_listen: SocketAddr,
    /// Controller endpoint `host:port` that clients and exporters use (written into their
    /// configurations; a SAN of the certificate) [default: --grpc-listen, 0.0.0.0 → 127.0.0.1].
    #[arg(long, env = "JUMPSTARTER_GRPC_ENDPOINT")]
    grpc_endpoint: Option<String>,
    /// Router endpoint `host:port` handed to clients and exporters
    /// [default: --router-listen, 0.0.0.0 → 127.0.0.1].
    #[arg(long, env = "JUMPSTARTER_ROUTER_ENDPOINT")]
    router_endpoint: Option<String>,
    #[command(flatten)]
    sans: TlsSanArgs,
    #[command(flatten)]
    lifetimes: LifetimeArgs,
    #[command(flatten)]
    caller_limits: LimitArgs,
    #[command(flatten)]
    exporter_labels: ExporterLabelArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    limits: jumpstarter_shell::port_limits::PortLimits,
    #[command(flatten)]
    http2_windows: jumpstarter_shell::http2_windows::Http2Windows,
    #[command(flatten)]
    upstream: UpstreamFileArgs,
    #[command(flatten)]
    legacy_key: jumpstarter_controller::flags::legacy_key::LegacyKeyArgs,
    #[command(flatten)]
    login: jumpstarter_controller::flags::login::LoginArgs,
    /// Serve the lab dashboard on this address (plain HTTP on loopback; HTTPS with the
    /// service's certificate on any other). Its credential is the token in
    /// `<data-dir>/dashboard-token`, made at the first start [default: 127.0.0.1:8084, and
    /// if that port is taken the service goes on without a dashboard].
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_LISTEN")]
    dashboard_listen: Option<std::net::SocketAddr>,
    /// Do not serve the dashboard.
    #[arg(
        long,
        env = "JUMPSTARTER_NO_DASHBOARD",
        default_value_t = false,
        conflicts_with = "dashboard_actions"
    )]
    no_dashboard: bool,
    /// Offer admin actions on the dashboard: end a lease, disable or enable an exporter
    /// (each logged) [default: read-only].
    #[arg(long, env = "JUMPSTARTER_DASHBOARD_ACTIONS", default_value_t = false)]
    dashboard_actions: bool,
    #[command(flatten)]
    dashboard_sso: jumpstarter_controller::flags::dashboard::DashboardSsoArgs,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// Data directory of the running service (standalone mode)
    /// [default: `$XDG_DATA_HOME/jumpstarter`, else `~/.local/share/jumpstarter`].
    #[arg(long, global = true, env = "JUMPSTARTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Kubeconfig file: work through the Kubernetes API (Kubernetes mode).
    #[arg(long, global = true, env = "JUMPSTARTER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use, as `kubectl --context` (Kubernetes mode; of --kubeconfig,
    /// else of `$KUBECONFIG` or `~/.kube/config`) [default: its current context].
    #[arg(long, global = true, env = "JUMPSTARTER_CONTEXT")]
    context: Option<String>,
    /// Work through the Kubernetes API with the usual configuration (in-cluster,
    /// `$KUBECONFIG` or `~/.kube/config`).
    #[arg(long, global = true, env = "JUMPSTARTER_KUBERNETES")]
    kubernetes: bool,
    /// Namespace [default: the service's (standalone), the kubeconfig context's (Kubernetes)].
    #[arg(short, long, global = true, env = "JUMPSTARTER_NAMESPACE")]
    namespace: Option<String>,
    #[command(subcommand)]
    command: AdminSubcommand,
}

#[derive(Debug, Subcommand)]
enum AdminSubcommand {
    /// Create a client or an exporter and write its configuration, or create a lease.
    #[command(subcommand, after_help = CREATE_EXAMPLES)]
    Create(CreateCommand),
    /// Show one object, or list every object of a kind.
    #[command(after_help = GET_EXAMPLES)]
    Get(GetArgs),
    /// List every object of a kind (or show one).
    #[command(after_help = GET_EXAMPLES)]
    List(GetArgs),
    /// Delete an object (a client's or exporter's credential goes with it).
    #[command(after_help = DELETE_EXAMPLES)]
    Delete(DeleteArgs),
    /// Create or update objects from YAML, as `kubectl apply -f` does: Clients, Exporters,
    /// Leases and ExporterAccessPolicies.
    #[command(after_help = APPLY_EXAMPLES, long_about = APPLY_ABOUT)]
    Apply(ApplyArgs),
    /// Check a Kubernetes installation: CRDs, controller, CA and every advertised router.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(check::CheckArgs),
}

/// The long help of `apply`.
const APPLY_ABOUT: &str = "\
Create or update objects from YAML, as `kubectl apply -f` does.

Each document (separated by `---`) has `apiVersion: jumpstarter.dev/v1alpha1`, a `kind`
(Client, Exporter, Lease or ExporterAccessPolicy) and `metadata.name`; its namespace is
`metadata.namespace`, else the one the command works in (a different `metadata.namespace`
is refused with --namespace, and always in standalone mode, whose service serves one).
An absent object is created; a present one gets the document's spec, labels and
annotations (labels and annotations under jumpstarter.dev, kubernetes.io and k8s.io, and
labels an exporter reported, stay) and keeps its status. Prints one line per document:
`<kind>.jumpstarter.dev/<name> created|configured|unchanged`.

Every document is checked before anything is written: a wrong apiVersion or kind, a
missing or invalid name, a field the kind does not have, a YAML syntax error, and the
like refuse the whole file, naming the document and the field.

Clients and exporters created by apply get their credentials from the controller as
usual, but apply prints no configuration: use `create client|exporter` to get the
configuration file `jmp` reads.";

/// Examples after the help of `apply`.
const APPLY_EXAMPLES: &str = "\
Examples:
  # Who may lease which boards, and with what priority
  cat > lab.yaml <<EOF
  apiVersion: jumpstarter.dev/v1alpha1
  kind: ExporterAccessPolicy
  metadata:
    name: lab-policy
  spec:
    exporterSelector:
      matchLabels:
        board: mock
    policies:
      - priority: 20
        from:
          - clientSelector:
              matchLabels:
                team: ci
        maximumDuration: 2h
      - priority: 10
        spotAccess: true
        from:
          - clientSelector: {}
  EOF
  jumpstarter admin apply -f lab.yaml

  # From stdin, against a cluster
  kubectl kustomize lab/ | jumpstarter admin apply -f - --kubeconfig ~/.kube/config";

/// Examples after the help of `get` and `list`.
const GET_EXAMPLES: &str = "\
Examples:
  jumpstarter admin get exporters
  jumpstarter admin get exporters -l 'board=mock,site in (lab-a,lab-b)'
  jumpstarter admin get policies
  jumpstarter admin get policy lab-policy -o yaml
  jumpstarter admin get leases -o name
  jumpstarter admin get clients --kubeconfig ~/.kube/config --context lab";

/// Examples after the help of `delete`.
const DELETE_EXAMPLES: &str = "\
Examples:
  jumpstarter admin delete client alice
  jumpstarter admin delete policies lab-policy
  # No error when it is already gone
  jumpstarter admin delete exporter board-1 --ignore-not-found";

/// Examples after the help of `create`.
const CREATE_EXAMPLES: &str = "\
Examples:
  jumpstarter admin create client alice --out alice.yaml
  jumpstarter admin create exporter board-1 -l board=mock --out board-1.yaml
  jumpstarter admin create lease --client alice -l board=mock --duration 1h";

/// Examples after the help of `create client`.
const CREATE_CLIENT_EXAMPLES: &str = "\
Examples:
  # The configuration into a 0600 file; prints client.jumpstarter.dev/alice created
  jumpstarter admin create client alice --out alice.yaml
  # One an identity-provider user may log in as, configuration on stdout
  jumpstarter admin create client alice --oidc-username dex:alice@example.com > alice.yaml";

/// Examples after the help of `create exporter`.
const CREATE_EXPORTER_EXAMPLES: &str = "\
Examples:
  # Labels are what lease selectors match
  jumpstarter admin create exporter board-1 -l board=mock -l site=lab --out board-1.yaml
  jumpstarter admin create exporter board-2 --kubeconfig ~/.kube/config -n lab > board-2.yaml";

/// Examples after the help of `create lease`.
const CREATE_LEASE_EXAMPLES: &str = "\
Examples:
  # Any board=mock exporter for an hour; prints lease.jumpstarter.dev/<uuid> created
  jumpstarter admin create lease --client alice -l board=mock --duration 1h
  # One exporter, from a given time, shown as a table
  jumpstarter admin create lease --client alice --exporter board-1 \\
      --begin-time 2030-01-31T09:00:00Z --duration 2h --name nightly -o table";

/// Examples after the help of `check`.
const CHECK_EXAMPLES: &str = "\
Examples:
  jumpstarter admin check --kubeconfig ~/.kube/config -n jumpstarter-lab
  jumpstarter admin check --context prod -n lab -o json";

#[derive(Debug, Args)]
struct ApplyArgs {
    /// The YAML file to apply; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
}

#[derive(Debug, Subcommand)]
enum CreateCommand {
    /// Create a client; writes its ClientConfig (drivers.unsafe: true).
    #[command(after_help = CREATE_CLIENT_EXAMPLES)]
    Client(CreateArgs),
    /// Create an exporter; writes its ExporterConfig with an empty `export:` to fill in.
    #[command(after_help = CREATE_EXPORTER_EXAMPLES)]
    Exporter(CreateArgs),
    /// Create a lease for a client, as `jmp create lease` would; prints
    /// `lease.jumpstarter.dev/<name> created`, or the lease like `get` with -o.
    #[command(after_help = CREATE_LEASE_EXAMPLES)]
    Lease(CreateLeaseArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["selector", "exporter"])))]
struct CreateLeaseArgs {
    /// The client the lease is for (it must exist).
    #[arg(long)]
    client: String,
    /// Label selector of the exporters that may serve it, e.g. `board=mock,site in (a,b)`.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// The one exporter to lease, by name.
    #[arg(long)]
    exporter: Option<String>,
    /// How long, as a Go duration [default: 30m, unless --end-time is given].
    #[arg(long, value_parser = parse_lease_duration)]
    duration: Option<String>,
    /// When the lease may start (RFC 3339, e.g. 2025-01-31T09:00:00Z).
    #[arg(long, value_parser = parse_begin_time)]
    begin_time: Option<String>,
    /// When the lease ends (RFC 3339).
    #[arg(long, value_parser = parse_end_time)]
    end_time: Option<String>,
    /// Tag `key=value` (repeatable), stored as label `metadata.jumpstarter.dev/<key>`.
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// The lease's name [default: a new UUIDv7].
    #[arg(long)]
    name: Option<String>,
    /// Show the created lease in this format [default: the line
    /// `lease.jumpstarter.dev/<name> created`].
    #[arg(short, long, env = "JUMPSTARTER_OUTPUT", value_enum)]
    output: Option<OutputArg>,
}

/// Duration of a lease when neither `--duration` nor `--end-time` is given.
const DEFAULT_LEASE_DURATION: &str = "30m";

#[derive(Debug, Args)]
struct CreateArgs {
    /// Object name (lowercase letters, digits, '-', '.').
    name: String,
    /// Label `key=value` (repeatable); lease selectors match exporter labels.
    #[arg(short, long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Identity-provider username that may act as the object too (`spec.username`, e.g.
    /// `dex:alice@example.com`: the JWT authenticator's prefix and claim), as
    /// `jmp admin create --oidc-username` sets it.
    #[arg(long)]
    oidc_username: Option<String>,
    /// Write the configuration to this file (mode 0600) instead of stdout; stdout then
    /// gets the `<kind>.jumpstarter.dev/<name> created` line (else stderr does).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// What to show.
    kind: KindArg,
    /// One object's name; all of them when absent.
    #[arg(conflicts_with = "selector")]
    name: Option<String>,
    /// Output format.
    #[arg(short, long, env = "JUMPSTARTER_OUTPUT", value_enum, default_value_t = OutputArg::Table)]
    output: OutputArg,
    /// Only objects whose labels match this label selector (kubectl syntax:
    /// `board=mock,site!=b,tier in (x,y),!old`).
    #[arg(short = 'l', long, env = "JUMPSTARTER_SELECTOR", value_parser = parse_selector)]
    selector: Option<LabelSelector>,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// What to delete.
    kind: KindArg,
    /// Its name.
    name: String,
    /// Succeed silently when the object does not exist (else that is an error naming it).
    #[arg(long, env = "JUMPSTARTER_IGNORE_NOT_FOUND")]
    ignore_not_found: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    #[value(name = "clients", alias = "client")]
    Clients,
    #[value(name = "exporters", alias = "exporter")]
    Exporters,
    #[value(name = "leases", alias = "lease")]
    Leases,
    /// ExporterAccessPolicies.
    #[value(
        name = "policies",
        aliases = ["policy", "exporteraccesspolicy", "exporteraccesspolicies"]
    )]
    Policies,
}

impl From<KindArg> for Kind {
    fn from(kind: KindArg) -> Kind {
        match kind {
            KindArg::Clients => Kind::Client,
            KindArg::Exporters => Kind::Exporter,
            KindArg::Leases => Kind::Lease,
            KindArg::Policies => Kind::Policy,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputArg {
    Table,
    Yaml,
    Json,
    /// `<kind>.jumpstarter.dev/<name>`, one per line.
    Name,
}

impl From<OutputArg> for OutputFormat {
    fn from(output: OutputArg) -> OutputFormat {
        match output {
            OutputArg::Table => OutputFormat::Table,
            OutputArg::Yaml => OutputFormat::Yaml,
            OutputArg::Json => OutputFormat::Json,
            OutputArg::Name => OutputFormat::Name,
        }
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Which flags were given explicitly: they win over the configuration file.
    let given = matches
        .subcommand_matches("serve")
        .map(GivenFlags::from_matches)
        .unwrap_or_default();
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => match cli.command {
            Command::Serve(args) => {
                logging::init(args.log.log_format, "info");
                runtime.block_on(serve_command(args, given))
            }
            Command::Admin(args) => {
                logging::init(LogFormat::Text, "warn");
                runtime.block_on(admin(args))
            }
            Command::Completion(args) => completion(args.shell),
        },
        Err(e) => Err(anyhow::Error::new(e).context("start the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_command(args: ServeArgs, given: GivenFlags) -> anyhow::Result<()> {
    let upstream = args
        .upstream
        .load()
        .map_err(|e| anyhow::Error::new(e).context("read the configuration"))?;
    let options = ServeOptions {
        data_dir: DataDir::from_env(args.data_dir.as_deref())?,
        namespace: args.namespace,
        grpc_listen: args.grpc_listen,
        router_listen: args.router_listen,
        quic_listen: if args.no_quic {
            None
        } else {
            Some(args.quic_listen.unwrap_or(args.router_listen))
        },
        controller_quic_listen: if args.no_quic {
            None
        } else {
            Some(args.controller_quic_listen.unwrap_or(args.grpc_listen))
        },
        quic_transport: args.quic_transport.transport(),
        http_listen: args.http_listen,
        login: jumpstarter_controller::runtime::LoginListen::from_args(&args.login),
        dashboard: (!args.no_dashboard).then_some(serve::DashboardOptions {
            addr: args
                .dashboard_listen
                .unwrap_or(serve::DEFAULT_DASHBOARD_LISTEN),
            optional: args.dashboard_listen.is_none(),
            actions: args.dashboard_actions,
            sso: args.dashboard_sso,
        }),
        grpc_endpoint: args.grpc_endpoint,
        router_endpoint: args.router_endpoint,
        tls_sans: args.sans.tls_sans,
        token_lifetime: args.lifetimes.token_lifetime.0,
        lease_cert_max_validity: args.lifetimes.lease_cert_max_validity.0,
        limits: args.limits,
        http2_windows: args.http2_windows,
        caller_limits: args.caller_limits.limits(),
        exporter_label_prefixes: args.exporter_labels.exporter_label_prefixes,
        upstream,
        given,
        legacy_key: args.legacy_key.or_upstream(
            std::env::var(jumpstarter_controller::flags::legacy_key::UPSTREAM_ENV).ok(),
        ),
    };
    serve::serve(options).await
}

/// Writes the completion script of `shell` to stdout.
fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "jumpstarter", &mut stdout);
    stdout.flush()?;
    Ok(())
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let target = Target {
        data_dir: args.data_dir,
        kubeconfig: args.kubeconfig,
        context: args.context,
        kubernetes: args.kubernetes,
        namespace: args.namespace,
    };
    let command = match args.command {
        AdminSubcommand::Create(CreateCommand::Lease(args)) => lease_command(args),
        AdminSubcommand::Create(CreateCommand::Client(args)) => create_command(Kind::Client, args),
        AdminSubcommand::Create(CreateCommand::Exporter(args)) => {
            create_command(Kind::Exporter, args)
        }
        AdminSubcommand::Get(args) | AdminSubcommand::List(args) => AdminCommand::Get {
            kind: args.kind.into(),
            name: args.name,
            output: args.output.into(),
            selector: args.selector,
        },
        AdminSubcommand::Delete(args) => AdminCommand::Delete {
            kind: args.kind.into(),
            name: args.name,
            ignore_not_found: args.ignore_not_found,
        },
        AdminSubcommand::Apply(args) => AdminCommand::Apply { file: args.file },
        AdminSubcommand::Check(args) => {
            return check::run(
                target.kubeconfig.as_deref(),
                target.context.as_deref(),
                target.namespace,
                args,
            )
            .await;
        }
    };
    admin_command::run(&target, command).await
}

fn create_command(kind: Kind, args: CreateArgs) -> AdminCommand {
    AdminCommand::Create {
        kind,
        name: args.name,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        username: args.oidc_username,
        out: args.out,
    }
}

fn lease_command(args: CreateLeaseArgs) -> AdminCommand {
    let duration = match (args.duration, &args.end_time) {
        (Some(duration), _) => Some(duration),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_LEASE_DURATION.to_owned()),
    };
    AdminCommand::CreateLease {
        order: LeaseOrder {
            client: args.client,
            selector: args.selector,
            exporter: args.exporter,
            duration,
            begin_time: args.begin_time,
            end_time: args.end_time,
            tags: args.tags.into_iter().collect(),
            name: args.name,
        },
        output: args.output.map(OutputFormat::from),
    }
}

/// A label selector of `get -l`, checked as Kubernetes checks one.
fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    let parsed = selector::parse(text).map_err(|e| e.to_string())?;
    selector::validate(&parsed).map_err(|e| e.to_string())?;
    Ok(parsed)
}

/// `key=value`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("label {text:?} is not key=value"));
    };
    let (key, value) = (key.trim(), value.trim());
    admin_ops::validate_label(key, value).map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}

/// `key=value`; the tag rules are checked where the lease is created.
fn parse_tag(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("tag {text:?} is not key=value"));
    };
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// A Go duration, kept as written (the lease checks read it again).
fn parse_lease_duration(text: &str) -> Result<String, String> {
    admin_ops::lease::parse_duration(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn parse_begin_time(text: &str) -> Result<String, String> {
    admin_ops::lease::parse_time(text, "begin_time").map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn parse_end_time(text: &str) -> Result<String, String> {
    admin_ops::lease::parse_time(text, "end_time").map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use jumpstarter_controller::settings;

    use super::*;

    #[test]
    fn no_arguments_is_an_error_that_shows_help() {
        let err = Cli::try_parse_from(["jumpstarter"]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }

    #[test]
    fn flags_are_consistent_and_serve_defaults_are_loopback() {
        let cli = Cli::try_parse_from(["jumpstarter", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.grpc_listen, "127.0.0.1:8082".parse().unwrap());
        assert_eq!(args.router_listen, "127.0.0.1:8083".parse().unwrap());
        assert_eq!(args.http_listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(args.namespace, "default");
        assert_eq!(
            args.lifetimes.token_lifetime.0,
            settings::DEFAULT_TOKEN_LIFETIME
        );
        assert_eq!(args.quic_listen, None);
        assert_eq!(args.controller_quic_listen, None);
        assert!(!args.no_quic);
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_go_durations_and_integer_seconds_are_deprecated_aliases() {
        let serve = |value: &str| {
            let cli = Cli::try_parse_from(["jumpstarter", "serve", "--token-lifetime", value])
                .expect("parse");
            let Command::Serve(args) = cli.command else {
                panic!("serve")
            };
            args.lifetimes.token_lifetime.0
        };
        assert_eq!(serve("1h30m"), time::Duration::minutes(90));
        assert_eq!(serve("3600"), time::Duration::hours(1));
    }

    #[test]
    fn controller_quic_listen_and_no_quic_exclude_each_other() {
        let cli = Cli::try_parse_from([
            "jumpstarter",
            "serve",
            "--controller-quic-listen",
            "0.0.0.0:4434",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(
            args.controller_quic_listen,
            Some("0.0.0.0:4434".parse().unwrap())
        );
        let both = Cli::try_parse_from([
            "jumpstarter",
            "serve",
            "--no-quic",
            "--controller-quic-listen",
            "0.0.0.0:4434",
        ])
        .unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn quic_listen_and_no_quic_exclude_each_other() {
        let cli =
            Cli::try_parse_from(["jumpstarter", "serve", "--quic-listen", "0.0.0.0:4433"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.quic_listen, Some("0.0.0.0:4433".parse().unwrap()));
        let both = Cli::try_parse_from([
            "jumpstarter",
            "serve",
            "--no-quic",
            "--quic-listen",
            "0.0.0.0:4433",
        ])
        .unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn create_lease_needs_exactly_one_target_and_defaults_its_duration() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["jumpstarter", "admin", "create", "lease", "--client", "a"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        let neither = parse(&[]).unwrap_err();
        assert_eq!(
            neither.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let both = parse(&["-l", "a=b", "--exporter", "e"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        let bad = parse(&["-l", "a=b", "--duration", "soon"]).unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::ValueValidation);
        let bad = parse(&["-l", "a=b", "--begin-time", "today"]).unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::ValueValidation);

        let lease = |extra: &[&str]| {
            let Command::Admin(args) = parse(extra).unwrap().command else {
                panic!("admin")
            };
            let AdminSubcommand::Create(CreateCommand::Lease(args)) = args.command else {
                panic!("create lease")
            };
            let AdminCommand::CreateLease { order, .. } = lease_command(args) else {
                panic!("a lease command")
            };
            order
        };
        let order = lease(&["-l", "a=b", "--tag", "k=v", "--tag", "x=y"]);
        assert_eq!(order.duration.as_deref(), Some("30m"));
        assert_eq!(order.selector.as_deref(), Some("a=b"));
        assert_eq!(order.tags.len(), 2);
        let order = lease(&["--exporter", "e", "--end-time", "2030-01-01T00:00:00Z"]);
        assert_eq!(order.duration, None, "the end time alone needs no default");
        let order = lease(&["--exporter", "e", "--duration", "2h"]);
        assert_eq!(order.duration.as_deref(), Some("2h"));
    }

    #[test]
    fn every_admin_command_shows_examples() {
        fn check(command: &clap::Command, path: &str) {
            let path = format!("{path} {}", command.get_name());
            let examples = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                examples.starts_with("Examples:\n") && examples.contains("  jumpstarter "),
                "{path} has no examples"
            );
            for sub in command.get_subcommands() {
                check(sub, &path);
            }
        }
        let cli = Cli::command();
        for name in ["admin", "completion"] {
            let command = cli.find_subcommand(name).expect("subcommand");
            check(command, "jumpstarter");
        }
        let admin = cli.find_subcommand("admin").expect("admin");
        let mut names: Vec<&str> = admin.get_subcommands().map(|c| c.get_name()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["apply", "check", "create", "delete", "get", "list"],
            "every subcommand was checked"
        );
    }

    #[test]
    fn get_takes_a_label_selector_checked_at_parse_time() {
        let get = |extra: &[&str]| {
            let mut args = vec!["jumpstarter", "admin", "get", "exporters"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        let Command::Admin(args) = get(&["-l", "board=mock,site in (a,b)"]).unwrap().command else {
            panic!("admin")
        };
        let AdminSubcommand::Get(get_args) = args.command else {
            panic!("get")
        };
        let selector = get_args.selector.expect("selector");
        assert_eq!(selector::format(&selector), "board=mock,site in (a,b)");
        assert!(get(&["--selector", "!old"]).is_ok());

        let bad = get(&["-l", "board in ("]).unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            bad.to_string()
                .contains("invalid label selector \"board in (\""),
            "{bad}"
        );
        let bad = get(&["-l", "Bad Key=x"]).unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::ValueValidation);
        let both = get(&["board-1", "-l", "a=b"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn delete_ignore_not_found_and_context_parse() {
        let cli = Cli::try_parse_from([
            "jumpstarter",
            "admin",
            "delete",
            "client",
            "alice",
            "--ignore-not-found",
            "--context",
            "lab",
        ])
        .unwrap();
        let Command::Admin(args) = cli.command else {
            panic!("admin")
        };
        assert_eq!(args.context.as_deref(), Some("lab"));
        let AdminSubcommand::Delete(delete) = args.command else {
            panic!("delete")
        };
        assert!(delete.ignore_not_found);
    }

    #[test]
    fn completions_know_the_admin_flags() {
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "_jumpstarter()"),
            (clap_complete::Shell::Zsh, "#compdef jumpstarter"),
            (clap_complete::Shell::Fish, "complete -c jumpstarter"),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "jumpstarter", &mut script);
            let script = String::from_utf8(script).expect("UTF-8");
            assert!(script.contains(marker), "{shell}");
            for flag in ["ignore-not-found", "selector", "context", "kubeconfig"] {
                assert!(script.contains(flag), "{shell} completes --{flag}");
            }
        }
    }

    #[test]
    fn admin_flags_parse_anywhere() {
        let line = "jumpstarter admin create exporter board-1 -l board=mock --label site=lab \
                    --data-dir /tmp/x --out b.yaml";
        let cli = Cli::try_parse_from(line.split_whitespace()).unwrap();
        let Command::Admin(args) = cli.command else {
            panic!("admin")
        };
        assert_eq!(
            args.data_dir.as_deref(),
            Some(std::path::Path::new("/tmp/x"))
        );
        let AdminSubcommand::Create(CreateCommand::Exporter(create)) = args.command else {
            panic!("create exporter")
        };
        assert_eq!(create.labels.len(), 2);
        assert!(
            Cli::try_parse_from(["jumpstarter", "admin", "get", "lease", "-o", "json"]).is_ok()
        );
        assert!(Cli::try_parse_from(["jumpstarter", "admin", "get", "pods"]).is_err());
        for policy in [
            "policy",
            "policies",
            "exporteraccesspolicy",
            "exporteraccesspolicies",
        ] {
            let cli =
                Cli::try_parse_from(["jumpstarter", "admin", "delete", policy, "p1"]).unwrap();
            let Command::Admin(args) = cli.command else {
                panic!("admin")
            };
            let AdminSubcommand::Delete(delete) = args.command else {
                panic!("delete")
            };
            assert_eq!(Kind::from(delete.kind), Kind::Policy, "{policy}");
        }
        let cli =
            Cli::try_parse_from(["jumpstarter", "admin", "apply", "-f", "-", "-n", "lab"]).unwrap();
        let Command::Admin(args) = cli.command else {
            panic!("admin")
        };
        assert!(
            matches!(args.command, AdminSubcommand::Apply(ApplyArgs { file }) if file.as_os_str() == "-")
        );
        assert!(Cli::try_parse_from(["jumpstarter", "admin", "apply"]).is_err());
        assert!(
            Cli::try_parse_from(["jumpstarter", "admin", "get", "leases", "-o", "name"]).is_ok()
        );
        assert!(
            Cli::try_parse_from(["jumpstarter", "admin", "create", "client", "a", "-l", "bad"])
                .is_err()
        );
    }
}
