//! The reconcile loop: events in, `reconcile::plan` on the ids they touched, actions out, outcomes
//! recorded as observed facts in the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::oom::KernelLog;
use super::pidfd::Pidfd;
use super::ports::PortAllocator;
use super::probe::{start_probing, ExecContext};
use super::procfs;
use super::reaper::{become_subreaper, reap_ready, ChildExit, ChildTable};
use super::spawn::{spawn_child, working_dir, SpawnContext};
use crate::clock::now;
use crate::error_chain::Chain;
use crate::reconcile::{
    self, child_environment, Action, Backoff, ChildIdentity, DesiredRecord, ExitStatus,
    ObservedRecord, Phase, Ports, ProcessId, ProcessSpec, RestartBudget, Spawned, StopReason,
    UnixMillis,
};
use crate::store::{Store, StoreError};
use crate::telemetry::{Metrics, Readiness, ResourceUsage, UsageBoard};

/// Everything that can wake the loop besides timers, the resync tick and shutdown.
#[derive(Debug)]
pub enum Event {
    /// The desired record of an id was written or deleted.
    DesiredChanged(ProcessId),
    /// A process the launcher started has exited and was reaped.
    ChildExited(ChildExit),
    /// A health probe of `pid` answered.
    ProbeResult {
        id: ProcessId,
        pid: u32,
        result: Result<(), String>,
    },
    /// An adopted process (not our child) has exited; its status is unknown.
    AdoptedExited { pid: u32 },
    /// An orphan was terminated (or found gone).
    OrphanGone { pid: u32 },
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Children's log files go to `<data_dir>/logs`.
    pub data_dir: PathBuf,
    pub launcher_id: String,
    pub port_range: RangeInclusive<u16>,
    /// A full reconcile of every id runs this often even without events.
    pub resync_interval: Duration,
    pub backoff: Backoff,
    /// New processes beyond this many are left pending; `None` is no limit.
    pub max_processes: Option<u32>,
    /// Restarts allowed per second across the host; 0 is no limit.
    pub max_restarts_per_second: u32,
    /// Where the memory and CPU of live processes are published, every `USAGE_INTERVAL`.
    pub usage: UsageBoard,
    /// How often /proc is scanned for orphans (processes with this launcher's id that it does
    /// not track); they are also looked for at start.
    pub orphan_scan_interval: Duration,
    /// Leave the processes running at shutdown, for the next launcher to adopt.
    pub keep_processes: bool,
    /// A child's log is rotated past this size...
    pub log_max_bytes: u64,
    /// ...keeping this many rotated files.
    pub log_max_files: u32,
    pub metrics: Metrics,
    /// Told when the first reconcile is done.
    pub readiness: Readiness,
}

