//! The ways a session travels, and how to open a session pair on each: QUIC through the
//! router (the `tunnel` library, per-lease certificates), h2 through the router
//! (`RouterService.Stream` with a router token), their baselines without a router (one
//! direct quinn connection, one direct TLS-over-TCP connection), and h2 through the
//! upstream Go router when it runs (the reference of the h2 rows).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::BytesMut;
use jumpstarter_certs::{ClientAuth, Role, client_config, server_config};
use jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient;
use jumpstarter_tunnel::{ALPN, Connection, Decoded, Header, QuicPeer, read_header};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::lab::{Lab, SERVER_NAME};
use crate::pipe::{End, H2Stream, Sink, Source, Tls, bounded};
use crate::reference::{self, ReferenceTarget};

/// Largest gRPC message either side accepts (a frame is at most a 64 KiB block).
const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Frames queued towards an h2 stream.
const H2_QUEUE: usize = 16;
/// ALPN of the direct TLS baseline.
const DIRECT_ALPN: &[u8] = b"jumpstarter-loadtest";

/// Which way a session goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    QuicRouter,
    QuicDirect,
    H2Router,
    H2Direct,
    /// h2 through the upstream Go router.
    H2Reference,
}

impl Route {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::QuicRouter => "QUIC via router",
            Route::QuicDirect => "QUIC direct (one quinn connection)",
            Route::H2Router => "h2 via router",
            Route::H2Direct => "TLS/TCP direct (no router)",
            Route::H2Reference => reference::LABEL,
        }
    }

    /// The baseline of a routed path.
    pub(crate) fn baseline(self) -> Route {
        match self {
            Route::QuicRouter | Route::QuicDirect => Route::QuicDirect,
            Route::H2Router | Route::H2Direct | Route::H2Reference => Route::H2Direct,
        }
    }
}

/// Both ends of one session, and what keeps their connections open.
#[derive(Debug)]
pub(crate) struct Pair {
    pub(crate) client: End,
    pub(crate) exporter: End,
    pub(crate) keep: Vec<Keep>,
}

/// A connection kept open for as long as a [`Pair`] lives (held, never read).
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum Keep {
    Quic(Connection),
    Direct(DirectQuic),
    Channel(Channel),
}

/// A connection to the direct quinn baseline server, with its client endpoint (kept so
/// that the socket lives as long as the connection). Closed at once when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub(crate) struct DirectQuic {
    pub(crate) connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

/// Everything the scenarios open sessions with: the router's addresses and the two
/// in-process baseline servers.
#[derive(Debug, Clone)]
pub(crate) struct Fabric {
    pub(crate) lab: Arc<Lab>,
    pub(crate) router: SocketAddr,
    direct_quic: SocketAddr,
    /// The transport settings of both ends of the direct quinn baseline.
    direct_transport: Arc<quinn::TransportConfig>,
    direct_tls: SocketAddr,
    waiting: Waiting,
    /// The upstream Go router, when it runs.
    reference: Option<ReferenceTarget>,
}

/// Sessions of the baseline servers waiting for their client side, by session id.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<End>>>>;

/// A lease's two warm QUIC connections (client and exporter role).
#[derive(Debug, Clone)]
pub(crate) struct QuicLease {
    pub(crate) client: Connection,
    pub(crate) exporter: Connection,
}

impl Fabric {
    /// Starts the baseline servers next to a router at `router` (h2 TCP and QUIC UDP).
    pub(crate) async fn new(lab: Arc<Lab>, router: SocketAddr) -> anyhow::Result<Fabric> {
        Fabric::new_at(lab, router, Ipv4Addr::LOCALHOST.into()).await
    }

    /// The same with the baseline servers listening on `ip` (their tasks run on the
    /// calling runtime).
    pub(crate) async fn new_at(
        lab: Arc<Lab>,
        router: SocketAddr,
        ip: IpAddr,
    ) -> anyhow::Result<Fabric> {
        let transport = jumpstarter_tunnel::quic::transport_config();
        Fabric::new_with(lab, router, ip, transport).await
    }

