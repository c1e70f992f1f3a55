//! Records and specs shared by the unit tests of the crate (reconcile's tables, the runtime's
//! capacity and pass tests), so that each test states only what it changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// The time every fixture is relative to.
pub(crate) const NOW: UnixMillis = UnixMillis(1_000_000);

/// `NOW` plus `ms` milliseconds.
pub(crate) fn after(ms: u64) -> UnixMillis {
    UnixMillis(NOW.0 + ms)
}

/// `NOW` minus `ms` milliseconds.
pub(crate) fn before(ms: u64) -> UnixMillis {
    UnixMillis(NOW.0 - ms)
}

pub(crate) fn id(s: &str) -> ProcessId {
    ProcessId::new(s).expect("test ids are valid")
}

/// A pattern process running `sleep 60`, restarted always, with a 7 s grace.
pub(crate) fn spec() -> ProcessSpec {
    ProcessSpec {
        process_type: ProcessType::Pattern,
        executable: PathBuf::from("/bin/sleep"),
        args: vec!["60".to_string()],
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
        termination_grace: Duration::from_secs(7),
        resources: None,
        requested_ports: RequestedPorts::default(),
        type_config: Default::default(),
        labels: BTreeMap::new(),
    }
}

/// The ports of the fixtures' live processes.
pub(crate) fn ports() -> Ports {
    Ports {
        grpc: 50_051,
        health: 8_081,
    }
}

/// An observed record of generation 1 in `phase`, with a pid and a start time when the phase has a
/// live process, and every counter at zero.
pub(crate) fn observed(phase: Phase, spec: ProcessSpec) -> ObservedRecord {
    let live = phase.has_live_process();
    let health = match (&spec.health_check, phase) {
        (None, _) => Health::NotChecked,
        (Some(_), Phase::Running) => Health::Healthy,
        (Some(_), _) => Health::Unknown,
    };
    ObservedRecord {
        id: id("web"),
        phase,
        pid: live.then_some(4_242),
        pid_start_ticks: live.then_some(99),
        instance: None,
        generation: 1,
        spec: Arc::new(spec),
        ports: ports(),
        started_at: live.then_some(before(5_000)),
        health,
        probe_successes: 0,
        probe_failures: 0,
        restart_count: 0,
        consecutive_failures: 0,
        error_count: 0,
        last_exit: None,
        last_error: None,
        next_restart_at: None,
        stop_reason: None,
        stop_deadline: None,
        killed: false,
        resets_seen: 0,
        restarts_seen: 0,
        tripped_at: None,
        exited_at: None,
    }
}

/// `observed` for the process `name`.
pub(crate) fn observed_for(name: &str, phase: Phase, spec: ProcessSpec) -> ObservedRecord {
    ObservedRecord {
        id: id(name),
        ..observed(phase, spec)
    }
}
