//! Kubernetes label selectors: the `metav1.LabelSelector` shape, its string syntax
//! ([`parse`], [`format`](fn@format)) and evaluation against a label set
//! ([`matches`](fn@matches)).
//!
//! Everything here is pure. The string syntax is the one `kubectl -l` and jumpstarter's
//! `CreateLease` accept; [`format`](fn@format) renders like Kubernetes
//! `FormatLabelSelector`, which is what jumpstarter 0.9.0 puts into `Lease.selector` on the
//! wire.

mod label;
mod parser;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use parser::parse;

/// A label selector as stored in the CRDs: equality labels plus set-based requirements.
///
/// Both parts must hold for a label set to match; an empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// `key=value` requirements.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements, in their stored order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One set-based requirement (`metav1.LabelSelectorRequirement`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the key's value is compared with `values`.
    pub operator: Operator,
    /// Non-empty for `In`/`NotIn`, empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a [`Requirement`], serialised as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The label exists and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label exists.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
        })
    }
}

/// Why a selector string or a stored selector is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string does not follow the selector grammar.
    #[error("invalid label selector {input:?}: {message} at position {position}")]
    Syntax {
        /// The whole selector string.
        input: String,
        /// Byte offset of the offending token.
        position: usize,
        /// What was found and what was expected.
        message: String,
    },
    /// A key is not a valid label key.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value is not a valid label value.
    #[error("invalid value {value:?} for label {key:?}: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `in`/`notin` with an empty value list.
    #[error("label {key:?}: operator '{operator}' needs at least one value")]
    EmptyValues {
        /// The key of the requirement.
        key: String,
        /// Its operator.
        operator: Operator,
    },
    /// `Exists`/`DoesNotExist` with values.
    #[error("label {key:?}: operator '{operator}' takes no values")]
    UnexpectedValues {
        /// The key of the requirement.
        key: String,
        /// Its operator.
        operator: Operator,
    },
    /// Two `=` requirements on one key with different values.
    #[error(
        "invalid selector: label {key} cannot have multiple equality requirements \
         with different values ({first} and {second})"
    )]
    ConflictingEquality {
        /// The key.
        key: String,
        /// The value seen first.
        first: String,
        /// The value that conflicts with it.
        second: String,
    },
    /// A syntactically valid operator that lease selectors do not support (`<`, `>`).
    #[error("label {key:?}: operator '{operator}' is not supported in label selectors here")]
    UnsupportedOperator {
        /// The key of the requirement.
        key: String,
        /// The operator as written.
        operator: String,
    },
}

impl LabelSelector {
    /// True when the selector has no requirements at all (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// Checks keys, values and operator arities, as Kubernetes `LabelSelectorAsSelector` does.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for (key, value) in &selector.match_labels {
        check_key(key)?;
        check_value(key, value)?;
    }
    for requirement in &selector.match_expressions {
        check_key(&requirement.key)?;
        match requirement.operator {
            Operator::In | Operator::NotIn if requirement.values.is_empty() => {
                return Err(SelectorError::EmptyValues {
                    key: requirement.key.clone(),
                    operator: requirement.operator,
                });
            }
            Operator::Exists | Operator::DoesNotExist if !requirement.values.is_empty() => {
                return Err(SelectorError::UnexpectedValues {
                    key: requirement.key.clone(),
                    operator: requirement.operator,
                });
            }
            _ => {}
        }
        for value in &requirement.values {
            check_value(&requirement.key, value)?;
        }
    }
    Ok(())
}

