//! The `jumpstarter.v1.RouterService` implementation: authenticate, pair through the
//! [`PairingTable`], hand both streams to a relay task.
//!
//! The first arrival parks its [`Half`] here under its [`Ticket`] and waits (inside its
//! RPC handler, so no response headers are sent yet) until the second arrival takes the
//! half, its pairing deadline passes, or the router shuts down. If the caller goes away
//! while waiting, the handler future is dropped and its guard withdraws the ticket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jumpstarter_certs::Role;
use jumpstarter_proto::jumpstarter::v1::StreamRequest;
use jumpstarter_proto::jumpstarter::v1::router_service_server::RouterService;
use jumpstarter_token::VerifyingKey;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::authentication::authenticate;
use crate::metrics::{Metrics, Outcome};
use crate::pairing::{Limits, Offer, PairingTable, Rejection, Ticket};
use crate::quic::metrics::QuicMetrics;
use crate::quic::{Side, refuse};
use crate::relay::{self, Half, Outbound};
use crate::{bridge, quic};
use jumpstarter_tunnel::code;

/// Shared pairing state and settings of one router.
#[derive(Debug, Clone)]
pub(crate) struct Switchboard {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    keys: Vec<VerifyingKey>,
    queue_frames: usize,
    metrics: Metrics,
    /// Cancelled when live relays must stop (the drain period is over).
    stop_relays: CancellationToken,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    table: PairingTable,
    waiters: HashMap<Ticket, Waiter>,
    closed: bool,
}

/// What became of a new stream.
enum Arrival {
    Refused(Status),
    Paired,
    Waiting {
        ticket: Ticket,
        deadline: Instant,
        woken: oneshot::Receiver<Result<(), Status>>,
    },
}

/// A first arrival waiting for its peer.
#[derive(Debug)]
struct Waiter {
    peer: Peer,
    /// `Ok` once paired; the status to end with otherwise.
    wake: oneshot::Sender<Result<(), Status>>,
}

/// One stream of a session, on either transport.
#[derive(Debug)]
enum Peer {
    /// A 0.9.0 `RouterService.Stream`.
    H2(Half),
    /// A QUIC session stream that carried the session's router token.
    Quic {
        side: Side,
        role: Role,
        metrics: QuicMetrics,
    },
}

impl Peer {
    /// Ends a peer that will not be paired: h2 streams end through their handler (which
    /// gets `status`), QUIC streams are reset with `quic_code`.
    fn refuse(self, quic_code: u32) {
        if let Peer::Quic { side, metrics, .. } = self {
            metrics.session_ended(code::name(quic_code.into()));
            refuse(side, quic_code);
        }
    }
}

impl Switchboard {
    pub(crate) fn new(
        keys: Vec<VerifyingKey>,
        limits: Limits,
        queue_frames: usize,
        metrics: Metrics,
        stop_relays: CancellationToken,
    ) -> Self {
        Switchboard {
            shared: Arc::new(Shared {
                keys,
                queue_frames,
                metrics,
                stop_relays,
                state: Mutex::new(State {
                    table: PairingTable::new(limits),
                    waiters: HashMap::new(),
                    closed: false,
                }),
            }),
        }
    }

