//! The watched spec directory: files in, desired records out.
//!
//! A full scan runs at start and on every resync; between them, notify events name the files that
//! changed, and only those are read again (debounced, so an editor's burst of writes is one
//! change). A file is applied whole or not at all: a file with an error changes nothing, and what
//! it declared before keeps running.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::catalog::{read_catalog, SharedCatalog};
use super::problems::SourceProblems;
use super::spec_file::{load_spec_file, FileSpec, SpecError};
use super::watch::{debounce, watch_directory};
use crate::error_chain::Chain;
use crate::reconcile::{ProcessId, ProcessSpec, Source};
use crate::store::{SourceSet, Store};
use crate::telemetry::Readiness;

#[derive(Debug, thiserror::Error)]
pub enum SpecWatchError {
    #[error("cannot watch the spec directory {dir}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot read the spec directory {dir}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the first scan of the spec directory did not finish")]
    Interrupted(#[from] tokio::task::JoinError),
    #[error("cannot list the desired records to find removed spec files")]
    Store(#[source] crate::store::StoreError),
    #[error(
        "the store refused the first scan of the spec directory (see the errors above); what \
         spec files declared in an earlier run would not be safe to act on"
    )]
    FirstScanUnrecorded,
}

/// Whether a path in the spec directory has a spec file's name (not hidden, not an editor's
/// temporary), whether or not the name is UTF-8 (one that is not is reported, not skipped).
pub fn is_spec_file_name(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = path.file_name().map(OsStrExt::as_bytes) else {
        return false;
    };
    !name.starts_with(b".")
        && !name.ends_with(b"~")
        && (name.ends_with(b".yaml") || name.ends_with(b".yml"))
}

/// The entries of `dir` with a spec file's name, in name order, whatever they are: the reader
/// refuses what is not a readable regular file (a FIFO, a socket, a directory, a dangling or
/// looping symlink, a name that is not UTF-8) with a problem that `status` shows, rather than
/// have it skipped without a word. What the launcher applies and what `validate` checks of a
/// directory.
pub fn spec_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_spec_file_name(&path) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Whether the directory still has an entry at `path` (a dangling symlink is one: it is read,
/// and its problem reported, rather than taken for a deleted file).
fn has_entry(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Files larger than this are parsed under `PARSE_BUDGET`; smaller ones cannot be slow to parse
/// once `yaml_shape` has bounded their nesting.
const BUDGETED_FROM_BYTES: u64 = 64 * 1024;

/// The longest a spec file's parse may take before the file is reported and skipped.
const PARSE_BUDGET: Duration = Duration::from_secs(2);

/// From this many files to read at once, they are read on several threads.
const PARALLEL_READ_FROM: usize = 64;

/// How many files are read and applied in one transaction of the store. A sled transaction keeps
/// every intermediate version of the nodes it rewrites until it commits, so one transaction of
/// 10,000 files held 60 MB at its peak (and the launcher's memory stayed near it after); files in
/// batches of this many keep the peak, and what is left behind, a fraction of that. Each file is
/// a source of its own, so nothing needs more than one file applied at once.
const APPLY_BATCH: usize = 512;

/// The first transaction of a scan (or of a change of many files) holds this many files, and
/// each one after twice as many as the one before, up to `APPLY_BATCH`: what the first files
/// declare is recorded (and, once files count as read, started) while the rest are still being
/// read, rather than after the first 512. Small, since nothing a cold start spawns can start
/// before it is written: reading 64 files and writing them took about 3 ms of a cold start's 25
/// before its first spawn (BENCHMARKS.md), and 16 take about a quarter of that (estimated from
/// the 64); each batch more is one flush more.
const FIRST_APPLY_BATCH: usize = 16;

/// `items` in consecutive batches of `first`, then twice as many each time, up to `most`.
fn growing_batches<T>(items: &[T], first: usize, most: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    let mut size = first.max(1);
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (batch, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        size = size.saturating_mul(2).min(most.max(1));
        Some(batch)
    })
}

/// How much room for stamps beyond twice the files present the map may keep after files are
/// removed before it is shrunk (a few removals at a time are not worth a rehash).
const SPARE_STAMPS: usize = 64;

/// Files being parsed on a thread of their own.
type InFlight = Arc<Mutex<std::collections::HashSet<PathBuf>>>;

/// Runs `load` on `path` on a thread of its own and gives up waiting after `budget` (reported
/// as the file's problem); the thread runs on to its end. While it does, `path` stays in
/// `in_flight`, and a second load of it is refused at once rather than started beside it.
fn within_budget(
    path: &Path,
    budget: Duration,
    in_flight: &InFlight,
    load: impl FnOnce(&Path) -> Result<Vec<FileSpec>, Vec<SpecError>> + Send + 'static,
) -> Result<Vec<FileSpec>, Vec<SpecError>> {
    let unreadable = |message: String| vec![SpecError::whole_file(path, message)];
    // Single inserts and removes: a panic elsewhere cannot leave the set half-made.
    let lock = |set: &InFlight| {
        set.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_path_buf())
    };
    if !lock(in_flight) {
        return Err(unreadable(format!(
            "an earlier parse of it, over {budget:?}, is still running; the file is skipped"
        )));
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    let done = in_flight.clone();
    let spawned = std::thread::Builder::new()
        .name("spec-parse".to_string())
        .spawn(move || {
            let loaded = load(&owned);
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&owned);
            let _ = sender.send(loaded);
        });
    if let Err(error) = spawned {
        in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
        return Err(unreadable(format!(
            "cannot start a thread to parse it: {error}"
        )));
    }
    match receiver.recv_timeout(budget) {
        Ok(loaded) => loaded,
        Err(_) => Err(unreadable(format!(
            "parsing it took longer than {budget:?}; the file is skipped"
        ))),
    }
}

