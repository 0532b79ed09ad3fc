//! Authentication and authorization of gRPC calls, as jumpstarter 0.9.0 does them.
//!
//! Every controller call carries `authorization: Bearer <token>` plus the metadata
//! `jumpstarter-kind`, `jumpstarter-namespace` and `jumpstarter-name`. A call is allowed
//! when the token verifies (username `internal:<sub>`), the kind is the one the RPC needs,
//! and the named Client or Exporter accepts that username: either its internal subject
//! (`<kind>:<ns>:<name>:<uid>`, with the `migrated-*` annotations applied) or its
//! `spec.username`.
//!
//! - The pure core: [`CallMetadata`] (the four headers), [`bearer_token`], [`target`],
//!   [`ObjectIdentity`] and [`authorize`], plus [`AuthError`] with its gRPC mapping.
//! - The shell: [`Authenticator`], which verifies the token, loads the object from the
//!   [`Store`] and counts failures in [`AuthMetrics`].
//! - [`revocation`]: credential generations, which make a rotated token invalid.
//!
//! Tokens are never logged.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use jumpstarter_lease::name::{is_namespace_name, is_object_name, quoted};
use jumpstarter_token::TokenError;
use jumpstarter_token::internal::{ObjectKind, Subject};

pub(crate) mod revocation;
pub(crate) mod username;

use crate::crd::vocabulary::migrated_subject;
use crate::crd::{Client, Exporter};
use crate::keys::live::{LiveKeys, LiveVerifier};
use crate::service::cache::{Cached, ReadCache};
use crate::store::{Object, Store, StoreError};

/// Metadata key of the bearer token.
pub(crate) const AUTHORIZATION: &str = "authorization";
/// Metadata key naming the caller's object kind (`Client` or `Exporter`).
pub const KIND: &str = "jumpstarter-kind";
/// Metadata key naming the caller's namespace.
pub const NAMESPACE: &str = "jumpstarter-namespace";
/// Metadata key naming the caller's object.
pub const NAME: &str = "jumpstarter-name";
/// What a namespace header must be, as refusals say it.
const NAMESPACE_RULE: &str =
    "a namespace name (RFC 1123 label: lowercase letters, digits and '-', at most 63)";
/// What a name header must be, as refusals say it.
const NAME_RULE: &str =
    "an object name (RFC 1123 subdomain: lowercase letters, digits, '-' and '.', at most 253)";
/// Prefix of usernames derived from internal tokens (0.9.0 `authentication.internal.prefix`
/// default).
pub(crate) const INTERNAL_PREFIX: &str = "internal:";
/// Issuer of internal tokens: a token naming it goes to the internal verifier.
const INTERNAL_ISSUER: &str = jumpstarter_token::internal::DEFAULT_ISSUER;

/// Why a call was refused. The variant decides the gRPC code; [`AuthError::reason`] is
/// the metric label.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization header")]
    MissingAuthorization,
    #[error("multiple authorization headers")]
    MultipleAuthorization,
    #[error("malformed authorization header")]
    MalformedAuthorization,
    #[error("{0}")]
    Token(#[source] TokenError),
    /// A JWT authenticator (identity provider, service accounts) refused the token.
    #[error("{0}")]
    External(#[source] crate::jwt::JwtError),
    #[error("missing metadata: {0}")]
    MissingMetadata(&'static str),
    #[error("multiple metadata: {0}")]
    MultipleMetadata(&'static str),
    #[error("resource name required for pre-existing authentication")]
    NameRequired,
    /// An external user names another object than the one its username maps to.
    #[error("resource name mismatch: the username maps to {}, the call names {}", quoted(.derived), quoted(.given))]
    NameMismatch { derived: String, given: String },
    /// No authenticator accepts the token's issuer (0.9.0's text).
    #[error("failed to authenticate token")]
    NoAuthenticator,
    /// A namespace or name header that cannot name a Kubernetes object; refused before
    /// any store call.
    #[error("invalid metadata {key}: {} is not {rule}", quoted(.value))]
    InvalidMetadata {
        key: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("object kind mismatch")]
    KindMismatch,
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("cannot load {kind} {namespace}/{name}: {source}")]
    Store {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("permission denied for {kind} {namespace}/{name}")]
    Denied {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("namespace mismatch")]
    NamespaceMismatch,
    /// The token was issued before the credential was rotated.
    #[error(
        "token was revoked: {kind} {namespace}/{name} rotated its credential (token generation {presented}, current {required})"
    )]
    Revoked {
        kind: &'static str,
        namespace: String,
        name: String,
        presented: u64,
        required: u64,
    },
    /// The object's credential generation cannot be read: every token is refused.
    #[error("{kind} {namespace}/{name}: {source}")]
    Generation {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: revocation::GenerationError,
    },
}

