//! One serving-certificate Secret per configured router, for routers that run as pods.
//!
//! Secret [`secret_name`]`(router)` is a `kubernetes.io/tls` Secret with `tls.crt` (the
//! chain, leaf first), `tls.key` and `ca.crt` (the CA, which QUIC routers also use to
//! admit peers holding lease certificates). The certificate's SANs are the hosts of the
//! router's advertised endpoint and QUIC endpoint. The Secret is re-minted when it is
//! missing or incomplete, when the advertised endpoints or the CA changed, or when the
//! certificate has less than [`RENEW_BEFORE`] left; otherwise it is left alone, so every
//! controller replica may run this at start and periodically.
//!
//! Routers re-read the mounted files while they run (`--reload-interval`), so a re-minted
//! certificate is served to new connections without a restart once the kubelet has
//! updated the mount.
//!
//! Given an owner ([`Settings::owner`]) every Secret carries a reference to it: new ones
//! from the start, current ones written before the owner was configured get it without
//! being re-minted.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use time::{Duration, OffsetDateTime};

use super::{CA_CERT_KEY, Keys, KeysError, TLS_CERT_KEY, TLS_KEY_KEY};
use crate::crd::vocabulary::{NOT_AFTER_ANNOTATION, ROUTER_ENDPOINTS_ANNOTATION};
use crate::settings::{RouterEntry, Settings};
use crate::store::{Store, StoreError};

/// Certificates last [`super::SERVER_CERT_VALIDITY`] (a year); renewing a month ahead
/// leaves room for a controller that only checks every few hours and for router restarts.
pub const RENEW_BEFORE: Duration = Duration::days(30);
/// Attempts at writing one Secret while other replicas write it too.
const WRITE_ATTEMPTS: usize = 5;

/// The name of the certificate Secret of router `router`.
pub(crate) fn secret_name(router: &str) -> String {
    format!("{router}-tls")
}

/// Makes sure every router of `settings` has a current certificate Secret in its
/// namespace, owned by [`Settings::owner`]. Returns how many Secrets were written.
pub async fn publish<S: Store>(
    store: &S,
    settings: &Settings,
    keys: &Keys,
    now: OffsetDateTime,
) -> Result<usize, KeysError> {
    let (namespace, owner) = (settings.namespace.as_str(), settings.owner.as_ref());
    let mut written = 0;
    for router in &settings.routers {
        if ensure(store, namespace, owner, keys, router, now).await? {
            written += 1;
        }
    }
    Ok(written)
}

async fn ensure<S: Store>(
    store: &S,
    namespace: &str,
    owner: Option<&OwnerReference>,
    keys: &Keys,
    router: &RouterEntry,
    now: OffsetDateTime,
) -> Result<bool, KeysError> {
    let name = secret_name(&router.name);
    let endpoints = format!(
        "{};{}",
        router.endpoint,
        router.quic_endpoint.as_deref().unwrap_or("")
    );
    let err = |operation, source| KeysError::Store {
        operation,
        kind: "Secret",
        namespace: namespace.to_owned(),
        name: name.clone(),
        source: Box::new(source),
    };
    for _ in 0..WRITE_ATTEMPTS {
        let existing = store
            .get::<Secret>(namespace, &name)
            .await
            .map_err(|e| err("read", e))?;
        if let Some(current) = existing
            .as_ref()
            .filter(|s| is_current(s, keys, &endpoints, now))
        {
            // Still good: only an owner it lacks is added, the certificate stays.
            let mut current = current.clone();
            if !crate::owner::adopt_if(&mut current.metadata, owner) {
                return Ok(false);
            }
            match store.replace(&current).await {
                Ok(_) => {
                    tracing::info!(router = %router.name, secret = %name, "router certificate Secret given its owner");
                    return Ok(true);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(err("write", e)),
            }
        }
        let extra: Vec<String> = router
            .quic_endpoint
            .iter()
            .filter_map(|q| super::endpoint_host(q).map(str::to_owned))
            .collect();
        let cert = keys.router_server_cert(&router.endpoint, &extra, now)?;
        let mut secret = existing.clone().unwrap_or_else(|| Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            ..Secret::default()
        });
        crate::owner::adopt_if(&mut secret.metadata, owner);
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(
                "app.kubernetes.io/managed-by".to_owned(),
                "jumpstarter-controller".to_owned(),
            );
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(ROUTER_ENDPOINTS_ANNOTATION.to_owned(), endpoints.clone());
        annotations.insert(
            NOT_AFTER_ANNOTATION.to_owned(),
            cert.not_after.unix_timestamp().to_string(),
        );
        let entry = |value: &str| ByteString(value.as_bytes().to_vec());
        secret.data = Some(BTreeMap::from([
            (TLS_CERT_KEY.to_owned(), entry(&cert.chain_pem)),
            (TLS_KEY_KEY.to_owned(), entry(&cert.key_pem)),
            (CA_CERT_KEY.to_owned(), entry(keys.ca.cert_pem())),
        ]));
        let result = if existing.is_some() {
            store.replace(&secret).await
        } else {
            store.create(&secret).await
        };
        match result {
            Ok(_) => {
                tracing::info!(router = %router.name, secret = %name, %endpoints, "router certificate written");
                return Ok(true);
            }
            Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(err("write", e)),
        }
    }
    Err(err(
        "write",
        StoreError::Conflict {
            kind: "Secret".into(),
            namespace: namespace.to_owned(),
            name: name.clone(),
            message: format!("still conflicting after {WRITE_ATTEMPTS} attempts"),
        },
    ))
}

