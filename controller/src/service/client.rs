//! `jumpstarter.client.v1.ClientService`: exporters and leases as resources of the
//! caller's namespace, and self-service token rotation.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use time::OffsetDateTime;
use tonic::{Request, Status};

use jumpstarter_lease::{Change, LeaseError, LeaseState, command, selector};
use jumpstarter_proto::jumpstarter::client::v1 as client_pb;
use jumpstarter_proto::jumpstarter::client::v1::client_service_server::ClientService;

use super::cache::{Cached, ReadCache};
use super::metrics::observed_service;
use super::write::{self, Part};
use super::{
    Services, lease_error, lease_request, names, paging, rate_limited, store_status, wire,
};
use crate::auth::{Caller, ObjectIdentity, revocation};
use crate::crd::vocabulary;
use crate::crd::{Client, Exporter, Lease};
use crate::store::{Store, StoreError};

/// The ClientService over a [`Store`].
#[derive(Debug)]
pub struct ClientApi<S> {
    services: Services<S>,
}

impl<S: Store> ClientApi<S> {
    pub(crate) fn new(services: Services<S>) -> Self {
        ClientApi { services }
    }

    fn store(&self) -> &S {
        &self.services.shared.store
    }

    fn cache(&self) -> &ReadCache<S> {
        &self.services.shared.cache
    }

    /// Deprecated label keys and their messages, reported with exporters and leases.
    fn deprecated_labels(&self) -> &std::collections::BTreeMap<String, String> {
        &self.services.shared.settings.deprecated_labels
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<(Caller, Client), Status> {
        self.services.shared.auth.client(request.metadata()).await
    }

    /// Namespace and name from a resource name, checked against the caller's namespace.
    fn resolve(
        &self,
        caller: &Caller,
        name: &str,
        collection: &str,
    ) -> Result<(String, String), Status> {
        let (namespace, name) = names::parse(name, collection)?;
        self.services
            .shared
            .auth
            .count(caller.check_namespace(&namespace))?;
        Ok((namespace, name))
    }

    fn resolve_parent(&self, caller: &Caller, parent: &str) -> Result<String, Status> {
        let namespace = names::parse_parent(parent)?;
        self.services
            .shared
            .auth
            .count(caller.check_namespace(&namespace))?;
        Ok(namespace)
    }

    async fn get_exporter_inner(
        &self,
        request: Request<client_pb::GetExporterRequest>,
    ) -> Result<client_pb::Exporter, Status> {
        let (caller, _) = self.caller(&request).await?;
        let request = request.into_inner();
        let (namespace, name) = self.resolve(&caller, &request.name, names::EXPORTERS)?;
        let exporter: Exporter = self
            .cache()
            .get(&namespace, &name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("exporter {namespace}/{name} not found")))?;
        let settings = &self.services.shared.settings;
        Ok(wire::exporter_to_proto(
            &exporter,
            &settings.hidden_labels,
            &settings.deprecated_labels,
            request.show_hidden_labels,
        ))
    }

    async fn list_exporters_inner(
        &self,
        request: Request<client_pb::ListExportersRequest>,
    ) -> Result<client_pb::ListExportersResponse, Status> {
        let (caller, _) = self.caller(&request).await?;
        let request = request.into_inner();
        let page = self
            .list_page::<Exporter>(&caller, page_query!(request), |_| Ok(()))
            .await?;
        let settings = &self.services.shared.settings;
        let (hidden, deprecated) = (&settings.hidden_labels, &settings.deprecated_labels);
        Ok(client_pb::ListExportersResponse {
            exporters: page
                .items
                .iter()
                .map(|e| wire::exporter_to_proto(e, hidden, deprecated, request.show_hidden_labels))
                .collect(),
            next_page_token: page.next_page_token,
        })
    }

    async fn get_lease_inner(
        &self,
        request: Request<client_pb::GetLeaseRequest>,
    ) -> Result<client_pb::Lease, Status> {
        let (caller, _) = self.caller(&request).await?;
        let (namespace, name) = self.resolve(&caller, &request.get_ref().name, names::LEASES)?;
        let lease = self.lease(&namespace, &name).await?;
        let now = OffsetDateTime::now_utc();
        // The holder reading its lease is a sign of life: an open 0.9.0 `jmp shell` does
        // so at least every 30 s.
        if lease.spec.client_ref.name == caller.name {
            self.services.record_activity(&lease, now);
        }
        Ok(wire::lease_to_proto(&lease, self.deprecated_labels(), now))
    }

