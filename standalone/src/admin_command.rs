//! `jumpstarter admin …`: the admin commands, in either mode.
//!
//! - Kubernetes mode (`--kubeconfig`, `--context` or `--kubernetes`): straight to the
//!   Kubernetes API; a controller in the cluster issues the credentials.
//! - Standalone mode (default): through the admin socket of the running `jumpstarter
//!   serve`, which holds the data file.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use jumpstarter_controller::admin::{
    self, Admin, AdminError, Applied, Kind, LeaseOrder, Manifest, Objects, OutputFormat,
};
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_lease::selector::LabelSelector;
use jumpstarter_shell::{kube_client, private_file};
use time::OffsetDateTime;

use crate::admin_api::client::{AdminClient, ClientError};
use crate::data_dir::DataDir;

/// Where the admin commands go.
#[derive(Debug)]
pub(crate) enum Backend {
    Kubernetes(Admin<KubeStore>),
    Service(AdminClient),
}

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdminCommand {
    Create {
        kind: Kind,
        name: String,
        labels: BTreeMap<String, String>,
        /// `spec.username`: the identity-provider user that may act as the object.
        username: Option<String>,
        out: Option<PathBuf>,
    },
    CreateLease {
        order: LeaseOrder,
        /// How to show the created lease; `None` prints the `… created` line.
        output: Option<OutputFormat>,
    },
    Get {
        kind: Kind,
        name: Option<String>,
        output: OutputFormat,
        /// Only objects whose labels match (`-l`).
        selector: Option<LabelSelector>,
    },
    Delete {
        kind: Kind,
        name: String,
        /// A missing object is no error (`--ignore-not-found`).
        ignore_not_found: bool,
    },
    /// Create or update the objects of a YAML file (`-` for stdin).
    Apply { file: PathBuf },
}

/// How to reach the objects.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (`--context`) [default: its current context].
    pub(crate) context: Option<String>,
    pub(crate) kubernetes: bool,
    pub(crate) namespace: Option<String>,
}

impl Backend {
    pub(crate) async fn connect(target: &Target) -> anyhow::Result<Backend> {
        if target.kubernetes || target.kubeconfig.is_some() || target.context.is_some() {
            let client =
                kube_client::connect_to(target.kubeconfig.as_deref(), target.context.as_deref())
                    .await?;
            let namespace = target
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned());
            return Ok(Backend::Kubernetes(Admin::new(
                KubeStore::new(client),
                namespace,
            )));
        }
        let dir = DataDir::from_env(target.data_dir.as_deref())?;
        Ok(Backend::Service(AdminClient::new(
            dir.path(),
            dir.admin_socket(),
            target.namespace.clone(),
        )))
    }

    async fn create_client(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        username: Option<&str>,
    ) -> anyhow::Result<String> {
        let config = match self {
            Backend::Kubernetes(admin) => admin.create_client_for(name, labels, username).await?,
            Backend::Service(client) => client.create_client(name, labels, username).await?,
        };
        Ok(config.to_yaml()?)
    }

    async fn create_exporter(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        username: Option<&str>,
    ) -> anyhow::Result<String> {
        let config = match self {
            Backend::Kubernetes(admin) => admin.create_exporter_for(name, labels, username).await?,
            Backend::Service(client) => client.create_exporter(name, labels, username).await?,
        };
        Ok(config.to_yaml()?)
    }

    async fn create_lease(&self, order: &LeaseOrder) -> anyhow::Result<Objects> {
        Ok(match self {
            Backend::Kubernetes(admin) => admin.create_lease(order).await?,
            Backend::Service(client) => client.create_lease(order).await?,
        })
    }

    async fn get(&self, kind: Kind, name: &str) -> anyhow::Result<Objects> {
        Ok(match self {
            Backend::Kubernetes(admin) => admin.get(kind, name).await?,
            Backend::Service(client) => client.get(kind, name).await?,
        })
    }

    async fn list(&self, kind: Kind) -> anyhow::Result<Objects> {
        Ok(match self {
            Backend::Kubernetes(admin) => admin.list(kind).await?,
            Backend::Service(client) => client.list(kind).await?,
        })
    }

    /// Applies the YAML text `manifest`. In Kubernetes mode, documents without a namespace
    /// go to the admin's; one naming another is refused when `--namespace` was given. The
    /// service of standalone mode serves one namespace and refuses any other.
    async fn apply(&self, manifest: &str, namespace_given: bool) -> anyhow::Result<Vec<Applied>> {
        Ok(match self {
            Backend::Kubernetes(admin) => {
                let manifest = Manifest::parse(manifest, admin.namespace(), namespace_given)?;
                admin.apply(&manifest).await?
            }
            Backend::Service(client) => client.apply(manifest).await?,
        })
    }

    /// Deletes the object; `Ok(false)` when it did not exist and `ignore_not_found`,
    /// else a missing object is the error naming it.
    async fn delete(&self, kind: Kind, name: &str, ignore_not_found: bool) -> anyhow::Result<bool> {
        let result = match self {
            Backend::Kubernetes(admin) => match admin.delete(kind, name).await {
                Err(AdminError::NotFound { .. }) if ignore_not_found => return Ok(false),
                result => result.map_err(anyhow::Error::from),
            },
            Backend::Service(client) => match client.delete(kind, name).await {
                Err(ClientError::NotFound(_)) if ignore_not_found => return Ok(false),
                result => result.map_err(anyhow::Error::from),
            },
        };
        result.map(|()| true)
    }
}