impl AuthError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingAuthorization => "missing_authorization",
            AuthError::MultipleAuthorization => "multiple_authorization",
            AuthError::MalformedAuthorization => "malformed_authorization",
            AuthError::Token(TokenError::Expired { .. }) => "token_expired",
            AuthError::Token(TokenError::Algorithm(_)) => "token_bad_algorithm",
            AuthError::Token(TokenError::BadSignature) => "token_bad_signature",
            AuthError::Token(TokenError::Malformed(_)) => "token_malformed",
            AuthError::Token(TokenError::WrongIssuer(_)) => "token_wrong_issuer",
            AuthError::Token(TokenError::WrongAudience(_)) => "token_wrong_audience",
            AuthError::Token(_) => "token_invalid",
            AuthError::External(err) => err.reason(),
            AuthError::Revoked { .. } => "token_revoked",
            AuthError::Generation { .. } => "bad_token_generation",
            AuthError::MissingMetadata(_) => "missing_metadata",
            AuthError::MultipleMetadata(_) => "multiple_metadata",
            AuthError::NameRequired => "name_required",
            AuthError::NameMismatch { .. } => "name_mismatch",
            AuthError::NoAuthenticator => "no_authenticator",
            AuthError::InvalidMetadata { .. } => "invalid_metadata",
            AuthError::KindMismatch => "kind_mismatch",
            AuthError::NotFound { .. } => "object_not_found",
            AuthError::Store { .. } => "store_error",
            AuthError::Denied { .. } => "permission_denied",
            AuthError::NamespaceMismatch => "namespace_mismatch",
        }
    }

    /// The gRPC code 0.9.0 answers with.
    pub fn code(&self) -> Code {
        match self {
            AuthError::MissingAuthorization => Code::Unauthenticated,
            AuthError::MultipleAuthorization
            | AuthError::MalformedAuthorization
            | AuthError::MissingMetadata(_)
            | AuthError::MultipleMetadata(_)
            | AuthError::NameRequired
            | AuthError::NameMismatch { .. }
            | AuthError::InvalidMetadata { .. }
            | AuthError::KindMismatch => Code::InvalidArgument,
            // 0.9.0 returns the authenticator's error unwrapped, which grpc-go sends as
            // UNKNOWN; clients look for "token is expired" in it.
            AuthError::Token(_) | AuthError::NoAuthenticator => Code::Unknown,
            // As for internal tokens, the authenticator's text goes back as UNKNOWN; keys
            // that cannot be fetched are the service's trouble, not the token's.
            AuthError::External(err) if err.is_unavailable() => Code::Unavailable,
            AuthError::External(_) => Code::Unknown,
            AuthError::NotFound { .. } => Code::NotFound,
            AuthError::Store { source, .. } => store_code(source),
            AuthError::Denied { .. } | AuthError::NamespaceMismatch => Code::PermissionDenied,
            // New in this service (0.9.0 cannot revoke): the token is no longer a
            // credential, which is what UNAUTHENTICATED means.
            AuthError::Revoked { .. } => Code::Unauthenticated,
            AuthError::Generation { .. } => Code::FailedPrecondition,
        }
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        Status::new(err.code(), err.to_string())
    }
}

