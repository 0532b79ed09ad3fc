//! Explicit lease commands — create, update, release, delete — as pure functions of the
//! lease's current state, the caller and the time, returning the [`Change`] to write or the
//! [`LeaseError`] to answer. The gRPC handlers and the administrator's CLI call these; the
//! controller turns a stored lease into a [`LeaseState`] and writes the [`Change`] back.
//!
//! `now` is taken by every command although no 0.9.0 rule reads it yet (a begin time in the
//! past is accepted): rules about the clock then change no caller.

use time::{Duration, OffsetDateTime};

use crate::error::LeaseError;
use crate::request::{self, CheckedLease, LeaseRequest};
use crate::scheduler::LeaseTimes;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client, by name, in the lease's namespace.
    Client(String),
    /// An exporter, by name, in the lease's namespace.
    Exporter(String),
}

/// What the commands need to know about a stored lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease's name.
    pub name: String,
    /// The client that owns it (`spec.clientRef`).
    pub client: String,
    /// The exporter it holds (`status.exporterRef`, when not empty).
    pub exporter: Option<String>,
    /// Whether its release was requested (`spec.release`).
    pub release_requested: bool,
    /// Whether it has ended (`status.ended`).
    pub ended: bool,
    /// `spec.beginTime`.
    pub begin_time: Option<OffsetDateTime>,
    /// `spec.endTime`.
    pub end_time: Option<OffsetDateTime>,
    /// `spec.duration`, when it parses.
    pub duration: Option<Duration>,
}

/// A new lease, checked: the object to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLease {
    /// The name asked for; `None` lets the caller choose a fresh one.
    pub name: Option<String>,
    /// The owning client.
    pub client: String,
    /// The checked request.
    pub lease: CheckedLease,
}

/// An `UpdateLease`: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseUpdate {
    pub begin_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    /// Zero counts as absent.
    pub duration: Option<Duration>,
    /// The client to transfer the lease to (same namespace, checked to exist by the caller
    /// of [`update`], see [`transfer_target`]).
    pub client: Option<String>,
}

/// What to write to the stored lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the command succeeds without a write.
    Nothing,
    /// Set `spec.release`: the reconcile loop ends the lease.
    Release,
    /// New spec fields.
    Update {
        /// Reconciled times, when any time field was given.
        times: Option<LeaseTimes>,
        /// The new owning client.
        client: Option<String>,
    },
}

/// Creates a lease for `client`: the request's rules, then the requested name.
pub fn create(
    request: &LeaseRequest,
    lease_id: &str,
    client: &str,
    max_tags: usize,
    _now: OffsetDateTime,
) -> Result<NewLease, LeaseError> {
    let lease = request::check(request, max_tags)?;
    let name = request::check_lease_id(lease_id)?;
    Ok(NewLease {
        name,
        client: client.to_owned(),
        lease,
    })
}

/// The name of the client a lease in `lease_namespace` may be transferred to, from the
/// resource name's parts: it must be in the same namespace.
pub fn transfer_target(
    lease_namespace: &str,
    client_namespace: &str,
    client: &str,
) -> Result<String, LeaseError> {
    if client_namespace != lease_namespace {
        return Err(LeaseError::TransferAcrossNamespaces {
            lease_namespace: lease_namespace.to_owned(),
            client_namespace: client_namespace.to_owned(),
        });
    }
    Ok(client.to_owned())
}

/// Updates a lease's times or owner: only its client may, only before it ends; the begin
/// time only before an exporter is assigned; a transfer only while one is.
pub fn update(
    state: &LeaseState,
    caller: &Caller,
    update: &LeaseUpdate,
    _now: OffsetDateTime,
) -> Result<Change, LeaseError> {
    check_owner(state, caller)?;
    if state.ended {
        return Err(LeaseError::Ended {
            lease: state.name.clone(),
        });
    }
    let assigned = state.exporter.is_some();
    if update.begin_time.is_some() && assigned {
        return Err(LeaseError::BeginTimeFixed {
            lease: state.name.clone(),
        });
    }
    let duration = request::requested(update.duration);
    let times = if update.begin_time.is_some() || update.end_time.is_some() || duration.is_some() {
        Some(request::check_times(
            update.begin_time.or(state.begin_time),
            update.end_time.or(state.end_time),
            duration.or(state.duration),
        )?)
    } else {
        None
    };
    if update.client.is_some() && !assigned {
        return Err(LeaseError::TransferInactive {
            lease: state.name.clone(),
        });
    }
    Ok(Change::Update {
        times,
        client: update.client.clone(),
    })
}

