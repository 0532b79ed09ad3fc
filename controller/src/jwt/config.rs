//! The `authentication.jwt` entries of the 0.9.0 configuration: Kubernetes
//! structured-authentication `JWTAuthenticator`s (`apiserver.config.k8s.io/v1beta1` shape),
//! parsed strictly and validated as the apiserver validates them.
//!
//! Differences from the apiserver, all refused with a message rather than ignored:
//! - CEL `expression`s (claim validation rules, claim mappings, `extra`,
//!   `userValidationRules`) are not supported: there is no CEL evaluator here. Use
//!   `claim`/`requiredValue` and `claim`/`prefix` instead.
//!
//! `issuer.certificateAuthority` is either inline PEM or the path of a PEM file (as the
//! 0.9.0 controller reads it: a value naming an existing file is a path); a file is re-read
//! when it changes (see [`super::trust`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::trust::{CertificateAuthority, parse_pem_roots};

/// Where the configuration says how to refuse CEL, for the error text.
const CEL_UNSUPPORTED: &str =
    "CEL expressions are not supported (this controller has no CEL evaluator)";

/// One JWT authenticator: which issuer, which audiences, which claims make the user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtAuthenticatorConfig {
    pub issuer: IssuerConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_validation_rules: Vec<ClaimValidationRule>,
    pub claim_mappings: ClaimMappings,
    /// CEL only: refused when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_validation_rules: Vec<UserValidationRule>,
}

/// The token issuer: its URL (the `iss` claim), discovery, trust and audiences.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuerConfig {
    /// The `iss` the tokens carry; https. Discovery is `<url>/.well-known/openid-configuration`
    /// unless `discoveryURL` is set.
    pub url: String,
    #[serde(
        default,
        rename = "discoveryURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub discovery_url: Option<String>,
    /// Inline PEM, or the path of a PEM file. Absent: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_match_policy: Option<String>,
}

/// A rule every token must pass: `claim` must equal `requiredValue` (or a CEL
/// `expression`, refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimValidationRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How the user's attributes come from the claims.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimMappings {
    pub username: PrefixedClaimOrExpression,
    #[serde(default)]
    pub groups: PrefixedClaimOrExpression,
    #[serde(default)]
    pub uid: ClaimOrExpression,
    /// CEL only (`valueExpression`): refused when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraMapping>,
}

/// A claim whose value, after `prefix`, is the attribute (or a CEL `expression`, refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrefixedClaimOrExpression {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Required when `claim` is set; `""` disables prefixing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// A claim whose value is the attribute (or a CEL `expression`, refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimOrExpression {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// An extra attribute from a CEL expression (refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtraMapping {
    pub key: String,
    pub value_expression: String,
}

/// A CEL rule on the mapped user (refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserValidationRule {
    pub expression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why the `jwt` list was refused. Every variant names the field by its path from the
/// list, e.g. `jwt[0].issuer.url`; the caller prefixes where the list came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtConfigError {
    /// Not the schema: an unknown field, a wrong type, a missing required field.
    #[error("{path}: {message}")]
    Schema { path: String, message: String },
    /// A value the apiserver's validation refuses.
    #[error("{path}: Invalid value: {value:?}: {message}")]
    Invalid {
        path: String,
        value: String,
        message: String,
    },
    /// A field the apiserver requires (here or because of another field).
    #[error("{path}: Required value: {message}")]
    Required { path: String, message: String },
    /// A field that must not be set (here or because of another field).
    #[error("{path}: Forbidden: {message}")]
    Forbidden { path: String, message: String },
    /// A CEL expression.
    #[error("{path}: {CEL_UNSUPPORTED}; use {instead}")]
    Cel { path: String, instead: &'static str },
}

impl JwtConfigError {
    /// The path of the refused field.
    pub fn path(&self) -> &str {
        match self {
            JwtConfigError::Schema { path, .. }
            | JwtConfigError::Invalid { path, .. }
            | JwtConfigError::Required { path, .. }
            | JwtConfigError::Forbidden { path, .. }
            | JwtConfigError::Cel { path, .. } => path,
        }
    }
}

