//! `apply -f`: Clients, Exporters, Leases and ExporterAccessPolicies from YAML, as `kubectl
//! apply -f` takes them (documents separated by `---`), on any [`Store`].
//!
//! Two steps, so that a bad file changes nothing:
//! - [`Manifest::parse`] reads every document into the typed CRD structs of [`crate::crd`]
//!   and checks it: `apiVersion`, `kind`, `metadata.name` and `metadata.namespace`, fields
//!   the struct does not know (refused, as the API server's strict field validation does),
//!   labels, and the rules the CRDs state beyond their types (a lease's selector or
//!   exporter, Go durations, label selectors). Each problem names its document (counted
//!   from 1) and field; one bad document refuses the whole manifest.
//! - [`Admin::apply`] first checks every document against the store (a lease's tags cannot
//!   change), then writes them in order: an absent object is created; a present one gets the
//!   document's spec, labels and annotations, keeping its `resourceVersion` (an update, not a
//!   re-create) and its status.
//!
//! What a document may not take away: labels and annotations under the `jumpstarter.dev`,
//! `kubernetes.io` and `k8s.io` domains (the service's own records, such as the token
//! generation) and the labels an exporter reported about itself stay unless the document
//! sets them. Of `metadata`, only the name, namespace, labels and annotations are read;
//! `status` is the reconciler's and is ignored.
//!
//! A Client or Exporter created here gets its credential from the reconciler as usual;
//! `apply` prints no configuration (`create client|exporter` writes one).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use jumpstarter_lease::name::is_namespace_name;
use jumpstarter_lease::scheduler::MIN_IDLE_TIMEOUT;
use jumpstarter_lease::selector;

use super::lease::parse_duration;
use super::{Admin, AdminError, Kind, check_object_name, validate_label, validate_name};
use crate::crd::vocabulary::{API_VERSION, REPORTED_LABELS_ANNOTATION, selector_from_k8s};
use crate::crd::{Client, Exporter, ExporterAccessPolicy, Lease};
use crate::service::reported_labels::is_reserved;
use crate::store::{Object, Store, StoreError};

/// How often a write that lost a race (the reconciler updated the object in between) is
/// tried again from a fresh read; each retry reads, so a handful is plenty.
const WRITE_ATTEMPTS: usize = 5;

/// The checked documents of one YAML text, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    documents: Vec<Document>,
}

/// One checked document: the object as it will be written.
#[derive(Debug, Clone, PartialEq)]
struct Document {
    /// Position in the text, counted from 1 (empty documents count too).
    index: usize,
    object: Desired,
}

/// The object of a document, by kind.
#[derive(Debug, Clone, PartialEq)]
enum Desired {
    Client(Client),
    Exporter(Exporter),
    /// Boxed: a lease, with its status, is much the largest.
    Lease(Box<Lease>),
    Policy(ExporterAccessPolicy),
}

/// What applying one document did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

/// One applied document, shown as kubectl shows it:
/// `exporteraccesspolicy.jumpstarter.dev/lab-policy created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub outcome: Outcome,
}

