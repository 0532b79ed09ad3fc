//! One side of a session as the scenarios drive it, whatever carries it: a QUIC stream
//! (through the router or direct), an h2 `RouterService.Stream` (frames, GOAWAY as
//! half-close), or a direct TLS-over-TCP connection.

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::payload::BLOCK;

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
    H2(Box<Streaming<StreamResponse>>),
    Tls(ReadHalf<Tls>, BytesMut),
}

/// Both halves of one side.
#[derive(Debug)]
pub(crate) struct End {
    pub(crate) sink: Sink,
    pub(crate) source: Source,
}

impl Sink {
    pub(crate) async fn send(&mut self, data: Bytes) -> anyhow::Result<()> {
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
            Sink::Tls(write) => write.write_all(&data).await.context("TLS write"),
        }
    }

    /// Half-close: QUIC FIN, h2 GOAWAY frame then end of the request stream, TLS
    /// close_notify and FIN.
    pub(crate) async fn finish(&mut self) -> anyhow::Result<()> {
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
        match self {
            Source::Quic(recv) => Ok(recv
                .read_chunk(BLOCK, true)
                .await
                .context("QUIC read")?
                .map(|chunk| chunk.bytes)),
            Source::H2(stream) => loop {
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
        self.sink.finish().await
    }
}
