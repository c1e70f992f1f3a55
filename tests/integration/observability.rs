//! Metrics, the HTTP endpoint and `status` against scripted scenarios with known numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn spec(name: &str, body: &str) -> String {
    format!("apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {{name: {name}}}\nspec:\n  type: utility\n{body}")
}

/// The samples of a parsed exposition, by name and (sorted) labels.
pub(crate) fn samples(text: &str) -> BTreeMap<(String, String), f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
        .expect("the whole exposition parses");
    scrape
        .samples
        .into_iter()
        .map(|sample| {
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            let value = match sample.value {
                prometheus_parse::Value::Counter(value)
                | prometheus_parse::Value::Gauge(value)
                | prometheus_parse::Value::Untyped(value) => value,
                prometheus_parse::Value::Summary(quantiles) => quantiles.len() as f64,
                prometheus_parse::Value::Histogram(buckets) => buckets.len() as f64,
            };
            ((sample.metric, labels.join(",")), value)
        })
        .collect()
}

pub(crate) fn value(samples: &BTreeMap<(String, String), f64>, metric: &str, labels: &str) -> f64 {
    *samples
        .get(&(metric.to_string(), labels.to_string()))
        .unwrap_or_else(|| panic!("no sample {metric}{{{labels}}} in {samples:#?}"))
}

#[test]
fn metrics_count_a_scripted_scenario_exactly_in_text_and_json() {
    let mut launcher = TestLauncher::start();
    assert_eq!(launcher.http_get("/healthz"), (200, "ok\n".to_string()));
    eventually(TIMEOUT, "readiness", || {
        (launcher.http_get("/readyz").0 == 200).then_some(())
    });

    // One steady process, killed once; one that always fails and trips after three failures.
    launcher.write_spec(
        "steady.yaml",
        &spec("steady", "  binary: /bin/sleep\n  args: [\"600\"]\n"),
    );
    launcher.write_spec(
        "crasher.yaml",
        &spec("crasher", "  binary: /bin/sh\n  args: [\"-c\", \"exit 3\"]\n  backoff: {initial: 50ms, failureThreshold: 3}\n"),
    );
    let steady = launcher.wait_running("steady", None, TIMEOUT);
    eventually(TIMEOUT, "the crasher to trip", || {
        launcher
            .process("crasher")
            .filter(|row| row["actual"] == "tripped")
    });
    kill(Pid::from_raw(steady as i32), Signal::SIGKILL).unwrap();
    launcher.wait_running("steady", Some(steady), TIMEOUT);

    let (code, text) = launcher.http_get("/metrics");
    assert_eq!(code, 200);
    let samples = samples(&text);
    let exact = [
        // steady: start + restart; crasher: start + 2 restarts.
        (
            "pattern_launcher_process_starts_total",
            "pattern_isolation=utility:None",
            5.0,
        ),
        ("pattern_launcher_restarts_total", "", 3.0),
        ("pattern_launcher_failures_total", "reason=exit_code", 3.0),
        ("pattern_launcher_failures_total", "reason=signal", 1.0),
        ("pattern_launcher_circuit_open", "", 1.0),
        ("pattern_launcher_processes_total", "state=running", 1.0),
        ("pattern_launcher_processes_total", "state=failed", 1.0),
        ("pattern_launcher_processes_total", "state=stopped", 0.0),
        (
            "pattern_launcher_reconcile_actions_total",
            "kind=start",
            2.0,
        ),
        (
            "pattern_launcher_reconcile_actions_total",
            "kind=restart",
            3.0,
        ),
        ("pattern_launcher_desired_processes", "source=file", 2.0),
        ("pattern_launcher_observed_processes", "source=file", 2.0),
        ("pattern_launcher_orphans_reaped_total", "", 0.0),
        ("pattern_launcher_admin_registered", "", 0.0),
        // Launches: the five spawns (no health checks, so ready when spawned).
        ("pattern_launcher_launch_duration_seconds_count", "", 5.0),
    ];
    for (metric, labels, expected) in exact {
        assert_eq!(
            value(&samples, metric, labels),
            expected,
            "{metric}{{{labels}}}"
        );
    }
    assert!(
        text.contains("# TYPE pattern_launcher_launch_duration_seconds summary"),
        "{text}"
    );
    for quantile in ["0.5", "0.95", "0.99"] {
        assert!(
            text.contains(&format!(
                "pattern_launcher_launch_duration_seconds{{quantile=\"{quantile}\"}}"
            )),
            "quantile {quantile} in {text}"
        );
    }
    assert!(!text.contains("pid="), "no per-pid series");

    let (code, json) = launcher.http_get("/metrics.json");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(json["running_processes"], 1);
    assert_eq!(json["total_processes"], 2);
    assert_eq!(json["process_starts_total"]["utility:None"], 5);
    assert_eq!(json["restarts_total"], 3);
    assert_eq!(json["failures_total"]["exit_code"], 3);
    assert_eq!(json["circuit_open"], 1);
    assert_eq!(json["launch_duration_count"], 5);
    for key in [
        "launch_duration_p50_seconds",
        "launch_duration_p95_seconds",
        "launch_duration_p99_seconds",
        "uptime_seconds",
    ] {
        assert!(json[key].is_number(), "{key} in {json}");
    }
}

