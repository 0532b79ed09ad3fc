//! [`LeaseError`]: why a lease request or command is refused. The texts are the ones
//! jumpstarter 0.9.0 clients see; the controller maps each variant to a gRPC status code in
//! one place.

use crate::name::{ResourceNameError, quoted};
use crate::scheduler::LeaseTimesError;
use crate::selector::SelectorError;

/// Why a lease request or command is refused, one variant per rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// `exporter_name` has a `/` but is not `namespaces/{ns}/exporters/{name}`.
    #[error(transparent)]
    ExporterResourceName(#[from] ResourceNameError),
    /// `exporter_name` is not a Kubernetes object name.
    #[error("invalid exporter_name {}: not a valid object name", quoted(.name))]
    InvalidExporterName { name: String },
    /// Neither a selector nor an exporter name was given.
    #[error("one of selector or exporter_name is required")]
    TargetRequired,
    /// A legacy `RequestLease` without a selector.
    #[error("selector is required")]
    SelectorRequired,
    /// More tags than the deployment allows.
    #[error("too many tags: {count} (at most {max})")]
    TooManyTags { count: usize, max: usize },
    /// A tag key in a prefix the controller reserves.
    #[error("tag key {} uses a reserved prefix", quoted(.key))]
    ReservedTagKey { key: String },
    /// A tag key with a `/` (tags are simple label names).
    #[error("tag key {} must not contain '/'", quoted(.key))]
    TagKeyWithSlash { key: String },
    /// A tag key or value that is not valid label syntax.
    #[error("invalid tag: {0}")]
    InvalidTag(SelectorError),
    /// The selector text does not parse.
    #[error("{0}")]
    InvalidSelector(SelectorError),
    /// Begin, end and duration do not give a lease time.
    #[error("{0}")]
    Times(#[from] LeaseTimesError),
    /// The duration exceeds Go's `time.Duration` range.
    #[error("duration is too long")]
    DurationTooLong,
    /// The requested lease name is not a lowercase RFC 1123 name.
    #[error("invalid lease_id {}: must be a lowercase RFC 1123 name", quoted(.id))]
    InvalidLeaseId { id: String },
    /// A transfer to a client of another namespace.
    #[error("a lease can only move to a client in its namespace")]
    TransferAcrossNamespaces {
        lease_namespace: String,
        client_namespace: String,
    },
    /// A client acting on a lease of another client (or an exporter on a client's command).
    #[error("permission denied")]
    NotOwner { lease: String, caller: String },
    /// An exporter releasing a lease it does not hold.
    #[error("lease {lease} is not held by exporter {exporter}")]
    NotHolder { lease: String, exporter: String },
    /// The lease was released already.
    #[error("lease {lease} is already released")]
    AlreadyReleased { lease: String },
    /// The lease has ended: it cannot change any more.
    #[error("lease has ended")]
    Ended { lease: String },
    /// A new begin time for a lease that already holds an exporter.
    #[error("begin_time can only change before an exporter is assigned")]
    BeginTimeFixed { lease: String },
    /// A transfer of a lease that holds no exporter.
    #[error("a lease can only be transferred while it is active")]
    TransferInactive { lease: String },
}
