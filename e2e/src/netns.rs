//! A Linux network namespace with a veth pair to the root namespace: one from which no TCP
//! can leave, for tests that must prove a process reached the service over UDP (QUIC) only,
//! or an open one whose link a test can cut and heal (a pulled cable: packets vanish, no
//! FIN, no RST).
//!
//! [`Netns::create`] makes a namespace `jsr-<tag>-<pid>-<k>` with `lo` up and one veth pair
//! to the root namespace, addressed from a private /30 of 10.213.0.0/16 (root side `.1`,
//! namespace side `.2`, the namespace's default route via the root side). An nftables table
//! inside the namespace drops every TCP packet that leaves through the veth (to the service
//! or anywhere else) and counts it, and counts the UDP packets that leave. Programs run
//! inside with `ip netns exec` ([`Netns::exec_args`]). [`Netns::create_open`] makes the
//! same namespace without that table; [`Netns::cut`] then drops every packet in and out
//! of the veth (table `jsrcut`, counted) until [`Netns::heal`] deletes it. Dropping the
//! value deletes the namespace, its veth pair and its tables.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); without them [`Netns::create`] fails
//! with the reason. Every command it runs is bounded by [`COMMAND_TIMEOUT`].

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Longest wait for one `ip` or `nft` command: they are local netlink calls that finish in
/// milliseconds; a hang means a broken system, not a slow one.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The /30 subnets of 10.213.0.0/16: 16384 of them, indexed by `n` (10.213.n/64.(n%64)*4).
const SUBNETS: u32 = 1 << 14;

/// How many subnets to try before giving up: a claim only fails when another namespace
/// (this run's or a concurrent one's) holds that subnet's veth name.
const CLAIM_ATTEMPTS: u32 = 256;

/// Namespaces made by this process so far (part of the names, so they never repeat).
static CREATED: AtomicU32 = AtomicU32::new(0);

/// The nftables table inside each namespace.
const TABLE: &str = "jsr";

/// The nftables table of a cut link ([`Netns::cut`]).
const CUT_TABLE: &str = "jsrcut";

/// What the namespace lets through its veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// TCP dropped and counted, UDP counted.
    UdpOnly,
    /// Everything passes (until [`Netns::cut`]).
    Open,
}

/// A network namespace with a veth pair to the root namespace and TCP dropped on it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    host: Ipv4Addr,
    inside: Ipv4Addr,
}

/// What the namespace's nftables counters saw leave through the veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// TCP packets dropped (every TCP packet that tried to leave).
    pub tcp_dropped_packets: u64,
    /// UDP packets that left.
    pub udp_packets: u64,
    /// Bytes of those UDP packets (IP headers included).
    pub udp_bytes: u64,
}

impl Netns {
    /// Creates the namespace `jsr-<tag>-<pid>-<k>` with its veth pair, addresses, default
    /// route and TCP-dropping table. `tag` must be short (namespace names are file names).
    pub fn create(tag: &str) -> anyhow::Result<Netns> {
        Netns::create_with(tag, Policy::UdpOnly)
    }

    /// Creates the namespace as [`Netns::create`] does, with nothing dropped: TCP and UDP
    /// pass both ways until [`Netns::cut`].
    pub fn create_open(tag: &str) -> anyhow::Result<Netns> {
        Netns::create_with(tag, Policy::Open)
    }

    fn create_with(tag: &str, policy: Policy) -> anyhow::Result<Netns> {
        preflight()?;
        remove_stale();
        let pid = std::process::id();
        let k = CREATED.fetch_add(1, Ordering::Relaxed);
        let name = format!("jsr-{tag}-{pid}-{k}");
        run("ip", &["netns", "add", &name])?;
        // From here on, Drop removes what exists.
        let mut netns = Netns {
            name,
            host_if: String::new(),
            host: Ipv4Addr::UNSPECIFIED,
            inside: Ipv4Addr::UNSPECIFIED,
        };
        netns.claim_subnet(pid.wrapping_mul(31).wrapping_add(k.wrapping_mul(97)))?;
        netns.configure(policy)?;
        Ok(netns)
    }

