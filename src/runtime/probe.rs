//! Health probes (HTTP GET with a 2xx answer, TCP connect, exec with exit code 0), each in its
//! own task so that a slow probe never blocks the loop or another probe.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::event_loop::Event;
use super::reaper::{Child, ChildTable};
use super::vfork_spawn::{self, ChildSetup, Program};
use crate::reconcile::{ExitStatus, HealthCheck, Probe, ProcessId};

/// Until a process is ready, probes run this often at first, doubling up to the interval, so
/// that readiness is seen within milliseconds even with a long interval.
const FIRST_READINESS_PROBE_DELAY: Duration = Duration::from_millis(50);

/// Most bytes of an HTTP answer read to find its status line.
const MAX_STATUS_LINE_BYTES: usize = 1024;

/// What exec probes run with: the process's environment (less the launcher id, so that a probe
/// is never taken for a process of ours) and working directory, and the child table that gets
/// their exit status from the reaper.
#[derive(Debug, Clone)]
pub struct ExecContext {
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    pub children: ChildTable,
}

/// Starts probing `pid` of `id`; results arrive on `events` as `Event::ProbeResult`.
pub fn start_probing(
    id: ProcessId,
    pid: u32,
    check: HealthCheck,
    health_port: u16,
    exec: ExecContext,
    events: mpsc::UnboundedSender<Event>,
) -> AbortHandle {
    tokio::spawn(async move {
        tokio::time::sleep(check.initial_delay).await;
        let mut passes = 0u32;
        let mut readiness_delay = FIRST_READINESS_PROBE_DELAY;
        loop {
            let result = match &check.probe {
                Probe::Exec { command } => exec_probe(command, &exec, check.timeout).await,
                probe => probe_once(probe, health_port, check.timeout).await,
            };
            let passed = result.is_ok();
            let event = Event::ProbeResult {
                id: id.clone(),
                pid,
                result,
            };
            if events.send(event).is_err() {
                return;
            }
            passes = if passed { passes + 1 } else { 0 };
            let ready = passes >= check.success_threshold;
            let delay = if ready {
                check.interval
            } else {
                let delay = readiness_delay.min(check.interval);
                readiness_delay = readiness_delay.saturating_mul(2);
                delay
            };
            tokio::time::sleep(delay).await;
        }
    })
    .abort_handle()
}

/// Runs `command` as an exec probe, bounded by `timeout` (then its process group is killed).
async fn exec_probe(
    command: &[String],
    exec: &ExecContext,
    timeout: Duration,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("exec probe has no command".to_string());
    };
    let (sender, exited) = oneshot::channel();
    // Path lookups, the open of /dev/null, the spawn guard and the clone block: off the async
    // workers, which serve the API and the probes. The guard comes back with the pid, so that a
    // probe task aborted meanwhile still kills the probe (the task's output is dropped).
    let _unfinished = {
        let (name, args, exec) = (program.clone(), args.to_vec(), exec.clone());
        tokio::task::spawn_blocking(move || start_probe(&name, &args, &exec, sender))
            .await
            .map_err(|error| format!("exec probe {program:?} cannot start: {error}"))??
    };
    // `_unfinished` kills the probe if this future ends before it does: a timeout, or the probe
    // task being aborted because its process stopped or the launcher shuts down.
    match tokio::time::timeout(timeout, exited).await {
        Ok(Ok(ExitStatus::Code(0))) => Ok(()),
        Ok(Ok(status)) => Err(format!("exec probe {program:?} exited with {status}")),
        Ok(Err(_)) => Err(format!("exec probe {program:?} lost its exit status")),
        Err(_) => Err(format!(
            "exec probe {program:?} gave no answer within {timeout:?}"
        )),
    }
}

