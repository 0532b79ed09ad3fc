//! The header that opens every session stream. Sans-IO: bytes in, bytes out.
//!
//! Layout (version 1), all lengths big-endian:
//!
//! ```text
//! "JMP"  version=0x01  id_len:u8  session_id[id_len]  token_len:u16  token[token_len]
//! ```
//!
//! - `session_id`: the session (stream) id, the router token's `sub`; UTF-8, 1 to
//!   [`MAX_SESSION_ID_LEN`] bytes. The router pairs streams by (lease of the certificate,
//!   session id), so the id only needs to be unique within a lease.
//! - `token`: optional (`token_len` 0 means absent), UTF-8, at most [`MAX_TOKEN_LEN`] bytes.
//!   QUIC-to-QUIC sessions do not need it: the certificate already proves the lease. It is
//!   reserved for pairing with an h2 peer, where a router may want the router token the
//!   controller issued for the session (its `sub` equal to `session_id`, its `lease` equal to
//!   the certificate's lease) before splicing into the token-authenticated h2 world.
//!
//! The session's raw bytes follow the header directly on the same stream.

use std::fmt;

/// The first bytes of every header.
pub const MAGIC: [u8; 3] = *b"JMP";
/// The only header version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Longest session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Longest router token, in bytes (ES256 router tokens are a few hundred bytes).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Bytes before the session id: magic, version, id length.
const PREFIX_LEN: usize = MAGIC.len() + 2;
/// Longest possible header.
pub const MAX_HEADER_LEN: usize = PREFIX_LEN + MAX_SESSION_ID_LEN + 2 + MAX_TOKEN_LEN;

/// The opening header of a session stream.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    session_id: String,
    token: Option<String>,
}

/// Why bytes are not a valid header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("not a session header: expected magic {MAGIC:?}, found {found:?}")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported session header version {found} (this side speaks {VERSION})")]
    UnknownVersion { found: u8 },
    #[error("the session id is empty")]
    EmptySessionId,
    #[error("the session id is {len} bytes, more than {MAX_SESSION_ID_LEN}")]
    SessionIdTooLong { len: usize },
    #[error("the router token is {len} bytes, more than {MAX_TOKEN_LEN}")]
    TokenTooLong { len: usize },
    #[error("the {field} is not UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("the stream ended after {received} bytes, inside the session header")]
    Truncated { received: usize },
}

/// The result of [`Header::decode`] on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete header, which took the first `len` bytes.
    Complete { header: Header, len: usize },
    /// The bytes so far are a valid beginning; at least `total` bytes are needed in all.
    NeedMore { total: usize },
}

impl Header {
    /// A header for `session_id`, without a router token.
    pub fn new(session_id: &str) -> Result<Header, HeaderError> {
        check_session_id(session_id)?;
        Ok(Header {
            session_id: session_id.to_owned(),
            token: None,
        })
    }

