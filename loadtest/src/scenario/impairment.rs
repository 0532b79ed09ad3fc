//! Scenario 8: throughput and round-trip latency under impairment: 50 ms round trip per
//! hop (25 ms each way) and 0/1/5 % loss, through the router and direct.

use std::time::Duration;

use crate::harness::Harness;
use crate::impairment::{self, Impairment, Relay};
use crate::progress::step;
use crate::report::{Row, Scenario};
use crate::route::{Keep, Pair, QuicLease, Route};
use crate::transfer::{Budget, bulk, round_trip_summary};

pub(crate) const KEY: &str = "impairment";
const ONE_WAY: Duration = Duration::from_millis(25);

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(8, KEY, "Impairment: 50 ms RTT per hop, 0/1/5 % loss");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let netem = impairment::probe_netem().await;
    s.note(format!(
        "Kernel impairment: {netem}. So the impairment is made in user space: every peer \
         reaches the router (or the direct server) through a relay of its own that delays \
         each datagram / chunk by 25 ms each way and drops UDP datagrams with the given \
         probability, both ways. Through the router a session crosses two impaired hops \
         (client–router, router–exporter), so its round trip is about 100 ms; direct, one hop \
         (about 50 ms). TCP segments cannot be dropped from user space: h2 and TLS are \
         measured without loss only; and the TCP relay acknowledges bytes at once (it splits the \
         connection), so TCP's own reaction to the round trip is not seen: the h2 and TLS \
         throughput rows here are optimistic and not comparable with the QUIC ones."
    ));
    let seconds = h.sizes.impairment_seconds;
    let count = h.sizes.impairment_round_trips;
    s.note(format!(
        "Throughput: a transfer of {seconds} s (then drained, every byte checked); round trips: \
         {count} of 64 bytes after 2 unrecorded."
    ));
    for (i, &loss) in h.sizes.losses.iter().enumerate() {
        let how = Impairment {
            one_way: ONE_WAY,
            loss,
        };
        let mut routes = vec![Route::QuicDirect, Route::QuicRouter];
        if loss == 0.0 {
            routes.extend([Route::H2Direct, Route::H2Router]);
        }
        for route in routes {
            step(format!("impairment: {} at {loss} % loss", route.label()));
            let seed = 1000 + i as u64 * 10;
            let (pair, relays) = impaired_pair(h, route, how, seed).await?;
            let transfer = bulk(
                pair,
                seed,
                Budget {
                    bytes: u64::MAX,
                    time: Duration::from_secs_f64(seconds),
                    stop: None,
                },
            )
            .await?;
            drop(relays);
            let (pair, relays) = impaired_pair(h, route, how, seed + 1).await?;
            let rtt = round_trip_summary(pair, seed + 1, 2, count).await?;
            drop(relays);
            s.row(
                Row::new(format!("{} at {loss} % loss", route.label()))
                    .num("loss %", loss)
                    .num("MiB/s", transfer.mib_per_s())
                    .num("RTT p50 ms", rtt.p50_us / 1000.0)
                    .num("RTT p99 ms", rtt.p99_us / 1000.0),
            );
            s.point("impairment", route.label(), (loss, transfer.mib_per_s()));
        }
    }
    Ok(())
}

/// A session pair whose every connection goes through an impairing relay.
async fn impaired_pair(
    h: &Harness,
    route: Route,
    how: Impairment,
    seed: u64,
) -> anyhow::Result<(Pair, Vec<Relay>)> {
    let fabric = &h.fabric;
    match route {
        Route::QuicRouter => {
            let a = impairment::udp(fabric.router, how, seed).await?;
            let b = impairment::udp(fabric.router, how, seed + 7).await?;
            let lease = h.lab.fresh("lease");
            let (via_a, via_b) = (fabric.with_router(a.addr), fabric.with_router(b.addr));
            let (client, exporter) = futures::try_join!(
                via_a.quic_connect(&lease, jumpstarter_certs::Role::Client),
                via_b.quic_connect(&lease, jumpstarter_certs::Role::Exporter)
            )?;
            let lease = QuicLease { client, exporter };
            let (client_end, exporter_end) = lease.session(&h.lab.fresh("s")).await?;
            let pair = Pair {
                client: client_end,
                exporter: exporter_end,
                keep: vec![Keep::Quic(lease.client), Keep::Quic(lease.exporter)],
            };
            Ok((pair, vec![a, b]))
        }
        Route::QuicDirect => {
            let relay = impairment::udp(fabric.direct_quic_addr(), how, seed).await?;
            let direct = fabric.with_direct(relay.addr, fabric.direct_tls_addr());
            Ok((direct.pair(route).await?, vec![relay]))
        }
        Route::H2Router => {
            let relay = impairment::tcp(fabric.router, how.one_way).await?;
            Ok((
                fabric.with_router(relay.addr).pair(route).await?,
                vec![relay],
            ))
        }
        Route::H2Direct => {
            let relay = impairment::tcp(fabric.direct_tls_addr(), how.one_way).await?;
            let direct = fabric.with_direct(fabric.direct_quic_addr(), relay.addr);
            Ok((direct.pair(route).await?, vec![relay]))
        }
        Route::H2Reference => anyhow::bail!("the impairment scenario leaves the Go router out"),
    }
}
