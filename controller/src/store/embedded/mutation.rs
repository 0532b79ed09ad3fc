//! What the Kubernetes API server does to an object on create, update and status update,
//! as pure functions over the object's JSON. The embedded store runs these so that its
//! objects look and version exactly as the Kubernetes backend's would.
//!
//! Rules mirrored (each checked on both backends by the store behaviour suite):
//! - create sets `uid`, `creationTimestamp` and `resourceVersion`; custom resources (a
//!   non-empty API group, all of which have the status subresource here) get
//!   `generation: 1` and lose any `status` sent with the create;
//! - update (replace) keeps `uid`, `creationTimestamp` and, for custom resources, `status`;
//!   it bumps `generation` when anything outside `metadata` and `status` changed;
//! - status update takes only `status` from the request, everything else from the stored
//!   object;
//! - a stale `resourceVersion` is a conflict; a missing one is an unconditional update for
//!   core types and invalid for custom resources (`AllowUnconditionalUpdate`);
//! - an update that changes nothing is not written: the stored object is returned with its
//!   old `resourceVersion`, and watchers see no event.
//!
//! Not mirrored: `managedFields` (never stored), finalizers and graceful deletion, owner
//! reference garbage collection, admission and schema validation beyond object names.

use serde_json::{Map, Value};

/// The API type of the objects a call is about.
#[derive(Debug, Clone)]
pub(crate) struct TypeInfo {
    /// `apiVersion`, e.g. `jumpstarter.dev/v1alpha1` or `v1`.
    pub(crate) api_version: String,
    pub(crate) kind: String,
    /// Custom resources have a non-empty group; core types (Secret, ConfigMap) do not.
    pub(crate) custom: bool,
}

impl TypeInfo {
    /// The key prefix of this type in the object table: `<apiVersion>/<kind>`.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.api_version, self.kind)
    }
}

/// Why the API server would refuse a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 409: stale resourceVersion or mismatched uid.
    Conflict(String),
    /// 422: a field has a value the server does not accept.
    Invalid(String),
}

/// The outcome of an update: either the object to store, or "unchanged".
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Update {
    Write(Value),
    Unchanged,
}

/// The message Kubernetes gives for a stale resourceVersion.
const CONFLICT_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Checks the object's name and namespace as the API server does for these types.
pub(crate) fn validate_names(namespace: &str, name: &str) -> Result<(), Rejection> {
    if name.is_empty() {
        return Err(Rejection::Invalid(
            "metadata.name: Required value: name or generateName is required".into(),
        ));
    }
    if !is_dns_subdomain(name) {
        return Err(Rejection::Invalid(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must \
             consist of lower case alphanumeric characters, '-' or '.', and must start and end \
             with an alphanumeric character"
        )));
    }
    if namespace.is_empty() || namespace.len() > 63 || !is_dns_label(namespace) {
        return Err(Rejection::Invalid(format!(
            "metadata.namespace: Invalid value: {namespace:?}: a lowercase RFC 1123 label is \
             required"
        )));
    }
    Ok(())
}

/// The stored form of a new object at `resource_version`.
pub(crate) fn create(
    info: &TypeInfo,
    mut object: Value,
    uid: &str,
    creation_timestamp: &str,
    resource_version: u64,
) -> Value {
    set_type(info, &mut object);
    if info.custom
        && let Some(fields) = object.as_object_mut()
    {
        fields.remove("status");
    }
    let meta = metadata_mut(&mut object);
    for system in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(system);
    }
    meta.insert("uid".into(), uid.into());
    meta.insert("creationTimestamp".into(), creation_timestamp.into());
    meta.insert(
        "resourceVersion".into(),
        resource_version.to_string().into(),
    );
    if info.custom {
        meta.insert("generation".into(), 1.into());
    }
    object
}

