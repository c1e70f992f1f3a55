//! The spawn without fork on real processes: what a child gets (its environment, working
//! directory, process group, signal state, descriptors, memory limit, cgroup join) and how a
//! start that fails ends (the error, and no child left behind).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::reaper::ChildTable;
use super::*;

/// How long a check waits for a child to have exec'd its program.
const DEADLINE: Duration = Duration::from_secs(10);

/// `start` under a spawn guard of a table of its own (no reaper runs in these tests: each reaps
/// what it started).
fn launch(program: &Program, setup: &ChildSetup<'_>) -> Result<u32, StartError> {
    launch_started(program, setup).map(|started| started.pid)
}

/// `launch`, keeping the child's pidfd.
fn launch_started(program: &Program, setup: &ChildSetup<'_>) -> Result<Started, StartError> {
    let children = ChildTable::default();
    let spawning = children.begin_spawn();
    start(program, setup, &spawning)
}

/// A child a test started: killed and reaped when the test ends, however it ends.
struct TestChild(u32);

impl Drop for TestChild {
    fn drop(&mut self) {
        let pid = self.0 as libc::pid_t;
        // SAFETY: kill and waitpid on the pid of a child of this process that nothing else
        // reaps (the test reaps it here), so the pid cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

/// What a test child runs with: everything `start` needs, owned.
struct Fixture {
    dir: tempfile::TempDir,
    log: File,
    dev_null: File,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("child.log"))
            .unwrap();
        Fixture {
            dir,
            log,
            dev_null: File::open("/dev/null").unwrap(),
        }
    }

    fn setup(&self) -> ChildSetup<'_> {
        ChildSetup {
            stdin: self.dev_null.as_fd(),
            stdout: self.log.as_fd(),
            stderr: self.log.as_fd(),
            data_limit: None,
            cgroup_procs: None,
            marker: None,
        }
    }

    /// What a child of `setup()` has open: 0 to /dev/null, 1 and 2 to the log, nothing else.
    fn dev_null_and_log_twice(&self) -> Vec<(String, PathBuf)> {
        let log = self.dir.path().canonicalize().unwrap().join("child.log");
        vec![
            ("0".to_string(), PathBuf::from("/dev/null")),
            ("1".to_string(), log.clone()),
            ("2".to_string(), log),
        ]
    }

    fn program(&self, executable: &str, args: &[&str], env: &BTreeMap<&str, &str>) -> Program {
        Program::new(Path::new(executable), args, env, self.dir.path()).unwrap()
    }
}

fn sleeper_env() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("ONLY_THIS", "1"), ("AND_THAT", "two words")])
}

/// `/proc/<pid>/<file>` once the child runs its program (its environment is the given one: the
/// kernel sets it up after the parent is let go), or a failure at the deadline.
fn proc_file_once_running(pid: u32, env: &BTreeMap<&str, &str>, file: &str) -> String {
    let expected: Vec<u8> = env
        .iter()
        .flat_map(|(name, value)| format!("{name}={value}\0").into_bytes())
        .collect();
    let started = Instant::now();
    loop {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ == expected {
            return std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the child's environment is {:?}, not {:?}",
            String::from_utf8_lossy(&environ),
            String::from_utf8_lossy(&expected)
        );
        std::thread::yield_now();
    }
}

/// A field of `/proc/<pid>/status` (or of this process's, for `self`) as a number (a mask).
fn status_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap();
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The children of this test's thread that exist (running or zombies), if the kernel says.
fn children_of_this_thread() -> Option<String> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    std::fs::read_to_string(format!("/proc/self/task/{tid}/children")).ok()
}

/// Starts `sleep 30` with `sleeper_env()` and `setup`, and reads `/proc/<pid>/<file>` once it
/// runs.
fn start_sleeper(fixture: &Fixture, setup: &ChildSetup<'_>, file: &str) -> (TestChild, String) {
    let env = sleeper_env();
    let program = fixture.program("/bin/sleep", &["30"], &env);
    let child = TestChild(launch(&program, setup).unwrap());
    let read = proc_file_once_running(child.0, &env, file);
    (child, read)
}

/// This thread's blocked signals, as the kernel shows them.
fn this_threads_blocked_signals() -> u64 {
    status_mask(
        &std::fs::read_to_string("/proc/thread-self/status").unwrap(),
        "SigBlk",
    )
}

/// The bit of `signal` in a mask of /proc/<pid>/status.
fn bit(signal: libc::c_int) -> u64 {
    1u64 << (signal - 1)
}

