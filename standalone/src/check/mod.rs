//! `jumpstarter admin check`: is the Jumpstarter service in a Kubernetes namespace usable?
//! Like `linkerd check`, it verifies and reports each property with a name, ok or failed,
//! and the precise reason:
//!
//! - `crd/<name>`: each of the four CRDs exists, is Established and serves `v1alpha1`
//!   (read from the CRD object, or from API discovery when the identity may not read CRDs);
//! - `controller/ca`: the CA the controller publishes in ConfigMap
//!   `jumpstarter-service-ca-cert` (what client and exporter configurations trust) parses,
//!   is a CA and is valid now;
//! - `controller/leader`: the leader election Lease is held and fresh (a controller runs
//!   its reconcile loop);
//! - `controller/deployment`: every desired pod of the controller Deployment is ready (when
//!   a Deployment is used, see below);
//! - `controller/endpoints`: the advertised controller and router endpoints, from the
//!   Deployment's `--grpc-endpoint` and `--router` arguments or from the command line;
//! - `controller/tls`, `controller/grpc`: the controller endpoint answers TLS with a
//!   certificate for its host that chains to the CA, and its gRPC health says SERVING;
//! - `router/<name>/tcp`: the router endpoint answers TLS (ALPN h2) with a certificate for
//!   its host that chains to the CA;
//! - `router/<name>/udp`: for a router advertised with a QUIC endpoint, a QUIC handshake
//!   over UDP reaches it and its certificate verifies the same way. Sessions need a lease
//!   certificate this check does not hold; a server certificate that verified proves the
//!   UDP path and the router's identity, whatever the router does next with the anonymous
//!   peer (it may close the connection: that is still a pass).
//!
//! Text output by default, `-o json` for programs; the exit status is non-zero when any
//! check fails. Every API call and network step is bounded by `--timeout`.
//!
//! Map: [`probe`] does the I/O, [`verdict`] judges what it observed, [`advertised`] reads
//! the endpoints from the controller's arguments, [`report`] renders the result.

mod advertised;
mod probe;
mod report;
mod verdict;

use std::path::Path;

use clap::{Args, ValueEnum};
use jumpstarter_controller::crd::{self, GROUP, VERSION};
use jumpstarter_controller::flags::GoDuration;
use jumpstarter_controller::keys::{CA_CERT_KEY, CA_CONFIG_MAP};
use jumpstarter_controller::leader::LEASE_NAME;
use jumpstarter_controller::settings::RouterEntry;
use jumpstarter_shell::kube_client;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use advertised::Advertised;
use report::{Check, Report};
use verdict::Fetched;

/// A few seconds: loopback and LAN answers take milliseconds; a busy API server or a
/// lossy path still fits, and a run with several routers stays short.
const DEFAULT_TIMEOUT: time::Duration = time::Duration::seconds(5);

/// Labels of the chart's controller Deployment, used when none is named.
const CONTROLLER_SELECTOR: &str =
    "app.kubernetes.io/component=controller,app.kubernetes.io/part-of=jumpstarter";

/// ALPN of the controller's gRPC port and of the h2 router.
const H2: &[u8] = b"h2";

/// `jumpstarter admin check` flags.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The controller's Deployment: its readiness, and the endpoints its arguments advertise
    /// [default: the Deployment labelled app.kubernetes.io/component=controller and
    /// app.kubernetes.io/part-of=jumpstarter, unless both endpoint flags are given].
    #[arg(long, env = "JUMPSTARTER_CHECK_CONTROLLER_DEPLOYMENT")]
    controller_deployment: Option<String>,
    /// Check this controller endpoint `host:port` instead of the advertised one.
    #[arg(long, env = "JUMPSTARTER_CHECK_CONTROLLER_ENDPOINT", value_parser = advertised::parse_endpoint)]
    controller_endpoint: Option<String>,
    /// Check this router instead of the advertised ones (repeatable), as
    /// `name=host:port[;quic=host:port]` (the controller's `--router` syntax) or `host:port`.
    #[arg(
        long = "router-endpoint",
        env = "JUMPSTARTER_CHECK_ROUTER_ENDPOINTS",
        value_delimiter = ',',
        value_parser = advertised::parse_router_endpoint
    )]
    router_endpoints: Vec<RouterEntry>,
    /// Bound of every API call and network step, as a Go duration.
    #[arg(
        long,
        env = "JUMPSTARTER_CHECK_TIMEOUT",
        default_value_t = GoDuration(DEFAULT_TIMEOUT),
        value_parser = GoDuration::parse
    )]
    timeout: GoDuration,
    /// Output format.
    #[arg(short, long, env = "JUMPSTARTER_CHECK_OUTPUT", value_enum, default_value_t = CheckOutput::Text)]
    output: CheckOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CheckOutput {
    Text,
    Json,
}

