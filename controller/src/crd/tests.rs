//! Round trips: objects as jumpstarter 0.9.0 writes them deserialize into these types and
//! serialize back to the same JSON.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

fn round_trip<K: DeserializeOwned + Serialize>(input: Value) -> K {
    let object: K = serde_json::from_value(input.clone()).expect("deserializes");
    let output = serde_json::to_value(&object).expect("serializes");
    assert_eq!(output, input, "round trip changed the JSON");
    object
}

#[test]
fn client_round_trips() {
    let client: Client = round_trip(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "Client",
        "metadata": { "name": "alice", "namespace": "lab", "uid": "3d2c0c1e-1111-2222-3333-444455556666" },
        "spec": { "username": "oidc:alice" },
        "status": { "credential": { "name": "alice-client" }, "endpoint": "grpc.lab.example.com:443" },
    }));
    let status = client.status.expect("status");
    assert_eq!(status.credential.expect("credential").name, "alice-client");
}

#[test]
fn client_without_optional_fields_round_trips() {
    let client: Client = round_trip(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "Client",
        "metadata": { "name": "bob" },
        "spec": {},
    }));
    assert_eq!(client.spec, ClientSpec::default());
    assert!(client.status.is_none());
}

#[test]
fn exporter_with_devices_and_conditions_round_trips() {
    let exporter: Exporter = round_trip(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "Exporter",
        "metadata": { "name": "board-1", "namespace": "lab", "labels": { "board": "rpi4" } },
        "spec": { "enabled": false },
        "status": {
            "conditions": [
                {
                    "type": "Registered",
                    "status": "True",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2025-01-02T03:04:05Z",
                    "reason": "Register",
                    "message": "",
                },
                {
                    "type": "Online",
                    "status": "False",
                    "lastTransitionTime": "2025-01-02T03:05:05Z",
                    "reason": "Seen",
                    "message": "last seen more than 1m ago",
                },
            ],
            "credential": { "name": "board-1-exporter" },
            "devices": [
                { "uuid": "a1", "labels": { "jumpstarter.dev/client": "PowerClient" } },
                { "uuid": "a2", "parent_uuid": "a1", "labels": {} },
            ],
            "endpoint": "grpc.lab.example.com:443",
            "exporterStatus": "LeaseReady",
            "lastSeen": "2025-01-02T03:04:59Z",
            "leaseRef": { "name": "lease-7" },
            "statusMessage": "ready",
        },
    }));
    assert!(!exporter.spec.is_enabled());
    let status = exporter.status.expect("status");
    assert_eq!(
        status.exporter_status,
        Some(ExporterStatusValue::LeaseReady)
    );
    let devices = status.devices.expect("devices");
    assert_eq!(devices[1].parent_uuid.as_deref(), Some("a1"));
    assert_eq!(
        status.conditions.expect("conditions")[0].observed_generation,
        Some(1)
    );
}

#[test]
fn exporter_enabled_defaults_to_true() {
    let exporter: Exporter = round_trip(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "Exporter",
        "metadata": { "name": "board-2" },
        "spec": { "username": "oidc:robot" },
        "status": { "exporterStatus": "Available" },
    }));
    assert!(exporter.spec.is_enabled());
}

#[test]
fn unknown_exporter_status_is_rejected() {
    let result = serde_json::from_value::<ExporterStatus>(json!({ "exporterStatus": "Sleeping" }));
    assert!(result.is_err());
}

#[test]
fn lease_with_selector_and_conditions_round_trips() {
    let lease: Lease = round_trip(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "Lease",
        "metadata": {
            "name": "0195f6a8-lease",
            "namespace": "lab",
            "labels": { "board": "rpi4", "jumpstarter.dev/lease-ended": "true" },
        },
        "spec": {
            "clientRef": { "name": "alice" },
            "duration": "1h30m0s",
            "selector": {
                "matchLabels": { "board": "rpi4" },
                "matchExpressions": [
                    { "key": "site", "operator": "In", "values": ["a", "b"] },
                    { "key": "broken", "operator": "DoesNotExist" },
                ],
            },
            "tags": { "team": "kernel" },
            "release": true,
            "beginTime": "2025-01-02T03:00:00Z",
            "endTime": "2025-01-02T04:30:00Z",
        },
        "status": {
            "beginTime": "2025-01-02T03:00:01Z",
            "endTime": "2025-01-02T03:10:00Z",
            "ended": true,
            "exporterRef": { "name": "board-1" },
            "priority": 5,
            "spotAccess": false,
            "conditions": [
                {
                    "type": "Pending",
                    "status": "False",
                    "lastTransitionTime": "2025-01-02T03:00:01Z",
                    "reason": "Ready",
                    "message": "",
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "lastTransitionTime": "2025-01-02T03:10:00Z",
                    "reason": "Released",
                    "message": "The lease was released",
                },
            ],
        },
    }));
    assert_eq!(lease.spec.client_ref.name, "alice");
    assert_eq!(lease.spec.duration.as_deref(), Some("1h30m0s"));
    let status = lease.status.expect("status");
    assert!(status.ended);
    assert_eq!(status.conditions.expect("conditions")[1].reason, "Released");
}

#[test]
fn lease_status_always_writes_ended() {
    let lease: Lease = round_trip(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "Lease",
        "metadata": { "name": "pinned" },
        "spec": {
            "clientRef": { "name": "alice" },
            "selector": {},
            "exporterRef": { "name": "board-1" },
            "allowDisabled": true,
        },
        "status": { "ended": false },
    }));
    let status = serde_json::to_value(lease.status.expect("status")).expect("serializes");
    assert_eq!(status, json!({ "ended": false }));
}

#[test]
fn exporter_access_policy_round_trips() {
    let policy: ExporterAccessPolicy = round_trip(json!({
        "apiVersion": "jumpstarter.dev/v1alpha1",
        "kind": "ExporterAccessPolicy",
        "metadata": { "name": "default", "namespace": "lab" },
        "spec": {
            "exporterSelector": { "matchLabels": { "board": "rpi4" } },
            "policies": [
                {
                    "description": "kernel team first",
                    "priority": 20,
                    "from": [ { "clientSelector": { "matchLabels": { "team": "kernel" } } } ],
                    "maximumDuration": "24h",
                },
                {
                    "priority": 0,
                    "from": [ { "clientSelector": {} } ],
                    "spotAccess": true,
                },
            ],
        },
        "status": {},
    }));
    let policies = policy.spec.policies.expect("policies");
    assert_eq!(policies[0].priority, Some(20));
    assert_eq!(policies[1].spot_access, Some(true));
}

#[test]
fn render_all_names_the_four_files() {
    let names: Vec<String> = render_all().into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "jumpstarter.dev_clients.yaml",
            "jumpstarter.dev_exporteraccesspolicies.yaml",
            "jumpstarter.dev_exporters.yaml",
            "jumpstarter.dev_leases.yaml",
        ]
    );
}

#[test]
fn rendered_yaml_starts_with_the_regenerate_command_and_has_no_nullable() {
    for (name, text) in render_all() {
        assert!(text.starts_with("# Generated by `cargo run"), "{name}");
        assert!(text.contains(REGENERATE_COMMAND), "{name}");
        assert!(!text.contains("nullable"), "{name} mentions nullable");
    }
}
