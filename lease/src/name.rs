//! Object and resource names as callers write them: Kubernetes object names (RFC 1123
//! subdomains) and the client API's `namespaces/{ns}/{collection}/{name}` form.

/// Longest Kubernetes object name (RFC 1123 subdomain).
const MAX_OBJECT_NAME: usize = 253;
/// Longest namespace name (RFC 1123 label). Labels of object names have no limit of their
/// own in Kubernetes, only the name's total length.
const MAX_NAMESPACE: usize = 63;
/// Longest piece of caller input quoted back in a message (names come from the network).
const MAX_QUOTED: usize = 80;

/// A resource name that does not have the `namespaces/{ns}/{collection}/{name}` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {} name {}: expected namespaces/{{namespace}}/{collection}/{{name}}",
    singular(.collection),
    quoted(.name)
)]
pub struct ResourceNameError {
    /// The name as given.
    pub name: String,
    /// The collection it should name an object of (`exporters`, `leases`, ...).
    pub collection: String,
}

/// `(namespace, name)` of `namespaces/{ns}/{collection}/{name}`.
pub fn parse_resource(name: &str, collection: &str) -> Result<(String, String), ResourceNameError> {
    match name.split('/').collect::<Vec<_>>().as_slice() {
        ["namespaces", ns, c, n]
            if *c == collection && is_namespace_name(ns) && is_object_name(n) =>
        {
            Ok(((*ns).to_owned(), (*n).to_owned()))
        }
        _ => Err(ResourceNameError {
            name: name.to_owned(),
            collection: collection.to_owned(),
        }),
    }
}

/// Whether `name` can be a Kubernetes object name (RFC 1123 subdomain): at most 253
/// characters, dot-separated labels.
pub fn is_object_name(name: &str) -> bool {
    name.len() <= MAX_OBJECT_NAME && name.split('.').all(is_label)
}

/// Whether `name` can be a namespace name (RFC 1123 label).
pub fn is_namespace_name(name: &str) -> bool {
    name.len() <= MAX_NAMESPACE && is_label(name)
}

/// The characters of an RFC 1123 label: lowercase letters, digits and '-', starting and
/// ending with a letter or digit.
fn is_label(label: &str) -> bool {
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
}

/// The input, quoted and cut to a readable length.
pub fn quoted(input: &str) -> String {
    if input.len() <= MAX_QUOTED {
        return format!("{input:?}");
    }
    let mut end = MAX_QUOTED;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &input[..end])
}

fn singular(collection: &str) -> &str {
    collection.strip_suffix('s').unwrap_or(collection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_names_with_a_precise_message() {
        assert_eq!(
            parse_resource("namespaces/lab/leases/l-1", "leases").unwrap(),
            ("lab".to_owned(), "l-1".to_owned())
        );
        assert_eq!(
            parse_resource("namespaces/x", "leases")
                .unwrap_err()
                .to_string(),
            "invalid lease name \"namespaces/x\": expected namespaces/{namespace}/leases/{name}"
        );
        for bad in [
            "",
            "namespaces//leases/a",
            "namespaces/a/exporters/b",
            "namespaces/a/leases/b/c",
            "namespaces/A/leases/b",
            "namespaces/a.b/leases/c",
            "namespaces/../leases/c",
        ] {
            assert!(parse_resource(bad, "leases").is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_are_rfc_1123_labels() {
        assert!(is_namespace_name("lab-1"));
        for bad in ["", "a.b", "-a", "a-", "A", "a/b", ".."] {
            assert!(!is_namespace_name(bad), "{bad:?}");
        }
        assert!(is_namespace_name(&"a".repeat(63)));
        assert!(!is_namespace_name(&"a".repeat(64)));
        assert!(is_object_name(&"a".repeat(64)));
    }

    #[test]
    fn names_follow_the_rfc_1123_rules_label_by_label() {
        assert!(parse_resource("namespaces/lab/exporters/board.rack-2", "exporters").is_ok());
        assert!(is_object_name(&format!("{}.b", "a".repeat(100))));
        assert!(!is_object_name(&"a".repeat(254)));
        for bad in [
            // Found by fuzzing: empty labels and labels ending or starting with '-'.
            "namespaces/lab/leases/a..b",
            "namespaces/lab/leases/a-.b",
            "namespaces/lab/leases/a.-b",
            // A namespace is a single label of at most 63 characters.
            "namespaces/lab.x/leases/l-1",
            &format!("namespaces/{}/leases/l-1", "a".repeat(64)),
        ] {
            assert!(parse_resource(bad, "leases").is_err(), "{bad}");
        }
    }

    #[test]
    fn quotes_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let q = quoted(&long);
        assert!(q.ends_with("..."));
        assert!(q.len() < 100);
    }
}
