//! The tool's configuration file (0.9.0 `ExporterConfig` / `ClientConfig` YAML): what the
//! edge reads from it, and the copy it writes for the tool behind it.
//!
//! The document is kept whole (unknown fields included); only `endpoint`, `tls.ca` and
//! `tls.insecure` change in the copy.

use std::path::{Path, PathBuf};

use base64::Engine;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_norway::{Mapping, Value};

/// Which tool the edge stands beside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Exporter,
    Client,
}

impl Role {
    /// The config document's `kind`.
    pub(crate) fn config_kind(self) -> &'static str {
        match self {
            Role::Exporter => "ExporterConfig",
            Role::Client => "ClientConfig",
        }
    }

    /// The `jumpstarter-kind` call metadata of this role.
    pub(crate) fn metadata_kind(self) -> &'static str {
        match self {
            Role::Exporter => "Exporter",
            Role::Client => "Client",
        }
    }
}

/// How the tool verifies the controller (and the router).
#[derive(Debug, Clone)]
pub(crate) struct ToolTls {
    /// `tls.ca`: the trusted roots, when set.
    pub(crate) roots: Vec<CertificateDer<'static>>,
    /// `tls.insecure`: trust whatever certificate the server presents.
    pub(crate) insecure: bool,
}

/// A parsed configuration file.
#[derive(Debug, Clone)]
pub(crate) struct ToolConfig {
    pub(crate) role: Role,
    /// The controller's `host:port`.
    pub(crate) endpoint: String,
    pub(crate) token: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) tls: ToolTls,
    document: Mapping,
    path: PathBuf,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path} is not a YAML mapping")]
    NotAMapping { path: PathBuf },
    #[error("{path} has kind {found}; this edge needs kind {expected}")]
    Kind {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    #[error("{path} has no {field} (a non-empty string)")]
    Missing { path: PathBuf, field: &'static str },
    #[error("{path}: tls.ca is not base64-encoded PEM certificates: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("{path}: neither tls.ca nor tls.insecure is set; the edge needs one of them")]
    NoTrust { path: PathBuf },
    #[error("cannot encode the configuration for the tool")]
    Encode(#[source] serde_norway::Error),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ToolConfig {
    /// Reads and checks the configuration file at `path` for `role`.
    pub(crate) fn load(path: &Path, role: Role) -> Result<ToolConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ToolConfig::parse(&text, role, path)
    }

    /// Parses `text` (read from `path`, named in errors) for `role`.
    pub(crate) fn parse(text: &str, role: Role, path: &Path) -> Result<ToolConfig, ConfigError> {
        let value: Value = serde_norway::from_str(text).map_err(|source| ConfigError::Yaml {
            path: path.to_owned(),
            source,
        })?;
        let Value::Mapping(document) = value else {
            return Err(ConfigError::NotAMapping {
                path: path.to_owned(),
            });
        };
        if let Some(kind) = document.get("kind") {
            let found = kind.as_str().unwrap_or("non-string kind");
            if found != role.config_kind() {
                return Err(ConfigError::Kind {
                    path: path.to_owned(),
                    expected: role.config_kind(),
                    found: found.to_owned(),
                });
            }
        }
        let text_at = |keys: &[&str], field: &'static str| -> Result<String, ConfigError> {
            lookup(&document, keys)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ConfigError::Missing {
                    path: path.to_owned(),
                    field,
                })
        };
        let endpoint = text_at(&["endpoint"], "endpoint")?;
        let token = text_at(&["token"], "token")?;
        let namespace = text_at(&["metadata", "namespace"], "metadata.namespace")?;
        let name = text_at(&["metadata", "name"], "metadata.name")?;
        let insecure = lookup(&document, &["tls", "insecure"])
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let ca = lookup(&document, &["tls", "ca"])
            .and_then(Value::as_str)
            .unwrap_or_default();
        let roots = if ca.trim().is_empty() {
            Vec::new()
        } else {
            decode_ca(ca).map_err(|reason| ConfigError::Ca {
                path: path.to_owned(),
                reason,
            })?
        };
        if roots.is_empty() && !insecure {
            return Err(ConfigError::NoTrust {
                path: path.to_owned(),
            });
        }
        Ok(ToolConfig {
            role,
            endpoint,
            token,
            namespace,
            name,
            tls: ToolTls { roots, insecure },
            document,
            path: path.to_owned(),
        })
    }

    /// Where the configuration came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The copy for the tool behind the edge: `endpoint` is the edge, `tls.ca` the edge's
    /// own CA (PEM, base64-encoded as 0.9.0 expects), `tls.insecure` false.
    pub(crate) fn for_edge(&self, endpoint: &str, ca_pem: &str) -> Result<String, ConfigError> {
        let mut document = self.document.clone();
        document.insert("endpoint".into(), endpoint.into());
        let tls = document
            .entry("tls".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if !tls.is_mapping() {
            *tls = Value::Mapping(Mapping::new());
        }
        if let Value::Mapping(tls) = tls {
            let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
            tls.insert("ca".into(), ca.into());
            tls.insert("insecure".into(), false.into());
        }
        serde_norway::to_string(&Value::Mapping(document)).map_err(ConfigError::Encode)
    }

    /// Writes [`ToolConfig::for_edge`] to `path`, readable by the owner only (it holds the
    /// token).
    pub(crate) fn write_for_edge(
        &self,
        path: &Path,
        endpoint: &str,
        ca_pem: &str,
    ) -> Result<(), ConfigError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = self.for_edge(endpoint, ca_pem)?;
        let write_error = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(write_error)?;
        file.write_all(text.as_bytes()).map_err(write_error)
    }
}

