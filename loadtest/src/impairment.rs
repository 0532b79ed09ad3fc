//! The impaired network of scenarios 8 and 9: two network namespaces, "peers" and
//! "servers", each with a TUN device, joined by a user-space [`DelayLine`] (a one-way delay
//! that can be changed between measurements), with random loss made by the kernel (nftables in both namespaces drops a share of the packets
//! arriving from the TUN device, so each direction is lossy, and counts them). Peers run on a
//! runtime in the peers namespace, the router process and baseline servers in the servers
//! namespace. `tc netem` would do both delay and loss, but kernels this runs on may be
//! built without it (see [`probe_netem`]).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::delay_line::DelayLine;
use crate::netns::{Netns, NsRuntime};

/// The peers' address on their TUN device.
pub(crate) const PEERS_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// The servers' address on their TUN device (router, baseline servers).
pub(crate) const SERVERS_IP: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
/// Name of the TUN device in both namespaces.
const TUN_NAME: &str = "jlt0";
const MTU: u16 = 1500;
/// The nftables table of the loss rules.
const TABLE: &str = "jlt_loss";
/// Threads of each namespace's runtime.
const THREADS: usize = 2;
/// Largest TCP receive and send buffer the kernel's autotuning may grow a socket to in
/// both namespaces (the third field of `net.ipv4.tcp_rmem` / `tcp_wmem`): 32 MiB, above
/// the bandwidth-delay product of the fastest path measured here (about 100 MiB/s at
/// 150 ms), so that TCP is limited by the path and its congestion control, not by its
/// buffers. A new namespace starts from the kernel's defaults (often a 4 MiB send
/// buffer), not from the host's settings.
pub(crate) const TCP_BUFFER_MAX: u64 = 32 * 1024 * 1024;
/// The TCP buffer sysctls raised to [`TCP_BUFFER_MAX`].
const TCP_BUFFERS: [&str; 2] = ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"];

/// The two namespaces, their runtimes and the delay line between them. Dropped in field
/// order: runtimes (and with them every socket their tasks hold), line, namespaces.
#[derive(Debug)]
pub(crate) struct ImpairedNet {
    /// Creates the peers' sockets (clients, exporters).
    pub(crate) peers: NsRuntime,
    /// Creates the servers' sockets (baseline servers, the router's readiness check).
    pub(crate) servers: NsRuntime,
    line: DelayLine,
    peers_ns: Netns,
    servers_ns: Netns,
    /// The TCP settings in force in both namespaces, for the report.
    tcp: String,
}

impl ImpairedNet {
    /// Creates the namespaces `jlt-<pid>-p` and `jlt-<pid>-s`, their TUN devices and
    /// addresses, TCP buffer limits raised to [`TCP_BUFFER_MAX`], the delay line
    /// (`one_way` each way) and the runtimes; no loss yet.
    pub(crate) fn start(one_way: Duration) -> anyhow::Result<ImpairedNet> {
        let pid = std::process::id();
        let peers_ns = Netns::create(&format!("jlt-{pid}-p"))?;
        let servers_ns = Netns::create(&format!("jlt-{pid}-s"))?;
        for ns in [&peers_ns, &servers_ns] {
            for key in TCP_BUFFERS {
                let now = ns.sysctl(key)?;
                let wanted = raised(&now, TCP_BUFFER_MAX)
                    .with_context(|| format!("{key} of {} is `{now}`", ns.name()))?;
                ns.set_sysctl(key, &wanted)?;
            }
        }
        let tcp = tcp_settings(&peers_ns)?;
        let peers_tun = peers_ns.on_thread(|| tun_device(PEERS_IP))?;
        let servers_tun = servers_ns.on_thread(|| tun_device(SERVERS_IP))?;
        for (ns, ip) in [(&peers_ns, PEERS_IP), (&servers_ns, SERVERS_IP)] {
            let shown = ns.ip(&["-4", "addr", "show", "dev", TUN_NAME])?;
            if !shown.contains(&format!("inet {ip}/24")) || !shown.contains(",UP") {
                bail!(
                    "TUN device {TUN_NAME} of {} is not up with {ip}/24: {shown}",
                    ns.name()
                );
            }
        }
        let line = DelayLine::start(peers_tun, servers_tun, one_way)?;
        Ok(ImpairedNet {
            peers: peers_ns.runtime(THREADS)?,
            servers: servers_ns.runtime(THREADS)?,
            line,
            peers_ns,
            servers_ns,
            tcp,
        })
    }

    /// Changes the one-way delay of the line (each way; the round trip is twice it).
    pub(crate) fn set_one_way(&self, one_way: Duration) {
        self.line.set_one_way(one_way);
    }

    /// The one-way delay in force.
    pub(crate) fn one_way(&self) -> Duration {
        self.line.one_way()
    }

    /// The TCP congestion control and buffer limits in force in both namespaces, as one
    /// sentence.
    pub(crate) fn tcp_settings(&self) -> &str {
        &self.tcp
    }

    /// The TCP congestion control of the namespaces (their own per-namespace setting).
    pub(crate) fn tcp_congestion(&self) -> anyhow::Result<String> {
        self.peers_ns.sysctl("net.ipv4.tcp_congestion_control")
    }

    /// The servers' namespace name (for `ip netns exec`).
    pub(crate) fn servers_namespace(&self) -> &str {
        self.servers_ns.name()
    }

