//! Waiting for the exit of a process that is not our child (one a previous launcher run left),
//! without polling: a pidfd becomes readable when its process exits.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A watch on one process's exit.
pub struct ExitWatch {
    fd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    /// Opens a pidfd for `pid`. Fails with ESRCH if the process is already gone.
    pub fn open(pid: u32) -> io::Result<ExitWatch> {
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
        Ok(ExitWatch { fd })
    }

    /// Completes when the process has exited.
    pub async fn exited(&self) {
        // A pidfd only ever becomes readable on exit, and stays so; an error means the fd is
        // unusable, in which case waiting longer would never end.
        let _ = self.fd.readable().await;
    }
}
