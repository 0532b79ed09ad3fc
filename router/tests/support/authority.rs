//! The certificates every router test needs, minted in the test: a CA, the router's server
//! certificate for [`HOST`] and 127.0.0.1, lease certificates for QUIC peers; and reading
//! the metrics a test registered.

use std::net::SocketAddr;
use std::sync::Mutex;

use jumpstarter_certs::{
    Ca, IssuedCert, LeaseCertPolicy, LeaseIdentity, Role, ServerCertParams, generate_csr,
    renewal_csr,
};
use jumpstarter_tunnel::{Connection, QuicPeer};
use prometheus_client::registry::Registry;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::time::timeout;

use super::WAIT;

/// The name the router's server certificate is for.
pub const HOST: &str = "router.test";

/// Namespace and lease uid of every lease certificate the tests mint.
pub const NAMESPACE: &str = "lab";
pub const LEASE_UID: &str = "0b7c4a52-1f0e-4c55-9d7e-3b7f2f6f9a10";

/// A CA named `name`, valid for a day, and a server certificate from it.
pub fn authority(name: &str) -> (Ca, IssuedCert) {
    let now = OffsetDateTime::now_utc();
    let ca = Ca::generate(name, now, time::Duration::days(1)).expect("CA");
    let server = ca
        .issue_server_cert(
            &ServerCertParams {
                dns_names: vec![HOST.to_owned()],
                ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
                validity: time::Duration::days(1),
            },
            now,
        )
        .expect("server cert");
    (ca, server)
}

/// A lease certificate, its key (DER and PEM).
pub struct LeaseCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub key_pem: String,
}

/// A lease certificate from `ca` for `holder` as `role` of `lease`, signed at `at` for a
/// lease ending at `lease_end`, for the key `key_pem` (a new key when `None`).
pub fn lease_cert(
    ca: &Ca,
    lease: &str,
    role: Role,
    holder: &str,
    at: OffsetDateTime,
    lease_end: OffsetDateTime,
    key_pem: Option<&str>,
) -> LeaseCert {
    let request = match key_pem {
        Some(pem) => renewal_csr(pem, holder).expect("renewal csr"),
        None => generate_csr(holder).expect("csr"),
    };
    let identity = LeaseIdentity {
        namespace: NAMESPACE.to_owned(),
        lease_name: lease.to_owned(),
        lease_uid: LEASE_UID.to_owned(),
        role,
        holder: holder.to_owned(),
    };
    let policy = LeaseCertPolicy {
        lease_end,
        max_validity: time::Duration::hours(1),
        backdate: time::Duration::ZERO,
    };
    let issued = ca
        .sign_lease_csr(&request.csr_der, &identity, &policy, at)
        .expect("lease cert");
    LeaseCert {
        chain: issued.chain_der,
        key: PrivateKeyDer::from_pem_slice(request.key_pem.as_bytes()).expect("key"),
        key_pem: request.key_pem,
    }
}

/// Connects a QUIC peer with `cert` to the router at `addr`, trusting `ca`.
pub async fn connect(
    addr: SocketAddr,
    ca: &Ca,
    cert: &LeaseCert,
) -> Result<Connection, jumpstarter_tunnel::ConnectError> {
    let roots = vec![ca.cert_der().clone()];
    timeout(
        WAIT,
        QuicPeer::connect(addr, HOST, roots, cert.chain.clone(), cert.key.clone_key()),
    )
    .await
    .expect("connect in time")
}

/// The metrics of `registry` in text format.
pub fn metrics_text(registry: &Mutex<Registry>) -> String {
    let mut text = String::new();
    let registry = registry.lock().expect("registry");
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    text
}