/// The stored form after a full update (replace) of `old` with `new`.
pub(crate) fn replace(
    info: &TypeInfo,
    old: &Value,
    mut new: Value,
    resource_version: u64,
) -> Result<Update, Rejection> {
    check_preconditions(info, old, &new)?;
    set_type(info, &mut new);
    if info.custom {
        let fields = object_mut(&mut new);
        match old.get("status") {
            Some(status) => fields.insert("status".into(), status.clone()),
            None => fields.remove("status"),
        };
    }
    {
        let old_meta = old.get("metadata").and_then(Value::as_object);
        let meta = metadata_mut(&mut new);
        meta.remove("managedFields");
        meta.remove("selfLink");
        for system in [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old_meta.and_then(|m| m.get(system)) {
                Some(value) => meta.insert(system.into(), value.clone()),
                None => meta.remove(system),
            };
        }
    }
    if info.custom && without_metadata_and_status(old) != without_metadata_and_status(&new) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        metadata_mut(&mut new).insert("generation".into(), (generation + 1).into());
    }
    Ok(finish(old, new, resource_version))
}

/// The stored form after a status update of `old` with `new`'s status.
pub(crate) fn replace_status(
    info: &TypeInfo,
    old: &Value,
    new: &Value,
    resource_version: u64,
) -> Result<Update, Rejection> {
    check_preconditions(info, old, new)?;
    let mut updated = old.clone();
    let fields = object_mut(&mut updated);
    match new.get("status") {
        Some(status) => fields.insert("status".into(), status.clone()),
        None => fields.remove("status"),
    };
    Ok(finish(old, updated, resource_version))
}

/// The object's `metadata.resourceVersion` set to `resource_version` (deletes report it).
pub(crate) fn with_resource_version(mut object: Value, resource_version: u64) -> Value {
    metadata_mut(&mut object).insert(
        "resourceVersion".into(),
        resource_version.to_string().into(),
    );
    object
}

/// Compares `new` with `old` ignoring resourceVersion; writes at `resource_version` if
/// anything differs.
fn finish(old: &Value, mut new: Value, resource_version: u64) -> Update {
    let old_rv = old.pointer("/metadata/resourceVersion").cloned();
    match old_rv {
        Some(rv) => metadata_mut(&mut new).insert("resourceVersion".into(), rv),
        None => metadata_mut(&mut new).remove("resourceVersion"),
    };
    if &new == old {
        return Update::Unchanged;
    }
    Update::Write(with_resource_version(new, resource_version))
}

/// resourceVersion and uid preconditions of an update.
fn check_preconditions(info: &TypeInfo, old: &Value, new: &Value) -> Result<(), Rejection> {
    let stored_rv = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        Some(rv) if !rv.is_empty() && rv != stored_rv => {
            return Err(Rejection::Conflict(CONFLICT_MESSAGE.into()));
        }
        Some(rv) if !rv.is_empty() => {}
        _ if info.custom => {
            return Err(Rejection::Invalid(
                "metadata.resourceVersion: Invalid value: 0: must be specified for an update"
                    .into(),
            ));
        }
        _ => {}
    }
    let stored_uid = old
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(uid) = new.pointer("/metadata/uid").and_then(Value::as_str)
        && !uid.is_empty()
        && uid != stored_uid
    {
        return Err(Rejection::Conflict(format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}"
        )));
    }
    Ok(())
}

fn set_type(info: &TypeInfo, object: &mut Value) {
    let fields = object_mut(object);
    fields.insert("apiVersion".into(), info.api_version.clone().into());
    fields.insert("kind".into(), info.kind.clone().into());
}

/// The object as a JSON map; anything else is replaced by an empty map (the callers
/// serialise Kubernetes objects, which are always maps).
fn object_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    match object {
        Value::Object(map) => map,
        _ => unreachable!("replaced by a map above"),
    }
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let meta = object_mut(object)
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    object_mut(meta)
}