/// A problem with one document of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// Position of the document, counted from 1.
    pub document: usize,
    /// `Kind/name`, once the document got that far.
    pub object: Option<String>,
    pub problem: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.kind.resource(), self.name, self.outcome)
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// The problems of a manifest, one per line.
pub(crate) fn describe(errors: &[DocumentError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Manifest {
    /// Reads and checks every document of `text`. A document without `metadata.namespace`
    /// goes to `namespace`; with `pinned`, a document naming another namespace is refused
    /// (the namespace was given explicitly, or the service serves only that one).
    ///
    /// All problems are reported, one [`DocumentError`] each; a YAML syntax error ends the
    /// reading (its message names the line).
    pub fn parse(text: &str, namespace: &str, pinned: bool) -> Result<Manifest, AdminError> {
        let mut documents = Vec::new();
        let mut errors = Vec::new();
        let mut seen: HashMap<(Kind, String, String), usize> = HashMap::new();
        for (position, deserializer) in serde_norway::Deserializer::from_str(text).enumerate() {
            let index = position + 1;
            let value = match serde_norway::Value::deserialize(deserializer) {
                Ok(value) => value,
                Err(e) => {
                    errors.push(DocumentError {
                        document: index,
                        object: None,
                        problem: format!("invalid YAML: {e}"),
                    });
                    break;
                }
            };
            if value.is_null() {
                continue;
            }
            match read_document(index, value, namespace, pinned) {
                Ok(document) => {
                    let (kind, namespace, name) = document.object.key();
                    let key = (kind, namespace, name);
                    if let Some(first) = seen.get(&key) {
                        errors.push(DocumentError {
                            document: index,
                            object: Some(document.object.label()),
                            problem: format!("the same object as document {first}"),
                        });
                    } else {
                        seen.insert(key, index);
                        documents.push(document);
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        if !errors.is_empty() {
            return Err(AdminError::InvalidManifest { errors });
        }
        if documents.is_empty() {
            return Err(AdminError::EmptyManifest);
        }
        Ok(Manifest { documents })
    }

    /// How many objects the manifest holds.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}

impl<S: Store> Admin<S> {
    /// Applies `manifest`: checks every document against the store, then creates or updates
    /// each object in order. Returns what happened to each, in document order.
    ///
    /// A check that fails (a lease's tags changed) writes nothing; a write that fails stops
    /// the run there, with the documents before it applied.
    pub async fn apply(&self, manifest: &Manifest) -> Result<Vec<Applied>, AdminError> {
        for document in &manifest.documents {
            document
                .object
                .apply(self, document.index, Step::Check)
                .await?;
        }
        let mut applied = Vec::with_capacity(manifest.documents.len());
        for document in &manifest.documents {
            let outcome = document
                .object
                .apply(self, document.index, Step::Write)
                .await?;
            let (kind, namespace, name) = document.object.key();
            applied.push(Applied {
                kind,
                namespace,
                name,
                outcome,
            });
        }
        Ok(applied)
    }

    /// Applies one object: compares it with the stored one and, at [`Step::Write`], creates
    /// or replaces it (again from a fresh read after losing a race).
    async fn apply_object<K: Applicable>(
        &self,
        desired: &K,
        index: usize,
        step: Step,
    ) -> Result<Outcome, AdminError> {
        let meta = desired.meta();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let store_error = |operation: &str, source: StoreError| AdminError::Store {
            operation: format!("{operation} {} {namespace}/{name}", K::KIND.object_kind()),
            source: Box::new(source),
        };
        let mut attempt = 1;
        loop {
            let stored = self
                .store
                .get::<K>(&namespace, &name)
                .await
                .map_err(|e| store_error("read", e))?;
            let written = match &stored {
                None if step == Step::Check => return Ok(Outcome::Created),
                None => self.store.create(desired).await.map(|_| Outcome::Created),
                Some(stored) => {
                    K::check_update(stored, desired).map_err(|problem| {
                        AdminError::InvalidManifest {
                            errors: vec![DocumentError {
                                document: index,
                                object: Some(label(K::KIND, &name)),
                                problem,
                            }],
                        }
                    })?;
                    let updated = updated(stored, desired);
                    if same(&updated, stored) {
                        return Ok(Outcome::Unchanged);
                    }
                    if step == Step::Check {
                        return Ok(Outcome::Configured);
                    }
                    self.store
                        .replace(&updated)
                        .await
                        .map(|_| Outcome::Configured)
                }
            };
            match written {
                Ok(outcome) => return Ok(outcome),
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. })
                    if attempt < WRITE_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(e) => {
                    let operation = if stored.is_some() { "update" } else { "create" };
                    return Err(store_error(operation, e));
                }
            }
        }
    }
}

/// Whether [`Admin::apply_object`] only compares or also writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Check,
    Write,
}

impl Desired {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Desired::Client(o) => &o.metadata,
            Desired::Exporter(o) => &o.metadata,
            Desired::Lease(o) => &o.metadata,
            Desired::Policy(o) => &o.metadata,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Desired::Client(_) => Kind::Client,
            Desired::Exporter(_) => Kind::Exporter,
            Desired::Lease(_) => Kind::Lease,
            Desired::Policy(_) => Kind::Policy,
        }
    }

    /// Kind, namespace and name.
    fn key(&self) -> (Kind, String, String) {
        let meta = self.meta();
        (
            self.kind(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    fn label(&self) -> String {
        label(self.kind(), self.meta().name.as_deref().unwrap_or_default())
    }

    async fn apply<S: Store>(
        &self,
        admin: &Admin<S>,
        index: usize,
        step: Step,
    ) -> Result<Outcome, AdminError> {
        match self {
            Desired::Client(o) => admin.apply_object(o, index, step).await,
            Desired::Exporter(o) => admin.apply_object(o, index, step).await,
            Desired::Lease(o) => admin.apply_object(o.as_ref(), index, step).await,
            Desired::Policy(o) => admin.apply_object(o, index, step).await,
        }
    }
}

/// `Kind/name`, how errors name an object.
fn label(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.object_kind())
}

/// A kind `apply` writes: how its document is checked and how it updates a stored object.
trait Applicable: Object + PartialEq {
    const KIND: Kind;

    /// `stored` with the spec of `desired` (metadata and status as stored).
    fn with_spec_of(stored: &Self, desired: &Self) -> Self;

    /// The object without its status (a document's status is not written).
    fn without_status(self) -> Self;

    /// The checks of the CRD beyond its types, on a parsed document; the field and the
    /// problem.
    fn check(&self) -> Result<(), (String, String)> {
        Ok(())
    }

    /// The checks of an update of `stored` to `desired` (transition rules).
    fn check_update(_stored: &Self, _desired: &Self) -> Result<(), String> {
        Ok(())
    }

    /// Whether label `key=value` of `stored` stays when a document does not set it.
    fn keeps_label(_stored: &Self, key: &str, _value: &str) -> bool {
        is_reserved(key)
    }
}

/// Implements the plain parts of [`Applicable`] for a CRD with `spec` and `status`.
macro_rules! applicable {
    ($type:ident, $kind:ident $(, $item:item)*) => {
        impl Applicable for $type {
            const KIND: Kind = Kind::$kind;

            fn with_spec_of(stored: &Self, desired: &Self) -> Self {
                let mut updated = stored.clone();
                updated.spec = desired.spec.clone();
                updated
            }

            fn without_status(mut self) -> Self {
                self.status = None;
                self
            }

            $($item)*
        }
    };
}

applicable!(Client, Client);

applicable!(
    Exporter,
    Exporter,
    /// The service's labels, and those the exporter reported and still holding the value
    /// it set (see `service::reported_labels`).
    fn keeps_label(stored: &Self, key: &str, value: &str) -> bool {
        let recorded: BTreeMap<String, String> = stored
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPORTED_LABELS_ANNOTATION))
            .and_then(|record| serde_json::from_str(record).ok())
            .unwrap_or_default();
        is_reserved(key) || recorded.get(key).map(String::as_str) == Some(value)
    }
);

applicable!(
    Lease,
    Lease,
    /// The CRD's rule that a lease names a selector or an exporter, and a Go duration.
    fn check(&self) -> Result<(), (String, String)> {
        let spec = &self.spec;
        let selects = spec
            .selector
            .match_labels
            .as_ref()
            .is_some_and(|l| !l.is_empty())
            || spec
                .selector
                .match_expressions
                .as_ref()
                .is_some_and(|e| !e.is_empty());
        let pins = spec
            .exporter_ref
            .as_ref()
            .is_some_and(|r| !r.name.is_empty());
        if !selects && !pins {
            return Err((
                "spec".to_owned(),
                "one of selector or exporterRef.name is required".to_owned(),
            ));
        }
        check_selector("spec.selector", &spec.selector)?;
        if let Some(duration) = &spec.duration {
            parse_duration(duration).map_err(|e| ("spec.duration".to_owned(), e.to_string()))?;
        }
        Ok(())
    },
    /// The CRD's transition rule: tags cannot change once set.
    fn check_update(stored: &Self, desired: &Self) -> Result<(), String> {
        if stored.spec.tags.is_some() && stored.spec.tags != desired.spec.tags {
            return Err("spec.tags: tags are immutable after creation".to_owned());
        }
        Ok(())
    }
);

applicable!(
    ExporterAccessPolicy,
    Policy,
    /// Selectors the scheduler can read (it skips a policy whose selector is invalid) and
    /// Go durations (it ignores a limit it cannot parse).
    fn check(&self) -> Result<(), (String, String)> {
        if let Some(exporters) = &self.spec.exporter_selector {
            check_selector("spec.exporterSelector", exporters)?;
        }
        for (i, rule) in self.spec.policies.iter().flatten().enumerate() {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                if let Some(clients) = &from.client_selector {
                    check_selector(
                        &format!("spec.policies[{i}].from[{j}].clientSelector"),
                        clients,
                    )?;
                }
            }
            for (field, text) in [
                ("maximumDuration", &rule.maximum_duration),
                ("spotGracePeriod", &rule.spot_grace_period),
                ("idleTimeout", &rule.idle_timeout),
            ] {
                if let Some(text) = text {
                    parse_duration(text)
                        .map_err(|e| (format!("spec.policies[{i}].{field}"), e.to_string()))?;
                }
            }
            if let Some(text) = &rule.idle_timeout
                && parse_duration(text).is_ok_and(|timeout| timeout < MIN_IDLE_TIMEOUT)
            {
                return Err((
                    format!("spec.policies[{i}].idleTimeout"),
                    format!(
                        "{text} is shorter than the minimum of {}: an open 0.9.0 jmp shell shows \
                         it is alive only every 30 s",
                        jumpstarter_lease::scheduler::duration::format(MIN_IDLE_TIMEOUT)
                    ),
                ));
            }
        }
        Ok(())
    }
);

fn check_selector(field: &str, selector: &LabelSelector) -> Result<(), (String, String)> {
    selector::validate(&selector_from_k8s(selector))
        .map_err(|e| (field.to_owned(), format!("invalid label selector: {e}")))
}

/// `stored` as `desired` makes it: its spec, and its labels and annotations, keeping the
/// entries a document cannot remove ([`Applicable::keeps_label`], reserved annotations).
fn updated<K: Applicable>(stored: &K, desired: &K) -> K {
    let mut updated = K::with_spec_of(stored, desired);
    let want = desired.meta();
    let have = stored.meta();
    let labels = merged(have.labels.as_ref(), want.labels.as_ref(), |k, v| {
        K::keeps_label(stored, k, v)
    });
    let annotations = merged(
        have.annotations.as_ref(),
        want.annotations.as_ref(),
        |k, _| is_reserved(k),
    );
    let meta = updated.meta_mut();
    meta.labels = labels;
    meta.annotations = annotations;
    updated
}

/// Whether writing `updated` over `stored` would change nothing: equal once both have the
/// defaults of their CRD's schema filled in, as the API server fills them in on every write
/// (an Exporter stored with `enabled: true` equals a document that leaves it out).
fn same<K: Applicable>(updated: &K, stored: &K) -> bool {
    match (defaulted(updated), defaulted(stored)) {
        (Some(updated), Some(stored)) => updated == stored,
        _ => updated == stored,
    }
}

/// `object` as JSON, with the defaults of its CRD's schema in the fields it leaves out.
fn defaulted<K: Applicable>(object: &K) -> Option<Value> {
    let mut value = serde_json::to_value(object).ok()?;
    if let Some(schema) = schema_of(K::KIND) {
        fill_defaults(&mut value, schema);
    }
    Some(value)
}

/// The OpenAPI schema of `kind`'s CRD, as [`crate::crd::definitions`] declares it.
fn schema_of(kind: Kind) -> Option<&'static JSONSchemaProps> {
    static SCHEMAS: OnceLock<Vec<(String, JSONSchemaProps)>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        crate::crd::definitions()
            .into_iter()
            .filter_map(|crd| {
                let version = crd.spec.versions.into_iter().next()?;
                Some((crd.spec.names.kind, version.schema?.open_api_v3_schema?))
            })
            .collect()
    });
    schemas
        .iter()
        .find(|(name, _)| name == kind.object_kind())
        .map(|(_, schema)| schema)
}