    /// Refuses new streams and ends every waiting one with UNAVAILABLE; live relays go on.
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
            self.shared.metrics.stream_ended(Outcome::ShuttingDown);
            waiter.peer.refuse(code::SHUTTING_DOWN);
            let _ = waiter
                .wake
                .send(Err(Status::unavailable("router is shutting down")));
        }
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
        self.shared.metrics.table_sizes(
            state.table.pending_len(),
            state.table.remembered_len(),
            state.table.evictions(),
        );
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
            self.shared.metrics.pairing_timed_out();
            info!(stream_id, "no peer arrived in time");
            waiter.peer.refuse(code::PAIR_TIMEOUT);
            let _ = waiter.wake.send(Err(Status::deadline_exceeded(format!(
                "no peer arrived for stream {stream_id} within {}",
                seconds(timeout)
            ))));
        }
    }

    async fn open(
        &self,
        stream_id: String,
        token_exp: i64,
        inbound: Streaming<StreamRequest>,
    ) -> Result<Outbound, Status> {
        let (half, outbound) = Half::new(inbound, self.shared.queue_frames);
        let now = Instant::now();
        let remaining = token_exp.saturating_sub(OffsetDateTime::now_utc().unix_timestamp());
        let token_expiry = now + Duration::from_secs(u64::try_from(remaining).unwrap_or(0));

        match self.arrive(&stream_id, Peer::H2(half), token_expiry, now) {
            Arrival::Refused(status) => Err(status),
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

    /// Offers a new stream to the table and acts on the answer, under the lock.
    fn arrive(&self, stream_id: &str, peer: Peer, token_expiry: Instant, now: Instant) -> Arrival {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            self.shared.metrics.stream_ended(Outcome::ShuttingDown);
            peer.refuse(code::SHUTTING_DOWN);
            return Arrival::Refused(Status::unavailable("router is shutting down"));
        }
        let offer = state.table.offer(stream_id, token_expiry, now);
        self.update_gauges(&state);
        match offer {
            Offer::Reject(rejection) => {
                drop(state);
                info!("refused: {rejection}");
                peer.refuse(match rejection {
                    Rejection::AlreadyPaired { .. } => code::ALREADY_PAIRED,
                    Rejection::TooManyPending { .. } => code::TOO_MANY_PENDING,
                });
                Arrival::Refused(self.rejected(rejection))
            }
            Offer::Paired { waiting } => {
                let waiter = state.waiters.remove(&waiting);
                drop(state);
                // Invariant: a ticket the table still had pending has its waiter here;
                // both are removed together under the same lock.
                let Some(waiter) = waiter else {
                    warn!("paired with a waiter that is gone");
                    self.shared.metrics.stream_ended(Outcome::PeerGone);
                    peer.refuse(code::PEER_GONE);
                    return Arrival::Refused(Status::internal("the waiting peer is gone"));
                };
                info!("paired");
                self.spawn_relay(waiter.peer, peer);
                let _ = waiter.wake.send(Ok(()));
                Arrival::Paired
            }
            Offer::Wait { ticket, deadline } => {
                let (wake, woken) = oneshot::channel();
                state.waiters.insert(ticket, Waiter { peer, wake });
                Arrival::Waiting {
                    ticket,
                    deadline,
                    woken,
                }
            }
        }
    }

    async fn wait(
        &self,
        mut woken: oneshot::Receiver<Result<(), Status>>,
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
        woke.unwrap_or_else(|_| Err(Status::internal("pairing state lost")))
    }

    fn spawn_relay(&self, waiting: Peer, arriving: Peer) {
        let shared = self.shared.clone();
        shared.metrics.pair_started();
        tokio::spawn(
            async move {
                let stop = &shared.stop_relays;
                let metrics = &shared.metrics;
                match (waiting, arriving) {
                    (Peer::H2(waiting), Peer::H2(arriving)) => {
                        relay::run(waiting, arriving, metrics, stop).await;
                    }
                    (Peer::H2(h2), Peer::Quic { side, metrics: quic, .. }) => {
                        quic.pair_started();
                        let ok = bridge::run(h2, side, true, metrics, stop).await;
                        quic.pair_ended();
                        quic.session_ended(if ok { "completed" } else { "broken" });
                    }
                    (Peer::Quic { side, metrics: quic, .. }, Peer::H2(h2)) => {
                        quic.pair_started();
                        let ok = bridge::run(h2, side, false, metrics, stop).await;
                        quic.pair_ended();
                        quic.session_ended(if ok { "completed" } else { "broken" });
                    }
                    (
                        Peer::Quic { side: a, role: a_role, metrics: quic },
                        Peer::Quic { side: b, role: b_role, .. },
                    ) => {
                        if a_role == b_role {
                            info!(role = %a_role, "refused: both streams of the session hold the same role");
                            quic.session_ended("same_role");
                            quic.session_ended("same_role");
                            refuse(a, code::SAME_ROLE);
                            refuse(b, code::SAME_ROLE);
                        } else {
                            let (client, exporter) = if a_role == Role::Client { (a, b) } else { (b, a) };
                            quic.pair_started();
                            let ok = quic::splice::run(client, exporter, &quic, stop).await;
                            quic.pair_ended();
                            let outcome = if ok { "completed" } else { "broken" };
                            quic.session_ended(outcome);
                            quic.session_ended(outcome);
                        }
                    }
                }
                shared.metrics.pair_ended();
            }
            .in_current_span(),
        );
    }

    /// Pairs a QUIC session stream that carries a router token with the other stream of the
    /// same token (h2 or QUIC), or parks it until that one comes, its deadline passes or
    /// `connection` closes. `lease` is the certificate's `namespace/name`: the token must be
    /// for the same lease.
    pub(crate) async fn arrive_quic(
        &self,
        token: &str,
        lease: &str,
        role: Role,
        side: Side,
        metrics: QuicMetrics,
        connection: &quinn::Connection,
    ) {
        let claims = match jumpstarter_token::router::verify(
            &self.shared.keys,
            token,
            OffsetDateTime::now_utc(),
        ) {
            Ok(claims) => claims,
            Err(error) => {
                info!(
                    reason = error.reason(),
                    "session refused: invalid router token: {error}"
                );
                self.shared.metrics.auth_failed(error.reason());
                metrics.session_ended("bad_token");
                refuse(side, code::BAD_TOKEN);
                return;
            }
        };
        if claims.lease.as_deref() != Some(lease) {
            info!(
                token_lease = claims.lease.as_deref().unwrap_or("-"),
                "session refused: the router token is for another lease than the certificate"
            );
            self.shared.metrics.auth_failed("lease_mismatch");
            metrics.session_ended("bad_token");
            refuse(side, code::BAD_TOKEN);
            return;
        }
        let now = Instant::now();
        let remaining = claims
            .exp
            .saturating_sub(OffsetDateTime::now_utc().unix_timestamp());
        let token_expiry = now + Duration::from_secs(u64::try_from(remaining).unwrap_or(0));
        let span = info_span!("stream", stream_id = %claims.sub, lease, transport = "quic");
        let peer = Peer::Quic {
            side,
            role,
            metrics,
        };
        let arrival = self.arrive(&claims.sub, peer, token_expiry, now);
        let Arrival::Waiting {
            ticket,
            deadline,
            woken,
        } = arrival
        else {
            return;
        };
        async {
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
        .instrument(span)
        .await;
    }

    fn rejected(&self, rejection: Rejection) -> Status {
        match rejection {
            Rejection::AlreadyPaired { .. } => {
                self.shared.metrics.stream_ended(Outcome::AlreadyPaired);
                Status::already_exists(rejection.to_string())
            }
            Rejection::TooManyPending { .. } => {
                self.shared.metrics.stream_ended(Outcome::TooManyPending);
                Status::resource_exhausted(rejection.to_string())
            }
        }
    }
}

#[tonic::async_trait]
impl RouterService for Switchboard {
    type StreamStream = Outbound;

    async fn stream(
        &self,
        request: Request<Streaming<StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let claims = match authenticate(
            request.metadata(),
            &self.shared.keys,
            OffsetDateTime::now_utc(),
        ) {
            Ok(claims) => claims,
            Err(error) => {
                self.shared.metrics.auth_failed(error.reason());
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
        self.open(claims.sub, claims.exp, inbound)
            .instrument(span)
            .await
            .map(Response::new)
    }
}

/// Withdraws a waiting ticket if the handler is dropped (the caller went away).
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
            self.switchboard
                .shared
                .metrics
                .stream_ended(Outcome::CancelledWaiting);
            debug!("caller went away while waiting");
        }
    }
}

/// `30s`, `1.5s`: a duration as people write it in messages.
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}
