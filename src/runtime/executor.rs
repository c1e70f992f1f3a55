//! Carrying out `plan`'s actions: starts (all the starts of a round with one durable record of
//! the spawns about to happen, then the spawns), stops, kills, forgets, and the health probes of
//! what runs.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::cgroup::CgroupTree;
use super::leaves::{JoinedLeaf, LeafLimits};
use super::probe::{start_probing, ExecContext};
use super::procfs;
use super::reaper::ChildTable;
use super::signals::{signal_escaped, signal_group, Identity};
use super::spawn::{spawn_child, working_dir, JoinCgroup, SpawnContext};
use super::supervisor::{log_if_tripped, Supervisor};
use crate::error_chain::Chain;
use crate::reconcile::{
    self, probe_environment, stop_grace, Action, ObservedRecord, Phase, Ports, ProcessId,
    ProcessSpec, Settled, SpawnIntent, Spawned, StopReason, UnixMillis,
};

/// Spawns are spread over threads from this many starts in one round on (a single restart runs
/// on the loop's own thread, with no thread to start).
pub(super) const PARALLEL_FROM: usize = 8;

/// Of the ids that are not urgent, a round's first this many first starts and first this many
/// other actions (stops, kills...) always run; past them, a first start or another action is put
/// off (its id planned again in a later step) as soon as a child's exit waits to be reaped.
/// Restarts and urgent ids' actions never are. A first start is put off before it is prepared
/// when the exit waits already as the round is sorted, else before its spawn (its recorded intent then
/// settled on its own). A step plans up to `BULK_STEP` (64) ids, about 28 ms of spawns on the
/// 2-core machine: an exit in the middle of a mass start or stop is then reaped after this many
/// of each and the spawns under way, not after the whole step, while a host where exits never
/// stop coming still gets this many of each done per step.
pub(super) const ACTIONS_BEFORE_YIELDING: usize = 16;

/// `ACTIONS_BEFORE_YIELDING` for actions taken one after another on the loop's thread: the
/// first few always go ahead; past them, each is put off once an exit waits, and from then on
/// without looking again (the exit stays until the loop reaps it).
#[derive(Default)]
pub(super) struct YieldToExits {
    done: usize,
    yielding: bool,
}

impl YieldToExits {
    /// Whether the next action is put off.
    pub(super) fn puts_off(&mut self, children: &ChildTable) -> bool {
        if self.done >= ACTIONS_BEFORE_YIELDING {
            self.yielding = self.yielding || children.exit_waiting();
        }
        if !self.yielding {
            self.done += 1;
        }
        self.yielding
    }
}

/// A spawn's outcome, before it is recorded.
struct Launched {
    id: ProcessId,
    restart: bool,
    outcome: Outcome,
    took: Duration,
}

enum Outcome {
    Spawned {
        intent: SpawnIntent,
        pid: u32,
        start_ticks: Option<u64>,
        /// In cgroup mode, what the spawn did to the process's leaf.
        leaf: Option<JoinedLeaf>,
    },
    /// No process: the ports it had (or got) and why. `intent` when the spawn itself failed
    /// (its intent was recorded), `None` when it never got that far (no ports).
    Failed {
        intent: Option<SpawnIntent>,
        ports: Ports,
        error: String,
    },
}

/// What became of a prepared start.
enum Tried {
    Launched(Launched),
    /// Not tried: an exit waited (`ACTIONS_BEFORE_YIELDING`). Its intent was recorded; no
    /// process was made.
    PutOff {
        id: ProcessId,
        intent: SpawnIntent,
    },
}

impl Tried {
    fn id(&self) -> &ProcessId {
        match self {
            Tried::Launched(launched) => &launched.id,
            Tried::PutOff { id, .. } => id,
        }
    }
}

/// What every spawn of a round needs of the supervisor, owned: the spawns spread over the
/// shared pool's helpers, which outlive the round.
struct LaunchContext {
    launcher_id: String,
    log_dir: PathBuf,
    cgroup_tree: Option<CgroupTree>,
    children: ChildTable,
}

