//! The declarative core end to end: spec files in, processes out, `status` in between.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

const START_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn a_spec_dropped_in_runs_an_edit_replaces_it_and_a_delete_stops_its_whole_group() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("hello.yaml", &hello_spec("hello", "one"));
    let first = launcher.wait_running("hello", None, START_TIMEOUT);

    let env = environment(first);
    assert_eq!(env.get("GREETING").map(String::as_str), Some("one"));
    assert_eq!(env.get("PROCESS_ID").map(String::as_str), Some("hello"));
    assert_eq!(env.get("PRISM_LAUNCHER_ID"), Some(&launcher.launcher_id));
    assert_eq!(env.get("PROCESS_TYPE").map(String::as_str), Some("pattern"));
    for injected in [
        "GRPC_PORT",
        "HEALTH_PORT",
        "NAMESPACE",
        "SESSION_ID",
        "PATTERN_NAME",
        "PATH",
    ] {
        assert!(
            env.contains_key(injected),
            "{injected} is injected: {env:?}"
        );
    }
    assert!(
        !env.contains_key("PRISM_TEST_SECRET"),
        "the launcher's environment leaked: {env:?}"
    );
    let row = launcher.process("hello").expect("hello in status");
    assert_eq!(row["health"], "healthy");
    assert_eq!(row["desired_generation"], 1);
    assert!(
        row["source"]
            .as_str()
            .unwrap()
            .ends_with("specs/hello.yaml"),
        "{row}"
    );
    let first_group = eventually(START_TIMEOUT, "the sleep to join the group", || {
        let members = group_members(first);
        (members.len() >= 2).then_some(members)
    });

    launcher.write_spec("hello.yaml", &hello_spec("hello", "two"));
    let second = launcher.wait_running("hello", Some(first), START_TIMEOUT);
    assert_eq!(
        environment(second).get("GREETING").map(String::as_str),
        Some("two")
    );
    assert_eq!(launcher.process("hello").unwrap()["desired_generation"], 2);
    eventually(START_TIMEOUT, "the old group to be gone", || {
        first_group
            .iter()
            .all(|pid| process_state(*pid).is_none())
            .then_some(())
    });

    launcher.remove_spec("hello.yaml");
    eventually(START_TIMEOUT, "hello to leave status", || {
        launcher.process("hello").is_none().then_some(())
    });
    assert_eq!(
        process_state(second),
        None,
        "no zombie of the stopped process"
    );
    // Killed with their leader, its group's members are orphans the launcher reaps in its next
    // sweep (at most `SWEEP_GAP` after their SIGCHLD), so they may be zombies for a moment.
    eventually(START_TIMEOUT, "no survivor in its process group", || {
        group_members(second).is_empty().then_some(())
    });
    assert!(launcher.our_processes().is_empty(), "nothing of ours runs");
}

#[test]
fn a_child_killed_with_sigkill_is_back_within_a_second() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("hello.yaml", &hello_spec("hello", "crash"));
    let first = launcher.wait_running("hello", None, START_TIMEOUT);

    let killed_at = Instant::now();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill the child");
    let second = eventually(Duration::from_secs(5), "a new pid", || {
        let pid = launcher.process("hello")?["pid"].as_u64()? as u32;
        (pid != first && is_alive(pid)).then_some(pid)
    });
    let back_after = killed_at.elapsed();
    assert!(
        back_after < Duration::from_secs(1),
        "restarted after {back_after:?}"
    );
    assert_ne!(second, first);
    let row = launcher.process("hello").unwrap();
    assert_eq!(row["restart_count"], 1, "{row}");
    assert_eq!(row["last_exit"], "signal SIGKILL", "{row}");
    assert_eq!(process_state(first), None, "the killed child was reaped");
}

#[test]
fn a_malformed_file_is_reported_and_disturbs_nothing() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("good.yaml", &hello_spec("good", "fine"));
    launcher.write_spec(
        "bad.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: bad\nspec:\n  binary: /bin/true\n  restartPolicy: Sometimes\n",
    );
    let pid = launcher.wait_running("good", None, START_TIMEOUT);
    let status = launcher.status();
    let problems = &status["source_problems"];
    let bad_errors = problems
        .as_object()
        .and_then(|sources| {
            sources
                .iter()
                .find(|(source, _)| source.ends_with("bad.yaml"))
        })
        .map(|(_, errors)| errors.to_string())
        .unwrap_or_else(|| panic!("bad.yaml is reported: {status}"));
    assert!(
        bad_errors.contains(":7:"),
        "the error names the line: {bad_errors}"
    );
    assert!(
        bad_errors.contains("spec.restartPolicy"),
        "the error names the field: {bad_errors}"
    );
    assert!(
        launcher.process("bad").is_none(),
        "nothing of a bad file is applied"
    );

    // Breaking a file that runs a process keeps that process as it was.
    launcher.write_spec(
        "good.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: good}\nspec: {binary: }\n",
    );
    eventually(START_TIMEOUT, "good.yaml's error in status", || {
        let status = launcher.status();
        let reported = status["source_problems"]
            .as_object()
            .is_some_and(|sources| sources.keys().any(|source| source.ends_with("good.yaml")));
        reported.then_some(())
    });
    let row = launcher.process("good").unwrap();
    assert_eq!(
        row["pid"].as_u64(),
        Some(u64::from(pid)),
        "the running process was not touched"
    );
    assert_eq!(row["desired_generation"], 1);
    assert!(is_alive(pid));

    // Fixing it clears the problem.
    launcher.remove_spec("bad.yaml");
    launcher.write_spec("good.yaml", &hello_spec("good", "fine"));
    eventually(START_TIMEOUT, "problems to clear", || {
        let status = launcher.status();
        status["source_problems"]
            .as_object()
            .is_some_and(|sources| sources.is_empty())
            .then_some(())
    });
    assert_eq!(
        launcher.process("good").unwrap()["pid"].as_u64(),
        Some(u64::from(pid))
    );
}

