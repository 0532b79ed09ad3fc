//! PEM encoding (RFC 7468) of DER blobs with the layout rustls, Go and Python read; parsing is
//! left to `rustls-pki-types`.

/// RFC 7468 PEM with 64-character lines and LF line endings.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let config = ::pem::EncodeConfig::new()
        .set_line_ending(::pem::LineEnding::LF)
        .set_line_wrap(LINE_WIDTH);
    ::pem::encode_config(&::pem::Pem::new(label, der), config)
}

/// Base64 characters per PEM line: RFC 7468 §2 requires exactly 64 on every line but the last.
const LINE_WIDTH: usize = 64;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    /// The body of `encode(label, input)` for a short input: its one base64 line.
    fn body(input: &[u8]) -> String {
        let pem = encode("X", input);
        let inner = pem
            .strip_prefix("-----BEGIN X-----\n")
            .and_then(|rest| rest.strip_suffix("-----END X-----\n"))
            .unwrap();
        inner.trim_end_matches('\n').to_owned()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(body(input.as_bytes()), expected);
        }
        // The standard alphabet (`+` and `/`), not the URL-safe one.
        assert_eq!(body(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn armour_is_byte_for_byte_the_rfc_7468_layout() {
        // An empty body has no lines between the boundaries.
        assert_eq!(
            encode("CERTIFICATE", &[]),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"
        );
        // 48 bytes fill exactly one 64-character line; 49 start a second one.
        let full = "A".repeat(64);
        assert_eq!(
            encode("CERTIFICATE REQUEST", &[0u8; 48]),
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{full}\n-----END CERTIFICATE REQUEST-----\n"
            )
        );
        assert_eq!(
            encode("CERTIFICATE", &[0u8; 49]),
            format!("-----BEGIN CERTIFICATE-----\n{full}\nAA==\n-----END CERTIFICATE-----\n")
        );
    }

    #[test]
    fn encoded_pem_parses_back_with_long_bodies() {
        let blob: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = encode("CERTIFICATE", &blob);
        assert!(pem.lines().all(|line| line.len() <= 64));
        let parsed = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(parsed.as_ref(), blob.as_slice());
    }
}