fn without_metadata_and_status(object: &Value) -> Map<String, Value> {
    let mut fields = object.as_object().cloned().unwrap_or_default();
    fields.remove("metadata");
    fields.remove("status");
    fields
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
fn is_dns_label(label: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 63
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|&c| alnum(c) || c == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn custom() -> TypeInfo {
        TypeInfo {
            api_version: "jumpstarter.dev/v1alpha1".into(),
            kind: "Lease".into(),
            custom: true,
        }
    }

    fn core() -> TypeInfo {
        TypeInfo {
            api_version: "v1".into(),
            kind: "Secret".into(),
            custom: false,
        }
    }

    fn stored() -> Value {
        create(
            &custom(),
            json!({"metadata": {"name": "a", "namespace": "n"}, "spec": {"x": 1}, "status": {"s": 1}}),
            "u-1",
            "2024-01-01T00:00:00Z",
            7,
        )
    }

    #[test]
    fn create_sets_system_fields_and_drops_custom_status() {
        let object = stored();
        assert_eq!(object["metadata"]["uid"], "u-1");
        assert_eq!(object["metadata"]["resourceVersion"], "7");
        assert_eq!(object["metadata"]["generation"], 1);
        assert_eq!(object["kind"], "Lease");
        assert!(object.get("status").is_none());
        let secret = create(
            &core(),
            json!({"metadata": {"name": "a"}, "data": {}}),
            "u",
            "t",
            1,
        );
        assert!(secret["metadata"].get("generation").is_none());
    }

    #[test]
    fn replace_bumps_generation_only_for_spec_changes_and_keeps_status() {
        let old = stored();
        let mut labels = old.clone();
        labels["metadata"]["labels"] = json!({"a": "b"});
        labels["status"] = json!({"ignored": true});
        let Ok(Update::Write(updated)) = replace(&custom(), &old, labels, 8) else {
            panic!("label change is written");
        };
        assert_eq!(updated["metadata"]["generation"], 1);
        assert_eq!(updated["metadata"]["resourceVersion"], "8");
        assert!(updated.get("status").is_none());

        let mut spec = updated.clone();
        spec["spec"]["x"] = json!(2);
        let Ok(Update::Write(bumped)) = replace(&custom(), &updated, spec, 9) else {
            panic!("spec change is written");
        };
        assert_eq!(bumped["metadata"]["generation"], 2);
        assert_eq!(
            replace(&custom(), &bumped, bumped.clone(), 10),
            Ok(Update::Unchanged)
        );
    }

    #[test]
    fn preconditions() {
        let old = stored();
        let mut stale = old.clone();
        stale["metadata"]["resourceVersion"] = json!("6");
        assert!(matches!(
            replace(&custom(), &old, stale.clone(), 8),
            Err(Rejection::Conflict(_))
        ));
        assert!(matches!(
            replace_status(&custom(), &old, &stale, 8),
            Err(Rejection::Conflict(_))
        ));
        let mut missing = old.clone();
        missing["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("resourceVersion");
        assert!(matches!(
            replace(&custom(), &old, missing.clone(), 8),
            Err(Rejection::Invalid(_))
        ));
        missing["spec"] = json!({"x": 3});
        let core_old = create(&core(), json!({"metadata": {"name": "a"}}), "u", "t", 1);
        let mut core_new = core_old.clone();
        core_new["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("resourceVersion");
        core_new["data"] = json!({"k": "dg=="});
        assert!(matches!(
            replace(&core(), &core_old, core_new, 2),
            Ok(Update::Write(_))
        ));
        let mut other_uid = old.clone();
        other_uid["metadata"]["uid"] = json!("u-2");
        assert!(matches!(
            replace(&custom(), &old, other_uid, 8),
            Err(Rejection::Conflict(_))
        ));
    }

    #[test]
    fn status_update_takes_only_status() {
        let old = stored();
        let mut new = old.clone();
        new["spec"]["x"] = json!(5);
        new["metadata"]["labels"] = json!({"a": "b"});
        new["status"] = json!({"s": 2});
        let Ok(Update::Write(updated)) = replace_status(&custom(), &old, &new, 8) else {
            panic!("status change is written");
        };
        assert_eq!(updated["spec"]["x"], 1);
        assert!(updated["metadata"].get("labels").is_none());
        assert_eq!(updated["status"]["s"], 2);
        assert_eq!(updated["metadata"]["generation"], 1);
    }

    #[test]
    fn names() {
        assert!(validate_names("ns", "a.b-c").is_ok());
        assert!(validate_names("ns", "").is_err());
        assert!(validate_names("ns", "Upper").is_err());
        assert!(validate_names("ns", "-a").is_err());
        assert!(validate_names("", "a").is_err());
        assert!(validate_names("a.b", "a").is_err());
    }
}
