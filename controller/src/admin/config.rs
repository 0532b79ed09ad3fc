//! The 0.9.0 `ClientConfig` and `ExporterConfig` files that `jmp` reads: the same fields,
//! names and shapes `jmp admin create` writes, so the real tools accept them unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AdminError;

/// `apiVersion` of both configuration kinds (0.9.0 gives them the resources' version).
pub(crate) const CONFIG_API_VERSION: &str = crate::crd::vocabulary::API_VERSION;

/// Comment put at the top of a new exporter configuration.
const EXPORTER_HINT: &str = "# Describe the exporter's drivers under `export:` (e.g. \
`power: {type: jumpstarter_driver_power.driver.MockPower}`),\n\
# then start it with `jmp run --exporter-config <this file>`.\n";

/// Which object a configuration belongs to; sent as `jumpstarter-namespace` and
/// `jumpstarter-name` metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMetadata {
    pub namespace: String,
    pub name: String,
}

/// How to trust the controller and routers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// Base64 of the CA's PEM (not a path).
    pub ca: String,
    /// Trust whatever chain the server presents (0.9.0 "insecure"); always false here.
    pub insecure: bool,
}

/// Which driver client classes a client may load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriversConfig {
    /// Glob patterns of allowed driver client modules.
    pub allow: Vec<String>,
    /// Load any driver client the exporter names.
    #[serde(rename = "unsafe")]
    pub allow_any: bool,
}

/// Declares a 0.9.0 configuration kind: the fields both kinds share, then its own.
macro_rules! tool_config {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub api_version: String,
            pub kind: String,
            pub metadata: ConfigMetadata,
            /// Controller gRPC endpoint, bare `host:port`.
            pub endpoint: String,
            pub tls: TlsConfig,
            pub token: String,
            /// Channel options merged over the tool's defaults.
            pub grpc_options: BTreeMap<String, serde_json::Value>,
            $($(#[$field_meta])* pub $field: $ty,)*
        }
    };
}

tool_config! {
    /// A 0.9.0 `ClientConfig`.
    ClientConfig {
        drivers: DriversConfig,
    }
}

tool_config! {
    /// A 0.9.0 `ExporterConfig`; the user fills in `export`.
    ExporterConfig {
        /// The driver tree (the root Composite's children).
        export: BTreeMap<String, serde_json::Value>,
    }
}

/// What every configuration carries: who, where and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub namespace: String,
    pub name: String,
    pub endpoint: String,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    pub token: String,
}

impl Credentials {
    fn metadata(&self) -> ConfigMetadata {
        ConfigMetadata {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    fn tls(&self) -> TlsConfig {
        TlsConfig {
            ca: base64_encode(self.ca_pem.as_bytes()),
            insecure: false,
        }
    }
}

impl ClientConfig {
    /// A client configuration that may load any driver client (`drivers.unsafe: true`), as
    /// `jmp admin create client --unsafe` writes it.
    pub fn new(credentials: &Credentials) -> ClientConfig {
        ClientConfig {
            api_version: CONFIG_API_VERSION.to_owned(),
            kind: "ClientConfig".to_owned(),
            metadata: credentials.metadata(),
            endpoint: credentials.endpoint.clone(),
            tls: credentials.tls(),
            token: credentials.token.clone(),
            grpc_options: BTreeMap::new(),
            drivers: DriversConfig {
                allow: Vec::new(),
                allow_any: true,
            },
        }
    }

    pub fn to_yaml(&self) -> Result<String, AdminError> {
        serde_norway::to_string(self).map_err(|e| AdminError::Render(e.to_string()))
    }
}

impl ExporterConfig {
    /// An exporter configuration with an empty `export` for the user to fill in.
    pub fn new(credentials: &Credentials) -> ExporterConfig {
        ExporterConfig {
            api_version: CONFIG_API_VERSION.to_owned(),
            kind: "ExporterConfig".to_owned(),
            metadata: credentials.metadata(),
            endpoint: credentials.endpoint.clone(),
            tls: credentials.tls(),
            token: credentials.token.clone(),
            grpc_options: BTreeMap::new(),
            export: BTreeMap::new(),
        }
    }

    /// The YAML, preceded by a comment saying what to fill in when `export` is empty.
    pub fn to_yaml(&self) -> Result<String, AdminError> {
        let yaml = serde_norway::to_string(self).map_err(|e| AdminError::Render(e.to_string()))?;
        if self.export.is_empty() {
            Ok(format!("{EXPORTER_HINT}{yaml}"))
        } else {
            Ok(yaml)
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as Python's `base64.b64decode` expects.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            namespace: "lab".into(),
            name: "alice".into(),
            endpoint: "127.0.0.1:8082".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n".into(),
            token: "a.b.c".into(),
        }
    }

    #[test]
    fn base64_is_the_padded_standard_alphabet() {
        // What Python's `b64decode` needs: all three paddings and `+`/`/` (the full RFC 4648
        // table is the PEM encoder's test in the certificate crate).
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn client_config_has_the_0_9_0_shape() {
        let yaml = ClientConfig::new(&credentials()).to_yaml().unwrap();
        let value: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(
            value["apiVersion"].as_str(),
            Some("jumpstarter.dev/v1alpha1")
        );
        assert_eq!(value["kind"].as_str(), Some("ClientConfig"));
        assert_eq!(value["metadata"]["namespace"].as_str(), Some("lab"));
        assert_eq!(value["metadata"]["name"].as_str(), Some("alice"));
        assert_eq!(value["endpoint"].as_str(), Some("127.0.0.1:8082"));
        assert_eq!(value["tls"]["insecure"].as_bool(), Some(false));
        assert_eq!(
            value["tls"]["ca"].as_str(),
            Some(base64_encode(credentials().ca_pem.as_bytes()).as_str())
        );
        assert_eq!(value["token"].as_str(), Some("a.b.c"));
        assert!(value["grpcOptions"].as_mapping().unwrap().is_empty());
        assert!(value["drivers"]["allow"].as_sequence().unwrap().is_empty());
        assert_eq!(value["drivers"]["unsafe"].as_bool(), Some(true));
    }

    #[test]
    fn exporter_config_has_an_empty_export_and_a_hint() {
        let yaml = ExporterConfig::new(&credentials()).to_yaml().unwrap();
        assert!(yaml.starts_with("# "));
        let value: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(value["kind"].as_str(), Some("ExporterConfig"));
        assert!(value["export"].as_mapping().unwrap().is_empty());
        assert!(value.get("drivers").is_none());
        let back: ExporterConfig = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, ExporterConfig::new(&credentials()));
    }
}
