//! Children's log files: `<data>/logs/<id>.log`, appended to by the child itself (a file, not a
//! pipe, so a child never dies of SIGPIPE when the launcher does). Rotation is by size with
//! copy-and-truncate, because the child keeps writing through its own descriptor (opened with
//! O_APPEND, so it goes on at the new end); lines written between the copy and the truncate can
//! be lost, which is the price of never touching the child's descriptor.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use super::spawn::log_path;
use crate::reconcile::ProcessId;

/// Most bytes read at once when tailing or following a log.
const MAX_READ: u64 = 4 * 1024 * 1024;

/// The rotated file number `n` of a log: `<id>.log.<n>`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates the log of `id` when it is larger than `max_bytes`, keeping at most `max_files`
/// rotated files (`.1` the newest). Returns whether it rotated.
pub fn rotate_if_needed(
    dir: &Path,
    id: &ProcessId,
    max_bytes: u64,
    max_files: u32,
) -> io::Result<bool> {
    let path = log_path(dir, id);
    let size = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if size <= max_bytes || max_files == 0 {
        return Ok(false);
    }
    for n in (1..max_files).rev() {
        let from = rotated(&path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(&path, n + 1))?;
        }
    }
    std::fs::copy(&path, rotated(&path, 1))?;
    OpenOptions::new().write(true).open(&path)?.set_len(0)?;
    Ok(true)
}

/// The last `lines` lines of the log of `id` (all of it when `None`, at most `MAX_READ`
/// bytes), and the offset just after them, to follow from.
pub fn tail(dir: &Path, id: &ProcessId, lines: Option<usize>) -> io::Result<(Vec<u8>, u64)> {
    let mut file = File::open(log_path(dir, id))?;
    let size = file.metadata()?.len();
    let start = size.saturating_sub(MAX_READ);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    let end = start + bytes.len() as u64;
    if let Some(lines) = lines {
        // Keep what follows the `lines + 1`-th newline from the end (a last line without a
        // newline counts as a line).
        let trailing = usize::from(bytes.last().is_some_and(|byte| *byte == b'\n'));
        let cut = bytes
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, byte)| **byte == b'\n')
            .nth(lines.saturating_add(trailing).saturating_sub(1))
            .map_or(0, |(index, _)| index + 1);
        bytes.drain(..cut);
    }
    Ok((bytes, end))
}

/// What the log of `id` holds after `offset` (at most `MAX_READ` bytes), and the new offset.
/// A file shorter than `offset` was rotated: it is read from its start.
pub fn read_from(dir: &Path, id: &ProcessId, offset: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut file = File::open(log_path(dir, id))?;
    let size = file.metadata()?.len();
    let start = if size < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    let end = start + bytes.len() as u64;
    Ok((bytes, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ProcessId {
        ProcessId::new("chatty").unwrap()
    }

    #[test]
    fn tail_keeps_the_last_lines_and_follow_reads_what_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path(), &id()), "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail(dir.path(), &id(), Some(2)).unwrap().0, b"two\nthree\n");
        assert_eq!(
            tail(dir.path(), &id(), Some(10)).unwrap().0,
            b"one\ntwo\nthree\n"
        );
        let (all, offset) = tail(dir.path(), &id(), None).unwrap();
        assert_eq!((all.len() as u64), offset);
        let mut file = OpenOptions::new()
            .append(true)
            .open(log_path(dir.path(), &id()))
            .unwrap();
        std::io::Write::write_all(&mut file, b"four").unwrap();
        assert_eq!(tail(dir.path(), &id(), Some(1)).unwrap().0, b"four");
        assert_eq!(read_from(dir.path(), &id(), offset).unwrap().0, b"four");
    }

    #[test]
    fn rotation_is_by_size_bounded_in_files_and_followers_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), &id());
        for round in 0..5 {
            std::fs::write(&path, format!("round {round} {}\n", "x".repeat(100))).unwrap();
            assert!(
                rotate_if_needed(dir.path(), &id(), 50, 3).unwrap(),
                "round {round}"
            );
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                0,
                "truncated in place"
            );
        }
        assert!(rotated(&path, 1).exists() && rotated(&path, 3).exists());
        assert!(!rotated(&path, 4).exists(), "at most three rotated files");
        assert!(std::fs::read_to_string(rotated(&path, 1))
            .unwrap()
            .starts_with("round 4"));
        assert!(
            !rotate_if_needed(dir.path(), &id(), 50, 3).unwrap(),
            "small enough now"
        );
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(
            read_from(dir.path(), &id(), 1000).unwrap(),
            (b"new\n".to_vec(), 4)
        );
    }
}
