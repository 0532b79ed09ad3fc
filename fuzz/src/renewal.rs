//! The certificate renewal exchange on a live QUIC connection: the request a peer sends the
//! router, and the router's reply.

use jumpstarter_tunnel::renewal::{
    MAGIC, MAX_CERT_LEN, MAX_CHAIN_LEN, MAX_REASON_LEN, Progress, RenewalError, Reply, VERSION,
    decode_reply, decode_request, encode_reply, encode_request, is_renewal,
};

/// The longest request: magic, version, count, then each certificate with its length.
const MAX_REQUEST_LEN: usize = 5 + MAX_CHAIN_LEN * (2 + MAX_CERT_LEN);
/// The longest reply: status, reason length, reason.
const MAX_REPLY_LEN: usize = 3 + MAX_REASON_LEN;

pub(crate) fn check_request(data: &[u8]) {
    let decoded = decode_request(data);
    if data.len() >= MAGIC.len() && !is_renewal(data) {
        assert!(
            matches!(decoded, Err(RenewalError::BadMagic { .. })),
            "{decoded:?}"
        );
    }
    match decoded {
        Ok(Progress::Complete { value, len }) => {
            assert!(len <= data.len() && len <= MAX_REQUEST_LEN);
            assert!((1..=MAX_CHAIN_LEN).contains(&value.len()));
            assert!(value.iter().all(|c| (1..=MAX_CERT_LEN).contains(&c.len())));
            assert_eq!(encode_request(&value).as_deref(), Ok(&data[..len]));
            for cut in 0..len {
                match decode_request(&data[..cut]) {
                    Ok(Progress::NeedMore { total }) => assert!(cut < total && total <= len),
                    other => panic!("prefix of {cut} bytes of a {len}-byte request: {other:?}"),
                }
            }
        }
        Ok(Progress::NeedMore { total }) => {
            assert!(
                data.len() < total && total <= MAX_REQUEST_LEN,
                "total {total}"
            );
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            match &error {
                RenewalError::BadMagic { found } => {
                    assert!(found.len() <= MAGIC.len() && !MAGIC.starts_with(found));
                }
                RenewalError::UnknownVersion { found } => assert_ne!(*found, VERSION),
                RenewalError::ChainLength { count } => {
                    assert!(*count == 0 || *count > MAX_CHAIN_LEN);
                }
                RenewalError::CertLength { index, len } => {
                    assert!(*index < MAX_CHAIN_LEN && (*len == 0 || *len > MAX_CERT_LEN));
                }
                other => panic!("a request decode reported a reply error: {other:?}"),
            }
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0; 8]);
            // (A wrong magic reports more of itself as more bytes arrive.)
            match decode_request(&longer) {
                Err(later) => assert_eq!(
                    std::mem::discriminant(&later),
                    std::mem::discriminant(&error),
                    "{error:?} became {later:?}"
                ),
                Ok(decoded) => panic!("{error:?} became {decoded:?}"),
            }
        }
    }
}

pub(crate) fn check_reply(data: &[u8]) {
    match decode_reply(data) {
        Ok(Progress::Complete { value, len }) => {
            assert!(len <= data.len() && len <= MAX_REPLY_LEN);
            if let Reply::Refused { reason } = &value {
                assert!(reason.len() <= MAX_REASON_LEN);
            }
            assert_eq!(encode_reply(&value), &data[..len]);
            for cut in 0..len {
                match decode_reply(&data[..cut]) {
                    Ok(Progress::NeedMore { total }) => assert!(cut < total && total <= len),
                    other => panic!("prefix of {cut} bytes of a {len}-byte reply: {other:?}"),
                }
            }
        }
        Ok(Progress::NeedMore { total }) => {
            assert!(
                data.len() < total && total <= MAX_REPLY_LEN,
                "total {total}"
            );
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            match &error {
                RenewalError::UnknownStatus { found } => assert!(*found > 1),
                RenewalError::ReasonTooLong { len } => assert!(*len > MAX_REASON_LEN),
                RenewalError::ReasonNotUtf8 => {}
                other => panic!("a reply decode reported a request error: {other:?}"),
            }
        }
    }
}
