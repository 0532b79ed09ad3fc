//! The dashboard's browser sessions and the pieces of its single sign-on, without I/O.
//!
//! - [`Sealer`]: values sealed into cookies (JSON, then an HMAC-SHA256 tag). Its keys are
//!   derived from the dashboard credential, so every replica that reads the same credential
//!   accepts the same cookies, and replacing the credential ends every session.
//! - [`Session`]: who is logged in, how, and until when; [`Pending`]: an authorization-code
//!   login under way (state, nonce, PKCE verifier), held by the browser between the
//!   redirect to the identity provider and its return.
//! - [`authorization_url`], [`pkce_challenge`], [`token_form`], [`basic_credential`]: the
//!   OAuth 2.0 / OpenID Connect messages (RFC 6749, RFC 7636, OpenID Connect Core 3.1).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// With the dashboard credential: an administrator.
    Token,
    /// With single sign-on: the user the identity provider vouched for.
    Sso,
}

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The user: the JWT authenticator's username (its prefix included) for single
    /// sign-on, [`TOKEN_USER`] for the credential.
    pub(crate) user: String,
    pub(crate) via: Via,
    /// The user's groups that the dashboard's access rules name (single sign-on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<String>,
    /// Unix seconds after which the session is over.
    pub(crate) expires: i64,
}

/// The name sessions opened with the dashboard credential act under.
pub(crate) const TOKEN_USER: &str = "dashboard credential";

/// An authorization-code login under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The `state` sent to the provider; its return must carry it.
    pub(crate) state: String,
    /// The `nonce` the ID token must carry.
    pub(crate) nonce: String,
    /// The PKCE code verifier.
    pub(crate) verifier: String,
    /// Unix seconds after which the login must start again.
    pub(crate) expires: i64,
}

/// Seals values into cookie-safe text and opens them again, one key per purpose so that
/// a value sealed for one purpose never opens as another.
pub(crate) struct Sealer {
    sessions: hmac::Key,
    pending: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<keys>)")
    }
}

impl Sealer {
    /// The keys derived from the dashboard credential.
    pub(crate) fn new(credential: &str) -> Sealer {
        let root = hmac::Key::new(hmac::HMAC_SHA256, credential.as_bytes());
        let derive =
            |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        Sealer {
            sessions: derive(b"jumpstarter dashboard sessions v1"),
            pending: derive(b"jumpstarter dashboard pending logins v1"),
        }
    }

    pub(crate) fn seal_session(&self, session: &Session) -> String {
        seal(&self.sessions, session)
    }

    /// The session `text` holds, if it was sealed here and has not expired at `now`.
    pub(crate) fn open_session(&self, text: &str, now: i64) -> Option<Session> {
        open::<Session>(&self.sessions, text).filter(|s| now < s.expires)
    }

    pub(crate) fn seal_pending(&self, pending: &Pending) -> String {
        seal(&self.pending, pending)
    }

    /// The pending login `text` holds, if it was sealed here and has not expired at `now`.
    pub(crate) fn open_pending(&self, text: &str, now: i64) -> Option<Pending> {
        open::<Pending>(&self.pending, text).filter(|p| now < p.expires)
    }
}

fn seal<T: Serialize>(key: &hmac::Key, value: &T) -> String {
    // Plain structs of strings and integers always serialize.
    let json = serde_json::to_vec(value).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(json);
    let tag = hmac::sign(key, body.as_bytes());
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn open<T: DeserializeOwned>(key: &hmac::Key, text: &str) -> Option<T> {
    let (body, tag) = text.trim().split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    // Constant-time comparison of the tag.
    hmac::verify(key, body.as_bytes(), &tag).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// A random value of 32 bytes, base64url: states, nonces and PKCE verifiers (43
/// characters, within RFC 7636's 43–128).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The system random source failing is not something to go on from.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system random source");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE `S256` challenge of `verifier`.
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// What the authorization request carries.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizationRequest<'a> {
    pub(crate) endpoint: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) pending: &'a Pending,
}

/// The URL the browser is sent to: the provider's authorization endpoint with the
/// code-flow parameters (kept after any query the endpoint has).
pub(crate) fn authorization_url(request: &AuthorizationRequest<'_>) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", request.client_id)
        .append_pair("redirect_uri", request.redirect_uri)
        .append_pair("scope", &request.scopes.join(" "))
        .append_pair("state", &request.pending.state)
        .append_pair("nonce", &request.pending.nonce)
        .append_pair("code_challenge", &pkce_challenge(&request.pending.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let separator = if request.endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{separator}{query}", request.endpoint)
}

/// The body of the token request that exchanges `code`.
pub(crate) fn token_form(
    code: &str,
    redirect_uri: &str,
    client_id: &str,
    verifier: &str,
) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("client_id", client_id)
        .append_pair("code_verifier", verifier)
        .finish()
}

/// The `client_secret_basic` credential (RFC 6749 2.3.1: both parts form-encoded first).
pub(crate) fn basic_credential(client_id: &str, secret: &str) -> String {
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(client_id),
        encode(secret)
    ))
}