/// The first pause before the first scan of the spec directory is tried again; it doubles up to
/// `FIRST_SCAN_RETRY_MAX`.
const FIRST_SCAN_RETRY_INITIAL: Duration = Duration::from_millis(500);
const FIRST_SCAN_RETRY_MAX: Duration = Duration::from_secs(30);

/// What the spec watcher works with.
pub struct SpecWatch {
    pub dir: PathBuf,
    pub store: Arc<Store>,
    pub catalog: SharedCatalog,
    /// Bumped on each catalog reload: every spec file is read again.
    pub catalog_changes: watch::Receiver<u64>,
    pub problems: SourceProblems,
    pub resync_interval: Duration,
    /// Told when the first full scan is done.
    pub readiness: Readiness,
}

/// Keeps the store's file-sourced desired records equal to the spec files in `dir` until
/// `shutdown` completes. Every spec file is read again when the catalog changes. Reading files,
/// parsing them and writing the store run on the blocking pool, one batch at a time.
pub async fn watch_spec_dir(
    settings: SpecWatch,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SpecWatchError> {
    let SpecWatch {
        dir,
        store,
        catalog,
        mut catalog_changes,
        problems,
        resync_interval,
        readiness,
    } = settings;
    let (_watcher, mut changes) =
        watch_directory(&dir, false).map_err(|source| SpecWatchError::Watch {
            dir: dir.clone(),
            source,
        })?;
    let specs = Arc::new(SpecDir {
        dir,
        store,
        catalog,
        problems,
        stamps: Mutex::default(),
        unrecorded: std::sync::atomic::AtomicUsize::new(0),
        parsing: Arc::default(),
    });
    // What files declared in an earlier run moves only once a scan is recorded in full
    // (`SourcesRead`): a scan the store could not record would let the last run's records (a
    // spec deleted while the launcher was down) act. It is tried again, with a growing pause,
    // until one is; meanwhile what runs keeps running and those records do not move. (A store
    // that held none acts on each file's records as they are written: `SourcesRead::at_start`.)
    tokio::pin!(shutdown);
    let mut retry = FIRST_SCAN_RETRY_INITIAL;
    loop {
        let scanned = off_the_workers(&specs, |specs| {
            let before = specs.unrecorded.load(std::sync::atomic::Ordering::Acquire);
            specs.full_scan(Rescan::All)?;
            match specs.unrecorded.load(std::sync::atomic::Ordering::Acquire) {
                after if after == before => Ok(()),
                _ => Err(SpecWatchError::FirstScanUnrecorded),
            }
        })
        .await?;
        match scanned {
            Ok(()) => break,
            Err(error) => {
                tracing::error!(error = %Chain(&error), retry_in = ?retry, "the first scan of the spec directory could not be recorded; what spec files declared in an earlier run does not move until one is");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(FIRST_SCAN_RETRY_MAX);
            }
        }
    }
    readiness.specs_synced();
    let mut resync = tokio::time::interval(resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    loop {
        let done = tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = resync.tick() => off_the_workers(&specs, |specs| specs.rescan(Rescan::Changed)).await,
            Ok(()) = catalog_changes.changed() => {
                off_the_workers(&specs, |specs| specs.rescan(Rescan::All)).await
            }
            Some(first) = changes.recv() => {
                let changed = debounce(first, &mut changes).await;
                off_the_workers(&specs, move |specs| specs.apply_changed(changed)).await
            }
        };
        if let Err(error) = done {
            tracing::error!(%error, "the spec directory work did not finish");
        }
    }
}

/// Runs `work` on the blocking pool: file reads and parsing may be slow, and the store's writes
/// wait for the disk.
async fn off_the_workers<T: Send + 'static>(
    specs: &Arc<SpecDir>,
    work: impl FnOnce(&Arc<SpecDir>) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let specs = specs.clone();
    tokio::task::spawn_blocking(move || work(&specs)).await
}