/// The targets of `/proc/<pid>/fd/*`, by descriptor.
/// Once the child (a `sleep`) sleeps: the dynamic loader has the C library open for a moment
/// after the exec, which is not a descriptor the child was given.
fn descriptors_of(pid: u32) -> Vec<(String, PathBuf)> {
    let asleep = || {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<libc::c_long>().ok())
            .is_some_and(|number| {
                number == libc::SYS_clock_nanosleep || number == libc::SYS_nanosleep
            })
    };
    let deadline = Instant::now() + DEADLINE;
    while !asleep() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut fds: Vec<(String, PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read_link(entry.path()).unwrap(),
            )
        })
        .collect();
    fds.sort();
    fds
}

/// Opens /dev/zero without close-on-exec, copied to `at` or above: a descriptor of this process
/// that a child must not get all the same.
fn leaky_descriptor(at: libc::c_int) -> OwnedFd {
    let zero = File::open("/dev/zero").unwrap();
    // SAFETY: F_DUPFD (not close-on-exec) of a descriptor `zero` keeps open; the copy is owned
    // below.
    let copy = unsafe { libc::fcntl(zero.as_raw_fd(), libc::F_DUPFD, at) };
    assert!(copy >= at, "{}", std::io::Error::last_os_error());
    // SAFETY: `copy` was just returned by fcntl, is open, and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(copy) }
}

#[test]
fn a_child_writes_the_marker_line_with_its_own_pid_before_its_program_runs() {
    let fixture = Fixture::new();
    let setup = ChildSetup {
        marker: Some(MarkerLine {
            before_pid: b"start pid=",
            after_pid: b" of this instance\n",
        }),
        ..fixture.setup()
    };
    let program = fixture.program("/bin/sh", &["-c", "echo program output"], &BTreeMap::new());
    let pid = launch(&program, &setup).unwrap();
    let mut status = 0;
    // SAFETY: waitpid on a child of this process that nothing else reaps, into a local.
    let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    assert_eq!(reaped, pid as libc::pid_t);
    let log = std::fs::read_to_string(fixture.dir.path().join("child.log")).unwrap();
    assert_eq!(
        log,
        format!("start pid={pid} of this instance\nprogram output\n")
    );
}

#[test]
fn a_child_gets_exactly_its_environment_arguments_and_working_directory() {
    let fixture = Fixture::new();
    let (child, cmdline) = start_sleeper(&fixture, &fixture.setup(), "cmdline");
    assert_eq!(cmdline, "/bin/sleep\x0030\x00");
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", child.0)).unwrap();
    assert_eq!(cwd, fixture.dir.path().canonicalize().unwrap());
}

#[test]
fn a_child_leads_its_own_process_group_with_no_signal_blocked_and_sigpipe_at_its_default() {
    let fixture = Fixture::new();
    let (child, status) = start_sleeper(&fixture, &fixture.setup(), "status");
    // SAFETY: getpgid reads the group of a child of ours that is not reaped yet.
    let group = unsafe { libc::getpgid(child.0 as libc::pid_t) };
    assert_eq!(group, child.0 as libc::pid_t);
    // Unblocked before the exec (the mask survives an exec).
    assert_eq!(status_mask(&status, "SigBlk"), 0, "{status}");
    // What this process ignores stays ignored, but SIGPIPE (the Rust runtime ignores it), as
    // with std's `Command`; glibc's internal signals 32 and 33 are ignored, as glibc's
    // posix_spawn leaves them.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        status_mask(&status, "SigIgn"),
        (status_mask(&ours, "SigIgn") & !bit(libc::SIGPIPE)) | bit(32) | bit(33),
        "{status}"
    );
    // No handler, whatever the reset did: the kernel resets handlers at exec. (What the reset
    // in the child guards is the time between the clone and the exec.)
    assert_eq!(status_mask(&status, "SigCgt"), 0, "{status}");
}

#[test]
fn the_block_around_the_clone_covers_every_signal_and_the_threads_mask_is_given_back() {
    let before = this_threads_blocked_signals();
    let old = set_signal_mask(ALL_SIGNALS).unwrap();
    let during = this_threads_blocked_signals();
    set_signal_mask(old).unwrap();
    assert_eq!(old, before);
    assert_eq!(this_threads_blocked_signals(), before);
    // Everything but what the kernel never blocks, glibc's 32 and 33 included.
    assert_eq!(
        during,
        ALL_SIGNALS & !(bit(libc::SIGKILL) | bit(libc::SIGSTOP))
    );
    assert_ne!(during & bit(32), 0);
    assert_ne!(during & bit(33), 0);
}

