//! `plan` and the state transitions: every decision the launcher makes about a process.
//!
//! The runtime calls `plan` with the desired and observed records of the ids that changed (or of
//! all ids on a resync) and carries the actions out; it records what happened through the
//! `record_*` transitions below, so that the next `plan` sees the facts. Nothing here knows why it
//! runs, which makes every decision safe to repeat.

use std::time::Duration;

use super::model::{
    DesiredRecord, ExitStatus, Health, HealthCheck, ObservedRecord, Phase, Ports, ProcessId,
    ProcessSpec, RestartPolicy, SourcesRead, StopReason, UnixMillis,
};

/// Something the runtime must do for one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Spawn the desired spec. `restart` is true when it follows a crash of the same id.
    Start { id: ProcessId, restart: bool },
    /// SIGTERM the process group; SIGKILL follows after `grace`.
    Stop {
        id: ProcessId,
        reason: StopReason,
        grace: Duration,
    },
    /// The grace period is over: SIGKILL the process group.
    Kill { id: ProcessId },
    /// Nothing runs and nothing is desired: drop the observed record and release its ports.
    Forget { id: ProcessId },
    /// The desired generation changed in a way that needs no restart (labels): record it.
    RecordGeneration { id: ProcessId, generation: u64 },
    /// A held process with no live process that would otherwise start later (backing off,
    /// pending, stopped for another reason): record it stopped for the hold, with nothing due
    /// (`record_held`), so that it holds no `--max-processes` slot, shows no restart to come,
    /// and its release starts it at once.
    RecordHeld { id: ProcessId },
}

impl Action {
    pub fn id(&self) -> &ProcessId {
        match self {
            Action::Start { id, .. }
            | Action::Stop { id, .. }
            | Action::Kill { id }
            | Action::Forget { id }
            | Action::RecordGeneration { id, .. }
            | Action::RecordHeld { id } => id,
        }
    }

    /// Whether this is a start (the runtime carries the starts of a pass out together).
    pub fn is_start(&self) -> bool {
        matches!(self, Action::Start { .. })
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Start { restart: false, .. } => "start",
            Action::Start { restart: true, .. } => "restart",
            Action::Stop { .. } => "stop",
            Action::Kill { .. } => "kill",
            Action::Forget { .. } => "forget",
            Action::RecordGeneration { .. } => "record-generation",
            Action::RecordHeld { .. } => "record-held",
        }
    }
}

/// What to do now, and when to look again at ids that are waiting for a time to pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Vec<(ProcessId, UnixMillis)>,
}

/// The decision for one id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub action: Option<Action>,
    /// Look at this id again at this time even if nothing else happens.
    pub wake_at: Option<UnixMillis>,
}

/// Decides, for each `(desired, observed)` pair of one id, what must happen now.
///
/// Pairs with neither record are ignored, and so are ids whose source has not been `read` in
/// this run (they are planned again once it has). The processes of a suspended source
/// (prism-admin's, unreachable past the disconnect grace) are kept down as a hold keeps them.
/// The order of actions follows the order of the pairs.
pub fn plan<'a, I>(pairs: I, now: UnixMillis, read: SourcesRead) -> Plan
where
    I: IntoIterator<Item = (Option<&'a DesiredRecord>, Option<&'a ObservedRecord>)>,
{
    let mut plan = Plan::default();
    for (desired, observed) in pairs {
        if desired.is_some_and(|desired| !read.has_read(&desired.source)) {
            continue;
        }
        let suspended = desired.is_some_and(|desired| read.suspends(&desired.source));
        let decision = match observed {
            Some(observed) if suspended => {
                decide_kept_down(observed, now, StopReason::AdminUnreachable)
            }
            // Suspended before anything ran: it stays declared and not started.
            None if suspended => Decision::default(),
            _ => decide(desired, observed, now),
        };
        if let Some(action) = decision.action {
            plan.actions.push(action);
        }
        if let Some(at) = decision.wake_at {
            let id = desired.map(|d| &d.id).or(observed.map(|o| &o.id));
            if let Some(id) = id {
                plan.wake_at.push((id.clone(), at));
            }
        }
    }
    plan
}

/// The decision for one id; see `plan`.
pub fn decide(
    desired: Option<&DesiredRecord>,
    observed: Option<&ObservedRecord>,
    now: UnixMillis,
) -> Decision {
    match (desired, observed) {
        (None, None) => Decision::default(),
        // Held before anything ran: it stays as it is, declared and not started.
        (Some(desired), None) if desired.held => Decision::default(),
        (Some(desired), None) => act(Action::Start {
            id: desired.id.clone(),
            restart: false,
        }),
        (None, Some(observed)) => decide_undesired(observed, now),
        (Some(desired), Some(observed)) if desired.held => {
            decide_kept_down(observed, now, StopReason::Held)
        }
        (Some(desired), Some(observed)) => decide_desired(desired, observed, now),
    }
}