#[test]
fn two_files_declaring_one_name_is_a_conflict_the_first_owner_keeps() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("a.yaml", &hello_spec("shared-name", "from-a"));
    let pid = launcher.wait_running("shared-name", None, START_TIMEOUT);
    launcher.write_spec("b.yaml", &hello_spec("shared-name", "from-b"));
    let status = eventually(START_TIMEOUT, "the conflict on both files", || {
        let status = launcher.status();
        let sources = status["source_problems"].as_object()?;
        let on_a = sources.keys().any(|source| source.ends_with("a.yaml"));
        let on_b = sources.keys().any(|source| source.ends_with("b.yaml"));
        (on_a && on_b).then_some(status)
    });
    assert!(
        status.to_string().contains("the first owner keeps it"),
        "{status}"
    );
    assert_eq!(
        environment(pid).get("GREETING").map(String::as_str),
        Some("from-a")
    );

    // When the owner lets go, the other file takes the name.
    launcher.remove_spec("a.yaml");
    let taken = launcher.wait_running("shared-name", Some(pid), START_TIMEOUT);
    assert_eq!(
        environment(taken).get("GREETING").map(String::as_str),
        Some("from-b")
    );
}

#[test]
fn a_restarted_launcher_keeps_the_desired_state_without_duplicates() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("one.yaml", &hello_spec("one", "x"));
    launcher.write_spec("two.yaml", &hello_spec("two", "y"));
    launcher.wait_running("one", None, START_TIMEOUT);
    launcher.wait_running("two", None, START_TIMEOUT);

    // A graceful stop stops the children; the next launcher starts them again, same generation.
    launcher.stop(Signal::SIGTERM, Duration::from_secs(15));
    eventually(START_TIMEOUT, "children stopped with the launcher", || {
        launcher.our_processes().is_empty().then_some(())
    });
    launcher.spawn();
    launcher.wait_running("one", None, START_TIMEOUT);
    let two = launcher.wait_running("two", None, START_TIMEOUT);
    let status = launcher.status();
    let ids: Vec<&str> = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["one", "two"], "no file lost, no duplicate");
    for row in status["processes"].as_array().unwrap() {
        assert_eq!(
            row["desired_generation"], 1,
            "a restart is not a spec change: {row}"
        );
    }

    // A launcher killed outright leaves its children; the next one never runs an id twice.
    launcher.stop(Signal::SIGKILL, Duration::from_secs(15));
    assert!(is_alive(two), "children outlive a launcher crash");
    launcher.spawn();
    launcher.wait_running("one", None, START_TIMEOUT);
    launcher.wait_running("two", None, START_TIMEOUT);
    eventually(START_TIMEOUT, "exactly one process per id", || {
        let one = processes_with_env("PROCESS_ID", "one")
            .into_iter()
            .filter(|pid| launcher.our_processes().contains(pid))
            .filter(|pid| environment(*pid).contains_key("HELLO_BIN"))
            .count();
        let two = processes_with_env("PROCESS_ID", "two")
            .into_iter()
            .filter(|pid| launcher.our_processes().contains(pid))
            .filter(|pid| environment(*pid).contains_key("HELLO_BIN"))
            .count();
        // Each id runs `hello-pattern` (exec'd by sh) plus its `sleep`, both with the id.
        (one == 2 && two == 2).then_some(())
    });
}

#[test]
fn shutdown_stops_children_with_their_grace_and_kills_those_that_ignore_sigterm() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "stubborn.yaml",
        r#"apiVersion: prism.launcher/v1
kind: Process
metadata: {name: stubborn}
spec:
  binary: /bin/sh
  args: ["-c", "trap '' TERM; while true; do sleep 0.2; done"]
  terminationGracePeriod: 1s
