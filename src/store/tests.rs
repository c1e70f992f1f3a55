//! Store tests on a temporary sled database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;

use super::*;
use crate::reconcile::{
    ExitStatus, Health, HealthCheck, Isolation, Phase, Ports, Probe, ProcessType, RequestedPorts,
    Resources, RestartPolicy, StopReason, UnixMillis,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn id(name: &str) -> ProcessId {
    ProcessId::new(name).expect("valid test process id")
}

fn file(path: &str) -> Source {
    Source::File {
        path: PathBuf::from(path),
    }
}

/// One source's set at a time, as most of these tests apply them (the launcher applies batches
/// of sets through `apply_sources`, which this calls).
trait ApplyOne {
    fn apply_source(
        &self,
        source: &Source,
        specs: &[(ProcessId, ProcessSpec)],
    ) -> Result<ApplyOutcome, StoreError>;

    fn apply_source_taking_over(
        &self,
        source: &Source,
        specs: &[(ProcessId, ProcessSpec)],
        released: &[Source],
    ) -> Result<ApplyOutcome, StoreError>;
}

impl ApplyOne for Store {
    fn apply_source(
        &self,
        source: &Source,
        specs: &[(ProcessId, ProcessSpec)],
    ) -> Result<ApplyOutcome, StoreError> {
        self.apply_source_taking_over(source, specs, &[])
    }

    fn apply_source_taking_over(
        &self,
        source: &Source,
        specs: &[(ProcessId, ProcessSpec)],
        released: &[Source],
    ) -> Result<ApplyOutcome, StoreError> {
        let set = SourceSet {
            source,
            specs,
            released,
        };
        let mut outcomes = self.apply_sources(&[set])?;
        assert_eq!(outcomes.len(), 1, "one outcome per set");
        Ok(outcomes.remove(0))
    }
}

/// A spec with every field filled, so that encoding and decoding cover all of them.
fn spec(executable: &str) -> ProcessSpec {
    ProcessSpec {
        process_type: ProcessType::Backend,
        executable: PathBuf::from(executable),
        args: vec!["--listen".to_string(), "127.0.0.1".to_string()],
        env: BTreeMap::from([("RUST_LOG".to_string(), "debug".to_string())]),
        inherit_env: vec!["PATH".to_string(), "HOME".to_string()],
        working_dir: Some(PathBuf::from("/var/lib/prism")),
        pattern: Some("memstore".to_string()),
        isolation: Isolation::Namespace,
        namespace: Some("orders".to_string()),
        session_id: Some("session-1".to_string()),
        health_check: Some(HealthCheck {
            probe: Probe::Http {
                path: "/health".to_string(),
                port: Some(9090),
            },
            initial_delay: Duration::from_secs(1),
            interval: HealthCheck::DEFAULT_INTERVAL,
            timeout: HealthCheck::DEFAULT_TIMEOUT,
            failure_threshold: HealthCheck::DEFAULT_FAILURE_THRESHOLD,
            success_threshold: 1,
        }),
        restart_policy: RestartPolicy::OnFailure,
        success_exit_codes: Vec::new(),
        backoff: Default::default(),
        termination_grace: Duration::from_secs(10),
        resources: Some(Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(256 * 1024 * 1024),
        }),
        requested_ports: RequestedPorts::default(),
        type_config: Default::default(),
        labels: BTreeMap::from([("team".to_string(), "data".to_string())]),
    }
}

/// An observed record with every field filled.
fn observed(name: &str, phase: Phase) -> ObservedRecord {
    ObservedRecord {
        id: id(name),
        phase,
        pid: Some(4242),
        pid_start_ticks: Some(123_456),
        instance: None,
        generation: 3,
        spec: Arc::new(spec("/usr/bin/observed")),
        ports: Ports {
            grpc: 50051,
            health: 9090,
        },
        started_at: Some(UnixMillis(1_700_000_000_000)),
        health: Health::Healthy,
        probe_successes: 1,
        probe_failures: 0,
        restart_count: 2,
        consecutive_failures: 1,
        error_count: 5,
        last_exit: Some(ExitStatus::Signal(9)),
        last_error: Some("exited with signal SIGKILL".to_string()),
        next_restart_at: Some(UnixMillis(1_700_000_005_000)),
        stop_reason: Some(StopReason::Replace),
        stop_deadline: Some(UnixMillis(1_700_000_010_000)),
        killed: true,
        resets_seen: 0,
        restarts_seen: 0,
        tripped_at: None,
        exited_at: None,
    }
}

fn open(dir: &Path) -> Store {
    open_waiting(dir).expect("open store")
}

/// How long a test waits for a database that was just dropped to let go of its lock: sled
/// finishes log writes on its own thread pool, which holds the database file for a moment after
/// the last handle is dropped, so an immediate reopen can find the lock still taken.
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A raw sled database in `dir`, to write or read a store as an older (or newer) launcher left
/// it, bypassing `Store`.
/// Writes a desired record under `key` that is not JSON, past the store (which is closed).
fn insert_unreadable_desired(dir: &Path, key: &str) {
    let raw = raw_db(dir);
    let desired = raw.open_tree("desired").unwrap();
    desired
        .insert(key.as_bytes(), b"\x00\xffnot json{".as_slice())
        .unwrap();
    raw.flush().unwrap();
}

fn raw_db(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match sled::Config::new().path(dir).flush_every_ms(None).open() {
            Ok(db) => return db,
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("cannot open the raw sled database: {error}"),
        }
    }
}

/// `Store::open`, waiting out the lock of a database dropped an instant ago (see
/// `LOCK_RELEASE_WAIT`).
fn open_waiting(dir: &Path) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match Store::open(dir) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

fn generation(store: &Store, name: &str) -> u64 {
    store
        .desired(&id(name))
        .expect("read desired")
        .unwrap_or_else(|| panic!("{name} has no desired record"))
        .generation
}

fn ids(names: &[&str]) -> Vec<ProcessId> {
    names.iter().map(|name| id(name)).collect()
}

/// Everything the receiver holds right now, without waiting.
fn drain(receiver: &mut mpsc::UnboundedReceiver<ProcessId>) -> Vec<ProcessId> {
    let mut received = Vec::new();
    loop {
        match receiver.try_recv() {
            Ok(id) => received.push(id),
            Err(TryRecvError::Empty) => return received,
            Err(TryRecvError::Disconnected) => panic!("the store dropped its subscriber"),
        }
    }
}

fn sorted_ids(records: &[DesiredRecord]) -> Vec<ProcessId> {
    let mut ids: Vec<ProcessId> = records.iter().map(|record| record.id.clone()).collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// 1. apply_source
// ---------------------------------------------------------------------------------------------

#[test]
fn apply_source_creates_records_at_generation_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");

    let outcome = store
        .apply_source(
            &source,
            &[
                (id("alpha"), spec("/bin/alpha")),
                (id("beta"), spec("/bin/beta")),
            ],
        )
        .unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome {
            created: ids(&["alpha", "beta"]),
            ..ApplyOutcome::default()
        }
    );
    let alpha = store.desired(&id("alpha")).unwrap().expect("alpha stored");
    assert_eq!(
        alpha,
        DesiredRecord {
            id: id("alpha"),
            spec: Arc::new(spec("/bin/alpha")),
            generation: 1,
            source: source.clone(),
            resets: 0,
            held: false,
            restarts: 0,
        }
    );
    assert_eq!(generation(&store, "beta"), 1);
    let (records, corrupt) = store.all_desired().unwrap();
    assert!(corrupt.is_empty());
    assert_eq!(sorted_ids(&records), ids(&["alpha", "beta"]));
}

#[test]
fn apply_source_reapplying_identical_specs_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    let specs = [
        (id("alpha"), spec("/bin/alpha")),
        (id("beta"), spec("/bin/beta")),
    ];
    store.apply_source(&source, &specs).unwrap();

    let outcome = store.apply_source(&source, &specs).unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome {
            unchanged: ids(&["alpha", "beta"]),
            ..ApplyOutcome::default()
        }
    );
    assert_eq!(outcome.changed().count(), 0);
    assert_eq!(generation(&store, "alpha"), 1);
    assert_eq!(generation(&store, "beta"), 1);
}

#[test]
fn apply_source_changed_spec_is_updated_with_next_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    store
        .apply_source(
            &source,
            &[
                (id("alpha"), spec("/bin/alpha")),
                (id("beta"), spec("/bin/beta")),
            ],
        )
        .unwrap();

    let outcome = store
        .apply_source(
            &source,
            &[
                (id("alpha"), spec("/bin/alpha-v2")),
                (id("beta"), spec("/bin/beta")),
            ],
        )
        .unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome {
            updated: ids(&["alpha"]),
            unchanged: ids(&["beta"]),
            ..ApplyOutcome::default()
        }
    );
    let alpha = store.desired(&id("alpha")).unwrap().unwrap();
    assert_eq!(alpha.generation, 2);
    assert_eq!(*alpha.spec, spec("/bin/alpha-v2"));
    assert_eq!(generation(&store, "beta"), 1);
}

#[test]
fn apply_source_label_only_change_is_still_an_update() {
    // Labels do not restart a process, but they are part of the desired record.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    store
        .apply_source(&source, &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();
    let mut relabelled = spec("/bin/alpha");
    relabelled
        .labels
        .insert("tier".to_string(), "gold".to_string());

    let outcome = store
        .apply_source(&source, &[(id("alpha"), relabelled.clone())])
        .unwrap();

    assert_eq!(outcome.updated, ids(&["alpha"]));
    let alpha = store.desired(&id("alpha")).unwrap().unwrap();
    assert_eq!(alpha.generation, 2);
    assert_eq!(*alpha.spec, relabelled);
}

#[test]
fn apply_source_deletes_ids_dropped_from_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    store
        .apply_source(
            &source,
            &[
                (id("alpha"), spec("/bin/alpha")),
                (id("beta"), spec("/bin/beta")),
            ],
        )
        .unwrap();

    let outcome = store
        .apply_source(&source, &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome {
            deleted: ids(&["beta"]),
            unchanged: ids(&["alpha"]),
            ..ApplyOutcome::default()
        }
    );
    assert_eq!(store.desired(&id("beta")).unwrap(), None);
    let (records, corrupt) = store.all_desired().unwrap();
    assert!(corrupt.is_empty());
    assert_eq!(sorted_ids(&records), ids(&["alpha"]));
}

#[test]
fn apply_source_empty_set_deletes_everything_the_source_owned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    store
        .apply_source(
            &source,
            &[
                (id("alpha"), spec("/bin/alpha")),
                (id("beta"), spec("/bin/beta")),
            ],
        )
        .unwrap();

    let outcome = store.apply_source(&source, &[]).unwrap();

    let mut deleted = outcome.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ids(&["alpha", "beta"]));
    assert!(outcome.created.is_empty());
    assert!(outcome.updated.is_empty());
    assert!(outcome.unchanged.is_empty());
    assert!(outcome.conflicts.is_empty());
    assert!(store.all_desired().unwrap().0.is_empty());
}

