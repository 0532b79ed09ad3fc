//! A packet-level delay line between two TUN devices: every IP packet read from one is
//! written into the other a fixed one-way delay later, both directions, in order. It
//! neither splits connections nor acknowledges anything, so TCP and QUIC both see the
//! real round trip. The delay can be changed while it runs (packets read afterwards get
//! the new one; a packet never overtakes an earlier one). It runs on a thread and runtime
//! of its own, stopped when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tun::AsyncDevice;

/// Packets one direction may hold: 48 MiB of full-size packets, what 75 ms (the longest
/// one-way delay used, 150 ms RTT) carry at 650 MB/s, well above the highest rates seen
/// here; beyond it a packet is dropped like at a full router queue, and counted.
const QUEUE: usize = 32_768;
/// Read buffer: larger than any packet of the devices' MTU.
const PACKET_MAX: usize = 65_536;

/// A running delay line.
#[derive(Debug)]
pub(crate) struct DelayLine {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
    /// The one-way delay, in nanoseconds, read for every packet.
    one_way: Arc<AtomicU64>,
}

/// What the line did with the packets it read.
#[derive(Debug, Default)]
struct Counts {
    carried: AtomicU64,
    overflowed: AtomicU64,
}

impl DelayLine {
    /// Joins `a` and `b` with `one_way` of delay each way.
    pub(crate) fn start(
        a: tun::Device,
        b: tun::Device,
        one_way: Duration,
    ) -> anyhow::Result<DelayLine> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the delay line's runtime")?;
        let counts = Arc::new(Counts::default());
        let delay = Arc::new(AtomicU64::new(nanos(one_way)));
        let (a, b) = {
            let _context = runtime.enter();
            (
                Arc::new(AsyncDevice::new(a).context("TUN device a")?),
                Arc::new(AsyncDevice::new(b).context("TUN device b")?),
            )
        };
        for (from, to) in [(a.clone(), b.clone()), (b, a)] {
            let (tx, rx) = mpsc::channel(QUEUE);
            runtime.spawn(read_side(from, tx, delay.clone(), counts.clone()));
            runtime.spawn(write_side(rx, to, counts.clone()));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("delay-line".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .context("starting the delay line's thread")?;
        Ok(DelayLine {
            stop: Some(stop),
            thread: Some(thread),
            counts,
            one_way: delay,
        })
    }

    /// Changes the one-way delay of packets read from now on, both ways.
    pub(crate) fn set_one_way(&self, one_way: Duration) {
        self.one_way.store(nanos(one_way), Ordering::Relaxed);
    }

    /// The one-way delay in force.
    pub(crate) fn one_way(&self) -> Duration {
        Duration::from_nanos(self.one_way.load(Ordering::Relaxed))
    }

    /// Packets written into the other device so far.
    pub(crate) fn carried(&self) -> u64 {
        self.counts.carried.load(Ordering::Relaxed)
    }

    /// Packets dropped so far because a direction's queue was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.counts.overflowed.load(Ordering::Relaxed)
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A delay in nanoseconds (saturating: no delay here comes near 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Reads packets from `from` and queues each with the time it is due (the delay in
/// force when it was read).
async fn read_side(
    from: Arc<AsyncDevice>,
    to: mpsc::Sender<(Instant, Vec<u8>)>,
    one_way: Arc<AtomicU64>,
    counts: Arc<Counts>,
) {
    let mut buf = vec![0u8; PACKET_MAX];
    loop {
        match from.recv(&mut buf).await {
            Ok(n) => {
                let packet = buf[..n].to_vec();
                let delay = Duration::from_nanos(one_way.load(Ordering::Relaxed));
                if to.try_send((Instant::now() + delay, packet)).is_err() {
                    counts.overflowed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The device is gone (the line is stopping).
            Err(_) => return,
        }
    }
}

/// Writes each queued packet into `to` once it is due, in order.
async fn write_side(
    mut from: mpsc::Receiver<(Instant, Vec<u8>)>,
    to: Arc<AsyncDevice>,
    counts: Arc<Counts>,
) {
    while let Some((due, packet)) = from.recv().await {
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        // A packet the kernel refuses is lost like on a wire; the line goes on.
        if to.send(&packet).await.is_ok() {
            counts.carried.fetch_add(1, Ordering::Relaxed);
        }
    }
}
