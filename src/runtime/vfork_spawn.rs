//! Starting a program the way glibc's `posix_spawn` does, with steps of our own before its exec:
//! a child that shares the launcher's memory (`clone` with `CLONE_VM | CLONE_VFORK`) on a small
//! stack of its own, while the launcher's thread waits, so nothing of the launcher is copied.
//!
//! Why it exists: a memory limit (`RLIMIT_DATA`) must hold from the program's first instruction,
//! so it is set in the child before exec; std's `Command::pre_exec` does that by `fork`ing the
//! whole launcher instead of using `posix_spawn`, and copying the page tables of a launcher with
//! 1000 children made a limited restart (W2) 4.32 ms instead of 2.72 and a cold start of 1000
//! (W1) 1650 ms instead of 722 (BENCHMARKS.md, "Memory limits (issue 14)"). Setting the limit
//! from the launcher after `posix_spawn` is a race that a program allocating in a constructor
//! wins. Here the limit, and the join of a cgroup that cgroup mode needs, are steps of a child
//! that costs what `posix_spawn`'s costs: from a launcher-sized parent, 68–100 µs per spawn call
//! with or without a limit against 75–109 for std's `posix_spawn` and 975–1442 for its fork, and
//! at N = 1000 a limited restart of 2.26 ms against 2.22 without a limit (medians of 8 rounds; it
//! was 4.05 against 2.29 before, measured side by side) (BENCHMARKS.md, "A spawn without fork for
//! limited processes (issue 14)"). So every child starts here, limited or not: one path, with no
//! measurable difference from std's `posix_spawn`.
//!
//! The child and the launcher share memory until the child's exec, so the child only makes
//! system calls on values prepared before the clone: it allocates nothing, takes no lock, and
//! runs no signal handler (the launcher's thread blocks every signal around the clone, glibc's
//! internal 32 and 33 too, with the raw system call and a mask of all ones as glibc's
//! `posix_spawn` does; the child resets every handled signal to its default, and sets glibc's
//! internal ones to ignored as `posix_spawn` does, before it unblocks them). A step that fails
//! writes which step and its errno into memory the launcher reads once the clone returns, and
//! the launcher reaps that child itself. A child killed before its exec (by a signal that cannot
//! be blocked, SIGKILL) has failed no step: `start` returns its pid, and its exit shows up later
//! as any other, a death by that signal.
//!
//! The child comes with a pidfd (`CLONE_PIDFD`), which the reaper waits on. It shares the
//! launcher's descriptor table too (`CLONE_FILES`) until its first step, a `close_range` with
//! `CLOSE_RANGE_UNSHARE` from just above the descriptors it needs: the kernel then copies only
//! the descriptors below that, a few dozen (the launcher keeps its pidfds above them, see
//! `pidfd`), where a plain clone copies the whole table, with a pidfd per running process. Where
//! that call is missing (before Linux 5.9) the whole table is copied.
//!
//! The program is run by `execve` alone, without a shell: a script without a `#!` line fails
//! with `ENOEXEC` (as with `posix_spawn`; std's `fork` path, through `execvp`, ran it with
//! `/bin/sh`).

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CString, OsStr};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::OnceLock;

use super::pidfd;
use super::reaper::SpawnGuard;

/// A program to start: its path, arguments, environment and working directory, as the C strings
/// the child hands to the kernel.
#[derive(Debug, Clone)]
pub struct Program {
    path: CString,
    /// `argv[0]` is the path, as std's `Command` gives it.
    argv: Vec<CString>,
    /// `NAME=value`, exactly these and nothing of the launcher's environment.
    envp: Vec<CString>,
    working_dir: CString,
}

/// Where the child's standard streams go, what it may use of memory, and the cgroup it joins.
#[derive(Debug, Clone, Copy)]
pub struct ChildSetup<'a> {
    pub stdin: BorrowedFd<'a>,
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
    /// `RLIMIT_DATA` (soft and hard), in bytes.
    pub data_limit: Option<u64>,
    /// An open `cgroup.procs` the child writes "0" to before exec: it joins that cgroup, and so
    /// does everything it starts.
    pub cgroup_procs: Option<BorrowedFd<'a>>,
    /// A line the child writes to its stdout before its exec, with its own pid between the two
    /// parts: the marker that starts an instance's output in its log.
    pub marker: Option<MarkerLine<'a>>,
}

