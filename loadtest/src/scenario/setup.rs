//! Scenario 4: session setup. QUIC: a new stream on a warm connection → first byte at the
//! exporter. h2: Dial → Listen → both router Streams paired → first byte (through a
//! `jumpstarter serve` controller), and the router pairing alone. p50/p99 one at a time,
//! and sessions/s with several in flight.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::harness::Harness;
use crate::latency::Samples;
use crate::pipe::{End, bounded};
use crate::progress::step;
use crate::reference::{self, OURS_OVER_GO};
use crate::report::{Row, Scenario};
use crate::route::{Fabric, QuicLease, Route, h2_open, open_h2};
use crate::service::{self, Identity, Service};

pub(crate) const KEY: &str = "setup";
pub(crate) const QUIC_ROW: &str = "QUIC via router: stream on a warm connection";
const H2_WARM: &str = "Streams paired (warm TLS connections, token in hand)";
const H2_FRESH: &str = "Streams paired (new TLS connections, token in hand)";
pub(crate) const H2_DIAL_ROW: &str = "h2: Dial → Listen → Streams paired (new TLS connections)";

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(4, KEY, "Session setup");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let n = h.sizes.setups;
    let c = h.sizes.setup_concurrency;
    s.note(format!(
        "Latency: one setup at a time, from the first call until the exporter side has read \
         the client's first byte. Rate: {c} setups in flight. Every session is then closed \
         cleanly (both half-closes)."
    ));

    step(format!("setup: {QUIC_ROW} ({n})"));
    let lease = h.fabric.quic_lease().await?;
    let quic = {
        let lease = lease.clone();
        let fabric = h.fabric.clone();
        move || quic_setup(fabric.clone(), lease.clone())
    };
    measure_row(s, QUIC_ROW, n, c, quic).await?;

    step(format!("setup: QUIC direct ({n})"));
    let direct = h.fabric.direct_quic_connection().await?;
    let quic_direct = {
        let fabric = h.fabric.clone();
        move || direct_setup(fabric.clone(), direct.clone())
    };
    measure_row(
        s,
        "QUIC direct: stream on a warm connection",
        n,
        c,
        quic_direct,
    )
    .await?;

    let h2_n = (n / 4).max(5);
    let mut h2_routes = vec![Route::H2Router];
    if h.fabric.has_reference() {
        h2_routes.push(Route::H2Reference);
    }
    for route in h2_routes {
        step(format!("setup: {} pairing ({h2_n})", route.label()));
        let ours =
            |kind: &str| (route == Route::H2Reference).then(|| h2_row(Route::H2Router, kind));
        let (a, b) = futures::try_join!(
            h.fabric.h2_channel_for(route),
            h.fabric.h2_channel_for(route)
        )?;
        let warm = {
            let fabric = h.fabric.clone();
            move || h2_pair_setup(fabric.clone(), route, Some((a.clone(), b.clone())))
        };
        let name = h2_row(route, H2_WARM);
        measure_row(s, &name, h2_n, c, warm).await?;
        compare(s, &name, ours(H2_WARM).as_deref());
        let fresh = {
            let fabric = h.fabric.clone();
            move || h2_pair_setup(fabric.clone(), route, None)
        };
        let name = h2_row(route, H2_FRESH);
        measure_row(s, &name, h2_n, c, fresh).await?;
        compare(s, &name, ours(H2_FRESH).as_deref());
    }

    let dials = h.sizes.h2_dials;
    step(format!("setup: {H2_DIAL_ROW} ({dials})"));
    let dial = DialPath::start(h).await?;
    let dial_c = c.min(DIAL_IN_FLIGHT);
    let dial_run = {
        let dial = dial.clone();
        move || dial.clone().setup()
    };
    measure_row(s, H2_DIAL_ROW, dials, dial_c, dial_run).await?;
    dial.stop();
    if let (Some(quic), Some(h2)) = (
        s.figure(QUIC_ROW, "p50 ms"),
        s.figure(H2_DIAL_ROW, "p50 ms"),
    ) {
        s.note(format!(
            "QUIC setup on a warm connection is {:.0}× faster (p50) than the h2 Dial path.",
            h2 / quic
        ));
    }
    if h.fabric.has_reference() {
        s.note(format!(
            "{}: the Go router's Dial path needs its own controller, so only its router \
             pairing is measured, like ours in the rows above (token in hand). {OURS_OVER_GO} \
             p50: our p50 / the Go router's; {OURS_OVER_GO} sessions/s: our rate / its rate.",
            reference::LABEL
        ));
    }
    s.note(format!(
        "The h2 Dial path runs against `jumpstarter serve` (controller and its h2 router in one \
         process, one simulated exporter listening on the lease); rate with {dial_c} in flight \
         (the controller's listen queue holds 8)."
    ));
    Ok(())
}

