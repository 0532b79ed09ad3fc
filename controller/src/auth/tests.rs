use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::username::{Origin, origin};
use super::*;
use crate::crd::ClientSpec;
use crate::crd::vocabulary::MIGRATED_UID_ANNOTATION;

fn call(auth: &[&str], kind: &[&str], ns: &[&str], name: &[&str]) -> CallMetadata {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    CallMetadata {
        authorization: owned(auth),
        kind: owned(kind),
        namespace: owned(ns),
        name: owned(name),
    }
}

fn identity() -> ObjectIdentity {
    ObjectIdentity {
        kind: ObjectKind::Client,
        namespace: "lab".into(),
        name: "alice".into(),
        uid: "u-1".into(),
        username: Some("dex:alice".into()),
        migrated_namespace: None,
        migrated_uid: None,
        token_generation: Ok(0),
    }
}

#[test]
fn tokens_below_the_objects_generation_are_revoked() {
    let rotated = ObjectIdentity {
        token_generation: Ok(2),
        ..identity()
    };
    let user = "internal:client:lab:alice:u-1";
    let err = authorize(user, Some(1), &alice(), &rotated, INTERNAL_PREFIX).unwrap_err();
    assert_eq!(err.reason(), "token_revoked");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.to_string().contains("token generation 1, current 2"),
        "{err}"
    );
    authorize(user, Some(2), &alice(), &rotated, INTERNAL_PREFIX).unwrap();
    authorize(user, Some(3), &alice(), &rotated, INTERNAL_PREFIX).unwrap();
    let broken = ObjectIdentity {
        token_generation: Err(revocation::GenerationError { value: "x".into() }),
        ..identity()
    };
    let err = authorize(user, Some(5), &alice(), &broken, INTERNAL_PREFIX).unwrap_err();
    assert_eq!(err.reason(), "bad_token_generation");
}

fn alice() -> Target {
    Target {
        kind: ObjectKind::Client,
        namespace: "lab".into(),
        name: "alice".into(),
    }
}

#[test]
fn bearer_token_cases() {
    let err = bearer_token(&call(&[], &[], &[], &[])).unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.to_string(), "missing authorization header");

    let err = bearer_token(&call(&["Basic abc"], &[], &[], &[])).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.to_string(), "malformed authorization header");

    let err = bearer_token(&call(&["Bearer "], &[], &[], &[])).unwrap_err();
    assert_eq!(err.to_string(), "malformed authorization header");

    let err = bearer_token(&call(&["Bearer a", "Bearer b"], &[], &[], &[])).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert_eq!(
        bearer_token(&call(&["bEaReR tok"], &[], &[], &[])).unwrap(),
        "tok"
    );
}

