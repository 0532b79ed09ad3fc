//! QUIC application error codes, shared by the router and the peers.
//!
//! A refused or broken *session* is reported on its stream only (`RESET_STREAM` and
//! `STOP_SENDING` with one of these codes), so other sessions of the connection go on. A
//! refused *connection* (a certificate without a usable lease identity) is closed with
//! [`NOT_ADMITTED`].

/// The session ended normally (used when a side stops reading after the end).
pub const DONE: u32 = 0;
/// Connection close: the peer certificate carries no valid lease identity.
pub const NOT_ADMITTED: u32 = 0x101;
/// Stream: the header was malformed, truncated, oversized or of an unknown version.
pub const BAD_HEADER: u32 = 0x201;
/// Stream: a stream of the same role already waits for this session.
pub const SAME_ROLE: u32 = 0x202;
/// Stream: the session already has its two sides.
pub const ALREADY_PAIRED: u32 = 0x203;
/// Stream: the router holds as many waiting sessions as it allows.
pub const TOO_MANY_PENDING: u32 = 0x204;
/// Stream: the other side did not arrive within the pairing timeout.
pub const PAIR_TIMEOUT: u32 = 0x205;
/// Stream: the other side reset its stream or went away.
pub const PEER_GONE: u32 = 0x206;
/// Stream or connection: the router is shutting down.
pub const SHUTTING_DOWN: u32 = 0x207;

/// Stream: the router token of a session is invalid, expired, or for another lease.
pub const BAD_TOKEN: u32 = 0x208;
/// Connection close: the lease certificate ended and no renewal came in time.
pub const CERTIFICATE_EXPIRED: u32 = 0x102;
/// Stream: the lease the session's router token is for has ended.
pub const LEASE_ENDED: u32 = 0x209;

/// A stable name for a code, for messages and metrics.
pub fn name(code: u64) -> &'static str {
    match u32::try_from(code) {
        Ok(DONE) => "done",
        Ok(NOT_ADMITTED) => "not_admitted",
        Ok(BAD_HEADER) => "bad_header",
        Ok(SAME_ROLE) => "same_role",
        Ok(ALREADY_PAIRED) => "already_paired",
        Ok(TOO_MANY_PENDING) => "too_many_pending",
        Ok(PAIR_TIMEOUT) => "pair_timeout",
        Ok(PEER_GONE) => "peer_gone",
        Ok(SHUTTING_DOWN) => "shutting_down",
        Ok(BAD_TOKEN) => "bad_token",
        Ok(CERTIFICATE_EXPIRED) => "certificate_expired",
        Ok(LEASE_ENDED) => "lease_ended",
        _ => "unknown",
    }
}