/// Renders a selector like Kubernetes `FormatLabelSelector`.
///
/// Requirements are sorted by key (equality labels before expressions on the same key),
/// values inside parentheses are sorted, and they are joined by `,`. An empty selector is
/// `<none>`; a selector that fails [`validate`] is `<error>`.
pub fn format(selector: &LabelSelector) -> String {
    if validate(selector).is_err() {
        return "<error>".to_owned();
    }
    let mut parts: Vec<(&str, String)> = selector
        .match_labels
        .iter()
        .map(|(key, value)| (key.as_str(), format!("{key}={value}")))
        .collect();
    for requirement in &selector.match_expressions {
        let key = requirement.key.as_str();
        let text = match requirement.operator {
            Operator::Exists => key.to_owned(),
            Operator::DoesNotExist => format!("!{key}"),
            Operator::In | Operator::NotIn => {
                let mut values: Vec<&str> = requirement.values.iter().map(String::as_str).collect();
                values.sort_unstable();
                format!("{key} {} ({})", requirement.operator, values.join(","))
            }
        };
        parts.push((key, text));
    }
    // Stable: keeps equality labels first and expressions in stored order within one key.
    parts.sort_by(|a, b| a.0.cmp(b.0));
    if parts.is_empty() {
        return "<none>".to_owned();
    }
    parts
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// True when `labels` satisfies every requirement of `selector`.
///
/// The selector is evaluated as written; call [`validate`] first when it comes from users.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_ok
        && selector.match_expressions.iter().all(|requirement| {
            let actual = labels.get(&requirement.key);
            match requirement.operator {
                Operator::In => actual.is_some_and(|v| requirement.values.contains(v)),
                Operator::NotIn => !actual.is_some_and(|v| requirement.values.contains(v)),
                Operator::Exists => actual.is_some(),
                Operator::DoesNotExist => actual.is_none(),
            }
        })
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    label::check_key(key).map_err(|reason| SelectorError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

fn check_value(key: &str, value: &str) -> Result<(), SelectorError> {
    label::check_value(value).map_err(|reason| SelectorError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(text: &str) -> LabelSelector {
        parse(text).expect("valid selector")
    }

    #[test]
    fn format_matches_kubernetes_rendering() {
        assert_eq!(format(&LabelSelector::default()), "<none>");
        assert_eq!(format(&sel("board=mock")), "board=mock");
        assert_eq!(
            format(&sel("z, !y, b notin (q,p), a in (c,b), m=n")),
            "a in (b,c),b notin (p,q),m=n,!y,z"
        );
        assert_eq!(format(&sel("k!=b,k!=a")), "k notin (a,b)");
        let broken = LabelSelector {
            match_expressions: vec![Requirement {
                key: "k".into(),
                operator: Operator::In,
                values: vec![],
            }],
            ..LabelSelector::default()
        };
        assert_eq!(format(&broken), "<error>");
    }

    #[test]
    fn matching() {
        let set = labels(&[("board", "mock"), ("suite", "conformance")]);
        assert!(matches(&LabelSelector::default(), &set));
        assert!(matches(&LabelSelector::default(), &BTreeMap::new()));
        assert!(matches(&sel("board=mock"), &set));
        assert!(!matches(&sel("board=rpi"), &set));
        assert!(matches(&sel("board in (rpi,mock),suite"), &set));
        assert!(!matches(&sel("board notin (mock)"), &set));
        assert!(matches(&sel("absent notin (x)"), &set));
        assert!(matches(&sel("!absent"), &set));
        assert!(!matches(&sel("!board"), &set));
        assert!(!matches(&sel("absent"), &set));
        assert!(matches(&sel("board!=rpi"), &set));
        assert!(!matches(&sel("board=mock,suite=other"), &set));
    }

    #[test]
    fn validate_rejects_bad_stored_selectors() {
        let mut bad = LabelSelector::default();
        bad.match_labels.insert("bad key".into(), "v".into());
        assert!(matches!(
            validate(&bad),
            Err(SelectorError::InvalidKey { key, .. }) if key == "bad key"
        ));
        let exists_with_values = LabelSelector {
            match_expressions: vec![Requirement {
                key: "k".into(),
                operator: Operator::Exists,
                values: vec!["v".into()],
            }],
            ..LabelSelector::default()
        };
        assert!(matches!(
            validate(&exists_with_values),
            Err(SelectorError::UnexpectedValues { .. })
        ));
    }

    #[test]
    fn serde_uses_kubernetes_field_names() {
        let selector = sel("a=b,c in (d)");
        let json = serde_json::to_value(&selector).expect("serialise");
        assert_eq!(
            json,
            serde_json::json!({
                "matchLabels": {"a": "b"},
                "matchExpressions": [{"key": "c", "operator": "In", "values": ["d"]}]
            })
        );
        let empty: LabelSelector = serde_json::from_str("{}").expect("deserialise");
        assert!(empty.is_empty());
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9]{0,6}",
            "[a-z]{1,4}\\.[a-z]{2,3}/[A-Za-z][A-Za-z0-9._-]{0,5}[A-Za-z0-9]",
        ]
        // `in` and `notin` are valid label keys, but Kubernetes' selector syntax reads them
        // as operators wherever they stand, so no selector text can name them as keys.
        .prop_filter("a selector keyword", |key| key != "in" && key != "notin")
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "",
            "[A-Za-z0-9]",
            "[A-Za-z0-9][A-Za-z0-9._-]{0,8}[A-Za-z0-9]"
        ]
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        let operator = prop_oneof![
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
        ];
        (
            key_strategy(),
            operator,
            prop::collection::vec(value_strategy(), 1..4),
        )
            // `k in ()` is how Kubernetes renders the set {""}, and Kubernetes cannot parse it
            // back either; that one selector is left out.
            .prop_filter("the set {\"\"} does not round-trip", |(_, _, values)| {
                values.iter().any(|v| !v.is_empty())
            })
            .prop_map(|(key, operator, values)| Requirement {
                key,
                operator,
                values: match operator {
                    Operator::In | Operator::NotIn => values,
                    Operator::Exists | Operator::DoesNotExist => Vec::new(),
                },
            })
    }

    fn selector_strategy() -> impl Strategy<Value = LabelSelector> {
        (
            prop::collection::btree_map(key_strategy(), value_strategy(), 0..4),
            prop::collection::vec(requirement_strategy(), 0..5),
        )
            .prop_map(|(match_labels, match_expressions)| LabelSelector {
                match_labels,
                match_expressions,
            })
    }

    /// The canonical form `parse` produces: expressions stably sorted by key, set values
    /// sorted and de-duplicated.
    fn normalise(selector: &LabelSelector) -> LabelSelector {
        let mut out = selector.clone();
        for requirement in &mut out.match_expressions {
            requirement.values.sort();
            requirement.values.dedup();
        }
        out.match_expressions.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    proptest! {
        #[test]
        fn parse_inverts_format(selector in selector_strategy()) {
            let text = format(&selector);
            let source = if selector.is_empty() { String::new() } else { text.clone() };
            let parsed = parse(&source).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let normal = normalise(&selector);
            prop_assert_eq!(&parsed, &normal, "text: {}", text);
            prop_assert_eq!(format(&parsed), format(&normal));
        }

        #[test]
        fn parse_never_panics(text in "[a-z!=(), in-]{0,24}") {
            let _ = parse(&text);
        }
    }
}
