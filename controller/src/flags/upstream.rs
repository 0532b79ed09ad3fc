//! The flag groups that say where the upstream (0.9.0) configuration comes from: the
//! ConfigMap in Kubernetes mode, or a file with the YAML of its key `config` (see
//! [`crate::upstream`]). Explicit flags (or their environment variables) win over it.

use std::path::PathBuf;

use clap::Args;

use crate::store::Store;
use crate::upstream::source::{self, DEFAULT_CONFIG_MAP};
use crate::upstream::{UpstreamConfig, UpstreamError};

/// Kubernetes mode: the ConfigMap, or a file instead of it.
#[derive(Debug, Clone, Args)]
pub struct UpstreamConfigArgs {
    /// ConfigMap (in the controller's namespace) holding the 0.9.0 configuration: keys
    /// `config`, `router` and the legacy `authentication`. Read once at start; absent means
    /// defaults, invalid means the controller does not start. Explicit flags win over it.
    #[arg(
        long,
        env = "JUMPSTARTER_CONFIG_MAP",
        default_value = DEFAULT_CONFIG_MAP
    )]
    pub config_map: String,
    /// Read the configuration from this file (the YAML of the ConfigMap's key `config`)
    /// instead of the ConfigMap; routers then come from --router only.
    #[arg(long = "config", env = "JUMPSTARTER_CONFIG")]
    pub config: Option<PathBuf>,
}

impl UpstreamConfigArgs {
    /// The configuration from the file, else from the ConfigMap (defaults when it does not
    /// exist); says at info level where it came from.
    pub async fn load<S: Store>(
        &self,
        store: &S,
        namespace: &str,
    ) -> Result<UpstreamConfig, UpstreamError> {
        if let Some(path) = &self.config {
            let config = source::from_file(path)?;
            tracing::info!(file = %path.display(), "configuration read");
            return Ok(config);
        }
        match source::from_config_map(store, namespace, &self.config_map).await? {
            Some(config) => {
                tracing::info!(
                    config_map = %format!("{namespace}/{}", self.config_map),
                    legacy_authentication = config.legacy_authentication,
                    "configuration read"
                );
                Ok(config)
            }
            None => {
                tracing::info!(
                    config_map = %format!("{namespace}/{}", self.config_map),
                    "no configuration ConfigMap: defaults and flags"
                );
                Ok(UpstreamConfig::default())
            }
        }
    }
}

/// Standalone mode: a file.
#[derive(Debug, Clone, Default, Args)]
pub struct UpstreamFileArgs {
    /// A file with the 0.9.0 configuration: the YAML of the upstream ConfigMap's key
    /// `config` (authentication, provisioning, grpc.keepalive, leasePolicy, hiddenLabels,
    /// deprecatedLabels). Explicit flags win over it. The ConfigMap's `router` key has no
    /// counterpart here: the one router is the built-in one (--router-listen,
    /// --router-endpoint).
    #[arg(long = "config", env = "JUMPSTARTER_CONFIG")]
    pub config: Option<PathBuf>,
}

impl UpstreamFileArgs {
    /// The configuration from the file, or defaults without one.
    pub fn load(&self) -> Result<UpstreamConfig, UpstreamError> {
        match &self.config {
            Some(path) => {
                let config = source::from_file(path)?;
                tracing::info!(file = %path.display(), "configuration read");
                Ok(config)
            }
            None => Ok(UpstreamConfig::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        upstream: UpstreamConfigArgs,
    }

    #[test]
    fn the_config_map_is_0_9_0_s_unless_named() {
        let flags = Flags::try_parse_from(["t"]).expect("parse");
        assert_eq!(flags.upstream.config_map, "jumpstarter-controller");
        assert_eq!(flags.upstream.config, None);
        let flags = Flags::try_parse_from(["t", "--config-map", "lab", "--config", "/c.yaml"])
            .expect("parse");
        assert_eq!(flags.upstream.config_map, "lab");
        assert_eq!(flags.upstream.config, Some(PathBuf::from("/c.yaml")));
    }

    #[test]
    fn a_file_is_read_and_its_errors_name_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "provisioning:\n  enabled: true\n").expect("write");
        let args = UpstreamFileArgs {
            config: Some(path.clone()),
        };
        assert!(args.load().expect("load").provisioning);
        std::fs::write(&path, "provisioning:\n  enable: true\n").expect("write");
        let error = args.load().expect_err("unknown key").to_string();
        assert!(
            error.starts_with("config: provisioning: unknown field `enable`"),
            "{error}"
        );
        let missing = UpstreamFileArgs {
            config: Some(dir.path().join("missing.yaml")),
        };
        let error = missing.load().expect_err("missing file").to_string();
        assert!(error.contains("missing.yaml"), "{error}");
        assert_eq!(
            UpstreamFileArgs::default().load().expect("none"),
            UpstreamConfig::default()
        );
    }
}
