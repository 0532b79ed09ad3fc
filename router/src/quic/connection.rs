//! Connection handling of the QUIC listener: handshake, admission, the certificate's end
//! and its renewals, and the session streams handed to a [`Switchboard`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use jumpstarter_certs::TrustedRoots;
use jumpstarter_tunnel::renewal::{self, Reply};
use jumpstarter_tunnel::{Opening, code, read_opening};
use quinn::{RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tracing::{Instrument, debug, info, info_span};

use super::admission::{self, Admission, AdmissionError};
use super::intake::Unvalidated;
use super::window_budget::WindowGrant;
use crate::metrics::QuicMetrics;
use crate::refusal::Refusal;
use crate::side::Side;
use crate::switchboard::{Switchboard, refuse_session};
use jumpstarter_shell::error_chain::error_chain;

/// How long a QUIC handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Admits one connection and serves its session streams.
#[derive(Clone)]
pub(super) struct ConnectionHandler {
    pub(super) client_ca: Arc<TrustedRoots>,
    /// QUIC sessions paired by lease and session id.
    pub(super) sessions: Switchboard,
    /// Router-token stream ids shared with the h2 router, if this listener pairs with it.
    pub(super) streams: Option<Switchboard>,
    pub(super) metrics: QuicMetrics,
    /// The transport in force, refreshed from every admitted connection.
    pub(super) gauges: jumpstarter_tunnel::TransportGauges,
    /// The send window this connection was granted, and the round-trip time from which it
    /// keeps it ([`jumpstarter_tunnel::send_window`]).
    pub(super) send_window: u64,
    pub(super) full_window_rtt: Duration,
}

/// What the router knows about an admitted connection: whom it admitted and until when.
#[derive(Debug)]
struct Admitted {
    /// The handshake certificate's identity and key; renewals must keep both.
    admission: Admission,
    /// When the newest accepted certificate ends; renewals move it.
    deadline: tokio::sync::watch::Sender<Instant>,
}

impl ConnectionHandler {
    /// Completes the handshake of `connecting` (from `remote`; `unvalidated` counts it
    /// among the handshakes of unvalidated addresses until it ends), then serves it. A
    /// full window `grant` returns to the budget when this ends.
    pub(super) async fn run(
        self,
        connecting: quinn::Connecting,
        remote: std::net::SocketAddr,
        unvalidated: Option<Unvalidated>,
        grant: Option<WindowGrant>,
    ) {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await;
        drop(unvalidated);
        let connection = match handshake {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                self.metrics.admission_failed("handshake");
                info!(%remote, %error, "QUIC handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.admission_failed("handshake_timeout");
                debug!(%remote, "QUIC handshake timed out");
                return;
            }
        };
        let admitted = match self.admit(&connection) {
            Ok(admitted) => admitted,
            Err(reason) => {
                self.metrics.admission_failed("identity");
                info!(%remote, "connection refused: {reason}");
                let reason = reason.to_string();
                connection.close(VarInt::from_u32(code::NOT_ADMITTED), reason.as_bytes());
                return;
            }
        };
        let span = info_span!(
            "quic",
            namespace = %admitted.admission.identity.namespace,
            lease = %admitted.admission.identity.lease_name,
            role = %admitted.admission.identity.role,
        );
        let congestion = self
            .gauges
            .connection(jumpstarter_tunnel::EndpointRole::Router, &connection);
        debug!(
            ?congestion,
            full_windows = grant.is_some(),
            "connection admitted"
        );
        self.metrics.connection_opened();
        let scaling = jumpstarter_tunnel::send_window::follow(
            connection.clone(),
            self.send_window,
            self.full_window_rtt,
            |old, new| self.metrics.send_window(old, new),
        );
        async { tokio::join!(self.serve(connection, Arc::new(admitted)), scaling) }
            .instrument(span)
            .await;
        self.metrics.connection_closed();
        drop(grant);
    }

    /// The peer's lease identity and when its certificate ends, or why it is refused.
    fn admit(&self, connection: &quinn::Connection) -> Result<Admitted, AdmissionError> {
        let chain = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or(AdmissionError::NoCertificate)?;
        let now = OffsetDateTime::now_utc();
        let admission = admission::check(&self.client_ca.roots(), &chain, now)?;
        let deadline = instant_of(admission.not_after, now);
        Ok(Admitted {
            admission,
            deadline: tokio::sync::watch::Sender::new(deadline),
        })
    }

    async fn serve(&self, connection: quinn::Connection, admitted: Arc<Admitted>) {
        let mut deadline = admitted.deadline.subscribe();
        loop {
            let until = *deadline.borrow_and_update();
            let accepted = tokio::select! {
                accepted = connection.accept_bi() => accepted,
                () = tokio::time::sleep_until(until.into()) => {
                    info!("certificate expired: closing the connection");
                    self.metrics.connection_expired();
                    connection.close(
                        VarInt::from_u32(code::CERTIFICATE_EXPIRED),
                        b"certificate expired",
                    );
                    return;
                }
                _ = deadline.changed() => continue,
            };
            let (send, recv) = match accepted {
                Ok(streams) => streams,
                Err(error) => {
                    debug!(%error, "connection ended");
                    return;
                }
            };
            let handler = self.clone();
            let admitted = admitted.clone();
            let connection = connection.clone();
            tokio::spawn(
                async move {
                    handler.stream(send, recv, &admitted, &connection).await;
                }
                .in_current_span(),
            );
        }
    }

    /// Reads what a new stream opens with and acts on it.
    async fn stream(
        &self,
        send: SendStream,
        mut recv: RecvStream,
        admitted: &Admitted,
        connection: &quinn::Connection,
    ) {
        let opening = match tokio::time::timeout(HEADER_TIMEOUT, read_opening(&mut recv)).await {
            Ok(Ok(opening)) => opening,
            Ok(Err(error)) => {
                info!("stream refused: {}", error_chain(&error));
                refuse_session(Side { send, recv }, &self.metrics, &Refusal::BadHeader);
                return;
            }
            Err(_) => {
                info!("stream refused: no header in time");
                refuse_session(Side { send, recv }, &self.metrics, &Refusal::BadHeader);
                return;
            }
        };
        match opening {
            Opening::Renewal(chain) => self.renew(send, &chain, admitted),
            Opening::Session(header) => {
                let side = Side { send, recv };
                self.session(side, &header, admitted, connection).await;
            }
        }
    }

    /// Checks a renewed certificate: valid now, same identity, same key; then moves the
    /// connection's end to the new certificate's end.
    fn renew(&self, mut send: SendStream, chain: &[CertificateDer<'static>], admitted: &Admitted) {
        let now = OffsetDateTime::now_utc();
        let verdict =
            admission::check_renewal(&self.client_ca.roots(), chain, &admitted.admission, now)
                .map(|renewed| instant_of(renewed.not_after, now));
        let reply = match verdict {
            Ok(until) => {
                admitted.deadline.send_replace(until);
                let not_after = OffsetDateTime::now_utc().unix_timestamp()
                    + i64::try_from(until.saturating_duration_since(Instant::now()).as_secs())
                        .unwrap_or(i64::MAX / 2);
                info!(
                    valid_for_s = until.saturating_duration_since(Instant::now()).as_secs(),
                    "certificate renewed"
                );
                self.metrics.renewal("accepted");
                Reply::Accepted { not_after }
            }
            Err(reason) => {
                let reason = reason.to_string();
                info!("renewal refused: {reason}");
                self.metrics.renewal("refused");
                Reply::Refused { reason }
            }
        };
        let bytes = renewal::encode_reply(&reply);
        tokio::spawn(
            async move {
                if send.write_all(&bytes).await.is_ok() {
                    let _ = send.finish();
                }
            }
            .in_current_span(),
        );
    }

    /// Hands a session stream to the h2 switchboard (it carries a router token and this
    /// router pairs with h2) or to the QUIC session switchboard.
    async fn session(
        &self,
        side: Side,
        header: &jumpstarter_tunnel::Header,
        admitted: &Admitted,
        connection: &quinn::Connection,
    ) {
        let identity = &admitted.admission.identity;
        let span = info_span!("session", id = header.session_id());
        if let (Some(token), Some(streams)) = (header.token(), &self.streams) {
            let lease = format!("{}/{}", identity.namespace, identity.lease_name);
            streams
                .arrive_quic_token(
                    token,
                    &lease,
                    identity.role,
                    side,
                    self.metrics.clone(),
                    connection,
                )
                .instrument(span)
                .await;
            return;
        }
        if header.token().is_some() {
            debug!("this router does not pair with h2: the session's router token is not used");
        }
        let lease = format!(
            "{}/{}/{}",
            identity.namespace, identity.lease_name, identity.lease_uid
        );
        let key = format!("{lease}/{}", header.session_id());
        let remember_until = *admitted.deadline.borrow();
        self.sessions
            .arrive_quic_session(
                &lease,
                &key,
                identity.role,
                side,
                remember_until,
                connection,
            )
            .instrument(span)
            .await;
    }
}

/// The `Instant` at which `not_after` passes, `now` being the present.
fn instant_of(not_after: OffsetDateTime, now: OffsetDateTime) -> Instant {
    let remaining = u64::try_from(not_after.unix_timestamp() - now.unix_timestamp()).unwrap_or(0);
    Instant::now() + Duration::from_secs(remaining)
}
