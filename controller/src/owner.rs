//! The owner of the objects the controller creates while it runs: the router certificate
//! Secrets, the ConfigMaps [`crate::keys::CA_CONFIG_MAP`] and
//! [`crate::keys::ROUTER_KEYS_CONFIG_MAP`], and the leader election Lease.
//!
//! With `--owner-deployment` (the Helm chart passes the controller's own Deployment) each
//! of them carries an ownerReference to that Deployment, set when the object is created and
//! added to an existing one the next time the controller writes or checks it (after an
//! upgrade from a release without the flag). Kubernetes' garbage collector then deletes
//! them together with the Deployment, so `helm uninstall` leaves nothing of the controller
//! behind but the custom resources and what belongs to the users: the keys Secret
//! [`crate::keys::KEYS_SECRET`] and the credential Secrets never get an owner, so issued
//! credentials stay valid across a reinstall.
//!
//! The reference has `controller: false` (the Deployment does not manage these objects) and
//! `blockOwnerDeletion: false`, which needs no permission on the Deployment's finalizers;
//! reading the Deployment once at start (for its uid) needs `get` on it.
//!
//! Without the flag (standalone mode, other setups) nothing carries an owner.

use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;

use crate::store::{Store, StoreError};

/// `apiVersion` of the owner reference.
const DEPLOYMENT_API_VERSION: &str = "apps/v1";
/// `kind` of the owner reference.
const DEPLOYMENT_KIND: &str = "Deployment";

/// The flag naming the owner.
#[derive(Debug, Clone, Default, Args)]
pub struct OwnerArgs {
    /// Deployment (in `--namespace`) that owns the router certificate Secrets, the CA and
    /// router-token ConfigMaps and the leader election Lease, so that deleting it deletes
    /// them; usually the controller's own. Needs `get` on that Deployment. The keys and
    /// credential Secrets are never owned [default: no owner].
    #[arg(long, env = "JUMPSTARTER_OWNER_DEPLOYMENT")]
    pub owner_deployment: Option<String>,
}

impl OwnerArgs {
    /// The owner reference to put on the objects, or `None` without the flag.
    pub async fn resolve<S: Store>(
        &self,
        store: &S,
        namespace: &str,
    ) -> Result<Option<OwnerReference>, OwnerError> {
        match &self.owner_deployment {
            None => Ok(None),
            Some(name) => deployment_owner(store, namespace, name).await.map(Some),
        }
    }
}

/// Why the owner Deployment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The Deployment does not exist.
    #[error(
        "owner Deployment {namespace}/{name} (--owner-deployment) does not exist; create it or drop the flag"
    )]
    NotFound { namespace: String, name: String },
    /// The API refuses to show it.
    #[error(
        "reading the owner Deployment {namespace}/{name} (--owner-deployment) is forbidden: the controller needs `get` on deployments (apps) named {name} in {namespace}"
    )]
    Forbidden {
        namespace: String,
        name: String,
        #[source]
        source: StoreError,
    },
    /// Reading it failed otherwise.
    #[error("reading the owner Deployment {namespace}/{name} (--owner-deployment) failed")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: StoreError,
    },
    /// The API server returned it without a uid (never the case for a stored object).
    #[error("the owner Deployment {namespace}/{name} has no uid")]
    NoUid { namespace: String, name: String },
}

/// Reads Deployment `name` in `namespace` and returns a reference to it.
pub async fn deployment_owner<S: Store>(
    store: &S,
    namespace: &str,
    name: &str,
) -> Result<OwnerReference, OwnerError> {
    let (ns, n) = (namespace.to_owned(), name.to_owned());
    let deployment = match store.get::<Deployment>(namespace, name).await {
        Ok(Some(deployment)) => deployment,
        Ok(None) | Err(StoreError::NotFound { .. }) => {
            return Err(OwnerError::NotFound {
                namespace: ns,
                name: n,
            });
        }
        Err(source @ StoreError::Forbidden { .. }) => {
            return Err(OwnerError::Forbidden {
                namespace: ns,
                name: n,
                source,
            });
        }
        Err(source) => {
            return Err(OwnerError::Read {
                namespace: ns,
                name: n,
                source,
            });
        }
    };
    let uid = deployment
        .metadata
        .uid
        .filter(|uid| !uid.is_empty())
        .ok_or_else(|| OwnerError::NoUid {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
    Ok(deployment_reference(name, &uid))
}

/// A reference to Deployment `name` with `uid`: neither the controller of the object nor
/// blocking the Deployment's deletion.
pub fn deployment_reference(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: DEPLOYMENT_API_VERSION.to_owned(),
        kind: DEPLOYMENT_KIND.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

/// Puts `owner` among the owner references of `meta`; returns whether `meta` changed.
///
/// A reference with the same uid is left as it is. A reference to an earlier Deployment of
/// the same name (deleted and recreated, e.g. by an uninstall that orphaned its dependents)
/// is replaced; references to anything else stay.
pub fn adopt(meta: &mut ObjectMeta, owner: &OwnerReference) -> bool {
    let references = meta.owner_references.get_or_insert_with(Vec::new);
    if references.iter().any(|r| r.uid == owner.uid) {
        return false;
    }
    let group = |api_version: &str| api_version.split('/').next().map(str::to_owned);
    references.retain(|r| {
        !(r.kind == owner.kind
            && r.name == owner.name
            && group(&r.api_version) == group(&owner.api_version))
    });
    references.push(owner.clone());
    true
}

/// [`adopt`] when there is an owner; `false` (unchanged) otherwise.
pub(crate) fn adopt_if(meta: &mut ObjectMeta, owner: Option<&OwnerReference>) -> bool {
    owner.is_some_and(|owner| adopt(meta, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn a_new_object_gets_the_reference_once() {
        let owner = deployment_reference("lab-controller", "uid-1");
        assert_eq!(owner.api_version, "apps/v1");
        assert_eq!(owner.kind, "Deployment");
        assert_eq!(owner.controller, Some(false));
        assert_eq!(owner.block_owner_deletion, Some(false));
        let mut meta = ObjectMeta::default();
        assert!(adopt(&mut meta, &owner));
        assert_eq!(meta.owner_references.as_deref(), Some(&[owner.clone()][..]));
        assert!(!adopt(&mut meta, &owner), "already owned: unchanged");
        assert_eq!(meta.owner_references.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn other_owners_stay_and_a_stale_uid_of_the_same_deployment_is_replaced() {
        let owner = deployment_reference("lab-controller", "uid-2");
        let other = reference(
            "jumpstarter.dev/v1alpha1",
            "Exporter",
            "lab-controller",
            "x",
        );
        let other_deployment = reference("apps/v1", "Deployment", "someone-else", "y");
        let stale = reference("apps/v1", "Deployment", "lab-controller", "uid-1");
        let mut meta = ObjectMeta {
            owner_references: Some(vec![other.clone(), stale, other_deployment.clone()]),
            ..ObjectMeta::default()
        };
        assert!(adopt(&mut meta, &owner));
        assert_eq!(
            meta.owner_references,
            Some(vec![other, other_deployment, owner])
        );
    }

    #[test]
    fn without_an_owner_nothing_changes() {
        let mut meta = ObjectMeta::default();
        assert!(!adopt_if(&mut meta, None));
        assert_eq!(meta.owner_references, None);
        let owner = deployment_reference("d", "u");
        assert!(adopt_if(&mut meta, Some(&owner)));
        assert!(!adopt_if(&mut meta, Some(&owner)));
    }
}