#[test]
fn apply_source_mixed_outcome_lists_every_kind_of_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    store
        .apply_source(
            &source,
            &[
                (id("keep"), spec("/bin/keep")),
                (id("change"), spec("/bin/change")),
                (id("drop"), spec("/bin/drop")),
            ],
        )
        .unwrap();

    let outcome = store
        .apply_source(
            &source,
            &[
                (id("keep"), spec("/bin/keep")),
                (id("change"), spec("/bin/change-v2")),
                (id("new"), spec("/bin/new")),
            ],
        )
        .unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome {
            created: ids(&["new"]),
            updated: ids(&["change"]),
            deleted: ids(&["drop"]),
            unchanged: ids(&["keep"]),
            conflicts: Vec::new(),
            unconfirmed: Vec::new(),
        }
    );
    let mut changed: Vec<ProcessId> = outcome.changed().cloned().collect();
    changed.sort();
    assert_eq!(changed, ids(&["change", "drop", "new"]));
    assert_eq!(generation(&store, "keep"), 1);
    assert_eq!(generation(&store, "change"), 2);
    assert_eq!(generation(&store, "new"), 1);
    assert_eq!(store.desired(&id("drop")).unwrap(), None);
}

#[test]
fn apply_source_leaves_other_sources_records_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = file("/specs/a.yaml");
    let b = file("/specs/b.yaml");
    store
        .apply_source(&a, &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();
    store
        .apply_source(&b, &[(id("beta"), spec("/bin/beta"))])
        .unwrap();
    store
        .put_desired(&id("api-one"), &spec("/bin/api"), &Source::Api)
        .unwrap();

    // Source a no longer declares anything: only its own record goes.
    let outcome = store.apply_source(&a, &[]).unwrap();

    assert_eq!(outcome.deleted, ids(&["alpha"]));
    let (records, _) = store.all_desired().unwrap();
    assert_eq!(sorted_ids(&records), ids(&["api-one", "beta"]));
    assert_eq!(store.desired(&id("beta")).unwrap().unwrap().source, b);
}

#[test]
fn apply_source_admin_version_bump_is_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_source(
            &Source::Admin { version: 1 },
            &[(id("assigned"), spec("/bin/assigned"))],
        )
        .unwrap();

    let outcome = store
        .apply_source(
            &Source::Admin { version: 2 },
            &[(id("assigned"), spec("/bin/assigned"))],
        )
        .unwrap();

    assert_eq!(outcome.updated, ids(&["assigned"]));
    assert!(outcome.conflicts.is_empty());
    let record = store.desired(&id("assigned")).unwrap().unwrap();
    assert_eq!(record.generation, 2);
    assert_eq!(record.source, Source::Admin { version: 2 });
}

// ---------------------------------------------------------------------------------------------
// 2. Ownership
// ---------------------------------------------------------------------------------------------

#[test]
fn apply_source_reports_ids_owned_by_another_file_as_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = file("/specs/a.yaml");
    let intruder = file("/specs/b.yaml");
    store
        .apply_source(&owner, &[(id("shared-name"), spec("/bin/owner"))])
        .unwrap();

    let outcome = store
        .apply_source(
            &intruder,
            &[
                (id("shared-name"), spec("/bin/intruder")),
                (id("own"), spec("/bin/own")),
            ],
        )
        .unwrap();

    assert_eq!(
        outcome,
        ApplyOutcome {
            created: ids(&["own"]),
            conflicts: vec![(id("shared-name"), owner.clone())],
            ..ApplyOutcome::default()
        }
    );
    assert_eq!(
        store.desired(&id("shared-name")).unwrap().unwrap(),
        DesiredRecord {
            id: id("shared-name"),
            spec: Arc::new(spec("/bin/owner")),
            generation: 1,
            source: owner,
            resets: 0,
            held: false,
            restarts: 0,
        }
    );
}

#[test]
fn conflicting_source_does_not_gain_ownership_and_cannot_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = file("/specs/a.yaml");
    let intruder = file("/specs/b.yaml");
    store
        .apply_source(&owner, &[(id("shared-name"), spec("/bin/owner"))])
        .unwrap();
    store
        .apply_source(&intruder, &[(id("shared-name"), spec("/bin/intruder"))])
        .unwrap();

    // The intruder stops declaring it: it never owned it, so nothing is deleted.
    let outcome = store.apply_source(&intruder, &[]).unwrap();

    assert_eq!(outcome, ApplyOutcome::default());
    let record = store.desired(&id("shared-name")).unwrap().unwrap();
    assert_eq!(record.source, owner);
    assert_eq!(record.generation, 1);
}

#[test]
fn put_desired_on_a_file_owned_id_is_refused_naming_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = file("/specs/a.yaml");
    store
        .apply_source(&owner, &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();

    let error = store
        .put_desired(&id("alpha"), &spec("/bin/from-api"), &Source::Api)
        .expect_err("an api write on a file-owned id must be refused");

    let message = error.to_string();
    match error {
        StoreError::OwnedByAnother {
            id: refused,
            owner: reported_owner,
            requester,
        } => {
            assert_eq!(refused, id("alpha"));
            assert_eq!(reported_owner, owner);
            assert_eq!(requester, Source::Api);
        }
        other => panic!("expected OwnedByAnother, got {other:?}"),
    }
    assert!(
        message.contains("file:/specs/a.yaml"),
        "message should name the owner file: {message}"
    );
    assert!(
        message.contains("alpha"),
        "message should name the id: {message}"
    );
    let record = store.desired(&id("alpha")).unwrap().unwrap();
    assert_eq!(*record.spec, spec("/bin/alpha"));
    assert_eq!(record.generation, 1);
}

#[test]
fn delete_desired_by_a_non_owner_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let owner = file("/specs/a.yaml");
    store
        .apply_source(&owner, &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();

    for requester in [
        Source::Api,
        Source::Admin { version: 7 },
        file("/specs/b.yaml"),
    ] {
        match store.delete_desired(&id("alpha"), &requester) {
            Err(StoreError::OwnedByAnother {
                owner: reported_owner,
                requester: reported_requester,
                ..
            }) => {
                assert_eq!(reported_owner, owner);
                assert_eq!(reported_requester, requester);
            }
            other => panic!("expected OwnedByAnother for {requester}, got {other:?}"),
        }
    }
    assert!(store.desired(&id("alpha")).unwrap().is_some());
}

#[test]
fn delete_desired_by_the_owner_deletes_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .put_desired(&id("launched"), &spec("/bin/launched"), &Source::Api)
        .unwrap();

    assert!(store.delete_desired(&id("launched"), &Source::Api).unwrap());
    assert_eq!(store.desired(&id("launched")).unwrap(), None);
    assert!(!store.delete_desired(&id("launched"), &Source::Api).unwrap());
}

#[test]
fn delete_desired_of_an_unknown_id_is_false() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    assert!(!store.delete_desired(&id("nobody"), &Source::Api).unwrap());
}

// ---------------------------------------------------------------------------------------------
// 3. Generations never repeat
// ---------------------------------------------------------------------------------------------

#[test]
fn generation_is_not_reused_after_delete_and_recreate_through_put_desired() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let created = store
        .put_desired(&id("phoenix"), &spec("/bin/phoenix"), &Source::Api)
        .unwrap();
    assert_eq!(created.generation, 1);
    assert!(store.delete_desired(&id("phoenix"), &Source::Api).unwrap());

    let recreated = store
        .put_desired(&id("phoenix"), &spec("/bin/phoenix"), &Source::Api)
        .unwrap();

    assert_eq!(recreated.generation, 2);
    assert_eq!(generation(&store, "phoenix"), 2);
}

#[test]
fn generation_is_not_reused_after_delete_and_recreate_through_apply_source() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    store
        .apply_source(&source, &[(id("phoenix"), spec("/bin/phoenix"))])
        .unwrap();
    assert_eq!(generation(&store, "phoenix"), 1);
    let outcome = store.apply_source(&source, &[]).unwrap();
    assert_eq!(outcome.deleted, ids(&["phoenix"]));

    let outcome = store
        .apply_source(&source, &[(id("phoenix"), spec("/bin/phoenix"))])
        .unwrap();

    assert_eq!(outcome.created, ids(&["phoenix"]));
    assert_eq!(generation(&store, "phoenix"), 2);
}

#[test]
fn generation_is_not_reused_when_another_source_recreates_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_source(&file("/specs/a.yaml"), &[(id("phoenix"), spec("/bin/a"))])
        .unwrap();
    store.apply_source(&file("/specs/a.yaml"), &[]).unwrap();

    let record = store
        .put_desired(&id("phoenix"), &spec("/bin/b"), &Source::Api)
        .unwrap();

    assert_eq!(record.generation, 2);
    assert_eq!(record.source, Source::Api);
}

// ---------------------------------------------------------------------------------------------
// 4. Admin source
// ---------------------------------------------------------------------------------------------

#[test]
fn put_desired_admin_version_change_gives_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let assigned = id("assigned");

    let first = store
        .put_desired(
            &assigned,
            &spec("/bin/assigned"),
            &Source::Admin { version: 1 },
        )
        .unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.source, Source::Admin { version: 1 });

    let second = store
        .put_desired(
            &assigned,
            &spec("/bin/assigned"),
            &Source::Admin { version: 2 },
        )
        .unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.source, Source::Admin { version: 2 });
    let stored = store.desired(&assigned).unwrap().unwrap();
    assert_eq!(stored, second);

    let third = store
        .put_desired(
            &assigned,
            &spec("/bin/assigned"),
            &Source::Admin { version: 2 },
        )
        .unwrap();
    assert_eq!(third, second);
    assert_eq!(generation(&store, "assigned"), 2);
}

#[test]
fn put_desired_same_spec_and_source_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store
        .put_desired(&id("launched"), &spec("/bin/launched"), &Source::Api)
        .unwrap();

    let again = store
        .put_desired(&id("launched"), &spec("/bin/launched"), &Source::Api)
        .unwrap();

    assert_eq!(again, first);
    assert_eq!(again.generation, 1);

    let changed = store
        .put_desired(&id("launched"), &spec("/bin/launched-v2"), &Source::Api)
        .unwrap();
    assert_eq!(changed.generation, 2);
}

