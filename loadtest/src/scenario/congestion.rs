//! Scenario 9: congestion control on the impaired path. One direct quinn connection with
//! each congestion controller quinn offers (BBR, Cubic, NewReno), and one direct
//! TLS-over-TCP connection (the kernel's TCP) as the reference, at several round-trip times
//! and loss levels on the impaired network of scenario 8 ([`crate::impairment`]). Both QUIC
//! ends use the same controller and flow-control windows sized for the longest path, so the
//! figures compare controllers, not windows; TCP's buffers may grow as far
//! ([`crate::impairment::TCP_BUFFER_MAX`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use jumpstarter_tunnel::QuicTransport;

use crate::harness::Harness;
use crate::impairment::{ImpairedNet, SERVERS_IP, TCP_BUFFER_MAX};
use crate::progress::step;
use crate::report::{Cell, Row, Scenario};
use crate::route::{Fabric, Route};
use crate::scenario::impairment::impaired_pair;
use crate::transfer::timed;

pub(crate) const KEY: &str = "congestion";
/// The plot: MiB/s against loss, one line per controller and round trip.
const PLOT: &str = "congestion";
/// Row name prefixes.
const QUIC: &str = "QUIC direct";
const TCP: &str = "TLS/TCP direct";
/// Column of the congestion controller's name.
pub(crate) const CONGESTION: &str = "congestion";
/// Column of a QUIC row's MiB/s divided by the TLS/TCP row's of the same path.
pub(crate) const RATIO: &str = "ratio to TLS/TCP";

/// The controllers compared: every one quinn offers.
pub(crate) use jumpstarter_tunnel::Congestion as Controller;

/// The transport of both QUIC ends with `controller`: the project's transport settings
/// (keep-alive, idle timeout) with the windows above and the controller replaced.
pub(crate) fn transport(controller: Controller) -> quinn::TransportConfig {
    QuicTransport {
        congestion: controller,
        ..path_transport()
    }
    .to_quinn()
}

/// Flow-control windows of both QUIC ends: a 100 ms × 1 Gbit/s path holds 12.5 MB in
/// flight, so a 16 MiB stream window and 32 MiB connection receive and send windows never
/// limit a single transfer on the paths measured here. They are the project's defaults,
/// set here explicitly so that this comparison does not depend on them.
fn path_transport() -> QuicTransport {
    const MIB: u64 = 1024 * 1024;
    QuicTransport {
        stream_receive_window: 16 * MIB,
        receive_window: 32 * MIB,
        send_window: 32 * MIB,
        ..QuicTransport::default()
    }
}

/// Row name: `<route> <controller> at <rtt> ms, <loss> % loss` (TLS/TCP without a
/// controller: it is the kernel's).
pub(crate) fn row_name(controller: Option<Controller>, rtt_ms: u64, loss: f64) -> String {
    match controller {
        Some(c) => format!("{QUIC} {} at {rtt_ms} ms, {loss} % loss", c.name()),
        None => format!("{TCP} at {rtt_ms} ms, {loss} % loss"),
    }
}

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(9, KEY, "Congestion control on the impaired path");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let rtts = &h.sizes.congestion_rtts_ms;
    let first = *rtts.first().context("no round-trip time to measure")?;
    let seconds = h.sizes.congestion_seconds;
    s.note(format!(
        "The impaired network of scenario 8 (two network namespaces, a user-space delay line \
         between their TUN devices, nftables loss in both directions), here with the delay \
         line's round trip set per row and no router: one direct connection per row, peers \
         namespace to servers namespace. QUIC: one quinn connection, both ends with the \
         row's congestion controller, stream receive window {} MiB, connection receive \
         window {} MiB, send window {} MiB. TLS/TCP: one TLS-over-TCP connection with the \
         kernel's congestion control. Each row: a fresh connection, then {seconds} s of \
         client → exporter data sent without pause; MiB/s = bytes the exporter had checked \
         when the time was up / {seconds} s (slow start included, what was still in flight \
         not counted, the connection then dropped). `{RATIO}`: the QUIC row's MiB/s divided \
         by the TLS/TCP row's of the same round trip and loss, measured just before it.",
        path_transport().stream_receive_window >> 20,
        path_transport().receive_window >> 20,
        path_transport().send_window >> 20,
    ));
    let net = ImpairedNet::start(one_way(first)).context("building the impaired network")?;
    s.note(format!(
        "TCP in both namespaces (raised by the load test to a {} MiB maximum buffer, so \
         that autotuning can cover the longest path): {}.",
        TCP_BUFFER_MAX >> 20,
        net.tcp_settings()
    ));
    let result = measure_on(h, s, &net).await;
    let (carried, overflowed) = net.line_counts();
    s.note(format!(
        "The delay line carried {carried} packets; {overflowed} were dropped for a full queue \
         (not counted in `dropped`)."
    ));
    drop(net);
    result
}

