//! Files only their owner may read: keys, tokens, configurations holding a token.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Read and write for the owner, nothing for anyone else.
pub const MODE: u32 = 0o600;

/// Why a private file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("restrict the permissions of {}", path.display())]
    Restrict {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `contents` to `path` (created or truncated) with mode [`MODE`]. An existing file
/// keeps its mode when opened, so it is restricted before anything is written to it.
pub fn write(path: &Path, contents: &[u8]) -> Result<(), PrivateFileError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(MODE)
        .open(path)
        .map_err(|source| PrivateFileError::Open {
            path: path.to_owned(),
            source,
        })?;
    // The descriptor, not the path: the mode lands on the file just opened.
    file.set_permissions(std::fs::Permissions::from_mode(MODE))
        .map_err(restrict_failed(path))?;
    file.write_all(contents)
        .map_err(|source| PrivateFileError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Sets mode [`MODE`] on an existing file (e.g. one another library created).
pub fn restrict(path: &Path) -> Result<(), PrivateFileError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))
        .map_err(restrict_failed(path))
}

fn restrict_failed(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateFileError + '_ {
    |source| PrivateFileError::Restrict {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_new_file_is_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tls.key");
        write(&path, b"secret").expect("write");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
    }

    #[test]
    fn an_existing_world_readable_file_is_rewritten_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tls.key");
        std::fs::write(&path, b"an older and longer key").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(mode(&path), 0o644);
        write(&path, b"new key").expect("write");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"new key");
    }

    #[test]
    fn restrict_changes_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        std::fs::write(&path, b"x").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        restrict(&path).expect("restrict");
        assert_eq!(mode(&path), 0o600);
    }
}
