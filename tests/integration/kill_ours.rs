//! Killing what a test started, after a failure too, without ever signalling a stranger: each
//! process is held by a pidfd before it is proved the test's, by the launcher id in its
//! environment, and signalled through that pidfd. Shared by the integration tests and
//! `tests/in_process.rs`.

use std::os::fd::AsFd;

use nix::sys::signal::Signal;
use prism_launcher::runtime::pidfd::{open_raw, send_signal_through};

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
    // The group first (a kernel before 6.9 refuses the flag), then the process itself, which
    // may lead no group.
    for flags in [libc::PIDFD_SIGNAL_PROCESS_GROUP, 0] {
        let _ = send_signal_through(pidfd.as_fd(), Signal::SIGKILL, flags);
    }
}

/// Whether the environment of `pid` has the entry `name=value`.
fn carries(pid: u32, name: &str, value: &str) -> bool {
    let entry = format!("{name}={value}");
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|byte| *byte == 0)
            .any(|found| found == entry.as_bytes())
    })
}
