//! The lease identity carried by per-lease certificates, and its URI encoding.
//!
//! A lease certificate names exactly one side of one lease in a single URI subject alternative
//! name, shaped like a SPIFFE ID:
//!
//! ```text
//! spiffe://jumpstarter.dev/ns/<namespace>/lease/<lease name>/uid/<lease uid>/role/<client|exporter>/holder/<holder>
//! ```
//!
//! Every field is a Kubernetes name, so instead of percent-encoding the fields are checked against
//! a strict character set (lowercase letters, digits, `-` and, where Kubernetes allows it, `.`).
//! None of those characters is `/`, so the URI splits back into its fields unambiguously.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{Error, Result};

/// The URI prefix of every lease identity: the scheme and the trust domain.
pub const IDENTITY_URI_PREFIX: &str = "spiffe://jumpstarter.dev/";

/// Longest DNS-1123 label (a namespace), as Kubernetes defines it.
const MAX_LABEL_LEN: usize = 63;
/// Longest DNS-1123 subdomain (an object name), as Kubernetes defines it.
const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest accepted object UID. Kubernetes UIDs are 36-character UUIDs; some slack is allowed.
const MAX_UID_LEN: usize = 64;

/// Which side of a lease a certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The client that acquired the lease.
    Client,
    /// The exporter that is leased.
    Exporter,
}