#[test]
fn target_requires_namespace_kind_and_name() {
    let err = target(
        &call(&[], &["Client"], &[], &["a"]),
        ObjectKind::Client,
        Origin::Named,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "missing metadata: jumpstarter-namespace");
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = target(
        &call(&[], &[], &["lab"], &["a"]),
        ObjectKind::Client,
        Origin::Named,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "missing metadata: jumpstarter-kind");

    let err = target(
        &call(&[], &["Client"], &["lab"], &[]),
        ObjectKind::Client,
        Origin::Named,
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = target(
        &call(&[], &["Exporter"], &["lab"], &["a"]),
        ObjectKind::Client,
        Origin::Named,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "object kind mismatch");
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = target(
        &call(&[], &["Client", "Client"], &["lab"], &["a"]),
        ObjectKind::Client,
        Origin::Named,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "multiple metadata: jumpstarter-kind");

    let ok = target(
        &call(&[], &["Client"], &["lab"], &["alice"]),
        ObjectKind::Client,
        Origin::Named,
    )
    .unwrap();
    assert_eq!(ok, alice());
}

#[test]
fn authorize_accepts_internal_subject_and_username() {
    let caller = authorize(
        "internal:client:lab:alice:u-1",
        Some(0),
        &alice(),
        &identity(),
        INTERNAL_PREFIX,
    )
    .unwrap();
    assert_eq!(caller.name, "alice");
    assert_eq!(caller.uid, "u-1");
    authorize("dex:alice", Some(0), &alice(), &identity(), INTERNAL_PREFIX).unwrap();
}

#[test]
fn authorize_denies_other_subjects() {
    for username in [
        "internal:client:lab:alice:u-2",
        "internal:client:lab:bob:u-1",
        "internal:exporter:lab:alice:u-1",
        "client:lab:alice:u-1",
        "alice",
    ] {
        let err = authorize(username, Some(0), &alice(), &identity(), INTERNAL_PREFIX).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{username}");
        assert_eq!(err.to_string(), "permission denied for client lab/alice");
    }
    let mut no_username = identity();
    no_username.username = None;
    assert!(
        authorize(
            "dex:alice",
            Some(0),
            &alice(),
            &no_username,
            INTERNAL_PREFIX
        )
        .is_err()
    );
}

#[test]
fn migration_annotations_override_the_subject() {
    let mut migrated = identity();
    migrated.migrated_namespace = Some("old".into());
    migrated.migrated_uid = Some("u-old".into());
    authorize(
        "internal:client:old:alice:u-old",
        Some(0),
        &alice(),
        &migrated,
        INTERNAL_PREFIX,
    )
    .unwrap();
    assert!(
        authorize(
            "internal:client:lab:alice:u-1",
            Some(0),
            &alice(),
            &migrated,
            INTERNAL_PREFIX,
        )
        .is_err()
    );
}

#[test]
fn identity_of_a_stored_client() {
    let client = Client {
        metadata: ObjectMeta {
            name: Some("alice".into()),
            namespace: Some("lab".into()),
            uid: Some("u-1".into()),
            annotations: Some(BTreeMap::from([(
                MIGRATED_UID_ANNOTATION.to_owned(),
                "u-0".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: ClientSpec {
            username: Some("dex:alice".into()),
        },
        status: None,
    };
    let id = ObjectIdentity::of_client(&client);
    assert_eq!(id.internal_subject().to_string(), "client:lab:alice:u-0");
    assert_eq!(id.username.as_deref(), Some("dex:alice"));
}

#[test]
fn call_metadata_reads_every_occurrence() {
    let mut map = MetadataMap::new();
    map.append(AUTHORIZATION, MetadataValue::from_static("Bearer x"));
    map.append(KIND, MetadataValue::from_static("Client"));
    map.append(KIND, MetadataValue::from_static("Exporter"));
    map.append(NAMESPACE, MetadataValue::from_static("lab"));
    let call = CallMetadata::from_metadata(&map);
    assert_eq!(call.authorization, vec!["Bearer x"]);
    assert_eq!(call.kind.len(), 2);
    assert!(call.name.is_empty());
}

#[test]
fn token_errors_are_unknown_and_keep_the_text() {
    let err = AuthError::Token(TokenError::Expired { exp: 1, now: 2 });
    assert_eq!(err.code(), Code::Unknown);
    assert!(err.to_string().contains("token is expired"));
    assert_eq!(err.reason(), "token_expired");
    let status = Status::from(err);
    assert_eq!(status.code(), Code::Unknown);
}

#[test]
fn external_users_act_as_the_object_named_after_them() {
    let user = "dex:Alice@Example.com";
    // No name given: derived from the username.
    let ok = target(
        &call(&[], &["Client"], &["lab"], &[]),
        ObjectKind::Client,
        origin(user),
    )
    .unwrap();
    assert_eq!(ok.name, "alice-example-com");
    // The same name given: fine.
    let ok = target(
        &call(&[], &["Client"], &["lab"], &["alice-example-com"]),
        ObjectKind::Client,
        origin(user),
    )
    .unwrap();
    assert_eq!(ok.name, "alice-example-com");
    // Another name: refused, as 0.9.0 does.
    let err = target(
        &call(&[], &["Client"], &["lab"], &["bob"]),
        ObjectKind::Client,
        origin(user),
    )
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.to_string().starts_with("resource name mismatch"),
        "{err}"
    );
    assert_eq!(err.reason(), "name_mismatch");
    // Service accounts name their object, like internal tokens.
    let sa = "kubernetes:system:serviceaccount:lab:ci";
    let err = target(
        &call(&[], &["Client"], &["lab"], &[]),
        ObjectKind::Client,
        origin(sa),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "resource name required for pre-existing authentication"
    );
    let ok = target(
        &call(&[], &["Client"], &["lab"], &["ci"]),
        ObjectKind::Client,
        origin(sa),
    )
    .unwrap();
    assert_eq!(ok.name, "ci");
}

#[test]
fn external_tokens_are_not_subject_to_credential_generations() {
    let rotated = ObjectIdentity {
        token_generation: Ok(2),
        ..identity()
    };
    let caller = authorize("dex:alice", None, &alice(), &rotated, INTERNAL_PREFIX).unwrap();
    assert_eq!(caller.username, "dex:alice");
}

#[test]
fn the_issuer_is_read_without_verifying() {
    use base64::Engine as _;
    let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let token = format!(
        "{}.{}.sig",
        encode("{}"),
        encode(r#"{"iss":"https://dex"}"#)
    );
    assert_eq!(unverified_issuer(&token).as_deref(), Some("https://dex"));
    assert_eq!(unverified_issuer("garbage"), None);
    assert_eq!(unverified_issuer(&format!("a.{}.c", encode("{}"))), None);
}
