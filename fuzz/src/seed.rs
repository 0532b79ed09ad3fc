//! The structured seed corpus: valid examples of every input (taken from the decoders'
//! tests, from what jumpstarter 0.9.0 sends, and made by the real encoders), and the edge
//! cases next to every bound. `jumpstarter-fuzz-seeds` writes them into `fuzz/corpus/` (or
//! `fuzz/regressions/`, when [`Seed::replay_only`]).

use base64::Engine;
use jumpstarter_proto::jumpstarter::v1::{DialResponse, ListenResponse};
use jumpstarter_token::internal::{self, DEFAULT_AUDIENCE, DEFAULT_ISSUER, ObjectKind, Subject};
use jumpstarter_token::router::{self, StreamGrant};
use jumpstarter_tunnel::header::{Header, MAX_SESSION_ID_LEN, MAX_TOKEN_LEN};
use jumpstarter_tunnel::renewal::{self, MAX_REASON_LEN, Reply};
use prost::Message;
use time::Duration;

use crate::{Target, fixture, token};

/// One seed input of one target.
#[derive(Debug, Clone)]
pub struct Seed {
    pub target: Target,
    /// The file name in the target's corpus folder.
    pub name: String,
    pub bytes: Vec<u8>,
    /// Replayed by the tests but not handed to the fuzzer: an input that takes the decoder
    /// long by design (up to a limit) would slow down every mutation of it.
    pub replay_only: bool,
}

/// Names of seeds that are only replayed (see [`Seed::replay_only`]) start so.
const REPLAY_ONLY_PREFIX: &str = "slow_";