/// Spawns every prepared start: on the loop's thread for a few, else spread over the loop's
/// thread and the shared pool's helpers, one per further core (an exec takes a while, and the
/// cores are better used spawning than waiting); the outcomes in order.
fn launch_all(prepared: Vec<Prepared>, context: LaunchContext) -> Vec<Tried> {
    // Once set, every start that may yield is put off without looking again.
    let yielding = std::sync::atomic::AtomicBool::new(false);
    let launch = move |start: Prepared| -> Tried {
        let started = std::time::Instant::now();
        let outcome = match start.intent {
            Ok(intent)
                if start.may_yield
                    && (yielding.load(std::sync::atomic::Ordering::Relaxed)
                        || context.children.exit_waiting()) =>
            {
                yielding.store(true, std::sync::atomic::Ordering::Relaxed);
                return Tried::PutOff {
                    id: start.id,
                    intent,
                };
            }
            Ok(intent) => {
                let spawned = spawn_in_leaf(
                    &start.id,
                    &intent,
                    start.leaf_limits,
                    context.cgroup_tree.as_ref(),
                    &context.launcher_id,
                    &context.log_dir,
                    &context.children,
                );
                match spawned {
                    Ok((pid, leaf)) => Outcome::Spawned {
                        // Read here, in parallel, rather than on the loop's thread after.
                        start_ticks: procfs::start_ticks(pid),
                        pid,
                        intent,
                        leaf,
                    },
                    Err(error) => Outcome::Failed {
                        ports: intent.ports,
                        error,
                        intent: Some(intent),
                    },
                }
            }
            Err((ports, error)) => Outcome::Failed {
                intent: None,
                ports,
                error,
            },
        };
        Tried::Launched(Launched {
            id: start.id,
            restart: start.restart,
            outcome,
            took: started.elapsed(),
        })
    };
    // A spawn only panics on a bug; that start is then left as it was (its intent kept until a
    // later spawn of the id is recorded, so a restarted launcher looks for it while it is the
    // id's newest) and the resync plans it again.
    crate::parallel::map_in_parallel(prepared, PARALLEL_FROM, launch)
}

/// Spawns one process, in cgroup mode into its leaf (made ready first: created, its limits
/// written, its `cgroup.procs` opened for the child). Returns the pid, and what the spawn did
/// to the leaf; or the error, as the record shows it.
fn spawn_in_leaf(
    id: &ProcessId,
    intent: &SpawnIntent,
    leaf_limits: Option<LeafLimits>,
    cgroup_tree: Option<&CgroupTree>,
    launcher_id: &str,
    log_dir: &Path,
    children: &ChildTable,
) -> Result<(u32, Option<JoinedLeaf>), String> {
    let joining = match (cgroup_tree, &leaf_limits) {
        (Some(tree), Some(leaf)) => Some(
            tree.prepare_leaf(id, &leaf.limits, leaf.unchanged)
                .map_err(|error| Chain(&error).to_string())?,
        ),
        _ => None,
    };
    let context = SpawnContext {
        launcher_id,
        log_dir,
        instance: &intent.instance,
        generation: intent.desired.generation,
        limit_mode: super::cgroup::limit_mode_of(cgroup_tree),
        join_cgroup: joining.as_ref().map(|leaf| JoinCgroup {
            procs: leaf.procs.as_fd(),
            path: &leaf.path,
        }),
    };
    let pid = spawn_child(id, &intent.desired.spec, intent.ports, context, children)
        .map_err(|error| Chain(&error).to_string())?;
    let leaf = joining.map(|joined| JoinedLeaf {
        oom_kills: joined.oom_kills,
        written: leaf_limits
            .filter(|_| joined.wrote_limits)
            .map(|leaf| leaf.limits),
    });
    Ok((pid, leaf))
}

/// A start that passed the budget and capacity checks, with what its spawn gets, or the ports
/// it had and why it cannot be spawned.
pub(super) struct Prepared {
    id: ProcessId,
    restart: bool,
    intent: Result<SpawnIntent, (Ports, String)>,
    /// In cgroup mode, the limits of the process's leaf.
    leaf_limits: Option<LeafLimits>,
    /// Whether it is put off when an exit waits (`ACTIONS_BEFORE_YIELDING`).
    may_yield: bool,
}

/// A round's starts, prepared, their intents recorded (`begin_round`), for `finish_round`.
pub(super) struct Round {
    prepared: Vec<Prepared>,
    promises: SlotPromises,
}

