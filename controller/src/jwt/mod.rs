//! JWT authenticators as jumpstarter 0.9.0 configures them (`authentication.jwt`): tokens
//! from external OIDC issuers (Dex, Keycloak, a Kubernetes cluster's service-account
//! issuer) verified against the issuer's published keys and mapped to a username.
//!
//! - [`config`]: the Kubernetes structured-authentication `JWTAuthenticator` entries,
//!   parsed strictly ([`parse_authenticators`]).
//! - [`trust`]: the roots an issuer's HTTPS endpoints are verified with.

pub mod config;
pub(crate) mod trust;

pub use config::{JwtAuthenticatorConfig, JwtConfigError, parse_authenticators};
