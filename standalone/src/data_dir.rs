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

    /// Creates the directory (owner-only when new).
    pub(crate) fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
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
    fn an_explicit_directory_wins_and_is_repeated_in_hints() {
        let d = DataDir::resolve(Some(Path::new("/srv/js")), Some("/x"), Some("/h")).unwrap();
        assert_eq!(d.admin_socket(), Path::new("/srv/js/admin.sock"));
        assert_eq!(d.flag_hint(), " --data-dir /srv/js");
    }
}
