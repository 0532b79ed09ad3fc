//! How big each scenario runs: the standard suite (about 10 minutes per repetition on 2
//! cores; the controller scenario at 1,000 and 5,000 exporters, 10,000 being a separate run
//! with `--exporters`) or the smoke preset (seconds, tiny sizes, for CI).

use std::time::Duration;

use serde::Serialize;

const MIB: u64 = 1024 * 1024;

/// Sizes of every scenario.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sizes {
    pub(crate) name: &'static str,
    /// Scenario 1: bytes of the single-session transfer.
    pub(crate) bulk_bytes: u64,
    /// Scenario 2: session counts, and bytes moved in all per count.
    pub(crate) sessions: Vec<usize>,
    pub(crate) throughput_bytes: u64,
    /// Scenario 3: recorded round trips (after a warm-up of a tenth as many), unloaded
    /// and while another session saturates the router (each such round trip waits
    /// milliseconds, so fewer: still ≥ 1,000 for a p99).
    pub(crate) round_trips: u64,
    pub(crate) saturated_round_trips: u64,
    /// Scenario 4: sessions set up one after the other, and in flight for the rate.
    pub(crate) setups: u64,
    pub(crate) h2_dials: u64,
    pub(crate) setup_concurrency: usize,
    /// Scenario 5: idle connections and idle sessions to hold.
    pub(crate) idle_quic_connections: usize,
    pub(crate) idle_quic_sessions: usize,
    pub(crate) idle_h2_connections: usize,
    pub(crate) idle_h2_sessions: usize,
    /// Scenario 6: exporter connections that must come back, and whether to crash the
    /// router too.
    pub(crate) restart_connections: usize,
    pub(crate) restart_kill: bool,
    /// Scenario 7: registered exporter counts, leases timed one by one, leases granted
    /// in a burst.
    pub(crate) exporters: Vec<usize>,
    /// The same on a real Kubernetes API server, when one is given, each size with each
    /// count of controller replicas.
    pub(crate) kube_exporters: Vec<usize>,
    pub(crate) kube_replicas: Vec<usize>,
    /// How long the API server's writes are counted with every exporter online and idle.
    pub(crate) idle_window: Duration,
    pub(crate) lease_samples: u64,
    pub(crate) grant_burst: usize,
    /// Pause between the last timed lease's release and the burst, so that the burst
    /// finds the released exporters free.
    pub(crate) burst_pause: Duration,
    /// Scenario 8: seconds of each timed transfer, round trips per path, loss levels.
    pub(crate) impairment_seconds: f64,
    pub(crate) impairment_round_trips: u64,
    pub(crate) losses: Vec<f64>,
    /// Scenario 9: seconds of each timed transfer, round trips (ms) and loss levels
    /// (every combination, with each congestion controller).
    pub(crate) congestion_seconds: f64,
    pub(crate) congestion_rtts_ms: Vec<u64>,
    pub(crate) congestion_losses: Vec<f64>,
}

impl Sizes {
    pub(crate) fn standard() -> Sizes {
        Sizes {
            name: "standard",
            // 256 MiB: about a second through the router, long enough for a steady rate
            // and for 40+ clock ticks (10 ms each) of router CPU time to read.
            bulk_bytes: 256 * MIB,
            sessions: vec![1, 10, 100],
            throughput_bytes: 256 * MIB,
            round_trips: 20_000,
            saturated_round_trips: 5_000,
            setups: 2_000,
            h2_dials: 300,
            setup_concurrency: 32,
            idle_quic_connections: 4_000,
            idle_quic_sessions: 10_000,
            idle_h2_connections: 2_000,
            idle_h2_sessions: 2_000,
            restart_connections: 1_000,
            restart_kill: true,
            exporters: vec![1_000, 5_000],
            kube_exporters: vec![1_000],
            kube_replicas: vec![1],
            idle_window: Duration::from_secs(30),
            lease_samples: 1_000,
            grant_burst: 500,
            burst_pause: Duration::from_millis(500),
            impairment_seconds: 3.0,
            impairment_round_trips: 20,
            losses: vec![0.0, 1.0, 5.0],
            congestion_seconds: 3.0,
            congestion_rtts_ms: vec![20, 50, 150],
            congestion_losses: vec![0.0, 1.0, 5.0],
        }
    }

    pub(crate) fn smoke() -> Sizes {
        Sizes {
            name: "smoke",
            bulk_bytes: 2 * MIB,
            sessions: vec![1, 10],
            throughput_bytes: 4 * MIB,
            round_trips: 100,
            saturated_round_trips: 100,
            setups: 20,
            h2_dials: 5,
            setup_concurrency: 4,
            idle_quic_connections: 20,
            idle_quic_sessions: 20,
            idle_h2_connections: 10,
            idle_h2_sessions: 10,
            restart_connections: 10,
            restart_kill: false,
            exporters: vec![10],
            kube_exporters: vec![10],
            kube_replicas: vec![1],
            idle_window: Duration::from_millis(250),
            lease_samples: 5,
            grant_burst: 5,
            burst_pause: Duration::from_millis(50),
            impairment_seconds: 0.3,
            impairment_round_trips: 3,
            losses: vec![0.0, 1.0],
            congestion_seconds: 0.3,
            congestion_rtts_ms: vec![50],
            // 5 %, not 1 %: short transfers must lose some packets for the check that
            // the loss rules apply.
            congestion_losses: vec![0.0, 5.0],
        }
    }
}
