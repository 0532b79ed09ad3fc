//! The router's budget of QUIC flow-control memory: the windows (receive + send) it grants
//! over all its connections.
//!
//! Windows sized for a long fat path (tens of MiB per connection) would let a few thousand
//! connections pin tens of GiB. So each accepted connection gets the configured windows
//! while the budget lasts, and a floor ([`FLOOR_STREAM_RECEIVE`], [`FLOOR_RECEIVE`],
//! [`FLOOR_SEND`]: the windows of earlier releases) beyond it. The grant returns to the
//! budget when the connection ends. Worst case: budget + max connections × floor.
//!
//! [`WindowPool`] is the sans-IO decision; [`WindowBudget`] hands out the per-connection
//! quinn server configurations and holds the pool behind a lock.

use std::sync::{Arc, Mutex};

use jumpstarter_tunnel::QuicTransport;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

const MIB: u64 = 1024 * 1024;

/// Stream receive window of a connection beyond the budget: 1 MiB, about quinn's own
/// default, still 100 MiB/s per stream at 10 ms.
pub(crate) const FLOOR_STREAM_RECEIVE: u64 = MIB;

/// Connection receive window beyond the budget: two streams at the floor's full speed.
pub(crate) const FLOOR_RECEIVE: u64 = 2 * MIB;

/// Send window beyond the budget: what a peer's floor receive window takes at once.
pub(crate) const FLOOR_SEND: u64 = 2 * MIB;

/// Default budget: 1 GiB, 16 connections at the default 64 MiB (32 MiB receive + 32 MiB
/// send) each, the rest at the floor.
pub(crate) const DEFAULT_WINDOW_BUDGET: u64 = 1024 * MIB;

/// Which windows a connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// The configured windows; their bytes are taken from the pool.
    Full,
    /// The floor; nothing is taken.
    Floor,
}

/// The budget's bookkeeping: bytes granted out of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowPool {
    total: u64,
    granted: u64,
}

impl WindowPool {
    pub(crate) fn new(total: u64) -> WindowPool {
        WindowPool { total, granted: 0 }
    }

    /// Decides for a connection whose full windows cost `full` bytes.
    pub(crate) fn take(&mut self, full: u64) -> Grant {
        match self.granted.checked_add(full) {
            Some(granted) if granted <= self.total => {
                self.granted = granted;
                Grant::Full
            }
            _ => Grant::Floor,
        }
    }

    /// Returns a full grant of `full` bytes (its connection ended).
    pub(crate) fn give_back(&mut self, full: u64) {
        self.granted = self.granted.saturating_sub(full);
    }

    pub(crate) fn granted(&self) -> u64 {
        self.granted
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// The pool and the two server configurations (full and floor windows) of a listener.
#[derive(Debug, Clone)]
pub(crate) struct WindowBudget {
    pool: Arc<Mutex<WindowPool>>,
    full: Arc<quinn::ServerConfig>,
    floor: Arc<quinn::ServerConfig>,
    /// What a full grant costs: the configured receive + send windows.
    full_bytes: u64,
    /// `jumpstarter_router_quic_window_budget_bytes{state=granted|total}`.
    gauge: Family<Vec<(&'static str, &'static str)>, Gauge>,
}

/// A connection's full grant; returned to the pool when dropped.
#[derive(Debug)]
pub(crate) struct WindowGrant {
    budget: WindowBudget,
}

impl Drop for WindowGrant {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget.with_pool(|pool| pool.give_back(budget.full_bytes));
    }
}

impl WindowBudget {
    /// A budget of `total` bytes; `server` builds a server configuration for given
    /// transport settings.
    pub(crate) fn new(
        total: u64,
        transport: &QuicTransport,
        server: impl Fn(&QuicTransport) -> quinn::ServerConfig,
        gauge: Family<Vec<(&'static str, &'static str)>, Gauge>,
    ) -> WindowBudget {
        let floor = floor_of(transport);
        let budget = WindowBudget {
            pool: Arc::new(Mutex::new(WindowPool::new(total))),
            full: Arc::new(server(transport)),
            floor: Arc::new(server(&floor)),
            full_bytes: full_bytes(transport),
            gauge,
        };
        budget.with_pool(|_| ());
        budget
    }

    /// The server configuration of a new connection, and its grant (to keep as long as
    /// the connection lives) if it gets the full windows.
    pub(crate) fn grant(&self) -> (Arc<quinn::ServerConfig>, Option<WindowGrant>) {
        match self.with_pool(|pool| pool.take(self.full_bytes)) {
            Grant::Full => (
                self.full.clone(),
                Some(WindowGrant {
                    budget: self.clone(),
                }),
            ),
            Grant::Floor => (self.floor.clone(), None),
        }
    }

