//! Scenario 3: 64-byte round trips through the router and direct, p50/p99/p999; and
//! through the router while another session saturates it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::harness::Harness;
use crate::latency::Summary;
use crate::progress::step;
use crate::report::{Row, Scenario};
use crate::route::Route;
use crate::transfer::{Budget, bulk, round_trip_summary};

pub(crate) const KEY: &str = "latency";
/// Row of the loaded QUIC measurement.
pub(crate) const QUIC_LOADED: &str = "QUIC via router, router saturated";
const H2_LOADED: &str = "h2 via router, router saturated";

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
        "{count} round trips per row after {warmup} unrecorded: the client writes 64 bytes, \
         the exporter echoes them, the client checks them. \"Saturated\": another session \
         (its own lease) pushes a bulk transfer through the same router meanwhile."
    ));
    for (seed, route) in [
        Route::QuicDirect,
        Route::QuicRouter,
        Route::H2Direct,
        Route::H2Router,
    ]
    .into_iter()
    .enumerate()
    {
        step(format!("latency: {} ({count} round trips)", route.label()));
        let pair = h.fabric.pair(route).await?;
        let summary = round_trip_summary(pair, 10 + seed as u64, warmup, count).await?;
        let baseline = (route != route.baseline())
            .then(|| s.figure(route.baseline().label(), "p50 µs"))
            .flatten();
        record(s, route.label(), &summary, baseline);
    }
    for (route, name) in [
        (Route::QuicRouter, QUIC_LOADED),
        (Route::H2Router, H2_LOADED),
    ] {
        step(format!("latency: {name}"));
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
        record(s, name, &summary, baseline);
        s.note(format!(
            "{name}: the saturating session moved {:.0} MiB/s meanwhile.",
            load.mib_per_s()
        ));
    }
    Ok(())
}

fn record(s: &mut Scenario, name: &str, summary: &Summary, baseline_p50: Option<f64>) {
    let mut row = Row::new(name)
        .num("p50 µs", summary.p50_us)
        .num("p99 µs", summary.p99_us)
        .num("p999 µs", summary.p999_us)
        .num("max µs", summary.max_us)
        .num("count", summary.count as f64);
    if let Some(base) = baseline_p50 {
        row = row.num("p50 ratio to direct", summary.p50_us / base);
    }
    s.row(row);
    for &(q, us) in &summary.curve {
        if q > 0.0 && q < 1.0 {
            s.point("latency", name, (-(1.0 - q).log10(), us));
        }
    }
}
