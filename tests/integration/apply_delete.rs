//! Regressions of `apply` and `delete` through the CLI only: a file is never rewritten or
//! removed while it declares processes the call does not name (also those the watcher could not
//! apply), an empty `resources` block is no change, and one id in two input files is refused
//! before anything is written.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(20);

fn sleeper(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}}}\nspec:\n  \
         binary: /bin/sleep\n  args: [\"600\"]\n  terminationGracePeriod: 1s\n{extra}"
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `text` to a scratch file of the test (outside the spec directory).
fn scratch(launcher: &TestLauncher, name: &str, text: &str) -> PathBuf {
    let path = launcher.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `pair.yaml` in the spec directory declares `left`, which runs, and `right`, with a typo the
/// watcher refuses: the store knows `left` only.
fn pair_with_a_typo(launcher: &mut TestLauncher) -> String {
    launcher.write_spec("pair.yaml", &sleeper("left", ""));
    launcher.wait_running("left", None, TIMEOUT);
    let edited = format!(
        "{}---\n{}",
        sleeper("left", ""),
        sleeper("right", "  bogus: 1\n")
    );
    launcher.write_spec("pair.yaml", &edited);
    eventually(TIMEOUT, "the typo to be reported", || {
        let out = launcher.cli(&["status", "-o", "json"]);
        text(&out.stdout).contains("bogus").then_some(())
    });
    edited
}

#[test]
fn delete_keeps_a_file_that_also_declares_a_process_the_watcher_could_not_apply() {
    let mut launcher = TestLauncher::start();
    let edited = pair_with_a_typo(&mut launcher);
    let pair = launcher.specs_dir().join("pair.yaml");

    let refused = launcher.cli(&["delete", "left"]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("pair.yaml also declares right"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&pair).unwrap(), edited);
    assert!(launcher.process("left").is_some());

    // A document whose name cannot be read: what the file declares is unknown, so it stays.
    let broken = format!("{}---\nmetadata: [unclosed\n", sleeper("left", ""));
    launcher.write_spec("pair.yaml", &broken);
    let refused = launcher.cli(&["delete", "left"]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("pair.yaml would be removed, but what it declares cannot be read")
            && stderr.contains("document 2"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&pair).unwrap(), broken);
}

#[test]
fn apply_does_not_rewrite_a_file_dropping_a_process_the_watcher_could_not_apply() {
    let mut launcher = TestLauncher::start();
    let edited = pair_with_a_typo(&mut launcher);
    let pair = launcher.specs_dir().join("pair.yaml");
    let labelled = scratch(
        &launcher,
        "left.yaml",
        &sleeper("left", "").replace("{name: left}", "{name: left, labels: {a: b}}"),
    );

    let refused = launcher.cli(&["apply", "-f", labelled.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("pair.yaml also declares right"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&pair).unwrap(), edited);

    // Named too, it is written (fixed): nothing is lost.
    let both = scratch(
        &launcher,
        "both.yaml",
        &format!(
            "{}---\n{}",
            sleeper("left", "").replace("{name: left}", "{name: left, labels: {a: b}}"),
            sleeper("right", "")
        ),
    );
    let applied = launcher.cli(&["apply", "-f", both.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    launcher.wait_running("right", None, TIMEOUT);
    let now = std::fs::read_to_string(&pair).unwrap();
    assert!(
        now.contains("name: left") && now.contains("name: right"),
        "{now}"
    );
}

#[test]
fn an_empty_resources_block_is_no_change_and_replaces_nothing() {
    let mut launcher = TestLauncher::start();
    let file = scratch(&launcher, "s.yaml", &sleeper("s", ""));
    let out = launcher.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = launcher.wait_running("s", None, TIMEOUT);

    std::fs::write(&file, sleeper("s", "  resources: {}\n")).unwrap();
    let out = launcher.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("unchanged s in "), "{stdout}");
    // The text is written (it is the file's text now), and the process stays.
    let written = launcher.specs_dir().join("applied-s.yaml");
    assert!(std::fs::read_to_string(&written)
        .unwrap()
        .contains("resources: {}"));
    let row = launcher.process("s").unwrap();
    assert_eq!(row["pid"].as_u64(), Some(u64::from(pid)), "{row}");
    assert_eq!(row["desired_generation"].as_u64(), Some(1), "{row}");
}

#[test]
fn one_id_in_two_input_files_is_refused_before_anything_is_written() {
    let mut launcher = TestLauncher::start();
    let dir = launcher.dir.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), sleeper("x", "")).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        sleeper("x", "").replace("\"600\"", "\"700\""),
    )
    .unwrap();

    let out = launcher.cli(&["apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("a.yaml") && stdout.contains("b.yaml") && stdout.contains("x"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(launcher.specs_dir()).unwrap().count(),
        0,
        "nothing written"
    );

    // `validate` of the same files says so too.
    let validated = Command::new(LAUNCHER)
        .args(["validate", "--patterns-dir"])
        .arg(launcher.dir.path().join("no-catalog"))
        .arg(dir.join("a.yaml"))
        .arg(dir.join("b.yaml"))
        .output()
        .unwrap();
    assert_eq!(validated.status.code(), Some(3));
    let stdout = text(&validated.stdout);
    assert!(
        stdout.contains("b.yaml")
            && stdout.contains("name x is already declared by")
            && stdout.contains("a.yaml"),
        "{stdout}"
    );
}

/// Regression: a launcher killed in the middle of an `apply` left its temporary file (which may
/// hold credentials) in the spec directory for good.
#[test]
fn a_temporary_file_an_interrupted_apply_left_is_removed_at_the_next_start() {
    let mut launcher = TestLauncher::start();
    launcher.stop(nix::sys::signal::Signal::SIGKILL, TIMEOUT);
    let leftover = launcher.specs_dir().join(".prism-apply.4242.0.tmp");
    std::fs::write(&leftover, sleeper("half", "  env: {PASSWORD: hunter2}\n")).unwrap();
    let hand_written = launcher.specs_dir().join(".notes.tmp");
    std::fs::write(&hand_written, "not the launcher's\n").unwrap();
    launcher.spawn();
    assert!(!leftover.exists(), "removed at start");
    assert!(
        hand_written.exists(),
        "only the launcher's own temporary files go"
    );
}
