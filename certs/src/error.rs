//! The error type shared by every operation of this crate.

use time::OffsetDateTime;

use crate::identity::Role;

/// Everything that can fail while minting, loading or verifying certificates.
///
/// Each variant names the operation that failed and carries the context needed to act on it.
/// Verification failures ([`Error::Expired`] to [`Error::WrongLease`]) are distinct variants so
/// that a router can map them to close codes and metric labels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A fresh key pair could not be generated.
    #[error("generating a key pair failed")]
    KeyGeneration(#[source] rcgen::Error),

    /// A private key given as PEM could not be read.
    #[error("the private key cannot be read (expected an ECDSA P-256 key, PKCS#8 PEM)")]
    KeyParse(#[source] rcgen::Error),

    /// The random source needed for a serial number failed.
    #[error("drawing a random certificate serial number failed")]
    SerialNumber,

    /// rcgen refused to build or sign a certificate (or CSR).
    #[error("signing the certificate for {subject:?} failed")]
    Signing {
        /// The subject common name of the certificate being built.
        subject: String,
        /// Why rcgen refused.
        #[source]
        source: rcgen::Error,
    },

    /// The CA certificate PEM could not be read.
    #[error("the CA certificate is not a readable PEM X.509 certificate: {reason}")]
    CaCertificateParse {
        /// What was wrong with it.
        reason: String,
    },

    /// The CA private key PEM could not be read.
    #[error("the CA private key is not a readable PEM private key")]
    CaKeyParse(#[source] rcgen::Error),

    /// The certificate given as a CA is not one (no basicConstraints cA, or no keyCertSign).
    #[error("certificate {subject:?} is not a CA certificate: {reason}")]
    NotACa {
        /// Subject of the certificate.
        subject: String,
        /// Which requirement it misses.
        reason: &'static str,
    },

    /// The CA private key does not belong to the CA certificate.
    #[error("the CA private key does not match the public key of certificate {subject:?}")]
    CaKeyMismatch {
        /// Subject of the certificate.
        subject: String,
    },

    /// A server certificate was requested without any DNS name or IP address.
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,

    /// A DNS name for a server certificate is not an IA5 string.
    #[error("DNS name {name:?} cannot be put into a certificate")]
    InvalidDnsName {
        /// The offending name.
        name: String,
        /// Why rcgen refused it.
        #[source]
        source: rcgen::Error,
    },

    /// The requested validity leaves no time at which the certificate would be valid.
    #[error(
        "certificate for {subject:?} would have an empty validity: {not_before} .. {not_after}"
    )]
    EmptyValidity {
        /// Subject of the certificate.
        subject: String,
        /// Computed notBefore.
        not_before: OffsetDateTime,
        /// Computed notAfter (already capped).
        not_after: OffsetDateTime,
    },

    /// `now + validity` is outside the representable range of dates.
    #[error("certificate for {subject:?}: {now} + {validity} is out of range")]
    ValidityOverflow {
        /// Subject of the certificate.
        subject: String,
        /// The time the request was handled at.
        now: OffsetDateTime,
        /// The requested validity.
        validity: time::Duration,
    },

    /// The CSR is not a well-formed PKCS#10 request.
    #[error("the certificate signing request cannot be parsed: {reason}")]
    CsrParse {
        /// What was wrong with it.
        reason: String,
    },

    /// The CSR's self-signature does not verify: it was tampered with or signed by another key.
    #[error("the certificate signing request's signature does not verify")]
    CsrSignature,

    /// The CSR's public key uses an algorithm this crate cannot certify.
    #[error("the certificate signing request's public key algorithm is not supported")]
    CsrKeyAlgorithm(#[source] rcgen::Error),

    /// A lease certificate was requested for a lease that has already ended.
    #[error("lease {namespace}/{lease_name} ended at {lease_end}, which is not after now ({now})")]
    LeaseEnded {
        /// Namespace of the lease.
        namespace: String,
        /// Name of the lease.
        lease_name: String,
        /// When the lease ends.
        lease_end: OffsetDateTime,
        /// The time the request was handled at.
        now: OffsetDateTime,
    },

    /// A [`crate::LeaseIdentity`] field is not a valid Kubernetes name.
    #[error("lease identity field {field} = {value:?} is invalid: {reason}")]
    InvalidIdentity {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A certificate (PEM or DER) given for verification or TLS could not be read.
    #[error("{what} cannot be parsed: {reason}")]
    CertificateParse {
        /// What was being parsed ("peer certificate", "root certificate", ...).
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },

    /// A private key PEM given for TLS could not be read.
    #[error("the private key cannot be parsed: {reason}")]
    PrivateKeyParse {
        /// What was wrong with it.
        reason: String,
    },

    /// Verification: no certificate chain was presented.
    #[error("no certificate was presented")]
    NoCertificate,

    /// Verification: a certificate in the chain has expired.
    #[error("certificate expired at unix time {not_after} (checked at {now})")]
    Expired {
        /// notAfter of the expired certificate, seconds since the epoch.
        not_after: u64,
        /// The verification time, seconds since the epoch.
        now: u64,
    },

    /// Verification: a certificate in the chain is not valid yet.
    #[error("certificate is not valid before unix time {not_before} (checked at {now})")]
    NotYetValid {
        /// notBefore of the certificate, seconds since the epoch.
        not_before: u64,
        /// The verification time, seconds since the epoch.
        now: u64,
    },

    /// Verification: the chain does not lead to any of the trusted CAs.
    #[error("certificate was not issued by a trusted CA")]
    UnknownIssuer,

    /// Verification: the chain is invalid for another reason (usage, signature, encoding).
    #[error("certificate chain is invalid")]
    InvalidChain(#[source] webpki::Error),

    /// Verification: the certificate carries no lease identity URI.
    #[error("certificate carries no jumpstarter lease identity")]
    MissingIdentity,

    /// Verification: the certificate's lease identity is malformed or ambiguous.
    #[error("certificate lease identity {uri:?} is invalid: {reason}")]
    BadIdentity {
        /// The URI found (or a summary when there were several).
        uri: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// Verification: the certificate belongs to the other side of the lease.
    #[error("certificate is for role {found}, expected {expected}")]
    WrongRole {
        /// The role that was required.
        expected: Role,
        /// The role in the certificate.
        found: Role,
    },

    /// Verification: the certificate belongs to another lease.
    #[error("certificate {field} is {found:?}, expected {expected:?}")]
    WrongLease {
        /// Which identity field differs ("namespace", "lease name", "lease uid").
        field: &'static str,
        /// The required value.
        expected: String,
        /// The value in the certificate.
        found: String,
    },

    /// A rustls configuration could not be built.
    #[error("building the TLS {side} configuration failed")]
    TlsConfig {
        /// "server" or "client".
        side: &'static str,
        /// Why rustls refused.
        #[source]
        source: rustls::Error,
    },

    /// The client-certificate verifier for a server configuration could not be built.
    #[error("building the client certificate verifier failed")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),

    /// The private key given for a serving certificate is not the key of its leaf.
    #[error("the private key does not belong to the certificate (leaf {subject:?})")]
    ServerKeyMismatch {
        /// Subject of the leaf certificate.
        subject: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
