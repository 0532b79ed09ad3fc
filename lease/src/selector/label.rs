//! Kubernetes label key and value syntax (`IsQualifiedName`, `IsValidLabelValue`).

/// Longest name part of a key, and longest value: the Kubernetes limit for label names.
const MAX_NAME_LEN: usize = 63;

/// Longest key prefix: the DNS-1123 subdomain limit Kubernetes applies to label prefixes.
const MAX_PREFIX_LEN: usize = 253;

/// Checks a label key (`[prefix/]name`); the error says what is wrong with it.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        None => (None, key),
        Some((prefix, name)) => (Some(prefix), name),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("the prefix part before '/' must not be empty".to_owned());
        }
        if name.contains('/') {
            return Err("a key may contain at most one '/'".to_owned());
        }
        check_prefix(prefix)?;
    }
    if name.is_empty() {
        return Err("the name part must not be empty".to_owned());
    }
    check_name_like(name, "name part")
}

/// Checks a label value (empty, or a name of at most 63 characters).
pub(crate) fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_like(value, "value")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn check_name_like(text: &str, what: &str) -> Result<(), String> {
    if text.len() > MAX_NAME_LEN {
        return Err(format!(
            "the {what} must be at most {MAX_NAME_LEN} characters"
        ));
    }
    let bytes = text.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = bytes.first().is_some_and(alnum) && bytes.last().is_some_and(alnum);
    if inner_ok && ends_ok {
        Ok(())
    } else {
        Err(format!(
            "the {what} must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
        ))
    }
}

/// A lowercase DNS-1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "the prefix must be at most {MAX_PREFIX_LEN} characters"
        ));
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        let lower_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        bytes.first().is_some_and(lower_alnum)
            && bytes.last().is_some_and(lower_alnum)
            && bytes.iter().all(|b| lower_alnum(b) || *b == b'-')
    };
    if prefix.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("the prefix must be a lowercase DNS subdomain (e.g. 'example.com')".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "board", "jumpstarter.dev/name", "a.b-c_d", "x/Y", "A1"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "a-",
            "Ex.com/a",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values() {
        for ok in ["", "mock", "1.0_b-c", "A"] {
            assert!(check_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-", "a/b", "a.", "x y"] {
            assert!(check_value(bad).is_err(), "{bad}");
        }
        assert!(check_value(&"v".repeat(63)).is_ok());
        assert!(check_value(&"v".repeat(64)).is_err());
    }
}