/// Row name of an h2 pairing measurement through `route`'s router.
fn h2_row(route: Route, kind: &str) -> String {
    format!("{}: {kind}", route.label())
}

/// Adds the ours/Go columns to the Go router's row `name`, compared with our row `ours`.
fn compare(s: &mut Scenario, name: &str, ours: Option<&str>) {
    let Some(ours) = ours else { return };
    let ratios: Vec<(String, f64)> = ["p50 ms", "sessions/s"]
        .into_iter()
        .filter_map(|column| {
            let ratio = s.figure(ours, column)? / s.figure(name, column)?;
            let short = column.trim_end_matches(" ms");
            Some((format!("{OURS_OVER_GO} {short}"), ratio))
        })
        .collect();
    if let Some(row) = s.rows.iter_mut().find(|r| r.name == name) {
        for (key, ratio) in ratios {
            *row = std::mem::replace(row, Row::new("")).num(&key, ratio);
        }
    }
}

/// Dials in flight at most: the controller's per-lease listen queue holds 8.
const DIAL_IN_FLIGHT: usize = 6;

/// Runs `once` `n` times one by one (latency), then `n` times with `c` in flight (rate).
async fn measure_row<F, Fut>(
    s: &mut Scenario,
    name: &str,
    n: u64,
    c: usize,
    once: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    let mut samples = Samples::new();
    for _ in 0..n {
        samples.record(once().await?);
    }
    let start = Instant::now();
    let mut runs = futures::stream::iter(0..n)
        .map(|_| tokio::spawn(once()))
        .buffer_unordered(c.max(1));
    while let Some(result) = runs.next().await {
        result.context("setup task")??;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let summary = samples.summary();
    s.row(
        Row::new(name)
            .num("p50 ms", summary.p50_us / 1000.0)
            .num("p99 ms", summary.p99_us / 1000.0)
            .num("sessions/s", rate)
            .num("count", n as f64),
    );
    Ok(())
}

/// Writes one byte from the client, reads it at the exporter, then closes both ways.
async fn first_byte(client: End, exporter: End, start: Instant) -> anyhow::Result<Duration> {
    let End {
        sink: mut c_sink,
        source: mut c_source,
    } = client;
    let End {
        sink: mut e_sink,
        source: mut e_source,
    } = exporter;
    c_sink.send(Bytes::from_static(b"!")).await?;
    let mut byte = BytesMut::new();
    e_source.recv_exact(1, &mut byte).await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(byte[..] == b"!"[..], "integrity: the first byte changed");
    let closing = async {
        c_sink.finish().await?;
        e_sink.finish().await?;
        while e_source.recv().await?.is_some() {}
        while c_source.recv().await?.is_some() {}
        e_source.close().await?;
        c_source.close().await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .context("closing the session")??;
    crate::payload::record_check(true);
    Ok(elapsed)
}

async fn quic_setup(fabric: Fabric, lease: QuicLease) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (client, exporter) = lease.session(&fabric.lab.fresh("s")).await?;
    first_byte(client, exporter, start).await
}

async fn direct_setup(
    fabric: Fabric,
    connection: crate::route::DirectQuic,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let (client, exporter) = fabric.direct_quic_session(&connection).await?;
    first_byte(client, exporter, start).await
}

async fn h2_pair_setup(
    fabric: Fabric,
    route: Route,
    warm: Option<(Channel, Channel)>,
) -> anyhow::Result<Duration> {
    // Token in hand: minting it is the controller's work, not the router's.
    let token = fabric.h2_token(route)?;
    let start = Instant::now();
    let (a, b) = match warm {
        Some(channels) => channels,
        None => futures::try_join!(fabric.h2_channel_for(route), fabric.h2_channel_for(route))?,
    };
    let (client, exporter) = h2_open(&a, &b, &token).await?;
    first_byte(client, exporter, start).await
}

/// A controller with one lease held by a client and one simulated exporter that answers
/// every Listen message by opening its router stream.
#[derive(Debug, Clone)]
struct DialPath {
    service: Arc<Service>,
    controller: Channel,
    client: Identity,
    lease: String,
    /// Exporter ends by router token, for the client side to pick up.
    arrivals: Arrivals,
    listener: Arc<tokio::task::JoinHandle<()>>,
}

/// Arrivals by stream id: the client's and the exporter's router tokens differ (one per
/// role) but name the same stream.
type Arrivals = Arc<Mutex<HashMap<String, Arrival>>>;

/// The stream id (`sub`) a router token names, read without verifying it (the router
/// does that); a token that cannot be read stands for itself.
fn stream_of(token: &str) -> String {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: String,
    }
    token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<Claims>(&json).ok())
        .map_or_else(|| token.to_owned(), |claims| claims.sub)
}