/// A line around a pid, which only the child knows before it runs its program.
#[derive(Debug, Clone, Copy)]
pub struct MarkerLine<'a> {
    pub before_pid: &'a [u8],
    pub after_pid: &'a [u8],
}

/// A step of a start, in the order they are taken: the first four in the launcher, the rest in
/// the child between the clone and its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// Turning the program into C strings and the standard streams into descriptors above 2.
    Prepare = 1,
    /// Mapping the child's stack.
    Stack,
    /// Blocking every signal of the launcher's thread for the clone.
    BlockSignals,
    /// The clone itself.
    Clone,
    /// Taking a descriptor table of its own (with only what it needs) from the launcher's.
    UnshareFiles,
    ResetSignals,
    ProcessGroup,
    JoinCgroup,
    WorkingDir,
    Stdio,
    DataLimit,
    /// Giving back the limit on open files the launcher raised for itself.
    FileLimit,
    UnblockSignals,
    Exec,
}

#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub struct StartError {
    pub step: Step,
    #[source]
    pub source: io::Error,
}

impl Program {
    /// Fails (`InvalidInput`) when a string holds a NUL byte, which validation refuses before.
    pub fn new<A, K, V>(
        executable: &Path,
        args: impl IntoIterator<Item = A>,
        env: impl IntoIterator<Item = (K, V)>,
        working_dir: &Path,
    ) -> Result<Program, StartError>
    where
        A: AsRef<OsStr>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let path = c_string(executable.as_os_str().as_bytes())?;
        let mut argv = vec![path.clone()];
        for arg in args {
            argv.push(c_string(arg.as_ref().as_bytes())?);
        }
        let mut envp = Vec::new();
        for (name, value) in env {
            let mut entry = name.as_ref().as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_ref().as_bytes());
            envp.push(c_string(&entry)?);
        }
        Ok(Program {
            path,
            argv,
            envp,
            working_dir: c_string(working_dir.as_os_str().as_bytes())?,
        })
    }
}

/// A child that runs its program: its pid, and a pidfd on it (close-on-exec, placed high);
/// none on kernels before 5.2, or when no descriptor was free for it.
#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    pub pidfd: Option<OwnedFd>,
}

/// Starts `program` with `setup` and returns the child once it runs the program (its exec
/// succeeded), or was killed before it (see the module's doc). On an error no child is left: one
/// that failed a step was reaped here. The calling thread's signal mask is as it was.
///
/// `_spawning` keeps the launcher's reaper from reaping an unknown pid across this call, so that
/// a child that failed is reaped here, not there; the caller records the pid under it.
pub fn start(
    program: &Program,
    setup: &ChildSetup<'_>,
    _spawning: &SpawnGuard<'_>,
) -> Result<Started, StartError> {
    let use_close_range = close_range_works();
    let mut how = How {
        use_close_range,
        share_files: use_close_range && SHARED_TABLE_WORKS.load(Ordering::Relaxed),
        with_pidfd: PIDFD_CLONE_WORKS.load(Ordering::Relaxed),
    };
    loop {
        match start_with(program, setup, how) {
            Err(error) if error.step == Step::UnshareFiles && how.share_files => {
                // Refused for good (a seccomp filter that knows `close_range` but not this
                // flag) or for now (ENOMEM): start this one with a copied table, and give up
                // sharing only in the first case.
                if matches!(
                    error.source.raw_os_error(),
                    Some(libc::EINVAL | libc::EPERM | libc::ENOSYS)
                ) {
                    SHARED_TABLE_WORKS.store(false, Ordering::Relaxed);
                    tracing::warn!(%error, "cannot give a child a table of its own by close_range; copying the launcher's at each spawn");
                }
                how.share_files = false;
            }
            Err(error) if error.step == Step::Clone && how.with_pidfd => {
                // No descriptor free for the pidfd (EMFILE, ENFILE), or CLONE_PIDFD refused (a
                // sandbox): this child without one, found by the reaper's sweep.
                match error.source.raw_os_error() {
                    Some(libc::EINVAL | libc::EPERM | libc::ENOSYS) => {
                        PIDFD_CLONE_WORKS.store(false, Ordering::Relaxed);
                        tracing::warn!(%error, "cannot clone with a pidfd; exits will be found by walking all children");
                    }
                    Some(libc::EMFILE | libc::ENFILE) => {
                        tracing::warn!(%error, "no descriptor free for a child's pidfd (raise the limit on open files); its exit will be found by walking all children");
                    }
                    _ => return Err(error),
                }
                how.with_pidfd = false;
            }
            other => return other,
        }
    }
}

