//! How `serve` is configured: a `--config` file, `PRISM_LAUNCHER_*` variables and flags, in that
//! order of precedence, as `--print-config` shows; and ADR-057's command line, which runs the
//! launcher with serve's flags and no subcommand, under both names.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{eventually, LAUNCHER};

const PATTERN_LAUNCHER: &str = env!("CARGO_BIN_EXE_pattern-launcher");

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("launcher.yaml");
    std::fs::write(
        &file,
        "listen: :7070\nmax-processes: 50\nregion: from-the-file\ncapabilities: [pattern, proxy]\nbackoff-max: 2m\nheartbeat-interval: 10s\n",
    )
    .unwrap();
    let output = Command::new(LAUNCHER)
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--max-processes", "60", "--print-config"])
        .env("PRISM_LAUNCHER_REGION", "from-the-environment")
        .env("PRISM_LAUNCHER_BACKOFF_MAX", "3m")
        .env("PRISM_LAUNCHER_RESYNC_INTERVAL", "45s")
        .env_remove("PRISM_LAUNCHER_CONFIG")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "max-processes: 60  # flag",
        "region: from-the-environment  # environment PRISM_LAUNCHER_REGION",
        "backoff-max: 3m  # environment PRISM_LAUNCHER_BACKOFF_MAX",
        "resync-interval: 45s  # environment PRISM_LAUNCHER_RESYNC_INTERVAL",
        "listen: \":7070\"  # configuration file",
        "capabilities: [pattern, proxy]  # configuration file",
        "heartbeat-interval: 10s  # configuration file",
        "failure-threshold: 5  # default",
        "metrics-listen: \"127.0.0.1:9092\"  # default",
    ] {
        assert!(
            printed.lines().any(|printed| printed == line),
            "no {line:?} in:\n{printed}"
        );
    }
    // What it printed is a configuration file that gives the same configuration.
    let again = dir.path().join("printed.yaml");
    std::fs::write(&again, printed.as_bytes()).unwrap();
    let reprinted = Command::new(LAUNCHER)
        .args(["serve", "--print-config", "--config"])
        .arg(&again)
        .env_remove("PRISM_LAUNCHER_CONFIG")
        .output()
        .unwrap();
    assert!(reprinted.status.success());
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split("  # ").next().unwrap_or(line).to_string())
            .collect()
    };
    assert_eq!(
        values(&String::from_utf8_lossy(&reprinted.stdout)),
        values(&printed)
    );
}

#[test]
fn a_bad_configuration_file_is_a_usage_error_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("launcher.yaml");
    for (text, expected) in [
        ("listen-on: 1\n", "\"listen-on\" is not a flag of serve"),
        (
            "max-processes: many\n",
            "max-processes: invalid value 'many'",
        ),
        ("- listen\n", "must be a mapping"),
    ] {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(LAUNCHER)
            .args(["serve", "--config"])
            .arg(&file)
            .env_remove("PRISM_LAUNCHER_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains(expected),
            "{text}: {stderr}"
        );
    }
}

/// Starts `program` with `args` on a data directory of `dir`, and waits until it serves (its
/// address file is written) or exits. Returns its exit status if it exited, and its stderr.
fn run_until_serving(
    program: &str,
    dir: &Path,
    args: &[&str],
) -> (Option<std::process::ExitStatus>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("PRISM_LAUNCHER_CONFIG")
        .current_dir(dir)
        .spawn()
        .expect("start the launcher");
    let pid = Pid::from_raw(child.id() as i32);
    let exited = eventually(
        Duration::from_secs(20),
        "the launcher to serve or exit",
        || {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Some(Some(status));
            }
            std::fs::read_to_string(dir.join("data/launcher.addr"))
                .ok()
                .filter(|text| !text.is_empty())
                .map(|_| None)
        },
    );
    if exited.is_none() {
        // Serving: a graceful stop, bounded; SIGKILL if it is not over in time.
        let _ = kill(pid, Signal::SIGTERM);
        let stopped = eventually(Duration::from_secs(20), "the launcher to stop", || {
            child.try_wait().ok().flatten()
        });
        assert!(stopped.success(), "a SIGTERM ends it cleanly: {stopped:?}");
    }
    let _ = kill(pid, Signal::SIGKILL);
    let output = child.wait_with_output().expect("launcher output");
    (exited, String::from_utf8_lossy(&output.stderr).to_string())
}

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, "a-token-of-thirty-two-characters\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn adr_057s_command_line_runs_the_launcher_without_a_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    std::fs::create_dir_all(dir.path().join("patterns")).unwrap();
    let adr = [
        "--launcher-id",
        "launcher-01",
        "--listen",
        ":0",
        "--max-processes",
        "50",
        "--capabilities",
        "pattern,proxy,backend",
        "--data-dir",
        "data",
        "--specs-dir",
        "specs",
        "--patterns-dir",
        "patterns",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    // `:0` is every interface: refused without a token or mutual TLS, as `serve` refuses it.
    let (exited, stderr) = run_until_serving(LAUNCHER, dir.path(), &adr);
    let status = exited.expect("refused without authentication");
    assert!(!status.success());
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
    let token = token_file(dir.path());
    let mut with_token: Vec<&str> = adr.to_vec();
    with_token.extend(["--auth-token-file", token.to_str().unwrap()]);
    let (exited, stderr) = run_until_serving(LAUNCHER, dir.path(), &with_token);
    assert!(exited.is_none(), "with a token it serves: {stderr}");
    assert!(stderr.contains("launcher-01"), "{stderr}");
}

#[test]
fn pattern_launcher_takes_adr_057s_flags_beside_its_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (exited, stderr) = run_until_serving(
        PATTERN_LAUNCHER,
        dir.path(),
        &[
            "--patterns-dir",
            "patterns",
            "--metrics-port",
            "0",
            "--data-dir",
            "data",
            "--listen",
            "127.0.0.1:0",
            "--launcher-id",
            "launcher-02",
        ],
    );
    assert!(exited.is_none(), "it serves: {stderr}");
    assert!(stderr.contains("launcher-02"), "{stderr}");
}
