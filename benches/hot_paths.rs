//! Measures the hot paths (run with `cargo bench --bench hot_paths`): `plan` over a whole pass of
//! 10,000 records (and what that makes per id), a resync at 10,000 (read back and plan, in sync),
//! and applying one spec file to stores of growing size, which must cost O(that file's records),
//! not O(all records). Plain timing with `Instant` (no harness), printed per operation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_launcher::reconcile::{
    plan, DesiredRecord, Health, Isolation, ObservedRecord, Phase, Ports, ProcessId, ProcessSpec,
    ProcessType, RestartPolicy, Source, SourcesRead, UnixMillis,
};
use prism_launcher::store::{SourceSet, Store};

fn spec(n: usize) -> ProcessSpec {
    ProcessSpec {
        process_type: ProcessType::Pattern,
        executable: PathBuf::from("/bin/sleep"),
        args: vec![n.to_string()],
        env: BTreeMap::new(),
        inherit_env: Vec::new(),
        working_dir: None,
        pattern: None,
        isolation: Isolation::None,
        namespace: None,
        session_id: None,
        health_check: None,
        restart_policy: RestartPolicy::Always,
        success_exit_codes: Vec::new(),
        backoff: Default::default(),
        termination_grace: Duration::from_secs(10),
        resources: None,
        requested_ports: Default::default(),
        type_config: Default::default(),
        labels: BTreeMap::new(),
    }
}

fn id(n: usize) -> ProcessId {
    ProcessId::new(format!("process-{n}")).expect("a valid id")
}

fn observed(desired: &DesiredRecord, phase: Phase) -> ObservedRecord {
    ObservedRecord {
        id: desired.id.clone(),
        phase,
        pid: phase.has_live_process().then_some(1000),
        pid_start_ticks: None,
        instance: None,
        generation: desired.generation,
        spec: desired.spec.clone(),
        ports: Ports {
            grpc: 40000,
            health: 40001,
        },
        started_at: Some(UnixMillis(0)),
        health: Health::NotChecked,
        probe_successes: 0,
        probe_failures: 0,
        restart_count: 0,
        consecutive_failures: 1,
        error_count: 0,
        last_exit: None,
        last_error: None,
        next_restart_at: Some(UnixMillis(10_000)),
        stop_reason: None,
        stop_deadline: None,
        killed: false,
        resets_seen: 0,
        restarts_seen: 0,
        tripped_at: None,
        exited_at: None,
    }
}

fn bench_plan() {
    let count = 10_000;
    let desired: Vec<DesiredRecord> = (0..count)
        .map(|n| DesiredRecord {
            id: id(n),
            spec: Arc::new(spec(n)),
            generation: 1,
            source: Source::Api,
            resets: 0,
            held: false,
            restarts: 0,
        })
        .collect();
    let phases = [
        Phase::Running,
        Phase::BackingOff,
        Phase::Stopped,
        Phase::Starting,
    ];
    let observed: Vec<ObservedRecord> = desired
        .iter()
        .enumerate()
        .map(|(n, record)| observed(record, phases[n % phases.len()]))
        .collect();
    let rounds = 50;
    let started = Instant::now();
    let mut actions = 0;
    for round in 0..rounds {
        let result = plan(
            desired
                .iter()
                .zip(&observed)
                .map(|(d, o)| (Some(d), Some(o))),
            UnixMillis(round),
            SourcesRead::ALL,
        );
        actions += result.actions.len();
    }
    let elapsed = started.elapsed();
    // One measurement: a pass over all the records, and what that makes per id.
    println!(
        "plan: {:?} for a full pass over {count} records, {:?} per id ({rounds} rounds, {actions} actions)",
        elapsed / rounds as u32,
        elapsed / (rounds as u32 * count as u32)
    );
}

/// A resync at 10,000 processes: every desired record's stamp read back from the store and
/// compared with the record in memory (none differs, so none is decoded again), then planned
/// against what runs (what the loop does every `--resync-interval`). The observed records are
/// the loop's memory, so only the desired ones are read; all run, in sync.
fn bench_resync() {
    let count = 10_000;
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path()).expect("open store");
    let source = Source::Api;
    let specs: Vec<_> = (0..count).map(|n| (id(n), spec(n))).collect();
    apply(&store, &source, &specs);
    let (stored, _) = store.all_desired().expect("read");
    let running: BTreeMap<ProcessId, ObservedRecord> = stored
        .iter()
        .map(|record| (record.id.clone(), observed(record, Phase::Running)))
        .collect();
    let rounds = 10;
    let started = Instant::now();
    let in_memory: BTreeMap<ProcessId, DesiredRecord> = stored
        .into_iter()
        .map(|record| (record.id.clone(), record))
        .collect();
    for round in 0..rounds {
        let (stamps, _) = store.desired_stamps().expect("read");
        let changed = stamps
            .iter()
            .filter(|stamp| {
                !in_memory
                    .get(&stamp.id)
                    .is_some_and(|known| stamp.matches(known))
            })
            .count();
        assert_eq!(changed, 0, "nothing changed behind the loop's back");
        let result = plan(
            in_memory.values().map(|d| (Some(d), running.get(&d.id))),
            UnixMillis(round),
            SourcesRead::ALL,
        );
        assert!(result.actions.is_empty(), "in sync: nothing to do");
    }
    println!(
        "resync: {:?} to read back and plan {count} desired records, all running and in sync",
        started.elapsed() / rounds as u32
    );
}

/// Makes `specs` the whole set of `source`, as the spec directory does for one changed file.
fn apply(store: &Store, source: &Source, specs: &[(ProcessId, ProcessSpec)]) {
    let set = SourceSet {
        source,
        specs,
        released: &[],
    };
    store.apply_sources(&[set]).expect("apply");
}

fn bench_apply_source() {
    for total in [1_000, 10_000] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path()).expect("open store");
        let per_file = 100;
        for file in 0..total / per_file {
            let source = Source::File {
                path: PathBuf::from(format!("/specs/{file}.yaml")),
            };
            let specs: Vec<_> = (0..per_file)
                .map(|n| (id(file * per_file + n), spec(n)))
                .collect();
            apply(&store, &source, &specs);
        }
        let source = Source::File {
            path: PathBuf::from("/specs/0.yaml"),
        };
        let specs: Vec<_> = (0..per_file).map(|n| (id(n), spec(n))).collect();
        let rounds = 200;
        let started = Instant::now();
        for _ in 0..rounds {
            apply(&store, &source, &specs);
        }
        println!(
            "apply_sources, one unchanged file of {per_file} in a store of {total}: {:?} per apply",
            started.elapsed() / rounds
        );
    }
}

fn main() {
    bench_plan();
    bench_resync();
    bench_apply_source();
}
