//! The domain into answers: process rows into PatternLauncher's `PatternInfo` and state, our
//! own `StatusReport`, and prism-admin's heartbeat. Every word a client reads comes from
//! `reconcile`'s projection (`ClientState`) and vocabulary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::api::proto::prism as admin_pb;
use crate::api::proto::prism::launcher as launcher_pb;
use crate::api::proto::prism::launcher::v1 as status_pb;
use crate::reconcile::ProcessId;
use crate::reconcile::{
    ready_deadline_at, AdminLink, AdminTerm, ClientState, Diff, DiffSummary, ExitStatus, Health,
    LifeEvent, LimitEnforcement, LimitMode, Phase, ProcessRow, ProcessSpec, ProcessType, Source,
    SourcesRead, UnixMillis,
};
use crate::telemetry::ResourceUsage;

/// PatternLauncher's state of a process.
pub fn process_state(state: ClientState) -> launcher_pb::ProcessState {
    match state {
        ClientState::Pending | ClientState::Starting => launcher_pb::ProcessState::StateStarting,
        ClientState::Running => launcher_pb::ProcessState::StateRunning,
        ClientState::Stopping => launcher_pb::ProcessState::StateTerminating,
        ClientState::Failed => launcher_pb::ProcessState::StateFailed,
        ClientState::Exited => launcher_pb::ProcessState::StateFinished,
        ClientState::Stopped => launcher_pb::ProcessState::StateTerminated,
    }
}

/// What PatternLauncher tells of one process.
pub fn pattern_info(row: &ProcessRow, now: UnixMillis) -> launcher_pb::PatternInfo {
    let spec = row.spec();
    let observed = row.observed();
    launcher_pb::PatternInfo {
        pattern_name: spec.pattern.clone().unwrap_or_default(),
        process_id: row.id().to_string(),
        state: process_state(row.state()) as i32,
        address: observed
            .filter(|observed| observed.ports.grpc != 0)
            .map_or_else(String::new, |observed| {
                format!("localhost:{}", observed.ports.grpc)
            }),
        healthy: row.is_healthy(),
        uptime_seconds: observed
            .filter(|observed| observed.phase.has_live_process())
            .and_then(|observed| observed.started_at)
            .map_or(0, |started| seconds_between(started, now)),
        namespace: spec.namespace.clone().unwrap_or_default(),
        session_id: spec.session_id.clone().unwrap_or_default(),
        last_error: observed
            .and_then(|observed| observed.last_error.clone())
            .unwrap_or_default(),
        error_count: observed.map_or(0, |observed| saturating_i32(observed.error_count)),
        restart_count: observed.map_or(0, |observed| saturating_i32(observed.restart_count)),
        pid: observed
            .and_then(|observed| observed.pid)
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0),
    }
}

/// PatternLauncher's `Health` answer over the pattern processes.
pub fn health_response(
    rows: &[ProcessRow],
    include_processes: bool,
    started_at: UnixMillis,
    now: UnixMillis,
) -> launcher_pb::HealthResponse {
    let infos: Vec<launcher_pb::PatternInfo> =
        rows.iter().map(|row| pattern_info(row, now)).collect();
    let count = |state: launcher_pb::ProcessState| {
        saturating_i32(
            infos
                .iter()
                .filter(|info| info.state == state as i32)
                .count(),
        )
    };
    let mut isolation_distribution: HashMap<String, i32> = HashMap::new();
    for row in rows {
        *isolation_distribution
            .entry(row.spec().isolation.distribution_key().to_string())
            .or_default() += 1;
    }
    let failed_processes = count(launcher_pb::ProcessState::StateFailed);
    launcher_pb::HealthResponse {
        // The launcher answers, so it lives; it is healthy while no pattern is failing.
        healthy: failed_processes == 0,
        total_processes: saturating_i32(infos.len()),
        running_processes: count(launcher_pb::ProcessState::StateRunning),
        terminating_processes: count(launcher_pb::ProcessState::StateTerminating),
        failed_processes,
        isolation_distribution,
        processes: if include_processes { infos } else { Vec::new() },
        uptime_seconds: seconds_between(started_at, now),
    }
}

