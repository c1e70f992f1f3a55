//! Process lifecycle: probes, restart policies, backoff, the circuit breaker, clean stops of
//! whole process trees, capacity, and spawn errors, all read from the launcher's own records.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prism_launcher::runtime::logs::MARKER_PREFIX;
use serde_json::Value;

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(20);

fn spec(name: &str, body: &str) -> String {
    format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn u64_field(row: &Value, field: &str) -> u64 {
    row[field].as_u64().unwrap_or(0)
}

#[test]
fn a_crash_loop_backs_off_ever_longer_then_trips_and_a_reset_runs_it_again() {
    let mut launcher = TestLauncher::start();
    let work = launcher.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Fails its first five runs, then runs for good.
    launcher.write_spec(
        "flaky.yaml",
        &spec(
            "flaky",
            &format!(
                "  binary: /bin/sh\n  args: [\"-c\", \"n=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs; [ $n -gt 5 ] && exec sleep 600; exit 1\"]\n  workingDir: {}\n  backoff: {{initial: 300ms}}\n",
                work.display()
            ),
        ),
    );

    // The delay the launcher chose after each failure: next_restart_at - exited_at.
    let mut delays: BTreeMap<u64, u64> = BTreeMap::new();
    let tripped = eventually(TIMEOUT, "the circuit to open", || {
        let row = launcher.process("flaky")?;
        if row["actual"] == "backing-off" {
            let chosen =
                u64_field(&row, "next_restart_at_unix_ms") - u64_field(&row, "exited_at_unix_ms");
            delays.insert(u64_field(&row, "consecutive_failures"), chosen);
        }
        (row["actual"] == "tripped").then_some(row)
    });
    for (failures, nominal) in [(2, 300), (3, 600), (4, 1200)] {
        let chosen = delays
            .get(&failures)
            .copied()
            .unwrap_or_else(|| panic!("no record of failure {failures}: {delays:?}"));
        assert!(
            (nominal..=nominal * 6 / 5 + 1).contains(&chosen),
            "failure {failures}: {chosen} ms, expected {nominal} ms plus at most 20% jitter ({delays:?})"
        );
    }
    assert_eq!(tripped["consecutive_failures"], 5, "{tripped}");
    assert_eq!(tripped["diff"], "failing", "{tripped}");
    assert!(
        tripped["diff_detail"]
            .as_str()
            .unwrap()
            .contains("circuit open"),
        "{tripped}"
    );
    assert!(
        tripped["last_error"]
            .as_str()
            .unwrap()
            .contains("exit code 1"),
        "{tripped}"
    );
    assert!(
        tripped["tripped_at_unix_ms"].as_u64().is_some(),
        "{tripped}"
    );
    assert!(
        tripped["next_restart_at_unix_ms"].is_null(),
        "terminal: no restart is scheduled"
    );
    assert!(launcher.log().contains("exceeded max errors"), "logged");
    assert_eq!(
        std::fs::read_to_string(work.join("runs")).unwrap().trim(),
        "5"
    );

    let output = launcher.cli(&["reset", "flaky"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("was tripped") && said.contains("5 consecutive failures cleared"),
        "{said}"
    );
    launcher.wait_running("flaky", None, TIMEOUT);
    let row = launcher.process("flaky").unwrap();
    assert_eq!(row["consecutive_failures"], 0, "{row}");
    assert_eq!(row["diff"], "in-sync", "{row}");

    let unknown = launcher.cli(&["reset", "nobody"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("nothing desires"),
        "{unknown:?}"
    );
}

#[test]
fn readiness_gates_running_and_failed_liveness_restarts_the_process() {
    let mut launcher = TestLauncher::start();
    let switch = launcher.dir.path().join("unhealthy");
    std::fs::write(&switch, "").unwrap();
    launcher.write_spec(
        "probed.yaml",
        &spec(
            "probed",
            &format!(
                "  binary: {HELLO_PATTERN}\n  env: {{HELLO_UNHEALTHY_WHILE: {}}}\n  healthCheck:\n    http: {{path: /health}}\n    interval: 100ms\n    failureThreshold: 3\n",
                switch.display()
            ),
        ),
    );
    let first = eventually(TIMEOUT, "a starting process", || {
        let row = launcher.process("probed")?;
        (row["actual"] == "starting" && row["pid"].as_u64().is_some()).then_some(row)
    });
    assert_eq!(
        first["health"], "unknown",
        "not ready while its probe fails: {first}"
    );

    std::fs::remove_file(&switch).unwrap();
    let pid = launcher.wait_running("probed", None, TIMEOUT);
    assert_eq!(launcher.process("probed").unwrap()["health"], "healthy");

    std::fs::write(&switch, "").unwrap();
    let restarted = eventually(TIMEOUT, "a restart after failed liveness probes", || {
        let row = launcher.process("probed")?;
        (u64_field(&row, "restart_count") == 1).then_some(row)
    });
    assert!(
        restarted["last_error"]
            .as_str()
            .unwrap()
            .contains("liveness"),
        "{restarted}"
    );
    assert_eq!(
        process_state(pid),
        None,
        "the unhealthy process was stopped and reaped"
    );
    std::fs::remove_file(&switch).unwrap();
    launcher.wait_running("probed", Some(pid), TIMEOUT);
}

#[test]
fn restart_policies_never_and_on_failure_with_success_codes() {
    let mut launcher = TestLauncher::start();
    let shell = |name: &str, policy: &str, command: &str, extra: &str| {
        spec(name, &format!("  binary: /bin/sh\n  args: [\"-c\", \"{command}\"]\n  restartPolicy: {policy}\n  backoff: {{initial: 100ms}}\n{extra}"))
    };
    launcher.write_spec("never.yaml", &shell("never", "Never", "exit 1", ""));
    launcher.write_spec(
        "done.yaml",
        &shell(
            "done",
            "OnFailure",
            "exit 3",
            "  successExitCodes: [0, 3]\n",
        ),
    );
    launcher.write_spec(
        "failing.yaml",
        &shell(
            "failing",
            "OnFailure",
            "exit 1",
            "  successExitCodes: [0, 3]\n",
        ),
    );

    let never = eventually(TIMEOUT, "never to exit", || {
        launcher
            .process("never")
            .filter(|row| row["actual"] == "exited")
    });
    assert_eq!(never["restart_count"], 0, "{never}");
    assert_eq!(never["last_exit"], "exit code 1");
    assert_eq!(
        never["diff"], "failing",
        "a failed exit that stays down is shown as failing"
    );

    let done = eventually(TIMEOUT, "done to exit", || {
        launcher
            .process("done")
            .filter(|row| row["actual"] == "exited")
    });
    assert_eq!(done["restart_count"], 0, "{done}");
    assert_eq!(
        done["diff"], "in-sync",
        "exit 3 is a success for it: {done}"
    );

    let failing = eventually(TIMEOUT, "failing to be restarted", || {
        launcher
            .process("failing")
            .filter(|row| u64_field(row, "restart_count") >= 2)
    });
    assert_eq!(failing["last_exit"], "exit code 1", "{failing}");
    // `never` and `done` were never started again meanwhile.
    assert_eq!(launcher.process("never").unwrap()["restart_count"], 0);
    assert_eq!(launcher.process("done").unwrap()["restart_count"], 0);
}

#[test]
fn a_sigterm_ignoring_child_is_gone_by_grace_plus_one_second() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "stubborn.yaml",
        &spec("stubborn", "  binary: /bin/sh\n  args: [\"-c\", \"trap '' TERM; while true; do sleep 0.1; done\"]\n  terminationGracePeriod: 1s\n"),
    );
    let pid = launcher.wait_running("stubborn", None, TIMEOUT);
    let removed_at = std::time::Instant::now();
    launcher.remove_spec("stubborn.yaml");
    eventually(
        Duration::from_secs(5),
        "the stubborn child to be gone",
        || (process_state(pid).is_none() && group_members(pid).is_empty()).then_some(()),
    );
    let took = removed_at.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the grace period was given ({took:?})"
    );
    assert!(
        took <= Duration::from_millis(2500),
        "gone by grace + 1 s, plus watcher latency ({took:?})"
    );
}