async fn measure_on(h: &Harness, s: &mut Scenario, net: &ImpairedNet) -> anyhow::Result<()> {
    // One set of direct servers per controller, in the servers namespace; no router here.
    let no_router = SocketAddr::from((SERVERS_IP, 0));
    let mut fabrics = Vec::new();
    for controller in Controller::ALL {
        let fabric = net
            .servers
            .run(
                "starting the baseline servers in the servers namespace",
                Fabric::new_with(
                    h.lab.clone(),
                    no_router,
                    SERVERS_IP.into(),
                    transport(controller),
                ),
            )
            .await?;
        fabrics.push((controller, fabric));
    }
    let tcp_congestion = format!("{} (kernel)", net.tcp_congestion()?);
    let duration = Duration::from_secs_f64(h.sizes.congestion_seconds);
    let mut seed = 2000;
    for &rtt in &h.sizes.congestion_rtts_ms {
        net.set_one_way(one_way(rtt));
        for &loss in &h.sizes.congestion_losses {
            net.set_loss(loss)?;
            let mut dropped_before = 0;
            let mut reference = None;
            let runs = std::iter::once((None, &fabrics[0].1))
                .chain(fabrics.iter().map(|(c, f)| (Some(*c), f)));
            for (controller, fabric) in runs {
                let name = row_name(controller, rtt, loss);
                step(format!("congestion: {name}"));
                seed += 1;
                let route = match controller {
                    Some(_) => Route::QuicDirect,
                    None => Route::H2Direct,
                };
                let pair = impaired_pair(net, fabric, route).await?;
                let transfer = timed(pair, seed, duration)
                    .await
                    .with_context(|| format!("{name}: transfer"))?;
                // Let what the dropped connection still had on the line go by.
                tokio::time::sleep(2 * net.one_way() + Duration::from_millis(100)).await;
                let total = net.dropped()?;
                let dropped = total - dropped_before;
                dropped_before = total;
                let mib_s = transfer.mib_per_s();
                let mut row = Row::new(&name)
                    .num("RTT ms", rtt as f64)
                    .num("loss %", loss);
                row.values.push(Cell::single(
                    CONGESTION,
                    Value::String(
                        controller.map_or_else(|| tcp_congestion.clone(), |c| c.name().to_owned()),
                    ),
                ));
                row = row.num("MiB/s", mib_s).num("dropped", dropped as f64);
                match controller {
                    None => reference = Some(mib_s),
                    Some(_) => {
                        if let Some(tcp) = reference.filter(|&t| t > 0.0) {
                            row = row.num(RATIO, mib_s / tcp);
                        }
                    }
                }
                s.row(row);
                let line = match controller {
                    Some(c) => format!("QUIC {} at {rtt} ms", c.name()),
                    None => format!("TLS/TCP at {rtt} ms"),
                };
                s.point(PLOT, &line, (loss, mib_s));
            }
            // Checked per loss level, not per row: a short row on a slow path sends few
            // packets, and may lose none by chance.
            if loss > 0.0 && dropped_before == 0 {
                bail!(
                    "{rtt} ms, {loss} % loss: the kernel dropped no packet (the loss rules did \
                     not apply)"
                );
            }
        }
    }
    Ok(())
}

/// The one-way delay of a round trip of `rtt_ms`.
fn one_way(rtt_ms: u64) -> Duration {
    Duration::from_millis(rtt_ms) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_name_route_controller_round_trip_and_loss() {
        assert_eq!(
            row_name(Some(Controller::NewReno), 150, 5.0),
            "QUIC direct new-reno at 150 ms, 5 % loss"
        );
        assert_eq!(row_name(None, 20, 0.0), "TLS/TCP direct at 20 ms, 0 % loss");
        assert_eq!(one_way(150), Duration::from_millis(75));
    }

    #[test]
    fn every_controller_has_its_flag_name() {
        let names: Vec<&str> = Controller::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["bbr", "cubic", "new-reno"]);
    }
}
