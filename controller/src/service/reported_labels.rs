//! Labels an exporter reports about itself at Register, and which of them it may set.
//!
//! An exporter's labels decide which leases it serves, which access policies apply to it
//! and which router its sessions use, so they belong to the administrator. An exporter
//! may add labels of its own only under key prefixes the administrator allows
//! (`--exporter-label-prefix`, none by default: the 0.9.0 exporter reports no labels), and
//! never:
//! - a key under a reserved domain (`jumpstarter.dev/`, `*.jumpstarter.dev/`,
//!   `kubernetes.io/`, `k8s.io/` and their subdomains);
//! - a key an access policy's exporter selector or a router's labels read;
//! - a key the administrator set, whatever its value;
//! - a key or value that is not a valid Kubernetes label.
//!
//! Refused labels are dropped (and counted), not the call: a 0.9.0 exporter does not retry a
//! failed Register, so refusing it would take the exporter offline for a label.
//!
//! Which labels are the exporter's is recorded in the annotation
//! [`REPORTED_LABELS_ANNOTATION`](crate::crd::vocabulary::REPORTED_LABELS_ANNOTATION) (a JSON object of the keys and values it set), so a later
//! Register replaces and removes only those. A recorded label whose value differs from the
//! stored one was changed by the administrator and is theirs from then on.
//!
//! The core is pure ([`merge`]); the Register call applies its result.

use std::collections::{BTreeMap, BTreeSet};

use crate::admin::validate_label;
use crate::crd::vocabulary::GROUP;

/// Label domains no exporter may write: jumpstarter's own and Kubernetes'.
const RESERVED_DOMAINS: [&str; 3] = [GROUP, "kubernetes.io", "k8s.io"];

/// Why a reported label was not applied; the metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// The key is under a reserved domain.
    Reserved,
    /// The key matches none of the allowed prefixes.
    NotAllowed,
    /// An access policy or a router reads the key.
    Selected,
    /// The administrator set the key.
    AdminSet,
    /// Not a valid label key or value.
    Invalid,
}

impl Refusal {
    /// The metric label value.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Reserved => "reserved",
            Refusal::NotAllowed => "not_allowed",
            Refusal::Selected => "selected",
            Refusal::AdminSet => "admin_set",
            Refusal::Invalid => "invalid",
        }
    }

    /// Why, in words, for the log.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Refusal::Reserved => "the key is under a reserved domain",
            Refusal::NotAllowed => "the key matches no allowed prefix (--exporter-label-prefix)",
            Refusal::Selected => "an access policy or a router reads the key",
            Refusal::AdminSet => "the administrator set the key",
            Refusal::Invalid => "not a valid label",
        }
    }
}

/// What an exporter may set: the configured prefixes, minus the keys others read.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelPolicy<'a> {
    /// Allowed key prefixes (`--exporter-label-prefix`).
    pub(crate) allowed_prefixes: &'a [String],
    /// Keys that access policies' exporter selectors and routers' labels read.
    pub(crate) selected_keys: BTreeSet<String>,
}

impl LabelPolicy<'_> {
    /// Why `key=value` may not be set by an exporter, if it may not.
    fn refusal(&self, key: &str, value: &str) -> Option<Refusal> {
        if validate_label(key, value).is_err() {
            Some(Refusal::Invalid)
        } else if is_reserved(key) {
            Some(Refusal::Reserved)
        } else if !self.allowed_prefixes.iter().any(|p| key.starts_with(p)) {
            Some(Refusal::NotAllowed)
        } else if self.selected_keys.contains(key) {
            Some(Refusal::Selected)
        } else {
            None
        }
    }
}

/// Whether `key`'s prefix is a reserved domain or a subdomain of one.
pub(crate) fn is_reserved(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    RESERVED_DOMAINS
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")))
}

/// The outcome of one Register's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Merged {
    /// The exporter's labels after the Register.
    pub(crate) labels: BTreeMap<String, String>,
    /// The annotation recording the exporter's own labels (`None`: it has none).
    pub(crate) annotation: Option<String>,
    /// The reported labels not applied, by key.
    pub(crate) refused: Vec<(String, Refusal)>,
}

