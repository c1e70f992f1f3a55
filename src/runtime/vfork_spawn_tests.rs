//! The spawn without fork on real processes: what a child gets (its environment, working
//! directory, process group, signal state, descriptors, memory limit, cgroup join) and how a
//! start that fails ends (the error, and no child left behind).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

/// How long a check waits for a child to have exec'd its program.
const DEADLINE: Duration = Duration::from_secs(10);

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
        }
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
    let child = TestChild(start(&program, setup).unwrap());
    let read = proc_file_once_running(child.0, &env, file);
    (child, read)
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
fn a_child_leads_its_own_process_group_with_no_signal_blocked_or_handled() {
    let fixture = Fixture::new();
    let (child, status) = start_sleeper(&fixture, &fixture.setup(), "status");
    // SAFETY: getpgid reads the group of a child of ours that is not reaped yet.
    let group = unsafe { libc::getpgid(child.0 as libc::pid_t) };
    assert_eq!(group, child.0 as libc::pid_t);
    assert_eq!(status_mask(&status, "SigBlk"), 0, "{status}");
    assert_eq!(status_mask(&status, "SigCgt"), 0, "{status}");
    // What this process ignores stays ignored, but SIGPIPE (the Rust runtime ignores it), as
    // with std's `Command`.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        status_mask(&status, "SigIgn"),
        status_mask(&ours, "SigIgn") & !sigpipe,
        "{status}"
    );
}

#[test]
fn a_child_has_only_stdin_from_dev_null_and_stdout_and_stderr_to_its_log() {
    let fixture = Fixture::new();
    // Descriptors of this process that a child must not get, one of them not close-on-exec.
    let _open = File::open("/proc/self/status").unwrap();
    let leaky = File::open("/dev/zero").unwrap();
    // SAFETY: clears close-on-exec on a descriptor `leaky` owns and keeps open.
    assert_eq!(
        unsafe { libc::fcntl(leaky.as_raw_fd(), libc::F_SETFD, 0) },
        0
    );
    let (child, _) = start_sleeper(&fixture, &fixture.setup(), "status");
    let fd_dir = format!("/proc/{}/fd", child.0);
    let mut fds: Vec<(String, PathBuf)> = std::fs::read_dir(&fd_dir)
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
    let log = fixture.dir.path().canonicalize().unwrap().join("child.log");
    assert_eq!(
        fds,
        vec![
            ("0".to_string(), PathBuf::from("/dev/null")),
            ("1".to_string(), log.clone()),
            ("2".to_string(), log),
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
    let _child = TestChild(start(&program, &setup).unwrap());
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
    let error = start(&program, &setup).unwrap_err();
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
    let error = start(&program, &fixture.setup()).unwrap_err();
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
    let error = start(&program, &fixture.setup()).unwrap_err();
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
fn a_missing_working_directory_fails_the_start() {
    let fixture = Fixture::new();
    let program = Program::new(
        Path::new("/bin/true"),
        [] as [&str; 0],
        BTreeMap::<&str, &str>::new(),
        &fixture.dir.path().join("missing"),
    )
    .unwrap();
    let error = start(&program, &fixture.setup()).unwrap_err();
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
