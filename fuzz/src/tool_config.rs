//! The edge's tool configuration file (0.9.0 `ExporterConfig` / `ClientConfig` YAML), read
//! at start, and the copy it writes for the tool behind it.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::edge_config::{ConfigError, Role, ToolConfig};
use crate::fixture;

/// The edge's own endpoint, written into the copy.
const EDGE_ENDPOINT: &str = "127.0.0.1:4000";

pub(crate) fn check(data: &[u8]) {
    // The edge reads the file as UTF-8 text; other bytes are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.yaml");
    for role in [Role::Exporter, Role::Client] {
        let config = match ToolConfig::parse(text, role, path) {
            Ok(config) => config,
            Err(error) => {
                assert!(!error.to_string().is_empty());
                assert!(
                    !matches!(error, ConfigError::Read { .. } | ConfigError::Write { .. }),
                    "{error:?}"
                );
                continue;
            }
        };
        for field in [
            &config.endpoint,
            &config.token,
            &config.namespace,
            &config.name,
        ] {
            assert!(!field.is_empty());
        }
        assert!(config.tls.insecure || !config.tls.roots.is_empty());
        // The copy for the tool reads back with the same identity, the edge's endpoint and
        // the edge's CA.
        let edge_ca = fixture::ca().cert_pem();
        let copy = config
            .for_edge(EDGE_ENDPOINT, edge_ca)
            .expect("an accepted configuration can be written back");
        let again = ToolConfig::parse(&copy, role, path).expect("the copy reads back");
        assert_eq!(again.endpoint, EDGE_ENDPOINT);
        assert_eq!(
            (&again.token, &again.namespace, &again.name),
            (&config.token, &config.namespace, &config.name)
        );
        assert!(!again.tls.insecure);
        let roots: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(edge_ca.as_bytes())
                .collect::<Result<_, _>>()
                .expect("the fixture CA is PEM");
        assert_eq!(again.tls.roots, roots);
    }
}
