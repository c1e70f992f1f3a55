//! Reaps children and orphaned descendants, and reports the exits of the processes the launcher
//! started. Event-driven: nothing here polls.
//!
//! Each child the launcher starts gets a pidfd in an epoll set of the reaper's (`ExitWatch`),
//! which the loop waits on: an exit wakes the loop with the pid that exited, so reaping it costs
//! O(1) whatever the number of children (`waitid(P_ALL)` walks the launcher's whole list of
//! children, 0.1 ms per thousand, twice per exit). SIGCHLD still leads to a full sweep, for
//! orphaned descendants and for any child without a pidfd (out of file descriptors), but off the
//! restart's path.
//!
//! The launcher is a child subreaper, so descendants whose parent died are reparented to it and
//! reaped here instead of lingering as zombies. A process the launcher started is a process group
//! leader; when it exits, what is left of its group is killed while the leader is still an
//! unreaped zombie, so that its pid (and so the group id) cannot have been reused.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
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

/// A child and the pidfd that tells its exit (closed, and so out of the epoll set, when the
/// entry is dropped), with the key its events carry.
#[derive(Debug)]
pub struct Tracked {
    pub child: Child,
    exit_watch: Option<(OwnedFd, WatchKey)>,
}

/// What an event of the exit watch carries: the pid, and a number unique to the registration,
/// so that an event can never be taken for a later child that reused the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchKey(u64);

impl WatchKey {
    fn pid(self) -> u32 {
        // The low half is the pid (see `ExitWatch::watch`).
        (self.0 & u64::from(u32::MAX)) as u32
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
    /// `None` when no epoll set could be made: every exit is then found by the sweep.
    exits: Option<Arc<ExitWatch>>,
    /// How many tracked children have no pidfd (their exits are found by the sweep only).
    unwatched: Arc<AtomicUsize>,
    /// How many pidfds the table holds, and how many it may (see `pidfd_budget`).
    watched: Arc<AtomicUsize>,
    budget: usize,
    budget_reached_told: Arc<AtomicBool>,
}

/// How many children may hold a pidfd: the soft `RLIMIT_NOFILE` less a reserve (a quarter, at
/// least 256) for everything else the launcher opens: spawns open log files, probes and clients
/// open sockets, and a launcher that used every descriptor for pidfds could start nothing. The
/// children past it are reaped by the sweep (as before pidfds), and the log says to raise the
/// limit. The limit is not raised here: children inherit it, and some programs rely on the
/// usual 1024 (`select`).
fn pidfd_budget() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    soft.saturating_sub((soft / 4).max(256))
}

impl Default for ChildTable {
    fn default() -> ChildTable {
        let exits = match ExitWatch::new() {
            Ok(watch) => Some(Arc::new(watch)),
            Err(error) => {
                tracing::warn!(%error, "cannot make the epoll set for the children's exits; every exit is found by a sweep of all children on SIGCHLD");
                None
            }
        };
        ChildTable {
            pids: Arc::default(),
            spawning: Arc::default(),
            exits,
            unwatched: Arc::default(),
            watched: Arc::default(),
            budget: pidfd_budget(),
            budget_reached_told: Arc::default(),
        }
    }
}

/// Held by a spawn from before its fork until its pid is recorded.
pub struct SpawnGuard<'a> {
    _spawning: RwLockReadGuard<'a, ()>,
    table: &'a ChildTable,
}

