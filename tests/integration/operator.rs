//! The operator's verbs through the CLI only, against the real binary: `apply` (through the spec
//! directory), `delete`, and `logs` of earlier instances, with the launcher running and after it
//! stopped.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prism_launcher::api::proto::prism::control_plane_client::ControlPlaneClient;
use prism_launcher::api::proto::prism::launcher::{IsolationLevel, LaunchRequest};
use prism_launcher::api::proto::prism::{ProcessAssignment, ProcessConfig};
use prism_launcher::clock::parse_rfc3339;
use prism_launcher::runtime::logs::{parse_marker, MARKER_PREFIX};

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A spec of a shell that says which pid it is (`$$`, the process the launcher started) and
/// sleeps.
fn talker(name: &str, seconds: u32) -> String {
    format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}}}\nspec:\n  \
         binary: /bin/sh\n  args: [\"-c\", \"echo \\\"instance $$\\\"; exec sleep {seconds}\"]\n  \
         terminationGracePeriod: 2s\n"
    )
}

/// Writes `text` to a scratch file of the test (outside the spec directory) and returns its path.
fn scratch(launcher: &TestLauncher, name: &str, text: &str) -> PathBuf {
    let path = launcher.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The names in the spec directory.
fn spec_dir_listing(launcher: &TestLauncher) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(launcher.specs_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `prism-launcher ARGS --data-dir DATA`, asserting it succeeds; its stdout.
fn cli_ok(launcher: &mut TestLauncher, args: &[&str]) -> String {
    let output = launcher.cli(args);
    assert!(
        output.status.success(),
        "{args:?} failed ({}): {}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[test]
fn apply_declares_through_the_spec_directory_and_an_applied_edit_replaces_the_process() {
    let mut launcher = TestLauncher::start();
    let first = talker("sleeper", 600);
    let file = scratch(&launcher, "sleeper.yaml", &first);
    let file = file.to_str().unwrap();

    let applied = cli_ok(&mut launcher, &["apply", "-f", file]);
    assert!(applied.contains("created sleeper in "), "{applied}");
    // `apply` then `ls specs/` agree: the launcher wrote the file there.
    assert_eq!(spec_dir_listing(&launcher), ["applied-sleeper.yaml"]);
    let written = launcher.specs_dir().join("applied-sleeper.yaml");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), first);
    let pid = launcher.wait_running("sleeper", None, TIMEOUT);

    // A dry run of an edit shows the change and writes nothing.
    let edited = talker("sleeper", 601).replace(
        "{name: sleeper}",
        "{name: sleeper, labels: {team: storage}}",
    );
    std::fs::write(file, &edited).unwrap();
    let dry = cli_ok(&mut launcher, &["apply", "-f", file, "--dry-run"]);
    assert!(dry.contains("dry run"), "{dry}");
    assert!(
        dry.contains("changed sleeper in ")
            && dry.contains("spec.args, metadata.labels (the process is replaced)"),
        "{dry}"
    );
    assert_eq!(std::fs::read_to_string(&written).unwrap(), first);
    assert_eq!(spec_dir_listing(&launcher), ["applied-sleeper.yaml"]);
    let row = launcher.process("sleeper").unwrap();
    assert_eq!(row["pid"].as_u64(), Some(u64::from(pid)), "{row}");
    assert_eq!(row["desired_generation"].as_u64(), Some(1), "{row}");

    // Applied, the edit replaces the process.
    let changed = cli_ok(&mut launcher, &["apply", "-f", file]);
    assert!(changed.contains("changed sleeper in "), "{changed}");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), edited);
    let replaced = launcher.wait_running("sleeper", Some(pid), TIMEOUT);
    assert_ne!(replaced, pid);
    assert!(!is_alive(pid), "the old process is gone");
    let row = launcher.process("sleeper").unwrap();
    assert_eq!(row["desired_generation"].as_u64(), Some(2), "{row}");
    assert_eq!(row["labels"]["team"], "storage", "{row}");

    // The same text again changes nothing, and standard input works as a file does.
    let mut again = Command::new(LAUNCHER)
        .args(["apply", "-f", "-", "--data-dir"])
        .arg(launcher.data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    again
        .stdin
        .take()
        .unwrap()
        .write_all(edited.as_bytes())
        .unwrap();
    let again = again.wait_with_output().unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("unchanged sleeper in "),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        launcher.process("sleeper").unwrap()["pid"].as_u64(),
        Some(u64::from(replaced))
    );
}

