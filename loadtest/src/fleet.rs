//! Simulated exporters that behave towards the controller like 0.9.0's `jmp run`: Register
//! (one device), ReportStatus(Available) once, then a `ControllerService.Status` stream
//! kept open for as long as the fleet lives (the open stream is what keeps an exporter
//! online). Many exporters share one HTTP/2 connection, each call carrying its own token
//! metadata, so that 10,000 open streams cost about a hundred TLS connections instead of
//! 10,000. Exporter `i` talks to controller `i % controllers.len()` (round-robin over the
//! replicas).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::service::{self, Identity, Service};

/// Status streams (simulated exporters) per HTTP/2 connection. The load test lifts the
/// controller's per-connection stream limit; 100 (its default limit) keeps every
/// connection within what an unmodified controller would accept anyway.
pub(crate) const STREAMS_PER_CONNECTION: usize = 100;

/// Connections opened at once (TLS handshakes in flight).
const CONNECTING: usize = 8;

/// Longest time one call (Register, ReportStatus, opening the stream) may take.
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// Pause before a simulated exporter opens its Status stream again after it ended (the
/// controller stopped or dropped it), like `jmp run` reconnecting.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// What the fleet's exporters have seen.
#[derive(Debug, Default)]
struct Counters {
    /// Status streams open now.
    open: AtomicUsize,
    /// Streams opened again after one ended.
    reopened: AtomicU64,
}

/// Simulated exporters holding Status streams; every stream is closed (its task aborted)
/// when dropped.
#[derive(Debug)]
pub(crate) struct Fleet {
    _tasks: JoinSet<()>,
    counters: Arc<Counters>,
    /// HTTP/2 connections the fleet uses, over all controllers.
    pub(crate) connections: usize,
}