impl SpawnGuard<'_> {
    /// Records the pid just spawned, with a pidfd in the exit watch. The child cannot have been
    /// reaped yet (the reaper waits for this guard before it reaps a pid it does not know), so
    /// the pidfd is the child's even if it already exited.
    pub fn record(&self, pid: u32, child: Child) {
        let exit_watch = self.table.exits.as_ref().and_then(|exits| {
            if !self.table.take_pidfd_slot() {
                return None;
            }
            exits
                .watch(pid)
                .inspect_err(|_| self.table.give_pidfd_slot())
                .map_err(|error| {
                    tracing::debug!(pid, %error, "no pidfd for a child; its exit is found by the sweep on SIGCHLD");
                })
                .ok()
        });
        self.table.insert(pid, Tracked { child, exit_watch });
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

    fn insert(&self, pid: u32, tracked: Tracked) {
        let mut pids = self.lock();
        if tracked.exit_watch.is_none() {
            self.unwatched.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(replaced) = pids.insert(pid, tracked) {
            self.forgotten(&replaced);
        }
    }

    /// Stops tracking `pid` (its pidfd is closed with the entry).
    fn remove(pids: &mut HashMap<u32, Tracked>, table: &ChildTable, pid: u32) -> Option<Child> {
        let tracked = pids.remove(&pid)?;
        table.forgotten(&tracked);
        Some(tracked.child)
    }

    fn forgotten(&self, tracked: &Tracked) {
        if tracked.exit_watch.is_none() {
            self.unwatched.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.give_pidfd_slot();
        }
    }

    /// Counts one more pidfd if the budget allows it.
    fn take_pidfd_slot(&self) -> bool {
        let taken = self
            .watched
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |watched| {
                (watched < self.budget).then_some(watched + 1)
            })
            .is_ok();
        if !taken && !self.budget_reached_told.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                pidfds = self.budget,
                "more children than this launcher's file descriptor limit lets it watch with \
                 pidfds; the exits of the others are found by a sweep of all children, which \
                 costs more per exit: raise the limit (LimitNOFILE= in a systemd unit, ulimit -n)"
            );
        }
        taken
    }

    fn give_pidfd_slot(&self) {
        self.watched.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether every exit of a tracked child is told by its pidfd, so that the sweep on
    /// SIGCHLD only looks for orphaned descendants and may wait.
    pub fn all_watched(&self) -> bool {
        self.exits.is_some() && self.unwatched.load(Ordering::Relaxed) == 0
    }

    /// The epoll set the loop waits on, if there is one.
    pub fn exit_watch(&self) -> Option<Arc<ExitWatch>> {
        self.exits.clone()
    }

    /// A table that may hold at most `budget` pidfds.
    #[cfg(test)]
    fn with_pidfd_budget(budget: usize) -> ChildTable {
        ChildTable {
            budget,
            ..ChildTable::default()
        }
    }

    /// Records `pid` as a child without a pidfd (for tests that set up a table by hand).
    #[cfg(test)]
    pub fn track_unwatched(&self, pid: u32, child: Child) {
        self.insert(
            pid,
            Tracked {
                child,
                exit_watch: None,
            },
        );
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

/// An epoll set of the children's pidfds, each registered with its pid: readable when a child
/// has exited. The loop registers the set itself with its runtime.
#[derive(Debug)]
pub struct ExitWatch {
    epoll: OwnedFd,
    /// Numbers the registrations, for `WatchKey`.
    registrations: AtomicU32,
}

/// How many exits one look at the watch takes.
const EXITS_PER_LOOK: usize = 256;

impl ExitWatch {
    fn new() -> io::Result<ExitWatch> {
        // SAFETY: epoll_create1 takes flags and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1, is open, and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ExitWatch {
            epoll,
            registrations: AtomicU32::new(0),
        })
    }

    /// A pidfd for the child `pid`, in the set, and the key its event will carry.
    fn watch(&self, pid: u32) -> io::Result<(OwnedFd, WatchKey)> {
        let raw_pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes a pid and flags (PIDFD_NONBLOCK is not needed: the pidfd is
        // only polled) and returns a new descriptor or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "pidfd out of range"))?;
        // SAFETY: `fd` was just returned by pidfd_open, is open, and nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let registration = self.registrations.fetch_add(1, Ordering::Relaxed);
        let key = WatchKey(u64::from(registration) << 32 | u64::from(pid));
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: key.0,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event for the call. The
        // set drops the pidfd by itself when it is closed (when the child's entry goes).
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                pidfd.as_raw_fd(),
                &mut event,
            )
        };
        if added < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((pidfd, key))
    }

    /// The keys of the pidfds readable now (their processes exited), at most `EXITS_PER_LOOK`;
    /// never waits.
    fn exited(&self) -> Vec<WatchKey> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EXITS_PER_LOOK];
        let ready = loop {
            // SAFETY: `events` is a writable array of EXITS_PER_LOOK epoll_events; timeout 0.
            let ready = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EXITS_PER_LOOK as libc::c_int,
                    0,
                )
            };
            if ready >= 0 || Errno::last() != Errno::EINTR {
                break ready;
            }
        };
        let ready = usize::try_from(ready).unwrap_or(0);
        events[..ready]
            .iter()
            .map(|event| WatchKey(event.u64))
            .collect()
    }
}

