//! Starting a child: its own process group, an explicit environment and working directory, and
//! stdout/stderr appended to its log file.

use std::fs::File;
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
    #[error("cannot start {executable}")]
    Exec {
        executable: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot limit the memory of {executable} to {bytes} bytes (RLIMIT_DATA); it was stopped"
    )]
    Limit {
        executable: PathBuf,
        bytes: u64,
        #[source]
        source: std::io::Error,
    },
}

/// Sets the `RLIMIT_DATA` of the process `pid` (soft and hard) to `bytes`.
fn set_data_rlimit(pid: u32, bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: prlimit reads `limit`, a valid rlimit for the call's duration, and writes nothing
    // (the old-limit pointer is null).
    let result = unsafe { libc::prlimit(pid, libc::RLIMIT_DATA, &limit, std::ptr::null_mut()) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
    let spawning = children.begin_spawn();
    let child = command.spawn().map_err(|source| SpawnError::Exec {
        executable: spec.executable.clone(),
        source,
    })?;
    let pid = child.id();
    spawning.record(pid, Child::Process);
    if let Some(bytes) = LimitEnforcement::data_rlimit(spec.resources.as_ref(), context.limit_mode)
    {
        // Set from here, on the child that posix_spawn has just exec'd, rather than in the child
        // before exec: a hook between fork and exec would make every limited spawn a full fork
        // of the launcher (measured: a restart 1.6 ms slower, a cold start of 1000 twice as
        // long). The program is still in its dynamic loader when this lands, microseconds after
        // its exec; memory it took before then is not taken back.
        if let Err(source) = set_data_rlimit(pid, bytes) {
            // Ours and unreaped: the pid cannot be anyone else's. Its exit reaches the reaper,
            // which finds no id for it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(SpawnError::Limit {
                executable: spec.executable.clone(),
                bytes,
                source,
            });
        }
    }
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