    /// The same with `transport` on both ends of the direct quinn baseline (its server
    /// and every connection to it).
    pub(crate) async fn new_with(
        lab: Arc<Lab>,
        router: SocketAddr,
        ip: IpAddr,
        mut transport: quinn::TransportConfig,
    ) -> anyhow::Result<Fabric> {
        let waiting: Waiting = Arc::default();
        // Sessions of the setup scenario in flight at once on one connection (a limit on
        // what the peer opens: only the server's matters).
        transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
        let transport = Arc::new(transport);
        let direct_quic = start_direct_quic(&lab, waiting.clone(), ip, transport.clone())?;
        let direct_tls = start_direct_tls(&lab, waiting.clone(), ip).await?;
        Ok(Fabric {
            lab,
            router,
            direct_quic,
            direct_transport: transport,
            direct_tls,
            waiting,
            reference: None,
        })
    }

    /// The same fabric, pointed at another router (or relay) address.
    pub(crate) fn with_router(&self, router: SocketAddr) -> Fabric {
        Fabric {
            router,
            ..self.clone()
        }
    }

    /// The same fabric with the upstream Go router as the reference of the h2 rows.
    pub(crate) fn with_reference(self, reference: ReferenceTarget) -> Fabric {
        Fabric {
            reference: Some(reference),
            ..self
        }
    }

    /// Whether sessions through the upstream Go router can be opened.
    pub(crate) fn has_reference(&self) -> bool {
        self.reference.is_some()
    }

    fn reference(&self) -> anyhow::Result<&ReferenceTarget> {
        self.reference
            .as_ref()
            .context("the upstream Go router is not running")
    }

    /// One session on fresh connections.
    pub(crate) async fn pair(&self, route: Route) -> anyhow::Result<Pair> {
        match route {
            Route::QuicRouter => {
                let lease = self.quic_lease().await?;
                let (client, exporter) = lease.session(&self.lab.fresh("s")).await?;
                Ok(Pair {
                    client,
                    exporter,
                    keep: vec![Keep::Quic(lease.client), Keep::Quic(lease.exporter)],
                })
            }
            Route::QuicDirect => {
                let connection = self.direct_quic_connection().await?;
                let (client, exporter) = self.direct_quic_session(&connection).await?;
                Ok(Pair {
                    client,
                    exporter,
                    keep: vec![Keep::Direct(connection)],
                })
            }
            Route::H2Router | Route::H2Reference => {
                let (a, b) =
                    futures::try_join!(self.h2_channel_for(route), self.h2_channel_for(route))?;
                let (client, exporter) = self.h2_session_for(route, &a, &b).await?;
                Ok(Pair {
                    client,
                    exporter,
                    keep: vec![Keep::Channel(a), Keep::Channel(b)],
                })
            }
            Route::H2Direct => {
                let (client, exporter) = self.direct_tls_session().await?;
                Ok(Pair {
                    client,
                    exporter,
                    keep: Vec::new(),
                })
            }
        }
    }

    /// A new lease's client and exporter connections to the router.
    pub(crate) async fn quic_lease(&self) -> anyhow::Result<QuicLease> {
        let lease = self.lab.fresh("lease");
        let (client, exporter) = futures::try_join!(
            self.quic_connect(&lease, Role::Client),
            self.quic_connect(&lease, Role::Exporter)
        )?;
        Ok(QuicLease { client, exporter })
    }

    /// One connection to the router with a fresh certificate of `role` for `lease`.
    pub(crate) async fn quic_connect(&self, lease: &str, role: Role) -> anyhow::Result<Connection> {
        let (chain, key) = self.lab.lease_cert(lease, role)?;
        bounded("a QUIC connection to the router", async {
            QuicPeer::connect(self.router, SERVER_NAME, self.lab.roots(), chain, key)
                .await
                .with_context(|| format!("QUIC connection to the router at {}", self.router))
        })
        .await
    }

