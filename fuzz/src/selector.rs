//! Label selector strings, as `CreateLease` and the exporter listings take them from callers.

use jumpstarter_lease::selector::{self, LabelSelector, Operator, SelectorError};

pub(crate) fn check(data: &[u8]) {
    // gRPC strings are UTF-8 (prost refuses others before any handler runs).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match selector::parse(text) {
        Ok(parsed) => {
            assert_eq!(selector::validate(&parsed), Ok(()), "{text:?}");
            // Round trip through the Kubernetes rendering, except for the two selectors
            // Kubernetes cannot read back either: the empty one (`<none>`) and a set holding
            // only the empty value (`k in ()`).
            let rendered = selector::format(&parsed);
            if !parsed.is_empty() && !has_empty_value_set(&parsed) {
                assert_eq!(
                    selector::parse(&rendered).as_ref(),
                    Ok(&parsed),
                    "{text:?} rendered as {rendered:?}"
                );
            }
            // A selector of equality labels only matches its own labels.
            if parsed.match_expressions.is_empty() {
                assert!(selector::matches(&parsed, &parsed.match_labels));
            }
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            if let SelectorError::Syntax {
                input, position, ..
            } = &error
            {
                assert_eq!(input, text);
                assert!(text.is_char_boundary(*position), "position {position}");
            }
        }
    }
}

fn has_empty_value_set(selector: &LabelSelector) -> bool {
    selector.match_expressions.iter().any(|r| {
        matches!(r.operator, Operator::In | Operator::NotIn) && r.values == [String::new()]
    })
}
