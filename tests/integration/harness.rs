//! Shared helpers: a temporary launcher running the real binary, a poller with a deadline, and
//! /proc readers. Every launcher is killed on drop together with every process that carries its
//! launcher id, so a failing test leaves nothing behind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prism_launcher::api::proto::prism::launcher::pattern_launcher_client::PatternLauncherClient;
use serde_json::Value;

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_prism-launcher");
pub const HELLO_PATTERN: &str = env!("CARGO_BIN_EXE_hello-pattern");

/// Polls `condition` until it returns `Some` or `timeout` passes; panics with `what` on timeout.
pub fn eventually<T>(timeout: Duration, what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A port range of its own for each launcher, so that parallel tests do not race for ports.
fn port_range() -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed) * 7919) % 200;
    let start = 21000 + (slot as u16) * 50;
    (start, start + 49)
}

/// A launcher under test, with its own temporary data and spec directories.
pub struct TestLauncher {
    pub dir: tempfile::TempDir,
    pub launcher_id: String,
    ports: (u16, u16),
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    specs: PathBuf,
}

impl TestLauncher {
    /// Starts a launcher on a fresh temporary directory.
    pub fn start() -> TestLauncher {
        TestLauncher::start_with(&[])
    }

    /// Starts a launcher on a fresh temporary directory with extra `serve` flags.
    pub fn start_with(extra_args: &[&str]) -> TestLauncher {
        TestLauncher::start_with_catalog(extra_args, |_| {})
    }

    /// Starts a launcher with extra `serve` flags, after `prepare` has changed the test catalog
    /// (the patterns directory, in the launcher's temporary directory).
    pub fn start_with_catalog(
        extra_args: &[&str],
        prepare: impl FnOnce(&std::path::Path),
    ) -> TestLauncher {
        TestLauncher::start_with_env_and_catalog(extra_args, &[], prepare)
    }

    /// Starts a launcher with extra `serve` flags and environment variables.
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> TestLauncher {
        TestLauncher::start_with_env_and_catalog(extra_args, env, |_| {})
    }

