//! The session header (`JMP`): the first bytes of every QUIC session stream, read by the
//! router from any peer that completed a handshake.

use jumpstarter_tunnel::header::{
    Decoded, Header, HeaderError, MAGIC, MAX_HEADER_LEN, MAX_SESSION_ID_LEN, MAX_TOKEN_LEN, VERSION,
};

pub(crate) fn check(data: &[u8]) {
    match Header::decode(data) {
        Ok(Decoded::Complete { header, len }) => {
            assert!(len <= data.len() && len <= MAX_HEADER_LEN, "length {len}");
            let id = header.session_id();
            assert!(!id.is_empty() && id.len() <= MAX_SESSION_ID_LEN);
            assert!(
                header
                    .token()
                    .is_none_or(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN)
            );
            // Round trip: the header re-encodes to exactly the bytes it came from, and the
            // constructors accept what the decoder accepted.
            assert_eq!(header.encode(), &data[..len]);
            let rebuilt = Header::new(id).and_then(|h| h.with_token(header.token().unwrap_or("")));
            assert_eq!(rebuilt.as_ref(), Ok(&header));
            // Every shorter prefix asks for more bytes, never for more than the header.
            for cut in 0..len {
                match Header::decode(&data[..cut]) {
                    Ok(Decoded::NeedMore { total }) => assert!(cut < total && total <= len),
                    other => panic!("prefix of {cut} bytes of a {len}-byte header: {other:?}"),
                }
            }
        }
        Ok(Decoded::NeedMore { total }) => {
            assert!(
                data.len() < total && total <= MAX_HEADER_LEN,
                "total {total}"
            );
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            match &error {
                HeaderError::BadMagic { found } => {
                    assert!(found.len() <= MAGIC.len() && !MAGIC.starts_with(found));
                }
                HeaderError::UnknownVersion { found } => assert_ne!(*found, VERSION),
                HeaderError::SessionIdTooLong { len } => assert!(*len > MAX_SESSION_ID_LEN),
                HeaderError::TokenTooLong { len } => assert!(*len > MAX_TOKEN_LEN),
                HeaderError::EmptySessionId | HeaderError::NotUtf8 { .. } => {}
                HeaderError::Truncated { .. } => panic!("decode never reports truncation"),
            }
            // An error stays the same error whatever bytes follow.
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0; 8]);
            // (A wrong magic reports more of itself as more bytes arrive.)
            match Header::decode(&longer) {
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
