//! The pairing front-end: every stream that waits for its peer, h2 or QUIC, waits here.
//!
//! A [`Switchboard`] ties a [`PairingTable`] to the streams themselves. The first arrival
//! of a pair parks its [`Peer`] under its [`Ticket`] and waits (an h2 stream inside its
//! RPC handler, so no response headers are sent yet) until the second arrival takes it,
//! its pairing deadline passes, or the router shuts down. If the caller goes away while
//! waiting, a guard withdraws the ticket. A pair is handed to the relay that fits its two
//! transports: [`relay`] (h2 ↔ h2), [`bridge`] (h2 ↔ QUIC), [`splice`] (QUIC ↔ QUIC).
//!
//! A router holds two switchboards, one per [`Kind`] of key:
//! - *streams*, keyed by the router token's stream id: 0.9.0 `RouterService.Stream` calls
//!   and QUIC sessions that carry a router token, counted in the h2 [`Metrics`];
//! - *sessions*, keyed by lease and session id: QUIC sessions without a router token (or
//!   on a QUIC listener that does not pair with h2), counted in the [`QuicMetrics`].
//!
//! Pairing rules beyond the table's: two streams pair only if they hold different roles
//! (a QUIC stream's role is its certificate's, an h2 stream's the router token's `role`
//! claim; tokens without one pair as in 0.9.0), and a pair ends at its lease's end when
//! its router token names one (`lease_end`).
//!
//! Every refusal is a [`Refusal`]; what an h2 caller, a QUIC stream and the metrics see of
//! it comes from there.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jumpstarter_certs::Role;
use jumpstarter_token::router::{Claims, StreamRole};
use jumpstarter_tunnel::code;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::authentication::{TokenKeys, authenticate};
use crate::bridge;
use crate::frame::Frame;
use crate::lease_clock::LeaseClock;
use crate::metrics::QuicMetrics;
use crate::metrics::{Metrics, Outcome};
use crate::pairing::{DEFAULT_PAIR_QUEUE_BYTES, Limits, Offer, PairLimits, PairingTable, Ticket};
use crate::refusal::Refusal;
use crate::relay::{self, Half, Outbound};
use crate::side::{Side, refuse};
use crate::splice;

/// Shared pairing state and settings of one switchboard.
#[derive(Debug, Clone)]
pub(crate) struct Switchboard {
    shared: Arc<Shared>,
}

/// What a switchboard pairs by, and where it counts.
#[derive(Debug)]
enum Kind {
    /// Router-token stream ids; h2 and QUIC peers; the h2 metrics count every stream and
    /// pair, a QUIC peer's own metrics count it by its reset code's name.
    Streams(Metrics),
    /// Lease session keys; QUIC peers only; a second stream of the role that already waits
    /// is refused at once (the waiting one stays).
    Sessions(QuicMetrics),
}

#[derive(Debug)]
struct Shared {
    kind: Kind,
    /// Public keys of router tokens (streams only).
    keys: TokenKeys,
    /// Frames queued per direction of an h2 stream.
    queue_frames: usize,
    /// Cancelled when live relays must stop (the drain period is over).
    stop_relays: CancellationToken,
    /// When each lease ends, by the newest token seen (streams only).
    leases: LeaseClock,
    /// Live pairs per lease (`namespace/name`), for [`Switchboard::leases_in_session`].
    open: Mutex<HashMap<String, usize>>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    table: PairingTable,
    waiters: HashMap<Ticket, Waiter>,
    closed: bool,
    /// Payload bytes queued per direction of an h2 stream.
    queue_bytes: usize,
}

/// What became of a new arrival.
enum Arrival {
    Refused(Refusal),
    Paired,
    Waiting {
        ticket: Ticket,
        deadline: Instant,
        woken: oneshot::Receiver<Result<(), Refusal>>,
    },
}

/// A first arrival waiting for its peer.
#[derive(Debug)]
struct Waiter {
    peer: Peer,
    /// When it arrived (for the pairing-wait histogram).
    since: Instant,
    /// `Ok` once paired; the refusal to end with otherwise.
    wake: oneshot::Sender<Result<(), Refusal>>,
}

