//! `jumpstarter.v1.ControllerService`: what exporters call (Register, ReportStatus,
//! Status, Listen, Unregister, ReleaseLease), Dial for clients, and the legacy lease calls.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration as StdDuration;

use futures::Stream;
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};
use tracing::Instrument;

use jumpstarter_lease::{LeaseError, command};
use jumpstarter_proto::jumpstarter::v1 as pb;
use jumpstarter_proto::jumpstarter::v1::controller_service_server::ControllerService;
use jumpstarter_token::router::{self, StreamGrant};

use super::cache::{ExporterEvent, ReadCache};
use super::listen::OfferError;
use super::metrics::{GaugeGuard, OfferLabels, RefusedLabelLabels, observed_service};
use super::reported_labels::{self, LabelPolicy};
use super::write::{self, Part};
use super::{
    Services, heartbeat, lease_error, lease_request, rate_limited, router_choice, status_stream,
    store_status, wire,
};
use crate::auth::{Caller, KIND};
use crate::crd::vocabulary::{self, exporter_condition};
use crate::crd::{Client, Device, Exporter, ExporterAccessPolicy, ExporterStatusValue, Lease};
use crate::peer::forward::Forwarded;
use crate::store::{self, Store, WatchEvent};

/// First wait of Dial while the exporter is still `Available` (0.9.0 value).
pub(crate) const DIAL_WAIT_INITIAL: StdDuration = StdDuration::from_millis(500);
/// Longest single wait of Dial (0.9.0 value).
pub(crate) const DIAL_WAIT_MAX_STEP: StdDuration = StdDuration::from_secs(3);
/// Total time Dial waits for an `Available` exporter to become ready (0.9.0 value).
pub(crate) const DIAL_WAIT_TOTAL: StdDuration = StdDuration::from_secs(30);

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The ControllerService over a [`Store`].
#[derive(Debug)]
pub struct ControllerApi<S> {
    services: Services<S>,
}

impl<S: Store> ControllerApi<S> {
    pub(crate) fn new(services: Services<S>) -> Self {
        ControllerApi { services }
    }

    fn store(&self) -> &S {
        &self.services.shared.store
    }

    fn cache(&self) -> &ReadCache<S> {
        &self.services.shared.cache
    }

    /// The calling exporter, authenticated.
    async fn exporter_caller<T>(&self, request: &Request<T>) -> Result<(Caller, Exporter), Status> {
        self.services.shared.auth.exporter(request.metadata()).await
    }

    /// The calling client, authenticated.
    async fn client_caller<T>(&self, request: &Request<T>) -> Result<(Caller, Client), Status> {
        self.services.shared.auth.client(request.metadata()).await
    }

    /// Lets `change` edit the calling exporter's object and writes `part` back.
    async fn modify_exporter(
        &self,
        caller: &Caller,
        part: Part,
        change: impl FnMut(&mut Exporter) -> bool,
    ) -> Result<Exporter, Status> {
        write::modify_cached::<S, Exporter, _>(
            self.cache(),
            &caller.namespace,
            &caller.name,
            part,
            change,
        )
        .await
        .map_err(store_status)
    }

