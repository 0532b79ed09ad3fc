//! Fixtures shared by the controller's integration tests: a fresh namespace on the shared
//! kube-apiserver with the CRDs installed, and the controller's gRPC port served in-process
//! on 127.0.0.1 over real TLS (h2) with a certificate for `localhost`.

#![allow(dead_code, unreachable_pub)]

pub mod counting;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use jumpstarter_certs::{Ca, ClientAuth, IssuedCert, ServerCertParams, server_config};
use jumpstarter_controller::crd;
use jumpstarter_controller::crd::{Client, ClientSpec, Exporter, ExporterSpec};
use jumpstarter_controller::server;
use jumpstarter_controller::service::Services;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_testenv::TestEnv;
use jumpstarter_token::SigningKey;
use jumpstarter_token::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Issuer, ObjectKind, Subject};
use kube::api::ObjectMeta;
use time::{Duration, OffsetDateTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// A fresh namespace named after `prefix`, with the CRDs installed, and an admin store.
pub async fn kube_namespace(prefix: &str) -> (String, KubeStore) {
    let env = TestEnv::shared();
    env.install_crds(&crd::definitions())
        .await
        .expect("install CRDs");
    let namespace = env.namespace(prefix).await;
    let store = KubeStore::new(env.admin_client().await);
    (namespace, store)
}

/// A CA named `ca_name` and a server certificate for `localhost` and 127.0.0.1, both valid
/// for a day from `now`.
pub fn localhost_pki(ca_name: &str, now: OffsetDateTime) -> (Ca, IssuedCert) {
    let ca = Ca::generate(ca_name, now, Duration::days(1)).expect("CA");
    let cert = ca
        .issue_server_cert(
            &ServerCertParams {
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                validity: Duration::days(1),
            },
            now,
        )
        .expect("server cert");
    (ca, cert)
}

/// An internal token issuer with a fresh key and the default issuer and audience; tokens
/// live an hour.
pub fn token_issuer() -> Issuer {
    Issuer {
        key: SigningKey::generate().expect("token key"),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        lifetime: Duration::hours(1),
    }
}

/// The controller's gRPC port served in-process on 127.0.0.1 over TLS; it stops when this is
/// dropped (or when the `shutdown` it was started with is cancelled).
pub struct LoopbackGrpc {
    pub port: u16,
    ca_pem: String,
    shutdown: CancellationToken,
}

impl LoopbackGrpc {
    /// Serves `services` on 127.0.0.1 port 0 with `cert`, which `ca` issued for `localhost`.
    pub async fn serve<S: jumpstarter_controller::store::Store>(
        services: &Services<S>,
        cert: &IssuedCert,
        ca: &Ca,
        shutdown: CancellationToken,
    ) -> LoopbackGrpc {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tls =
            server_config(cert.credentials(), vec![b"h2".to_vec()], ClientAuth::None).expect("tls");
        let routes = server::grpc_routes(services).await;
        tokio::spawn(server::serve_grpc(
            listener,
            Arc::new(tls),
            routes,
            jumpstarter_shell::port_limits::PortLimits::default(),
            None,
            shutdown.clone(),
        ));
        LoopbackGrpc {
            port,
            ca_pem: ca.cert_pem().to_owned(),
            shutdown,
        }
    }

    /// A TLS endpoint for `https://localhost:<port>` trusting the CA.
    pub fn endpoint(&self, connect_timeout: StdDuration) -> Endpoint {
        self.endpoint_via(self.port, connect_timeout)
    }

    /// A TLS endpoint for this server reached on another local `port` (e.g. a proxy's).
    pub fn endpoint_via(&self, port: u16, connect_timeout: StdDuration) -> Endpoint {
        Endpoint::from_shared(format!("https://localhost:{port}"))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&self.ca_pem))
                    .domain_name("localhost"),
            )
            .expect("client tls")
            .connect_timeout(connect_timeout)
    }
}

impl Drop for LoopbackGrpc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A caller of the gRPC port: the object it speaks for and its bearer token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub token: String,
}

