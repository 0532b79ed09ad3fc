//! Relaying frames between the two streams of a pair.
//!
//! Each stream is a [`Half`]: its inbound request stream, the sending end of its bounded
//! outbound [`Queue`], and a slot for its final status. One task per pair runs two pumps,
//! one per direction. A pump moves frames verbatim (each request message's bytes become the
//! response message as they are, see [`Frame`]: payload, frame type and any field unknown
//! to the router) and waits when the receiving side's queue is full, so a slow reader slows
//! its sender through HTTP/2 flow control instead of growing a buffer. A queue is bounded
//! in frames and in message bytes: a frame takes its message's size from the queue's byte
//! budget until its caller's response stream takes it out (a frame larger than the whole
//! budget takes all of it, so it waits for an empty queue). The byte counters
//! (`router_relayed_bytes_total`) count payload bytes, as they always did.
//!
//! Ending, as 0.9.0 does it: an end-of-stream on one side stops only that direction; the
//! two RPCs end with OK once both directions have ended. If a side fails or goes away,
//! both RPCs end: that side with its own error, the other with CANCELLED "peer went away".
//! When the lease ends (the router token's `lease_end`), both end with PERMISSION_DENIED.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};
use tracing::{debug, info};

use crate::frame::Frame;
use crate::metrics::{Direction, Metrics, Outcome};
use crate::refusal::Refusal;

/// The response stream tonic sends to one peer.
pub(crate) type Outbound = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

/// One stream of a pair, as the relay sees it.
#[derive(Debug)]
pub(crate) struct Half {
    inbound: Streaming<Frame>,
    outbound: Queue,
    verdict: oneshot::Sender<Status>,
}

/// The frames waiting for one caller to read them, bounded in count and in message bytes.
#[derive(Debug)]
pub(crate) struct Queue {
    frames: mpsc::Sender<Queued>,
    /// Message bytes the queue may still take.
    budget: Arc<Semaphore>,
    /// The whole budget: what one frame takes at most.
    limit: u32,
}

/// A queued frame and its share of the byte budget, given back when the caller takes it.
#[derive(Debug)]
struct Queued {
    frame: Frame,
    _bytes: OwnedSemaphorePermit,
}

/// The caller of a queue stopped reading for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

impl Queue {
    /// Queues `frame`; waits while the queue is full (in frames or bytes).
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Closed> {
        let size = u32::try_from(frame.message().len()).unwrap_or(u32::MAX);
        let bytes = tokio::select! {
            bytes = self.budget.clone().acquire_many_owned(size.min(self.limit)) => {
                // The semaphore is never closed.
                bytes.map_err(|_| Closed)?
            }
            () = self.frames.closed() => return Err(Closed),
        };
        self.frames
            .send(Queued {
                frame,
                _bytes: bytes,
            })
            .await
            .map_err(|_| Closed)
    }

    /// Resolves when the caller stopped reading for good.
    pub(crate) async fn closed(&self) {
        self.frames.closed().await;
    }
}

impl Half {
    /// Wraps an inbound stream; returns the half and the response stream for its caller.
    /// `frames` frames and `bytes` message bytes (at least one frame) may wait for the
    /// caller to read them.
    pub(crate) fn new(inbound: Streaming<Frame>, frames: usize, bytes: usize) -> (Half, Outbound) {
        let (sender, receiver) = mpsc::channel(frames.max(1));
        let limit = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        let outbound = Queue {
            frames: sender,
            budget: Arc::new(Semaphore::new(limit as usize)),
            limit,
        };
        let (verdict, final_status) = oneshot::channel();
        let half = Half {
            inbound,
            outbound,
            verdict,
        };
        (half, outbound_stream(receiver, final_status))
    }

    /// The inbound stream, the outbound queue and the final-status slot, for relays that
    /// drive a half themselves (the h2↔QUIC bridge).
    pub(crate) fn into_parts(self) -> (Streaming<Frame>, Queue, oneshot::Sender<Status>) {
        (self.inbound, self.outbound, self.verdict)
    }
}