/// An operator holds the process (`reason` `Held`), or its source is suspended (prism-admin
/// unreachable past the disconnect grace, `AdminUnreachable`): a live one is stopped with its
/// spec's grace, as if it were no longer desired, and nothing starts it again (no restart after an
/// exit, no backoff timer, no start of a stopped or pending one) until the hold is released or
/// the admin is back. Held, one that is down but would start later (backing off, pending for a
/// slot, stopped for a replacement) is recorded as stopped for the hold (`RecordHeld`): its
/// backoff is dropped and it gives its slot up. Its observed record stays (its ports, counters
/// and last exit with it): the definition is kept. A tripped or exited process stays as it is (a
/// release does not close a circuit).
fn decide_kept_down(observed: &ObservedRecord, now: UnixMillis, reason: StopReason) -> Decision {
    match observed.phase {
        Phase::Starting | Phase::Running => act(Action::Stop {
            id: observed.id.clone(),
            reason,
            grace: observed.spec.termination_grace,
        }),
        Phase::Stopping => decide_stopping(observed, now),
        Phase::Stopped if is_held_down(observed) => Decision::default(),
        Phase::Stopped | Phase::Pending | Phase::BackingOff if reason == StopReason::Held => {
            act(Action::RecordHeld {
                id: observed.id.clone(),
            })
        }
        Phase::Stopped | Phase::Pending | Phase::BackingOff | Phase::Exited | Phase::Tripped => {
            Decision::default()
        }
    }
}

/// Whether a record is stopped for an operator's hold (and so holds no slot).
fn is_held_down(observed: &ObservedRecord) -> bool {
    observed.phase == Phase::Stopped && observed.stop_reason == Some(StopReason::Held)
}

fn act(action: Action) -> Decision {
    Decision {
        action: Some(action),
        wake_at: None,
    }
}

fn wait_until(at: UnixMillis) -> Decision {
    Decision {
        action: None,
        wake_at: Some(at),
    }
}

fn decide_undesired(observed: &ObservedRecord, now: UnixMillis) -> Decision {
    let id = observed.id.clone();
    match observed.phase {
        Phase::Starting | Phase::Running => act(Action::Stop {
            id,
            reason: StopReason::Undesired,
            grace: observed.spec.termination_grace,
        }),
        Phase::Stopping => decide_stopping(observed, now),
        Phase::BackingOff | Phase::Exited | Phase::Stopped | Phase::Tripped | Phase::Pending => {
            act(Action::Forget { id })
        }
    }
}

fn decide_stopping(observed: &ObservedRecord, now: UnixMillis) -> Decision {
    match observed.stop_deadline {
        // Killed already: the exit is on its way through the reaper; nothing to repeat.
        _ if observed.killed => Decision::default(),
        Some(deadline) if now >= deadline => act(Action::Kill {
            id: observed.id.clone(),
        }),
        Some(deadline) => wait_until(deadline),
        None => act(Action::Kill {
            id: observed.id.clone(),
        }),
    }
}

fn decide_desired(desired: &DesiredRecord, observed: &ObservedRecord, now: UnixMillis) -> Decision {
    let id = desired.id.clone();
    let spec_changed = desired.spec.requires_restart_from(&observed.spec);
    // An operator's restart is replaced by the same rules as a spec change: a live process is
    // stopped with its grace and started again; one that is not running starts now.
    let replace = spec_changed || restart_requested(desired, observed);
    match observed.phase {
        Phase::Starting | Phase::Running => {
            if spec_changed {
                return act(Action::Stop {
                    id,
                    reason: StopReason::Replace,
                    grace: observed.spec.termination_grace,
                });
            }
            if replace {
                return act(Action::Stop {
                    id,
                    reason: StopReason::Restart,
                    grace: observed.spec.termination_grace,
                });
            }
            if liveness_exhausted(observed) {
                return act(Action::Stop {
                    id,
                    reason: StopReason::Unhealthy,
                    grace: observed.spec.termination_grace,
                });
            }
            if desired.generation != observed.generation {
                return act(Action::RecordGeneration {
                    id,
                    generation: desired.generation,
                });
            }
            if let Some(deadline) = ready_deadline_at(observed) {
                if now >= deadline {
                    return act(Action::Stop {
                        id,
                        reason: StopReason::NotReady,
                        grace: observed.spec.termination_grace,
                    });
                }
                return wait_until(deadline);
            }
            Decision::default()
        }
        Phase::Stopping => decide_stopping(observed, now),
        Phase::Stopped | Phase::Pending => act(Action::Start { id, restart: false }),
        Phase::Tripped => {
            // The circuit stays open until the spec changes or an operator resets or restarts it.
            if replace {
                act(Action::Start { id, restart: false })
            } else if reset_requested(desired, observed) {
                act(Action::Start { id, restart: true })
            } else {
                Decision::default()
            }
        }
        Phase::BackingOff => {
            // A new spec (or an operator's restart) is a new chance: it starts at once instead of
            // waiting out the backoff.
            if replace {
                return act(Action::Start { id, restart: false });
            }
            if reset_requested(desired, observed) {
                return act(Action::Start { id, restart: true });
            }
            match observed.next_restart_at {
                Some(at) if now < at => wait_until(at),
                _ => act(Action::Start { id, restart: true }),
            }
        }
        Phase::Exited => {
            if replace {
                act(Action::Start { id, restart: false })
            } else if desired.generation != observed.generation {
                act(Action::RecordGeneration {
                    id,
                    generation: desired.generation,
                })
            } else {
                Decision::default()
            }
        }
    }
}

