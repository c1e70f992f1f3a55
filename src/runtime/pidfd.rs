//! pidfds: a handle on one process that pid reuse cannot fool. Used for processes that are not
//! our children (adopted from a previous launcher run, orphans): their exit is awaited without
//! polling (a pidfd becomes readable when its process exits) and signals go through the pidfd,
//! so they can only ever reach the process the pidfd was opened for.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
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
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` points to one valid pollfd for the duration of the call; timeout 0.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & libc::POLLIN != 0
    }

    /// Sends `signal` to exactly this process (never to a process that reused its pid).
    pub fn send_signal(&self, signal: Signal) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes our open pidfd, a signal number, a null siginfo and no
        // flags; it touches no memory of ours.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
