//! Sans-IO rewriting of `ListenResponse` / `DialResponse` messages in a gRPC response body:
//! `router_endpoint` becomes the edge's local router, the token stays.
//!
//! A gRPC body is a sequence of length-prefixed messages (1 byte compressed flag, 4 bytes
//! big-endian length, the message), cut into data frames anywhere. [`EndpointRewriter::push`]
//! takes the bytes of each frame and returns the rewritten complete messages so far;
//! [`EndpointRewriter::take_tokens`] hands over the router tokens those messages carried.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use jumpstarter_proto::jumpstarter::v1::{DialResponse, ListenResponse};
use prost::Message;

/// Bytes before each message.
const PREFIX_LEN: usize = 5;

/// Largest message accepted: the 4 MiB gRPC default the controller also keeps.
pub(crate) const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// `jumpstarter.v1.ControllerService/Listen`.
pub(crate) const LISTEN_PATH: &str = "/jumpstarter.v1.ControllerService/Listen";
/// `jumpstarter.v1.ControllerService/Dial`.
pub(crate) const DIAL_PATH: &str = "/jumpstarter.v1.ControllerService/Dial";

/// Which response type the body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    Listen,
    Dial,
}

impl Rpc {
    /// The RPC whose responses name a router, by request path.
    pub(crate) fn of_path(path: &str) -> Option<Rpc> {
        match path {
            LISTEN_PATH => Some(Rpc::Listen),
            DIAL_PATH => Some(Rpc::Dial),
            _ => None,
        }
    }
}

/// Why a response body cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RewriteError {
    #[error("a compressed {0:?} response cannot be rewritten")]
    Compressed(Rpc),
    #[error("a {rpc:?} response of {len} bytes is larger than {MAX_MESSAGE}")]
    TooLarge { rpc: Rpc, len: usize },
    #[error("a {0:?} response does not decode")]
    Decode(Rpc),
    #[error("the {0:?} response body ended inside a message")]
    Truncated(Rpc),
}

/// Rewrites the messages of one response body.
#[derive(Debug)]
pub(crate) struct EndpointRewriter {
    rpc: Rpc,
    endpoint: String,
    pending: BytesMut,
    tokens: Vec<String>,
}

impl EndpointRewriter {
    /// A rewriter putting `endpoint` into every message of `rpc`.
    pub(crate) fn new(rpc: Rpc, endpoint: &str) -> EndpointRewriter {
        EndpointRewriter {
            rpc,
            endpoint: endpoint.to_owned(),
            pending: BytesMut::new(),
            tokens: Vec::new(),
        }
    }

    /// Takes the next bytes of the body; returns the rewritten messages completed by them
    /// (empty while a message is still incomplete).
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Bytes, RewriteError> {
        self.pending.extend_from_slice(data);
        let mut out = BytesMut::new();
        while self.pending.len() >= PREFIX_LEN {
            let compressed = self.pending[0];
            let len_bytes = [
                self.pending[1],
                self.pending[2],
                self.pending[3],
                self.pending[4],
            ];
            let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
            if compressed != 0 {
                return Err(RewriteError::Compressed(self.rpc));
            }
            if len > MAX_MESSAGE {
                return Err(RewriteError::TooLarge { rpc: self.rpc, len });
            }
            if self.pending.len() < PREFIX_LEN + len {
                break;
            }
            self.pending.advance(PREFIX_LEN);
            let message = self.pending.split_to(len);
            let rewritten = self.rewrite(&message)?;
            out.put_u8(0);
            // Invariant: the rewritten message is at most the original plus the endpoint,
            // far below 4 GiB.
            out.put_u32(u32::try_from(rewritten.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(&rewritten);
        }
        Ok(out.freeze())
    }

    /// The router tokens of the messages rewritten since the last call.
    pub(crate) fn take_tokens(&mut self) -> Vec<String> {
        std::mem::take(&mut self.tokens)
    }

    /// Checks that the body did not end inside a message.
    pub(crate) fn finish(&self) -> Result<(), RewriteError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(RewriteError::Truncated(self.rpc))
        }
    }

