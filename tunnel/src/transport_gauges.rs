//! What a QUIC endpoint really runs with, for operators and the regression test: the
//! windows of its transport configuration, the congestion controller read from its live
//! connections, and the UDP offloads quinn uses on its socket. Also one INFO log line at
//! start ([`TransportGauges::started`]).
//!
//! Metrics (register in a registry with the `jumpstarter` prefix):
//! - `jumpstarter_quic_window_bytes{endpoint,window}`, `window` = `stream_receive`,
//!   `receive` or `send`;
//! - `jumpstarter_quic_congestion_info{endpoint,congestion}` = 1 for the controller of the
//!   endpoint's newest connection (read from that connection's congestion state), 0 for
//!   the others; before any connection, the controller the configuration builds;
//! - `jumpstarter_quic_udp_offload_segments{endpoint,kind}`, `kind` = `gso` or `gro`.
//!
//! `endpoint` is `router`, `controller` or `edge`.

use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::socket::Offloads;
use crate::transport::{Congestion, QuicTransport};

/// Which kind of endpoint a figure is about (the `endpoint` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointRole {
    Router,
    Controller,
    Edge,
}

impl EndpointRole {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            EndpointRole::Router => "router",
            EndpointRole::Controller => "controller",
            EndpointRole::Edge => "edge",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// The gauges of every QUIC endpoint of a process (one registration per registry).
#[derive(Debug, Clone, Default)]
pub struct TransportGauges {
    windows: Family<Labels, Gauge>,
    congestion: Family<Labels, Gauge>,
    offloads: Family<Labels, Gauge>,
}

impl TransportGauges {
    /// Registers the gauges in `registry` (whose prefix should be `jumpstarter`).
    pub fn register(registry: &mut Registry) -> TransportGauges {
        let gauges = TransportGauges::default();
        registry.register(
            "quic_window_bytes",
            "Flow-control window of the endpoint's QUIC connections, by window (stream_receive, receive, send)",
            gauges.windows.clone(),
        );
        registry.register(
            "quic_congestion_info",
            "1 for the congestion controller the endpoint's newest QUIC connection runs",
            gauges.congestion.clone(),
        );
        registry.register(
            "quic_udp_offload_segments",
            "Datagrams per system call quinn uses on the endpoint's UDP socket (gso: send, gro: receive)",
            gauges.offloads.clone(),
        );
        gauges
    }

    /// Publishes the settings of an endpoint that starts, and logs them in one line. The
    /// controller is identified from one the configuration's factory builds.
    pub fn started(&self, endpoint: EndpointRole, transport: &QuicTransport, offloads: Offloads) {
        let built = Congestion::of(transport.congestion.factory().build(Instant::now(), 1200));
        self.publish(endpoint, transport, offloads, built);
    }

    /// Like [`TransportGauges::started`], without registering anything: the log line only
    /// (endpoints without a metrics listener).
    pub fn log(endpoint: EndpointRole, transport: &QuicTransport, offloads: Offloads) {
        TransportGauges::default().started(endpoint, transport, offloads);
    }

    fn publish(
        &self,
        endpoint: EndpointRole,
        transport: &QuicTransport,
        offloads: Offloads,
        congestion: Option<Congestion>,
    ) {
        let role = endpoint.name();
        for (window, bytes) in [
            ("stream_receive", transport.stream_receive_window),
            (
                "receive",
                transport
                    .receive_window
                    .max(transport.stream_receive_window),
            ),
            ("send", transport.send_window),
        ] {
            self.windows
                .get_or_create(&vec![("endpoint", role), ("window", window)])
                .set(gauge_value(bytes));
        }
        for (kind, segments) in [("gso", offloads.gso), ("gro", offloads.gro)] {
            self.offloads
                .get_or_create(&vec![("endpoint", role), ("kind", kind)])
                .set(gauge_value(segments as u64));
        }
        self.set_congestion(endpoint, congestion);
        tracing::info!(
            endpoint = role,
            stream_receive_window = transport.stream_receive_window,
            receive_window = transport
                .receive_window
                .max(transport.stream_receive_window),
            send_window = transport.send_window,
            congestion = congestion.map_or("unknown", Congestion::name),
            max_udp_payload = transport.max_udp_payload,
            gso_segments = offloads.gso,
            gro_segments = offloads.gro,
            "QUIC transport in force"
        );
    }

    /// Reads the controller `connection` really runs and makes it the endpoint's info
    /// gauge; returns it.
    pub fn connection(
        &self,
        endpoint: EndpointRole,
        connection: &quinn::Connection,
    ) -> Option<Congestion> {
        let congestion = Congestion::in_force(connection);
        self.set_congestion(endpoint, congestion);
        congestion
    }

    fn set_congestion(&self, endpoint: EndpointRole, congestion: Option<Congestion>) {
        for candidate in Congestion::ALL {
            self.congestion
                .get_or_create(&vec![
                    ("endpoint", endpoint.name()),
                    ("congestion", candidate.name()),
                ])
                .set(i64::from(congestion == Some(candidate)));
        }
    }
}

/// A byte count as a gauge value (saturating: windows are at most 1 TiB anyway).
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn the_gauges_show_the_settings() {
        let mut registry = Registry::with_prefix("jumpstarter");
        let gauges = TransportGauges::register(&mut registry);
        let transport = QuicTransport {
            stream_receive_window: 3 << 20,
            congestion: Congestion::Cubic,
            ..QuicTransport::default()
        };
        gauges.started(
            EndpointRole::Router,
            &transport,
            Offloads { gso: 64, gro: 1 },
        );
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        for line in [
            "jumpstarter_quic_window_bytes{endpoint=\"router\",window=\"stream_receive\"} 3145728",
            "jumpstarter_quic_window_bytes{endpoint=\"router\",window=\"receive\"} 33554432",
            "jumpstarter_quic_congestion_info{endpoint=\"router\",congestion=\"cubic\"} 1",
            "jumpstarter_quic_congestion_info{endpoint=\"router\",congestion=\"bbr\"} 0",
            "jumpstarter_quic_udp_offload_segments{endpoint=\"router\",kind=\"gso\"} 64",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