"#,
    );
    let pid = launcher.wait_running("stubborn", None, START_TIMEOUT);
    let took = launcher.stop(Signal::SIGTERM, Duration::from_secs(15));
    assert!(
        took >= Duration::from_millis(900),
        "the grace period was honoured ({took:?})"
    );
    assert!(
        took < Duration::from_secs(5),
        "shutdown is bounded ({took:?})"
    );
    assert_eq!(process_state(pid), None, "the stubborn child is gone");
    assert!(group_members(pid).is_empty(), "and so is its group");
}

#[test]
fn completions_and_the_manual_name_every_subcommand() {
    let subcommands = [
        "serve",
        "status",
        "reset",
        "logs",
        "apply",
        "delete",
        "stop",
        "start",
        "restart",
        "describe",
        "validate",
        "completions",
        "man",
    ];
    let run = |args: &[&str]| {
        let output = std::process::Command::new(LAUNCHER)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for subcommand in subcommands {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
    }
    let page = run(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH prism-launcher 1"),
        "{page}"
    );
    for subcommand in subcommands {
        assert!(
            page.contains(&format!(".TH prism-launcher-{subcommand} 1")),
            "the manual lacks {subcommand}"
        );
    }
    let unknown = std::process::Command::new(LAUNCHER)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "a shell it cannot complete is a usage error"
    );
}

#[test]
fn status_without_a_launcher_fails_with_a_clear_message() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let output = std::process::Command::new(LAUNCHER)
        .args(["status", "--addr", &address, "--timeout", "2s"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("no launcher answers at {address}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("prism-launcher serve"),
        "it says what to do: {stderr}"
    );
}

#[test]
fn validate_reports_every_error_with_file_line_column_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("specs.yaml");
    std::fs::write(
        &file,
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: a}\nspec:\n  binary: /bin/true\n  colour: blue\n---\napiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: b}\nspec:\n  binary: /bin/true\n  terminationGracePeriod: soon\n",
    )
    .unwrap();
    let output = std::process::Command::new(LAUNCHER)
        .arg("validate")
        .arg(&file)
        .args([
            "--patterns-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/manifests"),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = file.display().to_string();
    assert!(
        stdout.contains(&format!("{path}:6:3: document 1, field spec.colour")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{path}:13:27: document 2, field spec.terminationGracePeriod"
        )),
        "{stdout}"
    );

    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/desired-state");
    let output = std::process::Command::new(LAUNCHER)
        .args([
            "validate",
            examples,
            "--patterns-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/manifests"),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn reading_a_spec_file_does_not_wake_the_watcher_again() {
    let mut launcher = TestLauncher::start();
    // After the first scan: a file written while it runs is read by the scan and again for its
    // event, which is not what this test is about.
    eventually(START_TIMEOUT, "readiness", || {
        (launcher.http_get("/readyz").0 == 200).then_some(())
    });
    launcher.write_spec("bad.yaml", "apiVersion: prism.launcher/v1\nkind: Nope\n");
    eventually(START_TIMEOUT, "the bad file reported", || {
        launcher.log().contains("spec file rejected").then_some(())
    });
    // Later changes are seen (the watcher works) ...
    launcher.write_spec("good.yaml", &hello_spec("good", "x"));
    launcher.wait_running("good", None, START_TIMEOUT);
    launcher.write_spec("other.yaml", &hello_spec("other", "y"));
    launcher.wait_running("other", None, START_TIMEOUT);
    // ... but the bad file, never written again, was read once, not once per watcher wake-up.
    let rejections = launcher.log().matches("spec file rejected").count();
    assert_eq!(rejections, 1, "the watcher re-read its own reads");
}

#[test]
fn an_emptied_file_keeps_its_processes_and_a_renamed_file_does_not_restart_them() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("first.yaml", &hello_spec("kept", "x"));
    let pid = launcher.wait_running("kept", None, START_TIMEOUT);

    // An editor truncating before it writes: the process keeps running.
    std::fs::write(launcher.specs_dir().join("first.yaml"), "").unwrap();
    eventually(START_TIMEOUT, "the empty file reported", || {
        let status = launcher.status();
        status
            .to_string()
            .contains("declares no process")
            .then_some(())
    });
    assert_eq!(
        launcher.process("kept").unwrap()["pid"].as_u64(),
        Some(u64::from(pid))
    );
    std::fs::write(
        launcher.specs_dir().join("first.yaml"),
        hello_spec("kept", "x"),
    )
    .unwrap();

    // A rename moves ownership without a gap: same process, new source.
    std::fs::rename(
        launcher.specs_dir().join("first.yaml"),
        launcher.specs_dir().join("second.yaml"),
    )
    .unwrap();
    let row = eventually(START_TIMEOUT, "the new owner", || {
        launcher.process("kept").filter(|row| {
            row["source"]
                .as_str()
                .is_some_and(|source| source.ends_with("second.yaml"))
        })
    });
    assert_eq!(
        row["pid"].as_u64(),
        Some(u64::from(pid)),
        "not restarted: {row}"
    );
    assert!(is_alive(pid));
    assert!(
        launcher.log().matches("stopping process").count() == 0,
        "never stopped"
    );
}
