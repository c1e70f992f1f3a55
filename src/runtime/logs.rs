//! Children's log files: `<data>/logs/<id>.log`, appended to by the child itself (a file, not a
//! pipe, so a child never dies of SIGPIPE when the launcher does). Rotation is by size with
//! copy-and-truncate, because the child keeps writing through its own descriptor (opened with
//! O_APPEND, so it goes on at the new end); lines written between the copy and the truncate can
//! be lost, which is the price of never touching the child's descriptor.
//!
//! Each instance's output is preceded by a marker line (`MARKER_PREFIX`: when it started, its
//! pid, generation and instance id), which the child writes itself between its clone and its
//! exec, so that it comes before anything the program prints. Readers split the log on them:
//! `--previous` is the output between the last two markers, and `--since` keeps the instances
//! that ran within the window, both read across the rotated files. The file records no time per
//! line (the children write it themselves, not through the launcher), so an instance is the
//! finest grain of time a reader has. For the same reason a child can print a line that looks
//! like a marker: `LogFiles::markers` drops the ones that cannot be the launcher's, and the rest
//! are taken at their word (a best effort).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::spawn::log_path;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::reconcile::{ProcessId, UnixMillis};

/// How every marker line starts; nothing else is needed to split a log into instances.
pub const MARKER_PREFIX: &str = "=== prism-launcher: instance start ";

/// How a marker line ends.
const MARKER_SUFFIX: &str = " ===";

/// The longest marker line read back (they are about 120 bytes).
const MAX_MARKER_LINE: usize = 256;

/// The most rotated files a reader looks through (`--log-max-files` keeps fewer).
const MAX_ROTATED_FILES: u32 = 1000;

/// What a marker line says of the instance whose output follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub at: UnixMillis,
    pub pid: u32,
    pub generation: u64,
    pub instance: String,
}

/// Which part of a log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// The last this many lines; all (at most `MAX_READ` bytes) when `None`.
    pub lines: Option<usize>,
    /// The previous instance's output (from its marker to the last marker) instead of the
    /// current file.
    pub previous: bool,
    /// Only the instances whose output may have been written at or after this time: an instance
    /// ends where the next one's marker says it started, the last one at the file's
    /// modification time.
    pub since: Option<UnixMillis>,
}

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

/// The marker line of an instance started at `at`, around its pid, which only the child knows
/// (it writes the line itself, before its exec): what goes before the pid, and what after it,
/// newline included.
pub fn marker_around_pid(at: UnixMillis, generation: u64, instance: &str) -> (String, String) {
    (
        format!("{MARKER_PREFIX}at={} pid=", rfc3339(at)),
        format!(" generation={generation} instance={instance}{MARKER_SUFFIX}\n"),
    )
}

/// The marker a log line is (without its newline), if it is one.
pub fn parse_marker(line: &[u8]) -> Option<Marker> {
    let line = std::str::from_utf8(line).ok()?;
    let fields = line
        .trim_end_matches(['\r', '\n'])
        .strip_prefix(MARKER_PREFIX)?
        .strip_suffix(MARKER_SUFFIX)?;
    let mut at = None;
    let mut pid = None;
    let mut generation = None;
    let mut instance = None;
    for field in fields.split(' ') {
        match field.split_once('=')? {
            ("at", value) => at = parse_rfc3339(value),
            ("pid", value) => pid = value.parse().ok(),
            ("generation", value) => generation = value.parse().ok(),
            ("instance", value) => instance = Some(value.to_string()),
            _ => return None,
        }
    }
    Some(Marker {
        at: at?,
        pid: pid?,
        generation: generation?,
        instance: instance?,
    })
}

/// The part of the log of `id` that `selection` asks for, and the offset in the current file
/// after it, to follow from. `None` when `selection.previous` and the log holds no instance
/// before the last one.
pub fn select(
    dir: &Path,
    id: &ProcessId,
    selection: Selection,
) -> io::Result<Option<(Vec<u8>, u64)>> {
    if selection.previous {
        return previous_instance(dir, id, selection);
    }
    if let Some(since) = selection.since {
        return since_instances(dir, id, since, selection.lines).map(Some);
    }
    let mut file = File::open(log_path(dir, id))?;
    let size = file.metadata()?.len();
    let start = size.saturating_sub(MAX_READ);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(size - start).read_to_end(&mut bytes)?;
    let end = start + bytes.len() as u64;
    keep_last_lines(&mut bytes, selection.lines);
    Ok(Some((bytes, end)))
}

