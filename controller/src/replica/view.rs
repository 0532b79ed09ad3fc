//! [`Replicas`]: which controller replicas are alive, as their records say. Sans-IO: it
//! takes the records' watch events and the current time, never reads a clock or a store.
//!
//! A record is live while `renewTime + leaseDurationSeconds + EXPIRY_GRACE > now` and
//! names the incarnation asked about. A replica is always live in its own view: whoever
//! asks is running. Expiry by the passage of time is not an event; callers that must act
//! on it wake up at [`Replicas::next_expiry`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::Lease;
use time::{Duration, OffsetDateTime};

use super::{
    ENDPOINT_ANNOTATION, EXPIRY_GRACE, INCARNATION_ANNOTATION, RECORD_DURATION, RECORD_PREFIX,
    ReplicaId, STALE_RECORD_AGE, record_name,
};
use crate::store::WatchEvent;

/// A live replica other than this one, and where it is reached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub id: ReplicaId,
    /// `host:port` of its gRPC port, as its record says.
    pub endpoint: String,
}

/// What one record says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    id: ReplicaId,
    endpoint: Option<String>,
    /// When the record stops counting as live (grace included).
    expires: OffsetDateTime,
}

impl Record {
    /// The record a Lease is, or `None` when it is none (another Lease, or one without a
    /// holder, incarnation or renewal time).
    fn of(lease: &Lease) -> Option<(String, Record)> {
        let name = lease.metadata.name.as_deref()?;
        if !name.starts_with(RECORD_PREFIX) {
            return None;
        }
        let spec = lease.spec.as_ref()?;
        let identity = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
        let annotations = lease.metadata.annotations.as_ref()?;
        let incarnation = annotations
            .get(INCARNATION_ANNOTATION)
            .filter(|i| !i.is_empty())?;
        let endpoint = annotations
            .get(ENDPOINT_ANNOTATION)
            .filter(|e| !e.is_empty())
            .cloned();
        let renewed = spec.renew_time.as_ref()?;
        let renewed = OffsetDateTime::from_unix_timestamp_nanos(renewed.0.as_nanosecond()).ok()?;
        let duration = spec
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map_or(to_time(RECORD_DURATION), |s| Duration::seconds(s.into()));
        Some((
            name.to_owned(),
            Record {
                id: ReplicaId {
                    identity: identity.to_owned(),
                    incarnation: incarnation.clone(),
                },
                endpoint,
                expires: renewed + duration + to_time(EXPIRY_GRACE),
            },
        ))
    }

    fn is_live(&self, now: OffsetDateTime) -> bool {
        self.expires > now
    }
}

fn to_time(d: std::time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::MAX)
}

/// The replicas' records as last seen, by record name.
#[derive(Debug, Clone)]
pub struct Replicas {
    me: ReplicaId,
    records: BTreeMap<String, Record>,
    /// A listing in progress (after `Relisting`), replacing `records` when it completes.
    listing: Option<BTreeMap<String, Record>>,
    /// A full listing has been seen.
    complete: bool,
}

impl Replicas {
    /// The view of replica `me`, with no record seen yet.
    pub fn new(me: ReplicaId) -> Replicas {
        Replicas {
            me,
            records: BTreeMap::new(),
            listing: None,
            complete: false,
        }
    }

    /// This replica.
    pub fn me(&self) -> &ReplicaId {
        &self.me
    }

    /// Whether a full listing of the records has been seen (until then, peers may be
    /// missing from the view).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Takes one watch event of the Leases of the namespace (others than records are
    /// ignored). Returns whether the live replicas or their endpoints changed at `now`.
    pub fn apply(&mut self, event: WatchEvent<Lease>, now: OffsetDateTime) -> bool {
        let before = self.live_set(now);
        match event {
            WatchEvent::Applied(lease) => {
                let target = self.listing.as_mut().unwrap_or(&mut self.records);
                match Record::of(&lease) {
                    Some((name, record)) => {
                        target.insert(name, record);
                    }
                    None => {
                        // A record that lost its holder (or any field) is no longer one.
                        if let Some(name) = lease.metadata.name.as_deref() {
                            target.remove(name);
                        }
                    }
                }
            }
            WatchEvent::Deleted(lease) => {
                if let Some(name) = lease.metadata.name.as_deref() {
                    self.records.remove(name);
                    if let Some(listing) = self.listing.as_mut() {
                        listing.remove(name);
                    }
                }
            }
            WatchEvent::Relisting => self.listing = Some(BTreeMap::new()),
            WatchEvent::Listed => {
                if let Some(listing) = self.listing.take() {
                    self.records = listing;
                }
                self.complete = true;
            }
        }
        before != self.live_set(now)
    }