    /// A connection to the direct quinn baseline server (no client certificate), from a
    /// new UDP socket (sized like the router's), with the fabric's direct transport.
    pub(crate) async fn direct_quic_connection(&self) -> anyhow::Result<DirectQuic> {
        let tls = client_config(self.lab.roots(), None, vec![ALPN.to_vec()])?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.direct_transport.clone());
        let local: SocketAddr = match self.direct_quic.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let endpoint =
            jumpstarter_tunnel::socket::client_endpoint(local).context("opening a UDP socket")?;
        bounded("a QUIC connection to the baseline server", async {
            let connection = endpoint
                .connect_with(config, self.direct_quic, SERVER_NAME)?
                .await
                .context("QUIC connection to the baseline server")?;
            Ok(DirectQuic {
                connection,
                _endpoint: endpoint,
            })
        })
        .await
    }

    /// A session on a warm direct quinn connection.
    pub(crate) async fn direct_quic_session(
        &self,
        direct: &DirectQuic,
    ) -> anyhow::Result<(End, End)> {
        let id = self.lab.fresh("d");
        let (tx, rx) = oneshot::channel();
        self.wait_for(&id, tx);
        let (send, recv) = crate::swarm::open_session(&direct.connection, &id).await?;
        let exporter = bounded("the baseline server taking a session", async {
            rx.await.context("the baseline server dropped the session")
        })
        .await?;
        Ok((End::new(Sink::Quic(send), Source::Quic(recv)), exporter))
    }

    /// A TLS connection to the direct baseline server; its first bytes name the session.
    pub(crate) async fn direct_tls_session(&self) -> anyhow::Result<(End, End)> {
        let id = self.lab.fresh("t");
        let (tx, rx) = oneshot::channel();
        self.wait_for(&id, tx);
        let tls = client_config(self.lab.roots(), None, vec![DIRECT_ALPN.to_vec()])?;
        let name = rustls_pki_types::ServerName::try_from(SERVER_NAME)?;
        let (read, write) = bounded("a TLS connection to the baseline server", async {
            let tcp = TcpStream::connect(self.direct_tls).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .context("TLS handshake with the baseline server")?;
            let (read, mut write) = tokio::io::split(Tls::from(stream));
            tokio::io::AsyncWriteExt::write_all(&mut write, &Header::new(&id)?.encode()).await?;
            tokio::io::AsyncWriteExt::flush(&mut write).await?;
            Ok((read, write))
        })
        .await?;
        let exporter = bounded("the baseline server taking a session", async {
            rx.await.context("the baseline server dropped the session")
        })
        .await?;
        Ok((
            End::new(Sink::Tls(write), Source::Tls(read, BytesMut::new())),
            exporter,
        ))
    }

    /// A TLS (h2) channel to the router.
    pub(crate) async fn h2_channel(&self) -> anyhow::Result<Channel> {
        h2_channel(self.router, self.lab.ca_pem(), SERVER_NAME).await
    }

    /// A TLS (h2) channel to the router of `route`: ours, or the Go router for
    /// [`Route::H2Reference`].
    pub(crate) async fn h2_channel_for(&self, route: Route) -> anyhow::Result<Channel> {
        if route == Route::H2Reference {
            let reference = self.reference()?;
            h2_channel(
                reference.addr,
                &reference.cert_pem,
                &reference.server_name(),
            )
            .await
        } else {
            self.h2_channel().await
        }
    }

    /// One session through the router over two channels (client's, exporter's).
    pub(crate) async fn h2_session(
        &self,
        client: &Channel,
        exporter: &Channel,
    ) -> anyhow::Result<(End, End)> {
        self.h2_session_for(Route::H2Router, client, exporter).await
    }

    /// One session through the router of `route` over two channels to it, with a token
    /// that router accepts.
    pub(crate) async fn h2_session_for(
        &self,
        route: Route,
        client: &Channel,
        exporter: &Channel,
    ) -> anyhow::Result<(End, End)> {
        let token = self.h2_token(route)?;
        h2_open(client, exporter, &token).await
    }

    /// A fresh session's token for the router of `route`: ours (ES256, per lease) or
    /// the Go router's (HS256).
    pub(crate) fn h2_token(&self, route: Route) -> anyhow::Result<String> {
        if route == Route::H2Reference {
            self.reference()?.token(&self.lab.fresh("g"))
        } else {
            let lease = self.lab.fresh("lease");
            self.lab.router_token(&lease, &self.lab.fresh("h"))
        }
    }

    fn wait_for(&self, id: &str, tx: oneshot::Sender<End>) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(id.to_owned(), tx);
        }
    }
}