#[test]
fn a_double_forked_daemon_is_stopped_with_its_process_and_leaves_no_zombie() {
    let mut launcher = TestLauncher::start();
    let work = launcher.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // The subshell forks a `setsid sleep` (a new session: out of the process group) and exits,
    // so the daemon is reparented to the launcher, the subreaper.
    launcher.write_spec(
        "forker.yaml",
        &spec(
            "forker",
            &format!(
                "  binary: /bin/sh\n  args: [\"-c\", \"( setsid sleep 600 & echo $! > daemon.pid ); exec sleep 600\"]\n  workingDir: {}\n  terminationGracePeriod: 2s\n",
                work.display()
            ),
        ),
    );
    let leader = launcher.wait_running("forker", None, TIMEOUT);
    let daemon: u32 = eventually(TIMEOUT, "the daemon's pid", || {
        std::fs::read_to_string(work.join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    eventually(
        TIMEOUT,
        "the daemon to be reparented to the launcher",
        || {
            let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).ok()?;
            let parent: u32 = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (parent == launcher.launcher_pid()).then_some(())
        },
    );
    assert!(
        !group_members(leader).contains(&daemon),
        "the daemon left the process group"
    );

    // A crash of the leader takes the daemon with it; the restart makes a new pair.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(TIMEOUT, "the daemon to go with its crashed process", || {
        process_state(daemon).is_none().then_some(())
    });
    let second_leader = launcher.wait_running("forker", Some(leader), TIMEOUT);
    let second_daemon: u32 = eventually(TIMEOUT, "the new daemon", || {
        let pid: u32 = std::fs::read_to_string(work.join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (pid != daemon && is_alive(pid)).then_some(pid)
    });

    launcher.remove_spec("forker.yaml");
    eventually(TIMEOUT, "the whole tree to be gone", || {
        (process_state(second_leader).is_none() && process_state(second_daemon).is_none())
            .then_some(())
    });
    assert!(
        launcher.our_processes().is_empty(),
        "no survivor: {:?}",
        launcher.our_processes()
    );
}

#[test]
fn a_missing_executable_is_reported_with_the_os_error_and_never_storms() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "missing.yaml",
        &spec(
            "missing",
            "  binary: /nonexistent/program\n  backoff: {initial: 100ms}\n",
        ),
    );
    let tripped = eventually(TIMEOUT, "the circuit to open", || {
        launcher
            .process("missing")
            .filter(|row| row["actual"] == "tripped")
    });
    let error = tripped["last_error"].as_str().unwrap();
    assert!(
        error.contains("cannot start /nonexistent/program"),
        "{error}"
    );
    assert!(
        error.contains("No such file or directory (os error 2)"),
        "{error}"
    );
    assert_eq!(
        tripped["consecutive_failures"], 5,
        "five attempts, spaced by the backoff, then none: {tripped}"
    );
    assert!(tripped["pid"].is_null());
}

