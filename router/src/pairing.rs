//! The pairing table: which stream ids wait for a peer, which were already paired.
//!
//! Sans-IO: no sockets, no clock, no tasks. Every input carries the caller's `now`; the
//! table answers with what should happen, and the caller does it. The relay layer keeps a
//! waiter per [`Ticket`] and acts on [`Offer`] and [`PairingTable::expire`].
//!
//! State, all bounded:
//! - *pending*: at most one waiting arrival per stream id, at most
//!   [`Limits::max_pending`] in total and [`PairingTable::max_pending_per_lease`] per lease
//!   (so that the parties of one lease cannot fill the table and lock out every other
//!   lease), each with a deadline of `now + pair_timeout`;
//! - *remembered*: stream ids that were paired, kept until their token expires so that a
//!   replayed token cannot open a second pair. At most [`Limits::max_remembered`]
//!   entries; beyond that the entry whose token expires first is forgotten (and counted in
//!   [`PairingTable::evictions`]). Entries leave by themselves once their token expired,
//!   since the token cannot be presented any more after that.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Default number of streams that may wait for a peer at the same time. A waiting stream
/// costs one HTTP/2 stream and a few hundred bytes; 10 000 is far above the number of
/// leases a lab runs at once and still small in memory.
pub const DEFAULT_MAX_PENDING: usize = 10_000;

/// Default number of streams of one lease that may wait for a peer at the same time. A
/// 0.9.0 client dials once per connection it opens to the exporter, a QUIC peer opens one
/// stream per session, at most 256 at once on one connection (the router's
/// `max_sessions_per_connection`); a lease needs far fewer waiting at the same moment, and
/// 256 keeps any one lease to a fortieth of [`DEFAULT_MAX_PENDING`].
pub const DEFAULT_MAX_PENDING_PER_LEASE: usize = 256;

/// Default number of paired stream ids remembered against replay. Tokens live 30 minutes;
/// 100 000 entries (a few MiB) cover more than 50 new pairs per second for that long.
pub const DEFAULT_MAX_REMEMBERED: usize = 100_000;

/// Default payload bytes queued per direction of an h2 pair for a reader that does not
/// keep up (on top of the frame-count bound). 0.9.0 peers send at most 64 KiB per frame, so
/// this is what sixteen such frames held before; a peer sending 4 MiB messages no longer
/// parks 64 MiB per direction. HTTP/2 flow-control windows come on top.
pub const DEFAULT_PAIR_QUEUE_BYTES: usize = 1024 * 1024;

/// Limits of pairing per lease and per pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairLimits {
    /// Streams of one lease that may wait for a peer at once; beyond, RESOURCE_EXHAUSTED.
    pub max_pending_per_lease: usize,
    /// Payload bytes queued per direction of an h2 pair.
    pub pair_queue_bytes: usize,
}

impl Default for PairLimits {
    fn default() -> Self {
        PairLimits {
            max_pending_per_lease: DEFAULT_MAX_PENDING_PER_LEASE,
            pair_queue_bytes: DEFAULT_PAIR_QUEUE_BYTES,
        }
    }
}

/// Identifies one arrival that waits for its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Ticket(u64);

/// What to do with a new arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offer {
    /// No peer yet: wait until `deadline` at the latest.
    Wait { ticket: Ticket, deadline: Instant },
    /// The peer holding `waiting` was there first: relay between the two.
    Paired { waiting: Ticket },
    /// Refuse the arrival.
    Reject(Rejection),
}

/// Why an arrival is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    /// The stream id already has its two peers (now, or earlier with the same token).
    #[error("stream {stream_id} is already paired")]
    AlreadyPaired { stream_id: String },
    /// The router holds as many waiting streams as it allows.
    #[error("too many streams are waiting for a peer (limit {limit})")]
    TooManyPending { limit: usize },
    /// The router holds as many waiting streams of this lease as it allows.
    #[error("too many streams of lease {lease} are waiting for a peer (limit {limit})")]
    TooManyPendingForLease { lease: String, limit: usize },
}

/// A waiting arrival whose deadline passed without a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expired {
    pub(crate) ticket: Ticket,
    pub(crate) stream_id: String,
}

/// Bounds of a [`PairingTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// How long an arrival waits for its peer.
    pub(crate) pair_timeout: Duration,
    /// Waiting arrivals in total.
    pub(crate) max_pending: usize,
    /// Paired stream ids remembered against replay.
    pub(crate) max_remembered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pair_timeout: Duration::from_secs(30),
            max_pending: DEFAULT_MAX_PENDING,
            max_remembered: DEFAULT_MAX_REMEMBERED,
        }
    }
}