    async fn register_inner(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<pb::RegisterResponse, Status> {
        let (caller, exporter) = self.exporter_caller(&request).await?;
        let request = request.into_inner();
        self.apply_reported_labels(&caller, &request.labels).await?;
        let devices: Vec<Device> = request
            .reports
            .iter()
            .map(|r| Device {
                uuid: Some(r.uuid.clone()),
                parent_uuid: r.parent_uuid.clone(),
                labels: (!r.labels.is_empty()).then(|| {
                    r.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                }),
            })
            .collect();
        self.modify_exporter(&caller, Part::Status, |e| {
            let status = e.status.get_or_insert_with(Default::default);
            let new = (!devices.is_empty()).then(|| devices.clone());
            let changed = status.devices != new;
            status.devices = new;
            changed
        })
        .await?;
        tracing::info!(exporter = %caller.name, namespace = %caller.namespace, devices = devices.len(), "exporter registered");
        Ok(pb::RegisterResponse {
            uuid: exporter.metadata.uid.unwrap_or_default(),
        })
    }

    /// Applies the labels an exporter reported about itself, as far as
    /// [`reported_labels`] allows; refused ones are logged and counted, not fatal.
    async fn apply_reported_labels(
        &self,
        caller: &Caller,
        reported: &std::collections::HashMap<String, String>,
    ) -> Result<(), Status> {
        let reported: BTreeMap<String, String> = reported
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let settings = &self.services.shared.settings;
        let mut policy = LabelPolicy {
            allowed_prefixes: &settings.exporter_label_prefixes,
            selected_keys: settings
                .routers
                .iter()
                .flat_map(|r| r.labels.keys().cloned())
                .collect(),
        };
        // Policies matter only when some reported key could be applied at all.
        if !reported.is_empty() && !policy.allowed_prefixes.is_empty() {
            let policies: Vec<ExporterAccessPolicy> =
                store::list_all(self.store(), &caller.namespace, None)
                    .await
                    .map_err(store_status)?;
            policy
                .selected_keys
                .extend(policies.iter().flat_map(selector_keys));
        }
        let mut refused = Vec::new();
        self.modify_exporter(caller, Part::Object, |e| {
            let labels = e.metadata.labels.clone().unwrap_or_default();
            let annotations = e.metadata.annotations.get_or_insert_with(BTreeMap::new);
            let merged = reported_labels::merge(
                &labels,
                annotations
                    .get(vocabulary::REPORTED_LABELS_ANNOTATION)
                    .map(String::as_str),
                &reported,
                &policy,
            );
            refused = merged.refused;
            let before = annotations
                .get(vocabulary::REPORTED_LABELS_ANNOTATION)
                .cloned();
            match &merged.annotation {
                Some(record) => {
                    annotations.insert(
                        vocabulary::REPORTED_LABELS_ANNOTATION.to_owned(),
                        record.clone(),
                    );
                }
                None => {
                    annotations.remove(vocabulary::REPORTED_LABELS_ANNOTATION);
                }
            }
            if annotations.is_empty() {
                e.metadata.annotations = None;
            }
            let changed = merged.labels != labels || merged.annotation != before;
            e.metadata.labels = (!merged.labels.is_empty()).then_some(merged.labels);
            changed
        })
        .await?;
        let metrics = &self.services.shared.metrics;
        for (key, refusal) in refused {
            metrics
                .register_labels_refused
                .get_or_create(&RefusedLabelLabels {
                    reason: refusal.reason(),
                })
                .inc();
            tracing::warn!(
                exporter = %caller.name,
                namespace = %caller.namespace,
                key = %jumpstarter_lease::name::quoted(&key),
                reason = refusal.reason(),
                "label reported at Register not applied: {}",
                refusal.describe()
            );
        }
        Ok(())
    }

    async fn unregister_inner(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Result<pb::UnregisterResponse, Status> {
        let (caller, _) = self.exporter_caller(&request).await?;
        let reason = request.into_inner().reason;
        self.modify_exporter(&caller, Part::Status, |e| {
            let status = e.status.get_or_insert_with(Default::default);
            let changed = status.devices.is_some();
            status.devices = None;
            changed
        })
        .await?;
        tracing::info!(exporter = %caller.name, namespace = %caller.namespace, reason = %jumpstarter_lease::name::quoted(&reason), "exporter unregistered");
        Ok(pb::UnregisterResponse {})
    }

    async fn report_status_inner(
        &self,
        request: Request<pb::ReportStatusRequest>,
    ) -> Result<pb::ReportStatusResponse, Status> {
        let (caller, _) = self.exporter_caller(&request).await?;
        let request = request.into_inner();
        let value = wire::status_from_proto(request.status)?;
        let message = request.message.clone().unwrap_or_default();
        let online = !matches!(
            value,
            ExporterStatusValue::Offline | ExporterStatusValue::Unspecified
        );
        let mut wrote = false;
        let updated = self
            .modify_exporter(&caller, Part::Status, |e| {
                let now = OffsetDateTime::now_utc();
                let generation = e.metadata.generation;
                let status = e.status.get_or_insert_with(Default::default);
                // Only a new report is written; the same report again refreshes lastSeen
                // at most once per `heartbeat::REFRESH_MIN_AGE`.
                let same = status.exporter_status == Some(value)
                    && status.status_message.as_deref() == Some(message.as_str());
                if same {
                    wrote = heartbeat::is_due(status.last_seen.as_ref(), now);
                    if wrote {
                        status.last_seen = Some(vocabulary::stored_time(now));
                    }
                    return wrote;
                }
                status.exporter_status = Some(value);
                status.status_message = Some(message.clone());
                status.last_seen = Some(vocabulary::stored_time(now));
                let conditions = status.conditions.get_or_insert_with(Vec::new);
                let reason = if online {
                    exporter_condition::reason::STATUS_REPORTED
                } else {
                    exporter_condition::reason::OFFLINE
                };
                vocabulary::set_condition(
                    conditions,
                    exporter_condition::ONLINE,
                    online,
                    reason,
                    &message,
                    generation,
                    now,
                );
                wrote = true;
                true
            })
            .await?;
        self.services
            .shared
            .metrics
            .status_write("report_status", wrote);
        if request.release_lease == Some(true) {
            let lease_name = updated
                .status
                .as_ref()
                .and_then(|s| s.lease_ref.as_ref())
                .map(|r| r.name.clone());
            match lease_name {
                Some(lease) => {
                    let exporter = command::Caller::Exporter(caller.name.clone());
                    if let Err(err) = self
                        .release(&caller.namespace, &lease, &exporter, true)
                        .await
                    {
                        tracing::warn!(exporter = %caller.name, %lease, "release on status report failed: {}", err.message());
                    }
                }
                None => {
                    tracing::debug!(exporter = %caller.name, "release requested without a lease")
                }
            }
        }
        Ok(pb::ReportStatusResponse {})
    }

    /// Releases `lease` for `caller` by the one release rule ([`command::release`]). A lease
    /// released already counts as released (these calls are idempotent); with `lenient`, a
    /// lease that the calling exporter does not hold is ignored instead of refused.
    async fn release(
        &self,
        namespace: &str,
        lease: &str,
        caller: &command::Caller,
        lenient: bool,
    ) -> Result<(), Status> {
        let mut refusal: Option<Status> = None;
        write::modify_cached::<S, Lease, _>(self.cache(), namespace, lease, Part::Object, |l| {
            refusal = None;
            let state = lease_request::state_of(l);
            match command::release(&state, caller, OffsetDateTime::now_utc()) {
                Ok(change) => lease_request::apply(&change, l).unwrap_or_else(|status| {
                    refusal = Some(status);
                    false
                }),
                Err(LeaseError::AlreadyReleased { .. }) => false,
                Err(LeaseError::NotHolder { .. }) if lenient => false,
                Err(err) => {
                    refusal = Some(lease_error::status(err));
                    false
                }
            }
        })
        .await
        .map_err(store_status)?;
        refusal.map_or(Ok(()), Err)
    }

    async fn listen_inner(
        &self,
        request: Request<pb::ListenRequest>,
    ) -> Result<ResponseStream<pb::ListenResponse>, Status> {
        let (caller, _) = self.exporter_caller(&request).await?;
        let lease_name = request.into_inner().lease_name;
        if lease_name.is_empty() {
            return Err(Status::invalid_argument("lease_name is required"));
        }
        let holder = |lease: &Lease| {
            lease
                .status
                .as_ref()
                .and_then(|s| s.exporter_ref.as_ref())
                .is_some_and(|r| r.name == caller.name)
        };
        let lease = self.lease(&caller.namespace, &lease_name).await?;
        // A refusal is confirmed by the store (the copy may trail an assignment).
        if !holder(&lease) && !holder(&self.fresh_lease(&caller.namespace, &lease_name).await?) {
            return Err(Status::unknown("permission denied"));
        }
        let key = format!("{}/{}", caller.namespace, lease_name);
        let mut subscription = self.services.shared.listeners.subscribe(&key);
        let (tx, rx) = mpsc::channel(1);
        let shared = self.services.shared.clone();
        let guard = GaugeGuard::new(&shared.metrics.listen_streams);
        let span = tracing::info_span!("listen", lease = %key, exporter = %caller.name);
        tokio::spawn(
            async move {
                let _guard = guard;
                tracing::debug!("listen stream opened");
                loop {
                    tokio::select! {
                        next = subscription.receiver.recv() => match next {
                            Some(response) => {
                                if tx.send(Ok(response)).await.is_err() {
                                    break;
                                }
                            }
                            // Superseded by a newer Listen for the same lease.
                            None => break,
                        },
                        () = tx.closed() => break,
                        () = shared.shutdown.cancelled() => break,
                    }
                }
                shared
                    .listeners
                    .unsubscribe(&subscription.key, subscription.id);
                tracing::debug!("listen stream closed");
            }
            .instrument(span),
        );
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn status_inner(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<ResponseStream<pb::StatusResponse>, Status> {
        let (caller, _) = self.exporter_caller(&request).await?;
        let me: std::sync::Arc<str> = self.services.replicas().me().text().into();
        let stream = status_stream::open(self.services.shared.clone(), me, caller).await?;
        Ok(Box::pin(stream))
    }

    async fn dial_inner(
        &self,
        request: Request<pb::DialRequest>,
    ) -> Result<pb::DialResponse, Status> {
        let (caller, _) = self.client_caller(&request).await?;
        let shared = &self.services.shared;
        let key = format!("Client/{}/{}", caller.namespace, caller.name);
        if let Err(retry_after) = shared.dial_limiter.check(&key, std::time::Instant::now()) {
            shared.metrics.refused("dial_rate");
            return Err(rate_limited("Dial", retry_after));
        }
        let lease_name = request.into_inner().lease_name;
        if lease_name.is_empty() {
            return Err(Status::invalid_argument("lease_name is required"));
        }
        let mut lease = self.lease(&caller.namespace, &lease_name).await?;
        if !is_dialable(&lease, &caller.name) {
            // A refusal is confirmed by the store (the copy may trail an assignment).
            lease = self.fresh_lease(&caller.namespace, &lease_name).await?;
        }
        if lease.spec.client_ref.name != caller.name {
            return Err(Status::unknown("permission denied"));
        }
        let status = lease.status.clone().unwrap_or_default();
        let exporter_name = match status.exporter_ref {
            Some(r) if !r.name.is_empty() && !status.ended => r.name,
            _ => return Err(Status::unknown("lease not active")),
        };
        // A Dial starts a session: activity, whether or not the exporter is ready yet.
        self.services
            .record_activity(&lease, OffsetDateTime::now_utc());
        let exporter = self
            .wait_until_ready(&caller.namespace, &exporter_name)
            .await?;
        let key = format!("{}/{}", caller.namespace, lease_name);
        let labels = exporter.metadata.labels.clone().unwrap_or_default();
        let settings = &self.services.shared.settings;
        let Some(router_entry) = router_choice::choose(&settings.routers, &labels, &key) else {
            return Err(Status::unavailable("no router available"));
        };
        let grant = StreamGrant {
            stream_id: uuid::Uuid::now_v7().to_string(),
            token_id: uuid::Uuid::new_v4().to_string(),
            lease: key.clone(),
        };
        // One token per side (the router pairs only opposite roles), each naming the
        // lease's end (the router ends the stream then).
        let lease_end = super::lease_certificate::LeaseFacts::of(&lease).expiry;
        let tokens = router::mint_pair(
            &self.services.shared.signers.current().router_key,
            &grant,
            lease_end,
            settings.router_token_lifetime,
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| Status::internal(format!("cannot mint router token: {e}")))?;
        let response = pb::ListenResponse {
            router_endpoint: router_entry.endpoint.clone(),
            router_token: tokens.exporter,
        };
        let metrics = &self.services.shared.metrics;
        let offered = self.services.shared.listeners.offer(&key, response.clone());
        let outcome = match offered {
            Ok(()) => "queued",
            Err(OfferError::NotListening) => "not_listening",
            Err(OfferError::Full) => "full",
        };
        metrics
            .listen_offers
            .get_or_create(&OfferLabels { outcome })
            .inc();
        // Nobody listens here: the exporter's Listen stream may be on a peer replica.
        let offered = match (offered, &self.services.forwarder) {
            (Err(OfferError::NotListening), Some(forwarder)) => {
                match forwarder.offer(&key, &response).await {
                    Forwarded::Queued => Ok(()),
                    Forwarded::Full => Err(OfferError::Full),
                    Forwarded::NotListening => Err(OfferError::NotListening),
                }
            }
            (offered, _) => offered,
        };
        match offered {
            Ok(()) => {}
            Err(OfferError::NotListening) => {
                return Err(Status::unavailable(format!(
                    "exporter is not listening on lease {lease_name}"
                )));
            }
            Err(OfferError::Full) => {
                return Err(Status::resource_exhausted(format!(
                    "exporter listen queue is full on lease {lease_name}"
                )));
            }
        }
        tracing::debug!(lease = %key, router = %router_entry.name, stream = %grant.stream_id, "dial");
        Ok(pb::DialResponse {
            router_endpoint: router_entry.endpoint.clone(),
            router_token: tokens.client,
        })
    }

    /// Reads the exporter until its status allows a Dial; waits only while it is
    /// `Available` (the exporter is still starting its session), woken by its changes (as
    /// the read cache's watch reports them) or, at the latest, after 0.9.0's growing steps.
    async fn wait_until_ready(&self, namespace: &str, name: &str) -> Result<Exporter, Status> {
        let started = tokio::time::Instant::now();
        let mut step = DIAL_WAIT_INITIAL;
        // Subscribed before each read, so that no change after the read is missed.
        let mut changes = self.cache().exporter_events(namespace, name);
        // Whether to read the store: a refusal is confirmed there (the copy may trail).
        let mut fresh = false;
        loop {
            let read = if fresh {
                self.cache().get_fresh(namespace, name).await
            } else {
                self.cache().get(namespace, name).await
            };
            let exporter: Exporter = read.map_err(store_status)?.ok_or_else(|| {
                Status::not_found(format!("exporter {namespace}/{name} not found"))
            })?;
            let value = exporter.status.as_ref().and_then(|s| s.exporter_status);
            match dial_readiness(value) {
                Ok(()) => return Ok(exporter),
                Err(status) if value == Some(ExporterStatusValue::Available) => {
                    let elapsed = started.elapsed();
                    if elapsed >= DIAL_WAIT_TOTAL {
                        self.services.shared.metrics.dial_wait_timeouts.inc();
                        return Err(status);
                    }
                    let deadline =
                        tokio::time::Instant::now() + step.min(DIAL_WAIT_TOTAL - elapsed);
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {
                            step = (step * 2).min(DIAL_WAIT_MAX_STEP);
                        }
                        () = changed(&mut changes, name) => {}
                        () = self.services.shared.shutdown.cancelled() => return Err(status),
                    }
                    fresh = false;
                }
                Err(_) if !fresh => fresh = true,
                Err(status) => return Err(status),
            }
        }
    }

    async fn lease(&self, namespace: &str, name: &str) -> Result<Lease, Status> {
        if !jumpstarter_lease::name::is_object_name(name) {
            return Err(Status::invalid_argument(format!(
                "invalid lease name {}",
                jumpstarter_lease::name::quoted(name)
            )));
        }
        self.cache()
            .get::<Lease>(namespace, name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("lease {namespace}/{name} not found")))
    }

    /// The lease as the store has it (refusals are confirmed there).
    async fn fresh_lease(&self, namespace: &str, name: &str) -> Result<Lease, Status> {
        self.cache()
            .get_fresh::<Lease>(namespace, name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("lease {namespace}/{name} not found")))
    }

    async fn get_lease_inner(
        &self,
        request: Request<pb::GetLeaseRequest>,
    ) -> Result<pb::GetLeaseResponse, Status> {
        let (caller, _) = self.client_caller(&request).await?;
        let name = request.into_inner().name;
        let lease = self.lease(&caller.namespace, &name).await?;
        command::check_owner(
            &lease_request::state_of(&lease),
            &command::Caller::Client(caller.name.clone()),
        )
        .map_err(lease_error::status)?;
        let status = lease.status.clone().unwrap_or_default();
        let exporter_uuid = match status.exporter_ref.as_ref().filter(|r| !r.name.is_empty()) {
            Some(r) => self
                .cache()
                .get::<Exporter>(&caller.namespace, &r.name)
                .await
                .map_err(store_status)?
                .and_then(|e| e.metadata.uid),
            None => None,
        };
        Ok(pb::GetLeaseResponse {
            duration: lease
                .spec
                .duration
                .as_deref()
                .and_then(|d| jumpstarter_lease::scheduler::duration::parse(d).ok())
                .map(wire::proto_duration),
            selector: Some(wire::selector_to_proto(&lease.spec.selector)),
            begin_time: status.begin_time.as_ref().map(wire::timestamp_of),
            end_time: status.end_time.as_ref().map(wire::timestamp_of),
            exporter_uuid,
            conditions: status
                .conditions
                .iter()
                .flatten()
                .map(wire::condition_to_proto)
                .collect(),
        })
    }

    async fn request_lease_inner(
        &self,
        request: Request<pb::RequestLeaseRequest>,
    ) -> Result<pb::RequestLeaseResponse, Status> {
        let (caller, _) = self.client_caller(&request).await?;
        let request = request.into_inner();
        let selector = match &request.selector {
            Some(s) => wire::selector_from_proto(s)?,
            None => Default::default(),
        };
        let duration = lease_request::duration_from_proto(request.duration.as_ref());
        if duration.is_err() {
            // 0.9.0 refuses a missing selector before a bad duration.
            jumpstarter_lease::request::check_legacy_selector(&selector)
                .map_err(lease_error::status)?;
        }
        let checked = jumpstarter_lease::request::check_legacy(selector, duration?)
            .map_err(lease_error::status)?;
        self.services
            .shared
            .check_pending_leases(&caller.namespace, &caller.name)
            .await?;
        let name = uuid::Uuid::now_v7().to_string();
        let lease = lease_request::build(&checked, &caller.namespace, &name, &caller.name)?;
        let created = self.store().create(&lease).await.map_err(store_status)?;
        self.cache().put(&created);
        Ok(pb::RequestLeaseResponse { name })
    }

    async fn release_lease_inner(
        &self,
        request: Request<pb::ReleaseLeaseRequest>,
    ) -> Result<pb::ReleaseLeaseResponse, Status> {
        let as_exporter =
            request.metadata().get(KIND).and_then(|v| v.to_str().ok()) == Some("Exporter");
        let (caller, command_caller) = if as_exporter {
            let (caller, _) = self.exporter_caller(&request).await?;
            let exporter = command::Caller::Exporter(caller.name.clone());
            (caller, exporter)
        } else {
            let (caller, _) = self.client_caller(&request).await?;
            let client = command::Caller::Client(caller.name.clone());
            (caller, client)
        };
        let name = request.into_inner().name;
        self.lease(&caller.namespace, &name).await?;
        self.release(&caller.namespace, &name, &command_caller, false)
            .await?;
        Ok(pb::ReleaseLeaseResponse {})
    }

    /// 0.9.0 does not implement AuditStream either.
    async fn audit_stream_inner(
        &self,
        _request: Request<Streaming<pb::AuditStreamRequest>>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("AuditStream is not implemented"))
    }

