//! The controller's long-lived key material and the certificates minted from it.
//!
//! At first start [`bootstrap`] generates a CA, the signing key of client and exporter
//! credentials and the signing key of router stream tokens, and stores them in the Secret
//! [`KEYS_SECRET`]. Every later start (and every replica) loads the same material, so issued
//! credentials stay valid across restarts. Content that does not parse is an error naming
//! the Secret and the key: regenerating silently would invalidate every credential.
//!
//! Bootstrap also publishes what others need to trust the controller:
//! - ConfigMap [`CA_CONFIG_MAP`] (`ca.crt`), which `jmp admin create` copies into client and
//!   exporter configurations;
//! - ConfigMap [`ROUTER_KEYS_CONFIG_MAP`] (`keys.pem`), the public router-token key that
//!   routers mount to verify stream tokens.
//!
//! Given an owner ([`Settings::owner`]), both ConfigMaps carry a reference to it and are
//! deleted with it; [`KEYS_SECRET`] never does, so issued credentials survive a reinstall.
//!
//! The CA can come from elsewhere instead ([`CaSource::Secret`], e.g. a cert-manager
//! Certificate): then the CA in [`KEYS_SECRET`] is ignored and the named
//! `kubernetes.io/tls` Secret is read (never written).
//!
//! [`router_secret`] keeps one serving-certificate Secret per configured router, so router
//! pods mount their certificate and never see the CA key.
//!
//! Signing keys rotate without a restart ([`live`], [`reload`]): besides the two signing
//! keys the Secret may hold [`TOKEN_VERIFY_KEYS_KEY`] and [`ROUTER_TOKEN_VERIFY_KEYS_KEY`],
//! public keys that still verify. The controller re-reads the Secret while it runs; a
//! changed Secret that parses replaces the keys in use (and the routers' ConfigMap), one
//! that does not is logged and the keys in use stay. Rotating the router key safely: add
//! the new public key to the router verify keys, wait for routers to load it, then make
//! the new key the signing key and keep the old public key among the verify keys until
//! the tokens it signed have expired.
//!
//! [`legacy`] adds, at start, the public key of a 0.9.0 controller (derived from its
//! `CONTROLLER_KEY`) to the keys that verify client and exporter credentials.
//!
//! Key material is never logged.

pub mod legacy;
pub mod live;
pub mod refresh;
pub mod router_secret;

use std::collections::BTreeMap;
use std::net::IpAddr;

use jumpstarter_certs::{Ca, IssuedCert, ServerCertParams, TlsCredentials};
use jumpstarter_shell::error_chain::error_chain;
use jumpstarter_token::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Issuer};
use jumpstarter_token::key::public_keys_from_pem;
use jumpstarter_token::{SigningKey, TokenError};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use live::TokenKeySet;
use time::{Duration, OffsetDateTime};

use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// Secret holding the CA and both signing keys.
pub const KEYS_SECRET: &str = "jumpstarter-controller-keys";
/// Key of [`KEYS_SECRET`]: the CA certificate, PEM.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of [`KEYS_SECRET`]: the CA private key, PKCS#8 PEM.
pub const CA_KEY_KEY: &str = "ca.key";
/// Key of [`KEYS_SECRET`]: the signing key of client and exporter tokens, PKCS#8 PEM.
pub const TOKEN_KEY_KEY: &str = "token-signing-key.pem";
/// Key of [`KEYS_SECRET`]: the signing key of router stream tokens, PKCS#8 PEM.
pub const ROUTER_TOKEN_KEY_KEY: &str = "router-token-signing-key.pem";
/// Optional key of [`KEYS_SECRET`]: public keys (SPKI PEM blocks) whose client and
/// exporter tokens are still accepted, e.g. the previous signing key's.
pub const TOKEN_VERIFY_KEYS_KEY: &str = "token-verify-keys.pem";
/// Optional key of [`KEYS_SECRET`]: public keys routers accept besides the router signing
/// key's, published in [`ROUTER_KEYS_CONFIG_MAP`].
pub const ROUTER_TOKEN_VERIFY_KEYS_KEY: &str = "router-token-verify-keys.pem";

/// ConfigMap with the CA certificate under [`CA_CERT_KEY`] (0.9.0 name; `jmp admin` reads it).
pub const CA_CONFIG_MAP: &str = "jumpstarter-service-ca-cert";
/// ConfigMap with the public router-token key under [`ROUTER_KEYS_KEY`], mounted by routers.
pub const ROUTER_KEYS_CONFIG_MAP: &str = "jumpstarter-router-token-keys";
/// Key of [`ROUTER_KEYS_CONFIG_MAP`]: public keys (SPKI PEM) that verify router tokens.
pub const ROUTER_KEYS_KEY: &str = "keys.pem";

