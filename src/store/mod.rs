//! The embedded sled store: desired and observed records, generations, schema version, and the
//! change notifications that wake the reconcile loop. The only module that names sled.
//!
//! Every write that someone is told about is flushed first: a caller that got `Ok` may crash the
//! next instant and the record is still there when the launcher starts again.
//!
//! Records are serde JSON of the domain types (`crate::reconcile`) in the shape of
//! `SCHEMA_VERSION`, which the `meta` tree records. A change of that shape (a field added,
//! removed or retyped, even one with a serde default) bumps `SCHEMA_VERSION` with a migration in
//! `migrate`, run once when an older store is opened. A store written by a newer launcher, or
//! with a version no launcher writes, is refused with a message, never misread.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::reconcile::{
    admin_set_changes, admit_term, join, operate, AdminTerm, AdminView, DesiredRecord, ExitStatus,
    ObservedRecord, OperatorRefusal, OperatorVerb, ProcessId, ProcessRow, ProcessSpec, Settled,
    Source, SourceKind, SpawnIntent, StaleTerm, UnixMillis,
};

/// The shape of the records this build reads and writes: serde JSON of the domain types as they
/// are now, the fields that hold their default left out (version 3). Any change of that shape bumps it, with a migration from the
/// previous version in `migrate`, so that no record is ever read in a shape it was not written in.
///
/// Version 1 let records omit fields added over time (with serde defaults): `success_exit_codes`,
/// `backoff` and `type_config` of a spec, `resets` of a desired record, and `instance`,
/// `resets_seen`, `tripped_at` and `exited_at` of an observed record. Version 2 writes every one
/// (and requires all but the three optional ones, which serde reads as absent anyway);
/// `migrate::from_v1` fills them in. Version 2 also adds the `intents` tree (spawns about to
/// happen). `tests::the_stored_shape_is_the_one_of_the_schema_version` pins the shape, so a
/// change of it cannot go unnoticed.
///
/// Version 3 leaves out of each record the fields that hold their type's default (no value, an
/// empty list, zero, `false`, the default variant), and reads an absent field as that default:
/// a spec of a few fields is stored in a third of the bytes, and the store's cache of the records
/// shrinks with them (0.6 to 1 MiB at 1000 processes). Every version-2 record is a version-3
/// record as it is, so `migrate::from_v2` only records the new version.
///
/// Version 4 adds the operator's verbs and the history `describe` reads: `held` and `restarts`
/// on a desired record, `restarts_seen` on an observed one (all left out at their default, so a
/// version-3 record is a version-4 record), the stop reasons `Held` and `Restart`, and the trees
/// `restarts` (each id's restart count, kept across deletes like `resets`) and `history` (each
/// id's last events). A version-3 launcher would read a held process as one to start, so the
/// version moves: `migrate::from_v3` only records it.
///
/// Version 5 stores a history as one record per event under the key `<id> NUL <seq>` (`seq` a
/// big-endian u64, see `history`) instead of one JSON list per id under `<id>`, so that a
/// pass appends an event without reading and rewriting the id's whole history.
/// `migrate::from_v4` moves every version-4 history into that shape, keeping its events.
pub const SCHEMA_VERSION: u32 = 5;

const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

/// The fields of a stored desired record that change whenever the record does: the spec with
/// the generation, an operator's reset, hold and restart with `resets`, `held` and `restarts`,
/// and the owner with `source`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DesiredStamp {
    pub id: ProcessId,
    pub generation: u64,
    #[serde(default)]
    pub resets: u64,
    #[serde(default)]
    pub held: bool,
    #[serde(default)]
    pub restarts: u64,
    pub source: Source,
}

impl DesiredStamp {
    /// Whether `record` is the version of the record this stamp was read from.
    pub fn matches(&self, record: &DesiredRecord) -> bool {
        self.id == record.id
            && self.generation == record.generation
            && self.resets == record.resets
            && self.held == record.held
            && self.restarts == record.restarts
            && self.source == record.source
    }
}
const LAUNCHER_ID_KEY: &[u8] = b"launcher_id";

/// The key of the newest prism-admin term seen, in the `admin` tree (a JSON number).
const ADMIN_TERM_KEY: &[u8] = b"term";
/// Present while prism-admin's processes are stopped for the disconnect grace.
const ADMIN_SUSPENDED_KEY: &[u8] = b"suspended";

/// The prefix of the keys that mark admin-owned ids unconfirmed, in the `admin` tree: then the
/// id (which never holds a NUL).
const UNCONFIRMED_PREFIX: &str = "unconfirmed\0";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "the store at {path} is in use by another running launcher; stop it or use another --data-dir"
    )]
    Locked { path: PathBuf },
    /// The store was written by a newer launcher; `found` is its schema version as stored.
    #[error(
        "the store at {path} was written by a newer prism-launcher (schema version {found}); \
         this launcher reads version {SCHEMA_VERSION} and migrates versions 1 to 4 to it, so \
         upgrade the launcher or move the data directory aside"
    )]
    UnsupportedSchema { path: PathBuf, found: String },
    /// The stored schema version is no version any launcher writes (not a decimal number, or 0).
    #[error(
        "the store at {path} has an unreadable schema version {found:?}: no prism-launcher \
         writes it (this launcher reads version {SCHEMA_VERSION} and migrates versions 1 to 4 to it), \
         so move the data directory aside"
    )]
    UnreadableSchema { path: PathBuf, found: String },
    /// sled could not be opened again after `Store::release_memory` closed it.
    #[error(
        "cannot open the store at {path} again after closing it to give its memory back; \
         store calls fail until an attempt to open it again succeeds"
    )]
    Reopen {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    /// sled's database file is no longer the one this store opened (the directory was moved
    /// aside or removed, or the file replaced, while the launcher ran): opening the path again
    /// would make a new, empty store in its place, or open another launcher's.
    #[error(
        "the store at {path} is no longer the database this launcher opened (its directory or \
         its `db` file was moved, removed or replaced while the launcher ran), so it is not \
         opened again, and no new store is made in its place; restart the launcher"
    )]
    Replaced { path: PathBuf },
    /// A call made while sled is closed after a failed attempt to open it again, until
    /// `Store::open_again` succeeds.
    #[error(
        "the store at {path} is closed: opening it again after it gave its memory back failed, \
         and the launcher tries again every second"
    )]
    Closed { path: PathBuf },
    #[error("store operation failed while {action}")]
    Io {
        action: String,
        #[source]
        source: sled::Error,
    },
    #[error("cannot keep the journal of spawns about to happen: {action}")]
    Journal {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("record {key:?} in the {tree} tree is corrupt")]
    Corrupt {
        tree: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the {tree} record {key:?}")]
    Encode {
        tree: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the assignment of {id} at version {offered} is older than the stored version {stored}; \
         it was refused and nothing changed"
    )]
    StaleVersion {
        id: ProcessId,
        stored: i64,
        offered: i64,
    },
    #[error("process {id} is owned by {owner}; {requester} cannot change it")]
    OwnedByAnother {
        id: ProcessId,
        owner: Source,
        requester: Source,
    },
    /// A request of a stale prism-admin (`reconcile::admit_term`).
    #[error("{0}; the request of a stale admin was refused and nothing changed")]
    StaleAdminTerm(StaleTerm),
}

/// What writing the whole set of a source changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub created: Vec<ProcessId>,
    pub updated: Vec<ProcessId>,
    pub deleted: Vec<ProcessId>,
    pub unchanged: Vec<ProcessId>,
    /// Ids the source declared that another source owns; they were left to their owner.
    pub conflicts: Vec<(ProcessId, Source)>,
    /// prism-admin's ids that a partial view did not name: kept, and marked unconfirmed.
    pub unconfirmed: Vec<ProcessId>,
}

impl ApplyOutcome {
    pub fn changed(&self) -> impl Iterator<Item = &ProcessId> {
        self.created
            .iter()
            .chain(&self.updated)
            .chain(&self.deleted)
    }
}