#[test]
fn admin_and_api_do_not_share_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .put_desired(
            &id("assigned"),
            &spec("/bin/assigned"),
            &Source::Admin { version: 1 },
        )
        .unwrap();

    let error = store
        .put_desired(&id("assigned"), &spec("/bin/other"), &Source::Api)
        .expect_err("api must not overwrite an admin record");

    assert!(matches!(
        error,
        StoreError::OwnedByAnother {
            owner: Source::Admin { version: 1 },
            requester: Source::Api,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// 5. Durability
// ---------------------------------------------------------------------------------------------

#[test]
fn records_survive_closing_and_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let source = file("/specs/a.yaml");
    let (alpha, launched) = {
        let store = open(dir.path());
        store
            .apply_source(&source, &[(id("alpha"), spec("/bin/alpha"))])
            .unwrap();
        let launched = store
            .put_desired(&id("launched"), &spec("/bin/launched"), &Source::Api)
            .unwrap();
        store
            .put_observed(&observed("alpha", Phase::Running))
            .unwrap();
        store
            .put_observed(&observed("launched", Phase::BackingOff))
            .unwrap();
        store.flush().unwrap();
        (store.desired(&id("alpha")).unwrap().unwrap(), launched)
    };

    let store = open(dir.path());

    assert_eq!(store.desired(&id("alpha")).unwrap(), Some(alpha));
    assert_eq!(store.desired(&id("launched")).unwrap(), Some(launched));
    let (records, corrupt) = store.all_desired().unwrap();
    assert!(corrupt.is_empty());
    assert_eq!(sorted_ids(&records), ids(&["alpha", "launched"]));
    assert_eq!(
        store.observed(&id("alpha")).unwrap(),
        Some(observed("alpha", Phase::Running))
    );
    assert_eq!(
        store.observed(&id("launched")).unwrap(),
        Some(observed("launched", Phase::BackingOff))
    );
    let (observed_records, corrupt) = store.all_observed().unwrap();
    assert!(corrupt.is_empty());
    assert_eq!(observed_records.len(), 2);

    // Ownership and the last generation survive too.
    let outcome = store
        .apply_source(&source, &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();
    assert_eq!(outcome.unchanged, ids(&["alpha"]));
    let outcome = store.apply_source(&source, &[]).unwrap();
    assert_eq!(outcome.deleted, ids(&["alpha"]));
    let recreated = store
        .put_desired(&id("alpha"), &spec("/bin/alpha"), &Source::Api)
        .unwrap();
    assert_eq!(recreated.generation, 2);
}

#[test]
fn release_memory_keeps_every_record_and_the_store_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let source = file("/specs/a.yaml");
    store
        .apply_source(&source, &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();
    store
        .put_observed(&observed("alpha", Phase::Running))
        .unwrap();
    store
        .put_last_exit(&id("gone"), ExitStatus::Code(3), UnixMillis(7))
        .unwrap();
    store
        .request_stop(&id("gone"), Duration::from_secs(2))
        .unwrap();
    // Not flushed by the caller: the release flushes what the loop wrote before it closes.
    store
        .put_observed(&observed("written-last", Phase::Stopping))
        .unwrap();
    let mut epoch = store.subscribe_observed();
    epoch.borrow_and_update();
    let alpha = store.desired(&id("alpha")).unwrap();

    store.release_memory().unwrap();

    assert!(
        epoch.has_changed().unwrap(),
        "the flush before the close counts as one of observed writes"
    );
    assert_eq!(store.desired(&id("alpha")).unwrap(), alpha);
    assert_eq!(
        store.observed(&id("alpha")).unwrap(),
        Some(observed("alpha", Phase::Running))
    );
    assert_eq!(
        store.observed(&id("written-last")).unwrap(),
        Some(observed("written-last", Phase::Stopping))
    );
    assert_eq!(
        store.last_exit(&id("gone")).unwrap(),
        Some((ExitStatus::Code(3), UnixMillis(7)))
    );
    assert_eq!(
        store.take_stop_request(&id("gone")).unwrap(),
        Some(Duration::from_secs(2))
    );
    // Writes and transactions go on as before, generations and ownership included.
    let outcome = store.apply_source(&source, &[]).unwrap();
    assert_eq!(outcome.deleted, ids(&["alpha"]));
    let recreated = store
        .put_desired(&id("alpha"), &spec("/bin/alpha"), &Source::Api)
        .unwrap();
    assert_eq!(recreated.generation, 2);
    store.release_memory().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.desired(&id("alpha")).unwrap(), Some(recreated));
}

#[test]
fn calls_made_while_the_store_is_released_wait_for_it_and_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    for name in ["a", "b", "c"] {
        store
            .put_desired(&id(name), &spec("/bin/sleep"), &Source::Api)
            .unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|reader| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut calls = 0;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let (records, corrupt) = store.all_desired().unwrap();
                    assert_eq!((records.len(), corrupt.len()), (3, 0));
                    store
                        .put_observed(&observed(&format!("r{reader}"), Phase::Running))
                        .unwrap();
                    store.flush().unwrap();
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    for _ in 0..5 {
        store.release_memory().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for reader in readers {
        assert!(reader.join().unwrap() > 0, "a reader never got a call in");
    }
    assert_eq!(store.all_observed().unwrap().0.len(), 3);
}

#[test]
fn a_second_store_is_refused_by_the_stores_own_lock_even_when_sleds_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.release_memory().unwrap();
    assert!(
        matches!(Store::open(dir.path()), Err(StoreError::Locked { .. })),
        "a second store on a store in use"
    );
    drop(store);
    // The store's lock alone, as held across a release while sled's lock is let go: refused
    // before sled is even opened.
    let lock = StoreLock::take(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(lock);
    open(dir.path());
}

/// A copy of the store's files as they are now: what a launcher killed at this instant would
/// find on disk.
fn copy_of_the_files(dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_of_the_files(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn writes_made_while_the_store_is_released_again_and_again_are_kept_and_on_disk_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let (store, stop, writes) =
                (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&writes));
            std::thread::spawn(move || {
                let mut written = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let name = format!("w{writer}-{}", written.len());
                    // A desired write (flushed before it returns) and an observed one as the
                    // loop makes them (flushed later, by someone else).
                    store
                        .put_desired(&id(&name), &spec("/bin/sleep"), &Source::Api)
                        .unwrap();
                    store
                        .put_observed(&observed(&name, Phase::Running))
                        .unwrap();
                    written.push(name);
                    writes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                written
            })
        })
        .collect();
    // Releases until five of them had writes made while they were under way or just before.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut raced = 0;
    while raced < 5 && std::time::Instant::now() < deadline {
        let before = writes.load(std::sync::atomic::Ordering::Acquire);
        store.release_memory().unwrap();
        if writes.load(std::sync::atomic::Ordering::Acquire) != before {
            raced += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let written: Vec<String> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    assert_eq!(raced, 5, "writes raced five releases");
    // The last observed writes are flushed by nobody but the release.
    store.release_memory().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    copy_of_the_files(dir.path(), crashed.path());
    for store in [&*store, &open(crashed.path())] {
        for name in &written {
            assert!(store.desired(&id(name)).unwrap().is_some(), "{name}");
            assert_eq!(
                store.observed(&id(name)).unwrap(),
                Some(observed(name, Phase::Running)),
                "{name}"
            );
        }
        assert_eq!(store.all_desired().unwrap().0.len(), written.len());
    }
}

#[test]
fn a_failed_reopen_is_an_error_calls_fail_at_once_and_only_open_again_opens_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let recreated = store
        .put_desired(&id("alpha"), &spec("/bin/alpha"), &Source::Api)
        .unwrap();
    // A handle that outlives the release keeps sled open, and its lock held.
    let leaked = match &*store.read_trees() {
        Slot::Open(trees) => trees.desired.clone(),
        Slot::Closed => panic!("the store is open"),
    };

    let error = store.release_memory().unwrap_err();
    match &error {
        StoreError::Reopen { path, source } => {
            assert_eq!(path, dir.path());
            assert!(matches!(**source, StoreError::Locked { .. }), "{source:?}");
        }
        other => panic!("expected Reopen, got {other:?}"),
    }
    assert!(
        store.is_busy(),
        "closed: the loop leaves its store calls for later"
    );
    let started = std::time::Instant::now();
    assert!(matches!(
        store.desired(&id("alpha")),
        Err(StoreError::Closed { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "a call fails at once"
    );
    assert!(matches!(store.open_again(), Err(StoreError::Reopen { .. })));

    drop(leaked);
    // Free to open now, but no call opens it on its own (a caller such as the loop would wait
    // for sled): every call fails at once until `open_again`.
    for _ in 0..3 {
        assert!(matches!(
            store.desired(&id("alpha")),
            Err(StoreError::Closed { .. })
        ));
        assert!(store.is_busy());
    }
    store.open_again().unwrap();
    assert!(!store.is_busy());
    assert_eq!(store.desired(&id("alpha")).unwrap(), Some(recreated));
    store.open_again().unwrap();
    store
        .put_observed(&observed("alpha", Phase::Running))
        .unwrap();
    store.release_memory().unwrap();
    assert!(store.observed(&id("alpha")).unwrap().is_some());
}

/// A slot closes only after a flush that succeeded and no write succeeds while it is closed,
/// so a flush of a closed store has nothing to do: a desired write that its release made
/// durable is answered as written (and its notice sent), not refused while it is on disk.
#[test]
fn a_flush_of_a_store_closed_after_a_failed_reopen_succeeds_what_was_written_being_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let alpha = store
        .put_desired(&id("alpha"), &spec("/bin/alpha"), &Source::Api)
        .unwrap();
    store
        .put_observed(&observed("alpha", Phase::Running))
        .unwrap();
    let mut epoch = store.subscribe_observed();
    epoch.borrow_and_update();

    store.close_as_if_reopen_failed();

    assert!(epoch.has_changed().unwrap(), "the release's flush told");
    epoch.borrow_and_update();
    store.flush().unwrap();
    assert!(
        matches!(
            store.put_observed(&observed("beta", Phase::Running)),
            Err(StoreError::Closed { .. })
        ),
        "no write succeeds while closed"
    );
    store.flush().unwrap();
    assert!(
        !epoch.has_changed().unwrap(),
        "nothing new was made durable"
    );
    let crashed = tempfile::tempdir().unwrap();
    copy_of_the_files(dir.path(), crashed.path());
    let copy = open(crashed.path());
    assert_eq!(copy.desired(&id("alpha")).unwrap(), Some(alpha));
    assert_eq!(
        copy.observed(&id("alpha")).unwrap(),
        Some(observed("alpha", Phase::Running))
    );
    assert_eq!(copy.observed(&id("beta")).unwrap(), None);
}

#[test]
fn a_reopen_never_creates_an_empty_store_in_place_of_one_moved_away() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = open(&dir);
    let alpha = store
        .put_desired(&id("alpha"), &spec("/bin/alpha"), &Source::Api)
        .unwrap();
    // An operator moves the data directory aside (or a cleaner removes it) under a running
    // launcher: sled's files stay open, so before the reopen nothing changes.
    std::fs::rename(&dir, root.path().join("aside")).unwrap();
    assert_eq!(store.desired(&id("alpha")).unwrap(), Some(alpha.clone()));

    let released = store.release_memory();

    // An empty store made in its place would tell the loop, at its next resync, that nothing
    // is desired any more (and stop every process); the launcher's state must not vanish.
    assert!(
        matches!(released, Err(StoreError::Reopen { .. })),
        "{released:?}"
    );
    assert!(
        !dir.join("db").exists(),
        "no new database made in the old one's place"
    );
    match store.desired(&id("alpha")) {
        Ok(None) => panic!("the desired record vanished"),
        Ok(Some(record)) => assert_eq!(record, alpha),
        Err(_) => {}
    }

    match store.open_again() {
        Err(StoreError::Reopen { source, .. }) => {
            assert!(matches!(*source, StoreError::Replaced { .. }), "{source:?}")
        }
        other => panic!("expected Reopen, got {other:?}"),
    }
    assert!(!dir.join("db").exists());

    // Put back, it is the same database: it opens again.
    std::fs::rename(root.path().join("aside"), &dir).unwrap();
    store.open_again().unwrap();
    assert_eq!(store.desired(&id("alpha")).unwrap(), Some(alpha));
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "a store call made while this thread holds the store's trees")]
fn a_store_call_made_while_holding_the_trees_is_caught_before_it_can_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let _ = store.with_trees(|_| store.desired(&id("alpha")));
}

#[test]
fn desired_writes_are_durable_without_an_explicit_flush() {
    // apply_source, put_desired and delete_desired flush before returning.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .apply_source(
                &file("/specs/a.yaml"),
                &[
                    (id("alpha"), spec("/bin/alpha")),
                    (id("beta"), spec("/bin/beta")),
                ],
            )
            .unwrap();
        store
            .put_desired(&id("launched"), &spec("/bin/launched"), &Source::Api)
            .unwrap();
        store
            .put_desired(&id("gone"), &spec("/bin/gone"), &Source::Api)
            .unwrap();
        assert!(store.delete_desired(&id("gone"), &Source::Api).unwrap());
    }

    let store = open(dir.path());

    let (records, corrupt) = store.all_desired().unwrap();
    assert!(corrupt.is_empty());
    assert_eq!(sorted_ids(&records), ids(&["alpha", "beta", "launched"]));
}

