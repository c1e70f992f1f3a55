//! Starting a child: its own process group, an explicit environment and working directory, stdin
//! from /dev/null, stdout/stderr appended to its log file, its memory limit and, in cgroup mode,
//! the join of its leaf, through `vfork_spawn` (a child that shares the launcher's memory until
//! its exec, not a fork). The child writes the instance's marker line to its log before its
//! exec (`logs::marker_around_pid`), so that the marker comes before anything it prints.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use super::logs::marker_around_pid;
use super::reaper::{Child, ChildTable};
use super::vfork_spawn::{self, ChildSetup, MarkerLine, Program, StartError, Step};
use crate::reconcile::{
    child_environment, ChildIdentity, LimitEnforcement, LimitMode, Ports, ProcessId, ProcessSpec,
};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open the log file {path}")]
    OpenLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {executable}: the child cannot join its cgroup {cgroup}")]
    JoinCgroup {
        executable: PathBuf,
        cgroup: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {executable} ({step})")]
    Exec {
        executable: PathBuf,
        /// Where the start failed: `Step::Exec` for the exec itself.
        step: Step,
        #[source]
        source: std::io::Error,
    },
}

/// What a child needs besides its spec.
#[derive(Debug, Clone, Copy)]
pub struct SpawnContext<'a> {
    pub launcher_id: &'a str,
    pub log_dir: &'a Path,
    /// Unique to this spawn; given as `PRISM_INSTANCE_ID`.
    pub instance: &'a str,
    /// The generation of the desired record the process is started from, for its log's marker.
    pub generation: u64,
    /// What the host enforces limits with.
    pub limit_mode: LimitMode,
    /// In cgroup mode, the process's cgroup, which the child joins before its exec.
    pub join_cgroup: Option<JoinCgroup<'a>>,
}

/// A cgroup for the child to join: the leaf's `cgroup.procs`, opened by the launcher.
#[derive(Debug, Clone, Copy)]
pub struct JoinCgroup<'a> {
    pub procs: BorrowedFd<'a>,
    /// The leaf, for the error.
    pub path: &'a Path,
}

/// Where a process's stdout and stderr go.
pub fn log_path(log_dir: &Path, id: &ProcessId) -> PathBuf {
    log_dir.join(format!("{id}.log"))
}

/// Starts the process in its own process group and records its pid in `children` before anyone
/// can reap it. Returns the pid.
pub fn spawn_child(
    id: &ProcessId,
    spec: &ProcessSpec,
    ports: Ports,
    context: SpawnContext<'_>,
    children: &ChildTable,
) -> Result<u32, SpawnError> {
    let log_path = log_path(context.log_dir, id);
    let log = open_log(&log_path)?;
    let child = ChildIdentity {
        id,
        ports,
        launcher_id: context.launcher_id,
        instance: context.instance,
    };
    let env = child_environment(spec, child, |name| std::env::var(name).ok());
    let exec_failed = |source: StartError| match (source.step, context.join_cgroup) {
        (Step::JoinCgroup, Some(join)) => SpawnError::JoinCgroup {
            executable: spec.executable.clone(),
            cgroup: join.path.to_path_buf(),
            source: source.source,
        },
        (step, _) => SpawnError::Exec {
            executable: spec.executable.clone(),
            step,
            source: source.source,
        },
    };
    let program = Program::new(&spec.executable, &spec.args, &env, &working_dir(spec))
        .map_err(exec_failed)?;
    let dev_null = File::open("/dev/null").map_err(|source| SpawnError::Exec {
        executable: spec.executable.clone(),
        step: Step::Prepare,
        source,
    })?;
    // The time read here, just before the clone, is when the instance started as its log says.
    let (before_pid, after_pid) =
        marker_around_pid(crate::clock::now(), context.generation, context.instance);
    let setup = ChildSetup {
        stdin: dev_null.as_fd(),
        stdout: log.as_fd(),
        stderr: log.as_fd(),
        // Set in the child before its program starts, so that nothing it maps escapes the limit
        // (set from the parent after the spawn, a program that allocates at once beat it).
        data_limit: LimitEnforcement::data_rlimit(spec.resources.as_ref(), context.limit_mode),
        // Joined in the child, before its exec, so that everything it runs starts in its
        // cgroup: writing "0" to a cgroup's `cgroup.procs` moves the writer.
        cgroup_procs: context.join_cgroup.map(|join| join.procs),
        marker: Some(MarkerLine {
            before_pid: before_pid.as_bytes(),
            after_pid: after_pid.as_bytes(),
        }),
    };
    let spawning = children.begin_spawn();
    let started = vfork_spawn::start(&program, &setup, &spawning).map_err(exec_failed)?;
    spawning.record(started.pid, Child::Process, started.pidfd);
    Ok(started.pid)
}

/// Where a process (and its exec probes) run: its spec's `workingDir`, else its executable's
/// folder.
pub fn working_dir(spec: &ProcessSpec) -> PathBuf {
    spec.working_dir
        .clone()
        .or_else(|| spec.executable.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn open_log(path: &Path) -> Result<File, SpawnError> {
    crate::private_fs::open_private_append(path).map_err(|source| SpawnError::OpenLog {
        path: path.to_path_buf(),
        source,
    })
}
