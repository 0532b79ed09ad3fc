//! The controller replicas of one deployment and which of them are alive.
//!
//! Every controller process is a [`ReplicaId`]: its `--identity` (the pod name in the
//! chart) plus an incarnation drawn at process start, so a container restarted under the
//! same pod name is another replica. Each replica keeps a record of itself: a
//! `coordination.k8s.io/v1` Lease named [`record_name`] whose `spec.holderIdentity` is the
//! identity, renewed every [`RENEW_INTERVAL`] and valid for [`RECORD_DURATION`], annotated
//! with the incarnation and the endpoint where peers reach its gRPC port. One write per
//! replica per interval, whatever the number of exporters.
//!
//! - [`view`]: [`Replicas`], the sans-IO view of the records (`is_live`, `live_peers`,
//!   `next_expiry`), fed with the records' watch events; `now` is always passed in.
//! - [`registry`]: [`ReplicaRegistry`], the shared handle: this replica's id, the current
//!   view and a change notification. Standalone mode uses [`ReplicaRegistry::single`], one
//!   replica that is always live and keeps no record.
//! - [`record`]: the I/O shell: creates, renews and (at graceful shutdown) deletes this
//!   replica's record, watches every record into the registry and deletes records that
//!   expired long ago.

pub mod record;
pub mod registry;
pub mod view;

use std::fmt;

pub use registry::ReplicaRegistry;
pub use view::{Peer, Replicas};

/// Prefix of every replica record's name; the watch keeps only Leases named so.
pub const RECORD_PREFIX: &str = "jumpstarter-controller-replica-";
/// Annotation of a record: the incarnation of the replica that renews it.
pub const INCARNATION_ANNOTATION: &str = "jumpstarter.dev/replica-incarnation";
/// Annotation of a record: `host:port` where peers reach the replica's gRPC port.
pub const ENDPOINT_ANNOTATION: &str = "jumpstarter.dev/replica-endpoint";
/// How long a record stays valid after its last renewal: four renewals may fail (an API
/// server hiccup) before peers consider the replica gone.
pub const RECORD_DURATION: std::time::Duration = std::time::Duration::from_secs(20);
/// How often a replica renews its record.
pub const RENEW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Added to a record's validity before it counts as expired, for clock skew between the
/// replica that renews it and the one that reads it.
pub const EXPIRY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Records expired for longer than this are deleted by whichever replica sees them (a
/// replica killed without a graceful stop leaves its record behind).
pub const STALE_RECORD_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Longest record name: one DNS label, which every Kubernetes name rule accepts.
const MAX_RECORD_NAME: usize = 63;
/// Hex digits of the hash that keeps truncated record names apart.
const NAME_HASH_DIGITS: usize = 8;

/// One controller process: its identity and the incarnation drawn at its start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaId {
    pub identity: String,
    pub incarnation: String,
}

impl ReplicaId {
    /// `identity` with a fresh random incarnation (8 hex digits).
    pub fn new(identity: &str) -> ReplicaId {
        let mut incarnation = uuid::Uuid::new_v4().simple().to_string();
        incarnation.truncate(8);
        ReplicaId {
            identity: identity.to_owned(),
            incarnation,
        }
    }

    /// Parses the text form `<identity>/<incarnation>` (the identity may contain `/`; the
    /// last one separates). `None` when either part is empty or there is no `/`.
    pub fn parse(text: &str) -> Option<ReplicaId> {
        let (identity, incarnation) = text.rsplit_once('/')?;
        if identity.is_empty() || incarnation.is_empty() {
            return None;
        }
        Some(ReplicaId {
            identity: identity.to_owned(),
            incarnation: incarnation.to_owned(),
        })
    }

    /// The text form, as annotations and logs carry it.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.identity, self.incarnation)
    }
}

/// The name of the record of the replica with `identity`: [`RECORD_PREFIX`] plus the
/// identity lowercased, every character other than `a-z0-9` turned into `-`; when that is
/// too long (or empty), a prefix of it plus a hash of the whole identity.
pub fn record_name(identity: &str) -> String {
    let safe: String = identity
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let safe = safe.trim_matches('-');
    let room = MAX_RECORD_NAME - RECORD_PREFIX.len();
    if !safe.is_empty() && safe.len() <= room && safe == identity {
        return format!("{RECORD_PREFIX}{safe}");
    }
    // Changed characters or truncation could make two identities collide: the hash of the
    // original keeps them apart.
    let hash = format!("{:016x}", fnv1a(identity.as_bytes()));
    let keep = room - NAME_HASH_DIGITS - 1;
    let head = safe[..safe.len().min(keep)].trim_end_matches('-');
    if head.is_empty() {
        format!("{RECORD_PREFIX}{}", &hash[..NAME_HASH_DIGITS])
    } else {
        format!("{RECORD_PREFIX}{head}-{}", &hash[..NAME_HASH_DIGITS])
    }
}

/// FNV-1a, 64 bits: a stable hash (the same in every process and release) for names.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text() {
        let id = ReplicaId::new("jumpstarter-controller-7d9f-abcde");
        assert_eq!(id.incarnation.len(), 8);
        assert_ne!(id, ReplicaId::new("jumpstarter-controller-7d9f-abcde"));
        assert_eq!(ReplicaId::parse(&id.text()), Some(id));
        let odd = ReplicaId::parse("host/with/slash/0a1b2c3d").unwrap();
        assert_eq!(odd.identity, "host/with/slash");
        assert_eq!(odd.incarnation, "0a1b2c3d");
        for bad in ["", "/", "a/", "/b", "nodelimiter"] {
            assert_eq!(ReplicaId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn record_names_are_dns_safe_and_distinct() {
        assert_eq!(
            record_name("controller-0"),
            "jumpstarter-controller-replica-controller-0"
        );
        let names = [
            record_name("Host_1234"),
            record_name("host-1234"),
            record_name("host_1234"),
            record_name(""),
            record_name("___"),
            record_name(&"x".repeat(200)),
            record_name(&format!("{}y", "x".repeat(200))),
        ];
        for name in &names {
            assert!(name.len() <= MAX_RECORD_NAME, "{name}");
            assert!(name.starts_with(RECORD_PREFIX), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-'), "{name}");
        }
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert_eq!(record_name("Host_1234"), record_name("Host_1234"));
    }
}