/// Whether an operator reset the process since this record last acted on a reset.
fn reset_requested(desired: &DesiredRecord, observed: &ObservedRecord) -> bool {
    desired.resets > observed.resets_seen
}

/// Whether an operator asked for a new process since this record last acted on such a request.
pub fn restart_requested(desired: &DesiredRecord, observed: &ObservedRecord) -> bool {
    desired.restarts > observed.restarts_seen
}

/// When a starting process that has not passed its health check yet runs out of time; `None`
/// for a ready process or one without a health check.
pub fn ready_deadline_at(observed: &ObservedRecord) -> Option<UnixMillis> {
    let check = observed.spec.health_check.as_ref()?;
    let started = observed.started_at?;
    (observed.phase == Phase::Starting).then(|| started.saturating_add(check.ready_deadline()))
}

fn liveness_exhausted(observed: &ObservedRecord) -> bool {
    match &observed.spec.health_check {
        Some(check) => {
            observed.phase == Phase::Running && observed.probe_failures >= check.failure_threshold
        }
        None => false,
    }
}

/// How restarts after failures are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the second restart in a row; the first is immediate.
    pub initial: Duration,
    pub max: Duration,
    /// A process that ran this long before it exited starts its failure count afresh.
    pub stable_after: Duration,
    /// Consecutive failures after which the circuit opens and the process is not restarted.
    pub failure_threshold: u32,
}

/// Restart delays are stretched by up to this fraction, at random, so that processes that
/// failed together do not restart together.
pub const JITTER_FRACTION: f64 = 0.2;

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            stable_after: Duration::from_secs(600),
            failure_threshold: 5,
        }
    }
}

impl Backoff {
    /// These settings with a spec's own overrides applied.
    pub fn for_spec(&self, spec: &ProcessSpec) -> Backoff {
        let overrides = spec.backoff;
        Backoff {
            initial: overrides.initial.unwrap_or(self.initial),
            max: overrides.max.unwrap_or(self.max),
            stable_after: overrides.reset_after.unwrap_or(self.stable_after),
            failure_threshold: overrides
                .failure_threshold
                .unwrap_or(self.failure_threshold),
        }
    }

    /// `delay(consecutive_failures)` stretched by `jitter_sample` (in `[0, 1)`) times
    /// `JITTER_FRACTION`: a sample of 0 adds nothing.
    pub fn jittered_delay(&self, consecutive_failures: u32, jitter_sample: f64) -> Duration {
        let sample = if jitter_sample.is_finite() {
            jitter_sample.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let delay = self.delay(consecutive_failures);
        Duration::try_from_secs_f64(delay.as_secs_f64() * (1.0 + JITTER_FRACTION * sample))
            .unwrap_or(delay)
    }

    /// The delay before restarting after the `consecutive_failures`-th failure in a row:
    /// 0 for the first, then `initial`, doubling, capped at `max`.
    pub fn delay(&self, consecutive_failures: u32) -> Duration {
        match consecutive_failures {
            0 | 1 => Duration::ZERO,
            n => {
                let doublings = (n - 2).min(31);
                self.initial
                    .checked_mul(1u32 << doublings)
                    .map_or(self.max, |delay| delay.min(self.max))
            }
        }
    }
}

/// The record of a process just spawned for `desired`.
pub fn record_spawned(
    desired: &DesiredRecord,
    previous: Option<&ObservedRecord>,
    spawned: Spawned,
    now: UnixMillis,
) -> ObservedRecord {
    let health = if desired.spec.health_check.is_some() {
        Health::Unknown
    } else {
        Health::NotChecked
    };
    let phase = if desired.spec.health_check.is_some() {
        Phase::Starting
    } else {
        Phase::Running
    };
    let counters = Counters::carried_over(desired, previous);
    ObservedRecord {
        id: desired.id.clone(),
        phase,
        pid: Some(spawned.pid),
        pid_start_ticks: spawned.start_ticks,
        instance: Some(spawned.instance),
        generation: desired.generation,
        spec: desired.spec.clone(),
        ports: spawned.ports,
        started_at: Some(now),
        health,
        probe_successes: 0,
        probe_failures: 0,
        restart_count: counters.restart_count,
        consecutive_failures: counters.consecutive_failures,
        error_count: counters.error_count,
        last_exit: previous.and_then(|p| p.last_exit),
        last_error: previous.and_then(|p| p.last_error.clone()),
        next_restart_at: None,
        stop_reason: None,
        stop_deadline: None,
        killed: false,
        resets_seen: desired.resets,
        restarts_seen: desired.restarts,
        tripped_at: None,
        exited_at: previous.and_then(|p| p.exited_at),
    }
}

/// What the runtime learned from a successful spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    pub start_ticks: Option<u64>,
    pub ports: Ports,
    /// The `PRISM_INSTANCE_ID` given to it.
    pub instance: String,
}