/// Whether `secret` holds a certificate for `endpoints` from the current CA that does not
/// need renewing yet.
fn is_current(secret: &Secret, keys: &Keys, endpoints: &str, now: OffsetDateTime) -> bool {
    let annotation = |key: &str| {
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    let data = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
    };
    let not_after = annotation(NOT_AFTER_ANNOTATION)
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
    annotation(ROUTER_ENDPOINTS_ANNOTATION) == Some(endpoints)
        && not_after.is_some_and(|t| t - now > RENEW_BEFORE)
        && data(CA_CERT_KEY) == Some(keys.ca.cert_pem().as_bytes())
        && data(TLS_CERT_KEY).is_some_and(|c| !c.is_empty())
        && data(TLS_KEY_KEY).is_some_and(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Material;

    fn keys(now: OffsetDateTime) -> Keys {
        let settings = Settings::example("lab", "c.lab:8082", "r.lab:8083");
        Material::generate(now)
            .expect("generate")
            .into_keys("lab", &settings)
            .expect("keys")
    }

    fn minted(keys: &Keys, endpoints: &str, not_after: OffsetDateTime) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (ROUTER_ENDPOINTS_ANNOTATION.to_owned(), endpoints.to_owned()),
                    (
                        NOT_AFTER_ANNOTATION.to_owned(),
                        not_after.unix_timestamp().to_string(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                (TLS_CERT_KEY.to_owned(), ByteString(b"c".to_vec())),
                (TLS_KEY_KEY.to_owned(), ByteString(b"k".to_vec())),
                (
                    CA_CERT_KEY.to_owned(),
                    ByteString(keys.ca.cert_pem().as_bytes().to_vec()),
                ),
            ])),
            ..Secret::default()
        }
    }

    #[test]
    fn renewal_triggers() {
        let now = OffsetDateTime::now_utc();
        let keys = keys(now);
        let later = now + Duration::days(200);
        assert!(is_current(
            &minted(&keys, "r:1;", later),
            &keys,
            "r:1;",
            now
        ));
        // Endpoint changed.
        assert!(!is_current(
            &minted(&keys, "r:1;", later),
            &keys,
            "r:2;",
            now
        ));
        // Close to expiry.
        let soon = now + RENEW_BEFORE - Duration::days(1);
        assert!(!is_current(
            &minted(&keys, "r:1;", soon),
            &keys,
            "r:1;",
            now
        ));
        // Another CA.
        let other = self::keys(now);
        assert!(!is_current(
            &minted(&other, "r:1;", later),
            &keys,
            "r:1;",
            now
        ));
        // Incomplete.
        let mut partial = minted(&keys, "r:1;", later);
        partial.data.as_mut().map(|d| d.remove(TLS_KEY_KEY));
        assert!(!is_current(&partial, &keys, "r:1;", now));
        assert_eq!(secret_name("lab-router-0"), "lab-router-0-tls");
    }
}
