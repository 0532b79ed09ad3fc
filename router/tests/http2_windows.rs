//! The router's HTTP/2 receive windows are the ones configured (by default sized for a
//! 100 ms × 1 Gbit/s path), as a peer sees them on the wire: a raw HTTP/2 client over real
//! TLS on loopback reads the server's SETTINGS_INITIAL_WINDOW_SIZE (the stream window) and
//! the WINDOW_UPDATE of stream 0 that raises the connection window from the protocol's
//! 65,535 bytes.

use crate::support;

use std::sync::Arc;

use jumpstarter_shell::http2_windows::{CONNECTION_WINDOW, Http2Windows, STREAM_WINDOW};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::authority::HOST;
use support::{TestRouter, WAIT, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What the client preface and an empty SETTINGS frame look like (RFC 9113, 3.4 and 6.5).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// Every window starts at this (RFC 9113, 6.9.2).
const INITIAL_WINDOW: u32 = 65_535;

/// Frames read at most before the windows must have been announced.
const MAX_FRAMES: usize = 16;

/// The windows the server announces: (stream window, connection window).
async fn announced_windows(router: &TestRouter) -> (u32, u32) {
    let roots = CertificateDer::pem_slice_iter(router.ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("CA PEM");
    let tls =
        jumpstarter_certs::client_config(roots, None, vec![b"h2".to_vec()]).expect("client TLS");
    let tcp = TcpStream::connect(router.addr).await.expect("connect");
    let name = ServerName::try_from(HOST).expect("server name").to_owned();
    let mut conn = TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    conn.write_all(PREFACE).await.expect("preface");
    conn.write_all(&EMPTY_SETTINGS).await.expect("settings");
    conn.flush().await.expect("flush");

    let read = async {
        // A server that does not say otherwise keeps the protocol's initial windows.
        let mut stream_window = None;
        let mut connection_window = INITIAL_WINDOW;
        let mut settings_seen = false;
        for _ in 0..MAX_FRAMES {
            let mut header = [0u8; 9];
            conn.read_exact(&mut header).await.expect("frame header");
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & !(1 << 31);
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await.expect("frame payload");
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    settings_seen = true;
                    for setting in payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([setting[0], setting[1]]);
                        let value =
                            u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                        if id == SETTINGS_INITIAL_WINDOW_SIZE {
                            stream_window = Some(value);
                        }
                    }
                }
                WINDOW_UPDATE if stream == 0 => {
                    let increment =
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & !(1 << 31);
                    connection_window += increment;
                }
                _ => {}
            }
            // The server sends its SETTINGS first and raises the connection window right
            // after (every window configured here is above the initial one).
            if settings_seen && connection_window > INITIAL_WINDOW {
                break;
            }
        }
        (stream_window.unwrap_or(INITIAL_WINDOW), connection_window)
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the server's settings in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_windows_fit_a_long_fat_path() {
    let router = start(|_| {}).await;
    assert_eq!(
        announced_windows(&router).await,
        (STREAM_WINDOW, CONNECTION_WINDOW)
    );
    assert_eq!(
        (STREAM_WINDOW, CONNECTION_WINDOW),
        (16 * 1024 * 1024, 32 * 1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_windows_are_the_ones_in_force() {
    let windows = Http2Windows {
        stream_window: 3 * 1024 * 1024,
        connection_window: 5 * 1024 * 1024 + 1,
    };
    let router = start(|config| config.http2_windows = windows).await;
    assert_eq!(
        announced_windows(&router).await,
        (windows.stream_window, windows.connection_window)
    );
}
