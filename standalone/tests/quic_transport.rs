//! The QUIC transport settings in force on `jumpstarter serve`'s two QUIC endpoints (the
//! router's session listener and the controller's gRPC over QUIC), from its `/metrics`:
//! started with non-default settings (Cubic, a 3 MiB stream window) and with the
//! defaults (BBR, 16 MiB). A real gRPC-over-QUIC peer connects and calls the controller,
//! and the congestion controller of that live connection is what the metrics show.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jumpstarter_e2e::{ConfigCredentials, free_port};
use jumpstarter_tunnel::{CarrierConnector, Congestion, QuicTransport};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::time::timeout;

use crate::support;

use support::{BIN, ServeProcess};

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(60);

const MIB: u64 = 1024 * 1024;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
        .port()
}

fn metrics_text(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut text = String::new();
    if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: serve\r\n\r\n");
        let _ = stream.read_to_string(&mut text);
    }
    text
}

/// The value of the series `series` (labels included) in `text`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn create_client(data_dir: &Path) -> ConfigCredentials {
    let out = data_dir.with_file_name("client.yaml");
    let output = Command::new(BIN)
        .args(["admin", "create", "client", "c1", "--out"])
        .arg(&out)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_KUBECONFIG")
        .env_remove("JUMPSTARTER_KUBERNETES")
        .stdin(Stdio::null())
        .output()
        .expect("run admin create");
    assert!(output.status.success(), "{output:?}");
    ConfigCredentials::read(&out).expect("client config")
}

async fn check_serve(extra: &[&str], stream_window: u64, congestion: Congestion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let controller_quic = format!("127.0.0.1:{}", free_udp_port());
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--data-dir"])
        .arg(&data_dir)
        .args(["--grpc-listen", &grpc])
        .args(["--router-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &http])
        .args(["--quic-listen", &format!("127.0.0.1:{}", free_udp_port())])
        .args(["--controller-quic-listen", &controller_quic])
        .args(extra)
        .env_remove("JUMPSTARTER_NAMESPACE")
        .env_remove("JUMPSTARTER_NO_QUIC")
        .stdin(Stdio::null());
    let process = ServeProcess::spawn(command, &data_dir, dir.path().join("serve.log"), WAIT);
    let credentials = create_client(&data_dir);

    // Both endpoints publish the configured windows.
    let text = metrics_text(&http);
    for endpoint in ["router", "controller"] {
        let series = format!(
            "jumpstarter_quic_window_bytes{{endpoint=\"{endpoint}\",window=\"stream_receive\"}}"
        );
        assert_eq!(
            metric(&text, &series),
            Some(stream_window as f64),
            "{series} in\n{text}\n{}",
            process.logs()
        );
    }

    // A gRPC-over-QUIC peer (with another controller of its own) calls the controller.
    let roots = CertificateDer::pem_slice_iter(&credentials.ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("CA");
    let tls = jumpstarter_certs::client_config(roots, None, Vec::new()).expect("tls");
    let peer_transport = QuicTransport {
        congestion: Congestion::NewReno,
        ..QuicTransport::default()
    };
    let host = grpc.rsplit_once(':').expect("host:port").0;
    let connector = CarrierConnector::new_with(&controller_quic, host, tls, &peer_transport)
        .expect("connector");
    let _stream = timeout(WAIT, connector.open())
        .await
        .expect("in time")
        .expect("a stream to the controller over QUIC");

    // The controller's info gauge is what its live connection runs.
    let info = |c: Congestion| {
        format!("jumpstarter_quic_congestion_info{{endpoint=\"controller\",congestion=\"{c}\"}}")
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics_text(&http);
        if metric(&text, &info(congestion)) == Some(1.0) {
            for other in Congestion::ALL.into_iter().filter(|&c| c != congestion) {
                assert_eq!(metric(&text, &info(other)), Some(0.0), "{}", info(other));
            }
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let router_info = format!(
        "jumpstarter_quic_congestion_info{{endpoint=\"router\",congestion=\"{congestion}\"}}"
    );
    assert_eq!(metric(&metrics_text(&http), &router_info), Some(1.0));
    let logs = process.logs();
    assert!(
        logs.contains("QUIC transport in force"),
        "no start line:\n{logs}"
    );
}

#[tokio::test]
async fn non_default_settings_are_in_force_on_both_quic_endpoints() {
    check_serve(
        &[
            "--quic-congestion",
            "cubic",
            "--quic-stream-receive-window",
            "3145728",
        ],
        3 * MIB,
        Congestion::Cubic,
    )
    .await;
}

#[tokio::test]
async fn default_settings_are_in_force_on_both_quic_endpoints() {
    let defaults = QuicTransport::default();
    check_serve(&[], defaults.stream_receive_window, defaults.congestion).await;
}
