//! The issues' targets, checked against a run's figures: first those of the QUIC and
//! report issue (the impaired 50 ms path, loopback relay throughput, round trips under
//! load), then the earlier ones that still hold (session setup, idle memory, controller).

use crate::reference::{self, OURS_OVER_GO};
use crate::report::{Scenario, Target, target};
use crate::route::Route;
use crate::scenario::{bulk, controller, idle, impairment, latency, setup};

/// Loss levels of scenario 8 the targets name, in percent.
const LOSSES: [f64; 3] = [0.0, 1.0, 5.0];

/// Row name of `route` at `loss` % in scenario 8 (as the scenario names its rows).
fn impaired_row(route: Route, loss: f64) -> String {
    format!("{} at {loss} % loss", route.label())
}

/// Every target, measured or not.
pub(crate) fn check(scenarios: &[Scenario]) -> Vec<Target> {
    let find = |key: &str| scenarios.iter().find(|s| s.key == key);
    let figure = |key: &str, row: &str, column: &str| find(key)?.figure(row, column);
    let quic_router = Route::QuicRouter.label();
    let impaired =
        |route: Route, loss: f64| figure(impairment::KEY, &impaired_row(route, loss), "MiB/s");
    let impaired_ratio = |ours: Route, theirs: Route, loss: f64| {
        impaired(ours, loss)
            .zip(impaired(theirs, loss))
            .map(|(a, b)| a / b)
    };
    // Under load, the pinned row (router and load generator on CPUs of their own) when the
    // run has it, otherwise the unpinned one; the target's text says which.
    let saturated = |route: Route| {
        let unpinned = latency::saturated(route);
        let pinned = format!("{unpinned}, pinned");
        match figure(latency::KEY, &pinned, "p99 µs") {
            Some(us) => (Some(us / 1000.0), "pinned"),
            None => (
                figure(latency::KEY, &unpinned, "p99 µs").map(|us| us / 1000.0),
                "unpinned",
            ),
        }
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
    let mut targets = Vec::new();
    for loss in LOSSES {
        targets.push(target(
            &format!("50 ms path, {loss} % loss: QUIC direct ≥ 0.9× TLS/TCP direct"),
            impaired_ratio(Route::QuicDirect, Route::H2Direct, loss),
            "×",
            0.9,
            false,
        ));
    }
    for loss in LOSSES {
        let limit = if loss == 0.0 { 1.0 } else { 1.5 };
        targets.push(target(
            &format!("50 ms path, {loss} % loss: QUIC via router ≥ {limit}× h2 via router"),
            impaired_ratio(Route::QuicRouter, Route::H2Router, loss),
            "×",
            limit,
            false,
        ));
    }
    targets.extend([
        target(
            "loopback: QUIC via router ≥ 0.5× one raw quinn connection",
            figure(bulk::KEY, quic_router, bulk::RATIO),
            "×",
            0.5,
            false,
        ),
        target(
            "loopback: h2 via router ≥ 2× the Go router (same run)",
            figure(bulk::KEY, reference::LABEL, OURS_OVER_GO),
            "×",
            2.0,
            false,
        ),
    ]);
    for (route, name) in [(Route::QuicRouter, "QUIC"), (Route::H2Router, "h2")] {
        let (p99_ms, which) = saturated(route);
        targets.push(target(
            &format!(
                "{name} router round trip p99 ≤ 5 ms while another session saturates the \
                 router ({which})"
            ),
            p99_ms,
            "ms",
            5.0,
            true,
        ));
    }
    targets.extend([
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
    ]);
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Row;

    fn verdict<'a>(targets: &'a [Target], text: &str) -> &'a Target {
        targets
            .iter()
            .find(|t| t.target.contains(text))
            .unwrap_or_else(|| panic!("no target {text}"))
    }

    #[test]
    fn the_impaired_path_is_judged_by_ratios_within_the_run() {
        let mut s = Scenario::new(8, impairment::KEY, "Impairment");
        for (route, mib) in [
            (Route::QuicDirect, [50.0, 19.0, 17.0]),
            (Route::H2Direct, [52.0, 20.0, 17.5]),
            (Route::QuicRouter, [17.0, 12.0, 6.0]),
            (Route::H2Router, [12.0, 6.6, 1.0]),
        ] {
            for (loss, mib) in LOSSES.into_iter().zip(mib) {
                s.row(Row::new(impaired_row(route, loss)).num("MiB/s", mib));
            }
        }
        let targets = check(&[s]);
        let zero = verdict(&targets, "0 % loss: QUIC direct");
        assert_eq!(zero.verdict, "met", "{zero:?}");
        assert_eq!(verdict(&targets, "1 % loss: QUIC direct").verdict, "met");
        assert_eq!(
            verdict(&targets, "0 % loss: QUIC via router ≥ 1×").verdict,
            "met"
        );
        assert_eq!(
            verdict(&targets, "1 % loss: QUIC via router ≥ 1.5×").verdict,
            "met"
        );
        let five = verdict(&targets, "5 % loss: QUIC via router ≥ 1.5×");
        assert_eq!(five.measured, Some(6.0));
        assert_eq!(verdict(&targets, "Go router").verdict, "not measured");
    }

    #[test]
    fn round_trips_under_load_prefer_the_pinned_rows() {
        let mut s = Scenario::new(3, latency::KEY, "Round trips");
        let quic = latency::saturated(Route::QuicRouter);
        s.row(Row::new(&quic).num("p99 µs", 11_000.0));
        s.row(Row::new(format!("{quic}, pinned")).num("p99 µs", 4_000.0));
        s.row(Row::new(latency::saturated(Route::H2Router)).num("p99 µs", 7_800.0));
        let targets = check(&[s]);
        let quic = verdict(&targets, "QUIC router round trip p99");
        assert!(quic.target.ends_with("(pinned)"), "{quic:?}");
        assert_eq!((quic.measured, quic.verdict.as_str()), (Some(4.0), "met"));
        let h2 = verdict(&targets, "h2 router round trip p99");
        assert!(h2.target.ends_with("(unpinned)"), "{h2:?}");
        assert_eq!(h2.verdict, "missed");
    }
}
