//! Scenario 2: aggregate throughput with 1, 10 and 100 concurrent sessions, each on its own
//! connections (its own lease), through the router and on the baselines.

use std::time::Instant;

use anyhow::Context;

use crate::harness::{Harness, ROUTER_CPU, RouterCpu};
use crate::progress::step;
use crate::reference::OURS_OVER_GO;
use crate::report::{Row, Scenario};
use crate::route::Route;
use crate::transfer::{Budget, bulk};

pub(crate) const KEY: &str = "throughput";

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(2, KEY, "Aggregate throughput by concurrent sessions");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let total = h.sizes.throughput_bytes;
    s.note(format!(
        "{} MiB in all per measurement, split evenly over the sessions; each session has \
         its own client and exporter connections (a lease of its own); aggregate = bytes / \
         wall time until the last byte was checked.",
        total >> 20
    ));
    for &n in &h.sizes.sessions {
        for route in h.routes() {
            step(format!("throughput: {} × {n}", route.label()));
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                pairs.push(h.fabric.pair(route).await?);
            }
            let each = (total / n as u64).max(64 * 1024);
            let cpu = RouterCpu::start(h, route)?;
            let start = Instant::now();
            let tasks: Vec<_> = pairs
                .into_iter()
                .enumerate()
                .map(|(i, pair)| tokio::spawn(bulk(pair, 100 + i as u64, Budget::bytes(each))))
                .collect();
            let mut bytes = 0u64;
            for task in tasks {
                bytes += task.await.context("transfer task")??.bytes;
            }
            let mib_s = bytes as f64 / 1048576.0 / start.elapsed().as_secs_f64();
            let cpu = cpu.per_gib(bytes)?;
            let name = format!("{} × {n}", route.label());
            let mut row = Row::new(&name)
                .num("sessions", n as f64)
                .num("MiB/s", mib_s);
            if let Some(cpu) = cpu {
                row = row.num(ROUTER_CPU, cpu);
            }
            if route != route.baseline()
                && let Some(base) =
                    s.figure(&format!("{} × {n}", route.baseline().label()), "MiB/s")
            {
                row = row.num("ratio to baseline", mib_s / base);
            }
            if route == Route::H2Reference
                && let Some(ours) = s.figure(&format!("{} × {n}", Route::H2Router.label()), "MiB/s")
            {
                row = row.num(OURS_OVER_GO, ours / mib_s);
            }
            s.row(row);
            s.point("throughput", route.label(), ((n as f64).log10(), mib_s));
        }
    }
    s.note(RouterCpu::NOTE);
    if h.fabric.has_reference() {
        s.note(format!(
            "{OURS_OVER_GO}: aggregate MiB/s of `h2 via router` divided by the Go router's \
             with as many sessions (above 1: ours moves more)."
        ));
    }
    Ok(())
}
