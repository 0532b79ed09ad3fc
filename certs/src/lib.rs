//! Jumpstarter's PKI as pure functions of an explicit `now`.
//!
//! The controller keeps one certificate authority. With it, it issues TLS server certificates
//! for its own gRPC port and for routers, and signs a short-lived client certificate for each
//! side of each lease from a CSR, so private keys never leave the requester. Routers admit QUIC
//! peers by verifying the chain, the validity window and the lease identity in the certificate.
//!
//! Map:
//! - [`authority`]: [`Ca`] (generate, load, [`Ca::issue_server_cert`], [`Ca::sign_lease_csr`]).
//! - [`identity`]: [`LeaseIdentity`] and its `spiffe://jumpstarter.dev/...` URI SAN encoding.
//! - [`request`]: [`generate_csr`], the requester's key pair and CSR; [`renewal_csr`] for the same key.
//! - [`verification`]: [`verify_lease_cert`] with an [`Expectation`] about role and lease.
//! - [`tls`]: rustls [`server_config`] and [`client_config`], TLS 1.3 only, ring provider passed
//!   explicitly.
//! - [`reloadable`]: [`ServingCert`] and [`TrustedRoots`], server TLS material replaced while
//!   a server runs, and [`reloadable_server_config`].
//! - [`error`]: the crate's [`Error`].
//!
//! Keys are ECDSA P-256. A router using [`server_config`] with [`ClientAuth::Required`] has the
//! chain verified during the handshake, and then reads the peer's identity with
//! [`LeaseIdentity::from_cert_der`] (or re-runs [`verify_lease_cert`] to also check an
//! [`Expectation`]).

pub mod any_server;
pub mod authority;
pub mod error;
pub mod identity;
mod pem;
pub mod reloadable;
pub mod request;
pub mod tls;
pub mod verification;

pub use any_server::AnyServerCertificate;
pub use authority::{
    Ca, IssuedCert, IssuedLeaseCert, LeaseCertPolicy, SERVER_BACKDATE, ServerCertParams,
};
pub use error::{Error, Result};
pub use identity::{IDENTITY_URI_PREFIX, LeaseIdentity, Role};
pub use reloadable::{ServingCert, TrustedRoots, reloadable_server_config};
pub use request::{CertificateRequest, generate_csr, renewal_csr};
pub use tls::{ClientAuth, TlsCredentials, client_config, server_config};
pub use verification::{Expectation, verify_lease_cert};