/// What status tells of the link to prism-admin and of its word.
#[derive(Debug, Clone)]
pub struct AdminReport {
    pub link: AdminLink,
    pub endpoint: Option<String>,
    pub disconnect_grace: Option<Duration>,
    /// Admin-owned processes are stopped: the grace ran out.
    pub suspended: bool,
    pub term: Option<AdminTerm>,
    /// The admin-owned ids its last view left unconfirmed.
    pub unconfirmed: BTreeSet<ProcessId>,
}

/// Our own status report: one row per id that is desired or observed, with the diff of each,
/// and the link to prism-admin.
pub fn status_report(
    launcher_id: &str,
    rows: &[ProcessRow],
    problems: BTreeMap<String, Vec<String>>,
    limit_mode: LimitMode,
    usage: &BTreeMap<ProcessId, ResourceUsage>,
    admin: &AdminReport,
    now: UnixMillis,
) -> status_pb::StatusReport {
    let mut summary = DiffSummary::default();
    let sources = SourcesRead {
        admin_suspended: admin.suspended,
        ..SourcesRead::ALL
    };
    let processes = rows
        .iter()
        .map(|row| {
            let diff = row.diff_under(now, sources);
            summary.add(diff.kind);
            let unconfirmed = admin.unconfirmed.contains(row.id());
            process_status(row, diff, limit_mode, usage.get(row.id()), unconfirmed)
        })
        .collect();
    status_pb::StatusReport {
        launcher_id: launcher_id.to_string(),
        generated_at_unix_ms: unix_ms(now),
        processes,
        source_problems: problems
            .into_iter()
            .map(|(source, errors)| status_pb::SourceProblem { source, errors })
            .collect(),
        summary: Some(status_pb::DiffSummary {
            to_start: summary.to_start,
            to_replace: summary.to_replace,
            to_stop: summary.to_stop,
            failing: summary.failing,
            in_sync: summary.in_sync,
            held: summary.held,
        }),
        admin: Some(admin_link_status(admin)),
    }
}

fn admin_link_status(admin: &AdminReport) -> status_pb::AdminLinkStatus {
    let link = &admin.link;
    status_pb::AdminLinkStatus {
        state: link.state.to_string(),
        endpoint: admin.endpoint.clone().unwrap_or_default(),
        since_unix_ms: unix_ms(link.since),
        last_heartbeat_unix_ms: link.last_heartbeat_at.map_or(0, unix_ms),
        registrations: link.registrations,
        last_error: link.last_error.clone().unwrap_or_default(),
        term: admin.term.map(|term| term.0),
        disconnect_grace_ms: admin.disconnect_grace.map_or(0, |grace| {
            i64::try_from(grace.as_millis()).unwrap_or(i64::MAX)
        }),
        processes_suspended: admin.suspended,
        unconfirmed: u32::try_from(admin.unconfirmed.len()).unwrap_or(u32::MAX),
    }
}