/// Runs every check against the cluster of `kubeconfig` (else the in-cluster or usual
/// configuration) in `namespace` (else the configuration's), prints the report on stdout,
/// and fails when a check failed.
pub(crate) async fn run(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<String>,
    args: CheckArgs,
) -> anyhow::Result<()> {
    let timeout = std::time::Duration::try_from(args.timeout.0)
        .map_err(|_| anyhow::anyhow!("--timeout must be positive"))?;
    let client = kube_client::connect_to(kubeconfig, context).await?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let report = Report::new(checks(&client, &namespace, &args, timeout).await);
    let text = match args.output {
        CheckOutput::Text => report.text(),
        CheckOutput::Json => report.json(),
    };
    print!("{text}");
    let failed = report.failed();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} checks failed: {}",
            failed.len(),
            report.checks.len(),
            failed.join(", ")
        )
    }
}

async fn checks(
    client: &kube::Client,
    namespace: &str,
    args: &CheckArgs,
    timeout: std::time::Duration,
) -> Vec<Check> {
    let now = OffsetDateTime::now_utc();
    let mut checks = Vec::new();

    let group_version = format!("{GROUP}/{VERSION}");
    // The reads are independent: together they take one timeout at most.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definitions: Vec<(String, String)> = crd::definitions()
        .into_iter()
        .map(|d| (d.metadata.name.unwrap_or_default(), d.spec.names.plural))
        .collect();
    let objects = futures::future::join_all(
        definitions
            .iter()
            .map(|(name, _)| probe::get(&crds, name, timeout)),
    );
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let leases = Api::<Lease>::namespaced(client.clone(), namespace);
    let (objects, config_map, lease) = tokio::join!(
        objects,
        probe::get(&config_maps, CA_CONFIG_MAP, timeout),
        probe::get(&leases, LEASE_NAME, timeout),
    );
    let discovery = if objects.iter().any(|o| matches!(o, Fetched::Denied(_))) {
        probe::discovery(client, &group_version, timeout).await
    } else {
        Fetched::Missing
    };
    for ((name, plural), object) in definitions.iter().zip(&objects) {
        checks.push(verdict::crd(
            name,
            plural,
            &group_version,
            VERSION,
            object,
            &discovery,
        ));
    }

    let (ca_check, roots) = verdict::ca(namespace, CA_CONFIG_MAP, CA_CERT_KEY, &config_map, now);
    checks.push(ca_check);
    let ca_pem = match &config_map {
        Fetched::Found(map) => map
            .data
            .as_ref()
            .and_then(|d| d.get(CA_CERT_KEY))
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    };
    checks.push(verdict::leader(namespace, LEASE_NAME, &lease, now));

    let uses_deployment = args.controller_deployment.is_some()
        || args.controller_endpoint.is_none()
        || args.router_endpoints.is_empty();
    let discovered = if uses_deployment {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let (what, fetched) = match &args.controller_deployment {
            Some(name) => (
                format!("Deployment {name}"),
                probe::get(&deployments, name, timeout).await,
            ),
            None => (
                format!(
                    "a Deployment labelled {CONTROLLER_SELECTOR} (name one with --controller-deployment, or give --controller-endpoint and --router-endpoint)"
                ),
                probe::find_deployment(&deployments, CONTROLLER_SELECTOR, timeout).await,
            ),
        };
        checks.push(verdict::deployment(namespace, &what, &fetched));
        Some(match fetched {
            Fetched::Found(deployment) => advertised_by(namespace, &deployment),
            _ => Err(
                "the controller Deployment could not be read (see controller/deployment)"
                    .to_owned(),
            ),
        })
    } else {
        None
    };
    let (advertised, source) = merge(args, discovered);
    checks.push(verdict::endpoints(&source, &advertised));
    if let Ok(advertised) = advertised {
        checks.extend(endpoint_checks(&advertised, roots.as_deref(), &ca_pem, timeout).await);
    }
    checks
}

/// The endpoints of the `jumpstarter-controller run` container of `deployment`.
fn advertised_by(namespace: &str, deployment: &Deployment) -> Result<Advertised, String> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let Some(container) = containers
        .iter()
        .find(|c| c.name == "controller")
        .or(containers.first())
    else {
        return Err(format!("Deployment {namespace}/{name} has no container"));
    };
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    advertised::from_container(container.args.as_deref().unwrap_or_default(), &env)
        .map_err(|e| format!("Deployment {namespace}/{name}: {e}"))
}

/// The endpoints to check: the command line's where given, else the Deployment's; and a
/// note of where they came from.
fn merge(
    args: &CheckArgs,
    discovered: Option<Result<Advertised, String>>,
) -> (Result<Advertised, String>, String) {
    let (controller, routers) = (&args.controller_endpoint, &args.router_endpoints);
    let source = match (controller.is_some(), !routers.is_empty()) {
        (true, true) => "from the command line",
        (true, false) => "controller from the command line, routers from the Deployment",
        (false, true) => "controller from the Deployment, routers from the command line",
        (false, false) => "from the controller Deployment's arguments",
    }
    .to_owned();
    if let (Some(controller), false) = (controller, routers.is_empty()) {
        let advertised = Advertised {
            controller: controller.clone(),
            routers: routers.clone(),
        };
        return (Ok(advertised), source);
    }
    let merged = match discovered {
        Some(Ok(found)) => Ok(Advertised {
            controller: controller.clone().unwrap_or(found.controller),
            routers: if routers.is_empty() {
                found.routers
            } else {
                routers.clone()
            },
        }),
        Some(Err(e)) => Err(e),
        None => Err("no endpoints to check".to_owned()),
    };
    (merged, source)
}

