//! Who may start a TLS handshake: the sans-IO counts of one listener's connections and
//! handshakes, in total and per source, and the decision to admit or refuse a new
//! connection. The accept loop holds one [`Admission`] behind a lock and reports each
//! connection's end to it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// The caps the admission enforces (copied from the listener's limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) connections: usize,
    pub(crate) connections_per_source: usize,
    pub(crate) handshakes: usize,
    pub(crate) handshakes_per_source: usize,
}

/// Where connections come from, for the per-source caps: an IPv4 address, or the /64
/// network of an IPv6 address (one host or site usually holds a whole /64, so per-address
/// caps would not bound it). IPv4-mapped IPv6 addresses (a dual-stack listener) count as
/// their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    pub(crate) fn of(addr: IpAddr) -> Source {
        match addr.to_canonical() {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                Source(IpAddr::V6(Ipv6Addr::from(network)))
            }
        }
    }
}

/// Why a connection was closed right after `accept`, before any TLS byte was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds its maximum of open connections.
    Connections,
    /// The peer's source holds its maximum of open connections.
    ConnectionsPerSource,
    /// The maximum of TLS handshakes is in flight.
    Handshakes,
    /// The peer's source has its maximum of TLS handshakes in flight.
    HandshakesPerSource,
}

impl Refusal {
    /// The metric label of the refusal.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::ConnectionsPerSource => "connections_per_source",
            Refusal::Handshakes => "handshakes",
            Refusal::HandshakesPerSource => "handshakes_per_source",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    connections: usize,
    handshakes: usize,
}

/// The open connections and handshakes in flight of one listener. Every admitted
/// connection counts until [`Admission::closed`]; its handshake until
/// [`Admission::handshake_ended`] (or the close, whichever comes first).
#[derive(Debug)]
pub(crate) struct Admission {
    caps: Caps,
    total: Counts,
    sources: HashMap<Source, Counts>,
}

impl Admission {
    pub(crate) fn new(caps: Caps) -> Admission {
        Admission {
            caps,
            total: Counts::default(),
            sources: HashMap::new(),
        }
    }

    /// Admits a new connection from `source` (it counts as a connection and a handshake)
    /// or says why not. Connection caps are checked before handshake caps, so a full
    /// listener reports that it is full.
    pub(crate) fn admit(&mut self, source: Source) -> Result<(), Refusal> {
        let own = self.sources.get(&source).copied().unwrap_or_default();
        if self.total.connections >= self.caps.connections {
            return Err(Refusal::Connections);
        }
        if own.connections >= self.caps.connections_per_source {
            return Err(Refusal::ConnectionsPerSource);
        }
        if self.total.handshakes >= self.caps.handshakes {
            return Err(Refusal::Handshakes);
        }
        if own.handshakes >= self.caps.handshakes_per_source {
            return Err(Refusal::HandshakesPerSource);
        }
        let own = self.sources.entry(source).or_default();
        own.connections += 1;
        own.handshakes += 1;
        self.total.connections += 1;
        self.total.handshakes += 1;
        Ok(())
    }

    /// The handshake of an admitted connection from `source` ended (done or failed).
    pub(crate) fn handshake_ended(&mut self, source: Source) {
        self.total.handshakes = self.total.handshakes.saturating_sub(1);
        if let Some(own) = self.sources.get_mut(&source) {
            own.handshakes = own.handshakes.saturating_sub(1);
        }
    }

    /// An admitted connection from `source` closed (its handshake ended before).
    pub(crate) fn closed(&mut self, source: Source) {
        self.total.connections = self.total.connections.saturating_sub(1);
        if let Some(own) = self.sources.get_mut(&source) {
            own.connections = own.connections.saturating_sub(1);
            if own.connections == 0 {
                self.sources.remove(&source);
            }
        }
    }

    /// Open connections (handshaking or established).
    pub(crate) fn connections(&self) -> usize {
        self.total.connections
    }

    /// Handshakes in flight.
    pub(crate) fn handshakes(&self) -> usize {
        self.total.handshakes
    }

    /// Sources with at least one open connection.
    #[cfg(test)]
    fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        connections: 6,
        connections_per_source: 4,
        handshakes: 4,
        handshakes_per_source: 2,
    };

    fn source(text: &str) -> Source {
        Source::of(text.parse().expect("address"))
    }

    #[test]
    fn a_source_is_capped_in_handshakes_then_in_connections() {
        let mut admission = Admission::new(CAPS);
        let a = source("192.0.2.1");
        assert_eq!(admission.admit(a), Ok(()));
        assert_eq!(admission.admit(a), Ok(()));
        assert_eq!(admission.admit(a), Err(Refusal::HandshakesPerSource));
        // Established connections free their handshake slot, not their connection slot.
        admission.handshake_ended(a);
        admission.handshake_ended(a);
        assert_eq!(admission.admit(a), Ok(()));
        assert_eq!(admission.admit(a), Ok(()));
        admission.handshake_ended(a);
        admission.handshake_ended(a);
        assert_eq!(admission.admit(a), Err(Refusal::ConnectionsPerSource));
        // Another source is not affected.
        assert_eq!(admission.admit(source("192.0.2.2")), Ok(()));
        admission.closed(a);
        assert_eq!(admission.admit(a), Ok(()));
    }

    #[test]
    fn totals_cap_every_source() {
        let mut admission = Admission::new(CAPS);
        for n in 1..=4 {
            assert_eq!(admission.admit(source(&format!("192.0.2.{n}"))), Ok(()));
        }
        assert_eq!(
            admission.admit(source("192.0.2.5")),
            Err(Refusal::Handshakes)
        );
        for n in 1..=4 {
            admission.handshake_ended(source(&format!("192.0.2.{n}")));
        }
        assert_eq!(admission.admit(source("192.0.2.5")), Ok(()));
        assert_eq!(admission.admit(source("192.0.2.6")), Ok(()));
        assert_eq!(
            admission.admit(source("192.0.2.7")),
            Err(Refusal::Connections)
        );
        assert_eq!((admission.connections(), admission.handshakes()), (6, 2));
    }

    #[test]
    fn closing_everything_forgets_the_sources() {
        let mut admission = Admission::new(CAPS);
        let (a, b) = (source("192.0.2.1"), source("2001:db8::1"));
        admission.admit(a).expect("admit");
        admission.admit(b).expect("admit");
        admission.handshake_ended(a);
        admission.handshake_ended(b);
        admission.closed(a);
        admission.closed(b);
        assert_eq!(
            (
                admission.connections(),
                admission.handshakes(),
                admission.sources()
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(source("2001:db8:1:2::1"), source("2001:db8:1:2:ffff::9"));
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(source("::ffff:192.0.2.1"), source("192.0.2.1"));
    }
}