fn process_status(
    row: &ProcessRow,
    diff: Diff,
    limit_mode: LimitMode,
    usage: Option<&ResourceUsage>,
    unconfirmed: bool,
) -> status_pb::ProcessStatus {
    let spec = row.spec();
    let desired = row.desired();
    let observed = row.observed();
    let resources = spec.resources.as_ref();
    let enforcement = LimitEnforcement::of(resources, limit_mode);
    status_pb::ProcessStatus {
        id: row.id().to_string(),
        process_type: spec.process_type.to_string(),
        source: desired.map_or_else(String::new, |record| record.source.to_string()),
        admin_version: match desired.map(|record| &record.source) {
            Some(Source::Admin { version }) => *version,
            _ => 0,
        },
        desired_generation: desired.map_or(0, |record| record.generation),
        running_generation: observed
            .filter(|record| record.phase != Phase::Stopped)
            .map_or(0, |record| record.generation),
        actual: row.actual().to_string(),
        diff: diff.kind.to_string(),
        diff_detail: diff.detail,
        pid: observed
            .and_then(|record| record.pid)
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0),
        health: observed
            .map_or_else(
                || {
                    if spec.health_check.is_some() {
                        Health::Unknown
                    } else {
                        Health::NotChecked
                    }
                },
                |record| record.health,
            )
            .to_string(),
        restart_count: observed.map_or(0, |record| record.restart_count),
        consecutive_failures: observed.map_or(0, |record| record.consecutive_failures),
        last_error: observed
            .and_then(|record| record.last_error.clone())
            .unwrap_or_default(),
        last_exit: observed
            .and_then(|record| record.last_exit)
            .map_or_else(String::new, |status| status.to_string()),
        started_at_unix_ms: observed
            .and_then(|record| record.started_at)
            .map_or(0, unix_ms),
        next_restart_at_unix_ms: observed
            .and_then(|record| record.next_restart_at)
            .map_or(0, unix_ms),
        pattern: spec.pattern.clone().unwrap_or_default(),
        labels: spec.labels.clone().into_iter().collect(),
        exited_at_unix_ms: observed
            .and_then(|record| record.exited_at)
            .map_or(0, unix_ms),
        tripped_at_unix_ms: observed
            .and_then(|record| record.tripped_at)
            .map_or(0, unix_ms),
        cpu_limit_millis: resources
            .and_then(|resources| resources.cpu_millis)
            .unwrap_or(0),
        memory_limit_bytes: resources
            .and_then(|resources| resources.memory_bytes)
            .unwrap_or(0),
        grpc_port: observed.map_or(0, |record| u32::from(record.ports.grpc)),
        health_port: observed.map_or(0, |record| u32::from(record.ports.health)),
        memory_enforcement: enforcement.memory.to_string(),
        cpu_enforcement: enforcement.cpu.to_string(),
        memory_bytes: usage.map_or(0, |usage| usage.memory_bytes),
        cpu_percent: usage.map_or(0.0, |usage| usage.cpu_percent),
        held: row.is_held(),
        // Only admin-owned ids are ever marked; the check keeps that true of what is shown.
        unconfirmed: unconfirmed
            && matches!(
                desired.map(|record| &record.source),
                Some(Source::Admin { .. })
            ),
    }
}

/// The last lines of a process's log for `describe`, or why there are none.
#[derive(Debug, Clone, Default)]
pub struct LogTail {
    pub bytes: Vec<u8>,
    pub note: String,
}

/// Everything `describe` tells of one process: its status row (`unconfirmed` when prism-admin's
/// last view did not name it), its spec, the events of its life (oldest first) and the tail of
/// its log.
pub fn process_description(
    row: &ProcessRow,
    history: &[LifeEvent],
    limit_mode: LimitMode,
    usage: Option<&ResourceUsage>,
    log: LogTail,
    unconfirmed: bool,
    now: UnixMillis,
) -> status_pb::ProcessDescription {
    let observed = row.observed();
    let spec = row.spec();
    status_pb::ProcessDescription {
        status: Some(process_status(
            row,
            row.diff(now),
            limit_mode,
            usage,
            unconfirmed,
        )),
        spec: Some(spec_detail(spec)),
        events: history
            .iter()
            .map(|event| status_pb::ProcessEvent {
                at_unix_ms: unix_ms(event.at),
                kind: event.happened.word().to_string(),
                message: event.to_string(),
            })
            .collect(),
        log_tail: log.bytes,
        log_note: log.note,
        restart_requests: row.desired().map_or(0, |record| record.restarts),
        restart_requests_done: observed.map_or(0, |record| record.restarts_seen),
        error_count: observed.map_or(0, |record| record.error_count),
        probe_successes: observed.map_or(0, |record| record.probe_successes),
        probe_failures: observed.map_or(0, |record| record.probe_failures),
        instance: observed
            .and_then(|record| record.instance.clone())
            .unwrap_or_default(),
        stop_reason: observed
            .filter(|record| record.phase == Phase::Stopping)
            .and_then(|record| record.stop_reason)
            .map_or_else(String::new, |reason| reason.to_string()),
        stop_deadline_unix_ms: observed
            .filter(|record| record.phase == Phase::Stopping)
            .and_then(|record| record.stop_deadline)
            .map_or(0, unix_ms),
        ready_deadline_unix_ms: observed.and_then(ready_deadline_at).map_or(0, unix_ms),
    }
}