/// The gRPC code for a store failure (Kubernetes → gRPC as 0.9.0 maps it).
pub(crate) fn store_code(err: &StoreError) -> Code {
    match err {
        StoreError::NotFound { .. } => Code::NotFound,
        StoreError::AlreadyExists { .. } => Code::AlreadyExists,
        StoreError::Conflict { .. } => Code::Aborted,
        StoreError::Invalid { .. } => Code::InvalidArgument,
        StoreError::Forbidden { .. } => Code::PermissionDenied,
        StoreError::Unavailable(_) => Code::Unavailable,
        StoreError::Other(_) => Code::Internal,
    }
}

/// The authentication headers of one call, every occurrence kept (duplicates are errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMetadata {
    pub authorization: Vec<String>,
    pub kind: Vec<String>,
    pub namespace: Vec<String>,
    pub name: Vec<String>,
}

impl CallMetadata {
    /// Reads the four headers; values that are not visible ASCII count as absent.
    pub(crate) fn from_metadata(metadata: &MetadataMap) -> CallMetadata {
        let all = |key: &str| -> Vec<String> {
            metadata
                .get_all(key)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect()
        };
        CallMetadata {
            authorization: all(AUTHORIZATION),
            kind: all(KIND),
            namespace: all(NAMESPACE),
            name: all(NAME),
        }
    }
}

/// The object a call claims to act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

/// The token from `authorization: Bearer <token>` (scheme compared case-insensitively).
pub(crate) fn bearer_token(metadata: &CallMetadata) -> Result<&str, AuthError> {
    let value = match metadata.authorization.as_slice() {
        [] => return Err(AuthError::MissingAuthorization),
        [value] => value,
        _ => return Err(AuthError::MultipleAuthorization),
    };
    const SCHEME: &str = "bearer ";
    match value.get(..SCHEME.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => {
            let token = value[SCHEME.len()..].trim();
            if token.is_empty() {
                Err(AuthError::MalformedAuthorization)
            } else {
                Ok(token)
            }
        }
        _ => Err(AuthError::MalformedAuthorization),
    }
}

/// The object a call acts as, checked against the kind the RPC requires; `origin` says
/// where its name comes from (the caller's username, [`username::origin`]).
///
/// `jumpstarter-namespace` and `jumpstarter-kind` are required. The name is required too
/// for internal and service-account usernames; an external user's object is named after
/// its username ([`username::derived_name`]), and a `jumpstarter-name` that differs is
/// refused.
pub(crate) fn target(
    metadata: &CallMetadata,
    required: ObjectKind,
    origin: username::Origin,
) -> Result<Target, AuthError> {
    let namespace = single(&metadata.namespace, NAMESPACE)?;
    let kind = single(&metadata.kind, KIND)?;
    let given = match metadata.name.as_slice() {
        [] => None,
        [name] if name.is_empty() => None,
        [name] => Some(name.clone()),
        _ => return Err(AuthError::MultipleMetadata(NAME)),
    };
    let name = match (origin, given) {
        (username::Origin::Named, Some(name)) => name,
        (username::Origin::Named, None) => return Err(AuthError::NameRequired),
        (username::Origin::Derived(derived), None) => derived,
        (username::Origin::Derived(derived), Some(given)) if given == derived => derived,
        (username::Origin::Derived(derived), Some(given)) => {
            return Err(AuthError::NameMismatch { derived, given });
        }
    };
    if kind != required.as_str() {
        return Err(AuthError::KindMismatch);
    }
    if !is_namespace_name(&namespace) {
        return Err(AuthError::InvalidMetadata {
            key: NAMESPACE,
            value: namespace,
            rule: NAMESPACE_RULE,
        });
    }
    if !is_object_name(&name) {
        return Err(AuthError::InvalidMetadata {
            key: NAME,
            value: name,
            rule: NAME_RULE,
        });
    }
    Ok(Target {
        kind: required,
        namespace,
        name,
    })
}

/// What authorization needs to know about the stored Client or Exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectIdentity {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.username`.
    pub username: Option<String>,
    /// `jumpstarter.dev/migrated-namespace`.
    pub migrated_namespace: Option<String>,
    /// `jumpstarter.dev/migrated-uid`.
    pub migrated_uid: Option<String>,
    /// The credential generation tokens must carry at least ([`revocation`]).
    pub token_generation: Result<u64, revocation::GenerationError>,
}