/// How a child is cloned.
#[derive(Debug, Clone, Copy)]
struct How {
    /// The child closes with `close_range` (else one by one).
    use_close_range: bool,
    /// The child shares the descriptor table until its first step (needs `close_range`).
    share_files: bool,
    /// The clone makes a pidfd (`CLONE_PIDFD`).
    with_pidfd: bool,
}

/// Whether a child may share the descriptor table until its `close_range` unshares it: until
/// that is refused for good once.
static SHARED_TABLE_WORKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether the clone may ask for a pidfd: until that is refused for good once.
static PIDFD_CLONE_WORKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `start`, cloned as `how` says: with `close_range` left out the child closes every descriptor
/// from 3 to the highest the launcher had open, one by one (what it does when `close_range`
/// fails).
fn start_with(program: &Program, setup: &ChildSetup<'_>, how: How) -> Result<Started, StartError> {
    let How {
        use_close_range,
        share_files,
        with_pidfd,
    } = how;
    let argv = null_terminated(&program.argv);
    let envp = null_terminated(&program.envp);
    // A stream on 0, 1 or 2 other than its own would be overwritten by an earlier dup2 in the
    // child; such a descriptor is copied above 2 first (std's `Command` does the same).
    let stdin = above_stdio(setup.stdin)?;
    let stdout = above_stdio(setup.stdout)?;
    let stderr = above_stdio(setup.stderr)?;
    let stack = ChildStack::take()?;
    let stdio = [
        raw_fd(&stdin, setup.stdin),
        raw_fd(&stdout, setup.stdout),
        raw_fd(&stderr, setup.stderr),
    ];
    let cgroup_procs = setup.cgroup_procs.map(|fd| fd.as_raw_fd());
    // Everything from just above the highest descriptor the child needs is left out of its copy
    // of the table.
    let unshare_from = share_files.then(|| {
        let highest = stdio.into_iter().chain(cgroup_procs).max().unwrap_or(2);
        c_uint::try_from(highest).map_or(3, |highest| highest.saturating_add(1))
    });
    let args = ChildArgs {
        path: program.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        working_dir: program.working_dir.as_ptr(),
        stdio,
        data_limit: setup.data_limit.map(|bytes| libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        }),
        open_file_limit: pidfd::children_open_file_limit(),
        cgroup_procs,
        unshare_from,
        marker: setup.marker.map(|marker| {
            [
                libc::iovec {
                    iov_base: marker.before_pid.as_ptr() as *mut c_void,
                    iov_len: marker.before_pid.len(),
                },
                libc::iovec {
                    iov_base: marker.after_pid.as_ptr() as *mut c_void,
                    iov_len: marker.after_pid.len(),
                },
            ]
        }),
        last_signal: libc::SIGRTMAX(),
        first_application_signal: libc::SIGRTMIN(),
        use_close_range,
        highest_fd: highest_fd_to_close(use_close_range),
        failed_step: AtomicU8::new(0),
        failed_errno: AtomicI32::new(0),
    };
    // Every signal is blocked on this thread while the child runs on its memory, so that no
    // handler of the launcher runs in the child before it has reset them.
    let old_mask = set_signal_mask(ALL_SIGNALS).map_err(|source| StartError {
        step: Step::BlockSignals,
        source,
    })?;
    // SAFETY: `child_main` matches the callback type clone expects and never returns (it execs
    // or _exits). `stack.top()` is the 16-byte-aligned top of a mapping of `STACK_BYTES` that
    // this thread alone uses, and that stays mapped until the clone returned (it is kept for
    // this thread's next spawn, or unmapped when dropped); with CLONE_VFORK clone
    // returns only once the child has exec'd or exited, so the child has stopped using its stack
    // and `args` (which lives in this frame and outlives the call) by then. The child shares
    // this memory (CLONE_VM) and only reads `args`, writing only its two atomics; this thread,
    // the only one that knows `args`, is suspended meanwhile, so nothing else reads or writes
    // them concurrently. With CLONE_FILES the child's first step gives it a table of its own
    // (`unshare_from`) before it changes any descriptor, and when that step fails it exits
    // without touching one; without CLONE_FILES it has its own copy from the start. Without
    // CLONE_SIGHAND it changes only its own signal dispositions. CLONE_PIDFD writes the pidfd
    // into `raw_pidfd`, a local that outlives the call; the kernel installs it (close-on-exec)
    // before the child runs, so with CLONE_FILES the child may get a copy of it below
    // `unshare_from`, which its `close_range` from 3 closes. SIGCHLD makes it an ordinary child that
    // the launcher's reaper (or `reap` below) waits for.
    let mut raw_pidfd: c_int = -1;
    let flags = libc::CLONE_VM
        | libc::CLONE_VFORK
        | if with_pidfd { libc::CLONE_PIDFD } else { 0 }
        | if share_files { libc::CLONE_FILES } else { 0 }
        | libc::SIGCHLD;
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            flags,
            &args as *const ChildArgs as *mut c_void,
            &mut raw_pidfd as *mut c_int,
        )
    };
    let clone_error = io::Error::last_os_error();
    // Setting back a mask this thread had cannot fail (rt_sigprocmask fails only on a bad
    // argument), and there would be nothing better to do than go on.
    let _ = set_signal_mask(old_mask);
    stack.keep();
    if pid < 0 {
        return Err(StartError {
            step: Step::Clone,
            source: clone_error,
        });
    }
    // Kernels before 5.2 ignore CLONE_PIDFD and leave `raw_pidfd` at -1.
    let child_pidfd = (with_pidfd && raw_pidfd >= 0).then(|| {
        // SAFETY: with CLONE_PIDFD a successful clone on Linux 5.2 or later wrote a new
        // descriptor into `raw_pidfd` (checked not -1 above), open and owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(raw_pidfd) }
    });
    // The child wrote these, if it failed, before it exited, and the clone returned after that.
    let failed_step = args.failed_step.load(Ordering::Acquire);
    if failed_step != 0 {
        let errno = args.failed_errno.load(Ordering::Acquire);
        reap(pid);
        return Err(StartError {
            step: Step::from_child(failed_step),
            source: io::Error::from_raw_os_error(errno),
        });
    }
    Ok(Started {
        // `pid` is positive here, so it fits.
        pid: pid.unsigned_abs(),
        pidfd: child_pidfd.map(pidfd::place_high),
    })
}

