//! UDP sockets for QUIC endpoints, with kernel buffers sized for bulk transfers.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer by default. A QUIC endpoint that
//! carries a bulk transfer fills that in a few milliseconds, and the kernel then drops
//! every datagram that arrives for the socket, whichever connection it belongs to: a small
//! round trip sharing the router's socket with a bulk session waits for a retransmission
//! timeout. [`bind`] asks for [`BUFFER_BYTES`] each way; the kernel caps the request at
//! `net.core.rmem_max` / `net.core.wmem_max` (operators raise those for more).
//!
//! Endpoints are made with [`endpoint`], which also reports the UDP offloads quinn uses on
//! the socket ([`Offloads`]: several datagrams per system call, GSO on send and GRO on
//! receive, where the kernel offers them); [`offloads`] asks the kernel for any socket.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::transport::QuicTransport;

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

/// Datagrams one system call may carry on a UDP socket: GSO segments on send, GRO
/// segments on receive (1: no offload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    pub gso: usize,
    pub gro: usize,
}

/// What the kernel offers `socket` (asking enables GRO on it, as quinn does).
pub fn offloads(socket: &std::net::UdpSocket) -> Offloads {
    match quinn::udp::UdpSocketState::new(socket.into()) {
        Ok(state) => Offloads {
            gso: state.max_gso_segments(),
            gro: state.gro_segments(),
        },
        Err(error) => {
            tracing::debug!(%error, "cannot read the UDP offloads; assuming none");
            Offloads { gso: 1, gro: 1 }
        }
    }
}

/// A QUIC endpoint on `socket` (serving with `server` if given), and the offloads quinn
/// uses on it, read from the socket quinn drives.
pub fn endpoint(
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
    socket: std::net::UdpSocket,
) -> io::Result<(quinn::Endpoint, Offloads)> {
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = quinn::Runtime::wrap_udp_socket(&*runtime, socket)?;
    let offloads = Offloads {
        gso: socket.max_transmit_segments(),
        gro: socket.max_receive_segments(),
    };
    let endpoint = quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)?;
    Ok((endpoint, offloads))
}

/// A client-only QUIC endpoint on a [`bind`] socket, accepting datagrams as large as
/// `transport` allows.
pub fn client_endpoint_for(
    addr: SocketAddr,
    transport: &QuicTransport,
) -> io::Result<(quinn::Endpoint, Offloads)> {
    endpoint(transport.endpoint_config(), None, bind(addr)?)
}

/// A client-only QUIC endpoint on a [`bind`] socket, with the default transport.
pub fn client_endpoint(addr: SocketAddr) -> io::Result<quinn::Endpoint> {
    client_endpoint_for(addr, &QuicTransport::default()).map(|(endpoint, _)| endpoint)
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

    #[tokio::test]
    async fn the_offloads_quinn_uses_are_the_kernels() {
        let socket = bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let kernel = offloads(&socket);
        assert!(kernel.gso >= 1 && kernel.gro >= 1, "{kernel:?}");
        let (_endpoint, used) = endpoint(
            QuicTransport::default().endpoint_config(),
            None,
            bind(([127, 0, 0, 1], 0).into()).expect("bind"),
        )
        .expect("endpoint");
        assert_eq!(used, kernel);
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