    fn rewrite(&mut self, message: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let rpc = self.rpc;
        let decode = |_| RewriteError::Decode(rpc);
        let (encoded, token) = match rpc {
            Rpc::Listen => {
                let mut response = ListenResponse::decode(message).map_err(decode)?;
                response.router_endpoint.clone_from(&self.endpoint);
                (response.encode_to_vec(), response.router_token)
            }
            Rpc::Dial => {
                let mut response = DialResponse::decode(message).map_err(decode)?;
                response.router_endpoint.clone_from(&self.endpoint);
                (response.encode_to_vec(), response.router_token)
            }
        };
        self.tokens.push(token);
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn listen(endpoint: &str, token: &str) -> ListenResponse {
        ListenResponse {
            router_endpoint: endpoint.into(),
            router_token: token.into(),
        }
    }

    #[test]
    fn messages_split_anywhere_are_rewritten_whole() {
        let mut body = framed(&listen("router.example:443", "t1"));
        body.extend(framed(&listen("router.example:443", "t2-longer-token")));
        let expected = [
            framed(&listen("127.0.0.1:5000", "t1")),
            framed(&listen("127.0.0.1:5000", "t2-longer-token")),
        ]
        .concat();
        for cut in 0..body.len() {
            for step in [1, 3, 7, body.len()] {
                let mut rewriter = EndpointRewriter::new(Rpc::Listen, "127.0.0.1:5000");
                let mut out = rewriter.push(&body[..cut]).unwrap().to_vec();
                for chunk in body[cut..].chunks(step) {
                    out.extend_from_slice(&rewriter.push(chunk).unwrap());
                }
                rewriter.finish().unwrap();
                assert_eq!(out, expected, "cut at {cut}, step {step}");
                assert_eq!(rewriter.take_tokens(), ["t1", "t2-longer-token"]);
                assert!(rewriter.take_tokens().is_empty());
            }
        }
    }

    #[test]
    fn dial_responses_are_rewritten() {
        let dial = DialResponse {
            router_endpoint: "r:1".into(),
            router_token: "tok".into(),
        };
        let mut rewriter = EndpointRewriter::new(Rpc::Dial, "[::1]:9");
        let out = rewriter.push(&framed(&dial)).unwrap();
        let back = DialResponse::decode(&out[PREFIX_LEN..]).unwrap();
        assert_eq!(back.router_endpoint, "[::1]:9");
        assert_eq!(back.router_token, "tok");
    }

    #[test]
    fn unusable_bodies_are_errors() {
        let mut compressed = framed(&listen("a:1", "t"));
        compressed[0] = 1;
        let mut rewriter = EndpointRewriter::new(Rpc::Listen, "e:1");
        assert_eq!(
            rewriter.push(&compressed),
            Err(RewriteError::Compressed(Rpc::Listen))
        );
        let mut rewriter = EndpointRewriter::new(Rpc::Listen, "e:1");
        assert!(matches!(
            rewriter.push(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(RewriteError::TooLarge { .. })
        ));
        let mut rewriter = EndpointRewriter::new(Rpc::Dial, "e:1");
        assert_eq!(
            rewriter.push(&[0, 0, 0, 0, 2, 0xff, 0xff]),
            Err(RewriteError::Decode(Rpc::Dial))
        );
        let mut rewriter = EndpointRewriter::new(Rpc::Dial, "e:1");
        assert!(rewriter.push(&[0, 0, 0]).unwrap().is_empty());
        assert_eq!(rewriter.finish(), Err(RewriteError::Truncated(Rpc::Dial)));
        assert_eq!(Rpc::of_path(LISTEN_PATH), Some(Rpc::Listen));
        assert_eq!(Rpc::of_path(DIAL_PATH), Some(Rpc::Dial));
        assert_eq!(
            Rpc::of_path("/jumpstarter.v1.ControllerService/Register"),
            None
        );
    }
}
