//! A generic HTTP/2 (gRPC) request forwarder: every call of the tool that is not for the
//! local router goes to the controller unchanged (headers, body, trailers), over the edge's
//! upstream channel. Only `Listen` and `Dial` response bodies are rewritten (see
//! [`crate::endpoint_rewrite`]) so the tool dials the edge's local router.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body as AxumBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response, header};
use tonic::transport::Channel;

use crate::endpoint_rewrite::{EndpointRewriter, Rpc};
use crate::token_ledger::TokenLedger;

/// Forwards calls to the controller.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    controller: Channel,
    /// The endpoint of the edge's local router, put into Listen and Dial responses.
    local_router: String,
    /// Where the router tokens of those responses go.
    ledger: Arc<TokenLedger>,
}

impl Forwarder {
    pub(crate) fn new(
        controller: Channel,
        local_router: String,
        ledger: Arc<TokenLedger>,
    ) -> Forwarder {
        Forwarder {
            controller,
            local_router,
            ledger,
        }
    }

    /// Sends `request` to the controller and returns its response (or an UNAVAILABLE
    /// status when the controller cannot be reached).
    pub(crate) async fn forward(self, request: Request<AxumBody>) -> Response<AxumBody> {
        let path = request.uri().path().to_owned();
        let rewrite = Rpc::of_path(&path);
        let (mut parts, body) = request.into_parts();
        for name in [header::HOST, header::CONNECTION, header::UPGRADE] {
            parts.headers.remove(name);
        }
        if rewrite.is_some() {
            // The rewriter reads plain messages: ask the controller not to compress.
            parts.headers.remove("grpc-accept-encoding");
        }
        let request = Request::from_parts(parts, tonic::body::Body::new(body));
        let mut controller = self.controller;
        let response = async {
            futures::future::poll_fn(|cx| controller.poll_ready(cx)).await?;
            controller.call(request).await
        }
        .await;
        match response {
            Ok(response) => {
                tracing::debug!(%path, status = %response.status(), "forwarded");
                match rewrite {
                    Some(rpc) => response.map(|body| {
                        AxumBody::new(RewrittenBody {
                            inner: body,
                            rewriter: EndpointRewriter::new(rpc, &self.local_router),
                            ledger: self.ledger.clone(),
                        })
                    }),
                    None => response.map(AxumBody::new),
                }
            }
            Err(error) => {
                let error = jumpstarter_shell::error_chain::error_chain(&error);
                tracing::warn!(%path, %error, "the controller is unreachable");
                Status::unavailable(format!("the edge cannot reach the controller: {error}"))
                    .into_http()
            }
        }
    }
}

/// A response body whose messages pass through an [`EndpointRewriter`]; their tokens are
/// recorded before the tool sees them.
struct RewrittenBody {
    inner: tonic::body::Body,
    rewriter: EndpointRewriter,
    ledger: Arc<TokenLedger>,
}

impl Body for RewrittenBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    return Poll::Ready(
                        self.rewriter
                            .finish()
                            .err()
                            .map(|e| Err(Status::internal(e.to_string()))),
                    );
                }
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(data) => match self.rewriter.push(&data) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => {
                        let now = std::time::SystemTime::now();
                        for token in self.rewriter.take_tokens() {
                            self.ledger.record(token, now);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot rewrite the router endpoint");
                        return Poll::Ready(Some(Err(Status::internal(error.to_string()))));
                    }
                },
                Err(frame) => {
                    if let Err(error) = self.rewriter.finish() {
                        return Poll::Ready(Some(Err(Status::internal(error.to_string()))));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes with the endpoint.
        SizeHint::default()
    }
}