/// Fills in the `default` of every property `value` lacks, recursively (Kubernetes'
/// structural defaulting).
fn fill_defaults(value: &mut Value, schema: &JSONSchemaProps) {
    match value {
        Value::Object(fields) => {
            for (name, property) in schema.properties.iter().flatten() {
                match fields.get_mut(name) {
                    Some(field) => fill_defaults(field, property),
                    None => {
                        if let Some(default) = &property.default {
                            let mut field = default.0.clone();
                            fill_defaults(&mut field, property);
                            fields.insert(name.clone(), field);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for value in items {
                    fill_defaults(value, item);
                }
            }
        }
        _ => {}
    }
}

/// The document's entries, plus the stored ones it does not set that `keep` keeps. An
/// empty result keeps the stored form (absent or empty), so it compares equal.
fn merged(
    stored: Option<&BTreeMap<String, String>>,
    document: Option<&BTreeMap<String, String>>,
    keep: impl Fn(&str, &str) -> bool,
) -> Option<BTreeMap<String, String>> {
    let mut result = document.cloned().unwrap_or_default();
    for (key, value) in stored.into_iter().flatten() {
        if !result.contains_key(key) && keep(key, value) {
            result.insert(key.clone(), value.clone());
        }
    }
    if result.is_empty() {
        return stored.filter(|s| s.is_empty()).cloned();
    }
    Some(result)
}

/// Reads document `index` (`value`, not null) into the object it asks for.
fn read_document(
    index: usize,
    value: serde_norway::Value,
    namespace: &str,
    pinned: bool,
) -> Result<Document, DocumentError> {
    let fail = |object: Option<String>, problem: String| DocumentError {
        document: index,
        object,
        problem,
    };
    let mut value = serde_json::to_value(&value)
        .map_err(|e| fail(None, format!("not a JSON-compatible document: {e}")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(fail(
            None,
            "not an object (a mapping with apiVersion, kind, metadata and spec)".to_owned(),
        ));
    };
    match fields.get("apiVersion") {
        None => return Err(fail(None, "missing field apiVersion".to_owned())),
        Some(Value::String(version)) if version == API_VERSION => {}
        Some(other) => {
            return Err(fail(
                None,
                format!("apiVersion {other} is not {API_VERSION}"),
            ));
        }
    }
    let kind = match fields.get("kind") {
        None => return Err(fail(None, "missing field kind".to_owned())),
        Some(Value::String(kind)) => Kind::ALL
            .into_iter()
            .find(|k| k.object_kind() == kind)
            .ok_or_else(|| fail(None, format!("unknown kind {kind:?}: {}", kinds_hint())))?,
        Some(other) => {
            return Err(fail(
                None,
                format!("kind {other} is not a string: {}", kinds_hint()),
            ));
        }
    };
    let name = match value.pointer("/metadata/name") {
        None | Some(Value::Null) => return Err(fail(None, "missing metadata.name".to_owned())),
        Some(Value::String(name)) => name.clone(),
        Some(other) => {
            return Err(fail(None, format!("metadata.name {other} is not a string")));
        }
    };
    let object = Some(label(kind, &name));
    let fail = |problem: String| fail(object.clone(), problem);
    let named = match kind {
        // The credential Secret's name is derived from these.
        Kind::Client | Kind::Exporter => validate_name(&name),
        Kind::Lease | Kind::Policy => check_object_name(&name),
    };
    named.map_err(|e| fail(format!("metadata.name: {e}")))?;
    let resolved = match value.pointer("/metadata/namespace") {
        None | Some(Value::Null) => namespace.to_owned(),
        Some(Value::String(given)) if !is_namespace_name(given) => {
            return Err(fail(format!(
                "metadata.namespace {given:?} is not a namespace name (RFC 1123 label)"
            )));
        }
        Some(Value::String(given)) if pinned && given != namespace => {
            return Err(fail(format!(
                "metadata.namespace {given:?} differs from the namespace {namespace:?} this \
                 command works in"
            )));
        }
        Some(Value::String(given)) => given.clone(),
        Some(other) => {
            return Err(fail(format!("metadata.namespace {other} is not a string")));
        }
    };
    if let Some(fields) = value.as_object_mut() {
        // A CRD's defaults: an empty spec, and an empty lease selector.
        let spec = fields
            .entry("spec")
            .or_insert_with(|| Value::Object(Default::default()));
        if spec.is_null() {
            *spec = Value::Object(Default::default());
        }
        if kind == Kind::Lease
            && let Some(spec) = spec.as_object_mut()
        {
            spec.entry("selector")
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
    let desired = match kind {
        Kind::Client => Desired::Client(typed(&value).map_err(fail)?),
        Kind::Exporter => Desired::Exporter(typed(&value).map_err(fail)?),
        Kind::Lease => Desired::Lease(Box::new(typed(&value).map_err(fail)?)),
        Kind::Policy => Desired::Policy(typed(&value).map_err(fail)?),
    };
    let desired = match desired {
        Desired::Client(o) => Desired::Client(checked(o, &resolved).map_err(fail)?),
        Desired::Exporter(o) => Desired::Exporter(checked(o, &resolved).map_err(fail)?),
        Desired::Lease(o) => Desired::Lease(Box::new(checked(*o, &resolved).map_err(fail)?)),
        Desired::Policy(o) => Desired::Policy(checked(o, &resolved).map_err(fail)?),
    };
    Ok(Document {
        index,
        object: desired,
    })
}

fn kinds_hint() -> String {
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.object_kind()).collect();
    format!("use one of {}", kinds.join(", "))
}

/// `value` as the typed struct `K`: a type error names its field, and a field `K` does not
/// know is refused (what the struct would silently drop is what it does not know).
fn typed<K: Object>(value: &Value) -> Result<K, String> {
    let object: K = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    let known = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    unknown_fields(value, &known, "", &mut unknown);
    match unknown.as_slice() {
        [] => Ok(object),
        [one] => Err(format!("unknown field {one:?}")),
        many => Err(format!(
            "unknown fields {}",
            many.iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The paths of the non-null fields of `given` that `known` (the typed struct serialized
/// again) lacks, like `spec.policies[0].priorty`.
fn unknown_fields(given: &Value, known: &Value, path: &str, unknown: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(given), Value::Object(known)) => {
            for (key, value) in given {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    _ if value.is_null() => {}
                    None => unknown.push(field),
                    Some(known) => unknown_fields(value, known, &field, unknown),
                }
            }
        }
        (Value::Array(given), Value::Array(known)) => {
            for (i, (value, known)) in given.iter().zip(known).enumerate() {
                unknown_fields(value, known, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// The object as it will be written: in `namespace`, with only the name, namespace,
/// labels and annotations of its metadata, no status, and its labels and the CRD's rules
/// checked.
fn checked<K: Applicable>(object: K, namespace: &str) -> Result<K, String> {
    let mut object = object.without_status();
    let meta = object.meta_mut();
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: Some(namespace.to_owned()),
        labels: meta.labels.take(),
        annotations: meta.annotations.take(),
        ..ObjectMeta::default()
    };
    for (key, value) in meta.labels.iter().flatten() {
        validate_label(key, value).map_err(|e| format!("metadata.labels: {e}"))?;
    }
    object
        .check()
        .map_err(|(field, problem)| format!("{field}: {problem}"))?;
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterAccessPolicy
metadata:
  name: lab-policy
spec:
  exporterSelector:
    matchLabels:
      board: mock
  policies:
    - priority: 10
      from:
        - clientSelector:
            matchLabels:
              team: a
      maximumDuration: 2h
";

    fn parse(text: &str) -> Result<Manifest, AdminError> {
        Manifest::parse(text, "lab", false)
    }

    /// The problems of a refused manifest.
    fn problems(text: &str) -> Vec<DocumentError> {
        match parse(text) {
            Err(AdminError::InvalidManifest { errors }) => errors,
            other => panic!("expected an invalid manifest, got {other:?}"),
        }
    }

    fn one_problem(text: &str) -> DocumentError {
        let mut errors = problems(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.remove(0)
    }

    #[test]
    fn several_documents_become_typed_objects_in_their_namespace() {
        let text = format!(
            "{POLICY}---\n\
             apiVersion: jumpstarter.dev/v1alpha1\n\
             kind: Client\n\
             metadata: {{name: alice, namespace: lab, labels: {{team: a}}}}\n\
             ---\n\
             ---\n\
             apiVersion: jumpstarter.dev/v1alpha1\n\
             kind: Exporter\n\
             metadata: {{name: board-1, labels: {{board: mock}}}}\n\
             spec: {{enabled: true}}\n\
             status: {{exporterStatus: Available}}\n"
        );
        let manifest = parse(&text).unwrap();
        assert_eq!(manifest.len(), 3);
        let [policy, client, exporter] = &manifest.documents[..] else {
            panic!("three documents")
        };
        assert_eq!((policy.index, client.index, exporter.index), (1, 2, 4));
        let Desired::Policy(policy) = &policy.object else {
            panic!("a policy")
        };
        assert_eq!(policy.metadata.namespace.as_deref(), Some("lab"));
        let rules = policy.spec.policies.as_deref().unwrap();
        assert_eq!(rules[0].priority, Some(10));
        assert_eq!(
            client.object.key(),
            (Kind::Client, "lab".into(), "alice".into())
        );
        let Desired::Exporter(exporter) = &exporter.object else {
            panic!("an exporter")
        };
        assert_eq!(exporter.spec.enabled, Some(true));
        assert_eq!(exporter.status, None, "a document's status is not written");
    }

    #[test]
    fn wrong_api_versions_and_kinds_name_their_document() {
        let text = format!(
            "{POLICY}---\napiVersion: v1\nkind: Client\nmetadata: {{name: a}}\n\
             ---\napiVersion: jumpstarter.dev/v1alpha1\nkind: Pod\nmetadata: {{name: a}}\n\
             ---\nkind: Client\nmetadata: {{name: a}}\n"
        );
        let errors = problems(&text);
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "document 2: apiVersion \"v1\" is not jumpstarter.dev/v1alpha1",
                "document 3: unknown kind \"Pod\": use one of Client, Exporter, Lease, \
                 ExporterAccessPolicy",
                "document 4: missing field apiVersion",
            ]
        );
    }

    #[test]
    fn names_must_be_present_and_valid() {
        let head = "apiVersion: jumpstarter.dev/v1alpha1\nkind: Client\n";
        let missing = one_problem(&format!("{head}metadata: {{labels: {{a: b}}}}\n"));
        assert_eq!(missing.to_string(), "document 1: missing metadata.name");
        let invalid = one_problem(&format!("{head}metadata: {{name: Alice}}\n"));
        assert_eq!(invalid.object.as_deref(), Some("Client/Alice"));
        assert!(
            invalid
                .problem
                .starts_with("metadata.name: invalid name \"Alice\""),
            "{invalid}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let text = POLICY.replace("maximumDuration", "maxDuration");
        let error = one_problem(&text);
        assert_eq!(
            error.to_string(),
            "document 1 (ExporterAccessPolicy/lab-policy): unknown field \
             \"spec.policies[0].maxDuration\""
        );
        let error = one_problem(
            "apiVersion: jumpstarter.dev/v1alpha1\nkind: Client\nmetadata: {name: a, lables: {}}\n\
             spec: {username: u, role: admin}\n",
        );
        assert_eq!(
            error.problem,
            "unknown fields \"metadata.lables\", \"spec.role\""
        );
        // A null is no field at all; known fields of every kind pass.
        parse("apiVersion: jumpstarter.dev/v1alpha1\nkind: Client\nmetadata: {name: a, namespace: null}\nspec: {username: null}\n")
            .unwrap();
    }

    #[test]
    fn an_idle_timeout_must_be_a_duration_of_at_least_a_minute() {
        let with = |timeout: &str| {
            POLICY.replace(
                "      maximumDuration: 2h\n",
                &format!("      maximumDuration: 2h\n      idleTimeout: {timeout}\n"),
            )
        };
        parse(&with("1m")).unwrap();
        parse(&with("2h")).unwrap();
        let short = one_problem(&with("30s"));
        assert_eq!(
            short.to_string(),
            "document 1 (ExporterAccessPolicy/lab-policy): spec.policies[0].idleTimeout: 30s \
             is shorter than the minimum of 1m0s: an open 0.9.0 jmp shell shows it is alive \
             only every 30 s"
        );
        let bad = one_problem(&with("soon"));
        assert!(
            bad.problem.starts_with("spec.policies[0].idleTimeout: "),
            "{bad}"
        );
    }

    #[test]
    fn type_errors_name_their_field() {
        let error = one_problem(&POLICY.replace("priority: 10", "priority: high"));
        assert!(
            error
                .problem
                .starts_with("spec.policies[0].priority: invalid type"),
            "{error}"
        );
    }

    #[test]
    fn the_crd_rules_beyond_types_are_checked() {
        let lease = "apiVersion: jumpstarter.dev/v1alpha1\nkind: Lease\nmetadata: {name: l1}\n";
        let error = one_problem(&format!("{lease}spec: {{clientRef: {{name: alice}}}}\n"));
        assert_eq!(
            error.problem,
            "spec: one of selector or exporterRef.name is required"
        );
        let error = one_problem(&format!(
            "{lease}spec: {{clientRef: {{name: alice}}, exporterRef: {{name: e}}, duration: soon}}\n"
        ));
        assert!(error.problem.starts_with("spec.duration: "), "{error}");
        parse(&format!(
            "{lease}spec: {{clientRef: {{name: alice}}, exporterRef: {{name: e}}, duration: 1h}}\n"
        ))
        .unwrap();
        let error = one_problem(&POLICY.replace("2h", "two hours"));
        assert!(
            error
                .problem
                .starts_with("spec.policies[0].maximumDuration: "),
            "{error}"
        );
        let error = one_problem(&POLICY.replace("board: mock", "board: not valid"));
        assert!(
            error
                .problem
                .starts_with("spec.exporterSelector: invalid label selector"),
            "{error}"
        );
        let error = one_problem(&POLICY.replace("name: lab-policy", "name: p\n  labels: {-a: b}"));
        assert!(error.problem.starts_with("metadata.labels: "), "{error}");
    }

    #[test]
    fn namespaces_follow_the_command_unless_pinned() {
        let text = POLICY.replace("name: lab-policy", "name: lab-policy\n  namespace: other");
        let manifest = Manifest::parse(&text, "lab", false).unwrap();
        assert_eq!(manifest.documents[0].object.key().1, "other");
        let Err(AdminError::InvalidManifest { errors }) = Manifest::parse(&text, "lab", true)
        else {
            panic!("a pinned namespace refuses another")
        };
        assert_eq!(
            errors[0].to_string(),
            "document 1 (ExporterAccessPolicy/lab-policy): metadata.namespace \"other\" \
             differs from the namespace \"lab\" this command works in"
        );
        let same = POLICY.replace("name: lab-policy", "name: lab-policy\n  namespace: lab");
        Manifest::parse(&same, "lab", true).unwrap();
    }

    #[test]
    fn syntax_errors_give_the_line_and_empty_manifests_are_refused() {
        let text = format!("{POLICY}---\napiVersion: jumpstarter.dev/v1alpha1\nkind: [Client\n");
        let error = one_problem(&text);
        assert_eq!(error.document, 2);
        assert!(error.problem.starts_with("invalid YAML: "), "{error}");
        assert!(error.problem.contains("line 19"), "{error}");
        assert!(matches!(parse(""), Err(AdminError::EmptyManifest)));
        assert!(matches!(
            parse("---\n---\n"),
            Err(AdminError::EmptyManifest)
        ));
        let error = one_problem("- a\n- b\n");
        assert!(error.problem.starts_with("not an object"), "{error}");
    }

    #[test]
    fn the_same_object_twice_is_refused() {
        let error = one_problem(&format!("{POLICY}---\n{POLICY}"));
        assert_eq!(error.document, 2);
        assert_eq!(error.problem, "the same object as document 1");
    }

    #[test]
    fn labels_and_annotations_are_replaced_except_what_a_document_cannot_remove() {
        let stored = BTreeMap::from([
            ("team".to_owned(), "a".to_owned()),
            ("old".to_owned(), "x".to_owned()),
            (
                "jumpstarter.dev/token-generation".to_owned(),
                "2".to_owned(),
            ),
        ]);
        let document = BTreeMap::from([("team".to_owned(), "b".to_owned())]);
        let result = merged(Some(&stored), Some(&document), |k, _| is_reserved(k)).unwrap();
        assert_eq!(
            result,
            BTreeMap::from([
                ("team".to_owned(), "b".to_owned()),
                (
                    "jumpstarter.dev/token-generation".to_owned(),
                    "2".to_owned()
                ),
            ])
        );
        assert_eq!(merged(None, None, |_, _| true), None);
        assert_eq!(
            merged(Some(&BTreeMap::new()), None, |_, _| true),
            Some(BTreeMap::new())
        );
    }

    /// An admin on a fresh embedded store in namespace `lab` (the directory must outlive it).
    fn admin(dir: &tempfile::TempDir) -> Admin<crate::store::embedded::EmbeddedStore> {
        let store = crate::store::embedded::EmbeddedStore::open(&dir.path().join("state.redb"))
            .expect("open the store");
        Admin::new(store, "lab")
    }

    fn outcomes(applied: &[Applied]) -> Vec<String> {
        applied.iter().map(ToString::to_string).collect()
    }

    const CLIENT: &str = "\
apiVersion: jumpstarter.dev/v1alpha1
kind: Client
metadata:
  name: alice
  labels:
    team: a
";

    #[tokio::test]
    async fn apply_creates_then_leaves_unchanged_then_updates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir);
        let text = format!("{POLICY}---\n{CLIENT}");
        let manifest = parse(&text).unwrap();
        assert_eq!(
            outcomes(&admin.apply(&manifest).await.unwrap()),
            [
                "exporteraccesspolicy.jumpstarter.dev/lab-policy created",
                "client.jumpstarter.dev/alice created",
            ]
        );
        let first: ExporterAccessPolicy =
            admin.store.get("lab", "lab-policy").await.unwrap().unwrap();
        assert_eq!(
            outcomes(&admin.apply(&manifest).await.unwrap()),
            [
                "exporteraccesspolicy.jumpstarter.dev/lab-policy unchanged",
                "client.jumpstarter.dev/alice unchanged",
            ]
        );

        // The service's own annotation stays; a label the document drops goes.
        let mut alice: Client = admin.store.get("lab", "alice").await.unwrap().unwrap();
        alice.metadata.annotations = Some(BTreeMap::from([(
            "jumpstarter.dev/token-generation".to_owned(),
            "3".to_owned(),
        )]));
        admin.store.replace(&alice).await.unwrap();
        let changed = format!(
            "{}---\n{}",
            POLICY.replace("priority: 10", "priority: 20"),
            CLIENT.replace("team: a", "site: lab")
        );
        assert_eq!(
            outcomes(&admin.apply(&parse(&changed).unwrap()).await.unwrap()),
            [
                "exporteraccesspolicy.jumpstarter.dev/lab-policy configured",
                "client.jumpstarter.dev/alice configured",
            ]
        );
        let second: ExporterAccessPolicy =
            admin.store.get("lab", "lab-policy").await.unwrap().unwrap();
        assert_eq!(
            second.metadata.uid, first.metadata.uid,
            "updated, not re-created"
        );
        assert_ne!(
            second.metadata.resource_version,
            first.metadata.resource_version
        );
        assert_eq!(second.spec.policies.unwrap()[0].priority, Some(20));
        let alice: Client = admin.store.get("lab", "alice").await.unwrap().unwrap();
        assert_eq!(
            alice.metadata.labels,
            Some(BTreeMap::from([("site".to_owned(), "lab".to_owned())]))
        );
        assert_eq!(
            alice.metadata.annotations,
            Some(BTreeMap::from([(
                "jumpstarter.dev/token-generation".to_owned(),
                "3".to_owned()
            )]))
        );
    }

    #[tokio::test]
    async fn a_document_refused_by_the_store_check_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir);
        let lease = "apiVersion: jumpstarter.dev/v1alpha1\nkind: Lease\nmetadata: {name: l1}\n\
                     spec: {clientRef: {name: alice}, exporterRef: {name: e}, tags: {team: a}}\n";
        admin.apply(&parse(lease).unwrap()).await.unwrap();
        let text = format!(
            "{POLICY}---\n{CLIENT}---\n{}",
            lease.replace("team: a", "team: b")
        );
        let Err(AdminError::InvalidManifest { errors }) = admin.apply(&parse(&text).unwrap()).await
        else {
            panic!("changed tags are refused")
        };
        assert_eq!(
            errors[0].to_string(),
            "document 3 (Lease/l1): spec.tags: tags are immutable after creation"
        );
        let policy: Option<ExporterAccessPolicy> =
            admin.store.get("lab", "lab-policy").await.unwrap();
        let client: Option<Client> = admin.store.get("lab", "alice").await.unwrap();
        assert!(policy.is_none() && client.is_none(), "nothing applied");
    }

    #[tokio::test]
    async fn fields_the_api_server_defaults_compare_equal_to_leaving_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir);
        let mut exporter = Exporter::new("board-1", crate::crd::ExporterSpec::default());
        exporter.metadata.namespace = Some("lab".into());
        // What the API server stores for an Exporter created without `spec.enabled`.
        exporter.spec.enabled = Some(true);
        admin.store.create(&exporter).await.unwrap();
        let document =
            "apiVersion: jumpstarter.dev/v1alpha1\nkind: Exporter\nmetadata: {name: board-1}\n";
        let applied = admin.apply(&parse(document).unwrap()).await.unwrap();
        assert_eq!(applied[0].outcome, Outcome::Unchanged);
        let disabled = format!("{document}spec: {{enabled: false}}\n");
        let applied = admin.apply(&parse(&disabled).unwrap()).await.unwrap();
        assert_eq!(applied[0].outcome, Outcome::Configured);
    }

    #[tokio::test]
    async fn labels_an_exporter_reported_stay() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(&dir);
        let exporter = "apiVersion: jumpstarter.dev/v1alpha1\nkind: Exporter\n\
                        metadata: {name: board-1, labels: {board: mock}}\n";
        admin.apply(&parse(exporter).unwrap()).await.unwrap();
        let mut stored: Exporter = admin.store.get("lab", "board-1").await.unwrap().unwrap();
        stored
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("x.example.com/fw".to_owned(), "1.2".to_owned());
        stored.metadata.annotations = Some(BTreeMap::from([(
            REPORTED_LABELS_ANNOTATION.to_owned(),
            r#"{"x.example.com/fw":"1.2"}"#.to_owned(),
        )]));
        admin.store.replace(&stored).await.unwrap();
        let applied = admin.apply(&parse(exporter).unwrap()).await.unwrap();
        assert_eq!(applied[0].outcome, Outcome::Unchanged);
    }

    #[test]
    fn applied_documents_read_like_kubectl() {
        let applied = Applied {
            kind: Kind::Policy,
            namespace: "lab".into(),
            name: "p1".into(),
            outcome: Outcome::Created,
        };
        assert_eq!(
            applied.to_string(),
            "exporteraccesspolicy.jumpstarter.dev/p1 created"
        );
        let json = serde_json::to_string(&applied).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"ExporterAccessPolicy","namespace":"lab","name":"p1","outcome":"created"}"#
        );
        assert_eq!(serde_json::from_str::<Applied>(&json).unwrap(), applied);
    }
}
