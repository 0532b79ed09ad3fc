//! Schema pieces shared by the four custom resources.
//!
//! The CRDs must equal what controller-gen wrote for 0.9.0, keyword for keyword. Most of a
//! schema comes from `#[derive(JsonSchema)]`; the functions here cover what the derive cannot
//! express on its own:
//!
//! - [`resource`]: the root object schema (`apiVersion`, `kind`, `metadata`, `spec`, `status`,
//!   nothing required), used by the hand-written `JsonSchema` impls of the root types (kube's
//!   `schema = "manual"` mode).
//! - [`non_nullable`]: drops the `null` alternatives that schemars adds for `Option` fields, so
//!   no `nullable: true` reaches the CRD (controller-gen marks optional fields by leaving them
//!   out of `required`, never as nullable).
//! - `schema_with` functions for Kubernetes types whose upstream schema lacks the
//!   kubebuilder markers that controller-gen applied: object references, label selectors,
//!   conditions, and Go `int` fields (no `format`).

use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use schemars::transform::transform_subschemas;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

/// The root schema of a custom resource with the given spec and status types.
///
/// Spec and status are optional at the root, as controller-gen generates them.
pub(crate) fn resource<Spec: JsonSchema, Status: JsonSchema>(
    generator: &mut SchemaGenerator,
    description: &str,
) -> Schema {
    let mut schema = json_schema!({
        "description": description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "Versioned schema of this representation of an object.",
                "type": "string",
            },
            "kind": {
                "description": "REST resource this object represents, in CamelCase.",
                "type": "string",
            },
            "metadata": { "type": "object" },
            "spec": generator.subschema_for::<Spec>(),
            "status": generator.subschema_for::<Status>(),
        },
    });
    non_nullable(&mut schema);
    schema
}

/// Removes `null` from every (sub)schema: `type: [T, "null"]` becomes `type: T`, an
/// `anyOf: [S, {type: null}]` becomes `S` (merged with its siblings, which win), `null` leaves
/// `enum`, and `nullable` is dropped.
pub(crate) fn non_nullable(schema: &mut Schema) {
    transform_subschemas(&mut non_nullable, schema);
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(any_of)) = obj.get("anyOf")
        && any_of.len() == 2
        && any_of.iter().any(is_null_schema)
    {
        let inner = any_of.iter().find(|s| !is_null_schema(s)).cloned();
        obj.remove("anyOf");
        if let Some(Value::Object(inner)) = inner {
            for (key, value) in inner {
                obj.entry(key).or_insert(value);
            }
        }
    }
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let single = types.remove(0);
            obj.insert("type".into(), single);
        }
    }
    if let Some(Value::Array(values)) = obj.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    obj.remove("nullable");
}

/// `{name}` reference to an object in the same namespace (`corev1.LocalObjectReference` as
/// controller-gen renders it: atomic map, `name` defaulted to `""`, nothing required).
pub(crate) fn local_object_reference(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<LocalObjectReference>();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("required");
        if let Some(name) = property_mut(obj, "name") {
            name.insert("default".into(), json!(""));
        }
        obj.insert("x-kubernetes-map-type".into(), json!("atomic"));
    }
    schema
}

/// `metav1.LabelSelector` with the list and map semantics the Kubernetes Go types declare.
pub(crate) fn label_selector(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<LabelSelector>();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-kubernetes-map-type".into(), json!("atomic"));
        if let Some(expressions) = property_mut(obj, "matchExpressions") {
            expressions.insert("x-kubernetes-list-type".into(), json!("atomic"));
            if let Some(Value::Object(requirement)) = expressions.get_mut("items")
                && let Some(values) = property_mut(requirement, "values")
            {
                values.insert("x-kubernetes-list-type".into(), json!("atomic"));
            }
        }
    }
    schema
}

/// A list of `metav1.Condition` with the validations from its kubebuilder markers.
pub(crate) fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut condition = generator.subschema_for::<Condition>();
    if let Some(obj) = condition.as_object_mut() {
        let limits: [(&str, Value); 5] = [
            ("message", json!({ "maxLength": 32768 })),
            ("observedGeneration", json!({ "minimum": 0 })),
            (
                "reason",
                json!({
                    "maxLength": 1024,
                    "minLength": 1,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                }),
            ),
            ("status", json!({ "enum": ["True", "False", "Unknown"] })),
            (
                "type",
                json!({
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                }),
            ),
        ];
        for (name, extra) in limits {
            if let (Some(property), Value::Object(extra)) = (property_mut(obj, name), extra) {
                property.extend(extra);
            }
        }
    }
    json_schema!({
        "type": "array",
        "items": condition,
    })
}

/// A Go `int`: controller-gen writes `type: integer` without a `format`.
pub(crate) fn go_int(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer" })
}

fn property_mut<'a>(
    obj: &'a mut Map<String, Value>,
    name: &str,
) -> Option<&'a mut Map<String, Value>> {
    match obj.get_mut("properties")?.get_mut(name)? {
        Value::Object(property) => Some(property),
        _ => None,
    }
}

fn is_null_schema(value: &Value) -> bool {
    value.get("type").and_then(Value::as_str) == Some("null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_nullable_unwraps_any_of_and_type_arrays() {
        let mut schema = json_schema!({
            "type": "object",
            "properties": {
                "a": { "type": ["string", "null"], "description": "a" },
                "b": {
                    "description": "outer",
                    "anyOf": [
                        { "type": "object", "description": "inner", "properties": {} },
                        { "type": "null" },
                    ],
                },
                "c": { "type": ["string", "null"], "enum": ["X", null], "nullable": true },
            },
        });
        non_nullable(&mut schema);
        assert_eq!(
            schema.to_value(),
            json!({
                "type": "object",
                "properties": {
                    "a": { "type": "string", "description": "a" },
                    "b": { "type": "object", "description": "outer", "properties": {} },
                    "c": { "type": "string", "enum": ["X"] },
                },
            })
        );
    }
}