/// The exporter side of a dialed session, by router token: the Dial caller may ask for
/// it before or after the simulated exporter has opened it.
#[derive(Debug)]
enum Arrival {
    /// The Dial caller waits for it.
    Wanted(oneshot::Sender<anyhow::Result<End>>),
    /// The exporter opened it first.
    Opened(anyhow::Result<End>),
}

impl DialPath {
    async fn start(h: &Harness) -> anyhow::Result<DialPath> {
        let mut service = Service::start(&h.standalone_bin, &h.work, "setup-service").await?;
        let client = service.create("clients", "dialer", &[]).await?;
        let exporter = service
            .create("exporters", "board", &[("pool", "dial")])
            .await?;
        let controller = service.channel().await?;
        service::bring_online(&controller, &exporter, pb::ExporterStatus::Available).await?;
        let lease = service::create_lease(&controller, &client, "pool=dial").await?;
        service::wait_ready(
            &controller,
            &client,
            &lease,
            Duration::from_millis(20),
            Duration::from_secs(30),
        )
        .await?;
        service::report_status(&controller, &exporter, pb::ExporterStatus::LeaseReady).await?;
        let lease = service::short_name(&lease).to_owned();
        let service = Arc::new(service);
        let arrivals: Arrivals = Arc::default();
        let mut listen = ControllerServiceClient::new(controller.clone())
            .listen(service::authed(
                &exporter,
                pb::ListenRequest {
                    lease_name: lease.clone(),
                },
            )?)
            .await
            .context("Listen")?
            .into_inner();
        let listener = tokio::spawn({
            let service = service.clone();
            let arrivals = arrivals.clone();
            async move {
                while let Ok(Some(message)) = listen.message().await {
                    let service = service.clone();
                    let arrivals = arrivals.clone();
                    tokio::spawn(async move {
                        let end = async {
                            let channel = service.router_channel(&message.router_endpoint).await?;
                            open_h2(channel, &message.router_token).await
                        }
                        .await;
                        if let Ok(mut arrivals) = arrivals.lock() {
                            match arrivals.remove(&stream_of(&message.router_token)) {
                                Some(Arrival::Wanted(waiter)) => {
                                    let _ = waiter.send(end);
                                }
                                _ => {
                                    arrivals.insert(
                                        stream_of(&message.router_token),
                                        Arrival::Opened(end),
                                    );
                                }
                            }
                        }
                    });
                }
            }
        });
        Ok(DialPath {
            service,
            controller,
            client,
            lease,
            arrivals,
            listener: Arc::new(listener),
        })
    }

    /// One Dial until the exporter has the client's first byte.
    async fn setup(self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let request = service::authed(
            &self.client,
            pb::DialRequest {
                lease_name: self.lease.clone(),
            },
        )?;
        let mut controller = ControllerServiceClient::new(self.controller.clone());
        let dialed = bounded("Dial", async {
            Ok(controller.dial(request).await.context("Dial")?.into_inner())
        })
        .await?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut arrivals) = self.arrivals.lock() {
            match arrivals.remove(&stream_of(&dialed.router_token)) {
                Some(Arrival::Opened(end)) => {
                    let _ = tx.send(end);
                }
                _ => {
                    arrivals.insert(stream_of(&dialed.router_token), Arrival::Wanted(tx));
                }
            }
        }
        let channel = self.service.router_channel(&dialed.router_endpoint).await?;
        let client_end = open_h2(channel, &dialed.router_token);
        let exporter_end = async {
            tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .context("the exporter never got the Listen message")?
                .context("the exporter side went away")?
        };
        let (client, exporter) = futures::try_join!(client_end, exporter_end)?;
        first_byte(client, exporter, start).await
    }

    fn stop(&self) {
        self.listener.abort();
    }
}