    async fn list_leases_inner(
        &self,
        request: Request<client_pb::ListLeasesRequest>,
    ) -> Result<client_pb::ListLeasesResponse, Status> {
        let (caller, _) = self.caller(&request).await?;
        let request = request.into_inner();
        let page = self
            .list_page::<Lease>(&caller, page_query!(request), |pieces| {
                if let Some(tags) = parse_filter(&request.tag_filter, "tag_filter")? {
                    pieces.push(prefix_tag_keys(tags));
                }
                if request.only_active.unwrap_or(true) {
                    pieces.push(not_ended());
                }
                Ok(())
            })
            .await?;
        let now = OffsetDateTime::now_utc();
        Ok(client_pb::ListLeasesResponse {
            leases: page
                .items
                .iter()
                .map(|l| wire::lease_to_proto(l, self.deprecated_labels(), now))
                .collect(),
            next_page_token: page.next_page_token,
        })
    }

    async fn create_lease_inner(
        &self,
        request: Request<client_pb::CreateLeaseRequest>,
    ) -> Result<client_pb::Lease, Status> {
        let (caller, _) = self.caller(&request).await?;
        let request = request.into_inner();
        let namespace = self.resolve_parent(&caller, &request.parent)?;
        let lease = request
            .lease
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("lease is required"))?;
        let max_tags = self.services.shared.settings.max_tags;
        let new = command::create(
            &lease_request::from_proto(lease, max_tags)?,
            &request.lease_id,
            &caller.name,
            max_tags,
            OffsetDateTime::now_utc(),
        )
        .map_err(lease_error::status)?;
        self.services
            .shared
            .check_pending_leases(&namespace, &caller.name)
            .await?;
        let name = lease_request::name_or_new(new.name);
        let object = lease_request::build(&new.lease, &namespace, &name, &new.client)?;
        self.check_booking(&namespace, &object).await?;
        let created = self.store().create(&object).await.map_err(store_status)?;
        self.cache().put(&created);
        tracing::info!(lease = %format!("{namespace}/{name}"), client = %caller.name, "lease created");
        Ok(wire::lease_to_proto(
            &created,
            self.deprecated_labels(),
            OffsetDateTime::now_utc(),
        ))
    }

    /// The booking rule ([`lease_request::check_booking`]) against the namespace's leases
    /// and exporters as the read cache has them.
    async fn check_booking(&self, namespace: &str, object: &Lease) -> Result<(), Status> {
        if object.spec.begin_time.is_none() {
            return Ok(());
        }
        let leases = self
            .cache()
            .list::<Lease>(namespace)
            .await
            .map_err(store_status)?;
        let exporters = self
            .cache()
            .list::<Exporter>(namespace)
            .await
            .map_err(store_status)?;
        lease_request::check_booking(object, &leases, &exporters, OffsetDateTime::now_utc())
            .map_err(|conflict| Status::failed_precondition(conflict.message))
    }

    async fn update_lease_inner(
        &self,
        request: Request<client_pb::UpdateLeaseRequest>,
    ) -> Result<client_pb::Lease, Status> {
        let (caller, _) = self.caller(&request).await?;
        let request = request.into_inner();
        let update = request
            .lease
            .ok_or_else(|| Status::invalid_argument("lease is required"))?;
        let (namespace, name) = self.resolve(&caller, &update.name, names::LEASES)?;
        let begin = update
            .begin_time
            .as_ref()
            .map(|t| wire::time_from_proto(t, "begin_time"))
            .transpose()?;
        let end = update
            .end_time
            .as_ref()
            .map(|t| wire::time_from_proto(t, "end_time"))
            .transpose()?;
        let duration = lease_request::duration_from_proto(update.duration.as_ref())?;
        let new_client = match update.client.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(client) => {
                let (client_ns, client_name) = names::parse(client, names::CLIENTS)?;
                let client_name = command::transfer_target(&namespace, &client_ns, &client_name)
                    .map_err(lease_error::status)?;
                let exists = self
                    .cache()
                    .get::<Client>(&namespace, &client_name)
                    .await
                    .map_err(store_status)?
                    .is_some();
                if !exists {
                    return Err(Status::not_found(format!(
                        "client {namespace}/{client_name} not found"
                    )));
                }
                Some(client_name)
            }
        };
        let asked = command::LeaseUpdate {
            begin_time: begin,
            end_time: end,
            duration,
            client: new_client,
        };
        let caller = command::Caller::Client(caller.name.clone());
        let updated = self
            .modify_lease(&namespace, &name, |state| {
                command::update(state, &caller, &asked, OffsetDateTime::now_utc())
            })
            .await?;
        Ok(wire::lease_to_proto(
            &updated,
            self.deprecated_labels(),
            OffsetDateTime::now_utc(),
        ))
    }

    async fn delete_lease_inner(
        &self,
        request: Request<client_pb::DeleteLeaseRequest>,
    ) -> Result<(), Status> {
        let (caller, _) = self.caller(&request).await?;
        let (namespace, name) = self.resolve(&caller, &request.get_ref().name, names::LEASES)?;
        let caller = command::Caller::Client(caller.name.clone());
        self.modify_lease(&namespace, &name, |state| {
            command::delete(state, &caller, OffsetDateTime::now_utc())
        })
        .await?;
        tracing::info!(lease = %format!("{namespace}/{name}"), "lease released by its client");
        Ok(())
    }

    /// Rotation revokes: the Client's credential generation is raised first (from then on
    /// every replica refuses the caller's current token), then a token of the new
    /// generation is issued and stored in the credential Secret.
    async fn rotate_token_inner(
        &self,
        request: Request<client_pb::RotateTokenRequest>,
    ) -> Result<client_pb::RotateTokenResponse, Status> {
        let (caller, client) = self.caller(&request).await?;
        self.resolve_parent(&caller, &request.get_ref().parent)?;
        let shared = &self.services.shared;
        let key = format!("Client/{}/{}", caller.namespace, caller.name);
        if let Err(retry_after) = shared.rotate_limiter.check(&key, std::time::Instant::now()) {
            shared.metrics.refused("rotate_token_rate");
            return Err(rate_limited("RotateToken", retry_after));
        }
        let uid = client.metadata.uid.clone();
        let mut generation = 0;
        let client: Client = write::modify(
            self.store(),
            &caller.namespace,
            &caller.name,
            Part::Object,
            |c: &mut Client| {
                // The same object the caller authenticated as, not a re-created namesake.
                if c.metadata.uid != uid {
                    return false;
                }
                generation = revocation::raise(&mut c.metadata);
                true
            },
        )
        .await
        .map_err(store_status)?;
        // Read at once by this replica's authentication (others see it by their watch).
        self.cache().put(&client);
        if client.metadata.uid != uid || generation == 0 {
            return Err(Status::not_found(format!(
                "client {}/{} was re-created meanwhile",
                caller.namespace, caller.name
            )));
        }
        let subject = ObjectIdentity::of_client(&client).internal_subject();
        let (token, expiry) = self
            .services
            .shared
            .signers
            .current()
            .issuer
            .issue_generation(&subject, generation, OffsetDateTime::now_utc())
            .map_err(|e| Status::internal(format!("cannot issue token: {e}")))?;
        self.store_client_token(&client, &token).await?;
        tracing::info!(client = %format!("{}/{}", caller.namespace, caller.name), generation, "client token rotated; earlier tokens revoked");
        Ok(client_pb::RotateTokenResponse {
            token,
            expiry: Some(prost_types::Timestamp {
                seconds: expiry.unix_timestamp(),
                nanos: 0,
            }),
        })
    }

    /// Writes `token` into the client's credential Secret `<name>-client`.
    async fn store_client_token(&self, client: &Client, token: &str) -> Result<(), Status> {
        let namespace = client.metadata.namespace.clone().unwrap_or_default();
        let client_name = client.metadata.name.clone().unwrap_or_default();
        let secret_name = format!("{client_name}-client");
        let value = ByteString(token.as_bytes().to_vec());
        let result = write::modify::<S, Secret, _>(
            self.store(),
            &namespace,
            &secret_name,
            Part::Object,
            |s| {
                s.data
                    .get_or_insert_with(BTreeMap::new)
                    .insert("token".to_owned(), value.clone());
                true
            },
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(secret_name),
                        namespace: Some(namespace),
                        owner_references: client.metadata.uid.clone().map(|uid| {
                            vec![OwnerReference {
                                api_version: vocabulary::API_VERSION.to_owned(),
                                kind: "Client".to_owned(),
                                name: client_name.clone(),
                                uid,
                                controller: Some(true),
                                block_owner_deletion: Some(true),
                            }]
                        }),
                        ..ObjectMeta::default()
                    },
                    type_: Some("Opaque".to_owned()),
                    data: Some(BTreeMap::from([("token".to_owned(), value)])),
                    ..Secret::default()
                };
                self.store()
                    .create(&secret)
                    .await
                    .map(|_| ())
                    .map_err(store_status)
            }
            Err(err) => Err(store_status(err)),
        }
    }

    /// One page of `K` in the caller's namespace `query.parent`, selected by the user's
    /// `query.filter` and then the selectors `more_pieces` adds (checked in that order).
    /// Served from the read cache (the store while it is not complete), in name order, with
    /// this service's own page tokens ([`paging`]).
    async fn list_page<K: Cached>(
        &self,
        caller: &Caller,
        query: PageQuery<'_>,
        more_pieces: impl FnOnce(&mut Vec<selector::LabelSelector>) -> Result<(), Status>,
    ) -> Result<paging::Page<K>, Status> {
        let namespace = self.resolve_parent(caller, query.parent)?;
        let mut pieces = Vec::new();
        if let Some(filter) = parse_filter(query.filter, "filter")? {
            pieces.push(filter);
        }
        more_pieces(&mut pieces)?;
        let window = paging::Window::parse(query.page_size, query.page_token)?;
        let objects = self
            .cache()
            .list::<K>(&namespace)
            .await
            .map_err(store_status)?;
        Ok(paging::page(objects, &window, |object| {
            let labels = object.meta().labels.as_ref();
            let empty = BTreeMap::new();
            let labels = labels.unwrap_or(&empty);
            pieces.iter().all(|piece| selector::matches(piece, labels))
        }))
    }

    async fn lease(&self, namespace: &str, name: &str) -> Result<Lease, Status> {
        self.cache()
            .get::<Lease>(namespace, name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("lease {namespace}/{name} not found")))
    }

    /// Runs a lease command on the stored lease and writes its change (read-modify-write,
    /// retried on conflicts: the command sees the lease as stored at each attempt).
    async fn modify_lease(
        &self,
        namespace: &str,
        name: &str,
        mut command: impl FnMut(&LeaseState) -> Result<Change, LeaseError> + Send,
    ) -> Result<Lease, Status> {
        let mut refusal: Option<Status> = None;
        let written = write::modify_cached::<S, Lease, _>(
            self.cache(),
            namespace,
            name,
            Part::Object,
            |lease| {
                refusal = None;
                let applied = command(&lease_request::state_of(lease))
                    .map_err(lease_error::status)
                    .and_then(|change| lease_request::apply(&change, lease));
                applied.unwrap_or_else(|status| {
                    refusal = Some(status);
                    false
                })
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => {
                Status::not_found(format!("lease {namespace}/{name} not found"))
            }
            other => store_status(other),
        })?;
        match refusal {
            Some(status) => Err(status),
            None => Ok(written),
        }
    }
}