/// The slots a round promised to its new processes, one start at a time, and the ids those
/// promises left pending.
#[derive(Default)]
struct SlotPromises {
    /// The ids promised a slot they did not hold.
    promised: Vec<ProcessId>,
    /// The ids left pending that a slot free before the round would have taken.
    displaced: Vec<ProcessId>,
}

impl Supervisor {
    /// Carries out one action (the starts of a round go together through `start_all`).
    pub(super) fn execute(&mut self, action: Action, now: UnixMillis) {
        if action.is_start() {
            self.start_all(vec![action], false, now);
            return;
        }
        let span = tracing::info_span!("action", id = %action.id(), kind = action.kind());
        let _entered = span.enter();
        self.count_action(&action);
        match action {
            // Handed to `start_all` above.
            Action::Start { .. } => {}
            Action::Stop { id, reason, grace } => {
                let requested = match reason {
                    StopReason::Undesired => self.stop_grace.remove(&id),
                    _ => None,
                };
                self.stop(&id, reason, stop_grace(reason, grace, requested), now);
            }
            Action::Kill { id } => self.kill(&id, now),
            Action::Forget { id } => {
                self.forget_observed(&id);
                if let Some(leaves) = &mut self.leaves {
                    leaves.forget(&id);
                }
                self.capacity.forget_pending(&id);
                self.stop_grace.remove(&id);
                self.ports.release(&id);
            }
            Action::RecordHeld { id } => {
                // Held: it waits for no slot any more.
                self.capacity.forget_pending(&id);
                if let Some(observed) = self.observed.get(&id) {
                    let next = reconcile::record_held(observed);
                    self.set_observed(next, now);
                }
            }
            Action::RecordGeneration { id, .. } => {
                if let (Some(observed), Some(desired)) =
                    (self.observed.get(&id), self.desired.get(&id))
                {
                    let next = reconcile::record_generation(observed, desired);
                    self.set_observed(next, now);
                }
            }
        }
    }

    fn count_action(&self, action: &Action) {
        self.config
            .metrics
            .actions
            .with_label_values(&[action.kind()])
            .inc();
    }

    /// Starts processes: the ones the restart budget and capacity allow are prepared (an
    /// instance id and ports each), recorded as spawns about to happen with ONE write to the
    /// intent journal (which outlives the launcher), then spawned. A launcher that crashes after
    /// a spawn and before the pass's own flush finds the process by its instance id and adopts
    /// it, so no process is ever started twice, at O(1) flushes per pass. Returns the ids that
    /// made progress.
    /// With `may_yield`, first starts past the round's first `ACTIONS_BEFORE_YIELDING` are put
    /// off while an exit waits; without it (a crash's restart, an urgent id's start), none is.
    pub(super) fn start_all(
        &mut self,
        starts: Vec<Action>,
        may_yield: bool,
        now: UnixMillis,
    ) -> Vec<ProcessId> {
        match self.begin_round(starts, may_yield, now) {
            Some(round) => self.finish_round(round, now),
            None => Vec::new(),
        }
    }

