//! The operator's verbs end to end, through the CLI only: `stop` holds a process stopped across
//! a launcher restart, `start` runs it again, `restart` replaces it (one, `--all`, or by label,
//! one at a time), and `describe` tells all of it in order.

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

#[test]
fn stop_holds_a_process_across_a_launcher_restart_start_and_restart_run_it_and_describe_tells_it_all(
) {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("held.yaml", &hello_spec("held", "held"));
    launcher.write_spec("other.yaml", &hello_spec("other", "other"));
    let first = launcher.wait_running("held", None, START_TIMEOUT);
    launcher.wait_running("other", None, START_TIMEOUT);

    let stopped = succeeded(&launcher.cli(&["stop", "held", "--wait-timeout", WAIT]));
    assert!(stopped.contains("stopped held"), "{stopped}");
    assert!(!is_alive(first), "the stop waited for the process to end");
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
    let second = launcher.wait_running("held", Some(first), START_TIMEOUT);
    assert_eq!(launcher.process("held").unwrap()["held"], false);

    let restarted = succeeded(&launcher.cli(&["restart", "held", "--wait-timeout", WAIT]));
    assert!(restarted.contains("restarted held"), "{restarted}");
    let third = launcher.wait_running("held", Some(second), START_TIMEOUT);
    assert!(!is_alive(second), "the old process was stopped first");
    let row = launcher.process("held").unwrap();
    assert_eq!(
        row["desired_generation"], 1,
        "a restart is not a spec change"
    );
    assert_eq!(row["restart_count"], 0, "nor a restart after a failure");

    let description = describe(&mut launcher, "held");
    let happened = events(&description);
    let kinds: Vec<&str> = happened.iter().map(|(kind, _, _)| kind.as_str()).collect();
    let expected = [
        ("started", Some(first)),
        ("held", None),
        ("stopping", None),
        ("exited", Some(first)),
        ("stopped", None),
        ("released", None),
        ("started", Some(second)),
        ("restart-requested", None),
        ("stopping", None),
        ("exited", Some(second)),
        ("stopped", None),
        ("started", Some(third)),
    ];
    let mut next = 0;
    for (kind, message, _) in &happened {
        if let Some((want, pid)) = expected.get(next) {
            let pid_matches = pid.is_none_or(|pid| message.contains(&format!("pid {pid} ")));
            if kind == want && pid_matches {
                next += 1;
            }
        }
    }
    assert_eq!(next, expected.len(), "the events in order, in: {kinds:?}");
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
    let missing = launcher.cli(&["describe", "nobody"]);
    assert!(!missing.status.success());
    let complaint = String::from_utf8_lossy(&missing.stderr);
    assert!(
        complaint.contains("is known to this launcher") && complaint.contains("nobody"),
        "{complaint}"
    );
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
