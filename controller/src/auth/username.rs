//! What an authenticated username says about the object a call acts as (0.9.0 rules).
//!
//! - Usernames of internal tokens (`internal:<sub>`) and of Kubernetes service accounts
//!   (`<prefix>:system:serviceaccount:<ns>:<sa>`) say nothing about the object's name:
//!   the call must name it in `jumpstarter-name` ([`Origin::Named`]).
//! - Any other username comes from an external identity provider, and the object's name is
//!   derived from it ([`derived_name`]): `dex:Alice@Example.com` acts as
//!   `alice-example-com`. A `jumpstarter-name` that differs is refused.

/// Prefix of usernames that 0.9.0 treats as pre-existing credentials, whatever the
/// configured internal prefix is (hard-coded there too).
const INTERNAL_PREFIX: &str = "internal:";
/// Longest object name derived from a username (an RFC 1123 label).
const DERIVED_NAME_MAX: usize = 63;

/// Where the name of the object a username acts as comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The call names the object (`jumpstarter-name` is required).
    Named,
    /// The name is derived from the username (an external user).
    Derived(String),
}

/// How `username` decides the object's name.
pub(crate) fn origin(username: &str) -> Origin {
    if username.starts_with(INTERNAL_PREFIX) || is_service_account(username) {
        Origin::Named
    } else {
        Origin::Derived(derived_name(username))
    }
}

/// `<prefix>:system:serviceaccount:<namespace>:<name>`, as a JWT authenticator for the
/// cluster issuer maps service-account tokens (at least five `:`-separated parts).
pub(crate) fn is_service_account(username: &str) -> bool {
    let parts: Vec<&str> = username.split(':').collect();
    parts.len() >= 5 && parts[1] == "system" && parts[2] == "serviceaccount"
}

/// The object name 0.9.0 derives from an external username: the text after the first
/// `:` (the authenticator's prefix), lowercased, every character outside `[-a-z0-9]`
/// turned into `-`, runs of `-` collapsed, leading and trailing `-` trimmed, cut to 63.
pub(crate) fn derived_name(username: &str) -> String {
    let rest = username.split_once(':').map_or(username, |(_, rest)| rest);
    let mut name = String::with_capacity(rest.len());
    for c in rest.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            c
        } else {
            '-'
        };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    let trimmed = name.trim_matches('-');
    trimmed.chars().take(DERIVED_NAME_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_as_in_0_9_0() {
        assert_eq!(
            derived_name("dex:client-sample@example.com"),
            "client-sample-example-com"
        );
        assert_eq!(
            derived_name("oidc:Alice.Smith@Example.COM"),
            "alice-smith-example-com"
        );
        assert_eq!(derived_name("no-prefix_user"), "no-prefix-user");
        assert_eq!(derived_name("p:--a__b--"), "a-b");
        assert_eq!(derived_name("p:x:y"), "x-y");
        assert_eq!(derived_name("p:Ünïcode"), "n-code");
        let long = format!("p:{}", "a".repeat(100));
        assert_eq!(derived_name(&long).len(), 63);
        assert_eq!(derived_name("p:@@@"), "");
    }

    #[test]
    fn internal_and_service_account_usernames_need_a_name() {
        assert_eq!(origin("internal:client:lab:alice:u-1"), Origin::Named);
        assert_eq!(
            origin("kubernetes:system:serviceaccount:lab:ci"),
            Origin::Named
        );
        assert_eq!(
            origin("dex:alice@example.com"),
            Origin::Derived("alice-example-com".into())
        );
        // Four parts are not a service account.
        assert_eq!(
            origin("system:serviceaccount:lab:ci"),
            Origin::Derived("serviceaccount-lab-ci".into())
        );
    }
}
