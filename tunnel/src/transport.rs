//! The QUIC transport settings every endpoint shares (router, controller listener, edge,
//! client library): flow-control windows, congestion controller, MTU discovery bound.
//!
//! [`QuicTransport::default`] is sized for a 100 ms × 1 Gbit/s path: its bandwidth-delay
//! product is 12.5 MB, so one stream needs a receive window at least that large to fill
//! the path, and a connection carrying several sessions twice that. quinn's own defaults
//! (1.25 MB per stream) cap one stream at about 23 MiB/s on a 50 ms path whatever the link.
//!
//! quinn always paces its sends (no burst of a whole window at once), and probes the path
//! MTU between 1200 bytes and [`QuicTransport::max_udp_payload`]: it settles at what the
//! path carries (about 1452 on a 1500-byte Ethernet path, more on loopback or jumbo-frame
//! links). The endpoint must accept datagrams that large too ([`QuicTransport::endpoint_config`]).
//! It sends with GSO where the kernel offers it, up to [`GSO_MAX_UDP_PAYLOAD`].
//!
//! [`QuicTransportArgs`] is the flag group (`--quic-…`) of every binary with a QUIC
//! endpoint; [`Congestion::in_force`] reads the controller a live connection really uses.

use std::fmt;
use std::sync::Arc;

use quinn::congestion::{
    Bbr, BbrConfig, ControllerFactory, Cubic, CubicConfig, NewReno, NewRenoConfig,
};

use crate::quic::{IDLE_TIMEOUT, KEEP_ALIVE};

const MIB: u64 = 1024 * 1024;

/// Default stream receive window: above the 12.5 MB bandwidth-delay product of a
/// 100 ms × 1 Gbit/s path, rounded up to a power of two.
pub const STREAM_RECEIVE_WINDOW: u64 = 16 * MIB;

/// Default connection receive window: two streams at full speed (e.g. one session's two
/// directions through a router, or two sessions of one client).
pub const RECEIVE_WINDOW: u64 = 32 * MIB;

/// Default send window: what a peer of the same configuration accepts at once on one
/// connection (its connection receive window).
pub const SEND_WINDOW: u64 = 32 * MIB;

/// Largest UDP payload with which quinn can still use GSO: it sends up to 10 datagrams per
/// system call (quinn 0.11's `MAX_TRANSMIT_SEGMENTS`), and one UDP send carries at most
/// 65,507 payload bytes over IPv4, so 10 × 6550 is the most that fits. Above it, the kernel
/// refuses every full batch (`EMSGSIZE`): a bulk transfer stalls. So larger values turn
/// GSO off ([`QuicTransport::to_quinn`]).
pub const GSO_MAX_UDP_PAYLOAD: u16 = 6550;

/// Default upper bound of MTU discovery (UDP payload bytes): the largest that keeps GSO
/// ([`GSO_MAX_UDP_PAYLOAD`]); a jumbo-frame path (9000-byte MTU) settles there, a
/// 1500-byte path at about 1452, loopback at this bound. quinn only probes up to it.
pub const MAX_UDP_PAYLOAD: u16 = GSO_MAX_UDP_PAYLOAD;

/// The smallest UDP payload QUIC allows (RFC 9000, 14): every path must carry it.
pub const MIN_UDP_PAYLOAD: u16 = 1200;

/// The largest UDP payload over IPv6 (65,535 minus the 8-byte UDP header).
pub const MAX_UDP_PAYLOAD_LIMIT: u16 = 65527;

/// Smallest window a flag accepts: below one full packet a peer could not send at all.
pub const MIN_WINDOW: u64 = 1024;

/// Largest window a flag accepts (1 TiB): far above any host's memory, and below QUIC's
/// own limit (2^62 - 1), so the value always encodes.
pub const MAX_WINDOW: u64 = 1 << 40;

/// A QUIC congestion controller quinn implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Congestion {
    /// BBR (model-based: keeps its rate through random loss).
    Bbr,
    /// CUBIC (loss-based, RFC 9438), quinn's own default.
    Cubic,
    /// NewReno (loss-based, RFC 9002's reference controller).
    NewReno,
}

impl Congestion {
    /// Every controller, for metrics that list them all.
    pub const ALL: [Congestion; 3] = [Congestion::Bbr, Congestion::Cubic, Congestion::NewReno];

