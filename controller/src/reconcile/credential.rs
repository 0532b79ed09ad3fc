//! Credential Secrets of Clients and Exporters (0.9.0 convention): Secret `<name>-client` or
//! `<name>-exporter`, type Opaque, key `token`, controlled by the object it belongs to.
//!
//! A token is re-signed when the Secret is missing, or its token does not verify with the
//! current issuer for the object's subject (`client:<ns>:<name>:<uid>`), e.g. after the
//! object was re-created with a new UID or the token expired, or its token is of an older
//! credential generation than the object's (an administrator raised it to revoke).

use std::collections::BTreeMap;

use jumpstarter_token::internal::{CachedVerifier, Issuer, ObjectKind, Subject};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use time::OffsetDateTime;

use super::ReconcileError;
use crate::store::Store;

/// Key of the credential Secret holding the token.
pub(crate) const TOKEN_KEY: &str = "token";

/// The Client or Exporter a credential belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub(crate) kind: ObjectKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    /// The object's credential generation (`crate::auth::revocation`): tokens below it
    /// are revoked, new ones are issued at it.
    pub(crate) generation: u64,
    /// `jumpstarter.dev/migrated-namespace` and `-uid`: the namespace and UID its tokens
    /// name instead (an object moved from another installation keeps its credentials,
    /// as authentication accepts them).
    pub(crate) migrated_namespace: Option<String>,
    pub(crate) migrated_uid: Option<String>,
}

impl Holder {
    /// `<name>-client` or `<name>-exporter`.
    pub(crate) fn secret_name(&self) -> String {
        secret_name(self.kind, &self.name)
    }

    /// The subject its tokens carry: the one authentication compares with (migration
    /// annotations applied).
    fn subject(&self) -> Subject {
        Subject {
            kind: self.kind,
            namespace: self
                .migrated_namespace
                .clone()
                .unwrap_or_else(|| self.namespace.clone()),
            name: self.name.clone(),
            uid: self
                .migrated_uid
                .clone()
                .unwrap_or_else(|| self.uid.clone()),
        }
    }

    fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: crate::crd::vocabulary::API_VERSION.to_owned(),
            kind: self.kind.as_str().to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The credential Secret name of a Client or Exporter.
pub(crate) fn secret_name(kind: ObjectKind, name: &str) -> String {
    match kind {
        ObjectKind::Client => format!("{name}-client"),
        ObjectKind::Exporter => format!("{name}-exporter"),
    }
}

/// Makes sure `holder` has a Secret with a valid token; `existing` is the Secret as read in
/// this pass. Returns whether anything was written.
/// Whether `existing` already is `holder`'s credential as [`ensure`] would leave it (a valid
/// token for it, and its controller reference): nothing to write.
pub(crate) fn in_place(
    holder: &Holder,
    existing: Option<&Secret>,
    verifier: &CachedVerifier,
    now: OffsetDateTime,
) -> bool {
    existing.is_some_and(|secret| {
        owned_by(secret, holder) && token_is_valid(secret, verifier, holder, now)
    })
}

fn owned_by(secret: &Secret, holder: &Holder) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == holder.uid && r.controller == Some(true))
}