/// Parses and validates the raw `authentication.jwt` list (as it comes out of the
/// YAML/JSON configuration). The first problem found is returned.
pub fn parse_authenticators(
    values: &[serde_json::Value],
) -> Result<Vec<JwtAuthenticatorConfig>, JwtConfigError> {
    let mut configs = Vec::with_capacity(values.len());
    let mut issuers = BTreeSet::new();
    for (index, value) in values.iter().enumerate() {
        let base = format!("jwt[{index}]");
        let config: JwtAuthenticatorConfig = serde_path_to_error::deserialize(value.clone())
            .map_err(|e| {
                let inner = e.path().to_string();
                let path = if inner == "." {
                    base.clone()
                } else {
                    format!("{base}.{inner}")
                };
                JwtConfigError::Schema {
                    path,
                    message: e.into_inner().to_string(),
                }
            })?;
        config.validate(&base)?;
        if !issuers.insert(config.issuer.url.clone()) {
            return Err(JwtConfigError::Invalid {
                path: format!("{base}.issuer.url"),
                value: config.issuer.url.clone(),
                message: "duplicate issuer URL".into(),
            });
        }
        configs.push(config);
    }
    Ok(configs)
}

impl JwtAuthenticatorConfig {
    /// Checks the rules the apiserver checks (`ValidateJWTAuthenticator`), minus CEL.
    pub fn validate(&self, base: &str) -> Result<(), JwtConfigError> {
        self.issuer.validate(&format!("{base}.issuer"))?;
        validate_claim_rules(
            &self.claim_validation_rules,
            &format!("{base}.claimValidationRules"),
        )?;
        self.claim_mappings
            .validate(&format!("{base}.claimMappings"))?;
        if !self.user_validation_rules.is_empty() {
            return Err(JwtConfigError::Cel {
                path: format!("{base}.userValidationRules"),
                instead: "claimValidationRules with claim/requiredValue",
            });
        }
        Ok(())
    }

    /// The username claim (validation guarantees it is set).
    pub fn username_claim(&self) -> &str {
        set(&self.claim_mappings.username.claim).unwrap_or("")
    }
}

impl IssuerConfig {
    fn validate(&self, base: &str) -> Result<(), JwtConfigError> {
        let url_path = format!("{base}.url");
        if self.url.is_empty() {
            return Err(JwtConfigError::Required {
                path: url_path,
                message: "URL is required".into(),
            });
        }
        validate_https_url(&self.url, &url_path)?;
        if let Some(discovery) = set(&self.discovery_url) {
            let path = format!("{base}.discoveryURL");
            validate_https_url(discovery, &path)?;
            if discovery.trim_end_matches('/') == self.url.trim_end_matches('/') {
                return Err(JwtConfigError::Invalid {
                    path,
                    value: discovery.into(),
                    message: "discoveryURL must be different from URL".into(),
                });
            }
        }
        let aud_path = format!("{base}.audiences");
        if self.audiences.is_empty() {
            return Err(JwtConfigError::Required {
                path: aud_path,
                message: "at least one issuer.audiences is required".into(),
            });
        }
        let mut seen = BTreeSet::new();
        for (i, audience) in self.audiences.iter().enumerate() {
            if audience.is_empty() {
                return Err(JwtConfigError::Required {
                    path: format!("{aud_path}[{i}]"),
                    message: "audience can't be empty".into(),
                });
            }
            if !seen.insert(audience) {
                return Err(JwtConfigError::Invalid {
                    path: format!("{aud_path}[{i}]"),
                    value: audience.clone(),
                    message: "duplicate audience".into(),
                });
            }
        }
        let policy_path = format!("{base}.audienceMatchPolicy");
        match set(&self.audience_match_policy) {
            None if self.audiences.len() > 1 => {
                return Err(JwtConfigError::Invalid {
                    path: policy_path,
                    value: String::new(),
                    message: "audienceMatchPolicy must be MatchAny for multiple audiences".into(),
                });
            }
            None | Some("MatchAny") => {}
            Some(other) => {
                return Err(JwtConfigError::Invalid {
                    path: policy_path,
                    value: other.into(),
                    message: "supported values: \"MatchAny\"".into(),
                });
            }
        }
        if let Some(ca) = set(&self.certificate_authority)
            && let CertificateAuthority::Inline(pem) = CertificateAuthority::of(ca)
        {
            parse_pem_roots(pem.as_bytes()).map_err(|message| JwtConfigError::Invalid {
                path: format!("{base}.certificateAuthority"),
                value: "<inline PEM>".into(),
                message,
            })?;
        }
        Ok(())
    }
}

