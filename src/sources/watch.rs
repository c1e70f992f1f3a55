//! A debounced watch of a directory, shared by the spec directory and the catalog: the paths
//! that a burst of file events names arrive as one set, and reads (the watcher's own included)
//! never count as changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last file event before the changed files are read.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(50);
/// Longest a burst of events can delay reading the files.
const DEBOUNCE_MAX: Duration = Duration::from_millis(500);

/// Watches `dir` (and below it when `recursive`): the paths named by its events arrive on the
/// returned channel for as long as the returned watcher is kept.
pub fn watch_directory(
    dir: &Path,
    recursive: bool,
) -> Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<PathBuf>), notify::Error> {
    let (sender, changes) = mpsc::unbounded_channel::<PathBuf>();
    let shown = dir.display().to_string();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Reads (ours included) raise open/access events; only a change of content matters,
            // or the watcher would wake itself with every file it reads.
            Ok(event) if !changes_content(&event.kind) => {}
            Ok(event) => {
                for path in event.paths {
                    // The receiver lives as long as the watch; a failed send means it is over.
                    let _ = sender.send(path);
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

/// Collects the paths of a burst of events: until `DEBOUNCE_QUIET` passes with no event, or
/// `DEBOUNCE_MAX` after the first.
pub async fn debounce(
    first: PathBuf,
    changes: &mut mpsc::UnboundedReceiver<PathBuf>,
) -> BTreeSet<PathBuf> {
    let mut changed = BTreeSet::from([first]);
    let give_up = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet_until = (tokio::time::Instant::now() + DEBOUNCE_QUIET).min(give_up);
        match tokio::time::timeout_at(quiet_until, changes.recv()).await {
            Ok(Some(path)) => {
                changed.insert(path);
            }
            Ok(None) | Err(_) => return changed,
        }
    }
}
