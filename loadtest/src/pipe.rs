//! One side of a session as the scenarios drive it, whatever carries it: a QUIC stream
//! (through the router or direct), an h2 `RouterService.Stream` (frames, GOAWAY as
//! half-close), or a direct TLS-over-TCP connection.

use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Response, Status, Streaming};

use crate::payload::BLOCK;

/// How long a side waits for the router to end its h2 call after both half-closes.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// The longest a single send, receive or session opening may make no progress. Every
/// step of a scenario is bounded: a session that stalls fails its scenario with the step
/// that stalled instead of holding the run (lossy links at 50 ms RTT recover in well
/// under a second).
pub(crate) const STALL: Duration = Duration::from_secs(30);

/// `step` within [`STALL`], or an error naming it.
pub(crate) async fn bounded<T>(
    what: &'static str,
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(STALL, step)
        .await
        .map_err(|_| anyhow::anyhow!("stalled: {what} made no progress for {STALL:?}"))?
}

/// A TLS connection of either role.
pub(crate) type Tls = tokio_rustls::TlsStream<TcpStream>;

/// The sending half of a session.
#[derive(Debug)]
pub(crate) enum Sink {
    Quic(quinn::SendStream),
    H2(mpsc::Sender<StreamRequest>),
    Tls(WriteHalf<Tls>),
}

/// The receiving half of a session.
#[derive(Debug)]
pub(crate) enum Source {
    Quic(quinn::RecvStream),
    H2(Box<H2Stream>),
    Tls(ReadHalf<Tls>, BytesMut),
}

/// The response side of an h2 `RouterService.Stream` call: still waiting for the
/// router's response headers, or open.
#[derive(Debug)]
pub(crate) enum H2Stream {
    Waiting(JoinHandle<Result<Response<Streaming<StreamResponse>>, Status>>),
    Open(Box<Streaming<StreamResponse>>),
}

impl H2Stream {
    /// The open response stream, once the router has answered.
    async fn open(&mut self) -> anyhow::Result<&mut Streaming<StreamResponse>> {
        if let H2Stream::Waiting(call) = self {
            let response = bounded("waiting for the router's h2 response headers", async {
                call.await
                    .context("the RouterService.Stream call task")?
                    .context("RouterService.Stream")
            })
            .await?;
            *self = H2Stream::Open(Box::new(response.into_inner()));
        }
        match self {
            H2Stream::Open(stream) => Ok(stream),
            H2Stream::Waiting(_) => anyhow::bail!("the h2 stream did not open"),
        }
    }
}

/// Both halves of one side.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) sink: Sink,
    pub(crate) source: Source,
}

impl Sink {
    pub(crate) async fn send(&mut self, data: Bytes) -> anyhow::Result<()> {
        bounded("a send", self.send_unbounded(data)).await
    }

    async fn send_unbounded(&mut self, data: Bytes) -> anyhow::Result<()> {
        match self {
            Sink::Quic(send) => send.write_chunk(data).await.context("QUIC write"),
            Sink::H2(tx) => tx
                .send(StreamRequest {
                    payload: data.to_vec(),
                    frame_type: FrameType::Data as i32,
                })
                .await
                .ok()
                .context("the h2 stream is closed"),
            // tokio-rustls may accept the bytes and keep them in its buffer when the
            // socket is not writable at that moment; only a flush pushes them out then.
            Sink::Tls(write) => {
                write.write_all(&data).await.context("TLS write")?;
                write.flush().await.context("TLS flush")
            }
        }
    }

    /// Half-close: QUIC FIN, h2 GOAWAY frame then end of the request stream, TLS
    /// close_notify and FIN.
    pub(crate) async fn finish(&mut self) -> anyhow::Result<()> {
        bounded("a half-close", self.finish_unbounded()).await
    }

    async fn finish_unbounded(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Quic(send) => send.finish().context("QUIC finish"),
            Sink::H2(tx) => {
                tx.send(StreamRequest {
                    payload: Vec::new(),
                    frame_type: FrameType::Goaway as i32,
                })
                .await
                .ok()
                .context("the h2 stream is closed")?;
                // Dropping the last sender ends the request stream.
                let (closed, _) = mpsc::channel(1);
                *tx = closed;
                Ok(())
            }
            Sink::Tls(write) => write.shutdown().await.context("TLS shutdown"),
        }
    }
}

impl Source {
    /// The next bytes, or `None` at the other side's half-close.
    pub(crate) async fn recv(&mut self) -> anyhow::Result<Option<Bytes>> {
        bounded("a receive", self.recv_unbounded()).await
    }

    async fn recv_unbounded(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Source::Quic(recv) => Ok(recv
                .read_chunk(BLOCK, true)
                .await
                .context("QUIC read")?
                .map(|chunk| chunk.bytes)),
            Source::H2(stream) => loop {
                let stream = stream.open().await?;
                let Some(message) = stream.message().await.context("h2 stream")? else {
                    return Ok(None);
                };
                match FrameType::try_from(message.frame_type) {
                    Ok(FrameType::Data) => return Ok(Some(message.payload.into())),
                    Ok(FrameType::Goaway) => return Ok(None),
                    _ => {}
                }
            },
            Source::Tls(read, buf) => {
                // Bytes read past a preface are served first.
                if buf.is_empty() {
                    buf.reserve(BLOCK);
                    let n = read.read_buf(buf).await.context("TLS read")?;
                    if n == 0 {
                        return Ok(None);
                    }
                }
                Ok(Some(buf.split().freeze()))
            }
        }
    }

    /// After the other side's half-close: waits until the router ends the call itself, so
    /// that dropping this side cancels nothing. Both routers end the two h2 calls of a
    /// session once both directions have ended; a side dropped before that resets its
    /// call, which can discard its own last frames (its GOAWAY) and makes the router
    /// cancel the other side. QUIC and TLS sides have nothing to wait for.
    pub(crate) async fn close(&mut self) -> anyhow::Result<()> {
        if let Source::H2(stream) = self {
            let stream = stream.open().await?;
            let rest = async {
                while stream.message().await?.is_some() {}
                Ok::<_, Status>(())
            };
            tokio::time::timeout(CLOSE_WAIT, rest)
                .await
                .context("the router did not end the h2 call")?
                .context("the end of the h2 call")?;
        }
        Ok(())
    }

    /// Reads exactly `len` bytes (for round trips).
    pub(crate) async fn recv_exact(
        &mut self,
        len: usize,
        out: &mut BytesMut,
    ) -> anyhow::Result<()> {
        out.clear();
        while out.len() < len {
            let chunk = self
                .recv()
                .await?
                .context("the session ended inside a message")?;
            out.extend_from_slice(&chunk);
        }
        Ok(())
    }
}

impl End {
    pub(crate) fn new(sink: Sink, source: Source) -> End {
        End { sink, source }
    }

    /// Echoes everything back until the other side's half-close, then half-closes.
    pub(crate) async fn echo(mut self) -> anyhow::Result<()> {
        while let Some(chunk) = self.source.recv().await? {
            self.sink.send(chunk).await?;
        }
        self.sink.finish().await?;
        self.source.close().await
    }
}
