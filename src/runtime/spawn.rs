//! Starting a child: its own process group, an explicit environment and working directory, and
//! stdout/stderr appended to its log file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::reaper::{Child, ChildTable};
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
    #[error("cannot start {executable}")]
    Exec {
        executable: PathBuf,
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
    /// What the host enforces limits with.
    pub limit_mode: LimitMode,
    /// In cgroup mode, the process's cgroup, which the child joins before its exec.
    pub join_cgroup: Option<JoinCgroup<'a>>,
}

/// A cgroup for the child to join: the leaf's `cgroup.procs`, opened by the launcher.
#[derive(Debug, Clone, Copy)]
pub struct JoinCgroup<'a> {
    pub procs: std::os::fd::BorrowedFd<'a>,
    /// The leaf, for the error.
    pub path: &'a Path,
}

/// Added to the errno of a failed join in the child, so that the parent tells it from a failed
/// exec: std hands a pre-exec hook's raw error number to the parent unchanged, and errnos are
/// far below this.
const JOIN_ERRNO_OFFSET: i32 = 1 << 16;

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
    let log_for_stderr = log.try_clone().map_err(|source| SpawnError::OpenLog {
        path: log_path.clone(),
        source,
    })?;
    let child = ChildIdentity {
        id,
        ports,
        launcher_id: context.launcher_id,
        instance: context.instance,
    };
    let env = child_environment(spec, child, |name| std::env::var(name).ok());
    let working_dir = working_dir(spec);
    let mut command = Command::new(&spec.executable);
    command
        .args(&spec.args)
        .env_clear()
        .envs(&env)
        .current_dir(&working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_for_stderr))
        .process_group(0);
    if let Some(bytes) = LimitEnforcement::data_rlimit(spec.resources.as_ref(), context.limit_mode)
    {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // Set in the child before its program starts, so that nothing it maps escapes the limit
        // (set from the parent after posix_spawn, a program that allocates at once beat it). The
        // price: a spawn with a hook forks instead of using posix_spawn, about 1.6 ms more per
        // start of a limited process (BENCHMARKS.md, "Memory limits").
        // SAFETY: the hook runs between fork and exec, where only async-signal-safe calls are
        // allowed: setrlimit is a plain system call, and `limit` was built before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_DATA, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    if let Some(join) = context.join_cgroup {
        let procs = join.procs.as_raw_fd();
        // Joined in the child, before its exec, so that everything it runs starts in its
        // cgroup: writing "0" to a cgroup's `cgroup.procs` moves the writer.
        // SAFETY: between fork and exec only async-signal-safe calls are allowed: write(2) to a
        // descriptor opened before the fork (it outlives the spawn: `join` borrows it), and on
        // failure a read of errno into an `io::Error` of the `Os` kind, which allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::write(procs, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    Err(std::io::Error::from_raw_os_error(JOIN_ERRNO_OFFSET + errno))
                }
            });
        }
    }
    let spawning = children.begin_spawn();
    let child =
        command.spawn().map_err(
            |source| match (context.join_cgroup, source.raw_os_error()) {
                (Some(join), Some(raw)) if raw >= JOIN_ERRNO_OFFSET => SpawnError::JoinCgroup {
                    executable: spec.executable.clone(),
                    cgroup: join.path.to_path_buf(),
                    source: std::io::Error::from_raw_os_error(raw - JOIN_ERRNO_OFFSET),
                },
                _ => SpawnError::Exec {
                    executable: spec.executable.clone(),
                    source,
                },
            },
        )?;
    let pid = child.id();
    spawning.record(pid, Child::Process);
    // The reaper owns the exit status; dropping `child` neither waits for nor kills the process.
    drop(child);
    Ok(pid)
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