/// How much later than its file's last modification a marker's time may be and still be
/// believed: the kernel stamps a write with a coarse clock, up to a few ticks behind the one
/// the launcher read when it started the instance.
const MARKER_CLOCK_SLACK: Duration = Duration::from_secs(1);

/// A place in a log: the file (0 the current one, 1 `.1`, ..., the oldest last) and an offset
/// in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    file: usize,
    offset: u64,
}

impl Place {
    /// Whether `self` comes later in the log than `other` (in a newer file, or further on).
    fn is_after(self, other: Place) -> bool {
        (std::cmp::Reverse(self.file), self.offset) > (std::cmp::Reverse(other.file), other.offset)
    }
}

/// The files of one log, newest first: the current file, then `.1`, `.2`...
struct LogFiles {
    files: Vec<File>,
    sizes: Vec<u64>,
    /// Each file's last modification: nothing in it was written later.
    modified: Vec<Option<UnixMillis>>,
}

impl LogFiles {
    fn open(dir: &Path, id: &ProcessId) -> io::Result<LogFiles> {
        let current = log_path(dir, id);
        let mut files = vec![File::open(&current)?];
        for n in 1..=MAX_ROTATED_FILES {
            match File::open(rotated(&current, n)) {
                Ok(file) => files.push(file),
                Err(error) if error.kind() == io::ErrorKind::NotFound => break,
                Err(error) => return Err(error),
            }
        }
        let mut sizes = Vec::with_capacity(files.len());
        let mut modified = Vec::with_capacity(files.len());
        for file in &files {
            let metadata = file.metadata()?;
            sizes.push(metadata.len());
            modified.push(metadata.modified().ok().map(unix_millis));
        }
        Ok(LogFiles {
            files,
            sizes,
            modified,
        })
    }

    /// Where the log begins: the start of its oldest file.
    fn beginning(&self) -> Place {
        Place {
            file: self.files.len() - 1,
            offset: 0,
        }
    }

    /// Where the log ends: the end of the current file.
    fn end(&self) -> Place {
        Place {
            file: 0,
            offset: self.sizes[0],
        }
    }

    /// The instance markers of the whole log, oldest first, that can be the launcher's.
    ///
    /// A child writes its log itself, so it can print a line that looks like a marker. What
    /// cannot be the launcher's is left out: a marker whose time goes back from the marker
    /// before it (the launcher starts instances one after the other), or that is later than
    /// the last write of its file (it was written before that). A line that passes both is
    /// taken for a marker: instance boundaries are a best effort, as the README says.
    fn markers(&mut self) -> io::Result<Vec<(Place, Marker)>> {
        let mut kept: Vec<(Place, Marker)> = Vec::new();
        for index in (0..self.files.len()).rev() {
            let written_by = self.modified[index].map(|at| at.saturating_add(MARKER_CLOCK_SLACK));
            for (offset, marker) in markers_in(&mut self.files[index], 0, self.sizes[index])? {
                let in_order = kept.last().is_none_or(|(_, last)| marker.at >= last.at);
                let written_before_the_file = written_by.is_none_or(|by| marker.at <= by);
                if in_order && written_before_the_file {
                    kept.push((
                        Place {
                            file: index,
                            offset,
                        },
                        marker,
                    ));
                }
            }
        }
        Ok(kept)
    }

    /// The bytes from `from` to `to` (at most the last `MAX_READ` of them), across the files.
    fn read(&mut self, from: Place, to: Place) -> io::Result<Vec<u8>> {
        // The pieces, oldest first: (file index, from, to).
        let pieces: Vec<(usize, u64, u64)> = (to.file..=from.file)
            .rev()
            .map(|index| {
                let start = if index == from.file { from.offset } else { 0 };
                let end = if index == to.file {
                    to.offset.min(self.sizes[index])
                } else {
                    self.sizes[index]
                };
                (index, start, end.max(start))
            })
            .collect();
        let total: u64 = pieces.iter().map(|(_, from, to)| to - from).sum();
        // Only the end of a long span is read, as for the current file.
        let mut skip = total.saturating_sub(MAX_READ);
        let mut bytes = Vec::new();
        for (index, start, end) in pieces {
            let length = end - start;
            if skip >= length {
                skip -= length;
                continue;
            }
            let file = &mut self.files[index];
            file.seek(SeekFrom::Start(start + skip))?;
            file.take(length - skip).read_to_end(&mut bytes)?;
            skip = 0;
        }
        Ok(bytes)
    }
}

