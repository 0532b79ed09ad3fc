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

use crate::support;

use std::time::{Duration, Instant};

use jumpstarter_certs::Role;
use jumpstarter_proto::jumpstarter::v1::router_service_client::RouterServiceClient;
use jumpstarter_proto::jumpstarter::v1::{FrameType, StreamRequest, StreamResponse};
use sha2::{Digest, Sha256};
use support::lab::{BLOCK, LEASE, Lab, block, quic_receive, quic_send};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

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

/// The shared router fixture; with a `delay`, peers reach it through the delay relays.
async fn lab(delay: Option<Duration>) -> Lab {
    let mut lab = support::lab::lab(|_| {}).await;
    if let Some(delay) = delay {
        lab.quic_addr = relay::udp(lab.quic_addr, delay).await;
        lab.h2_addr = relay::tcp(lab.h2_addr, delay).await;
    }
    lab
}

/// 16 MiB from client to exporter over QUIC; returns the seconds it took.
async fn quic_transfer(lab: &Lab) -> f64 {
    let client = lab.peer(Role::Client).await;
    let exporter = lab.peer(Role::Exporter).await;
    let started = Instant::now();
    let (send, _c_recv) = client.open_session("bulk").await.expect("client session");
    let (_e_send, recv) = exporter
        .open_session("bulk")
        .await
        .expect("exporter session");
    let (sent, (got, len)) = timeout(TRANSFER_LIMIT, async {
        tokio::join!(
            quic_send(send, 1, MIB_16 / BLOCK as u64),
            quic_receive(recv)
        )
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
    let token = lab.token("bulk-h2", LEASE, time::Duration::minutes(10));
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

    /// Runs the future `body` makes on a runtime whose threads, and so every socket, live
    /// in the namespace.
    fn block_on<T: Send, F: Future<Output = T>>(&self, body: impl FnOnce() -> F + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).expect("open the namespace");
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("enter the network namespace");
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(body())
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

/// 25 ms each way between a peer and the router: 50 ms round trip.
const DELAY: Duration = Duration::from_millis(25);

#[test]
fn quic_moves_16_mib_at_1_percent_loss_and_50_ms_rtt() {
    let netns = Netns::create("quic");
    let seconds = netns.block_on(|| async {
        let lab = lab(Some(DELAY)).await;
        netns.drop_randomly("udp", lab.quic_addr.port(), 1);
        quic_transfer(&lab).await
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
    let seconds = netns.block_on(|| async {
        let lab = lab(Some(DELAY)).await;
        netns.drop_randomly("tcp", lab.h2_addr.port(), 1);
        h2_transfer(&lab).await
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
    let client = lab.peer(Role::Client).await;
    let exporter = lab.peer(Role::Exporter).await;
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