/// The pairing state of one router process.
#[derive(Debug)]
pub(crate) struct PairingTable {
    limits: Limits,
    max_pending_per_lease: usize,
    /// Lease → its arrivals waiting (entries leave at zero).
    pending_per_lease: HashMap<String, usize>,
    next_ticket: u64,
    /// Stream id → the arrival waiting on it.
    pending: HashMap<String, Waiting>,
    /// Ticket → stream id, for [`PairingTable::cancel`].
    tickets: HashMap<Ticket, String>,
    /// Pending deadlines in order, for [`PairingTable::expire`].
    deadlines: BTreeSet<(Instant, Ticket)>,
    /// Paired stream id → when its token expires.
    remembered: HashMap<String, Instant>,
    /// The same entries ordered by expiry, to forget and evict the oldest first.
    forget_order: BTreeSet<(Instant, String)>,
    evictions: u64,
}

#[derive(Debug)]
struct Waiting {
    ticket: Ticket,
    lease: String,
    deadline: Instant,
    token_expiry: Instant,
}

impl PairingTable {
    /// An empty table with `limits`.
    pub(crate) fn new(limits: Limits) -> Self {
        PairingTable {
            limits,
            max_pending_per_lease: DEFAULT_MAX_PENDING_PER_LEASE,
            pending_per_lease: HashMap::new(),
            next_ticket: 0,
            pending: HashMap::new(),
            tickets: HashMap::new(),
            deadlines: BTreeSet::new(),
            remembered: HashMap::new(),
            forget_order: BTreeSet::new(),
            evictions: 0,
        }
    }

    /// The limits the table enforces.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Waiting arrivals of one lease, at most (at least one).
    pub(crate) fn set_max_pending_per_lease(&mut self, max: usize) {
        self.max_pending_per_lease = max.max(1);
    }

    /// An arrival for `stream_id` of `lease`, whose token is valid until `token_expiry`.
    ///
    /// A waiting arrival stays pairable until [`PairingTable::expire`] or
    /// [`PairingTable::cancel`] removes it, even if its deadline has passed.
    pub(crate) fn offer(
        &mut self,
        lease: &str,
        stream_id: &str,
        token_expiry: Instant,
        now: Instant,
    ) -> Offer {
        self.forget_expired(now);
        if self.remembered.contains_key(stream_id) {
            return Offer::Reject(Rejection::AlreadyPaired {
                stream_id: stream_id.to_owned(),
            });
        }
        if let Some(waiting) = self.pending.remove(stream_id) {
            self.tickets.remove(&waiting.ticket);
            self.deadlines.remove(&(waiting.deadline, waiting.ticket));
            self.release_lease_slot(&waiting.lease);
            self.remember(stream_id, waiting.token_expiry.max(token_expiry));
            return Offer::Paired {
                waiting: waiting.ticket,
            };
        }
        if self.pending.len() >= self.limits.max_pending {
            return Offer::Reject(Rejection::TooManyPending {
                limit: self.limits.max_pending,
            });
        }
        let of_lease = self.pending_per_lease.get(lease).copied().unwrap_or(0);
        if of_lease >= self.max_pending_per_lease {
            return Offer::Reject(Rejection::TooManyPendingForLease {
                lease: lease.to_owned(),
                limit: self.max_pending_per_lease,
            });
        }
        *self.pending_per_lease.entry(lease.to_owned()).or_insert(0) += 1;
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        let deadline = now + self.limits.pair_timeout;
        self.pending.insert(
            stream_id.to_owned(),
            Waiting {
                ticket,
                lease: lease.to_owned(),
                deadline,
                token_expiry,
            },
        );
        self.tickets.insert(ticket, stream_id.to_owned());
        self.deadlines.insert((deadline, ticket));
        Offer::Wait { ticket, deadline }
    }

    /// Withdraws a waiting arrival (its caller went away). Returns whether it was still
    /// waiting; `false` means it was paired or expired already.
    pub(crate) fn cancel(&mut self, ticket: Ticket) -> bool {
        let Some(stream_id) = self.tickets.remove(&ticket) else {
            return false;
        };
        if let Some(waiting) = self.pending.remove(&stream_id) {
            self.deadlines.remove(&(waiting.deadline, waiting.ticket));
            self.release_lease_slot(&waiting.lease);
        }
        true
    }

