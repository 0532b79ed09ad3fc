//! Presenting a renewed lease certificate on a live connection. Sans-IO: bytes in, bytes out.
//!
//! TLS 1.3 over QUIC has no post-handshake authentication, yet lease certificates are short
//! lived: the router closes a connection when its certificate ends, which is how a released
//! or expired lease loses its traffic without the router keeping any lease state. A peer
//! whose lease goes on gets a new certificate for the **same key** from the controller and
//! presents it on a stream of its own; the router checks it like a handshake certificate,
//! requires the same identity and public key, and moves the connection's end.
//!
//! Request, on a new bidirectional stream (instead of a session [`crate::Header`]):
//!
//! ```text
//! "JMR"  version=0x01  count:u8  { der_len:u16  der[der_len] } × count    (leaf first)
//! ```
//!
//! Reply, then FIN: `0x00  not_after:i64` (accepted; Unix seconds) or
//! `0x01  reason_len:u16  reason[reason_len]` (refused; UTF-8).

use rustls_pki_types::CertificateDer;

/// The first bytes of a renewal request.
pub const MAGIC: [u8; 3] = *b"JMR";
/// The only renewal version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Most certificates in a presented chain.
pub const MAX_CHAIN_LEN: usize = 4;
/// Largest certificate, in bytes.
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Longest refusal reason, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// Why bytes are not a valid renewal request or reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewalError {
    #[error("not a renewal request: expected magic {MAGIC:?}, found {found:?}")]
    BadMagic { found: Vec<u8> },
    #[error("unsupported renewal version {found} (this side speaks {VERSION})")]
    UnknownVersion { found: u8 },
    #[error("a renewal carries 1 to {MAX_CHAIN_LEN} certificates, not {count}")]
    ChainLength { count: usize },
    #[error("certificate {index} is {len} bytes; 1 to {MAX_CERT_LEN} are allowed")]
    CertLength { index: usize, len: usize },
    #[error("unknown renewal reply status {found}")]
    UnknownStatus { found: u8 },
    #[error("the refusal reason is {len} bytes, more than {MAX_REASON_LEN}")]
    ReasonTooLong { len: usize },
    #[error("the refusal reason is not UTF-8")]
    ReasonNotUtf8,
    #[error("the stream ended after {received} bytes, inside the renewal {part}")]
    Truncated { part: &'static str, received: usize },
}

/// The result of decoding the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<T> {
    /// A complete message, which took the first `len` bytes.
    Complete { value: T, len: usize },
    /// The bytes so far are a valid beginning; at least `total` bytes are needed in all.
    NeedMore { total: usize },
}

/// The router's answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The connection now ends at this Unix time (seconds).
    Accepted { not_after: i64 },
    /// The certificate was not accepted; the connection keeps its previous end.
    Refused { reason: String },
}

/// Whether `buf` (its first three bytes are needed) starts a renewal request rather than a
/// session header.
pub fn is_renewal(buf: &[u8]) -> bool {
    buf.starts_with(&MAGIC)
}

