//! Resource names of the client API (`namespaces/{ns}/{collection}/{name}`), which every
//! client call carries, checked before any store call.
//!
//! The oracle is the certificates' own naming rules (a namespace is a DNS-1123 label, an
//! object name a DNS-1123 subdomain), which a name accepted here must pass.

use jumpstarter_certs::{LeaseIdentity, Role};
use jumpstarter_lease::name::{self, ResourceNameError};

/// Longest message about a refused name: the input is quoted cut to 80 bytes, each of
/// them rendered as at most a 10-character escape (`\u{10ffff}`), within fixed text.
const MAX_MESSAGE_LEN: usize = 80 * 10 + 200;

pub(crate) fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for collection in ["leases", "exporters", "clients"] {
        match name::parse_resource(text, collection) {
            Ok((namespace, object)) => {
                // Round trip: the parts render back to the exact name.
                assert_eq!(
                    format!("namespaces/{namespace}/{collection}/{object}"),
                    text
                );
                let identity = LeaseIdentity {
                    namespace,
                    lease_name: object.clone(),
                    lease_uid: "u".into(),
                    role: Role::Client,
                    holder: object,
                };
                assert_eq!(identity.validate().ok(), Some(()), "{text:?} was accepted");
            }
            Err(error) => {
                let ResourceNameError { name, .. } = &error;
                assert_eq!(name, text);
                assert!(error.to_string().len() <= MAX_MESSAGE_LEN, "{error}");
            }
        }
    }
}
