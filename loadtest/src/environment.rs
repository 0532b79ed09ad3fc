//! Where a run was measured: the machine (CPU, cores, kernel, its TCP and socket buffer
//! settings, UDP offloads), the transport settings in force on our endpoints (QUIC
//! windows and congestion controller, HTTP/2 windows), the toolchains and the source
//! commit. Read once per run; parsing is split from reading so that it can be tested on
//! samples of `/proc`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// What a run was measured on and with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Environment {
    pub(crate) cpu_model: String,
    /// Logical CPUs this process may run on.
    pub(crate) cores: usize,
    /// `uname -r`.
    pub(crate) kernel: String,
    /// `net.ipv4.tcp_congestion_control` (TLS/TCP and h2 paths).
    pub(crate) tcp_congestion_control: String,
    /// `net.core.rmem_max` / `wmem_max`, bytes.
    pub(crate) rmem_max: String,
    pub(crate) wmem_max: String,
    /// `net.ipv4.tcp_rmem` / `tcp_wmem`: min, default, max bytes.
    pub(crate) tcp_rmem: String,
    pub(crate) tcp_wmem: String,
    pub(crate) quic: QuicSettings,
    /// UDP segmentation and receive offload as quinn finds them on this kernel.
    pub(crate) udp_offload: UdpOffload,
    pub(crate) http2: Http2Windows,
    pub(crate) rustc: String,
    /// The Go toolchain that built the Go reference router, or `not used`.
    pub(crate) go: String,
    /// The source tree's commit, `-dirty` when it has uncommitted changes.
    pub(crate) git_commit: String,
    /// Whether the router and the load generator ran on CPUs of their own (`--pin`).
    pub(crate) pinned: bool,
}

/// QUIC transport settings of our endpoints (router, edge, peers), as configured by
/// default.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct QuicSettings {
    pub(crate) stream_receive_window: u64,
    pub(crate) receive_window: u64,
    pub(crate) send_window: u64,
    pub(crate) congestion: String,
    /// Upper bound of MTU discovery (bytes of UDP payload).
    pub(crate) max_udp_payload: u16,
}

/// Segments per `sendmsg` (GSO) and per `recvmsg` (GRO); 1 means not offered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct UdpOffload {
    pub(crate) gso: usize,
    pub(crate) gro: usize,
}

/// HTTP/2 flow-control windows of the router's h2 server.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Http2Windows {
    pub(crate) stream_window: u32,
    pub(crate) connection_window: u32,
}

/// What the run itself tells the environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFacts<'a> {
    /// The Go reference router's binary, when it took part.
    pub(crate) go_router: Option<&'a Path>,
    pub(crate) pinned: bool,
}

/// The QUIC settings our endpoints use by default: the tunnel library's.
pub(crate) fn quic_settings() -> QuicSettings {
    let transport = jumpstarter_tunnel::QuicTransport::default();
    QuicSettings {
        stream_receive_window: transport.stream_receive_window,
        receive_window: transport.receive_window,
        send_window: transport.send_window,
        congestion: transport.congestion.to_string(),
        max_udp_payload: transport.max_udp_payload,
    }
}

/// The HTTP/2 windows of the router's h2 server (its defaults, which the load test keeps).
pub(crate) fn http2_windows() -> Http2Windows {
    Http2Windows {
        stream_window: jumpstarter_shell::http2_windows::STREAM_WINDOW,
        connection_window: jumpstarter_shell::http2_windows::CONNECTION_WINDOW,
    }
}

/// UDP offloads as quinn sees them on a loopback socket of this kernel.
pub(crate) fn udp_offload() -> std::io::Result<UdpOffload> {
    let socket = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
    let offloads = jumpstarter_tunnel::socket::offloads(&socket);
    Ok(UdpOffload {
        gso: offloads.gso,
        gro: offloads.gro,
    })
}

