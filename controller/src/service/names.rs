//! Resource names of the client API: `namespaces/{ns}` and
//! `namespaces/{ns}/{exporters|leases|clients}/{name}`, as gRPC statuses. The name grammar
//! is the lease domain's ([`jumpstarter_lease::name`]).

use tonic::Status;

use jumpstarter_lease::name::{is_namespace_name, parse_resource, quoted};

/// Collection segment of exporter names.
pub(crate) const EXPORTERS: &str = "exporters";
/// Collection segment of lease names.
pub(crate) const LEASES: &str = "leases";
/// Collection segment of client names.
pub(crate) const CLIENTS: &str = "clients";

/// `namespaces/{ns}/{collection}/{name}`.
pub(crate) fn format(namespace: &str, collection: &str, name: &str) -> String {
    format!("namespaces/{namespace}/{collection}/{name}")
}

/// The namespace of a parent `namespaces/{ns}`.
pub(crate) fn parse_parent(parent: &str) -> Result<String, Status> {
    match parent.split('/').collect::<Vec<_>>().as_slice() {
        ["namespaces", ns] if is_namespace_name(ns) => Ok((*ns).to_owned()),
        _ => Err(Status::invalid_argument(format!(
            "invalid parent {}: expected namespaces/{{namespace}}",
            quoted(parent)
        ))),
    }
}

/// `(namespace, name)` of `namespaces/{ns}/{collection}/{name}`.
pub(crate) fn parse(name: &str, collection: &str) -> Result<(String, String), Status> {
    parse_resource(name, collection).map_err(|e| Status::invalid_argument(e.to_string()))
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
        // The grammar's other refusals are the lease domain's tests; each is this status too.
        assert_eq!(
            parse("namespaces/A/leases/b", LEASES).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(parse_parent("namespaces/a/b").is_err());
        assert!(parse_parent("ns/a").is_err());
        assert!(parse_parent("namespaces/a.b").is_err());
        let long = "x".repeat(10_000);
        assert!(parse_parent(&long).unwrap_err().message().len() < 200);
    }
}
