//! Resource names of the client API: `namespaces/{ns}` and
//! `namespaces/{ns}/{exporters|leases|clients}/{name}`.

use tonic::Status;

/// Collection segment of exporter names.
pub const EXPORTERS: &str = "exporters";
/// Collection segment of lease names.
pub const LEASES: &str = "leases";
/// Collection segment of client names.
pub const CLIENTS: &str = "clients";

/// `namespaces/{ns}/{collection}/{name}`.
pub fn format(namespace: &str, collection: &str, name: &str) -> String {
    format!("namespaces/{namespace}/{collection}/{name}")
}

/// The namespace of a parent `namespaces/{ns}`.
pub fn parse_parent(parent: &str) -> Result<String, Status> {
    match parent.split('/').collect::<Vec<_>>().as_slice() {
        ["namespaces", ns] if valid_segment(ns) => Ok((*ns).to_owned()),
        _ => Err(Status::invalid_argument(format!(
            "invalid parent {}: expected namespaces/{{namespace}}",
            quoted(parent)
        ))),
    }
}

/// `(namespace, name)` of `namespaces/{ns}/{collection}/{name}`.
pub fn parse(name: &str, collection: &str) -> Result<(String, String), Status> {
    match name.split('/').collect::<Vec<_>>().as_slice() {
        ["namespaces", ns, c, n] if *c == collection && valid_segment(ns) && valid_segment(n) => {
            Ok(((*ns).to_owned(), (*n).to_owned()))
        }
        _ => Err(Status::invalid_argument(format!(
            "invalid {} name {}: expected namespaces/{{namespace}}/{collection}/{{name}}",
            singular(collection),
            quoted(name)
        ))),
    }
}

/// Whether `name` can be a Kubernetes object name (RFC 1123 subdomain).
pub fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_segment(segment: &str) -> bool {
    is_object_name(segment)
}

fn singular(collection: &str) -> &str {
    collection.strip_suffix('s').unwrap_or(collection)
}

/// The input, quoted and cut to a readable length (names come from the network).
pub fn quoted(input: &str) -> String {
    const MAX: usize = 80;
    if input.len() <= MAX {
        return format!("{input:?}");
    }
    let mut end = MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &input[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_parents() {
        assert_eq!(parse_parent("namespaces/lab").unwrap(), "lab");
        assert_eq!(
            parse("namespaces/lab/leases/l-1", LEASES).unwrap(),
            ("lab".to_owned(), "l-1".to_owned())
        );
        assert_eq!(format("lab", EXPORTERS, "e"), "namespaces/lab/exporters/e");
    }

    #[test]
    fn rejects_malformed_names_with_a_precise_message() {
        let err = parse("namespaces/x", LEASES).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "invalid lease name \"namespaces/x\": expected namespaces/{namespace}/leases/{name}"
        );
        for bad in [
            "",
            "namespaces//leases/a",
            "namespaces/a/exporters/b",
            "namespaces/a/leases/b/c",
            "namespaces/A/leases/b",
        ] {
            assert!(parse(bad, LEASES).is_err(), "{bad}");
        }
        assert!(parse_parent("namespaces/a/b").is_err());
        assert!(parse_parent("ns/a").is_err());
        let long = "x".repeat(10_000);
        assert!(parse_parent(&long).unwrap_err().message().len() < 200);
    }
}
