//! The reconcile loop on its own thread: a closed `Event` enum in, one pass of `plan` over the
//! ids the events touched, actions out. The loop runs on a thread (and a single-threaded async
//! runtime) of its own, so that a slow disk, a big stop or a burst of RPCs on the shared
//! workers never delays a restart, and its own work never delays an RPC.

use std::future::Future;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use super::cgroup::CgroupTree;
use super::reaper::{become_subreaper, ExitsReadiness};
use super::supervisor::Supervisor;
use crate::clock::Clock;
use crate::error_chain::Chain;
use crate::reconcile::{Backoff, LimitMode, ProcessId};
use crate::store::{Store, StoreError};
use crate::telemetry::{Metrics, Readiness, UsageBoard};

/// Everything that wakes the loop besides SIGCHLD, timers, the resync tick and shutdown.
#[derive(Debug)]
pub enum Event {
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
    /// The processes of this launcher found by an orphan scan (off the loop's thread).
    OrphanScan(Vec<(u32, super::signals::Identity)>),
    /// A sweep for what ended processes left behind is done (the next may start).
    InheritedSwept,
    /// The store can be called again without waiting: a release of its memory is over, or it
    /// was opened again after a failed reopen. What the loop left for it is taken up.
    StoreUsable,
}

/// How long the follow-up of a pass that started processes waits: the pass's writes and their
/// flush, and the sweeps for orphans and for what ended processes left behind. On a host of a
/// few cores the processes just started need a core for their exec, and a restart is what
/// someone waits for; the bookkeeping is not, and the spawn intents in the journal already
/// cover a crash meanwhile (a restarted launcher adopts what they name). On the 2-core machine
/// of BENCHMARKS.md, the pass's flush alone wakes sled's seven writer threads.
pub const FOLLOW_UP_DELAY: Duration = Duration::from_millis(3);

/// How many desired-record notices one turn of the loop reads back (each a store read of
/// 10–30 µs): the rest wait for the next turn, after the exits and the pass of these.
const DESIRED_CHANGES_PER_TURN: usize = 64;

#[derive(Clone)]
pub struct RuntimeConfig {
    /// Children's log files go to `<data_dir>/logs`.
    pub data_dir: PathBuf,
    /// The launcher's cgroup v2 subtree, set up (`cgroup::detect_host_limits`): `Some` in
    /// cgroup mode, `None` in rlimit mode.
    pub cgroup_tree: Option<CgroupTree>,
    pub launcher_id: String,
    pub port_range: RangeInclusive<u16>,
    /// A full reconcile of every id runs this often even without events.
    pub resync_interval: Duration,
    pub backoff: Backoff,
    /// New processes beyond this many are left pending; `None` is no limit.
    pub max_processes: Option<u32>,
    /// Restarts allowed per second across the host; 0 is no limit.
    pub max_restarts_per_second: u32,
    /// Told which pid each live process has, for usage sampled on demand.
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
    /// systemd's watchdog, pinged from the loop itself, when systemd asks for one.
    pub watchdog: Option<Watchdog>,
    /// The loop's clock; tests may fix it.
    pub clock: Clock,
    /// How long the follow-up of a pass that started processes waits (`FOLLOW_UP_DELAY`; tests
    /// with a fixed clock use zero).
    pub follow_up_delay: Duration,
    /// The store held, when it was opened, desired records that spec files declared in an
    /// earlier run: those wait for the spec directory's scan (`SourcesRead::at_start`).
    pub files_declared_earlier: bool,
    /// True while prism-admin has been unreachable for longer than `--admin-disconnect-grace`:
    /// its processes are kept down until it is back. `None` standalone.
    pub admin_suspended: Option<watch::Receiver<bool>>,
}

/// What the loop pings systemd's watchdog with, and how often.
#[derive(Debug, Clone)]
pub struct Watchdog {
    pub notifier: std::sync::Arc<crate::systemd::Notifier>,
    pub interval: Duration,
}