fn lookup<'a>(document: &'a Mapping, keys: &[&str]) -> Option<&'a Value> {
    let (first, rest) = keys.split_first()?;
    let mut value = document.get(*first)?;
    for key in rest {
        value = value.as_mapping()?.get(*key)?;
    }
    Some(value)
}

fn decode_ca(ca: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let compact: String = ca.chars().filter(|c| !c.is_whitespace()).collect();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| e.to_string())?;
    let roots = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if roots.is_empty() {
        return Err("no CERTIFICATE block".to_owned());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_b64() -> String {
        let now = time::OffsetDateTime::now_utc();
        let ca = jumpstarter_certs::Ca::generate("t", now, time::Duration::hours(1)).unwrap();
        base64::engine::general_purpose::STANDARD.encode(ca.cert_pem())
    }

    fn exporter_yaml(ca: &str) -> String {
        format!(
            "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n\
             metadata: {{namespace: lab, name: board-1}}\n\
             endpoint: controller.example:8082\n\
             tls: {{ca: '{ca}', insecure: false}}\n\
             token: abc.def.ghi\n\
             export:\n  power: {{type: jumpstarter_driver_power.driver.MockPower}}\n\
             somethingNew: {{kept: true}}\n"
        )
    }

    #[test]
    fn an_exporter_config_parses_and_its_copy_keeps_every_other_field() {
        let ca = ca_b64();
        let path = Path::new("board-1.yaml");
        let config = ToolConfig::parse(&exporter_yaml(&ca), Role::Exporter, path).unwrap();
        assert_eq!(config.endpoint, "controller.example:8082");
        assert_eq!(config.token, "abc.def.ghi");
        assert_eq!(
            (config.namespace.as_str(), config.name.as_str()),
            ("lab", "board-1")
        );
        assert_eq!(config.tls.roots.len(), 1);

        let copy = config.for_edge("127.0.0.1:4000", "EDGE PEM").unwrap();
        let copy: Value = serde_norway::from_str(&copy).unwrap();
        assert_eq!(copy["endpoint"], "127.0.0.1:4000");
        assert_eq!(
            copy["tls"]["ca"],
            base64::engine::general_purpose::STANDARD
                .encode("EDGE PEM")
                .as_str()
        );
        assert_eq!(copy["tls"]["insecure"], false);
        assert_eq!(copy["token"], "abc.def.ghi");
        assert_eq!(copy["somethingNew"]["kept"], true);
        assert_eq!(
            copy["export"]["power"]["type"],
            "jumpstarter_driver_power.driver.MockPower"
        );
    }

    /// A JWT-shaped token (dots, URL-safe alphabet) as `jmp` writes it.
    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    /// A 0.9.0 `ClientConfig` in the block layout `jmp` writes (keys in model order).
    fn client_file(ca: &str) -> String {
        format!(
            "apiVersion: jumpstarter.dev/v1alpha1\n\
             kind: ClientConfig\n\
             metadata:\n  namespace: lab\n  name: alice\n\
             endpoint: 127.0.0.1:8082\n\
             tls:\n  ca: {ca}\n  insecure: false\n\
             token: {TOKEN}\n\
             grpcOptions: {{}}\n\
             drivers:\n  allow: []\n  unsafe: true\n\
             shell:\n  use_profiles: false\n\
             leases:\n  acquisition_timeout: 7200\n  retry_timeout: 300.0\n"
        )
    }

    /// A 0.9.0 `ExporterConfig` in the block layout `jmp` writes, with a nested driver tree.
    fn exporter_file(ca: &str) -> String {
        format!(
            "apiVersion: jumpstarter.dev/v1alpha1\n\
             kind: ExporterConfig\n\
             metadata:\n  namespace: lab\n  name: board-1\n\
             endpoint: controller.example:8082\n\
             tls:\n  ca: {ca}\n  insecure: false\n\
             token: {TOKEN}\n\
             grpcOptions: {{}}\n\
             description: bench board\n\
             export:\n\
             \x20 power:\n    type: jumpstarter_driver_power.driver.MockPower\n\
             \x20 sh:\n    type: jumpstarter_driver_shell.driver.Shell\n\
             \x20   config:\n      methods:\n        hello: echo hello-from-exporter $1\n\
             \x20 serial:\n    ref: sh\n"
        )
    }

    #[test]
    fn unchanged_fields_round_trip_byte_for_byte() {
        let ca = ca_b64();
        let ca_pem = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(&ca)
                .unwrap(),
        )
        .unwrap();
        let path = Path::new("config.yaml");
        for (role, text, endpoint) in [
            (Role::Client, client_file(&ca), "127.0.0.1:8082"),
            (
                Role::Exporter,
                exporter_file(&ca),
                "controller.example:8082",
            ),
        ] {
            let config = ToolConfig::parse(&text, role, path).unwrap();
            // Same endpoint and CA: the copy is the file itself.
            assert_eq!(
                config.for_edge(endpoint, &ca_pem).unwrap(),
                text,
                "{role:?}"
            );
            // Another endpoint: only that line differs.
            let moved = config.for_edge("127.0.0.1:4000", &ca_pem).unwrap();
            assert_eq!(
                moved,
                text.replace(
                    &format!("endpoint: {endpoint}\n"),
                    "endpoint: 127.0.0.1:4000\n"
                ),
                "{role:?}"
            );
        }
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let path = Path::new("c.yaml");
        let ca = ca_b64();
        let err = |text: &str, role| ToolConfig::parse(text, role, path).unwrap_err();
        assert!(matches!(
            err(&exporter_yaml(&ca), Role::Client),
            ConfigError::Kind {
                expected: "ClientConfig",
                ..
            }
        ));
        assert!(matches!(
            err("[1, 2]", Role::Client),
            ConfigError::NotAMapping { .. }
        ));
        assert!(matches!(
            err(": : :", Role::Client),
            ConfigError::Yaml { .. }
        ));
        let no_token = exporter_yaml(&ca).replace("token: abc.def.ghi\n", "");
        assert!(matches!(
            err(&no_token, Role::Exporter),
            ConfigError::Missing { field: "token", .. }
        ));
        let bad_ca = exporter_yaml("not base64!");
        assert!(matches!(
            err(&bad_ca, Role::Exporter),
            ConfigError::Ca { .. }
        ));
        let no_trust = exporter_yaml("");
        let message = err(&no_trust, Role::Exporter).to_string();
        assert!(message.contains("tls.ca nor tls.insecure"), "{message}");
        let insecure = no_trust.replace("insecure: false", "insecure: true");
        let config = ToolConfig::parse(&insecure, Role::Exporter, path).unwrap();
        assert!(config.tls.insecure && config.tls.roots.is_empty());
    }
}