    /// The flag value and metric label (`bbr`, `cubic`, `new-reno`).
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Bbr => "bbr",
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "new-reno",
        }
    }

    /// quinn's factory of this controller, with quinn's default parameters.
    pub fn factory(self) -> Arc<dyn ControllerFactory + Send + Sync> {
        match self {
            Congestion::Bbr => Arc::new(BbrConfig::default()),
            Congestion::Cubic => Arc::new(CubicConfig::default()),
            Congestion::NewReno => Arc::new(NewRenoConfig::default()),
        }
    }

    /// The controller a congestion state is an instance of (`None` for one quinn adds
    /// later or a custom one).
    pub fn of(controller: Box<dyn quinn::congestion::Controller>) -> Option<Congestion> {
        let any = controller.into_any();
        if any.is::<Bbr>() {
            Some(Congestion::Bbr)
        } else if any.is::<Cubic>() {
            Some(Congestion::Cubic)
        } else if any.is::<NewReno>() {
            Some(Congestion::NewReno)
        } else {
            None
        }
    }

    /// The controller `connection` really runs (read from its live congestion state).
    pub fn in_force(connection: &quinn::Connection) -> Option<Congestion> {
        Congestion::of(connection.congestion_state())
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The transport settings of a QUIC endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicTransport {
    /// Bytes a peer may send on one stream before this side reads them.
    pub stream_receive_window: u64,
    /// Bytes a peer may send on all streams of a connection before this side reads them.
    pub receive_window: u64,
    /// Bytes written by the application that a connection keeps until the peer
    /// acknowledges them.
    pub send_window: u64,
    /// The congestion controller of every connection.
    pub congestion: Congestion,
    /// Upper bound of MTU discovery, and the largest UDP payload the endpoint accepts.
    pub max_udp_payload: u16,
}

impl Default for QuicTransport {
    fn default() -> Self {
        QuicTransport {
            stream_receive_window: STREAM_RECEIVE_WINDOW,
            receive_window: RECEIVE_WINDOW,
            send_window: SEND_WINDOW,
            // BBR, not loss-based Cubic: lab networks drop packets for reasons other than
            // congestion (Wi-Fi, VPNs), and Cubic shrinks its window at every such loss.
            congestion: Congestion::Bbr,
            max_udp_payload: MAX_UDP_PAYLOAD,
        }
    }
}

impl QuicTransport {
    /// The same settings with all three windows at most the given ones (a router's floor
    /// beyond its window budget).
    pub fn capped(self, stream_receive: u64, receive: u64, send: u64) -> QuicTransport {
        QuicTransport {
            stream_receive_window: self.stream_receive_window.min(stream_receive),
            receive_window: self.receive_window.min(receive),
            send_window: self.send_window.min(send),
            ..self
        }
    }

    /// The flow-control bytes one connection may hold in memory: what peers may park in
    /// its receive window plus what it keeps of its own writes.
    pub fn connection_bytes(&self) -> u64 {
        self.receive_window + self.send_window
    }

    /// quinn's transport configuration: these windows, controller and MTU bound, with
    /// keep-alives ([`KEEP_ALIVE`]) below the idle timeout ([`IDLE_TIMEOUT`]) and
    /// round-robin scheduling of the streams of a connection (a small write on one stream
    /// goes out with the next packet, not after another stream's queued bulk data).
    pub fn to_quinn(&self) -> quinn::TransportConfig {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(KEEP_ALIVE));
        // Invariant: 30 s is far below the largest idle timeout QUIC can express.
        if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
            transport.max_idle_timeout(Some(idle));
        }
        transport.stream_receive_window(varint(self.stream_receive_window));
        // A connection window below the stream window would only shrink the stream's.
        transport.receive_window(varint(self.receive_window.max(self.stream_receive_window)));
        transport.send_window(self.send_window);
        transport.send_fairness(true);
        // quinn batches up to 10 datagrams per GSO send; beyond GSO_MAX_UDP_PAYLOAD bytes
        // each, a batch exceeds what one UDP send may carry and the kernel refuses it.
        transport.enable_segmentation_offload(self.max_udp_payload <= GSO_MAX_UDP_PAYLOAD);
        transport.congestion_controller_factory(self.congestion.factory());
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload.max(MIN_UDP_PAYLOAD));
        transport.mtu_discovery_config(Some(mtu));
        transport
    }

    /// quinn's endpoint configuration accepting datagrams up to [`Self::max_udp_payload`]
    /// (quinn's default, 1472, would stop the peer's MTU discovery there).
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut config = quinn::EndpointConfig::default();
        self.apply_endpoint(&mut config);
        config
    }

    /// Sets the largest accepted datagram of an existing endpoint configuration.
    pub fn apply_endpoint(&self, config: &mut quinn::EndpointConfig) {
        let payload = self
            .max_udp_payload
            .clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD_LIMIT);
        // Invariant: the clamp keeps the value inside the range quinn accepts.
        let _ = config.max_udp_payload_size(payload);
    }
}