impl fmt::Display for Step {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Step::Prepare => "preparing the child",
            Step::Stack => "mapping the child's stack",
            Step::BlockSignals => "blocking signals for the clone",
            Step::Clone => "cloning the child",
            Step::UnshareFiles => "giving the child a descriptor table of its own",
            Step::ResetSignals => "resetting the child's signal handlers",
            Step::ProcessGroup => "making the child's process group",
            Step::JoinCgroup => "joining the cgroup",
            Step::WorkingDir => "changing to the working directory",
            Step::Stdio => "redirecting stdin, stdout and stderr",
            Step::DataLimit => "setting the memory limit (RLIMIT_DATA)",
            Step::FileLimit => "setting the limit on open files (RLIMIT_NOFILE)",
            Step::UnblockSignals => "unblocking the child's signals",
            Step::Exec => "exec",
        })
    }
}

impl Step {
    /// The step the child reported by number (`Step as u8`).
    fn from_child(number: u8) -> Step {
        [
            Step::UnshareFiles,
            Step::ResetSignals,
            Step::ProcessGroup,
            Step::JoinCgroup,
            Step::WorkingDir,
            Step::Stdio,
            Step::DataLimit,
            Step::FileLimit,
            Step::UnblockSignals,
            Step::Exec,
        ]
        .into_iter()
        .find(|step| *step as u8 == number)
        // The child writes only the numbers of the steps above.
        .unwrap_or(Step::Exec)
    }
}

