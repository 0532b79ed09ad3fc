//! Scenario 3: 64-byte round trips through the router and direct, p50/p99/p999; and
//! through the router while another session saturates it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::affinity::{self, Pinned};
use crate::harness::Harness;
use crate::latency::Summary;
use crate::progress::step;
use crate::reference::OURS_OVER_GO;
use crate::report::{Row, Scenario};
use crate::route::Route;
use crate::transfer::{Budget, bulk, round_trip_summary};

pub(crate) const KEY: &str = "latency";

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(3, KEY, "64-byte round trips");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let count = h.sizes.round_trips;
    let warmup = (count / 10).max(10);
    s.note(format!(
        "{count} round trips per unloaded row after {warmup} unrecorded: the client writes 64 bytes, \
         the exporter echoes them, the client checks them. \"Saturated\": another session \
         (its own lease) pushes a bulk transfer through the same router meanwhile."
    ));
    for (seed, route) in h.routes().into_iter().enumerate() {
        step(format!("latency: {} ({count} round trips)", route.label()));
        let pair = h.fabric.pair(route).await?;
        let summary = round_trip_summary(pair, 10 + seed as u64, warmup, count).await?;
        let baseline = (route != route.baseline())
            .then(|| s.figure(route.baseline().label(), "p50 µs"))
            .flatten();
        let ours = (route == Route::H2Reference).then_some(Route::H2Router.label());
        record(s, route.label(), &summary, baseline, ours);
    }
    let mut loaded = vec![Route::QuicRouter, Route::H2Router];
    if h.fabric.has_reference() {
        loaded.push(Route::H2Reference);
    }
    let count = h.sizes.saturated_round_trips;
    let warmup = (count / 10).max(10);
    s.note(format!(
        "Saturated rows: {count} round trips after {warmup} unrecorded (each waits behind \
         the bulk transfer, so fewer than unloaded)."
    ));
    for &route in &loaded {
        saturated_row(h, s, route, warmup, count, false).await?;
    }
    if h.pinned {
        s.note(format!(
            "Rows \"…, pinned\" (--pin): measured again with the router process (ours or the \
             Go router) on CPU {} and every thread of the load generator (clients, \
             exporters, the saturating session) on CPU {}, set with sched_setaffinity for \
             those rows only; the other rows run unpinned.",
            affinity::ROUTER_CPU,
            affinity::GENERATOR_CPU
        ));
        for &route in &loaded {
            saturated_row(h, s, route, warmup, count, true).await?;
        }
    }
    if h.fabric.has_reference() {
        s.note(format!(
            "{OURS_OVER_GO} p50 / p99: our h2 router's round trip divided by the Go router's, \
             unloaded and saturated alike (below 1: ours is quicker)."
        ));
    }
    Ok(())
}

/// Row name of `route` while another session saturates the router.
pub(crate) fn saturated(route: Route) -> String {
    format!("{}, router saturated", route.label())
}

/// Row name of `route` while another session saturates the router, with the router on
/// its own CPU (`--pin`).
pub(crate) fn saturated_pinned(route: Route) -> String {
    format!("{}, pinned", saturated(route))
}

/// Round trips of `route` while another session (its own lease) pushes a bulk transfer
/// through the same router; `pinned`: with the router and the load generator on CPUs of
/// their own.
async fn saturated_row(
    h: &Harness,
    s: &mut Scenario,
    route: Route,
    warmup: u64,
    count: u64,
    pinned: bool,
) -> anyhow::Result<()> {
    let name = &if pinned {
        saturated_pinned(route)
    } else {
        saturated(route)
    };
    step(format!("latency: {name}"));
    let _pinned = if pinned {
        let pid = h
            .router_pid(route)
            .with_context(|| format!("{name}: the router process is not running"))?;
        Some(Pinned::router_and_generator(pid).with_context(|| format!("{name}: --pin"))?)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = h.fabric.pair(route).await?;
    let background = tokio::spawn(bulk(
        load,
        20,
        Budget {
            bytes: u64::MAX,
            time: Duration::from_secs(600),
            stop: Some(stop.clone()),
        },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pair = h.fabric.pair(route).await?;
    let summary = round_trip_summary(pair, 30, warmup, count).await;
    stop.store(true, Ordering::Relaxed);
    let load = background.await.context("background transfer")??;
    let summary = summary?;
    let baseline = s.figure(route.baseline().label(), "p50 µs");
    let ours = (route == Route::H2Reference).then(|| {
        if pinned {
            saturated_pinned(Route::H2Router)
        } else {
            saturated(Route::H2Router)
        }
    });
    record(s, name, &summary, baseline, ours.as_deref());
    s.note(format!(
        "{name}: the saturating session moved {:.0} MiB/s meanwhile.",
        load.mib_per_s()
    ));
    Ok(())
}

/// Adds a row; `ours` names our h2 row that a Go router row is compared with.
fn record(
    s: &mut Scenario,
    name: &str,
    summary: &Summary,
    baseline_p50: Option<f64>,
    ours: Option<&str>,
) {
    let mut row = Row::new(name)
        .num("p50 µs", summary.p50_us)
        .num("p99 µs", summary.p99_us)
        .num("p999 µs", summary.p999_us)
        .num("max µs", summary.max_us)
        .num("count", summary.count as f64);
    if let Some(base) = baseline_p50 {
        row = row.num("p50 ratio to direct", summary.p50_us / base);
    }
    if let Some(ours) = ours {
        for (quantile, theirs) in [("p50", summary.p50_us), ("p99", summary.p99_us)] {
            if let Some(our) = s.figure(ours, &format!("{quantile} µs")) {
                row = row.num(&format!("{OURS_OVER_GO} {quantile}"), our / theirs);
            }
        }
    }
    s.row(row);
    for &(q, us) in &summary.curve {
        if q > 0.0 && q < 1.0 {
            s.point("latency", name, (-(1.0 - q).log10(), us));
        }
    }
}