impl Environment {
    /// Reads the environment of this run; anything unreadable says why instead.
    pub(crate) fn collect(facts: &RunFacts<'_>) -> Environment {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let sysctl = |name: &str| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            std::fs::read_to_string(&path)
                .map(|v| sysctl_value(&v))
                .unwrap_or_else(|e| format!("unreadable ({e})"))
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| command_line("uname", &["-r"]));
        Environment {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_owned()),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel,
            tcp_congestion_control: sysctl("net.ipv4.tcp_congestion_control"),
            rmem_max: sysctl("net.core.rmem_max"),
            wmem_max: sysctl("net.core.wmem_max"),
            tcp_rmem: sysctl("net.ipv4.tcp_rmem"),
            tcp_wmem: sysctl("net.ipv4.tcp_wmem"),
            quic: quic_settings(),
            udp_offload: udp_offload().unwrap_or(UdpOffload { gso: 0, gro: 0 }),
            http2: http2_windows(),
            rustc: env!("JUMPSTARTER_LOADTEST_RUSTC").to_owned(),
            go: facts.go_router.map_or_else(
                || "not used".to_owned(),
                |binary| go_version(&command_line("go", &["version", &binary.to_string_lossy()])),
            ),
            git_commit: git_commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
            pinned: facts.pinned,
        }
    }

    /// The environment as a Markdown table.
    pub(crate) fn markdown(&self) -> String {
        let mib = |bytes: u64| {
            let m = bytes as f64 / 1048576.0;
            format!("{} MiB", crate::report::format_number(m))
        };
        let offload = |segments: usize| match segments {
            0 => "unknown".to_owned(),
            1 => "off (1 segment)".to_owned(),
            n => format!("on ({n} segments)"),
        };
        let q = &self.quic;
        let rows = [
            ("CPU", self.cpu_model.clone()),
            ("cores", self.cores.to_string()),
            ("kernel", self.kernel.clone()),
            (
                "TCP congestion control",
                self.tcp_congestion_control.clone(),
            ),
            (
                "socket buffers (net.core.rmem_max / wmem_max)",
                format!("{} / {} bytes", self.rmem_max, self.wmem_max),
            ),
            (
                "TCP buffers (net.ipv4.tcp_rmem / tcp_wmem: min default max)",
                format!("{} / {}", self.tcp_rmem, self.tcp_wmem),
            ),
            (
                "QUIC windows (stream receive / connection receive / send; every endpoint \
                 scales its send window to the round-trip time, full from 100 ms, 512 KiB \
                 at least)",
                format!(
                    "{} / {} / {}",
                    mib(q.stream_receive_window),
                    mib(q.receive_window),
                    mib(q.send_window)
                ),
            ),
            ("QUIC congestion controller", q.congestion.clone()),
            (
                "QUIC MTU discovery bound (UDP payload)",
                format!("{} bytes", q.max_udp_payload),
            ),
            (
                "UDP GSO / GRO",
                format!(
                    "{} / {}",
                    offload(self.udp_offload.gso),
                    offload(self.udp_offload.gro)
                ),
            ),
            (
                "HTTP/2 windows of the h2 router (stream / connection)",
                format!(
                    "{} / {}",
                    mib(self.http2.stream_window.into()),
                    mib(self.http2.connection_window.into())
                ),
            ),
            ("rustc", self.rustc.clone()),
            ("Go (reference router)", self.go.clone()),
            ("git commit", self.git_commit.clone()),
            (
                "pinned (router and load generator on CPUs of their own)",
                if self.pinned { "yes" } else { "no" }.to_owned(),
            ),
        ];
        let mut out = String::from("| | |\n|---|---|\n");
        for (name, value) in rows {
            let _ = writeln!(out, "| {name} | {} |", value.replace('|', "\\|"));
        }
        out
    }
}

/// `model name` of the first processor in `/proc/cpuinfo`.
pub(crate) fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// A `/proc/sys` value on one line, fields separated by single spaces.
pub(crate) fn sysctl_value(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Go version from `go version <binary>` (`<binary>: go1.22.3`) or `go version`
/// (`go version go1.22.3 linux/amd64`).
pub(crate) fn go_version(output: &str) -> String {
    output
        .split_whitespace()
        .find(|word| word.starts_with("go1") || word.starts_with("devel"))
        .map_or_else(|| output.trim().to_owned(), str::to_owned)
}

/// HEAD of the repository holding `dir`, with `-dirty` when tracked files changed.
fn git_commit(dir: &Path) -> String {
    let dir = dir.to_string_lossy();
    let head = command_line("git", &["-C", &dir, "rev-parse", "--short=12", "HEAD"]);
    if head.starts_with("unavailable") {
        return head;
    }
    let status = command_line(
        "git",
        &["-C", &dir, "status", "--porcelain", "--untracked-files=no"],
    );
    if status.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    }
}

/// The trimmed standard output of `program args`, or why there is none.
fn command_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => format!(
            "unavailable ({program} exited with {}: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("unavailable ({program}: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\n\
        vendor_id\t: GenuineIntel\n\
        cpu family\t: 6\n\
        model\t\t: 85\n\
        model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\
        flags\t\t: fpu vme de pse\n\
        \n\
        processor\t: 1\n\
        model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";

    #[test]
    fn cpu_model_from_proc_cpuinfo() {
        assert_eq!(
            cpu_model(CPUINFO).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn sysctl_values_on_one_line() {
        assert_eq!(
            sysctl_value("4096\t131072\t6291456\n"),
            "4096 131072 6291456"
        );
        assert_eq!(sysctl_value("bbr\n"), "bbr");
    }

    #[test]
    fn go_versions_from_either_form() {
        assert_eq!(go_version("/cache/router-v0.7.1: go1.26.8\n"), "go1.26.8");
        assert_eq!(go_version("go version go1.22.3 linux/amd64"), "go1.22.3");
        assert_eq!(
            go_version("unavailable (go: not found)"),
            "unavailable (go: not found)"
        );
    }

    #[test]
    fn this_machine_gives_a_complete_block() {
        let env = Environment::collect(&RunFacts::default());
        assert!(env.cores >= 1);
        assert!(!env.kernel.is_empty() && !env.kernel.starts_with("unavailable"));
        assert!(env.rustc.starts_with("rustc "), "{}", env.rustc);
        assert_eq!(env.go, "not used");
        assert!(env.udp_offload.gso >= 1 && env.udp_offload.gro >= 1);
        assert_eq!(env.quic, quic_settings());
        let table = env.markdown();
        for name in [
            "CPU",
            "kernel",
            "TCP congestion control",
            "QUIC congestion controller",
        ] {
            assert!(table.contains(&format!("| {name} |")), "{table}");
        }
        let json = serde_json::to_value(&env).expect("json");
        assert_eq!(json["quic"]["congestion"], "bbr");
        assert!(json["tcp_rmem"].as_str().is_some());
    }
}