impl Fleet {
    /// Brings every exporter online (Register, ReportStatus, Status stream), at most
    /// `in_flight` of them starting at once; returns when every stream is open, or fails
    /// after `limit` or at the first exporter that cannot start.
    pub(crate) async fn start(
        controllers: &[&Service],
        exporters: &[Identity],
        in_flight: usize,
        limit: Duration,
    ) -> anyhow::Result<Fleet> {
        anyhow::ensure!(!controllers.is_empty(), "no controller to connect to");
        let mut channels: Vec<Vec<Channel>> = Vec::with_capacity(controllers.len());
        let mut connections = 0;
        let replicas = controllers.len();
        for (r, controller) in controllers.iter().enumerate() {
            let wanted = connections_of(r, replicas, exporters.len());
            let opened: Vec<anyhow::Result<Channel>> = futures::stream::iter(0..wanted)
                .map(|_| controller.channel())
                .buffer_unordered(CONNECTING)
                .collect()
                .await;
            let opened = opened.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            connections += opened.len();
            channels.push(opened);
        }
        let counters = Arc::new(Counters::default());
        let starting = Arc::new(Semaphore::new(in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let mut started = Vec::with_capacity(exporters.len());
        for (i, who) in exporters.iter().enumerate() {
            let (r, c) = place(i, replicas);
            let channel = channels[r][c].clone();
            let (tx, rx) = oneshot::channel();
            tasks.spawn(exporter(
                channel,
                who.clone(),
                starting.clone(),
                tx,
                counters.clone(),
            ));
            started.push(rx);
        }
        let all = async {
            for (rx, who) in started.into_iter().zip(exporters) {
                rx.await
                    .with_context(|| format!("exporter {} stopped while starting", who.name))?
                    .with_context(|| format!("exporter {}", who.name))?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(limit, all).await.with_context(|| {
            format!(
                "{} exporters did not all come online within {}s",
                exporters.len(),
                limit.as_secs()
            )
        })??;
        Ok(Fleet {
            _tasks: tasks,
            counters,
            connections,
        })
    }

    /// Status streams open now.
    pub(crate) fn open(&self) -> usize {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// Streams opened again after one ended.
    pub(crate) fn reopened(&self) -> u64 {
        self.counters.reopened.load(Ordering::Relaxed)
    }
}

/// Where exporter `i` of a fleet over `replicas` controllers talks: (controller,
/// connection on it). Round-robin over the controllers, then
/// [`STREAMS_PER_CONNECTION`] exporters per connection.
fn place(i: usize, replicas: usize) -> (usize, usize) {
    (i % replicas, (i / replicas) / STREAMS_PER_CONNECTION)
}

/// Connections to open to controller `r` of `replicas` for `exporters` exporters: enough
/// for every [`place`] on it, at least one.
fn connections_of(r: usize, replicas: usize, exporters: usize) -> usize {
    let assigned = exporters.saturating_sub(r).div_ceil(replicas);
    assigned.div_ceil(STREAMS_PER_CONNECTION).max(1)
}

/// One simulated exporter: starts (with a place of `starting`), says how that went on
/// `started`, then holds its Status stream, opening it again whenever it ends.
async fn exporter(
    channel: Channel,
    who: Identity,
    starting: Arc<Semaphore>,
    started: oneshot::Sender<anyhow::Result<()>>,
    counters: Arc<Counters>,
) {
    let first = {
        let Ok(_place) = starting.acquire().await else {
            return;
        };
        bounded(
            "Register and ReportStatus",
            service::bring_online(&channel, &who, pb::ExporterStatus::Available),
        )
        .await
        .and(Ok(()))
    };
    let mut stream = match first {
        Ok(()) => open_stream(&channel, &who).await,
        Err(e) => Err(e),
    };
    let mut started = Some(started);
    loop {
        match stream {
            Ok(mut open) => {
                if let Some(tx) = started.take() {
                    let _ = tx.send(Ok(()));
                }
                counters.open.fetch_add(1, Ordering::Relaxed);
                while let Some(Ok(_)) = open.next().await {}
                counters.open.fetch_sub(1, Ordering::Relaxed);
            }
            Err(e) => {
                if let Some(tx) = started.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        tokio::time::sleep(REOPEN_PAUSE).await;
        counters.reopened.fetch_add(1, Ordering::Relaxed);
        stream = open_stream(&channel, &who).await;
    }
}

/// Opens the Status stream of `who` and waits for its first message (the exporter's
/// current lease state, which the controller sends at once).
async fn open_stream(
    channel: &Channel,
    who: &Identity,
) -> anyhow::Result<tonic::Streaming<pb::StatusResponse>> {
    bounded("opening the Status stream", async {
        let request = service::authed(who, pb::StatusRequest {})?;
        let mut stream = ControllerServiceClient::new(channel.clone())
            .status(request)
            .await
            .context("Status")?
            .into_inner();
        stream
            .message()
            .await
            .context("the Status stream's first message")?
            .context("the Status stream ended at once")?;
        Ok(stream)
    })
    .await
}

async fn bounded<T>(
    what: &str,
    call: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .with_context(|| format!("{what} took longer than {}s", CALL_LIMIT.as_secs()))?
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn exporters_alternate_replicas_and_fill_connections_up_to_the_limit() {
        for replicas in [1, 2, 3] {
            for exporters in [1, 10, 99, 100, 101, 1_000, 10_000, 10_001] {
                let mut per: BTreeMap<(usize, usize), usize> = BTreeMap::new();
                for i in 0..exporters {
                    let (r, c) = place(i, replicas);
                    assert_eq!(r, i % replicas);
                    assert!(
                        c < connections_of(r, replicas, exporters),
                        "{i}/{exporters}"
                    );
                    *per.entry((r, c)).or_default() += 1;
                }
                assert!(per.values().all(|&n| n <= STREAMS_PER_CONNECTION));
                let opened: usize = (0..replicas)
                    .map(|r| connections_of(r, replicas, exporters))
                    .sum();
                // No connection is opened for nothing, beyond one per idle replica.
                assert!(opened <= per.len() + replicas, "{opened} for {exporters}");
            }
        }
        assert_eq!(connections_of(0, 1, 10_000), 100);
        assert_eq!(connections_of(2, 3, 10_000), 34);
    }
}
