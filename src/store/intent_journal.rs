//! Spawns about to happen, appended to a plain file with one `write` before the spawns and no
//! `fsync`: what this record must survive is the launcher, not the host.
//!
//! The promise it keeps is that a launcher killed at any instant never leads to two processes
//! for one id: a restarted launcher looks for the process of every intent whose outcome it did
//! not record, by its instance id, and adopts it. For that, the intent must be readable by the
//! next run of the launcher once the spawn has happened, which a completed `write(2)` gives (the
//! kernel's page cache outlives the process that wrote to it). A crash of the host takes the
//! processes down with it, so an intent lost with the host names no process. A sled flush here
//! (what the intents had before) cost an `fsync` on the restart path of every crash: about half
//! a millisecond of the two that a restart may take.
//!
//! The file holds one JSON line per intent. An intent is settled once its spawn's outcome is
//! flushed to the store (and with a recorded process, the earlier intents of its id:
//! `reconcile::Settled`); the file is emptied once none is left; a torn last line (the launcher killed in the middle of a `write`) is
//! ignored, as its spawn never began.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{encode, StoreError};
use crate::reconcile::{ProcessId, Settled, SpawnIntent};

/// The journal's file name, in the store's directory.
pub(super) const JOURNAL_FILE: &str = "spawn-intents.jsonl";

/// A journal of intents is emptied after every pass that spawned, so anything near this size
/// is not one the launcher wrote; reading stops there rather than loading it all.
const MAX_JOURNAL_BYTES: u64 = 64 << 20;

#[derive(Debug)]
pub(super) struct IntentJournal {
    path: PathBuf,
    state: Mutex<JournalState>,
}

#[derive(Debug)]
struct JournalState {
    file: File,
    /// The intents whose outcome is not flushed yet, by id, each id's in the order they were
    /// written (with their place in the order of all): those a previous run left in the file
    /// (first, in the file's order), then those written in this run.
    outstanding: HashMap<ProcessId, Vec<(u64, SpawnIntent)>>,
    /// The place the next intent written gets.
    next_place: u64,
    /// Whether the file may hold lines of intents already settled (a rewrite that failed), so
    /// that the next settle rewrites it even if it settles nothing.
    stale_lines: bool,
    /// Whether the file may hold lines (so an empty journal costs no `ftruncate` per pass).
    written: bool,
    /// Whether the file may end in a torn line (a write cut short, by a failure here or by the
    /// death of a previous launcher): the next append begins with a newline, so that the torn
    /// line stays alone and the new ones are read.
    torn_tail: bool,
}

impl IntentJournal {
    pub(super) fn open(dir: &Path) -> Result<IntentJournal, StoreError> {
        let path = dir.join(JOURNAL_FILE);
        let file =
            open_for_append(&path).map_err(|source| journal_error("opening", &path, source))?;
        let length = file
            .metadata()
            .map_err(|source| journal_error("reading the size of", &path, source))?
            .len();
        let torn_tail = length > 0 && !ends_with_newline(&file, length);
        let journal = IntentJournal {
            path,
            state: Mutex::new(JournalState {
                file,
                outstanding: HashMap::new(),
                next_place: 0,
                stale_lines: false,
                written: length > 0,
                torn_tail,
            }),
        };
        // A previous run's intents stay outstanding until they are settled (after the
        // recovery that looks for their processes has written its records), so that no settle
        // of this run's own intents empties the file under them. A journal that cannot be read
        // here is reported by the recovery's own read of it.
        if length > 0 {
            if let Ok((previous, _unreadable)) = journal.read() {
                let mut state = journal.lock();
                for intent in previous {
                    state.keep(intent);
                }
            }
        }
        Ok(journal)
    }