/// One stream of a pair, on either transport.
#[derive(Debug)]
enum Peer {
    /// A 0.9.0 `RouterService.Stream`.
    H2 {
        half: Half,
        /// The router token's `role`, if it has one.
        role: Option<Role>,
        /// The router token's `lease_end`, if it has one.
        lease_end: Option<Instant>,
    },
    /// A QUIC session stream.
    Quic {
        side: Side,
        role: Role,
        metrics: QuicMetrics,
        /// The router token's `lease_end` (sessions paired by token only).
        lease_end: Option<Instant>,
    },
}

impl Peer {
    fn role(&self) -> Option<Role> {
        match self {
            Peer::H2 { role, .. } => *role,
            Peer::Quic { role, .. } => Some(*role),
        }
    }

    fn lease_end(&self) -> Option<Instant> {
        match self {
            Peer::H2 { lease_end, .. } | Peer::Quic { lease_end, .. } => *lease_end,
        }
    }
}

/// The certificate role a token's `role` claim stands for.
fn role_of(role: StreamRole) -> Role {
    match role {
        StreamRole::Client => Role::Client,
        StreamRole::Exporter => Role::Exporter,
    }
}

/// The earlier of two optional instants (`None` is never).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Switchboard {
    /// The switchboard of router-token stream ids (h2 streams, and QUIC sessions with a
    /// token).
    pub(crate) fn for_streams(
        keys: TokenKeys,
        limits: Limits,
        queue_frames: usize,
        metrics: Metrics,
        stop_relays: CancellationToken,
    ) -> Self {
        Self::new(
            Kind::Streams(metrics),
            keys,
            limits,
            queue_frames,
            stop_relays,
        )
    }

    /// The switchboard of QUIC sessions keyed by lease and session id.
    pub(crate) fn for_sessions(
        limits: Limits,
        metrics: QuicMetrics,
        stop_relays: CancellationToken,
    ) -> Self {
        Self::new(
            Kind::Sessions(metrics),
            TokenKeys::default(),
            limits,
            1,
            stop_relays,
        )
    }

    fn new(
        kind: Kind,
        keys: TokenKeys,
        limits: Limits,
        queue_frames: usize,
        stop_relays: CancellationToken,
    ) -> Self {
        Switchboard {
            shared: Arc::new(Shared {
                kind,
                keys,
                queue_frames,
                stop_relays,
                leases: LeaseClock::default(),
                open: Mutex::new(HashMap::new()),
                state: Mutex::new(State {
                    table: PairingTable::new(limits),
                    waiters: HashMap::new(),
                    closed: false,
                    queue_bytes: DEFAULT_PAIR_QUEUE_BYTES,
                }),
            }),
        }
    }

    /// Refuses new arrivals and ends every waiting one (h2: UNAVAILABLE, QUIC: reset with
    /// `SHUTTING_DOWN`); live relays go on.
    pub(crate) fn close(&self) {
        let waiters: Vec<Waiter> = {
            let mut state = self.lock();
            state.closed = true;
            let tickets: Vec<Ticket> = state.waiters.keys().copied().collect();
            for ticket in &tickets {
                state.table.cancel(*ticket);
            }
            self.update_gauges(&state);
            state.waiters.drain().map(|(_, waiter)| waiter).collect()
        };
        for waiter in waiters {
            self.end(waiter, Refusal::ShuttingDown);
        }
    }

    /// Applies the per-lease and per-pair limits to arrivals from now on.
    pub(crate) fn set_pair_limits(&self, limits: PairLimits) {
        let mut state = self.lock();
        state
            .table
            .set_max_pending_per_lease(limits.max_pending_per_lease);
        state.queue_bytes = limits.pair_queue_bytes;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the table half-updated in a way
        // that matters more than stopping the router would; keep serving.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update_gauges(&self, state: &State) {
        match &self.shared.kind {
            Kind::Streams(metrics) => metrics.table_sizes(
                state.table.pending_len(),
                state.table.remembered_len(),
                state.table.evictions(),
            ),
            Kind::Sessions(metrics) => metrics.pending(state.table.pending_len()),
        }
    }

    /// Counts a refused peer and resets it if it is a QUIC stream (an h2 stream ends with
    /// the refusal's status through its handler).
    fn refuse(&self, peer: Peer, refusal: &Refusal) {
        match &self.shared.kind {
            Kind::Streams(metrics) => {
                metrics.stream_refused(refusal);
                if let Peer::Quic { metrics: quic, .. } = &peer {
                    quic.session_ended(code::name(refusal.code().into()));
                }
            }
            Kind::Sessions(_) => {
                if let Peer::Quic { metrics: quic, .. } = &peer {
                    quic.session_refused(refusal);
                }
            }
        }
        if let Peer::Quic { side, .. } = peer {
            refuse(side, refusal.code());
        }
    }

    /// Ends a waiter that will not be paired.
    fn end(&self, waiter: Waiter, refusal: Refusal) {
        self.refuse(waiter.peer, &refusal);
        let _ = waiter.wake.send(Err(refusal));
    }

    /// Ends the waiters whose deadline passed.
    fn expire(&self, now: Instant) {
        let (expired, timeout) = {
            let mut state = self.lock();
            let timeout = state.table.limits().pair_timeout;
            let expired: Vec<(String, Waiter)> = state
                .table
                .expire(now)
                .into_iter()
                .filter_map(|e| state.waiters.remove(&e.ticket).map(|w| (e.stream_id, w)))
                .collect();
            self.update_gauges(&state);
            (expired, timeout)
        };
        for (stream_id, waiter) in expired {
            info!(stream_id, "no peer arrived in time");
            self.end(waiter, Refusal::TimedOut { stream_id, timeout });
        }
    }

    /// Offers a new arrival of `lease` to the table and acts on the answer, under the lock.
    fn arrive(
        &self,
        lease: &str,
        key: &str,
        peer: Peer,
        token_expiry: Instant,
        now: Instant,
    ) -> Arrival {
        if peer.lease_end().is_some_and(|end| end <= now) {
            info!("refused: the lease ended");
            return self.refused(peer, Refusal::LeaseEnded);
        }
        let mut state = self.lock();
        if state.closed {
            drop(state);
            return self.refused(peer, Refusal::ShuttingDown);
        }
        if let Some(role) = peer.role()
            && let Some(waiting) = state.table.waiting(key)
            && let Some(waiter) = state.waiters.get(&waiting)
            && waiter.peer.role() == Some(role)
        {
            drop(state);
            info!(role = %role, "refused: a stream of the same role already waits");
            return self.refused(peer, Refusal::SameRole);
        }
        let offer = state.table.offer(lease, key, token_expiry, now);
        self.update_gauges(&state);
        match offer {
            Offer::Reject(rejection) => {
                drop(state);
                info!("refused: {rejection}");
                self.refused(peer, rejection.into())
            }
            Offer::Paired { waiting } => {
                let waiter = state.waiters.remove(&waiting);
                drop(state);
                // Invariant: a ticket the table still had pending has its waiter here;
                // both are removed together under the same lock.
                let Some(waiter) = waiter else {
                    warn!("paired with a waiter that is gone");
                    return self.refused(peer, Refusal::PeerGone);
                };
                info!("paired");
                self.pair_times()
                    .waited(now.saturating_duration_since(waiter.since));
                self.spawn_relay(lease, waiter.peer, peer);
                let _ = waiter.wake.send(Ok(()));
                Arrival::Paired
            }
            Offer::Wait { ticket, deadline } => {
                let (wake, woken) = oneshot::channel();
                state.waiters.insert(
                    ticket,
                    Waiter {
                        peer,
                        since: now,
                        wake,
                    },
                );
                Arrival::Waiting {
                    ticket,
                    deadline,
                    woken,
                }
            }
        }
    }

    fn refused(&self, peer: Peer, refusal: Refusal) -> Arrival {
        self.refuse(peer, &refusal);
        Arrival::Refused(refusal)
    }

    /// Waits until the waiter is paired or ended; expires the table at the deadline.
    async fn wait(
        &self,
        mut woken: oneshot::Receiver<Result<(), Refusal>>,
        deadline: Instant,
    ) -> Result<(), Status> {
        let woke = tokio::select! {
            woke = &mut woken => woke,
            () = tokio::time::sleep_until(deadline.into()) => {
                self.expire(Instant::now());
                // Either the expiry above ended this waiter, or a peer took it just before.
                woken.await
            }
        };
        match woke {
            Ok(result) => result.map_err(|refusal| refusal.status()),
            Err(_) => Err(Status::internal("pairing state lost")),
        }
    }

    /// Parks a QUIC peer until it is paired, refused, or `connection` closes.
    async fn park_quic(&self, arrival: Arrival, connection: &quinn::Connection) {
        let Arrival::Waiting {
            ticket,
            deadline,
            woken,
        } = arrival
        else {
            return;
        };
        debug!("waiting for the peer");
        let guard = WaitGuard {
            switchboard: self,
            ticket,
            armed: true,
        };
        tokio::select! {
            _ = self.wait(woken, deadline) => {}
            _ = connection.closed() => {}
        }
        // Dropping the guard withdraws the ticket if nobody took it.
        drop(guard);
    }

    /// The pairing-wait and session-duration histograms of this switchboard's kind.
    fn pair_times(&self) -> &crate::metrics::PairTimes {
        match &self.shared.kind {
            Kind::Streams(metrics) => &metrics.pair_times,
            Kind::Sessions(metrics) => &metrics.pair_times,
        }
    }

    /// The leases (`namespace/name`) with at least one live pair now. A token of 0.9.0's
    /// layout names no lease; its pairs are not counted.
    pub(crate) fn leases_in_session(&self) -> Vec<String> {
        self.shared
            .open
            .lock()
            .map(|open| open.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Relays a new pair of `lease` until it ends, at the latest when the lease does.
    fn spawn_relay(&self, lease: &str, waiting: Peer, arriving: Peer) {
        let shared = self.shared.clone();
        let lease_end = earliest(waiting.lease_end(), arriving.lease_end());
        let lease = lease.to_owned();
        if let Kind::Streams(metrics) = &shared.kind {
            metrics.pair_started();
        }
        let live = LivePair::start(&shared, &lease);
        let times = self.pair_times().clone();
        tokio::spawn(
            async move {
                let _live = live;
                let paired = Instant::now();
                let stop = &shared.stop_relays;
                let lease_end = shared.leases.ended(&lease, lease_end);
                // Invariant: h2 peers only reach a streams switchboard (the RouterService
                // of a sessions switchboard refuses them), so the `Kind::Streams` matches
                // below always hold when an h2 peer is paired.
                match (waiting, arriving) {
                    (Peer::H2 { half: waiting, .. }, Peer::H2 { half: arriving, .. }) => {
                        if let Kind::Streams(metrics) = &shared.kind {
                            relay::run(waiting, arriving, metrics, stop, lease_end).await;
                        }
                    }
                    (
                        Peer::H2 { half: h2, .. },
                        Peer::Quic {
                            side,
                            metrics: quic,
                            ..
                        },
                    ) => {
                        if let Kind::Streams(metrics) = &shared.kind {
                            bridged(h2, side, true, metrics, &quic, (stop, lease_end)).await;
                        }
                    }
                    (
                        Peer::Quic {
                            side,
                            metrics: quic,
                            ..
                        },
                        Peer::H2 { half: h2, .. },
                    ) => {
                        if let Kind::Streams(metrics) = &shared.kind {
                            bridged(h2, side, false, metrics, &quic, (stop, lease_end)).await;
                        }
                    }
                    (
                        Peer::Quic {
                            side: a,
                            role: a_role,
                            metrics: quic,
                            ..
                        },
                        Peer::Quic {
                            side: b,
                            role: b_role,
                            ..
                        },
                    ) => spliced((a, a_role), (b, b_role), &quic, (stop, lease_end)).await,
                }
                times.lasted(paired.elapsed());
                if let Kind::Streams(metrics) = &shared.kind {
                    metrics.pair_ended();
                }
            }
            .in_current_span(),
        );
    }

    /// Pairs a QUIC session stream that carries a router token with the other stream of the
    /// same token (h2 or QUIC), or parks it until that one comes, its deadline passes or
    /// `connection` closes. `lease` is the certificate's `namespace/name`: the token must be
    /// for the same lease.
    pub(crate) async fn arrive_quic_token(
        &self,
        token: &str,
        lease: &str,
        role: Role,
        side: Side,
        metrics: QuicMetrics,
        connection: &quinn::Connection,
    ) {
        let Kind::Streams(h2_metrics) = &self.shared.kind else {
            return;
        };
        let claims = match jumpstarter_token::router::verify(
            &self.shared.keys.current(),
            token,
            OffsetDateTime::now_utc(),
        ) {
            Ok(claims) => claims,
            Err(error) => {
                info!(
                    reason = error.reason(),
                    "session refused: invalid router token: {error}"
                );
                h2_metrics.auth_failed(error.reason());
                refuse_session(side, &metrics, &Refusal::BadToken);
                return;
            }
        };
        if claims.lease.as_deref() != Some(lease) {
            info!(
                token_lease = claims.lease.as_deref().unwrap_or("-"),
                "session refused: the router token is for another lease than the certificate"
            );
            h2_metrics.auth_failed("lease_mismatch");
            refuse_session(side, &metrics, &Refusal::BadToken);
            return;
        }
        if let Some(token_role) = claims.role.map(role_of)
            && token_role != role
        {
            info!(
                %token_role,
                "session refused: the router token is for another role than the certificate"
            );
            h2_metrics.auth_failed("role_mismatch");
            refuse_session(side, &metrics, &Refusal::BadToken);
            return;
        }
        let now = Instant::now();
        let token_expiry = now + remaining(claims.exp);
        let span = info_span!("stream", stream_id = %claims.sub, lease, transport = "quic");
        let peer = Peer::Quic {
            side,
            role,
            metrics,
            lease_end: self.lease_end(&claims, now),
        };
        let arrival = self.arrive(lease, &claims.sub, peer, token_expiry, now);
        self.park_quic(arrival, connection).instrument(span).await;
    }

    /// Pairs a QUIC session stream by `key` (`namespace/lease/uid/session`) with the stream
    /// of the other role, or parks it until that one comes, its deadline passes or
    /// `connection` closes. The key is remembered as paired until `remember_until` (the
    /// certificate's end). `lease` (`namespace/lease/uid`) is what the per-lease limit counts.
    pub(crate) async fn arrive_quic_session(
        &self,
        lease: &str,
        key: &str,
        role: Role,
        side: Side,
        remember_until: Instant,
        connection: &quinn::Connection,
    ) {
        let Kind::Sessions(metrics) = &self.shared.kind else {
            return;
        };
        let peer = Peer::Quic {
            side,
            role,
            metrics: metrics.clone(),
            lease_end: None,
        };
        let arrival = self.arrive(lease, key, peer, remember_until, Instant::now());
        self.park_quic(arrival, connection).await;
    }

    /// When the lease of verified `claims` ends, if they say; the lease clock learns it.
    fn lease_end(&self, claims: &Claims, now: Instant) -> Option<Instant> {
        let end = now + remaining(claims.lease_end?);
        if let Some(lease) = &claims.lease {
            self.shared.leases.observe(lease, claims.iat, end, now);
        }
        Some(end)
    }

    /// An h2 stream with verified `claims`: paired, refused, or parked until either.
    async fn open(&self, claims: &Claims, inbound: Streaming<Frame>) -> Result<Outbound, Status> {
        let queue_bytes = self.lock().queue_bytes;
        let (half, outbound) = Half::new(inbound, self.shared.queue_frames, queue_bytes);
        let now = Instant::now();
        let token_expiry = now + remaining(claims.exp);
        let peer = Peer::H2 {
            half,
            role: claims.role.map(role_of),
            lease_end: self.lease_end(claims, now),
        };
        // Tokens of 0.9.0's layout name no lease: they share one allowance.
        let lease = claims.lease.as_deref().unwrap_or("-");
        match self.arrive(lease, &claims.sub, peer, token_expiry, now) {
            Arrival::Refused(refusal) => Err(refusal.status()),
            Arrival::Paired => Ok(outbound),
            Arrival::Waiting {
                ticket,
                deadline,
                woken,
            } => {
                debug!("waiting for the peer");
                let guard = WaitGuard {
                    switchboard: self,
                    ticket,
                    armed: true,
                };
                let result = self.wait(woken, deadline).await;
                guard.disarm();
                result.map(|()| outbound)
            }
        }
    }
}

/// Relays a mixed pair and counts it on the QUIC side too.
/// One live pair counted under its lease (`namespace/name`: the first two segments of a
/// streams key `namespace/name` or a sessions key `namespace/name/uid`) while it lives.
struct LivePair {
    shared: Arc<Shared>,
    lease: Option<String>,
}

impl LivePair {
    fn start(shared: &Arc<Shared>, lease: &str) -> Self {
        let mut parts = lease.splitn(3, '/');
        let lease = match (parts.next(), parts.next()) {
            (Some(namespace), Some(name)) if !namespace.is_empty() && !name.is_empty() => {
                Some(format!("{namespace}/{name}"))
            }
            _ => None,
        };
        if let (Some(key), Ok(mut open)) = (&lease, shared.open.lock()) {
            *open.entry(key.clone()).or_default() += 1;
        }
        LivePair {
            shared: shared.clone(),
            lease,
        }
    }
}

impl Drop for LivePair {
    fn drop(&mut self) {
        if let (Some(key), Ok(mut open)) = (&self.lease, self.shared.open.lock())
            && let Some(count) = open.get_mut(key)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(key);
            }
        }
    }
}