/// Which files a scan reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rescan {
    /// Every file (at start, and when the catalog changed).
    All,
    /// Files whose size, modification time or inode changed since they were read (the resync,
    /// which catches what the watch missed without reading a thousand unchanged files).
    Changed,
}

/// What a file looked like when it was last read: if it still looks so, it need not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode: metadata.ino(),
        })
    }
}

struct SpecDir {
    dir: PathBuf,
    store: Arc<Store>,
    catalog: SharedCatalog,
    problems: SourceProblems,
    /// The stamp of each file as it was when last read.
    stamps: Mutex<HashMap<PathBuf, FileStamp>>,
    /// Writes of files' desired sets the store refused, ever: the first scan counts as done only
    /// if it added none.
    unrecorded: std::sync::atomic::AtomicUsize,
    /// Files whose parse runs on a thread of its own: one at a time per file, so that a file
    /// that is slow to parse and touched again never piles up threads.
    parsing: InFlight,
}

/// A file's whole desired set, for one transaction with others.
struct FileSet<'a> {
    path: PathBuf,
    declared: Vec<(ProcessId, ProcessSpec)>,
    /// Files removed in the same change whose names this one may take over.
    released: &'a [Source],
}

/// One file's content, read and parsed, ready to be applied.
enum Read {
    Declares(Vec<(ProcessId, ProcessSpec)>),
    /// An existing file that declares nothing (see `SpecDir::read`).
    Empty,
    Invalid,
}

impl SpecDir {
    fn rescan(self: &Arc<Self>, which: Rescan) {
        if let Err(error) = self.full_scan(which) {
            tracing::error!(error = %Chain(&error), "spec directory rescan failed");
        }
    }