impl AsRawFd for ExitWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

/// The exit of a process the launcher started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildExit {
    pub pid: u32,
    pub status: ExitStatus,
}

/// Reaps every exited child that is ready now (a sweep of all the launcher's children).
/// Returns the exits of tracked children; untracked ones (orphaned descendants) are reaped and
/// logged.
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
                Some(pid) => pid.as_raw().unsigned_abs(),
                None => break,
            },
        };
        match reap_exited(table, pid, None) {
            Reaped::Exit(exit) => exits.push(exit),
            Reaped::Other => {}
            Reaped::Failed => break,
        }
    }
    exits
}

/// Reaps the children whose pidfds say they exited: O(the exits), never all children. Also
/// says whether more may be ready (the look took as many as it could).
pub fn reap_watched(table: &ChildTable, watch: &ExitWatch) -> (Vec<ChildExit>, bool) {
    let exited = watch.exited();
    let more = exited.len() == EXITS_PER_LOOK;
    let mut exits = Vec::new();
    for key in exited {
        if let Reaped::Exit(exit) = reap_exited(table, key.pid(), Some(key)) {
            exits.push(exit);
        }
    }
    (exits, more)
}

enum Reaped {
    /// A tracked process exited.
    Exit(ChildExit),
    /// A probe, an orphan, or a pid reaped elsewhere in between.
    Other,
    /// waitpid failed: give up this sweep.
    Failed,
}

