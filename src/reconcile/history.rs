//! The life of a process as `prism-launcher describe` tells it: events derived from the changes
//! of its records (what was declared, what the loop did and saw), each with its time. Deriving
//! them from the records, rather than from the places that change them, means that every
//! transition is told and that the telling is table-tested here. The runtime keeps the last
//! `MAX_LIFE_EVENTS` of each id in the store (so they outlive the launcher) and drops them when
//! it forgets the id.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{
    DesiredRecord, ExitStatus, Health, ObservedRecord, Phase, Source, StopReason, UnixMillis,
};

/// How many events of each id are kept: the oldest go first.
pub const MAX_LIFE_EVENTS: usize = 32;

/// One event of a process's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifeEvent {
    pub at: UnixMillis,
    pub happened: Happened,
}

/// What happened. Each has one word (`word`) and a sentence (`LifeEvent`'s `Display`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Happened {
    /// Desired (again) by `source`.
    Declared {
        generation: u64,
        source: Source,
    },
    /// Its spec (or its owner) changed: a new generation.
    SpecChanged {
        generation: u64,
    },
    /// No longer desired.
    Undeclared,
    /// An operator holds it stopped.
    Held,
    /// An operator released the hold.
    Released,
    /// An operator asked for a new process.
    RestartRequested,
    /// An operator cleared its failure streak.
    Reset,
    Started {
        pid: u32,
        generation: u64,
    },
    /// Taken over from a previous launcher run, still running.
    Adopted {
        pid: u32,
    },
    SpawnFailed {
        error: String,
    },
    /// Not started: the launcher is full.
    Pending {
        reason: String,
    },
    /// Its health check passed (it is ready, or healthy again).
    Healthy,
    Unhealthy {
        error: String,
    },
    /// SIGTERM sent; SIGKILL follows after `grace`.
    Stopping {
        reason: StopReason,
        grace: Duration,
    },
    /// The grace period is over: SIGKILL sent.
    Killed,
    Exited {
        pid: u32,
        status: ExitStatus,
    },
    /// Down after a stop the launcher made (for `reason`), not restarted for it.
    Stopped {
        reason: Option<StopReason>,
    },
    /// A restart chosen after a failure: due at `restart_at`, the `failures`-th in a row.
    BackingOff {
        restart_at: UnixMillis,
        failures: u32,
    },
    /// Circuit open after `failures` failures in a row: no restart until a reset or a new spec.
    Tripped {
        failures: u32,
    },
    /// Exited, and its restart policy keeps it down.
    KeptDown,
}

impl Happened {
    /// The one word of each kind of event (the `kind` of `describe -o json`).
    pub fn word(&self) -> &'static str {
        match self {
            Happened::Declared { .. } => "declared",
            Happened::SpecChanged { .. } => "spec-changed",
            Happened::Undeclared => "undeclared",
            Happened::Held => "held",
            Happened::Released => "released",
            Happened::RestartRequested => "restart-requested",
            Happened::Reset => "reset",
            Happened::Started { .. } => "started",
            Happened::Adopted { .. } => "adopted",
            Happened::SpawnFailed { .. } => "spawn-failed",
            Happened::Pending { .. } => "pending",
            Happened::Healthy => "healthy",
            Happened::Unhealthy { .. } => "unhealthy",
            Happened::Stopping { .. } => "stopping",
            Happened::Killed => "killed",
            Happened::Exited { .. } => "exited",
            Happened::Stopped { .. } => "stopped",
            Happened::BackingOff { .. } => "backing-off",
            Happened::Tripped { .. } => "tripped",
            Happened::KeptDown => "kept-down",
        }
    }
}

impl StopReason {
    /// Why a process is stopped, as the end of a sentence ("stopping: held by the operator").
    pub fn sentence(self) -> &'static str {
        match self {
            StopReason::Undesired => "no longer desired",
            StopReason::Replace => "replaced by a new spec",
            StopReason::Unhealthy => "its liveness probe failed",
            StopReason::NotReady => "not ready within its deadline",
            StopReason::Shutdown => "the launcher is shutting down",
            StopReason::Held => "held by the operator",
            StopReason::Restart => "restarted by the operator",
            StopReason::AdminUnreachable => {
                "prism-admin unreachable for longer than --admin-disconnect-grace"
            }
        }
    }
}

impl fmt::Display for LifeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.happened {
            Happened::Declared { generation, source } => {
                write!(f, "declared by {source} (generation {generation})")
            }
            Happened::SpecChanged { generation } => {
                write!(f, "spec changed: generation {generation} desired")
            }
            Happened::Undeclared => f.write_str("no longer desired"),
            Happened::Held => f.write_str("held stopped by the operator"),
            Happened::Released => f.write_str("released by the operator: it may run again"),
            Happened::RestartRequested => f.write_str("restart requested by the operator"),
            Happened::Reset => f.write_str("reset by the operator: failure streak cleared"),
            Happened::Started { pid, generation } => {
                write!(f, "started with pid {pid} (generation {generation})")
            }
            Happened::Adopted { pid } => {
                write!(
                    f,
                    "adopted pid {pid}, left running by a previous launcher run"
                )
            }
            Happened::SpawnFailed { error } => write!(f, "could not start: {error}"),
            Happened::Pending { reason } => write!(f, "not started: {reason}"),
            Happened::Healthy => f.write_str("health check passed"),
            Happened::Unhealthy { error } => write!(f, "unhealthy: {error}"),
            Happened::Stopping { reason, grace } => write!(
                f,
                "stopping ({}): SIGTERM to its process group, SIGKILL after {grace:?}",
                reason.sentence()
            ),
            Happened::Killed => f.write_str("grace period over: SIGKILL"),
            Happened::Exited { pid, status } => write!(f, "pid {pid} exited with {status}"),
            Happened::Stopped {
                reason: Some(reason),
            } => {
                write!(f, "stopped ({})", reason.sentence())
            }
            Happened::Stopped { reason: None } => f.write_str("stopped"),
            Happened::BackingOff {
                restart_at,
                failures,
            } => write!(
                f,
                "backing off: restart after failure {failures} in a row due in {:?}",
                restart_at.saturating_duration_since(self.at)
            ),
            Happened::Tripped { failures } => write!(
                f,
                "circuit open after {failures} failures in a row: not restarted until a reset \
                 or a new spec"
            ),
            Happened::KeptDown => f.write_str("its restart policy keeps it down"),
        }
    }
}