    /// Runs `change` on the pool and publishes the result.
    fn with_pool<T>(&self, change: impl FnOnce(&mut WindowPool) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update of two integers; the
        // numbers are still the best we have.
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = change(&mut pool);
        for (state, bytes) in [("granted", pool.granted()), ("total", pool.total())] {
            self.gauge
                .get_or_create(&vec![("state", state)])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        result
    }
}

/// The windows of a connection beyond the budget.
pub(crate) fn floor_of(transport: &QuicTransport) -> QuicTransport {
    transport.capped(FLOOR_STREAM_RECEIVE, FLOOR_RECEIVE, FLOOR_SEND)
}

/// What one connection with `transport`'s windows may hold: its connection receive window
/// (never below its stream window) plus its send window.
pub(crate) fn full_bytes(transport: &QuicTransport) -> u64 {
    transport
        .receive_window
        .max(transport.stream_receive_window)
        .saturating_add(transport.send_window)
}

/// The flow-control memory of the router in the worst case: the budget, plus every other
/// connection at the floor.
pub(crate) fn worst_case(budget: u64, max_connections: usize, transport: &QuicTransport) -> u64 {
    let floor = full_bytes(&floor_of(transport));
    budget.saturating_add(floor.saturating_mul(max_connections as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_windows_while_the_budget_lasts_then_the_floor() {
        let mut pool = WindowPool::new(100);
        assert_eq!(pool.take(40), Grant::Full);
        assert_eq!(pool.take(40), Grant::Full);
        assert_eq!(pool.granted(), 80);
        assert_eq!(pool.take(40), Grant::Floor);
        assert_eq!(pool.granted(), 80, "a floor takes nothing");
        pool.give_back(40);
        assert_eq!(
            pool.take(40),
            Grant::Full,
            "a returned grant is granted again"
        );
        assert_eq!(pool.granted(), 80);
    }

    #[test]
    fn a_zero_budget_gives_every_connection_the_floor() {
        let mut pool = WindowPool::new(0);
        assert_eq!(pool.take(1), Grant::Floor);
        assert_eq!(pool.take(u64::MAX), Grant::Floor);
        let mut pool = WindowPool::new(u64::MAX);
        assert_eq!(pool.take(u64::MAX), Grant::Full);
        assert_eq!(pool.take(1), Grant::Floor, "no overflow");
    }

    #[test]
    fn returning_more_than_granted_cannot_underflow() {
        let mut pool = WindowPool::new(10);
        pool.give_back(5);
        assert_eq!(pool.granted(), 0);
    }

    #[test]
    fn the_floor_never_raises_a_window() {
        let small = QuicTransport {
            stream_receive_window: 64 * 1024,
            receive_window: 128 * 1024,
            send_window: 4 * MIB,
            ..QuicTransport::default()
        };
        let floor = floor_of(&small);
        assert_eq!(floor.stream_receive_window, 64 * 1024);
        assert_eq!(floor.receive_window, 128 * 1024);
        assert_eq!(floor.send_window, FLOOR_SEND);
        let default = floor_of(&QuicTransport::default());
        assert_eq!(full_bytes(&default), 4 * MIB);
        assert_eq!(full_bytes(&QuicTransport::default()), 64 * MIB);
        // 1 GiB budget, 2,048 connections: 1 GiB + 8 GiB.
        assert_eq!(
            worst_case(DEFAULT_WINDOW_BUDGET, 2048, &QuicTransport::default()),
            9 * 1024 * MIB
        );
    }

    #[test]
    fn grants_return_to_the_pool_when_dropped() {
        let transport = QuicTransport::default();
        let server = |_: &QuicTransport| {
            let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(
                jumpstarter_certs::server_config(
                    test_credentials(),
                    Vec::new(),
                    jumpstarter_certs::ClientAuth::None,
                )
                .expect("tls"),
            )
            .expect("quic tls");
            quinn::ServerConfig::with_crypto(Arc::new(crypto))
        };
        let gauge = Family::default();
        let budget = WindowBudget::new(100 * MIB, &transport, server, gauge.clone());
        let granted = || gauge.get_or_create(&vec![("state", "granted")]).get();
        let (_, first) = budget.grant();
        assert!(first.is_some());
        assert_eq!(granted(), 64 * 1024 * 1024);
        let (_, second) = budget.grant();
        assert!(second.is_none(), "64 MiB more would exceed 100 MiB");
        drop(first);
        assert_eq!(granted(), 0);
        let (_, third) = budget.grant();
        assert!(third.is_some());
        assert_eq!(
            gauge.get_or_create(&vec![("state", "total")]).get(),
            100 * 1024 * 1024
        );
    }

    fn test_credentials() -> jumpstarter_certs::TlsCredentials {
        let now = time::OffsetDateTime::now_utc();
        let ca = jumpstarter_certs::Ca::generate("budget test", now, time::Duration::hours(1))
            .expect("ca");
        let issued = ca
            .issue_server_cert(
                &jumpstarter_certs::ServerCertParams {
                    dns_names: vec!["router.test".into()],
                    ip_addresses: Vec::new(),
                    validity: time::Duration::hours(1),
                },
                now,
            )
            .expect("cert");
        issued.credentials()
    }
}
