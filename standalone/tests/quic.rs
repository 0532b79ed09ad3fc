//! The QUIC data plane of `jumpstarter serve`: the real binary on free loopback ports with a
//! fresh data directory; a client and an exporter created with `jumpstarter admin`, a lease
//! granted through the gRPC API, per-lease certificates issued by the controller, and a
//! session through the advertised QUIC router carrying 16 MiB each way intact. A lease the
//! exporter is not assigned to yields no certificate. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jumpstarter_e2e::{ConfigCredentials, free_port};
use jumpstarter_proto::jumpstarter::client::v1::client_service_client::ClientServiceClient;
use jumpstarter_proto::jumpstarter::client::v1::{
    CreateLeaseRequest, DeleteLeaseRequest, GetLeaseRequest, Lease,
};
use jumpstarter_proto::jumpstarter::quic::v1::IssueLeaseCertificateRequest;
use jumpstarter_proto::jumpstarter::quic::v1::lease_certificate_service_client::LeaseCertificateServiceClient;
use jumpstarter_proto::jumpstarter::v1::controller_service_client::ControllerServiceClient;
use jumpstarter_proto::jumpstarter::v1::{
    DriverInstanceReport, ExporterStatus, RegisterRequest, ReportStatusRequest, StatusRequest,
};
use jumpstarter_tunnel::quic::{Connection, QuicPeer};
use quinn::{RecvStream, SendStream};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::time::timeout;
use tonic::transport::Channel;

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(60);
const BLOCK: usize = 64 * 1024;
/// 16 MiB in blocks.
const BLOCKS: u64 = 16 * 1024 * 1024 / BLOCK as u64;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
        .port()
}

/// A running `jumpstarter serve` with QUIC; killed when dropped.
struct Service {
    process: ServeProcess,
    data_dir: PathBuf,
}

impl Service {
    fn start(data_dir: &Path, quic_listen: &str, extra: &[&str]) -> Service {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--router-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--quic-listen", quic_listen])
            .args(extra)
            .env_remove("JUMPSTARTER_NAMESPACE")
            .env_remove("JUMPSTARTER_NO_QUIC")
            .stdin(Stdio::null());
        let log = data_dir.with_file_name("serve.log");
        Service {
            process: ServeProcess::spawn(command, data_dir, log, WAIT),
            data_dir: data_dir.to_owned(),
        }
    }

    fn logs(&self) -> String {
        self.process.logs()
    }