fn validate_https_url(url: &str, path: &str) -> Result<(), JwtConfigError> {
    let invalid = |message: &str| JwtConfigError::Invalid {
        path: path.into(),
        value: url.into(),
        message: message.into(),
    };
    if url.contains('#') {
        return Err(invalid("URL must not contain a fragment"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("URL scheme must be https"));
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid("URL must have a host"));
    };
    if authority.as_str().contains('@') {
        return Err(invalid("URL must not contain a username or password"));
    }
    if uri.query().is_some() {
        return Err(invalid("URL must not contain a query"));
    }
    Ok(())
}

fn validate_claim_rules(rules: &[ClaimValidationRule], base: &str) -> Result<(), JwtConfigError> {
    let mut claims = BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("{base}[{i}]");
        if set(&rule.expression).is_some() {
            return Err(JwtConfigError::Cel {
                path: format!("{path}.expression"),
                instead: "claim/requiredValue",
            });
        }
        if set(&rule.message).is_some() {
            return Err(JwtConfigError::Forbidden {
                path: format!("{path}.message"),
                message: "message can't be set when claim is set".into(),
            });
        }
        let Some(claim) = set(&rule.claim) else {
            return Err(JwtConfigError::Required {
                path: format!("{path}.claim"),
                message: "claim or expression is required".into(),
            });
        };
        if !claims.insert(claim) {
            return Err(JwtConfigError::Invalid {
                path: format!("{path}.claim"),
                value: claim.into(),
                message: "duplicate claim".into(),
            });
        }
    }
    Ok(())
}

impl ClaimMappings {
    fn validate(&self, base: &str) -> Result<(), JwtConfigError> {
        let username = format!("{base}.username");
        if set(&self.username.expression).is_some() {
            return Err(JwtConfigError::Cel {
                path: format!("{username}.expression"),
                instead: "claim/prefix",
            });
        }
        if set(&self.username.claim).is_none() {
            return Err(JwtConfigError::Required {
                path: format!("{username}.claim"),
                message: "claim or expression is required".into(),
            });
        }
        if self.username.prefix.is_none() {
            return Err(JwtConfigError::Required {
                path: format!("{username}.prefix"),
                message: "prefix is required when claim is set. It can be set to an empty string to disable prefixing".into(),
            });
        }
        let groups = format!("{base}.groups");
        if set(&self.groups.expression).is_some() {
            return Err(JwtConfigError::Cel {
                path: format!("{groups}.expression"),
                instead: "claim/prefix",
            });
        }
        match (set(&self.groups.claim), &self.groups.prefix) {
            (Some(_), None) => {
                return Err(JwtConfigError::Required {
                    path: format!("{groups}.prefix"),
                    message: "prefix is required when claim is set. It can be set to an empty string to disable prefixing".into(),
                });
            }
            (None, Some(_)) => {
                return Err(JwtConfigError::Forbidden {
                    path: format!("{groups}.prefix"),
                    message: "prefix can't be set when claim is not set".into(),
                });
            }
            _ => {}
        }
        if set(&self.uid.expression).is_some() {
            return Err(JwtConfigError::Cel {
                path: format!("{base}.uid.expression"),
                instead: "claim",
            });
        }
        if !self.extra.is_empty() {
            return Err(JwtConfigError::Cel {
                path: format!("{base}.extra"),
                instead: "username, groups and uid claims",
            });
        }
        Ok(())
    }
}

