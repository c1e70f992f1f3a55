//! The spec directory written for `apply` and `delete`: what operators declare stays in one
//! place, the directory, so the launcher writes and removes files in it and the spec watcher
//! applies them exactly as it applies an operator's own edits (`apply` then `ls specs/` agree).
//!
//! Names never come from a request: a new process's file is named after its validated id
//! (`applied-<id>.yaml`), and an existing one is the file the store records as its owner, which
//! the watcher found in the directory. A write is atomic (a hidden temporary file in the same
//! directory, written, fsynced, renamed over the name, and the directory fsynced), so the
//! watcher never reads half a file and a crash leaves the old file or the new one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::spec_dir::is_spec_file_name;
use super::spec_file::{read_bounded_text, MAX_SPEC_FILE_BYTES};
use crate::reconcile::ProcessId;

/// How the files `apply` makes for new processes begin, so that `ls` tells them from files an
/// operator wrote, and a repository can ignore them (`examples/desired-state/applied-*.yaml`).
pub const APPLIED_FILE_PREFIX: &str = "applied-";

/// The mode of a spec file `apply` creates: spec files may hold credentials
/// (`connectionString`), so they are the launcher's user's only. A file replaced keeps its mode.
const NEW_FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum SpecDirWriteError {
    #[error("{} is not a spec file directly in the spec directory {}", path.display(), dir.display())]
    NotInDirectory { path: PathBuf, dir: PathBuf },
    #[error(
        "{} is a symbolic link; the launcher replaces only regular files: edit the file it points \
         to, or remove the link",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("the text is {len} bytes; a spec file may be at most {MAX_SPEC_FILE_BYTES} bytes")]
    TooLarge { len: usize },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The file of `dir` that `apply` declares a new process `id` in: `applied-<id>.yaml`. A
/// process id has no `/` and does not start with `.`, so this is one plain, visible name.
pub fn applied_file(dir: &Path, id: &ProcessId) -> PathBuf {
    dir.join(format!("{APPLIED_FILE_PREFIX}{id}.yaml"))
}

/// Whether `path` holds exactly `text` now (then there is nothing to write).
pub fn holds_text(path: &Path, text: &str) -> bool {
    read_bounded_text(path, MAX_SPEC_FILE_BYTES).is_ok_and(|held| held == text)
}

/// Makes `path`, a spec file directly in `dir`, hold `text`: atomically, through a hidden
/// temporary file beside it (which the watcher ignores), fsynced before and after its rename.
pub fn write_spec_file(dir: &Path, path: &Path, text: &str) -> Result<(), SpecDirWriteError> {
    check_in_directory(dir, path)?;
    if text.len() as u64 > MAX_SPEC_FILE_BYTES {
        return Err(SpecDirWriteError::TooLarge { len: text.len() });
    }
    let failed = |source| SpecDirWriteError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mode = match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            return Err(SpecDirWriteError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Ok(metadata) if !metadata.is_file() => {
            return Err(SpecDirWriteError::NotRegular {
                path: path.to_path_buf(),
            })
        }
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(error) if error.kind() == io::ErrorKind::NotFound => NEW_FILE_MODE,
        Err(error) => return Err(failed(error)),
    };
    let (temporary, mut file) = create_temporary(dir, path, mode).map_err(failed)?;
    let written = file
        .write_all(text.as_bytes())
        // The umask applied at creation; the mode is set as meant.
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(error));
    }
    sync_directory(dir).map_err(failed)
}

/// Removes `path`, a spec file directly in `dir` (a symbolic link there is removed itself,
/// not what it points to), and makes the removal durable.
pub fn remove_spec_file(dir: &Path, path: &Path) -> Result<(), SpecDirWriteError> {
    check_in_directory(dir, path)?;
    let failed = |source| SpecDirWriteError::Remove {
        path: path.to_path_buf(),
        source,
    };
    std::fs::remove_file(path).map_err(failed)?;
    sync_directory(dir).map_err(failed)
}

/// Refuses a path that is not a spec file's name directly in `dir`: every path written or
/// removed is one the launcher made from an id or found in the directory itself, and this
/// keeps it so.
fn check_in_directory(dir: &Path, path: &Path) -> Result<(), SpecDirWriteError> {
    let direct = path.parent() == Some(dir)
        && path
            .file_name()
            .is_some_and(|name| name != ".." && name != ".");
    if direct && is_spec_file_name(path) {
        Ok(())
    } else {
        Err(SpecDirWriteError::NotInDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    }
}

/// A new hidden file beside `path` (`.<name>.<pid>.<n>.tmp`), created exclusively (never an
/// existing file, nor through a symbolic link).
fn create_temporary(dir: &Path, path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temporary = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temporary)
        {
            Ok(file) => return Ok((temporary, file)),
            // Left by a launcher that died mid-write with the same pid: take the next number.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
}

/// fsync of a directory, so that a rename or a removal in it survives a crash.
fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_process_gets_a_private_file_named_after_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = ProcessId::new("ns:tenant-a:sleeper").unwrap();
        let path = applied_file(dir.path(), &id);
        assert_eq!(path, dir.path().join("applied-ns:tenant-a:sleeper.yaml"));
        write_spec_file(dir.path(), &path, "text\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "text\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(holds_text(&path, "text\n") && !holds_text(&path, "other\n"));
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_a_symlink_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hand-written.yaml");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_spec_file(dir.path(), &path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );

        let target = dir.path().join("elsewhere.txt");
        std::fs::write(&target, "kept\n").unwrap();
        let link = dir.path().join("linked.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = write_spec_file(dir.path(), &link, "new\n").unwrap_err();
        assert!(
            matches!(error, SpecDirWriteError::Symlink { .. }),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");
        // Removing the link removes the link only.
        remove_spec_file(dir.path(), &link).unwrap();
        assert!(!link.exists() && target.exists());
    }

    #[test]
    fn only_spec_files_directly_in_the_directory_are_written_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for path in [
            dir.path().join("sub/x.yaml"),
            dir.path().join("../x.yaml"),
            dir.path().join(".hidden.yaml"),
            dir.path().join("notes.txt"),
            PathBuf::from("/etc/x.yaml"),
        ] {
            assert!(
                matches!(
                    write_spec_file(dir.path(), &path, "x\n"),
                    Err(SpecDirWriteError::NotInDirectory { .. })
                ),
                "{}",
                path.display()
            );
            assert!(
                matches!(
                    remove_spec_file(dir.path(), &path),
                    Err(SpecDirWriteError::NotInDirectory { .. })
                ),
                "{}",
                path.display()
            );
        }
        let too_large = "x".repeat(MAX_SPEC_FILE_BYTES as usize + 1);
        assert!(matches!(
            write_spec_file(dir.path(), &dir.path().join("big.yaml"), &too_large),
            Err(SpecDirWriteError::TooLarge { .. })
        ));
    }
}
