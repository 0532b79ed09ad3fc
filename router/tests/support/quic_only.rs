//! A QUIC listener alone (no h2 router, no router tokens) on 127.0.0.1 port 0, and lease
//! certificates for its peers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use jumpstarter_certs::{Ca, Role};
use jumpstarter_router::{QuicRouter, QuicRouterConfig};
use jumpstarter_tunnel::Connection;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::authority::{self, LeaseCert, authority};

/// A QUIC listener; it stops when this is dropped.
pub struct TestRouter {
    pub addr: SocketAddr,
    pub ca: Ca,
    registry: Arc<Mutex<Registry>>,
    _shutdown: oneshot::Sender<()>,
}

pub async fn start(configure: impl FnOnce(&mut QuicRouterConfig)) -> TestRouter {
    let (ca, server) = authority("quic test CA");
    let mut config =
        QuicRouterConfig::new(server.credentials(), vec![ca.cert_der().clone()]).expect("config");
    configure(&mut config);
    let mut registry = Registry::default();
    let router = QuicRouter::bind(config, "127.0.0.1:0".parse().expect("addr"), &mut registry)
        .expect("bind");
    let addr = router.local_addr().expect("local addr");
    let (shutdown, signal) = oneshot::channel::<()>();
    tokio::spawn(router.serve(async move {
        let _ = signal.await;
    }));
    TestRouter {
        addr,
        ca,
        registry: Arc::new(Mutex::new(registry)),
        _shutdown: shutdown,
    }
}

/// A lease certificate from `ca` for `holder` as `role` of lease-1, signed at `at` for a
/// lease ending at `lease_end`.
pub fn lease_cert(
    ca: &Ca,
    role: Role,
    holder: &str,
    at: OffsetDateTime,
    lease_end: OffsetDateTime,
) -> LeaseCert {
    authority::lease_cert(ca, "lease-1", role, holder, at, lease_end, None)
}

impl TestRouter {
    pub async fn peer(&self, role: Role, holder: &str) -> Connection {
        let now = OffsetDateTime::now_utc();
        let cert = lease_cert(&self.ca, role, holder, now, now + time::Duration::hours(1));
        self.connect(cert).await.expect("connect")
    }

    pub async fn connect(
        &self,
        cert: LeaseCert,
    ) -> Result<Connection, jumpstarter_tunnel::ConnectError> {
        authority::connect(self.addr, &self.ca, &cert).await
    }

    pub fn metrics_text(&self) -> String {
        authority::metrics_text(&self.registry)
    }
}
