//! The operator's verbs end to end, through the CLI only: `apply` declares and edits, `stop`
//! holds a process stopped across a launcher restart, `start` runs it again, `restart` replaces
//! it (one, `--all`, or by label, one at a time, each up before the next), `delete` removes it,
//! and `describe` tells all of it in order.

use std::process::Output;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::*;

const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a verb may wait for its process: bounds every CLI call of these tests.
const WAIT: &str = "30s";

/// `hello_spec` with labels.
fn labelled_spec(name: &str, labels: &str) -> String {
    hello_spec(name, name).replacen(
        &format!("metadata:\n  name: {name}\n"),
        &format!("metadata:\n  name: {name}\n  labels: {labels}\n"),
        1,
    )
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the command failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `describe ID -o json`, parsed.
fn describe(launcher: &mut TestLauncher, id: &str) -> Value {
    let output = launcher.cli(&["describe", id, "-o", "json", "--log-lines", "5"]);
    serde_json::from_str(&succeeded(&output)).expect("describe prints JSON")
}

/// The events of a description as (kind, message, time).
fn events(description: &Value) -> Vec<(String, String, i64)> {
    description["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| {
            (
                event["kind"].as_str().unwrap().to_string(),
                event["message"].as_str().unwrap().to_string(),
                event["at_unix_ms"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Processes of `launcher` that run for `id`.
fn processes_of(launcher: &TestLauncher, id: &str) -> Vec<u32> {
    let ours = launcher.our_processes();
    processes_with_env("PROCESS_ID", id)
        .into_iter()
        .filter(|pid| ours.contains(pid))
        .collect()
}

/// Writes `text` to a scratch file of the test (outside the spec directory) and returns its path.
fn scratch(launcher: &TestLauncher, name: &str, text: &str) -> String {
    let path = launcher.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A spec of a shell that runs `script` (no health check), restarted `Always`, with its own
/// backoff.
fn shell_spec(name: &str, labels: &str, script: &str, backoff: &str) -> String {
    format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}, labels: \
         {labels}}}\nspec:\n  binary: /bin/sh\n  args: [\"-c\", \"{script}\"]\n  \
         restartPolicy: Always\n  backoff: {backoff}\n  terminationGracePeriod: 2s\n"
    )
}

/// The kinds of `happened`, in order.
fn kinds_of(happened: &[(String, String, i64)]) -> Vec<&str> {
    happened.iter().map(|(kind, _, _)| kind.as_str()).collect()
}

/// Whether `expected` (kind, and a pid its message names) is a subsequence of `happened`.
fn in_order(happened: &[(String, String, i64)], expected: &[(&str, Option<u32>)]) -> bool {
    let mut next = 0;
    for (kind, message, _) in happened {
        if let Some((want, pid)) = expected.get(next) {
            let pid_matches = pid.is_none_or(|pid| message.contains(&format!("pid {pid} ")));
            if kind == want && pid_matches {
                next += 1;
            }
        }
    }
    next == expected.len()
}

#[test]
fn apply_edit_stop_start_restart_and_delete_through_the_cli_and_describe_tells_it_all_in_order() {
    let mut launcher = TestLauncher::start();
    let file = scratch(&launcher, "held.yaml", &hello_spec("held", "first"));
    launcher.write_spec("other.yaml", &hello_spec("other", "other"));
    let applied = succeeded(&launcher.cli(&["apply", "-f", &file]));
    assert!(applied.contains("created held in "), "{applied}");
    let first = launcher.wait_running("held", None, START_TIMEOUT);
    launcher.wait_running("other", None, START_TIMEOUT);

    // An edit applied through the CLI replaces the process.
    std::fs::write(&file, hello_spec("held", "second")).unwrap();
    let changed = succeeded(&launcher.cli(&["apply", "-f", &file]));
    assert!(changed.contains("changed held in "), "{changed}");
    let edited = launcher.wait_running("held", Some(first), START_TIMEOUT);
    assert_eq!(launcher.process("held").unwrap()["desired_generation"], 2);

    let stopped = succeeded(&launcher.cli(&["stop", "held", "--wait-timeout", WAIT]));
    assert!(stopped.contains("stopped held"), "{stopped}");
    assert!(!is_alive(edited), "the stop waited for the process to end");
    let row = launcher.process("held").expect("the definition is kept");
    assert_eq!(row["actual"], "stopped", "{row}");
    assert_eq!(row["held"], true, "{row}");
    assert_eq!(row["diff"], "held", "{row}");
    let status = launcher.status();
    assert_eq!(status["summary"]["held"], 1, "{status}");
    assert_eq!(status["summary"]["failing"], 0, "a hold is not a failure");
    let table = succeeded(&launcher.cli(&["status"]));
    assert!(table.contains("stopped (held)"), "{table}");
    assert!(table.contains("=1 held"), "{table}");

    let again = succeeded(&launcher.cli(&["stop", "held", "--wait-timeout", WAIT]));
    assert!(
        again.contains("held already"),
        "stopping twice is harmless: {again}"
    );
    let refused = launcher.cli(&["restart", "held", "--wait-timeout", WAIT]);
    assert!(
        !refused.status.success(),
        "restarting a held process is refused"
    );
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refusal.contains("held stopped by the operator")
            && refusal.contains("prism-launcher start held"),
        "{refusal}"
    );
    let unknown = launcher.cli(&["stop", "nobody", "--wait-timeout", WAIT]);
    assert!(!unknown.status.success());
    let complaint = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        complaint.contains("nothing desires a process") && complaint.contains("nobody"),
        "a clear NOT_FOUND: {complaint}"
    );

    // A launcher restart: `other` starts again, `held` stays down.
    launcher.stop(Signal::SIGTERM, Duration::from_secs(15));
    launcher.spawn();
    launcher.wait_running("other", None, START_TIMEOUT);
    // `other` was started in the pass that planned every file's process, `held` included.
    let row = launcher.process("held").expect("still declared");
    assert_eq!(row["actual"], "stopped", "{row}");
    assert_eq!(row["held"], true, "the hold outlives the launcher: {row}");
    assert!(
        processes_of(&launcher, "held").is_empty(),
        "nothing of held runs"
    );

    let started = succeeded(&launcher.cli(&["start", "held", "--wait-timeout", WAIT]));
    assert!(started.contains("started held"), "{started}");
    let second = launcher.wait_running("held", Some(edited), START_TIMEOUT);
    assert_eq!(launcher.process("held").unwrap()["held"], false);

    let restarted = succeeded(&launcher.cli(&["restart", "held", "--wait-timeout", WAIT]));
    assert!(restarted.contains("restarted held"), "{restarted}");
    let third = launcher.wait_running("held", Some(second), START_TIMEOUT);
    assert!(!is_alive(second), "the old process was stopped first");
    let row = launcher.process("held").unwrap();
    assert_eq!(
        row["desired_generation"], 2,
        "a restart is not a spec change"
    );
    assert_eq!(row["restart_count"], 0, "nor a restart after a failure");

    let description = describe(&mut launcher, "held");
    let happened = events(&description);
    let kinds = kinds_of(&happened);
    let expected = [
        ("declared", None),
        ("started", Some(first)),
        ("spec-changed", None),
        ("stopping", None),
        ("exited", Some(first)),
        ("stopped", None),
        ("started", Some(edited)),
        ("held", None),
        ("stopping", None),
        ("exited", Some(edited)),
        ("stopped", None),
        ("released", None),
        ("started", Some(second)),
        ("restart-requested", None),
        ("stopping", None),
        ("exited", Some(second)),
        ("stopped", None),
        ("started", Some(third)),
    ];
    assert!(
        in_order(&happened, &expected),
        "the events in order, in: {kinds:?}"
    );
    // Each start is told once: one `started` per process, and exactly one after each restart
    // request (no double replacement).
    assert_eq!(
        kinds.iter().filter(|kind| **kind == "started").count(),
        4,
        "{kinds:?}"
    );
    let requested = kinds
        .iter()
        .position(|kind| *kind == "restart-requested")
        .expect("the restart request is told");
    assert_eq!(
        kinds[requested..]
            .iter()
            .filter(|kind| **kind == "started")
            .count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|kind| **kind == "declared").count(),
        1,
        "declared once, not again at the launcher's restart: {kinds:?}"
    );
    assert!(
        happened.windows(2).all(|pair| pair[0].2 <= pair[1].2),
        "oldest first: {happened:?}"
    );
    let stop = happened
        .iter()
        .find(|(kind, message, _)| kind == "stopping" && message.contains("held by the operator"))
        .expect("the stop says why");
    assert!(
        stop.1.contains("SIGKILL after 5s"),
        "with the spec's grace: {stop:?}"
    );
    assert!(
        happened
            .iter()
            .any(|(kind, message, _)| kind == "stopped"
                && message.contains("restarted by the operator")),
        "{happened:?}"
    );
    assert_eq!(description["status"]["pid"], third);
    assert_eq!(description["restart_requests"], 1);
    assert_eq!(description["restart_requests_done"], 1);
    assert!(
        description["spec"]["health_check"]
            .as_str()
            .unwrap()
            .starts_with("http GET /health"),
        "{description}"
    );
    assert!(
        description["log_tail"]
            .as_str()
            .is_some_and(|log| !log.is_empty()),
        "the last lines of its log: {description}"
    );

    let text = succeeded(&launcher.cli(&["describe", "held"]));
    for expected in ["Name:", "Source:", "Held:", "Events:", "restart-requested"] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }

    // Deleted through the CLI: its file goes, then the process, then the launcher forgets it.
    let deleted = succeeded(&launcher.cli(&["delete", "held"]));
    assert!(deleted.contains("held"), "{deleted}");
    assert!(
        !launcher.specs_dir().join("applied-held.yaml").exists(),
        "its file is removed"
    );
    eventually(START_TIMEOUT, "held to be forgotten", || {
        launcher.process("held").is_none().then_some(())
    });
    assert!(!is_alive(third), "its process is gone");
    let missing = launcher.cli(&["describe", "held"]);
    assert!(!missing.status.success(), "its history went with it");
    let missing = launcher.cli(&["describe", "nobody"]);
    assert!(!missing.status.success());
    let complaint = String::from_utf8_lossy(&missing.stderr);
    assert!(
        complaint.contains("is known to this launcher") && complaint.contains("nobody"),
        "{complaint}"
    );
}