#[test]
fn a_start_gives_the_thread_its_signal_mask_back_whether_it_succeeds_or_fails() {
    let fixture = Fixture::new();
    // A mask of this thread's own, so that "given back" is not just "emptied".
    let mask = bit(libc::SIGUSR2) | bit(libc::SIGWINCH);
    let old = set_signal_mask(mask).unwrap();
    let (child, _) = start_sleeper(&fixture, &fixture.setup(), "status");
    let after_success = this_threads_blocked_signals();
    drop(child);
    let missing = fixture.program("/nonexistent/program", &[], &BTreeMap::new());
    let failed = launch(&missing, &fixture.setup());
    let after_failure = this_threads_blocked_signals();
    set_signal_mask(old).unwrap();
    assert_eq!(after_success, mask);
    assert_eq!(failed.unwrap_err().step, Step::Exec);
    assert_eq!(after_failure, mask);
}

#[test]
fn a_child_has_only_stdin_from_dev_null_and_stdout_and_stderr_to_its_log() {
    let fixture = Fixture::new();
    // Descriptors of this process that a child must not get, one of them not close-on-exec.
    let _open = File::open("/proc/self/status").unwrap();
    let _leaky = leaky_descriptor(3);
    let (child, _) = start_sleeper(&fixture, &fixture.setup(), "status");
    assert_eq!(descriptors_of(child.0), fixture.dev_null_and_log_twice());
}

#[test]
fn with_a_copied_table_a_child_has_only_its_streams_too() {
    let fixture = Fixture::new();
    let _leaky = leaky_descriptor(3);
    let env = sleeper_env();
    let program = fixture.program("/bin/sleep", &["30"], &env);
    let child = TestChild(
        start_with(
            &program,
            &fixture.setup(),
            How {
                use_close_range: true,
                share_files: false,
                with_pidfd: true,
            },
        )
        .unwrap()
        .pid,
    );
    proc_file_once_running(child.0, &env, "status");
    assert_eq!(descriptors_of(child.0), fixture.dev_null_and_log_twice());
}

#[test]
fn a_child_sharing_the_table_until_its_first_step_changes_nothing_in_ours() {
    let fixture = Fixture::new();
    let ours = || {
        let mut fds: Vec<(String, Option<PathBuf>)> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read_link(entry.path()).ok(),
                )
            })
            .collect();
        fds.sort();
        fds
    };
    let leaky = leaky_descriptor(3);
    // The log on 1 and 2 in the child, /dev/null on 0, and everything else closed: none of it
    // may reach this process's table, which the child shared at the clone.
    let before = ours();
    let env = sleeper_env();
    let program = fixture.program("/bin/sleep", &["30"], &env);
    let started = start_with(
        &program,
        &fixture.setup(),
        How {
            use_close_range: true,
            share_files: true,
            with_pidfd: true,
        },
    )
    .unwrap();
    let child = TestChild(started.pid);
    proc_file_once_running(child.0, &env, "status");
    let pidfd = started
        .pidfd
        .as_ref()
        .expect("a pidfd on this kernel")
        .as_raw_fd()
        .to_string();
    let after: Vec<_> = ours().into_iter().filter(|(fd, _)| *fd != pidfd).collect();
    // Other threads of the test binary may open and close descriptors meanwhile: only ours
    // and the standard streams are compared.
    let kept = |fds: &[(String, Option<PathBuf>)]| -> Vec<(String, Option<PathBuf>)> {
        let wanted = ["0", "1", "2", &leaky.as_raw_fd().to_string()].map(str::to_string);
        fds.iter()
            .filter(|(fd, _)| wanted.contains(fd))
            .cloned()
            .collect()
    };
    assert_eq!(kept(&after), kept(&before));
    assert_eq!(descriptors_of(child.0), fixture.dev_null_and_log_twice());
}