/// The stack of the child: a few pages, with a guard page below so that an overflow faults
/// instead of writing over the launcher's memory. glibc maps 32 KiB and more for its child.
const STACK_BYTES: usize = 64 * 1024;

/// The size of the signal set the kernel's `rt_sigprocmask` and `rt_sigaction` take (64
/// signals, one bit each: signal `n` is bit `n - 1`).
const KERNEL_SIGSET_BYTES: usize = 8;

/// Every signal, glibc's internal 32 and 33 included (`sigfillset` leaves those out). The kernel
/// drops SIGKILL and SIGSTOP from a mask itself.
const ALL_SIGNALS: u64 = u64::MAX;

/// No signal.
const NO_SIGNALS: u64 = 0;

/// Where `close_range` fails, the child closes descriptors one by one up to the highest the
/// launcher had open; when that cannot be read, up to the soft `RLIMIT_NOFILE`, but not beyond
/// this (a descriptor above it, which the launcher never opens without close-on-exec, is left to
/// close-on-exec).
const MAX_FD_TO_CLOSE: c_int = 65_535;
/// What the child reads (everything it needs, prepared before the clone) and writes (which step
/// failed, and its errno).
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    working_dir: *const c_char,
    /// What becomes 0, 1 and 2: descriptors above 2.
    stdio: [RawFd; 3],
    data_limit: Option<libc::rlimit>,
    /// `RLIMIT_NOFILE` as the launcher had it before raising its own.
    open_file_limit: Option<libc::rlimit>,
    cgroup_procs: Option<RawFd>,
    /// With a shared descriptor table (CLONE_FILES): the lowest descriptor left out of the
    /// child's own table, above every descriptor it needs.
    unshare_from: Option<c_uint>,
    /// The marker line's two parts, around the pid (`ChildSetup::marker`), borrowed from the
    /// caller of `start` for the length of the call.
    marker: Option<[libc::iovec; 2]>,
    /// The highest signal number (`SIGRTMAX`), read before the clone.
    last_signal: c_int,
    /// `SIGRTMIN` as the C library gives it to programs: the signals from 32 below it are the
    /// C library's own (glibc's 32 and 33).
    first_application_signal: c_int,
    /// False where `close_range` is known not to work: the child closes one by one at once.
    use_close_range: bool,
    /// The highest descriptor the child closes one by one when `close_range` fails.
    highest_fd: c_int,
    /// `Step as u8` of the step that failed, 0 while none has.
    failed_step: AtomicU8,
    failed_errno: AtomicI32,
}

/// The child: from the clone to the exec of the program, or `_exit(127)` on a failed step.
extern "C" fn child_main(args: *mut c_void) -> c_int {
    // SAFETY: `args` is the `ChildArgs` that `start` passed to clone, alive in the suspended
    // parent's frame until this child execs or exits; it is only read here, but for its atomics.
    let args = unsafe { &*(args as *const ChildArgs) };
    // SAFETY: `run_child` is called only here, in the child of a CLONE_VM | CLONE_VFORK clone,
    // with every signal blocked; see its doc.
    let (step, errno) = unsafe { run_child(args) };
    args.failed_errno.store(errno, Ordering::Release);
    args.failed_step.store(step as u8, Ordering::Release);
    // SAFETY: _exit ends this child at once, running no atexit handler and flushing no stdio
    // buffer of the launcher's.
    unsafe { libc::_exit(127) }
}