async fn bridged(
    h2: Half,
    side: Side,
    h2_waited: bool,
    metrics: &Metrics,
    quic: &QuicMetrics,
    (stop, lease_end): (&CancellationToken, impl Future<Output = ()>),
) {
    quic.pair_started();
    let ok = bridge::run(h2, side, h2_waited, metrics, stop, lease_end).await;
    quic.pair_ended();
    quic.session_ended(if ok { "completed" } else { "broken" });
}

/// Relays a QUIC pair, client to exporter; refuses both if they hold the same role.
async fn spliced(
    (a, a_role): (Side, Role),
    (b, b_role): (Side, Role),
    quic: &QuicMetrics,
    (stop, lease_end): (&CancellationToken, impl Future<Output = ()>),
) {
    if a_role == b_role {
        info!(role = %a_role, "refused: both streams of the session hold the same role");
        let refusal = Refusal::SameRole;
        quic.session_ended(refusal.label());
        quic.session_ended(refusal.label());
        refuse(a, refusal.code());
        refuse(b, refusal.code());
        return;
    }
    let (client, exporter) = if a_role == Role::Client {
        (a, b)
    } else {
        (b, a)
    };
    quic.pair_started();
    let ok = splice::run(client, exporter, quic, stop, lease_end).await;
    quic.pair_ended();
    let outcome = if ok { "completed" } else { "broken" };
    // Two streams per pair.
    quic.session_ended(outcome);
    quic.session_ended(outcome);
    debug!(outcome, "pair ended");
}

