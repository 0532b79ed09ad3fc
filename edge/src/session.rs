//! The edge's local router: `jumpstarter.v1.RouterService/Stream` for the tool, each call
//! carried as one QUIC session (session id = the token's `sub`) on the lease's connection.
//!
//! Translation, the same rule the router applies to mixed h2↔QUIC pairs:
//! - tool → router: `FRAME_TYPE_DATA` payloads become stream bytes; `FRAME_TYPE_GOAWAY` or the
//!   end of the request stream finishes the QUIC stream (FIN); `PING` is ignored;
//!   `RST_STREAM` is logged and ignored.
//! - router → tool: stream bytes become `DATA` frames of at most [`MAX_PAYLOAD`]; FIN becomes
//!   a `GOAWAY` frame with an empty payload, and the response ends once the tool has
//!   finished its side too (as the 0.9.0 router does).

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use jumpstarter_proto::jumpstarter::v1::router_service_server::RouterService;
use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
use quinn::{ReadError, RecvStream, SendStream};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::lease_link::LeaseLinks;
use crate::router_token::{self, StreamClaims, TokenError};
use crate::token_ledger::TokenLedger;

/// Largest payload of one DATA frame to the tool: what 0.9.0 reads from a socket at once.
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;

/// What a frame from the tool means for the QUIC stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Bytes to send.
    Data(Bytes),
    /// The tool finished its side.
    End,
    /// Nothing to do (PING, unknown types).
    Ignore,
    /// RST_STREAM: logged, otherwise ignored (as 0.9.0 does).
    Reset,
}

/// Classifies one frame from the tool.
pub(crate) fn inbound(frame: StreamRequest) -> Inbound {
    match FrameType::try_from(frame.frame_type) {
        Ok(FrameType::Data) => Inbound::Data(Bytes::from(frame.payload)),
        Ok(FrameType::Goaway) => Inbound::End,
        Ok(FrameType::RstStream) => Inbound::Reset,
        Ok(FrameType::Ping) | Err(_) => Inbound::Ignore,
    }
}

/// The local `RouterService`.
#[derive(Debug, Clone)]
pub(crate) struct LocalRouter {
    links: Arc<LeaseLinks>,
    ledger: Arc<TokenLedger>,
}

