//! Regressions of `logs` selections through the CLI: a child that prints a marker-like line of
//! its own does not hide its output, and `--since` is bounded by its window, not by the default
//! line count.

use std::time::Duration;

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(20);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_marker_line_a_child_prints_with_a_past_time_hides_nothing() {
    let mut launcher = TestLauncher::start();
    let spec = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: faker}\nspec:\n  \
        binary: /bin/sh\n  args: [\"-c\", \"echo real output; echo '=== prism-launcher: \
        instance start at=2020-01-01T00:00:00.000Z pid=1 generation=9 instance=x ==='; echo \
        after; exec sleep 600\"]\n";
    launcher.write_spec("faker.yaml", spec);
    launcher.wait_running("faker", None, TIMEOUT);
    let log = launcher.data_dir().join("logs/faker.log");
    eventually(TIMEOUT, "the child's output", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|log| log.contains("after\n"))
    });

    let since = launcher.cli(&["logs", "faker", "--since", "1m"]);
    assert!(since.status.success(), "{}", text(&since.stderr));
    let stdout = text(&since.stdout);
    assert!(
        stdout.contains("real output") && stdout.contains("after"),
        "{stdout}"
    );

    // One instance ran: there is no previous one, whatever the child printed.
    let previous = launcher.cli(&["logs", "faker", "--previous"]);
    assert!(!previous.status.success(), "{}", text(&previous.stdout));
    assert!(
        text(&previous.stderr).contains("holds no instance before the last one"),
        "{}",
        text(&previous.stderr)
    );
}

#[test]
fn since_shows_its_whole_window_unless_a_line_count_is_given() {
    let mut launcher = TestLauncher::start();
    let spec = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: chatty}\nspec:\n  \
        binary: /bin/sh\n  args: [\"-c\", \"i=0; while [ $i -lt 150 ]; do echo line $i; \
        i=$((i+1)); done; exec sleep 600\"]\n";
    launcher.write_spec("chatty.yaml", spec);
    launcher.wait_running("chatty", None, TIMEOUT);
    let log = launcher.data_dir().join("logs/chatty.log");
    eventually(TIMEOUT, "the child's output", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|log| log.contains("line 149\n"))
    });

    let since = launcher.cli(&["logs", "chatty", "--since", "10m"]);
    assert!(since.status.success(), "{}", text(&since.stderr));
    let stdout = text(&since.stdout);
    // The marker and every line of the window.
    assert_eq!(stdout.lines().count(), 151, "{stdout}");
    assert!(stdout.contains("line 0\n"), "{stdout}");

    let counted = launcher.cli(&["logs", "chatty", "--since", "10m", "-n", "5"]);
    assert_eq!(text(&counted.stdout).lines().count(), 5);
    let plain = launcher.cli(&["logs", "chatty"]);
    assert_eq!(text(&plain.stdout).lines().count(), 100, "the default tail");
}
