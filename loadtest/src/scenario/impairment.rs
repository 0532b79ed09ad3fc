//! Scenario 8: throughput and round-trip latency under impairment: 50 ms round trip per
//! hop (25 ms each way) and 0/1/5 % loss, through the router and direct, QUIC and h2. The
//! peers and the servers sit in two network namespaces joined by a packet-level delay
//! line; the kernel drops packets (see [`crate::impairment`]).

use std::time::Duration;

use anyhow::{Context, bail};

use crate::harness::Harness;
use crate::impairment::{self, ImpairedNet, PEERS_IP, SERVERS_IP};
use crate::progress::step;
use crate::report::{Row, Scenario};
use crate::route::{Fabric, Pair, Route};
use crate::router_process::RouterProcess;
use crate::transfer::{round_trip_summary, timed};

pub(crate) const KEY: &str = "impairment";
const ONE_WAY: Duration = Duration::from_millis(25);
const ROUTES: [Route; 4] = [
    Route::QuicDirect,
    Route::QuicRouter,
    Route::H2Direct,
    Route::H2Router,
];

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
        "Kernel impairment: {netem}. So the impairment is made this way: the peers (clients \
         and exporters, QUIC and h2) run in one network namespace, the router process and the \
         direct baseline servers in another; each namespace has a TUN device ({PEERS_IP}/24 \
         and {SERVERS_IP}/24) and a user-space delay line copies every IP packet from one TUN \
         device into the other 25 ms after reading it, both ways, in order (no connection is \
         split or acknowledged on the way, so TCP and QUIC both see the real round trip). \
         Loss is the kernel's: an nftables rule in each namespace drops the given share of the \
         packets arriving from its TUN device at random (numgen random), all protocols, so \
         both directions are lossy for QUIC and for TCP (h2, TLS) alike; its counters give the \
         `dropped` column (packets dropped during the row, both transfers). Through the router \
         a session crosses the line twice (client–router, router–exporter), so its round trip \
         is about 100 ms; direct, once (about 50 ms)."
    ));
    let seconds = h.sizes.impairment_seconds;
    let count = h.sizes.impairment_round_trips;
    s.note(format!(
        "Throughput: {seconds} s of client → exporter data sent without pause, every byte \
         checked by the exporter; MiB/s = bytes checked when the time was up / {seconds} s \
         (what was still in flight is not counted and the session is then dropped, so that \
         windows sized for long paths do not leave seconds of buffered data to drain at \
         high loss). Round trips: {count} of 64 bytes after 2 unrecorded. Each on fresh \
         connections. QUIC peers and the direct quinn server use the project's default \
         transport (`jumpstarter_tunnel::quic::transport_config()`), the router its default \
         flags."
    ));
    let net = ImpairedNet::start(ONE_WAY).context("building the impaired network")?;
    let router = {
        let (binary, lab, work) = (h.router_bin.clone(), h.lab.clone(), h.work.clone());
        let netns = net.servers_namespace().to_owned();
        net.servers
            .run("starting the router in the servers namespace", async move {
                RouterProcess::start_at(&binary, &lab, &work, SERVERS_IP.into(), Some(&netns)).await
            })
            .await?
    };
    let result = measure_on(h, s, &net, router.h2).await;
    let mut router = router;
    let stopped = net
        .servers
        .run(
            "stopping the router",
            async move { router.stop(true).await },
        )
        .await;
    let (carried, overflowed) = net.line_counts();
    s.note(format!(
        "The delay line carried {carried} packets; {overflowed} were dropped for a full queue \
         (not counted in `dropped`)."
    ));
    drop(net);
    result?;
    stopped
}

async fn measure_on(
    h: &Harness,
    s: &mut Scenario,
    net: &ImpairedNet,
    router: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let fabric = net
        .servers
        .run(
            "starting the baseline servers in the servers namespace",
            Fabric::new_at(h.lab.clone(), router, SERVERS_IP.into()),
        )
        .await?;
    for (i, &loss) in h.sizes.losses.iter().enumerate() {
        net.set_loss(loss)?;
        let mut before = 0;
        for route in ROUTES {
            step(format!("impairment: {} at {loss} % loss", route.label()));
            let seed = 1000 + i as u64 * 10;
            let pair = impaired_pair(net, &fabric, route).await?;
            let transfer = timed(
                pair,
                seed,
                Duration::from_secs_f64(h.sizes.impairment_seconds),
            )
            .await
            .with_context(|| format!("{} at {loss} % loss: transfer", route.label()))?;
            // Let what the dropped session still had on the line go by.
            tokio::time::sleep(4 * ONE_WAY + Duration::from_millis(100)).await;
            let pair = impaired_pair(net, &fabric, route).await?;
            let rtt = round_trip_summary(pair, seed + 1, 2, h.sizes.impairment_round_trips)
                .await
                .with_context(|| format!("{} at {loss} % loss: round trips", route.label()))?;
            let total = net.dropped()?;
            let dropped = total - before;
            before = total;
            if loss > 0.0 && dropped == 0 {
                bail!(
                    "{} at {loss} % loss: the kernel dropped no packet (the loss rules did not \
                     apply)",
                    route.label()
                );
            }
            s.row(
                Row::new(format!("{} at {loss} % loss", route.label()))
                    .num("loss %", loss)
                    .num("MiB/s", transfer.mib_per_s())
                    .num("RTT p50 ms", rtt.p50_us / 1000.0)
                    .num("RTT p99 ms", rtt.p99_us / 1000.0)
                    .num("dropped", dropped as f64),
            );
            s.point("impairment", route.label(), (loss, transfer.mib_per_s()));
        }
    }
    Ok(())
}

/// A session pair opened from the peers namespace (its sockets live there), to the
/// router or the baseline servers in the servers namespace.
pub(crate) async fn impaired_pair(
    net: &ImpairedNet,
    fabric: &Fabric,
    route: Route,
) -> anyhow::Result<Pair> {
    let fabric = fabric.clone();
    net.peers
        .run("opening a session from the peers namespace", async move {
            fabric.pair(route).await
        })
        .await
        .with_context(|| format!("opening a {} session", route.label()))
}