#[test]
fn launcher_id_is_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert_eq!(store.launcher_id_or_insert("first-id").unwrap(), "first-id");
        assert_eq!(store.launcher_id_or_insert("other-id").unwrap(), "first-id");
    }

    let store = open(dir.path());

    assert_eq!(
        store.launcher_id_or_insert("second-id").unwrap(),
        "first-id"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Schema
// ---------------------------------------------------------------------------------------------

#[test]
fn new_store_records_the_current_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));

    let raw = raw_db(dir.path());
    let meta = raw.open_tree("meta").unwrap();
    assert_eq!(
        meta.get(b"schema_version").unwrap().as_deref(),
        Some(SCHEMA_VERSION.to_string().as_bytes())
    );
    drop(meta);
    drop(raw);

    // And a store at the current version opens again.
    open(dir.path());
}

#[test]
fn store_with_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let raw = raw_db(dir.path());
        let meta = raw.open_tree("meta").unwrap();
        meta.insert(b"schema_version", b"999".as_slice()).unwrap();
        raw.flush().unwrap();
    }

    let error = open_waiting(dir.path()).expect_err("schema 999 must be refused");

    let message = error.to_string();
    match error {
        StoreError::UnsupportedSchema { path, found } => {
            assert_eq!(path, dir.path());
            assert_eq!(found, "999");
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
    assert!(
        message.contains("schema version 999"),
        "message should name the found version: {message}"
    );
    assert!(
        message.contains(&format!("reads version {SCHEMA_VERSION}")),
        "message should name the supported version: {message}"
    );
}

fn raw_get(dir: &Path, tree: &str, key: &str) -> Option<Vec<u8>> {
    raw_db(dir)
        .open_tree(tree)
        .unwrap()
        .get(key)
        .unwrap()
        .map(|bytes| bytes.to_vec())
}

/// Writes `records` into the trees of a raw store whose meta says `version`, and flushes.
fn write_raw_store(dir: &Path, version: &[u8], records: &[(&str, &str, &[u8])]) {
    let raw = raw_db(dir);
    raw.open_tree("meta")
        .unwrap()
        .insert(b"schema_version", version)
        .unwrap();
    for (tree, key, bytes) in records {
        raw.open_tree(tree).unwrap().insert(key, *bytes).unwrap();
    }
    raw.flush().unwrap();
}

/// The fields of a spec that version 1 let records omit.
const V1_SPEC_OPTIONAL: [&str; 3] = ["success_exit_codes", "backoff", "type_config"];

/// `record` as JSON text without `fields` and without the spec fields version 1 let records
/// omit: a record as a version-1 launcher from before those fields wrote it. (Version 3 leaves
/// fields that hold their default out already, so a field may be absent before it is removed.)
fn v1_json<T: Serialize>(record: &T, fields: &[&str]) -> Vec<u8> {
    let mut value = serde_json::to_value(record).unwrap();
    let object = value.as_object_mut().expect("a record is a JSON object");
    for field in fields {
        object.remove(*field);
    }
    let spec = object
        .get_mut("spec")
        .and_then(serde_json::Value::as_object_mut)
        .expect("a record has a spec object");
    for field in V1_SPEC_OPTIONAL {
        spec.remove(field);
    }
    serde_json::to_vec(&value).unwrap()
}

fn v1_desired_json(record: &DesiredRecord) -> Vec<u8> {
    v1_json(record, &["resets"])
}

fn v1_observed_json(record: &ObservedRecord) -> Vec<u8> {
    v1_json(
        record,
        &["instance", "resets_seen", "tripped_at", "exited_at"],
    )
}

fn desired_record(name: &str, source: Source) -> DesiredRecord {
    DesiredRecord {
        id: id(name),
        spec: Arc::new(spec(&format!("/bin/{name}"))),
        generation: 3,
        source,
        resets: 0,
        held: false,
        restarts: 0,
    }
}

#[test]
fn a_version_1_store_is_migrated_once_at_open() {
    let dir = tempfile::tempdir().unwrap();
    // Records from before the eight fields: they decode with the defaults.
    let old_desired = desired_record("alpha", file("/specs/a.yaml"));
    let old_observed = observed("alpha", Phase::Running);
    let old_desired_json = v1_desired_json(&old_desired);
    let old_observed_json = v1_observed_json(&old_observed);
    assert!(!String::from_utf8_lossy(&old_desired_json).contains("\"resets\""));
    assert!(!String::from_utf8_lossy(&old_observed_json).contains("\"resets_seen\""));
    // A record of a late version-1 launcher has every field, some not the default: kept as is.
    let mut complete = desired_record("omega", Source::Api);
    Arc::make_mut(&mut complete.spec).success_exit_codes = vec![0, 3];
    Arc::make_mut(&mut complete.spec).backoff.failure_threshold = Some(7);
    complete.resets = 4;
    let mut complete_value = serde_json::to_value(&complete).unwrap();
    // Version 3 leaves the default type configuration out; a version-1 launcher wrote it.
    complete_value["spec"]["type_config"] = serde_json::json!("None");
    let complete_json = serde_json::to_vec(&complete_value).unwrap();
    write_raw_store(
        dir.path(),
        b"1",
        &[
            ("desired", "alpha", &old_desired_json),
            ("desired", "omega", &complete_json),
            ("observed", "alpha", &old_observed_json),
        ],
    );

    {
        let store = open(dir.path());
        let (records, corrupt) = store.all_desired().unwrap();
        assert!(corrupt.is_empty(), "{corrupt:?}");
        assert_eq!(records, vec![old_desired.clone(), complete.clone()]);
        let (observed_records, corrupt) = store.all_observed().unwrap();
        assert!(corrupt.is_empty(), "{corrupt:?}");
        assert_eq!(observed_records, vec![old_observed.clone()]);
        // A change after the migration, which a second migration must not undo.
        let reset = store.reset_desired(&id("alpha")).unwrap().unwrap();
        assert_eq!(reset.resets, 1);
    }

    assert_eq!(
        raw_get(dir.path(), "meta", "schema_version").as_deref(),
        Some(b"5".as_slice())
    );
    assert_eq!(
        raw_get(dir.path(), "desired", "omega"),
        Some(complete_json),
        "a complete record is not rewritten"
    );
    let migrated = raw_get(dir.path(), "observed", "alpha").unwrap();
    let migrated: serde_json::Value = serde_json::from_slice(&migrated).unwrap();
    assert_eq!(migrated["resets_seen"], serde_json::json!(0));
    assert_eq!(migrated["spec"]["type_config"], serde_json::json!("None"));
    // A record in the old shape written into the migrated store: a second version-1 migration
    // would complete it and write it back, so its bytes show whether one runs. (Version 3 reads
    // the absent fields as their defaults, so it decodes either way.)
    let late = v1_desired_json(&desired_record("late", Source::Api));
    write_raw_store(dir.path(), b"3", &[("desired", "late", &late)]);

    let store = open(dir.path());
    let (records, corrupt) = store.all_desired().unwrap();
    assert!(corrupt.is_empty(), "{corrupt:?}");
    let mut expected_alpha = old_desired;
    expected_alpha.resets = 1;
    assert_eq!(
        records,
        vec![
            expected_alpha,
            desired_record("late", Source::Api),
            complete
        ]
    );
    drop(store);
    assert_eq!(raw_get(dir.path(), "desired", "late"), Some(late));
}

#[test]
fn a_store_written_by_a_newer_launcher_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // 4 today: the first version no launcher of this build knows.
    let newer = (SCHEMA_VERSION + 1).to_string();
    // Records a version-1 migration would complete, were the store misread as one.
    let desired = v1_desired_json(&desired_record("alpha", Source::Api));
    let observed_json = v1_observed_json(&observed("alpha", Phase::Running));
    write_raw_store(
        dir.path(),
        newer.as_bytes(),
        &[
            ("desired", "alpha", &desired),
            ("observed", "alpha", &observed_json),
        ],
    );

    let error = open_waiting(dir.path()).expect_err("a newer schema must be refused");

    let message = error.to_string();
    match error {
        StoreError::UnsupportedSchema { path, found } => {
            assert_eq!(path, dir.path());
            assert_eq!(found, newer);
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
    for expected in [
        format!("the store at {}", dir.path().display()),
        "written by a newer prism-launcher".to_string(),
        format!("(schema version {newer})"),
        format!("reads version {SCHEMA_VERSION}"),
        "migrates versions 1 to 4".to_string(),
        "upgrade the launcher or move the data directory aside".to_string(),
    ] {
        assert!(message.contains(&expected), "{expected:?} in: {message}");
    }
    assert_eq!(
        raw_get(dir.path(), "meta", "schema_version"),
        Some(newer.into_bytes())
    );
    assert_eq!(raw_get(dir.path(), "desired", "alpha"), Some(desired));
    assert_eq!(
        raw_get(dir.path(), "observed", "alpha"),
        Some(observed_json)
    );
}

#[test]
fn a_store_with_an_unreadable_schema_version_is_refused_and_left_unchanged() {
    for stored in [b"0".as_slice(), b"two", b"02", b"+2", b" 2", b"", b"\xff"] {
        let dir = tempfile::tempdir().unwrap();
        write_raw_store(dir.path(), stored, &[]);

        let error = open_waiting(dir.path()).expect_err("an unreadable schema must be refused");

        let message = error.to_string();
        match error {
            StoreError::UnreadableSchema { path, found } => {
                assert_eq!(path, dir.path());
                assert_eq!(found, String::from_utf8_lossy(stored));
            }
            other => panic!("expected UnreadableSchema for {stored:?}, got {other:?}"),
        }
        assert!(
            message.contains("unreadable schema version")
                && message.contains(&format!("reads version {SCHEMA_VERSION}"))
                && message.contains("move the data directory aside"),
            "{message}"
        );
        assert_eq!(
            raw_get(dir.path(), "meta", "schema_version").as_deref(),
            Some(stored)
        );
    }
}

#[test]
fn a_version_1_store_with_corrupt_records_opens_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = desired_record("alpha", file("/specs/a.yaml"));
    let alpha_observed = observed("alpha", Phase::Running);
    let garbage = b"\x00\xffnot json{".as_slice();
    // JSON, and given the new fields, but it lacks `generation`, which was never optional.
    let mut no_generation: serde_json::Value = serde_json::from_slice(&v1_desired_json(
        &desired_record("no-generation", Source::Api),
    ))
    .unwrap();
    no_generation
        .as_object_mut()
        .unwrap()
        .remove("generation")
        .unwrap();
    let no_generation = serde_json::to_vec(&no_generation).unwrap();
    let mangled = b"[1,2".as_slice();
    write_raw_store(
        dir.path(),
        b"1",
        &[
            ("desired", "alpha", &v1_desired_json(&alpha)),
            ("desired", "garbage-key", garbage),
            ("desired", "no-generation", &no_generation),
            ("observed", "alpha", &v1_observed_json(&alpha_observed)),
            ("observed", "mangled", mangled),
        ],
    );

    {
        let store = open(dir.path());
        let (records, corrupt) = store
            .all_desired()
            .expect("a corrupt record must not fail the scan");
        assert_eq!(records, vec![alpha]);
        let corrupt_keys: Vec<(&str, &str)> = corrupt
            .iter()
            .map(|error| match error {
                StoreError::Corrupt { tree, key, .. } => (*tree, key.as_str()),
                other => panic!("expected Corrupt, got {other:?}"),
            })
            .collect();
        assert_eq!(
            corrupt_keys,
            vec![("desired", "garbage-key"), ("desired", "no-generation")]
        );
        let (records, corrupt) = store.all_observed().unwrap();
        assert_eq!(records, vec![alpha_observed]);
        assert_eq!(corrupt.len(), 1);
        assert!(matches!(
            &corrupt[0],
            StoreError::Corrupt { tree: "observed", key, .. } if key == "mangled"
        ));
    }

    // Left exactly as they were; the rest of the store is version 2.
    assert_eq!(
        raw_get(dir.path(), "desired", "garbage-key").as_deref(),
        Some(garbage)
    );
    assert_eq!(
        raw_get(dir.path(), "desired", "no-generation"),
        Some(no_generation)
    );
    assert_eq!(
        raw_get(dir.path(), "observed", "mangled").as_deref(),
        Some(mangled)
    );
    assert_eq!(
        raw_get(dir.path(), "meta", "schema_version").as_deref(),
        Some(b"5".as_slice())
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Corrupt records
// ---------------------------------------------------------------------------------------------

#[test]
fn corrupt_desired_record_is_reported_without_failing_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .apply_source(
                &file("/specs/a.yaml"),
                &[
                    (id("alpha"), spec("/bin/alpha")),
                    (id("omega"), spec("/bin/omega")),
                ],
            )
            .unwrap();
    }
    insert_unreadable_desired(dir.path(), "garbage-key");

    let store = open(dir.path());
    let (records, corrupt) = store
        .all_desired()
        .expect("a corrupt record must not fail the scan");

    assert_eq!(sorted_ids(&records), ids(&["alpha", "omega"]));
    assert_eq!(corrupt.len(), 1);
    let message = corrupt[0].to_string();
    match &corrupt[0] {
        StoreError::Corrupt { tree, key, .. } => {
            assert_eq!(*tree, "desired");
            assert_eq!(key, "garbage-key");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        message.contains("garbage-key"),
        "message should name the key: {message}"
    );
    // Reading the corrupt record alone reports it too.
    let single = store.desired(&id("garbage-key"));
    assert!(
        matches!(single, Err(StoreError::Corrupt { .. })),
        "{single:?}"
    );
}

/// What decides whether a starting launcher waits for the spec directory's scan
/// (`SourcesRead::at_start`): a record a file declared, or one that cannot be read, counts; the
/// API's and admin's do not.
#[test]
fn the_store_holds_file_records_when_a_file_declared_one_or_one_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert!(!store.holds_file_records().unwrap(), "an empty store");
        store
            .put_desired(&id("launched"), &spec("/bin/api"), &Source::Api)
            .unwrap();
        assert!(
            !store.holds_file_records().unwrap(),
            "only the API's record"
        );
        store
            .apply_source(&file("/specs/a.yaml"), &[(id("alpha"), spec("/bin/alpha"))])
            .unwrap();
        assert!(store.holds_file_records().unwrap(), "a file's record");
        store.apply_source(&file("/specs/a.yaml"), &[]).unwrap();
        assert!(
            !store.holds_file_records().unwrap(),
            "the file's record removed"
        );
    }
    insert_unreadable_desired(dir.path(), "garbage-key");
    let store = open(dir.path());
    assert!(store.holds_file_records().unwrap(), "an unreadable record");
}