/// A spawn about to happen, recorded (so that it outlives the launcher) before it happens: what the process is started
/// for (`desired`), the instance id and ports it gets, and when. A launcher that crashes between
/// the spawn and recording its pid finds the process by its instance id and adopts it with
/// `record_spawned(&intent.desired, previous, spawned, intent.at)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpawnIntent {
    pub desired: DesiredRecord,
    pub instance: String,
    pub ports: Ports,
    pub at: UnixMillis,
}

/// Which spawn an intent announced: the id and the instance id it was started with. Intents are
/// kept and forgotten by it, so forgetting one spawn of an id (a previous run's, recovered)
/// never forgets another (this run's, whose outcome may not be written).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpawnKey {
    pub id: ProcessId,
    pub instance: String,
}

impl SpawnIntent {
    pub fn key(&self) -> SpawnKey {
        SpawnKey {
            id: self.desired.id.clone(),
            instance: self.instance.clone(),
        }
    }
}

/// A spawn intent to forget once the outcome of its spawn is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The spawn's process is recorded: the earlier spawns of its id are superseded with it (one
    /// whose outcome was lost makes at most a stray, for the orphan scan, never the id's process).
    Process(SpawnKey),
    /// Only this spawn: it failed, or the recovery decided about it; an earlier spawn of the id
    /// is not superseded by it.
    Alone(SpawnKey),
}

/// Counters that survive from one process of an id to the next.
struct Counters {
    restart_count: u32,
    consecutive_failures: u32,
    error_count: u32,
}

impl Counters {
    fn carried_over(desired: &DesiredRecord, previous: Option<&ObservedRecord>) -> Counters {
        let Some(previous) = previous else {
            return Counters {
                restart_count: 0,
                consecutive_failures: 0,
                error_count: 0,
            };
        };
        // A new spec resets the failure streak (it deserves its own chances), and starting it is
        // a replacement, not a restart, even when the old spec was failing. An operator's reset
        // also starts the streak afresh, and so does an operator's restart, which is replaced
        // as a spec change is.
        let same_spec = !desired.spec.requires_restart_from(&previous.spec);
        let operator_restart = restart_requested(desired, previous);
        let failed_before = matches!(previous.phase, Phase::BackingOff | Phase::Tripped);
        let restarted_after_failure = failed_before && same_spec && !operator_restart;
        let fresh_streak = !same_spec || desired.resets > previous.resets_seen || operator_restart;
        Counters {
            restart_count: previous.restart_count + u32::from(restarted_after_failure),
            consecutive_failures: if fresh_streak {
                0
            } else {
                previous.consecutive_failures
            },
            error_count: previous.error_count,
        }
    }
}

/// The record after a spawn attempt failed (missing executable, permission denied...).
pub fn record_spawn_failed(
    desired: &DesiredRecord,
    previous: Option<&ObservedRecord>,
    ports: Ports,
    error: String,
    backoff: &Backoff,
    jitter_sample: f64,
    now: UnixMillis,
) -> ObservedRecord {
    let backoff = backoff.for_spec(&desired.spec);
    let base = record_without_process(desired, previous, ports, Phase::BackingOff);
    let consecutive_failures = base.consecutive_failures + 1;
    // Spawn errors rarely fix themselves at once, so even the first retry waits `initial`.
    let delay = backoff
        .jittered_delay(consecutive_failures, jitter_sample)
        .max(backoff.initial);
    let tripped = consecutive_failures >= backoff.failure_threshold;
    ObservedRecord {
        phase: if tripped {
            Phase::Tripped
        } else {
            Phase::BackingOff
        },
        consecutive_failures,
        error_count: base.error_count + 1,
        last_error: Some(error),
        next_restart_at: (!tripped).then(|| now.saturating_add(delay)),
        resets_seen: desired.resets,
        // The start was the answer to any restart asked for, even though it failed.
        restarts_seen: desired.restarts,
        tripped_at: tripped.then_some(now),
        exited_at: Some(now),
        ..base
    }
}

