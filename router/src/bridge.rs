//! Relaying between an h2 `RouterService.Stream` and a QUIC session stream (mixed pairs).
//!
//! The two transports carry the same session bytes in different envelopes. The rule, which
//! the edge proxy follows too:
//!
//! | h2 (0.9.0 frames)                          | QUIC session stream            |
//! |--------------------------------------------|--------------------------------|
//! | `FRAME_TYPE_DATA` payload                  | the same bytes                 |
//! | `FRAME_TYPE_GOAWAY`, or the end of the RPC | FIN (half-close)               |
//! | `FRAME_TYPE_PING`, `FRAME_TYPE_RST_STREAM` | nothing (0.9.0 ignores them)   |
//! | the RPC fails                              | the stream is reset            |
//!
//! and back: bytes become `DATA` frames of at most [`CHUNK`] bytes, a FIN becomes an empty
//! `GOAWAY` frame. Only here does the router look into a message ([`Frame`], read when tonic
//! hands the message over: a malformed one fails the h2 side with INTERNAL before any of
//! it reaches QUIC); a payload goes to QUIC without a copy, a chunk from QUIC is copied once,
//! into its message. The h2 RPC ends with OK once both directions ended; if either side fails,
//! the other is told (`CANCELLED "peer went away"` on h2, [`code::PEER_GONE`] on QUIC). At
//! the lease's end both are ended ([`Refusal::LeaseEnded`]).

use jumpstarter_proto::jumpstarter::v1::FrameType;
use jumpstarter_tunnel::code;
use std::future::Future;

use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::{debug, info};

use crate::frame::Frame;
use crate::metrics::{Direction, Metrics, Outcome};
use crate::refusal::Refusal;
use crate::relay::{Half, Queue};
use crate::side::{CHUNK, Side};

/// How a direction broke.
#[derive(Debug)]
enum Break {
    /// The h2 side failed with this status (or went away).
    H2(Status),
    /// The QUIC side reset its stream or its connection ended.
    Quic(VarInt),
    Shutdown,
    LeaseEnded,
}

/// Relays between the h2 stream `h2` and the QUIC stream `quic` until both directions
/// ended, one side broke, `stop` is cancelled or `lease_ended` resolves. `h2_waited` says
/// which stream arrived first, for the direction labels of the byte counters. Returns
/// whether both directions ended normally.
pub(crate) async fn run(
    h2: Half,
    quic: Side,
    h2_waited: bool,
    metrics: &Metrics,
    stop: &CancellationToken,
    lease_ended: impl Future<Output = ()>,
) -> bool {
    let (mut inbound, outbound, verdict) = h2.into_parts();
    let Side { send, recv } = quic;
    let (to_quic, to_h2) = if h2_waited {
        (Direction::WaitingToArriving, Direction::ArrivingToWaiting)
    } else {
        (Direction::ArrivingToWaiting, Direction::WaitingToArriving)
    };
    let mut quic_send = send;
    let mut quic_recv = recv;
    let ended = {
        let up = h2_to_quic(&mut inbound, &mut quic_send, to_quic, metrics);
        let down = quic_to_h2(&mut quic_recv, &outbound, to_h2, metrics);
        tokio::select! {
            result = futures::future::try_join(up, down) => result.map(|_| ()),
            () = stop.cancelled() => Err(Break::Shutdown),
            () = lease_ended => Err(Break::LeaseEnded),
        }
    };
    let (h2_status, quic_code, h2_outcome) = match ended {
        Ok(()) => {
            info!("both directions ended");
            metrics.stream_ended(Outcome::Completed);
            return true;
        }
        Err(Break::Shutdown) => {
            info!("relay stopped: the router is shutting down");
            (
                Status::unavailable("router is shutting down"),
                code::SHUTTING_DOWN,
                Outcome::ShuttingDown,
            )
        }
        Err(Break::LeaseEnded) => {
            info!("relay stopped: the lease ended");
            let refusal = Refusal::LeaseEnded;
            (refusal.status(), refusal.code(), Outcome::LeaseEnded)
        }
        Err(Break::H2(status)) => {
            info!(code = ?status.code(), "relay ended by the h2 side: {}", status.message());
            (status, code::PEER_GONE, Outcome::Broken)
        }
        Err(Break::Quic(reason)) => {
            info!(
                reason = code::name(reason.into_inner()),
                "relay ended by the QUIC side"
            );
            (
                Status::cancelled("peer went away"),
                code::PEER_GONE,
                Outcome::PeerGone,
            )
        }
    };
    metrics.stream_ended(h2_outcome);
    let quic_code = VarInt::from_u32(quic_code);
    let _ = quic_send.reset(quic_code);
    let _ = quic_recv.stop(quic_code);
    let _ = verdict.send(h2_status);
    drop(outbound);
    false
}