#[test]
fn corrupt_desired_record_can_be_overwritten_by_a_new_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let raw = raw_db(dir.path());
        let desired = raw.open_tree("desired").unwrap();
        desired.insert(b"broken", b"{".as_slice()).unwrap();
        raw.flush().unwrap();
    }
    let store = open(dir.path());

    let record = store
        .put_desired(&id("broken"), &spec("/bin/fixed"), &Source::Api)
        .unwrap();

    assert_eq!(record.generation, 1);
    let (records, corrupt) = store.all_desired().unwrap();
    assert!(corrupt.is_empty());
    assert_eq!(records, vec![record]);
}

#[test]
fn corrupt_observed_record_is_reported_without_failing_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .put_observed(&observed("alpha", Phase::Running))
            .unwrap();
        store.flush().unwrap();
    }
    {
        let raw = raw_db(dir.path());
        let observed_tree = raw.open_tree("observed").unwrap();
        observed_tree
            .insert(b"mangled", b"[1,2".as_slice())
            .unwrap();
        raw.flush().unwrap();
    }

    let store = open(dir.path());
    let (records, corrupt) = store.all_observed().unwrap();

    assert_eq!(records, vec![observed("alpha", Phase::Running)]);
    assert_eq!(corrupt.len(), 1);
    assert!(matches!(
        &corrupt[0],
        StoreError::Corrupt { tree: "observed", key, .. } if key == "mangled"
    ));
}

// ---------------------------------------------------------------------------------------------
// 8. Notifications
// ---------------------------------------------------------------------------------------------

#[test]
fn apply_source_notifies_changed_ids_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut changes = store.subscribe();
    let source = file("/specs/a.yaml");

    store
        .apply_source(
            &source,
            &[
                (id("alpha"), spec("/bin/alpha")),
                (id("beta"), spec("/bin/beta")),
            ],
        )
        .unwrap();
    assert_eq!(drain(&mut changes), ids(&["alpha", "beta"]));

    store
        .apply_source(
            &source,
            &[
                (id("alpha"), spec("/bin/alpha")),
                (id("beta"), spec("/bin/beta")),
            ],
        )
        .unwrap();
    assert_eq!(drain(&mut changes), Vec::<ProcessId>::new());

    store
        .apply_source(&source, &[(id("alpha"), spec("/bin/alpha-v2"))])
        .unwrap();
    let mut received = drain(&mut changes);
    received.sort();
    assert_eq!(received, ids(&["alpha", "beta"]));
}

#[test]
fn conflicts_are_not_notified() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_source(&file("/specs/a.yaml"), &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();
    let mut changes = store.subscribe();

    let outcome = store
        .apply_source(&file("/specs/b.yaml"), &[(id("alpha"), spec("/bin/other"))])
        .unwrap();

    assert_eq!(outcome.conflicts.len(), 1);
    assert_eq!(drain(&mut changes), Vec::<ProcessId>::new());
}

#[test]
fn put_and_delete_desired_notify_only_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut changes = store.subscribe();
    let launched = id("launched");

    store
        .put_desired(&launched, &spec("/bin/launched"), &Source::Api)
        .unwrap();
    assert_eq!(drain(&mut changes), vec![launched.clone()]);

    store
        .put_desired(&launched, &spec("/bin/launched"), &Source::Api)
        .unwrap();
    assert_eq!(drain(&mut changes), Vec::<ProcessId>::new());

    store
        .put_desired(&launched, &spec("/bin/launched-v2"), &Source::Api)
        .unwrap();
    assert_eq!(drain(&mut changes), vec![launched.clone()]);

    assert!(store.delete_desired(&launched, &Source::Api).unwrap());
    assert_eq!(drain(&mut changes), vec![launched.clone()]);

    assert!(!store.delete_desired(&launched, &Source::Api).unwrap());
    assert_eq!(drain(&mut changes), Vec::<ProcessId>::new());
}

#[test]
fn refused_writes_are_not_notified() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_source(&file("/specs/a.yaml"), &[(id("alpha"), spec("/bin/alpha"))])
        .unwrap();
    let mut changes = store.subscribe();

    assert!(store
        .put_desired(&id("alpha"), &spec("/bin/api"), &Source::Api)
        .is_err());
    assert!(store.delete_desired(&id("alpha"), &Source::Api).is_err());

    assert_eq!(drain(&mut changes), Vec::<ProcessId>::new());
}

#[test]
fn every_subscriber_is_notified_and_dropped_ones_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut first = store.subscribe();
    let second = store.subscribe();
    let mut third = store.subscribe();
    drop(second);

    store
        .put_desired(&id("launched"), &spec("/bin/launched"), &Source::Api)
        .unwrap();

    assert_eq!(drain(&mut first), ids(&["launched"]));
    assert_eq!(drain(&mut third), ids(&["launched"]));
    assert_eq!(store.lock_subscribers().len(), 2);
}