/// The child's steps. Returns only when one fails: which one, and its errno.
///
/// # Safety
///
/// Only in the child of `start`'s clone, entered with every signal blocked: it shares the
/// launcher's memory while its parent thread is suspended, so it may only make system calls on
/// the values `args` points to (no allocation, no lock, no panic, no handler of the launcher's).
unsafe fn run_child(args: &ChildArgs) -> (Step, c_int) {
    // SAFETY: every call below is one system call, raw (`syscall`) or through a libc wrapper
    // that is async-signal-safe and no cancellation point, that only reads the pointers of
    // `args` (C strings and NULL-terminated arrays that `start` keeps alive until the child
    // execs or exits) or reads and writes locals and constants, and sets errno in the TLS of the
    // suspended parent thread, which reads it only through `args`. Nothing here allocates, locks
    // or can panic (no indexing, no arithmetic that overflows: `signal` stops at SIGRTMAX, `fd`
    // at `highest_fd`, at most `MAX_FD_TO_CLOSE`, the pid's `count` at the 20 slots of
    // `digits`). Every signal stays blocked (the mask of all
    // ones the child inherited) until the last step before execve, and by then no signal has a
    // handler of the launcher's in this child.
    unsafe {
        // First, before any descriptor changes: a table of its own with only what is below
        // `unshare_from` (the launcher's table is shared until then).
        if let Some(unshare_from) = args.unshare_from {
            if libc::syscall(
                libc::SYS_close_range,
                unshare_from,
                c_uint::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            ) != 0
            {
                return (Step::UnshareFiles, errno());
            }
        }
        // Every signal with a handler goes back to its default before signals are unblocked;
        // SIGPIPE, which the Rust runtime ignores, too (std's `Command` does the same). Other
        // ignored signals stay ignored, as with std. The C library's internal signals (glibc's
        // 32 and 33, which its `sigaction` refuses) are set to ignored with the raw system call,
        // as glibc's `posix_spawn` does: the child shares the launcher's memory, so no handler of
        // the launcher's may run in it. (After the exec the kernel resets handlers anyway; what
        // this guards is the time before it.)
        let mut signal = 1;
        while signal <= args.last_signal {
            if (SIGRTMIN_KERNEL..args.first_application_signal).contains(&signal) {
                if !ignore_signal(signal) {
                    return (Step::ResetSignals, errno());
                }
            } else if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                    && (signal == libc::SIGPIPE
                        || (current.sa_sigaction != libc::SIG_DFL
                            && current.sa_sigaction != libc::SIG_IGN))
                {
                    let mut default: libc::sigaction = std::mem::zeroed();
                    default.sa_sigaction = libc::SIG_DFL;
                    if libc::sigaction(signal, &default, std::ptr::null_mut()) != 0 {
                        return (Step::ResetSignals, errno());
                    }
                }
            }
            signal += 1;
        }
        if libc::setpgid(0, 0) != 0 {
            return (Step::ProcessGroup, errno());
        }
        if let Some(cgroup_procs) = args.cgroup_procs {
            // The raw system call: glibc's `write` is a cancellation point, which reads the
            // thread's control block (the suspended parent thread's, shared here).
            let written = libc::syscall(
                libc::SYS_write,
                cgroup_procs,
                b"0".as_ptr() as *const c_void,
                1usize,
            );
            if written != 1 {
                return (
                    Step::JoinCgroup,
                    if written < 0 { errno() } else { libc::EIO },
                );
            }
        }
        if libc::chdir(args.working_dir) != 0 {
            return (Step::WorkingDir, errno());
        }
        for (source, target) in args.stdio.into_iter().zip([0, 1, 2]) {
            // `source` is above 2 (`above_stdio`), so dup2 always copies, and the copy is not
            // close-on-exec.
            if libc::dup2(source, target) != target {
                return (Step::Stdio, errno());
            }
        }
        if let Some([before_pid, after_pid]) = args.marker {
            // One `writev` of the whole line, so that on the log (opened O_APPEND) it lands in
            // one piece at the end. The pid is formatted into this frame's own array, from the
            // last digit back. A line that cannot be written (a full disk) does not stop the
            // start: the program could not write its output either, and says so itself.
            let pid = libc::syscall(libc::SYS_getpid).unsigned_abs();
            let mut digits = [0u8; 20];
            let mut count = 0usize;
            let mut rest = pid;
            for slot in digits.iter_mut().rev() {
                *slot = b'0' + (rest % 10) as u8;
                rest /= 10;
                count += 1;
                if rest == 0 {
                    break;
                }
            }
            let line = [
                before_pid,
                libc::iovec {
                    // `count` is at most the array's 20: the loop stops at its end.
                    iov_base: digits
                        .as_mut_ptr()
                        .wrapping_add(digits.len().wrapping_sub(count))
                        as *mut c_void,
                    iov_len: count,
                },
                after_pid,
            ];
            libc::syscall(libc::SYS_writev, 1 as c_int, line.as_ptr(), 3 as c_int);
        }
        if let Some(limit) = &args.data_limit {
            if libc::setrlimit(libc::RLIMIT_DATA, limit) != 0 {
                return (Step::DataLimit, errno());
            }
        }
        if let Some(limit) = &args.open_file_limit {
            if libc::setrlimit(libc::RLIMIT_NOFILE, limit) != 0 {
                return (Step::FileLimit, errno());
            }
        }
        // Nothing but 0, 1 and 2 reaches the program, not even a descriptor the launcher
        // inherited without close-on-exec: `close_range`, or where it fails (before Linux 5.9,
        // or refused by a seccomp filter) `close` of each descriptor from 3 to the highest the
        // launcher had open (raw system calls; glibc's `closefrom` aborts the process when it
        // fails). A `close` that fails (EBADF: nothing open there) is no error.
        if !args.use_close_range
            || libc::syscall(libc::SYS_close_range, 3 as c_uint, c_uint::MAX, 0 as c_uint) != 0
        {
            let mut fd = 3;
            while fd <= args.highest_fd {
                libc::syscall(libc::SYS_close, fd);
                fd += 1;
            }
        }
        if libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &NO_SIGNALS as *const u64,
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_BYTES,
        ) != 0
        {
            return (Step::UnblockSignals, errno());
        }
        libc::execve(args.path, args.argv, args.envp);
        (Step::Exec, errno())
    }
}

