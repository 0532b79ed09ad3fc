//! Scenario 5: idle connections and idle sessions one router process holds, and its memory
//! per idle connection and per idle session (growth of VmRSS / count), on a fresh router
//! process per protocol; the h2 rows again on the upstream Go router when it runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use jumpstarter_certs::Role;
use tonic::transport::Channel;

use crate::harness::Harness;
use crate::pipe::{End, Sink, Source};
use crate::progress::step;
use crate::reference;
use crate::report::{Row, Scenario};
use crate::route::{Fabric, Route};
use crate::router_process::rss_of;
use crate::swarm::{Swarm, open_session};

pub(crate) const KEY: &str = "idle";
pub(crate) const QUIC_CONNECTIONS: &str = "QUIC: idle connections";
/// Memory column.
pub(crate) const PER_ITEM: &str = "router bytes each";

/// Handshakes in flight while connecting.
const CONNECTING: usize = 64;
/// Sessions per lease in the session measurements.
const SESSIONS_PER_LEASE: usize = 100;
/// How long to let the router settle before reading its memory.
const SETTLE: Duration = Duration::from_secs(1);

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(5, KEY, "Idle connections and sessions, router memory");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    s.note(
        "Each protocol on a router process of its own, started for this scenario. Memory = \
         (VmRSS of the router after − before) / count, read from /proc/<router pid>/status \
         after 1 s of quiet. Connections: each with its own lease certificate (QUIC) or TLS \
         connection (h2). Sessions: paired, one byte delivered and checked, then left open; \
         100 per lease.",
    );
    quic(h, s).await?;
    h2(h, s).await?;
    if let Some(pid) = h.reference.pid() {
        s.note(format!(
            "{go}: the same h2 counts on the Go router, the one process of the whole run \
             (it always listens on port 8083, so no second one can run beside it; after \
             scenarios 1–4 in the same run, its memory after them is the \"before\" reading, \
             and Go's collector may reuse heap freed by then, so its bytes each can come out \
             lower than on a fresh process).",
            go = reference::LABEL
        ));
        h2_reference(h, s, pid).await?;
    }
    Ok(())
}

async fn quic(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let router = h.fresh_router().await?;
    let swarm = Arc::new(Swarm::new(h.lab.clone(), router.quic, 16)?);
    let wanted = h.sizes.idle_quic_connections;
    step(format!("idle: {wanted} QUIC connections"));
    let pid = router.pid().context("the router is not running")?;
    let connections: Vec<quinn::Connection> = hold(s, pid, QUIC_CONNECTIONS, wanted, |_| {
        let swarm = swarm.clone();
        let lease = h.lab.fresh("idle");
        async move { swarm.connect(&lease, Role::Exporter).await }
    })
    .await?;

    let sessions = h.sizes.idle_quic_sessions;
    step(format!("idle: {sessions} QUIC sessions"));
    let leases = sessions.div_ceil(SESSIONS_PER_LEASE);
    let mut pairs = Vec::with_capacity(leases);
    for _ in 0..leases {
        let lease = h.lab.fresh("idle-lease");
        pairs.push(futures::try_join!(
            swarm.connect(&lease, Role::Client),
            swarm.connect(&lease, Role::Exporter)
        )?);
    }
    let opened: Vec<(End, End)> = hold(s, pid, "QUIC: idle sessions", sessions, |i| {
        let (client, exporter) = pairs[i % leases].clone();
        let id = h.lab.fresh("idle-s");
        async move {
            let (c, e) =
                futures::try_join!(open_session(&client, &id), open_session(&exporter, &id))?;
            let client = End::new(Sink::Quic(c.0), Source::Quic(c.1));
            let exporter = End::new(Sink::Quic(e.0), Source::Quic(e.1));
            deliver_one_byte(client, exporter).await
        }
    })
    .await?;
    drop(opened);
    drop(connections);
    Ok(())
}