impl ObjectIdentity {
    /// The subject internal tokens of this object carry (migration annotations applied).
    pub(crate) fn internal_subject(&self) -> Subject {
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

    fn from_object<K: Object>(kind: ObjectKind, object: &K, username: Option<String>) -> Self {
        let meta = object.meta();
        let (migrated_namespace, migrated_uid) = migrated_subject(meta);
        ObjectIdentity {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            username,
            migrated_namespace,
            migrated_uid,
            token_generation: revocation::generation(meta),
        }
    }

    /// The identity of a stored Client.
    pub(crate) fn of_client(client: &Client) -> Self {
        Self::from_object(ObjectKind::Client, client, client.spec.username.clone())
    }

    /// The identity of a stored Exporter.
    pub(crate) fn of_exporter(exporter: &Exporter) -> Self {
        Self::from_object(
            ObjectKind::Exporter,
            exporter,
            exporter.spec.username.clone(),
        )
    }
}

/// An authenticated and authorized caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The username the token authenticated as (e.g. `internal:client:lab:alice:<uid>`).
    pub username: String,
}

impl Caller {
    /// Fails with PERMISSION_DENIED "namespace mismatch" unless `namespace` is the caller's.
    pub fn check_namespace(&self, namespace: &str) -> Result<(), AuthError> {
        if namespace == self.namespace {
            Ok(())
        } else {
            Err(AuthError::NamespaceMismatch)
        }
    }
}

/// Allows `username` to act as `object` when it is the object's internal subject or its
/// `spec.username`, and, for an internal token (of credential generation `generation`),
/// the token was not revoked by a rotation. External tokens (`generation` `None`) are
/// revoked by their identity provider, not here.
pub(crate) fn authorize(
    username: &str,
    generation: Option<u64>,
    target: &Target,
    object: &ObjectIdentity,
    internal_prefix: &str,
) -> Result<Caller, AuthError> {
    let internal = format!("{internal_prefix}{}", object.internal_subject());
    let allowed = username == internal || object.username.as_deref() == Some(username);
    if !allowed || object.kind != target.kind {
        return Err(AuthError::Denied {
            kind: kind_word(target.kind),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        });
    }
    let Some(generation) = generation else {
        return Ok(Caller {
            kind: object.kind,
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            uid: object.uid.clone(),
            username: username.to_owned(),
        });
    };
    let required = object
        .token_generation
        .clone()
        .map_err(|source| AuthError::Generation {
            kind: kind_word(target.kind),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            source,
        })?;
    if !revocation::is_current(generation, required) {
        return Err(AuthError::Revoked {
            kind: kind_word(target.kind),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            presented: generation,
            required,
        });
    }
    Ok(Caller {
        kind: object.kind,
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        uid: object.uid.clone(),
        username: username.to_owned(),
    })
}

fn kind_word(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Client => "client",
        ObjectKind::Exporter => "exporter",
    }
}

fn single(values: &[String], key: &'static str) -> Result<String, AuthError> {
    match values {
        [] => Err(AuthError::MissingMetadata(key)),
        [value] if value.is_empty() => Err(AuthError::MissingMetadata(key)),
        [value] => Ok(value.clone()),
        _ => Err(AuthError::MultipleMetadata(key)),
    }
}

/// Label set of the auth failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
}

/// Metrics of call authentication.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Refused calls by [`AuthError::reason`].
    pub failures: Family<FailureLabels, Counter>,
}

impl AuthMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> AuthMetrics {
        let metrics = AuthMetrics::default();
        registry.register(
            "jumpstarter_controller_auth_failures",
            "gRPC calls refused by authentication or authorization, by reason",
            metrics.failures.clone(),
        );
        metrics
    }
}

/// Authenticates calls against a [`Store`] with one token verifier.
#[derive(Debug)]
pub(crate) struct Authenticator<S> {
    /// Callers' objects are read from the services' watch-fed copy (the store on a miss).
    cache: std::sync::Arc<ReadCache<S>>,
    /// Clients call often with the same token (a `jmp shell` polls its lease): after the
    /// first call, checking it is a lookup (until the token keys change).
    verifier: LiveVerifier,
    /// Identity providers and service-account issuers (0.9.0 `authentication.jwt`).
    external: std::sync::OnceLock<crate::jwt::Authenticators>,
    policy: AuthPolicy,
    metrics: std::sync::Arc<AuthMetrics>,
}