    fn lock(&self) -> MutexGuard<'_, JournalState> {
        // Every change under the lock is a single assignment or one system call, so a panic
        // elsewhere cannot leave the state half-updated; a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `intents` with one `write`; returns once the kernel has them.
    pub(super) fn append(&self, intents: &[SpawnIntent]) -> Result<(), StoreError> {
        let mut state = self.lock();
        let mut lines = Vec::new();
        if state.torn_tail {
            lines.push(b'\n');
        }
        lines.extend(as_lines(intents)?);
        state.written = true;
        if let Err(source) = state.file.write_all(&lines) {
            // Part of it may be in the file: the spawns it announced never begin, and the next
            // append must not be read as the rest of its last line.
            state.torn_tail = true;
            return Err(journal_error("writing", &self.path, source));
        }
        state.torn_tail = false;
        for intent in intents {
            state.keep(intent.clone());
        }
        Ok(())
    }

    /// The intents in the file (of this run or a previous one), with the lines that could not
    /// be read as errors. A last line without its newline is a write the launcher did not
    /// finish: its spawn never began, so it is left out without an error.
    pub(super) fn read(&self) -> Result<(Vec<SpawnIntent>, Vec<StoreError>), StoreError> {
        let mut text = Vec::new();
        // Through the journal's own descriptor, not its path again: what is read is the file
        // being appended to. (Appends go to the end whatever the shared offset says.)
        self.lock()
            .file
            .try_clone()
            .and_then(|mut file| {
                file.seek(SeekFrom::Start(0))?;
                file.take(MAX_JOURNAL_BYTES + 1).read_to_end(&mut text)
            })
            .map_err(|source| journal_error("reading", &self.path, source))?;
        if text.len() as u64 > MAX_JOURNAL_BYTES {
            return Err(StoreError::Journal {
                action: format!(
                    "reading {}: it is larger than {MAX_JOURNAL_BYTES} bytes, which no launcher \
                     writes; move it aside (the launcher then cannot look for the processes of \
                     the spawns it names)",
                    self.path.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::FileTooLarge),
            });
        }
        let mut intents = Vec::new();
        let mut corrupt = Vec::new();
        let complete = match text.iter().rposition(|byte| *byte == b'\n') {
            Some(last_newline) => &text[..=last_newline],
            None => &[],
        };
        for (index, line) in complete.split(|byte| *byte == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(intent) => intents.push(intent),
                Err(source) => corrupt.push(StoreError::Corrupt {
                    tree: "intents",
                    key: format!("{}:{}", self.path.display(), index + 1),
                    source,
                }),
            }
        }
        Ok((intents, corrupt))
    }

    /// Forgets the intents of `spawns`, whose outcomes (or whose records after a recovery) were
    /// just flushed to the store; with a spawn whose process is recorded, also every intent of
    /// its id written before it (see `Settled`). An intent of the id written after it stays.
    /// The file is emptied when no intent is left; otherwise it is replaced (write and rename,
    /// so that a crash leaves the old file or the new one) by the ones left, in the order they
    /// were written.
    pub(super) fn settle(
        &self,
        spawns: impl IntoIterator<Item = Settled>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let mut settled_any = false;
        for settled in spawns {
            let (spawn, with_earlier) = match &settled {
                Settled::Process(spawn) => (spawn, true),
                Settled::Alone(spawn) => (spawn, false),
            };
            let Some(of_id) = state.outstanding.get_mut(&spawn.id) else {
                continue;
            };
            if let Some(at) = of_id
                .iter()
                .rposition(|(_, intent)| intent.instance == spawn.instance)
            {
                if with_earlier {
                    of_id.drain(..=at);
                } else {
                    of_id.retain(|(_, intent)| intent.instance != spawn.instance);
                }
                settled_any = true;
                if of_id.is_empty() {
                    state.outstanding.remove(&spawn.id);
                }
            }
        }
        if !state.written {
            return Ok(());
        }
        if state.outstanding.is_empty() {
            state
                .file
                .set_len(0)
                .map_err(|source| journal_error("emptying", &self.path, source))?;
            state.written = false;
            state.torn_tail = false;
            state.stale_lines = false;
            return Ok(());
        }
        if !settled_any && !state.stale_lines {
            // The file holds exactly what is outstanding, and maybe a torn or unreadable line.
            return Ok(());
        }
        // Only reached when a spawn's outcome was lost (a spawn panicked) or a recovery's
        // records were not all written: rare, so the cost of a rewrite does not matter, its
        // atomicity does.
        state.stale_lines = true;
        let mut left: Vec<&(u64, SpawnIntent)> = state.outstanding.values().flatten().collect();
        left.sort_unstable_by_key(|(place, _)| *place);
        let left: Vec<SpawnIntent> = left.into_iter().map(|(_, intent)| intent.clone()).collect();
        let lines = as_lines(&left)?;
        let staged = self.path.with_extension("jsonl.new");
        // Opened for appending and kept: after the rename it is the journal, with no reopen
        // that could fail and leave later intents in the file just replaced.
        let mut file = open_for_append(&staged)
            .map_err(|source| journal_error("creating", &staged, source))?;
        file.set_len(0)
            .and_then(|()| file.write_all(&lines))
            .map_err(|source| journal_error("writing", &staged, source))?;
        std::fs::rename(&staged, &self.path)
            .map_err(|source| journal_error("replacing", &self.path, source))?;
        state.file = file;
        state.torn_tail = false;
        state.stale_lines = false;
        Ok(())
    }
}