/// The paging and filter fields every list request carries.
struct PageQuery<'a> {
    /// `namespaces/{ns}`.
    parent: &'a str,
    /// The user's label selector.
    filter: &'a str,
    page_size: i32,
    page_token: &'a str,
}

/// The [`PageQuery`] of a list request (any message with those four fields).
macro_rules! page_query {
    ($request:expr) => {
        PageQuery {
            parent: &$request.parent,
            filter: &$request.filter,
            page_size: $request.page_size,
            page_token: &$request.page_token,
        }
    };
}
use page_query;

/// A user selector string; `None` when empty.
fn parse_filter(text: &str, field: &str) -> Result<Option<selector::LabelSelector>, Status> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = selector::parse(text)
        .and_then(|parsed| selector::validate(&parsed).map(|()| parsed))
        .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
    Ok((!parsed.is_empty()).then_some(parsed))
}

/// A tag selector rewritten onto the tag labels (`metadata.jumpstarter.dev/<key>`).
fn prefix_tag_keys(tags: selector::LabelSelector) -> selector::LabelSelector {
    selector::LabelSelector {
        match_labels: tags
            .match_labels
            .into_iter()
            .map(|(k, v)| (format!("{}{k}", vocabulary::TAG_LABEL_PREFIX), v))
            .collect(),
        match_expressions: tags
            .match_expressions
            .into_iter()
            .map(|mut r| {
                r.key = format!("{}{}", vocabulary::TAG_LABEL_PREFIX, r.key);
                r
            })
            .collect(),
    }
}

