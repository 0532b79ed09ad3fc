//! A router on 127.0.0.1 port 0 with a CA, a server certificate and a token key minted for
//! the test, and tonic clients that talk to it over TLS.

#![allow(dead_code, unreachable_pub)]

pub mod authority;
pub mod lab;
pub mod quic_only;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authority::{HOST, authority};
use jumpstarter_certs::{ClientAuth, server_config};
use jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient;
use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
use jumpstarter_router::{PairLimits, Router, RouterConfig, ServeError};
use jumpstarter_token::SigningKey;
use jumpstarter_token::router::{PairTokens, StreamGrant, mint, mint_pair};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status, Streaming};

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct TestRouter {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub key: SigningKey,
    pub registry: Arc<std::sync::Mutex<Registry>>,
    /// The leases with a live pair in this router.
    pub sessions: jumpstarter_router::SessionLeases,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// Starts a router; `configure` adjusts the default configuration.
pub async fn start(configure: impl FnOnce(&mut RouterConfig)) -> TestRouter {
    start_with(configure, PairLimits::default()).await
}

/// Starts a router with `pair_limits`; `configure` adjusts the default configuration.
pub async fn start_with(
    configure: impl FnOnce(&mut RouterConfig),
    pair_limits: PairLimits,
) -> TestRouter {
    let (ca, server) = authority("router test CA");
    let tls = server_config(server.credentials(), vec![b"h2".to_vec()], ClientAuth::None)
        .expect("tls config");
    let key = SigningKey::generate().expect("token key");
    let mut config = RouterConfig::new(tls, vec![key.verifying_key().clone()]);
    config.pair_timeout = Duration::from_secs(20);
    configure(&mut config);

    let mut registry = Registry::default();
    let router = Router::new(config, &mut registry);
    router.set_pair_limits(pair_limits);
    let sessions = router.session_leases();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(router.serve(listener, async move {
        let _ = signal.await;
    }));
    TestRouter {
        addr,
        ca_pem: ca.cert_pem().to_owned(),
        key,
        registry: Arc::new(std::sync::Mutex::new(registry)),
        sessions,
        shutdown: Some(shutdown),
        task: Some(task),
    }
}

impl TestRouter {
    /// A new client on its own TLS connection.
    pub async fn client(&self) -> RouterServiceClient<Channel> {
        // Larger than the router's limit, so that the router's limit is what tests meet.
        RouterServiceClient::new(self.channel().await)
            .max_decoding_message_size(2 * jumpstarter_router::MAX_MESSAGE_BYTES)
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("https://{}", self.addr))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&self.ca_pem))
                    .domain_name(HOST),
            )
            .expect("client tls")
            .connect()
            .await
            .expect("connect")
    }

    /// A router token for `stream_id`, valid for 30 minutes.
    pub fn token(&self, stream_id: &str) -> String {
        self.token_at(
            stream_id,
            OffsetDateTime::now_utc(),
            time::Duration::minutes(30),
        )
    }

    pub fn token_at(
        &self,
        stream_id: &str,
        at: OffsetDateTime,
        lifetime: time::Duration,
    ) -> String {
        let grant = StreamGrant {
            stream_id: stream_id.to_owned(),
            token_id: format!("jti-{stream_id}"),
            lease: "lab/lease-1".to_owned(),
        };
        mint(&self.key, &grant, lifetime, at).expect("mint")
    }

    /// The client's and the exporter's tokens for `stream_id` of `lease` (`namespace/name`),
    /// valid for 30 minutes, for a lease ending at `lease_end`.
    pub fn token_pair(
        &self,
        stream_id: &str,
        lease: &str,
        lease_end: Option<OffsetDateTime>,
    ) -> PairTokens {
        let grant = StreamGrant {
            stream_id: stream_id.to_owned(),
            token_id: format!("jti-{stream_id}"),
            lease: lease.to_owned(),
        };
        let now = OffsetDateTime::now_utc();
        mint_pair(
            &self.key,
            &grant,
            lease_end,
            time::Duration::minutes(30),
            now,
        )
        .expect("mint")
    }

    /// The value of the metric line starting with `prefix` (0 when absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics_text()
            .lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }

    /// Triggers the shutdown signal.
    pub fn shut_down(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// The metrics in text format.
    pub fn metrics_text(&self) -> String {
        authority::metrics_text(&self.registry)
    }
}

/// One side of a stream, as a test drives it.
pub struct Peer {
    pub tx: mpsc::Sender<StreamRequest>,
    pub rx: Streaming<StreamResponse>,
}

/// Opens a stream with `authorization` (the full header value, if any) and a request
/// queue of `queue` frames. Resolves once the router answered (paired or refused).
pub async fn open(
    client: &mut RouterServiceClient<Channel>,
    authorization: Option<&str>,
    queue: usize,
) -> Result<Peer, Status> {
    let (tx, requests) = mpsc::channel(queue);
    let mut request = Request::new(ReceiverStream::new(requests));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("header value"));
    }
    let response = client.stream(request).await?;
    Ok(Peer {
        tx,
        rx: response.into_inner(),
    })
}

/// Opens two streams with the same token concurrently and returns them paired.
pub async fn pair(router: &TestRouter, stream_id: &str) -> (Peer, Peer) {
    let token = router.token(stream_id);
    let header = format!("Bearer {token}");
    let mut a = router.client().await;
    let mut b = router.client().await;
    let (first, second) = tokio::time::timeout(
        WAIT,
        futures::future::join(
            open(&mut a, Some(&header), 4),
            open(&mut b, Some(&header), 4),
        ),
    )
    .await
    .expect("pairing in time");
    (first.expect("first peer"), second.expect("second peer"))
}

pub fn frame(frame_type: FrameType, payload: Vec<u8>) -> StreamRequest {
    StreamRequest {
        payload,
        frame_type: frame_type as i32,
    }
}

/// Sends a frame, bounded in time.
pub async fn send(tx: &mpsc::Sender<StreamRequest>, request: StreamRequest) {
    tokio::time::timeout(WAIT, tx.send(request))
        .await
        .expect("send in time")
        .expect("request stream open");
}

/// Receives the next message, bounded in time.
pub async fn recv(rx: &mut Streaming<StreamResponse>) -> Result<Option<StreamResponse>, Status> {
    tokio::time::timeout(WAIT, rx.message())
        .await
        .expect("message in time")
}

/// Deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
