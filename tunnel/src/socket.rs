//! UDP sockets for QUIC endpoints, with kernel buffers sized for bulk transfers.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer by default. A QUIC endpoint that
//! carries a bulk transfer fills that in a few milliseconds, and the kernel then drops
//! every datagram that arrives for the socket, whichever connection it belongs to: a small
//! round trip sharing the router's socket with a bulk session waits for a retransmission
//! timeout. [`bind`] asks for [`BUFFER_BYTES`] each way; the kernel caps the request at
//! `net.core.rmem_max` / `net.core.wmem_max` (operators raise those for more).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

/// Receive and send buffer asked for on every endpoint socket.
pub const BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `addr` with [`BUFFER_BYTES`] of buffers (as far as the kernel
/// allows: a smaller grant is not an error).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (what, set) in [
        (
            "receive",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> io::Result<()>,
        ),
        ("send", Socket::set_send_buffer_size),
    ] {
        if let Err(error) = set(&socket, BUFFER_BYTES) {
            tracing::debug!(%error, "cannot size the UDP {what} buffer; keeping the default");
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A client-only QUIC endpoint on a [`bind`] socket.
pub fn client_endpoint(addr: SocketAddr) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        bind(addr)?,
        Arc::new(quinn::TokioRuntime),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel lets an unprivileged request reach (`net.core.{r,w}mem_max`).
    fn cap(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .expect("read the sysctl")
            .trim()
            .parse()
            .expect("a number")
    }

    #[test]
    fn the_buffers_are_as_large_as_asked_or_as_the_kernel_allows() {
        let socket = Socket::from(bind(([127, 0, 0, 1], 0).into()).expect("bind"));
        // Linux reports twice what it granted (bookkeeping overhead).
        let granted = |size: usize| size / 2;
        assert!(
            granted(socket.recv_buffer_size().expect("size")) >= BUFFER_BYTES.min(cap("rmem_max"))
        );
        assert!(
            granted(socket.send_buffer_size().expect("size")) >= BUFFER_BYTES.min(cap("wmem_max"))
        );
    }
}