/// How usernames are formed and unknown users treated (0.9.0 `authentication.internal`
/// and `provisioning`).
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Prefix of usernames of internal tokens (`internal:`).
    pub internal_prefix: String,
    /// Create the Client of an unknown external user at its first call.
    pub provisioning: bool,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            internal_prefix: INTERNAL_PREFIX.to_owned(),
            provisioning: false,
        }
    }
}

/// Who a token authenticated.
#[derive(Debug)]
struct User {
    username: String,
    /// The credential generation of an internal token; `None` for external tokens.
    generation: Option<u64>,
    /// From a JWT authenticator (not an internal token).
    external: bool,
}

/// The `iss` claim of a compact JWS, read without verifying anything: it only picks the
/// verifier, which then checks everything.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    serde_json::from_slice::<Issuer>(&bytes).ok()?.iss
}

/// Tokens whose verified claims an [`Authenticator`] remembers.
const VERIFIED_TOKENS: usize = 16_384;

impl<S: Store> Authenticator<S> {
    pub(crate) fn new(
        cache: std::sync::Arc<ReadCache<S>>,
        keys: LiveKeys,
        metrics: std::sync::Arc<AuthMetrics>,
        policy: AuthPolicy,
    ) -> Self {
        Authenticator {
            cache,
            verifier: LiveVerifier::new(keys, VERIFIED_TOKENS),
            external: std::sync::OnceLock::new(),
            policy,
            metrics,
        }
    }

    /// Accepts the tokens of `authenticators` too (set once, before serving).
    pub(crate) fn set_external(&self, authenticators: crate::jwt::Authenticators) {
        if self.external.set(authenticators).is_err() {
            tracing::warn!("JWT authenticators were already set; the new ones are ignored");
        }
    }

    /// Authenticates the call as a Client; returns the caller and its stored object.
    pub(crate) async fn client(&self, metadata: &MetadataMap) -> Result<(Caller, Client), Status> {
        let result = self.run(metadata, ObjectKind::Client).await;
        let (caller, object) = self.count(result)?;
        match object {
            Loaded::Client(client) => Ok((caller, *client)),
            Loaded::Exporter(_) => Err(Status::internal("loaded an exporter for a client call")),
        }
    }

    /// Authenticates the call as an Exporter; returns the caller and its stored object.
    pub(crate) async fn exporter(
        &self,
        metadata: &MetadataMap,
    ) -> Result<(Caller, Exporter), Status> {
        let result = self.run(metadata, ObjectKind::Exporter).await;
        let (caller, object) = self.count(result)?;
        match object {
            Loaded::Exporter(exporter) => Ok((caller, *exporter)),
            Loaded::Client(_) => Err(Status::internal("loaded a client for an exporter call")),
        }
    }

    /// Counts a refusal (by reason) and turns it into a status.
    pub(crate) fn count<T>(&self, result: Result<T, AuthError>) -> Result<T, Status> {
        result.map_err(|err| {
            self.metrics
                .failures
                .get_or_create(&FailureLabels {
                    reason: err.reason(),
                })
                .inc();
            tracing::debug!(reason = err.reason(), "call refused: {err}");
            Status::from(err)
        })
    }

    async fn run(
        &self,
        metadata: &MetadataMap,
        kind: ObjectKind,
    ) -> Result<(Caller, Loaded), AuthError> {
        let call = CallMetadata::from_metadata(metadata);
        let token = bearer_token(&call)?;
        let user = self.authenticate(token).await?;
        // Internal tokens always name their object (whatever the internal prefix is).
        let origin = if user.external {
            username::origin(&user.username)
        } else {
            username::Origin::Named
        };
        let target = target(&call, kind, origin)?;
        let (identity, loaded) = match kind {
            ObjectKind::Client => {
                let client: Client = match self.load(&target).await {
                    Err(AuthError::NotFound { .. }) if self.provisions(&user) => {
                        self.provision(&target, &user.username).await?
                    }
                    loaded => loaded?,
                };
                (
                    ObjectIdentity::of_client(&client),
                    Loaded::Client(Box::new(client)),
                )
            }
            ObjectKind::Exporter => {
                let exporter: Exporter = self.load(&target).await?;
                (
                    ObjectIdentity::of_exporter(&exporter),
                    Loaded::Exporter(Box::new(exporter)),
                )
            }
        };
        let caller = authorize(
            &user.username,
            user.generation,
            &target,
            &identity,
            &self.policy.internal_prefix,
        )?;
        Ok((caller, loaded))
    }

