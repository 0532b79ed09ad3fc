//! `create lease` for an administrator: a [`LeaseOrder`] on behalf of an existing client,
//! checked by the same domain rule as `ClientService.CreateLease`
//! ([`jumpstarter_lease::command::create`]) and turned into a Lease object by the same code
//! ([`lease_request`]), so both accept and refuse exactly the same requests. The reconcile
//! loop then schedules the lease like any other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use jumpstarter_lease::command;
use jumpstarter_lease::request::LeaseRequest;
use jumpstarter_lease::scheduler::duration as go_duration;

use super::{Admin, AdminError, Kind, Objects};
use crate::crd::{Client, Exporter, Lease};
use crate::service::lease_request;
use crate::store::{Store, StoreError};

/// What `create lease` asks for, with times and the duration as the user wrote them (so it
/// travels as plain JSON to a running service).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseOrder {
    /// The client the lease is for; it must exist.
    pub client: String,
    /// Label selector of the exporters that may serve the lease (`CreateLease`'s `selector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The one exporter to lease (`CreateLease`'s `exporter_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<String>,
    /// A Go duration such as `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub begin_time: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The lease's name; a UUIDv7 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A Go duration (`1h30m`) as `CreateLease` receives it.
pub fn parse_duration(text: &str) -> Result<time::Duration, AdminError> {
    go_duration::parse(text.trim()).map_err(|e| AdminError::InvalidLease(format!("duration: {e}")))
}

/// An RFC 3339 time (`2025-01-31T09:00:00Z`); `field` names it in the error.
pub fn parse_time(text: &str, field: &str) -> Result<OffsetDateTime, AdminError> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| {
        AdminError::InvalidLease(format!(
            "{field} {text:?} is not an RFC 3339 time (like 2025-01-31T09:00:00Z): {e}"
        ))
    })
}

impl LeaseOrder {
    /// The order as a domain lease request, times and duration parsed.
    fn to_request(&self) -> Result<LeaseRequest, AdminError> {
        let time = |text: &Option<String>, field: &str| {
            text.as_deref().map(|t| parse_time(t, field)).transpose()
        };
        Ok(LeaseRequest {
            selector: self.selector.clone().unwrap_or_default(),
            exporter_name: self.exporter.clone(),
            tags: self.tags.clone(),
            allow_disabled: false,
            begin_time: time(&self.begin_time, "begin_time")?,
            end_time: time(&self.end_time, "end_time")?,
            duration: self.duration.as_deref().map(parse_duration).transpose()?,
        })
    }
}

impl<S: Store> Admin<S> {
    /// Creates the lease `order` asks for, as `ClientService.CreateLease` would for its
    /// client (at most [`Admin::with_max_tags`] tags), and returns it as stored.
    pub async fn create_lease(&self, order: &LeaseOrder) -> Result<Objects, AdminError> {
        let invalid = |status: tonic::Status| AdminError::InvalidLease(status.message().to_owned());
        let new = command::create(
            &order.to_request()?,
            order.name.as_deref().unwrap_or_default(),
            &order.client,
            self.max_tags,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| AdminError::InvalidLease(e.to_string()))?;
        let name = lease_request::name_or_new(new.name);
        if self.read::<Client>(&order.client).await?.is_none() {
            return Err(self.not_found(Kind::Client, &order.client));
        }
        let lease = lease_request::build(&new.lease, &self.namespace, &name, &new.client)
            .map_err(invalid)?;
        if lease.spec.begin_time.is_some() {
            let leases = self.list_sorted::<Lease>().await?;
            let exporters = self.list_sorted::<Exporter>().await?;
            lease_request::check_booking(&lease, &leases, &exporters, OffsetDateTime::now_utc())
                .map_err(|conflict| AdminError::InvalidLease(conflict.message))?;
        }
        match self.store.create(&lease).await {
            Ok(created) => Ok(Objects::Leases(vec![created])),
            Err(StoreError::AlreadyExists { .. }) => Err(AdminError::AlreadyExists {
                kind: Kind::Lease.singular(),
                namespace: self.namespace.clone(),
                name,
            }),
            Err(source) => Err(self.store_error("create", Kind::Lease, &name, source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The booking rule of `CreateLease` holds for `create lease` too: an overlapping
    /// booking of the same exporter is refused naming the first, unless it asks to queue.
    #[tokio::test]
    async fn an_overlapping_booking_is_refused_unless_it_queues() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::embedded::EmbeddedStore::open(&dir.path().join("state.redb"))
            .expect("open the store");
        let admin = Admin::new(store, "lab");
        let mut client = Client::new("alice", Default::default());
        client.metadata.namespace = Some("lab".into());
        let mut exporter = Exporter::new("board-1", Default::default());
        exporter.metadata.namespace = Some("lab".into());
        admin.store.create(&client).await.expect("client");
        admin.store.create(&exporter).await.expect("exporter");
        let begin = (OffsetDateTime::now_utc() + time::Duration::hours(1))
            .format(&Rfc3339)
            .unwrap();
        let order = |name: &str| LeaseOrder {
            name: Some(name.into()),
            client: "alice".into(),
            exporter: Some("board-1".into()),
            duration: Some("30m".into()),
            begin_time: Some(begin.clone()),
            ..LeaseOrder::default()
        };
        admin
            .create_lease(&order("first"))
            .await
            .expect("first booking");
        let refused = admin.create_lease(&order("second")).await.unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("by lease first") && message.contains("booking=queue"),
            "{message}"
        );
        let mut queued = order("second");
        queued.tags.insert("booking".into(), "queue".into());
        admin.create_lease(&queued).await.expect("a queued booking");
    }

    #[test]
    fn an_order_becomes_the_lease_request() {
        let order = LeaseOrder {
            client: "alice".into(),
            selector: Some("board=mock".into()),
            duration: Some("1h30m".into()),
            begin_time: Some("2025-01-31T09:00:00.5+01:00".into()),
            tags: BTreeMap::from([("team".into(), "qa".into())]),
            ..LeaseOrder::default()
        };
        let request = order.to_request().unwrap();
        assert_eq!(request.selector, "board=mock");
        assert_eq!(request.duration.unwrap().whole_seconds(), 5400);
        let begin = request.begin_time.unwrap();
        assert_eq!(begin.unix_timestamp(), 1_738_310_400);
        assert_eq!(begin.nanosecond(), 500_000_000);
        assert_eq!(request.tags.get("team").map(String::as_str), Some("qa"));
    }

    #[test]
    fn bad_times_and_durations_say_which_field() {
        let err = parse_time("tomorrow", "end_time").unwrap_err().to_string();
        assert!(err.contains("end_time \"tomorrow\""), "{err}");
        let err = parse_duration("30 minutes").unwrap_err().to_string();
        assert!(err.starts_with("invalid lease: duration:"), "{err}");
    }

    #[test]
    fn serialized_orders_read_back() {
        let order = LeaseOrder {
            client: "alice".into(),
            exporter: Some("board-1".into()),
            name: Some("l1".into()),
            ..LeaseOrder::default()
        };
        let json = serde_json::to_string(&order).unwrap();
        assert_eq!(
            json,
            r#"{"client":"alice","exporter":"board-1","name":"l1"}"#
        );
        assert_eq!(serde_json::from_str::<LeaseOrder>(&json).unwrap(), order);
    }
}