#[test]
fn the_pidfd_is_placed_high_and_becomes_readable_when_the_child_exits() {
    let fixture = Fixture::new();
    let program = fixture.program("/bin/sleep", &["30"], &BTreeMap::new());
    let started = launch_started(&program, &fixture.setup()).unwrap();
    let child = TestChild(started.pid);
    let pidfd = started.pidfd.expect("a pidfd on this kernel");
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes `limit`, a local.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    if limit.rlim_cur > 2 * super::super::pidfd::HIGH_FLOOR as u64 {
        assert!(pidfd.as_raw_fd() >= super::super::pidfd::HIGH_FLOOR);
    }
    let readable = |timeout_ms: i32| {
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut poll, 1, timeout_ms) == 1 }
    };
    assert!(!readable(0));
    // SAFETY: kill of our unreaped child (TestChild reaps it), so the pid is still its own.
    unsafe { libc::kill(child.0 as libc::pid_t, libc::SIGKILL) };
    assert!(readable(DEADLINE.as_millis() as i32));
}

#[test]
fn without_close_range_the_child_closes_every_descriptor_above_2_one_by_one() {
    let fixture = Fixture::new();
    // Not close-on-exec, and far above the others, so that only a close up to the highest open
    // descriptor reaches it.
    let leaky = leaky_descriptor(900);
    assert!(highest_fd_to_close(false) >= leaky.as_raw_fd());
    let env = sleeper_env();
    let program = fixture.program("/bin/sleep", &["30"], &env);
    let child = TestChild(
        start_with(
            &program,
            &fixture.setup(),
            How {
                use_close_range: false,
                share_files: false,
                with_pidfd: true,
            },
        )
        .unwrap()
        .pid,
    );
    proc_file_once_running(child.0, &env, "status");
    assert_eq!(descriptors_of(child.0), fixture.dev_null_and_log_twice());
}

#[test]
fn streams_on_0_1_or_2_reach_the_child_as_given_not_as_an_earlier_dup2_left_them() {
    let fixture = Fixture::new();
    let ours = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    let (Some(our_stdin), Some(our_stdout)) = (ours(0), ours(1)) else {
        eprintln!("not checked: this process has no descriptor 0 or 1");
        return;
    };
    // SAFETY: descriptors 0 and 1 of this process are open (read just above) and stay open for
    // the test: nothing in this process closes them.
    let (stdin, stdout) = unsafe { (BorrowedFd::borrow_raw(0), BorrowedFd::borrow_raw(1)) };
    // The child's dup2 onto 0 comes first: without the copies above 2, its 1 and its 2 would
    // both be the log.
    let setup = ChildSetup {
        stdin: fixture.log.as_fd(),
        stdout: stdin,
        stderr: stdout,
        ..fixture.setup()
    };
    let (child, _) = start_sleeper(&fixture, &setup, "status");
    let log = fixture.dir.path().canonicalize().unwrap().join("child.log");
    assert_eq!(
        descriptors_of(child.0),
        vec![
            ("0".to_string(), log),
            ("1".to_string(), our_stdin),
            ("2".to_string(), our_stdout),
        ]
    );
}

#[test]
fn a_memory_limit_is_set_before_the_program_starts() {
    let fixture = Fixture::new();
    let setup = ChildSetup {
        data_limit: Some(64 << 20),
        ..fixture.setup()
    };
    let (_child, limits) = start_sleeper(&fixture, &setup, "limits");
    let data = limits
        .lines()
        .find(|line| line.starts_with("Max data size"))
        .unwrap();
    assert_eq!(
        data.split_whitespace().collect::<Vec<_>>(),
        ["Max", "data", "size", "67108864", "67108864", "bytes"],
        "{limits}"
    );
}

#[test]
fn a_child_joins_its_cgroup_by_writing_0_to_cgroup_procs_before_exec() {
    let fixture = Fixture::new();
    let procs_path = fixture.dir.path().join("cgroup.procs");
    let procs = File::create(&procs_path).unwrap();
    let program = fixture.program("/bin/true", &[], &BTreeMap::new());
    let setup = ChildSetup {
        cgroup_procs: Some(procs.as_fd()),
        ..fixture.setup()
    };
    let _child = TestChild(launch(&program, &setup).unwrap());
    // Written before the exec, so before `start` returned.
    assert_eq!(std::fs::read_to_string(&procs_path).unwrap(), "0");
}

#[test]
fn a_failed_cgroup_join_fails_the_start_and_leaves_no_child() {
    let fixture = Fixture::new();
    let procs_path = fixture.dir.path().join("cgroup.procs");
    std::fs::write(&procs_path, "").unwrap();
    let read_only = File::open(&procs_path).unwrap();
    let program = fixture.program("/bin/true", &[], &BTreeMap::new());
    let setup = ChildSetup {
        cgroup_procs: Some(read_only.as_fd()),
        ..fixture.setup()
    };
    let error = launch(&program, &setup).unwrap_err();
    assert_eq!(error.step, Step::JoinCgroup);
    assert_eq!(error.source.raw_os_error(), Some(libc::EBADF));
    if let Some(children) = children_of_this_thread() {
        assert_eq!(children.trim(), "", "a child is left");
    }
}