/// Reaps `pid`, which exited (its zombie is there). Told by the exit watch (`watched`), only the
/// tracked child registered with that key is reaped; the sweep (`None`) reaps orphans too.
fn reap_exited(table: &ChildTable, pid: u32, watched: Option<WatchKey>) -> Reaped {
    let Ok(raw) = i32::try_from(pid) else {
        return Reaped::Other;
    };
    let nix_pid = nix::unistd::Pid::from_raw(raw);
    let mut tracked = table.lock();
    if let Some(key) = watched {
        let registered = tracked
            .get(&pid)
            .and_then(|entry| entry.exit_watch.as_ref())
            .is_some_and(|(_, registered)| *registered == key);
        if !registered {
            // Reaped by a sweep in between (an event of a pidfd being closed), whatever
            // tracks the pid now is another process.
            return Reaped::Other;
        }
    }
    let _no_spawn_under_way;
    if !tracked.contains_key(&pid) {
        // Maybe a child whose spawn has not recorded it yet: wait for the spawns under way,
        // then look again (the map's lock is released meanwhile, as spawns need it).
        drop(tracked);
        _no_spawn_under_way = table.wait_for_spawns();
        tracked = table.lock();
    }
    if tracked.contains_key(&pid) {
        // The leader is an unreaped zombie, so the group id still names its group.
        match killpg(nix_pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(pid, %error, "cannot kill the rest of the process group")
            }
        }
    }
    let status = loop {
        match waitpid(nix_pid, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    let status = match status {
        Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
        Ok(WaitStatus::Signaled(_, signal, _)) => ExitStatus::Signal(signal as i32),
        Ok(other) => {
            tracing::warn!(pid, ?other, "unexpected wait status");
            if watched.is_some() {
                // A pidfd said it exited and it has not: leave it to the sweep rather than
                // be told again at once, forever.
                if let Some(entry) = tracked.get_mut(&pid) {
                    if entry.exit_watch.take().is_some() {
                        table.give_pidfd_slot();
                        table.unwatched.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            return Reaped::Other;
        }
        // Reaped elsewhere in between (std reaps a child whose exec failed): go on with the
        // other exits, which may include a tracked one whose SIGCHLD was merged with this.
        Err(Errno::ECHILD) => {
            ChildTable::remove(&mut tracked, table, pid);
            return Reaped::Other;
        }
        Err(error) => {
            tracing::warn!(pid, %error, "cannot reap an exited child");
            return Reaped::Failed;
        }
    };
    match ChildTable::remove(&mut tracked, table, pid) {
        Some(Child::Process) => Reaped::Exit(ChildExit { pid, status }),
        Some(Child::Probe(waiting)) => {
            // The probe may have given up already; then nobody needs the status.
            let _ = waiting.send(status);
            Reaped::Other
        }
        None => {
            tracing::debug!(pid, %status, "reaped an orphaned descendant");
            Reaped::Other
        }
    }
}

/// Makes the launcher the reaper of its orphaned descendants.
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    /// SIGKILLs and reaps the listed pids when dropped, so a failing test leaves nothing behind.
    struct Cleanup(Vec<u32>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for pid in &self.0 {
                let pid = nix::unistd::Pid::from_raw(*pid as i32);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
        }
    }

    fn spawn_sleeper(table: &ChildTable) -> u32 {
        let spawning = table.begin_spawn();
        // Reaped by the test through the watch (or by `Cleanup`), as the launcher does.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        spawning.record(child.id(), Child::Process);
        child.id()
    }

    /// Polls the watch (never the sweep, which would reap other tests' children) until `pid`'s
    /// exit is reaped.
    fn exit_of(table: &ChildTable, watch: &ExitWatch, pid: u32) -> ChildExit {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (exits, _) = reap_watched(table, watch);
            if let Some(exit) = exits.into_iter().find(|exit| exit.pid == pid) {
                return exit;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("the exit of {pid} was never told by its pidfd");
    }

    #[test]
    fn an_exit_is_told_by_its_pidfd_and_only_that_child_is_reaped() {
        let table = ChildTable::default();
        let watch = table.exit_watch().expect("an epoll set");
        let killed = spawn_sleeper(&table);
        let alive = spawn_sleeper(&table);
        let _cleanup = Cleanup(vec![killed, alive]);
        assert!(table.all_watched());

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(killed as i32), Signal::SIGKILL).unwrap();
        let exit = exit_of(&table, &watch, killed);
        assert_eq!(exit.status, ExitStatus::Signal(9));
        let tracked = table.lock();
        assert!(!tracked.contains_key(&killed), "reaped and forgotten");
        assert!(tracked.contains_key(&alive), "the other child is untouched");
        drop(tracked);
        assert!(
            reap_watched(&table, &watch).0.is_empty(),
            "a reaped child's pidfd is out of the set: told once"
        );
        assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(alive as i32), None).is_ok());
    }

    #[test]
    fn an_event_with_another_registration_key_never_touches_the_child_that_has_the_pid_now() {
        let table = ChildTable::default();
        let pid = spawn_sleeper(&table);
        let _cleanup = Cleanup(vec![pid]);
        let stale = WatchKey(u64::from(u32::MAX) << 32 | u64::from(pid));
        assert!(matches!(
            reap_exited(&table, pid, Some(stale)),
            Reaped::Other
        ));
        assert!(table.lock().contains_key(&pid), "still tracked");
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok(),
            "neither killed nor reaped"
        );
    }

    #[test]
    fn children_past_the_pidfd_budget_are_left_to_the_sweep_and_a_freed_slot_is_reused() {
        let table = ChildTable::with_pidfd_budget(1);
        let watch = table.exit_watch().expect("an epoll set");
        let first = spawn_sleeper(&table);
        let second = spawn_sleeper(&table);
        let mut cleanup = Cleanup(vec![first, second]);
        assert!(!table.all_watched(), "the second child has no pidfd");

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
        exit_of(&table, &watch, first);
        cleanup.0.retain(|pid| *pid != first);
        let third = spawn_sleeper(&table);
        cleanup.0.push(third);
        let tracked = table.lock();
        assert!(
            tracked[&third].exit_watch.is_some(),
            "the freed slot is reused"
        );
        assert!(tracked[&second].exit_watch.is_none());
    }

    #[test]
    fn the_pidfd_budget_leaves_a_reserve_of_descriptors() {
        let budget = pidfd_budget();
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        assert!(budget + 256 <= soft.max(256), "budget {budget} of {soft}");
    }

    #[test]
    fn a_child_without_a_pidfd_makes_the_sweep_necessary_until_it_is_gone() {
        let table = ChildTable::default();
        assert!(table.all_watched());
        table.track_unwatched(4_000_000, Child::Process);
        assert!(!table.all_watched());
        let mut tracked = table.lock();
        ChildTable::remove(&mut tracked, &table, 4_000_000);
        drop(tracked);
        assert!(table.all_watched());
    }
}