async fn h2(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let router = h.fresh_router().await?;
    let fabric = h.fabric.with_router(router.h2);
    let pid = router.pid().context("the router is not running")?;
    let wanted = h.sizes.idle_h2_connections;
    step(format!("idle: {wanted} h2 connections"));
    let channels: Vec<Channel> = hold(s, pid, "h2: idle connections", wanted, |_| {
        let fabric = fabric.clone();
        async move { fabric.h2_channel().await }
    })
    .await?;

    let sessions = h.sizes.idle_h2_sessions;
    step(format!("idle: {sessions} h2 sessions"));
    let leases = sessions.div_ceil(SESSIONS_PER_LEASE);
    let mut pairs = Vec::with_capacity(leases);
    for _ in 0..leases {
        pairs.push(futures::try_join!(
            fabric.h2_channel(),
            fabric.h2_channel()
        )?);
    }
    let opened: Vec<(End, End)> = hold(s, pid, "h2: idle sessions", sessions, |i| {
        let (a, b) = pairs[i % leases].clone();
        let fabric: Fabric = fabric.clone();
        async move {
            let (client, exporter) = fabric.h2_session(&a, &b).await?;
            deliver_one_byte(client, exporter).await
        }
    })
    .await?;
    drop(opened);
    drop(channels);
    Ok(())
}

/// The h2 rows on the upstream Go router (process `pid`), same counts as ours.
async fn h2_reference(h: &Harness, s: &mut Scenario, pid: u32) -> anyhow::Result<()> {
    let route = Route::H2Reference;
    let fabric = &h.fabric;
    let wanted = h.sizes.idle_h2_connections;
    step(format!("idle: {wanted} h2 connections to the Go router"));
    let name = format!("{}: idle connections", reference::LABEL);
    let channels: Vec<Channel> = hold(s, pid, &name, wanted, |_| {
        let fabric = fabric.clone();
        async move { fabric.h2_channel_for(route).await }
    })
    .await?;

    let sessions = h.sizes.idle_h2_sessions;
    step(format!("idle: {sessions} h2 sessions on the Go router"));
    let leases = sessions.div_ceil(SESSIONS_PER_LEASE);
    let mut pairs = Vec::with_capacity(leases);
    for _ in 0..leases {
        pairs.push(futures::try_join!(
            fabric.h2_channel_for(route),
            fabric.h2_channel_for(route)
        )?);
    }
    let name = format!("{}: idle sessions", reference::LABEL);
    let opened: Vec<(End, End)> = hold(s, pid, &name, sessions, |i| {
        let (a, b) = pairs[i % leases].clone();
        let fabric: Fabric = fabric.clone();
        async move {
            let (client, exporter) = fabric.h2_session_for(route, &a, &b).await?;
            deliver_one_byte(client, exporter).await
        }
    })
    .await?;
    drop(opened);
    drop(channels);
    Ok(())
}

/// Sends one byte client → exporter and checks it; returns the (open) ends.
async fn deliver_one_byte(mut client: End, mut exporter: End) -> anyhow::Result<(End, End)> {
    client.sink.send(Bytes::from_static(b"i")).await?;
    let mut byte = BytesMut::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        exporter.source.recv_exact(1, &mut byte),
    )
    .await
    .context("the session was not paired in time")??;
    let ok = byte[..] == b"i"[..];
    crate::payload::record_check(ok);
    anyhow::ensure!(ok, "integrity: the byte changed");
    Ok((client, exporter))
}

/// Opens `wanted` items with `open` ([`CONNECTING`] at a time; failures are counted, not
/// kept) between two readings of the settled memory of router process `pid`, and records
/// the row `name`.
async fn hold<T, E, F, Fut>(
    s: &mut Scenario,
    pid: u32,
    name: &str,
    wanted: usize,
    open: F,
) -> anyhow::Result<Vec<T>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let before = settled_rss(pid).await?;
    let held: Vec<T> = futures::stream::iter(0..wanted)
        .map(open)
        .buffer_unordered(CONNECTING)
        .filter_map(|c| async move { c.ok() })
        .collect()
        .await;
    let after = settled_rss(pid).await?;
    record(s, name, wanted, held.len(), before, after);
    Ok(held)
}

async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    tokio::time::sleep(SETTLE).await;
    rss_of(pid)
}

fn record(s: &mut Scenario, name: &str, wanted: usize, held: usize, before: u64, after: u64) {
    let per = (after.saturating_sub(before)) as f64 / held.max(1) as f64;
    s.row(
        Row::new(name)
            .num("wanted", wanted as f64)
            .num("held", held as f64)
            .num(PER_ITEM, per)
            .num("router RSS MiB", after as f64 / 1048576.0),
    );
    if held < wanted {
        s.note(format!(
            "{name}: {} of {wanted} could not be opened.",
            wanted - held
        ));
    }
}