    /// Forgets a watch that was abandoned half-way through a listing.
    pub fn abandon_listing(&mut self) {
        self.listing = None;
    }

    /// Whether the replica whose text form is `holder_text` (`<identity>/<incarnation>`,
    /// see [`ReplicaId::parse`]) is alive at `now`: it is this replica, or its record exists,
    /// names that incarnation and has not expired (grace included). Anything unparsable is
    /// not live.
    pub fn is_live(&self, holder_text: &str, now: OffsetDateTime) -> bool {
        let Some(id) = ReplicaId::parse(holder_text) else {
            return false;
        };
        if id == self.me {
            return true;
        }
        self.records
            .get(&record_name(&id.identity))
            .is_some_and(|r| r.id == id && r.is_live(now))
    }

    /// The live replicas other than this one that name an endpoint, ordered by id.
    pub fn live_peers(&self, now: OffsetDateTime) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self
            .records
            .values()
            .filter(|r| r.id != self.me && r.is_live(now))
            .filter_map(|r| {
                Some(Peer {
                    id: r.id.clone(),
                    endpoint: r.endpoint.clone()?,
                })
            })
            .collect();
        peers.sort();
        peers
    }

    /// The earliest instant after `now` at which a record that is live now expires (this
    /// replica's own excepted); `None` when no other replica is live. A caller that
    /// derives anything from liveness wakes up then.
    pub fn next_expiry(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.records
            .values()
            .filter(|r| r.id.identity != self.me.identity && r.is_live(now))
            .map(|r| r.expires)
            .min()
    }

    /// Names of records expired for more than [`STALE_RECORD_AGE`]: whoever sees them
    /// deletes them (never this replica's own).
    pub fn stale_records(&self, now: OffsetDateTime) -> Vec<String> {
        let age = to_time(STALE_RECORD_AGE);
        self.records
            .iter()
            .filter(|(_, r)| r.id.identity != self.me.identity && r.expires + age < now)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The live replicas (this one included) with their endpoints, to tell changes apart.
    fn live_set(&self, now: OffsetDateTime) -> BTreeSet<(ReplicaId, Option<String>)> {
        self.records
            .values()
            .filter(|r| r.is_live(now))
            .map(|r| (r.id.clone(), r.endpoint.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).unwrap()
    }

    fn record(identity: &str, incarnation: &str, renewed: i64, endpoint: Option<&str>) -> Lease {
        let mut annotations =
            BTreeMap::from([(INCARNATION_ANNOTATION.to_owned(), incarnation.to_owned())]);
        if let Some(endpoint) = endpoint {
            annotations.insert(ENDPOINT_ANNOTATION.to_owned(), endpoint.to_owned());
        }
        Lease {
            metadata: ObjectMeta {
                name: Some(record_name(identity)),
                namespace: Some("lab".into()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(20),
                renew_time: Some(MicroTime(
                    Timestamp::from_second(at(renewed).unix_timestamp()).unwrap(),
                )),
                ..LeaseSpec::default()
            }),
        }
    }

    fn me() -> ReplicaId {
        ReplicaId::parse("a/00000001").unwrap()
    }

    #[test]
    fn a_record_is_live_until_duration_plus_grace() {
        let mut view = Replicas::new(me());
        assert!(view.apply(
            WatchEvent::Applied(record("b", "0000000b", 0, Some("10.0.0.2:8082"))),
            at(1)
        ));
        assert!(view.is_live("b/0000000b", at(24)));
        assert!(!view.is_live("b/0000000b", at(25)), "20 s + 5 s grace");
        assert!(!view.is_live("b/00000999", at(1)), "another incarnation");
        assert!(!view.is_live("c/0000000c", at(1)), "no record");
        assert!(!view.is_live("garbage", at(1)));
        assert_eq!(view.next_expiry(at(1)), Some(at(25)));
        assert_eq!(view.next_expiry(at(25)), None);
        // A renewal moves the expiry; it is no change of the live set.
        assert!(!view.apply(
            WatchEvent::Applied(record("b", "0000000b", 5, Some("10.0.0.2:8082"))),
            at(6)
        ));
        assert_eq!(view.next_expiry(at(6)), Some(at(30)));
    }

    #[test]
    fn this_replica_is_always_live_and_never_a_peer() {
        let mut view = Replicas::new(me());
        assert!(view.is_live("a/00000001", at(0)));
        assert!(!view.is_live("a/00000002", at(0)), "an older incarnation");
        view.apply(
            WatchEvent::Applied(record("a", "00000001", 0, Some("10.0.0.1:8082"))),
            at(0),
        );
        assert!(view.is_live("a/00000001", at(1000)));
        assert!(view.live_peers(at(1)).is_empty());
        assert_eq!(view.next_expiry(at(1)), None);
        assert!(view.stale_records(at(100_000)).is_empty());
    }

    #[test]
    fn peers_are_live_records_with_an_endpoint() {
        let mut view = Replicas::new(me());
        for lease in [
            record("c", "0000000c", 0, Some("10.0.0.3:8082")),
            record("b", "0000000b", 0, Some("10.0.0.2:8082")),
            record("d", "0000000d", 0, None),
            record("e", "0000000e", -100, Some("10.0.0.5:8082")),
        ] {
            view.apply(WatchEvent::Applied(lease), at(0));
        }
        let peers = view.live_peers(at(1));
        let endpoints: Vec<_> = peers.iter().map(|p| p.endpoint.as_str()).collect();
        assert_eq!(endpoints, ["10.0.0.2:8082", "10.0.0.3:8082"]);
        assert_eq!(peers[0].id.text(), "b/0000000b");
        assert!(
            view.is_live("d/0000000d", at(1)),
            "live, just not reachable"
        );
    }

    #[test]
    fn deletion_and_relisting_remove_records() {
        let mut view = Replicas::new(me());
        assert!(!view.is_complete());
        view.apply(WatchEvent::Relisting, at(0));
        view.apply(
            WatchEvent::Applied(record("b", "0000000b", 0, Some("b:1"))),
            at(0),
        );
        view.apply(
            WatchEvent::Applied(record("c", "0000000c", 0, Some("c:1"))),
            at(0),
        );
        assert!(
            !view.is_live("b/0000000b", at(0)),
            "listing not complete yet"
        );
        assert!(view.apply(WatchEvent::Listed, at(0)));
        assert!(view.is_complete());
        assert!(view.is_live("b/0000000b", at(0)));
        assert!(view.apply(
            WatchEvent::Deleted(record("b", "0000000b", 0, Some("b:1"))),
            at(1)
        ));
        assert!(!view.is_live("b/0000000b", at(1)));
        // A relisting without c: c was deleted while the watch was down.
        view.apply(WatchEvent::Relisting, at(2));
        assert!(view.apply(WatchEvent::Listed, at(2)));
        assert!(!view.is_live("c/0000000c", at(2)));
    }

    #[test]
    fn other_leases_and_incomplete_records_are_ignored() {
        let mut view = Replicas::new(me());
        let mut election = record("b", "0000000b", 0, Some("b:1"));
        election.metadata.name = Some("jumpstarter-controller-leader".into());
        assert!(!view.apply(WatchEvent::Applied(election), at(0)));
        let mut no_incarnation = record("b", "0000000b", 0, Some("b:1"));
        no_incarnation.metadata.annotations = None;
        assert!(!view.apply(WatchEvent::Applied(no_incarnation), at(0)));
        assert!(!view.is_live("b/0000000b", at(0)));
        // A record that loses its holder stops counting.
        view.apply(
            WatchEvent::Applied(record("b", "0000000b", 0, Some("b:1"))),
            at(0),
        );
        let mut released = record("b", "0000000b", 0, Some("b:1"));
        released.spec.as_mut().unwrap().holder_identity = None;
        assert!(view.apply(WatchEvent::Applied(released), at(0)));
        assert!(!view.is_live("b/0000000b", at(0)));
    }

    #[test]
    fn records_expired_for_an_hour_are_stale() {
        let mut view = Replicas::new(me());
        view.apply(
            WatchEvent::Applied(record("b", "0000000b", 0, Some("b:1"))),
            at(0),
        );
        assert!(view.stale_records(at(25 + 3600)).is_empty());
        assert_eq!(view.stale_records(at(26 + 3600)), vec![record_name("b")]);
    }
}
