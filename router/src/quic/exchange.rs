//! Pairing of QUIC session streams: the [`PairingTable`] keyed by lease and session id,
//! plus one rule the h2 side does not need: the two sides must hold different roles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use jumpstarter_certs::Role;
use jumpstarter_tunnel::code;
use quinn::VarInt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info};

use super::metrics::QuicMetrics;
use super::splice::{self, Side};
use crate::pairing::{Limits, Offer, PairingTable, Rejection, Ticket};

/// Shared pairing state of one QUIC listener.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    metrics: QuicMetrics,
    stop_relays: CancellationToken,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    table: PairingTable,
    waiters: HashMap<Ticket, Waiter>,
    by_key: HashMap<String, Ticket>,
    closed: bool,
}

#[derive(Debug)]
struct Waiter {
    key: String,
    role: Role,
    side: Side,
    /// Dropped (or sent to) once the waiter was taken by its peer.
    _wake: oneshot::Sender<()>,
}

/// What to do after offering an arrival.
enum Next {
    Wait(Ticket, Instant, oneshot::Receiver<()>),
    Pair(Option<Waiter>, Arrival),
}

/// One arriving session stream.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// `namespace/lease/uid/session`.
    pub(crate) key: String,
    pub(crate) role: Role,
    pub(crate) side: Side,
    /// Until when the id is remembered as paired: the certificate's end.
    pub(crate) remember_until: Instant,
}

impl Exchange {
    pub(crate) fn new(
        limits: Limits,
        metrics: QuicMetrics,
        stop_relays: CancellationToken,
    ) -> Self {
        Exchange {
            shared: Arc::new(Shared {
                metrics,
                stop_relays,
                state: Mutex::new(State {
                    table: PairingTable::new(limits),
                    waiters: HashMap::new(),
                    by_key: HashMap::new(),
                    closed: false,
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves at worst a stale entry; keep serving.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refuses new arrivals and resets every waiting stream; live pairs go on.
    pub(crate) fn close(&self) {
        let waiters: Vec<Waiter> = {
            let mut state = self.lock();
            state.closed = true;
            let tickets: Vec<Ticket> = state.waiters.keys().copied().collect();
            for ticket in &tickets {
                state.table.cancel(*ticket);
            }
            state.by_key.clear();
            self.shared.metrics.pending(0);
            state.waiters.drain().map(|(_, waiter)| waiter).collect()
        };
        for waiter in waiters {
            self.shared.metrics.session_ended("shutting_down");
            refuse(waiter.side, code::SHUTTING_DOWN);
        }
    }

    /// Pairs `arrival` or parks it until its peer comes, its deadline passes or
    /// `connection` closes.
    pub(crate) async fn arrive(&self, arrival: Arrival, connection: &quinn::Connection) {
        let now = Instant::now();
        let next = {
            let mut state = self.lock();
            if state.closed {
                drop(state);
                self.refused(arrival.side, "shutting_down", code::SHUTTING_DOWN);
                return;
            }
            if let Some(waiting) = state.by_key.get(&arrival.key)
                && state
                    .waiters
                    .get(waiting)
                    .is_some_and(|w| w.role == arrival.role)
            {
                drop(state);
                info!(role = %arrival.role, "refused: a stream of the same role already waits");
                self.refused(arrival.side, "same_role", code::SAME_ROLE);
                return;
            }
            let offer = state.table.offer(&arrival.key, arrival.remember_until, now);
            match offer {
                Offer::Reject(rejection) => {
                    self.shared.metrics.pending(state.table.pending_len());
                    drop(state);
                    info!("refused: {rejection}");
                    let (reason, code) = match rejection {
                        Rejection::AlreadyPaired { .. } => ("already_paired", code::ALREADY_PAIRED),
                        Rejection::TooManyPending { .. } => {
                            ("too_many_pending", code::TOO_MANY_PENDING)
                        }
                    };
                    self.refused(arrival.side, reason, code);
                    return;
                }
                Offer::Paired { waiting } => {
                    let waiter = state.waiters.remove(&waiting);
                    state.by_key.remove(&arrival.key);
                    self.shared.metrics.pending(state.table.pending_len());
                    drop(state);
                    Next::Pair(waiter, arrival)
                }
                Offer::Wait { ticket, deadline } => {
                    let (wake, woken) = oneshot::channel();
                    state.by_key.insert(arrival.key.clone(), ticket);
                    state.waiters.insert(
                        ticket,
                        Waiter {
                            key: arrival.key,
                            role: arrival.role,
                            side: arrival.side,
                            _wake: wake,
                        },
                    );
                    self.shared.metrics.pending(state.table.pending_len());
                    Next::Wait(ticket, deadline, woken)
                }
            }
        };
        let (ticket, deadline, woken) = match next {
            Next::Wait(ticket, deadline, woken) => (ticket, deadline, woken),
            Next::Pair(waiter, arrival) => {
                // Invariant: the table and `waiters` change together under the lock, so a
                // ticket the table still had pending has its waiter.
                let Some(waiter) = waiter else {
                    self.refused(arrival.side, "peer_gone", code::PEER_GONE);
                    return;
                };
                info!("paired");
                let (client, exporter) = match arrival.role {
                    Role::Client => (arrival.side, waiter.side),
                    Role::Exporter => (waiter.side, arrival.side),
                };
                self.splice(client, exporter).await;
                return;
            }
        };
        debug!("waiting for the peer");
        let timed_out = tokio::select! {
            _ = woken => return,
            () = tokio::time::sleep_until(deadline.into()) => true,
            _ = connection.closed() => false,
        };
        let waiter = {
            let mut state = self.lock();
            if !state.table.cancel(ticket) {
                // Paired (or closed) at the same moment: the peer owns the stream now.
                return;
            }
            let waiter = state.waiters.remove(&ticket);
            if let Some(waiter) = &waiter {
                state.by_key.remove(&waiter.key);
            }
            self.shared.metrics.pending(state.table.pending_len());
            waiter
        };
        let Some(waiter) = waiter else { return };
        if timed_out {
            info!("no peer arrived in time");
            self.shared.metrics.pairing_timed_out();
            refuse(waiter.side, code::PAIR_TIMEOUT);
        } else {
            self.shared.metrics.session_ended("cancelled_waiting");
        }
    }

    async fn splice(&self, client: Side, exporter: Side) {
        let shared = self.shared.clone();
        shared.metrics.pair_started();
        let completed = splice::run(client, exporter, &shared.metrics, &shared.stop_relays)
            .in_current_span()
            .await;
        shared.metrics.pair_ended();
        let outcome = if completed { "completed" } else { "broken" };
        // Two streams per pair.
        shared.metrics.session_ended(outcome);
        shared.metrics.session_ended(outcome);
        debug!(outcome, "pair ended");
    }

    fn refused(&self, side: Side, reason: &'static str, code: u32) {
        self.shared.metrics.session_ended(reason);
        refuse(side, code);
    }
}

/// Resets a stream both ways with `code`.
pub(crate) fn refuse(mut side: Side, code: u32) {
    let code = VarInt::from_u32(code);
    let _ = side.send.reset(code);
    let _ = side.recv.stop(code);
}