    fn start_with_env_and_catalog(
        extra_args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&std::path::Path),
    ) -> TestLauncher {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir_all(dir.path().join("specs")).expect("spec directory");
        write_test_patterns(&dir.path().join("patterns"));
        prepare(&dir.path().join("patterns"));
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let launcher_id = format!(
            "test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let specs = dir.path().join("specs");
        let mut launcher = TestLauncher {
            specs,
            dir,
            launcher_id,
            ports: port_range(),
            extra_args: extra_args.iter().map(ToString::to_string).collect(),
            extra_env: env
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            child: None,
        };
        launcher.spawn();
        launcher
    }

    /// (Re)starts the launcher process on the same directories.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the launcher is already running");
        let _ = std::fs::remove_file(self.data_dir().join("launcher.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("launcher.log"))
            .expect("launcher log");
        let child = Command::new(LAUNCHER)
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--specs-dir")
            .arg(self.specs_dir())
            .arg("--patterns-dir")
            .arg(self.patterns_dir())
            .args(["--launch-timeout", "3s"])
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--port-range")
            .arg(format!("{}-{}", self.ports.0, self.ports.1))
            .arg("--launcher-id")
            .arg(&self.launcher_id)
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(key, value)| (key, value)))
            .env("RUST_LOG", "debug")
            // Must never reach a child: the launcher passes only what a spec names.
            .env("PRISM_TEST_SECRET", "do-not-leak")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prism-launcher");
        self.child = Some(child);
        self.address();
    }

    /// The pid of the running launcher.
    pub fn launcher_pid(&self) -> u32 {
        self.child.as_ref().expect("launcher running").id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn specs_dir(&self) -> PathBuf {
        self.specs.clone()
    }

    /// Watches another spec directory from the next `spawn` on.
    pub fn use_specs_dir(&mut self, dir: PathBuf) {
        self.specs = dir;
    }

    pub fn patterns_dir(&self) -> PathBuf {
        self.dir.path().join("patterns")
    }

    /// The HTTP endpoint's address (`/metrics`, `/healthz`...).
    pub fn metrics_address(&mut self) -> String {
        self.address();
        std::fs::read_to_string(self.data_dir().join("metrics.addr")).expect("metrics.addr")
    }

    /// A GET on the HTTP endpoint: the status code and the body.
    pub fn http_get(&mut self, path: &str) -> (u16, String) {
        http_get(&self.metrics_address(), path)
    }

    /// A PatternLauncher client connected to this launcher.
    pub async fn pattern_client(&mut self) -> PatternLauncherClient<tonic::transport::Channel> {
        PatternLauncherClient::connect(format!("http://{}", self.address()))
            .await
            .expect("connect to the launcher")
    }

    /// A channel to this launcher, for any client.
    pub async fn channel(&mut self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.address()))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the launcher")
    }

    /// A channel to this launcher through its Unix socket (where the launcher's own privileged
    /// calls are open to the launcher's user).
    pub async fn socket_channel(&mut self) -> tonic::transport::Channel {
        self.address();
        let socket = self.data_dir().join("launcher.sock");
        tonic::transport::Endpoint::from_shared(format!("unix:{}", socket.display()))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the launcher's socket")
    }

    /// The gRPC address, once the launcher has written it.
    pub fn address(&mut self) -> String {
        let file = self.data_dir().join("launcher.addr");
        let log = self.dir.path().join("launcher.log");
        let child = self.child.as_mut().expect("launcher running");
        eventually(Duration::from_secs(20), "the launcher to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the launcher exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&file)
                .ok()
                .filter(|text| !text.is_empty())
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("launcher.log")).unwrap_or_default()
    }

    pub fn write_spec(&self, file: &str, text: &str) {
        // Written beside the directory and renamed in, as editors and deploy tools do, so the
        // watcher never reads half a file.
        let staging = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&staging, text).expect("write spec");
        std::fs::rename(&staging, self.specs_dir().join(file)).expect("move spec in place");
    }

    pub fn remove_spec(&self, file: &str) {
        std::fs::remove_file(self.specs_dir().join(file)).expect("remove spec");
    }

    /// Runs a client subcommand of the binary against this launcher.
    pub fn cli(&mut self, args: &[&str]) -> Output {
        // Through the data directory's socket, as an operator's CLI does by default.
        self.address();
        let data_dir = self.data_dir();
        Command::new(LAUNCHER)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .output()
            .expect("run prism-launcher")
    }

    /// `status -o json`, parsed.
    pub fn status(&mut self) -> Value {
        let output = self.cli(&["status", "-o", "json"]);
        assert!(
            output.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("status prints JSON")
    }

    /// The status row of `id`, if the launcher knows it.
    pub fn process(&mut self, id: &str) -> Option<Value> {
        let status = self.status();
        status["processes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["id"] == id).cloned())
    }

    /// Waits until `id` runs (with a live pid other than `not`) and returns its pid.
    pub fn wait_running(&mut self, id: &str, not: Option<u32>, timeout: Duration) -> u32 {
        eventually(timeout, &format!("{id} to run"), || {
            let row = self.process(id)?;
            let pid = row["pid"].as_u64()? as u32;
            (row["actual"] == "running" && Some(pid) != not && is_alive(pid)).then_some(pid)
        })
    }

    /// Sends `signal` to the launcher and waits for it to exit; returns how long that took.
    pub fn stop(&mut self, signal: Signal, timeout: Duration) -> Duration {
        let mut child = self.child.take().expect("launcher running");
        let started = Instant::now();
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal the launcher");
        eventually(timeout, "the launcher to exit", || {
            child.try_wait().ok().flatten()
        });
        started.elapsed()
    }

    /// Pids of live processes carrying this launcher's id.
    pub fn our_processes(&self) -> Vec<u32> {
        processes_with_env("PRISM_LAUNCHER_ID", &self.launcher_id)
    }
}

impl Drop for TestLauncher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in ["PRISM_LAUNCHER_ID", "PRISM_PROBE_OF"] {
            for pid in processes_with_env(name, &self.launcher_id) {
                crate::kill_ours::kill_if_carrying(pid, name, &self.launcher_id);
            }
        }
        if std::thread::panicking() {
            eprintln!("--- launcher log ---\n{}", self.log());
        }
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|state| state != 'Z' && state != 'X')
}

/// The state letter of /proc/<pid>/stat (R, S, Z...), if the process exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// The process group of `pid`, from /proc.
fn process_group(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Every process (zombies included) whose process group is `group`.
pub fn group_members(group: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| process_group(&stat))
                == Some(group)
        })
        .collect()
}