pub(crate) async fn ensure<S: Store>(
    store: &S,
    holder: &Holder,
    existing: Option<&Secret>,
    issuer: &Issuer,
    verifier: &CachedVerifier,
    now: OffsetDateTime,
) -> Result<bool, ReconcileError> {
    let subject = holder.subject();
    let valid = existing.is_some_and(|secret| token_is_valid(secret, verifier, holder, now));
    if valid && existing.is_some_and(|secret| owned_by(secret, holder)) {
        return Ok(false);
    }
    let owner = holder.owner_reference();
    let write_error = |source| ReconcileError::Write {
        kind: "Secret",
        namespace: holder.namespace.clone(),
        name: holder.secret_name(),
        source,
    };
    let mut secret = existing.cloned().unwrap_or_else(|| Secret {
        metadata: ObjectMeta {
            name: Some(holder.secret_name()),
            namespace: Some(holder.namespace.clone()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    });
    if !valid {
        let (token, _expiry) = issuer
            .issue_generation(&subject, holder.generation, now)
            .map_err(|source| ReconcileError::Token {
                kind: holder.kind.as_str(),
                namespace: holder.namespace.clone(),
                name: holder.name.clone(),
                source,
            })?;
        secret
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert(TOKEN_KEY.to_owned(), ByteString(token.into_bytes()));
    }
    // Exactly one controller reference: ours.
    let refs = secret
        .metadata
        .owner_references
        .get_or_insert_with(Vec::new);
    refs.retain(|r| r.controller != Some(true) && r.uid != holder.uid);
    refs.push(owner);

    if existing.is_some() {
        store.replace(&secret).await.map_err(write_error)?;
    } else {
        // The pass read the holder a while ago; if it was deleted since (its own Secret
        // with it), creating the Secret now would leave an orphan where nothing
        // garbage-collects (the embedded store, an API server without a collector).
        if !still_exists(store, holder).await? {
            tracing::debug!(name = %holder.name, "holder deleted meanwhile; no credential written");
            return Ok(false);
        }
        store.create(&secret).await.map_err(write_error)?;
    }
    tracing::info!(
        kind = holder.kind.as_str(),
        name = %holder.name,
        secret = %holder.secret_name(),
        resigned = !valid,
        "credential Secret written"
    );
    Ok(true)
}

/// Whether the holder still exists with the same UID.
async fn still_exists<S: Store>(store: &S, holder: &Holder) -> Result<bool, ReconcileError> {
    let read_error = |source| ReconcileError::Read {
        namespace: holder.namespace.clone(),
        source,
    };
    let uid = match holder.kind {
        ObjectKind::Client => store
            .get::<crate::crd::Client>(&holder.namespace, &holder.name)
            .await
            .map_err(read_error)?
            .and_then(|object| object.metadata.uid),
        ObjectKind::Exporter => store
            .get::<crate::crd::Exporter>(&holder.namespace, &holder.name)
            .await
            .map_err(read_error)?
            .and_then(|object| object.metadata.uid),
    };
    Ok(uid.as_deref() == Some(holder.uid.as_str()))
}

fn token_is_valid(
    secret: &Secret,
    verifier: &CachedVerifier,
    holder: &Holder,
    now: OffsetDateTime,
) -> bool {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(TOKEN_KEY)) else {
        return false;
    };
    let Ok(token) = std::str::from_utf8(&bytes.0) else {
        return false;
    };
    verifier.verify(token.trim(), now).is_ok_and(|claims| {
        claims.sub == holder.subject().to_string()
            && crate::auth::revocation::is_current(claims.generation, holder.generation)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jumpstarter_token::SigningKey;
    use jumpstarter_token::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};
    use k8s_openapi::ByteString;
    use time::macros::datetime;

    use super::*;

    fn holder(migrated: bool) -> Holder {
        Holder {
            kind: ObjectKind::Client,
            namespace: "lab".into(),
            name: "alice".into(),
            uid: "u-new".into(),
            generation: 0,
            migrated_namespace: migrated.then(|| "old-lab".into()),
            migrated_uid: migrated.then(|| "u-old".into()),
        }
    }

    fn secret_with(token: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_owned(),
                ByteString(token.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_migrated_objects_token_names_its_migrated_subject() {
        let issuer = Issuer {
            key: SigningKey::generate().unwrap(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            lifetime: time::Duration::days(1),
        };
        let verifier = CachedVerifier::new(issuer.verifier(), 4);
        let now = datetime!(2026-12-01 0:00 UTC);
        let migrated = holder(true);
        assert_eq!(migrated.subject().to_string(), "client:old-lab:alice:u-old");
        // The token an earlier installation issued for the migrated subject is kept...
        let (old, _) = issuer.issue(&migrated.subject(), now).unwrap();
        assert!(token_is_valid(
            &secret_with(&old),
            &verifier,
            &migrated,
            now
        ));
        // ...and one naming the object's own namespace and UID is not what authentication
        // accepts for it, so it is re-signed.
        let (own, _) = issuer.issue(&holder(false).subject(), now).unwrap();
        assert!(!token_is_valid(
            &secret_with(&own),
            &verifier,
            &migrated,
            now
        ));
        assert!(token_is_valid(
            &secret_with(&own),
            &verifier,
            &holder(false),
            now
        ));
    }
}
