//! Network impairment in user space: relays on loopback that delay every datagram (UDP) or
//! chunk (TCP) by a fixed one-way delay, and drop UDP datagrams with a given probability.
//! Used when the kernel has no `netem` queueing discipline (probed with a scratch network
//! namespace, see [`probe_netem`]). TCP segments cannot be dropped from user space, so the
//! TCP relay only delays.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Delay each way and the loss probability.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Impairment {
    pub(crate) one_way: Duration,
    pub(crate) loss: f64,
}

/// A running relay; its tasks stop when it is dropped.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP relay to `target` for one peer (the first address that sends to it).
pub(crate) async fn udp(target: SocketAddr, how: Impairment, seed: u64) -> anyhow::Result<Relay> {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    back.connect(target).await?;
    let addr = front.local_addr()?;
    let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let (down_tx, mut down_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn({
        let (front, peer) = (front.clone(), peer.clone());
        let mut dice = Dice::new(seed);
        async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *peer.lock().await = Some(from);
                if !dice.drop(how.loss) {
                    let _ = up_tx.send((Instant::now() + how.one_way, buf[..n].to_vec()));
                }
            }
        }
    }));
    tasks.push(tokio::spawn({
        let back = back.clone();
        async move {
            while let Some((due, datagram)) = up_rx.recv().await {
                tokio::time::sleep_until(due).await;
                let _ = back.send(&datagram).await;
            }
        }
    }));
    tasks.push(tokio::spawn({
        let back = back.clone();
        let mut dice = Dice::new(seed ^ 0x5555);
        async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back.recv(&mut buf).await {
                if !dice.drop(how.loss) {
                    let _ = down_tx.send((Instant::now() + how.one_way, buf[..n].to_vec()));
                }
            }
        }
    }));
    tasks.push(tokio::spawn(async move {
        while let Some((due, datagram)) = down_rx.recv().await {
            tokio::time::sleep_until(due).await;
            if let Some(to) = *peer.lock().await {
                let _ = front.send_to(&datagram, to).await;
            }
        }
    }));
    Ok(Relay { addr, tasks })
}

/// A TCP relay to `target` that delays the bytes of every connection both ways.
pub(crate) async fn tcp(target: SocketAddr, one_way: Duration) -> anyhow::Result<Relay> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((front, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(back) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = front.set_nodelay(true);
                let _ = back.set_nodelay(true);
                let (front_read, front_write) = front.into_split();
                let (back_read, back_write) = back.into_split();
                tokio::spawn(delay_line(front_read, back_write, one_way));
                tokio::spawn(delay_line(back_read, front_write, one_way));
            });
        }
    });
    Ok(Relay {
        addr,
        tasks: vec![task],
    })
}

/// Copies `from` to `to`, each chunk `delay` later than it was read; EOF is passed on.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    });
    let mut buf = vec![0u8; 65_536];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send((Instant::now() + delay, None));
                break;
            }
            Ok(n) => {
                let _ = tx.send((Instant::now() + delay, Some(buf[..n].to_vec())));
            }
        }
    }
    let _ = writer.await;
}

/// Deterministic loss decisions (xorshift64).
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// True with probability `percent` / 100.
    fn drop(&mut self, percent: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 10_000.0 < percent
    }
}

/// Whether `tc netem` works here: creates a scratch network namespace, tries to put a
/// netem qdisc on its loopback, removes the namespace. Returns what happened.
pub(crate) async fn probe_netem() -> String {
    let ns = format!("jlt-probe-{}", std::process::id());
    let run = |args: Vec<String>| async move {
        let program = args[0].clone();
        match tokio::process::Command::new(&program)
            .args(&args[1..])
            .output()
            .await
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => Err(format!("{program}: {e}")),
        }
    };
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    if let Err(e) = run(words(&format!("ip netns add {ns}"))).await {
        return format!("cannot create a network namespace ({e})");
    }
    let result = async {
        run(words(&format!("ip -n {ns} link set lo up"))).await?;
        run(words(&format!(
            "tc -n {ns} qdisc add dev lo root netem delay 25ms loss 1%"
        )))
        .await
    }
    .await;
    let _ = run(words(&format!("ip netns del {ns}"))).await;
    match result {
        Ok(()) => "tc netem works in a network namespace".to_owned(),
        Err(e) => format!("a network namespace was created and removed, but tc netem failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_drop_about_the_asked_share() {
        let mut dice = Dice::new(1);
        let dropped = (0..100_000).filter(|_| dice.drop(5.0)).count();
        assert!((4_000..6_000).contains(&dropped), "{dropped}");
        let mut dice = Dice::new(2);
        assert_eq!((0..10_000).filter(|_| dice.drop(0.0)).count(), 0);
    }
}
