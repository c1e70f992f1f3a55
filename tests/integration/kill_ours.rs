//! Killing what a test started, after a failure too, without ever signalling a stranger: each
//! process is held by a pidfd before it is proved the test's, by the launcher id in its
//! environment, and signalled through that pidfd. Shared by the integration tests and
//! `tests/in_process.rs`.

use std::os::fd::AsFd;

use nix::sys::signal::Signal;
use prism_launcher::runtime::pidfd::{has_exited, open_raw, send_signal_through};
use prism_launcher::runtime::procfs;

/// SIGKILLs `pid` and the process group it leads if its environment has `name=value`, looked at
/// through a pidfd opened first: the signals reach that very process and its group, never a
/// process that took its pid after it was reaped.
pub fn kill_if_carrying(pid: u32, name: &str, value: &str) {
    let Ok(pidfd) = open_raw(pid) else {
        return;
    };
    if !carries(pid, name, value) {
        return;
    }
    // The group it leads first, then the process itself, which may lead none.
    let group = send_signal_through(
        pidfd.as_fd(),
        Signal::SIGKILL,
        libc::PIDFD_SIGNAL_PROCESS_GROUP,
    );
    if group.is_err_and(|error| error.raw_os_error() == Some(libc::EINVAL))
        && !has_exited(pidfd.as_fd())
    {
        // A kernel before 6.9 refuses the flag. While the process has not exited its pid is
        // its own, and a group of that id can only be the one it leads.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let _ = send_signal_through(pidfd.as_fd(), Signal::SIGKILL, 0);
}

/// Whether the environment of `pid` has the entry `name=value`.
fn carries(pid: u32, name: &str, value: &str) -> bool {
    procfs::environment(pid).is_some_and(|environment| {
        environment
            .iter()
            .any(|(key, found)| key == name && found == value)
    })
}