/// The regression of a restart that counted a crash-looping process as restarted because one
/// look saw its new process running: the new process must stay up, so the restart fails
/// (exit 1, naming the exit), and a rolling restart stops there.
#[test]
fn a_restart_of_a_process_that_crashes_after_it_started_fails_and_stops_the_rolling_restart() {
    let mut launcher = TestLauncher::start();
    // `b` runs a second, then exits 3; its restarts are spaced by a backoff it never trips
    // from in the time of the test.
    let crashing = shell_spec(
        "b",
        "{team: x}",
        "sleep 1; exit 3",
        "{initial: 200ms, failureThreshold: 100}",
    );
    launcher.write_spec("a.yaml", &labelled_spec("a", "{team: x}"));
    launcher.write_spec("b.yaml", &crashing);
    launcher.write_spec("c.yaml", &labelled_spec("c", "{team: x}"));
    let a = launcher.wait_running("a", None, START_TIMEOUT);
    let c = launcher.wait_running("c", None, START_TIMEOUT);

    let single = launcher.cli(&["restart", "b", "--wait-timeout", WAIT]);
    let stderr = String::from_utf8_lossy(&single.stderr);
    assert_eq!(single.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("b failed after it was restarted") && stderr.contains("exit code 3"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&single.stdout).contains("restarted b"),
        "{single:?}"
    );

    let rolling = launcher.cli(&["restart", "-l", "team=x", "--wait-timeout", WAIT]);
    let stdout = String::from_utf8_lossy(&rolling.stdout);
    let stderr = String::from_utf8_lossy(&rolling.stderr);
    assert_eq!(rolling.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("restarted a"), "{stdout}");
    assert!(!stdout.contains("restarted b"), "{stdout}");
    assert!(
        stderr.contains("the rolling restart stopped; not restarted: c"),
        "{stderr}"
    );
    launcher.wait_running("a", Some(a), START_TIMEOUT);
    assert_eq!(
        launcher.process("c").unwrap()["pid"],
        c,
        "c was not asked to restart"
    );
}