/// The output of the instances that may have written at or after `since`, read across the
/// rotated files: from the marker of the first one that ran into the window (an instance runs
/// until the next marker, the last one until its file's last write) to the end of the current
/// file, leaving out files last written before `since`. At most `MAX_READ` bytes of its end.
fn since_instances(
    dir: &Path,
    id: &ProcessId,
    since: UnixMillis,
    lines: Option<usize>,
) -> io::Result<(Vec<u8>, u64)> {
    let mut log = LogFiles::open(dir, id)?;
    let end = log.end();
    // Files are newest first: the first one last written before `since`, and every older one,
    // hold nothing of the window.
    let stale = (0..log.files.len())
        .find(|index| log.modified[*index].is_some_and(|modified| modified < since));
    let mut start = match stale {
        None => log.beginning(),
        // Nothing was written to the log since then.
        Some(0) => return Ok((Vec::new(), end.offset)),
        Some(index) => Place {
            file: index - 1,
            offset: 0,
        },
    };
    // Instances before the last one that started before `since` ended before it.
    if let Some((place, _)) = log
        .markers()?
        .into_iter()
        .rev()
        .find(|(_, marker)| marker.at < since)
    {
        if place.is_after(start) {
            start = place;
        }
    }
    let mut bytes = log.read(start, end)?;
    keep_last_lines(&mut bytes, lines);
    Ok((bytes, end.offset))
}

/// The output of the instance before the last one: from its marker (or from the start of the
/// oldest file, when the log holds one marker and output before it) to the last marker, read
/// across the rotated files (`<id>.log.1` the newest). At most `MAX_READ` bytes of its end.
fn previous_instance(
    dir: &Path,
    id: &ProcessId,
    selection: Selection,
) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut log = LogFiles::open(dir, id)?;
    let markers = log.markers()?;
    let (start, (end, last)) = match markers.as_slice() {
        [] => return Ok(None),
        [(end, last)] => (log.beginning(), (*end, last)),
        [.., (start, _), (end, last)] => (*start, (*end, last)),
    };
    if selection.since.is_some_and(|since| last.at < since) {
        // It ended when the last instance started, before `since`.
        return Ok(Some((Vec::new(), 0)));
    }
    if !end.is_after(start) {
        return Ok(None);
    }
    let mut bytes = log.read(start, end)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    keep_last_lines(&mut bytes, selection.lines);
    Ok(Some((bytes, 0)))
}

/// The marker lines of `file` between `from` and `to`, in order, with the offset where each
/// line starts. Streams the file: only the first bytes of each line are kept.
fn markers_in(file: &mut File, from: u64, to: u64) -> io::Result<Vec<(u64, Marker)>> {
    file.seek(SeekFrom::Start(from))?;
    let mut reader = BufReader::with_capacity(64 * 1024, (&mut *file).take(to - from));
    let mut markers = Vec::new();
    let mut head: Vec<u8> = Vec::with_capacity(MAX_MARKER_LINE);
    let mut line_start = from;
    let mut offset = from;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        let length = chunk.len();
        let mut rest = chunk;
        while !rest.is_empty() {
            let (line, ended) = match rest.iter().position(|byte| *byte == b'\n') {
                Some(newline) => (&rest[..newline], true),
                None => (rest, false),
            };
            let room = MAX_MARKER_LINE.saturating_sub(head.len());
            head.extend_from_slice(&line[..line.len().min(room)]);
            if ended {
                if let Some(marker) = parse_marker(&head) {
                    markers.push((line_start, marker));
                }
                head.clear();
                let consumed = line.len() + 1;
                offset += consumed as u64;
                line_start = offset;
                rest = &rest[consumed..];
            } else {
                offset += line.len() as u64;
                rest = &[];
            }
        }
        reader.consume(length);
    }
    // A last line without its newline.
    if let Some(marker) = parse_marker(&head) {
        markers.push((line_start, marker));
    }
    Ok(markers)
}

