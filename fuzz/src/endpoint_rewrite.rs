//! The edge's rewriting of the controller's Listen and Dial response bodies (gRPC frames of
//! protobuf messages), cut into data frames anywhere.
//!
//! Input: one byte picks the RPC (bit 0) and the frame size (the rest; 0 is one frame),
//! then the body.

use bytes::{Buf, Bytes};
use jumpstarter_proto::jumpstarter::v1::{DialResponse, ListenResponse};
use prost::Message;

use crate::edge_endpoint_rewrite::{EndpointRewriter, MAX_MESSAGE, RewriteError, Rpc};

/// The edge's local router, written into every message.
const EDGE_ROUTER: &str = "127.0.0.1:4001";

pub(crate) fn check(data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let rpc = if control & 1 == 0 {
        Rpc::Listen
    } else {
        Rpc::Dial
    };
    let frame = usize::from(control >> 1);
    let frame = if frame == 0 { body.len().max(1) } else { frame };

    let whole = rewrite(rpc, std::iter::once(body));
    let framed = rewrite(rpc, body.chunks(frame));
    // Where the data frames are cut does not matter.
    assert_eq!(whole, framed);
    let Ok((out, tokens)) = whole else {
        return;
    };
    // Every message names the edge's router and keeps its token.
    let mut out = Bytes::from(out);
    let mut seen = Vec::new();
    while out.has_remaining() {
        assert_eq!(out.get_u8(), 0, "uncompressed");
        let len = usize::try_from(out.get_u32()).expect("u32 fits usize");
        assert!(len <= MAX_MESSAGE + EDGE_ROUTER.len() + 8);
        let message = out.split_to(len);
        let (endpoint, token) = match rpc {
            Rpc::Listen => {
                let m = ListenResponse::decode(message).expect("rewritten Listen decodes");
                (m.router_endpoint, m.router_token)
            }
            Rpc::Dial => {
                let m = DialResponse::decode(message).expect("rewritten Dial decodes");
                (m.router_endpoint, m.router_token)
            }
        };
        assert_eq!(endpoint, EDGE_ROUTER);
        seen.push(token);
    }
    assert_eq!(seen, tokens);
}

/// The rewritten body and the tokens, or the first error.
fn rewrite<'a>(
    rpc: Rpc,
    frames: impl Iterator<Item = &'a [u8]>,
) -> Result<(Vec<u8>, Vec<String>), RewriteError> {
    let mut rewriter = EndpointRewriter::new(rpc, EDGE_ROUTER);
    let mut out = Vec::new();
    let mut tokens = Vec::new();
    for frame in frames {
        out.extend_from_slice(&rewriter.push(frame)?);
        tokens.extend(rewriter.take_tokens());
    }
    rewriter.finish()?;
    Ok((out, tokens))
}