/// A window as a QUIC variable-length integer (saturating at QUIC's limit).
fn varint(value: u64) -> quinn::VarInt {
    quinn::VarInt::from_u64(value).unwrap_or(quinn::VarInt::MAX)
}

/// The transport flags of every binary with a QUIC endpoint. Sizes are in bytes.
#[derive(Debug, Clone, clap::Args)]
pub struct QuicTransportArgs {
    /// Bytes a QUIC peer may send on one stream before it is read (one stream's
    /// throughput is at most this per round trip).
    #[arg(
        long,
        env = "JUMPSTARTER_QUIC_STREAM_RECEIVE_WINDOW",
        default_value_t = STREAM_RECEIVE_WINDOW,
        value_parser = clap::value_parser!(u64).range(MIN_WINDOW..=MAX_WINDOW)
    )]
    pub quic_stream_receive_window: u64,
    /// Bytes a QUIC peer may send on all streams of one connection before they are read.
    #[arg(
        long,
        env = "JUMPSTARTER_QUIC_RECEIVE_WINDOW",
        default_value_t = RECEIVE_WINDOW,
        value_parser = clap::value_parser!(u64).range(MIN_WINDOW..=MAX_WINDOW)
    )]
    pub quic_receive_window: u64,
    /// Bytes of its own writes a QUIC connection keeps until the peer acknowledges them.
    #[arg(
        long,
        env = "JUMPSTARTER_QUIC_SEND_WINDOW",
        default_value_t = SEND_WINDOW,
        value_parser = clap::value_parser!(u64).range(MIN_WINDOW..=MAX_WINDOW)
    )]
    pub quic_send_window: u64,
    /// Congestion controller of QUIC connections.
    #[arg(
        long,
        env = "JUMPSTARTER_QUIC_CONGESTION",
        value_enum,
        default_value_t = Congestion::Bbr
    )]
    pub quic_congestion: Congestion,
    /// Largest UDP payload of QUIC datagrams: the upper bound of path MTU discovery and
    /// the largest datagram accepted.
    #[arg(
        long,
        env = "JUMPSTARTER_QUIC_MAX_UDP_PAYLOAD",
        default_value_t = MAX_UDP_PAYLOAD,
        value_parser = clap::value_parser!(u16).range(i64::from(MIN_UDP_PAYLOAD)..=i64::from(MAX_UDP_PAYLOAD_LIMIT))
    )]
    pub quic_max_udp_payload: u16,
}

impl QuicTransportArgs {
    /// The settings the flags give.
    pub fn transport(&self) -> QuicTransport {
        QuicTransport {
            stream_receive_window: self.quic_stream_receive_window,
            receive_window: self.quic_receive_window,
            send_window: self.quic_send_window,
            congestion: self.quic_congestion,
            max_udp_payload: self.quic_max_udp_payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        transport: QuicTransportArgs,
    }

    fn parse(args: &[&str]) -> Result<QuicTransport, clap::Error> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map(|cli| cli.transport.transport())
    }

    /// A field of quinn's transport configuration, read from its `Debug` output (quinn has
    /// no getters): the configuration quinn will use, not ours.
    fn field(config: &quinn::TransportConfig, name: &str) -> String {
        let text = format!("{config:?}");
        let start = text
            .find(&format!(" {name}: "))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            + name.len()
            + 3;
        text[start..]
            .split([',', ' ', '}'])
            .next()
            .expect("a value")
            .to_owned()
    }

