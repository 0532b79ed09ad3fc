//! Scenario 6: router restart. Simulated exporters hold connections to a router process
//! and reconnect when they lose them; the router is stopped (SIGTERM, then SIGKILL) and
//! started again on the same ports; measured: time until every exporter is connected to
//! the new process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use jumpstarter_certs::Role;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

use crate::harness::Harness;
use crate::progress::step;
use crate::report::{Row, Scenario};
use crate::route::Fabric;
use crate::swarm::Swarm;

pub(crate) const KEY: &str = "restart";

/// A reconnect attempt gives up after this, then tries again after [`RETRY_PAUSE`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longer than the QUIC idle timeout (30 s), after which a crashed router's peers would
/// notice at the latest without a stateless reset.
const COME_BACK_LIMIT: Duration = Duration::from_secs(75);

pub(crate) async fn run(h: &Harness) -> Scenario {
    let mut s = Scenario::new(6, KEY, "Router restart");
    if let Err(e) = measure(h, &mut s).await {
        s.fail(&e);
    }
    s
}

/// When each simulated exporter last connected, in ns since `base`.
#[derive(Debug)]
struct Board {
    base: Instant,
    connected_at: Vec<AtomicU64>,
}

impl Board {
    fn mark(&self, i: usize) {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.connected_at[i].store(now.max(1), Ordering::Relaxed);
    }

    /// Connected after `since` (ns since base): how many, and the latest connect time.
    fn since(&self, since: u64) -> (usize, u64) {
        self.connected_at
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .filter(|&t| t > since)
            .fold((0, 0), |(n, last), t| (n + 1, last.max(t)))
    }
}

async fn measure(h: &Harness, s: &mut Scenario) -> anyhow::Result<()> {
    let n = h.sizes.restart_connections;
    s.note(format!(
        "{n} simulated exporters per protocol on a router process of their own. Each \
         reconnects when it loses its connection: attempts time out after {ATTEMPT_TIMEOUT:?} \
         and are retried after {RETRY_PAUSE:?}. The router runs with --drain-timeout 0, so \
         SIGTERM closes connections at once. After SIGKILL, TCP peers get a reset from the \
         kernel, and QUIC peers a stateless reset from the new process at their next packet \
         (keep-alive every 10 s): it derives reset tokens and connection ids from its key, \
         as the old one did. Timed from the signal \
         to the last exporter connected to the new process (the new process is started \
         right after the old one exited)."
    ));
    if !h.sizes.restart_kill {
        s.note("This preset stops the router with SIGTERM only (no SIGKILL).");
    }
    for quic in [true, false] {
        let protocol = if quic { "QUIC" } else { "h2" };
        let mut router = h.fresh_router().await?;
        let board = Arc::new(Board {
            base: Instant::now(),
            connected_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        });
        let swarm = Arc::new(Swarm::new(h.lab.clone(), router.quic, 8)?);
        let fabric = h.fabric.with_router(router.h2);
        step(format!("restart: {n} {protocol} exporters connecting"));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let board = board.clone();
            tasks.push(if quic {
                tokio::spawn(quic_exporter(i, swarm.clone(), h.lab.fresh("r"), board))
            } else {
                tokio::spawn(h2_exporter(i, fabric.clone(), board))
            });
        }
        wait_all(&board, 0, n, COME_BACK_LIMIT).await?;
        let modes: &[bool] = if h.sizes.restart_kill {
            &[false, true]
        } else {
            &[false]
        };
        for &kill in modes {
            let signal = if kill { "SIGKILL" } else { "SIGTERM" };
            step(format!("restart: {protocol}, {signal}"));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t0 = Instant::now();
            let since = u64::try_from(board.base.elapsed().as_nanos()).unwrap_or(0);
            router.stop(kill).await?;
            router.spawn().await?;
            let restarted = t0.elapsed();
            let last = wait_all(&board, since, n, COME_BACK_LIMIT).await?;
            let back = Duration::from_nanos(last.saturating_sub(since));
            s.row(
                Row::new(format!("{protocol}, {signal}"))
                    .num("exporters", n as f64)
                    .num("all back s", back.as_secs_f64())
                    .num("router restart s", restarted.as_secs_f64()),
            );
        }
        for task in tasks {
            task.abort();
        }
    }
    Ok(())
}

/// Waits until all `n` connected after `since`; returns the latest connect time.
async fn wait_all(board: &Board, since: u64, n: usize, limit: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    loop {
        let (count, last) = board.since(since);
        if count >= n {
            return Ok(last);
        }
        if Instant::now() > deadline {
            bail!("only {count} of {n} exporters connected within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn quic_exporter(i: usize, swarm: Arc<Swarm>, lease: String, board: Arc<Board>) {
    loop {
        if let Ok(Ok(connection)) =
            tokio::time::timeout(ATTEMPT_TIMEOUT, swarm.connect(&lease, Role::Exporter)).await
        {
            board.mark(i);
            connection.closed().await;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// An h2 exporter: a TLS connection to the router holding one stream that waits for a
/// peer (as an exporter waits for its client); reconnects when the stream fails.
async fn h2_exporter(i: usize, fabric: Fabric, board: Arc<Board>) {
    loop {
        if let Ok(Ok(channel)) = tokio::time::timeout(ATTEMPT_TIMEOUT, fabric.h2_channel()).await {
            board.mark(i);
            let waiting = async {
                let lease = fabric.lab.fresh("r");
                let token = fabric.lab.router_token(&lease, &fabric.lab.fresh("w"))?;
                let (_tx, rx) = tokio::sync::mpsc::channel(1);
                let mut request = Request::new(ReceiverStream::new(rx));
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse()?);
                let mut client = jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient::new(channel);
                // Resolves only when the router ends the stream (no peer ever comes).
                let _ = client.stream(request).await;
                anyhow::Ok(())
            };
            let _ = waiting.await;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
