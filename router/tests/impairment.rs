//! The data plane under impaired networks and migration, bounded in time.
//!
//! - **Loss and delay.** Each impaired test runs in a network namespace it creates (and
//!   removes): router, peers and a delay relay all bind their sockets inside it. **Loss** is
//!   the kernel's: an nftables rule in the namespace drops 1% of the packets, at random,
//!   between the peers and the relay (UDP for QUIC, TCP segments for h2, both directions),
//!   with a counter the test reads to show packets really were dropped. **Delay** is the
//!   relay's, because the kernels this runs on are built without `sch_netem`: it holds every
//!   UDP datagram, or every chunk of the TCP byte stream, for 25 ms each way (50 ms round
//!   trip between a peer and the router). Needs root, iproute2 and nftables; without them the
//!   test fails saying so.
//! - **Migration.** A client moves its QUIC connection to another local address and port in
//!   the middle of a transfer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jumpstarter_certs::{
    Ca, ClientAuth, LeaseCertPolicy, LeaseIdentity, Role, ServerCertParams, TlsCredentials,
    client_config, generate_csr, server_config,
};
use jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient;
use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
use jumpstarter_router::{QuicRouter, QuicRouterConfig, Router, RouterConfig};
use jumpstarter_token::SigningKey;
use jumpstarter_token::router::{StreamGrant, mint};
use jumpstarter_tunnel::{ALPN, Connection, QuicPeer};
use prometheus_client::registry::Registry;
use quinn::{RecvStream, SendStream};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Streaming};

const HOST: &str = "router.test";
const BLOCK: usize = 64 * 1024;
const MIB_16: u64 = 16 * 1024 * 1024;
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);

/// The in-test impairment: a UDP relay and a TCP relay in front of the router.
mod relay {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UdpSocket};
    use tokio::sync::{Mutex, mpsc};
    use tokio::time::Instant;

    /// Datagrams waiting in a delay queue: when queued, bytes, destination.
    type Queue = mpsc::UnboundedSender<(Instant, Vec<u8>, SocketAddr)>;

    /// A queue that sends each datagram `delay` after it was queued, in order.
    fn delayed_sender(socket: Arc<UdpSocket>, delay: Duration) -> Queue {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>, SocketAddr)>();
        tokio::spawn(async move {
            while let Some((queued, datagram, to)) = rx.recv().await {
                tokio::time::sleep_until(queued + delay).await;
                let _ = socket.send_to(&datagram, to).await;
            }
        });
        tx
    }

    /// Relays UDP datagrams between peers and `target`; returns the address peers use.
    pub(crate) async fn udp(target: SocketAddr, delay: Duration) -> SocketAddr {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let addr = front.local_addr().expect("relay addr");
        let to_peers = delayed_sender(front.clone(), delay);
        let upstreams: Arc<Mutex<HashMap<SocketAddr, Queue>>> = Arc::default();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((len, peer)) = front.recv_from(&mut buf).await else {
                    return;
                };
                let mut upstreams = upstreams.lock().await;
                let to_router = upstreams.entry(peer).or_insert_with(|| {
                    // One upstream socket per peer, so the router sees distinct peers.
                    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind upstream");
                    socket.set_nonblocking(true).expect("nonblocking");
                    let socket = Arc::new(UdpSocket::from_std(socket).expect("upstream"));
                    let back = socket.clone();
                    let to_peers = to_peers.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok((len, _)) = back.recv_from(&mut buf).await {
                            let _ = to_peers.send((Instant::now(), buf[..len].to_vec(), peer));
                        }
                    });
                    delayed_sender(socket, delay)
                });
                let _ = to_router.send((Instant::now(), buf[..len].to_vec(), target));
            }
        });
        addr
    }

    /// Relays TCP connections to `target`, delaying the bytes by `delay` each way.
    pub(crate) async fn tcp(target: SocketAddr, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tcp relay");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pipe(in_read, out_write, delay));
                tokio::spawn(pipe(out_read, in_write, delay));
            }
        });
        addr
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        delay: Duration,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((queued, bytes)) = rx.recv().await {
                tokio::time::sleep_until(queued + delay).await;
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = to.shutdown().await;
        });
        let mut buf = vec![0u8; 65_536];
        while let Ok(len) = from.read(&mut buf).await {
            if len == 0 || tx.send((Instant::now(), buf[..len].to_vec())).is_err() {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
    }
}

