//! The real jumpstarter 0.9.0 exporter (`jmp run`) and client (`jmp …`, `j …`), each
//! behind a `jumpstarter-edge` in its own network namespace, against `jumpstarter serve` in
//! the root namespace.
//!
//! The service listens on the root side of the exporter namespace's veth for TCP (controller
//! gRPC, h2 router) and UDP (controller gRPC over QUIC, QUIC router); the client namespace
//! reaches that address through its own veth. Each namespace drops, and counts, every TCP
//! packet that tries to leave it ([`Netns`]), so whatever the tools did, every byte between
//! them and the service went over UDP: the QUIC router's metrics count the sessions, the h2
//! router's count stays zero, and the namespaces' counters show UDP leaving and no TCP.
//!
//! Tests run one at a time (each starts Python processes that need the CPU).
#![allow(clippy::await_holding_lock)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use jumpstarter_e2e::netns::{Netns, Traffic};
use jumpstarter_e2e::{Lab, Output, Proc, metric_sum};

const EDGE: &str = env!("CARGO_BIN_EXE_jumpstarter-edge");
const ONLINE_TIMEOUT: Duration = Duration::from_secs(90);
const TOOL_TIMEOUT: Duration = Duration::from_secs(180);
const LEASE_TIMEOUT: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The service and two namespaces. Field order is drop order: the lab's processes end
/// before their namespaces go.
struct World {
    lab: Lab,
    exporters: Netns,
    clients: Netns,
    edge_configs: AtomicU32,
}

impl World {
    /// A world with exporter `board-1` (`board=mock`) online behind its edge, and client
    /// `c1`'s configuration.
    async fn with_board_and_client(prefix: &str) -> (World, PathBuf) {
        let mut world = World::start(prefix, &[]).await;
        world.start_exporter("board-1", &["board=mock"], &[]).await;
        let c1 = world.lab.create_client("c1").await.expect("c1");
        (world, c1)
    }

    async fn start(prefix: &str, serve_args: &[&str]) -> World {
        let exporters = Netns::create("exp").expect("the exporter namespace");
        let clients = Netns::create("cli").expect("the client namespace");
        let lab = Lab::start_standalone_on(prefix, IpAddr::V4(exporters.host_addr()), serve_args)
            .await
            .expect("start the service");
        World {
            lab,
            exporters,
            clients,
            edge_configs: AtomicU32::new(0),
        }
    }

    /// The service's address (TCP and UDP), as the namespaces reach it.
    fn service(&self) -> String {
        self.exporters.host_addr().to_string()
    }

