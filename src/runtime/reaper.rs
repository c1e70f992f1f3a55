//! Reaps children and orphaned descendants on SIGCHLD, and reports the exits of the processes the
//! launcher started. Event-driven: nothing here polls.
//!
//! Every child the launcher starts is watched through its pidfd, in an epoll set of the table's
//! own: on SIGCHLD, the set names the children that exited, each reaped by its pid, so a reap
//! costs O(exits) whatever the number of children. (`waitid(P_ALL)` walks the kernel's list of
//! all the launcher's children on every call: about 0.1 ms per thousand.) Orphaned descendants
//! have no pidfd; the sweep (`reap_all`) finds them, and the loop runs it at most every
//! `SWEEP_GAP` after a SIGCHLD, off the path of a restart.
//!
//! The launcher is a child subreaper, so descendants whose parent died are reparented to it and
//! reaped here instead of lingering as zombies. A process the launcher started is a process group
//! leader; when it exits, what is left of its group is killed while the leader is still an
//! unreaped zombie, so that its pid (and so the group id) cannot have been reused.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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

/// The least time between two sweeps for exits that no pidfd names (orphaned descendants): a
/// zombie orphan waits at most this long to be reaped, and a burst of exits costs one walk of the
/// launcher's children per this time, not one per exit.
pub const SWEEP_GAP: Duration = Duration::from_millis(100);

/// A child the launcher started and has not reaped yet.
#[derive(Debug)]
pub struct Tracked {
    pub child: Child,
    /// Its pidfd, in the table's epoll set while it is open; none where it could not be had (the
    /// sweep finds that child's exit).
    pidfd: Option<OwnedFd>,
}

/// The pids the launcher started and has not reaped yet. A spawn holds `spawning` (shared, so
/// spawns run in parallel) from its fork until its pid is recorded; the reaper, before it
/// reaps a pid it does not know, takes `spawning` exclusively (waiting for the spawns under way
/// to record their pids) and looks again, so an exit can never be reaped unrecorded.
#[derive(Debug, Clone)]
pub struct ChildTable {
    pids: Arc<Mutex<HashMap<u32, Tracked>>>,
    spawning: Arc<RwLock<()>>,
    /// The pidfds of the children in `pids`, each with its pid as data: readable once it exited.
    /// None where no epoll instance could be made: then every exit is found by the sweep.
    exits: Option<Arc<Epoll>>,
}

impl Default for ChildTable {
    fn default() -> ChildTable {
        let exits = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|error| {
                tracing::warn!(%error, "cannot make an epoll set for exits; every exit will be found by walking all children");
            })
            .ok()
            .map(Arc::new);
        ChildTable {
            pids: Arc::default(),
            spawning: Arc::default(),
            exits,
        }
    }
}

/// Held by a spawn from before its fork until its pid is recorded.
pub struct SpawnGuard<'a> {
    _spawning: RwLockReadGuard<'a, ()>,
    table: &'a ChildTable,
}

impl SpawnGuard<'_> {
    /// Records the pid just spawned, with its pidfd when it has one (its exit is then found
    /// through it).
    pub fn record(&self, pid: u32, child: Child, pidfd: Option<OwnedFd>) {
        let pidfd = pidfd.and_then(|pidfd| {
            let exits = self.table.exits.as_ref()?;
            match exits.add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, u64::from(pid))) {
                Ok(()) => Some(pidfd),
                Err(error) => {
                    tracing::warn!(pid, %error, "cannot watch a child's pidfd; its exit will be found by the sweep");
                    None
                }
            }
        });
        self.table.lock().insert(pid, Tracked { child, pidfd });
    }
}

impl ChildTable {
    /// Gives back the room a burst of children grew the table to.
    pub fn shrink_to_fit(&self) {
        self.lock().shrink_to_fit();
    }

    pub fn lock(&self) -> MutexGuard<'_, HashMap<u32, Tracked>> {
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