/// Runs `command`; results go to stdout, notes to stderr.
pub(crate) async fn run(target: &Target, command: AdminCommand) -> anyhow::Result<()> {
    // Names end up in URLs and object keys: check them before going anywhere.
    match &command {
        AdminCommand::Create { name, .. } | AdminCommand::Delete { name, .. } => {
            admin::validate_name(name)?;
        }
        AdminCommand::Get {
            name: Some(name), ..
        } => admin::validate_name(name)?,
        AdminCommand::Get { name: None, .. } | AdminCommand::Apply { .. } => {}
        AdminCommand::CreateLease { order, .. } => admin::validate_name(&order.client)?,
    }
    if let AdminCommand::Create { labels, .. } = &command {
        for (key, value) in labels {
            admin::validate_label(key, value)?;
        }
    }
    // Read the file before going anywhere: a missing file is the user's first error.
    let manifest = match &command {
        AdminCommand::Apply { file } => Some(read_manifest(file)?),
        _ => None,
    };
    let backend = Backend::connect(target).await?;
    let mut stdout = std::io::stdout().lock();
    match command {
        AdminCommand::Create {
            kind,
            name,
            labels,
            username,
            out,
        } => {
            let yaml = match kind {
                Kind::Client => {
                    backend
                        .create_client(&name, &labels, username.as_deref())
                        .await?
                }
                Kind::Exporter => {
                    backend
                        .create_exporter(&name, &labels, username.as_deref())
                        .await?
                }
                Kind::Lease => {
                    anyhow::bail!("use `jumpstarter admin create lease` to create a lease")
                }
                Kind::Policy => {
                    anyhow::bail!("use `jumpstarter admin apply -f FILE` to create a policy")
                }
            };
            let created = format!("{}/{name} created", kind.resource());
            match out {
                Some(path) => {
                    // It holds a token: owner only, also when the file exists.
                    private_file::write(&path, yaml.as_bytes())?;
                    writeln!(stdout, "{created}")?;
                    eprintln!("configuration written to {}", path.display());
                }
                None => {
                    // stdout is the configuration (`> alice.yaml` must stay valid YAML).
                    stdout.write_all(yaml.as_bytes())?;
                    eprintln!("{created}");
                }
            }
        }
        AdminCommand::CreateLease { order, output } => {
            let lease = backend.create_lease(&order).await?;
            match output {
                Some(output) => stdout.write_all(
                    lease
                        .render(output, true, OffsetDateTime::now_utc())?
                        .as_bytes(),
                )?,
                None => {
                    for name in lease.names() {
                        writeln!(stdout, "{}/{name} created", Kind::Lease.resource())?;
                    }
                }
            }
        }
        AdminCommand::Get {
            kind,
            name,
            output,
            selector,
        } => {
            let (mut objects, single) = match &name {
                Some(name) => (backend.get(kind, name).await?, true),
                None => (backend.list(kind).await?, false),
            };
            if let Some(selector) = &selector {
                objects.retain_matching(selector);
            }
            if objects.is_empty() && output == OutputFormat::Table {
                eprintln!("No {} found.", kind.plural());
            } else {
                let text = objects.render(output, single, OffsetDateTime::now_utc())?;
                stdout.write_all(text.as_bytes())?;
            }
        }
        AdminCommand::Delete {
            kind,
            name,
            ignore_not_found,
        } => {
            if backend.delete(kind, &name, ignore_not_found).await? {
                writeln!(stdout, "{}/{name} deleted", kind.resource())?;
            }
        }
        AdminCommand::Apply { .. } => {
            let manifest = manifest.unwrap_or_default();
            for applied in backend.apply(&manifest, target.namespace.is_some()).await? {
                writeln!(stdout, "{applied}")?;
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

/// The text of `file`, or of stdin for `-`.
fn read_manifest(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the manifest from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))
}