/// Keeps what follows the `lines + 1`-th newline from the end (a last line without a newline
/// counts as a line); everything when `lines` is `None`.
fn keep_last_lines(bytes: &mut Vec<u8>, lines: Option<usize>) {
    let Some(lines) = lines else {
        return;
    };
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

fn unix_millis(time: std::time::SystemTime) -> UnixMillis {
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
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

    fn tail(dir: &Path, lines: Option<usize>) -> Vec<u8> {
        let selection = Selection {
            lines,
            ..Selection::default()
        };
        select(dir, &id(), selection).unwrap().unwrap().0
    }

    fn marker(at: u64, pid: u32, generation: u64) -> String {
        let (before, after) = marker_around_pid(UnixMillis(at), generation, "00000000000000aa");
        format!("{before}{pid}{after}")
    }

    fn previous(dir: &Path, lines: Option<usize>, since: Option<u64>) -> Option<String> {
        let selection = Selection {
            lines,
            previous: true,
            since: since.map(UnixMillis),
        };
        select(dir, &id(), selection)
            .unwrap()
            .map(|(bytes, _)| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn tail_keeps_the_last_lines_and_follow_reads_what_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path(), &id()), "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail(dir.path(), Some(2)), b"two\nthree\n");
        assert_eq!(tail(dir.path(), Some(10)), b"one\ntwo\nthree\n");
        let (all, offset) = select(dir.path(), &id(), Selection::default())
            .unwrap()
            .unwrap();
        assert_eq!((all.len() as u64), offset);
        let mut file = OpenOptions::new()
            .append(true)
            .open(log_path(dir.path(), &id()))
            .unwrap();
        std::io::Write::write_all(&mut file, b"four").unwrap();
        assert_eq!(tail(dir.path(), Some(1)), b"four");
        assert_eq!(read_from(dir.path(), &id(), offset).unwrap().0, b"four");
    }

    #[test]
    fn a_marker_line_is_read_back_and_nothing_else_passes_for_one() {
        let line = marker(1_796_121_599_999, 4242, 3);
        assert_eq!(
            line,
            "=== prism-launcher: instance start at=2026-12-01T10:39:59.999Z pid=4242 \
             generation=3 instance=00000000000000aa ===\n"
        );
        assert_eq!(
            parse_marker(line.as_bytes()),
            Some(Marker {
                at: UnixMillis(1_796_121_599_999),
                pid: 4242,
                generation: 3,
                instance: "00000000000000aa".to_string(),
            })
        );
        for other in [
            "=== prism-launcher: instance start at=2026-12-01T10:39:59.999Z pid=4242 ===",
            "=== prism-launcher: instance start at=yesterday pid=1 generation=1 instance=a ===",
            "=== prism-launcher: instance start at=2026-12-01T10:39:59.999Z pid=1 generation=1 instance=a",
            " === prism-launcher: instance start at=2026-12-01T10:39:59.999Z pid=1 generation=1 instance=a ===",
            "hello",
        ] {
            assert_eq!(parse_marker(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn previous_is_the_output_between_the_last_two_markers_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), &id());
        // Oldest first: .2 has the first instance and the start of the second, .1 the rest of
        // the second, the current file the third.
        std::fs::write(
            rotated(&path, 2),
            format!(
                "{}first\n{}second a\n",
                marker(1000, 1, 1),
                marker(2000, 2, 1)
            ),
        )
        .unwrap();
        std::fs::write(rotated(&path, 1), "second b\nsecond c\n").unwrap();
        std::fs::write(&path, format!("{}third\n", marker(3000, 3, 2))).unwrap();
        assert_eq!(
            previous(dir.path(), None, None).unwrap(),
            format!("{}second a\nsecond b\nsecond c\n", marker(2000, 2, 1))
        );
        assert_eq!(
            previous(dir.path(), Some(2), None).unwrap(),
            "second b\nsecond c\n"
        );
        assert_eq!(
            previous(dir.path(), None, Some(2500)).unwrap(),
            format!("{}second a\nsecond b\nsecond c\n", marker(2000, 2, 1)),
            "the second instance ran until 3000"
        );
        assert_eq!(previous(dir.path(), None, Some(3500)).unwrap(), "");

        // Both markers in the current file.
        std::fs::write(
            &path,
            format!(
                "{}third\n{}fourth\n",
                marker(3000, 3, 2),
                marker(4000, 4, 2)
            ),
        )
        .unwrap();
        assert_eq!(
            previous(dir.path(), None, None).unwrap(),
            format!("{}third\n", marker(3000, 3, 2))
        );
    }

    #[test]
    fn with_one_marker_the_previous_instance_is_what_came_before_it_and_else_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), &id());
        std::fs::write(&path, "no marker at all\n").unwrap();
        assert_eq!(previous(dir.path(), None, None), None);
        std::fs::write(&path, format!("{}only\n", marker(1000, 1, 1))).unwrap();
        assert_eq!(previous(dir.path(), None, None), None);
        std::fs::write(&path, format!("older output\n{}only\n", marker(1000, 1, 1))).unwrap();
        assert_eq!(previous(dir.path(), None, None).unwrap(), "older output\n");
        std::fs::remove_file(&path).unwrap();
        let error = select(
            dir.path(),
            &id(),
            Selection {
                previous: true,
                ..Selection::default()
            },
        )
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn since_keeps_the_instances_that_ran_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), &id());
        let text = format!(
            "{}one\n{}two\n{}three\n",
            marker(1000, 1, 1),
            marker(2000, 2, 1),
            marker(3000, 3, 1)
        );
        std::fs::write(&path, &text).unwrap();
        let since = |at: u64| {
            let selection = Selection {
                since: Some(UnixMillis(at)),
                ..Selection::default()
            };
            String::from_utf8(select(dir.path(), &id(), selection).unwrap().unwrap().0).unwrap()
        };
        // The file was written just now: the last instance runs into the window whatever it is.
        assert_eq!(since(500), text);
        assert_eq!(since(1000), text, "the first instance ran until 2000");
        assert_eq!(
            since(2500),
            format!("{}two\n{}three\n", marker(2000, 2, 1), marker(3000, 3, 1))
        );
        assert_eq!(since(3500), format!("{}three\n", marker(3000, 3, 1)));
        // A window after the file's last write holds nothing.
        let far_future = crate::clock::now().0 + 3_600_000;
        assert_eq!(since(far_future), "");
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

    /// Regression: a child that prints a line looking like a marker split its own output into
    /// instances, hiding the real previous instance and, with a time in the past, the current
    /// output from `--since`.
    #[test]
    fn a_marker_that_goes_back_in_time_or_past_the_last_write_is_a_childs_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), &id());
        let now = crate::clock::now().0;
        let fake_past = marker(500, 99, 7);
        let fake_future = marker(now + 3_600_000, 98, 7);
        std::fs::write(
            &path,
            format!(
                "{}first\n{fake_future}{}second a\n{fake_past}second b\n",
                marker(now - 2000, 1, 1),
                marker(now - 1000, 2, 1),
            ),
        )
        .unwrap();
        assert_eq!(
            previous(dir.path(), None, None).unwrap(),
            format!("{}first\n{fake_future}", marker(now - 2000, 1, 1)),
            "the two real markers bound the previous instance"
        );
        let since = Selection {
            since: Some(UnixMillis(now - 60_000)),
            ..Selection::default()
        };
        let (bytes, _) = select(dir.path(), &id(), since).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            std::fs::read_to_string(&path).unwrap(),
            "everything ran within the last minute"
        );
    }

    /// Regression: `--since` read only the current file, so output rotated away a minute ago
    /// from an instance that started five minutes ago was missing from `--since 10m`.
    #[test]
    fn since_reads_the_rotated_files_too_and_skips_those_written_before_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), &id());
        let now = crate::clock::now().0;
        std::fs::write(
            rotated(&path, 2),
            format!("{}old\n", marker(now - 900_000, 1, 1)),
        )
        .unwrap();
        // `.2` was last written 14 minutes ago.
        let old = std::time::UNIX_EPOCH + Duration::from_millis(now - 840_000);
        File::options()
            .write(true)
            .open(rotated(&path, 2))
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::write(
            rotated(&path, 1),
            format!("{}written 4 minutes ago\n", marker(now - 300_000, 2, 1)),
        )
        .unwrap();
        std::fs::write(&path, "written just now\n").unwrap();
        let since = |ago: u64| {
            let selection = Selection {
                since: Some(UnixMillis(now - ago)),
                ..Selection::default()
            };
            let (bytes, offset) = select(dir.path(), &id(), selection).unwrap().unwrap();
            assert_eq!(
                offset,
                "written just now\n".len() as u64,
                "followed from the end"
            );
            String::from_utf8(bytes).unwrap()
        };
        let recent = format!(
            "{}written 4 minutes ago\nwritten just now\n",
            marker(now - 300_000, 2, 1)
        );
        assert_eq!(since(600_000), recent);
        assert_eq!(since(60_000), recent, "the instance ran into the window");
        assert_eq!(
            since(1_000_000),
            format!("{}old\n{recent}", marker(now - 900_000, 1, 1))
        );
    }
}
