//! Starting a child: its own process group, an explicit environment and working directory, and
//! stdout/stderr appended to its log file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::reaper::{Child, ChildTable};
use crate::reconcile::{Ports, ProcessId, ProcessSpec};

/// Variables passed from the launcher's environment to every child when set.
pub const PASSED_THROUGH_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// The PATH a child gets when the launcher has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

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
}

/// What a child needs besides its spec.
#[derive(Debug, Clone, Copy)]
pub struct SpawnContext<'a> {
    pub launcher_id: &'a str,
    pub log_dir: &'a Path,
    /// Unique to this spawn; given as `PRISM_INSTANCE_ID`.
    pub instance: &'a str,
}

/// Where a process's stdout and stderr go.
pub fn log_path(log_dir: &Path, id: &ProcessId) -> PathBuf {
    log_dir.join(format!("{id}.log"))
}

/// The whole environment of a child: the pass-through variables, the ones its spec inherits and
/// sets, and the injected ones, which nothing overrides.
pub fn child_environment(
    id: &ProcessId,
    spec: &ProcessSpec,
    ports: Ports,
    launcher_id: &str,
    launcher_env: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in PASSED_THROUGH_ENV
        .iter()
        .copied()
        .chain(spec.inherit_env.iter().map(String::as_str))
    {
        if let Some(value) = launcher_env(name) {
            env.insert(name.to_string(), value);
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    env.extend(spec.env.clone());
    env.extend(spec.type_config.environment());
    let injected = [
        (
            "PATTERN_NAME",
            spec.pattern.clone().unwrap_or_else(|| id.to_string()),
        ),
        ("NAMESPACE", spec.namespace.clone().unwrap_or_default()),
        ("SESSION_ID", spec.session_id.clone().unwrap_or_default()),
        ("GRPC_PORT", ports.grpc.to_string()),
        ("HEALTH_PORT", ports.health.to_string()),
        ("PROCESS_ID", id.to_string()),
        ("PROCESS_TYPE", spec.process_type.as_str().to_string()),
        ("PRISM_LAUNCHER_ID", launcher_id.to_string()),
    ];
    for (name, value) in injected {
        env.insert(name.to_string(), value);
    }
    env
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
    let mut env = child_environment(id, spec, ports, context.launcher_id, |name| {
        std::env::var(name).ok()
    });
    env.insert(
        "PRISM_INSTANCE_ID".to_string(),
        context.instance.to_string(),
    );
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
    let mut tracked = children.lock();
    let child = command.spawn().map_err(|source| SpawnError::Exec {
        executable: spec.executable.clone(),
        source,
    })?;
    let pid = child.id();
    tracked.insert(pid, Child::Process);
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
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| SpawnError::OpenLog {
            path: path.to_path_buf(),
            source,
        })
}