impl LocalRouter {
    /// Serves the tokens in `ledger` with connections from `links`.
    pub(crate) fn new(links: Arc<LeaseLinks>, ledger: Arc<TokenLedger>) -> LocalRouter {
        LocalRouter { links, ledger }
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<StreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RouterService for LocalRouter {
    type StreamStream = Outbound;

    async fn stream(
        &self,
        request: Request<Streaming<StreamRequest>>,
    ) -> Result<Response<Outbound>, Status> {
        let token = router_token::bearer(request.metadata()).map(str::to_owned);
        let claims = token
            .as_deref()
            .map_err(Clone::clone)
            .and_then(|token| {
                if self.ledger.admits(token, std::time::SystemTime::now()) {
                    router_token::peek(token)
                } else {
                    Err(TokenError::NotIssued)
                }
            })
            .map_err(|error| {
                tracing::warn!(%error, "router call refused");
                Status::unauthenticated(error.to_string())
            })?;
        let span = tracing::info_span!(
            "session",
            session = %claims.session,
            lease = %format!("{}/{}", claims.namespace, claims.lease),
        );
        // Invariant: `claims` is Ok only when the bearer token was read.
        let token = token.unwrap_or_default();
        let stream = self
            .open(claims, &token, request.into_inner())
            .instrument(span)
            .await?;
        Ok(Response::new(stream))
    }
}

impl LocalRouter {
    /// Opens the session on the lease's QUIC connection. The header carries the router
    /// token too, so the router can pair it with a peer on h2 as well as on QUIC.
    async fn open(
        &self,
        claims: StreamClaims,
        token: &str,
        frames: Streaming<StreamRequest>,
    ) -> Result<Outbound, Status> {
        let connection = self
            .links
            .connection(&claims.lease)
            .await
            .map_err(|error| {
                tracing::warn!(error = %jumpstarter_shell::error_chain::error_chain(&error), "no router connection");
                error.status()
            })?;
        let header = jumpstarter_tunnel::Header::new(&claims.session)
            .and_then(|header| header.with_token(token))
            .map_err(|error| Status::invalid_argument(format!("unusable router token: {error}")))?;
        let (send, recv) = connection
            .open_with_header(&header)
            .await
            .map_err(|error| {
                tracing::warn!(error = %jumpstarter_shell::error_chain::error_chain(&error), "cannot open the QUIC session");
                Status::unavailable(format!("cannot open the QUIC session: {error}"))
            })?;
        tracing::info!("session open over QUIC");
        let up = tokio::spawn(pump_up(frames, send).in_current_span());
        Ok(Box::pin(down(recv, up, tracing::Span::current())))
    }
}

/// Tool → router, until the tool finishes its side or goes away.
async fn pump_up(mut frames: Streaming<StreamRequest>, mut send: SendStream) {
    let mut bytes = 0u64;
    loop {
        match frames.message().await {
            Ok(Some(frame)) => match inbound(frame) {
                Inbound::Data(payload) => {
                    bytes += payload.len() as u64;
                    if let Err(error) = send.write_chunk(payload).await {
                        tracing::debug!(%error, "the router stopped reading");
                        return;
                    }
                }
                Inbound::End => break,
                Inbound::Ignore => {}
                Inbound::Reset => tracing::info!("RST_STREAM frame from the tool (ignored)"),
            },
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(%status, "the tool's stream broke");
                let _ = send.reset(jumpstarter_tunnel::code::PEER_GONE.into());
                return;
            }
        }
    }
    let _ = send.finish();
    tracing::debug!(bytes, "tool side finished");
}

/// Router → tool as a response stream.
fn down(
    recv: RecvStream,
    up: JoinHandle<()>,
    span: tracing::Span,
) -> impl Stream<Item = Result<StreamResponse, Status>> + Send {
    enum State {
        Reading(RecvStream, JoinHandle<()>, u64),
        Draining(JoinHandle<()>),
        Done,
    }
    futures::stream::unfold(State::Reading(recv, up, 0), move |state| {
        let span = span.clone();
        async move {
            match state {
                State::Reading(mut recv, up, bytes) => {
                    match recv.read_chunk(MAX_PAYLOAD, true).await {
                        Ok(Some(chunk)) => {
                            let bytes = bytes + chunk.bytes.len() as u64;
                            let frame = StreamResponse {
                                payload: chunk.bytes.to_vec(),
                                frame_type: FrameType::Data.into(),
                            };
                            Some((Ok(frame), State::Reading(recv, up, bytes)))
                        }
                        Ok(None) => {
                            span.in_scope(|| tracing::info!(bytes, "router side finished"));
                            let goaway = StreamResponse {
                                payload: Vec::new(),
                                frame_type: FrameType::Goaway.into(),
                            };
                            Some((Ok(goaway), State::Draining(up)))
                        }
                        Err(error) => {
                            span.in_scope(|| tracing::info!(%error, "session broken"));
                            up.abort();
                            Some((Err(read_status(&error)), State::Done))
                        }
                    }
                }
                State::Draining(up) => {
                    let _ = up.await;
                    span.in_scope(|| tracing::info!("session closed"));
                    None
                }
                State::Done => None,
            }
        }
    })
}

fn read_status(error: &ReadError) -> Status {
    match error {
        ReadError::Reset(code) => Status::unavailable(format!(
            "the session was reset by the router ({})",
            jumpstarter_tunnel::code::name(code.into_inner())
        )),
        other => Status::unavailable(format!("the session broke: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: FrameType, payload: &[u8]) -> StreamRequest {
        StreamRequest {
            payload: payload.to_vec(),
            frame_type: frame_type.into(),
        }
    }

    #[test]
    fn frames_translate_as_the_router_does() {
        assert_eq!(
            inbound(frame(FrameType::Data, b"abc")),
            Inbound::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(inbound(frame(FrameType::Goaway, b"")), Inbound::End);
        assert_eq!(inbound(frame(FrameType::Ping, b"x")), Inbound::Ignore);
        assert_eq!(inbound(frame(FrameType::RstStream, b"")), Inbound::Reset);
        let unknown = StreamRequest {
            payload: b"?".to_vec(),
            frame_type: 42,
        };
        assert_eq!(inbound(unknown), Inbound::Ignore);
    }
}
