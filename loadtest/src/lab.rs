//! The load test's own PKI and token key: a CA, the router's server certificate, per-lease
//! certificates and router tokens, all minted here so that the router runs without a
//! controller. The files a router process needs are written into the work directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use jumpstarter_certs::{
    Ca, IssuedCert, LeaseCertPolicy, LeaseIdentity, Role, ServerCertParams, TlsCredentials,
    generate_csr,
};
use jumpstarter_token::SigningKey;
use jumpstarter_token::router::{StreamGrant, mint};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

/// The name the router's certificate carries (besides 127.0.0.1).
pub(crate) const SERVER_NAME: &str = "router.loadtest";

/// Namespace of every lease identity the load test mints.
const NAMESPACE: &str = "loadtest";

/// A lease certificate chain (leaf first) and its key.
pub(crate) type LeaseCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The CA, the router's certificate, the token key and the files made from them.
#[derive(Debug)]
pub(crate) struct Lab {
    ca: Ca,
    server: IssuedCert,
    token_key: SigningKey,
    files: RouterFiles,
    next_id: AtomicU64,
}

/// Paths of the PEM files a `jumpstarter-router` process reads.
#[derive(Debug, Clone)]
pub(crate) struct RouterFiles {
    pub(crate) tls_cert: PathBuf,
    pub(crate) tls_key: PathBuf,
    pub(crate) token_public_keys: PathBuf,
    pub(crate) client_ca: PathBuf,
}

impl Lab {
    /// Mints everything and writes the router's files into `dir`.
    pub(crate) fn new(dir: &Path) -> anyhow::Result<Lab> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = OffsetDateTime::now_utc();
        let ca = Ca::generate("jumpstarter load test CA", now, time::Duration::days(1))?;
        let server = ca.issue_server_cert(
            &ServerCertParams {
                dns_names: vec![SERVER_NAME.to_owned()],
                ip_addresses: vec![[127, 0, 0, 1].into()],
                validity: time::Duration::days(1),
            },
            now,
        )?;
        let token_key = SigningKey::generate()?;
        let files = RouterFiles {
            tls_cert: dir.join("router.crt"),
            tls_key: dir.join("router.key"),
            token_public_keys: dir.join("router-token-keys.pem"),
            client_ca: dir.join("lease-ca.pem"),
        };
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
        };
        write(&files.tls_cert, &server.chain_pem)?;
        write(&files.tls_key, &server.key_pem)?;
        write(
            &files.token_public_keys,
            token_key.verifying_key().to_public_pem(),
        )?;
        write(&files.client_ca, ca.cert_pem())?;
        Ok(Lab {
            ca,
            server,
            token_key,
            files,
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn files(&self) -> &RouterFiles {
        &self.files
    }

    /// The roots that verify the router (and the direct baselines' servers).
    pub(crate) fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.ca.cert_der().clone()]
    }

    /// The CA certificate, PEM.
    pub(crate) fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The router's certificate and key, for the in-process baseline servers.
    pub(crate) fn server_credentials(&self) -> anyhow::Result<TlsCredentials> {
        Ok(TlsCredentials::from_pem(
            &self.server.chain_pem,
            &self.server.key_pem,
        )?)
    }

    /// A fresh name, unique within this run.
    pub(crate) fn fresh(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A certificate of `role` for lease `lease`, valid for an hour.
    pub(crate) fn lease_cert(&self, lease: &str, role: Role) -> anyhow::Result<LeaseCert> {
        let holder = format!("{}-{lease}", role.as_str());
        let request = generate_csr(&holder)?;
        let identity = LeaseIdentity {
            namespace: NAMESPACE.to_owned(),
            lease_name: lease.to_owned(),
            lease_uid: format!("uid-{lease}"),
            role,
            holder,
        };
        let now = OffsetDateTime::now_utc();
        let policy = LeaseCertPolicy {
            lease_end: now + time::Duration::hours(1),
            max_validity: time::Duration::hours(1),
            backdate: time::Duration::minutes(1),
        };
        let issued = self
            .ca
            .sign_lease_csr(&request.csr_der, &identity, &policy, now)?;
        let key = PrivateKeyDer::from_pem_slice(request.key_pem.as_bytes())
            .context("reading the lease key")?;
        Ok((issued.chain_der, key))
    }

    /// A router token for stream `stream_id` of lease `lease`, valid for 30 minutes.
    pub(crate) fn router_token(&self, lease: &str, stream_id: &str) -> anyhow::Result<String> {
        let grant = StreamGrant {
            stream_id: stream_id.to_owned(),
            token_id: format!("jti-{stream_id}"),
            lease: format!("{NAMESPACE}/{lease}"),
        };
        Ok(mint(
            &self.token_key,
            &grant,
            time::Duration::minutes(30),
            OffsetDateTime::now_utc(),
        )?)
    }
}
