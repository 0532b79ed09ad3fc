//! The edge's own certificate authority, generated at start and kept in memory: the tool
//! behind the edge trusts it (through the written config's `tls.ca`) and the edge's local
//! listener presents a certificate it signed.

use std::net::SocketAddr;

use jumpstarter_certs::{Ca, ClientAuth, ServerCertParams, server_config};
use time::OffsetDateTime;

/// How long the local CA and certificate are valid: longer than any edge process lives.
const VALIDITY: time::Duration = time::Duration::days(3650);

/// The local CA and the TLS configuration of the local listener.
#[derive(Debug)]
pub(crate) struct LocalCa {
    /// The CA certificate, PEM: what the tool's config trusts.
    pub(crate) ca_pem: String,
    /// TLS (ALPN h2) presenting a certificate for the listener's address and `localhost`.
    pub(crate) tls: rustls::ServerConfig,
}

impl LocalCa {
    /// A new CA and a server certificate for `advertised` (the address the tool dials).
    pub(crate) fn generate(
        advertised: SocketAddr,
        now: OffsetDateTime,
    ) -> Result<LocalCa, jumpstarter_certs::Error> {
        let ca = Ca::generate("jumpstarter edge local CA", now, VALIDITY)?;
        let params = ServerCertParams {
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec![advertised.ip()],
            validity: VALIDITY,
        };
        let issued = ca.issue_server_cert(&params, now)?;
        let tls = server_config(issued.credentials(), vec![b"h2".to_vec()], ClientAuth::None)?;
        Ok(LocalCa {
            ca_pem: ca.cert_pem().to_owned(),
            tls,
        })
    }
}
