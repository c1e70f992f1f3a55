//! The launcher's shutdown: every live process is stopped with its grace period (or left
//! running with `--keep-processes`), exits are awaited as they come (children through SIGCHLD,
//! adopted processes through their pidfds), and the wait is bounded by the schedule `reconcile`
//! decides. In cgroup mode the processes' cgroups are removed after (kept with the processes
//! under `--keep-processes`, for the next launcher to find).

use std::time::Duration;

use tokio::signal::unix::Signal as SignalStream;
use tokio::sync::mpsc;

use super::event_loop::Event;
use super::supervisor::Supervisor;
use crate::error_chain::Chain;
use crate::reconcile::{stop_grace, Action, ProcessId, ShutdownSchedule, StopReason};

/// Extra time given after the longest grace period before shutdown gives up on a child.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Stops every child with its grace period, waiting at most for the longest grace plus a
    /// margin.
    pub async fn shut_down(
        &mut self,
        sigchld: &mut SignalStream,
        receiver: &mut mpsc::UnboundedReceiver<Event>,
    ) {
        let started = self.now();
        // A store left closed by a failed reopen is tried once more, here on the loop's thread:
        // nothing else waits for the loop now, and the last records are worth the moment.
        if let Err(error) = self.store.open_again() {
            tracing::error!(error = %Chain(&error), "the store is closed; what the shutdown changes is not recorded, and the next start finds the processes from the records before it");
        }
        if self.config.keep_processes {
            let running = self.live_ids().len();
            tracing::info!(processes = running, "shutting down with --keep-processes: leaving every process running for the next launcher to adopt");
            self.persist();
            return;
        }
        let live = self.live_ids();
        // The process groups of our children: their members are killed when the leader is
        // reaped, and become zombies of the launcher (the subreaper) a moment later.
        let groups: Vec<u32> = self
            .children
            .lock()
            .iter()
            .filter(|(_, tracked)| matches!(tracked.child, super::reaper::Child::Process))
            .map(|(pid, _)| *pid)
            .collect();
        tracing::info!(
            processes = live.len(),
            "shutting down: stopping every process"
        );
        let schedule = ShutdownSchedule::new(self.observed.values(), started, SHUTDOWN_MARGIN);
        for id in &live {
            let Some(observed) = self.observed.get(id) else {
                continue;
            };
            if observed.phase != crate::reconcile::Phase::Stopping {
                let grace = stop_grace(StopReason::Shutdown, observed.spec.termination_grace, None);
                self.stop(id, StopReason::Shutdown, grace, started);
            }
        }
        self.persist();
        let mut killed_leftovers = Vec::new();
        loop {
            // Exits that already happened first, so that a shutdown never waits for a timer
            // while the processes are gone.
            self.reap();
            let now = self.now();
            self.record_planned_exits(usize::MAX, now);
            killed_leftovers.extend(self.kill_inherited_now());
            let alive = self.live_ids();
            if alive.is_empty() {
                break;
            }
            if now >= schedule.give_up_at {
                tracing::error!(
                    remaining = alive.len(),
                    "shutdown timed out: SIGKILLed processes have not exited; leaving them"
                );
                break;
            }
            for id in &alive {
                let due = self
                    .observed
                    .get(id)
                    .is_some_and(|record| schedule.kill_due(record, now));
                if due {
                    self.execute(Action::Kill { id: id.clone() }, now);
                }
            }
            self.persist();
            let wake = schedule.next_wake(alive.iter().filter_map(|id| self.observed.get(id)));
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            tokio::select! {
                Some(()) = sigchld.recv() => {}
                Some(event) = receiver.recv() => {
                    // Adopted processes end through their pidfds; probes and scans no longer
                    // matter.
                    if let Event::AdoptedExited { .. } = event {
                        self.handle(event);
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.reap_leftovers(&killed_leftovers, groups, sigchld, schedule.give_up_at)
            .await;
        self.persist();
        if let Some(leaves) = &mut self.leaves {
            // On the loop's thread, blocking: nothing else runs on it any more, and the wait for
            // killed processes to leave their cgroups is bounded.
            leaves.remove_all();
        }
    }

    /// Waits, until `give_up_at` at the latest, for the descendants it `killed` (left behind by
    /// their process, reparented to the launcher as the subreaper) and the members of the
    /// process `groups` of its children (killed with their leader) to be reaped: they die at
    /// once but stay zombies until reaped, and a launcher that exited first would leave them to
    /// init, still in their process group for a moment after it is gone.
    async fn reap_leftovers(
        &mut self,
        killed: &[u32],
        mut groups: Vec<u32>,
        sigchld: &mut SignalStream,
        give_up_at: crate::reconcile::UnixMillis,
    ) {
        loop {
            // Killed descendants are orphans, with no pidfd: the sweep reaps them.
            self.sweep();
            // A killed grandchild is reparented to the launcher only once its parent is gone,
            // so what is looked for is any of them still in /proc, zombie or not. (A reused pid
            // costs at most the wait until `give_up_at`.)
            // A group is empty once its last member, zombie or not, is reaped; while a member
            // uses its id, the id cannot name another group. Once seen empty it is not asked
            // again, as the id may then be reused.
            groups.retain(|group| {
                i32::try_from(*group).is_ok_and(|group| {
                    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), None).is_ok()
                })
            });
            let remaining = !groups.is_empty()
                || killed
                    .iter()
                    .any(|pid| super::procfs::start_ticks(*pid).is_some());
            if !remaining {
                return;
            }
            let now = self.now();
            if now >= give_up_at {
                return;
            }
            let wait = give_up_at.saturating_duration_since(now);
            tokio::select! {
                Some(()) = sigchld.recv() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The ids whose process may still be alive.
    fn live_ids(&self) -> Vec<ProcessId> {
        self.observed
            .values()
            .filter(|record| record.phase.has_live_process())
            .map(|record| record.id.clone())
            .collect()
    }
}
