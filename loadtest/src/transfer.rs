//! Bulk transfers and round trips over a session [`Pair`], every byte checked end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;

use crate::latency::{Samples, Summary};
use crate::payload::{BLOCK, Pattern, record_check};
use crate::pipe::End;
use crate::route::Pair;

/// How much a bulk transfer sends: `bytes`, unless `time` runs out or `stop` is set first.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) bytes: u64,
    pub(crate) time: Duration,
    pub(crate) stop: Option<Arc<AtomicBool>>,
}

impl Budget {
    pub(crate) fn bytes(bytes: u64) -> Budget {
        Budget {
            bytes,
            time: Duration::from_secs(300),
            stop: None,
        }
    }
}

/// The outcome of one bulk transfer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
}

impl Transfer {
    pub(crate) fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Client → exporter bulk transfer of `seed`'s pattern; the exporter checks every byte.
/// Timed from the first send until the exporter has checked the last byte.
pub(crate) async fn bulk(pair: Pair, seed: u64, budget: Budget) -> anyhow::Result<Transfer> {
    let Pair {
        client,
        exporter,
        keep,
    } = pair;
    let pattern = Pattern::new(seed);
    let start = Instant::now();
    let sender = tokio::spawn(send_pattern(client, pattern.clone(), budget, start));
    let receiver = tokio::spawn(async move {
        let End {
            mut sink,
            mut source,
        } = exporter;
        let mut verifier = pattern.verifier();
        while let Some(chunk) = source.recv().await? {
            verifier.feed(&chunk)?;
        }
        let elapsed = start.elapsed();
        sink.finish().await?;
        source.close().await?;
        anyhow::Ok((verifier.received(), elapsed))
    });
    let sent = sender.await.context("sender task")?;
    let received = receiver.await.context("receiver task")?;
    drop(keep);
    let (sent, (received, elapsed)) = match (sent, received) {
        (Ok(sent), Ok(received)) => (sent, received),
        (Err(e), _) | (_, Err(e)) => {
            record_check(false);
            return Err(e);
        }
    };
    record_check(sent == received);
    if sent != received {
        bail!("integrity: sent {sent} bytes, {received} arrived");
    }
    Ok(Transfer {
        bytes: received,
        elapsed,
    })
}

/// Client → exporter transfer for `duration` of `seed`'s pattern, sent without pause; the
/// exporter checks every byte that arrives. Counted: the bytes the exporter has checked
/// when `duration` has passed since the first send. The session is then dropped (its
/// connections closed) without draining what is still in flight, so that a slow path
/// (high loss, long round trip, a large send window) costs no more than `duration`.
pub(crate) async fn timed(pair: Pair, seed: u64, duration: Duration) -> anyhow::Result<Transfer> {
    let Pair {
        client,
        exporter,
        keep,
    } = pair;
    let pattern = Pattern::new(seed);
    let mut verifier = pattern.verifier();
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + duration);
    let sender = tokio::spawn(send_forever(client, pattern));
    let End {
        sink: _kept_open,
        mut source,
    } = exporter;
    let checked = loop {
        match tokio::time::timeout_at(deadline, source.recv()).await {
            // Time is up.
            Err(_) => break Ok(()),
            Ok(Ok(Some(chunk))) => {
                if let Err(e) = verifier.feed(&chunk) {
                    break Err(e);
                }
            }
            Ok(Ok(None)) => break Err(anyhow::anyhow!("the session ended before the time was up")),
            Ok(Err(e)) => break Err(e),
        }
    };
    let failed = if sender.is_finished() {
        match sender.await {
            Ok(Err(e)) => Some(e.context("sending")),
            Ok(Ok(())) => None,
            Err(e) => Some(anyhow::Error::from(e).context("sender task")),
        }
    } else {
        sender.abort();
        None
    };
    drop(keep);
    let outcome = match (checked, failed) {
        (Err(e), _) | (Ok(()), Some(e)) => Err(e),
        (Ok(()), None) => Ok(Transfer {
            bytes: verifier.received(),
            elapsed: duration,
        }),
    };
    record_check(outcome.is_ok());
    outcome
}

/// Sends `pattern`'s blocks until a send fails (or the task is aborted).
async fn send_forever(client: End, pattern: Pattern) -> anyhow::Result<()> {
    let End {
        mut sink,
        source: _kept_open,
    } = client;
    let mut index = 0u64;
    loop {
        sink.send(pattern.block(index)).await?;
        index += 1;
    }
}

async fn send_pattern(
    End {
        mut sink,
        mut source,
    }: End,
    pattern: Pattern,
    budget: Budget,
    start: Instant,
) -> anyhow::Result<u64> {
    let deadline = start + budget.time;
    let stopped = || {
        budget
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    };
    let mut sent = 0u64;
    let mut index = 0u64;
    while sent < budget.bytes && Instant::now() < deadline && !stopped() {
        let len = usize::try_from(budget.bytes - sent).map_or(BLOCK, |left| left.min(BLOCK));
        sink.send(pattern.block(index).slice(..len)).await?;
        sent += len as u64;
        index += 1;
    }
    sink.finish().await?;
    // The exporter half-closes once it has checked everything.
    while source.recv().await?.is_some() {}
    source.close().await?;
    Ok(sent)
}

/// `count` round trips of `size`-byte messages after `warmup` unrecorded ones; the
/// exporter echoes, the client checks each answer.
pub(crate) async fn round_trips(
    pair: Pair,
    seed: u64,
    size: usize,
    warmup: u64,
    count: u64,
) -> anyhow::Result<Samples> {
    let Pair {
        client,
        exporter,
        keep,
    } = pair;
    let echo = tokio::spawn(exporter.echo());
    let pattern = Pattern::new(seed);
    let End {
        mut sink,
        mut source,
    } = client;
    let mut samples = Samples::new();
    let mut answer = BytesMut::with_capacity(size);
    let result = async {
        for index in 0..warmup + count {
            let message = pattern.message(index, size);
            let start = Instant::now();
            sink.send(message.clone()).await?;
            source.recv_exact(size, &mut answer).await?;
            let elapsed = start.elapsed();
            if answer[..] != message[..] {
                bail!("integrity: round trip {index} came back different");
            }
            if index >= warmup {
                samples.record(elapsed);
            }
        }
        sink.finish().await?;
        while source.recv().await?.is_some() {}
        source.close().await?;
        anyhow::Ok(())
    }
    .await;
    let echoed = echo.await.context("echo task")?;
    drop(keep);
    let ok = result.is_ok() && echoed.is_ok();
    record_check(ok);
    result?;
    echoed?;
    Ok(samples)
}

/// Percentiles of round trips.
pub(crate) async fn round_trip_summary(
    pair: Pair,
    seed: u64,
    warmup: u64,
    count: u64,
) -> anyhow::Result<Summary> {
    Ok(round_trips(pair, seed, 64, warmup, count).await?.summary())
}
