//! Real TLS 1.3 handshakes between `server_config` and `client_config`, driven in memory.

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jumpstarter_certs::{
    Ca, ClientAuth, Expectation, LeaseCertPolicy, LeaseIdentity, Role, ServerCertParams,
    TlsCredentials, client_config, generate_csr, server_config, verify_lease_cert,
};
use rustls::{ClientConnection, Connection, ServerConnection};
use rustls_pki_types::ServerName;
use std::io::{Read, Write};
use time::{Duration, OffsetDateTime};

const ALPN: &[u8] = b"jumpstarter-router/1";
const HOST: &str = "router.jumpstarter.test";

// rustls checks certificates against the system clock, so these tests mint at the real now.
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn router_credentials(ca: &Ca) -> TlsCredentials {
    ca.issue_server_cert(
        &ServerCertParams {
            dns_names: vec![HOST.to_owned()],
            ip_addresses: vec![],
            validity: Duration::days(1),
        },
        now(),
    )
    .unwrap()
    .credentials()
}

fn lease_credentials(ca: &Ca, role: Role) -> TlsCredentials {
    let identity = LeaseIdentity {
        namespace: "lab".to_owned(),
        lease_name: "lease-42".to_owned(),
        lease_uid: "0f8e7a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b".to_owned(),
        role,
        holder: "alice".to_owned(),
    };
    let request = generate_csr("alice").unwrap();
    let policy = LeaseCertPolicy {
        lease_end: now() + Duration::hours(1),
        max_validity: Duration::minutes(30),
        backdate: Duration::minutes(1),
    };
    let issued = ca
        .sign_lease_csr(&request.csr_der, &identity, &policy, now())
        .unwrap();
    TlsCredentials::from_pem(&issued.chain_pem, &request.key_pem).unwrap()
}

/// Moves all pending TLS records from `from` to `to`, then lets `to` process them.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut slice = buf.as_slice();
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
    }
    to.process_new_packets().map(|_| ())
}

enum Failure {
    Client(rustls::Error),
    Server(rustls::Error),
}

fn handshake(client: &mut Connection, server: &mut Connection) -> Result<(), Failure> {
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        transfer(client, server).map_err(Failure::Server)?;
        transfer(server, client).map_err(Failure::Client)?;
    }
    panic!("handshake did not finish in 10 round trips");
}

fn connect(server: rustls::ServerConfig, client: rustls::ClientConfig) -> (Connection, Connection) {
    let client = ClientConnection::new(Arc::new(client), ServerName::try_from(HOST).unwrap())
        .unwrap()
        .into();
    let server = ServerConnection::new(Arc::new(server)).unwrap().into();
    (client, server)
}

#[test]
fn mtls_handshake_negotiates_tls13_alpn_and_identity() {
    let ca = Ca::generate("ca", now(), Duration::days(2)).unwrap();
    let roots = vec![ca.cert_der().clone()];
    let server = server_config(
        router_credentials(&ca),
        vec![b"h2".to_vec(), ALPN.to_vec()],
        ClientAuth::Required(roots.clone()),
    )
    .unwrap();
    let client = client_config(
        roots.clone(),
        Some(lease_credentials(&ca, Role::Exporter)),
        vec![ALPN.to_vec()],
    )
    .unwrap();
    let (mut client, mut server) = connect(server, client);
    if handshake(&mut client, &mut server).is_err() {
        panic!("handshake failed");
    }
    assert_eq!(client.alpn_protocol(), Some(ALPN));
    assert_eq!(server.alpn_protocol(), Some(ALPN));
    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    let peer = server.peer_certificates().unwrap().to_vec();
    let identity = LeaseIdentity::from_cert_der(&peer[0]).unwrap();
    assert_eq!(identity.role, Role::Exporter);
    let verified = verify_lease_cert(
        &roots,
        &peer,
        now(),
        &Expectation::any().with_role(Role::Exporter),
    )
    .unwrap();
    assert_eq!(verified, identity);

    // Application data flows.
    client.writer().write_all(b"ping").unwrap();
    transfer(&mut client, &mut server).unwrap();
    let mut got = [0u8; 4];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
fn client_rejects_a_server_from_another_ca() {
    let ca = Ca::generate("ca", now(), Duration::days(2)).unwrap();
    let other = Ca::generate("other", now(), Duration::days(2)).unwrap();
    let server = server_config(
        router_credentials(&other),
        vec![ALPN.to_vec()],
        ClientAuth::None,
    )
    .unwrap();
    let client = client_config(vec![ca.cert_der().clone()], None, vec![ALPN.to_vec()]).unwrap();
    let (mut client, mut server) = connect(server, client);
    match handshake(&mut client, &mut server) {
        Err(Failure::Client(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))) => {}
        Err(Failure::Client(e) | Failure::Server(e)) => panic!("unexpected failure: {e}"),
        Ok(()) => panic!("handshake with a server from another CA succeeded"),
    }
}

#[test]
fn server_rejects_a_client_from_another_ca_or_without_a_cert() {
    let ca = Ca::generate("ca", now(), Duration::days(2)).unwrap();
    let other = Ca::generate("other", now(), Duration::days(2)).unwrap();
    let roots = vec![ca.cert_der().clone()];
    let make_server = || {
        server_config(
            router_credentials(&ca),
            vec![ALPN.to_vec()],
            ClientAuth::Required(roots.clone()),
        )
        .unwrap()
    };

    let client = client_config(
        roots.clone(),
        Some(lease_credentials(&other, Role::Client)),
        vec![ALPN.to_vec()],
    )
    .unwrap();
    let (mut client, mut server) = connect(make_server(), client);
    match handshake(&mut client, &mut server) {
        Err(Failure::Server(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ))) => {}
        Err(Failure::Client(e) | Failure::Server(e)) => panic!("unexpected failure: {e}"),
        Ok(()) => panic!("client from another CA was admitted"),
    }

    let client = client_config(roots.clone(), None, vec![ALPN.to_vec()]).unwrap();
    let (mut client, mut server) = connect(make_server(), client);
    match handshake(&mut client, &mut server) {
        Err(Failure::Server(rustls::Error::NoCertificatesPresented)) => {}
        Err(Failure::Client(e) | Failure::Server(e)) => panic!("unexpected failure: {e}"),
        Ok(()) => panic!("client without a certificate was admitted"),
    }
}

#[test]
fn mismatched_alpn_fails() {
    let ca = Ca::generate("ca", now(), Duration::days(2)).unwrap();
    let server = server_config(
        router_credentials(&ca),
        vec![b"h2".to_vec()],
        ClientAuth::None,
    )
    .unwrap();
    let client = client_config(vec![ca.cert_der().clone()], None, vec![ALPN.to_vec()]).unwrap();
    let (mut client, mut server) = connect(server, client);
    match handshake(&mut client, &mut server) {
        Err(Failure::Server(rustls::Error::NoApplicationProtocol)) => {}
        Err(Failure::Client(e) | Failure::Server(e)) => panic!("unexpected failure: {e}"),
        Ok(()) => panic!("handshake without a common ALPN protocol succeeded"),
    }
}
