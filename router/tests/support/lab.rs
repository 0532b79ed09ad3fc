//! The shared fixture of the data-plane tests: one router serving h2 and QUIC with shared
//! pairing on 127.0.0.1 (CA, server certificate, token key and lease certificates minted in
//! the test), and deterministic numbered payloads checked by sha256.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use jumpstarter_certs::{Ca, ClientAuth, Role, server_config};
use jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient;
use jumpstarter_router::{QuicRouter, QuicRouterConfig, Router, RouterConfig};
use jumpstarter_token::SigningKey;
use jumpstarter_token::router::{StreamGrant, mint};
use jumpstarter_tunnel::Connection;
use prometheus_client::registry::Registry;
use quinn::{ReadError, RecvStream, SendStream};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use super::WAIT;
use super::authority::{self, authority, lease_cert};
pub use super::authority::{HOST, LeaseCert};

pub const BLOCK: usize = 64 * 1024;
pub const LEASE: &str = "lease-1";

/// A router (h2 and QUIC, pairing shared) and the keys its peers need. The addresses are
/// where peers connect; a test may point them at a relay in front of the router.
pub struct Lab {
    pub h2_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub ca: Ca,
    pub token_key: SigningKey,
    pub registry: Arc<Mutex<Registry>>,
    stop: CancellationToken,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the router; `configure` adjusts the QUIC listener's settings.
pub async fn lab(configure: impl FnOnce(&mut QuicRouterConfig)) -> Lab {
    let (ca, server) = authority("data plane test CA");
    let token_key = SigningKey::generate().expect("token key");
    let tls =
        server_config(server.credentials(), vec![b"h2".to_vec()], ClientAuth::None).expect("tls");
    let mut registry = Registry::default();
    let router = Router::new(
        RouterConfig::new(tls, vec![token_key.verifying_key().clone()]),
        &mut registry,
    );
    let mut quic_config =
        QuicRouterConfig::new(server.credentials(), vec![ca.cert_der().clone()]).expect("quic");
    configure(&mut quic_config);
    let mut quic = QuicRouter::bind(
        quic_config,
        "127.0.0.1:0".parse().expect("addr"),
        &mut registry,
    )
    .expect("bind quic");
    quic.pair_with_h2(&router);
    let quic_addr = quic.local_addr().expect("quic addr");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind h2");
    let h2_addr = listener.local_addr().expect("h2 addr");
    let stop = CancellationToken::new();
    tokio::spawn(router.serve(listener, stop.clone().cancelled_owned()));
    tokio::spawn(quic.serve(stop.clone().cancelled_owned()));
    Lab {
        h2_addr,
        quic_addr,
        ca,
        token_key,
        registry: Arc::new(Mutex::new(registry)),
        stop,
    }
}

impl Lab {
    /// A certificate for `role` of `lease`, valid from `at` until `at + valid_for`, for
    /// the key `key_pem` (a new key when `None`).
    pub fn cert_for(
        &self,
        lease: &str,
        role: Role,
        at: OffsetDateTime,
        valid_for: time::Duration,
        key_pem: Option<&str>,
    ) -> LeaseCert {
        let holder = match role {
            Role::Client => "alice",
            Role::Exporter => "board-1",
        };
        lease_cert(&self.ca, lease, role, holder, at, at + valid_for, key_pem)
    }

    pub fn cert(&self, role: Role, valid_for: time::Duration) -> LeaseCert {
        self.cert_for(LEASE, role, OffsetDateTime::now_utc(), valid_for, None)
    }

    pub async fn connect(
        &self,
        cert: &LeaseCert,
    ) -> Result<Connection, jumpstarter_tunnel::ConnectError> {
        authority::connect(self.quic_addr, &self.ca, cert).await
    }

    pub async fn peer(&self, role: Role) -> Connection {
        let cert = self.cert(role, time::Duration::hours(1));
        self.connect(&cert).await.expect("connect")
    }

    pub fn token(&self, stream_id: &str, lease: &str, lifetime: time::Duration) -> String {
        let grant = StreamGrant {
            stream_id: stream_id.to_owned(),
            token_id: format!("jti-{stream_id}"),
            lease: format!("lab/{lease}"),
        };
        mint(&self.token_key, &grant, lifetime, OffsetDateTime::now_utc()).expect("mint")
    }

    pub async fn h2_client(&self) -> RouterServiceClient<Channel> {
        let channel = Endpoint::from_shared(format!("https://{}", self.h2_addr))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
                    .domain_name(HOST),
            )
            .expect("tls")
            .connect()
            .await
            .expect("connect h2");
        RouterServiceClient::new(channel)
    }

    pub fn metrics_text(&self) -> String {
        authority::metrics_text(&self.registry)
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
}

/// Deterministic blocks, numbered so that loss, duplication or reordering shows.
pub fn block(seed: u64, index: u64) -> Vec<u8> {
    let mut out = vec![0u8; BLOCK];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out[..8].copy_from_slice(&index.to_le_bytes());
    out
}

/// Writes `blocks` blocks to a QUIC stream and finishes it; returns their digest.
pub async fn quic_send(mut send: SendStream, seed: u64, blocks: u64) -> Vec<u8> {
    let mut digest = Sha256::new();
    for index in 0..blocks {
        let data = block(seed, index);
        digest.update(&data);
        send.write_all(&data).await.expect("quic write");
    }
    send.finish().expect("finish");
    digest.finalize().to_vec()
}

/// Reads a QUIC stream to its FIN; returns the digest and length.
pub async fn quic_receive(mut recv: RecvStream) -> (Vec<u8>, u64) {
    let mut digest = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = recv.read_chunk(BLOCK, true).await.expect("quic read") {
        len += chunk.bytes.len() as u64;
        digest.update(&chunk.bytes);
    }
    (digest.finalize().to_vec(), len)
}

pub async fn read_reset_code(recv: &mut RecvStream) -> u64 {
    let mut buf = [0u8; 16];
    match timeout(WAIT, recv.read(&mut buf))
        .await
        .expect("reset in time")
    {
        Err(ReadError::Reset(code)) => code.into_inner(),
        other => panic!("expected a reset, got {other:?}"),
    }
}