    /// The first half of `start_all`: the starts that go ahead, prepared, their intents recorded
    /// (`None` when they could not be: nothing is spawned then).
    pub(super) fn begin_round(
        &mut self,
        starts: Vec<Action>,
        may_yield: bool,
        now: UnixMillis,
    ) -> Option<Round> {
        // Restarts first: a crash's replacement is never put off, nor waits for first starts.
        let (restarts, firsts): (Vec<Action>, Vec<Action>) = starts
            .into_iter()
            .partition(|action| matches!(action, Action::Start { restart: true, .. }));
        // An exit that waits already: the first starts past the round's first few are put off
        // before anything is recorded of them.
        let mut yield_to_exits = YieldToExits::default();
        let mut starts = restarts;
        for action in firsts {
            if may_yield && yield_to_exits.puts_off(&self.children) {
                self.dirty.insert(action.id().clone());
            } else {
                starts.push(action);
            }
        }
        let mut prepared = Vec::new();
        let mut promises = SlotPromises::default();
        let mut first_starts = 0;
        for action in starts {
            let Action::Start { id, restart } = action else {
                continue;
            };
            if restart {
                if let Err(retry_at) = self.restart_budget.take(now) {
                    tracing::debug!(%id, "host-wide restart limit reached; restart deferred");
                    self.timers.insert(retry_at, id);
                    continue;
                }
            }
            let current = self.observed.get(&id);
            if self.capacity.full_for(current, promises.promised.len()) {
                if !self.capacity.full_for(current, 0) {
                    promises.displaced.push(id.clone());
                }
                self.leave_pending(&id, now);
                continue;
            }
            // Without a limit no start is left pending, so no promise needs keeping (nor an id
            // cloned per start for it).
            if self.capacity.max().is_some() && self.capacity.takes_slot(current) {
                promises.promised.push(id.clone());
            }
            self.capacity.forget_pending(&id);
            if let Some(mut start) = self.prepare(id, restart, now) {
                if may_yield && !restart {
                    start.may_yield = first_starts >= ACTIONS_BEFORE_YIELDING;
                    first_starts += 1;
                }
                prepared.push(start);
            }
        }
        let intents: Vec<SpawnIntent> = prepared
            .iter()
            .filter_map(|start| start.intent.clone().ok())
            .collect();
        if let Err(error) = self.store.record_spawn_intents(&intents) {
            // Spawning without a recorded intent could start a process twice after a crash.
            tracing::error!(error = %Chain(&error), "cannot record the spawns about to happen; they are retried");
            for start in prepared {
                let taken = match &start.intent {
                    Ok(intent) => intent.ports,
                    Err((ports, _)) => *ports,
                };
                self.unprepare(&start.id, taken);
                self.timers
                    .insert(now.saturating_add(Duration::from_secs(1)), start.id);
            }
            // The promises went with the round: the ids they left pending retry with it.
            for id in promises.displaced {
                self.timers
                    .insert(now.saturating_add(Duration::from_secs(1)), id);
            }
            return None;
        }
        Some(Round { prepared, promises })
    }

    /// The second half of `start_all`: the spawns, and what they gave recorded.
    pub(super) fn finish_round(&mut self, round: Round, now: UnixMillis) -> Vec<ProcessId> {
        let Round { prepared, promises } = round;
        let starting: Vec<ProcessId> = prepared.iter().map(|start| start.id.clone()).collect();
        let tried = launch_all(prepared, self.launch_context());
        if tried.len() < starting.len() {
            // A spawn panicked (a bug; the panic's own message is above in the log).
            let outcomes: HashSet<&ProcessId> = tried.iter().map(Tried::id).collect();
            for id in starting.iter().filter(|id| !outcomes.contains(id)) {
                tracing::error!(%id, "the start failed on a bug; its intent is kept and the resync plans it again");
            }
        }
        let progressed = self.record_round(tried, now);
        self.offer_unkept_promises(promises);
        progressed
    }

    /// A slot promised to a start that did not take it (put off, failed for good, panicked, no
    /// longer desired) goes to the ids the round's promises left pending: they are looked at
    /// again in the next step, instead of waiting for another slot to free or the resync.
    fn offer_unkept_promises(&mut self, promises: SlotPromises) {
        if promises.displaced.is_empty() {
            return;
        }
        let unkept = promises
            .promised
            .iter()
            .any(|id| self.capacity.takes_slot(self.observed.get(id)));
        if unkept {
            self.dirty.extend(promises.displaced);
        }
    }

    /// What every spawn of a round needs of the supervisor, owned.
    fn launch_context(&self) -> LaunchContext {
        LaunchContext {
            launcher_id: self.config.launcher_id.clone(),
            log_dir: self.log_dir.clone(),
            cgroup_tree: self.config.cgroup_tree.clone(),
            children: self.children.clone(),
        }
    }

    /// Records what a round's spawns gave, and puts off what they did not try; returns the ids
    /// that made progress.
    fn record_round(&mut self, tried: Vec<Tried>, now: UnixMillis) -> Vec<ProcessId> {
        let mut progressed = Vec::with_capacity(tried.len());
        let mut put_off = 0;
        for tried in tried {
            match tried {
                Tried::Launched(launched) => {
                    self.count_action(&Action::Start {
                        id: launched.id.clone(),
                        restart: launched.restart,
                    });
                    progressed.push(launched.id.clone());
                    self.record_launch(launched, now);
                }
                Tried::PutOff { id, intent } => {
                    self.put_off(id, intent);
                    put_off += 1;
                }
            }
        }
        if put_off > 0 {
            tracing::debug!(put_off, "starts put off for an exit to reap first");
        }
        if !progressed.is_empty() {
            self.follow_up_after_starts(now);
        }
        progressed
    }

