//! The checks of one token against one authenticator, without I/O: the unverified parse
//! that picks the authenticator by `iss`, the claim checks go-oidc makes before the
//! signature (audience, expiry, not-before, algorithm), and the claim mappings the
//! apiserver applies after it (validation rules, username, groups, uid).
//!
//! The error texts are the ones the 0.9.0 controller passes through from go-oidc and the
//! apiserver's OIDC authenticator; `jmp` refreshes its token when it reads
//! `token is expired`.

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::config::{JwtAuthenticatorConfig, set};
use super::fetch::FetchError;
use super::keys::SUPPORTED_ALGORITHMS;

/// How far in the future `nbf` may be: go-oidc's clock-skew allowance (5 minutes, what
/// other OpenID Connect providers allow). `exp` has none, as in go-oidc.
const NOT_BEFORE_LEEWAY: time::Duration = time::Duration::minutes(5);

/// The user a token authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// `claimMappings.username.prefix` + the username claim.
    pub username: String,
    /// The `claimMappings.uid` claim, when configured.
    pub uid: Option<String>,
    /// `claimMappings.groups.prefix` + each group, when configured and present.
    pub groups: Vec<String>,
    /// The authenticator's `issuer.url` (the token's `iss`).
    pub issuer: String,
}

/// Why a token from a configured issuer was refused. The texts follow go-oidc and the
/// apiserver (0.9.0 returns them to the caller); [`JwtError::reason`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("oidc: verify token: oidc: malformed jwt: {0}")]
    Malformed(String),
    #[error("oidc: verify token: oidc: failed to unmarshal claims: {0}")]
    Claims(String),
    #[error(
        "oidc: verify token: oidc: id token signed with unsupported algorithm, expected {} got {got:?}",
        go_list(&SUPPORTED_ALGORITHMS)
    )]
    Algorithm { got: String },
    /// Carries `token is expired`, which makes `jmp` refresh its token.
    #[error("oidc: verify token: oidc: token is expired (Token Expiry: {})", go_time(*.expiry))]
    Expired { expiry: OffsetDateTime },
    #[error(
        "oidc: verify token: oidc: current time {} before the nbf (not before) time: {}",
        go_time(*.now), go_time(*.not_before)
    )]
    NotYetValid {
        now: OffsetDateTime,
        not_before: OffsetDateTime,
    },
    /// With one configured audience (go-oidc's check).
    #[error("oidc: verify token: oidc: expected audience {expected:?} got {}", go_list(.got))]
    Audience { expected: String, got: Vec<String> },
    /// With several configured audiences (the apiserver's MatchAny check).
    #[error("oidc: expected audience in {} got {}", go_list(.expected), go_list(.got))]
    AudienceAny {
        expected: Vec<String>,
        got: Vec<String>,
    },
    #[error("oidc: verify token: failed to verify signature: failed to verify id token signature")]
    BadSignature,
    /// The issuer's discovery document or keys cannot be fetched: worth retrying later.
    #[error("oidc: verify token: failed to verify signature: fetching keys {0}")]
    Fetch(#[source] FetchError),
    #[error("oidc: parse claim {claim}: {message}")]
    RuleClaim { claim: String, message: String },
    #[error("oidc: required claim {claim} value does not match. Got = {got}, want = {want}")]
    RuleMismatch {
        claim: String,
        got: String,
        want: String,
    },
    #[error("oidc: parse username claims {claim:?}: {message}")]
    Username { claim: String, message: String },
    #[error("oidc: parse 'email_verified' claim: {0}")]
    EmailVerifiedClaim(String),
    #[error("oidc: email not verified")]
    EmailNotVerified,
    #[error("oidc: parse groups claim {claim:?}: {message}")]
    Groups { claim: String, message: String },
    #[error("oidc: parse uid claim {claim:?}: {message}")]
    Uid { claim: String, message: String },
}