/// The bytes of a renewal request presenting `chain` (leaf first).
pub fn encode_request(chain: &[CertificateDer<'_>]) -> Result<Vec<u8>, RenewalError> {
    if chain.is_empty() || chain.len() > MAX_CHAIN_LEN {
        return Err(RenewalError::ChainLength { count: chain.len() });
    }
    let mut out = Vec::with_capacity(5 + chain.iter().map(|c| c.len() + 2).sum::<usize>());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    // Invariant: checked above, at most MAX_CHAIN_LEN (< 256) certificates.
    out.push(u8::try_from(chain.len()).unwrap_or(u8::MAX));
    for (index, cert) in chain.iter().enumerate() {
        let len = cert.len();
        if len == 0 || len > MAX_CERT_LEN {
            return Err(RenewalError::CertLength { index, len });
        }
        // Invariant: len <= MAX_CERT_LEN (< 65536).
        out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(cert);
    }
    Ok(out)
}

/// Decodes a renewal request from the start of `buf`.
pub fn decode_request(buf: &[u8]) -> Result<Progress<Vec<CertificateDer<'static>>>, RenewalError> {
    let seen = buf.len().min(MAGIC.len());
    if buf[..seen] != MAGIC[..seen] {
        return Err(RenewalError::BadMagic {
            found: buf[..seen].to_vec(),
        });
    }
    let Some(&version) = buf.get(3) else {
        return Ok(Progress::NeedMore { total: 5 });
    };
    if version != VERSION {
        return Err(RenewalError::UnknownVersion { found: version });
    }
    let Some(&count) = buf.get(4) else {
        return Ok(Progress::NeedMore { total: 5 });
    };
    let count = usize::from(count);
    if count == 0 || count > MAX_CHAIN_LEN {
        return Err(RenewalError::ChainLength { count });
    }
    let mut at = 5;
    let mut chain = Vec::with_capacity(count);
    for index in 0..count {
        let Some(len) = buf.get(at..at + 2) else {
            return Ok(Progress::NeedMore { total: at + 2 });
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len == 0 || len > MAX_CERT_LEN {
            return Err(RenewalError::CertLength { index, len });
        }
        at += 2;
        let Some(der) = buf.get(at..at + len) else {
            return Ok(Progress::NeedMore { total: at + len });
        };
        chain.push(CertificateDer::from(der.to_vec()));
        at += len;
    }
    Ok(Progress::Complete {
        value: chain,
        len: at,
    })
}

/// The bytes of a reply.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    match reply {
        Reply::Accepted { not_after } => {
            let mut out = vec![0];
            out.extend_from_slice(&not_after.to_be_bytes());
            out
        }
        Reply::Refused { reason } => {
            let mut end = reason.len().min(MAX_REASON_LEN);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            let reason = &reason.as_bytes()[..end];
            let mut out = vec![1];
            // Invariant: cut to MAX_REASON_LEN (< 65536) above.
            out.extend_from_slice(&u16::try_from(reason.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(reason);
            out
        }
    }
}

/// Decodes a reply from the start of `buf`.
pub fn decode_reply(buf: &[u8]) -> Result<Progress<Reply>, RenewalError> {
    let Some(&status) = buf.first() else {
        return Ok(Progress::NeedMore { total: 1 });
    };
    match status {
        0 => {
            let Some(bytes) = buf.get(1..9) else {
                return Ok(Progress::NeedMore { total: 9 });
            };
            let mut not_after = [0; 8];
            not_after.copy_from_slice(bytes);
            Ok(Progress::Complete {
                value: Reply::Accepted {
                    not_after: i64::from_be_bytes(not_after),
                },
                len: 9,
            })
        }
        1 => {
            let Some(len) = buf.get(1..3) else {
                return Ok(Progress::NeedMore { total: 3 });
            };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len > MAX_REASON_LEN {
                return Err(RenewalError::ReasonTooLong { len });
            }
            let Some(reason) = buf.get(3..3 + len) else {
                return Ok(Progress::NeedMore { total: 3 + len });
            };
            let reason = std::str::from_utf8(reason)
                .map_err(|_| RenewalError::ReasonNotUtf8)?
                .to_owned();
            Ok(Progress::Complete {
                value: Reply::Refused { reason },
                len: 3 + len,
            })
        }
        found => Err(RenewalError::UnknownStatus { found }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chain(sizes: &[usize]) -> Vec<CertificateDer<'static>> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                // Invariant: the test uses fewer than 256 certificates.
                let byte = u8::try_from(i).unwrap_or(0);
                CertificateDer::from(vec![byte; n])
            })
            .collect()
    }

    #[test]
    fn request_round_trips_and_reports_its_length() {
        let certs = chain(&[300, 500]);
        let mut bytes = encode_request(&certs).expect("encode");
        let total = bytes.len();
        bytes.extend_from_slice(b"trailing");
        match decode_request(&bytes).expect("decode") {
            Progress::Complete { value, len } => {
                assert_eq!(value, certs);
                assert_eq!(len, total);
            }
            other => panic!("expected complete, got {other:?}"),
        }
    }

    #[test]
    fn every_prefix_of_a_request_needs_more() {
        let bytes = encode_request(&chain(&[40, 7])).expect("encode");
        for cut in 0..bytes.len() {
            match decode_request(&bytes[..cut]) {
                Ok(Progress::NeedMore { total }) => assert!(total > cut, "cut {cut}"),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_requests_are_refused_precisely() {
        assert_eq!(
            decode_request(b"JMP\x01"),
            Err(RenewalError::BadMagic {
                found: b"JMP".to_vec()
            })
        );
        assert_eq!(
            decode_request(b"JMR\x02\x01"),
            Err(RenewalError::UnknownVersion { found: 2 })
        );
        assert_eq!(
            decode_request(b"JMR\x01\x00"),
            Err(RenewalError::ChainLength { count: 0 })
        );
        assert_eq!(
            decode_request(b"JMR\x01\x05"),
            Err(RenewalError::ChainLength { count: 5 })
        );
        assert_eq!(
            decode_request(b"JMR\x01\x01\xff\xff"),
            Err(RenewalError::CertLength {
                index: 0,
                len: 0xffff
            })
        );
        assert_eq!(
            encode_request(&[]),
            Err(RenewalError::ChainLength { count: 0 })
        );
        assert!(matches!(
            encode_request(&chain(&[MAX_CERT_LEN + 1])),
            Err(RenewalError::CertLength { .. })
        ));
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Accepted {
                not_after: 1_790_000_000,
            },
            Reply::Refused {
                reason: "the lease has ended".into(),
            },
        ] {
            let bytes = encode_reply(&reply);
            assert_eq!(
                decode_reply(&bytes),
                Ok(Progress::Complete {
                    value: reply,
                    len: bytes.len()
                })
            );
        }
        assert_eq!(
            decode_reply(&[9]),
            Err(RenewalError::UnknownStatus { found: 9 })
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(MAX_REASON_LEN);
        let bytes = encode_reply(&Reply::Refused { reason });
        match decode_reply(&bytes) {
            Ok(Progress::Complete {
                value: Reply::Refused { reason },
                ..
            }) => assert!(reason.len() <= MAX_REASON_LEN && reason.chars().all(|c| c == 'é')),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn session_headers_are_not_renewals() {
        let header = crate::Header::new("s").expect("header").encode();
        assert!(!is_renewal(&header));
        assert!(!is_renewal(b"JM"));
        assert!(is_renewal(b"JMR\x01"));
        assert!(!is_renewal(b""));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
        }
    }
}
