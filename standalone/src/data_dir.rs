//! The data directory of a standalone service: where it is by default and what it holds.

use std::path::{Path, PathBuf};

/// The object store file.
pub(crate) const STATE_FILE: &str = "state.redb";
/// The admin API socket of the running service.
pub(crate) const ADMIN_SOCKET: &str = "admin.sock";

/// A data directory (which may not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataDir {
    path: PathBuf,
    /// Whether it was given explicitly (so hints must repeat `--data-dir`).
    explicit: bool,
}

/// Why no data directory could be chosen.
#[derive(Debug, thiserror::Error)]
#[error(
    "no data directory: neither XDG_DATA_HOME nor HOME is set; pass --data-dir or set JUMPSTARTER_DATA_DIR"
)]
pub(crate) struct NoDataDir;

impl DataDir {
    /// `given`, else `$XDG_DATA_HOME/jumpstarter`, else `$HOME/.local/share/jumpstarter`.
    pub(crate) fn resolve(
        given: Option<&Path>,
        xdg_data_home: Option<&str>,
        home: Option<&str>,
    ) -> Result<DataDir, NoDataDir> {
        if let Some(path) = given {
            return Ok(DataDir {
                path: path.to_owned(),
                explicit: true,
            });
        }
        // The XDG spec says to ignore relative values.
        let base = match (xdg_data_home, home) {
            (Some(xdg), _) if Path::new(xdg).is_absolute() => PathBuf::from(xdg),
            (_, Some(home)) if !home.is_empty() => Path::new(home).join(".local/share"),
            _ => return Err(NoDataDir),
        };
        Ok(DataDir {
            path: base.join("jumpstarter"),
            explicit: false,
        })
    }

    /// From the process environment.
    pub(crate) fn from_env(given: Option<&Path>) -> Result<DataDir, NoDataDir> {
        let xdg = std::env::var("XDG_DATA_HOME").ok();
        let home = std::env::var("HOME").ok();
        DataDir::resolve(given, xdg.as_deref(), home.as_deref())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn state_file(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    /// The dashboard's credential (made at the first start).
    pub(crate) fn dashboard_token(&self) -> PathBuf {
        self.path().join("dashboard-token")
    }

    pub(crate) fn admin_socket(&self) -> PathBuf {
        self.path.join(ADMIN_SOCKET)
    }

    /// ` --data-dir DIR` when the directory is not the default one, for printed hints.
    pub(crate) fn flag_hint(&self) -> String {
        if self.explicit {
            format!(" --data-dir {}", self.path.display())
        } else {
            String::new()
        }
    }

    /// Creates the directory, or takes an existing one, and makes it the running user's
    /// alone (mode 0700): it holds the CA key and the admin socket. Refuses a directory
    /// another user owns.
    pub(crate) fn prepare(&self) -> Result<(), DataDirError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let path = self.path.clone();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_MODE)
            .create(&path)
            .map_err(|source| DataDirError::Create {
                path: path.clone(),
                source,
            })?;
        let meta = std::fs::metadata(&path).map_err(|source| DataDirError::Create {
            path: path.clone(),
            source,
        })?;
        match access_fix(meta.uid(), meta.mode(), nix::unistd::getuid().as_raw()) {
            AccessFix::None => Ok(()),
            AccessFix::Restrict => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(PRIVATE_MODE))
                    .map_err(|source| DataDirError::Restrict {
                        path: path.clone(),
                        mode: meta.mode() & 0o7777,
                        source,
                    })?;
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.mode() & 0o7777),
                    "the data directory was open to others; restricted it to mode 700"
                );
                Ok(())
            }
            AccessFix::Refuse { owner, uid } => {
                Err(DataDirError::ForeignOwner { path, owner, uid })
            }
        }
    }
}

/// Mode of the data directory: owner only.
const PRIVATE_MODE: u32 = 0o700;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DataDirError {
    #[error("cannot create the data directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data directory {} has mode {mode:o} and cannot be restricted to 700: {source}",
        path.display()
    )]
    Restrict {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data directory {} belongs to uid {owner}, not to uid {uid} that runs the service; \
         run the service as its owner or pass another --data-dir",
        path.display()
    )]
    ForeignOwner { path: PathBuf, owner: u32, uid: u32 },
}

/// What a data directory owned by `owner` with `mode` needs before the process running as
/// `uid` uses it.
#[derive(Debug, PartialEq, Eq)]
enum AccessFix {
    None,
    /// Open to group or others: chmod 700.
    Restrict,
    /// Another user's: refuse (even root would hand its secrets to that user).
    Refuse {
        owner: u32,
        uid: u32,
    },
}

fn access_fix(owner: u32, mode: u32, uid: u32) -> AccessFix {
    if owner != uid {
        AccessFix::Refuse { owner, uid }
    } else if mode & 0o7777 != PRIVATE_MODE {
        AccessFix::Restrict
    } else {
        AccessFix::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_xdg() {
        let d = DataDir::resolve(None, Some("/x/data"), Some("/home/u")).unwrap();
        assert_eq!(d.path(), Path::new("/x/data/jumpstarter"));
        assert_eq!(d.flag_hint(), "");
        let d = DataDir::resolve(None, Some("relative"), Some("/home/u")).unwrap();
        assert_eq!(d.path(), Path::new("/home/u/.local/share/jumpstarter"));
        let d = DataDir::resolve(None, None, Some("/home/u")).unwrap();
        assert_eq!(
            d.state_file(),
            Path::new("/home/u/.local/share/jumpstarter/state.redb")
        );
        assert!(DataDir::resolve(None, None, None).is_err());
    }

    #[test]
    fn only_the_owner_may_use_it_and_only_alone() {
        assert_eq!(access_fix(1000, 0o40700, 1000), AccessFix::None);
        assert_eq!(access_fix(1000, 0o40755, 1000), AccessFix::Restrict);
        assert_eq!(access_fix(1000, 0o41777, 1000), AccessFix::Restrict);
        assert_eq!(access_fix(0, 0o40500, 0), AccessFix::Restrict);
        assert_eq!(
            access_fix(1000, 0o40700, 0),
            AccessFix::Refuse {
                owner: 1000,
                uid: 0
            }
        );
    }

    #[test]
    fn an_explicit_directory_wins_and_is_repeated_in_hints() {
        let d = DataDir::resolve(Some(Path::new("/srv/js")), Some("/x"), Some("/h")).unwrap();
        assert_eq!(d.admin_socket(), Path::new("/srv/js/admin.sock"));
        assert_eq!(d.flag_hint(), " --data-dir /srv/js");
    }
}