/// Router (h2 + QUIC, pairing shared) and credentials; the addresses peers use are the
/// impairment relay's when there is one.
struct Lab {
    h2_addr: SocketAddr,
    quic_addr: SocketAddr,
    ca: Ca,
    token_key: SigningKey,
    _registry: Arc<Mutex<Registry>>,
    stop: CancellationToken,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn lab(delay: Option<Duration>) -> Lab {
    let now = OffsetDateTime::now_utc();
    let ca = Ca::generate("impairment test CA", now, time::Duration::days(1)).expect("CA");
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
    let token_key = SigningKey::generate().expect("token key");
    let tls =
        server_config(server.credentials(), vec![b"h2".to_vec()], ClientAuth::None).expect("tls");
    let mut registry = Registry::default();
    let router = Router::new(
        RouterConfig::new(tls, vec![token_key.verifying_key().clone()]),
        &mut registry,
    );
    let quic_config =
        QuicRouterConfig::new(server.credentials(), vec![ca.cert_der().clone()]).expect("quic");
    let mut quic = QuicRouter::bind(
        quic_config,
        "127.0.0.1:0".parse().expect("addr"),
        &mut registry,
    )
    .expect("bind quic");
    quic.pair_with_h2(&router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind h2");
    let mut h2_addr = listener.local_addr().expect("h2 addr");
    let mut quic_addr = quic.local_addr().expect("quic addr");
    if let Some(delay) = delay {
        quic_addr = relay::udp(quic_addr, delay).await;
        h2_addr = relay::tcp(h2_addr, delay).await;
    }
    let stop = CancellationToken::new();
    tokio::spawn(router.serve(listener, stop.clone().cancelled_owned()));
    tokio::spawn(quic.serve(stop.clone().cancelled_owned()));
    Lab {
        h2_addr,
        quic_addr,
        ca,
        token_key,
        _registry: Arc::new(Mutex::new(registry)),
        stop,
    }
}

impl Lab {
    fn credentials(&self, role: Role) -> TlsCredentials {
        let now = OffsetDateTime::now_utc();
        let request = generate_csr("peer").expect("csr");
        let identity = LeaseIdentity {
            namespace: "lab".to_owned(),
            lease_name: "lease-1".to_owned(),
            lease_uid: "5f0a7c0e-0d7e-4d43-a5b5-0c9a9f3b1d11".to_owned(),
            role,
            holder: "peer".to_owned(),
        };
        let policy = LeaseCertPolicy {
            lease_end: now + time::Duration::hours(1),
            max_validity: time::Duration::hours(1),
            backdate: time::Duration::ZERO,
        };
        let issued = self
            .ca
            .sign_lease_csr(&request.csr_der, &identity, &policy, now)
            .expect("lease cert");
        TlsCredentials {
            chain: issued.chain_der,
            key: PrivateKeyDer::from_pem_slice(request.key_pem.as_bytes()).expect("key"),
        }
    }

    async fn quic_peer(&self, role: Role) -> Connection {
        let tls = client_config(
            vec![self.ca.cert_der().clone()],
            Some(self.credentials(role)),
            vec![ALPN.to_vec()],
        )
        .expect("tls");
        timeout(
            Duration::from_secs(60),
            QuicPeer::connect_with_tls(self.quic_addr, HOST, tls),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }

    async fn h2_client(&self) -> RouterServiceClient<Channel> {
        let channel = Endpoint::from_shared(format!("https://{}", self.h2_addr))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(self.ca.cert_pem()))
                    .domain_name(HOST),
            )
            .expect("tls")
            .connect()
            .await
            .expect("connect h2");
        RouterServiceClient::new(channel)
    }

    fn token(&self, stream_id: &str) -> String {
        let grant = StreamGrant {
            stream_id: stream_id.to_owned(),
            token_id: format!("jti-{stream_id}"),
            lease: "lab/lease-1".to_owned(),
        };
        mint(
            &self.token_key,
            &grant,
            time::Duration::minutes(10),
            OffsetDateTime::now_utc(),
        )
        .expect("mint")
    }
}

fn block(seed: u64, index: u64) -> Vec<u8> {
    let mut out = vec![0u8; BLOCK];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out[..8].copy_from_slice(&index.to_le_bytes());
    out
}

async fn quic_send(mut send: SendStream, seed: u64, bytes: u64) -> Vec<u8> {
    let mut digest = Sha256::new();
    for index in 0..bytes / BLOCK as u64 {
        let data = block(seed, index);
        digest.update(&data);
        send.write_all(&data).await.expect("quic write");
    }
    send.finish().expect("finish");
    digest.finalize().to_vec()
}

async fn quic_receive(mut recv: RecvStream) -> (Vec<u8>, u64) {
    let mut digest = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = recv.read_chunk(BLOCK, true).await.expect("quic read") {
        len += chunk.bytes.len() as u64;
        digest.update(&chunk.bytes);
    }
    (digest.finalize().to_vec(), len)
}

/// 16 MiB from client to exporter over QUIC; returns the seconds it took.
async fn quic_transfer(lab: &Lab) -> f64 {
    let client = lab.quic_peer(Role::Client).await;
    let exporter = lab.quic_peer(Role::Exporter).await;
    let started = Instant::now();
    let (send, _c_recv) = client.open_session("bulk").await.expect("client session");
    let (_e_send, recv) = exporter
        .open_session("bulk")
        .await
        .expect("exporter session");
    let (sent, (got, len)) = timeout(TRANSFER_LIMIT, async {
        tokio::join!(quic_send(send, 1, MIB_16), quic_receive(recv))
    })
    .await
    .expect("the QUIC transfer completes");
    assert_eq!(len, MIB_16);
    assert_eq!(got, sent, "QUIC transfer intact");
    started.elapsed().as_secs_f64()
}

async fn open_h2(
    client: &mut RouterServiceClient<Channel>,
    token: &str,
) -> (mpsc::Sender<StreamRequest>, Streaming<StreamResponse>) {
    let (tx, requests) = mpsc::channel(8);
    let mut request = Request::new(ReceiverStream::new(requests));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let rx = client
        .stream(request)
        .await
        .expect("h2 stream")
        .into_inner();
    (tx, rx)
}

/// 16 MiB from one h2 stream to the other; returns the seconds it took.
async fn h2_transfer(lab: &Lab) -> f64 {
    let token = lab.token("bulk-h2");
    let mut a = lab.h2_client().await;
    let mut b = lab.h2_client().await;
    let started = Instant::now();
    let ((a_tx, _a_rx), (_b_tx, mut b_rx)) = timeout(Duration::from_secs(60), async {
        tokio::join!(open_h2(&mut a, &token), open_h2(&mut b, &token))
    })
    .await
    .expect("paired in time");
    let sender = async {
        let mut digest = Sha256::new();
        for index in 0..MIB_16 / BLOCK as u64 {
            let data = block(2, index);
            digest.update(&data);
            a_tx.send(StreamRequest {
                payload: data,
                frame_type: FrameType::Data.into(),
            })
            .await
            .expect("send");
        }
        a_tx.send(StreamRequest {
            payload: Vec::new(),
            frame_type: FrameType::Goaway.into(),
        })
        .await
        .expect("goaway");
        digest.finalize().to_vec()
    };
    let receiver = async {
        let mut digest = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = b_rx.message().await.expect("read") {
            if frame.frame_type == i32::from(FrameType::Goaway) {
                break;
            }
            len += frame.payload.len() as u64;
            digest.update(&frame.payload);
        }
        (digest.finalize().to_vec(), len)
    };
    let (sent, (got, len)) = timeout(TRANSFER_LIMIT, async { tokio::join!(sender, receiver) })
        .await
        .expect("the h2 transfer completes");
    assert_eq!(len, MIB_16);
    assert_eq!(got, sent, "h2 transfer intact");
    started.elapsed().as_secs_f64()
}

fn report(what: &str, seconds: f64) {
    #[allow(clippy::cast_precision_loss)]
    let mbit = MIB_16 as f64 * 8.0 / seconds / 1e6;
    eprintln!("{what}: 16 MiB in {seconds:.2} s ({mbit:.1} Mbit/s)");
}

/// A network namespace for one test, removed on drop.
struct Netns {
    name: String,
}

fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (iproute2 and nftables are required): {e}")
        });
    assert!(
        output.status.success(),
        "`{program} {}` failed (network namespaces need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Netns {
    fn create(tag: &str) -> Netns {
        let name = format!("jsr-{tag}-{}", std::process::id());
        // Left over by a killed earlier run with the same pid: replace it.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        run("ip", &["-n", &netns.name, "link", "set", "lo", "up"]);
        netns.nft(&["add", "table", "inet", "impair"]);
        netns.nft(&[
            "add",
            "chain",
            "inet",
            "impair",
            "out",
            "{ type filter hook output priority 0; }",
        ]);
        netns
    }

    fn nft(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Drops `percent`% of the packets from and to local port `port` of `protocol`.
    fn drop_randomly(&self, protocol: &str, port: u16, percent: u32) {
        for direction in ["dport", "sport"] {
            self.nft(&[
                "add",
                "rule",
                "inet",
                "impair",
                "out",
                protocol,
                direction,
                &port.to_string(),
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &percent.to_string(),
                "counter",
                "drop",
            ]);
        }
    }

    /// Packets the drop rules dropped so far.
    fn dropped(&self) -> u64 {
        self.nft(&["list", "table", "inet", "impair"])
            .lines()
            .filter_map(|line| {
                let after = line.split("counter packets ").nth(1)?;
                after.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Runs `body` on a runtime whose threads, and so every socket, live in the namespace.
    fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).expect("open the namespace");
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("enter the network namespace");
                    body()
                })
                .join()
                .expect("namespace thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// 25 ms each way between a peer and the router: 50 ms round trip.
const DELAY: Duration = Duration::from_millis(25);

#[test]
fn quic_moves_16_mib_at_1_percent_loss_and_50_ms_rtt() {
    let netns = Netns::create("quic");
    let seconds = netns.run(|| {
        runtime().block_on(async {
            let lab = lab(Some(DELAY)).await;
            netns.drop_randomly("udp", lab.quic_addr.port(), 1);
            quic_transfer(&lab).await
        })
    });
    let dropped = netns.dropped();
    report(
        &format!("QUIC, 1% loss ({dropped} packets dropped), 50 ms RTT"),
        seconds,
    );
    assert!(dropped > 0, "the kernel dropped packets");
}

#[test]
fn h2_moves_16_mib_at_1_percent_loss_and_50_ms_rtt() {
    let netns = Netns::create("h2");
    let seconds = netns.run(|| {
        runtime().block_on(async {
            let lab = lab(Some(DELAY)).await;
            netns.drop_randomly("tcp", lab.h2_addr.port(), 1);
            h2_transfer(&lab).await
        })
    });
    let dropped = netns.dropped();
    report(
        &format!("h2, 1% loss ({dropped} packets dropped), 50 ms RTT"),
        seconds,
    );
    assert!(dropped > 0, "the kernel dropped packets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_changes_address_and_port_mid_transfer_completes_intact() {
    let lab = lab(None).await;
    let client = lab.quic_peer(Role::Client).await;
    let exporter = lab.quic_peer(Role::Exporter).await;
    let (send, _c_recv) = client.open_session("moving").await.expect("client session");
    let (_e_send, recv) = exporter
        .open_session("moving")
        .await
        .expect("exporter session");
    let before = client.local_addr().expect("local addr");
    let receiving = tokio::spawn(quic_receive(recv));
    let sending = async {
        let mut send = send;
        let mut digest = Sha256::new();
        let blocks = 4 * MIB_16 / BLOCK as u64;
        for index in 0..blocks {
            if index == blocks / 2 {
                // Another address of the loopback network and a new port.
                let socket = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
                client.rebind(socket).expect("rebind");
            }
            let data = block(3, index);
            digest.update(&data);
            send.write_all(&data).await.expect("write across the move");
        }
        send.finish().expect("finish");
        digest.finalize().to_vec()
    };
    let sent = timeout(TRANSFER_LIMIT, sending)
        .await
        .expect("sent in time");
    let (got, len) = timeout(TRANSFER_LIMIT, receiving)
        .await
        .expect("received in time")
        .expect("receiver");
    assert_eq!(len, 4 * MIB_16);
    assert_eq!(got, sent, "intact across the migration");
    let after = client.local_addr().expect("local addr");
    assert_ne!(after.ip(), before.ip(), "the connection really moved");
}
