//! The router binary re-reads its credential files while it runs: a replaced certificate is
//! what new TLS connections see (its serial and expiry, also in the expiry metric), a bad
//! replacement is logged and the old certificate keeps serving, and the token key bundle
//! can gain a new key and lose the old one without a restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jumpstarter_certs::{Ca, IssuedCert, ServerCertParams, client_config};
use jumpstarter_proto::jumpstarter::v1::StreamRequest;
use jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient;
use jumpstarter_token::SigningKey;
use jumpstarter_token::router::{StreamGrant, mint};
use rustls_pki_types::ServerName;
use time::OffsetDateTime;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(20);
const HOST: &str = "router.test";

/// The router process; killed when dropped, so a failing test leaves nothing behind.
struct RouterProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    listen: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RouterProcess {
    fn start(dir: &Path) -> RouterProcess {
        let (listen, metrics) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_jumpstarter-router"))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .args(["--reload-interval", "200ms", "--pair-timeout", "1s"])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .arg("--token-public-keys")
            .arg(dir.join("keys.pem"))
            .env("RUST_LOG", "info")
            .env_remove("JUMPSTARTER_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the router");
        let (lines_tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let router = RouterProcess {
            child,
            lines,
            listen,
            metrics,
        };
        router.wait_for_log("router serving");
        router
    }

    fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {text:?} within {WAIT:?}"),
            }
        }
    }

    fn metrics_text(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics).expect("metrics connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: router\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response");
        text
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// A port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

fn server_cert(ca: &Ca, days: i64) -> IssuedCert {
    ca.issue_server_cert(
        &ServerCertParams {
            dns_names: vec![HOST.to_owned()],
            ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
            validity: time::Duration::days(days),
        },
        OffsetDateTime::now_utc(),
    )
    .expect("server cert")
}