impl JwtError {
    /// A stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) | JwtError::Claims(_) => "jwt_malformed",
            JwtError::Algorithm { .. } => "jwt_bad_algorithm",
            JwtError::Expired { .. } => "jwt_expired",
            JwtError::NotYetValid { .. } => "jwt_not_yet_valid",
            JwtError::Audience { .. } | JwtError::AudienceAny { .. } => "jwt_wrong_audience",
            JwtError::BadSignature => "jwt_bad_signature",
            JwtError::Fetch(_) => "jwt_keys_unavailable",
            JwtError::RuleClaim { .. } | JwtError::RuleMismatch { .. } => "jwt_claim_rule",
            JwtError::Username { .. }
            | JwtError::EmailVerifiedClaim(_)
            | JwtError::EmailNotVerified => "jwt_bad_username",
            JwtError::Groups { .. } | JwtError::Uid { .. } => "jwt_bad_claims",
        }
    }

    /// True when the token may be fine and the issuer could not be reached: a caller
    /// answers UNAVAILABLE (retry) rather than refusing the credential.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, JwtError::Fetch(_))
    }
}

/// A token split and decoded without any check: enough to pick its authenticator.
#[derive(Debug, Clone)]
pub(crate) struct Unverified<'a> {
    pub(crate) raw: &'a str,
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    pub(crate) claims: Map<String, Value>,
}

impl<'a> Unverified<'a> {
    /// `None` when `token` is not a compact JWS with a JSON header and claims (then no
    /// authenticator claims it, as the apiserver's issuer pre-check does).
    pub(crate) fn parse(token: &'a str) -> Option<Unverified<'a>> {
        #[derive(serde::Deserialize)]
        struct Header {
            alg: String,
            #[serde(default)]
            kid: Option<String>,
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let decode = |part: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .ok()
        };
        let header: Header = serde_json::from_slice(&decode(header)?).ok()?;
        let claims: Map<String, Value> = serde_json::from_slice(&decode(payload)?).ok()?;
        Some(Unverified {
            raw: token,
            alg: header.alg,
            kid: header.kid,
            claims,
        })
    }

    /// The unverified `iss` claim.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// go-oidc's checks before the signature, in its order: audience (one configured
/// audience), expiry, not-before, algorithm. Returns the algorithm to verify with.
pub(crate) fn before_signature(
    config: &JwtAuthenticatorConfig,
    token: &Unverified<'_>,
    now: OffsetDateTime,
) -> Result<Algorithm, JwtError> {
    let audiences = audiences(&token.claims)?;
    if let [expected] = config.issuer.audiences.as_slice()
        && !audiences.contains(expected)
    {
        return Err(JwtError::Audience {
            expected: expected.clone(),
            got: audiences,
        });
    }
    let expiry = match token.claims.get("exp") {
        // Required: without it go-oidc compares Go's zero time, 0001-01-01, and reports
        // the token as expired; the same text here.
        None | Some(Value::Null) => OffsetDateTime::UNIX_EPOCH - time::Duration::days(719_162),
        Some(value) => numeric_date(value, "exp")?,
    };
    if expiry < now {
        return Err(JwtError::Expired { expiry });
    }
    if let Some(value) = token.claims.get("nbf").filter(|v| !v.is_null()) {
        let not_before = numeric_date(value, "nbf")?;
        if now + NOT_BEFORE_LEEWAY < not_before {
            return Err(JwtError::NotYetValid { now, not_before });
        }
    }
    if !SUPPORTED_ALGORITHMS.contains(&token.alg.as_str()) {
        return Err(JwtError::Algorithm {
            got: token.alg.clone(),
        });
    }
    token
        .alg
        .parse::<Algorithm>()
        .map_err(|_| JwtError::Algorithm {
            got: token.alg.clone(),
        })
}

/// The apiserver's checks after the signature: audiences (several configured), claim
/// validation rules, then the claim mappings.
pub(crate) fn identity(
    config: &JwtAuthenticatorConfig,
    claims: &Map<String, Value>,
) -> Result<JwtIdentity, JwtError> {
    if config.issuer.audiences.len() > 1 {
        let got = audiences(claims)?;
        if !got.iter().any(|a| config.issuer.audiences.contains(a)) {
            return Err(JwtError::AudienceAny {
                expected: config.issuer.audiences.clone(),
                got,
            });
        }
    }
    for rule in &config.claim_validation_rules {
        let (Some(claim), want) = (set(&rule.claim), rule.required_value.as_deref()) else {
            continue;
        };
        let got = string_claim(claims, claim).map_err(|message| JwtError::RuleClaim {
            claim: claim.into(),
            message,
        })?;
        let want = want.unwrap_or("");
        if got != want {
            return Err(JwtError::RuleMismatch {
                claim: claim.into(),
                got,
                want: want.into(),
            });
        }
    }

    let mappings = &config.claim_mappings;
    let claim = config.username_claim();
    let value = string_claim(claims, claim).map_err(|message| JwtError::Username {
        claim: claim.into(),
        message,
    })?;
    if claim == "email"
        && let Some(verified) = claims.get("email_verified")
    {
        match verified {
            Value::Bool(true) => {}
            Value::Bool(false) => return Err(JwtError::EmailNotVerified),
            other => {
                return Err(JwtError::EmailVerifiedClaim(format!(
                    "not a boolean: {other}"
                )));
            }
        }
    }
    let username = format!(
        "{}{value}",
        mappings.username.prefix.as_deref().unwrap_or("")
    );

    let mut groups = Vec::new();
    if let Some(claim) = set(&mappings.groups.claim)
        && let Some(value) = claims.get(claim)
    {
        let prefix = mappings.groups.prefix.as_deref().unwrap_or("");
        let bad = |what: &str| JwtError::Groups {
            claim: claim.into(),
            message: format!("not a string or an array of strings: {what}"),
        };
        match value {
            Value::String(group) => groups.push(format!("{prefix}{group}")),
            Value::Array(items) => {
                for item in items {
                    let Value::String(group) = item else {
                        return Err(bad(&item.to_string()));
                    };
                    groups.push(format!("{prefix}{group}"));
                }
            }
            Value::Null => {}
            other => return Err(bad(&other.to_string())),
        }
    }

    let uid = match set(&mappings.uid.claim) {
        None => None,
        Some(claim) => Some(
            string_claim(claims, claim).map_err(|message| JwtError::Uid {
                claim: claim.into(),
                message,
            })?,
        ),
    };

    Ok(JwtIdentity {
        username,
        uid,
        groups,
        issuer: config.issuer.url.clone(),
    })
}

/// The `aud` claim: a string or an array of strings (absent: none).
fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, JwtError> {
    match claims.get("aud") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(aud)) => Ok(vec![aud.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| JwtError::Claims(format!("aud entry is not a string: {item}")))
            })
            .collect(),
        Some(other) => Err(JwtError::Claims(format!(
            "aud is not a string or an array: {other}"
        ))),
    }
}