#[test]
fn notified_change_is_already_visible_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut changes = store.subscribe();

    store
        .put_desired(&id("launched"), &spec("/bin/launched"), &Source::Api)
        .unwrap();

    let changed = changes.try_recv().expect("a notification");
    assert_eq!(
        store
            .desired(&changed)
            .unwrap()
            .map(|record| record.generation),
        Some(1)
    );
    drop(store);
    let reopened = open(dir.path());
    assert!(reopened.desired(&changed).unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// 9. Observed records
// ---------------------------------------------------------------------------------------------

#[test]
fn observed_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.observed(&id("alpha")).unwrap(), None);
    assert!(store.all_observed().unwrap().0.is_empty());

    let alpha = observed("alpha", Phase::Running);
    let beta = observed("beta", Phase::Stopping);
    store.put_observed(&alpha).unwrap();
    store.put_observed(&beta).unwrap();

    assert_eq!(store.observed(&id("alpha")).unwrap(), Some(alpha.clone()));
    let (mut records, corrupt) = store.all_observed().unwrap();
    assert!(corrupt.is_empty());
    records.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(records, vec![alpha.clone(), beta.clone()]);

    // Overwrite replaces the record.
    let mut exited = alpha.clone();
    exited.phase = Phase::Exited;
    exited.pid = None;
    exited.last_exit = Some(ExitStatus::Code(1));
    store.put_observed(&exited).unwrap();
    assert_eq!(store.observed(&id("alpha")).unwrap(), Some(exited.clone()));

    store.delete_observed(&id("beta")).unwrap();
    assert_eq!(store.observed(&id("beta")).unwrap(), None);
    let (records, corrupt) = store.all_observed().unwrap();
    assert!(corrupt.is_empty());
    assert_eq!(records, vec![exited]);

    // Deleting what is not there is fine.
    store.delete_observed(&id("beta")).unwrap();
}

#[test]
fn observed_records_are_independent_of_desired_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut changes = store.subscribe();
    store
        .put_desired(&id("alpha"), &spec("/bin/alpha"), &Source::Api)
        .unwrap();
    drain(&mut changes);

    store
        .put_observed(&observed("alpha", Phase::Running))
        .unwrap();
    assert!(store.delete_desired(&id("alpha"), &Source::Api).unwrap());

    assert_eq!(
        store.observed(&id("alpha")).unwrap(),
        Some(observed("alpha", Phase::Running))
    );
    // Observed writes do not wake the loop; only the desired delete did.
    assert_eq!(drain(&mut changes), ids(&["alpha"]));
    store.delete_observed(&id("alpha")).unwrap();
    assert_eq!(store.desired(&id("alpha")).unwrap(), None);
    assert!(store.all_observed().unwrap().0.is_empty());
}

#[test]
fn reset_counts_survive_a_delete_and_recreate_and_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let name = id("flaky");
    store
        .put_desired(&name, &spec("/bin/flaky"), &Source::Api)
        .unwrap();
    assert_eq!(
        store
            .reset_desired(&name)
            .unwrap()
            .map(|record| record.resets),
        Some(1)
    );
    assert_eq!(
        store
            .reset_desired(&name)
            .unwrap()
            .map(|record| record.resets),
        Some(2)
    );
    let generation = generation(&store, "flaky");
    assert_eq!(
        store.desired(&name).unwrap().unwrap().generation,
        generation,
        "a reset is not a spec change"
    );
    assert!(store.delete_desired(&name, &Source::Api).unwrap());
    assert_eq!(
        store.reset_desired(&name).unwrap(),
        None,
        "nothing desires it"
    );
    let recreated = store
        .put_desired(&name, &spec("/bin/flaky"), &Source::Api)
        .unwrap();
    assert_eq!(
        recreated.resets, 2,
        "resets never go back, so none is mistaken for one acted on"
    );
}

#[test]
fn admin_assignments_are_ordered_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let name = id("assigned");
    assert_eq!(
        store.assign_admin(&name, &spec("/bin/a"), 3, None).unwrap(),
        Assigned::Created
    );
    assert_eq!(
        store
            .assign_admin(&name, &spec("/bin/other"), 3, None)
            .unwrap(),
        Assigned::Unchanged,
        "same version: no-op"
    );
    assert_eq!(
        store.desired(&name).unwrap().unwrap().spec.executable,
        std::path::PathBuf::from("/bin/a")
    );
    let stale = store
        .assign_admin(&name, &spec("/bin/old"), 2, None)
        .unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::StaleVersion {
                stored: 3,
                offered: 2,
                ..
            }
        ),
        "{stale}"
    );
    assert_eq!(
        store.assign_admin(&name, &spec("/bin/b"), 4, None).unwrap(),
        Assigned::Updated
    );
    let record = store.desired(&name).unwrap().unwrap();
    assert_eq!(
        (record.source, record.generation),
        (Source::Admin { version: 4 }, 2)
    );
    store
        .put_desired(&id("filed"), &spec("/bin/f"), &file("/specs/a.yaml"))
        .unwrap();
    let foreign = store
        .assign_admin(&id("filed"), &spec("/bin/x"), 1, None)
        .unwrap_err();
    assert!(
        matches!(foreign, StoreError::OwnedByAnother { .. }),
        "{foreign}"
    );
}

#[test]
fn the_admin_set_replaces_what_admin_owns_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .assign_admin(&id("old"), &spec("/bin/old"), 1, None)
        .unwrap();
    store
        .assign_admin(&id("kept"), &spec("/bin/kept"), 5, None)
        .unwrap();
    store
        .put_desired(&id("filed"), &spec("/bin/f"), &file("/specs/a.yaml"))
        .unwrap();
    let outcome = store
        .apply_admin_set(
            &[
                (id("kept"), spec("/bin/kept"), 5),
                (id("new"), spec("/bin/new"), 1),
                (id("filed"), spec("/bin/x"), 1),
            ],
            AdminView::Authoritative,
            None,
        )
        .unwrap();
    assert_eq!(outcome.created, [id("new")]);
    assert_eq!(outcome.unchanged, [id("kept")]);
    assert_eq!(
        outcome.deleted,
        [id("old")],
        "admin-owned and missing from the set"
    );
    assert_eq!(
        outcome.conflicts.len(),
        1,
        "a file's record is not admin's to take"
    );
    assert!(store.desired(&id("filed")).unwrap().is_some());
    let stale = store
        .apply_admin_set(
            &[
                (id("kept"), spec("/bin/kept"), 4),
                (id("new"), spec("/bin/new"), 1),
            ],
            AdminView::Authoritative,
            None,
        )
        .unwrap();
    assert_eq!(
        stale.conflicts,
        [(id("kept"), Source::Admin { version: 5 })],
        "stale entries are skipped"
    );
    assert!(
        store.desired(&id("kept")).unwrap().is_some(),
        "and not deleted"
    );
}

#[test]
fn a_partial_admin_view_keeps_what_it_does_not_name_unconfirmed_until_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for name in ["a", "b", "c"] {
        store
            .assign_admin(&id(name), &spec("/bin/x"), 1, None)
            .unwrap();
    }
    store
        .put_desired(&id("filed"), &spec("/bin/f"), &file("/specs/a.yaml"))
        .unwrap();
    // The upstream admin's answer: nothing named, nothing said.
    let outcome = store
        .apply_admin_set(&[], AdminView::Partial, None)
        .unwrap();
    assert!(outcome.deleted.is_empty(), "{outcome:?}");
    assert_eq!(outcome.unconfirmed, [id("a"), id("b"), id("c")]);
    assert_eq!(store.desired_count().unwrap(), 4, "nothing removed");
    assert_eq!(
        store.unconfirmed_admin().unwrap(),
        [id("a"), id("b"), id("c")].into_iter().collect()
    );
    // A partial view naming one confirms it; an assignment confirms another.
    store
        .apply_admin_set(&[(id("a"), spec("/bin/x"), 1)], AdminView::Partial, None)
        .unwrap();
    store
        .assign_admin(&id("b"), &spec("/bin/x"), 1, None)
        .unwrap();
    assert_eq!(
        store.unconfirmed_admin().unwrap(),
        [id("c")].into_iter().collect()
    );
    // The marks are durable.
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.unconfirmed_admin().unwrap(),
        [id("c")].into_iter().collect()
    );
    // A revocation takes its mark along: the id, assigned again, starts confirmed.
    assert!(store
        .revoke_admin(&id("c"), Duration::from_secs(1), None)
        .unwrap());
    assert!(store.unconfirmed_admin().unwrap().is_empty());
    store
        .apply_admin_set(&[], AdminView::Partial, None)
        .unwrap();
    assert_eq!(store.unconfirmed_admin().unwrap().len(), 2, "a and b");
    // An authoritative view, even empty (marked complete), removes them, marks and all.
    let outcome = store
        .apply_admin_set(&[], AdminView::Authoritative, None)
        .unwrap();
    assert_eq!(outcome.deleted, [id("a"), id("b")]);
    assert!(store.unconfirmed_admin().unwrap().is_empty());
    assert!(
        store.desired(&id("filed")).unwrap().is_some(),
        "only the admin's records"
    );
}

#[test]
fn a_stale_admin_term_is_refused_and_the_newest_term_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let term = |n| Some(AdminTerm(n));
    assert_eq!(store.admin_term().unwrap(), None);
    store
        .assign_admin(&id("a"), &spec("/bin/a"), 1, term(2))
        .unwrap();
    assert_eq!(store.admin_term().unwrap(), term(2));
    // Older: refused, whatever the request, and nothing changes.
    let refused = store
        .assign_admin(&id("b"), &spec("/bin/b"), 1, term(1))
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::StaleAdminTerm(StaleTerm {
                offered: AdminTerm(1),
                newest: AdminTerm(2)
            })
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("term 1") && refused.to_string().contains("term 2"));
    assert!(store.desired(&id("b")).unwrap().is_none());
    let refused = store
        .revoke_admin(&id("a"), Duration::from_secs(1), term(1))
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::StaleAdminTerm(_)),
        "{refused}"
    );
    assert!(store.desired(&id("a")).unwrap().is_some(), "not revoked");
    let refused = store
        .apply_admin_set(&[], AdminView::Authoritative, term(1))
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::StaleAdminTerm(_)),
        "{refused}"
    );
    assert!(store.desired(&id("a")).unwrap().is_some(), "not removed");
    assert!(matches!(
        store.check_admin_term(term(1)),
        Err(StoreError::StaleAdminTerm(_))
    ));
    // No term: admitted (the upstream admin sends none). A newer one becomes the newest, even
    // from a set that changes no record.
    store
        .assign_admin(&id("c"), &spec("/bin/c"), 1, None)
        .unwrap();
    store
        .apply_admin_set(
            &[(id("a"), spec("/bin/a"), 1), (id("c"), spec("/bin/c"), 1)],
            AdminView::Authoritative,
            term(5),
        )
        .unwrap();
    assert_eq!(store.admin_term().unwrap(), term(5));
    // It survives a restart.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.admin_term().unwrap(), term(5));
    let refused = store
        .assign_admin(&id("d"), &spec("/bin/d"), 1, term(4))
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::StaleAdminTerm(_)),
        "{refused}"
    );
    assert!(store
        .revoke_admin(&id("a"), Duration::from_secs(1), term(5))
        .unwrap());
    assert_eq!(
        store.take_stop_request(&id("a")).unwrap(),
        Some(Duration::from_secs(1)),
        "the revocation's grace is the stop's"
    );
}

