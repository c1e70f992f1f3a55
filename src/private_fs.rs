//! The launcher's private files: the data directory and what it holds (the store, whose records
//! carry backend credentials, and the children's logs) are readable by the launcher's own user
//! only. Directories are 0700 (0710 for the data directory when a socket group needs to reach
//! the Unix socket inside it: traverse, not list), files 0600.
//!
//! The permissions are the protection of the credentials at rest; ARCHITECTURE.md says why they
//! are not encrypted as well.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of a private directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The mode of the data directory when members of a socket group may reach the socket in it:
/// they can open a name they know, and cannot list or read anything else.
pub const GROUP_TRAVERSE_DIR_MODE: u32 = 0o710;

/// The mode of a private file.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum PrivateFsError {
    #[error("cannot create the directory {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the permissions of {}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} (mode {mode:o}) belongs to uid {owner}, not to this launcher's uid {own}, who would \
         keep its store and logs there: chown it to the launcher's user or choose another \
         --data-dir",
        path.display()
    )]
    ForeignOwner {
        path: PathBuf,
        mode: u32,
        owner: u32,
        own: u32,
    },
    #[error("cannot make {} private (chmod {mode:o})", path.display())]
    Tighten {
        path: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
}

/// What `ensure_private_dir` did to a directory that was there before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// Created, or already as private as asked.
    Private,
    /// Found open to other users (the mode it had), and tightened.
    Tightened { was: u32 },
}

/// Creates `path` (and its parents) with `mode` (one of `PRIVATE_DIR_MODE`,
/// `GROUP_TRAVERSE_DIR_MODE`), or tightens an existing one that grants more than `mode`. A
/// directory of another user is refused rather than taken over.
pub fn ensure_private_dir(path: &Path, mode: u32) -> Result<DirState, PrivateFsError> {
    match DirBuilder::new().recursive(true).mode(mode).create(path) {
        Ok(()) => {}
        Err(source) => {
            return Err(PrivateFsError::Create {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let metadata = std::fs::metadata(path).map_err(|source| PrivateFsError::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(PrivateFsError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    let current = metadata.mode() & 0o7777;
    // Whoever owns the directory can replace what is in it (the store, a symlink for a log), so
    // it must be the launcher's user, private or not.
    let own = nix::unistd::geteuid().as_raw();
    if metadata.uid() != own {
        return Err(PrivateFsError::ForeignOwner {
            path: path.to_path_buf(),
            mode: current,
            owner: metadata.uid(),
            own,
        });
    }
    if current & !mode == 0 {
        return Ok(DirState::Private);
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| {
        PrivateFsError::Tighten {
            path: path.to_path_buf(),
            mode,
            source,
        }
    })?;
    Ok(DirState::Tightened { was: current })
}

/// Opens `path` for appending, creating it 0600 (an existing file keeps its mode: the directory
/// it is in is what keeps it private).
pub fn open_private_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

/// Writes `contents` to `path`, replacing it, as a 0600 file.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    // A file that existed keeps its old mode through `open`; it is tightened here.
    file.set_permissions(Permissions::from_mode(PRIVATE_FILE_MODE))?;
    file.write_all(contents)
}

/// Makes every file below `dir` 0600 and every directory 0700 (for what a library created with
/// the default umask, such as the store's files).
pub fn tighten_tree(dir: &Path) -> io::Result<()> {
    std::fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR_MODE))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            tighten_tree(&entry.path())?;
        } else if file_type.is_file() {
            std::fs::set_permissions(entry.path(), Permissions::from_mode(PRIVATE_FILE_MODE))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_is_private_and_an_open_one_of_ours_is_tightened() {
        let temp = tempfile::tempdir().unwrap();
        let fresh = temp.path().join("a/b");
        assert_eq!(
            ensure_private_dir(&fresh, PRIVATE_DIR_MODE).unwrap(),
            DirState::Private
        );
        assert_eq!(mode(&fresh), 0o700);

        let open = temp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            ensure_private_dir(&open, PRIVATE_DIR_MODE).unwrap(),
            DirState::Tightened { was: 0o755 }
        );
        assert_eq!(mode(&open), 0o700);

        // Narrower than asked is left alone.
        std::fs::set_permissions(&open, Permissions::from_mode(0o500)).unwrap();
        assert_eq!(
            ensure_private_dir(&open, PRIVATE_DIR_MODE).unwrap(),
            DirState::Private
        );
        std::fs::set_permissions(&open, Permissions::from_mode(0o700)).unwrap();

        let group = temp.path().join("group");
        std::fs::create_dir(&group).unwrap();
        std::fs::set_permissions(&group, Permissions::from_mode(0o750)).unwrap();
        assert_eq!(
            ensure_private_dir(&group, GROUP_TRAVERSE_DIR_MODE).unwrap(),
            DirState::Tightened { was: 0o750 }
        );
        assert_eq!(mode(&group), 0o710);
    }

    #[test]
    fn a_directory_of_another_user_is_refused_even_when_private() {
        let temp = tempfile::tempdir().unwrap();
        let theirs = temp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, Permissions::from_mode(0o700)).unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        if let Err(error) = nix::unistd::chown(&theirs, Some(nobody), None) {
            // Only root can give a directory away; as anyone else the case cannot be set up.
            assert_ne!(nix::unistd::geteuid().as_raw(), 0, "{error}");
            return;
        }
        let error = ensure_private_dir(&theirs, PRIVATE_DIR_MODE).unwrap_err();
        assert!(
            error.to_string().contains("belongs to uid 65534"),
            "{error}"
        );
        assert_eq!(mode(&theirs), 0o700);
    }

    #[test]
    fn a_file_where_a_directory_should_be_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let error = ensure_private_dir(&file, PRIVATE_DIR_MODE).unwrap_err();
        assert!(matches!(error, PrivateFsError::Create { .. }), "{error:?}");
    }

    #[test]
    fn files_are_created_and_rewritten_private_and_a_tree_is_tightened() {
        let temp = tempfile::tempdir().unwrap();
        let appended = temp.path().join("log");
        open_private_append(&appended).unwrap();
        assert_eq!(mode(&appended), 0o600);

        let written = temp.path().join("addr");
        std::fs::write(&written, "old").unwrap();
        std::fs::set_permissions(&written, Permissions::from_mode(0o644)).unwrap();
        write_private(&written, b"new").unwrap();
        assert_eq!(mode(&written), 0o600);
        assert_eq!(std::fs::read(&written).unwrap(), b"new");

        let tree = temp.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/db"), "").unwrap();
        std::fs::set_permissions(tree.join("sub"), Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(tree.join("sub/db"), Permissions::from_mode(0o644)).unwrap();
        tighten_tree(&tree).unwrap();
        assert_eq!(mode(&tree), 0o700);
        assert_eq!(mode(&tree.join("sub")), 0o700);
        assert_eq!(mode(&tree.join("sub/db")), 0o600);
    }
}