/// Common name of the generated CA.
pub(crate) const CA_COMMON_NAME: &str = "jumpstarter-controller-ca";
/// The CA outlives any deployment we expect; rotating it re-issues every certificate.
pub(crate) const CA_VALIDITY: Duration = Duration::days(3650);
/// Serving certificates are minted at every start from the stored CA, so one year leaves a
/// process ample room; a restart renews them.
pub(crate) const SERVER_CERT_VALIDITY: Duration = Duration::days(365);

/// Key of a `kubernetes.io/tls` Secret: the certificate, PEM.
pub(crate) const TLS_CERT_KEY: &str = "tls.crt";
/// Key of a `kubernetes.io/tls` Secret: the private key, PEM.
pub(crate) const TLS_KEY_KEY: &str = "tls.key";

/// Where the CA that signs serving and lease certificates comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CaSource {
    /// The CA in [`KEYS_SECRET`], generated at first start.
    #[default]
    Generated,
    /// A `kubernetes.io/tls` Secret of that name maintained by someone else (cert-manager):
    /// [`TLS_CERT_KEY`] is the CA certificate, [`TLS_KEY_KEY`] its key (PKCS#8 PEM).
    Secret(String),
}

/// The controller's key material.
#[derive(Debug)]
pub struct Keys {
    /// Signs serving certificates (controller and routers) and lease certificates.
    pub ca: Ca,
    /// The token keys in use now: they sign and verify client and exporter credentials
    /// and sign router stream tokens (public halves in [`ROUTER_KEYS_CONFIG_MAP`]).
    pub tokens: live::LiveKeys,
}

/// Why the key material could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing an object failed.
    #[error("{operation} {kind} {namespace}/{name}")]
    Store {
        operation: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<StoreError>,
    },
    /// A key of the keys Secret is absent.
    #[error(
        "Secret {namespace}/{secret} has no key {key:?}; restore it from a backup or delete the whole Secret to start over (this invalidates every issued credential)"
    )]
    Missing {
        namespace: String,
        secret: String,
        key: &'static str,
    },
    /// A key of the keys Secret does not hold what it should.
    #[error("Secret {namespace}/{secret} key {key:?} is corrupt: {reason}")]
    Corrupt {
        namespace: String,
        secret: String,
        key: &'static str,
        reason: String,
    },
    /// The external CA Secret does not exist (yet: cert-manager may still be issuing it).
    #[error("CA Secret {namespace}/{secret} does not exist (yet)")]
    CaSecretMissing { namespace: String, secret: String },
    /// Generating fresh material failed.
    #[error("generating {what} failed: {reason}")]
    Generate { what: &'static str, reason: String },
    /// An endpoint given for a serving certificate has no usable host.
    #[error("endpoint {endpoint:?} has no host name")]
    Endpoint { endpoint: String },
    /// Minting a serving certificate failed.
    #[error("minting the serving certificate for {subject} failed")]
    Certificate {
        subject: String,
        #[source]
        source: Box<jumpstarter_certs::Error>,
    },
}

/// Loads the key material from [`KEYS_SECRET`], or creates it there at first start, and
/// publishes [`CA_CONFIG_MAP`] and [`ROUTER_KEYS_CONFIG_MAP`].
///
/// Two replicas starting at once agree: the one whose create loses re-reads the winner's.
pub async fn bootstrap<S: Store>(
    store: &S,
    settings: &Settings,
    now: OffsetDateTime,
) -> Result<Keys, KeysError> {
    bootstrap_with(store, settings, &CaSource::Generated, now).await
}