/// TLS, gRPC and QUIC checks of every advertised endpoint, run concurrently.
async fn endpoint_checks(
    advertised: &Advertised,
    roots: Option<&[CertificateDer<'static>]>,
    ca_pem: &str,
    timeout: std::time::Duration,
) -> Vec<Check> {
    let router_names = |r: &RouterEntry| {
        (
            format!("router/{}/tcp", r.name),
            format!("router/{}/udp", r.name),
        )
    };
    let Some(roots) = roots else {
        let mut checks = vec![
            verdict::without_ca("controller/tls"),
            verdict::without_ca("controller/grpc"),
        ];
        for router in &advertised.routers {
            let (tcp, udp) = router_names(router);
            checks.push(verdict::without_ca(&tcp));
            if router.quic_endpoint.is_some() {
                checks.push(verdict::without_ca(&udp));
            }
        }
        return checks;
    };
    let controller = &advertised.controller;
    let routers = futures::future::join_all(advertised.routers.iter().map(|router| async move {
        let tcp = probe::tls(&router.endpoint, roots, H2, timeout).await;
        let udp = match &router.quic_endpoint {
            Some(quic) => Some(probe::quic(quic, roots, timeout).await),
            None => None,
        };
        (router, tcp, udp)
    }));
    let (controller_tls, controller_health, routers) = tokio::join!(
        probe::tls(controller, roots, H2, timeout),
        probe::health(controller, ca_pem, timeout),
        routers
    );
    let host = |endpoint: &str| {
        advertised::split_host_port(endpoint)
            .map(|(host, _)| host)
            .unwrap_or_default()
    };
    let mut checks = vec![
        verdict::tls(
            "controller/tls",
            controller,
            &host(controller),
            H2,
            &controller_tls,
        ),
        verdict::health(controller, &controller_health),
    ];
    for (router, tcp, udp) in routers {
        let (tcp_name, udp_name) = router_names(router);
        checks.push(verdict::tls(
            &tcp_name,
            &router.endpoint,
            &host(&router.endpoint),
            H2,
            &tcp,
        ));
        if let (Some(udp), Some(quic)) = (udp, &router.quic_endpoint) {
            checks.push(verdict::quic(&udp_name, quic, &host(quic), &udp));
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }

    fn args(line: &[&str]) -> CheckArgs {
        let mut argv = vec!["check"];
        argv.extend_from_slice(line);
        Cli::try_parse_from(argv).expect("flags").check
    }

    fn deployment() -> Option<Result<Advertised, String>> {
        Some(advertised::from_container(
            &[
                "--grpc-endpoint=c.lab:8082".to_owned(),
                "--router=r0=r0.lab:8083;quic=r0.lab:8083".to_owned(),
            ],
            &[],
        ))
    }

    #[test]
    fn the_command_line_overrides_what_the_deployment_advertises() {
        let (all, source) = merge(&args(&[]), deployment());
        let all = all.unwrap();
        assert_eq!(all.controller, "c.lab:8082");
        assert_eq!(all.routers[0].name, "r0");
        assert_eq!(source, "from the controller Deployment's arguments");

        let (mixed, source) = merge(&args(&["--controller-endpoint=127.0.0.1:9"]), deployment());
        let mixed = mixed.unwrap();
        assert_eq!(
            (mixed.controller.as_str(), mixed.routers.len()),
            ("127.0.0.1:9", 1)
        );
        assert!(source.starts_with("controller from the command line"));

        let given = args(&[
            "--controller-endpoint=127.0.0.1:9",
            "--router-endpoint=a=127.0.0.1:1",
            "--router-endpoint=127.0.0.1:2",
        ]);
        let (only, _) = merge(&given, None);
        assert_eq!(only.unwrap().routers.len(), 2);
        let (unknown, _) = merge(&args(&[]), Some(Err("unreadable".into())));
        assert_eq!(unknown.unwrap_err(), "unreadable");
    }

    #[test]
    fn flags_have_their_defaults_and_reject_bad_values() {
        let parsed = args(&[]);
        assert_eq!(parsed.timeout.0, DEFAULT_TIMEOUT);
        assert_eq!(parsed.output, CheckOutput::Text);
        assert!(Cli::try_parse_from(["check", "--timeout=0s"]).is_err());
        assert!(Cli::try_parse_from(["check", "--router-endpoint=https://x:1"]).is_err());
        assert!(Cli::try_parse_from(["check", "--controller-endpoint=nohost"]).is_err());
        assert_eq!(args(&["-o", "json"]).output, CheckOutput::Json);
    }
}
