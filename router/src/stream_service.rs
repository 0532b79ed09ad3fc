//! `jumpstarter.v1.RouterService` as the router serves it: the one method `Stream`, routed by
//! hand with a codec that keeps each gRPC message's bytes as they are ([`Frame`]), so the
//! relay forwards messages without decoding and re-encoding the protobuf (one copy fewer
//! per direction, unknown fields kept). The generated `RouterServiceServer` would decode
//! every `StreamRequest` into a struct and encode every `StreamResponse` again.
//!
//! What a caller sees is the same as before: the same service and method names (gRPC
//! reflection still lists the service from the compiled descriptor set), the same message
//! size limits, UNIMPLEMENTED for any other method, and a malformed message fails its
//! stream with INTERNAL "failed to decode Protobuf message: …".

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::frame::Frame;
use crate::relay::Outbound;
use crate::server::MAX_MESSAGE_BYTES;
use crate::switchboard::Switchboard;

/// The service's full name (its gRPC path prefix and its name for health checks).
pub(crate) const SERVICE_NAME: &str = "jumpstarter.v1.RouterService";

/// The path of `RouterService.Stream`.
const STREAM_PATH: &str = "/jumpstarter.v1.RouterService/Stream";

/// Messages in and out as [`Frame`]s: the decoder checks and keeps the bytes tonic read
/// (without copying them), the encoder writes them as they are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Frame;
    type Decode = Frame;
    type Encoder = FrameCodec;
    type Decoder = FrameCodec;

    fn encoder(&mut self) -> FrameCodec {
        FrameCodec
    }

    fn decoder(&mut self) -> FrameCodec {
        FrameCodec
    }
}

impl Encoder for FrameCodec {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, frame: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(frame.message());
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Frame>, Status> {
        // `DecodeBuf` holds exactly one message; taking it splits tonic's buffer.
        let message = src.copy_to_bytes(src.remaining());
        Frame::parse(message).map(Some).map_err(|error| {
            // What tonic's prost codec says of a message it cannot decode.
            Status::internal(format!("failed to decode Protobuf message: {error}"))
        })
    }
}

/// The `RouterService` of one router, for tonic's server router.
#[derive(Debug, Clone)]
pub(crate) struct StreamService {
    switchboard: Switchboard,
}

impl StreamService {
    pub(crate) fn new(switchboard: Switchboard) -> Self {
        StreamService { switchboard }
    }
}

impl NamedService for StreamService {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<B> Service<http::Request<B>> for StreamService
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != STREAM_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = StreamMethod(self.switchboard.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(FrameCodec)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// `RouterService.Stream`, for tonic's server-side call handling.
struct StreamMethod(Switchboard);

impl StreamingService<Frame> for StreamMethod {
    type Response = Frame;
    type ResponseStream = Outbound;
    type Future = BoxFuture<Response<Outbound>, Status>;

    fn call(&mut self, request: Request<Streaming<Frame>>) -> Self::Future {
        let switchboard = self.0.clone();
        Box::pin(async move { switchboard.stream(request).await })
    }
}