/// The record of a desired process that is not started because the launcher is full.
pub fn record_pending(
    desired: &DesiredRecord,
    previous: Option<&ObservedRecord>,
    ports: Ports,
    reason: String,
) -> ObservedRecord {
    ObservedRecord {
        last_error: Some(reason),
        ..record_without_process(desired, previous, ports, Phase::Pending)
    }
}

/// A record of `desired` in `phase` with no process, its counters carried over from `previous`.
fn record_without_process(
    desired: &DesiredRecord,
    previous: Option<&ObservedRecord>,
    ports: Ports,
    phase: Phase,
) -> ObservedRecord {
    let counters = Counters::carried_over(desired, previous);
    ObservedRecord {
        id: desired.id.clone(),
        phase,
        pid: None,
        pid_start_ticks: None,
        instance: None,
        generation: desired.generation,
        spec: desired.spec.clone(),
        ports,
        started_at: None,
        health: if desired.spec.health_check.is_some() {
            Health::Unknown
        } else {
            Health::NotChecked
        },
        probe_successes: 0,
        probe_failures: 0,
        restart_count: counters.restart_count,
        consecutive_failures: counters.consecutive_failures,
        error_count: counters.error_count,
        last_exit: previous.and_then(|p| p.last_exit),
        last_error: previous.and_then(|p| p.last_error.clone()),
        next_restart_at: None,
        stop_reason: None,
        stop_deadline: None,
        killed: false,
        resets_seen: previous.map_or(0, |p| p.resets_seen),
        restarts_seen: previous.map_or(0, |p| p.restarts_seen),
        tripped_at: None,
        exited_at: previous.and_then(|p| p.exited_at),
    }
}

/// The record after the runtime sent SIGTERM to the process group.
pub fn record_stop_started(
    observed: &ObservedRecord,
    reason: StopReason,
    grace: Duration,
    now: UnixMillis,
) -> ObservedRecord {
    ObservedRecord {
        phase: Phase::Stopping,
        stop_reason: Some(reason),
        stop_deadline: Some(now.saturating_add(grace)),
        killed: false,
        ..observed.clone()
    }
}

/// The record after the runtime sent SIGKILL to the process group.
pub fn record_killed(observed: &ObservedRecord) -> ObservedRecord {
    ObservedRecord {
        killed: true,
        ..observed.clone()
    }
}

/// The record of a held process with no live process, stopped for the hold: nothing due (no
/// backoff, no pending start), its counters, ports and last exit kept. See `Action::RecordHeld`.
pub fn record_held(observed: &ObservedRecord) -> ObservedRecord {
    ObservedRecord {
        phase: Phase::Stopped,
        stop_reason: Some(StopReason::Held),
        stop_deadline: None,
        next_restart_at: None,
        killed: false,
        started_at: None,
        ..observed.clone()
    }
}

/// The record after the process exited, whether it was asked to or not.
pub fn record_exit(
    observed: &ObservedRecord,
    status: ExitStatus,
    backoff: &Backoff,
    jitter_sample: f64,
    now: UnixMillis,
) -> ObservedRecord {
    let backoff = backoff.for_spec(&observed.spec);
    let mut next = ObservedRecord {
        pid: None,
        pid_start_ticks: None,
        instance: None,
        exited_at: Some(now),
        last_exit: Some(status),
        stop_deadline: None,
        killed: false,
        probe_successes: 0,
        probe_failures: 0,
        health: if observed.spec.health_check.is_some() {
            Health::Unknown
        } else {
            Health::NotChecked
        },
        ..observed.clone()
    };
    let planned_stop = observed.phase == Phase::Stopping
        && matches!(
            observed.stop_reason,
            Some(
                StopReason::Undesired
                    | StopReason::Replace
                    | StopReason::Shutdown
                    | StopReason::Held
                    | StopReason::Restart
                    | StopReason::AdminUnreachable
            )
        );
    if planned_stop {
        next.phase = Phase::Stopped;
        // A stop for a hold stays one (it holds no slot, see `holds_slot`); the others are
        // done with their reason.
        next.stop_reason = observed
            .stop_reason
            .filter(|reason| *reason == StopReason::Held);
        next.started_at = None;
        return next;
    }

    let failure_stop = observed
        .stop_reason
        .filter(|reason| matches!(reason, StopReason::Unhealthy | StopReason::NotReady));
    let failed = failure_stop.is_some() || !observed.spec.is_success(status);
    next.stop_reason = None;
    let ran_stably = observed
        .started_at
        .is_some_and(|started| now.saturating_duration_since(started) >= backoff.stable_after);
    if ran_stably {
        next.consecutive_failures = 0;
    }
    let failure = match failure_stop {
        Some(StopReason::Unhealthy) => {
            format!("restarted after failing its liveness probe ({status})")
        }
        Some(_) => format!(
            "not ready within {:?}: its health check never passed ({status})",
            observed
                .spec
                .health_check
                .as_ref()
                .map_or(Duration::ZERO, HealthCheck::ready_deadline)
        ),
        None => format!("exited with {status}"),
    };
    if failed {
        next.error_count += 1;
        next.last_error = Some(failure.clone());
    }
    let restarts = match observed.spec.restart_policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Never => false,
    };
    if restarts {
        // Exits that lead to a restart count towards the backoff even when they succeed, so that
        // a program that exits 0 at once under `Always` does not spin.
        next.consecutive_failures += 1;
        if next.consecutive_failures >= backoff.failure_threshold {
            next.phase = Phase::Tripped;
            next.tripped_at = Some(now);
            next.next_restart_at = None;
            next.last_error = Some(format!(
                "circuit open after {} consecutive failures; last: {failure}",
                next.consecutive_failures
            ));
        } else {
            next.phase = Phase::BackingOff;
            let delay = backoff.jittered_delay(next.consecutive_failures, jitter_sample);
            next.next_restart_at = Some(now.saturating_add(delay));
        }
    } else {
        next.phase = Phase::Exited;
        next.next_restart_at = None;
    }
    next.started_at = None;
    next
}