/// The whole desired set of one source, for `Store::apply_sources`.
#[derive(Debug, Clone, Copy)]
pub struct SourceSet<'a> {
    pub source: &'a Source,
    pub specs: &'a [(ProcessId, ProcessSpec)],
    /// Sources going away in the same change whose ids `source` may take over.
    pub released: &'a [Source],
}

/// What an operator's verb (`Store::operate`) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operated {
    /// Nothing desires the id.
    NotDesired,
    /// The verb does not apply to the record as it is; nothing changed.
    Refused {
        record: DesiredRecord,
        refusal: OperatorRefusal,
    },
    /// Applied: the record before and after (the same when the verb had been applied already).
    Done {
        before: DesiredRecord,
        after: DesiredRecord,
    },
}

/// What an admin assignment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigned {
    Created,
    /// A newer version replaced the stored one.
    Updated,
    /// The same version again: nothing changed.
    Unchanged,
}

/// The launcher's persistent state.
pub struct Store {
    path: PathBuf,
    /// Which file sled's database is (`db` in the store's directory, as opened): sled opens the
    /// path again only while it still names that file.
    db_file: FileIdentity,
    /// sled's database and trees, taken for reading by every call that uses them (`with_trees`)
    /// and for writing by `release_memory` and `open_again`.
    trees: RwLock<Slot>,
    /// The sequence number of each id's next event, for the ids whose history this run wrote.
    /// Outside `Trees`: what it says is on disk, so it holds across a reopen.
    history_next: Mutex<HashMap<ProcessId, u64>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<ProcessId>>>,
    /// Spawns under way: written before a spawn, kept until its process is recorded in
    /// `observed`, so that a launcher that crashes in between adopts that process rather than
    /// starting another.
    journal: intent_journal::IntentJournal,
    /// Bumped after each flush that made observed writes durable, so that callers can wait for
    /// the loop's outcome without polling.
    observed_epoch: watch::Sender<u64>,
    observed_unflushed: AtomicBool,
    /// The lock that keeps other launchers out of this store for as long as it is open, sled's
    /// own lock included: held across `release_memory`, which lets go of sled's lock for a
    /// moment. Declared last, so that it is dropped last (fields drop in order): only once
    /// sled is closed may another launcher open the store.
    _lock: StoreLock,
}

/// What `Store::trees` holds.
enum Slot {
    Open(Trees),
    /// `release_memory` closed sled and could not open it again (or sled's drop failed):
    /// calls fail at once with `StoreError::Closed` until `Store::open_again` succeeds. Only a
    /// release closes the slot, and only after a flush that succeeded, and no write succeeds
    /// while it is closed: everything written before is durable.
    Closed,
}

/// sled's database and every tree of the store: all that sled keeps in memory, dropped whole
/// and opened again by `Store::release_memory`. Nothing outside `Store::with_trees` and
/// `Store::release_memory` ever holds one of these handles (or a sled iterator, which holds its
/// tree), so none outlives a reopen.
struct Trees {
    db: sled::Db,
    desired: sled::Tree,
    observed: sled::Tree,
    /// The last generation given to each id; kept after deletes so generations never repeat.
    generations: sled::Tree,
    /// The last exit of each id and when it happened, kept after the id is forgotten, so that
    /// RevokeProcess can answer the real exit code.
    exits: sled::Tree,
    /// The last reset count of each id; kept after deletes so that a recreated id's resets
    /// keep growing and are never mistaken for ones already acted on.
    resets: sled::Tree,
    /// The last restart count of each id, kept after deletes for the same reason as `resets`.
    restarts: sled::Tree,
    /// The last `MAX_LIFE_EVENTS` events of each id (`describe`), one key per event (see
    /// `history`), written by the loop with its observed records and removed when it forgets
    /// the id.
    history: sled::Tree,
    /// `<owner>\0<id>` for each desired record, so a source's records are found without a scan.
    by_owner: sled::Tree,
    meta: sled::Tree,
    /// What prism-admin told this launcher beyond its records: the newest term seen (fencing a
    /// stale admin; durable, so a restart does not forget it) and the admin-owned ids that its
    /// last view left unconfirmed.
    admin: sled::Tree,
    /// Grace periods asked for with a delete, for the loop to use when it stops the process.
    stop_requests: sled::Tree,
    /// Spawns under way, as written by launchers before this journal existed: read and emptied
    /// at start.
    intents: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The most memory sled keeps of the store's pages (its default is 1 GiB, which keeps every
/// record ever read or written in memory: a store of 10,000 processes held 80 MiB, kept after
/// they were all gone). Pages beyond it are read again from the file, which the kernel caches.
/// Measured at 10,000 processes (BENCHMARKS.md, "A smaller store"): 4 MiB keeps the launcher at
/// 64 MiB against 82 with 16 MiB and 67 with 1 MiB (more pages read and dropped again leave more
/// freed memory behind), and a resync reads the 10,000 records back no slower (20 ms vs 23). A
/// store of 1000 processes (about 1.5 MiB of records) fits whole.
const STORE_CACHE_BYTES: u64 = 4 << 20;

/// How long reopening sled waits for its file lock: sled finishes its last log writes on its
/// own threads, which hold the database file for a moment after the last handle is dropped.
const REOPEN_LOCK_WAIT: Duration = Duration::from_secs(1);

/// The file that the store's own lock is taken on, in its directory.
const LOCK_FILE: &str = "launcher.lock";

/// A file's device and inode: what tells it apart from another file at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    /// The identity of sled's database file in `dir` (its `db`), `None` when there is none.
    fn of_database(dir: &Path) -> Result<Option<FileIdentity>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(dir.join("db")) {
            Ok(metadata) => Ok(Some(FileIdentity {
                dev: metadata.dev(),
                ino: metadata.ino(),
            })),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(StoreError::Open {
                path: dir.to_path_buf(),
                source: sled::Error::Io(error),
            }),
        }
    }
}

/// An exclusive `flock` on the store's lock file, held from before sled is opened until the
/// store is dropped (or its launcher dies), so that no other launcher opens the store while
/// this one has it, even in the moment `Store::release_memory` lets go of sled's own lock.
#[derive(Debug)]
struct StoreLock {
    /// Never read: dropping it unlocks.
    _held: nix::fcntl::Flock<std::fs::File>,
}

impl StoreLock {
    fn take(dir: &Path) -> Result<StoreLock, StoreError> {
        let lock_error = |source: std::io::Error| StoreError::Open {
            path: dir.to_path_buf(),
            source: sled::Error::Io(source),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(lock_error)?;
        // Opened close-on-exec (as every file std opens), so no child inherits the lock.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(LOCK_FILE))
            .map_err(lock_error)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(StoreLock { _held: held }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Locked {
                path: dir.to_path_buf(),
            }),
            Err((_, errno)) => Err(lock_error(errno.into())),
        }
    }
}

#[cfg(debug_assertions)]
thread_local! {
    /// Whether this thread holds a store's trees (`Store::with_trees`, `release_memory`).
    static HOLDING_TREES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks, in a debug build, that this thread holds the trees, and fails loudly if it held them
/// already: the read lock taken twice by one thread deadlocks as soon as a `release_memory`
/// waits for the write lock in between (std's lock makes new readers wait for a waiting
/// writer), so no call that holds the trees may make another. Every test runs with this check.
struct HoldingTrees;

impl HoldingTrees {
    fn enter() -> HoldingTrees {
        #[cfg(debug_assertions)]
        {
            let held = HOLDING_TREES.with(|holding| holding.replace(true));
            debug_assert!(
                !held,
                "a store call made while this thread holds the store's trees"
            );
        }
        HoldingTrees
    }
}

impl Drop for HoldingTrees {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        HOLDING_TREES.with(|holding| holding.set(false));
    }
}

/// See `Store::keep_open_through_releases`: a handle that keeps the database open.
#[cfg(test)]
pub(crate) struct KeptOpen {
    /// Never read: a tree holds the database open until dropped.
    _held: sled::Tree,
}