    /// Replaces the loss rules: `percent` % of the packets arriving from the TUN device are
    /// dropped at random, in each namespace (so in both directions), all protocols, with
    /// fresh counters. Dropping where packets arrive, one IP packet per TUN write, rather
    /// than where they leave, where TCP segmentation offload and UDP GSO still hold
    /// batches of packets as one, keeps the loss per packet.
    pub(crate) fn set_loss(&self, percent: f64) -> anyhow::Result<()> {
        let per_10k = (percent * 100.0).round().clamp(0.0, 10_000.0) as u32;
        for ns in [&self.peers_ns, &self.servers_ns] {
            let _ = ns.nft(&["delete", "table", "inet", TABLE]);
            if per_10k == 0 {
                continue;
            }
            ns.nft(&["add", "table", "inet", TABLE])?;
            ns.nft(&[
                "add",
                "chain",
                "inet",
                TABLE,
                "arrive",
                "{ type filter hook prerouting priority -300; }",
            ])?;
            ns.nft(&[
                "add",
                "rule",
                "inet",
                TABLE,
                "arrive",
                "iifname",
                TUN_NAME,
                "numgen",
                "random",
                "mod",
                "10000",
                "<",
                &per_10k.to_string(),
                "counter",
                "drop",
            ])?;
        }
        Ok(())
    }

    /// Packets the loss rules dropped since the last [`ImpairedNet::set_loss`].
    pub(crate) fn dropped(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for ns in [&self.peers_ns, &self.servers_ns] {
            let Ok(listing) = ns.nft(&["list", "table", "inet", TABLE]) else {
                continue; // no loss rules
            };
            total += counter_sum(&listing)?;
        }
        Ok(total)
    }

    /// Packets the delay line carried, and those it dropped for a full queue.
    pub(crate) fn line_counts(&self) -> (u64, u64) {
        (self.line.carried(), self.line.overflowed())
    }
}

/// The TCP sysctls of `ns` that bound a transfer, as one sentence.
fn tcp_settings(ns: &Netns) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for key in [
        "net.ipv4.tcp_congestion_control",
        TCP_BUFFERS[0],
        TCP_BUFFERS[1],
    ] {
        let value = ns.sysctl(key)?;
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        parts.push(format!("`{key}` = {value}"));
    }
    Ok(parts.join(", "))
}

/// A `min default max` buffer sysctl with its max raised to at least `max` (min and
/// default kept).
fn raised(value: &str, max: u64) -> anyhow::Result<String> {
    let fields: Vec<u64> = value
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("not three numbers")?;
    let [min, default, now] = fields[..] else {
        bail!("not three numbers");
    };
    Ok(format!("{min} {default} {}", now.max(max)))
}

/// The sum of the `counter packets N` of an `nft list` output.
fn counter_sum(listing: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for line in listing.lines() {
        if let Some(after) = line.split("counter packets ").nth(1) {
            total += after
                .split_whitespace()
                .next()
                .context("an empty nft counter")?
                .parse::<u64>()
                .context("an nft counter that is not a number")?;
        }
    }
    Ok(total)
}

/// A TUN device (no packet information header) with `ip`/24, up, in the calling thread's
/// network namespace.
fn tun_device(ip: Ipv4Addr) -> anyhow::Result<tun::Device> {
    let mut config = tun::Configuration::default();
    config
        .tun_name(TUN_NAME)
        .address(ip)
        .netmask(NETMASK)
        .mtu(MTU)
        .up();
    tun::create(&config).with_context(|| format!("creating TUN device {TUN_NAME} with {ip}"))
}

/// Whether `tc netem` works here: creates a scratch network namespace, tries to put a
/// netem qdisc on its loopback, removes the namespace. Returns what happened.
pub(crate) async fn probe_netem() -> String {
    let ns = format!("jlt-probe-{}", std::process::id());
    let run = |args: Vec<String>| async move {
        let program = args[0].clone();
        match tokio::process::Command::new(&program)
            .args(&args[1..])
            .output()
            .await
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Err(format!("{program}: {e}")),
        }
    };
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    if let Err(e) = run(words(&format!("ip netns add {ns}"))).await {
        return format!("cannot create a network namespace ({e})");
    }
    let result = async {
        run(words(&format!("ip -n {ns} link set lo up"))).await?;
        run(words(&format!(
            "tc -n {ns} qdisc add dev lo root netem delay 25ms loss 1%"
        )))
        .await
    }
    .await;
    let _ = run(words(&format!("ip netns del {ns}"))).await;
    match result {
        Ok(()) => "tc netem works in a network namespace".to_owned(),
        Err(e) => format!("a network namespace was created and removed, but tc netem failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_an_nft_listing_add_up() {
        let listing = "table inet jlt_loss {\n\tchain arrive {\n\t\ttype filter hook \
            prerouting priority raw; policy accept;\n\t\tiifname \"jlt0\" numgen random mod \
            10000 < 100 counter packets 17 bytes 24000 drop\n\t}\n}\n";
        assert_eq!(counter_sum(listing).expect("sum"), 17);
        assert_eq!(counter_sum("table inet jlt_loss {\n}\n").expect("sum"), 0);
        assert!(counter_sum("counter packets many bytes 1").is_err());
    }

    #[test]
    fn only_the_maximum_of_a_tcp_buffer_sysctl_is_raised() {
        assert_eq!(
            raised("4096\t16384\t4194304", 33_554_432).expect("raised"),
            "4096 16384 33554432"
        );
        assert_eq!(
            raised("4096 131072 67108864", 33_554_432).expect("kept"),
            "4096 131072 67108864"
        );
        assert!(raised("4096 131072", 1).is_err());
        assert!(raised("a b c", 1).is_err());
    }
}