#[test]
fn apply_reports_every_error_of_every_file_and_writes_nothing_unless_all_are_valid() {
    let mut launcher = TestLauncher::start();
    let good = scratch(&launcher, "good.yaml", &talker("good", 600));
    let bad = scratch(
        &launcher,
        "bad.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: one}\nspec:\n  \
         binary: /bin/sleep\n  restartPolicy: Sometimes\n---\napiVersion: prism.launcher/v1\n\
         kind: Process\nmetadata: {name: two}\nspec:\n  binary: /bin/sleep\n  bogus: 1\n",
    );
    let output = launcher.cli(&[
        "apply",
        "-f",
        good.to_str().unwrap(),
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 2, "one per bad document: {stdout}");
    assert!(
        errors[0].contains("bad.yaml")
            && errors[0].contains("document 1")
            && errors[0].contains("spec.restartPolicy"),
        "{stdout}"
    );
    assert!(
        errors[1].contains("document 2") && errors[1].contains("spec.bogus"),
        "{stdout}"
    );
    assert!(spec_dir_listing(&launcher).is_empty(), "nothing written");

    // A relative path would mean another file once in the spec directory: refused, naming both.
    let relative = scratch(
        &launcher,
        "relative.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: two}\nspec:\n  \
         binary: ./relative-to-the-file\n",
    );
    let output = launcher.cli(&["apply", "-f", relative.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("spec.binary") && stdout.contains("write it as an absolute path"),
        "{stdout}"
    );
    assert!(spec_dir_listing(&launcher).is_empty(), "nothing written");
    assert!(launcher.process("good").is_none());
}

#[test]
fn delete_removes_the_file_and_the_process_and_an_unknown_id_is_not_found() {
    let mut launcher = TestLauncher::start();
    let file = scratch(&launcher, "doomed.yaml", &talker("doomed", 600));
    cli_ok(&mut launcher, &["apply", "-f", file.to_str().unwrap()]);
    let pid = launcher.wait_running("doomed", None, TIMEOUT);

    let deleted = cli_ok(&mut launcher, &["delete", "doomed"]);
    assert!(
        deleted.contains("deleted doomed") && deleted.contains("applied-doomed.yaml, stopped"),
        "{deleted}"
    );
    assert!(
        spec_dir_listing(&launcher).is_empty(),
        "its file is removed"
    );
    assert!(!is_alive(pid), "stopped before the answer");
    eventually(TIMEOUT, "doomed to be forgotten", || {
        launcher.process("doomed").is_none().then_some(())
    });

    let unknown = launcher.cli(&["delete", "nobody-here"]);
    assert!(!unknown.status.success());
    let stderr = text(&unknown.stderr);
    assert!(
        stderr.contains("nobody-here") && stderr.contains("not found"),
        "{stderr}"
    );

    // A file that declares two processes goes only when both are named (`-f` names them all).
    let pair = format!("{}---\n{}", talker("left", 600), talker("right", 600));
    launcher.write_spec("pair.yaml", &pair);
    launcher.wait_running("left", None, TIMEOUT);
    launcher.wait_running("right", None, TIMEOUT);
    let refused = launcher.cli(&["delete", "left"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("also declares right"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(spec_dir_listing(&launcher), ["pair.yaml"]);
    let pair_file = launcher.specs_dir().join("pair.yaml");
    let both = cli_ok(
        &mut launcher,
        &["delete", "-f", pair_file.to_str().unwrap(), "--grace", "0s"],
    );
    assert_eq!(
        both.lines()
            .filter(|line| line.starts_with("deleted "))
            .count(),
        2,
        "{both}"
    );
    assert!(spec_dir_listing(&launcher).is_empty());
}

/// `grpc` only sets up what the CLI acts on: a pattern launched over the API and a process
/// prism-admin assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_delete_name_the_owner_of_what_is_not_a_spec_files_and_delete_terminates_a_launch(
) {
    let mut launcher = TestLauncher::start_with(&["--allowed-executable-root", "/bin"]);
    let mut patterns = launcher.pattern_client().await;
    let launched = patterns
        .launch_pattern(LaunchRequest {
            pattern_name: "hello-pattern".into(),
            isolation: IsolationLevel::IsolationNamespace as i32,
            namespace: "tenant-a".into(),
            ..LaunchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(launched.process_id, "ns:tenant-a:hello-pattern");
    let mut control = ControlPlaneClient::connect(format!("http://{}", launcher.address()))
        .await
        .unwrap();
    control
        .assign_process(ProcessAssignment {
            process_id: "assigned".into(),
            process_type: "utility".into(),
            config: Some(ProcessConfig {
                binary: "/bin/sleep".into(),
                args: vec!["600".into()],
                ..ProcessConfig::default()
            }),
            version: 3,
            ..ProcessAssignment::default()
        })
        .await
        .unwrap();
    let pattern_pid = launcher.wait_running("ns:tenant-a:hello-pattern", None, TIMEOUT);
    launcher.wait_running("assigned", None, TIMEOUT);

    // apply of an id another source owns is refused, naming the owner.
    let clash = scratch(
        &launcher,
        "clash.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: assigned}\nspec:\n  \
         binary: /bin/sleep\n  args: [\"1\"]\n",
    );
    let refused = launcher.cli(&["apply", "-f", clash.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("assigned") && stderr.contains("admin v3"),
        "{stderr}"
    );
    assert!(spec_dir_listing(&launcher).is_empty());

    // delete refuses prism-admin's, naming the owner, and does nothing else of the call.
    let refused = launcher.cli(&["delete", "ns:tenant-a:hello-pattern", "assigned"]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("admin v3") && stderr.contains("prism-admin"),
        "{stderr}"
    );
    assert!(is_alive(pattern_pid), "nothing deleted");

    // A launched pattern is terminated, as TerminatePattern does.
    let deleted = cli_ok(
        &mut launcher,
        &["delete", "ns:tenant-a:hello-pattern", "--grace", "1s"],
    );
    assert!(
        deleted.contains("deleted ns:tenant-a:hello-pattern (api): terminated, stopped"),
        "{deleted}"
    );
    assert!(!is_alive(pattern_pid));
    assert!(launcher.process("assigned").is_some());
}

/// Each line of `logs` output, with the marker lines' pids.
fn marker_pids(output: &str) -> Vec<u32> {
    output
        .lines()
        .filter_map(|line| parse_marker(line.as_bytes()))
        .map(|marker| marker.pid)
        .collect()
}

#[test]
fn logs_show_the_last_instance_and_with_previous_the_one_before_also_after_the_launcher_stopped() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec("talker.yaml", &talker("talker", 600));
    let first = launcher.wait_running("talker", None, TIMEOUT);
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let second = launcher.wait_running("talker", Some(first), TIMEOUT);
    let log = launcher.data_dir().join("logs/talker.log");
    eventually(TIMEOUT, "the second instance's output", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|log| log.contains(&format!("instance {second}\n")))
    });

    // Through the running launcher.
    let current = cli_ok(&mut launcher, &["logs", "talker"]);
    assert_eq!(marker_pids(&current), [first, second], "{current}");
    assert!(
        current.ends_with(&format!("instance {second}\n")),
        "{current}"
    );
    let previous = cli_ok(&mut launcher, &["logs", "talker", "--previous"]);
    assert_eq!(marker_pids(&previous), [first], "{previous}");
    assert!(
        previous.ends_with(&format!("instance {first}\n")),
        "{previous}"
    );
    assert!(
        !previous.contains(&format!("instance {second}")),
        "{previous}"
    );

    // Post-mortem: the same from the files.
    launcher.stop(Signal::SIGTERM, TIMEOUT);
    let data_dir = launcher.data_dir();
    let no_launcher = data_dir.join("launcher.sock");
    let logs = |args: &[&str]| -> Output {
        Command::new(LAUNCHER)
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            // A socket nobody listens on: never a launcher of someone else's on the default port.
            .arg("--addr")
            .arg(format!("unix:{}", no_launcher.display()))
            .args(["--timeout", "2s"])
            .output()
            .unwrap()
    };
    let output = logs(&["logs", "talker"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("reading"),
        "{}",
        text(&output.stderr)
    );
    let current = text(&output.stdout);
    assert_eq!(marker_pids(&current), [first, second], "{current}");
    assert!(
        current.ends_with(&format!("instance {second}\n")),
        "{current}"
    );

    let output = logs(&["logs", "talker", "--previous"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let previous = text(&output.stdout);
    let lines: Vec<&str> = previous.lines().collect();
    assert_eq!(lines.len(), 2, "{previous}");
    let marker = parse_marker(lines[0].as_bytes()).expect("the marker line first");
    assert_eq!((marker.pid, marker.generation), (first, 1), "{previous}");
    assert_eq!(lines[1], format!("instance {first}"));

    // --timestamps: each line after the time it was read, marked `<` (written before then)
    // since it was in the file already.
    let output = logs(&["logs", "talker", "--timestamps", "-n", "2"]);
    let stamped = text(&output.stdout);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 2, "{stamped}");
    for line in &lines {
        let (time, rest) = line.split_once(' ').unwrap();
        let time = time
            .strip_prefix('<')
            .expect("marked as written before the stamp");
        assert!(parse_rfc3339(time).is_some(), "{line}");
        assert!(!rest.is_empty(), "{line}");
    }
    assert!(lines[0].contains(MARKER_PREFIX), "{stamped}");
}