/// This thread's errno (in the child: the suspended parent thread's, which it does not read
/// until the child is gone).
fn errno() -> c_int {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// `strings` as the NULL-terminated array of pointers execve takes; valid while `strings` is.
fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn c_string(bytes: &[u8]) -> Result<CString, StartError> {
    CString::new(bytes).map_err(|_| StartError {
        step: Step::Prepare,
        source: io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a string"),
    })
}

/// The kernel's first real-time signal, 32: glibc's internal signals start there.
const SIGRTMIN_KERNEL: c_int = 32;

/// Sets this thread's signal mask to `mask` with the raw system call (glibc's `sigprocmask`
/// would keep its internal signals out of a block), and returns the mask it had.
fn set_signal_mask(mask: u64) -> io::Result<u64> {
    let mut old_mask: u64 = 0;
    // SAFETY: rt_sigprocmask reads `mask` and writes `old_mask`, two u64 of this frame: the
    // kernel's signal set is `KERNEL_SIGSET_BYTES`, 8 bytes.
    let result = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            &mut old_mask as *mut u64,
            KERNEL_SIGSET_BYTES,
        )
    };
    if result == 0 {
        Ok(old_mask)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's `struct sigaction` on x86_64 and aarch64 (what `rt_sigaction` takes; not the C
/// library's, whose mask is 128 bytes).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets `signal` to ignored with the raw `rt_sigaction`, which takes the C library's internal
/// signals too. Async-signal-safe: one system call on a value of this frame. False, with errno
/// set, when it fails.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn ignore_signal(signal: c_int) -> bool {
    let ignore = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: NO_SIGNALS,
    };
    // SAFETY: rt_sigaction reads `ignore`, a `struct sigaction` of the kernel's layout on this
    // architecture, and writes nothing (no old action asked for).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            &ignore as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            KERNEL_SIGSET_BYTES,
        ) == 0
    }
}

/// Elsewhere the kernel's layout is not written down here: the internal signals keep what they
/// have (glibc's handlers run only on a signal sent to a thread of the launcher by its id).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn ignore_signal(_signal: c_int) -> bool {
    true
}

/// Whether `close_range` works here (Linux 5.9 and later, and no seccomp filter refusing it),
/// found once: a call that closes nothing.
fn close_range_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        // SAFETY: close_range of the single descriptor u32::MAX, which cannot be open (above any
        // RLIMIT_NOFILE), closes nothing; it returns 0 where the call exists.
        unsafe { libc::syscall(libc::SYS_close_range, c_uint::MAX, c_uint::MAX, 0 as c_uint) == 0 }
    })
}