/// The record of a process adopted from a previous launcher run at `now`. One that was still
/// starting gets its whole ready deadline again from `now`: the deadline is the time this run
/// gives it to pass a probe, and this run has not probed it yet (a launcher down for longer than
/// the deadline must not stop, unprobed, a process that became ready meanwhile).
pub fn record_adopted(observed: &ObservedRecord, now: UnixMillis) -> ObservedRecord {
    match observed.phase {
        Phase::Starting => ObservedRecord {
            started_at: Some(now),
            ..observed.clone()
        },
        _ => observed.clone(),
    }
}

/// The record after a health probe answered. Probes of a process that is not alive are ignored.
pub fn record_probe(observed: &ObservedRecord, result: Result<(), String>) -> ObservedRecord {
    let Some(check) = &observed.spec.health_check else {
        return observed.clone();
    };
    if !matches!(observed.phase, Phase::Starting | Phase::Running) {
        return observed.clone();
    }
    let mut next = observed.clone();
    match result {
        Ok(()) => {
            next.probe_failures = 0;
            next.probe_successes = next.probe_successes.saturating_add(1);
            if next.phase == Phase::Running || next.probe_successes >= check.success_threshold {
                next.phase = Phase::Running;
                next.health = Health::Healthy;
            }
        }
        // A starting process is still getting ready: a failed probe only means "not yet".
        Err(_) if next.phase == Phase::Starting => {
            next.probe_successes = 0;
        }
        Err(error) => {
            next.probe_successes = 0;
            next.health = Health::Unhealthy;
            next.last_error = Some(format!("health check failed: {error}"));
            next.probe_failures = next.probe_failures.saturating_add(1);
        }
    }
    next
}

/// The record after the generation changed in a way that needs no restart.
pub fn record_generation(observed: &ObservedRecord, desired: &DesiredRecord) -> ObservedRecord {
    ObservedRecord {
        generation: desired.generation,
        spec: desired.spec.clone(),
        ..observed.clone()
    }
}

/// How desired and actual differ for one id, for people reading `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffKind {
    InSync,
    /// Desired, not running yet.
    Start,
    /// Running an older spec; a new process will replace it.
    Replace,
    /// Running, not desired any more.
    Stop,
    /// Desired but crashing, unhealthy or unable to start.
    Failing,
    /// Held stopped by an operator (`prism-launcher stop`): as asked, so not a difference
    /// and not a failure.
    Held,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub kind: DiffKind,
    /// Why it differs and what happens next, in a sentence.
    pub detail: String,
}

fn diff_of(kind: DiffKind, detail: impl Into<String>) -> Diff {
    Diff {
        kind,
        detail: detail.into(),
    }
}

/// How the desired and observed records of one id differ at `now`.
pub fn diff(
    desired: Option<&DesiredRecord>,
    observed: Option<&ObservedRecord>,
    now: UnixMillis,
) -> Diff {
    match (desired, observed) {
        (None, None) => diff_of(DiffKind::InSync, ""),
        (Some(desired), None) if desired.held => diff_of(
            DiffKind::Held,
            format!(
                "held by the operator; not started; `prism-launcher start {}` releases it",
                desired.id
            ),
        ),
        (Some(_), None) => diff_of(DiffKind::Start, "desired; not started yet"),
        (None, Some(observed)) => match observed.phase {
            Phase::Stopping => diff_of(DiffKind::Stop, "no longer desired; stopping"),
            phase if phase.has_live_process() => {
                diff_of(DiffKind::Stop, "no longer desired; will be stopped")
            }
            _ => diff_of(DiffKind::Stop, "no longer desired; record will be removed"),
        },
        (Some(desired), Some(observed)) if desired.held => diff_held(observed),
        (Some(desired), Some(observed)) => diff_desired(desired, observed, now),
    }
}