/// Releases a lease: its client or the exporter holding it may. Already released is
/// refused ([`LeaseError::AlreadyReleased`], which idempotent callers take as success); an
/// ended lease has nothing to release.
pub fn release(
    state: &LeaseState,
    caller: &Caller,
    _now: OffsetDateTime,
) -> Result<Change, LeaseError> {
    match caller {
        Caller::Client(_) => check_owner(state, caller)?,
        Caller::Exporter(exporter) => {
            if state.exporter.as_deref() != Some(exporter.as_str()) {
                return Err(LeaseError::NotHolder {
                    lease: state.name.clone(),
                    exporter: exporter.clone(),
                });
            }
        }
    }
    if state.release_requested {
        return Err(LeaseError::AlreadyReleased {
            lease: state.name.clone(),
        });
    }
    if state.ended {
        return Ok(Change::Nothing);
    }
    Ok(Change::Release)
}

/// Deletes a lease (`ClientService.DeleteLease`): as in 0.9.0, its client releases it and
/// the object stays until the reconcile loop has ended it.
pub fn delete(
    state: &LeaseState,
    caller: &Caller,
    now: OffsetDateTime,
) -> Result<Change, LeaseError> {
    check_owner(state, caller)?;
    release(state, caller, now)
}

/// Only the owning client may act on a lease.
pub fn check_owner(state: &LeaseState, caller: &Caller) -> Result<(), LeaseError> {
    match caller {
        Caller::Client(client) if *client == state.client => Ok(()),
        Caller::Client(name) | Caller::Exporter(name) => Err(LeaseError::NotOwner {
            lease: state.name.clone(),
            caller: name.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
    }

    fn state() -> LeaseState {
        LeaseState {
            name: "l1".into(),
            client: "alice".into(),
            duration: Some(Duration::hours(1)),
            ..LeaseState::default()
        }
    }

    fn alice() -> Caller {
        Caller::Client("alice".into())
    }

    #[test]
    fn only_the_owner_or_the_holder_releases() {
        let mut held = state();
        held.exporter = Some("e1".into());
        assert_eq!(release(&held, &alice(), now()), Ok(Change::Release));
        assert_eq!(
            release(&held, &Caller::Exporter("e1".into()), now()),
            Ok(Change::Release)
        );
        assert_eq!(
            release(&held, &Caller::Client("bob".into()), now())
                .unwrap_err()
                .to_string(),
            "permission denied"
        );
        assert_eq!(
            release(&held, &Caller::Exporter("e2".into()), now())
                .unwrap_err()
                .to_string(),
            "lease l1 is not held by exporter e2"
        );
        assert!(matches!(
            delete(&held, &Caller::Exporter("e1".into()), now()),
            Err(LeaseError::NotOwner { .. })
        ));
    }

    #[test]
    fn released_and_ended_leases() {
        let mut released = state();
        released.release_requested = true;
        released.ended = true;
        assert_eq!(
            delete(&released, &alice(), now()).unwrap_err().to_string(),
            "lease l1 is already released"
        );
        let mut expired = state();
        expired.ended = true;
        assert_eq!(delete(&expired, &alice(), now()), Ok(Change::Nothing));
    }

    #[test]
    fn updates_follow_the_assignment() {
        let begin = Some(now());
        let moved = LeaseUpdate {
            begin_time: begin,
            ..LeaseUpdate::default()
        };
        let change = update(&state(), &alice(), &moved, now()).unwrap();
        assert_eq!(
            change,
            Change::Update {
                times: Some(LeaseTimes {
                    begin_time: begin,
                    end_time: None,
                    duration: Duration::hours(1)
                }),
                client: None
            }
        );
        let mut held = state();
        held.exporter = Some("e1".into());
        assert!(matches!(
            update(&held, &alice(), &moved, now()),
            Err(LeaseError::BeginTimeFixed { .. })
        ));
        let transfer = LeaseUpdate {
            client: Some("bob".into()),
            ..LeaseUpdate::default()
        };
        assert!(matches!(
            update(&state(), &alice(), &transfer, now()),
            Err(LeaseError::TransferInactive { .. })
        ));
        assert!(update(&held, &alice(), &transfer, now()).is_ok());
        let mut ended = held;
        ended.ended = true;
        assert_eq!(
            update(&ended, &alice(), &transfer, now())
                .unwrap_err()
                .to_string(),
            "lease has ended"
        );
        assert_eq!(
            transfer_target("lab", "other", "bob")
                .unwrap_err()
                .to_string(),
            "a lease can only move to a client in its namespace"
        );
    }

    #[test]
    fn create_checks_the_request_then_the_name() {
        let request = LeaseRequest {
            selector: "a=b".into(),
            duration: Some(Duration::minutes(5)),
            ..LeaseRequest::default()
        };
        let created = create(&request, "", "alice", 10, now()).unwrap();
        assert_eq!(created.name, None);
        assert_eq!(created.client, "alice");
        assert!(matches!(
            create(&request, "Bad", "alice", 10, now()),
            Err(LeaseError::InvalidLeaseId { .. })
        ));
        assert_eq!(
            create(&LeaseRequest::default(), "Bad", "alice", 10, now()),
            Err(LeaseError::TargetRequired)
        );
    }
}