/// A NumericDate claim (seconds since the epoch, possibly fractional).
fn numeric_date(value: &Value, claim: &str) -> Result<OffsetDateTime, JwtError> {
    let seconds = value
        .as_f64()
        .ok_or_else(|| JwtError::Claims(format!("{claim} is not a number: {value}")))?;
    // Out-of-range dates are clamped: a huge exp is "never expires" to go-oidc as well.
    let clamped = seconds.clamp(-62_135_596_800.0, 253_402_300_799.0);
    OffsetDateTime::from_unix_timestamp(clamped.floor() as i64)
        .map_err(|e| JwtError::Claims(format!("{claim} out of range: {e}")))
}

/// A claim that must be a JSON string.
fn string_claim(claims: &Map<String, Value>, claim: &str) -> Result<String, String> {
    match claims.get(claim) {
        None => Err("claim not present".into()),
        Some(Value::String(value)) => Ok(value.clone()),
        Some(other) => Err(format!("claim is not a string: {other}")),
    }
}

/// A Go `%q` of a string slice: `["a" "b"]`.
fn go_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{:?}", s.as_ref())).collect();
    format!("[{}]", quoted.join(" "))
}

/// A Go `time.Time` as `%v` prints it in UTC: `2026-12-03 10:00:00 +0000 UTC`.
fn go_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}
