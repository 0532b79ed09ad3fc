//! Forged router tokens against a router over loopback TLS: `alg: none`, HS256 keyed with
//! the router's public key, ES384, a client credential instead of a router token, garbage
//! and a truncated signature. Each is refused with UNAUTHENTICATED and counted under its
//! own reason; the router keeps pairing genuine streams.

use crate::support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jumpstarter_proto::jumpstarter::v1::FrameType;
use jumpstarter_token::internal::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Issuer, ObjectKind, Subject};
use support::{frame, open, pair, recv, send, start};
use time::OffsetDateTime;
use tonic::Code;

/// A compact JWS with `header`, the claims of `genuine` and `signature`.
fn forge(header: serde_json::Value, genuine: &str, signature: &[u8]) -> String {
    let payload = genuine.split('.').nth(1).expect("payload");
    format!(
        "{}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_with_their_reason_and_counted() {
    let router = start(|_| {}).await;
    let genuine = router.token("attacked");
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(genuine.split('.').nth(1).expect("payload"))
            .expect("base64"),
    )
    .expect("json");
    let public_pem = router.key.verifying_key().to_public_pem();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()).expect("hmac key"),
    )
    .expect("hs256");
    // A client credential signed by the same key: not a router token.
    let credential = Issuer {
        key: router.key.clone(),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        lifetime: time::Duration::hours(1),
    }
    .issue(
        &Subject {
            kind: ObjectKind::Client,
            namespace: "lab".into(),
            name: "alice".into(),
            uid: "u-1".into(),
        },
        OffsetDateTime::now_utc(),
    )
    .expect("issue")
    .0;

    #[rustfmt::skip]
    let attacks = [
        ("alg none", forge(serde_json::json!({"alg": "none"}), &genuine, b""), "bad_algorithm", "token algorithm \"none\" is not accepted"),
        ("HS256 with the public key", hs256, "bad_algorithm", "\"HS256\" is not accepted"),
        ("ES384", forge(serde_json::json!({"alg": "ES384"}), &genuine, &[7; 96]), "bad_algorithm", "\"ES384\" is not accepted"),
        ("client credential", credential, "wrong_issuer", "token issuer"),
        ("truncated", genuine[..genuine.len() - 10].to_owned(), "bad_signature", "signature is invalid"),
        ("garbage", "garbage".to_owned(), "malformed", "malformed token"),
    ];
    let mut client = router.client().await;
    for (what, token, _, message) in &attacks {
        let header = format!("Bearer {token}");
        let status = open(&mut client, Some(&header), 1)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(status.message().contains(message), "{what}: {status:?}");
    }
    let metrics = router.metrics_text();
    for (reason, count) in [
        ("bad_algorithm", 3),
        ("wrong_issuer", 1),
        ("bad_signature", 1),
        ("malformed", 1),
    ] {
        let line = format!("router_auth_failures_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }

    // The genuine token still pairs.
    let (a, mut b) = pair(&router, "attacked").await;
    send(&a.tx, frame(FrameType::Data, b"intact".to_vec())).await;
    assert_eq!(
        recv(&mut b.rx).await.expect("ok").expect("frame").payload,
        b"intact"
    );
}