    /// A start put off for an exit: no process was made, so its intent is settled on its own
    /// (with the next flush), the ports it got go back, and its id waits for the next step.
    fn put_off(&mut self, id: ProcessId, intent: SpawnIntent) {
        self.settled_intents.push(Settled::Alone(intent.key()));
        self.unprepare(&id, intent.ports);
        self.dirty.insert(id);
    }

    /// Undoes what preparing a start of `id` that will not be spawned did: the ports it was
    /// given (`taken`) go back, and an id still pending (as its record says) is pending again.
    fn unprepare(&mut self, id: &ProcessId, taken: Ports) {
        let current = self.observed.get(id);
        self.ports
            .give_back(id, taken, current.map(|observed| observed.ports));
        if current.is_some_and(|observed| observed.phase == Phase::Pending) {
            self.capacity.leave_pending(id);
        }
    }

    /// An instance id and ports for the start of `id`; `None` when it is not desired any more.
    fn prepare(&mut self, id: ProcessId, restart: bool, now: UnixMillis) -> Option<Prepared> {
        let desired = self.desired.get(&id)?;
        let previous_ports = self.observed.get(&id).map(|observed| observed.ports);
        let instance = format!("{:016x}", self.jitter.next_u64());
        let leaf_limits = self
            .leaves
            .as_ref()
            .map(|leaves| leaves.leaf_limits(&id, desired.spec.resources.as_ref()));
        match self.ports.allocate(
            &id,
            previous_ports,
            desired.spec.requested_ports,
            desired.spec.port_needs(),
        ) {
            Ok(ports) => Some(Prepared {
                intent: Ok(SpawnIntent {
                    desired: desired.clone(),
                    instance,
                    ports,
                    at: now,
                }),
                id,
                restart,
                leaf_limits,
                may_yield: false,
            }),
            Err(error) => Some(Prepared {
                intent: Err((
                    previous_ports.unwrap_or(Ports { grpc: 0, health: 0 }),
                    Chain(&error).to_string(),
                )),
                id,
                restart,
                leaf_limits,
                may_yield: false,
            }),
        }
    }