// ---------------------------------------------------------------------------------------------
// The stored shape is pinned to the schema version
// ---------------------------------------------------------------------------------------------

/// The key paths of a JSON value (`spec.health_check.probe.Http.path`), arrays as `[]`.
fn key_paths(
    value: &serde_json::Value,
    prefix: &str,
    paths: &mut std::collections::BTreeSet<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                paths.insert(path.clone());
                key_paths(inner, &path, paths);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), paths);
            }
        }
        _ => {}
    }
}

/// Records that between them hold every field and every enum variant with fields.
fn shape_samples() -> Vec<(&'static str, serde_json::Value)> {
    use crate::reconcile::{
        BackendConfig, BackoffOverrides, PatternConfig, ProxyConfig, Secret, SpawnIntent,
        TypeConfig, UtilityConfig,
    };
    let backend = BackendConfig {
        backend_type: "redis".to_string(),
        connection_string: Secret::new("redis://x"),
        credentials: BTreeMap::from([("password".to_string(), Secret::new("p"))]),
        options: BTreeMap::from([("pool".to_string(), "4".to_string())]),
    };
    let type_configs = [
        TypeConfig::Pattern(PatternConfig {
            pattern_type: "keyvalue".to_string(),
            slots: BTreeMap::from([("store".to_string(), backend.clone())]),
            settings: BTreeMap::from([("a".to_string(), "b".to_string())]),
        }),
        TypeConfig::Proxy(ProxyConfig {
            proxy_id: "p".to_string(),
            admin_endpoint: "admin:1".to_string(),
            control_port: 1,
            data_port: 2,
            partition_ranges: vec![1, 2],
        }),
        TypeConfig::Backend(backend),
        TypeConfig::Utility(UtilityConfig {
            utility_type: "u".to_string(),
            settings: BTreeMap::from([("a".to_string(), "b".to_string())]),
            target_processes: vec!["x".to_string()],
        }),
    ];
    let probes = [
        Probe::Http {
            path: "/".to_string(),
            port: Some(1),
        },
        Probe::Tcp { port: Some(1) },
        Probe::Exec {
            command: vec!["true".to_string()],
        },
    ];
    let full_spec = |type_config: TypeConfig, probe: Probe| ProcessSpec {
        success_exit_codes: vec![0, 3],
        backoff: BackoffOverrides {
            initial: Some(Duration::from_secs(1)),
            max: Some(Duration::from_secs(2)),
            reset_after: Some(Duration::from_secs(3)),
            failure_threshold: Some(4),
        },
        requested_ports: RequestedPorts {
            grpc: Some(1),
            health: Some(2),
        },
        type_config,
        health_check: Some(HealthCheck {
            probe,
            ..spec("/x").health_check.unwrap()
        }),
        ..spec("/x")
    };
    let mut samples = Vec::new();
    let sources = [
        file("/specs/a.yaml"),
        Source::Api,
        Source::Admin { version: 1 },
    ];
    for ((type_config, probe), source) in type_configs
        .into_iter()
        .zip(probes.into_iter().cycle())
        .zip(sources.into_iter().cycle())
    {
        let desired = DesiredRecord {
            id: id("shape"),
            spec: Arc::new(full_spec(type_config, probe)),
            generation: 1,
            source,
            resets: 1,
            held: true,
            restarts: 1,
        };
        samples.push(("desired", serde_json::to_value(&desired).unwrap()));
        let intent = SpawnIntent {
            desired: desired.clone(),
            instance: "0123".to_string(),
            ports: Ports { grpc: 1, health: 2 },
            at: UnixMillis(1),
        };
        samples.push(("intents", serde_json::to_value(&intent).unwrap()));
        for exit in [
            ExitStatus::Code(1),
            ExitStatus::Signal(9),
            ExitStatus::OomKilled,
            ExitStatus::Unknown,
        ] {
            let observed = ObservedRecord {
                instance: Some("0123".to_string()),
                spec: desired.spec.clone(),
                last_exit: Some(exit),
                tripped_at: Some(UnixMillis(1)),
                exited_at: Some(UnixMillis(1)),
                resets_seen: 1,
                restarts_seen: 1,
                probe_failures: 1,
                ..observed("shape", Phase::Running)
            };
            samples.push(("observed", serde_json::to_value(&observed).unwrap()));
            samples.push((
                "exits",
                serde_json::to_value((exit, UnixMillis(1))).unwrap(),
            ));
        }
    }
    for event in history_sample() {
        samples.push(("history", serde_json::to_value(event).unwrap()));
    }
    samples
}

/// A history holding one event of every kind, each field set (each stored as its own record).
fn history_sample() -> Vec<crate::reconcile::LifeEvent> {
    use crate::reconcile::{Happened, LifeEvent};
    let every_kind = [
        Happened::Declared {
            generation: 1,
            source: Source::Admin { version: 1 },
        },
        Happened::SpecChanged { generation: 2 },
        Happened::Undeclared,
        Happened::Held,
        Happened::Released,
        Happened::RestartRequested,
        Happened::Reset,
        Happened::Started {
            pid: 1,
            generation: 1,
        },
        Happened::Adopted { pid: 1 },
        Happened::SpawnFailed {
            error: "x".to_string(),
        },
        Happened::Pending {
            reason: "x".to_string(),
        },
        Happened::Healthy,
        Happened::Unhealthy {
            error: "x".to_string(),
        },
        Happened::Stopping {
            reason: StopReason::Held,
            grace: Duration::from_secs(1),
        },
        Happened::Killed,
        Happened::Exited {
            pid: 1,
            status: ExitStatus::Code(1),
        },
        Happened::Stopped {
            reason: Some(StopReason::Restart),
        },
        Happened::BackingOff {
            restart_at: UnixMillis(1),
            failures: 1,
        },
        Happened::Tripped { failures: 5 },
        Happened::KeptDown,
    ];
    every_kind
        .into_iter()
        .map(|happened| LifeEvent {
            at: UnixMillis(1),
            happened,
        })
        .collect()
}

/// The key paths of the records of schema version 5 (every field of the samples holds a value
/// other than its default, so none is left out), by tree, and the layout of the keys that are not
/// an id alone. A change of what the store writes changes this list: then bump
/// `SCHEMA_VERSION`, add the migration from the current version in `migrate.rs`, and write the
/// new list here.
const SHAPE_OF_VERSION_5: &str = include_str!("shape_v5.txt");

#[test]
fn the_stored_shape_is_the_one_of_the_schema_version() {
    assert_eq!(
        SCHEMA_VERSION, 5,
        "write shape_v{SCHEMA_VERSION}.txt for a new version"
    );
    let mut shape = String::new();
    let mut by_tree: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (tree, value) in shape_samples() {
        key_paths(&value, "", by_tree.entry(tree).or_default());
    }
    for (tree, paths) in by_tree {
        for path in paths {
            shape.push_str(&format!("{tree}: {path}\n"));
        }
    }
    // The key of event 258 of `shape`: the id, a NUL, the number as a big-endian u64.
    let key = history::history_key(b"shape", 258);
    shape.push_str(&format!("history key: {}\n", key.escape_ascii()));
    assert!(
        shape == SHAPE_OF_VERSION_5,
        "the records the store writes changed shape: bump SCHEMA_VERSION, add a migration in \
         migrate.rs, and record the new shape in a new shape_v<N>.txt. The shape now:\n{shape}"
    );
}

#[test]
fn a_version_2_store_is_read_as_it_is_and_records_version_5() {
    let dir = tempfile::tempdir().unwrap();
    // A desired record as a version-2 launcher wrote it: every field, defaults included.
    let v2_desired = serde_json::json!({
        "id": "alpha",
        "spec": {
            "process_type": "Utility", "executable": "/bin/alpha", "args": [], "env": {},
            "inherit_env": [], "working_dir": null, "pattern": null, "isolation": "None",
            "namespace": null, "session_id": null, "health_check": null,
            "restart_policy": "Always", "success_exit_codes": [],
            "backoff": {"initial": null, "max": null, "reset_after": null, "failure_threshold": null},
            "termination_grace": {"secs": 5, "nanos": 0}, "resources": null,
            "requested_ports": {"grpc": null, "health": null}, "type_config": "None", "labels": {}
        },
        "generation": 2,
        "source": "Api",
        "resets": 0
    });
    let v2_bytes = serde_json::to_vec(&v2_desired).unwrap();
    write_raw_store(dir.path(), b"2", &[("desired", "alpha", &v2_bytes)]);

    let store = open(dir.path());
    let (records, corrupt) = store.all_desired().unwrap();
    assert!(corrupt.is_empty(), "{corrupt:?}");
    let expected = ProcessSpec {
        process_type: ProcessType::Utility,
        executable: PathBuf::from("/bin/alpha"),
        args: Vec::new(),
        termination_grace: Duration::from_secs(5),
        ..(*records[0].spec).clone()
    };
    assert_eq!(*records[0].spec, expected);
    assert_eq!(records[0].spec.restart_policy, RestartPolicy::Always);
    assert_eq!(records[0].generation, 2);
    // Rewritten in the new shape only when it changes: a reset writes it without its defaults.
    store.reset_desired(&id("alpha")).unwrap().unwrap();
    drop(store);
    assert_eq!(
        raw_get(dir.path(), "meta", "schema_version").as_deref(),
        Some(b"5".as_slice())
    );
    let rewritten = raw_get(dir.path(), "desired", "alpha").unwrap();
    let rewritten = String::from_utf8(rewritten).unwrap();
    assert!(!rewritten.contains("null"), "{rewritten}");
    assert!(!rewritten.contains("labels"), "{rewritten}");
    assert!(rewritten.contains("\"resets\":1"), "{rewritten}");
    assert!(rewritten.len() * 3 < v2_bytes.len() * 2, "{rewritten}");
}