impl Identity {
    /// The object `kind` `namespace/name` (with `uid`) and a token `issuer` issues for it now.
    pub fn issued(
        issuer: &Issuer,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Identity {
        let subject = Subject {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        };
        Identity {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            token: issuer
                .issue(&subject, OffsetDateTime::now_utc())
                .expect("issue")
                .0,
        }
    }
}

/// Creates Client `namespace/name` in `store` and returns it with a token from `issuer`.
pub async fn created_client<S: Store>(
    store: &S,
    issuer: &Issuer,
    namespace: &str,
    name: &str,
) -> Identity {
    let created = store
        .create(&Client {
            metadata: object_meta(namespace, name, &[]),
            spec: ClientSpec::default(),
            status: None,
        })
        .await
        .expect("create client");
    let uid = created.metadata.uid.expect("uid");
    Identity::issued(issuer, ObjectKind::Client, namespace, name, &uid)
}

/// Creates Exporter `namespace/name` with `labels` in `store` and returns it with a token
/// from `issuer`.
pub async fn created_exporter<S: Store>(
    store: &S,
    issuer: &Issuer,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Identity {
    let created = store
        .create(&Exporter {
            metadata: object_meta(namespace, name, labels),
            spec: ExporterSpec::default(),
            status: None,
        })
        .await
        .expect("create exporter");
    let uid = created.metadata.uid.expect("uid");
    Identity::issued(issuer, ObjectKind::Exporter, namespace, name, &uid)
}

/// Metadata of object `namespace/name` with `labels` (none when empty).
pub fn object_meta(namespace: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

/// `message` with `id`'s credentials in the metadata, as the 0.9.0 tools send them.
pub fn call<T>(message: T, id: &Identity) -> Request<T> {
    let mut request = Request::new(message);
    let md = request.metadata_mut();
    md.insert(
        "authorization",
        format!("Bearer {}", id.token).parse().expect("ascii"),
    );
    md.insert("jumpstarter-kind", id.kind.as_str().parse().expect("ascii"));
    md.insert(
        "jumpstarter-namespace",
        id.namespace.parse().expect("ascii"),
    );
    md.insert("jumpstarter-name", id.name.parse().expect("ascii"));
    request
}

/// `result` is an error with `code` and a message containing `text`.
pub fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, text: &str) {
    let status = result.expect_err("call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(text),
        "message {:?} should contain {text:?}",
        status.message()
    );
}

/// A TCP proxy on 127.0.0.1 in front of `target` that can go silent: from then on it
/// forwards nothing in either direction and answers no new connection, but closes nothing
/// (no FIN, no RST), like a peer that lost power or a cable pulled between two switches.
/// Everything closes when it is dropped.
pub struct SilentProxy {
    pub port: u16,
    silent: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

impl SilentProxy {
    pub async fn start(target: std::net::SocketAddr) -> SilentProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let silent = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (flag, token) = (Arc::clone(&silent), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let (flag, token) = (Arc::clone(&flag), token.clone());
                tokio::spawn(async move {
                    // Held, not closed, until the proxy stops.
                    let held = inbound;
                    if flag.load(Ordering::SeqCst) {
                        token.cancelled().await;
                        drop(held);
                        return;
                    }
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_read, in_write) = held.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let pipe =
                        |flag: Arc<AtomicBool>,
                         mut from: tokio::net::tcp::OwnedReadHalf,
                         mut to: tokio::net::tcp::OwnedWriteHalf| async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = match from.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                if flag.load(Ordering::SeqCst) {
                                    // Swallow everything from now on, keep both ends open.
                                    std::future::pending::<()>().await;
                                }
                                if to.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown().await;
                            // Keep the halves alive until both directions are done.
                            (from, to)
                        };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = async {
                            tokio::join!(
                                pipe(Arc::clone(&flag), in_read, out_write),
                                pipe(flag, out_read, in_write),
                            )
                        } => {}
                    }
                });
            }
        });
        SilentProxy { port, silent, stop }
    }

    /// From now on nothing passes and nothing is closed.
    pub fn go_silent(&self) {
        self.silent.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