    /// Records what a spawn gave: a process, or the reason there is none.
    fn record_launch(&mut self, launched: Launched, now: UnixMillis) {
        let Launched {
            id,
            restart,
            outcome,
            took,
        } = launched;
        let span =
            tracing::info_span!("action", %id, kind = if restart { "restart" } else { "start" });
        let _entered = span.enter();
        // Forgotten only after the outcome is written (see `persist`): were the intent removed
        // first, a launcher killed in between would find neither.
        match &outcome {
            Outcome::Spawned { intent, .. } => {
                self.settled_intents.push(Settled::Process(intent.key()));
            }
            Outcome::Failed {
                intent: Some(intent),
                ..
            } => self.settled_intents.push(Settled::Alone(intent.key())),
            Outcome::Failed { intent: None, .. } => {}
        }
        let Some(desired) = self.desired.get(&id) else {
            return;
        };
        let previous = self.observed.get(&id);
        match outcome {
            Outcome::Spawned {
                intent,
                pid,
                start_ticks,
                leaf,
            } => {
                if let (Some(leaves), Some(leaf)) = (&mut self.leaves, leaf) {
                    leaves.joined(&id, pid, leaf);
                }
                let spawned = Spawned {
                    pid,
                    start_ticks,
                    ports: intent.ports,
                    instance: intent.instance,
                };
                let ports = spawned.ports;
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
                    metrics.launch_duration.observe(took.as_secs_f64());
                }
                tracing::info!(%id, pid, generation = desired.generation, restart,
                    executable = %desired.spec.executable.display(), "launched process");
                let spec = desired.spec.clone();
                self.start_probing(&id, pid, &spec, ports);
                self.pids.insert(pid, id.clone());
                self.config.usage.track(&id, pid);
                self.set_observed(next, now);
            }
            Outcome::Failed {
                ports,
                error,
                intent,
            } => {
                tracing::error!(%id, %error, "cannot start process");
                if let (Some(leaves), Some(_)) = (&mut self.leaves, intent) {
                    leaves.spawn_failed(&id);
                }
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
                self.set_observed(next, now);
            }
        }
    }

    /// Records `id` as pending for capacity at `now` (the step's time), logging it once.
    fn leave_pending(&mut self, id: &ProcessId, now: UnixMillis) {
        let Some(desired) = self.desired.get(id) else {
            return;
        };
        let max = self.capacity.max().unwrap_or_default();
        let previous = self.observed.get(id);
        if previous.is_none_or(|record| record.phase != Phase::Pending) {
            tracing::warn!(%id, max, "not started: the launcher is at --max-processes; it stays pending until a slot frees");
        }
        let ports = previous.map_or(Ports { grpc: 0, health: 0 }, |record| record.ports);
        let reason = format!("the launcher runs its limit of {max} processes (--max-processes)");
        let next = reconcile::record_pending(desired, previous, ports, reason);
        self.capacity.leave_pending(id);
        if previous != Some(&next) {
            self.set_observed(next, now);
        }
    }

    /// SIGTERM to the process group and to the descendants that left it.
    pub(super) fn stop(
        &mut self,
        id: &ProcessId,
        reason: StopReason,
        grace: Duration,
        now: UnixMillis,
    ) {
        let Some(observed) = self.observed.get(id) else {
            return;
        };
        if let Some(pid) = self.live_pid(id, observed) {
            tracing::info!(%id, pid, ?reason, ?grace, "stopping process: SIGTERM to its process group");
            signal_group(&self.children, &self.adopted, pid, Signal::SIGTERM);
            if let Some(instance) = &observed.instance {
                let identity = Identity::of(id, instance);
                signal_escaped(pid, &self.config.launcher_id, &identity, Signal::SIGTERM);
            }
        }
        let next = reconcile::record_stop_started(observed, reason, grace, now);
        self.set_observed(next, now);
    }

    /// The pid of `id`'s process while it is still `id`'s: once reaped (its exit perhaps not
    /// recorded yet) the pid is detached, and may already be another process's.
    fn live_pid(&self, id: &ProcessId, observed: &ObservedRecord) -> Option<u32> {
        observed.pid.filter(|pid| self.pids.get(pid) == Some(id))
    }

    /// The grace period is over: SIGKILL to the whole tree through the process's cgroup
    /// (`cgroup.kill`) in cgroup mode, else to the process group and to the descendants that
    /// left it; recorded at `now`, the step's time, like every other event of the step.
    pub(super) fn kill(&mut self, id: &ProcessId, now: UnixMillis) {
        let Some(observed) = self.observed.get(id) else {
            return;
        };
        let live = self.live_pid(id, observed);
        let through_leaf = live.filter(|pid| {
            self.leaves
                .as_ref()
                .is_some_and(|leaves| leaves.kill(id, *pid))
        });
        if let Some(pid) = through_leaf {
            tracing::warn!(%id, pid, "grace period over; killed every process of its cgroup");
        } else if let Some(pid) = live {
            tracing::warn!(%id, pid, "grace period over; sending SIGKILL to the process group");
            signal_group(&self.children, &self.adopted, pid, Signal::SIGKILL);
            if let Some(instance) = &observed.instance {
                let identity = Identity::of(id, instance);
                signal_escaped(pid, &self.config.launcher_id, &identity, Signal::SIGKILL);
            }
        }
        let next = reconcile::record_killed(observed);
        self.set_observed(next, now);
    }

    /// Starts the health probes of `pid` when its spec has a health check.
    pub(super) fn start_probing(
        &mut self,
        id: &ProcessId,
        pid: u32,
        spec: &ProcessSpec,
        ports: Ports,
    ) {
        let Some(check) = spec.health_check.clone() else {
            return;
        };
        let env = probe_environment(spec, id, ports, &self.config.launcher_id, |name| {
            std::env::var(name).ok()
        });
        let exec = ExecContext {
            env,
            working_dir: working_dir(spec),
            children: self.children.clone(),
        };
        // Probes wait on the network and on timers: they run on the shared runtime, and only
        // their results come to the loop.
        let _guard = self.side.enter();
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

    pub(super) fn stop_probing(&mut self, id: &ProcessId) {
        if let Some(handle) = self.probes.remove(id) {
            handle.abort();
        }
    }
}