    /// `jumpstarter admin create KIND NAME ARGS --out FILE`; the written configuration.
    fn create(&self, kind: &str, name: &str, args: &[&str]) -> PathBuf {
        let out = self.data_dir.with_file_name(format!("{name}.yaml"));
        let output = Command::new(BIN)
            .args(["admin", "create", kind, name])
            .args(args)
            .arg("--out")
            .arg(&out)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("JUMPSTARTER_NAMESPACE")
            .env_remove("JUMPSTARTER_KUBECONFIG")
            .env_remove("JUMPSTARTER_KUBERNETES")
            .stdin(Stdio::null())
            .output()
            .expect("run jumpstarter admin");
        assert!(
            output.status.success(),
            "admin create {kind} {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    }
}

/// A client or exporter talking gRPC with the credentials of its configuration file.
struct Caller {
    channel: Channel,
    kind: &'static str,
    credentials: ConfigCredentials,
}

impl Caller {
    async fn from_config(path: &Path, kind: &'static str) -> Caller {
        let credentials = ConfigCredentials::read(path).expect("config");
        let channel = timeout(
            WAIT,
            credentials
                .tls_endpoint(&credentials.endpoint)
                .expect("endpoint")
                .timeout(WAIT)
                .connect(),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        Caller {
            channel,
            kind,
            credentials,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.credentials.request(self.kind, message)
    }

    /// A CSR signed for `lease`: the issued certificate response and the private key.
    async fn lease_certificate(
        &self,
        lease: &str,
    ) -> Result<
        (
            jumpstarter_proto::jumpstarter::quic::v1::IssueLeaseCertificateResponse,
            String,
        ),
        tonic::Status,
    > {
        self.lease_certificate_for(lease, None).await
    }

    /// Like [`Caller::lease_certificate`], for the existing key `key_pem` when given.
    async fn lease_certificate_for(
        &self,
        lease: &str,
        key_pem: Option<&str>,
    ) -> Result<
        (
            jumpstarter_proto::jumpstarter::quic::v1::IssueLeaseCertificateResponse,
            String,
        ),
        tonic::Status,
    > {
        let csr = match key_pem {
            Some(pem) => jumpstarter_certs::renewal_csr(pem, &self.credentials.name).expect("CSR"),
            None => jumpstarter_certs::generate_csr(&self.credentials.name).expect("CSR"),
        };
        let mut service = LeaseCertificateServiceClient::new(self.channel.clone());
        let response = service
            .issue_lease_certificate(self.request(IssueLeaseCertificateRequest {
                lease_name: lease.to_owned(),
                csr: csr.csr_der.clone(),
            }))
            .await?;
        Ok((response.into_inner(), csr.key_pem))
    }

    /// Connects to the lease's QUIC router with a certificate issued for `lease`.
    async fn connect_quic(&self, lease: &str, expected_role: &str) -> Connection {
        self.connect_quic_with_key(lease, expected_role).await.0
    }

    /// Like [`Caller::connect_quic`]; also returns the private key (PEM), for renewals.
    async fn connect_quic_with_key(
        &self,
        lease: &str,
        expected_role: &str,
    ) -> (Connection, String) {
        let (issued, key_pem) = timeout(WAIT, self.lease_certificate(lease))
            .await
            .expect("issued in time")
            .expect("lease certificate");
        assert_eq!(issued.role, expected_role);
        let endpoint = issued.router_quic_endpoint.clone();
        assert!(!endpoint.is_empty(), "no QUIC endpoint advertised");
        let addr: SocketAddr = endpoint.parse().expect("QUIC endpoint is host:port");
        let pems = |pem: &str| {
            CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("PEM certificates")
        };
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("private key");
        let connection = timeout(
            WAIT,
            QuicPeer::connect(
                addr,
                &addr.ip().to_string(),
                pems(&issued.ca_pem),
                pems(&issued.chain_pem),
                key,
            ),
        )
        .await
        .expect("QUIC handshake in time")
        .expect("QUIC connect");
        (connection, key_pem)
    }

    /// Asks for a renewed certificate for `key_pem` and presents it on `connection`.
    async fn renew(
        &self,
        connection: &Connection,
        lease: &str,
        key_pem: &str,
    ) -> Result<(), String> {
        let (issued, _) = timeout(WAIT, self.lease_certificate_for(lease, Some(key_pem)))
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        let chain = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM certificates");
        timeout(WAIT, connection.renew(&chain))
            .await
            .map_err(|_| "no renewal answer in time".to_owned())?
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

/// A client holding a ready lease on an online exporter.
struct Leased {
    client: Caller,
    exporter: Caller,
    leases: ClientServiceClient<Channel>,
    lease_name: String,
    /// `namespaces/<ns>/leases/<name>`.
    lease_path: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

fn lease_request(selector: &str) -> CreateLeaseRequest {
    CreateLeaseRequest {
        parent: "namespaces/default".to_owned(),
        lease_id: String::new(),
        lease: Some(Lease {
            selector: selector.to_owned(),
            duration: Some(prost_types_duration(600)),
            ..Default::default()
        }),
    }
}

/// Creates client c1 and exporter e1 (`board=q`), brings e1 online and leases it.
async fn leased(service: &Service, quic_listen: &str) -> Leased {
    let client_config = service.create("client", "c1", &[]);
    let exporter_config = service.create("exporter", "e1", &["-l", "board=q"]);
    // The start-up message (printed right after the admin socket opens) names the endpoint.
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&service.process.log)
        .unwrap_or_default()
        .contains(&format!("QUIC router: {quic_listen} (QUIC"))
    {
        assert!(
            Instant::now() < deadline,
            "the start-up message names no QUIC endpoint:\n{}",
            service.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Caller::from_config(&client_config, "Client").await;
    let exporter = Caller::from_config(&exporter_config, "Exporter").await;

    // The exporter comes online and keeps a status stream open.
    let mut controller = ControllerServiceClient::new(exporter.channel.clone());
    timeout(
        WAIT,
        controller.register(exporter.request(RegisterRequest {
            labels: [("board".to_owned(), "q".to_owned())].into(),
            reports: vec![DriverInstanceReport {
                uuid: "00000000-0000-4000-8000-000000000001".to_owned(),
                description: Some("board q".to_owned()),
                ..Default::default()
            }],
        })),
    )
    .await
    .expect("register in time")
    .expect("register");
    timeout(
        WAIT,
        controller.report_status(exporter.request(ReportStatusRequest {
            status: ExporterStatus::Available.into(),
            message: None,
            release_lease: None,
        })),
    )
    .await
    .expect("report in time")
    .expect("report status");
    let mut status = timeout(WAIT, controller.status(exporter.request(StatusRequest {})))
        .await
        .expect("status in time")
        .expect("status stream")
        .into_inner();
    let heartbeat = tokio::spawn(async move { while let Ok(Some(_)) = status.message().await {} });

    // The client leases it.
    let mut leases = ClientServiceClient::new(client.channel.clone());
    let lease = timeout(
        WAIT,
        leases.create_lease(client.request(lease_request("board=q"))),
    )
    .await
    .expect("create in time")
    .expect("create lease")
    .into_inner();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = timeout(
            WAIT,
            leases.get_lease(client.request(GetLeaseRequest {
                name: lease.name.clone(),
            })),
        )
        .await
        .expect("get in time")
        .expect("get lease")
        .into_inner();
        let ready = current
            .conditions
            .iter()
            .any(|c| c.r#type.as_deref() == Some("Ready") && c.status.as_deref() == Some("True"));
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lease not ready: {current:?}\n{}",
            service.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lease_name = lease.name.rsplit('/').next().expect("name").to_owned();
    Leased {
        client,
        exporter,
        leases,
        lease_name,
        lease_path: lease.name,
        heartbeat,
    }
}

/// Sends `BLOCKS` numbered blocks of pseudo-random bytes seeded by `seed`; finishes; returns
/// the digest of what was sent.
async fn send_blocks(mut send: SendStream, seed: u64) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK];
    let mut state = seed | 1;
    for chunk in block.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let mut digest = Sha256::new();
    for index in 0..BLOCKS {
        block[..8].copy_from_slice(&index.to_le_bytes());
        digest.update(&block);
        send.write_all(&block).await.expect("write");
    }
    send.finish().expect("finish");
    digest.finalize().to_vec()
}

/// Reads to the end; the digest and the length.
async fn receive_all(mut recv: RecvStream) -> (Vec<u8>, u64) {
    let mut digest = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = recv.read_chunk(BLOCK, true).await.expect("read") {
        len += chunk.bytes.len() as u64;
        digest.update(&chunk.bytes);
    }
    (digest.finalize().to_vec(), len)
}

fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::FailedPrecondition
    )
}

#[tokio::test]
async fn lease_certificates_carry_sixteen_mib_each_way_through_the_quic_router() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let quic_listen = format!("127.0.0.1:{}", free_udp_port());
    let service = Service::start(&data_dir, &quic_listen, &[]);

    let Leased {
        client,
        exporter,
        mut leases,
        lease_name,
        heartbeat,
        ..
    } = leased(&service, &quic_listen).await;

    // Both sides get a certificate and meet on session s1.
    let (client_quic, exporter_quic) = tokio::join!(
        client.connect_quic(&lease_name, "client"),
        exporter.connect_quic(&lease_name, "exporter")
    );
    let (c_send, c_recv) = timeout(WAIT, client_quic.open_session("s1"))
        .await
        .expect("open in time")
        .expect("client session");
    let (e_send, e_recv) = timeout(WAIT, exporter_quic.open_session("s1"))
        .await
        .expect("open in time")
        .expect("exporter session");
    let up = tokio::spawn(send_blocks(c_send, 11));
    let down = tokio::spawn(send_blocks(e_send, 29));
    let at_exporter = tokio::spawn(receive_all(e_recv));
    let at_client = tokio::spawn(receive_all(c_recv));
    let (up, down, at_exporter, at_client) = timeout(WAIT * 2, async {
        (
            up.await.expect("up"),
            down.await.expect("down"),
            at_exporter.await.expect("exporter reads"),
            at_client.await.expect("client reads"),
        )
    })
    .await
    .expect("transfer in time");
    let total = BLOCKS * BLOCK as u64;
    assert_eq!(at_exporter, (up, total), "client to exporter intact");
    assert_eq!(at_client, (down, total), "exporter to client intact");
    assert_ne!(at_exporter.0, at_client.0, "the two directions differ");

    // A second lease of the client that e1 does not serve (nothing matches): no
    // certificate for either side.
    let other = timeout(
        WAIT,
        leases.create_lease(client.request(lease_request("board=none"))),
    )
    .await
    .expect("create in time")
    .expect("create lease")
    .into_inner();
    let other_name = other.name.rsplit('/').next().expect("name").to_owned();
    let as_exporter = timeout(WAIT, exporter.lease_certificate(&other_name))
        .await
        .expect("answer in time")
        .expect_err("the exporter is not a party to the lease");
    assert!(refused(&as_exporter), "{as_exporter:?}");
    let as_client = timeout(WAIT, client.lease_certificate(&other_name))
        .await
        .expect("answer in time")
        .expect_err("the lease has no exporter");
    assert!(refused(&as_client), "{as_client:?}");

    client_quic.close();
    exporter_quic.close();
    heartbeat.abort();
    drop(service);
}

#[tokio::test]
async fn renewals_keep_quic_sessions_past_their_certificate_and_a_release_ends_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let quic_listen = format!("127.0.0.1:{}", free_udp_port());
    let service = Service::start(
        &data_dir,
        &quic_listen,
        &["--lease-cert-max-validity", "4s"],
    );
    let Leased {
        client,
        exporter,
        mut leases,
        lease_name,
        lease_path,
        heartbeat,
    } = leased(&service, &quic_listen).await;
    let ((client_quic, client_key), (exporter_quic, exporter_key)) = tokio::join!(
        client.connect_quic_with_key(&lease_name, "client"),
        exporter.connect_quic_with_key(&lease_name, "exporter")
    );
    let (mut c_send, _c_recv) = timeout(WAIT, client_quic.open_session("live"))
        .await
        .expect("open in time")
        .expect("client session");
    let (_e_send, mut e_recv) = timeout(WAIT, exporter_quic.open_session("live"))
        .await
        .expect("open in time")
        .expect("exporter session");

    // The certificates last 4 s; renewed every 1.5 s, the session goes on for 10 s.
    let mut byte = [0u8; 1];
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        client
            .renew(&client_quic, &lease_name, &client_key)
            .await
            .unwrap_or_else(|e| panic!("client renewal: {e}\n{}", service.logs()));
        exporter
            .renew(&exporter_quic, &lease_name, &exporter_key)
            .await
            .unwrap_or_else(|e| panic!("exporter renewal: {e}\n{}", service.logs()));
        c_send.write_all(b"x").await.expect("write while renewed");
        timeout(WAIT, e_recv.read_exact(&mut byte))
            .await
            .expect("byte in time")
            .expect("byte flows while renewed");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // The client releases the lease: no more certificates, and the router drops both
    // connections when their current certificates end.
    let released = Instant::now();
    timeout(
        WAIT,
        leases.delete_lease(client.request(DeleteLeaseRequest { name: lease_path })),
    )
    .await
    .expect("delete in time")
    .expect("delete lease");
    let refused = client.renew(&client_quic, &lease_name, &client_key).await;
    assert!(refused.is_err(), "no renewal for a released lease");
    for (side, connection) in [("client", &client_quic), ("exporter", &exporter_quic)] {
        let closed = timeout(Duration::from_secs(15), connection.quic().closed())
            .await
            .unwrap_or_else(|_| panic!("the {side} connection outlived its certificate"));
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
                close.error_code.into_inner(),
                u64::from(jumpstarter_tunnel::code::CERTIFICATE_EXPIRED),
                "{side}"
            ),
            other => panic!("{side}: expected the router's close, got {other:?}"),
        }
    }
    eprintln!(
        "QUIC traffic of the released lease stopped {:.1} s after the release (certificates of 4 s)",
        released.elapsed().as_secs_f64()
    );
    assert!(c_send.write_all(b"y").await.is_err() || e_recv.read_exact(&mut byte).await.is_err());
    heartbeat.abort();
    drop(service);
}

/// A service killed without warning and started again on the same data directory and UDP
/// port answers the old connections' next packets with stateless resets that their peers
/// accept (the reset key derives from the CA key in the store): a peer learns that its
/// connection is gone at its next packet, and does not wait for its 30 s idle timeout.
/// With a reset key of its own (quinn's default), the new process's resets are ignored and
/// the connection ends by timing out instead.
#[tokio::test]
async fn after_a_crash_the_restarted_service_resets_the_old_quic_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let quic_listen = format!("127.0.0.1:{}", free_udp_port());
    let mut service = Service::start(&data_dir, &quic_listen, &[]);
    let leased = leased(&service, &quic_listen).await;
    let connection = leased
        .client
        .connect_quic(&leased.lease_name, "client")
        .await;
    leased.heartbeat.abort();

    // SIGKILL: no CONNECTION_CLOSE reaches the peer.
    service.process.child.kill().expect("kill the service");
    service.process.child.wait().expect("reap the service");
    let service = Service::start(&data_dir, &quic_listen, &[]);

    // The peer's next packet (a new session) meets the new process.
    let _ = timeout(WAIT, connection.open_session("after-the-crash")).await;
    let closed = timeout(Duration::from_secs(20), connection.quic().closed())
        .await
        .unwrap_or_else(|_| panic!("the old connection is still open:\n{}", service.logs()));
    assert!(
        matches!(closed, quinn::ConnectionError::Reset),
        "expected a stateless reset, got {closed:?}"
    );
    drop(service);
}

fn prost_types_duration(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}
