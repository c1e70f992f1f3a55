//! A debounced watch of a directory, shared by the spec directory and the catalog: the paths
//! that a burst of file events names arrive as one set, and reads (the watcher's own included)
//! never count as changes. A burst whose files are all complete (closed after writing, moved in,
//! removed) is read after a short quiet; one with a file still being written waits longer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last file event before the changed files are read, while a file of
/// the burst may still be written (created or modified, not yet closed).
const DEBOUNCE_QUIET: Duration = Duration::from_millis(50);
/// Quiet time when every file of the burst is complete: one moved in or closed after writing
/// is whole, so only the rest of a burst (a `mv` of many files) is worth waiting for.
const SETTLED_QUIET: Duration = Duration::from_millis(5);
/// Longest a burst of events can delay reading the files.
const DEBOUNCE_MAX: Duration = Duration::from_millis(500);

/// A path an event named, and whether the file is complete after that event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub settled: bool,
}

/// Watches `dir` (and below it when `recursive`): the paths named by its events arrive on the
/// returned channel for as long as the returned watcher is kept.
pub fn watch_directory(
    dir: &Path,
    recursive: bool,
) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<Change>), notify::Error> {
    let (sender, changes) = mpsc::unbounded_channel::<Change>();
    let shown = dir.display().to_string();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Reads (ours included) raise open/access events; only a change of content matters,
            // or the watcher would wake itself with every file it reads.
            Ok(event) if !changes_content(&event.kind) => {}
            Ok(event) => {
                let settled = settles(&event.kind);
                for path in event.paths {
                    // The receiver lives as long as the watch; a failed send means it is over.
                    let _ = sender.send(Change { path, settled });
                }
            }
            Err(error) => {
                tracing::warn!(dir = %shown, %error, "watch error; the next resync will catch up")
            }
        }
    })?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher.watch(dir, mode)?;
    Ok((watcher, changes))
}

/// Whether an event can mean that a file's content or presence changed.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether a file is complete after an event of this kind: closed after writing, moved in or
/// out, removed, or only its metadata changed. A creation or a write is followed by a close
/// when the writer is done (a link or a symlink made in place never is: it waits the longer
/// quiet, as every burst did before).
fn settles(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
        | notify::EventKind::Remove(_)
        | notify::EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_)) => true,
        notify::EventKind::Create(_)
        | notify::EventKind::Modify(_)
        | notify::EventKind::Access(_)
        | notify::EventKind::Any
        | notify::EventKind::Other => false,
    }
}

/// Collects the paths of a burst of events: until a quiet time passes with no event, or
/// `DEBOUNCE_MAX` after the first. The quiet is `SETTLED_QUIET` while the latest event of every
/// path left its file complete, else `DEBOUNCE_QUIET`.
pub async fn debounce(
    first: Change,
    changes: &mut mpsc::UnboundedReceiver<Change>,
) -> BTreeSet<PathBuf> {
    let give_up = tokio::time::Instant::now() + DEBOUNCE_MAX;
    let mut unsettled: BTreeSet<PathBuf> = BTreeSet::new();
    let mut changed = BTreeSet::new();
    let mut next = first;
    loop {
        if next.settled {
            unsettled.remove(&next.path);
        } else {
            unsettled.insert(next.path.clone());
        }
        changed.insert(next.path);
        let quiet = if unsettled.is_empty() {
            SETTLED_QUIET
        } else {
            DEBOUNCE_QUIET
        };
        let quiet_until = (tokio::time::Instant::now() + quiet).min(give_up);
        match tokio::time::timeout_at(quiet_until, changes.recv()).await {
            Ok(Some(change)) => next = change,
            Ok(None) | Err(_) => return changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, settled: bool) -> Change {
        Change {
            path: PathBuf::from(path),
            settled,
        }
    }

    /// Runs `debounce` on `first` and what `send` sends while it waits; returns the set and how
    /// long it took on tokio's paused clock.
    async fn debounced(
        first: Change,
        send: Vec<(Duration, Change)>,
    ) -> (BTreeSet<PathBuf>, Duration) {
        let (sender, mut changes) = mpsc::unbounded_channel();
        let started = tokio::time::Instant::now();
        let sending = tokio::spawn(async move {
            for (after, change) in send {
                tokio::time::sleep(after).await;
                let _ = sender.send(change);
            }
            // Kept until the test's deadline, so that a closed channel ends no wait early.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let changed = debounce(first, &mut changes).await;
        let took = started.elapsed();
        sending.abort();
        (changed, took)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_complete_files_is_read_after_the_short_quiet() {
        let burst = (1..100)
            .map(|n| (Duration::from_millis(1), change(&format!("f{n}"), true)))
            .collect();
        let (changed, took) = debounced(change("f0", true), burst).await;
        assert_eq!(changed.len(), 100);
        assert!(
            took >= Duration::from_millis(99) + SETTLED_QUIET,
            "{took:?}"
        );
        assert!(
            took < Duration::from_millis(99) + DEBOUNCE_QUIET,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_still_being_written_holds_the_burst_for_the_long_quiet() {
        let (changed, took) = debounced(
            change("a", true),
            vec![(Duration::from_millis(1), change("b", false))],
        )
        .await;
        assert_eq!(
            changed,
            BTreeSet::from([PathBuf::from("a"), PathBuf::from("b")])
        );
        assert!(
            took >= Duration::from_millis(1) + DEBOUNCE_QUIET,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_is_closed_settles_its_file() {
        let (changed, took) = debounced(
            change("a", false),
            vec![(Duration::from_millis(2), change("a", true))],
        )
        .await;
        assert_eq!(changed, BTreeSet::from([PathBuf::from("a")]));
        assert!(took >= Duration::from_millis(2) + SETTLED_QUIET, "{took:?}");
        assert!(took < DEBOUNCE_QUIET, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_that_never_pauses_is_read_at_the_most_after_the_longest_delay() {
        let endless = (0..2000)
            .map(|n| (Duration::from_millis(1), change(&format!("f{n}"), false)))
            .collect();
        let (_, took) = debounced(change("first", false), endless).await;
        assert!(
            took >= DEBOUNCE_MAX && took < DEBOUNCE_MAX + Duration::from_millis(5),
            "{took:?}"
        );
    }

    #[test]
    fn what_completes_a_file_and_what_does_not() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
            RenameMode,
        };
        use notify::EventKind;
        let complete = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Remove(RemoveKind::File),
        ];
        let unfinished = [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Any,
        ];
        assert!(complete.iter().all(settles));
        assert!(!unfinished.iter().any(settles));
    }
}