/// Relays between `waiting` (the stream that arrived first) and `arriving` until both
/// directions end, one side breaks, `stop` is cancelled or `lease_ended` resolves.
pub(crate) async fn run(
    waiting: Half,
    arriving: Half,
    metrics: &Metrics,
    stop: &CancellationToken,
    lease_ended: impl Future<Output = ()>,
) {
    let Half {
        inbound: mut waiting_in,
        outbound: waiting_out,
        verdict: waiting_verdict,
    } = waiting;
    let Half {
        inbound: mut arriving_in,
        outbound: arriving_out,
        verdict: arriving_verdict,
    } = arriving;

    let forward = pump(
        &mut waiting_in,
        &arriving_out,
        Side::Waiting,
        Direction::WaitingToArriving,
        metrics,
    );
    let backward = pump(
        &mut arriving_in,
        &waiting_out,
        Side::Arriving,
        Direction::ArrivingToWaiting,
        metrics,
    );
    let ended = tokio::select! {
        result = futures::future::try_join(forward, backward) => result.map(|_| ()),
        () = stop.cancelled() => Err(Break::Shutdown),
        () = lease_ended => Err(Break::LeaseEnded),
    };

    let (waiting_status, arriving_status, waiting_outcome, arriving_outcome) = match ended {
        Ok(()) => {
            info!("both directions ended");
            metrics.stream_ended(Outcome::Completed);
            metrics.stream_ended(Outcome::Completed);
            return;
        }
        Err(Break::Shutdown) => {
            info!("relay stopped: the router is shutting down");
            let status = || Status::unavailable("router is shutting down");
            (
                status(),
                status(),
                Outcome::ShuttingDown,
                Outcome::ShuttingDown,
            )
        }
        Err(Break::LeaseEnded) => {
            info!("relay stopped: the lease ended");
            let status = || Refusal::LeaseEnded.status();
            (status(), status(), Outcome::LeaseEnded, Outcome::LeaseEnded)
        }
        Err(Break::Side { side, status }) => {
            info!(
                side = side.name(),
                code = ?status.code(),
                "relay ended: {}",
                status.message()
            );
            let peer = Status::cancelled("peer went away");
            match side {
                Side::Waiting => (status, peer, Outcome::Broken, Outcome::PeerGone),
                Side::Arriving => (peer, status, Outcome::PeerGone, Outcome::Broken),
            }
        }
    };
    metrics.stream_ended(waiting_outcome);
    metrics.stream_ended(arriving_outcome);
    // The final statuses go out before the queues close (when the senders drop below).
    let _ = waiting_verdict.send(waiting_status);
    let _ = arriving_verdict.send(arriving_status);
    drop((waiting_out, arriving_out));
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Waiting,
    Arriving,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Waiting => "waiting",
            Side::Arriving => "arriving",
        }
    }
}

#[derive(Debug)]
enum Break {
    /// `side` failed (its status is what it gets) or went away.
    Side {
        side: Side,
        status: Status,
    },
    Shutdown,
    LeaseEnded,
}

/// Moves frames from `from` (the stream of `side`) to the other side's queue `to` until
/// `from` ends. Fails when `from` errors or the other side stops reading for good.
async fn pump(
    from: &mut Streaming<Frame>,
    to: &Queue,
    side: Side,
    direction: Direction,
    metrics: &Metrics,
) -> Result<(), Break> {
    let other = match side {
        Side::Waiting => Side::Arriving,
        Side::Arriving => Side::Waiting,
    };
    let peer_gone = || Break::Side {
        side: other,
        status: Status::cancelled("stream went away"),
    };
    loop {
        let message = tokio::select! {
            message = from.message() => message,
            () = to.closed() => return Err(peer_gone()),
        };
        match message {
            Ok(Some(frame)) => {
                let bytes = frame.payload_len();
                if to.send(frame).await.is_err() {
                    return Err(peer_gone());
                }
                metrics.relayed(direction, bytes);
            }
            Ok(None) => {
                debug!(side = side.name(), "end of stream");
                return Ok(());
            }
            Err(status) => {
                return Err(Break::Side {
                    side,
                    status: inbound_failure(status),
                });
            }
        }
    }
}

/// The status a side gets when reading its own stream failed. tonic reports an oversized
/// message as OUT_OF_RANGE; gRPC (and 0.9.0's Go router) say RESOURCE_EXHAUSTED.
fn inbound_failure(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

/// The frames queued for one caller, then its final status if the relay set one (none
/// means OK). A frame gives its bytes back to the queue's budget as it is taken.
fn outbound_stream(
    frames: mpsc::Receiver<Queued>,
    final_status: oneshot::Receiver<Status>,
) -> Outbound {
    Box::pin(futures::stream::unfold(
        Some((frames, final_status)),
        |state| async move {
            let (mut frames, final_status) = state?;
            match frames.recv().await {
                Some(Queued { frame, .. }) => Some((Ok(frame), Some((frames, final_status)))),
                None => match final_status.await {
                    Ok(status) => Some((Err(status), None)),
                    Err(_) => None,
                },
            }
        },
    ))
}