    /// The same header carrying a router token.
    pub fn with_token(mut self, token: &str) -> Result<Header, HeaderError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(HeaderError::TokenTooLong { len: token.len() });
        }
        self.token = (!token.is_empty()).then(|| token.to_owned());
        Ok(self)
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The router token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let token = self.token.as_deref().unwrap_or("");
        let mut out = Vec::with_capacity(PREFIX_LEN + self.session_id.len() + 2 + token.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        // Invariant: constructors bound the id to MAX_SESSION_ID_LEN (< 256) and the token
        // to MAX_TOKEN_LEN (< 65536), so both lengths fit their fields.
        out.push(u8::try_from(self.session_id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.session_id.as_bytes());
        out.extend_from_slice(&u16::try_from(token.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(token.as_bytes());
        out
    }

    /// Decodes a header from the start of `buf`, the bytes of a stream received so far.
    ///
    /// Errors as early as the bytes allow: a wrong magic or version is reported after four
    /// bytes, an oversized field as soon as its length is read. If the stream ends while
    /// this answers [`Decoded::NeedMore`], the caller reports [`HeaderError::Truncated`].
    pub fn decode(buf: &[u8]) -> Result<Decoded, HeaderError> {
        let magic_seen = buf.len().min(MAGIC.len());
        if buf[..magic_seen] != MAGIC[..magic_seen] {
            return Err(HeaderError::BadMagic {
                found: buf[..magic_seen].to_vec(),
            });
        }
        let Some(&version) = buf.get(MAGIC.len()) else {
            return Ok(Decoded::NeedMore { total: PREFIX_LEN });
        };
        if version != VERSION {
            return Err(HeaderError::UnknownVersion { found: version });
        }
        let Some(&id_len) = buf.get(MAGIC.len() + 1) else {
            return Ok(Decoded::NeedMore { total: PREFIX_LEN });
        };
        let id_len = usize::from(id_len);
        if id_len == 0 {
            return Err(HeaderError::EmptySessionId);
        }
        if id_len > MAX_SESSION_ID_LEN {
            return Err(HeaderError::SessionIdTooLong { len: id_len });
        }
        let token_len_at = PREFIX_LEN + id_len;
        let Some(len_bytes) = buf.get(token_len_at..token_len_at + 2) else {
            return Ok(Decoded::NeedMore {
                total: token_len_at + 2,
            });
        };
        let token_len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if token_len > MAX_TOKEN_LEN {
            return Err(HeaderError::TokenTooLong { len: token_len });
        }
        let total = token_len_at + 2 + token_len;
        if buf.len() < total {
            return Ok(Decoded::NeedMore { total });
        }
        let session_id = std::str::from_utf8(&buf[PREFIX_LEN..token_len_at])
            .map_err(|_| HeaderError::NotUtf8 {
                field: "session id",
            })?
            .to_owned();
        let token = std::str::from_utf8(&buf[token_len_at + 2..total]).map_err(|_| {
            HeaderError::NotUtf8 {
                field: "router token",
            }
        })?;
        Ok(Decoded::Complete {
            header: Header {
                session_id,
                token: (!token.is_empty()).then(|| token.to_owned()),
            },
            len: total,
        })
    }
}

impl fmt::Debug for Header {
    // The token is a credential: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("session_id", &self.session_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn check_session_id(session_id: &str) -> Result<(), HeaderError> {
    if session_id.is_empty() {
        return Err(HeaderError::EmptySessionId);
    }
    if session_id.len() > MAX_SESSION_ID_LEN {
        return Err(HeaderError::SessionIdTooLong {
            len: session_id.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn complete(bytes: &[u8]) -> (Header, usize) {
        match Header::decode(bytes) {
            Ok(Decoded::Complete { header, len }) => (header, len),
            other => panic!("expected a complete header, got {other:?}"),
        }
    }

    #[test]
    fn bytes_without_token_are_stable() {
        let header = Header::new("abc").expect("header");
        assert_eq!(header.encode(), b"JMP\x01\x03abc\x00\x00".to_vec());
        assert_eq!(complete(&header.encode()), (header, 10));
    }

    #[test]
    fn bytes_with_token_are_stable() {
        let header = Header::new("s-1")
            .and_then(|h| h.with_token("t.k.n"))
            .expect("header");
        assert_eq!(header.encode(), b"JMP\x01\x03s-1\x00\x05t.k.n".to_vec());
        let mut with_payload = header.encode();
        with_payload.extend_from_slice(b"payload");
        assert_eq!(complete(&with_payload), (header, 15));
    }

    #[test]
    fn empty_token_is_no_token() {
        let header = Header::new("s").and_then(|h| h.with_token("")).expect("h");
        assert_eq!(header.token(), None);
    }

    #[test]
    fn prefixes_ask_for_more_and_errors_come_early() {
        let bytes = Header::new("abc")
            .and_then(|h| h.with_token("tok"))
            .expect("h")
            .encode();
        for cut in 0..bytes.len() {
            assert!(
                matches!(Header::decode(&bytes[..cut]), Ok(Decoded::NeedMore { total }) if total > cut),
                "prefix of {cut} bytes"
            );
        }
        assert_eq!(
            Header::decode(b"JX"),
            Err(HeaderError::BadMagic {
                found: b"JX".to_vec()
            })
        );
        assert_eq!(
            Header::decode(b"GET / HTTP/1.1"),
            Err(HeaderError::BadMagic {
                found: b"GET".to_vec()
            })
        );
        assert_eq!(
            Header::decode(b"JMP\x02"),
            Err(HeaderError::UnknownVersion { found: 2 })
        );
        assert_eq!(
            Header::decode(b"JMP\x01\x00"),
            Err(HeaderError::EmptySessionId)
        );
        assert_eq!(
            Header::decode(b"JMP\x01\x81"),
            Err(HeaderError::SessionIdTooLong { len: 129 })
        );
        assert_eq!(
            Header::decode(b"JMP\x01\x01a\x10\x01"),
            Err(HeaderError::TokenTooLong { len: 4097 })
        );
        assert_eq!(
            Header::decode(b"JMP\x01\x01\xff\x00\x00"),
            Err(HeaderError::NotUtf8 {
                field: "session id"
            })
        );
    }

    #[test]
    fn constructors_refuse_what_cannot_be_encoded() {
        assert_eq!(Header::new(""), Err(HeaderError::EmptySessionId));
        assert_eq!(
            Header::new(&"x".repeat(129)),
            Err(HeaderError::SessionIdTooLong { len: 129 })
        );
        assert!(Header::new(&"x".repeat(128)).is_ok());
        assert_eq!(
            Header::new("s").and_then(|h| h.with_token(&"t".repeat(4097))),
            Err(HeaderError::TokenTooLong { len: 4097 })
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let header = Header::new("s")
            .and_then(|h| h.with_token("secret"))
            .expect("h");
        assert!(!format!("{header:?}").contains("secret"));
    }

    proptest! {
        #[test]
        fn round_trips(id in "\\PC{1,32}", token in proptest::option::of("[A-Za-z0-9._-]{1,600}"), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
            prop_assume!(id.len() <= MAX_SESSION_ID_LEN);
            let mut header = Header::new(&id).expect("header");
            if let Some(token) = &token {
                header = header.with_token(token).expect("token");
            }
            let mut bytes = header.encode();
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(Header::decode(&bytes), Ok(Decoded::Complete { header, len }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match Header::decode(&bytes) {
                Ok(Decoded::Complete { header, len }) => {
                    prop_assert_eq!(&header.encode()[..], &bytes[..len]);
                }
                Ok(Decoded::NeedMore { total }) => {
                    prop_assert!(total > bytes.len() && total <= MAX_HEADER_LEN);
                }
                Err(_) => {}
            }
        }
    }
}