impl RuntimeConfig {
    /// What the host enforces resource limits with.
    pub fn limit_mode(&self) -> LimitMode {
        super::cgroup::limit_mode_of(self.cgroup_tree.as_ref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the children's log directory")]
    LogDir(#[from] crate::private_fs::PrivateFsError),
    #[error("cannot listen for SIGCHLD, so exits could not be detected")]
    ChildSignal(#[source] std::io::Error),
    #[error("cannot start the reconcile loop's thread")]
    LoopThread(#[source] std::io::Error),
    #[error("the reconcile loop's thread ended without an answer (it panicked)")]
    LoopPanicked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the reconcile loop on a thread of its own until `shutdown` completes, then stops every
/// child (each with its grace period) and returns. Side work that waits (health probes, orphan
/// terminations) and blocking work that is not the loop's (log rotation, orphan scans) runs on
/// the runtime `run` is called from.
pub async fn run(
    store: Arc<Store>,
    config: RuntimeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    let side = tokio::runtime::Handle::current();
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("reconcile-loop".to_string())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(RuntimeError::LoopThread)
                .and_then(|runtime| runtime.block_on(run_loop(store, config, side, shutdown)));
            let _ = done.send(result);
        })
        .map_err(RuntimeError::LoopThread)?;
    finished.await.unwrap_or(Err(RuntimeError::LoopPanicked))
}

async fn run_loop(
    store: Arc<Store>,
    config: RuntimeConfig,
    side: tokio::runtime::Handle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let log_dir = config.data_dir.join("logs");
    crate::private_fs::ensure_private_dir(&log_dir, crate::private_fs::PRIVATE_DIR_MODE)?;
    if let Err(error) = become_subreaper() {
        tracing::warn!(%error, "cannot become a child subreaper; orphaned grandchildren will be reaped by init instead");
    }
    // A pidfd per process: room for them before anything is spawned.
    match super::pidfd::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "limit on open files"),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the limit on open files; it bounds the number of processes")
        }
    }
    // Listening for SIGCHLD before anything is spawned, so no exit can go unnoticed.
    let mut sigchld = signal(SignalKind::child()).map_err(RuntimeError::ChildSignal)?;
    let mut sweep = SweepSchedule::after_signals(config.follow_up_delay);
    let mut desired_changes = store.subscribe();
    let (events, mut receiver) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor::new(store, config, log_dir, events, side);
    // A watched child's exit wakes the loop through its pidfd, on this thread. SIGCHLD still
    // comes for every exit, orphans' too, but the kernel hands it to whichever thread of the
    // launcher it picks, which then has to wake this one.
    let exits = match supervisor.children.exits_readiness() {
        Some(Ok(exits)) => Some(exits),
        Some(Err(error)) => {
            tracing::warn!(%error, "cannot wait on the children's pidfds; exits will be noticed through SIGCHLD");
            None
        }
        None => None,
    };
    let now = supervisor.now();
    supervisor.recover_previous_run(now)?;
    supervisor.resync()?;
    supervisor.forget_stray_histories();
    // Before the first pass: a launcher that starts while prism-admin's processes are suspended
    // (the last run stopped them, the link is still down) must not start them for a moment.
    let mut admin_suspended = supervisor.config.admin_suspended.clone();
    if let Some(suspended) = &mut admin_suspended {
        let now_suspended = *suspended.borrow_and_update();
        supervisor.set_admin_suspended(now_suspended);
    }
    supervisor.reconcile(supervisor.now());
    supervisor.config.readiness.loop_synced();
    supervisor.request_orphan_scan();

    let mut specs_read = supervisor.config.readiness.specs_read();
    let mut orphan_scan = tokio::time::interval(supervisor.config.orphan_scan_interval);
    orphan_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    orphan_scan.tick().await;
    let mut resync = tokio::time::interval(supervisor.config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    // Pinged from the loop's own turns, so that a loop that stops turning stops the pings.
    let mut watchdog = supervisor.config.watchdog.clone().map(|watchdog| {
        let mut ticks = tokio::time::interval(watchdog.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (ticks, watchdog.notifier)
    });
    tokio::pin!(shutdown);
    loop {
        let timer = supervisor.next_timer();
        let forget_histories = supervisor.histories_forgotten_in(supervisor.now());
        tokio::select! {
            // Shutdown, then exits: a restart is the most urgent thing the loop does.
            biased;
            () = &mut shutdown => break,
            () = child_exited(exits.as_ref()), if exits.is_some() => supervisor.reap(),
            Some(()) = sigchld.recv() => {
                supervisor.reap();
                // The signal may have been for an orphan too (signals merge): a sweep soon. A
                // steady stream of exits keeps this branch ready before the sweep's, so a sweep
                // long overdue runs here.
                let now = tokio::time::Instant::now();
                sweep.request(now);
                if sweep.is_overdue(now) {
                    let more = supervisor.sweep();
                    sweep.done(now, more);
                }
            }
            () = sweep.wait(), if sweep.is_requested() => {
                let more = supervisor.sweep();
                sweep.done(tokio::time::Instant::now(), more);
            }
            // The loop's events (an adopted process's exit, probe results, the store usable
            // again) and the end of the spec directory's scan before the desired-change
            // notices, which a mass change queues by the thousand and a turn reads 64 of.
            Some(event) = receiver.recv() => {
                supervisor.handle(event);
                while let Ok(event) = receiver.try_recv() {
                    supervisor.handle(event);
                }
            }
            Ok(read) = specs_read.wait_for(|read| *read), if !supervisor.spec_directory_scan_told() => {
                drop(read);
                supervisor.spec_directory_read();
            }
            Some(id) = desired_changes.recv() => {
                supervisor.desired_changed(id);
                // At most a turn's worth: a thousand notices (a mass delete) take the loop
                // milliseconds to read back, and exits come first between two turns.
                for _ in 1..DESIRED_CHANGES_PER_TURN {
                    match desired_changes.try_recv() {
                        Ok(id) => supervisor.desired_changed(id),
                        Err(_) => break,
                    }
                }
            }
            changed = admin_suspension_changed(&mut admin_suspended), if admin_suspended.is_some() => {
                match changed {
                    Some(suspended) => supervisor.set_admin_suspended(suspended),
                    // The admin client is gone (shutdown): nothing more to hear.
                    None => admin_suspended = None,
                }
            }
            () = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => {
                supervisor.timers_due();
            }
            () = watchdog_tick(&mut watchdog), if watchdog.is_some() => {}
            _ = resync.tick() => {
                if let Err(error) = supervisor.periodic_resync() {
                    tracing::error!(error = %Chain(&error), "resync could not read the desired state; keeping the last known state");
                }
                supervisor.rotate_logs();
                supervisor.retry_leaf_removals();
            }
            _ = orphan_scan.tick() => supervisor.request_orphan_scan(),
            // Work left by the last pass: taken up again once nothing above is ready. A yield,
            // not a ready future: the runtime polls its I/O driver and timers before coming
            // back, so that what became ready meanwhile is seen between two steps of the work.
            () = tokio::task::yield_now(), if supervisor.has_work() => {}
            // Last: a chore of a quiet loop, which no work waits for.
            () = tokio::time::sleep(forget_histories.unwrap_or_default()), if forget_histories.is_some() => {
                supervisor.forget_quiet_histories();
            }
        }
        supervisor.reconcile(supervisor.now());
    }
    supervisor.shut_down(&mut sigchld, &mut receiver).await;
    Ok(())
}

/// Waits until a watched child's pidfd says it exited (never ends without the set, nor once the
/// loop's runtime is going away: SIGCHLD is still heard).
async fn child_exited(exits: Option<&ExitsReadiness>) {
    match exits {
        Some(exits) if exits.exited().await.is_ok() => {}
        _ => std::future::pending().await,
    }
}

/// Waits for the admin client to say whether prism-admin's processes are suspended; `None`
/// once it is gone (never ends without one).
async fn admin_suspension_changed(suspended: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match suspended {
        Some(receiver) => match receiver.changed().await {
            Ok(()) => Some(*receiver.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Waits for the watchdog's next tick and pings systemd (never ends without a watchdog).
async fn watchdog_tick(
    watchdog: &mut Option<(
        tokio::time::Interval,
        std::sync::Arc<crate::systemd::Notifier>,
    )>,
) {
    match watchdog {
        Some((ticks, notifier)) => {
            ticks.tick().await;
            notifier.notify("WATCHDOG=1");
        }
        None => std::future::pending().await,
    }
}

/// When the loop next sweeps for exits no pidfd names (orphans): `delay` after a SIGCHLD
/// (`FOLLOW_UP_DELAY`: the restart that the signal's exit may bring gets a core first), and
/// never within `reaper::SWEEP_GAP` of the last sweep.
#[derive(Debug)]
struct SweepSchedule {
    delay: Duration,
    last: Option<tokio::time::Instant>,
    due: Option<tokio::time::Instant>,
}

impl SweepSchedule {
    fn after_signals(delay: Duration) -> SweepSchedule {
        SweepSchedule {
            delay,
            last: None,
            due: None,
        }
    }

    fn request(&mut self, now: tokio::time::Instant) {
        if self.due.is_none() {
            let earliest = self
                .last
                .map_or(now, |last| last + super::reaper::SWEEP_GAP);
            self.due = Some(earliest.max(now + self.delay));
        }
    }

    fn is_requested(&self) -> bool {
        self.due.is_some()
    }

    /// Completes when the sweep is due (never without a request).
    async fn wait(&self) {
        match self.due {
            Some(due) => tokio::time::sleep_until(due).await,
            None => std::future::pending().await,
        }
    }

    /// Whether the requested sweep is due since more than a gap.
    fn is_overdue(&self, now: tokio::time::Instant) -> bool {
        self.due
            .is_some_and(|due| now >= due + super::reaper::SWEEP_GAP)
    }

    /// A sweep ran at `now`; one that stopped at its cap (`more`) asks for the next at once.
    fn done(&mut self, now: tokio::time::Instant, more: bool) {
        self.last = Some(now);
        self.due = more.then_some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::reaper::SWEEP_GAP;
    use super::*;

    #[test]
    fn sweeps_come_after_a_signal_at_most_every_gap_and_at_once_after_a_capped_one() {
        let start = tokio::time::Instant::now();
        let mut sweep = SweepSchedule::after_signals(FOLLOW_UP_DELAY);
        assert!(!sweep.is_requested());
        sweep.request(start);
        assert_eq!(
            sweep.due,
            Some(start + FOLLOW_UP_DELAY),
            "the first sweep is due once a restart had the time to begin"
        );
        let start = start + FOLLOW_UP_DELAY;
        sweep.done(start, false);
        assert!(!sweep.is_requested());
        let soon = start + SWEEP_GAP / 4;
        sweep.request(soon);
        assert_eq!(
            sweep.due,
            Some(start + SWEEP_GAP),
            "then not within a gap of the last"
        );
        sweep.request(soon + SWEEP_GAP / 4);
        assert_eq!(
            sweep.due,
            Some(start + SWEEP_GAP),
            "requests while one is due merge"
        );
        assert!(!sweep.is_overdue(start + SWEEP_GAP));
        assert!(sweep.is_overdue(start + SWEEP_GAP * 2));
        let later = start + SWEEP_GAP * 2;
        sweep.done(later, true);
        assert_eq!(
            sweep.due,
            Some(later),
            "a capped sweep asks for the next at once"
        );
    }
}