    async fn list_leases_inner(
        &self,
        request: Request<pb::ListLeasesRequest>,
    ) -> Result<pb::ListLeasesResponse, Status> {
        let (caller, _) = self.client_caller(&request).await?;
        let leases = self
            .cache()
            .list::<Lease>(&caller.namespace)
            .await
            .map_err(store_status)?;
        let names = leases
            .iter()
            .filter(|l| !is_ended(l) && l.spec.client_ref.name == caller.name)
            .filter_map(|l| l.metadata.name.clone())
            .collect();
        Ok(pb::ListLeasesResponse { names })
    }
}

/// Returns when exporter `name` may have changed: an event names it, the watch listed
/// everything again, or changes were missed. Never returns once the feed is gone (the
/// caller's deadline ends the wait then).
async fn changed(changes: &mut broadcast::Receiver<ExporterEvent>, name: &str) {
    loop {
        match changes.recv().await {
            Ok(event) => match &*event {
                WatchEvent::Applied(e) | WatchEvent::Deleted(e)
                    if e.metadata.name.as_deref() == Some(name) =>
                {
                    return;
                }
                WatchEvent::Listed => return,
                _ => {}
            },
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Whether `client` may Dial through `lease`: its own, assigned and not ended.
fn is_dialable(lease: &Lease, client: &str) -> bool {
    let status = lease.status.as_ref();
    lease.spec.client_ref.name == client
        && status.is_some_and(|s| {
            !s.ended && s.exporter_ref.as_ref().is_some_and(|r| !r.name.is_empty())
        })
}

/// Whether the lease has ended (its ended label, as the store's selectors see it).
fn is_ended(lease: &Lease) -> bool {
    lease
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(vocabulary::LEASE_ENDED_LABEL))
}

/// The label keys an access policy's exporter selector reads.
fn selector_keys(policy: &ExporterAccessPolicy) -> Vec<String> {
    let Some(selector) = &policy.spec.exporter_selector else {
        return Vec::new();
    };
    let labels = selector.match_labels.iter().flat_map(|m| m.keys().cloned());
    let expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .map(|e| e.key.clone());
    labels.chain(expressions).collect()
}

/// Whether a Dial may proceed for an exporter in `status` (0.9.0 texts).
pub(crate) fn dial_readiness(status: Option<ExporterStatusValue>) -> Result<(), Status> {
    match status {
        None
        | Some(ExporterStatusValue::Unspecified)
        | Some(ExporterStatusValue::LeaseReady)
        | Some(ExporterStatusValue::BeforeLeaseHook)
        | Some(ExporterStatusValue::AfterLeaseHook) => Ok(()),
        Some(ExporterStatusValue::Offline) => {
            Err(Status::failed_precondition("exporter is offline"))
        }
        Some(ExporterStatusValue::Available) => Err(Status::failed_precondition(
            "exporter is not ready (status: Available)",
        )),
        Some(ExporterStatusValue::BeforeLeaseHookFailed) => Err(Status::failed_precondition(
            "exporter beforeLease hook failed",
        )),
        Some(ExporterStatusValue::AfterLeaseHookFailed) => Err(Status::failed_precondition(
            "exporter afterLease hook failed",
        )),
    }
}

observed_service! {
    ControllerService for ControllerApi, "ControllerService";
    type ListenStream = ResponseStream<pb::ListenResponse>;
    type StatusStream = ResponseStream<pb::StatusResponse>;
    "Register": register, register_inner(pb::RegisterRequest) -> pb::RegisterResponse;
    "Unregister": unregister, unregister_inner(pb::UnregisterRequest) -> pb::UnregisterResponse;
    "ReportStatus": report_status,
        report_status_inner(pb::ReportStatusRequest) -> pb::ReportStatusResponse;
    "Listen": listen, listen_inner(pb::ListenRequest) -> Self::ListenStream;
    "Status": status, status_inner(pb::StatusRequest) -> Self::StatusStream;
    "Dial": dial, dial_inner(pb::DialRequest) -> pb::DialResponse;
    "AuditStream": audit_stream,
        audit_stream_inner(Streaming<pb::AuditStreamRequest>) -> ();
    "GetLease": get_lease, get_lease_inner(pb::GetLeaseRequest) -> pb::GetLeaseResponse;
    "RequestLease": request_lease,
        request_lease_inner(pb::RequestLeaseRequest) -> pb::RequestLeaseResponse;
    "ReleaseLease": release_lease,
        release_lease_inner(pb::ReleaseLeaseRequest) -> pb::ReleaseLeaseResponse;
    "ListLeases": list_leases, list_leases_inner(pb::ListLeasesRequest) -> pb::ListLeasesResponse;
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn dial_readiness_follows_0_9_0() {
        for ok in [
            None,
            Some(ExporterStatusValue::Unspecified),
            Some(ExporterStatusValue::LeaseReady),
            Some(ExporterStatusValue::BeforeLeaseHook),
            Some(ExporterStatusValue::AfterLeaseHook),
        ] {
            assert!(dial_readiness(ok).is_ok(), "{ok:?}");
        }
        let offline = dial_readiness(Some(ExporterStatusValue::Offline)).unwrap_err();
        assert_eq!(offline.code(), Code::FailedPrecondition);
        assert_eq!(offline.message(), "exporter is offline");
        let available = dial_readiness(Some(ExporterStatusValue::Available)).unwrap_err();
        assert!(available.message().contains("not ready"));
        let failed = dial_readiness(Some(ExporterStatusValue::BeforeLeaseHookFailed)).unwrap_err();
        assert_eq!(failed.message(), "exporter beforeLease hook failed");
    }
}
