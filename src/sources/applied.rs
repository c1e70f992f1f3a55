//! The spec directory written for `apply` and `delete`: what operators declare stays in one
//! place, the directory, so the launcher writes and removes files in it and the spec watcher
//! applies them exactly as it applies an operator's own edits (`apply` then `ls specs/` agree).
//!
//! Names never come from a request: a new process's file is named after its validated id
//! (`applied-<id>.yaml`), and an existing one is the file the store records as its owner, which
//! the watcher found in the directory. A write is atomic (a hidden temporary file in the same
//! directory, written, fsynced, renamed over the name, and the directory fsynced), so the
//! watcher never reads half a file and a crash leaves the old file or the new one. The temporary
//! file has a fixed name (`.prism-apply.<pid>.<n>.tmp`), never one made from the target's, so a
//! long name can be replaced too; one a crash left behind (it may hold credentials) is removed
//! at the launcher's next start (`remove_leftover_temporaries`).

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

/// How the temporary files of a write begin: hidden (the watcher ignores them) and the same
/// for every target, whatever its name's length.
const TEMPORARY_PREFIX: &str = ".prism-apply.";

/// How the temporary files of a write end.
const TEMPORARY_SUFFIX: &str = ".tmp";

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
    /// The spec directory refuses the launcher's writes (permissions, a read-only mount): the
    /// operator's to change, not the launcher's failure.
    #[error(
        "cannot {action} {} ({error}): the launcher's user may not change the spec directory {}; \
         make it writable for that user (or mount it read-write), or edit the directory by hand",
        path.display(),
        dir.display()
    )]
    NotWritable {
        action: SpecDirAction,
        path: PathBuf,
        dir: PathBuf,
        error: io::Error,
    },
    /// The change is made (the file renamed into place, or removed), but the fsync of the
    /// directory that makes it survive a crash of the host failed.
    #[error(
        "{} is {done}, but may not be durable: the fsync of the spec directory {} failed; the \
         spec watcher applies it, but a crash of the host may undo it",
        path.display(),
        dir.display()
    )]
    NotDurable {
        done: &'static str,
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What was done to a spec file, for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecDirAction {
    Write,
    Remove,
}

impl std::fmt::Display for SpecDirAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpecDirAction::Write => "write",
            SpecDirAction::Remove => "remove",
        })
    }
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
    let failed = |source| io_failure(SpecDirAction::Write, dir, path, source);
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
    let (temporary, mut file) = create_temporary(dir, mode).map_err(failed)?;
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
    sync_directory(dir).map_err(|source| SpecDirWriteError::NotDurable {
        done: "written",
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    })
}

/// Removes `path`, a spec file directly in `dir` (a symbolic link there is removed itself,
/// not what it points to), and makes the removal durable. A file already gone is removed: what
/// the caller wanted holds.
pub fn remove_spec_file(dir: &Path, path: &Path) -> Result<(), SpecDirWriteError> {
    check_in_directory(dir, path)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_failure(SpecDirAction::Remove, dir, path, error)),
    }
    sync_directory(dir).map_err(|source| SpecDirWriteError::NotDurable {
        done: "removed",
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    })
}

/// Removes the temporary files of writes that a launcher killed mid-write left in `dir` (they
/// may hold credentials), at start, before any write of this run; returns how many. The spec
/// directory is one launcher's (it is the one truth of what that launcher runs), so every
/// temporary file in it is a dead write of this launcher's.
pub fn remove_leftover_temporaries(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if is_temporary_name(name) && entry.file_type()?.is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(removed)
}

/// Whether `name` is one `create_temporary` makes: `.prism-apply.<pid>.<n>.tmp`.
fn is_temporary_name(name: &str) -> bool {
    name.strip_prefix(TEMPORARY_PREFIX)
        .and_then(|rest| rest.strip_suffix(TEMPORARY_SUFFIX))
        .and_then(|numbers| numbers.split_once('.'))
        .is_some_and(|(pid, n)| {
            [pid, n]
                .iter()
                .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
        })
}

/// The error of an `action` on `path` in `dir` that failed with `source`: a directory the
/// launcher may not change is named as such, with what to do.
fn io_failure(
    action: SpecDirAction,
    dir: &Path,
    path: &Path,
    source: io::Error,
) -> SpecDirWriteError {
    match (source.kind(), action) {
        (io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem, _) => {
            SpecDirWriteError::NotWritable {
                action,
                path: path.to_path_buf(),
                dir: dir.to_path_buf(),
                error: source,
            }
        }
        (_, SpecDirAction::Remove) => SpecDirWriteError::Remove {
            path: path.to_path_buf(),
            source,
        },
        (_, SpecDirAction::Write) => SpecDirWriteError::Write {
            path: path.to_path_buf(),
            source,
        },
    }
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

/// A new hidden file in `dir` (`.prism-apply.<pid>.<n>.tmp`: a fixed name, so that any target
/// name that fits the directory fits it too), created exclusively (never an existing file, nor
/// through a symbolic link).
fn create_temporary(dir: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temporary = dir.join(format!(
            "{TEMPORARY_PREFIX}{}.{n}{TEMPORARY_SUFFIX}",
            std::process::id()
        ));
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

    #[test]
    fn a_file_already_gone_is_removed_without_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.yaml");
        remove_spec_file(dir.path(), &path).unwrap();
        std::fs::write(&path, "x\n").unwrap();
        remove_spec_file(dir.path(), &path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_long_name_is_replaced_through_a_temporary_file_of_a_fixed_name() {
        let dir = tempfile::tempdir().unwrap();
        // 250 bytes: the longest a file name may be is 255, so a temporary name built from it
        // would not fit.
        let path = dir.path().join(format!("{}.yaml", "a".repeat(245)));
        std::fs::write(&path, "old\n").unwrap();
        write_spec_file(dir.path(), &path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    }

    #[test]
    fn the_temporary_files_a_crash_left_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            ".prism-apply.4242.0.tmp",
            ".prism-apply.4242.17.tmp",
            ".prism-apply.x.0.tmp",
            ".prism-apply.4242.tmp",
            ".hand.yaml.4242.0.tmp",
            "spec.yaml",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), "connectionString: secret\n").unwrap();
        }
        std::fs::create_dir(dir.path().join(".prism-apply.1.1.tmp")).unwrap();
        assert_eq!(remove_leftover_temporaries(dir.path()).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".hand.yaml.4242.0.tmp",
                ".prism-apply.1.1.tmp",
                ".prism-apply.4242.tmp",
                ".prism-apply.x.0.tmp",
                "spec.yaml"
            ]
        );
        // A write leaves none of its own.
        write_spec_file(dir.path(), &dir.path().join("spec.yaml"), "y\n").unwrap();
        assert_eq!(remove_leftover_temporaries(dir.path()).unwrap(), 0);
    }

    #[test]
    fn a_directory_the_launcher_may_not_change_is_named_as_such() {
        let dir = Path::new("/specs");
        let path = Path::new("/specs/a.yaml");
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::ReadOnlyFilesystem,
        ] {
            let error = io_failure(SpecDirAction::Write, dir, path, io::Error::from(kind));
            assert!(
                matches!(error, SpecDirWriteError::NotWritable { .. }),
                "{error}"
            );
            let message = error.to_string();
            assert!(
                message.contains("cannot write /specs/a.yaml")
                    && message.contains("make it writable"),
                "{message}"
            );
        }
        let other = io_failure(
            SpecDirAction::Remove,
            dir,
            path,
            io::Error::from(io::ErrorKind::StorageFull),
        );
        assert!(matches!(other, SpecDirWriteError::Remove { .. }), "{other}");
    }
}
