//! Desired state a launcher can trust after a restart: nothing a spec file declared moves until
//! the spec directory has been read in this run, and the directory is the one truth for what
//! files declare.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(20);

/// A spec whose program leaves `marker` behind the moment it starts, then sleeps.
fn marking_spec(name: &str, marker: &Path) -> String {
    format!(
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: {name}\nspec:\n  \
         binary: /bin/sh\n  args: [\"-c\", \"touch '{}'; exec sleep 600\"]\n",
        marker.display()
    )
}

/// Waits until the launcher reports itself ready (its first scan of the spec directory and the
/// reconcile after it are done).
fn wait_ready(launcher: &mut TestLauncher) {
    eventually(TIMEOUT, "the launcher to be ready", || {
        (launcher.http_get("/readyz").0 == 200).then_some(())
    });
}

#[test]
fn a_spec_removed_while_the_launcher_was_down_never_starts() {
    let mut launcher = TestLauncher::start();
    let marker = launcher.dir.path().join("doomed.started");
    let canary_marker = launcher.dir.path().join("canary.started");
    launcher.write_spec("doomed.yaml", &marking_spec("doomed", &marker));
    launcher.write_spec("canary.yaml", &marking_spec("canary", &canary_marker));
    launcher.wait_running("doomed", None, TIMEOUT);
    launcher.wait_running("canary", None, TIMEOUT);
    launcher.stop(Signal::SIGTERM, TIMEOUT);
    assert!(launcher.our_processes().is_empty());

    // While it is down: one spec goes, and the markers are cleared to see what starts next.
    launcher.remove_spec("doomed.yaml");
    std::fs::remove_file(&marker).unwrap();
    std::fs::remove_file(&canary_marker).unwrap();
    launcher.spawn();
    wait_ready(&mut launcher);
    launcher.wait_running("canary", None, TIMEOUT);
    assert!(canary_marker.exists(), "the canary started again");
    assert!(
        launcher.process("doomed").is_none(),
        "{}",
        launcher.status()
    );
    assert!(
        !marker.exists(),
        "a spec deleted while the launcher was down was started"
    );
}

#[test]
fn a_launcher_started_on_another_spec_directory_stops_what_only_the_old_one_declared() {
    let mut launcher = TestLauncher::start();
    let marker = launcher.dir.path().join("old.started");
    launcher.write_spec("old.yaml", &marking_spec("old", &marker));
    let shared = marking_spec("shared", &launcher.dir.path().join("shared.started"));
    launcher.write_spec("shared.yaml", &shared);
    launcher.wait_running("old", None, TIMEOUT);
    let shared_pid = launcher.wait_running("shared", None, TIMEOUT);
    // Kept running across the restart, to see what the new directory decides about them.
    launcher.stop(Signal::SIGKILL, TIMEOUT);
    let old_pid = launcher
        .our_processes()
        .into_iter()
        .find(|pid| environment(*pid).get("PROCESS_ID").map(String::as_str) == Some("old"))
        .expect("the old process survived the launcher's kill");

    let other = launcher.dir.path().join("other-specs");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("shared.yaml"), &shared).unwrap();
    launcher.use_specs_dir(other);
    launcher.spawn();
    wait_ready(&mut launcher);
    eventually(TIMEOUT, "the old directory's process to stop", || {
        (!is_alive(old_pid) && launcher.process("old").is_none()).then_some(())
    });
    // What the new directory declares too is adopted and kept, not restarted.
    assert_eq!(
        launcher.wait_running("shared", None, TIMEOUT),
        shared_pid,
        "the process both directories declare was restarted"
    );
    assert!(
        launcher.log().contains("outside the spec directory"),
        "{}",
        launcher.log()
    );
}
