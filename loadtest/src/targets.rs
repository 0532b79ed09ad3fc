//! The targets, checked against a run's figures.

use crate::reference::{self, OURS_OVER_GO};
use crate::report::{Scenario, Target, target};
use crate::route::Route;
use crate::scenario::{bulk, controller, idle, latency, setup};

/// Every target, measured or not.
pub(crate) fn check(scenarios: &[Scenario]) -> Vec<Target> {
    let find = |key: &str| scenarios.iter().find(|s| s.key == key);
    let figure = |key: &str, row: &str, column: &str| find(key)?.figure(row, column);
    let quic_router = Route::QuicRouter.label();
    let saturated_p99_ms = |route: Route| {
        figure(latency::KEY, &latency::saturated(route), "p99 µs").map(|us| us / 1000.0)
    };
    let quic_setup = figure(setup::KEY, setup::QUIC_ROW, "p50 ms");
    let h2_dial = figure(setup::KEY, setup::H2_DIAL_ROW, "p50 ms");
    let thousand = controller::row_name(1_000);
    // At 10,000 exporters on Kubernetes, the worst row over the replica counts measured.
    let kube_worst = |column: &str, higher_is_worse: bool| {
        let rows = &find(controller::KEY)?.rows;
        rows.iter()
            .filter(|r| controller::is_kube_row(&r.name) && r.figure("exporters") == Some(10_000.0))
            .filter_map(|r| r.figure(column))
            .reduce(|a, b| if (a < b) == higher_is_worse { b } else { a })
    };
    vec![
        target(
            "QUIC single session ≥ 0.45× one raw quinn connection",
            figure(bulk::KEY, quic_router, bulk::RATIO),
            "×",
            0.45,
            false,
        ),
        target(
            "h2 single session ≥ 2× the Go router (same run)",
            figure(bulk::KEY, reference::LABEL, OURS_OVER_GO),
            "×",
            2.0,
            false,
        ),
        target(
            "QUIC router round trip p50 ≤ 2× direct quinn",
            figure(latency::KEY, quic_router, "p50 ratio to direct"),
            "×",
            2.0,
            true,
        ),
        target(
            "QUIC router round trip p99 ≤ 300 µs unloaded",
            figure(latency::KEY, quic_router, "p99 µs"),
            "µs",
            300.0,
            true,
        ),
        target(
            "QUIC router round trip p99 ≤ 5 ms while another session saturates the router",
            saturated_p99_ms(Route::QuicRouter),
            "ms",
            5.0,
            true,
        ),
        target(
            "h2 router round trip p99 ≤ 5 ms while another session saturates the router",
            saturated_p99_ms(Route::H2Router),
            "ms",
            5.0,
            true,
        ),
        target(
            "QUIC session setup on a warm connection ≤ 0.3 ms p50",
            quic_setup,
            "ms",
            0.3,
            true,
        ),
        target(
            "QUIC session setup ≥ 10× faster than the h2 Dial path (p50)",
            quic_setup.zip(h2_dial).map(|(q, h)| h / q),
            "×",
            10.0,
            false,
        ),
        target(
            "≤ 64 KB router memory per idle QUIC connection",
            figure(idle::KEY, idle::QUIC_CONNECTIONS, idle::PER_ITEM).map(|b| b / 1000.0),
            "KB",
            64.0,
            true,
        ),
        target(
            "lease create → Ready p50 ≤ 50 ms with 1,000 exporters",
            figure(controller::KEY, &thousand, "Ready p50 ms"),
            "ms",
            50.0,
            true,
        ),
        target(
            "lease create → Ready p99 ≤ 250 ms with 1,000 exporters",
            figure(controller::KEY, &thousand, "Ready p99 ms"),
            "ms",
            250.0,
            true,
        ),
        target(
            "≥ 100 grants/s with 1,000 exporters",
            figure(controller::KEY, &thousand, "grants/s"),
            "grants/s",
            100.0,
            false,
        ),
        target(
            "lease create → Ready p99 ≤ 250 ms with 10,000 exporters, standalone",
            figure(
                controller::KEY,
                &controller::row_name(10_000),
                "Ready p99 ms",
            ),
            "ms",
            250.0,
            true,
        ),
        target(
            "lease create → Ready p50 ≤ 100 ms with 10,000 exporters on Kubernetes (worst replica count)",
            kube_worst("Ready p50 ms", true),
            "ms",
            100.0,
            true,
        ),
        target(
            "lease create → Ready p99 ≤ 500 ms with 10,000 exporters on Kubernetes (worst replica count)",
            kube_worst("Ready p99 ms", true),
            "ms",
            500.0,
            true,
        ),
        target(
            "≥ 100 grants/s with 10,000 exporters on Kubernetes (worst replica count)",
            kube_worst("grants/s", false),
            "grants/s",
            100.0,
            false,
        ),
        target(
            "≤ 20 API writes/s at idle with 10,000 exporters online (worst replica count)",
            kube_worst(controller::IDLE_WRITES, true),
            "writes/s",
            20.0,
            true,
        ),
    ]
}