/// How desired and observed differ at `now` given what the loop knows of the sources (`read`):
/// the processes of a suspended source are kept down on purpose, which is no difference.
pub fn diff_under(
    desired: Option<&DesiredRecord>,
    observed: Option<&ObservedRecord>,
    now: UnixMillis,
    read: SourcesRead,
) -> Diff {
    match (desired, observed) {
        (Some(desired), observed) if read.suspends(&desired.source) && !desired.held => {
            diff_suspended(observed)
        }
        _ => diff(desired, observed, now),
    }
}

/// How a process kept down while prism-admin is unreachable differs: on its way down while it
/// still runs, else held until admin is back.
fn diff_suspended(observed: Option<&ObservedRecord>) -> Diff {
    const WHY: &str = "prism-admin has been unreachable for longer than --admin-disconnect-grace";
    match observed.map(|observed| observed.phase) {
        Some(Phase::Starting | Phase::Running) => {
            diff_of(DiffKind::Stop, format!("{WHY}; will be stopped"))
        }
        Some(Phase::Stopping) => diff_of(DiffKind::Stop, format!("{WHY}; stopping")),
        Some(phase) => diff_of(
            DiffKind::Held,
            format!("{WHY} ({phase}); starts again once it registers"),
        ),
        None => diff_of(
            DiffKind::Held,
            format!("{WHY}; not started; starts once it registers"),
        ),
    }
}

/// How a held process differs: on its way down while it still runs, else held as asked.
fn diff_held(observed: &ObservedRecord) -> Diff {
    match observed.phase {
        Phase::Starting | Phase::Running => {
            diff_of(DiffKind::Stop, "held by the operator; will be stopped")
        }
        Phase::Stopping => diff_of(DiffKind::Stop, "held by the operator; stopping"),
        phase => diff_of(
            DiffKind::Held,
            format!(
                "held by the operator ({phase}); `prism-launcher start {}` releases it",
                observed.id
            ),
        ),
    }
}