/// Replaces `path` the way a careful writer does: a new file renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp: PathBuf = path.with_extension("new");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Serial (hex) and notAfter of the certificate a new TLS connection is served.
async fn presented(addr: SocketAddr, ca: &Ca) -> (String, i64) {
    let config = client_config(vec![ca.cert_der().clone()], None, vec![b"h2".to_vec()])
        .expect("client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio::time::timeout(
        WAIT,
        connector.connect(ServerName::try_from(HOST).expect("name"), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
    (
        parsed.raw_serial_as_string(),
        parsed.validity().not_after.timestamp(),
    )
}

fn serial_of(cert: &IssuedCert) -> String {
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert.chain_der[0]).expect("parse");
    parsed.raw_serial_as_string()
}

/// Waits until new connections are served `cert`.
async fn until_presented(addr: SocketAddr, ca: &Ca, cert: &IssuedCert) -> (String, i64) {
    let want = serial_of(cert);
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = presented(addr, ca).await;
        if seen.0 == want {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "still served serial {} instead of {want}",
            seen.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn token(key: &SigningKey, stream_id: &str) -> String {
    let grant = StreamGrant {
        stream_id: stream_id.to_owned(),
        token_id: format!("jti-{stream_id}"),
        lease: "lab/lease-1".to_owned(),
    };
    mint(
        key,
        &grant,
        time::Duration::minutes(5),
        OffsetDateTime::now_utc(),
    )
    .expect("mint")
}

/// Opens a stream with `token` and says how it ended: UNAUTHENTICATED at once for a token
/// the router does not accept, DEADLINE_EXCEEDED after the 1 s pairing timeout for one it
/// accepted (no peer ever comes).
async fn stream_outcome(addr: SocketAddr, ca: &Ca, token: &str) -> (Code, String) {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.cert_pem()))
                .domain_name(HOST),
        )
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamRequest>(1);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let mut client = RouterServiceClient::new(channel);
    let result = tokio::time::timeout(WAIT, async {
        match client.stream(request).await {
            Err(status) => status,
            Ok(response) => {
                let mut inbound = response.into_inner();
                loop {
                    match inbound.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break tonic::Status::ok("ended"),
                        Err(status) => break status,
                    }
                }
            }
        }
    })
    .await
    .expect("the stream ends within the wait");
    drop(tx);
    (result.code(), result.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_and_token_keys_reload_while_the_router_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::generate(
        "reload test CA",
        OffsetDateTime::now_utc(),
        time::Duration::days(90),
    )
    .expect("CA");
    let first = server_cert(&ca, 2);
    let old_key = SigningKey::generate().expect("token key");
    let new_key = SigningKey::generate().expect("token key");
    let (cert_path, key_path, keys_path) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("keys.pem"),
    );
    replace(&cert_path, &first.chain_pem);
    replace(&key_path, &first.key_pem);
    replace(&keys_path, old_key.verifying_key().to_public_pem());
    let router = RouterProcess::start(dir.path());
    let expiry = "jumpstarter_router_tls_certificate_expiry_timestamp_seconds";

    // At start: the first certificate, and its expiry in the metric.
    let (serial, not_after) = presented(router.listen, &ca).await;
    assert_eq!(serial, serial_of(&first));
    assert_eq!(router.metric(expiry), Some(not_after as f64));

    // A malformed certificate: logged, counted, the first one keeps serving.
    replace(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    let line = router.wait_for_log("changed file not applied");
    assert!(line.contains("tls.crt"), "{line}");
    // A certificate whose key is another one's: refused as such.
    let second = server_cert(&ca, 20);
    replace(&cert_path, &second.chain_pem);
    let line = router.wait_for_log("changed file not applied");
    assert!(
        line.contains("does not belong to the certificate"),
        "{line}"
    );
    assert_eq!(presented(router.listen, &ca).await.0, serial_of(&first));
    assert_eq!(
        router.metric(
            "jumpstarter_router_credential_reloads_total{file=\"tls\",result=\"rejected\"}"
        ),
        Some(2.0)
    );

    // Its key arrives: new connections get the second certificate, the metric follows.
    replace(&key_path, &second.key_pem);
    let (_, second_not_after) = until_presented(router.listen, &ca, &second).await;
    assert!(second_not_after > not_after + 17 * 86_400);
    let deadline = Instant::now() + WAIT;
    while router.metric(expiry) != Some(second_not_after as f64) {
        assert!(Instant::now() < deadline, "expiry metric not updated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Token keys: the new key is refused until the bundle lists it.
    let (code, message) = stream_outcome(router.listen, &ca, &token(&new_key, "s-1")).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("signature is invalid"), "{message}");
    assert_eq!(
        stream_outcome(router.listen, &ca, &token(&old_key, "s-2"))
            .await
            .0,
        Code::DeadlineExceeded,
        "the old key is accepted"
    );
    replace(
        &keys_path,
        &format!(
            "{}{}",
            new_key.verifying_key().to_public_pem(),
            old_key.verifying_key().to_public_pem()
        ),
    );
    router.wait_for_log("token public keys reloaded");
    assert_eq!(router.metric("jumpstarter_router_token_keys"), Some(2.0));
    // The router binary's process and build metrics keep their usual names.
    let text = router.metrics_text();
    for expected in [
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "jumpstarter_build_info{version=\"",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    for (key, id) in [(&new_key, "s-3"), (&old_key, "s-4")] {
        let (code, message) = stream_outcome(router.listen, &ca, &token(key, id)).await;
        assert_eq!(
            code,
            Code::DeadlineExceeded,
            "both keys accepted: {message}"
        );
    }

    // A broken bundle keeps both keys; then the old key leaves the bundle.
    replace(&keys_path, "-----BEGIN PUBLIC KEY-----\nAAAA\n");
    router.wait_for_log("changed file not applied");
    assert_eq!(
        stream_outcome(router.listen, &ca, &token(&old_key, "s-5"))
            .await
            .0,
        Code::DeadlineExceeded
    );
    replace(&keys_path, new_key.verifying_key().to_public_pem());
    router.wait_for_log("token public keys reloaded");
    let (code, message) = stream_outcome(router.listen, &ca, &token(&old_key, "s-6")).await;
    assert_eq!(code, Code::Unauthenticated, "old key removed: {message}");
    assert_eq!(
        stream_outcome(router.listen, &ca, &token(&new_key, "s-7"))
            .await
            .0,
        Code::DeadlineExceeded
    );
    assert_eq!(
        router.metric(
            "jumpstarter_router_credential_reloads_total{file=\"token_keys\",result=\"applied\"}"
        ),
        Some(2.0)
    );
}
