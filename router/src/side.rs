//! One QUIC stream as the router holds it, and what every relay of QUIC streams shares: the
//! chunk size and how a stream is refused. A leaf: it depends on nothing else in the crate,
//! so the QUIC listener, the pairing front-end and the h2↔QUIC bridge all import it.

use quinn::{RecvStream, SendStream, VarInt};

/// Largest chunk read from a QUIC stream at once, and the largest payload of one `DATA`
/// frame the bridge sends to an h2 peer: 0.9.0 peers send 64 KiB at most and accept gRPC's
/// 4 MiB.
pub(crate) const CHUNK: usize = 64 * 1024;

/// One side of a pair: the two halves of its QUIC stream.
#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) send: SendStream,
    pub(crate) recv: RecvStream,
}

/// Resets a stream both ways with `code` (a [`jumpstarter_tunnel::code`]).
pub(crate) fn refuse(mut side: Side, code: u32) {
    let code = VarInt::from_u32(code);
    let _ = side.send.reset(code);
    let _ = side.recv.stop(code);
}