impl JournalState {
    /// Counts `intent` as outstanding, after every intent kept before it.
    fn keep(&mut self, intent: SpawnIntent) {
        let place = self.next_place;
        self.next_place += 1;
        self.outstanding
            .entry(intent.desired.id.clone())
            .or_default()
            .push((place, intent));
    }
}

/// The intents as the journal holds them: one JSON line each.
fn as_lines(intents: &[SpawnIntent]) -> Result<Vec<u8>, StoreError> {
    let mut lines = Vec::with_capacity(intents.len() * 1024);
    for intent in intents {
        lines.extend(encode("intents", intent.desired.id.as_str(), intent)?);
        lines.push(b'\n');
    }
    Ok(lines)
}

/// Whether the last byte of `file` (of `length` bytes) is a newline.
fn ends_with_newline(file: &File, length: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, length - 1).is_ok() && last[0] == b'\n'
}

fn journal_error(action: &str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Journal {
        action: format!("{action} {}", path.display()),
        source,
    }
}

/// Opens the journal at `path` (or its staged replacement) to read and append, creating it
/// 0600; a symlink in its place is refused rather than followed.
fn open_for_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{id, ports, spec};
    use crate::reconcile::{DesiredRecord, Source, SpawnKey, UnixMillis};

    fn intent(name: &str, instance: &str) -> SpawnIntent {
        SpawnIntent {
            desired: DesiredRecord {
                id: id(name),
                spec: std::sync::Arc::new(spec()),
                generation: 1,
                source: Source::Api,
                resets: 0,
                held: false,
                restarts: 0,
            },
            instance: instance.to_string(),
            ports: ports(),
            at: UnixMillis(1),
        }
    }

    /// A spawn whose process is recorded.
    fn key(name: &str, instance: &str) -> Settled {
        Settled::Process(SpawnKey {
            id: id(name),
            instance: instance.to_string(),
        })
    }

    /// The length of the journal's file in `dir`.
    fn file_length(dir: &Path) -> u64 {
        std::fs::metadata(dir.join(JOURNAL_FILE)).unwrap().len()
    }

    fn instances(journal: &IntentJournal) -> Vec<String> {
        let (intents, corrupt) = journal.read().unwrap();
        assert!(corrupt.is_empty(), "{corrupt:?}");
        let mut instances: Vec<String> = intents.into_iter().map(|i| i.instance).collect();
        instances.sort();
        instances
    }

    #[test]
    fn intents_written_are_read_by_the_next_run_and_emptied_once_settled() {
        let dir = tempfile::tempdir().unwrap();
        let journal = IntentJournal::open(dir.path()).unwrap();
        journal
            .append(&[intent("a", "1"), intent("b", "2")])
            .unwrap();
        journal.append(&[intent("c", "3")]).unwrap();
        // A launcher killed here: the next one reads what the kernel was given.
        let next_run = IntentJournal::open(dir.path()).unwrap();
        assert_eq!(instances(&next_run), ["1", "2", "3"]);

        journal
            .settle([key("a", "1"), key("b", "2"), key("c", "3")])
            .unwrap();
        assert!(instances(&journal).is_empty());
        let path = dir.path().join(JOURNAL_FILE);
        assert_eq!(file_length(dir.path()), 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "spawn intents carry the environment: private");
    }

    #[test]
    fn a_recovered_journal_is_emptied_by_the_settle_after_recovery() {
        let dir = tempfile::tempdir().unwrap();
        IntentJournal::open(dir.path())
            .unwrap()
            .append(&[intent("a", "1")])
            .unwrap();
        let next_run = IntentJournal::open(dir.path()).unwrap();
        next_run.settle([key("a", "1")]).unwrap();
        assert!(instances(&next_run).is_empty());
    }

    #[test]
    fn intents_whose_outcome_is_not_recorded_survive_the_settle_of_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let journal = IntentJournal::open(dir.path()).unwrap();
        journal
            .append(&[intent("a", "1"), intent("lost", "2")])
            .unwrap();
        journal.settle([key("a", "1")]).unwrap();
        assert_eq!(instances(&journal), ["2"]);
        // The journal is usable after the rewrite.
        journal.append(&[intent("b", "3")]).unwrap();
        assert_eq!(instances(&journal), ["2", "3"]);
        journal.settle([key("lost", "2"), key("b", "3")]).unwrap();
        assert!(instances(&journal).is_empty());
    }

    #[test]
    fn a_previous_run_s_intents_survive_the_settle_of_this_run_s_own() {
        let dir = tempfile::tempdir().unwrap();
        IntentJournal::open(dir.path())
            .unwrap()
            .append(&[intent("previous", "1"), intent("again", "2")])
            .unwrap();
        // A launcher killed after its spawns; the next one spawns before the recovery's records
        // of the previous run's intents are written (say their write failed).
        let next_run = IntentJournal::open(dir.path()).unwrap();
        next_run
            .append(&[intent("new", "3"), intent("again", "4")])
            .unwrap();
        next_run.settle([key("new", "3")]).unwrap();
        assert_eq!(
            instances(&next_run),
            ["1", "2", "4"],
            "the previous run's intents stay until they are settled"
        );
        // Read again by a third run, should this one be killed now.
        assert_eq!(
            instances(&IntentJournal::open(dir.path()).unwrap()),
            ["1", "2", "4"]
        );
        next_run
            .settle([key("previous", "1"), key("again", "2"), key("again", "4")])
            .unwrap();
        assert!(instances(&next_run).is_empty());
        assert_eq!(file_length(dir.path()), 0, "emptied");
    }

    /// A spawn whose outcome is recorded supersedes the earlier spawns of its id, whose outcome
    /// was lost: the journal empties rather than keep them for the rest of the run (and a
    /// restarted launcher would adopt their processes beside the recorded one).
    #[test]
    fn a_recorded_spawn_settles_the_earlier_spawns_of_its_id_and_not_the_later() {
        let dir = tempfile::tempdir().unwrap();
        let journal = IntentJournal::open(dir.path()).unwrap();
        journal
            .append(&[intent("web", "lost"), intent("db", "1")])
            .unwrap();
        journal.append(&[intent("web", "recorded")]).unwrap();
        journal.append(&[intent("web", "after")]).unwrap();
        journal.settle([key("web", "recorded")]).unwrap();
        assert_eq!(instances(&journal), ["1", "after"]);
        journal
            .settle([key("db", "1"), key("web", "after")])
            .unwrap();
        assert_eq!(file_length(dir.path()), 0, "emptied");
    }

    /// What is left after a settle is written back in the order it was written, so that a
    /// restarted launcher reads an id's spawns oldest first.
    #[test]
    fn a_rewritten_journal_keeps_the_order_of_writing() {
        let dir = tempfile::tempdir().unwrap();
        let journal = IntentJournal::open(dir.path()).unwrap();
        let names = ["k", "c", "x", "a", "q", "b", "m", "z"];
        let written: Vec<SpawnIntent> = names
            .iter()
            .enumerate()
            .map(|(place, name)| intent(name, &place.to_string()))
            .collect();
        journal.append(&written).unwrap();
        journal.settle([key("x", "2")]).unwrap();
        let (read, corrupt) = journal.read().unwrap();
        assert!(corrupt.is_empty());
        let order: Vec<String> = read.into_iter().map(|intent| intent.instance).collect();
        assert_eq!(order, ["0", "1", "3", "4", "5", "6", "7"]);
    }

    /// A spawn that failed (its outcome recorded, no process) settles only its own intent: an
    /// earlier spawn of the id whose outcome was lost may have a process nobody recorded.
    #[test]
    fn a_failed_spawn_settles_only_its_own_intent() {
        let dir = tempfile::tempdir().unwrap();
        let journal = IntentJournal::open(dir.path()).unwrap();
        journal
            .append(&[intent("web", "lost"), intent("web", "failed")])
            .unwrap();
        journal
            .settle([Settled::Alone(SpawnKey {
                id: id("web"),
                instance: "failed".to_string(),
            })])
            .unwrap();
        assert_eq!(instances(&journal), ["lost"]);
    }

    /// The recovery settles a previous run's intent for an id; this run's own intent for the
    /// same id, whose spawn's outcome was lost (the spawn panicked), is not settled with it: a
    /// run killed next still looks for that process.
    #[test]
    fn settling_one_spawn_of_an_id_keeps_another_spawn_of_it() {
        let dir = tempfile::tempdir().unwrap();
        IntentJournal::open(dir.path())
            .unwrap()
            .append(&[intent("web", "previous")])
            .unwrap();
        let next_run = IntentJournal::open(dir.path()).unwrap();
        next_run.append(&[intent("web", "lost")]).unwrap();
        next_run.settle([key("web", "previous")]).unwrap();
        assert_eq!(instances(&next_run), ["lost"]);
        assert_eq!(
            instances(&IntentJournal::open(dir.path()).unwrap()),
            ["lost"]
        );
    }

    #[test]
    fn intents_appended_after_a_torn_line_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let whole = serde_json::to_vec(&intent("torn", "0")).unwrap();
        std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        // A launcher killed in the middle of a write: the next one appends after the torn line.
        let journal = IntentJournal::open(dir.path()).unwrap();
        journal.append(&[intent("a", "1")]).unwrap();
        let (intents, corrupt) = journal.read().unwrap();
        assert_eq!(intents.len(), 1, "{corrupt:?}");
        assert_eq!(intents[0].instance, "1");
        assert_eq!(corrupt.len(), 1, "the torn line, alone");
    }

    #[test]
    fn a_journal_that_no_launcher_writes_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let journal = IntentJournal::open(dir.path()).unwrap();
        let file = File::create(dir.path().join(JOURNAL_FILE)).unwrap();
        file.set_len(MAX_JOURNAL_BYTES + 1).unwrap();
        let error = journal.read().unwrap_err();
        assert!(error.to_string().contains("larger than"), "{error}");
    }

    #[test]
    fn a_torn_last_line_is_a_spawn_that_never_began_and_a_bad_line_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let journal = IntentJournal::open(dir.path()).unwrap();
        journal.append(&[intent("a", "1")]).unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"not json\n").unwrap();
        let whole = serde_json::to_vec(&intent("b", "2")).unwrap();
        file.write_all(&whole[..whole.len() / 2]).unwrap();
        let (intents, corrupt) = journal.read().unwrap();
        assert_eq!(intents.len(), 1);
        assert_eq!(intents[0].instance, "1");
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        assert!(
            corrupt[0].to_string().contains(":2"),
            "names the line: {}",
            corrupt[0]
        );
    }
}
