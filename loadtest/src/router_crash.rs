//! Fault test: a `jumpstarter-router` process SIGKILLed while sessions stream through it
//! (QUIC with lease certificates, h2 with router tokens), and a new process started on the
//! same address. Every session's receiver checks each byte against the sender's
//! [`Pattern`], so what arrived must be an intact prefix of what was sent (nothing
//! corrupted, reordered, duplicated or taken from another session); afterwards, peers
//! reconnect to the new process and their sessions carry data intact again.
//!
//! Built from the load test's own parts: [`Lab`] (keys, certificates, tokens),
//! [`RouterProcess`] (the process, killed and respawned on its ports), [`Fabric`] (session
//! pairs) and [`transfer::bulk`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::lab::Lab;
use crate::payload::{BLOCK, Pattern};
use crate::pipe::End;
use crate::route::{Fabric, Pair, Route};
use crate::router_process::RouterProcess;
use crate::transfer::{self, Budget};

/// Concurrent sessions per protocol during the crash.
const SESSIONS: usize = 4;
/// Each session has carried at least this much before the kill, so the kill lands in
/// the middle of live transfers.
const BEFORE_KILL: u64 = 2 * 1024 * 1024;
/// How long the sessions may take to carry [`BEFORE_KILL`] each.
const WARMUP_LIMIT: Duration = Duration::from_secs(60);
/// How long a session's ends may take to notice the crash. Every send and receive is
/// bounded by the pipe's stall limit (30 s); TCP peers get a reset from the kernel at
/// once, QUIC peers a stateless reset from the new process at their next packet.
const END_LIMIT: Duration = Duration::from_secs(60);
/// How long peers may take to open sessions through the new process.
const RECONNECT_LIMIT: Duration = Duration::from_secs(30);
/// What each reconnected session carries, checked end to end.
const AFTER_BYTES: u64 = 4 * 1024 * 1024;

/// What one session's two ends saw.
#[derive(Debug, Default)]
struct Tally {
    /// Bytes the sending end handed to its transport.
    sent: AtomicU64,
    /// Bytes the receiving end checked against the pattern.
    verified: AtomicU64,
}

/// How a session's receiver ended.
#[derive(Debug)]
enum Ending {
    /// A transport error (the expected outcome of a crash).
    Broken(String),
    /// A clean end of stream.
    Finished,
}

/// Client → exporter stream of `seed`'s pattern until the session breaks. The receiver's
/// result is an error only when the bytes themselves were wrong.
async fn stream_until_broken(
    pair: Pair,
    seed: u64,
    tally: Arc<Tally>,
) -> (anyhow::Result<Ending>, Vec<crate::route::Keep>) {
    let Pair {
        client,
        exporter,
        keep,
    } = pair;
    let pattern = Pattern::new(seed);
    let sender = {
        let pattern = pattern.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let End { mut sink, .. } = client;
            let mut index = 0u64;
            // Bounded: every send fails within the pipe's stall limit once the router
            // is gone.
            while sink.send(pattern.block(index)).await.is_ok() {
                tally.sent.fetch_add(BLOCK as u64, Ordering::Relaxed);
                index += 1;
            }
        })
    };
    let receiver = async move {
        let End { mut source, .. } = exporter;
        let mut verifier = pattern.verifier();
        loop {
            match source.recv().await {
                Ok(Some(chunk)) => {
                    verifier.feed(&chunk)?;
                    tally.verified.store(verifier.received(), Ordering::Relaxed);
                }
                Ok(None) => return Ok(Ending::Finished),
                Err(e) => return Ok(Ending::Broken(format!("{e:#}"))),
            }
        }
    };
    let ending = receiver.await;
    sender.abort();
    (ending, keep)
}

