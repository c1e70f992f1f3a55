//! pidfds: a handle on one process that pid reuse cannot fool. Every child the launcher starts
//! comes with one (its exit makes it readable, which the reaper waits on), and processes that are
//! not our children (adopted from a previous launcher run, orphans) are watched and signalled
//! through one, so a signal can only ever reach the process the pidfd was opened for.
//!
//! The launcher holds a pidfd per process, so it raises its soft limit on open files to the hard
//! one (children get the limit back), and keeps pidfds at descriptors of `HIGH_FLOOR` and above:
//! a new child's copy of the descriptor table then takes only the few low ones the launcher uses
//! for a moment (see `vfork_spawn`), however many processes run.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// An open pidfd.
pub struct Pidfd {
    fd: AsyncFd<OwnedFd>,
}

impl std::fmt::Debug for Pidfd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pidfd")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl Pidfd {
    /// Opens a pidfd for `pid`. Fails with ESRCH if the process is already gone.
    pub fn open(pid: u32) -> io::Result<Pidfd> {
        let owned = open_raw(pid)?;
        // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged until it is dropped, which
        // happens only when the `AsyncFd` holding it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE)? };
        Ok(Pidfd { fd })
    }

    /// Completes when the process has exited.
    pub async fn exited(&self) {
        // A pidfd only ever becomes readable on exit, and stays so; an error means the fd is
        // unusable, in which case waiting longer would never end.
        let _ = self.fd.readable().await;
    }

    /// Whether the process has exited, without waiting.
    pub fn has_exited(&self) -> bool {
        has_exited(self.fd.get_ref().as_fd())
    }

    /// Sends `signal` to exactly this process (never to a process that reused its pid).
    pub fn send_signal(&self, signal: Signal) -> io::Result<()> {
        send_signal_through(self.fd.get_ref().as_fd(), signal, 0)
    }
}

/// Whether the process of `pidfd` has exited (a pidfd becomes readable then), without waiting.
pub fn has_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `poll` points to one valid pollfd for the duration of the call; timeout 0.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & libc::POLLIN != 0
}

/// Sends `signal` through `pidfd`: with `flags` 0 to its process alone, with
/// `libc::PIDFD_SIGNAL_PROCESS_GROUP` to the process group that process leads (Linux 6.9 and
/// later; older kernels refuse the flag with EINVAL). Either way, only while it is that very
/// process: never to one that took its pid.
pub fn send_signal_through(
    pidfd: BorrowedFd<'_>,
    signal: Signal,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes an open pidfd, a signal number, a null siginfo and flags;
    // it touches no memory of ours.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens a pidfd for `pid` (close-on-exec, placed high), not watched by any runtime. Fails with
/// ESRCH if the process is already gone.
pub fn open_raw(pid: u32) -> io::Result<OwnedFd> {
    let raw_pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw_pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "pidfd out of range"))?;
    // SAFETY: `fd` was just returned by pidfd_open, is open, and nothing else owns it.
    Ok(place_high(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Where long-held descriptors (pidfds) go: above the ones the launcher opens and closes as it
/// works (sockets, files, the standard streams of a child being started), which stay below.
pub const HIGH_FLOOR: libc::c_int = 1024;

/// `fd` moved to `HIGH_FLOOR` or above, close-on-exec; `fd` itself where the limit on open files
/// leaves no room up there (everything still works: only a spawn's descriptor copy costs more).
pub fn place_high(fd: OwnedFd) -> OwnedFd {
    if fd.as_raw_fd() >= HIGH_FLOOR {
        return fd;
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor `fd` keeps open returns a new descriptor or -1; it
    // touches no memory.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FLOOR) };
    if high < 0 {
        return fd;
    }
    // SAFETY: `high` was just returned by fcntl, is open, and nothing else owns it; `fd` is
    // closed when dropped here.
    unsafe { OwnedFd::from_raw_fd(high) }
}

/// The soft limit on open files the launcher started with, once it raised its own: what its
/// children get back (a program that uses `select` breaks above 1024).
static CHILDREN_OPEN_FILE_LIMIT: OnceLock<libc::rlimit> = OnceLock::new();

/// Raises the launcher's soft limit on open files to its hard limit, as a supervisor holding a
/// descriptor per process needs (systemd's default soft limit is 1024); returns the new soft
/// limit. Children get the original one back (`children_open_file_limit`).
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes `limit`, a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads `raised`, a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Only the first raise of the process gets here with the original limit.
    let _ = CHILDREN_OPEN_FILE_LIMIT.set(limit);
    Ok(raised.rlim_cur)
}

/// The limit on open files a child starts with, when the launcher raised its own.
pub fn children_open_file_limit() -> Option<libc::rlimit> {
    CHILDREN_OPEN_FILE_LIMIT.get().copied()
}