    /// Whether exits are found through pidfds (else only by the sweep).
    pub fn watches_exits(&self) -> bool {
        self.exits.is_some()
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

/// Reaps the tracked children whose pidfd says they exited, each by its pid: O(exits), whatever
/// the number of children. Returns the exits of supervised processes (a probe's goes to its
/// probe).
pub fn reap_exited(table: &ChildTable) -> Vec<ChildExit> {
    let mut exits = Vec::new();
    let Some(epoll) = &table.exits else {
        return exits;
    };
    let mut ready = [EpollEvent::empty(); 64];
    loop {
        let count = match epoll.wait(&mut ready, EpollTimeout::ZERO) {
            Ok(count) => count,
            Err(Errno::EINTR) => continue,
            Err(error) => {
                tracing::error!(%error, "cannot read which children exited; the sweep will find them");
                break;
            }
        };
        for event in &ready[..count] {
            let Ok(pid) = u32::try_from(event.data()) else {
                continue;
            };
            let mut tracked = table.lock();
            if !tracked.contains_key(&pid) {
                // Reaped by the sweep since (its pidfd, closed, left the set).
                continue;
            }
            match reap_group_leader(pid) {
                Reaped::Exited(status) => {
                    if let Some(entry) = tracked.remove(&pid) {
                        finish(pid, entry.child, status, &mut exits);
                    }
                }
                Reaped::Gone => {
                    tracked.remove(&pid);
                }
                Reaped::NotYet => {
                    // A readable pidfd whose process cannot be reaped yet would be reported
                    // again at once: out of the set, and left to the sweep.
                    if let Some(pidfd) = tracked.get_mut(&pid).and_then(|entry| entry.pidfd.take())
                    {
                        let _ = epoll.delete(&pidfd);
                    }
                }
            }
        }
        if count < ready.len() {
            break;
        }
    }
    exits
}

/// What reaping a tracked child found.
enum Reaped {
    Exited(ExitStatus),
    /// Reaped elsewhere already (nothing left to wait for).
    Gone,
    /// Not exited after all.
    NotYet,
}

/// Kills what is left of the process group of `pid` (a tracked child that exited: an unreaped
/// zombie, so the group id still names its group), then reaps it.
fn reap_group_leader(pid: u32) -> Reaped {
    let Ok(raw) = i32::try_from(pid) else {
        return Reaped::Gone;
    };
    let leader = Pid::from_raw(raw);
    match killpg(leader, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pid, %error, "cannot kill the rest of the process group")
        }
    }
    loop {
        return match waitpid(leader, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::EINTR) => continue,
            Ok(WaitStatus::Exited(_, code)) => Reaped::Exited(ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                Reaped::Exited(ExitStatus::Signal(signal as i32))
            }
            Ok(WaitStatus::StillAlive) => Reaped::NotYet,
            Ok(other) => {
                tracing::warn!(pid, ?other, "unexpected wait status");
                Reaped::NotYet
            }
            Err(Errno::ECHILD) => Reaped::Gone,
            Err(error) => {
                tracing::warn!(pid, %error, "cannot reap an exited child");
                Reaped::NotYet
            }
        };
    }
}

/// Hands a reaped child's exit to whoever waits for it.
fn finish(pid: u32, child: Child, status: ExitStatus, exits: &mut Vec<ChildExit>) {
    match child {
        Child::Process => exits.push(ChildExit { pid, status }),
        Child::Probe(waiting) => {
            // The probe may have given up already; then nobody needs the status.
            let _ = waiting.send(status);
        }
    }
}

/// Reaps every exited child that is ready now, tracked or not, walking all the launcher's
/// children (O(children) in the kernel per call: for orphaned descendants, which have no pidfd,
/// and where pidfds cannot be watched). Returns the exits of tracked children; untracked ones
/// (orphaned descendants) are reaped and logged.
pub fn reap_all(table: &ChildTable) -> Vec<ChildExit> {
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
            Some(entry) => finish(raw_pid, entry.child, status, &mut exits),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs::File;
    use std::os::fd::AsFd;
    use std::time::Instant;

    use super::super::vfork_spawn::{self, ChildSetup, Program};
    use super::*;

    /// Sleepers started into `table` the way the launcher starts processes; killed and reaped
    /// when the test ends, however it ends (a pid the test reaped is skipped).
    struct Sleepers {
        table: ChildTable,
        pids: Vec<u32>,
    }

    impl Sleepers {
        fn start(table: &ChildTable, count: usize) -> Sleepers {
            let dev_null = File::open("/dev/null").unwrap();
            let setup = ChildSetup {
                stdin: dev_null.as_fd(),
                stdout: dev_null.as_fd(),
                stderr: dev_null.as_fd(),
                data_limit: None,
                cgroup_procs: None,
                marker: None,
            };
            let env: BTreeMap<String, String> = BTreeMap::new();
            let program = Program::new(
                std::path::Path::new("/bin/sleep"),
                ["30"],
                &env,
                std::path::Path::new("/"),
            )
            .unwrap();
            let mut pids = Vec::new();
            for _ in 0..count {
                let spawning = table.begin_spawn();
                let started = vfork_spawn::start(&program, &setup, &spawning).unwrap();
                spawning.record(started.pid, Child::Process, Some(started.pidfd));
                pids.push(started.pid);
            }
            Sleepers {
                table: table.clone(),
                pids,
            }
        }
    }

    impl Drop for Sleepers {
        fn drop(&mut self) {
            let tracked = self.table.lock();
            for pid in &self.pids {
                if tracked.contains_key(pid) {
                    let pid = Pid::from_raw(*pid as i32);
                    // Unreaped (in the table), so the pid is still the sleeper's.
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                }
            }
        }
    }

    #[test]
    fn an_exit_is_found_through_its_pidfd_and_only_that_child_is_reaped() {
        let table = ChildTable::default();
        assert!(table.watches_exits());
        let sleepers = Sleepers::start(&table, 3);
        assert!(reap_exited(&table).is_empty());
        let killed = sleepers.pids[1];
        nix::sys::signal::kill(Pid::from_raw(killed as i32), Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let exits = loop {
            let exits = reap_exited(&table);
            if !exits.is_empty() || Instant::now() > deadline {
                break exits;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(
            exits,
            vec![ChildExit {
                pid: killed,
                status: ExitStatus::Signal(libc::SIGKILL),
            }]
        );
        let tracked: Vec<u32> = {
            let mut pids: Vec<u32> = table.lock().keys().copied().collect();
            pids.sort();
            pids
        };
        let mut alive = vec![sleepers.pids[0], sleepers.pids[2]];
        alive.sort();
        assert_eq!(tracked, alive);
        // Reported once: the pidfd left the set with its entry.
        assert!(reap_exited(&table).is_empty());
    }
}