/// Starts an exec probe as the processes are started (vfork_spawn: its own process group,
/// exactly its environment, /dev/null for its streams, the launcher's raised limits given back,
/// no copy of the launcher's descriptor table, a pidfd for its exit), its exit status to go to
/// `sender`. Returns the guard that kills it unless it has exited. Blocking.
fn start_probe(
    program: &str,
    args: &[String],
    exec: &ExecContext,
    sender: oneshot::Sender<ExitStatus>,
) -> Result<KillProbeOnDrop, String> {
    let cannot_start =
        |error: &dyn std::fmt::Display| format!("exec probe {program:?} cannot start: {error}");
    let executable = resolve_program(program, &exec.env, &exec.working_dir)
        .ok_or_else(|| cannot_start(&"not found in the probe's PATH"))?;
    let launch = Program::new(&executable, args, &exec.env, &exec.working_dir)
        .map_err(|error| cannot_start(&error))?;
    let dev_null = File::open("/dev/null").map_err(|error| cannot_start(&error))?;
    let setup = ChildSetup {
        stdin: dev_null.as_fd(),
        stdout: dev_null.as_fd(),
        stderr: dev_null.as_fd(),
        data_limit: None,
        cgroup_procs: None,
        marker: None,
    };
    let spawning = exec.children.begin_spawn();
    let started =
        vfork_spawn::start(&launch, &setup, &spawning).map_err(|error| cannot_start(&error))?;
    spawning.record(started.pid, Child::Probe(sender), started.pidfd);
    Ok(KillProbeOnDrop {
        pid: started.pid,
        children: exec.children.clone(),
    })
}

/// Where `program` is, as `execvp` would find it: itself when it names a path (relative to the
/// probe's working directory), else the first executable file of that name in the directories
/// of the probe's `PATH` (the launcher's own when the probe has none).
fn resolve_program(
    program: &str,
    env: &BTreeMap<String, String>,
    working_dir: &std::path::Path,
) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(working_dir.join(program));
    }
    let search = env
        .get("PATH")
        .cloned()
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_string());
    search
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| working_dir.join(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}

/// SIGKILLs the process group of an exec probe that has not been reaped yet.
struct KillProbeOnDrop {
    pid: u32,
    children: ChildTable,
}

impl Drop for KillProbeOnDrop {
    fn drop(&mut self) {
        let tracked = self.children.lock();
        if !tracked.contains_key(&self.pid) {
            return;
        }
        if let Ok(raw) = i32::try_from(self.pid) {
            // Unreaped (checked under the table's lock), so the group id is still the probe's.
            let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
}

/// Runs one network probe against 127.0.0.1, bounded by `timeout`.
pub async fn probe_once(probe: &Probe, health_port: u16, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        match probe {
            Probe::Exec { .. } => Err("exec probes run through exec_probe".to_string()),
            Probe::Http { path, port } => http_get(port.unwrap_or(health_port), path).await,
            Probe::Tcp { port } => {
                let port = port.unwrap_or(health_port);
                TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                    .await
                    .map(drop)
                    .map_err(|error| format!("tcp connect to 127.0.0.1:{port}: {error}"))
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|error| format!("GET {url}: {error}"))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("GET {url}: {error}"))?;
    let mut answer = Vec::with_capacity(128);
    let mut buffer = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < MAX_STATUS_LINE_BYTES {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let status_line = status_line.lines().next().unwrap_or_default();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {url}: not an HTTP answer: {status_line:?}"))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {url}: status {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request).await;
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn http_probe_passes_on_2xx_and_fails_on_other_answers() {
        let timeout = Duration::from_secs(5);
        let probe = Probe::Http {
            path: "/health".into(),
            port: None,
        };
        let ok = serve_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(probe_once(&probe, ok, timeout).await, Ok(()));
        let failing = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let error = probe_once(&probe, failing, timeout).await.unwrap_err();
        assert!(error.contains("status 503"), "{error}");
        let garbage = serve_once("hello\n").await;
        let error = probe_once(&probe, garbage, timeout).await.unwrap_err();
        assert!(error.contains("not an HTTP answer"), "{error}");
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = Probe::Tcp { port: None };
        assert_eq!(
            probe_once(&probe, port, Duration::from_secs(5)).await,
            Ok(())
        );
        drop(listener);
        assert!(probe_once(&probe, port, Duration::from_secs(5))
            .await
            .is_err());
    }
}
