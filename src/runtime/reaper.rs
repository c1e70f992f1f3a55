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
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

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

/// The most exits one sweep reaps: each costs a walk of the launcher's children, so a sweep
/// that finds more asks for another at once rather than hold the loop.
pub const SWEEP_MAX_REAPS: usize = 256;

/// A child the launcher started and has not reaped yet.
#[derive(Debug)]
pub struct Tracked {
    pub child: Child,
    /// Its pidfd in the table's epoll set; none where it could not be had or watched, and then
    /// the child counts in `unwatched` and the sweep finds its exit.
    watch: Option<Watch>,
    /// The table's count of children without a watch, while this one is among them.
    unwatched: Option<Arc<AtomicUsize>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(unwatched) = self.unwatched.take() {
            unwatched.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A child's pidfd in the table's epoll set, with the token its events carry (its pid in the
/// low 32 bits, a number unique in the table in the high ones). Taken out of the set when
/// dropped: closing the pidfd is not enough while a copy of the descriptor lives in another
/// process's table (a spawn's child before its exec), and the set would then go on reporting
/// the old token.
#[derive(Debug)]
struct Watch {
    pidfd: OwnedFd,
    exits: Arc<Epoll>,
    token: u64,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Fails only when it is not in the set any more, which is what is wanted.
        let _ = self.exits.delete(&self.pidfd);
    }
}

/// The pids the launcher started and has not reaped yet. A spawn holds `spawning` (shared, so
/// spawns run in parallel) from its fork until its pid is recorded; the reaper, before it
/// reaps a pid it does not know, takes `spawning` exclusively (waiting for the spawns under way
/// to record their pids) and looks again, so an exit can never be reaped unrecorded.
#[derive(Debug, Clone)]
pub struct ChildTable {
    pids: Arc<Mutex<HashMap<u32, Tracked>>>,
    spawning: Arc<RwLock<()>>,
    /// The pidfds of the children in `pids` (one-shot: an exit is reported once): readable once
    /// the child exited. None where no epoll instance could be made: then every exit is found by
    /// the sweep.
    exits: Option<Arc<Epoll>>,
    /// Children in `pids` without a watched pidfd: while there are any, every reap sweeps too.
    unwatched: Arc<AtomicUsize>,
    /// The next watch's number (the high half of its token).
    next_watch: Arc<AtomicU32>,
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
            unwatched: Arc::default(),
            next_watch: Arc::default(),
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
        // Under the table's lock, so that the reaper cannot see the event before the entry.
        let mut tracked = self.table.lock();
        let watch = pidfd.and_then(|pidfd| self.table.watch(pid, pidfd));
        let entry = self.table.tracked(child, watch);
        tracked.insert(pid, entry);
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

    /// The epoll set of the children's pidfds, registered with the current async runtime to be
    /// waited on (`ExitsReadiness::exited`). None where there is no set (every exit is then
    /// found by the sweep); an error when the runtime refuses it.
    pub fn exits_readiness(&self) -> Option<std::io::Result<ExitsReadiness>> {
        let set = EpollSet(self.exits.clone()?);
        // SAFETY: `EpollSet` holds the epoll set's `OwnedFd` (through an `Arc`), so its
        // descriptor stays open and unchanged for as long as the `AsyncFd` holding it lives.
        let registered = unsafe { AsyncFd::register_with_interest(set, Interest::READABLE) };
        Some(registered.map(ExitsReadiness).map_err(std::io::Error::from))
    }

    /// Whether a watched child's exit waits to be reaped: one `poll` of the epoll set, which
    /// takes nothing from it (`reap_exited` does). False where there is no set.
    pub fn exit_waiting(&self) -> bool {
        let Some(exits) = &self.exits else {
            return false;
        };
        let mut set = libc::pollfd {
            fd: exits.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, owned by this frame for the call, on a descriptor the `Arc`
        // keeps open; a timeout of 0 returns at once.
        let ready = unsafe { libc::poll(&mut set, 1, 0) };
        ready > 0 && set.revents & libc::POLLIN != 0
    }

    /// Whether every child's exit is found through its pidfd (else a reap sweeps too).
    pub fn watches_every_exit(&self) -> bool {
        self.exits.is_some() && self.unwatched.load(Ordering::Relaxed) == 0
    }

    /// `pidfd` in the epoll set, for `pid`; none (with a warning) where it cannot be.
    fn watch(&self, pid: u32, pidfd: OwnedFd) -> Option<Watch> {
        let exits = self.exits.as_ref()?;
        let number = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let token = (u64::from(number) << 32) | u64::from(pid);
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, token);
        match exits.add(pidfd.as_fd(), event) {
            Ok(()) => Some(Watch {
                pidfd,
                exits: exits.clone(),
                token,
            }),
            Err(error) => {
                tracing::warn!(pid, %error, "cannot watch a child's pidfd; its exit will be found by the sweep");
                None
            }
        }
    }

    /// An entry for `child`, counted among the unwatched when it has no watch.
    fn tracked(&self, child: Child, watch: Option<Watch>) -> Tracked {
        let unwatched = watch.is_none().then(|| {
            self.unwatched.fetch_add(1, Ordering::Relaxed);
            self.unwatched.clone()
        });
        Tracked {
            child,
            watch,
            unwatched,
        }
    }

    /// Waits until no spawn is under way.
    fn wait_for_spawns(&self) -> RwLockWriteGuard<'_, ()> {
        self.spawning
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The children's exits as something an event loop can wait on: the table's epoll set, which is
/// readable while a watched child's pidfd is. The loop wakes from it on the exit itself, not on
/// the SIGCHLD that comes with it, which the kernel may hand to another thread first.
#[derive(Debug)]
pub struct ExitsReadiness(AsyncFd<EpollSet>);

impl ExitsReadiness {
    /// Waits until a watched child's pidfd says it exited. The readiness is taken before the
    /// caller reaps, so that an exit during the reap wakes the next wait. An error only when
    /// the runtime is going away.
    pub async fn exited(&self) -> std::io::Result<()> {
        self.0.readable().await?.clear_ready();
        Ok(())
    }
}

/// The table's epoll set as a descriptor for the async runtime's registration.
#[derive(Debug)]
struct EpollSet(Arc<Epoll>);

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
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
            let token = event.data();
            // The low half of a token is the pid (`ChildTable::watch`).
            let pid = (token & u64::from(u32::MAX)) as u32;
            let mut tracked = table.lock();
            // Only the watch that carries this token: a stale event (of a child reaped since,
            // whose pid may now be another child's) names no entry's watch.
            let reaped = match tracked
                .get(&pid)
                .and_then(|entry| entry.watch.as_ref())
                .filter(|watch| watch.token == token)
            {
                Some(watch) => reap_group_leader(pid, &watch.pidfd),
                None => continue,
            };
            match reaped {
                Reaped::Exited(status) => {
                    if let Some(entry) = tracked.remove(&pid) {
                        finish(pid, entry, status, &mut exits);
                    }
                }
                Reaped::Gone => {
                    if let Some(entry) = tracked.remove(&pid) {
                        finish(pid, entry, ExitStatus::Unknown, &mut exits);
                    }
                }
                Reaped::NotYet => {
                    // Reported (one-shot) but not reapable yet, e.g. a zombie a tracer holds:
                    // unwatched from now on, so that the sweep finds it.
                    if let Some(mut entry) = tracked.remove(&pid) {
                        let child = std::mem::replace(&mut entry.child, Child::Process);
                        drop(entry);
                        tracked.insert(pid, table.tracked(child, None));
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

/// Kills what is left of the process group of `pid` (a tracked child whose pidfd says it
/// exited: an unreaped zombie, so the group id still names its group), then reaps it through
/// `pidfd`, which names that process and no other.
fn reap_group_leader(pid: u32, pidfd: &OwnedFd) -> Reaped {
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
        return match waitid(
            Id::PIDFd(pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
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
fn finish(pid: u32, mut entry: Tracked, status: ExitStatus, exits: &mut Vec<ChildExit>) {
    let child = std::mem::replace(&mut entry.child, Child::Process);
    match child {
        Child::Process => exits.push(ChildExit { pid, status }),
        Child::Probe(waiting) => {
            // The probe may have given up already; then nobody needs the status.
            let _ = waiting.send(status);
        }
    }
}

/// Reaps the exited children that are ready now, tracked or not, at most `SWEEP_MAX_REAPS`,
/// walking all the launcher's children (O(children) in the kernel per call: for orphaned
/// descendants, which have no pidfd, and children whose pidfd is not watched). Returns the exits
/// of tracked children (untracked ones, orphaned descendants, are reaped and logged) and
/// whether it stopped at the cap with more perhaps waiting.
pub fn reap_all(table: &ChildTable) -> (Vec<ChildExit>, bool) {
    let mut exits = Vec::new();
    let mut reaped = 0usize;
    loop {
        if reaped >= SWEEP_MAX_REAPS {
            return (exits, true);
        }
        reaped += 1;
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
            // Reaped elsewhere in between: no status for it, and on with the other exits.
            Err(Errno::ECHILD) => {
                if let Some(entry) = tracked.remove(&raw_pid) {
                    finish(raw_pid, entry, ExitStatus::Unknown, &mut exits);
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(pid = raw_pid, %error, "cannot reap an exited child");
                break;
            }
        };
        match tracked.remove(&raw_pid) {
            Some(entry) => finish(raw_pid, entry, status, &mut exits),
            None => {
                tracing::debug!(pid = raw_pid, %status, "reaped an orphaned descendant");
            }
        }
    }
    (exits, false)
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
                spawning.record(started.pid, Child::Process, started.pidfd);
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
    fn an_exit_waits_from_the_child_s_death_until_it_is_reaped() {
        let table = ChildTable::default();
        let sleepers = Sleepers::start(&table, 2);
        assert!(!table.exit_waiting());
        let killed = sleepers.pids[0];
        nix::sys::signal::kill(Pid::from_raw(killed as i32), Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !table.exit_waiting() {
            assert!(Instant::now() < deadline, "the killed child's exit is told");
            std::thread::sleep(Duration::from_millis(2));
        }
        // Looking takes nothing: the exit still waits, and the reap finds it.
        assert!(table.exit_waiting());
        let exits = reap_exited(&table);
        assert_eq!(
            exits.iter().map(|exit| exit.pid).collect::<Vec<_>>(),
            [killed]
        );
        assert!(!table.exit_waiting());
    }

    #[test]
    fn an_exit_is_found_through_its_pidfd_and_only_that_child_is_reaped() {
        let table = ChildTable::default();
        assert!(table.watches_every_exit());
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

    #[test]
    fn an_exit_wakes_a_waiter_on_the_exits_readiness_once() {
        let table = ChildTable::default();
        let sleepers = Sleepers::start(&table, 2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let exits = table.exits_readiness().unwrap().unwrap();
            let killed = sleepers.pids[0];
            nix::sys::signal::kill(Pid::from_raw(killed as i32), Signal::SIGKILL).unwrap();
            tokio::time::timeout(Duration::from_secs(10), exits.exited())
                .await
                .expect("the exit made the set readable")
                .unwrap();
            assert_eq!(
                reap_exited(&table),
                vec![ChildExit {
                    pid: killed,
                    status: ExitStatus::Signal(libc::SIGKILL),
                }]
            );
            // Reaped, the exit is not reported again: the waiter sleeps until the next one.
            let again = tokio::time::timeout(Duration::from_millis(50), exits.exited()).await;
            assert!(again.is_err(), "readable again with no new exit");
        });
    }

    #[test]
    fn a_forgotten_child_leaves_the_set_even_while_a_copy_of_its_pidfd_lives() {
        let table = ChildTable::default();
        let sleepers = Sleepers::start(&table, 1);
        let pid = sleepers.pids[0];
        // A copy of the pidfd, as a spawn's child has one in its copy of the table until its
        // exec: closing the table's own would not take the registration out of the set.
        let copy = {
            let tracked = table.lock();
            let watch = tracked[&pid].watch.as_ref().unwrap();
            watch.pidfd.try_clone().unwrap()
        };
        let forgotten = table.lock().remove(&pid);
        drop(forgotten);
        let leader = Pid::from_raw(pid as i32);
        nix::sys::signal::kill(leader, Signal::SIGKILL).unwrap();
        let mut poll = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&copy),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let readable = unsafe { libc::poll(&mut poll, 1, 10_000) };
        assert_eq!(readable, 1, "the child exited");
        let mut events = [EpollEvent::empty(); 4];
        let reported = table
            .exits
            .as_ref()
            .unwrap()
            .wait(&mut events, EpollTimeout::ZERO)
            .unwrap();
        assert_eq!(reported, 0, "no event of a child the table forgot");
        waitpid(leader, None).unwrap();
    }
}