    /// Removes and returns the waiting arrivals whose deadline is at or before `now`, and
    /// forgets paired stream ids whose token expired.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Expired> {
        self.forget_expired(now);
        let mut expired = Vec::new();
        while let Some(&(deadline, ticket)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(stream_id) = self.tickets.remove(&ticket) {
                if let Some(waiting) = self.pending.remove(&stream_id) {
                    self.release_lease_slot(&waiting.lease);
                }
                expired.push(Expired { ticket, stream_id });
            }
        }
        expired
    }

    /// The ticket of the arrival waiting on `stream_id`, if any.
    pub(crate) fn waiting(&self, stream_id: &str) -> Option<Ticket> {
        self.pending.get(stream_id).map(|waiting| waiting.ticket)
    }

    /// The earliest deadline of a waiting arrival, if any.
    #[cfg(test)]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Arrivals waiting for a peer.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Paired stream ids remembered against replay.
    pub(crate) fn remembered_len(&self) -> usize {
        self.remembered.len()
    }

    /// Remembered stream ids forgotten early because the memory was full.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// One waiting arrival of `lease` left the table.
    fn release_lease_slot(&mut self, lease: &str) {
        if let Some(count) = self.pending_per_lease.get_mut(lease) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.pending_per_lease.remove(lease);
            }
        }
    }

    fn remember(&mut self, stream_id: &str, until: Instant) {
        if self.limits.max_remembered == 0 {
            return;
        }
        while self.remembered.len() >= self.limits.max_remembered {
            let Some((_, oldest)) = self.forget_order.pop_first() else {
                break;
            };
            self.remembered.remove(&oldest);
            self.evictions += 1;
        }
        self.remembered.insert(stream_id.to_owned(), until);
        self.forget_order.insert((until, stream_id.to_owned()));
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some((until, _)) = self.forget_order.first() {
            if *until > now {
                break;
            }
            if let Some((_, stream_id)) = self.forget_order.pop_first() {
                self.remembered.remove(&stream_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);
    const TOKEN: Duration = Duration::from_secs(1800);
    const LEASE: &str = "lab/lease-1";

    fn table(max_pending: usize, max_remembered: usize) -> PairingTable {
        PairingTable::new(Limits {
            pair_timeout: TIMEOUT,
            max_pending,
            max_remembered,
        })
    }

    fn wait_ticket(offer: Offer) -> Ticket {
        match offer {
            Offer::Wait { ticket, .. } => ticket,
            other => panic!("expected Wait, got {other:?}"),
        }
    }

    #[test]
    fn second_arrival_pairs_with_the_first_and_a_third_is_refused() {
        let t0 = Instant::now();
        let mut table = table(10, 10);
        let first = table.offer(LEASE, "s1", t0 + TOKEN, t0);
        let Offer::Wait { ticket, deadline } = first else {
            panic!("expected Wait, got {first:?}");
        };
        assert_eq!(deadline, t0 + TIMEOUT);
        assert_eq!(table.pending_len(), 1);
        assert_eq!(
            table.offer(LEASE, "s1", t0 + TOKEN, t0 + Duration::from_secs(1)),
            Offer::Paired { waiting: ticket }
        );
        assert_eq!(table.pending_len(), 0);
        assert_eq!(
            table.offer(LEASE, "s1", t0 + TOKEN, t0 + Duration::from_secs(2)),
            Offer::Reject(Rejection::AlreadyPaired {
                stream_id: "s1".into()
            })
        );
        // Pairing is gone with the wait: nothing expires, cancel is a no-op.
        assert!(table.expire(t0 + TIMEOUT * 2).is_empty());
        assert!(!table.cancel(ticket));
    }

    #[test]
    fn replay_is_refused_until_the_token_expires() {
        let t0 = Instant::now();
        let mut table = table(10, 10);
        let expiry = t0 + Duration::from_secs(60);
        wait_ticket(table.offer(LEASE, "s1", expiry, t0));
        assert!(matches!(
            table.offer(LEASE, "s1", expiry, t0),
            Offer::Paired { .. }
        ));
        assert!(matches!(
            table.offer(LEASE, "s1", expiry, expiry - Duration::from_millis(1)),
            Offer::Reject(Rejection::AlreadyPaired { .. })
        ));
        // After the token's expiry the router would refuse the token itself; the table
        // forgets the id.
        wait_ticket(table.offer(LEASE, "s1", expiry, expiry));
        assert_eq!(table.remembered_len(), 0);
    }

    #[test]
    fn waiting_arrivals_expire_at_their_deadline() {
        let t0 = Instant::now();
        let mut table = table(10, 10);
        let a = wait_ticket(table.offer(LEASE, "a", t0 + TOKEN, t0));
        let b = wait_ticket(table.offer(LEASE, "b", t0 + TOKEN, t0 + Duration::from_secs(5)));
        assert_eq!(table.next_deadline(), Some(t0 + TIMEOUT));
        assert!(
            table
                .expire(t0 + TIMEOUT - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            table.expire(t0 + TIMEOUT),
            vec![Expired {
                ticket: a,
                stream_id: "a".into()
            }]
        );
        assert_eq!(
            table.expire(t0 + Duration::from_secs(60)),
            vec![Expired {
                ticket: b,
                stream_id: "b".into()
            }]
        );
        assert_eq!(table.pending_len(), 0);
        // An expired id was never paired: a new arrival waits again.
        wait_ticket(table.offer(LEASE, "a", t0 + TOKEN, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn cancel_withdraws_a_waiting_arrival() {
        let t0 = Instant::now();
        let mut table = table(10, 10);
        let a = wait_ticket(table.offer(LEASE, "a", t0 + TOKEN, t0));
        assert!(table.cancel(a));
        assert!(!table.cancel(a));
        assert_eq!(table.pending_len(), 0);
        assert!(table.expire(t0 + TIMEOUT).is_empty());
        wait_ticket(table.offer(LEASE, "a", t0 + TOKEN, t0));
    }

    #[test]
    fn pending_is_bounded_per_router() {
        let t0 = Instant::now();
        let mut table = table(2, 10);
        wait_ticket(table.offer(LEASE, "a", t0 + TOKEN, t0));
        wait_ticket(table.offer(LEASE, "b", t0 + TOKEN, t0));
        assert_eq!(
            table.offer(LEASE, "c", t0 + TOKEN, t0),
            Offer::Reject(Rejection::TooManyPending { limit: 2 })
        );
        // A peer for a waiting id still pairs when the table is full.
        assert!(matches!(
            table.offer(LEASE, "a", t0 + TOKEN, t0),
            Offer::Paired { .. }
        ));
        wait_ticket(table.offer(LEASE, "c", t0 + TOKEN, t0));
    }

    #[test]
    fn pending_is_bounded_per_lease_and_other_leases_still_wait() {
        let t0 = Instant::now();
        let mut table = table(10, 10);
        table.set_max_pending_per_lease(2);
        wait_ticket(table.offer("lab/a", "a1", t0 + TOKEN, t0));
        let a2 = wait_ticket(table.offer("lab/a", "a2", t0 + TOKEN, t0));
        assert_eq!(
            table.offer("lab/a", "a3", t0 + TOKEN, t0),
            Offer::Reject(Rejection::TooManyPendingForLease {
                lease: "lab/a".into(),
                limit: 2
            })
        );
        // Another lease waits, and a peer of a waiting stream of the full lease pairs.
        wait_ticket(table.offer("lab/b", "b1", t0 + TOKEN, t0));
        assert!(matches!(
            table.offer("lab/a", "a1", t0 + TOKEN, t0),
            Offer::Paired { .. }
        ));
        // Pairing, cancelling and expiring give the slots back.
        wait_ticket(table.offer("lab/a", "a3", t0 + TOKEN, t0));
        assert!(table.cancel(a2));
        wait_ticket(table.offer("lab/a", "a4", t0 + TOKEN, t0));
        assert_eq!(table.expire(t0 + TIMEOUT).len(), 3);
        wait_ticket(table.offer("lab/a", "a5", t0 + TOKEN, t0 + TIMEOUT));
        wait_ticket(table.offer("lab/a", "a6", t0 + TOKEN, t0 + TIMEOUT));
    }

    #[test]
    fn remembered_ids_are_bounded_and_the_earliest_expiry_goes_first() {
        let t0 = Instant::now();
        let mut table = table(10, 2);
        for (id, secs) in [("x", 300), ("y", 100), ("z", 200)] {
            let expiry = t0 + Duration::from_secs(secs);
            wait_ticket(table.offer(LEASE, id, expiry, t0));
            assert!(matches!(
                table.offer(LEASE, id, expiry, t0),
                Offer::Paired { .. }
            ));
        }
        assert_eq!(table.remembered_len(), 2);
        assert_eq!(table.evictions(), 1);
        // "y" expired first, so it was evicted; "x" and "z" are still refused.
        wait_ticket(table.offer(LEASE, "y", t0 + TOKEN, t0));
        for id in ["x", "z"] {
            assert!(matches!(
                table.offer(LEASE, id, t0 + TOKEN, t0),
                Offer::Reject(Rejection::AlreadyPaired { .. })
            ));
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Offer { id: u8, token_secs: u64 },
        Cancel { nth: usize },
        Expire,
        Advance { millis: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, 1u64..120).prop_map(|(id, token_secs)| Op::Offer { id, token_secs }),
            1 => any::<usize>().prop_map(|nth| Op::Cancel { nth }),
            1 => Just(Op::Expire),
            2 => (0u64..20_000).prop_map(|millis| Op::Advance { millis }),
        ]
    }

    proptest! {
        /// Every waiting ticket ends exactly once (paired, cancelled or expired, never two
        /// of them), at most one arrival waits per id, the total stays within the limit,
        /// nothing expires early, and a paired id is refused while its token is valid.
        #[test]
        fn tickets_resolve_exactly_once(ops in proptest::collection::vec(op(), 1..200)) {
            let t0 = Instant::now();
            let mut now = t0;
            let max_pending = 4;
            let mut table = table(max_pending, 1_000);
            // Tickets still waiting: ticket → (id, deadline, token expiry).
            let mut waiting: HashMap<Ticket, (String, Instant, Instant)> = HashMap::new();
            let mut resolved: HashSet<Ticket> = HashSet::new();
            // Paired id → latest token expiry seen for it.
            let mut paired: HashMap<String, Instant> = HashMap::new();
            let mut issued: Vec<Ticket> = Vec::new();

            for op in ops {
                match op {
                    Op::Offer { id, token_secs } => {
                        let id = format!("s{id}");
                        let expiry = now + Duration::from_secs(token_secs);
                        let waiting_for_id = waiting.iter().find(|(_, (w, _, _))| *w == id).map(|(t, _)| *t);
                        let still_paired = paired.get(&id).is_some_and(|until| *until > now);
                        match table.offer(LEASE, &id, expiry, now) {
                            Offer::Wait { ticket, deadline } => {
                                prop_assert!(waiting_for_id.is_none());
                                prop_assert!(!still_paired);
                                prop_assert!(waiting.len() < max_pending);
                                prop_assert_eq!(deadline, now + TIMEOUT);
                                prop_assert!(!issued.contains(&ticket));
                                issued.push(ticket);
                                waiting.insert(ticket, (id, deadline, expiry));
                            }
                            Offer::Paired { waiting: ticket } => {
                                prop_assert_eq!(Some(ticket), waiting_for_id);
                                prop_assert!(!still_paired);
                                let (_, _, first_expiry) = waiting.remove(&ticket).expect("paired a waiting ticket");
                                prop_assert!(resolved.insert(ticket));
                                paired.insert(id, first_expiry.max(expiry));
                            }
                            Offer::Reject(Rejection::AlreadyPaired { stream_id }) => {
                                prop_assert_eq!(&stream_id, &id);
                                prop_assert!(still_paired);
                            }
                            Offer::Reject(Rejection::TooManyPending { limit }) => {
                                prop_assert_eq!(limit, max_pending);
                                prop_assert_eq!(waiting.len(), max_pending);
                                prop_assert!(waiting_for_id.is_none());
                            }
                            Offer::Reject(Rejection::TooManyPendingForLease { limit, .. }) => {
                                // One lease, whose limit is above the table's: never.
                                prop_assert!(false, "refused per lease (limit {})", limit);
                            }
                        }
                    }
                    Op::Cancel { nth } => {
                        if issued.is_empty() {
                            continue;
                        }
                        let ticket = issued[nth % issued.len()];
                        let was_waiting = waiting.remove(&ticket).is_some();
                        prop_assert_eq!(table.cancel(ticket), was_waiting);
                        if was_waiting {
                            prop_assert!(resolved.insert(ticket));
                        }
                    }
                    Op::Expire => {
                        for expired in table.expire(now) {
                            let (id, deadline, _) = waiting.remove(&expired.ticket).expect("expired a waiting ticket");
                            prop_assert_eq!(id, expired.stream_id);
                            prop_assert!(deadline <= now);
                            prop_assert!(resolved.insert(expired.ticket));
                        }
                        prop_assert!(waiting.values().all(|(_, deadline, _)| *deadline > now));
                    }
                    Op::Advance { millis } => now += Duration::from_millis(millis),
                }
                prop_assert_eq!(table.pending_len(), waiting.len());
                prop_assert!(table.pending_len() <= max_pending);
            }
            // Eventually everything expires.
            let later = now + TIMEOUT;
            for expired in table.expire(later) {
                prop_assert!(waiting.remove(&expired.ticket).is_some());
                prop_assert!(resolved.insert(expired.ticket));
            }
            prop_assert!(waiting.is_empty());
            prop_assert_eq!(resolved.len(), issued.len());
        }
    }
}