/// Leases whose ended label is absent (0.9.0's `only_active`).
fn not_ended() -> selector::LabelSelector {
    selector::LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![selector::Requirement {
            key: vocabulary::LEASE_ENDED_LABEL.to_owned(),
            operator: selector::Operator::DoesNotExist,
            values: Vec::new(),
        }],
    }
}

observed_service! {
    ClientService for ClientApi, "ClientService";
    "GetExporter": get_exporter,
        get_exporter_inner(client_pb::GetExporterRequest) -> client_pb::Exporter;
    "ListExporters": list_exporters,
        list_exporters_inner(client_pb::ListExportersRequest) -> client_pb::ListExportersResponse;
    "GetLease": get_lease, get_lease_inner(client_pb::GetLeaseRequest) -> client_pb::Lease;
    "ListLeases": list_leases,
        list_leases_inner(client_pb::ListLeasesRequest) -> client_pb::ListLeasesResponse;
    "CreateLease": create_lease,
        create_lease_inner(client_pb::CreateLeaseRequest) -> client_pb::Lease;
    "UpdateLease": update_lease,
        update_lease_inner(client_pb::UpdateLeaseRequest) -> client_pb::Lease;
    "DeleteLease": delete_lease, delete_lease_inner(client_pb::DeleteLeaseRequest) -> ();
    "RotateToken": rotate_token,
        rotate_token_inner(client_pb::RotateTokenRequest) -> client_pb::RotateTokenResponse;
}