/// h2 frames → QUIC bytes, until GOAWAY or the end of the RPC (then FIN).
async fn h2_to_quic(
    from: &mut Streaming<Frame>,
    to: &mut SendStream,
    direction: Direction,
    metrics: &Metrics,
) -> Result<(), Break> {
    loop {
        let message = tokio::select! {
            message = from.message() => message,
            stopped = to.stopped() => {
                let reason = stopped.ok().flatten().unwrap_or(VarInt::from_u32(code::PEER_GONE));
                return Err(Break::Quic(reason));
            }
        };
        let frame = match message {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                debug!("h2 side: end of stream");
                let _ = to.finish();
                return Ok(());
            }
            Err(status) => return Err(Break::H2(status)),
        };
        match FrameType::try_from(frame.frame_type()) {
            Ok(FrameType::Data) => {
                let bytes = frame.payload_len();
                if bytes == 0 {
                    continue;
                }
                to.write_chunk(frame.payload())
                    .await
                    .map_err(|error| Break::Quic(write_failure(error)))?;
                metrics.relayed(direction, bytes);
            }
            Ok(FrameType::Goaway) => {
                debug!("h2 side: GOAWAY (half-close)");
                let _ = to.finish();
                return Ok(());
            }
            Ok(FrameType::Ping) => {}
            Ok(FrameType::RstStream) => debug!("h2 side sent RST_STREAM; ignored as 0.9.0 does"),
            Err(_) => {
                return Err(Break::H2(Status::invalid_argument(format!(
                    "unknown frame type {}",
                    frame.frame_type()
                ))));
            }
        }
    }
}

/// QUIC bytes → h2 `DATA` frames, until FIN (then an empty GOAWAY frame).
async fn quic_to_h2(
    from: &mut RecvStream,
    to: &Queue,
    direction: Direction,
    metrics: &Metrics,
) -> Result<(), Break> {
    let gone = || Break::H2(Status::cancelled("stream went away"));
    loop {
        let chunk = tokio::select! {
            chunk = from.read_chunk(CHUNK, true) => chunk,
            () = to.closed() => return Err(gone()),
        };
        match chunk {
            Ok(Some(chunk)) => {
                let bytes = chunk.bytes.len();
                to.send(Frame::data(&chunk.bytes))
                    .await
                    .map_err(|_| gone())?;
                metrics.relayed(direction, bytes);
            }
            Ok(None) => {
                debug!("QUIC side: FIN (half-close)");
                to.send(Frame::goaway()).await.map_err(|_| gone())?;
                return Ok(());
            }
            Err(ReadError::Reset(reason)) => return Err(Break::Quic(reason)),
            Err(_) => return Err(Break::Quic(VarInt::from_u32(code::PEER_GONE))),
        }
    }
}

fn write_failure(error: WriteError) -> VarInt {
    match error {
        WriteError::Stopped(reason) => reason,
        _ => VarInt::from_u32(code::PEER_GONE),
    }
}