/// [`bootstrap`], with the CA taken from `ca`. With [`CaSource::Secret`] the signing keys
/// still live in [`KEYS_SECRET`]; a missing CA Secret is [`KeysError::CaSecretMissing`],
/// which a caller may wait out.
pub async fn bootstrap_with<S: Store>(
    store: &S,
    settings: &Settings,
    ca: &CaSource,
    now: OffsetDateTime,
) -> Result<Keys, KeysError> {
    let namespace = settings.namespace.as_str();
    let external_ca = match ca {
        CaSource::Generated => None,
        CaSource::Secret(name) => Some(load_external_ca(store, namespace, name).await?),
    };
    let secret = match store.get::<Secret>(namespace, KEYS_SECRET).await {
        Ok(Some(secret)) => secret,
        Ok(None) => create_keys_secret(store, namespace, now).await?,
        Err(source) => return Err(secret_error("read", namespace, source)),
    };
    let material = Material::from_secret(namespace, &secret)?;
    let mut keys = material.into_keys(namespace, settings)?;
    if let Some(ca) = external_ca {
        keys.ca = ca;
    }
    publish(store, namespace, settings.owner.as_ref(), &keys).await?;
    tracing::info!(namespace, secret = KEYS_SECRET, ca = ?ca, "controller keys loaded");
    Ok(keys)
}

/// Reads the CA from a `kubernetes.io/tls` Secret that someone else maintains.
async fn load_external_ca<S: Store>(
    store: &S,
    namespace: &str,
    name: &str,
) -> Result<Ca, KeysError> {
    let secret = match store.get::<Secret>(namespace, name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(KeysError::CaSecretMissing {
                namespace: namespace.to_owned(),
                secret: name.to_owned(),
            });
        }
        Err(source) => {
            return Err(KeysError::Store {
                operation: "read",
                kind: "Secret",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source: Box::new(source),
            });
        }
    };
    let text = |key: &'static str| -> Result<String, KeysError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| KeysError::Missing {
                namespace: namespace.to_owned(),
                secret: name.to_owned(),
                key,
            })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| KeysError::Corrupt {
            namespace: namespace.to_owned(),
            secret: name.to_owned(),
            key,
            reason: "not UTF-8 text".to_owned(),
        })
    };
    let (cert, key) = (text(TLS_CERT_KEY)?, text(TLS_KEY_KEY)?);
    Ca::from_pem(&cert, &key).map_err(|e| KeysError::Corrupt {
        namespace: namespace.to_owned(),
        secret: name.to_owned(),
        key: match e {
            jumpstarter_certs::Error::CaKeyParse(_)
            | jumpstarter_certs::Error::CaKeyMismatch { .. } => TLS_KEY_KEY,
            _ => TLS_CERT_KEY,
        },
        reason: error_chain(&e),
    })
}

impl Keys {
    /// Serving certificate for the controller's gRPC port: SANs are the host of
    /// `settings.grpc_endpoint` plus `extra_sans` (DNS names or IP addresses).
    pub fn controller_server_cert(
        &self,
        settings: &Settings,
        extra_sans: &[String],
        now: OffsetDateTime,
    ) -> Result<TlsCredentials, KeysError> {
        Ok(self
            .server_cert(&settings.grpc_endpoint, extra_sans, now)?
            .credentials())
    }

    /// Serving certificate for a router whose advertised endpoint is `endpoint`
    /// (`host:port`): SANs are its host plus `extra_sans`. The PEM forms are in the result
    /// for storing; [`IssuedCert::credentials`] gives the rustls form.
    pub fn router_server_cert(
        &self,
        endpoint: &str,
        extra_sans: &[String],
        now: OffsetDateTime,
    ) -> Result<IssuedCert, KeysError> {
        self.server_cert(endpoint, extra_sans, now)
    }

    fn server_cert(
        &self,
        endpoint: &str,
        extra_sans: &[String],
        now: OffsetDateTime,
    ) -> Result<IssuedCert, KeysError> {
        let host = endpoint_host(endpoint).ok_or_else(|| KeysError::Endpoint {
            endpoint: endpoint.to_owned(),
        })?;
        let mut params = ServerCertParams {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            validity: SERVER_CERT_VALIDITY,
        };
        for name in std::iter::once(host).chain(extra_sans.iter().map(String::as_str)) {
            match name.parse::<IpAddr>() {
                Ok(ip) if !params.ip_addresses.contains(&ip) => params.ip_addresses.push(ip),
                Ok(_) => {}
                Err(_) if !params.dns_names.iter().any(|n| n == name) => {
                    params.dns_names.push(name.to_owned())
                }
                Err(_) => {}
            }
        }
        self.ca
            .issue_server_cert(&params, now)
            .map_err(|source| KeysError::Certificate {
                subject: host.to_owned(),
                source: Box::new(source),
            })
    }
}