/// The highest descriptor the child closes one by one if `close_range` fails: the highest open
/// in the launcher (read from /proc/self/fd, done only where `close_range` is known not to
/// work), else the soft `RLIMIT_NOFILE` less one; at most `MAX_FD_TO_CLOSE`. A descriptor another
/// thread opens after this read is left to close-on-exec, with which the launcher opens all.
fn highest_fd_to_close(use_close_range: bool) -> c_int {
    let highest_open = || {
        std::fs::read_dir("/proc/self/fd").ok().map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<c_int>().ok())
                .max()
                .unwrap_or(2)
        })
    };
    let below_nofile = || {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes `limit`, a local.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            c_int::try_from(limit.rlim_cur.saturating_sub(1)).unwrap_or(MAX_FD_TO_CLOSE)
        } else {
            MAX_FD_TO_CLOSE
        }
    };
    let highest = if use_close_range {
        None
    } else {
        highest_open()
    };
    highest.unwrap_or_else(below_nofile).min(MAX_FD_TO_CLOSE)
}

/// A copy of `fd` above 2 when `fd` is 0, 1 or 2 (closed on exec; only its dup2 reaches the
/// child), else nothing.
fn above_stdio(fd: BorrowedFd<'_>) -> Result<Option<OwnedFd>, StartError> {
    if fd.as_raw_fd() > 2 {
        return Ok(None);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the borrow keeps open returns a new descriptor or
    // -1; it touches no memory.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(StartError {
            step: Step::Prepare,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `copy` was just returned by fcntl, is open, and nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(copy) }))
}

/// The copy's descriptor if `above_stdio` made one, else the original's.
fn raw_fd(copy: &Option<OwnedFd>, original: BorrowedFd<'_>) -> RawFd {
    copy.as_ref()
        .map_or(original.as_raw_fd(), |copy| copy.as_raw_fd())
}

/// Waits for a child that failed a step (it is exiting or has exited with 127).
fn reap(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`, a local.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped >= 0 || errno() != libc::EINTR {
            // ECHILD would mean someone else reaped it, which the caller's spawn guard rules
            // out; either way there is nothing left to wait for.
            return;
        }
    }
}

/// The child's stack: an anonymous mapping with a guard page at its low end, unmapped on drop.
struct ChildStack {
    base: *mut c_void,
    bytes: usize,
}

thread_local! {
    /// This thread's child stack, kept from one spawn to the next: a mapping made and unmapped
    /// per spawn costs three system calls before the clone, and the unmapping a flush of the
    /// translation caches of every core the launcher runs on, while a restart waits.
    static KEPT_STACK: Cell<Option<ChildStack>> = const { Cell::new(None) };
}

impl ChildStack {
    /// The stack this thread kept from its last spawn (the child that used it has exec'd or
    /// exited: clone with CLONE_VFORK returned), else a new one.
    fn take() -> Result<ChildStack, StartError> {
        match KEPT_STACK.with(Cell::take) {
            Some(stack) => Ok(stack),
            None => ChildStack::map(),
        }
    }

    /// Keeps the stack for this thread's next spawn; call only once clone returned.
    fn keep(self) {
        KEPT_STACK.with(|kept| kept.set(Some(self)));
    }

    fn map() -> Result<ChildStack, StartError> {
        let failed = |source| StartError {
            step: Step::Stack,
            source,
        };
        // SAFETY: sysconf reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|page| *page > 0)
            .unwrap_or(4096);
        let bytes = STACK_BYTES + page;
        // SAFETY: a new private anonymous mapping, at an address the kernel chooses, overlaps
        // nothing of ours.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(failed(io::Error::last_os_error()));
        }
        let stack = ChildStack { base, bytes };
        // SAFETY: the first page of the mapping just made, which nothing uses yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(failed(io::Error::last_os_error()));
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), aligned to 16 bytes as the ABIs want.
    fn top(&self) -> *mut c_void {
        let end = self.base as usize + self.bytes;
        (end & !15) as *mut c_void
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: `base` and `bytes` are the mapping made in `map`, which only this value owns;
        // the child that used it has exec'd or exited (clone with CLONE_VFORK returned).
        unsafe { libc::munmap(self.base, self.bytes) };
    }
}

#[cfg(test)]
#[path = "vfork_spawn_tests.rs"]
mod tests;