    /// Cuts the link: every packet that would enter or leave through the veth is dropped
    /// silently (no FIN, no RST, no ICMP), as if the cable were pulled. Loopback inside the
    /// namespace keeps working.
    pub fn cut(&self) -> anyhow::Result<()> {
        let ruleset = format!(
            r#"table inet {CUT_TABLE} {{
    counter dropped {{ }}
    chain input {{
        type filter hook input priority -100; policy accept;
        iifname "veth0" counter name "dropped" drop
    }}
    chain output {{
        type filter hook output priority -100; policy accept;
        oifname "veth0" counter name "dropped" drop
    }}
}}
"#
        );
        run_with_input(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            &ruleset,
        )
        .context("install the link-cutting nftables table")?;
        Ok(())
    }

    /// Packets dropped by the cut so far (both directions).
    pub fn cut_dropped_packets(&self) -> anyhow::Result<u64> {
        let json = run(
            "ip",
            &[
                "netns", "exec", &self.name, "nft", "-j", "list", "counter", "inet", CUT_TABLE,
                "dropped",
            ],
        )?;
        let value: serde_json::Value = serde_json::from_str(&json)
            .with_context(|| format!("parse `nft -j list counter`: {json}"))?;
        value["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|item| item.get("counter")))
            .and_then(|c| c["packets"].as_u64())
            .with_context(|| format!("no counter dropped in {json}"))
    }

    /// Heals a [`Netns::cut`]: deletes the dropping table.
    pub fn heal(&self) -> anyhow::Result<()> {
        run(
            "ip",
            &[
                "netns", "exec", &self.name, "nft", "delete", "table", "inet", CUT_TABLE,
            ],
        )
        .context("delete the link-cutting nftables table")?;
        Ok(())
    }

    /// The namespace's name (for `ip netns exec`, `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root-namespace side of the veth pair (reachable from inside; the namespace's
    /// default gateway).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host
    }

    /// The namespace's own address on the veth.
    pub fn addr(&self) -> Ipv4Addr {
        self.inside
    }

    /// `["netns", "exec", NAME, program, args...]`: the arguments of `ip` that run
    /// `program args` inside the namespace (`ip` execs it: its PID is the program's).
    pub fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        all
    }

    /// The counters of the namespace's nftables table.
    pub fn traffic(&self) -> anyhow::Result<Traffic> {
        let counter = |name: &str| -> anyhow::Result<(u64, u64)> {
            let json = run(
                "ip",
                &[
                    "netns", "exec", &self.name, "nft", "-j", "list", "counter", "inet", TABLE,
                    name,
                ],
            )?;
            let value: serde_json::Value = serde_json::from_str(&json)
                .with_context(|| format!("parse `nft -j list counter`: {json}"))?;
            let found = value["nftables"]
                .as_array()
                .and_then(|items| items.iter().find_map(|item| item.get("counter")))
                .with_context(|| format!("no counter {name} in {json}"))?;
            Ok((
                found["packets"].as_u64().unwrap_or_default(),
                found["bytes"].as_u64().unwrap_or_default(),
            ))
        };
        let (tcp_dropped_packets, _) = counter("tcp_dropped")?;
        let (udp_packets, udp_bytes) = counter("udp_out")?;
        Ok(Traffic {
            tcp_dropped_packets,
            udp_packets,
            udp_bytes,
        })
    }

    /// Takes the first free subnet from `seed` on: creating the root-side veth named after
    /// the subnet is the claim, atomic across processes (a taken name fails with EEXIST).
    fn claim_subnet(&mut self, seed: u32) -> anyhow::Result<()> {
        let mut last_error = None;
        for attempt in 0..CLAIM_ATTEMPTS {
            let n = seed.wrapping_add(attempt) % SUBNETS;
            let host_if = format!("jsrv{n}");
            match run(
                "ip",
                &[
                    "link", "add", &host_if, "type", "veth", "peer", "name", "veth0", "netns",
                    &self.name,
                ],
            ) {
                Ok(_) => {
                    let base = (n % 64) * 4;
                    // n < 2^14, so n / 64 < 256 and base + 2 < 256: both fit a u8.
                    let third = (n / 64) as u8;
                    self.host_if = host_if;
                    self.host = Ipv4Addr::new(10, 213, third, base as u8 + 1);
                    self.inside = Ipv4Addr::new(10, 213, third, base as u8 + 2);
                    return Ok(());
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .with_context(|| format!("no free /30 in 10.213.0.0/16 for {}", self.name))
    }

    fn configure(&self, policy: Policy) -> anyhow::Result<()> {
        let host = format!("{}/30", self.host);
        let inside = format!("{}/30", self.inside);
        let gateway = self.host.to_string();
        let ns = self.name.as_str();
        run("ip", &["addr", "add", &host, "dev", &self.host_if])?;
        run("ip", &["link", "set", &self.host_if, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", ns, "addr", "add", &inside, "dev", "veth0"])?;
        run("ip", &["-n", ns, "link", "set", "veth0", "up"])?;
        run(
            "ip",
            &["-n", ns, "route", "add", "default", "via", &gateway],
        )?;
        if policy == Policy::Open {
            return Ok(());
        }
        let ruleset = format!(
            r#"table inet {TABLE} {{
    counter tcp_dropped {{ }}
    counter udp_out {{ }}
    chain output {{
        type filter hook output priority 0; policy accept;
        oifname "lo" accept
        meta l4proto tcp counter name "tcp_dropped" drop
        meta l4proto udp counter name "udp_out" accept
    }}
}}
"#
        );
        run_with_input("ip", &["netns", "exec", ns, "nft", "-f", "-"], &ruleset)
            .context("install the TCP-dropping nftables table")?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both, even while processes still hold
        // the namespace open; the namespace (and its table) goes with its last process.
        if !self.host_if.is_empty() {
            let _ = run("ip", &["link", "del", &self.host_if]);
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Fails with what is missing: root, `ip`, `nft`.
fn preflight() -> anyhow::Result<()> {
    let uid = run("id", &["-u"]).context("run `id -u`")?;
    if uid.trim() != "0" {
        bail!(
            "network-namespace tests need root (uid is {}): they create namespaces, veth pairs and nftables tables",
            uid.trim()
        );
    }
    run("ip", &["-V"]).context("`ip` (iproute2) is required: apt-get install -y iproute2")?;
    run("nft", &["--version"]).context("`nft` is required: apt-get install -y nftables")?;
    Ok(())
}

/// Deletes namespaces of this fixture whose creating process is gone (a killed test run).
fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("jsr-") else {
            continue;
        };
        let mut parts = rest.rsplit('-');
        let (Some(_k), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// Runs `program args`, bounded by [`COMMAND_TIMEOUT`]; its stdout, or an error with its
/// stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_with_input(program, args, "")
}

fn run_with_input(program: &str, args: &[&str], input: &str) -> anyhow::Result<String> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start `{what}`"))?;
    // Readers on their own threads, so a chatty command never blocks on a full pipe.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading its input closes the pipe: not an error.
        let _ = stdin.write_all(input.as_bytes());
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!("`{what}` failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}