/// How often the memory and CPU of live processes are sampled from /proc.
const USAGE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the log directory {path}")]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for SIGCHLD, so exits could not be detected")]
    ChildSignal(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Extra time given after the longest grace period before shutdown gives up on a child.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// How many plan/execute rounds one pass runs; later rounds see the outcome of earlier actions.
const ROUNDS_PER_PASS: usize = 4;

/// Runs the reconcile loop until `shutdown` completes, then stops every child (each with its
/// grace period) and returns.
pub async fn run(
    store: Arc<Store>,
    config: RuntimeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let log_dir = config.data_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|source| RuntimeError::LogDir {
        path: log_dir.clone(),
        source,
    })?;
    if let Err(error) = become_subreaper() {
        tracing::warn!(%error, "cannot become a child subreaper; orphaned grandchildren will be reaped by init instead");
    }
    let (events, mut receiver) = mpsc::unbounded_channel();
    let children = ChildTable::default();
    let sigchld = signal(SignalKind::child()).map_err(RuntimeError::ChildSignal)?;
    tokio::spawn(reap_on_sigchld(children.clone(), sigchld, events.clone()));
    let mut desired_changes = store.subscribe();
    let forward = events.clone();
    tokio::spawn(async move {
        while let Some(id) = desired_changes.recv().await {
            if forward.send(Event::DesiredChanged(id)).is_err() {
                return;
            }
        }
    });

    let supervisor_config_restarts = config.max_restarts_per_second;
    let mut supervisor = Supervisor {
        store,
        ports: PortAllocator::new(config.port_range.clone()),
        config,
        log_dir,
        children,
        events,
        desired: HashMap::new(),
        observed: HashMap::new(),
        pids: HashMap::new(),
        probes: HashMap::new(),
        stop_grace: HashMap::new(),
        timers: BTreeSet::new(),
        dirty: BTreeSet::new(),
        unsaved: BTreeSet::new(),
        kernel_log: KernelLog::open(),
        jitter: Jitter::seeded(now().0 ^ (u64::from(std::process::id()) << 32)),
        restart_budget: RestartBudget::new(supervisor_config_restarts, now()),
        slots_in_use: 0,
        pending: BTreeSet::new(),
        cpu_seen: HashMap::new(),
        adopted: HashMap::new(),
        orphans: HashSet::new(),
    };
    supervisor.recover_previous_run(now())?;
    supervisor.resync()?;
    supervisor.reconcile(now());
    supervisor.config.readiness.loop_synced();
    supervisor.scan_orphans();
    let mut orphan_scan = tokio::time::interval(supervisor.config.orphan_scan_interval);
    orphan_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    orphan_scan.tick().await;

    let mut usage_tick = tokio::time::interval(USAGE_INTERVAL);
    usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = tokio::time::interval(supervisor.config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    tokio::pin!(shutdown);
    loop {
        let timer = supervisor.next_timer(now());
        tokio::select! {
            () = &mut shutdown => break,
            Some(event) = receiver.recv() => {
                supervisor.handle(event, now());
                while let Ok(event) = receiver.try_recv() {
                    supervisor.handle(event, now());
                }
            }
            _ = resync.tick() => {
                if let Err(error) = supervisor.resync() {
                    tracing::error!(error = %Chain(&error), "resync could not read the desired state; keeping the last known state");
                }
            }
            () = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => {
                supervisor.timers_due(now());
            }
            _ = usage_tick.tick() => supervisor.sample_usage(now()),
            _ = orphan_scan.tick() => supervisor.scan_orphans(),
        }
        supervisor.reconcile(now());
    }
    supervisor.shut_down(&mut receiver).await;
    Ok(())
}

async fn reap_on_sigchld(
    children: ChildTable,
    mut sigchld: tokio::signal::unix::Signal,
    events: mpsc::UnboundedSender<Event>,
) {
    loop {
        // Reap before the first wait too: a child may have exited before the stream existed.
        for exit in reap_ready(&children) {
            if events.send(Event::ChildExited(exit)).is_err() {
                return;
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

struct Supervisor {
    store: Arc<Store>,
    config: RuntimeConfig,
    log_dir: PathBuf,
    children: ChildTable,
    ports: PortAllocator,
    events: mpsc::UnboundedSender<Event>,
    desired: HashMap<ProcessId, DesiredRecord>,
    observed: HashMap<ProcessId, ObservedRecord>,
    /// Live pid → its id, for dispatching exits.
    pids: HashMap<u32, ProcessId>,
    probes: HashMap<ProcessId, AbortHandle>,
    /// Grace periods that deletes asked for, used by the next stop of the id.
    stop_grace: HashMap<ProcessId, Duration>,
    timers: BTreeSet<(UnixMillis, ProcessId)>,
    /// Ids to plan in the next pass.
    dirty: BTreeSet<ProcessId>,
    /// Ids whose observed record changed since the last write to the store.
    unsaved: BTreeSet<ProcessId>,
    jitter: Jitter,
    kernel_log: KernelLog,
    restart_budget: RestartBudget,
    /// Processes adopted from a previous run (not our children), by pid.
    adopted: HashMap<u32, Arc<Pidfd>>,
    /// Orphans being terminated, so that a scan does not start on them twice.
    orphans: HashSet<u32>,
    /// CPU ticks and when they were read, per live pid, for the next usage sample.
    cpu_seen: HashMap<u32, (u64, UnixMillis)>,
    /// Observed records that hold a `--max-processes` slot.
    slots_in_use: usize,
    /// Desired ids left pending for capacity, looked at again when a slot frees.
    pending: BTreeSet<ProcessId>,
}

/// Whether an action changed something that the same pass should plan again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Made,
    /// Nothing changed: it waits for a timer or a free slot.
    Deferred,
}

/// Random samples in `[0, 1)` for restart jitter (xorshift64*: statistical quality is all that
/// jitter needs).
struct Jitter {
    state: u64,
}

impl Jitter {
    fn seeded(seed: u64) -> Jitter {
        Jitter { state: seed | 1 }
    }

    fn sample(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly, so the result is in [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn log_if_tripped(record: &ObservedRecord) {
    if record.phase == Phase::Tripped {
        tracing::error!(id = %record.id, failures = record.consecutive_failures,
            error = record.last_error.as_deref().unwrap_or_default(),
            "process has exceeded max errors, marking as terminal (circuit open); `prism-launcher reset` restarts it");
    }
}

impl Supervisor {
    /// Reads every desired record and marks every known id for planning.
    fn resync(&mut self) -> Result<(), StoreError> {
        let (records, corrupt) = self.store.all_desired()?;
        for error in corrupt {
            tracing::error!(error = %Chain(&error), "skipping a corrupt desired record");
        }
        let fresh: HashMap<ProcessId, DesiredRecord> = records
            .into_iter()
            .map(|record| (record.id.clone(), record))
            .collect();
        self.dirty.extend(self.desired.keys().cloned());
        self.dirty.extend(fresh.keys().cloned());
        self.dirty.extend(self.observed.keys().cloned());
        self.desired = fresh;
        Ok(())
    }

    fn handle(&mut self, event: Event, now: UnixMillis) {
        match event {
            Event::DesiredChanged(id) => {
                match self.store.desired(&id) {
                    Ok(Some(record)) => {
                        self.desired.insert(id.clone(), record);
                        self.stop_grace.remove(&id);
                    }
                    Ok(None) => {
                        self.desired.remove(&id);
                        self.take_stop_request(&id, now);
                    }
                    Err(error) => {
                        tracing::error!(%id, error = %Chain(&error), "cannot read a changed desired record; keeping the last known one");
                    }
                }
                self.dirty.insert(id);
            }
            Event::ChildExited(exit) => self.child_exited(exit, now),
            Event::AdoptedExited { pid } => {
                if self.adopted.remove(&pid).is_some() {
                    let status = ExitStatus::Unknown;
                    self.child_exited(ChildExit { pid, status }, now);
                }
            }
            Event::OrphanGone { pid } => {
                self.orphans.remove(&pid);
                self.config.metrics.orphans_reaped.inc();
            }
            Event::ProbeResult { id, pid, result } => {
                let Some(observed) = self.observed.get(&id) else {
                    return;
                };
                if observed.pid != Some(pid) {
                    return;
                }
                let result_label = if result.is_ok() { "pass" } else { "fail" };
                self.config
                    .metrics
                    .health_checks
                    .with_label_values(&[result_label])
                    .inc();
                let next = reconcile::record_probe(observed, result);
                if observed.phase == Phase::Starting && next.phase == Phase::Running {
                    if let Some(started) = observed.started_at {
                        let seconds = now.saturating_duration_since(started).as_secs_f64();
                        self.config.metrics.launch_duration.observe(seconds);
                    }
                }
                if next != *observed {
                    if next.health != observed.health {
                        match &next.last_error {
                            Some(error) if next.health == reconcile::Health::Unhealthy => {
                                tracing::warn!(%id, failures = next.probe_failures, %error, "process is unhealthy");
                            }
                            _ => {
                                tracing::info!(%id, health = next.health.as_str(), "health changed")
                            }
                        }
                    }
                    self.set_observed(next);
                    self.dirty.insert(id);
                }
            }
        }
    }

    /// Applies a grace period that the delete of `id` asked for: to the coming stop, or to a stop
    /// already under way when it is shorter.
    fn take_stop_request(&mut self, id: &ProcessId, now: UnixMillis) {
        let grace = match self.store.take_stop_request(id) {
            Ok(Some(grace)) => grace,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%id, error = %Chain(&error), "cannot read the stop request; the spec's grace period applies");
                return;
            }
        };
        match self.observed.get(id) {
            Some(observed) if observed.phase == Phase::Stopping => {
                let deadline = now.saturating_add(grace);
                if observed
                    .stop_deadline
                    .is_none_or(|current| deadline < current)
                {
                    let next = ObservedRecord {
                        stop_deadline: Some(deadline),
                        ..observed.clone()
                    };
                    self.set_observed(next);
                }
            }
            _ => {
                self.stop_grace.insert(id.clone(), grace);
            }
        }
    }

    fn child_exited(&mut self, exit: ChildExit, now: UnixMillis) {
        let Some(id) = self.pids.remove(&exit.pid) else {
            tracing::debug!(pid = exit.pid, status = %exit.status, "an untracked child exited");
            return;
        };
        self.stop_probing(&id);
        let Some(observed) = self.observed.get(&id) else {
            return;
        };
        if observed.pid != Some(exit.pid) {
            return;
        }
        // The leader's group is gone (the reaper killed what was left of it); descendants that
        // left the group go with it, so that nothing of the old process outlives it.
        self.signal_escaped(&id, None, Signal::SIGKILL);
        // A SIGKILL the launcher did not send may be the kernel's OOM killer: its log tells.
        let status = match exit.status {
            ExitStatus::Signal(9) if !observed.killed && self.kernel_log.oom_killed(exit.pid) => {
                ExitStatus::OomKilled
            }
            status => status,
        };
        let exit = ChildExit { status, ..exit };
        if let Err(error) = self.store.put_last_exit(&id, exit.status, now) {
            tracing::error!(%id, error = %Chain(&error), "cannot record the exit");
        }
        let next = reconcile::record_exit(
            observed,
            exit.status,
            &self.config.backoff,
            self.jitter.sample(),
            now,
        );
        if next.error_count > observed.error_count {
            let reason = if observed.stop_reason == Some(StopReason::Unhealthy) {
                "liveness"
            } else {
                match exit.status {
                    ExitStatus::Code(_) => "exit_code",
                    ExitStatus::Signal(_) => "signal",
                    ExitStatus::OomKilled => "oom",
                    ExitStatus::Unknown => "unknown",
                }
            };
            self.config
                .metrics
                .failures
                .with_label_values(&[reason])
                .inc();
        }
        match next.phase {
            Phase::Tripped => {
                tracing::error!(%id, pid = exit.pid, status = %exit.status,
                    failures = next.consecutive_failures,
                    "process has exceeded max errors, marking as terminal (circuit open); `prism-launcher reset` restarts it");
            }
            Phase::Stopped => {
                tracing::info!(%id, pid = exit.pid, status = %exit.status, "process stopped");
            }
            Phase::BackingOff => {
                let delay = next
                    .next_restart_at
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
                tracing::warn!(%id, pid = exit.pid, status = %exit.status, restart_in = ?delay,
                    "process is dead, will restart");
            }
            _ => {
                tracing::info!(%id, pid = exit.pid, status = %exit.status,
                    "process exited; its restart policy keeps it down");
            }
        }
        self.set_observed(next);
        self.dirty.insert(id);
    }

    /// The time until the earliest timer, if any.
    fn next_timer(&self, now: UnixMillis) -> Option<Duration> {
        self.timers
            .first()
            .map(|(at, _)| at.saturating_duration_since(now))
    }

    fn timers_due(&mut self, now: UnixMillis) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.timers.pop_first() {
                self.dirty.insert(id);
            }
        }
    }

    /// Plans the dirty ids and carries the plan out, then writes what changed to the store.
    fn reconcile(&mut self, now: UnixMillis) {
        if self.dirty.is_empty() && self.unsaved.is_empty() {
            return;
        }
        let span = tracing::debug_span!("reconcile", ids = self.dirty.len());
        let _entered = span.enter();
        let timer = self.config.metrics.reconcile_duration.start_timer();
        let mut ids: BTreeSet<ProcessId> = std::mem::take(&mut self.dirty);
        for _ in 0..ROUNDS_PER_PASS {
            if ids.is_empty() {
                break;
            }
            let plan = reconcile::plan(
                ids.iter()
                    .map(|id| (self.desired.get(id), self.observed.get(id))),
                now,
            );
            for (id, at) in plan.wake_at {
                self.timers.insert((at, id));
            }
            // A set, so that no id can get two actions in one round.
            ids = BTreeSet::new();
            for action in plan.actions {
                let id = action.id().clone();
                // Only an action that changed something is worth a second look in this pass; a
                // deferred one already has its timer or waits for a free slot.
                if self.execute(action, now) == Progress::Made {
                    ids.insert(id);
                }
            }
            // Ids that the actions made dirty (a freed slot wakes pending ones) join the next
            // round rather than waiting for the next event.
            ids.append(&mut self.dirty);
        }
        if !ids.is_empty() {
            // Still acting after several rounds: look again on the next pass rather than spin.
            for id in ids {
                self.timers
                    .insert((now.saturating_add(Duration::from_millis(100)), id));
            }
        }
        self.persist();
        timer.observe_duration();
    }

    fn execute(&mut self, action: Action, now: UnixMillis) -> Progress {
        let span = tracing::info_span!("action", id = %action.id(), kind = action.kind());
        let _entered = span.enter();
        self.config
            .metrics
            .actions
            .with_label_values(&[action.kind()])
            .inc();
        match action {
            Action::Start { id, restart } => {
                if restart {
                    if let Err(retry_at) = self.restart_budget.take(now) {
                        tracing::debug!(%id, "host-wide restart limit reached; restart deferred");
                        self.timers.insert((retry_at, id));
                        return Progress::Deferred;
                    }
                }
                if self.at_capacity(&id) {
                    self.leave_pending(&id);
                    return Progress::Deferred;
                }
                self.pending.remove(&id);
                self.start(&id, restart, now);
            }
            Action::Stop { id, reason, grace } => {
                let grace = match reason {
                    StopReason::Undesired => self.stop_grace.remove(&id).unwrap_or(grace),
                    _ => grace,
                };
                self.stop(&id, reason, grace, now);
            }
            Action::Kill { id } => {
                let Some(observed) = self.observed.get(&id) else {
                    return Progress::Made;
                };
                if let Some(pid) = observed.pid {
                    tracing::warn!(%id, pid, "grace period over; sending SIGKILL to the process group");
                    self.signal_group(pid, Signal::SIGKILL);
                    self.signal_escaped(&id, Some(pid), Signal::SIGKILL);
                }
                let next = reconcile::record_killed(observed);
                self.set_observed(next);
            }
            Action::Forget { id } => {
                if let Some(forgotten) = self.observed.remove(&id) {
                    if reconcile::holds_slot(&forgotten) {
                        self.slot_freed();
                    }
                }
                self.pending.remove(&id);
                self.stop_grace.remove(&id);
                self.ports.release(&id);
                self.unsaved.insert(id);
            }
            Action::RecordGeneration { id, .. } => {
                if let (Some(observed), Some(desired)) =
                    (self.observed.get(&id), self.desired.get(&id))
                {
                    let next = reconcile::record_generation(observed, desired);
                    self.set_observed(next);
                }
            }
        }
        Progress::Made
    }

    fn start(&mut self, id: &ProcessId, restart: bool, now: UnixMillis) {
        let Some(desired) = self.desired.get(id) else {
            return;
        };
        let previous = self.observed.get(id);
        let previous_ports = previous.map(|observed| observed.ports);
        let instance = format!("{:016x}", self.jitter.next_u64());
        let spawn_started = std::time::Instant::now();
        let context = SpawnContext {
            launcher_id: &self.config.launcher_id,
            log_dir: &self.log_dir,
            instance: &instance,
        };
        // Ports first, then the spawn; either failing is a spawn failure with its reason.
        let spawned = self
            .ports
            .allocate(id, previous_ports, desired.spec.requested_ports)
            .map_err(|error| {
                let ports = previous_ports.unwrap_or(Ports { grpc: 0, health: 0 });
                (ports, Chain(&error).to_string())
            })
            .and_then(|ports| {
                spawn_child(id, &desired.spec, ports, context, &self.children)
                    .map(|pid| (pid, ports))
                    .map_err(|error| (ports, Chain(&error).to_string()))
            });
        match spawned {
            Ok((pid, ports)) => {
                let spawned = Spawned {
                    pid,
                    start_ticks: procfs::start_ticks(pid),
                    ports,
                    instance,
                };
                let next = reconcile::record_spawned(desired, previous, spawned, now);
                let metrics = &self.config.metrics;
                let pattern = desired
                    .spec
                    .pattern
                    .as_deref()
                    .unwrap_or(desired.spec.process_type.as_str());
                metrics
                    .starts
                    .with_label_values(&[&format!(
                        "{pattern}:{}",
                        desired.spec.isolation.distribution_key()
                    )])
                    .inc();
                if restart {
                    metrics.restarts.inc();
                }
                if desired.spec.health_check.is_none() {
                    // Ready as soon as it runs: its launch took the spawn.
                    metrics
                        .launch_duration
                        .observe(spawn_started.elapsed().as_secs_f64());
                }
                tracing::info!(%id, pid, generation = desired.generation, restart,
                    executable = %desired.spec.executable.display(), "launched process");
                let spec = desired.spec.clone();
                self.start_probing(id, pid, &spec, ports);
                self.pids.insert(pid, id.clone());
                self.set_observed(next);
                // Durable at once, not at the end of the pass: a launcher that crashes now must
                // find this process in its records and adopt it rather than start another.
                self.persist();
            }
            Err((ports, error)) => {
                tracing::error!(%id, %error, "cannot start process");
                let next = reconcile::record_spawn_failed(
                    desired,
                    previous,
                    ports,
                    error,
                    &self.config.backoff,
                    self.jitter.sample(),
                    now,
                );
                self.config
                    .metrics
                    .failures
                    .with_label_values(&["spawn"])
                    .inc();
                log_if_tripped(&next);
                self.set_observed(next);
            }
        }
    }

    fn stop(&mut self, id: &ProcessId, reason: StopReason, grace: Duration, now: UnixMillis) {
        let Some(observed) = self.observed.get(id) else {
            return;
        };
        if let Some(pid) = observed.pid {
            tracing::info!(%id, pid, ?reason, ?grace, "stopping process: SIGTERM to its process group");
            self.signal_group(pid, Signal::SIGTERM);
            self.signal_escaped(id, Some(pid), Signal::SIGTERM);
        }
        let next = reconcile::record_stop_started(observed, reason, grace, now);
        self.set_observed(next);
    }

    /// Signals the process group led by `pid` if the leader has not been reaped yet. Holding the
    /// child table's lock keeps the reaper from reaping it meanwhile, so a reused pid can never
    /// receive the signal.
    fn signal_group(&self, pid: u32, signal: Signal) {
        if let Some(adopted) = self.adopted.get(&pid) {
            // Not our child: the pidfd reaches exactly this process; its group is signalled
            // only while it lives (then its pid, and so the group id, cannot have been reused).
            if let Err(error) = adopted.send_signal(signal) {
                tracing::debug!(pid, %error, "cannot signal an adopted process");
            }
            if !adopted.has_exited() {
                if let Ok(raw) = i32::try_from(pid) {
                    let _ = killpg(Pid::from_raw(raw), signal);
                }
            }
            return;
        }
        let tracked = self.children.lock();
        if !tracked.contains_key(&pid) {
            return;
        }
        let Ok(raw) = i32::try_from(pid) else {
            return;
        };
        match killpg(Pid::from_raw(raw), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => tracing::warn!(pid, %signal, %error, "cannot signal the process group"),
        }
    }

    /// Signals the descendants of `id` that left its process group (daemons that called
    /// setsid, double forks): live processes carrying this launcher's id and `id` in their
    /// environment that the launcher did not start and that are not in the group of `leader`.
    /// Only processes provably ours are touched.
    fn signal_escaped(&self, id: &ProcessId, leader: Option<u32>, signal: Signal) {
        let instance = self
            .observed
            .get(id)
            .and_then(|record| record.instance.clone());
        let mut wanted = vec![
            ("PRISM_LAUNCHER_ID", self.config.launcher_id.as_str()),
            ("PROCESS_ID", id.as_str()),
        ];
        if let Some(instance) = &instance {
            wanted.push(("PRISM_INSTANCE_ID", instance.as_str()));
        }
        let ours = procfs::processes_with_environment(&wanted);
        if ours.is_empty() {
            return;
        }
        let tracked = self.children.lock();
        for pid in ours {
            if tracked.contains_key(&pid) {
                continue;
            }
            let group = procfs::process_group(pid);
            if leader.is_some() && group == leader {
                continue;
            }
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            tracing::warn!(%id, pid, %signal, "signalling a descendant that left the process group");
            let target = if group == Some(pid) {
                // A session or group leader of its own: take its whole group.
                killpg(Pid::from_raw(raw), signal)
            } else {
                nix::sys::signal::kill(Pid::from_raw(raw), signal)
            };
            if let Err(error) = target {
                if error != Errno::ESRCH {
                    tracing::warn!(%id, pid, %error, "cannot signal an escaped descendant");
                }
            }
        }
    }

    /// Starts the health probes of `pid` when its spec has a health check.
    fn start_probing(&mut self, id: &ProcessId, pid: u32, spec: &ProcessSpec, ports: Ports) {
        let Some(check) = spec.health_check.clone() else {
            return;
        };
        // A probe is not a process of this launcher's: without the launcher id, an orphan scan
        // never mistakes it for one, and it is never adopted.
        let identity = ChildIdentity {
            id,
            ports,
            launcher_id: "",
            instance: "",
        };
        let mut env = child_environment(spec, identity, |name| std::env::var(name).ok());
        env.remove("PRISM_LAUNCHER_ID");
        env.remove("PRISM_INSTANCE_ID");
        let exec = ExecContext {
            env,
            working_dir: working_dir(spec),
            children: self.children.clone(),
        };
        let handle = start_probing(
            id.clone(),
            pid,
            check,
            ports.health,
            exec,
            self.events.clone(),
        );
        if let Some(old) = self.probes.insert(id.clone(), handle) {
            old.abort();
        }
    }

    fn stop_probing(&mut self, id: &ProcessId) {
        if let Some(handle) = self.probes.remove(id) {
            handle.abort();
        }
    }

    /// Reads the memory and CPU of every live process from /proc and publishes them. Periodic,
    /// O(live processes) per interval, never per event.
    fn sample_usage(&mut self, now: UnixMillis) {
        let ticks_per_second = procfs::ticks_per_second() as f64;
        let mut sample = BTreeMap::new();
        let mut seen = HashMap::new();
        for (pid, id) in &self.pids {
            let Some((memory_bytes, cpu_ticks)) = procfs::usage(*pid) else {
                continue;
            };
            let cpu_percent = match self.cpu_seen.get(pid) {
                Some((ticks, at)) if now > *at => {
                    let seconds = now.saturating_duration_since(*at).as_secs_f64();
                    let used = cpu_ticks.saturating_sub(*ticks) as f64 / ticks_per_second;
                    (used / seconds * 100.0) as f32
                }
                _ => 0.0,
            };
            seen.insert(*pid, (cpu_ticks, now));
            sample.insert(
                id.clone(),
                ResourceUsage {
                    memory_bytes,
                    cpu_percent,
                },
            );
        }
        self.cpu_seen = seen;
        self.config.usage.publish(sample);
        for id in self.pids.values() {
            let rotated = super::logs::rotate_if_needed(
                &self.log_dir,
                id,
                self.config.log_max_bytes,
                self.config.log_max_files,
            );
            if let Err(error) = rotated {
                tracing::warn!(%id, %error, "cannot rotate the log");
            }
        }
    }

    fn set_observed(&mut self, record: ObservedRecord) {
        self.unsaved.insert(record.id.clone());
        let held = self
            .observed
            .get(&record.id)
            .is_some_and(reconcile::holds_slot);
        let holds = reconcile::holds_slot(&record);
        self.observed.insert(record.id.clone(), record);
        match (held, holds) {
            (false, true) => self.slots_in_use += 1,
            (true, false) => self.slot_freed(),
            _ => {}
        }
    }

    /// A slot was given back: pending processes get another look.
    fn slot_freed(&mut self) {
        self.slots_in_use = self.slots_in_use.saturating_sub(1);
        self.dirty.extend(self.pending.iter().cloned());
    }

    /// Whether starting `id` would exceed `--max-processes`. Only processes that hold no slot
    /// yet (new or pending ones) are counted against the limit; restarts and replacements keep
    /// the slot they have.
    fn at_capacity(&self, id: &ProcessId) -> bool {
        let Some(max) = self.config.max_processes else {
            return false;
        };
        let holds_slot = self.observed.get(id).is_some_and(reconcile::holds_slot);
        !holds_slot && self.slots_in_use >= usize::try_from(max).unwrap_or(usize::MAX)
    }

    /// Records `id` as pending for capacity, logging it once.
    fn leave_pending(&mut self, id: &ProcessId) {
        let Some(desired) = self.desired.get(id) else {
            return;
        };
        let max = self.config.max_processes.unwrap_or_default();
        let previous = self.observed.get(id);
        if previous.is_none_or(|record| record.phase != Phase::Pending) {
            tracing::warn!(%id, max, "not started: the launcher is at --max-processes; it stays pending until a slot frees");
        }
        let ports = previous.map_or(Ports { grpc: 0, health: 0 }, |record| record.ports);
        let reason = format!("the launcher runs its limit of {max} processes (--max-processes)");
        let next = reconcile::record_pending(desired, previous, ports, reason);
        self.pending.insert(id.clone());
        if previous != Some(&next) {
            self.set_observed(next);
        }
    }

    /// Writes the observed records changed since the last call, with one flush for all.
    fn persist(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.unsaved) {
            let written = match self.observed.get(&id) {
                Some(record) => self.store.put_observed(record),
                None => self.store.delete_observed(&id),
            };
            if let Err(error) = written {
                tracing::error!(%id, error = %Chain(&error), "cannot record the observed state");
            }
        }
        if let Err(error) = self.store.flush() {
            tracing::error!(error = %Chain(&error), "cannot flush the observed state");
        }
    }

    /// Takes over what a previous run of the launcher left: a recorded process that still runs
    /// and is provably the one recorded (same pid start time, and our launcher id, its process
    /// id and its instance id in its environment, checked through a pidfd so that pid reuse
    /// cannot fool it) is adopted with its ports and counters; `plan` then keeps it, replaces it
    /// or stops it like any other. A recorded process that is gone counts as an exit with an
    /// unknown status. Nothing that cannot be proven ours is ever signalled.
    fn recover_previous_run(&mut self, now: UnixMillis) -> Result<(), StoreError> {
        let (records, corrupt) = self.store.all_observed()?;
        for error in corrupt {
            tracing::error!(error = %Chain(&error), "skipping a corrupt observed record");
        }
        for record in records {
            self.ports.claim(&record.id, record.ports);
            let id = record.id.clone();
            let live = record.phase.has_live_process();
            let adopted = match record.pid {
                Some(pid) if live => self.open_if_ours(&record, pid).map(|pidfd| (pid, pidfd)),
                _ => None,
            };
            let record = match adopted {
                Some((pid, pidfd)) => {
                    tracing::info!(%id, pid, phase = record.phase.as_str(), "adopted a process of a previous launcher run");
                    self.watch_adopted(pid, pidfd);
                    self.pids.insert(pid, id.clone());
                    if matches!(record.phase, Phase::Starting | Phase::Running) {
                        self.start_probing(&id, pid, &record.spec.clone(), record.ports);
                    }
                    record
                }
                None if live => {
                    tracing::warn!(%id, pid = ?record.pid, "a process of a previous launcher run is gone");
                    reconcile::record_exit(
                        &record,
                        ExitStatus::Unknown,
                        &self.config.backoff,
                        self.jitter.sample(),
                        now,
                    )
                }
                None => record,
            };
            self.unsaved.insert(id.clone());
            self.observed.insert(id, record);
        }
        self.slots_in_use = self
            .observed
            .values()
            .filter(|record| reconcile::holds_slot(record))
            .count();
        self.pending = self
            .observed
            .values()
            .filter(|record| record.phase == Phase::Pending)
            .map(|record| record.id.clone())
            .collect();
        self.persist();
        Ok(())
    }

    /// A pidfd on `pid` if it is provably the process `record` describes. The pidfd is opened
    /// first and the identity checked after, so that the checks and every later signal concern
    /// one and the same process.
    fn open_if_ours(&self, record: &ObservedRecord, pid: u32) -> Option<Arc<Pidfd>> {
        let pidfd = Pidfd::open(pid).ok()?;
        let environment = |name| procfs::environment_value(pid, name);
        let proven = record.pid_start_ticks.is_some()
            && procfs::start_ticks(pid) == record.pid_start_ticks
            && environment("PRISM_LAUNCHER_ID").as_deref()
                == Some(self.config.launcher_id.as_str())
            && environment("PROCESS_ID").as_deref() == Some(record.id.as_str())
            && environment("PRISM_INSTANCE_ID") == record.instance
            && !pidfd.has_exited();
        proven.then(|| Arc::new(pidfd))
    }

    /// Tracks an adopted process: its exit arrives as `Event::AdoptedExited` when its pidfd
    /// becomes readable.
    fn watch_adopted(&mut self, pid: u32, pidfd: Arc<Pidfd>) {
        let events = self.events.clone();
        let watched = pidfd.clone();
        tokio::spawn(async move {
            watched.exited().await;
            let _ = events.send(Event::AdoptedExited { pid });
        });
        self.adopted.insert(pid, pidfd);
    }

    /// Finds processes that carry this launcher's id but belong to no process it tracks (left
    /// by a crash between a spawn and its record, or by a previous run for ids it no longer
    /// runs) and terminates them: SIGTERM, a grace period, SIGKILL, all through pidfds.
    fn scan_orphans(&mut self) {
        let ours = procfs::processes_with_environment(&[(
            "PRISM_LAUNCHER_ID",
            self.config.launcher_id.as_str(),
        )]);
        if ours.is_empty() {
            return;
        }
        let live: HashSet<(String, String)> = self
            .observed
            .values()
            .filter(|record| record.phase.has_live_process())
            .filter_map(|record| Some((record.id.to_string(), record.instance.clone()?)))
            .collect();
        let tracked: HashSet<u32> = self.children.lock().keys().copied().collect();
        let mut found = 0;
        for pid in ours {
            if tracked.contains(&pid)
                || self.adopted.contains_key(&pid)
                || self.orphans.contains(&pid)
            {
                continue;
            }
            let belongs = procfs::environment_value(pid, "PROCESS_ID")
                .zip(procfs::environment_value(pid, "PRISM_INSTANCE_ID"))
                .is_some_and(|pair| live.contains(&pair));
            if belongs {
                continue;
            }
            found += 1;
            self.orphans.insert(pid);
            let launcher_id = self.config.launcher_id.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                terminate_orphan(pid, &launcher_id).await;
                let _ = events.send(Event::OrphanGone { pid });
            });
        }
        if found > 0 {
            tracing::warn!(
                count = found,
                "found orphaned processes of this launcher, cleaning up"
            );
        }
    }

    /// Stops every child with its grace period, waiting at most for the longest grace plus a
    /// margin.
    async fn shut_down(&mut self, receiver: &mut mpsc::UnboundedReceiver<Event>) {
        let started = now();
        if self.config.keep_processes {
            let running = self
                .observed
                .values()
                .filter(|record| record.phase.has_live_process())
                .count();
            tracing::info!(processes = running, "shutting down with --keep-processes: leaving every process running for the next launcher to adopt");
            self.persist();
            return;
        }
        let live: Vec<ProcessId> = self
            .observed
            .values()
            .filter(|record| record.phase.has_live_process())
            .map(|record| record.id.clone())
            .collect();
        tracing::info!(
            processes = live.len(),
            "shutting down: stopping every process"
        );
        let mut longest_grace = Duration::ZERO;
        for id in &live {
            let Some(observed) = self.observed.get(id) else {
                continue;
            };
            let grace = observed.spec.termination_grace;
            longest_grace = longest_grace.max(grace);
            if observed.phase != Phase::Stopping {
                self.stop(id, StopReason::Shutdown, grace, started);
            }
        }
        self.persist();
        // Every child is SIGKILLed by the longest grace its spec asks for, even one whose stop
        // began earlier with a longer grace (a TerminatePattern); shutdown stays bounded.
        let kill_all_at = started.saturating_add(longest_grace);
        let give_up_at = kill_all_at.saturating_add(SHUTDOWN_MARGIN);
        loop {
            let alive: Vec<ProcessId> = self
                .observed
                .values()
                .filter(|record| record.phase.has_live_process())
                .map(|record| record.id.clone())
                .collect();
            if alive.is_empty() {
                break;
            }
            let current = now();
            if current >= give_up_at {
                tracing::error!(
                    remaining = alive.len(),
                    "shutdown timed out: SIGKILLed processes have not exited; leaving them"
                );
                break;
            }
            for id in &alive {
                let due = self.observed.get(id).is_some_and(|record| {
                    !record.killed
                        && (current >= kill_all_at
                            || record
                                .stop_deadline
                                .is_none_or(|deadline| deadline <= current))
                });
                if due {
                    self.execute(Action::Kill { id: id.clone() }, current);
                }
            }
            self.persist();
            let next_deadline = alive
                .iter()
                .filter_map(|id| self.observed.get(id))
                .filter(|record| !record.killed)
                .filter_map(|record| record.stop_deadline)
                .map(|deadline| deadline.min(kill_all_at))
                .min()
                .unwrap_or(give_up_at)
                .min(give_up_at);
            let wait = next_deadline.saturating_duration_since(current);
            tokio::select! {
                Some(event) = receiver.recv() => {
                    if let Event::ChildExited(exit) = event {
                        self.child_exited(exit, now());
                    }
                }
                () = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
            }
        }
        self.persist();
    }
}

/// How long an orphan gets between SIGTERM and SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// Terminates an orphan through a pidfd, after checking (with the pidfd open, so the check and
/// the signals concern one process) that it still carries `launcher_id`.
async fn terminate_orphan(pid: u32, launcher_id: &str) {
    let Ok(pidfd) = Pidfd::open(pid) else {
        return;
    };
    if procfs::environment_value(pid, "PRISM_LAUNCHER_ID").as_deref() != Some(launcher_id) {
        return;
    }
    if let Err(error) = pidfd.send_signal(Signal::SIGTERM) {
        tracing::debug!(pid, %error, "cannot signal an orphan");
        return;
    }
    let exited = tokio::time::timeout(ORPHAN_GRACE, pidfd.exited())
        .await
        .is_ok();
    if !exited {
        let _ = pidfd.send_signal(Signal::SIGKILL);
        pidfd.exited().await;
    }
    tracing::warn!(pid, killed = !exited, "terminated orphaned process");
}