/// The labels after an exporter reported `reported`, given the stored `labels` and
/// `annotation` (the record of the exporter's own labels).
pub(crate) fn merge(
    labels: &BTreeMap<String, String>,
    annotation: Option<&str>,
    reported: &BTreeMap<String, String>,
    policy: &LabelPolicy<'_>,
) -> Merged {
    // A record that does not parse counts as empty: everything is the administrator's.
    let recorded: BTreeMap<String, String> = annotation
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    let mut merged = labels.clone();
    // The exporter's own labels are those still holding the value it set.
    for (key, value) in &recorded {
        if labels.get(key) == Some(value) {
            merged.remove(key);
        }
    }
    let mut own = BTreeMap::new();
    let mut refused = Vec::new();
    for (key, value) in reported {
        let refusal = policy
            .refusal(key, value)
            .or_else(|| merged.contains_key(key).then_some(Refusal::AdminSet));
        match refusal {
            Some(refusal) => refused.push((key.clone(), refusal)),
            None => {
                merged.insert(key.clone(), value.clone());
                own.insert(key.clone(), value.clone());
            }
        }
    }
    let annotation = (!own.is_empty())
        // A map of strings always serialises.
        .then(|| serde_json::to_string(&own).unwrap_or_default());
    Merged {
        labels: merged,
        annotation,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn policy(prefixes: &[String]) -> LabelPolicy<'_> {
        LabelPolicy {
            allowed_prefixes: prefixes,
            selected_keys: BTreeSet::from(["lab.example.com/site".to_owned()]),
        }
    }

    #[test]
    fn by_default_nothing_reported_is_applied_and_admin_labels_stay() {
        let admin = map(&[("board", "mock"), ("jumpstarter.dev/tier", "gold")]);
        let merged = merge(
            &admin,
            None,
            &map(&[("board", "other"), ("jumpstarter.dev/tier", "free")]),
            &policy(&[]),
        );
        assert_eq!(merged.labels, admin);
        assert_eq!(merged.annotation, None);
        assert_eq!(
            merged.refused,
            vec![
                ("board".to_owned(), Refusal::NotAllowed),
                ("jumpstarter.dev/tier".to_owned(), Refusal::Reserved),
            ]
        );
        // What a 0.9.0 exporter sends changes nothing.
        let merged = merge(&admin, None, &BTreeMap::new(), &policy(&[]));
        assert_eq!(merged.labels, admin);
        assert!(merged.refused.is_empty());
    }

    #[test]
    fn allowed_keys_are_set_replaced_and_removed_by_the_exporter_only() {
        let prefixes = vec!["lab.example.com/".to_owned()];
        let admin = map(&[("board", "mock"), ("lab.example.com/rack", "r1")]);
        let first = merge(
            &admin,
            None,
            &map(&[
                ("lab.example.com/fw", "1.0"),
                ("lab.example.com/rack", "r9"),
                ("lab.example.com/site", "x"),
                ("sub.jumpstarter.dev/x", "y"),
                ("lab.example.com/bad", "not valid!"),
            ]),
            &policy(&prefixes),
        );
        assert_eq!(
            first.labels,
            map(&[
                ("board", "mock"),
                ("lab.example.com/fw", "1.0"),
                ("lab.example.com/rack", "r1"),
            ])
        );
        assert_eq!(
            first.annotation.as_deref(),
            Some(r#"{"lab.example.com/fw":"1.0"}"#)
        );
        let reasons: Vec<_> = first.refused.iter().map(|(_, r)| r.reason()).collect();
        assert_eq!(reasons, ["invalid", "admin_set", "selected", "reserved"]);

        // The next Register replaces the exporter's value, then removes it.
        let second = merge(
            &first.labels,
            first.annotation.as_deref(),
            &map(&[("lab.example.com/fw", "2.0")]),
            &policy(&prefixes),
        );
        assert_eq!(second.labels["lab.example.com/fw"], "2.0");
        let third = merge(
            &second.labels,
            second.annotation.as_deref(),
            &BTreeMap::new(),
            &policy(&prefixes),
        );
        assert_eq!(third.labels, admin);
        assert_eq!(third.annotation, None);
    }

    #[test]
    fn a_value_the_administrator_changed_becomes_theirs() {
        let prefixes = vec!["lab.example.com/".to_owned()];
        let labels = map(&[("lab.example.com/fw", "pinned")]);
        let merged = merge(
            &labels,
            Some(r#"{"lab.example.com/fw":"1.0"}"#),
            &map(&[("lab.example.com/fw", "2.0")]),
            &policy(&prefixes),
        );
        assert_eq!(merged.labels, labels);
        assert_eq!(merged.annotation, None);
        assert_eq!(
            merged.refused,
            vec![("lab.example.com/fw".to_owned(), Refusal::AdminSet)]
        );
        // A damaged record leaves every label to the administrator.
        let merged = merge(&labels, Some("{"), &BTreeMap::new(), &policy(&prefixes));
        assert_eq!(merged.labels, labels);
    }

    #[test]
    fn reserved_domains_include_subdomains() {
        for key in [
            "jumpstarter.dev/x",
            "metadata.jumpstarter.dev/x",
            "kubernetes.io/arch",
            "node.k8s.io/x",
        ] {
            assert!(is_reserved(key), "{key}");
        }
        for key in ["board", "lab.example.com/x", "notjumpstarter.dev/x"] {
            assert!(!is_reserved(key), "{key}");
        }
    }
}