/// The host of `host:port`, `[v6]:port`, or a bare host; `None` when it is empty.
pub(crate) fn endpoint_host(endpoint: &str) -> Option<&str> {
    let endpoint = endpoint.trim();
    let host = if let Some(rest) = endpoint.strip_prefix('[') {
        rest.split_once(']').map(|(host, _)| host)?
    } else {
        match endpoint.rsplit_once(':') {
            // More than one colon without brackets: a bare IPv6 address.
            Some((host, _)) if host.contains(':') => endpoint,
            Some((host, _)) => host,
            None => endpoint,
        }
    };
    (!host.is_empty()).then_some(host)
}

/// The PEM texts of the keys Secret.
struct Material {
    ca_cert: String,
    ca_key: String,
    token_key: String,
    router_key: String,
    token_verify_keys: Option<String>,
    router_verify_keys: Option<String>,
}

impl Material {
    fn generate(now: OffsetDateTime) -> Result<Material, KeysError> {
        let ca =
            Ca::generate(CA_COMMON_NAME, now, CA_VALIDITY).map_err(|e| KeysError::Generate {
                what: "the CA",
                reason: e.to_string(),
            })?;
        let signing_key = |what: &'static str| {
            SigningKey::generate().map_err(|e: TokenError| KeysError::Generate {
                what,
                reason: e.to_string(),
            })
        };
        Ok(Material {
            ca_cert: ca.cert_pem().to_owned(),
            ca_key: ca.key_pem(),
            token_key: signing_key("the token signing key")?
                .to_pkcs8_pem()
                .to_owned(),
            router_key: signing_key("the router token signing key")?
                .to_pkcs8_pem()
                .to_owned(),
            token_verify_keys: None,
            router_verify_keys: None,
        })
    }

    fn to_secret(&self, namespace: &str) -> Secret {
        let entry =
            |key: &str, value: &str| (key.to_owned(), ByteString(value.as_bytes().to_vec()));
        Secret {
            metadata: ObjectMeta {
                name: Some(KEYS_SECRET.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "jumpstarter-controller".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([
                entry(CA_CERT_KEY, &self.ca_cert),
                entry(CA_KEY_KEY, &self.ca_key),
                entry(TOKEN_KEY_KEY, &self.token_key),
                entry(ROUTER_TOKEN_KEY_KEY, &self.router_key),
            ])),
            ..Secret::default()
        }
    }

    fn from_secret(namespace: &str, secret: &Secret) -> Result<Material, KeysError> {
        let data = secret.data.as_ref();
        let text = |key: &'static str| -> Result<String, KeysError> {
            let bytes = data
                .and_then(|d| d.get(key))
                .ok_or_else(|| KeysError::Missing {
                    namespace: namespace.to_owned(),
                    secret: KEYS_SECRET.to_owned(),
                    key,
                })?;
            String::from_utf8(bytes.0.clone())
                .map_err(|_| corrupt(namespace, key, "not UTF-8 text".to_owned()))
        };
        let optional = |key: &'static str| match data.and_then(|d| d.get(key)) {
            None => Ok(None),
            Some(_) => text(key).map(Some),
        };
        Ok(Material {
            ca_cert: text(CA_CERT_KEY)?,
            ca_key: text(CA_KEY_KEY)?,
            token_key: text(TOKEN_KEY_KEY)?,
            router_key: text(ROUTER_TOKEN_KEY_KEY)?,
            token_verify_keys: optional(TOKEN_VERIFY_KEYS_KEY)?,
            router_verify_keys: optional(ROUTER_TOKEN_VERIFY_KEYS_KEY)?,
        })
    }

    fn into_keys(self, namespace: &str, settings: &Settings) -> Result<Keys, KeysError> {
        let ca = Ca::from_pem(&self.ca_cert, &self.ca_key).map_err(|e| {
            // Name the key whose content is at fault as well as the library can tell.
            let key = match e {
                jumpstarter_certs::Error::CaKeyParse(_)
                | jumpstarter_certs::Error::CaKeyMismatch { .. } => CA_KEY_KEY,
                _ => CA_CERT_KEY,
            };
            corrupt(namespace, key, error_chain(&e))
        })?;
        let tokens = self.token_keys(namespace, settings)?;
        Ok(Keys {
            ca,
            tokens: live::LiveKeys::new(tokens),
        })
    }

    /// The token keys of the Secret: both signing keys and the optional verify keys.
    fn token_keys(&self, namespace: &str, settings: &Settings) -> Result<TokenKeySet, KeysError> {
        let token_key = SigningKey::from_pkcs8_pem(&self.token_key)
            .map_err(|e| corrupt(namespace, TOKEN_KEY_KEY, e.to_string()))?;
        let router_key = SigningKey::from_pkcs8_pem(&self.router_key)
            .map_err(|e| corrupt(namespace, ROUTER_TOKEN_KEY_KEY, e.to_string()))?;
        let bundle = |text: &Option<String>, key: &'static str| match text {
            None => Ok(Vec::new()),
            Some(text) if text.trim().is_empty() => Ok(Vec::new()),
            Some(text) => {
                public_keys_from_pem(text).map_err(|e| corrupt(namespace, key, error_chain(&e)))
            }
        };
        Ok(TokenKeySet {
            issuer: Issuer {
                key: token_key,
                issuer: DEFAULT_ISSUER.to_owned(),
                audience: DEFAULT_AUDIENCE.to_owned(),
                lifetime: settings.token_lifetime,
            },
            verify_keys: bundle(&self.token_verify_keys, TOKEN_VERIFY_KEYS_KEY)?,
            router_key,
            router_verify_keys: bundle(&self.router_verify_keys, ROUTER_TOKEN_VERIFY_KEYS_KEY)?,
            legacy_verify_key: None,
        })
    }
}