    /// Creates exporter `name` (admin, root namespace), adds the shell methods `extra`, and
    /// starts `jmp run` behind its edge in the exporter namespace; waits until it is online.
    async fn start_exporter(&mut self, name: &str, labels: &[&str], extra: &[(&str, &str)]) {
        let config = self
            .lab
            .create_exporter_config(name, labels)
            .await
            .expect("exporter config");
        if !extra.is_empty() {
            let mut yaml: serde_norway::Value =
                serde_norway::from_str(&std::fs::read_to_string(&config).expect("read"))
                    .expect("yaml");
            for (method, command) in extra {
                yaml["export"]["sh"]["config"]["methods"][*method] = (*command).into();
            }
            std::fs::write(&config, serde_norway::to_string(&yaml).expect("yaml")).expect("write");
        }
        let endpoint = tool_endpoint(&config);
        assert!(
            endpoint.starts_with(&format!("{}:", self.service())),
            "the exporter's configuration names {endpoint}, not the service's veth address"
        );
        let edge_config = self.lab.path(&format!("{name}.edge.yaml"));
        let mut edge_args = edge_args("exporter", &config, &edge_config);
        edge_args.extend(["run", "--exporter-config"].map(str::to_owned));
        edge_args.push(edge_config.to_string_lossy().into_owned());
        let edge_args: Vec<&str> = edge_args.iter().map(String::as_str).collect();
        let args = self.exporters.exec_args(EDGE, &edge_args);
        let mut command = self.lab.tool_command("ip", &args);
        command.env("RUST_LOG", "info,jumpstarter_edge=debug");
        let proc = Proc::spawn(
            &format!("exporter edge {name}"),
            command,
            self.lab.path(&format!("edge-{name}.log")),
        )
        .expect("spawn the exporter edge");
        self.lab.exporters.insert(name.to_owned(), proc);
        self.lab
            .wait_exporter_condition(name, "Online", "True", ONLINE_TIMEOUT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the exporter does not come online through its edge: {e:#}\n{}",
                    self.lab.logs()
                )
            });
    }

    /// `jumpstarter-edge client --config C --write-config E -- jmp <sub...> --client-config
    /// E <rest...>` in the client namespace, bounded by [`TOOL_TIMEOUT`].
    async fn jmp(&self, client: &Path, sub: &[&str], rest: &[&str]) -> Output {
        let n = self.edge_configs.fetch_add(1, Ordering::Relaxed);
        let edge_config = self.lab.path(&format!("client-{n}.edge.yaml"));
        let mut edge_args = edge_args("client", client, &edge_config);
        edge_args.extend(sub.iter().map(|s| (*s).to_owned()));
        edge_args.push("--client-config".to_owned());
        edge_args.push(edge_config.to_string_lossy().into_owned());
        edge_args.extend(rest.iter().map(|s| (*s).to_owned()));
        let edge_args: Vec<&str> = edge_args.iter().map(String::as_str).collect();
        let args = self.clients.exec_args(EDGE, &edge_args);
        let mut command = self.lab.tool_command("ip", &args);
        command
            .env("RUST_LOG", "info,jumpstarter_edge=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().expect("spawn the client edge");
        let what = format!("jmp {} … {}", sub.join(" "), rest.join(" "));
        let out = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{what}` did not finish in time\n{}", self.lab.logs()))
            .expect("client edge output");
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `jmp shell <target...> -- <cmd...>` behind the client's edge, asserting success; its
    /// output.
    async fn shell(&self, client: &Path, target: &[&str], cmd: &[&str]) -> String {
        let mut rest = target.to_vec();
        rest.push("--");
        rest.extend_from_slice(cmd);
        let out = self.jmp(client, &["shell"], &rest).await;
        assert!(
            out.ok(),
            "jmp shell {} failed: {out}\n{}",
            rest.join(" "),
            self.lab.logs()
        );
        out.stdout + &out.stderr
    }

    /// `jmp shell <target> -- j power <state>` behind the client's edge.
    async fn power(&self, client: &Path, target: &[&str], state: &str) -> String {
        self.shell(client, target, &["j", "power", state]).await
    }

    /// `jmp create lease … -o name` behind the client's edge; the lease's name.
    async fn create_lease(&self, client: &Path, target: &[&str], duration: &str) -> String {
        let mut rest = target.to_vec();
        rest.extend(["--duration", duration, "-o", "name"]);
        let out = self.jmp(client, &["create", "lease"], &rest).await;
        assert!(
            out.ok(),
            "jmp create lease failed: {out}\n{}",
            self.lab.logs()
        );
        out.lease_name()
    }

    /// Lease `name` as JSON (its 0.9.0 shape: `status.exporterRef`, `status.ended`, …).
    async fn lease(&self, name: &str) -> Lease {
        let lease = self.lab.lease(name).await.expect("get lease");
        serde_json::to_value(lease).expect("lease as JSON")
    }

    async fn wait_lease(&self, name: &str, what: &str, pred: fn(&Lease) -> bool) -> Lease {
        let deadline = Instant::now() + LEASE_TIMEOUT;
        loop {
            let lease = self.lease(name).await;
            if pred(&lease) {
                return lease;
            }
            assert!(
                Instant::now() < deadline,
                "lease {name}: {what} not reached within {LEASE_TIMEOUT:?}; status: {}\n{}",
                lease["status"],
                self.lab.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asserts what every scenario promises: sessions completed on the QUIC router and none
    /// on the h2 router; no TCP left either namespace, and UDP did. Returns the metrics text
    /// and both namespaces' counters for further checks.
    fn assert_only_quic(&self, min_sessions: f64) -> (String, Traffic, Traffic) {
        let metrics = self.lab.metrics().expect("metrics");
        // Paired session streams, however each ended: whether `j` closes its stream with a
        // GOAWAY (completed) or by cancelling the call (broken) depends on timing at exit;
        // the tool's own success shows the session worked.
        let paired = ["completed", "broken"]
            .iter()
            .map(|outcome| {
                metric_sum(
                    &metrics,
                    "jumpstarter_router_quic_sessions_total",
                    Some(&format!(r#"outcome="{outcome}""#)),
                )
            })
            .sum::<f64>();
        assert!(
            paired >= min_sessions,
            "{paired} QUIC session streams paired, expected at least {min_sessions}:\n{metrics}"
        );
        let h2 = metric_sum(&metrics, "jumpstarter_router_streams_total", None);
        assert_eq!(h2, 0.0, "the h2 router carried streams:\n{metrics}");
        let exporters = self
            .exporters
            .traffic()
            .expect("exporter namespace counters");
        let clients = self.clients.traffic().expect("client namespace counters");
        for (side, traffic) in [("exporter", exporters), ("client", clients)] {
            assert_eq!(
                traffic.tcp_dropped_packets,
                0,
                "something in the {side} namespace tried TCP ({traffic:?})\n{}",
                self.lab.logs()
            );
            assert!(
                traffic.udp_packets > 0,
                "no UDP left the {side} namespace ({traffic:?})"
            );
        }
        eprintln!(
            "{paired} QUIC session streams paired; exporter namespace {exporters:?}; client namespace {clients:?}"
        );
        (metrics, exporters, clients)
    }

    /// A TCP connection from the client namespace to the service's gRPC port fails, and the
    /// namespace's counter saw it dropped: the listener is there, the namespace cannot reach
    /// it over TCP. (Run last: it raises the TCP counter.)
    async fn assert_tcp_to_the_service_is_dropped(&self) {
        let before = self.clients.traffic().expect("counters");
        let target = format!("/dev/tcp/{}/{}", self.service(), self.lab.grpc_port);
        let probe = format!("exec 3<>{target}");
        let args = self
            .clients
            .exec_args("timeout", &["5", "bash", "-c", &probe]);
        let out = tokio::process::Command::new("ip")
            .args(&args)
            .output()
            .await
            .expect("run the TCP probe");
        assert!(
            !out.status.success(),
            "a TCP connection from the client namespace to {target} succeeded"
        );
        let after = self.clients.traffic().expect("counters");
        assert!(
            after.tcp_dropped_packets > before.tcp_dropped_packets,
            "the failed TCP probe was not dropped by the namespace's table: {before:?} → {after:?}"
        );
        // From the root namespace the same listener answers: the drop is what stops it.
        let addr = format!("{}:{}", self.service(), self.lab.grpc_port);
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("the service's TCP listener {addr} does not answer: {e}"));
    }
}

/// The `endpoint` of a 0.9.0 tool configuration.
fn tool_endpoint(path: &Path) -> String {
    let config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).expect("read config")).expect("yaml");
    config["endpoint"].as_str().unwrap_or_default().to_owned()
}

/// A lease as JSON.
type Lease = serde_json::Value;

fn is_ready(lease: &Lease) -> bool {
    condition(lease, "Ready").is_some_and(|c| c["status"] == "True") && !is_ended(lease)
}

fn is_ended(lease: &Lease) -> bool {
    lease["status"]["ended"].as_bool().unwrap_or(false)
}

fn condition<'a>(lease: &'a Lease, type_: &str) -> Option<&'a serde_json::Value> {
    lease["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn exporter_of(lease: &Lease) -> Option<String> {
    lease["status"]["exporterRef"]["name"]
        .as_str()
        .map(str::to_owned)
}

/// A time of the lease's status (RFC 3339).
fn status_time(lease: &Lease, field: &str) -> time::OffsetDateTime {
    let text = lease["status"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no status.{field}: {lease}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("status.{field} {text}: {e}"))
}

/// `jumpstarter-edge <role>`'s arguments in these tests, up to the tool it runs: the tool's
/// configuration `config`, the edge's own `edge_config`, QUIC towards the service, and the
/// venv's 0.9.0 `jmp`.
fn edge_args(role: &str, config: &Path, edge_config: &Path) -> Vec<String> {
    let jmp = jumpstarter_e2e::venv().join("bin/jmp");
    vec![
        role.to_owned(),
        "--config".to_owned(),
        config.to_string_lossy().into_owned(),
        "--write-config".to_owned(),
        edge_config.to_string_lossy().into_owned(),
        "--controller-transport".to_owned(),
        "quic".to_owned(),
        "--".to_owned(),
        jmp.to_string_lossy().into_owned(),
    ]
}

/// The fixture itself: from inside a namespace, TCP to a listener in the root namespace is
/// dropped (and counted) while UDP to the same address arrives (and is counted).
#[tokio::test]
async fn the_namespace_drops_tcp_and_passes_udp() {
    let ns = Netns::create("self").expect("namespace");
    let host = ns.host_addr();
    let tcp = tokio::net::TcpListener::bind((host, 0))
        .await
        .expect("bind TCP");
    let tcp_port = tcp.local_addr().expect("addr").port();
    let udp = tokio::net::UdpSocket::bind((host, 0))
        .await
        .expect("bind UDP");
    let udp_port = udp.local_addr().expect("addr").port();

    let connect = format!("exec 3<>/dev/tcp/{host}/{tcp_port}");
    let out = tokio::process::Command::new("ip")
        .args(ns.exec_args("timeout", &["5", "bash", "-c", &connect]))
        .output()
        .await
        .expect("run bash");
    assert!(!out.status.success(), "TCP left the namespace");
    let accepted = tokio::time::timeout(Duration::from_millis(200), tcp.accept()).await;
    assert!(
        accepted.is_err(),
        "the root namespace accepted a TCP connection"
    );

    let send = format!("printf through-udp > /dev/udp/{host}/{udp_port}");
    let out = tokio::process::Command::new("ip")
        .args(ns.exec_args("timeout", &["5", "bash", "-c", &send]))
        .output()
        .await
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .expect("the datagram arrives")
        .expect("recv");
    assert_eq!(&buf[..n], b"through-udp");
    assert_eq!(from.ip(), IpAddr::V4(ns.addr()));

    let traffic = ns.traffic().expect("counters");
    assert!(traffic.tcp_dropped_packets >= 1, "{traffic:?}");
    assert!(traffic.udp_packets >= 1, "{traffic:?}");

    // Dropping the fixture removes the namespace and the root side of its veth.
    let name = ns.name().to_owned();
    drop(ns);
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&name),
        "{name} still exists"
    );
    let bound = std::net::UdpSocket::bind((host, 0));
    assert!(bound.is_err(), "{host} is still assigned after the drop");
}

/// Exporter online through its edge; power and shell drivers by selector and by name; the
/// client API (`jmp get exporters`) through the client's edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_and_shell_by_selector_over_udp_only() {
    let _serial = serial();
    let mut world = World::start("netns-basic", &[]).await;
    world
        .start_exporter("board-1", &["board=mock", "site=lab"], &[])
        .await;
    let c1 = world.lab.create_client("c1").await.expect("client c1");

    let out = world.jmp(&c1, &["get", "exporters"], &["-o", "yaml"]).await;
    assert!(out.ok() && out.stdout.contains("board-1"), "{out}");

    let output = world
        .shell(
            &c1,
            &["-l", "board=mock", "--duration", "10m"],
            &["j", "power", "on"],
        )
        .await;
    assert!(!output.contains("Traceback"), "{output}");
    let output = world
        .shell(&c1, &["-l", "site=lab"], &["j", "sh", "hello", "netns"])
        .await;
    assert!(output.contains("hello-from-exporter netns"), "{output}");
    world.power(&c1, &["-n", "board-1"], "off").await;

    // Each session is two QUIC streams (client and exporter side) at the router.
    world.assert_only_quic(6.0);
    world.assert_tcp_to_the_service_is_dropped().await;
}

/// 64 MiB through the echo driver and back, intact, and all of it over UDP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_echo_is_intact_over_udp_only() {
    let _serial = serial();
    let (world, c1) = World::with_board_and_client("netns-echo").await;
    let script = world.lab.path("echo.py");
    std::fs::write(&script, jumpstarter_e2e::ECHO_SCRIPT).expect("write script");
    let python = jumpstarter_e2e::venv().join("bin/python");
    let output = world
        .shell(
            &c1,
            &["-l", "board=mock"],
            &[&python.to_string_lossy(), &script.to_string_lossy()],
        )
        .await;
    assert!(output.contains("bytes 67108864"), "{output}");

    let (metrics, exporters, clients) = world.assert_only_quic(2.0);
    const MIB64: f64 = 64.0 * 1024.0 * 1024.0;
    let relayed = metric_sum(
        &metrics,
        "jumpstarter_router_quic_relayed_bytes_total",
        None,
    );
    assert!(
        relayed >= 2.0 * MIB64,
        "the QUIC router relayed {relayed} bytes, less than 64 MiB each way:\n{metrics}"
    );
    // Each side sent its 64 MiB over UDP (plus headers): the client the data, the
    // exporter the echo.
    for (side, traffic) in [("exporter", exporters), ("client", clients)] {
        assert!(
            traffic.udp_bytes as f64 >= MIB64,
            "only {} UDP bytes left the {side} namespace",
            traffic.udp_bytes
        );
    }
}

/// A second client's lease waits while the first holds the only exporter, and cannot use
/// the first's lease; it is served once the first releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_lease_queues_the_second_client_over_udp_only() {
    let _serial = serial();
    let (world, c1) = World::with_board_and_client("netns-exclusive").await;
    let c2 = world.lab.create_client("c2").await.expect("c2");

    let l1 = world.create_lease(&c1, &["-l", "board=mock"], "10m").await;
    let lease1 = world.wait_lease(&l1, "Ready", is_ready).await;
    assert_eq!(exporter_of(&lease1).as_deref(), Some("board-1"));

    // Client 2 cannot use client 1's lease through its edge.
    let stolen = world
        .jmp(&c2, &["shell"], &["--lease", &l1, "--", "j", "power", "on"])
        .await;
    assert!(
        !stolen.ok() && stolen.stderr.contains("belongs to client 'c1'"),
        "c2 used c1's lease, or failed for another reason: {stolen}"
    );

    // Client 2's own lease waits while client 1 holds the exporter.
    let l2 = world.create_lease(&c2, &["-l", "board=mock"], "10m").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pending = world.lease(&l2).await;
    assert!(
        !is_ready(&pending) && exporter_of(&pending).is_none(),
        "l2 must wait: {}",
        pending["status"]
    );

    world.power(&c1, &["--lease", &l1], "on").await;
    let out = world.jmp(&c1, &["delete", "leases"], &[&l1]).await;
    assert!(out.ok(), "jmp delete leases: {out}");
    world.wait_lease(&l1, "ended", is_ended).await;

    let lease2 = world.wait_lease(&l2, "Ready", is_ready).await;
    assert_eq!(exporter_of(&lease2).as_deref(), Some("board-1"));
    world.power(&c2, &["--lease", &l2], "on").await;

    world.assert_only_quic(4.0);
}

/// An 8 s lease made through the client's edge ends on time (Expired) and the exporter is
/// served again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_on_time_over_udp_only() {
    let _serial = serial();
    let (world, c1) = World::with_board_and_client("netns-expiry").await;
    let l1 = world.create_lease(&c1, &["-l", "board=mock"], "8s").await;
    let ready = world.wait_lease(&l1, "Ready", is_ready).await;
    let begin = status_time(&ready, "beginTime");
    let ended = world.wait_lease(&l1, "ended", is_ended).await;
    let end = status_time(&ended, "endTime");
    let lasted = (end - begin).as_seconds_f64();
    assert!(
        (8.0..=13.0).contains(&lasted),
        "8 s lease lasted {lasted} s"
    );
    let ready_false = condition(&ended, "Ready").expect("Ready condition");
    assert_eq!(
        (&ready_false["status"], &ready_false["reason"]),
        (&"False".into(), &"Expired".into()),
        "{ended}"
    );
    world.power(&c1, &["-l", "board=mock"], "on").await;
    world.assert_only_quic(2.0);
}

/// The service restarts (controller, h2 and QUIC routers: one process) while a lease is
/// active: the lease survives, the exporter's edge reconnects over QUIC, and a new session
/// on the same lease works through both edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_restart_keeps_the_active_lease_over_udp_only() {
    let _serial = serial();
    let (mut world, c1) = World::with_board_and_client("netns-restart").await;
    let l1 = world.create_lease(&c1, &["-l", "board=mock"], "10m").await;
    world.wait_lease(&l1, "Ready", is_ready).await;
    world.power(&c1, &["--lease", &l1], "on").await;

    let mut service = world.lab.controller.take().expect("the service process");
    let status = service.stop(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the service did not stop cleanly ({status:?}):\n{}",
        service.output()
    );
    drop(service);
    world
        .lab
        .start_serve_as_given()
        .await
        .expect("restart the service");

    let lease = world.wait_lease(&l1, "still Ready", is_ready).await;
    assert_eq!(exporter_of(&lease).as_deref(), Some("board-1"));
    world
        .lab
        .wait_exporter_condition("board-1", "Online", "True", ONLINE_TIMEOUT)
        .await
        .expect("online again");
    world.power(&c1, &["--lease", &l1], "off").await;
    // The restarted process counts from zero: the session after the restart went over QUIC.
    world.assert_only_quic(2.0);
}

/// Lease certificates last 4 s; one `jmp shell` keeps a driver call running for 12 s and
/// then opens a new session: the edges renew the certificates on their live router
/// connections, so neither connection is closed for an ended certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_outlive_the_lease_certificate_through_renewal() {
    let _serial = serial();
    let mut world = World::start("netns-renewal", &["--lease-cert-max-validity", "4s"]).await;
    world
        .start_exporter(
            "board-1",
            &["board=mock"],
            &[("pause", "sleep $1; echo slept-for $1")],
        )
        .await;
    let c1 = world.lab.create_client("c1").await.expect("c1");
    let started = Instant::now();
    let output = world
        .shell(
            &c1,
            &["-l", "board=mock", "--duration", "10m"],
            &[
                "sh",
                "-c",
                "j sh pause 12 && j power on && echo second-session-done",
            ],
        )
        .await;
    let took = started.elapsed();
    assert!(output.contains("slept-for 12"), "{output}");
    assert!(output.contains("second-session-done"), "{output}");
    assert!(took >= Duration::from_secs(12), "took only {took:?}");

    let (metrics, _, _) = world.assert_only_quic(4.0);
    // 12 s at one renewal per half certificate life (2 s): several per side.
    let renewed = metric_sum(
        &metrics,
        "jumpstarter_router_quic_certificate_renewals_total",
        Some(r#"outcome="accepted""#),
    );
    assert!(
        renewed >= 4.0,
        "only {renewed} certificate renewals accepted:\n{metrics}"
    );
    let refused = metric_sum(
        &metrics,
        "jumpstarter_router_quic_certificate_renewals_total",
        Some(r#"outcome="refused""#),
    );
    assert_eq!(refused, 0.0, "renewals refused:\n{metrics}");
    eprintln!("{renewed} lease certificate renewals accepted in {took:?}");
    let expired = metric_sum(
        &metrics,
        "jumpstarter_router_quic_expired_connections_total",
        None,
    );
    assert_eq!(
        expired, 0.0,
        "a connection was closed for an ended certificate:\n{metrics}"
    );
}
