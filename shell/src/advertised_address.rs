//! The address peers dial for a listen address.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// `listen`, with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback of the same
/// family: a wildcard listener is reachable there, and a wildcard is no address to dial.
pub fn advertised(listen: SocketAddr) -> SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_advertise_loopback() {
        let advertised = |text: &str| advertised(text.parse().expect("address")).to_string();
        assert_eq!(advertised("0.0.0.0:8082"), "127.0.0.1:8082");
        assert_eq!(advertised("[::]:8083"), "[::1]:8083");
        assert_eq!(advertised("10.1.2.3:9"), "10.1.2.3:9");
    }
}
