//! Scenario 1: one session, bulk transfer, through the router and on the baselines.

use crate::harness::{Harness, ROUTER_CPU, RouterCpu};
use crate::progress::step;
use crate::reference::OURS_OVER_GO;
use crate::report::{Row, Scenario};
use crate::route::Route;
use crate::transfer::{Budget, bulk};

pub(crate) const KEY: &str = "bulk";
pub(crate) const RATIO: &str = "ratio to baseline";

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(1, KEY, "One session, bulk transfer");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let bytes = h.sizes.bulk_bytes;
    s.note(format!(
        "{} MiB client → exporter in 64 KiB blocks, every byte checked by the receiver; \
         timed from the first write to the last byte checked. Baselines: one direct quinn \
         connection, one direct TLS-over-TCP connection, same payload and checks.",
        bytes / (1024 * 1024)
    ));
    for (seed, route) in h.routes().into_iter().enumerate() {
        step(format!("bulk: {} ({} MiB)", route.label(), bytes >> 20));
        let pair = h.fabric.pair(route).await?;
        let cpu = RouterCpu::start(h, route)?;
        let transfer = bulk(pair, seed as u64 + 1, Budget::bytes(bytes)).await?;
        let cpu = cpu.per_gib(transfer.bytes)?;
        let mut row = Row::new(route.label())
            .num("MiB/s", transfer.mib_per_s())
            .num("MiB", transfer.bytes as f64 / 1048576.0)
            .num("seconds", transfer.elapsed.as_secs_f64());
        if let Some(cpu) = cpu {
            row = row.num(ROUTER_CPU, cpu);
        }
        if route != route.baseline()
            && let Some(base) = s.figure(route.baseline().label(), "MiB/s")
        {
            row = row.num(RATIO, transfer.mib_per_s() / base);
        }
        if route == Route::H2Reference
            && let Some(ours) = s.figure(Route::H2Router.label(), "MiB/s")
        {
            row = row.num(OURS_OVER_GO, ours / transfer.mib_per_s());
        }
        s.row(row);
    }
    s.note(RouterCpu::NOTE);
    if h.fabric.has_reference() {
        s.note(format!(
            "{OURS_OVER_GO}: MiB/s of `h2 via router` divided by the Go router's (above 1: \
             ours moves more)."
        ));
    }
    Ok(())
}
