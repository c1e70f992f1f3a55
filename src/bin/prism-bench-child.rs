//! The benchmark's child (`benches/scale.rs`): stamps CLOCK_MONOTONIC at the top of `main`, reports
//! `start <pid> <ns> <tag>` as one datagram to the unix socket in argv[1] (tag = argv[2]), then
//! blocks (`pause()`, as a race-free `sigsuspend`); on SIGTERM it stamps again, reports
//! `term <pid> <ns> <tag>` and exits 0. Any error ends it quietly with a non-zero code. It depends
//! on nothing of the launcher's environment.

use std::os::unix::net::UnixDatagram;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGTERM handler; `main` checks it after every wake-up of `pause()`.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_signal: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

/// CLOCK_MONOTONIC in nanoseconds (the harness reads the same clock).
fn monotonic_ns() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return None;
    }
    Some(u64::try_from(now.tv_sec).ok()? * 1_000_000_000 + u64::try_from(now.tv_nsec).ok()?)
}

/// Installs the SIGTERM handler with SIGTERM blocked, and returns the mask to wait with (the
/// inherited one without SIGTERM): `sigsuspend` with it is `pause()` without the lost-wake-up race
/// between checking the flag and sleeping.
fn install_sigterm_handler() -> Option<libc::sigset_t> {
    // SAFETY: zeroed sigaction and sigset_t are valid starting points (then initialised by
    // sigemptyset/sigprocmask); the handler only stores an atomic, which is async-signal-safe.
    unsafe {
        let mut term: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut term);
        libc::sigaddset(&mut term, libc::SIGTERM);
        let mut wait_mask: libc::sigset_t = std::mem::zeroed();
        if libc::sigprocmask(libc::SIG_BLOCK, &term, &mut wait_mask) != 0 {
            return None;
        }
        libc::sigdelset(&mut wait_mask, libc::SIGTERM);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        (libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) == 0).then_some(wait_mask)
    }
}

fn report(socket: &UnixDatagram, path: &str, kind: &str, ns: u64, tag: &str) -> bool {
    let line = format!("{kind} {} {ns} {tag}\n", std::process::id());
    socket.send_to(line.as_bytes(), path).is_ok()
}

fn main() -> ExitCode {
    let Some(started) = monotonic_ns() else {
        return ExitCode::from(3);
    };
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(tag)) = (args.next(), args.next()) else {
        return ExitCode::from(2);
    };
    let Some(wait_mask) = install_sigterm_handler() else {
        return ExitCode::from(3);
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return ExitCode::from(3);
    };
    if !report(&socket, &path, "start", started, &tag) {
        return ExitCode::from(4);
    }
    while !TERMINATED.load(Ordering::SeqCst) {
        // SAFETY: `wait_mask` is an initialised signal set; sigsuspend returns after a handled
        // signal (SIGTERM stays blocked outside it, so none is lost before the wait).
        unsafe { libc::sigsuspend(&wait_mask) };
    }
    let Some(terminated) = monotonic_ns() else {
        return ExitCode::from(3);
    };
    if !report(&socket, &path, "term", terminated, &tag) {
        return ExitCode::from(4);
    }
    ExitCode::SUCCESS
}
