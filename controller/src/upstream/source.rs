//! Where the upstream configuration is read from: the ConfigMap (Kubernetes mode, read
//! once at start) or a file holding what the ConfigMap's key `config` holds.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{UpstreamConfig, UpstreamError};
use crate::store::Store;

/// The ConfigMap 0.9.0 reads (`--config-map` default).
pub const DEFAULT_CONFIG_MAP: &str = "jumpstarter-controller";

/// The ConfigMap's keys, parsed; `None` when the ConfigMap does not exist.
pub async fn from_config_map<S: Store>(
    store: &S,
    namespace: &str,
    name: &str,
) -> Result<Option<UpstreamConfig>, UpstreamError> {
    let config_map = store
        .get::<ConfigMap>(namespace, name)
        .await
        .map_err(|source| UpstreamError::ConfigMap {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    let Some(config_map) = config_map else {
        return Ok(None);
    };
    let data = config_map.data.unwrap_or_default();
    let key = |k: &str| data.get(k).map(String::as_str);
    if key("authentication").is_some() && key("config").is_some() {
        tracing::warn!(
            config_map = %format!("{namespace}/{name}"),
            "the legacy key `authentication` wins: key `config` is not used (as in 0.9.0)"
        );
    }
    UpstreamConfig::parse(key("config"), key("router"), key("authentication")).map(Some)
}

/// A file with the YAML of key `config`.
pub fn from_file(path: &Path) -> Result<UpstreamConfig, UpstreamError> {
    let text = std::fs::read_to_string(path).map_err(|source| UpstreamError::File {
        path: path.display().to_string(),
        source,
    })?;
    UpstreamConfig::parse(Some(&text), None, None)
}