/// Every structured seed.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: Target, name: &str, bytes: Vec<u8>| {
        out.push(Seed {
            target,
            name: name.to_owned(),
            bytes,
            replay_only: name.starts_with(REPLAY_ONLY_PREFIX),
        });
    };
    let router_token = router_token(Duration::minutes(2));

    // Session headers.
    let header = |id: &str, token: &str| {
        Header::new(id)
            .and_then(|h| h.with_token(token))
            .expect("seed header")
            .encode()
    };
    add(Target::SessionHeader, "plain", header("abc", ""));
    add(Target::SessionHeader, "with_token", header("s-1", "t.k.n"));
    add(
        Target::SessionHeader,
        "router_token",
        header("2cb4f76a-7235-43fa-8b09-cbf721c40556", &router_token),
    );
    let mut with_payload = header("s", "");
    with_payload.extend_from_slice(b"payload after the header");
    add(Target::SessionHeader, "payload_after", with_payload);
    add(
        Target::SessionHeader,
        "longest",
        header(&"i".repeat(MAX_SESSION_ID_LEN), &"t".repeat(MAX_TOKEN_LEN)),
    );
    add(
        Target::SessionHeader,
        "http_request",
        b"GET / HTTP/1.1\r\n".to_vec(),
    );
    add(
        Target::SessionHeader,
        "version_2",
        b"JMP\x02\x01a\x00\x00".to_vec(),
    );
    add(Target::SessionHeader, "empty_id", b"JMP\x01\x00".to_vec());
    add(
        Target::SessionHeader,
        "id_too_long",
        b"JMP\x01\x81".to_vec(),
    );
    add(
        Target::SessionHeader,
        "token_too_long",
        b"JMP\x01\x01a\x10\x01".to_vec(),
    );
    add(
        Target::SessionHeader,
        "id_not_utf8",
        b"JMP\x01\x01\xff\x00\x00".to_vec(),
    );
    add(
        Target::SessionHeader,
        "token_not_utf8",
        b"JMP\x01\x01a\x00\x01\xc3".to_vec(),
    );

    // Renewal requests and replies.
    let csr = jumpstarter_certs::generate_csr("board-1").expect("seed CSR");
    let lease_cert = fixture::ca()
        .sign_lease_csr(
            &csr.csr_der,
            &fixture::identity(),
            &fixture::lease_policy(),
            fixture::now(),
        )
        .expect("seed lease certificate");
    let request = renewal::encode_request(&lease_cert.chain_der).expect("seed renewal");
    add(Target::RenewalRequest, "lease_chain", request.clone());
    add(
        Target::RenewalRequest,
        "leaf_only",
        renewal::encode_request(&lease_cert.chain_der[..1]).expect("leaf"),
    );
    add(
        Target::RenewalRequest,
        "truncated",
        request[..request.len() / 2].to_vec(),
    );
    add(Target::RenewalRequest, "session_header", header("abc", ""));
    add(
        Target::RenewalRequest,
        "five_certs",
        b"JMR\x01\x05".to_vec(),
    );
    add(Target::RenewalRequest, "no_certs", b"JMR\x01\x00".to_vec());
    add(
        Target::RenewalRequest,
        "cert_too_long",
        b"JMR\x01\x01\x40\x01".to_vec(),
    );
    add(
        Target::RenewalRequest,
        "empty_cert",
        b"JMR\x01\x02\x00\x01x\x00\x00".to_vec(),
    );
    add(
        Target::RenewalReply,
        "accepted",
        renewal::encode_reply(&Reply::Accepted {
            not_after: fixture::NOW_UNIX + 10,
        }),
    );
    add(
        Target::RenewalReply,
        "accepted_negative",
        renewal::encode_reply(&Reply::Accepted {
            not_after: i64::MIN,
        }),
    );
    add(
        Target::RenewalReply,
        "refused",
        renewal::encode_reply(&Reply::Refused {
            reason: "the lease has ended".into(),
        }),
    );
    add(
        Target::RenewalReply,
        "refused_longest",
        renewal::encode_reply(&Reply::Refused {
            reason: "é".repeat(MAX_REASON_LEN),
        }),
    );
    add(
        Target::RenewalReply,
        "reason_too_long",
        b"\x01\x04\x01".to_vec(),
    );
    add(
        Target::RenewalReply,
        "reason_not_utf8",
        b"\x01\x00\x01\xff".to_vec(),
    );
    add(Target::RenewalReply, "unknown_status", b"\x02".to_vec());

    // Selectors: what 0.9.0 clients send, every form of the grammar, and its errors.
    for (name, text) in [
        ("recorded", "board=mock"),
        ("two_labels", "board=mock,suite=conformance"),
        (
            "every_form",
            "a=1, b==2, c!=x, c!=w, d in (q,p,p), e notin (z), f, !g",
        ),
        ("empty_values", "a=,b in (x,),c=in"),
        (
            "prefixed_key",
            "example.com/board in (rpi4,mock),!example.com/broken",
        ),
        ("blank", "  \t"),
        ("empty_set", "a in ()"),
        ("only_empty_value", "a in (,)"),
        ("conflict", "a=1,a=2"),
        ("greater", "a>1"),
        ("bang_with_value", "!a=1"),
        ("keyword_key", "in=1"),
        ("missing_comma", "a in (x y)"),
        ("trailing_comma", "a=1,"),
        ("bad_value", "a=b/c"),
        (
            "long_key",
            "k123456789012345678901234567890123456789012345678901234567890123=v",
        ),
        ("unicode", "ключ=значение"),
    ] {
        add(Target::Selector, name, text.as_bytes().to_vec());
    }

    // Go durations: CRD values, 0.9.0 flag values, and the int64 edges.
    for (name, text) in [
        ("hour", "1h0m0s"),
        ("thirty_seconds", "30s"),
        ("fraction", "1m30.5s"),
        ("millis", "250ms"),
        ("fractional_hours", "1.5h"),
        ("negative", "-1h"),
        ("plus", "+5m"),
        ("zero", "0"),
        ("empty", ""),
        ("micro_sign", "1µs"),
        ("micro_u", "1us"),
        ("nanos", "12ns"),
        ("max", "9223372036854775807ns"),
        ("max_formatted", "2562047h47m16.854775807s"),
        ("over_max", "9223372036854775808ns"),
        ("min", "-9223372036854775808ns"),
        ("bare_fraction", ".5s"),
        ("no_unit", "1"),
        ("legacy_seconds", "30"),
        ("unknown_unit", "1d"),
        ("long_fraction", "1.00000000000000000000000000001s"),
        ("flag_words", "1h 30m"),
    ] {
        add(Target::GoDuration, name, text.as_bytes().to_vec());
    }

    // Internal tokens: issued ones, and claims to be signed by the target.
    let issuer = internal::Issuer {
        key: fixture::signing_key().clone(),
        issuer: DEFAULT_ISSUER.into(),
        audience: DEFAULT_AUDIENCE.into(),
        lifetime: Duration::hours(43_800),
    };
    let subject = Subject {
        kind: ObjectKind::Client,
        namespace: "default".into(),
        name: "c1".into(),
        uid: "0b3c3f0e-5d8f-4c1e-9a3e-2f1d0c9b8a7e".into(),
    };
    let (issued, _) = issuer.issue(&subject, fixture::now()).expect("seed token");
    add(Target::InternalToken, "issued", issued.clone().into_bytes());
    let (expired, _) = issuer
        .issue(&subject, fixture::now() - Duration::hours(43_801))
        .expect("expired seed token");
    add(Target::InternalToken, "expired", expired.into_bytes());
    add(
        Target::InternalToken,
        "router_token",
        router_token.clone().into_bytes(),
    );
    add(Target::InternalToken, "garbage", b"not.a.token".to_vec());
    let exp = fixture::NOW_UNIX + 3600;
    let internal_claims = format!(
        r#"{{"iss":"{DEFAULT_ISSUER}","aud":["{DEFAULT_AUDIENCE}"],"sub":"exporter:lab:board-1:u-1","iat":{},"exp":{exp}}}"#,
        fixture::NOW_UNIX
    );
    add(
        Target::InternalToken,
        "claims",
        internal_claims.clone().into_bytes(),
    );
    add(
        Target::InternalToken,
        "claims_audience_string",
        internal_claims
            .replace(r#"["jumpstarter"]"#, r#""jumpstarter""#)
            .into_bytes(),
    );
    for (name, header) in [
        ("alg_none", r#"{"alg":"none"}"#),
        ("alg_hs256", r#"{"alg":"HS256","typ":"JWT"}"#),
        ("alg_es384", r#"{"alg":"ES384"}"#),
        (
            "header_es256",
            r#"{"alg":"ES256","kid":"k1","crit":["exp"]}"#,
        ),
    ] {
        add(
            Target::InternalToken,
            name,
            format!("{header}\n{internal_claims}").into_bytes(),
        );
    }
    // The same token with an unsigned `alg: none` header and no signature.
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    add(
        Target::InternalToken,
        "unsigned_none",
        format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&internal_claims)).into_bytes(),
    );

    // Router tokens.
    add(
        Target::RouterToken,
        "minted",
        router_token.clone().into_bytes(),
    );
    add(
        Target::RouterToken,
        "expired",
        self::router_token(Duration::minutes(-2)).into_bytes(),
    );
    add(Target::RouterToken, "internal_token", issued.into_bytes());
    add(
        Target::RouterToken,
        "recorded_opaque",
        b"stream-2cb4f76a-7235-43fa-8b09-cbf721c40556".to_vec(),
    );
    let router_claims = format!(
        r#"{{"iss":"{}","aud":["{}"],"sub":"0190-abc","iat":{now},"nbf":{now},"exp":{exp},"jti":"j1","lease":"lab/l1"}}"#,
        router::ISSUER,
        router::AUDIENCE,
        now = fixture::NOW_UNIX
    );
    add(
        Target::RouterToken,
        "claims",
        router_claims.clone().into_bytes(),
    );
    add(
        Target::RouterToken,
        "claims_no_lease",
        router_claims
            .replace(r#","lease":"lab/l1""#, "")
            .into_bytes(),
    );
    add(
        Target::RouterToken,
        "claims_alg_none",
        format!("{{\"alg\":\"none\"}}\n{router_claims}").into_bytes(),
    );
    add(
        Target::RouterToken,
        "padded_payload",
        token::sign(b"{\"alg\":\"ES256\"}", router_claims.as_bytes())
            .replace('.', "==.")
            .into_bytes(),
    );

    // Lease CSRs.
    add(Target::LeaseCsr, "der", csr.csr_der.clone());
    add(Target::LeaseCsr, "pem", csr.csr_pem().into_bytes());
    let renewal_csr = jumpstarter_certs::renewal_csr(&csr.key_pem, "board-1").expect("renewal CSR");
    add(Target::LeaseCsr, "renewal_der", renewal_csr.csr_der);
    // Requests for keys of other algorithms, correctly self-signed.
    for (name, algorithm) in [
        ("p384_der", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519_der", &rcgen::PKCS_ED25519),
    ] {
        let key = rcgen::KeyPair::generate_for(algorithm).expect("seed key");
        let request = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("seed request");
        add(Target::LeaseCsr, name, request.der().to_vec());
    }
    add(
        Target::LeaseCsr,
        "truncated",
        csr.csr_der[..csr.csr_der.len() - 1].to_vec(),
    );
    let mut trailing = csr.csr_der.clone();
    trailing.push(0);
    add(Target::LeaseCsr, "trailing_byte", trailing);
    let mut bad_signature = csr.csr_der.clone();
    if let Some(last) = bad_signature.last_mut() {
        *last ^= 1;
    }
    add(Target::LeaseCsr, "bad_signature", bad_signature);
    add(
        Target::LeaseCsr,
        "certificate_not_csr",
        issued_leaf(&lease_cert),
    );
    add(
        Target::LeaseCsr,
        "pem_garbage",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".to_vec(),
    );

    // Lease identities.
    let uri = fixture::identity().to_uri().expect("seed identity");
    add(Target::IdentityUri, "uri", uri.clone().into_bytes());
    add(
        Target::IdentityUri,
        "uri_client",
        uri.replace("role/exporter", "role/client").into_bytes(),
    );
    add(
        Target::IdentityUri,
        "uri_extra_segment",
        format!("{uri}/x").into_bytes(),
    );
    add(
        Target::IdentityUri,
        "uri_bad_role",
        uri.replace("role/exporter", "role/admin").into_bytes(),
    );
    add(
        Target::IdentityUri,
        "lease_certificate",
        issued_leaf(&lease_cert),
    );
    add(
        Target::IdentityUri,
        "ca_certificate",
        fixture::ca().cert_der().to_vec(),
    );

    // Tool configurations.
    let ca = base64::engine::general_purpose::STANDARD.encode(fixture::ca().cert_pem());
    let exporter = format!(
        "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n\
         metadata:\n  namespace: lab\n  name: board-1\n\
         endpoint: controller.example:8082\n\
         tls:\n  ca: '{ca}'\n  insecure: false\n\
         token: abc.def.ghi\n\
         grpcOptions: {{}}\n\
         export:\n  power:\n    type: jumpstarter_driver_power.driver.MockPower\n"
    );
    add(Target::ToolConfig, "exporter", exporter.into_bytes());
    let client = "apiVersion: jumpstarter.dev/v1alpha1\nkind: ClientConfig\n\
         metadata: {namespace: default, name: c1}\n\
         endpoint: 127.0.0.1:8082\n\
         tls: {ca: '', insecure: true}\n\
         token: eyJhbGciOiJFUzI1NiJ9.e30.sig\n\
         grpcOptions: {grpc.keepalive_time_ms: 20000}\n\
         drivers: {allow: ['jumpstarter_driver_*'], unsafe: false}\n";
    add(
        Target::ToolConfig,
        "client_insecure",
        client.as_bytes().to_vec(),
    );
    add(
        Target::ToolConfig,
        "no_trust",
        client
            .replace("insecure: true", "insecure: false")
            .into_bytes(),
    );
    add(
        Target::ToolConfig,
        "ca_not_base64",
        client.replace("ca: ''", "ca: '%%%'").into_bytes(),
    );
    add(
        Target::ToolConfig,
        "anchors",
        b"kind: ClientConfig\nmetadata: &m {namespace: a, name: a}\nendpoint: *m\ntoken: t\ntls: {insecure: true}\n".to_vec(),
    );
    add(
        Target::ToolConfig,
        "alias_fan_out",
        b"a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n".to_vec(),
    );
    // Nine levels of nine aliases: 387 million nodes if aliases were expanded without a limit
    // (the YAML parser stops at its repetition limit, after about half a second).
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        laughs.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    laughs.push_str("kind: ClientConfig\n");
    add(
        Target::ToolConfig,
        "slow_billion_laughs",
        laughs.into_bytes(),
    );
    add(
        Target::ToolConfig,
        "deep_nesting",
        format!("a: {}{}\n", "[".repeat(1_000), "]".repeat(1_000)).into_bytes(),
    );
    add(Target::ToolConfig, "not_a_mapping", b"- a\n- b\n".to_vec());
    add(
        Target::ToolConfig,
        "tls_not_a_mapping",
        client
            .replace("tls: {ca: '', insecure: true}", "tls: yes")
            .into_bytes(),
    );
    add(
        Target::ToolConfig,
        "tagged",
        b"!!map {kind: !!str ClientConfig}\n".to_vec(),
    );

    // Resource names of the client API.
    for (name, text) in [
        (
            "lease",
            "namespaces/default/leases/7b922f9b-ac04-4d3b-a4da-3821187dbe16",
        ),
        ("exporter", "namespaces/default/exporters/exp1"),
        ("dotted_name", "namespaces/lab/exporters/board.rack-2"),
        ("dotted_namespace", "namespaces/lab.x/leases/l-1"),
        ("empty_label", "namespaces/lab/leases/a..b"),
        ("label_ends_with_dash", "namespaces/lab/leases/a-.b"),
        ("uppercase", "namespaces/Lab/leases/l-1"),
        ("extra_segment", "namespaces/lab/leases/l-1/x"),
        (
            "long_name",
            &format!("namespaces/lab/leases/{}", "a".repeat(300)),
        ),
    ] {
        add(Target::ResourceName, name, text.as_bytes().to_vec());
    }

    // Listen and Dial response bodies.
    let frame = |message: Vec<u8>| {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        out.extend_from_slice(&message);
        out
    };
    let listen = ListenResponse {
        router_endpoint: "router.example:443".into(),
        router_token: router_token.clone(),
    }
    .encode_to_vec();
    let dial = DialResponse {
        router_endpoint: "127.0.0.1:36689".into(),
        router_token: "stream-2cb4f76a-7235-43fa-8b09-cbf721c40556".into(),
    }
    .encode_to_vec();
    let with_control = |control: u8, body: Vec<u8>| [vec![control], body].concat();
    add(
        Target::EndpointRewrite,
        "listen_one_frame",
        with_control(0, frame(listen.clone())),
    );
    add(
        Target::EndpointRewrite,
        "listen_small_frames",
        with_control(2 * 7, [frame(listen.clone()), frame(listen)].concat()),
    );
    add(
        Target::EndpointRewrite,
        "dial",
        with_control(1, frame(dial.clone())),
    );
    add(
        Target::EndpointRewrite,
        "dial_truncated",
        with_control(1, frame(dial)[..9].to_vec()),
    );
    add(
        Target::EndpointRewrite,
        "compressed",
        with_control(0, vec![1, 0, 0, 0, 0]),
    );
    add(
        Target::EndpointRewrite,
        "too_large",
        with_control(1, vec![0, 0xff, 0xff, 0xff, 0xff]),
    );
    add(
        Target::EndpointRewrite,
        "not_protobuf",
        with_control(0, frame(vec![0xff; 6])),
    );
    out
}

fn router_token(lifetime: Duration) -> String {
    let grant = StreamGrant {
        stream_id: "2cb4f76a-7235-43fa-8b09-cbf721c40556".into(),
        token_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        lease: "default/7b922f9b-ac04-4d3b-a4da-3821187dbe16".into(),
    };
    let minted_at = if lifetime.is_negative() {
        fixture::now() + lifetime * 2
    } else {
        fixture::now()
    };
    router::mint(fixture::signing_key(), &grant, lifetime.abs(), minted_at)
        .expect("seed router token")
}

fn issued_leaf(issued: &jumpstarter_certs::IssuedLeaseCert) -> Vec<u8> {
    issued
        .chain_der
        .first()
        .map(|c| c.to_vec())
        .unwrap_or_default()
}