/// A session pair on `route`, retried until [`RECONNECT_LIMIT`] (the new process may
/// still be starting, a QUIC peer may still hold a dead connection's state).
async fn reconnect(fabric: &Fabric, route: Route) -> anyhow::Result<(Pair, u32)> {
    let deadline = Instant::now() + RECONNECT_LIMIT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let attempt = tokio::time::timeout(Duration::from_secs(5), fabric.pair(route)).await;
        match attempt {
            Ok(Ok(pair)) => return Ok((pair, attempts)),
            Ok(Err(e)) if Instant::now() > deadline => {
                return Err(e.context(format!("no {route:?} session within {RECONNECT_LIMIT:?}")));
            }
            Err(_) if Instant::now() > deadline => {
                anyhow::bail!("no {route:?} session within {RECONNECT_LIMIT:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn router_sigkill_mid_transfer_delivers_intact_prefixes_and_peers_reconnect() {
    let work = tempfile::tempdir().expect("work dir");
    let lab = Arc::new(Lab::new(&work.path().join("pki")).expect("lab"));
    let binary = crate::workspace_binary::path("jumpstarter-router", "jumpstarter-router")
        .expect("router binary");
    let mut router = RouterProcess::start(&binary, &lab, work.path())
        .await
        .expect("start the router");
    let fabric = Fabric::new(lab.clone(), router.h2)
        .await
        .expect("session fabric");

    let routes = [Route::QuicRouter, Route::H2Router];
    let mut sessions = Vec::new();
    for route in routes {
        for i in 0..SESSIONS {
            let pair = fabric
                .pair(route)
                .await
                .expect("a session before the crash");
            let tally = Arc::new(Tally::default());
            let seed = (sessions.len() * 7919 + i + 1) as u64;
            let task = tokio::spawn(stream_until_broken(pair, seed, tally.clone()));
            sessions.push((route, tally, task));
        }
    }

    // Every session is carrying data.
    let deadline = Instant::now() + WARMUP_LIMIT;
    while sessions
        .iter()
        .any(|(_, t, _)| t.verified.load(Ordering::Relaxed) < BEFORE_KILL)
    {
        assert!(
            Instant::now() < deadline,
            "sessions did not carry {BEFORE_KILL} bytes each within {WARMUP_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed_at = Instant::now();
    router.stop(true).await.expect("SIGKILL the router");
    router
        .spawn()
        .await
        .expect("a new router on the same address");
    let restarted = killed_at.elapsed();

    let mut total_verified = 0;
    let mut broken = 0;
    for (route, tally, task) in sessions {
        let (ending, keep) = tokio::time::timeout(END_LIMIT, task)
            .await
            .unwrap_or_else(|_| {
                panic!("a {route:?} session did not end within {END_LIMIT:?} of the crash")
            })
            .expect("session task");
        drop(keep);
        let ending = ending.unwrap_or_else(|e| {
            panic!("a {route:?} session delivered bytes that were not sent: {e:#}")
        });
        let sent = tally.sent.load(Ordering::Relaxed);
        let verified = tally.verified.load(Ordering::Relaxed);
        assert!(
            verified <= sent,
            "a {route:?} session received {verified} bytes but only {sent} were sent"
        );
        assert!(verified >= BEFORE_KILL);
        if let Ending::Broken(reason) = &ending {
            broken += 1;
            println!("{route:?} session: {verified} of {sent} bytes verified, then: {reason}");
        } else {
            println!("{route:?} session: {verified} of {sent} bytes verified, then a clean end");
        }
        total_verified += verified;
    }

    // Peers come back through the new process, and their data arrives intact.
    let mut after = 0;
    for route in routes {
        for i in 0..SESSIONS {
            let (pair, attempts) = reconnect(&fabric, route)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            let seed = 10_000 + i as u64;
            let done = transfer::bulk(pair, seed, Budget::bytes(AFTER_BYTES))
                .await
                .unwrap_or_else(|e| panic!("a {route:?} session after the restart: {e:#}"));
            assert_eq!(done.bytes, AFTER_BYTES);
            after += done.bytes;
            if i == 0 {
                println!("{route:?}: first session after the restart opened at attempt {attempts}");
            }
        }
    }
    println!(
        "figure: router SIGKILL with {} live sessions ({SESSIONS} QUIC, {SESSIONS} h2): {total_verified} bytes verified intact before the crash, {broken} sessions broken, none corrupted; new process listening {:.2} s after the kill; {} sessions after it carried {after} bytes intact",
        routes.len() * SESSIONS,
        restarted.as_secs_f64(),
        routes.len() * SESSIONS,
    );
}