/// Counts a QUIC session refused before it reached a switchboard, and resets it.
pub(crate) fn refuse_session(side: Side, metrics: &QuicMetrics, refusal: &Refusal) {
    metrics.session_ended(refusal.label());
    refuse(side, refusal.code());
}

/// How long a token that expires at `exp` (Unix seconds) is still valid.
fn remaining(exp: i64) -> Duration {
    let remaining = exp.saturating_sub(OffsetDateTime::now_utc().unix_timestamp());
    Duration::from_secs(u64::try_from(remaining).unwrap_or(0))
}

impl Switchboard {
    /// `RouterService.Stream`: authenticates the caller, then pairs, parks or refuses its
    /// stream (served by [`crate::stream_service`]).
    pub(crate) async fn stream(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Outbound>, Status> {
        let Kind::Streams(metrics) = &self.shared.kind else {
            return Err(Status::unimplemented(
                "this switchboard pairs QUIC sessions",
            ));
        };
        let claims = match authenticate(
            request.metadata(),
            &self.shared.keys.current(),
            OffsetDateTime::now_utc(),
        ) {
            Ok(claims) => claims,
            Err(error) => {
                metrics.auth_failed(error.reason());
                info!(reason = error.reason(), "stream refused: {error}");
                return Err(error.into());
            }
        };
        let span = info_span!(
            "stream",
            stream_id = %claims.sub,
            lease = claims.lease.as_deref().unwrap_or("-"),
        );
        let inbound = request.into_inner();
        self.open(&claims, inbound)
            .instrument(span)
            .await
            .map(Response::new)
    }
}

impl crate::Router {
    /// Applies per-lease and per-pair limits to the h2 streams of this router (and to the
    /// QUIC sessions that pair with them by router token); [`PairLimits::default`] applies
    /// until then.
    pub fn set_pair_limits(&self, limits: PairLimits) {
        self.switchboard().set_pair_limits(limits);
    }
}

/// Withdraws a waiting ticket if its waiter is dropped (the caller went away).
struct WaitGuard<'a> {
    switchboard: &'a Switchboard,
    ticket: Ticket,
    armed: bool,
}

impl WaitGuard<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.switchboard.lock();
        if state.table.cancel(self.ticket) {
            state.waiters.remove(&self.ticket);
            self.switchboard.update_gauges(&state);
            drop(state);
            match &self.switchboard.shared.kind {
                Kind::Streams(metrics) => metrics.stream_ended(Outcome::CancelledWaiting),
                Kind::Sessions(metrics) => metrics.session_ended("cancelled_waiting"),
            }
            debug!("caller went away while waiting");
        }
    }
}