#[test]
fn max_processes_leaves_the_excess_pending_and_disturbs_nothing() {
    let mut launcher = TestLauncher::start_with(&["--max-processes", "2"]);
    let sleeper = |name: &str| spec(name, "  binary: /bin/sleep\n  args: [\"600\"]\n");
    launcher.write_spec("a.yaml", &sleeper("a"));
    launcher.write_spec("b.yaml", &sleeper("b"));
    let a = launcher.wait_running("a", None, TIMEOUT);
    let b = launcher.wait_running("b", None, TIMEOUT);
    launcher.write_spec("c.yaml", &sleeper("c"));
    // A desired record the loop has not looked at yet also reads "pending" ("not started yet"):
    // wait for the loop's own verdict on it.
    let pending = eventually(TIMEOUT, "c to be pending", || {
        launcher.process("c").filter(|row| {
            row["actual"] == "pending" && row["diff_detail"] != "desired; not started yet"
        })
    });
    assert!(
        pending["diff_detail"]
            .as_str()
            .unwrap()
            .contains("--max-processes"),
        "{pending}"
    );
    assert!(pending["pid"].is_null());
    assert!(is_alive(a) && is_alive(b), "nothing running was disturbed");
    assert_eq!(
        launcher.process("a").unwrap()["pid"].as_u64(),
        Some(u64::from(a))
    );

    launcher.remove_spec("a.yaml");
    let c = launcher.wait_running("c", None, TIMEOUT);
    let env = environment(c);
    for port in ["GRPC_PORT", "HEALTH_PORT"] {
        assert_ne!(
            env.get(port).map(String::as_str),
            Some("0"),
            "a pending process gets real ports: {env:?}"
        );
    }
    assert_eq!(
        launcher.process("b").unwrap()["pid"].as_u64(),
        Some(u64::from(b))
    );
}