/// Whether the ID token claims name `client_id` as an audience (a string or a list).
pub(crate) fn audience_has(
    claims: &serde_json::Map<String, serde_json::Value>,
    client_id: &str,
) -> bool {
    match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => aud == client_id,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires: i64) -> Session {
        Session {
            user: "dex:alice".into(),
            via: Via::Sso,
            groups: vec!["dex:lab".into()],
            expires,
        }
    }

    #[test]
    fn a_sealed_session_opens_until_it_expires() {
        let sealer = Sealer::new("a-dashboard-credential");
        let text = sealer.seal_session(&session(100));
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert_eq!(sealer.open_session(&text, 99), Some(session(100)));
        assert_eq!(sealer.open_session(&text, 100), None);
    }

    #[test]
    fn a_changed_or_foreign_session_does_not_open() {
        let sealer = Sealer::new("a-dashboard-credential");
        let text = sealer.seal_session(&session(100));
        // Another credential (another lab, or a replaced one) does not open it.
        assert_eq!(
            Sealer::new("another-credential").open_session(&text, 0),
            None
        );
        // A session claiming another user under the same tag does not open.
        let (_, tag) = text.split_once('.').unwrap();
        let forged = Session {
            user: "dex:mallory".into(),
            ..session(100)
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(sealer.open_session(&format!("{body}.{tag}"), 0), None);
        // Nor does garbage.
        for garbage in ["", ".", "abc", "abc.def", "é.é"] {
            assert_eq!(sealer.open_session(garbage, 0), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_pending_login_never_opens_as_a_session() {
        let sealer = Sealer::new("a-dashboard-credential");
        let pending = Pending {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            expires: 100,
        };
        let text = sealer.seal_pending(&pending);
        assert_eq!(sealer.open_pending(&text, 0), Some(pending));
        assert_eq!(sealer.open_session(&text, 0), None);
        assert_eq!(
            sealer.open_pending(&sealer.seal_session(&session(100)), 0),
            None
        );
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let verifier = random_token();
        assert_eq!(verifier.len(), 43);
        assert_ne!(verifier, random_token());
    }

    #[test]
    fn the_authorization_url_carries_the_code_flow_parameters() {
        let pending = Pending {
            state: "st".into(),
            nonce: "no".into(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            expires: 0,
        };
        let scopes = vec!["openid".to_owned(), "profile".to_owned()];
        let url = authorization_url(&AuthorizationRequest {
            endpoint: "https://idp.example/auth?tenant=lab",
            client_id: "jumpstarter-dashboard",
            redirect_uri: "https://lab.example/oidc/callback",
            scopes: &scopes,
            pending: &pending,
        });
        assert_eq!(
            url,
            "https://idp.example/auth?tenant=lab&response_type=code&client_id=jumpstarter-dashboard\
             &redirect_uri=https%3A%2F%2Flab.example%2Foidc%2Fcallback&scope=openid+profile\
             &state=st&nonce=no&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
             &code_challenge_method=S256"
        );
    }

    #[test]
    fn the_token_request_and_its_credential_are_form_encoded() {
        assert_eq!(
            token_form("c/d", "http://127.0.0.1:8084/oidc/callback", "dash", "v"),
            "grant_type=authorization_code&code=c%2Fd\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A8084%2Foidc%2Fcallback&client_id=dash&code_verifier=v"
        );
        // RFC 6749 2.3.1: `a:b` and `s ecret` are form-encoded before Basic.
        let basic = basic_credential("a:b", "s ecret");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap();
        assert_eq!(decoded, b"a%3Ab:s+ecret");
    }

    #[test]
    fn the_audience_is_a_string_or_a_list() {
        let claims = |aud: serde_json::Value| {
            let mut map = serde_json::Map::new();
            map.insert("aud".into(), aud);
            map
        };
        assert!(audience_has(&claims("dash".into()), "dash"));
        assert!(audience_has(
            &claims(serde_json::json!(["x", "dash"])),
            "dash"
        ));
        assert!(!audience_has(&claims(serde_json::json!(["x"])), "dash"));
        assert!(!audience_has(&serde_json::Map::new(), "dash"));
    }
}