/// Re-reads the token keys of [`KEYS_SECRET`] and, when they differ from the keys in use
/// and parse, installs them and republishes [`ROUTER_KEYS_CONFIG_MAP`]. Returns whether
/// the keys changed. On error the keys in use stay.
pub async fn reload<S: Store>(
    store: &S,
    settings: &Settings,
    keys: &Keys,
) -> Result<bool, KeysError> {
    let namespace = settings.namespace.as_str();
    let secret = match store.get::<Secret>(namespace, KEYS_SECRET).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(secret_error(
                "read",
                namespace,
                StoreError::NotFound {
                    kind: "Secret".into(),
                    namespace: namespace.to_owned(),
                    name: KEYS_SECRET.to_owned(),
                },
            ));
        }
        Err(source) => return Err(secret_error("read", namespace, source)),
    };
    let mut fresh = Material::from_secret(namespace, &secret)?.token_keys(namespace, settings)?;
    let current = keys.tokens.current();
    // The 0.9.0 key is not in the Secret: it was given at start and stays.
    fresh.legacy_verify_key = current.legacy_verify_key.clone();
    if same_keys(&current, &fresh) {
        return Ok(false);
    }
    keys.tokens.replace(fresh);
    publish(store, namespace, settings.owner.as_ref(), keys).await?;
    let now = keys.tokens.current();
    tracing::info!(
        namespace,
        secret = KEYS_SECRET,
        credential_verify_keys = now.verify_keys.len(),
        router_verify_keys = now.router_verify_keys.len(),
        "token keys reloaded"
    );
    Ok(true)
}

fn same_keys(a: &TokenKeySet, b: &TokenKeySet) -> bool {
    let publics = |keys: &[jumpstarter_token::VerifyingKey]| -> Vec<String> {
        keys.iter().map(|k| k.to_public_pem().to_owned()).collect()
    };
    a.issuer.key.to_pkcs8_pem() == b.issuer.key.to_pkcs8_pem()
        && a.router_key.to_pkcs8_pem() == b.router_key.to_pkcs8_pem()
        && publics(&a.verify_keys) == publics(&b.verify_keys)
        && publics(&a.router_verify_keys) == publics(&b.router_verify_keys)
}

async fn create_keys_secret<S: Store>(
    store: &S,
    namespace: &str,
    now: OffsetDateTime,
) -> Result<Secret, KeysError> {
    let secret = Material::generate(now)?.to_secret(namespace);
    match store.create(&secret).await {
        Ok(created) => {
            tracing::info!(
                namespace,
                secret = KEYS_SECRET,
                "generated new controller keys"
            );
            Ok(created)
        }
        Err(StoreError::AlreadyExists { .. }) => {
            // Another replica created it first: use theirs.
            match store.get::<Secret>(namespace, KEYS_SECRET).await {
                Ok(Some(theirs)) => Ok(theirs),
                Ok(None) => Err(secret_error(
                    "re-read",
                    namespace,
                    StoreError::NotFound {
                        kind: "Secret".into(),
                        namespace: namespace.to_owned(),
                        name: KEYS_SECRET.to_owned(),
                    },
                )),
                Err(source) => Err(secret_error("re-read", namespace, source)),
            }
        }
        Err(source) => Err(secret_error("create", namespace, source)),
    }
}