#[test]
fn status_json_shows_every_kind_of_diff_and_the_table_summarises_it() {
    let mut launcher = TestLauncher::start_with(&["--max-processes", "3"]);
    let stubborn = |name: &str, tag: &str| {
        spec(
            name,
            &format!("  binary: /bin/sh\n  args: [\"-c\", \"trap '' TERM; while true; do sleep 0.1; done # {tag}\"]\n  terminationGracePeriod: 30s\n"),
        )
    };
    launcher.write_spec(
        "failing.yaml",
        &spec(
            "failing",
            "  binary: /bin/sh\n  args: [\"-c\", \"exit 1\"]\n  backoff: {failureThreshold: 1}\n",
        ),
    );
    eventually(TIMEOUT, "failing to trip", || {
        launcher
            .process("failing")
            .filter(|row| row["actual"] == "tripped")
    });
    launcher.write_spec(
        "sync.yaml",
        &spec("sync", "  binary: /bin/sleep\n  args: [\"600\"]\n"),
    );
    launcher.write_spec("leaving.yaml", &stubborn("leaving", "a"));
    launcher.write_spec("changing.yaml", &stubborn("changing", "a"));
    for id in ["sync", "leaving", "changing"] {
        launcher.wait_running(id, None, TIMEOUT);
    }
    launcher.write_spec(
        "waiting.yaml",
        &spec("waiting", "  binary: /bin/sleep\n  args: [\"600\"]\n"),
    );
    launcher.remove_spec("leaving.yaml");
    launcher.write_spec("changing.yaml", &stubborn("changing", "b"));

    let status = eventually(TIMEOUT, "every kind of diff", || {
        let status = launcher.status();
        let diffs: BTreeMap<String, String> = status["processes"]
            .as_array()?
            .iter()
            .map(|row| {
                (
                    row["id"].as_str().unwrap().to_string(),
                    row["diff"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: BTreeMap<String, String> = [
            ("changing", "replace"),
            ("failing", "failing"),
            ("leaving", "stop"),
            ("sync", "in-sync"),
            ("waiting", "start"),
        ]
        .into_iter()
        .map(|(id, diff)| (id.to_string(), diff.to_string()))
        .collect();
        let acted = |id: &str, actual: &str| {
            status["processes"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|row| row["id"] == id && row["actual"] == actual)
            })
        };
        // The loop has acted on the removal too (not only the store on the file).
        let pending = acted("waiting", "pending") && acted("leaving", "stopping");
        (diffs == expected && pending).then_some(status)
    });
    let summary = &status["summary"];
    assert_eq!(
        (
            summary["to_start"].as_u64(),
            summary["to_replace"].as_u64(),
            summary["to_stop"].as_u64(),
            summary["failing"].as_u64(),
            summary["in_sync"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1), Some(1)),
        "{summary}"
    );
    let row = |id: &str| {
        status["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["id"] == id)
            .unwrap()
            .clone()
    };
    assert!(row("waiting")["diff_detail"]
        .as_str()
        .unwrap()
        .contains("--max-processes"));
    assert!(row("failing")["diff_detail"]
        .as_str()
        .unwrap()
        .contains("circuit open"));
    assert!(row("changing")["diff_detail"]
        .as_str()
        .unwrap()
        .contains("generation 1 runs, 2 desired"));
    assert!(row("leaving")["diff_detail"]
        .as_str()
        .unwrap()
        .contains("stopping"));

    let table = String::from_utf8(launcher.cli(&["status"]).stdout).unwrap();
    assert!(
        table.contains("+1 to start, ~1 to replace, -1 to stop, !1 failing (1 in sync)"),
        "{table}"
    );
    assert!(
        !table.contains('\u{1b}'),
        "no colours when stdout is not a terminal:\n{table}"
    );
    let filtered =
        String::from_utf8(launcher.cli(&["status", "--state", "tripped"]).stdout).unwrap();
    let rows: Vec<&str> = filtered
        .lines()
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(rows, ["failing"], "{filtered}");
    let yaml = launcher.cli(&["status", "-o", "yaml"]);
    let parsed: serde_yaml::Value =
        serde_yaml::from_slice(&yaml.stdout).expect("status -o yaml is YAML");
    assert_eq!(parsed["summary"]["to_stop"], serde_yaml::Value::from(1));
}

#[test]
fn systemd_hears_ready_after_the_first_reconcile_then_the_watchdog_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut launcher = TestLauncher::start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    launcher.write_spec(
        "a.yaml",
        "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: a}\nspec:\n  binary: /bin/sleep\n  args: [\"600\"]\n",
    );
    let mut received: Vec<String> = Vec::new();
    let next = |what: &str, wanted: &dyn Fn(&str) -> bool, received: &mut Vec<String>| {
        eventually(Duration::from_secs(10), what, || {
            let mut buffer = [0u8; 256];
            let read = socket.recv(&mut buffer).ok()?;
            let message = String::from_utf8_lossy(&buffer[..read]).into_owned();
            received.push(message.clone());
            wanted(&message).then_some(message)
        })
    };
    next(
        "READY=1",
        &|message| message.starts_with("READY=1"),
        &mut received,
    );
    // Sent only once the launcher is ready: nothing is missing the moment systemd hears it.
    assert_eq!(
        launcher.http_get("/readyz").0,
        200,
        "ready when READY=1 arrives"
    );
    let readies = received.iter().filter(|m| m.starts_with("READY=1")).count();
    assert_eq!(readies, 1, "{received:?}");
    for _ in 0..2 {
        next(
            "WATCHDOG=1",
            &|message| message == "WATCHDOG=1",
            &mut received,
        );
    }
    launcher.wait_running("a", None, Duration::from_secs(10));
    // Sent when the shutdown begins, so it is waiting in the socket once the launcher is gone.
    launcher.stop(Signal::SIGTERM, Duration::from_secs(15));
    next(
        "STOPPING=1",
        &|message| message.starts_with("STOPPING=1"),
        &mut received,
    );
    assert_eq!(
        received.iter().filter(|m| m.starts_with("READY=1")).count(),
        1,
        "READY=1 once: {received:?}"
    );
}

#[test]
fn status_of_some_ids_wide_filtered_with_an_exit_code_and_a_watch_that_outlives_a_restart() {
    let mut launcher = TestLauncher::start();
    launcher.write_spec(
        "steady.yaml",
        &spec("steady", "  binary: /bin/sleep\n  args: [\"600\"]\n"),
    );
    launcher.write_spec(
        "broken.yaml",
        &spec("broken", "  binary: /bin/false\n  restartPolicy: always\n"),
    );
    launcher.wait_running("steady", None, TIMEOUT);
    let text = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).to_string();

    // One id: only its row, and a summary of it alone.
    let one = launcher.cli(&["status", "steady"]);
    assert!(one.status.success(), "{}", text(&one));
    assert!(
        text(&one).contains("steady") && !text(&one).contains("broken"),
        "{}",
        text(&one)
    );
    assert!(
        text(&one).contains("!0 failing (1 in sync)"),
        "{}",
        text(&one)
    );
    // --exit-code: 0 for an id in sync, 1 once a failing one is shown.
    assert_eq!(
        launcher
            .cli(&["status", "steady", "--exit-code"])
            .status
            .code(),
        Some(0)
    );
    eventually(TIMEOUT, "broken to fail", || {
        let output = launcher.cli(&["status", "broken", "--exit-code"]);
        (output.status.code() == Some(1)).then_some(())
    });
    // An id nobody knows is an error, after what was found.
    let unknown = launcher.cli(&["status", "steady", "nobody"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no process \"nobody\""));
    // -o wide has the extra columns; a state that is no state is a usage error.
    let wide = launcher.cli(&["status", "-o", "wide"]);
    assert!(
        text(&wide).contains("LAST EXIT") && text(&wide).contains("FAILURES"),
        "{}",
        text(&wide)
    );
    assert_eq!(
        launcher.cli(&["status", "--state", "foo"]).status.code(),
        Some(2)
    );
    // The summary follows the filter.
    let running = launcher.cli(&["status", "--state", "running"]);
    assert!(
        text(&running).contains("!0 failing (1 in sync)"),
        "{}",
        text(&running)
    );

    // --watch keeps asking through a restart of the launcher.
    let output_path = launcher.data_dir().parent().unwrap().join("watch.out");
    let output_file = std::fs::File::create(&output_path).unwrap();
    let address = format!(
        "unix:{}",
        launcher.data_dir().join("launcher.sock").display()
    );
    let watch = std::process::Command::new(LAUNCHER)
        .args([
            "status",
            "--watch",
            "--interval",
            "100ms",
            "--timeout",
            "1s",
            "--addr",
            &address,
        ])
        .stdout(output_file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed and reaped however the test ends.
    struct Watcher(std::process::Child);
    impl Drop for Watcher {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
    let mut watch = Watcher(watch);
    let read = || std::fs::read_to_string(&output_path).unwrap_or_default();
    eventually(TIMEOUT, "a first table", || {
        read().contains("steady").then_some(())
    });
    launcher.stop(Signal::SIGTERM, Duration::from_secs(15));
    eventually(TIMEOUT, "the watch to say the launcher is gone", || {
        read().contains("no launcher answers").then_some(())
    });
    assert!(watch.0.try_wait().unwrap().is_none(), "the watch goes on");
    let before = read().len();
    launcher.spawn();
    eventually(TIMEOUT, "a table again after the restart", || {
        read()[before..].contains("steady").then_some(())
    });
    drop(watch);
}