/// See `Store::hold_as_if_releasing`.
#[cfg(test)]
pub(crate) struct HeldAsIfReleasing<'a> {
    _trees: RwLockWriteGuard<'a, Slot>,
    _holding: HoldingTrees,
}

impl Trees {
    /// Opens (or creates) sled's database in `dir` with the store's trees, and checks the
    /// schema version (migrating an older store).
    fn open(dir: &Path) -> Result<Trees, StoreError> {
        let open_error = |source| StoreError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(STORE_CACHE_BYTES)
            // Every write that matters is flushed explicitly (see the module docs), so sled's
            // periodic flusher would only add background I/O, and its thread would hold the
            // database (and its lock) for a moment after the store is dropped.
            .flush_every_ms(None)
            .open()
            .map_err(|error| match &error {
                // sled takes an exclusive, non-blocking file lock and reports a held one only
                // through this message.
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        path: dir.to_path_buf(),
                    }
                }
                _ => open_error(error),
            })?;
        io_pool::start_once(&db);
        let tree = |name: &str| db.open_tree(name).map_err(open_error);
        let trees = Trees {
            desired: tree("desired")?,
            observed: tree("observed")?,
            generations: tree("generations")?,
            by_owner: tree("by_owner")?,
            resets: tree("resets")?,
            restarts: tree("restarts")?,
            history: tree("history")?,
            exits: tree("exits")?,
            meta: tree("meta")?,
            admin: tree("admin")?,
            stop_requests: tree("stop_requests")?,
            intents: tree("intents")?,
            db,
        };
        trees.check_schema(dir)?;
        Ok(trees)
    }

    /// `open`, waiting up to `wait` for the lock of a database this process dropped an instant
    /// ago (see `REOPEN_LOCK_WAIT`).
    fn open_waiting(dir: &Path, wait: Duration) -> Result<Trees, StoreError> {
        let give_up = std::time::Instant::now() + wait;
        loop {
            match Trees::open(dir) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                opened => return opened,
            }
        }
    }

    /// Makes every write made so far durable (sled's flush: its buffers written and the file
    /// fsynced).
    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map_err(|source| io("flushing to disk", source))?;
        Ok(())
    }

    /// Accepts a store of `SCHEMA_VERSION`, records it in a new one, migrates one of versions 1
    /// to 4, and refuses anything else, before anyone reads a record.
    fn check_schema(&self, path: &Path) -> Result<(), StoreError> {
        let found = self
            .meta
            .get(SCHEMA_VERSION_KEY)
            .map_err(|source| io("reading the schema version", source))?;
        let Some(bytes) = found else {
            // Every launcher records the version when it creates a store, so a store without
            // one is new. Should it hold records anyway, they are of a shape no later than
            // version 1 (whose migration leaves complete records alone), never assumed current.
            if !self.desired.is_empty() || !self.observed.is_empty() {
                return self.migrate_from(1, path);
            }
            self.meta
                .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_string().as_bytes())
                .map_err(|source| io("writing the schema version", source))?;
            return self.flush();
        };
        let found = || String::from_utf8_lossy(&bytes).into_owned();
        match parse_schema_version(&bytes) {
            Some(version) if version == u64::from(SCHEMA_VERSION) => Ok(()),
            Some(version @ 1..=4) => self.migrate_from(version, path),
            Some(version) if version > u64::from(SCHEMA_VERSION) => {
                Err(StoreError::UnsupportedSchema {
                    path: path.to_path_buf(),
                    found: found(),
                })
            }
            // 0, or not a number at all.
            _ => Err(StoreError::UnreadableSchema {
                path: path.to_path_buf(),
                found: found(),
            }),
        }
    }

    /// Runs the migrations from `version` (1 to 4) to `SCHEMA_VERSION`, one after the other;
    /// each records the version it produces, so a crash between two resumes at the next.
    fn migrate_from(&self, version: u64, path: &Path) -> Result<(), StoreError> {
        if version <= 1 {
            migrate::from_v1(self, path)?;
        }
        if version <= 2 {
            migrate::from_v2(self, path)?;
        }
        if version <= 3 {
            migrate::from_v3(self, path)?;
        }
        migrate::from_v4(self, path)
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, checking its schema version.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let lock = StoreLock::take(dir)?;
        let trees = Trees::open(dir)?;
        let db_file = FileIdentity::of_database(dir)?.ok_or_else(|| StoreError::Open {
            path: dir.to_path_buf(),
            source: sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "sled's `db` file is missing right after sled opened it",
            )),
        })?;
        Ok(Store {
            path: dir.to_path_buf(),
            db_file,
            trees: RwLock::new(Slot::Open(trees)),
            history_next: Mutex::new(HashMap::new()),
            journal: intent_journal::IntentJournal::open(dir)?,
            observed_epoch: watch::Sender::new(0),
            observed_unflushed: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
            _lock: lock,
        })
    }

    /// Runs `read` on sled's trees, held for reading (a `release_memory` waits for it to end,
    /// and it waits for a `release_memory` under way). After a `release_memory` that could not
    /// open sled again, fails at once with `StoreError::Closed` until `open_again` succeeds: no
    /// call opens sled on its own, so none (the loop's least of all) is held up by an attempt.
    /// `read` must not call another method of the store (see `HoldingTrees`), nor return a sled
    /// handle or iterator (which would outlive a reopen).
    fn with_trees<T>(
        &self,
        read: impl FnOnce(&Trees) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _holding = HoldingTrees::enter();
        match &*self.read_trees() {
            Slot::Open(trees) => read(trees),
            Slot::Closed => Err(StoreError::Closed {
                path: self.path.clone(),
            }),
        }
    }

    // The lock guards one `Slot` that is only ever replaced whole, so a panic while it is held
    // cannot leave it half-written: a poisoned lock still guards a consistent value.
    fn read_trees(&self) -> RwLockReadGuard<'_, Slot> {
        self.trees
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_trees(&self) -> RwLockWriteGuard<'_, Slot> {
        self.trees
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens sled again into `slot` after `release_memory` closed it, waiting up to `wait` for
    /// sled's lock; on failure, the slot stays closed.
    fn reopen(&self, slot: &mut Slot, wait: Duration) -> Result<(), StoreError> {
        let opened = match FileIdentity::of_database(&self.path) {
            Ok(Some(found)) if found == self.db_file => Trees::open_waiting(&self.path, wait),
            Ok(_) => Err(StoreError::Replaced {
                path: self.path.clone(),
            }),
            Err(error) => Err(error),
        };
        match opened {
            Ok(trees) => {
                *slot = Slot::Open(trees);
                Ok(())
            }
            Err(source) => {
                *slot = Slot::Closed;
                Err(StoreError::Reopen {
                    path: self.path.clone(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Closes sled and opens the store again, which hands back the memory that sled keeps of
    /// the store at its largest. sled keeps, for as long as it is open, an entry of its page
    /// table for every page the store ever had (freed ones included), the pages of its cache
    /// and its bookkeeping of them, allocated all through a burst among the burst's short-lived
    /// allocations: after 10,000 spec files added and removed, 20 to 30 thousand small
    /// allocations that keep 20 MiB of otherwise free heap pages resident, which no allocator
    /// can return while they live. Opened again, sled reads back only what is used (and replays
    /// its log since it was last opened, the most of the time this takes: tens of
    /// milliseconds after a burst of ten thousand).
    ///
    /// Calls under way finish first (they hold the trees for reading), then everything they
    /// and earlier calls wrote is flushed (sled's flush: written and fsynced, so a crash from
    /// here on loses nothing; sled's drop flushes and fsyncs again), and only then is sled
    /// dropped; calls made meanwhile wait and then use the store opened again, so no write is
    /// lost, nor made to a closed sled. If the flush fails, sled is kept open as it was and the
    /// error returned. If sled cannot be opened again, the error (`StoreError::Reopen`) is
    /// returned and calls fail with `StoreError::Closed` until an `open_again` succeeds (the
    /// caller's to schedule, off the loop); the store's own lock keeps other launchers out
    /// meanwhile. The intent journal is no part of sled and stays open throughout. Returns how
    /// long calls were held up.
    pub fn release_memory(&self) -> Result<Duration, StoreError> {
        let _holding = HoldingTrees::enter();
        let mut slot = self.write_trees();
        let started = Instant::now();
        if let Slot::Open(trees) = &*slot {
            self.flush_trees(trees)?;
        }
        // sled has no `close`: a database closes when its last handle is dropped, and these
        // are all of them (the trees hold it too). Taken out before it is dropped, so the slot
        // says closed (and `open_again` opens sled again) even if sled's drop panics.
        let closed = std::mem::replace(&mut *slot, Slot::Closed);
        drop(closed);
        self.reopen(&mut slot, REOPEN_LOCK_WAIT)?;
        Ok(started.elapsed())
    }

    /// Opens sled again after a `release_memory` that could not (`StoreError::Reopen`); does
    /// nothing when it is open. Holds every call up while it runs (tens of milliseconds when it
    /// succeeds), so it is for a thread of its own, never the loop's. No wait for sled's lock:
    /// the release that closed it let go of it long before.
    pub fn open_again(&self) -> Result<(), StoreError> {
        let _holding = HoldingTrees::enter();
        let mut slot = self.write_trees();
        match &*slot {
            Slot::Open(_) => Ok(()),
            Slot::Closed => self.reopen(&mut slot, Duration::ZERO),
        }
    }

    /// Whether a call made now would wait (a `release_memory` or an `open_again` under way or
    /// about to start: tens of milliseconds) or fail at once (closed after a failed reopen,
    /// until an `open_again` succeeds). The loop leaves its store calls for later meanwhile, so
    /// that what it does without the store (a restart after a crash) is not held up.
    pub fn is_busy(&self) -> bool {
        match self.trees.try_read() {
            Ok(slot) => matches!(*slot, Slot::Closed),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                matches!(*poisoned.into_inner(), Slot::Closed)
            }
            // Held for writing, or a writer waits for it (std's lock then makes readers wait).
            Err(std::sync::TryLockError::WouldBlock) => true,
        }
    }

    /// Holds the trees as a `release_memory` under way does, until the value is dropped (for
    /// tests of what must not wait for one). A store call made by this thread meanwhile fails
    /// the debug check of `HoldingTrees` rather than deadlock.
    #[cfg(test)]
    pub(crate) fn hold_as_if_releasing(&self) -> HeldAsIfReleasing<'_> {
        HeldAsIfReleasing {
            _trees: self.write_trees(),
            _holding: HoldingTrees::enter(),
        }
    }

    /// Keeps the database open (and its lock held) through every `release_memory` until the
    /// value is dropped, so that a release cannot open it again (for tests of a failed
    /// reopen).
    #[cfg(test)]
    pub(crate) fn keep_open_through_releases(&self) -> KeptOpen {
        match &*self.read_trees() {
            Slot::Open(trees) => KeptOpen {
                _held: trees.meta.clone(),
            },
            Slot::Closed => panic!("keep_open_through_releases: the store is closed"),
        }
    }

    /// Closes sled as a `release_memory` whose reopen failed leaves it (flushed first, as a
    /// release does): calls fail with `StoreError::Closed` until `open_again` (for tests of
    /// what a failing store must not lose).
    #[cfg(test)]
    pub(crate) fn close_as_if_reopen_failed(&self) {
        let _holding = HoldingTrees::enter();
        let mut slot = self.write_trees();
        if let Slot::Open(trees) = &*slot {
            self.flush_trees(trees).unwrap();
        }
        *slot = Slot::Closed;
    }

    /// The launcher id recorded in this store, or `candidate` recorded as it if there is none.
    pub fn launcher_id_or_insert(&self, candidate: &str) -> Result<String, StoreError> {
        let previous = self.with_trees(|trees| {
            trees
                .meta
                .compare_and_swap(
                    LAUNCHER_ID_KEY,
                    None as Option<&[u8]>,
                    Some(candidate.as_bytes()),
                )
                .map_err(|source| io("recording the launcher id", source))
        })?;
        match previous {
            Ok(()) => {
                self.flush()?;
                Ok(candidate.to_string())
            }
            Err(existing) => Ok(existing
                .current
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|| candidate.to_string())),
        }
    }

    /// A stream of ids whose desired record changed, sent after the change is durable.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ProcessId> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock_subscribers().push(sender);
        receiver
    }

    fn lock_subscribers(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<ProcessId>>> {
        // A panic while holding this lock cannot leave the vector half-written, so a poisoned
        // lock still guards a consistent list.
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify<'a>(&self, ids: impl IntoIterator<Item = &'a ProcessId>) {
        let mut subscribers = self.lock_subscribers();
        for id in ids {
            subscribers.retain(|subscriber| subscriber.send(id.clone()).is_ok());
        }
    }

    /// Makes every write made so far durable. On a store closed after a failed reopen there
    /// is nothing left to make durable (see `Slot::Closed`): a write that succeeded before the
    /// close (a desired record whose caller flushes next) is answered as written, and its
    /// notice sent, rather than reported failed when it is on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        let _holding = HoldingTrees::enter();
        match &*self.read_trees() {
            Slot::Open(trees) => self.flush_trees(trees),
            Slot::Closed => {
                // Observed writes whose flag was set just after the release's flush took it
                // are on disk too: the observers are told now.
                if self.observed_unflushed.swap(false, Ordering::AcqRel) {
                    self.observed_epoch.send_modify(|epoch| *epoch += 1);
                }
                Ok(())
            }
        }
    }

    /// `flush`, with the trees already held.
    fn flush_trees(&self, trees: &Trees) -> Result<(), StoreError> {
        let observed_written = self.observed_unflushed.swap(false, Ordering::AcqRel);
        if let Err(error) = trees.flush() {
            // Not durable after all: the next flush must still tell the observers.
            if observed_written {
                self.observed_unflushed.store(true, Ordering::Release);
            }
            return Err(error);
        }
        if observed_written {
            self.observed_epoch.send_modify(|epoch| *epoch += 1);
        }
        Ok(())
    }

    /// Changes each time observed records written by the loop have been flushed.
    pub fn subscribe_observed(&self) -> watch::Receiver<u64> {
        self.observed_epoch.subscribe()
    }

    pub fn desired(&self, id: &ProcessId) -> Result<Option<DesiredRecord>, StoreError> {
        let bytes = self.with_trees(|trees| {
            trees
                .desired
                .get(id.as_str())
                .map_err(|source| io(format!("reading desired record {id}"), source))
        })?;
        bytes
            .map(|bytes| decode("desired", id.as_str(), &bytes))
            .transpose()
    }

    /// Every desired record that decodes, plus an error for each one that does not.
    pub fn all_desired(&self) -> Result<(Vec<DesiredRecord>, Vec<StoreError>), StoreError> {
        self.with_trees(|trees| scan(&trees.desired, "desired"))
    }

    /// What tells each desired record's version apart (its id, generation, resets and owner),
    /// read without building its spec: a resync compares these with the records in memory and
    /// reads again only the ones that differ, instead of decoding every record every time.
    pub fn desired_stamps(&self) -> Result<(Vec<DesiredStamp>, Vec<StoreError>), StoreError> {
        self.with_trees(|trees| scan(&trees.desired, "desired"))
    }

    /// Whether any desired record is one a spec file declared; a record that cannot be read
    /// may be one, and counts as one.
    pub fn holds_file_records(&self) -> Result<bool, StoreError> {
        let (stamps, corrupt) = self.desired_stamps()?;
        Ok(!corrupt.is_empty()
            || stamps
                .iter()
                .any(|stamp| stamp.source.kind() == SourceKind::File))
    }

    pub fn observed(&self, id: &ProcessId) -> Result<Option<ObservedRecord>, StoreError> {
        let bytes = self.with_trees(|trees| {
            trees
                .observed
                .get(id.as_str())
                .map_err(|source| io(format!("reading observed record {id}"), source))
        })?;
        bytes
            .map(|bytes| decode("observed", id.as_str(), &bytes))
            .transpose()
    }

    /// Every observed record that decodes, plus an error for each one that does not.
    pub fn all_observed(&self) -> Result<(Vec<ObservedRecord>, Vec<StoreError>), StoreError> {
        self.with_trees(|trees| scan(&trees.observed, "observed"))
    }

    /// Every process desired or observed, desired and observed records joined by id, in id
    /// order. Records that do not decode are left out (the loop logs them at its resync).
    pub fn rows(&self) -> Result<Vec<ProcessRow>, StoreError> {
        let (desired, _corrupt) = self.all_desired()?;
        let (observed, _corrupt) = self.all_observed()?;
        Ok(join(desired, observed))
    }

    /// The desired and observed records of `id`, if it has either.
    pub fn row(&self, id: &ProcessId) -> Result<Option<ProcessRow>, StoreError> {
        Ok(ProcessRow::new(
            id.clone(),
            self.desired(id)?,
            self.observed(id)?,
        ))
    }

    /// Records what runs. Not flushed: the loop flushes once per pass with `flush`.
    pub fn put_observed(&self, record: &ObservedRecord) -> Result<(), StoreError> {
        let bytes = encode("observed", record.id.as_str(), record)?;
        self.with_trees(|trees| {
            trees
                .observed
                .insert(record.id.as_str(), bytes)
                .map_err(|source| io(format!("writing observed record {}", record.id), source))
        })?;
        self.observed_unflushed.store(true, Ordering::Release);
        Ok(())
    }

    /// Drops what was observed of an id. Not flushed: see `put_observed`.
    pub fn delete_observed(&self, id: &ProcessId) -> Result<(), StoreError> {
        self.with_trees(|trees| {
            trees
                .observed
                .remove(id.as_str())
                .map_err(|source| io(format!("deleting observed record {id}"), source))
        })?;
        self.observed_unflushed.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes each set's `specs` the whole desired set of its `source`, in order: new ids are
    /// created, changed specs get a new generation, ids of the source missing from `specs` are
    /// deleted. Ids owned by another source are left alone and reported as conflicts, except
    /// those owned by one of the set's `released` sources (going away, such as a spec file
    /// renamed to `source`), which are taken over in the same transaction so that the record
    /// never goes missing in between. ONE transaction and one flush for all the sets: a burst of
    /// a thousand spec files costs one fsync, not a thousand. Costs O(the records of these
    /// sources), not O(all records). Returns the outcome of each set, in order.
    pub fn apply_sources(&self, sets: &[SourceSet<'_>]) -> Result<Vec<ApplyOutcome>, StoreError> {
        let previously_owned = sets
            .iter()
            .map(|set| self.ids_owned_by(set.source))
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = self.transact("applying sources' desired sets", |tx| {
            sets.iter()
                .zip(&previously_owned)
                .map(|(set, owned)| apply_set(tx, set, owned))
                .collect::<Result<Vec<_>, _>>()
        })?;
        if outcomes
            .iter()
            .any(|outcome| outcome.changed().next().is_some())
        {
            self.flush()?;
            self.notify(outcomes.iter().flat_map(ApplyOutcome::changed));
        }
        Ok(outcomes)
    }

    /// The ids whose desired record `source` owns (without reading the records: from the owner
    /// index), in id order.
    pub fn owned_by(&self, source: &Source) -> Result<Vec<ProcessId>, StoreError> {
        self.ids_owned_by(source)
    }

    /// The ids whose desired record `source` owns, from the owner index.
    fn ids_owned_by(&self, source: &Source) -> Result<Vec<ProcessId>, StoreError> {
        let prefix = owner_prefix(source);
        self.with_trees(|trees| {
            let mut ids = Vec::new();
            for entry in trees.by_owner.scan_prefix(prefix.as_bytes()) {
                let (key, _) =
                    entry.map_err(|error| io(format!("listing what {source} owns"), error))?;
                let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                match ProcessId::new(id) {
                    Ok(id) => ids.push(id),
                    Err(error) => {
                        tracing::warn!(%error, %source, "skipping a bad key in the owner index")
                    }
                }
            }
            Ok(ids)
        })
    }

    /// Creates or updates the desired record of `id` for `source`; refuses an id another source
    /// owns. Returns the record as stored. Durable before it returns.
    pub fn put_desired(
        &self,
        id: &ProcessId,
        spec: &ProcessSpec,
        source: &Source,
    ) -> Result<DesiredRecord, StoreError> {
        let (record, changed) =
            self.transact("writing a desired record", |tx| match tx.read(id)? {
                Some(existing) if !existing.source.same_owner(source) => {
                    Err(owned_by_another(id, existing.source, source))
                }
                Some(existing) if *existing.spec == *spec && existing.source == *source => {
                    Ok((existing, false))
                }
                existing => Ok((tx.write(id, spec, source, existing.as_ref())?, true)),
            })?;
        if changed {
            self.flush()?;
            self.notify([id]);
        }
        Ok(record)
    }

    /// Deletes the desired record of `id` if `source` owns it. Returns whether one was deleted.
    pub fn delete_desired(&self, id: &ProcessId, source: &Source) -> Result<bool, StoreError> {
        self.delete_desired_with_grace(id, source, None)
    }

    /// Like `delete_desired`, and asks the loop to stop the process with `grace` instead of its
    /// spec's grace period (zero: SIGKILL at once).
    pub fn delete_desired_with_grace(
        &self,
        id: &ProcessId,
        source: &Source,
        grace: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let deleted = self.transact("deleting a desired record", |tx| match tx.read(id)? {
            None => Ok(false),
            Some(existing) if !existing.source.same_owner(source) => {
                Err(owned_by_another(id, existing.source, source))
            }
            Some(existing) => {
                tx.remove(&existing)?;
                if let Some(grace) = grace {
                    tx.request_stop(id, grace)?;
                }
                Ok(true)
            }
        })?;
        if deleted {
            self.flush()?;
            self.notify([id]);
        }
        Ok(deleted)
    }

    /// Counts an operator's reset of `id` on its desired record (not a spec change: the
    /// generation stays). Returns the updated record, or `None` if nothing desires `id`.
    pub fn reset_desired(&self, id: &ProcessId) -> Result<Option<DesiredRecord>, StoreError> {
        let record = self.transact("resetting a process", |tx| match tx.read(id)? {
            None => Ok(None),
            Some(mut record) => {
                record.resets += 1;
                let bytes = encode("desired", id.as_str(), &record)
                    .map_err(ConflictableTransactionError::Abort)?;
                tx.desired.insert(id.as_str(), bytes)?;
                tx.resets
                    .insert(id.as_str(), &record.resets.to_be_bytes())?;
                Ok(Some(record))
            }
        })?;
        if record.is_some() {
            self.flush()?;
            self.notify([id]);
        }
        Ok(record)
    }

    /// Applies an operator's `verb` to the desired record of `id` (`reconcile::operate`) in one
    /// transaction: a hold, its release, or a restart request (whose count is also kept in
    /// `restarts`, so that it keeps growing across deletes). Durable before it returns, and the
    /// loop is told when the record changed; a verb applied already changes nothing.
    pub fn operate(&self, id: &ProcessId, verb: OperatorVerb) -> Result<Operated, StoreError> {
        let action = format!("applying the operator's {verb} to process {id}");
        let operated = self.transact(&action, |tx| {
            let Some(before) = tx.read(id)? else {
                return Ok(Operated::NotDesired);
            };
            let after = match operate(&before, verb) {
                Ok(after) => after,
                Err(refusal) => {
                    return Ok(Operated::Refused {
                        record: before,
                        refusal,
                    })
                }
            };
            if after != before {
                let bytes = encode("desired", id.as_str(), &after)
                    .map_err(ConflictableTransactionError::Abort)?;
                tx.desired.insert(id.as_str(), bytes)?;
                tx.restarts
                    .insert(id.as_str(), &after.restarts.to_be_bytes())?;
            }
            Ok(Operated::Done { before, after })
        })?;
        if let Operated::Done { before, after } = &operated {
            if before != after {
                self.flush()?;
                self.notify([id]);
            }
        }
        Ok(operated)
    }

    /// Asks the loop to stop `id` within `grace` when it is stopping already (its desired record
    /// is gone); the loop shortens the stop under way if `grace` ends sooner.
    pub fn request_stop(&self, id: &ProcessId, grace: Duration) -> Result<(), StoreError> {
        let millis = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.with_trees(|trees| {
            trees
                .stop_requests
                .insert(id.as_str(), &millis.to_be_bytes())
                .map_err(|source| io(format!("recording a stop request for {id}"), source))
        })?;
        self.flush()?;
        self.notify([id]);
        Ok(())
    }

    /// Writes an admin assignment of `id` at `version`, from the admin's `term` when it named
    /// one: created if absent, replaced if `version` is newer than the stored one, a no-op if it
    /// is the same; refused if older, if another source owns `id`, or if `term` is older than
    /// the newest term seen (which a newer `term` becomes, in the same transaction). The id is
    /// confirmed. Durable before it returns.
    pub fn assign_admin(
        &self,
        id: &ProcessId,
        spec: &ProcessSpec,
        version: i64,
        term: Option<AdminTerm>,
    ) -> Result<Assigned, StoreError> {
        let (assigned, term_raised) = self.transact("writing an admin assignment", |tx| {
            let term_raised = tx.admit_term(term)?;
            Ok((assign_in(tx, id, spec, version)?, term_raised))
        })?;
        if assigned != Assigned::Unchanged || term_raised {
            self.flush()?;
        }
        if assigned != Assigned::Unchanged {
            self.notify([id]);
        }
        Ok(assigned)
    }

    /// Applies a registration's `assignments` (its `initial_processes`), from the admin's `term`
    /// when it named one: each is assigned as by `assign_admin`; what happens to the admin-owned
    /// ids the set does not name is `reconcile::admin_set_changes` of `view`: deleted when the
    /// view is authoritative, else kept and marked unconfirmed (and every other admin-owned id
    /// confirmed). Stale and foreign-owned entries are reported in `conflicts` and skipped; a
    /// stale `term` refuses the whole set.
    pub fn apply_admin_set(
        &self,
        assignments: &[(ProcessId, ProcessSpec, i64)],
        view: AdminView,
        term: Option<AdminTerm>,
    ) -> Result<ApplyOutcome, StoreError> {
        let admin = Source::Admin { version: 0 };
        let previously_owned = self.ids_owned_by(&admin)?;
        let listed: Vec<ProcessId> = assignments.iter().map(|(id, _, _)| id.clone()).collect();
        let changes = admin_set_changes(view, &previously_owned, &listed);
        let marked = self.unconfirmed_admin()?;
        let (outcome, term_raised) = self.transact("applying the admin's desired set", |tx| {
            let term_raised = tx.admit_term(term)?;
            let mut outcome = ApplyOutcome::default();
            for (id, spec, version) in assignments {
                match assign_in(tx, id, spec, *version) {
                    Ok(Assigned::Created) => outcome.created.push(id.clone()),
                    Ok(Assigned::Updated) => outcome.updated.push(id.clone()),
                    Ok(Assigned::Unchanged) => outcome.unchanged.push(id.clone()),
                    Err(ConflictableTransactionError::Abort(StoreError::OwnedByAnother {
                        owner,
                        ..
                    })) => outcome.conflicts.push((id.clone(), owner)),
                    Err(ConflictableTransactionError::Abort(StoreError::StaleVersion {
                        stored,
                        ..
                    })) => outcome
                        .conflicts
                        .push((id.clone(), Source::Admin { version: stored })),
                    Err(error) => return Err(error),
                }
            }
            delete_unlisted(tx, &changes.remove, &admin, &mut outcome, |_| false)?;
            // The marks become exactly the view's unconfirmed ids (the admin owns them all,
            // since only admin-owned ids are ever marked and a removal takes its mark along).
            for id in &marked {
                tx.admin.remove(unconfirmed_key(id).as_bytes())?;
            }
            for id in &changes.unconfirmed {
                if tx
                    .read(id)?
                    .is_some_and(|record| record.source.same_owner(&admin))
                {
                    tx.admin.insert(unconfirmed_key(id).as_bytes(), &[])?;
                    outcome.unconfirmed.push(id.clone());
                }
            }
            Ok((outcome, term_raised))
        })?;
        // Marks and a new term are durable with the records, even when no record changed.
        if outcome.changed().next().is_some()
            || term_raised
            || outcome.unconfirmed.len() != marked.len()
            || outcome.unconfirmed.iter().any(|id| !marked.contains(id))
        {
            self.flush()?;
        }
        if outcome.changed().next().is_some() {
            self.notify(outcome.changed());
        }
        Ok(outcome)
    }

    /// Revokes prism-admin's `id` from the admin's `term` when it named one: deletes its desired
    /// record if the admin owns it, asking the loop to stop it with `grace`. Returns whether a
    /// record was deleted. Refused when another source owns `id` or when `term` is older than
    /// the newest term seen (which a newer `term` becomes). Durable before it returns.
    pub fn revoke_admin(
        &self,
        id: &ProcessId,
        grace: Duration,
        term: Option<AdminTerm>,
    ) -> Result<bool, StoreError> {
        let admin = Source::Admin { version: 0 };
        let (deleted, term_raised) = self.transact("revoking an admin assignment", |tx| {
            let term_raised = tx.admit_term(term)?;
            match tx.read(id)? {
                None => Ok((false, term_raised)),
                Some(existing) if !existing.source.same_owner(&admin) => {
                    Err(owned_by_another(id, existing.source, &admin))
                }
                Some(existing) => {
                    tx.remove(&existing)?;
                    tx.request_stop(id, grace)?;
                    Ok((true, term_raised))
                }
            }
        })?;
        if deleted || term_raised {
            self.flush()?;
        }
        if deleted {
            self.notify([id]);
        }
        Ok(deleted)
    }

    /// Records (durably) whether prism-admin's processes are stopped for the disconnect grace, so
    /// that a launcher restarted during the partition keeps them stopped.
    pub fn set_admin_suspended(&self, suspended: bool) -> Result<(), StoreError> {
        self.with_trees(|trees| {
            let written = if suspended {
                trees
                    .admin
                    .insert(ADMIN_SUSPENDED_KEY, &[1u8][..])
                    .map(drop)
            } else {
                trees.admin.remove(ADMIN_SUSPENDED_KEY).map(drop)
            };
            written.map_err(|source| {
                io(
                    format!("recording that prism-admin's processes are suspended ({suspended})"),
                    source,
                )
            })
        })?;
        self.flush()
    }

    /// Whether the last run left prism-admin's processes stopped for the disconnect grace.
    pub fn admin_suspended(&self) -> Result<bool, StoreError> {
        self.with_trees(|trees| {
            trees
                .admin
                .contains_key(ADMIN_SUSPENDED_KEY)
                .map_err(|source| {
                    io(
                        "reading whether prism-admin's processes are suspended",
                        source,
                    )
                })
        })
    }

    /// The newest prism-admin term this launcher has seen, if any.
    pub fn admin_term(&self) -> Result<Option<AdminTerm>, StoreError> {
        let bytes = self.with_trees(|trees| {
            trees
                .admin
                .get(ADMIN_TERM_KEY)
                .map_err(|source| io("reading the admin's term", source))
        })?;
        bytes
            .map(|bytes| decode("admin", "term", &bytes))
            .transpose()
    }

    /// Refuses a request of `term` older than the newest term seen, without recording anything
    /// (the writes check it again in their own transaction).
    pub fn check_admin_term(&self, term: Option<AdminTerm>) -> Result<(), StoreError> {
        admit_term(self.admin_term()?, term)
            .map(|_| ())
            .map_err(StoreError::StaleAdminTerm)
    }

    /// The admin-owned ids that prism-admin's last view left unconfirmed (a scan of the marks:
    /// for status and metrics).
    pub fn unconfirmed_admin(&self) -> Result<std::collections::BTreeSet<ProcessId>, StoreError> {
        self.with_trees(|trees| {
            let mut ids = std::collections::BTreeSet::new();
            for entry in trees.admin.scan_prefix(UNCONFIRMED_PREFIX.as_bytes()) {
                let (key, _) =
                    entry.map_err(|source| io("listing the unconfirmed admin ids", source))?;
                let id = String::from_utf8_lossy(&key[UNCONFIRMED_PREFIX.len()..]).into_owned();
                match ProcessId::new(id) {
                    Ok(id) => {
                        ids.insert(id);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "skipping a bad key among the unconfirmed admin ids")
                    }
                }
            }
            Ok(ids)
        })
    }

    /// Records how the last process of `id` ended. Not flushed: see `put_observed`.
    pub fn put_last_exit(
        &self,
        id: &ProcessId,
        status: ExitStatus,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        let bytes = encode("exits", id.as_str(), &(status, at))?;
        self.with_trees(|trees| {
            trees
                .exits
                .insert(id.as_str(), bytes)
                .map_err(|source| io(format!("recording the exit of {id}"), source))
        })?;
        self.observed_unflushed.store(true, Ordering::Release);
        Ok(())
    }

    /// How the last process of `id` ended, and when.
    pub fn last_exit(
        &self,
        id: &ProcessId,
    ) -> Result<Option<(ExitStatus, UnixMillis)>, StoreError> {
        let bytes = self.with_trees(|trees| {
            trees
                .exits
                .get(id.as_str())
                .map_err(|source| io(format!("reading the exit of {id}"), source))
        })?;
        bytes
            .map(|bytes| decode("exits", id.as_str(), &bytes))
            .transpose()
    }

    /// Records the spawns about to happen, with one write for all of them, before any of them
    /// starts; see `intent_journal` for why a write that reached the kernel is enough.
    pub fn record_spawn_intents(&self, intents: &[SpawnIntent]) -> Result<(), StoreError> {
        if intents.is_empty() {
            return Ok(());
        }
        self.journal.append(intents)
    }

    /// Forgets the intents of `spawns`, whose outcomes (a process, or a failed spawn) are
    /// recorded in `observed`, and with a recorded process the earlier intents of its id
    /// (`Settled`). Call it only after the flush that made those records durable: an intent
    /// forgotten before its outcome is written could let a crash start the process twice.
    pub fn settle_spawn_intents(
        &self,
        spawns: impl IntoIterator<Item = Settled>,
    ) -> Result<(), StoreError> {
        self.journal.settle(spawns)?;
        self.with_trees(|trees| {
            if !trees.intents.is_empty() {
                trees.intents.clear().map_err(|source| {
                    io("forgetting the spawn intents of an older launcher", source)
                })?;
            }
            Ok(())
        })
    }

    /// The spawns a previous run of the launcher began and did not record the outcome of (in
    /// the journal, and in the tree where launchers before it kept them).
    pub fn spawn_intents(&self) -> Result<(Vec<SpawnIntent>, Vec<StoreError>), StoreError> {
        let (mut intents, mut corrupt) =
            self.with_trees(|trees| scan(&trees.intents, "intents"))?;
        let (journaled, unreadable) = self.journal.read()?;
        intents.extend(journaled);
        corrupt.extend(unreadable);
        Ok((intents, corrupt))
    }

    /// How many desired records there are (a scan of keys; for admission checks, not loops).
    pub fn desired_count(&self) -> Result<usize, StoreError> {
        self.with_trees(|trees| Ok(trees.desired.len()))
    }

    /// Takes (and forgets) the grace period a delete asked for, if any.
    pub fn take_stop_request(&self, id: &ProcessId) -> Result<Option<Duration>, StoreError> {
        let taken = self.with_trees(|trees| {
            trees
                .stop_requests
                .remove(id.as_str())
                .map_err(|source| io(format!("taking the stop request of {id}"), source))
        })?;
        Ok(taken.map(|bytes| Duration::from_millis(decode_generation(&bytes))))
    }

    /// Creates the desired record of `id` unless one exists (whoever owns it). Returns the
    /// record and whether it was created. Two concurrent calls create one record.
    pub fn create_desired_if_absent(
        &self,
        id: &ProcessId,
        spec: &ProcessSpec,
        source: &Source,
    ) -> Result<(DesiredRecord, bool), StoreError> {
        let (record, created) =
            self.transact("creating a desired record", |tx| match tx.read(id)? {
                Some(existing) => Ok((existing, false)),
                None => Ok((tx.write(id, spec, source, None)?, true)),
            })?;
        if created {
            self.flush()?;
            self.notify([id]);
        }
        Ok((record, created))
    }

    fn transact<T>(
        &self,
        action: &str,
        body: impl Fn(&Tx<'_>) -> Result<T, ConflictableTransactionError<StoreError>>,
    ) -> Result<T, StoreError> {
        self.with_trees(|trees| {
            (
                &trees.desired,
                &trees.generations,
                &trees.by_owner,
                &trees.stop_requests,
                &trees.resets,
                &trees.restarts,
                &trees.admin,
            )
                .transaction(
                    |(desired, generations, by_owner, stop_requests, resets, restarts, admin)| {
                        body(&Tx {
                            desired,
                            generations,
                            by_owner,
                            stop_requests,
                            resets,
                            restarts,
                            admin,
                        })
                    },
                )
                .map_err(|error| match error {
                    TransactionError::Abort(error) => error,
                    TransactionError::Storage(source) => io(action, source),
                })
        })
    }
}

/// One source's whole desired set inside a transaction; see `Store::apply_sources`.
fn apply_set(
    tx: &Tx<'_>,
    set: &SourceSet<'_>,
    previously_owned: &[ProcessId],
) -> Result<ApplyOutcome, ConflictableTransactionError<StoreError>> {
    let SourceSet {
        source,
        specs,
        released,
    } = *set;
    let mut outcome = ApplyOutcome::default();
    for (id, spec) in specs {
        match tx.read(id)? {
            Some(existing)
                if !existing.source.same_owner(source)
                    && !released
                        .iter()
                        .any(|gone| gone.same_owner(&existing.source)) =>
            {
                outcome.conflicts.push((id.clone(), existing.source));
            }
            Some(existing) if *existing.spec == *spec && existing.source == *source => {
                outcome.unchanged.push(id.clone());
            }
            Some(existing) => {
                tx.write(id, spec, source, Some(&existing))?;
                outcome.updated.push(id.clone());
            }
            None => {
                tx.write(id, spec, source, None)?;
                outcome.created.push(id.clone());
            }
        }
    }
    let declared: HashSet<&ProcessId> = specs.iter().map(|(id, _)| id).collect();
    delete_unlisted(tx, previously_owned, source, &mut outcome, |id| {
        declared.contains(id)
    })?;
    Ok(outcome)
}

/// Deletes the records of `previously_owned` that `listed` no longer names, when `owner` still
/// owns them: ownership is checked again inside the transaction, since another source may have
/// taken an id after the owner index was read.
fn delete_unlisted(
    tx: &Tx<'_>,
    previously_owned: &[ProcessId],
    owner: &Source,
    outcome: &mut ApplyOutcome,
    listed: impl Fn(&ProcessId) -> bool,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    for id in previously_owned.iter().filter(|id| !listed(id)) {
        match tx.read(id)? {
            Some(existing) if existing.source.same_owner(owner) => {
                tx.remove(&existing)?;
                outcome.deleted.push(id.clone());
            }
            _ => {}
        }
    }
    Ok(())
}

/// One admin assignment inside a transaction; see `Store::assign_admin`.
fn assign_in(
    tx: &Tx<'_>,
    id: &ProcessId,
    spec: &ProcessSpec,
    version: i64,
) -> Result<Assigned, ConflictableTransactionError<StoreError>> {
    let source = Source::Admin { version };
    let existing = tx.read(id)?;
    if existing
        .as_ref()
        .is_none_or(|existing| existing.source.same_owner(&source))
    {
        // Named by the admin: confirmed, whatever its last view said.
        tx.admin.remove(unconfirmed_key(id).as_bytes())?;
    }
    match existing {
        None => {
            tx.write(id, spec, &source, None)?;
            Ok(Assigned::Created)
        }
        Some(existing) => match existing.source {
            Source::Admin { version: stored } if version < stored => Err(
                ConflictableTransactionError::Abort(StoreError::StaleVersion {
                    id: id.clone(),
                    stored,
                    offered: version,
                }),
            ),
            Source::Admin { version: stored } if version == stored => Ok(Assigned::Unchanged),
            Source::Admin { .. } => {
                tx.write(id, spec, &source, Some(&existing))?;
                Ok(Assigned::Updated)
            }
            owner => Err(owned_by_another(id, owner, &source)),
        },
    }
}

fn owned_by_another(
    id: &ProcessId,
    owner: Source,
    requester: &Source,
) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::OwnedByAnother {
        id: id.clone(),
        owner,
        requester: requester.clone(),
    })
}

/// The owner index key prefix of a source: `file:<path>`, `api` or `admin`, then a NUL (which no
/// path or id contains).
fn owner_prefix(source: &Source) -> String {
    format!("{source}\0")
}

fn owner_key(source: &Source, id: &ProcessId) -> String {
    format!("{}{id}", owner_prefix(source))
}

/// The key that marks the admin-owned `id` unconfirmed.
fn unconfirmed_key(id: &ProcessId) -> String {
    format!("{UNCONFIRMED_PREFIX}{id}")
}

/// The trees a desired-state transaction writes together.
struct Tx<'a> {
    desired: &'a sled::transaction::TransactionalTree,
    generations: &'a sled::transaction::TransactionalTree,
    by_owner: &'a sled::transaction::TransactionalTree,
    stop_requests: &'a sled::transaction::TransactionalTree,
    resets: &'a sled::transaction::TransactionalTree,
    restarts: &'a sled::transaction::TransactionalTree,
    admin: &'a sled::transaction::TransactionalTree,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl Tx<'_> {
    fn read(&self, id: &ProcessId) -> TxResult<Option<DesiredRecord>> {
        match self.desired.get(id.as_str())? {
            None => Ok(None),
            // A corrupt record is replaced by the next write rather than blocking its owner.
            Some(bytes) => Ok(decode("desired", id.as_str(), &bytes).ok()),
        }
    }

    /// Writes the record with the next generation of `id`, keeping the owner index right.
    fn write(
        &self,
        id: &ProcessId,
        spec: &ProcessSpec,
        source: &Source,
        existing: Option<&DesiredRecord>,
    ) -> TxResult<DesiredRecord> {
        let last_generation = match self.generations.get(id.as_str())? {
            Some(bytes) => decode_generation(&bytes),
            None => 0,
        };
        let record = DesiredRecord {
            id: id.clone(),
            spec: Arc::new(spec.clone()),
            generation: last_generation + 1,
            source: source.clone(),
            resets: match existing {
                Some(existing) => existing.resets,
                None => self
                    .resets
                    .get(id.as_str())?
                    .map_or(0, |bytes| decode_generation(&bytes)),
            },
            // An operator's hold outlives spec changes and changes of owner; a new record (the
            // id declared again after it was gone) starts unheld.
            held: existing.is_some_and(|existing| existing.held),
            restarts: match existing {
                Some(existing) => existing.restarts,
                None => self
                    .restarts
                    .get(id.as_str())?
                    .map_or(0, |bytes| decode_generation(&bytes)),
            },
        };
        let bytes =
            encode("desired", id.as_str(), &record).map_err(ConflictableTransactionError::Abort)?;
        self.desired.insert(id.as_str(), bytes)?;
        self.generations
            .insert(id.as_str(), &record.generation.to_be_bytes())?;
        if let Some(existing) = existing {
            self.by_owner
                .remove(owner_key(&existing.source, id).as_bytes())?;
        }
        self.by_owner
            .insert(owner_key(source, id).as_bytes(), &[])?;
        // A grace period asked for by an earlier delete does not apply to the new record.
        self.stop_requests.remove(id.as_str())?;
        Ok(record)
    }

    fn remove(&self, existing: &DesiredRecord) -> TxResult<()> {
        self.desired.remove(existing.id.as_str())?;
        self.by_owner
            .remove(owner_key(&existing.source, &existing.id).as_bytes())?;
        if matches!(existing.source, Source::Admin { .. }) {
            // A mark goes with its record, so a later record of the id starts confirmed.
            self.admin
                .remove(unconfirmed_key(&existing.id).as_bytes())?;
        }
        Ok(())
    }

    /// Asks the loop to stop `id` with `grace` instead of its spec's grace period.
    fn request_stop(&self, id: &ProcessId, grace: Duration) -> TxResult<()> {
        let millis = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.stop_requests
            .insert(id.as_str(), &millis.to_be_bytes())?;
        Ok(())
    }

    /// Admits a request of the admin's `term` (`reconcile::admit_term`): aborts the transaction
    /// when it is older than the newest seen, records it when newer. Returns whether it was
    /// recorded.
    fn admit_term(&self, term: Option<AdminTerm>) -> TxResult<bool> {
        let newest = match self.admin.get(ADMIN_TERM_KEY)? {
            Some(bytes) => Some(
                decode::<AdminTerm>("admin", "term", &bytes)
                    .map_err(ConflictableTransactionError::Abort)?,
            ),
            None => None,
        };
        match admit_term(newest, term) {
            Ok(Some(newer)) => {
                let bytes =
                    encode("admin", "term", &newer).map_err(ConflictableTransactionError::Abort)?;
                self.admin.insert(ADMIN_TERM_KEY, bytes)?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(stale) => Err(ConflictableTransactionError::Abort(
                StoreError::StaleAdminTerm(stale),
            )),
        }
    }
}

/// The schema version stored as ASCII digits, if it is spelled as a launcher writes one
/// (`u32::to_string`): no sign, no leading zero, no spaces.
fn parse_schema_version(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let version: u64 = text.parse().ok()?;
    (version.to_string() == text).then_some(version)
}

/// A big-endian u64 (generations, stop grace periods); 0 for anything else.
fn decode_generation(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

fn scan<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
) -> Result<(Vec<T>, Vec<StoreError>), StoreError> {
    let mut records = Vec::new();
    let mut corrupt = Vec::new();
    for entry in tree.iter() {
        let (key, value) =
            entry.map_err(|source| io(format!("scanning the {name} tree"), source))?;
        match decode(name, String::from_utf8_lossy(&key), &value) {
            Ok(record) => records.push(record),
            Err(error) => corrupt.push(error),
        }
    }
    Ok((records, corrupt))
}

/// `bytes` decoded; `key` is written out only into the error.
fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: impl std::fmt::Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: key.to_string(),
        source,
    })
}

/// `value` encoded; `key` is written out only into the error.
fn encode<T: Serialize>(
    tree: &'static str,
    key: impl std::fmt::Display,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        tree,
        key: key.to_string(),
        source,
    })
}

fn io(action: impl Into<String>, source: sled::Error) -> StoreError {
    StoreError::Io {
        action: action.into(),
        source,
    }
}

mod history;
mod intent_journal;
mod io_pool;
mod migrate;
#[cfg(test)]
mod tests;