/// The environment of `pid`.
pub fn environment(pid: u32) -> BTreeMap<String, String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    bytes
        .split(|byte| *byte == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

/// Live processes whose environment has `name=value`.
pub fn processes_with_env(name: &str, value: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| is_alive(*pid))
        .filter(|pid| environment(*pid).get(name).map(String::as_str) == Some(value))
        .collect()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A spec file with one process running `hello-pattern` under `sh`, which first starts a
/// `sleep` in the same process group (to prove the whole group is stopped).
pub fn hello_spec(name: &str, greeting: &str) -> String {
    format!(
        r#"apiVersion: prism.launcher/v1
kind: Process
metadata:
  name: {name}
spec:
  binary: /bin/sh
  args: ["-c", "sleep 600 & exec \"$HELLO_BIN\""]
  env:
    HELLO_BIN: {HELLO_PATTERN}
    GREETING: {greeting}
  healthCheck:
    http:
      path: /health
    interval: 200ms
  terminationGracePeriod: 5s
"#
    )
}

/// Writes the test catalog: `hello-pattern` (the real example, health-checked), `sick-pattern`
/// (answers 503 to every health check) and `stubborn-pattern` (ignores SIGTERM). No manifest
/// names a port, so parallel tests never ask for the same one.
pub fn write_test_patterns(dir: &std::path::Path) {
    write_manifest(dir, "hello-pattern", HELLO_PATTERN, "namespace", "{}");
    // Its ready deadline (20 failures × 1 s) is far past the launch timeout (3 s), so a launch of
    // it answers while it is still starting, never racing the stop at its deadline.
    write_manifest_with_threshold(
        dir,
        "sick-pattern",
        HELLO_PATTERN,
        "none",
        "{HELLO_FAIL_HEALTH: \"1\"}",
        20,
    );
    let stubborn = dir.join("stubborn-pattern");
    std::fs::create_dir_all(&stubborn).expect("pattern folder");
    let script = stubborn.join("run.sh");
    // An ignored signal stays ignored across exec, so hello-pattern itself ignores SIGTERM.
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntrap '' TERM\nexec {HELLO_PATTERN}\n"),
    )
    .expect("script");
    let mut permissions = std::fs::metadata(&script).expect("script").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).expect("make the script executable");
    write_manifest(dir, "stubborn-pattern", "./run.sh", "none", "{}");
}

pub fn write_manifest(
    dir: &std::path::Path,
    name: &str,
    executable: &str,
    isolation: &str,
    environment: &str,
) {
    write_manifest_with_threshold(dir, name, executable, isolation, environment, 3);
}

/// `write_manifest` with the health check's failure threshold given.
pub fn write_manifest_with_threshold(
    dir: &std::path::Path,
    name: &str,
    executable: &str,
    isolation: &str,
    environment: &str,
    failure_threshold: u32,
) {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("pattern folder");
    std::fs::write(
        folder.join("manifest.yaml"),
        format!(
            "name: {name}\nversion: 1.0.0\nexecutable: {executable}\nisolation_level: {isolation}\n\
             healthcheck:\n  path: /health\n  interval: 200ms\n  timeout: 1s\n  failure_threshold: {failure_threshold}\n\
             resources: {{cpu_limit: 0.5, memory_limit: 64Mi}}\n\
             environment: {environment}\n"
        ),
    )
    .expect("write manifest");
}

/// A plain HTTP/1.0 GET against `address`: the status code and the body.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the HTTP endpoint");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an HTTP answer");
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (code, body)
}

/// The guard's kill (`kill_ours::kill_if_carrying`) reaches a process that carries the value,
/// with the group it leads, and leaves one that carries another alone.
#[test]
fn the_guard_kills_what_carries_the_value_and_nothing_else() {
    use std::os::unix::process::CommandExt;
    let value = format!("kill-ours-{}", std::process::id());
    let start = |carried: &str| {
        Command::new("/bin/sh")
            .args(["-c", "sleep 600 & exec sleep 600"])
            .env("PRISM_KILL_OURS_TEST", carried)
            .process_group(0)
            .spawn()
            .expect("spawn a sleeper")
    };
    let mut ours = start(&value);
    let mut other = start("someone-else");
    // Both reaped at the end whatever happens: our own unreaped children.
    struct Reap<'a>(&'a mut Child, &'a mut Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            for child in [&mut *self.0, &mut *self.1] {
                let _ = nix::sys::signal::killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
    }
    let (ours_pid, other_pid) = (ours.id(), other.id());
    let guard = Reap(&mut ours, &mut other);
    // The backgrounded sleep is in the leader's group; wait until it is there.
    let members = eventually(
        Duration::from_secs(10),
        "the group's second sleeper",
        || {
            let members = group_members(ours_pid);
            (members.len() == 2).then_some(members)
        },
    );
    crate::kill_ours::kill_if_carrying(ours_pid, "PRISM_KILL_OURS_TEST", &value);
    crate::kill_ours::kill_if_carrying(other_pid, "PRISM_KILL_OURS_TEST", &value);
    eventually(Duration::from_secs(10), "the group to be killed", || {
        members.iter().all(|pid| !is_alive(*pid)).then_some(())
    });
    assert!(
        is_alive(other_pid),
        "a process carrying another value is left alone"
    );
    drop(guard);
}