fn spec_detail(spec: &ProcessSpec) -> status_pb::ProcessSpecDetail {
    status_pb::ProcessSpecDetail {
        executable: spec.executable.display().to_string(),
        args: spec.args.clone(),
        env: spec.env.clone().into_iter().collect(),
        inherit_env: spec.inherit_env.clone(),
        working_dir: spec
            .working_dir
            .as_ref()
            .map_or_else(String::new, |dir| dir.display().to_string()),
        isolation: spec.isolation.to_string(),
        namespace: spec.namespace.clone().unwrap_or_default(),
        session_id: spec.session_id.clone().unwrap_or_default(),
        restart_policy: spec.restart_policy.to_string(),
        success_exit_codes: spec.success_exit_codes.clone(),
        termination_grace_ms: i64::try_from(spec.termination_grace.as_millis()).unwrap_or(i64::MAX),
        health_check: spec
            .health_check
            .as_ref()
            .map_or_else(String::new, ToString::to_string),
        requested_grpc_port: spec.requested_ports.grpc.map_or(0, u32::from),
        requested_health_port: spec.requested_ports.health.map_or(0, u32::from),
    }
}

/// prism-admin's heartbeat: the health of every observed process and the launcher's load.
pub fn heartbeat_request(
    launcher_id: &str,
    rows: &[ProcessRow],
    usage: &BTreeMap<ProcessId, ResourceUsage>,
    max_processes: Option<u32>,
    now: UnixMillis,
) -> admin_pb::LauncherHeartbeatRequest {
    let mut process_health = HashMap::new();
    let mut total_memory_mb = 0i64;
    let mut cpu_percent = 0f32;
    let mut live = 0usize;
    let mut desired = 0usize;
    for row in rows {
        desired += usize::from(row.desired().is_some());
        let Some(record) = row.observed() else {
            continue;
        };
        let usage = usage.get(&record.id).copied().unwrap_or_default();
        let memory_mb = i64::try_from(usage.memory_bytes / (1024 * 1024)).unwrap_or(i64::MAX);
        if record.phase.has_live_process() {
            live += 1;
            total_memory_mb = total_memory_mb.saturating_add(memory_mb);
            cpu_percent += usage.cpu_percent;
        }
        process_health.insert(
            record.id.to_string(),
            admin_pb::ProcessHealth {
                status: row.state().heartbeat_status().to_string(),
                pid: record
                    .pid
                    .and_then(|pid| i32::try_from(pid).ok())
                    .unwrap_or(0),
                restart_count: saturating_i32(record.restart_count),
                error_count: saturating_i32(record.error_count),
                memory_mb,
                uptime_seconds: record
                    .started_at
                    .filter(|_| record.phase.has_live_process())
                    .map_or(0, |started| seconds_between(started, now)),
                last_error: record.last_error.clone().unwrap_or_default(),
                cpu_percent: usage.cpu_percent,
            },
        );
    }
    let available_slots = match max_processes {
        Some(max) => saturating_i32(max).saturating_sub(saturating_i32(desired)),
        // Unlimited: as many as admin may want.
        None => i32::MAX,
    };
    admin_pb::LauncherHeartbeatRequest {
        launcher_id: launcher_id.to_string(),
        process_health,
        resources: Some(admin_pb::LauncherResourceUsage {
            process_count: saturating_i32(live),
            max_processes: max_processes.map_or(0, saturating_i32),
            total_memory_mb,
            cpu_percent,
            available_slots: available_slots.max(0),
        }),
        timestamp: now.whole_seconds(),
    }
}

/// The exit code prism-admin sees: the code, or 128 + the signal as shells report it.
pub fn exit_code(status: ExitStatus) -> i32 {
    match status {
        ExitStatus::Code(code) => code,
        ExitStatus::Signal(signal) => 128 + signal,
        ExitStatus::OomKilled => 128 + 9,
        // Adopted processes are reaped by their real parent; report them as killed.
        ExitStatus::Unknown => 128 + 9,
    }
}

/// The process types as prism-admin's registration lists them.
pub fn capability_words(capabilities: &[ProcessType]) -> Vec<String> {
    capabilities
        .iter()
        .map(|capability| capability.as_str().to_string())
        .collect()
}

pub fn unix_ms(at: UnixMillis) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

pub fn seconds_between(start: UnixMillis, end: UnixMillis) -> i64 {
    i64::try_from(end.saturating_duration_since(start).as_secs()).unwrap_or(i64::MAX)
}

fn saturating_i32<T: TryInto<i32>>(value: T) -> i32 {
    value.try_into().unwrap_or(i32::MAX)
}