    #[test]
    fn the_defaults_fit_a_100_ms_gigabit_path() {
        let transport = QuicTransport::default();
        let bdp = 1_000_000_000 / 8 / 10; // bytes in flight at 1 Gbit/s over 100 ms
        assert!(transport.stream_receive_window >= bdp);
        assert!(transport.receive_window >= 2 * bdp);
        assert!(transport.send_window >= 2 * bdp);
        assert_eq!(transport.congestion, Congestion::Bbr);
        assert_eq!(transport.max_udp_payload, 6550);
        assert_eq!(
            field(&transport.to_quinn(), "enable_segmentation_offload"),
            "true"
        );
        assert_eq!(parse(&[]).expect("defaults parse"), transport);
    }

    #[test]
    fn the_settings_become_quinns() {
        let transport = QuicTransport {
            stream_receive_window: 3 * MIB,
            receive_window: 5 * MIB,
            send_window: 7 * MIB,
            congestion: Congestion::Cubic,
            max_udp_payload: 4000,
        };
        let config = transport.to_quinn();
        assert_eq!(
            field(&config, "stream_receive_window"),
            (3 * MIB).to_string()
        );
        assert_eq!(field(&config, "receive_window"), (5 * MIB).to_string());
        assert_eq!(field(&config, "send_window"), (7 * MIB).to_string());
        assert_eq!(field(&config, "send_fairness"), "true");
        assert_eq!(field(&config, "upper_bound"), "4000");
        assert_eq!(field(&config, "keep_alive_interval"), "Some(10s)");
        assert_eq!(field(&config, "enable_segmentation_offload"), "true");
        // Jumbo datagrams do not fit quinn's GSO batches: GSO off.
        let jumbo = QuicTransport {
            max_udp_payload: 8952,
            ..transport
        };
        assert_eq!(
            field(&jumbo.to_quinn(), "enable_segmentation_offload"),
            "false"
        );
        // A connection window below the stream window is raised to it.
        let small = QuicTransport {
            receive_window: MIB,
            ..transport
        };
        assert_eq!(
            field(&small.to_quinn(), "receive_window"),
            (3 * MIB).to_string()
        );
        let endpoint = transport.endpoint_config();
        assert_eq!(endpoint.get_max_udp_payload_size(), 4000);
    }

    #[test]
    fn each_congestion_flag_builds_its_controller() {
        for congestion in Congestion::ALL {
            let controller = congestion
                .factory()
                .build(std::time::Instant::now(), MIN_UDP_PAYLOAD);
            assert_eq!(Congestion::of(controller), Some(congestion));
            let parsed = parse(&["--quic-congestion", congestion.name()]).expect("parse");
            assert_eq!(parsed.congestion, congestion);
            assert_eq!(congestion.to_string(), congestion.name());
        }
    }

    #[test]
    fn flags_set_every_field() {
        let transport = parse(&[
            "--quic-stream-receive-window",
            "3145728",
            "--quic-receive-window",
            "6291456",
            "--quic-send-window",
            "4194304",
            "--quic-congestion",
            "new-reno",
            "--quic-max-udp-payload",
            "1452",
        ])
        .expect("parse");
        assert_eq!(
            transport,
            QuicTransport {
                stream_receive_window: 3 * MIB,
                receive_window: 6 * MIB,
                send_window: 4 * MIB,
                congestion: Congestion::NewReno,
                max_udp_payload: 1452,
            }
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (args, expect) in [
            (
                &["--quic-congestion", "vegas"][..],
                "invalid value 'vegas' for '--quic-congestion",
            ),
            (
                &["--quic-stream-receive-window", "100"],
                "invalid value '100' for '--quic-stream-receive-window",
            ),
            (
                &["--quic-receive-window", "16MiB"],
                "invalid value '16MiB' for '--quic-receive-window",
            ),
            (
                &["--quic-send-window=-1"],
                "invalid value '-1' for '--quic-send-window",
            ),
            (
                &["--quic-max-udp-payload", "1000"],
                "invalid value '1000' for '--quic-max-udp-payload",
            ),
            (
                &["--quic-max-udp-payload", "70000"],
                "invalid value '70000' for '--quic-max-udp-payload",
            ),
        ] {
            let error = parse(args).expect_err("refused").to_string();
            assert!(error.contains(expect), "{args:?}: {error}");
        }
        let error = parse(&["--quic-congestion", "vegas"])
            .expect_err("refused")
            .to_string();
        assert!(error.contains("bbr, cubic, new-reno"), "{error}");
    }
}