#[test]
fn an_exec_probe_gates_readiness_and_a_hanging_probe_is_killed_at_its_timeout() {
    let mut launcher = TestLauncher::start();
    let work = launcher.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    launcher.write_spec(
        "exec.yaml",
        &spec(
            "exec-probed",
            &format!(
                "  binary: /bin/sleep\n  args: [\"600\"]\n  workingDir: {}\n  healthCheck:\n    exec: {{command: [test, -f, ready]}}\n    interval: 100ms\n",
                work.display()
            ),
        ),
    );
    let starting = eventually(TIMEOUT, "a starting process", || {
        launcher
            .process("exec-probed")
            .filter(|row| row["actual"] == "starting")
    });
    assert_eq!(starting["health"], "unknown");
    std::fs::write(work.join("ready"), "").unwrap();
    launcher.wait_running("exec-probed", None, TIMEOUT);
    assert_eq!(
        launcher.process("exec-probed").unwrap()["health"],
        "healthy"
    );

    // A probe that never answers is killed at its timeout: no probe process piles up.
    launcher.write_spec(
        "hang.yaml",
        &spec(
            "hanging-probe",
            "  binary: /bin/sleep\n  args: [\"600\"]\n  healthCheck:\n    exec: {command: [/bin/sh, -c, \"echo $$ >> probes.pid; exec sleep 600\"]}\n    timeout: 200ms\n    interval: 100ms\n  workingDir: WORK\n"
                .replace("WORK", &work.display().to_string())
                .as_str(),
        ),
    );
    let probes: Vec<u32> = eventually(TIMEOUT, "three probe attempts", || {
        let text = std::fs::read_to_string(work.join("probes.pid")).ok()?;
        let pids: Vec<u32> = text
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect();
        (pids.len() >= 3).then_some(pids)
    });
    eventually(TIMEOUT, "timed-out probes to be killed and reaped", || {
        probes[..2]
            .iter()
            .all(|pid| process_state(*pid).is_none())
            .then_some(())
    });
    assert_eq!(
        launcher.process("hanging-probe").unwrap()["actual"],
        "starting"
    );
}

#[test]
fn a_label_change_records_a_new_generation_without_a_restart() {
    let mut launcher = TestLauncher::start();
    let labelled = |team: &str| {
        format!("apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: labelled\n  labels: {{team: {team}}}\nspec:\n  binary: /bin/sleep\n  args: [\"600\"]\n")
    };
    launcher.write_spec("labelled.yaml", &labelled("storage"));
    let pid = launcher.wait_running("labelled", None, TIMEOUT);
    launcher.write_spec("labelled.yaml", &labelled("search"));
    let row = eventually(TIMEOUT, "generation 2 recorded", || {
        launcher
            .process("labelled")
            .filter(|row| row["running_generation"] == 2)
    });
    assert_eq!(
        row["pid"].as_u64(),
        Some(u64::from(pid)),
        "not restarted: {row}"
    );
    assert_eq!(row["labels"]["team"], "search", "{row}");
    assert_eq!(row["diff"], "in-sync", "{row}");
}

