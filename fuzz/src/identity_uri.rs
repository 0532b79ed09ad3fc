//! Lease identities, read from the URI subject alternative name of a peer's certificate.
//! The same bytes are tried as a certificate and as the URI alone.

use jumpstarter_certs::{Error, LeaseIdentity};
use rustls_pki_types::CertificateDer;

pub(crate) fn check(data: &[u8]) {
    match LeaseIdentity::from_cert_der(&CertificateDer::from(data)) {
        Ok(identity) => assert_eq!(identity.validate().ok(), Some(())),
        Err(error) => assert!(
            matches!(
                error,
                Error::CertificateParse { .. } | Error::MissingIdentity | Error::BadIdentity { .. }
            ),
            "{error:?}"
        ),
    }
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    match LeaseIdentity::parse_uri(uri) {
        // Round trip: the identity renders back to the exact URI.
        Ok(identity) => assert_eq!(identity.to_uri().ok().as_deref(), Some(uri)),
        Err(error) => assert!(matches!(error, Error::BadIdentity { .. }), "{error:?}"),
    }
}