/// The regressions of a hold on a backing-off process that kept its backoff (`start` waited it
/// out, and status showed a held process backing off with a restart to come), and of a
/// released tripped process that `start` waited for in vain.
#[test]
fn a_held_backing_off_process_starts_at_once_and_a_tripped_one_says_it_needs_a_reset() {
    let mut launcher = TestLauncher::start();
    // Exits at once; after its first (immediate) restart, the next waits ten minutes.
    let slow = shell_spec(
        "slow",
        "{}",
        "exit 3",
        "{initial: 10m, max: 10m, failureThreshold: 100}",
    );
    // Exits at once; its circuit opens after the second failure.
    let tripper = shell_spec(
        "tripper",
        "{}",
        "exit 3",
        "{initial: 100ms, failureThreshold: 2}",
    );
    launcher.write_spec("slow.yaml", &slow);
    launcher.write_spec("tripper.yaml", &tripper);
    eventually(START_TIMEOUT, "slow to back off", || {
        let row = launcher.process("slow")?;
        (row["actual"] == "backing-off" && row["next_restart_at_unix_ms"].is_i64()).then_some(())
    });
    eventually(START_TIMEOUT, "tripper to trip", || {
        (launcher.process("tripper")?["actual"] == "tripped").then_some(())
    });

    succeeded(&launcher.cli(&["stop", "slow", "--wait-timeout", WAIT]));
    let row = eventually(START_TIMEOUT, "slow to be put down", || {
        let row = launcher.process("slow")?;
        (row["actual"] == "stopped").then_some(row)
    });
    assert_eq!(row["held"], true, "{row}");
    assert!(
        row["next_restart_at_unix_ms"].is_null(),
        "no restart to come: {row}"
    );
    let started_before = events(&describe(&mut launcher, "slow"))
        .iter()
        .filter(|(kind, _, _)| kind == "started")
        .count();
    // It crashes again at once, so `start` does not wait for it to come up.
    succeeded(&launcher.cli(&["start", "slow", "--no-wait"]));
    eventually(
        Duration::from_secs(10),
        "slow to start at once, not after its backoff",
        || {
            let started = events(&describe(&mut launcher, "slow"))
                .iter()
                .filter(|(kind, _, _)| kind == "started")
                .count();
            (started > started_before).then_some(())
        },
    );

    succeeded(&launcher.cli(&["stop", "tripper", "--wait-timeout", WAIT]));
    let output = launcher.cli(&["start", "tripper", "--wait-timeout", WAIT]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tripped") && stderr.contains("prism-launcher reset tripper"),
        "{stderr}"
    );
    let row = launcher.process("tripper").unwrap();
    assert_eq!(row["held"], false, "the hold is released: {row}");
    assert_eq!(row["actual"], "tripped", "{row}");
}