#[test]
fn a_missing_program_is_not_found_and_leaves_no_child() {
    let fixture = Fixture::new();
    let program = fixture.program("/nonexistent/program", &[], &BTreeMap::new());
    let error = launch(&program, &fixture.setup()).unwrap_err();
    assert_eq!(error.step, Step::Exec);
    assert_eq!(error.source.kind(), ErrorKind::NotFound, "{error:?}");
    match children_of_this_thread() {
        Some(children) => assert_eq!(children.trim(), "", "a child is left"),
        None => eprintln!("not checked: no /proc/<pid>/task/<tid>/children on this kernel"),
    }
}

#[test]
fn a_program_that_is_not_executable_is_refused_and_leaves_no_child() {
    let fixture = Fixture::new();
    let script = fixture.dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let program = fixture.program(script.to_str().unwrap(), &[], &BTreeMap::new());
    let error = launch(&program, &fixture.setup()).unwrap_err();
    assert_eq!(error.step, Step::Exec);
    assert_eq!(
        error.source.kind(),
        ErrorKind::PermissionDenied,
        "{error:?}"
    );
    if let Some(children) = children_of_this_thread() {
        assert_eq!(children.trim(), "", "a child is left");
    }
}

#[test]
fn a_script_without_a_shebang_is_not_run_by_a_shell() {
    let fixture = Fixture::new();
    let script = fixture.dir.path().join("no-shebang");
    std::fs::write(&script, "echo ran\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let program = fixture.program(script.to_str().unwrap(), &[], &BTreeMap::new());
    // A child another test clones while the script is open for writing holds that descriptor
    // until its exec, and the exec here fails with ETXTBSY meanwhile: tried again, a few times.
    let mut error = launch(&program, &fixture.setup()).unwrap_err();
    for _ in 0..100 {
        if error.source.raw_os_error() != Some(libc::ETXTBSY) {
            break;
        }
        std::thread::yield_now();
        error = launch(&program, &fixture.setup()).unwrap_err();
    }
    assert_eq!(error.step, Step::Exec);
    assert_eq!(
        error.source.raw_os_error(),
        Some(libc::ENOEXEC),
        "{error:?}"
    );
}

#[test]
fn a_missing_working_directory_fails_the_start() {
    let fixture = Fixture::new();
    let program = Program::new(
        Path::new("/bin/true"),
        [] as [&str; 0],
        BTreeMap::<&str, &str>::new(),
        &fixture.dir.path().join("missing"),
    )
    .unwrap();
    let error = launch(&program, &fixture.setup()).unwrap_err();
    assert_eq!(error.step, Step::WorkingDir);
    assert_eq!(error.source.kind(), ErrorKind::NotFound);
}

#[test]
fn a_nul_byte_in_an_argument_is_refused_before_anything_starts() {
    let error = Program::new(
        Path::new("/bin/true"),
        ["a\0b"],
        BTreeMap::<&str, &str>::new(),
        Path::new("/"),
    )
    .unwrap_err();
    assert_eq!(error.step, Step::Prepare);
    assert_eq!(error.source.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_child_gets_back_the_limit_on_open_files_the_launcher_raised_for_itself() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes `limit`, a local.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    if limit.rlim_max < 256 {
        eprintln!(
            "not checked: the hard limit on open files is {}",
            limit.rlim_max
        );
        return;
    }
    // As a launcher started by systemd finds it: a soft limit below the hard one. (The test
    // binary's other tests are unaffected: they open few descriptors, and the raise below gives
    // the hard limit back.)
    let original = (limit.rlim_max / 2).min(4096);
    let lowered = libc::rlimit {
        rlim_cur: original,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads `lowered`, a local.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let raised = super::super::pidfd::raise_open_file_limit().unwrap();
    assert_eq!(raised, limit.rlim_max);
    let Some(given_back) = super::super::pidfd::children_open_file_limit() else {
        panic!("the raise remembers what children get back");
    };
    let fixture = Fixture::new();
    let (child, limits) = start_sleeper(&fixture, &fixture.setup(), "limits");
    drop(child);
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        line,
        format!(
            "Max open files {} {} files",
            given_back.rlim_cur, given_back.rlim_max
        )
    );
}
