//! The router process and signals: the first SIGTERM starts the graceful shutdown (here
//! held by a long `--shutdown-delay`), a second one exits at once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jumpstarter_certs::{Ca, ServerCertParams};
use jumpstarter_token::SigningKey;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use time::OffsetDateTime;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = OffsetDateTime::now_utc();
    let ca = Ca::generate("signal test CA", now, time::Duration::days(1)).expect("CA");
    let server = ca
        .issue_server_cert(
            &ServerCertParams {
                dns_names: vec!["router.test".to_owned()],
                ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
                validity: time::Duration::days(1),
            },
            now,
        )
        .expect("server cert");
    let token_key = SigningKey::generate().expect("token key");
    std::fs::write(dir.path().join("tls.crt"), &server.chain_pem).expect("write");
    std::fs::write(dir.path().join("tls.key"), &server.key_pem).expect("write");
    std::fs::write(
        dir.path().join("keys.pem"),
        token_key.verifying_key().to_public_pem(),
    )
    .expect("write");

    let mut router = Command::new(env!("CARGO_BIN_EXE_jumpstarter-router"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--shutdown-delay", "10m"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--token-public-keys")
        .arg(dir.path().join("keys.pem"))
        .env("RUST_LOG", "info")
        .env_remove("JUMPSTARTER_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the router");
    let (lines_tx, lines) = mpsc::channel();
    let stderr = router.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |text: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => panic!("no log line with {text:?}"),
            }
        }
    };
    let pid = Pid::from_raw(i32::try_from(router.id()).expect("pid"));

    wait_for("router serving");
    kill(pid, Signal::SIGTERM).expect("first SIGTERM");
    wait_for("SIGTERM: shutting down");
    let second = Instant::now();
    kill(pid, Signal::SIGTERM).expect("second SIGTERM");
    let deadline = second + WAIT;
    let status = loop {
        if let Some(status) = router.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = router.kill();
            panic!("the router did not exit after the second SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // 128 + SIGTERM, as a shell reports a process ended by it; the drain (10 minutes
    // away) was not waited for.
    assert_eq!(status.code(), Some(143));
    assert!(second.elapsed() < WAIT);
}