impl Role {
    /// The lowercase word used in the identity URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Exporter => "exporter",
        }
    }

    fn from_word(word: &str) -> Option<Role> {
        match word {
            "client" => Some(Role::Client),
            "exporter" => Some(Role::Exporter),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a lease certificate was issued to: one side of one lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseIdentity {
    /// Namespace of the Lease object (a DNS-1123 label).
    pub namespace: String,
    /// Name of the Lease object (a DNS-1123 subdomain).
    pub lease_name: String,
    /// UID of the Lease object, so a recreated lease with the same name is a different lease.
    pub lease_uid: String,
    /// Which side of the lease.
    pub role: Role,
    /// Name of the Client or Exporter object holding this side (a DNS-1123 subdomain).
    pub holder: String,
}

impl LeaseIdentity {
    /// Checks every field against its Kubernetes naming rule.
    pub fn validate(&self) -> Result<()> {
        check_label("namespace", &self.namespace)?;
        check_subdomain("lease_name", &self.lease_name)?;
        check_uid("lease_uid", &self.lease_uid)?;
        check_subdomain("holder", &self.holder)?;
        Ok(())
    }

    /// Encodes the identity as its URI, after validating every field.
    pub fn to_uri(&self) -> Result<String> {
        self.validate()?;
        Ok(format!(
            "{IDENTITY_URI_PREFIX}ns/{}/lease/{}/uid/{}/role/{}/holder/{}",
            self.namespace, self.lease_name, self.lease_uid, self.role, self.holder
        ))
    }

    /// Parses an identity URI produced by [`LeaseIdentity::to_uri`].
    ///
    /// The parse is strict: exact prefix, the five keys in order, no empty, extra or invalid
    /// segments, no query or fragment.
    pub fn parse_uri(uri: &str) -> Result<LeaseIdentity> {
        let bad = |reason: &str| Error::BadIdentity {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let path = uri
            .strip_prefix(IDENTITY_URI_PREFIX)
            .ok_or_else(|| bad("does not start with the jumpstarter identity prefix"))?;
        let segments: Vec<&str> = path.split('/').collect();
        let [
            "ns",
            namespace,
            "lease",
            lease_name,
            "uid",
            lease_uid,
            "role",
            role,
            "holder",
            holder,
        ] = segments.as_slice()
        else {
            return Err(bad(
                "expected ns/<ns>/lease/<name>/uid/<uid>/role/<role>/holder/<holder>",
            ));
        };
        let role = Role::from_word(role).ok_or_else(|| bad("role is not client or exporter"))?;
        let identity = LeaseIdentity {
            namespace: (*namespace).to_owned(),
            lease_name: (*lease_name).to_owned(),
            lease_uid: (*lease_uid).to_owned(),
            role,
            holder: (*holder).to_owned(),
        };
        identity.validate().map_err(|e| bad(&e.to_string()))?;
        Ok(identity)
    }

    /// Extracts the identity from a DER certificate's URI subject alternative names.
    ///
    /// This only reads the certificate; it does not check who signed it or when it is valid.
    /// Use [`crate::verify_lease_cert`], or a rustls verifier, for that first.
    pub fn from_cert_der(cert: &CertificateDer<'_>) -> Result<LeaseIdentity> {
        let (rest, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
            .map_err(|e| Error::CertificateParse {
                what: "lease certificate",
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(Error::CertificateParse {
                what: "lease certificate",
                reason: "trailing bytes after the certificate".to_owned(),
            });
        }
        let san = parsed
            .subject_alternative_name()
            .map_err(|e| Error::CertificateParse {
                what: "lease certificate",
                reason: format!("subjectAltName: {e}"),
            })?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(IDENTITY_URI_PREFIX) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(Error::MissingIdentity),
            [uri] => LeaseIdentity::parse_uri(uri),
            several => Err(Error::BadIdentity {
                uri: several.join(", "),
                reason: "more than one lease identity".to_owned(),
            }),
        }
    }

    /// A short human-readable name for the subject common name, at most 64 characters (the
    /// X.520 upper bound for a common name).
    pub(crate) fn common_name(&self) -> String {
        let mut name = format!(
            "jumpstarter {} {}/{}",
            self.role, self.namespace, self.holder
        );
        // All fields are ASCII after validation, so any index is a character boundary.
        name.truncate(64);
        name
    }
}

impl fmt::Display for LeaseIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of lease {}/{} ({})",
            self.role, self.holder, self.namespace, self.lease_name, self.lease_uid
        )
    }
}

fn invalid(field: &'static str, value: &str, reason: &'static str) -> Error {
    Error::InvalidIdentity {
        field,
        value: value.to_owned(),
        reason,
    }
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label: 1..=63 of `[a-z0-9-]`, starting and ending with `[a-z0-9]`.
fn check_label(field: &'static str, value: &str) -> Result<()> {
    if value.len() > MAX_LABEL_LEN {
        return Err(invalid(field, value, "longer than 63 characters"));
    }
    check_label_chars(field, value, value)
}

fn check_label_chars(field: &'static str, whole: &str, label: &str) -> Result<()> {
    let bytes = label.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return Err(invalid(field, whole, "empty name or label"));
    };
    if !bytes.iter().all(|&c| is_lower_alnum(c) || c == b'-') {
        return Err(invalid(
            field,
            whole,
            "only lowercase letters, digits, '-' and '.' are allowed",
        ));
    }
    if !is_lower_alnum(first) || !is_lower_alnum(last) {
        return Err(invalid(
            field,
            whole,
            "must start and end with a lowercase letter or digit",
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels.
fn check_subdomain(field: &'static str, value: &str) -> Result<()> {
    if value.len() > MAX_SUBDOMAIN_LEN {
        return Err(invalid(field, value, "longer than 253 characters"));
    }
    value
        .split('.')
        .try_for_each(|label| check_label_chars(field, value, label))
}

/// An object UID: 1..=64 of `[a-z0-9-]`.
fn check_uid(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_UID_LEN {
        return Err(invalid(field, value, "must be 1 to 64 characters"));
    }
    if !value.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        return Err(invalid(
            field,
            value,
            "only lowercase letters, digits and '-' are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> LeaseIdentity {
        LeaseIdentity {
            namespace: "lab".to_owned(),
            lease_name: "lease-1.x".to_owned(),
            lease_uid: "0f8e7a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b".to_owned(),
            role: Role::Exporter,
            holder: "board-7".to_owned(),
        }
    }

    #[test]
    fn uri_has_the_documented_shape_and_round_trips() {
        let uri = sample().to_uri().unwrap();
        assert_eq!(
            uri,
            "spiffe://jumpstarter.dev/ns/lab/lease/lease-1.x/uid/0f8e7a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b/role/exporter/holder/board-7"
        );
        assert_eq!(LeaseIdentity::parse_uri(&uri).unwrap(), sample());
    }

    #[test]
    fn parse_rejects_malformed_uris() {
        let good = sample().to_uri().unwrap();
        let cases = [
            good.replacen("spiffe://jumpstarter.dev/", "spiffe://example.org/", 1),
            good.replacen("/role/exporter", "/role/admin", 1),
            good.replacen("/lease/", "/leases/", 1),
            format!("{good}/extra"),
            format!("{good}?q=1"),
            good.replacen("/ns/lab/", "/ns//", 1),
            good.replacen("/ns/lab/", "/ns/Lab/", 1),
            good.replacen("/ns/lab/", "/ns/l.ab/", 1),
            good.replacen("/holder/board-7", "/holder/-board", 1),
            good.replacen("/uid/0f8e", "/uid/0F8E", 1),
        ];
        for uri in cases {
            let err = LeaseIdentity::parse_uri(&uri).unwrap_err();
            assert!(matches!(err, Error::BadIdentity { .. }), "{uri}: {err}");
        }
    }

    #[test]
    fn to_uri_validates_fields() {
        let mut id = sample();
        id.namespace = "a".repeat(64);
        assert!(matches!(
            id.to_uri(),
            Err(Error::InvalidIdentity {
                field: "namespace",
                ..
            })
        ));
        let mut id = sample();
        id.lease_name = "a..b".to_owned();
        assert!(matches!(
            id.to_uri(),
            Err(Error::InvalidIdentity {
                field: "lease_name",
                ..
            })
        ));
        let mut id = sample();
        id.holder = String::new();
        assert!(id.to_uri().is_err());
    }

    #[test]
    fn common_name_is_bounded() {
        let mut id = sample();
        id.holder = "h".repeat(200);
        assert_eq!(id.common_name().len(), 64);
        assert_eq!(sample().common_name(), "jumpstarter exporter lab/board-7");
    }
}
