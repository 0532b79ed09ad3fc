//! The h2 relay forwards each gRPC message's bytes as they came: fields the router does
//! not know and frame types it does not name arrive unchanged at the other side, and a
//! malformed message fails its own stream without reaching the peer. Real TLS + HTTP/2 on
//! loopback, with a client that sends and receives raw message bytes.

use crate::support;

use bytes::{Buf, BufMut, Bytes};
use support::{TestRouter, WAIT, start};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Status, Streaming};

/// Messages as bytes, both ways.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

struct RawPeer {
    tx: mpsc::Sender<Bytes>,
    rx: Streaming<Bytes>,
}

/// Opens `RouterService.Stream` with `token`, sending and receiving raw messages.
async fn open_raw(router: &TestRouter, token: &str) -> Result<RawPeer, Status> {
    let mut grpc = tonic::client::Grpc::new(router.channel().await);
    grpc.ready().await.expect("channel ready");
    let (tx, messages) = mpsc::channel(4);
    let mut request = Request::new(ReceiverStream::new(messages));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    let path = PathAndQuery::from_static("/jumpstarter.v1.RouterService/Stream");
    let response = grpc.streaming(request, path, RawCodec).await?;
    Ok(RawPeer {
        tx,
        rx: response.into_inner(),
    })
}

async fn raw_pair(router: &TestRouter, stream_id: &str) -> (RawPeer, RawPeer) {
    let token = router.token(stream_id);
    let (a, b) = tokio::time::timeout(
        WAIT,
        futures::future::join(open_raw(router, &token), open_raw(router, &token)),
    )
    .await
    .expect("pairing in time");
    (a.expect("first peer"), b.expect("second peer"))
}

async fn send(peer: &RawPeer, message: &[u8]) {
    tokio::time::timeout(WAIT, peer.tx.send(Bytes::copy_from_slice(message)))
        .await
        .expect("send in time")
        .expect("request stream open");
}

async fn recv(rx: &mut Streaming<Bytes>) -> Result<Option<Bytes>, Status> {
    tokio::time::timeout(WAIT, rx.message())
        .await
        .expect("message in time")
}

/// payload "abc", frame type PING, an unknown varint field 15 (= 42), an unknown
/// length-delimited field 100 ("xyz"), and an unknown fixed32 field 3.
const WITH_UNKNOWN_FIELDS: &[u8] = &[
    0x0a, 3, b'a', b'b', b'c', 0x10, 6, 0x78, 42, 0xa2, 0x06, 3, b'x', b'y', b'z', 0x1d, 1, 2, 3, 4,
];

/// A frame type the enum does not name (9), no payload, an unknown field 4 (= 1).
const UNNAMED_FRAME_TYPE: &[u8] = &[0x10, 9, 0x20, 1];

/// Field 1 says 5 bytes follow; 1 does.
const MALFORMED: &[u8] = &[0x0a, 5, 1];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_byte_for_byte_with_unknown_fields_and_frame_types() {
    let router = start(|_| {}).await;
    let (mut a, mut b) = raw_pair(&router, "verbatim").await;

    send(&a, WITH_UNKNOWN_FIELDS).await;
    let got = recv(&mut b.rx).await.expect("no error").expect("a message");
    assert_eq!(
        got.as_ref(),
        WITH_UNKNOWN_FIELDS,
        "A's message reaches B as sent"
    );

    send(&b, UNNAMED_FRAME_TYPE).await;
    let got = recv(&mut a.rx).await.expect("no error").expect("a message");
    assert_eq!(
        got.as_ref(),
        UNNAMED_FRAME_TYPE,
        "B's message reaches A as sent"
    );

    // An empty message (an empty DATA frame) stays empty.
    send(&a, &[]).await;
    let got = recv(&mut b.rx).await.expect("no error").expect("a message");
    assert!(got.is_empty());

    // The byte counters count payload bytes: 3, of A's first message (the counter moves
    // just after the message is queued, so it may lag the receipt a little).
    let relayed = || {
        router.metric("router_relayed_bytes_total{direction=\"waiting_to_arriving\"}")
            + router.metric("router_relayed_bytes_total{direction=\"arriving_to_waiting\"}")
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while relayed() < 3.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(relayed(), 3.0, "{}", router.metrics_text());

    drop((a.tx, b.tx));
    assert!(recv(&mut a.rx).await.expect("ends with OK").is_none());
    assert!(recv(&mut b.rx).await.expect("ends with OK").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_fails_its_sender_and_never_reaches_the_peer() {
    let router = start(|_| {}).await;
    let (mut a, mut b) = raw_pair(&router, "malformed").await;

    send(&a, WITH_UNKNOWN_FIELDS).await;
    send(&a, MALFORMED).await;
    let status = recv(&mut a.rx).await.expect_err("the sender fails");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status
            .message()
            .contains("failed to decode Protobuf message"),
        "{status:?}"
    );

    // B gets the well-formed message before it, then only the end.
    let got = recv(&mut b.rx).await.expect("no error").expect("a message");
    assert_eq!(got.as_ref(), WITH_UNKNOWN_FIELDS);
    let status = recv(&mut b.rx).await.expect_err("the peer is told");
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "peer went away");
}