/// What changed in what was declared for an id, from `before` to `after` (either may be
/// absent: created, deleted).
pub fn desired_events(
    before: Option<&DesiredRecord>,
    after: Option<&DesiredRecord>,
) -> Vec<Happened> {
    let mut events = Vec::new();
    match (before, after) {
        (None, None) => {}
        (None, Some(after)) => events.push(Happened::Declared {
            generation: after.generation,
            source: after.source.clone(),
        }),
        (Some(_), None) => events.push(Happened::Undeclared),
        (Some(before), Some(after)) => {
            if !before.source.same_owner(&after.source) {
                events.push(Happened::Declared {
                    generation: after.generation,
                    source: after.source.clone(),
                });
            } else if after.generation != before.generation {
                events.push(Happened::SpecChanged {
                    generation: after.generation,
                });
            }
            if after.resets > before.resets {
                events.push(Happened::Reset);
            }
            match (before.held, after.held) {
                (false, true) => events.push(Happened::Held),
                (true, false) => events.push(Happened::Released),
                _ => {}
            }
            if after.restarts > before.restarts {
                events.push(Happened::RestartRequested);
            }
        }
    }
    events
}

/// What happened to an id's process when its observed record went from `before` to `after` at
/// `now` (the time the transition used: a stop's grace is its deadline minus `now`).
pub fn observed_events(
    before: Option<&ObservedRecord>,
    after: &ObservedRecord,
    now: UnixMillis,
) -> Vec<Happened> {
    let mut events = Vec::new();
    let before_pid = before.and_then(|record| record.pid);
    if let (Some(pid), None) = (before_pid, after.pid) {
        events.push(Happened::Exited {
            pid,
            status: after.last_exit.unwrap_or(ExitStatus::Unknown),
        });
    }
    let before_errors = before.map_or(0, |record| record.error_count);
    if before_pid.is_none() && after.pid.is_none() && after.error_count > before_errors {
        events.push(Happened::SpawnFailed {
            error: after.last_error.clone().unwrap_or_default(),
        });
    }
    let new_process = match (before, after.pid) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(before), Some(pid)) => before.pid != Some(pid) || before.instance != after.instance,
    };
    if let (true, Some(pid)) = (new_process, after.pid) {
        events.push(Happened::Started {
            pid,
            generation: after.generation,
        });
    }
    if after.killed && !before.is_some_and(|record| record.killed) {
        events.push(Happened::Killed);
    }
    let before_phase = before.map(|record| record.phase);
    let entered = before_phase != Some(after.phase);
    match after.phase {
        Phase::Stopping if entered => events.push(Happened::Stopping {
            reason: after.stop_reason.unwrap_or(StopReason::Undesired),
            grace: after.stop_deadline.map_or(Duration::ZERO, |deadline| {
                deadline.saturating_duration_since(now)
            }),
        }),
        // Why it stopped: the reason of the stop it comes out of, or the hold it was put
        // down for (`record_held`).
        Phase::Stopped if entered => events.push(Happened::Stopped {
            reason: after
                .stop_reason
                .or(before.and_then(|record| record.stop_reason)),
        }),
        // Every failure chooses its backoff again, in the same phase too (a failed spawn).
        Phase::BackingOff
            if entered
                || before.and_then(|record| record.next_restart_at) != after.next_restart_at =>
        {
            events.push(Happened::BackingOff {
                restart_at: after.next_restart_at.unwrap_or(now),
                failures: after.consecutive_failures,
            });
        }
        Phase::Tripped if entered => events.push(Happened::Tripped {
            failures: after.consecutive_failures,
        }),
        Phase::Exited if entered => events.push(Happened::KeptDown),
        Phase::Pending if entered => events.push(Happened::Pending {
            reason: after.last_error.clone().unwrap_or_default(),
        }),
        _ => {}
    }
    let before_health = before.map(|record| record.health);
    if before_health != Some(after.health) && after.phase.has_live_process() {
        match after.health {
            Health::Healthy => events.push(Happened::Healthy),
            Health::Unhealthy => events.push(Happened::Unhealthy {
                error: after.last_error.clone().unwrap_or_default(),
            }),
            Health::NotChecked | Health::Unknown => {}
        }
    }
    events
}

/// Appends `events` to `history`, keeping the last `MAX_LIFE_EVENTS`.
pub fn append_events(history: &mut Vec<LifeEvent>, events: impl IntoIterator<Item = LifeEvent>) {
    history.extend(events);
    if history.len() > MAX_LIFE_EVENTS {
        let excess = history.len() - MAX_LIFE_EVENTS;
        history.drain(..excess);
    }
}