/// Creates or updates the two public ConfigMaps, owned by `owner` (see [`crate::owner`]).
async fn publish<S: Store>(
    store: &S,
    namespace: &str,
    owner: Option<&OwnerReference>,
    keys: &Keys,
) -> Result<(), KeysError> {
    ensure_config_map(
        store,
        namespace,
        owner,
        CA_CONFIG_MAP,
        CA_CERT_KEY,
        keys.ca.cert_pem(),
    )
    .await?;
    let router_public = keys.tokens.current().router_public_pem();
    ensure_config_map(
        store,
        namespace,
        owner,
        ROUTER_KEYS_CONFIG_MAP,
        ROUTER_KEYS_KEY,
        &router_public,
    )
    .await
}

/// Attempts at updating a ConfigMap that others may be writing too.
const CONFIG_MAP_ATTEMPTS: usize = 5;

async fn ensure_config_map<S: Store>(
    store: &S,
    namespace: &str,
    owner: Option<&OwnerReference>,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), KeysError> {
    let err = |operation, source| KeysError::Store {
        operation,
        kind: "ConfigMap",
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source: Box::new(source),
    };
    for _ in 0..CONFIG_MAP_ATTEMPTS {
        match store
            .get::<ConfigMap>(namespace, name)
            .await
            .map_err(|e| err("read", e))?
        {
            None => {
                let mut config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        namespace: Some(namespace.to_owned()),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
                    ..ConfigMap::default()
                };
                crate::owner::adopt_if(&mut config_map.metadata, owner);
                match store.create(&config_map).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(err("create", e)),
                }
            }
            Some(mut existing) => {
                // An object written before the owner was configured gets it now.
                let adopted = crate::owner::adopt_if(&mut existing.metadata, owner);
                let data = existing.data.get_or_insert_with(BTreeMap::new);
                if data.get(key).map(String::as_str) == Some(value) && !adopted {
                    return Ok(());
                }
                data.insert(key.to_owned(), value.to_owned());
                match store.replace(&existing).await {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(err("update", e)),
                }
            }
        }
    }
    Err(err(
        "update",
        StoreError::Conflict {
            kind: "ConfigMap".into(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message: format!("still conflicting after {CONFIG_MAP_ATTEMPTS} attempts"),
        },
    ))
}

fn secret_error(operation: &'static str, namespace: &str, source: StoreError) -> KeysError {
    KeysError::Store {
        operation,
        kind: "Secret",
        namespace: namespace.to_owned(),
        name: KEYS_SECRET.to_owned(),
        source: Box::new(source),
    }
}

fn corrupt(namespace: &str, key: &'static str, reason: String) -> KeysError {
    KeysError::Corrupt {
        namespace: namespace.to_owned(),
        secret: KEYS_SECRET.to_owned(),
        key,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts() {
        assert_eq!(
            endpoint_host("controller.example.com:8082"),
            Some("controller.example.com")
        );
        assert_eq!(endpoint_host("10.0.0.1:443"), Some("10.0.0.1"));
        assert_eq!(endpoint_host("[::1]:8082"), Some("::1"));
        assert_eq!(endpoint_host("::1"), Some("::1"));
        assert_eq!(endpoint_host("localhost"), Some("localhost"));
        assert_eq!(endpoint_host(":8082"), None);
        assert_eq!(endpoint_host(""), None);
    }

    #[test]
    fn generated_material_round_trips_through_a_secret() {
        let now = OffsetDateTime::now_utc();
        let material = Material::generate(now).expect("generate");
        let secret = material.to_secret("lab");
        let loaded = Material::from_secret("lab", &secret).expect("load");
        let settings = Settings::example("lab", "controller.lab:8082", "router.lab:8083");
        let keys = loaded.into_keys("lab", &settings).expect("keys");
        assert_eq!(keys.ca.cert_pem(), material.ca_cert);
        let tokens = keys.tokens.current();
        assert_eq!(tokens.issuer.key.to_pkcs8_pem(), material.token_key);
        assert_eq!(tokens.router_key.to_pkcs8_pem(), material.router_key);
        assert_eq!(tokens.issuer.lifetime, settings.token_lifetime);

        let creds = keys
            .controller_server_cert(
                &settings,
                &["127.0.0.1".into(), "controller.lab".into()],
                now,
            )
            .expect("server cert");
        assert_eq!(creds.chain.len(), 2);
        let router = keys
            .router_server_cert("[::1]:8083", &[], now)
            .expect("router cert");
        assert!(router.chain_pem.ends_with(keys.ca.cert_pem()));
    }
}