/// A Go string field: absent and empty mean the same.
pub(crate) fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({
            "issuer": {
                "url": "https://dex.example.com/dex",
                "audiences": ["jumpstarter-cli"],
            },
            "claimMappings": {
                "username": {"claim": "email", "prefix": "dex:"},
            },
        })
    }

    fn with(
        mut value: serde_json::Value,
        pointer: &str,
        field: serde_json::Value,
    ) -> serde_json::Value {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer with a parent");
        let object = value
            .pointer_mut(parent)
            .and_then(|v| v.as_object_mut())
            .expect("parent object");
        object.insert(key.to_string(), field);
        value
    }

    fn error(values: &[serde_json::Value]) -> String {
        parse_authenticators(values)
            .expect_err("configuration must be refused")
            .to_string()
    }

    #[test]
    fn a_0_9_0_example_parses() {
        // The 0.9.0 Helm values' commented example (service accounts) plus an OIDC issuer
        // with every non-CEL field.
        let values = [
            json!({
                "issuer": {
                    "url": "https://kubernetes.default.svc.cluster.local",
                    "audiences": ["https://kubernetes.default.svc.cluster.local"],
                    "certificateAuthority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                },
                "claimMappings": {"username": {"claim": "sub", "prefix": "kubernetes:"}},
            }),
            json!({
                "issuer": {
                    "url": "https://dex.example.com",
                    "discoveryURL": "https://dex.internal/.well-known/openid-configuration",
                    "audiences": ["jumpstarter-cli", "other"],
                    "audienceMatchPolicy": "MatchAny",
                },
                "claimValidationRules": [{"claim": "hd", "requiredValue": "example.com"}],
                "claimMappings": {
                    "username": {"claim": "email", "prefix": ""},
                    "groups": {"claim": "groups", "prefix": "oidc:"},
                    "uid": {"claim": "sub"},
                },
            }),
        ];
        let configs = parse_authenticators(&values).expect("valid configuration");
        assert_eq!(configs.len(), 2);
        assert_eq!(
            configs[0].issuer.certificate_authority.as_deref(),
            Some("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
        );
        assert_eq!(configs[1].username_claim(), "email");
        assert_eq!(
            configs[1].claim_mappings.username.prefix.as_deref(),
            Some("")
        );
        assert_eq!(
            configs[1].issuer.discovery_url.as_deref(),
            Some("https://dex.internal/.well-known/openid-configuration")
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let message = error(&[valid(), with(valid(), "/issuer/audience", json!(["x"]))]);
        assert!(
            message
                .starts_with("jwt[1].issuer.audience: unknown field `audience`, expected one of"),
            "{message}"
        );
        let message = error(&[with(valid(), "/claimMappings/username/prefx", json!("x"))]);
        assert!(
            message.starts_with("jwt[0].claimMappings.username.prefx: unknown field `prefx`"),
            "{message}"
        );
        let message = error(&[with(valid(), "/issuer/audiences", json!("one"))]);
        assert!(
            message.starts_with("jwt[0].issuer.audiences: invalid type"),
            "{message}"
        );
        let message = error(&[json!({"issuer": {"url": "https://x", "audiences": ["a"]}})]);
        assert_eq!(message, "jwt[0]: missing field `claimMappings`");
    }

    #[test]
    fn cel_expressions_are_refused_clearly() {
        let cases = [
            (
                with(
                    valid(),
                    "/claimMappings/username",
                    json!({"expression": "claims.sub"}),
                ),
                "jwt[0].claimMappings.username.expression: CEL expressions are not supported (this controller has no CEL evaluator); use claim/prefix",
            ),
            (
                with(
                    valid(),
                    "/claimValidationRules",
                    json!([{"expression": "claims.hd == 'x'", "message": "no"}]),
                ),
                "jwt[0].claimValidationRules[0].expression: CEL expressions are not supported (this controller has no CEL evaluator); use claim/requiredValue",
            ),
            (
                with(
                    valid(),
                    "/userValidationRules",
                    json!([{"expression": "!user.username.startsWith('system:')"}]),
                ),
                "jwt[0].userValidationRules: CEL expressions are not supported (this controller has no CEL evaluator); use claimValidationRules with claim/requiredValue",
            ),
            (
                with(
                    valid(),
                    "/claimMappings/extra",
                    json!([{"key": "example.com/x", "valueExpression": "claims.x"}]),
                ),
                "jwt[0].claimMappings.extra: CEL expressions are not supported (this controller has no CEL evaluator); use username, groups and uid claims",
            ),
            (
                with(
                    valid(),
                    "/claimMappings/uid",
                    json!({"expression": "claims.sub"}),
                ),
                "jwt[0].claimMappings.uid.expression: CEL expressions are not supported (this controller has no CEL evaluator); use claim",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(error(&[value]), expected);
        }
    }

    #[test]
    fn the_apiserver_validation_rules_apply() {
        let cases = [
            (
                with(valid(), "/issuer/url", json!("http://dex.example.com")),
                r#"jwt[0].issuer.url: Invalid value: "http://dex.example.com": URL scheme must be https"#,
            ),
            (
                with(valid(), "/issuer/url", json!("https://dex.example.com?x=1")),
                r#"jwt[0].issuer.url: Invalid value: "https://dex.example.com?x=1": URL must not contain a query"#,
            ),
            (
                with(valid(), "/issuer/url", json!("")),
                "jwt[0].issuer.url: Required value: URL is required",
            ),
            (
                with(
                    valid(),
                    "/issuer/discoveryURL",
                    json!("https://dex.example.com/dex/"),
                ),
                r#"jwt[0].issuer.discoveryURL: Invalid value: "https://dex.example.com/dex/": discoveryURL must be different from URL"#,
            ),
            (
                with(valid(), "/issuer/audiences", json!([])),
                "jwt[0].issuer.audiences: Required value: at least one issuer.audiences is required",
            ),
            (
                with(valid(), "/issuer/audiences", json!(["a", "a"])),
                r#"jwt[0].issuer.audiences[1]: Invalid value: "a": duplicate audience"#,
            ),
            (
                with(valid(), "/issuer/audiences", json!(["a", "b"])),
                r#"jwt[0].issuer.audienceMatchPolicy: Invalid value: "": audienceMatchPolicy must be MatchAny for multiple audiences"#,
            ),
            (
                with(valid(), "/issuer/audienceMatchPolicy", json!("MatchAll")),
                r#"jwt[0].issuer.audienceMatchPolicy: Invalid value: "MatchAll": supported values: "MatchAny""#,
            ),
            (
                with(
                    valid(),
                    "/issuer/certificateAuthority",
                    json!("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"),
                ),
                "jwt[0].issuer.certificateAuthority: Invalid value: \"<inline PEM>\": ",
            ),
            (
                with(valid(), "/claimMappings/username", json!({"claim": "sub"})),
                "jwt[0].claimMappings.username.prefix: Required value: prefix is required when claim is set. It can be set to an empty string to disable prefixing",
            ),
            (
                with(valid(), "/claimMappings/username", json!({"prefix": "x:"})),
                "jwt[0].claimMappings.username.claim: Required value: claim or expression is required",
            ),
            (
                with(valid(), "/claimMappings/groups", json!({"claim": "groups"})),
                "jwt[0].claimMappings.groups.prefix: Required value: prefix is required when claim is set. It can be set to an empty string to disable prefixing",
            ),
            (
                with(
                    valid(),
                    "/claimValidationRules",
                    json!([{"claim": "hd", "requiredValue": "a"}, {"claim": "hd", "requiredValue": "b"}]),
                ),
                r#"jwt[0].claimValidationRules[1].claim: Invalid value: "hd": duplicate claim"#,
            ),
        ];
        for (value, expected) in cases {
            let message = error(&[value]);
            assert!(
                message.starts_with(expected),
                "{message}\n  expected: {expected}"
            );
        }
        let message = error(&[valid(), valid()]);
        assert_eq!(
            message,
            r#"jwt[1].issuer.url: Invalid value: "https://dex.example.com/dex": duplicate issuer URL"#
        );
    }
}
