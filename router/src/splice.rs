//! Splicing two paired session streams: one pump per direction, raw bytes, FIN as
//! half-close, a reset or stop on one side mirrored to the other.

use jumpstarter_tunnel::code;
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio_util::sync::CancellationToken;

use crate::metrics::QuicMetrics;
use crate::side::{CHUNK, Side};

/// Relays both ways until both directions ended (or `stop` fires); returns whether both
/// directions ended with a FIN.
pub(crate) async fn run(
    client: Side,
    exporter: Side,
    metrics: &QuicMetrics,
    stop: &CancellationToken,
) -> bool {
    let upstream = pump(client.recv, exporter.send, "client_to_exporter", metrics);
    let downstream = pump(exporter.recv, client.send, "exporter_to_client", metrics);
    tokio::select! {
        (up, down) = async { tokio::join!(upstream, downstream) } => up && down,
        () = stop.cancelled() => false,
    }
}

/// Copies `from` into `to`. On FIN, finishes `to`; on a reset of `from`, resets `to`; when
/// `to` is stopped by its reader, stops `from`. Returns whether it ended with a FIN.
async fn pump(
    mut from: RecvStream,
    mut to: SendStream,
    direction: &'static str,
    metrics: &QuicMetrics,
) -> bool {
    loop {
        let chunk = tokio::select! {
            chunk = from.read_chunk(CHUNK, true) => chunk,
            stopped = to.stopped() => {
                let code = match stopped {
                    Ok(Some(code)) => code,
                    _ => VarInt::from_u32(code::PEER_GONE),
                };
                let _ = from.stop(code);
                return false;
            }
        };
        match chunk {
            Ok(Some(chunk)) => {
                let len = chunk.bytes.len();
                if let Err(error) = to.write_chunk(chunk.bytes).await {
                    let code = match error {
                        WriteError::Stopped(code) => code,
                        _ => VarInt::from_u32(code::PEER_GONE),
                    };
                    let _ = from.stop(code);
                    return false;
                }
                metrics.relayed(direction, len);
            }
            Ok(None) => {
                // Half-close: the other side reads to its end and may still write back.
                return to.finish().is_ok();
            }
            Err(error) => {
                let code = match error {
                    ReadError::Reset(code) => code,
                    _ => VarInt::from_u32(code::PEER_GONE),
                };
                let _ = to.reset(code);
                return false;
            }
        }
    }
}