#[test]
fn a_version_3_store_is_read_as_it_is_never_held_and_records_version_5() {
    let dir = tempfile::tempdir().unwrap();
    // As a version-3 launcher wrote them: no `held`, `restarts` or `restarts_seen`.
    let v3_desired = serde_json::json!({
        "id": "alpha",
        "spec": {"process_type": "Utility", "executable": "/bin/alpha",
                 "termination_grace": {"secs": 5, "nanos": 0}},
        "generation": 2,
        "source": "Api",
        "resets": 1
    });
    let v3_observed = serde_json::json!({
        "id": "alpha", "phase": "Stopped", "generation": 2,
        "spec": {"process_type": "Utility", "executable": "/bin/alpha",
                 "termination_grace": {"secs": 5, "nanos": 0}},
        "ports": {"grpc": 0, "health": 0}, "health": "NotChecked", "resets_seen": 1
    });
    let desired_bytes = serde_json::to_vec(&v3_desired).unwrap();
    let observed_bytes = serde_json::to_vec(&v3_observed).unwrap();
    write_raw_store(
        dir.path(),
        b"3",
        &[
            ("desired", "alpha", &desired_bytes),
            ("observed", "alpha", &observed_bytes),
        ],
    );

    let store = open(dir.path());
    let record = store.desired(&id("alpha")).unwrap().unwrap();
    assert!(!record.held);
    assert_eq!((record.resets, record.restarts), (1, 0));
    let observed = store.observed(&id("alpha")).unwrap().unwrap();
    assert_eq!((observed.resets_seen, observed.restarts_seen), (1, 0));
    assert!(store.history(&id("alpha")).unwrap().is_empty());
    store.operate(&id("alpha"), OperatorVerb::Hold).unwrap();
    drop(store);
    assert_eq!(
        raw_get(dir.path(), "meta", "schema_version").as_deref(),
        Some(b"5".as_slice())
    );
    let rewritten = String::from_utf8(raw_get(dir.path(), "desired", "alpha").unwrap()).unwrap();
    assert!(rewritten.contains("\"held\":true"), "{rewritten}");
    assert!(!rewritten.contains("restarts"), "{rewritten}");
}

#[test]
fn an_operators_hold_and_restart_are_durable_idempotent_and_kept_across_spec_changes() {
    let dir = tempfile::tempdir().unwrap();
    let name = id("web");
    {
        let store = open(dir.path());
        let mut changes = store.subscribe();
        assert_eq!(
            store.operate(&name, OperatorVerb::Hold).unwrap(),
            Operated::NotDesired
        );
        store
            .put_desired(&name, &spec("/bin/web"), &Source::Api)
            .unwrap();
        assert_eq!(changes.try_recv().unwrap(), name);

        let Operated::Done { before, after } = store.operate(&name, OperatorVerb::Hold).unwrap()
        else {
            panic!("a desired id is held")
        };
        assert!(!before.held && after.held);
        assert_eq!(after.generation, before.generation, "not a spec change");
        assert_eq!(changes.try_recv().unwrap(), name, "the loop is told");
        let Operated::Done { before, after } = store.operate(&name, OperatorVerb::Hold).unwrap()
        else {
            panic!("holding a held process is no error")
        };
        assert_eq!(before, after, "holding it again changes nothing");
        assert_eq!(changes.try_recv(), Err(TryRecvError::Empty));
        assert!(matches!(
            store.operate(&name, OperatorVerb::Restart).unwrap(),
            Operated::Refused {
                refusal: OperatorRefusal::RestartWhileHeld { .. },
                ..
            }
        ));

        // A new spec keeps the hold: the operator's word stands until `start`.
        let changed = store
            .put_desired(&name, &spec("/bin/web2"), &Source::Api)
            .unwrap();
        assert!(changed.held);
        assert_eq!(changed.generation, 2);
    }
    // Durable: a restarted launcher finds it held.
    let store = open(dir.path());
    assert!(store.desired(&name).unwrap().unwrap().held);
    let Operated::Done { after, .. } = store.operate(&name, OperatorVerb::Release).unwrap() else {
        panic!("released")
    };
    assert!(!after.held);
    for expected in [1, 2] {
        let Operated::Done { after, .. } = store.operate(&name, OperatorVerb::Restart).unwrap()
        else {
            panic!("restarted")
        };
        assert_eq!(after.restarts, expected);
    }
    // Deleted and declared again: unheld, and its restarts never go back (so none is mistaken
    // for one already acted on).
    store.operate(&name, OperatorVerb::Hold).unwrap();
    assert!(store.delete_desired(&name, &Source::Api).unwrap());
    let recreated = store
        .put_desired(&name, &spec("/bin/web"), &Source::Api)
        .unwrap();
    assert!(!recreated.held);
    assert_eq!(recreated.restarts, 2);
    let stamps = store.desired_stamps().unwrap().0;
    assert!(stamps[0].matches(&recreated));
    store.operate(&name, OperatorVerb::Hold).unwrap();
    assert!(
        !stamps[0].matches(&store.desired(&name).unwrap().unwrap()),
        "a hold changes the stamp, so a resync reads it"
    );
}

fn life_event(n: u64) -> crate::reconcile::LifeEvent {
    crate::reconcile::LifeEvent {
        at: UnixMillis(n),
        happened: crate::reconcile::Happened::Started {
            pid: 100 + n as u32,
            generation: 1,
        },
    }
}

/// Appends `events` to `id`'s history in a batch of their own.
fn append(store: &Store, id: &ProcessId, events: impl IntoIterator<Item = u64>) {
    let events = events.into_iter().map(life_event).collect();
    store
        .record_histories(&[(id.clone(), events)], &[])
        .unwrap();
}

/// The raw keys of the history tree, escaped.
fn history_keys(dir: &Path) -> Vec<String> {
    raw_db(dir)
        .open_tree("history")
        .unwrap()
        .iter()
        .keys()
        .map(|key| key.unwrap().escape_ascii().to_string())
        .collect()
}

#[test]
fn a_history_keeps_the_last_events_of_an_id_and_goes_with_it() {
    use crate::reconcile::MAX_LIFE_EVENTS;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (kept, stray) = (id("kept"), id("stray"));
    assert!(store.history(&kept).unwrap().is_empty());
    for batch in (0..40).collect::<Vec<u64>>().chunks(7) {
        append(&store, &kept, batch.iter().copied());
    }
    append(&store, &stray, [1]);
    let history = store.history(&kept).unwrap();
    assert_eq!(history.len(), MAX_LIFE_EVENTS);
    assert_eq!(
        history.first(),
        Some(&life_event(40 - MAX_LIFE_EVENTS as u64))
    );
    assert_eq!(history.last(), Some(&life_event(39)), "oldest first");

    assert_eq!(store.forget_histories_except(|id| *id == kept).unwrap(), 1);
    assert!(store.history(&stray).unwrap().is_empty());
    assert_eq!(store.history(&kept).unwrap().len(), MAX_LIFE_EVENTS);
    store
        .record_histories(&[], std::slice::from_ref(&kept))
        .unwrap();
    assert!(store.history(&kept).unwrap().is_empty());
}

/// The regression of a pass that read, decoded and rewrote every id's whole history (up to 32
/// events of JSON) for each event: an event is one record of its own, appending one writes one
/// key and removes the one that fell out of the window, and the trimming leaves exactly the
/// last `MAX_LIFE_EVENTS` keys, numbered on across a launcher restart.
#[test]
fn each_event_is_a_record_of_its_own_and_an_append_touches_only_its_own_keys() {
    use crate::reconcile::MAX_LIFE_EVENTS;
    let dir = tempfile::tempdir().unwrap();
    let web = id("web");
    {
        let store = open(dir.path());
        append(&store, &web, 0..MAX_LIFE_EVENTS as u64);
        store.flush().unwrap();
    }
    let key = |seq: u64| history::history_key(b"web", seq).escape_ascii().to_string();
    let full: Vec<String> = (0..MAX_LIFE_EVENTS as u64).map(key).collect();
    assert_eq!(
        history_keys(dir.path()),
        full,
        "one key per event, in order"
    );
    {
        // A restarted launcher finds the next number with one reverse scan, and an append
        // removes only the event that fell out.
        let store = open(dir.path());
        append(&store, &web, [100]);
        append(&store, &web, [101, 102]);
        let history = store.history(&web).unwrap();
        assert_eq!(history.len(), MAX_LIFE_EVENTS);
        assert_eq!(history.first(), Some(&life_event(3)));
        assert_eq!(history.last(), Some(&life_event(102)));
        store.flush().unwrap();
    }
    let shifted: Vec<String> = (3..MAX_LIFE_EVENTS as u64 + 3).map(key).collect();
    assert_eq!(history_keys(dir.path()), shifted);
}

#[test]
fn forgetting_a_history_removes_its_ids_range_alone_and_a_forgotten_id_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Ids whose text begins with another's: their ranges must not overlap.
    let names = ["a", "a.b", "ab", "b"];
    for (n, name) in names.iter().enumerate() {
        append(&store, &id(name), [n as u64, 10 + n as u64]);
    }
    // Forgotten and appended to in the same batch: the new events start a new history.
    store
        .record_histories(&[(id("b"), vec![life_event(99)])], &[id("a"), id("b")])
        .unwrap();
    assert!(store.history(&id("a")).unwrap().is_empty());
    assert_eq!(store.history(&id("b")).unwrap(), [life_event(99)]);
    assert_eq!(
        store.history(&id("a.b")).unwrap(),
        [life_event(1), life_event(11)]
    );
    assert_eq!(
        store.history(&id("ab")).unwrap(),
        [life_event(2), life_event(12)]
    );
    append(&store, &id("a"), [7]);
    assert_eq!(store.history(&id("a")).unwrap(), [life_event(7)]);

    // At start: every id's range is visited once, the unknown ones removed whole.
    assert_eq!(
        store
            .forget_histories_except(|id| id.as_str() == "ab")
            .unwrap(),
        3
    );
    for gone in ["a", "a.b", "b"] {
        assert!(store.history(&id(gone)).unwrap().is_empty(), "{gone}");
    }
    assert_eq!(store.history(&id("ab")).unwrap().len(), 2);
    store.flush().unwrap();
    drop(store);
    assert_eq!(history_keys(dir.path()).len(), 2);
}

#[test]
fn a_version_4_store_keeps_its_histories_one_record_per_event() {
    use crate::reconcile::MAX_LIFE_EVENTS;
    let dir = tempfile::tempdir().unwrap();
    let long: Vec<_> = (0..40).map(life_event).collect();
    let short = vec![life_event(1), life_event(2)];
    let long_json = serde_json::to_vec(&long).unwrap();
    let short_json = serde_json::to_vec(&short).unwrap();
    write_raw_store(
        dir.path(),
        b"4",
        &[
            ("history", "long", &long_json),
            ("history", "short", &short_json),
            ("history", "broken", b"[{\"at\":"),
        ],
    );

    {
        let store = open(dir.path());
        assert_eq!(store.history(&id("short")).unwrap(), short);
        assert_eq!(
            store.history(&id("long")).unwrap(),
            long[40 - MAX_LIFE_EVENTS..].to_vec(),
            "the last events, oldest first"
        );
        assert!(store.history(&id("broken")).unwrap().is_empty(), "dropped");
        // Numbered on from the moved events.
        append(&store, &id("short"), [3]);
        assert_eq!(
            store.history(&id("short")).unwrap(),
            [life_event(1), life_event(2), life_event(3)]
        );
    }
    assert_eq!(
        raw_get(dir.path(), "meta", "schema_version").as_deref(),
        Some(b"5".as_slice())
    );
    let keys = history_keys(dir.path());
    assert_eq!(keys.len(), MAX_LIFE_EVENTS + 3, "{keys:?}");
    assert!(keys.iter().all(|key| key.contains("\\x00")), "{keys:?}");
}