    /// The username a token authenticates as. A token of the internal issuer (or one whose
    /// issuer cannot be read) goes to the internal verifier; any other to the JWT
    /// authenticator configured for its issuer; with none, "failed to authenticate token".
    async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        let now = OffsetDateTime::now_utc();
        match unverified_issuer(token) {
            Some(issuer) if issuer != INTERNAL_ISSUER => {
                let Some(external) = self.external.get() else {
                    return Err(AuthError::NoAuthenticator);
                };
                match external.authenticate(token, now).await {
                    Ok(Some(identity)) => Ok(User {
                        username: identity.username,
                        generation: None,
                        external: true,
                    }),
                    Ok(None) => Err(AuthError::NoAuthenticator),
                    Err(err) => Err(AuthError::External(err)),
                }
            }
            _ => {
                let claims = self
                    .verifier
                    .current()
                    .verify(token, now)
                    .map_err(AuthError::Token)?;
                Ok(User {
                    username: format!("{}{}", self.policy.internal_prefix, claims.sub),
                    generation: Some(claims.generation),
                    external: false,
                })
            }
        }
    }

    /// Whether an unknown client of `user` is created at its first call: with
    /// provisioning on, for users of an identity provider (never for internal tokens,
    /// whose object was deleted, nor for service accounts).
    fn provisions(&self, user: &User) -> bool {
        self.policy.provisioning && user.external && !username::is_service_account(&user.username)
    }

    /// Creates the Client `target` for `username` (0.9.0 provisioning); a concurrent
    /// first call that created it first is fine.
    async fn provision(&self, target: &Target, username: &str) -> Result<Client, AuthError> {
        let mut client = Client::new(
            &target.name,
            crate::crd::ClientSpec {
                username: Some(username.to_owned()),
            },
        );
        client.metadata.namespace = Some(target.namespace.clone());
        let store_error = |source: StoreError| AuthError::Store {
            kind: kind_word(target.kind),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            source: Box::new(source),
        };
        match self.cache.store().create(&client).await {
            Ok(created) => {
                tracing::info!(
                    namespace = %target.namespace,
                    name = %target.name,
                    "provisioned a client for a new user"
                );
                self.cache.put(&created);
                Ok(created)
            }
            Err(StoreError::AlreadyExists { .. }) => {
                match self
                    .cache
                    .get_fresh::<Client>(&target.namespace, &target.name)
                    .await
                {
                    Ok(Some(client)) => Ok(client),
                    Ok(None) => Err(AuthError::NotFound {
                        kind: kind_word(target.kind),
                        namespace: target.namespace.clone(),
                        name: target.name.clone(),
                    }),
                    Err(source) => Err(store_error(source)),
                }
            }
            Err(source) => Err(store_error(source)),
        }
    }

    async fn load<K: Cached>(&self, target: &Target) -> Result<K, AuthError> {
        let kind = kind_word(target.kind);
        match self.cache.get::<K>(&target.namespace, &target.name).await {
            Ok(Some(object)) => Ok(object),
            Ok(None) | Err(StoreError::NotFound { .. }) => Err(AuthError::NotFound {
                kind,
                namespace: target.namespace.clone(),
                name: target.name.clone(),
            }),
            Err(source) => Err(AuthError::Store {
                kind,
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                source: Box::new(source),
            }),
        }
    }
}

enum Loaded {
    Client(Box<Client>),
    Exporter(Box<Exporter>),
}

#[cfg(test)]
mod tests;