    fn stamps(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, FileStamp>> {
        // Every update is one insert or remove, so a panic elsewhere cannot leave it half-made.
        self.stamps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the spec files in the directory (every one, or the ones that changed since they
    /// were read) and removes what files that are gone declared.
    fn full_scan(self: &Arc<Self>, which: Rescan) -> Result<(), SpecWatchError> {
        let present: BTreeSet<PathBuf> = spec_files_in(&self.dir)
            .map_err(|source| SpecWatchError::ReadDir {
                dir: self.dir.clone(),
                source,
            })?
            .into_iter()
            .collect();
        let mut touched: BTreeSet<PathBuf> = match which {
            Rescan::All => present.clone(),
            Rescan::Changed => {
                let stamps = self.stamps();
                present
                    .iter()
                    .filter(|path| stamps.get(*path).copied() != FileStamp::of(path))
                    .cloned()
                    .collect()
            }
        };
        let (records, _corrupt) = self.store.desired_stamps().map_err(SpecWatchError::Store)?;
        for record in records {
            if let Source::File { path } = record.source {
                if !present.contains(&path) {
                    touched.insert(path);
                }
            }
        }
        // Problems of files that are gone are forgotten with them.
        touched.extend(
            self.problems
                .files_with_problems()
                .into_iter()
                .filter(|path| !present.contains(path)),
        );
        if !touched.is_empty() {
            self.apply_changed(touched);
        }
        Ok(())
    }

    /// Reads each changed spec file again (a missing one declares nothing) and applies them in
    /// transactions that grow from `FIRST_APPLY_BATCH` to `APPLY_BATCH` files, then retries
    /// files whose names were owned by another file, in case the owner let go.
    fn apply_changed(self: &Arc<Self>, changed: BTreeSet<PathBuf>) {
        // Removed files after present ones, so that a name moved from one file to another (a
        // rename) is taken over by the new file before the old file's records go, never
        // undesired in between.
        let (present, removed): (Vec<PathBuf>, Vec<PathBuf>) = changed
            .into_iter()
            .filter(|path| is_spec_file_name(path))
            .partition(|path| path.starts_with(&self.dir) && has_entry(path));
        for outside in removed.iter().filter(|path| !path.starts_with(&self.dir)) {
            // The directory is the one truth for what files declare: a record of a file
            // elsewhere (the launcher ran with another --specs-dir) is not wanted any more,
            // even if that file is still there.
            tracing::warn!(file = %outside.display(), specs_dir = %self.dir.display(),
                "a spec file outside the spec directory declared processes in an earlier run; they are removed");
        }
        let gone: Vec<Source> = removed.iter().map(|path| Source::file(path)).collect();
        let mut released = false;
        for batch in growing_batches(&present, FIRST_APPLY_BATCH, APPLY_BATCH) {
            let mut files: Vec<FileSet<'_>> = Vec::new();
            for (path, read) in self.read_all(batch.to_vec()) {
                match read {
                    Read::Declares(declared) => files.push(FileSet {
                        path,
                        declared,
                        released: &gone,
                    }),
                    Read::Empty | Read::Invalid => {}
                }
            }
            released |= self.apply(&files);
        }
        let mut files: Vec<FileSet<'_>> = Vec::new();
        for path in removed {
            self.stamps().remove(&path);
            files.push(FileSet {
                path,
                declared: Vec::new(),
                released: &[],
            });
        }
        if !files.is_empty() {
            // A map keeps the room of the most entries it ever held (0.9 MB after 10,000 files
            // came and went), which the allocator cannot return while the map holds it.
            let mut stamps = self.stamps();
            if stamps.capacity() > 2 * stamps.len() + SPARE_STAMPS {
                stamps.shrink_to_fit();
            }
        }
        // Removals in one transaction, as before the batches: batched, they left the memory
        // after a stop of 10,000 where it was (BENCHMARKS.md) and added a flush per batch to
        // the path of a mass stop.
        released |= self.apply(&files);
        if released {
            let waiting: Vec<FileSet<'_>> = self
                .problems
                .files_with_conflicts()
                .into_iter()
                .filter_map(|path| match self.read(&path) {
                    Read::Declares(declared) => Some(FileSet {
                        path,
                        declared,
                        released: &[],
                    }),
                    Read::Empty | Read::Invalid => None,
                })
                .collect();
            self.apply(&waiting);
        }
    }

    /// Reads and parses `paths` (in their order), on a few threads when there are many (a start
    /// with a thousand files, or a thousand dropped in at once): nothing a file declares starts
    /// before the file is read (nor, after a run that left records of files, before the whole
    /// directory is), so its reading is on the path of every start.
    fn read_all(self: &Arc<Self>, paths: Vec<PathBuf>) -> Vec<(PathBuf, Read)> {
        // A read only panics on a bug; that file is then left as it was until the next change
        // or rescan reads it again.
        let specs = Arc::clone(self);
        crate::parallel::map_in_parallel(paths, PARALLEL_READ_FROM, move |path| {
            let read = specs.read(&path);
            (path, read)
        })
    }

    /// Reads and parses one file that exists, recording its problems when it is invalid.
    fn read(&self, path: &Path) -> Read {
        let stamp = FileStamp::of(path);
        let loaded = self.load_within_budget(path, stamp.as_ref());
        if let Some(stamp) = stamp {
            self.stamps().insert(path.to_path_buf(), stamp);
        }
        match loaded {
            // An editor truncates a file before writing it again: an existing file that
            // declares nothing is taken for one caught mid-write, not as a wish to stop
            // everything it declared. Deleting the file is how that is said.
            Ok(specs) if specs.is_empty() => {
                tracing::warn!(file = %path.display(), "spec file declares no process; what it declared before keeps running (delete the file to stop it)");
                self.problems.set_invalid(
                    path,
                    vec![format!(
                        "{}: the file declares no process; what it declared before keeps running (delete the file to stop it)",
                        path.display()
                    )],
                );
                Read::Empty
            }
            Ok(specs) => {
                Read::Declares(specs.into_iter().map(|spec| (spec.id, spec.spec)).collect())
            }
            Err(errors) => {
                for error in &errors {
                    tracing::error!(%error, "spec file rejected; what it declared before keeps running");
                }
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                self.problems.set_invalid(path, errors.clone());
                Read::Invalid
            }
        }
    }

    /// Reads and parses one file; one larger than `BUDGETED_FROM_BYTES` is parsed on a thread of
    /// its own and given up after `PARSE_BUDGET` (reported as the file's problem), so that a
    /// text that is slow to parse in some way the shape scan did not foresee costs that file,
    /// not the directory's other files or the start of what they declare. A given-up parse
    /// runs on to its end on its thread, bounded by the file's size.
    /// `stamp` is the file's, read just before (a file that cannot be looked at is not small).
    fn load_within_budget(
        &self,
        path: &Path,
        stamp: Option<&FileStamp>,
    ) -> Result<Vec<FileSpec>, Vec<SpecError>> {
        let small = stamp.is_some_and(|stamp| stamp.len <= BUDGETED_FROM_BYTES);
        if small {
            return load_spec_file(path, &read_catalog(&self.catalog));
        }
        let catalog = self.catalog.clone();
        within_budget(path, PARSE_BUDGET, &self.parsing, move |path| {
            load_spec_file(path, &read_catalog(&catalog))
        })
    }

    /// Writes the desired sets of `files` (each may take over the names of the `released`
    /// sources) in one transaction. Returns whether any name was given up, so that files
    /// waiting for a name can take it.
    fn apply(&self, files: &[FileSet<'_>]) -> bool {
        if files.is_empty() {
            return false;
        }
        let sources: Vec<Source> = files.iter().map(|file| Source::file(&file.path)).collect();
        let sets: Vec<SourceSet<'_>> = files
            .iter()
            .zip(&sources)
            .map(|(file, source)| SourceSet {
                source,
                specs: &file.declared,
                released: file.released,
            })
            .collect();
        let outcomes = match self.store.apply_sources(&sets) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                self.unrecorded
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let message = Chain(&error).to_string();
                for file in files {
                    tracing::error!(file = %file.path.display(), error = %message, "cannot record the spec file's desired state");
                    self.problems.set_invalid(&file.path, vec![message.clone()]);
                    // Read again at the next resync.
                    self.stamps().remove(&file.path);
                }
                return false;
            }
        };
        let mut released = false;
        for ((file, source), outcome) in files.iter().zip(&sources).zip(outcomes) {
            let path = &file.path;
            for id in &outcome.created {
                tracing::info!(%id, %source, "desired: created");
            }
            for id in &outcome.updated {
                tracing::info!(%id, %source, "desired: updated");
            }
            for id in &outcome.deleted {
                tracing::info!(%id, %source, "desired: deleted");
            }
            for (id, owner) in &outcome.conflicts {
                tracing::error!(%id, %source, %owner, "name already owned by another source; the first owner keeps it");
            }
            if file.declared.is_empty() && !path.exists() {
                self.problems.clear(path);
            } else {
                self.problems.clear_invalid(path);
                self.problems.set_conflicts(path, outcome.conflicts);
            }
            released |= !outcome.deleted.is_empty();
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_from_the_first_size_to_the_largest_and_cover_every_item_in_order() {
        let sizes = |count: usize, first: usize, most: usize| -> Vec<usize> {
            let items: Vec<usize> = (0..count).collect();
            let batches: Vec<&[usize]> = growing_batches(&items, first, most).collect();
            let joined: Vec<usize> = batches.concat();
            assert_eq!(joined, items, "{count} items, first {first}, most {most}");
            batches.iter().map(|batch| batch.len()).collect()
        };
        assert_eq!(sizes(1000, 64, 512), [64, 128, 256, 512, 40]);
        assert_eq!(sizes(2000, 64, 512), [64, 128, 256, 512, 512, 512, 16]);
        assert_eq!(sizes(10, 64, 512), [10]);
        assert_eq!(sizes(0, 64, 512), Vec::<usize>::new());
        assert_eq!(sizes(5, 0, 0), [1, 1, 1, 1, 1]);
    }

    #[test]
    fn the_stamps_of_removed_files_give_back_their_room() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("specs");
        std::fs::create_dir(&dir).unwrap();
        let specs = Arc::new(SpecDir {
            dir: dir.clone(),
            store: Arc::new(Store::open(&root.path().join("store")).unwrap()),
            catalog: SharedCatalog::default(),
            problems: SourceProblems::default(),
            stamps: Mutex::default(),
            unrecorded: std::sync::atomic::AtomicUsize::new(0),
            parsing: Arc::default(),
        });
        let files = 4 * SPARE_STAMPS;
        for n in 0..files {
            std::fs::write(
                dir.join(format!("s{n}.yaml")),
                format!(
                    "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: s{n}}}\n\
                     spec: {{type: utility, binary: /bin/sleep, args: [\"1000\"]}}\n"
                ),
            )
            .unwrap();
        }
        specs.full_scan(Rescan::All).unwrap();
        assert_eq!(specs.stamps().len(), files);
        assert_eq!(specs.store.desired_count().unwrap(), files);
        // Most files go: the map shrinks to what is left.
        for n in 1..files {
            std::fs::remove_file(dir.join(format!("s{n}.yaml"))).unwrap();
        }
        specs.full_scan(Rescan::Changed).unwrap();
        assert_eq!(specs.store.desired_count().unwrap(), 1);
        let stamps = specs.stamps();
        assert_eq!(stamps.len(), 1);
        assert!(
            stamps.capacity() <= 2 + SPARE_STAMPS,
            "capacity {} kept for 1 file",
            stamps.capacity()
        );
    }

    #[test]
    fn a_slow_parse_is_given_up_at_its_budget_and_never_run_twice_at_once() {
        let in_flight = InFlight::default();
        let path = Path::new("/specs/slow.yaml");
        let (release, released) = std::sync::mpsc::channel::<()>();
        // A parse that ends only when the test says so.
        let slow = move |_: &Path| {
            let _ = released.recv();
            Ok(Vec::new())
        };
        let first = within_budget(path, Duration::from_millis(20), &in_flight, slow).unwrap_err();
        assert!(
            first[0].message.contains("took longer than 20ms"),
            "{first:?}"
        );
        // Still running: a second parse of the same file is refused at once.
        let second = within_budget(
            path,
            Duration::from_secs(60),
            &in_flight,
            |_| Ok(Vec::new()),
        )
        .unwrap_err();
        assert!(second[0].message.contains("still running"), "{second:?}");
        // Another file is not held up by it.
        assert_eq!(
            within_budget(
                Path::new("/specs/other.yaml"),
                Duration::from_secs(60),
                &in_flight,
                |_| Ok(Vec::new())
            ),
            Ok(Vec::new())
        );
        // Once the slow parse ends, the file can be parsed again.
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while in_flight.lock().unwrap().contains(path) {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow parse never ended"
            );
            std::thread::yield_now();
        }
        assert_eq!(
            within_budget(
                path,
                Duration::from_secs(60),
                &in_flight,
                |_| Ok(Vec::new())
            ),
            Ok(Vec::new())
        );
    }
}
