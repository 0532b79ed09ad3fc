//! Helpers shared by the integration tests: a fixed clock, sample identities and the
//! `openssl verify` CLI as an independent checker.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;

use jumpstarter_certs::{LeaseIdentity, Role};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use time::macros::datetime;
use x509_parser::prelude::FromDer;

/// A fixed "now" with a fractional second, to exercise truncation to whole seconds.
pub const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:00.5 UTC);

pub fn identity(role: Role) -> LeaseIdentity {
    LeaseIdentity {
        namespace: "lab".to_owned(),
        lease_name: "lease-42".to_owned(),
        lease_uid: "0f8e7a4c-1b2d-4e5f-8a9b-0c1d2e3f4a5b".to_owned(),
        role,
        holder: match role {
            Role::Client => "alice".to_owned(),
            Role::Exporter => "board-7".to_owned(),
        },
    }
}

/// The (notBefore, notAfter) of a DER certificate, read with x509-parser.
pub fn validity(cert: &CertificateDer<'_>) -> (OffsetDateTime, OffsetDateTime) {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).unwrap();
    (
        parsed.validity().not_before.to_datetime(),
        parsed.validity().not_after.to_datetime(),
    )
}

/// Runs `openssl verify -x509_strict` on `leaf_pem` against `ca_pem` at `at`, with `purpose`
/// (`sslserver`, `sslclient`). Returns whether it succeeded, and its combined output.
pub fn openssl_verify(
    dir: &Path,
    ca_pem: &str,
    leaf_pem: &str,
    at: OffsetDateTime,
    purpose: &str,
) -> (bool, String) {
    let ca = dir.join("ca.pem");
    let leaf = dir.join("leaf.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&leaf, leaf_pem).unwrap();
    let output = Command::new("/usr/bin/openssl")
        .arg("verify")
        .arg("-x509_strict")
        .arg("-attime")
        .arg(at.unix_timestamp().to_string())
        .arg("-purpose")
        .arg(purpose)
        .arg("-CAfile")
        .arg(&ca)
        .arg(&leaf)
        .output()
        .expect("the openssl CLI must be installed at /usr/bin/openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && text.contains(": OK"), text)
}

/// The text dump of a certificate from `openssl x509 -text`.
pub fn openssl_text(dir: &Path, pem: &str) -> String {
    let path = dir.join("dump.pem");
    std::fs::write(&path, pem).unwrap();
    let output = Command::new("/usr/bin/openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("the openssl CLI must be installed at /usr/bin/openssl");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}
