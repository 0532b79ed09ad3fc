//! Why the router refuses a stream or session, and how each transport hears it: one
//! function each for the metric label, the QUIC reset code and the gRPC status. Also what
//! becomes of a QUIC connection attempt ([`Intake`]), as a metric label.

use std::time::Duration;

use jumpstarter_tunnel::code;
use tonic::Status;

use crate::pairing::Rejection;

/// A stream or session the router does not relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The router is shutting down.
    #[error("router is shutting down")]
    ShuttingDown,
    /// The stream id already has its two peers (now, or earlier with the same token).
    #[error("stream {stream_id} is already paired")]
    AlreadyPaired { stream_id: String },
    /// The router holds as many waiting streams as it allows.
    #[error("too many streams are waiting for a peer (limit {limit})")]
    TooManyPending { limit: usize },
    /// The router holds as many waiting streams of this lease as it allows.
    #[error("too many streams of lease {lease} are waiting for a peer (limit {limit})")]
    TooManyPendingForLease { lease: String, limit: usize },
    /// No peer arrived within the pairing timeout.
    #[error("no peer arrived for stream {stream_id} within {}", seconds(*.timeout))]
    TimedOut {
        stream_id: String,
        timeout: Duration,
    },
    /// Both streams of a session hold the same role (QUIC: the certificate's role; h2: the
    /// router token's `role` claim).
    #[error("both streams of the session hold the same role")]
    SameRole,
    /// The lease of the stream ended (the router token's `lease_end` claim).
    #[error("the lease ended")]
    LeaseEnded,
    /// The waiting peer vanished from the table (an invariant broke).
    #[error("the waiting peer is gone")]
    PeerGone,
    /// A QUIC session's router token is invalid or for another lease (h2 streams are
    /// refused by [`crate::authentication`] instead).
    #[error("invalid router token")]
    BadToken,
    /// A QUIC stream did not open with a readable header in time.
    #[error("unreadable session header")]
    BadHeader,
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::AlreadyPaired { stream_id } => Refusal::AlreadyPaired { stream_id },
            Rejection::TooManyPending { limit } => Refusal::TooManyPending { limit },
            Rejection::TooManyPendingForLease { lease, limit } => {
                Refusal::TooManyPendingForLease { lease, limit }
            }
        }
    }
}

impl Refusal {
    /// The `outcome` label of the stream and session counters: the variant's name.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Refusal::ShuttingDown => "shutting_down",
            Refusal::AlreadyPaired { .. } => "already_paired",
            Refusal::TooManyPending { .. } => "too_many_pending",
            Refusal::TooManyPendingForLease { .. } => "too_many_pending_for_lease",
            Refusal::TimedOut { .. } => "timed_out",
            Refusal::SameRole => "same_role",
            Refusal::LeaseEnded => "lease_ended",
            Refusal::PeerGone => "peer_gone",
            Refusal::BadToken => "bad_token",
            Refusal::BadHeader => "bad_header",
        }
    }

    /// The code a refused QUIC stream is reset with.
    pub(crate) fn code(&self) -> u32 {
        match self {
            Refusal::ShuttingDown => code::SHUTTING_DOWN,
            Refusal::AlreadyPaired { .. } => code::ALREADY_PAIRED,
            Refusal::TooManyPending { .. } | Refusal::TooManyPendingForLease { .. } => {
                code::TOO_MANY_PENDING
            }
            Refusal::TimedOut { .. } => code::PAIR_TIMEOUT,
            Refusal::SameRole => code::SAME_ROLE,
            Refusal::LeaseEnded => code::LEASE_ENDED,
            Refusal::PeerGone => code::PEER_GONE,
            Refusal::BadToken => code::BAD_TOKEN,
            Refusal::BadHeader => code::BAD_HEADER,
        }
    }

    /// The status a refused h2 stream ends with.
    pub(crate) fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            Refusal::ShuttingDown => Status::unavailable(message),
            Refusal::AlreadyPaired { .. } => Status::already_exists(message),
            Refusal::TooManyPending { .. } | Refusal::TooManyPendingForLease { .. } => {
                Status::resource_exhausted(message)
            }
            Refusal::TimedOut { .. } => Status::deadline_exceeded(message),
            Refusal::SameRole => Status::failed_precondition(message),
            Refusal::LeaseEnded => Status::permission_denied(message),
            Refusal::PeerGone => Status::internal(message),
            Refusal::BadToken => Status::unauthenticated(message),
            Refusal::BadHeader => Status::invalid_argument(message),
        }
    }
}

/// What became of a QUIC connection attempt before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intake {
    /// Handshake started.
    Accepted,
    /// Asked to prove its address first (a QUIC Retry): too many handshakes from
    /// unvalidated addresses are in flight.
    Retried,
    /// Refused (QUIC `CONNECTION_REFUSED`): the listener holds as many connections as it
    /// allows.
    TooManyConnections,
}

impl Intake {
    /// The `outcome` label of the connection-attempt counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Intake::Accepted => "accepted",
            Intake::Retried => "retry",
            Intake::TooManyConnections => "refused_too_many_connections",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_labels_codes_and_statuses() {
        let timed_out = Refusal::TimedOut {
            stream_id: "s1".into(),
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(timed_out.label(), "timed_out");
        assert_eq!(timed_out.code(), code::PAIR_TIMEOUT);
        let status = timed_out.status();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "no peer arrived for stream s1 within 1.5s"
        );

        let paired = Refusal::from(Rejection::AlreadyPaired {
            stream_id: "s2".into(),
        });
        assert_eq!(paired.label(), "already_paired");
        assert_eq!(paired.code(), code::ALREADY_PAIRED);
        assert_eq!(paired.status().code(), tonic::Code::AlreadyExists);
        assert_eq!(paired.status().message(), "stream s2 is already paired");

        let full = Refusal::from(Rejection::TooManyPending { limit: 3 });
        assert_eq!(full.label(), "too_many_pending");
        assert_eq!(full.status().code(), tonic::Code::ResourceExhausted);

        let closing = Refusal::ShuttingDown;
        assert_eq!(closing.code(), code::SHUTTING_DOWN);
        assert_eq!(closing.status().code(), tonic::Code::Unavailable);
        assert_eq!(closing.status().message(), "router is shutting down");

        assert_eq!(Refusal::PeerGone.status().code(), tonic::Code::Internal);
        assert_eq!(Refusal::SameRole.code(), code::SAME_ROLE);
        assert_eq!(
            Refusal::SameRole.status().code(),
            tonic::Code::FailedPrecondition
        );

        let lease_full = Refusal::from(Rejection::TooManyPendingForLease {
            lease: "lab/l1".into(),
            limit: 2,
        });
        assert_eq!(lease_full.label(), "too_many_pending_for_lease");
        assert_eq!(lease_full.code(), code::TOO_MANY_PENDING);
        assert_eq!(lease_full.status().code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            lease_full.status().message(),
            "too many streams of lease lab/l1 are waiting for a peer (limit 2)"
        );

        assert_eq!(Refusal::LeaseEnded.label(), "lease_ended");
        assert_eq!(Refusal::LeaseEnded.code(), code::LEASE_ENDED);
        assert_eq!(
            Refusal::LeaseEnded.status().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(Intake::Retried.label(), "retry");
    }
}