#[test]
fn a_rolling_restart_by_label_or_of_all_replaces_one_process_at_a_time_and_skips_held_ones() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("a.yaml", &labelled_spec("a", "{team: x}"));
    launcher.write_spec("b.yaml", &labelled_spec("b", "{team: x}"));
    launcher.write_spec("c.yaml", &labelled_spec("c", "{team: y}"));
    let a = launcher.wait_running("a", None, START_TIMEOUT);
    let b = launcher.wait_running("b", None, START_TIMEOUT);
    let c = launcher.wait_running("c", None, START_TIMEOUT);

    let output = succeeded(&launcher.cli(&["restart", "-l", "team=x", "--wait-timeout", WAIT]));
    assert!(
        output.contains("restarted a") && output.contains("restarted b"),
        "{output}"
    );
    let a2 = launcher.wait_running("a", Some(a), START_TIMEOUT);
    let b2 = launcher.wait_running("b", Some(b), START_TIMEOUT);
    assert_eq!(
        launcher.process("c").unwrap()["pid"],
        c,
        "c's label does not match"
    );
    // One at a time: b was asked to restart only after a's replacement passed its health check.
    let ready_a = events(&describe(&mut launcher, "a"))
        .into_iter()
        .filter(|(kind, _, _)| kind == "healthy")
        .map(|(_, _, at)| at)
        .max()
        .expect("a's replacement became healthy");
    let asked_b = events(&describe(&mut launcher, "b"))
        .into_iter()
        .find(|(kind, _, _)| kind == "restart-requested")
        .map(|(_, _, at)| at)
        .expect("b was asked to restart");
    assert!(
        ready_a <= asked_b,
        "a ready at {ready_a}, b asked at {asked_b}"
    );

    succeeded(&launcher.cli(&["stop", "c", "--wait-timeout", WAIT]));
    let output = launcher.cli(&["restart", "--all", "--wait-timeout", WAIT]);
    let printed = succeeded(&output);
    assert!(
        printed.contains("restarted a") && printed.contains("restarted b"),
        "{printed}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("skipping c: held"),
        "{output:?}"
    );
    launcher.wait_running("a", Some(a2), START_TIMEOUT);
    launcher.wait_running("b", Some(b2), START_TIMEOUT);
    assert_eq!(launcher.process("c").unwrap()["actual"], "stopped");
    assert!(
        processes_of(&launcher, "c").is_empty(),
        "held c was not restarted"
    );

    let nothing = launcher.cli(&["restart", "-l", "team=z", "--wait-timeout", WAIT]);
    assert!(
        !nothing.status.success(),
        "a selector that matches nothing is an error"
    );
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("matches the selector team=z"),
        "{nothing:?}"
    );
}