impl QuicLease {
    /// Both sides open session `id`; the router pairs them.
    pub(crate) async fn session(&self, id: &str) -> anyhow::Result<(End, End)> {
        let (client, exporter) = bounded("opening a QUIC session through the router", async {
            Ok(futures::try_join!(
                self.client.open_session(id),
                self.exporter.open_session(id)
            )?)
        })
        .await?;
        Ok((
            End::new(Sink::Quic(client.0), Source::Quic(client.1)),
            End::new(Sink::Quic(exporter.0), Source::Quic(exporter.1)),
        ))
    }
}

/// Both sides of one h2 session over two channels (client's, exporter's), with `token`.
pub(crate) async fn h2_open(
    client: &Channel,
    exporter: &Channel,
    token: &str,
) -> anyhow::Result<(End, End)> {
    futures::try_join!(
        open_h2(client.clone(), token),
        open_h2(exporter.clone(), token)
    )
}

/// A TLS (h2) channel to `addr`, trusting `ca_pem`, expecting `server_name`.
pub(crate) async fn h2_channel(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> anyhow::Result<Channel> {
    // The router's windows, so the client's receive window is not the bottleneck either.
    let endpoint = jumpstarter_shell::http2_windows::Http2Windows::default()
        .apply_to_endpoint(Endpoint::from_shared(format!("https://{addr}"))?)
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name(server_name),
        )?;
    bounded("an h2 connection", async {
        endpoint
            .connect()
            .await
            .with_context(|| format!("h2 connection to {addr}"))
    })
    .await
}

/// Opens `RouterService.Stream` with `token`. Resolves at once: like the jumpstarter
/// clients, the caller may send before the router answers, and the response is awaited on
/// the first read (the Go router answers a stream only with the other side's first
/// message).
pub(crate) async fn open_h2(channel: Channel, token: &str) -> anyhow::Result<End> {
    let (tx, rx) = mpsc::channel(H2_QUEUE);
    let mut request = Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut client = RouterServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let response = tokio::spawn(async move { client.stream(request).await });
    Ok(End::new(
        Sink::H2(tx),
        Source::H2(Box::new(H2Stream::Waiting(response))),
    ))
}

/// The quinn baseline server with `transport`: reads each stream's session header and
/// hands the stream to whoever waits for that session.
fn start_direct_quic(
    lab: &Lab,
    waiting: Waiting,
    ip: IpAddr,
    transport: Arc<quinn::TransportConfig>,
) -> anyhow::Result<SocketAddr> {
    let mut tls = server_config(
        lab.server_credentials()?,
        vec![ALPN.to_vec()],
        ClientAuth::None,
    )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport);
    // The same socket buffers as the router's, so the baseline is not the one dropping.
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        jumpstarter_tunnel::socket::bind((ip, 0).into())?,
        Arc::new(quinn::TokioRuntime),
    )?;
    let addr = endpoint.local_addr()?;
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((send, mut recv)) = connection.accept_bi().await {
                    let waiting = waiting.clone();
                    tokio::spawn(async move {
                        if let Ok(header) = read_header(&mut recv).await {
                            let end = End::new(Sink::Quic(send), Source::Quic(recv));
                            hand_over(&waiting, header.session_id(), end);
                        }
                    });
                }
            });
        }
    });
    Ok(addr)
}

/// The TLS-over-TCP baseline server, with the session header as its preface.
async fn start_direct_tls(lab: &Lab, waiting: Waiting, ip: IpAddr) -> anyhow::Result<SocketAddr> {
    let tls = server_config(
        lab.server_credentials()?,
        vec![DIRECT_ALPN.to_vec()],
        ClientAuth::None,
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let (mut read, write) = tokio::io::split(Tls::from(stream));
                let mut buf = BytesMut::new();
                loop {
                    match Header::decode(&buf) {
                        Ok(Decoded::Complete { header, len }) => {
                            let rest = buf.split_off(len);
                            let end = End::new(Sink::Tls(write), Source::Tls(read, rest));
                            hand_over(&waiting, header.session_id(), end);
                            return;
                        }
                        Ok(Decoded::NeedMore { .. }) => {
                            if !matches!(read.read_buf(&mut buf).await, Ok(n) if n > 0) {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn hand_over(waiting: &Waiting, id: &str, end: End) {
    let waiter = waiting.lock().ok().and_then(|mut w| w.remove(id));
    if let Some(waiter) = waiter {
        let _ = waiter.send(end);
    }
}