#[test]
fn a_sigterm_ignoring_escaped_descendant_is_killed_on_stop_and_on_the_leaders_exit() {
    let mut launcher = TestLauncher::start();
    let work = launcher.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // The leader starts a descendant in a session of its own that ignores SIGTERM, and stays
    // its parent: the descendant is in no process group the launcher signals.
    launcher.write_spec(
        "escaper.yaml",
        &spec(
            "escaper",
            &format!(
                "  binary: /bin/sh\n  args: [\"-c\", \"setsid sh -c 'trap \\\"\\\" TERM; echo $$ > escaped.pid; while true; do sleep 0.2; done' & exec sleep 600\"]\n  workingDir: {}\n  terminationGracePeriod: 1s\n",
                work.display()
            ),
        ),
    );
    let escaped_pid = |not: Option<u32>| {
        eventually(TIMEOUT, "the escaped descendant's pid", || {
            let pid: u32 = std::fs::read_to_string(work.join("escaped.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (Some(pid) != not && is_alive(pid)).then_some(pid)
        })
    };
    let leader = launcher.wait_running("escaper", None, TIMEOUT);
    let escaped = escaped_pid(None);
    assert!(
        !group_members(leader).contains(&escaped),
        "it left the group"
    );

    // The leader's exit (a crash): the descendant goes with it, whatever it ignores.
    kill(Pid::from_raw(leader as i32), Signal::SIGKILL).unwrap();
    eventually(TIMEOUT, "the descendant to go with its leader", || {
        process_state(escaped).is_none().then_some(())
    });
    let leader = launcher.wait_running("escaper", Some(leader), TIMEOUT);
    let escaped = escaped_pid(Some(escaped));

    // A stop: SIGTERM reaches it too (it ignores it), and it is killed with its leader.
    launcher.remove_spec("escaper.yaml");
    eventually(TIMEOUT, "the whole tree to be gone", || {
        (process_state(leader).is_none() && process_state(escaped).is_none()).then_some(())
    });
    // The descendant's own `sleep 0.2`, orphaned when it was killed, may outlive it by a moment
    // (it is reaped by the launcher, its subreaper, when it ends).
    eventually(TIMEOUT, "no survivor", || {
        launcher.our_processes().is_empty().then_some(())
    });
    let log = launcher.log();
    assert!(
        !log.lines()
            .any(|line| line.contains("left the process group")
                && line.contains(&format!(" pid={leader} "))),
        "the leader itself is never taken for an escaped descendant:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_never_gets_ready_is_restarted_at_its_deadline_and_trips_the_breaker() {
    use prism_launcher::api::proto::prism::launcher::HealthRequest;
    // One failure period of 200 ms: the deadline is the 1 s floor. Two failures trip it.
    let mut launcher =
        TestLauncher::start_with(&["--failure-threshold", "2", "--backoff-initial", "100ms"]);
    launcher.write_spec(
        "never-ready.yaml",
        &spec(
            "never-ready",
            &format!(
                "  binary: {HELLO_PATTERN}\n  env: {{HELLO_FAIL_HEALTH: \"1\"}}\n  healthCheck:\n    \
                 http: {{path: /health}}\n    interval: 200ms\n    timeout: 200ms\n    \
                 failureThreshold: 1\n"
            ),
        ),
    );
    // Until the deadline it is starting, in sync, with the time it has left.
    let detail = eventually(TIMEOUT, "never-ready to be starting", || {
        let row = launcher.process("never-ready")?;
        (row["actual"] == "starting").then(|| row["diff_detail"].as_str().unwrap_or("").to_string())
    });
    assert!(
        detail.contains("left before that counts as a failure"),
        "{detail}"
    );

    let tripped = eventually(TIMEOUT, "never-ready to trip", || {
        launcher
            .process("never-ready")
            .filter(|row| row["actual"] == "tripped")
    });
    assert_eq!(u64_field(&tripped, "restart_count"), 1, "{tripped}");
    assert_eq!(tripped["diff"], "failing", "{tripped}");
    let last_error = tripped["last_error"].as_str().unwrap_or("");
    assert!(
        last_error.contains("not ready within 1s: its health check never passed"),
        "{tripped}"
    );
    let health = launcher
        .pattern_client()
        .await
        .health(HealthRequest {
            include_processes: false,
        })
        .await
        .expect("Health")
        .into_inner();
    assert!(!health.healthy, "{health:?}");
    let metrics = launcher.http_get("/metrics").1;
    assert!(
        metrics.contains("pattern_launcher_failures_total{reason=\"not_ready\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_memory_limit_is_enforced_with_an_rlimit_on_a_host_without_cgroup_v2() {
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        // The hog is a Python program; this check needs an interpreter to run it.
        eprintln!("skipped: no {python}");
        return;
    }
    let mut launcher = TestLauncher::start();
    let work = launcher.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Holds 512 MiB if it can, and says how far it got.
    launcher.write_spec(
        "hog.yaml",
        &spec(
            "hog",
            &format!(
                "  type: utility\n  binary: {python}\n  args: [\"-c\", \"import sys, time\\n\
                 try:\\n    a = bytearray(512 * 1024 * 1024)\\nexcept MemoryError:\\n    \
                 print('refused'); sys.exit(3)\\nprint('held'); time.sleep(600)\"]\n  \
                 workingDir: {}\n  restartPolicy: Never\n  resources: {{memoryLimit: 64Mi, cpuLimit: 0.5}}\n",
                work.display()
            ),
        ),
    );
    let row = eventually(TIMEOUT, "the hog to end", || {
        launcher
            .process("hog")
            .filter(|row| row["actual"] == "exited")
    });
    assert_eq!(row["last_exit"], "exit code 3", "{row}");
    assert_eq!(row["resources"]["memory_enforcement"], "rlimit", "{row}");
    assert_eq!(row["resources"]["cpu_enforcement"], "none", "{row}");
    let log = std::fs::read_to_string(launcher.data_dir().join("logs/hog.log")).unwrap();
    assert!(log.contains("refused") && !log.contains("held"), "{log}");
    let table = launcher.cli(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("mem 64Mi rlimit, cpu 500m none"), "{table}");

    // A limited process that runs shows what it uses against its limit.
    launcher.write_spec(
        "sipper.yaml",
        &spec(
            "sipper",
            "  type: utility\n  binary: /bin/sleep\n  args: [\"600\"]\n  resources: {memoryLimit: 64Mi, cpuLimit: 250m}\n",
        ),
    );
    launcher.wait_running("sipper", None, TIMEOUT);
    let row = launcher.process("sipper").unwrap();
    let used = row["resources"]["memory_bytes"].as_u64().unwrap_or(0);
    assert!(used > 0 && used < 64 << 20, "{row}");
    let table = launcher.cli(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("sipper") && line.contains("/64Mi rlimit")),
        "{table}"
    );
    let metrics = launcher.http_get("/metrics").1;
    assert!(
        metrics.contains(
            "pattern_launcher_process_memory_limit_bytes{process_id=\"sipper\"} 67108864"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("pattern_launcher_process_memory_bytes{process_id=\"sipper\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("pattern_launcher_process_cpu_limit_millicores{process_id=\"sipper\"} 250"),
        "{metrics}"
    );
    assert!(
        launcher
            .log()
            .contains("resource limits: a hybrid cgroup v1/v2 host")
            || launcher.log().contains("resource limits: a cgroup v1 host")
            || launcher.log().contains("resource limits: cgroup v2"),
        "the mode is logged at start"
    );
}

#[test]
fn a_memory_limit_holds_from_the_programs_first_instruction() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("early.c");
    // Allocates before main, in a constructor: a limit set after the program started would be
    // too late for it.
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n\
         static int held;\n\
         __attribute__((constructor)) static void early(void) {\n\
           char *block = malloc(512u << 20);\n\
           if (block) { memset(block, 1, 512u << 20); held = 1; }\n\
         }\n\
         int main(void) { puts(held ? \"held\" : \"refused\"); fflush(stdout); return held ? 0 : 3; }\n",
    )
    .unwrap();
    let binary = work.path().join("early");
    let compiled = std::process::Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output();
    match compiled {
        Ok(output) if output.status.success() => {}
        other => {
            eprintln!("skipped: no C compiler to build the early allocator ({other:?})");
            return;
        }
    }
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "early.yaml",
        &spec(
            "early",
            &format!(
                "  type: utility\n  binary: {}\n  restartPolicy: Never\n  resources: {{memoryLimit: 64Mi}}\n",
                binary.display()
            ),
        ),
    );
    let row = eventually(TIMEOUT, "the early allocator to end", || {
        launcher
            .process("early")
            .filter(|row| row["actual"] == "exited")
    });
    assert_eq!(row["last_exit"], "exit code 3", "{row}");
    let log = std::fs::read_to_string(launcher.data_dir().join("logs/early.log")).unwrap();
    // After the marker line that starts each instance's output.
    let output: Vec<&str> = log
        .lines()
        .filter(|line| !line.starts_with(MARKER_PREFIX))
        .collect();
    assert_eq!(output, ["refused"], "{log}");
}

#[test]
fn a_limited_child_gets_only_its_streams_its_group_its_limit_and_no_blocked_signal() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "bounded.yaml",
        &spec(
            "bounded",
            "  type: utility\n  binary: /bin/sleep\n  args: [\"600\"]\n  resources: {memoryLimit: 64Mi}\n",
        ),
    );
    let pid = launcher.wait_running("bounded", None, TIMEOUT);
    // The launcher holds sockets, its store, a watch and its log: none of them reaches the child.
    let mut fds: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let target = std::fs::read_link(entry.path()).unwrap();
            (entry.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    fds.sort();
    let log = launcher
        .data_dir()
        .canonicalize()
        .unwrap()
        .join("logs/bounded.log");
    assert_eq!(
        fds,
        vec![
            ("0".to_string(), std::path::PathBuf::from("/dev/null")),
            ("1".to_string(), log.clone()),
            ("2".to_string(), log),
        ]
    );
    assert_eq!(group_members(pid), vec![pid], "its own process group");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
    assert!(status.contains("SigCgt:\t0000000000000000"), "{status}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits.lines().any(|line| line.starts_with("Max data size")
            && line
                .split_whitespace()
                .skip(3)
                .take(2)
                .eq(["67108864", "67108864"])),
        "{limits}"
    );
}

/// The launcher runs with glibc's per-thread caches of freed blocks off (it starts itself again
/// with the tunable, keeping its pid and its name), an operator's own setting of that tunable
/// wins, and no child sees the variable.
#[test]
fn the_launcher_runs_without_glibcs_thread_caches_and_no_child_inherits_the_tunable() {
    let mut launcher = TestLauncher::start();
    let tunables = || {
        environment(launcher.launcher_pid())
            .get("GLIBC_TUNABLES")
            .cloned()
    };
    assert_eq!(tunables().as_deref(), Some("glibc.malloc.tcache_count=0"));
    // Started again through /proc/self/exe, it keeps the name it was started as, so that `ps`,
    // `pgrep -x prism-launcher` and `pidof` still find it.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", launcher.launcher_pid())).unwrap();
    assert_eq!(comm.trim_end(), "prism-launcher");
    launcher.write_spec(
        "plain.yaml",
        &spec("plain", "  binary: /bin/sleep\n  args: [\"30\"]\n"),
    );
    let pid = launcher.wait_running("plain", None, TIMEOUT);
    assert_eq!(environment(pid).get("GLIBC_TUNABLES"), None);

    let operator =
        TestLauncher::start_with_env(&[], &[("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7")]);
    assert_eq!(
        environment(operator.launcher_pid())
            .get("GLIBC_TUNABLES")
            .map(String::as_str),
        Some("glibc.malloc.tcache_count=7"),
        "the operator's own setting wins"
    );
}
