//! Many QUIC connections to the router from a few UDP sockets, each with its own lease
//! certificate: the idle and restart scenarios' simulated peers. (The `tunnel` library
//! gives every connection a socket of its own, which thousands of peers in one process
//! do not need.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use jumpstarter_certs::{Role, TlsCredentials, client_config};
use jumpstarter_tunnel::{ALPN, Header};
use quinn::crypto::rustls::QuicClientConfig;

use crate::lab::{Lab, SERVER_NAME};

/// Client sockets shared by the connections.
#[derive(Debug)]
pub(crate) struct Swarm {
    endpoints: Vec<quinn::Endpoint>,
    lab: Arc<Lab>,
    router: SocketAddr,
    next: AtomicUsize,
}

impl Swarm {
    pub(crate) fn new(lab: Arc<Lab>, router: SocketAddr, sockets: usize) -> anyhow::Result<Swarm> {
        let endpoints = (0..sockets.max(1))
            .map(|_| quinn::Endpoint::client(([127, 0, 0, 1], 0).into()))
            .collect::<Result<Vec<_>, _>>()
            .context("opening a UDP socket")?;
        Ok(Swarm {
            endpoints,
            lab,
            router,
            next: AtomicUsize::new(0),
        })
    }

    /// A connection with a fresh certificate of `role` for `lease`.
    pub(crate) async fn connect(
        &self,
        lease: &str,
        role: Role,
    ) -> anyhow::Result<quinn::Connection> {
        let (chain, key) = self.lab.lease_cert(lease, role)?;
        let tls = client_config(
            self.lab.roots(),
            Some(TlsCredentials { chain, key }),
            vec![ALPN.to_vec()],
        )?;
        let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
        config.transport_config(Arc::new(jumpstarter_tunnel::quic::transport_config()));
        let endpoint =
            &self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len()];
        let connection = endpoint
            .connect_with(config, self.router, SERVER_NAME)?
            .await
            .context("QUIC handshake with the router")?;
        Ok(connection)
    }
}

/// Opens session `id` on `connection`: a stream starting with the session header.
pub(crate) async fn open_session(
    connection: &quinn::Connection,
    id: &str,
) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream)> {
    crate::pipe::bounded("opening an idle session", async {
        let (mut send, recv) = connection.open_bi().await?;
        send.write_all(&Header::new(id)?.encode()).await?;
        Ok((send, recv))
    })
    .await
}
