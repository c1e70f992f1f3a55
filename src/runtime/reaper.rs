//! Reaps children and orphaned descendants on SIGCHLD, and reports the exits of the processes the
//! launcher started. Event-driven: nothing here polls.
//!
//! The launcher is a child subreaper, so descendants whose parent died are reparented to it and
//! reaped here instead of lingering as zombies. A process the launcher started is a process group
//! leader; when it exits, what is left of its group is killed while the leader is still an
//! unreaped zombie, so that its pid (and so the group id) cannot have been reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};

use tokio::sync::oneshot;

use crate::reconcile::ExitStatus;

/// What a pid the launcher started is.
#[derive(Debug)]
pub enum Child {
    /// A supervised process: its exit is reported to the loop.
    Process,
    /// An exec probe: its exit status goes to the probe that waits for it.
    Probe(oneshot::Sender<ExitStatus>),
}

/// The pids the launcher started and has not reaped yet. A spawn holds `spawning` (shared, so
/// spawns run in parallel) from its fork until its pid is recorded; the reaper, before it
/// reaps a pid it does not know, takes `spawning` exclusively (waiting for the spawns under way
/// to record their pids) and looks again, so an exit can never be reaped unrecorded.
#[derive(Debug, Default, Clone)]
pub struct ChildTable {
    pids: Arc<Mutex<HashMap<u32, Child>>>,
    spawning: Arc<RwLock<()>>,
}

/// Held by a spawn from before its fork until its pid is recorded.
pub struct SpawnGuard<'a> {
    _spawning: RwLockReadGuard<'a, ()>,
    table: &'a ChildTable,
}

impl SpawnGuard<'_> {
    /// Records the pid just spawned.
    pub fn record(&self, pid: u32, child: Child) {
        self.table.lock().insert(pid, child);
    }
}

impl ChildTable {
    /// Gives back the room a burst of children grew the table to.
    pub fn shrink_to_fit(&self) {
        self.lock().shrink_to_fit();
    }

    pub fn lock(&self) -> MutexGuard<'_, HashMap<u32, Child>> {
        // The set is updated with single inserts and removes, so a panic elsewhere while holding
        // the lock cannot leave it inconsistent; a poisoned lock is still safe to use.
        self.pids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Begins a spawn: hold the guard until the pid is recorded with it.
    pub fn begin_spawn(&self) -> SpawnGuard<'_> {
        SpawnGuard {
            // Only a panic while holding the lock poisons it; the guarded value is `()`.
            _spawning: self
                .spawning
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            table: self,
        }
    }

    /// Waits until no spawn is under way.
    fn wait_for_spawns(&self) -> RwLockWriteGuard<'_, ()> {
        self.spawning
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The exit of a process the launcher started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildExit {
    pub pid: u32,
    pub status: ExitStatus,
}

/// Reaps every exited child that is ready now. Returns the exits of tracked children; untracked
/// ones (orphaned descendants) are reaped and logged.
pub fn reap_ready(table: &ChildTable) -> Vec<ChildExit> {
    let mut exits = Vec::new();
    loop {
        let peeked = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        let pid = match peeked {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Err(Errno::EINTR) => continue,
            Err(error) => {
                tracing::error!(%error, "waitid failed; exits may be reported late");
                break;
            }
            Ok(status) => match status.pid() {
                Some(pid) => pid,
                None => break,
            },
        };
        let raw_pid = pid.as_raw().unsigned_abs();
        let mut tracked = table.lock();
        let _no_spawn_under_way;
        if !tracked.contains_key(&raw_pid) {
            // Maybe a child whose spawn has not recorded it yet: wait for the spawns under way,
            // then look again (the map's lock is released meanwhile, as spawns need it).
            drop(tracked);
            _no_spawn_under_way = table.wait_for_spawns();
            tracked = table.lock();
        }
        let is_tracked = tracked.contains_key(&raw_pid);
        if is_tracked {
            // The leader is an unreaped zombie, so the group id still names its group.
            match killpg(pid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(error) => {
                    tracing::warn!(pid = raw_pid, %error, "cannot kill the rest of the process group")
                }
            }
        }
        let status = loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        let status = match status {
            Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => ExitStatus::Signal(signal as i32),
            Ok(other) => {
                tracing::warn!(pid = raw_pid, ?other, "unexpected wait status");
                continue;
            }
            // Reaped elsewhere in between (std reaps a child whose exec failed): go on with the
            // other exits, which may include a tracked one whose SIGCHLD was merged with this.
            Err(Errno::ECHILD) => continue,
            Err(error) => {
                tracing::warn!(pid = raw_pid, %error, "cannot reap an exited child");
                break;
            }
        };
        match tracked.remove(&raw_pid) {
            Some(Child::Process) => exits.push(ChildExit {
                pid: raw_pid,
                status,
            }),
            Some(Child::Probe(waiting)) => {
                // The probe may have given up already; then nobody needs the status.
                let _ = waiting.send(status);
            }
            None => {
                tracing::debug!(pid = raw_pid, %status, "reaped an orphaned descendant");
            }
        }
    }
    exits
}

/// Makes the launcher the reaper of its orphaned descendants.
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}