fn diff_desired(desired: &DesiredRecord, observed: &ObservedRecord, now: UnixMillis) -> Diff {
    let spec_changed = desired.spec.requires_restart_from(&observed.spec);
    let generations = format!(
        "generation {} runs, {} desired",
        observed.generation, desired.generation
    );
    let last_error = observed
        .last_error
        .as_deref()
        .unwrap_or("no error recorded");
    let restart = restart_requested(desired, observed);
    match observed.phase {
        Phase::Starting | Phase::Running if spec_changed => {
            diff_of(DiffKind::Replace, format!("spec changed: {generations}"))
        }
        Phase::Starting | Phase::Running if restart => diff_of(
            DiffKind::Replace,
            "restart requested by the operator; will be replaced",
        ),
        Phase::Tripped | Phase::BackingOff | Phase::Exited if restart && !spec_changed => {
            diff_of(
                DiffKind::Start,
                "restart requested by the operator; will start",
            )
        }
        Phase::Starting => match ready_deadline_at(observed) {
            Some(deadline) if now < deadline => diff_of(
                DiffKind::InSync,
                format!(
                    "started; waiting for its first passing probe ({}s left before that counts as a failure)",
                    deadline.saturating_duration_since(now).as_secs_f64().ceil()
                ),
            ),
            Some(_) => diff_of(
                DiffKind::Failing,
                "not ready in time: its health check has not passed; it will be restarted",
            ),
            None => diff_of(
                DiffKind::InSync,
                "started; waiting for its first passing probe",
            ),
        },
        Phase::Running if observed.health == Health::Unhealthy => diff_of(
            DiffKind::Failing,
            format!(
                "unhealthy ({} probe failures in a row): {last_error}",
                observed.probe_failures
            ),
        ),
        Phase::Running => diff_of(DiffKind::InSync, ""),
        Phase::Stopping => match observed.stop_reason {
            Some(StopReason::Replace) => diff_of(
                DiffKind::Replace,
                format!("stopping to replace: {generations}"),
            ),
            Some(StopReason::Unhealthy) => diff_of(
                DiffKind::Failing,
                format!("stopping after failed liveness probes: {last_error}"),
            ),
            Some(StopReason::NotReady) => diff_of(
                DiffKind::Failing,
                "stopping: its health check did not pass in time",
            ),
            Some(StopReason::Restart) => diff_of(
                DiffKind::Replace,
                "stopping to restart at the operator's request",
            ),
            Some(StopReason::Held) => diff_of(
                DiffKind::Start,
                "stopping (it was held); starts again once stopped",
            ),
            Some(StopReason::AdminUnreachable) => diff_of(
                DiffKind::Start,
                "stopping (prism-admin was unreachable); starts again once stopped",
            ),
            _ => diff_of(DiffKind::Stop, "stopping"),
        },
        Phase::Stopped => diff_of(DiffKind::Start, "stopped; will start again"),
        Phase::Pending if spec_changed => diff_of(
            DiffKind::Start,
            format!("pending ({last_error}); spec changed since"),
        ),
        Phase::Pending => diff_of(DiffKind::Start, format!("pending: {last_error}")),
        Phase::Tripped if spec_changed => diff_of(
            DiffKind::Replace,
            format!("spec changed, closing the circuit: {generations}"),
        ),
        Phase::Tripped if reset_requested(desired, observed) => {
            diff_of(DiffKind::Start, "reset; will start again")
        }
        Phase::Tripped => {
            let since = observed
                .tripped_at
                .map_or_else(String::new, |at| format!(" (tripped unix ms {})", at.0));
            diff_of(
                DiffKind::Failing,
                format!(
                    "circuit open{since}: {last_error}; run `prism-launcher reset {}` or change its spec",
                    observed.id
                ),
            )
        }
        Phase::BackingOff if spec_changed => diff_of(
            DiffKind::Replace,
            format!("spec changed while backing off: {generations}"),
        ),
        Phase::BackingOff => {
            let when = observed
                .next_restart_at
                .map_or_else(|| "now".to_string(), |at| format!("unix ms {}", at.0));
            diff_of(
                DiffKind::Failing,
                format!(
                    "{last_error}; restart {} due {when}",
                    observed.consecutive_failures
                ),
            )
        }
        Phase::Exited if spec_changed => diff_of(
            DiffKind::Replace,
            format!("spec changed after exit: {generations}"),
        ),
        Phase::Exited => match observed.last_exit {
            Some(status) if observed.spec.is_success(status) => diff_of(
                DiffKind::InSync,
                "completed; its restart policy keeps it down",
            ),
            Some(status) => diff_of(
                DiffKind::Failing,
                format!("exited with {status}; its restart policy keeps it down"),
            ),
            None => diff_of(
                DiffKind::Failing,
                "exited; its restart policy keeps it down",
            ),
        },
    }
}

/// Counts of each kind of difference, for the one-line summary under the status table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffSummary {
    pub to_start: u32,
    pub to_replace: u32,
    pub to_stop: u32,
    pub failing: u32,
    pub in_sync: u32,
    pub held: u32,
}

impl DiffSummary {
    pub fn add(&mut self, kind: DiffKind) {
        let counter = match kind {
            DiffKind::InSync => &mut self.in_sync,
            DiffKind::Start => &mut self.to_start,
            DiffKind::Replace => &mut self.to_replace,
            DiffKind::Stop => &mut self.to_stop,
            DiffKind::Failing => &mut self.failing,
            DiffKind::Held => &mut self.held,
        };
        *counter += 1;
    }
}

/// A host-wide limit on restarts per second (a token bucket), so that a failure of the whole
/// host does not turn into a restart storm. Pure: time is passed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartBudget {
    per_second: u32,
    tokens: f64,
    refilled_at: UnixMillis,
}

impl RestartBudget {
    /// A full bucket of `per_second` tokens; 0 means no limit.
    pub fn new(per_second: u32, now: UnixMillis) -> RestartBudget {
        RestartBudget {
            per_second,
            tokens: f64::from(per_second),
            refilled_at: now,
        }
    }

    /// Takes one restart from the budget, or says when the next one is available.
    pub fn take(&mut self, now: UnixMillis) -> Result<(), UnixMillis> {
        if self.per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(self.per_second);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled_at = self.refilled_at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / rate);
            Err(now.saturating_add(wait.max(Duration::from_millis(1))))
        }
    }
}

/// Whether a record holds one of the launcher's `--max-processes` slots: it runs, is stopping,
/// or will run again soon (backing off, stopped to be replaced). Pending, exited and tripped
/// processes hold none, and neither does one stopped for an operator's hold: it will not run
/// again until released, and its release is a start like a new process's, subject to capacity.
pub fn holds_slot(observed: &ObservedRecord) -> bool {
    match observed.phase {
        Phase::Starting | Phase::Running | Phase::Stopping | Phase::BackingOff => true,
        Phase::Stopped => !is_held_down(observed),
        Phase::Pending | Phase::Exited | Phase::Tripped => false,
    }
}
