//! Table tests of `plan` and of the state transitions, with time passed in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fixtures::*;
use super::*;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn health_check() -> HealthCheck {
    HealthCheck {
        probe: Probe::Tcp { port: None },
        initial_delay: Duration::ZERO,
        interval: HealthCheck::DEFAULT_INTERVAL,
        timeout: HealthCheck::DEFAULT_TIMEOUT,
        failure_threshold: 3,
        success_threshold: 1,
    }
}

fn checked_spec() -> ProcessSpec {
    ProcessSpec {
        health_check: Some(health_check()),
        ..spec()
    }
}

fn policy_spec(restart_policy: RestartPolicy) -> ProcessSpec {
    ProcessSpec {
        restart_policy,
        ..spec()
    }
}

/// `spec()` with a restart-relevant change (other args).
fn changed_spec() -> ProcessSpec {
    ProcessSpec {
        args: vec!["120".to_string()],
        termination_grace: Duration::from_secs(3),
        ..spec()
    }
}

/// `spec()` with only its labels changed.
fn relabelled_spec() -> ProcessSpec {
    let mut labels = BTreeMap::new();
    labels.insert("team".to_string(), "data".to_string());
    ProcessSpec { labels, ..spec() }
}

fn desired(generation: u64, spec: ProcessSpec) -> DesiredRecord {
    desired_for("web", generation, spec)
}

fn desired_for(name: &str, generation: u64, spec: ProcessSpec) -> DesiredRecord {
    DesiredRecord {
        id: id(name),
        spec: Arc::new(spec),
        generation,
        source: Source::Api,
        resets: 0,
        held: false,
        restarts: 0,
    }
}

fn backing_off(next_restart_at: Option<UnixMillis>) -> ObservedRecord {
    ObservedRecord {
        consecutive_failures: 2,
        error_count: 2,
        last_exit: Some(ExitStatus::Code(1)),
        last_error: Some("exited with exit code 1".to_string()),
        next_restart_at,
        ..observed(Phase::BackingOff, spec())
    }
}

fn stopping(reason: StopReason, stop_deadline: Option<UnixMillis>, killed: bool) -> ObservedRecord {
    ObservedRecord {
        stop_reason: Some(reason),
        stop_deadline,
        killed,
        ..observed(Phase::Stopping, spec())
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        stable_after: Duration::from_secs(600),
        // High, so that the delay tables reach the cap; the breaker has its own tests.
        failure_threshold: 100,
    }
}

fn start(restart: bool) -> Decision {
    Decision {
        action: Some(Action::Start {
            id: id("web"),
            restart,
        }),
        wake_at: None,
    }
}

fn stop(reason: StopReason, grace: Duration) -> Decision {
    Decision {
        action: Some(Action::Stop {
            id: id("web"),
            reason,
            grace,
        }),
        wake_at: None,
    }
}

fn kill() -> Decision {
    Decision {
        action: Some(Action::Kill { id: id("web") }),
        wake_at: None,
    }
}

fn forget() -> Decision {
    Decision {
        action: Some(Action::Forget { id: id("web") }),
        wake_at: None,
    }
}

fn record_generation_to(generation: u64) -> Decision {
    Decision {
        action: Some(Action::RecordGeneration {
            id: id("web"),
            generation,
        }),
        wake_at: None,
    }
}

fn wait_until(at: UnixMillis) -> Decision {
    Decision {
        action: None,
        wake_at: Some(at),
    }
}

fn nothing() -> Decision {
    Decision::default()
}

// ---------------------------------------------------------------------------------------------
// decide
// ---------------------------------------------------------------------------------------------

struct DecideCase {
    name: &'static str,
    desired: Option<DesiredRecord>,
    observed: Option<ObservedRecord>,
    now: UnixMillis,
    want: Decision,
}

#[test]
fn decide_table() {
    let grace = spec().termination_grace;
    let cases = vec![
        DecideCase {
            name: "neither desired nor observed: nothing",
            desired: None,
            observed: None,
            now: NOW,
            want: nothing(),
        },
        // Start
        DecideCase {
            name: "desired, nothing observed: start",
            desired: Some(desired(1, spec())),
            observed: None,
            now: NOW,
            want: start(false),
        },
        DecideCase {
            name: "desired and stopped: start",
            desired: Some(desired(1, spec())),
            observed: Some(observed(Phase::Stopped, spec())),
            now: NOW,
            want: start(false),
        },
        DecideCase {
            name: "desired with a new spec and stopped: start",
            desired: Some(desired(2, changed_spec())),
            observed: Some(observed(Phase::Stopped, spec())),
            now: NOW,
            want: start(false),
        },
        // Restart after backoff
        DecideCase {
            name: "backing off, restart time passed: restart",
            desired: Some(desired(1, spec())),
            observed: Some(backing_off(Some(before(1)))),
            now: NOW,
            want: start(true),
        },
        DecideCase {
            name: "backing off, restart time exactly now: restart",
            desired: Some(desired(1, spec())),
            observed: Some(backing_off(Some(NOW))),
            now: NOW,
            want: start(true),
        },
        DecideCase {
            name: "backing off without a restart time: restart",
            desired: Some(desired(1, spec())),
            observed: Some(backing_off(None)),
            now: NOW,
            want: start(true),
        },
        DecideCase {
            name: "backing off, labels-only change, due: restart",
            desired: Some(desired(2, relabelled_spec())),
            observed: Some(backing_off(Some(before(1)))),
            now: NOW,
            want: start(true),
        },
        // Waiting out a backoff
        DecideCase {
            name: "backing off, not yet due: wait until the restart time",
            desired: Some(desired(1, spec())),
            observed: Some(backing_off(Some(after(1)))),
            now: NOW,
            want: wait_until(after(1)),
        },
        DecideCase {
            name: "backing off, labels-only change, not yet due: wait",
            desired: Some(desired(2, relabelled_spec())),
            observed: Some(backing_off(Some(after(5_000)))),
            now: NOW,
            want: wait_until(after(5_000)),
        },
        DecideCase {
            name: "backing off, spec changed: start at once",
            desired: Some(desired(2, changed_spec())),
            observed: Some(backing_off(Some(after(60_000)))),
            now: NOW,
            want: start(false),
        },
        // Stop: undesired
        DecideCase {
            name: "running, not desired: stop (undesired) with the running spec's grace",
            desired: None,
            observed: Some(observed(Phase::Running, spec())),
            now: NOW,
            want: stop(StopReason::Undesired, grace),
        },
        DecideCase {
            name: "starting, not desired: stop (undesired)",
            desired: None,
            observed: Some(observed(Phase::Starting, checked_spec())),
            now: NOW,
            want: stop(StopReason::Undesired, grace),
        },
        // Stop: replace
        DecideCase {
            name: "running, spec changed: stop (replace) with the running spec's grace",
            desired: Some(desired(2, changed_spec())),
            observed: Some(observed(Phase::Running, spec())),
            now: NOW,
            want: stop(StopReason::Replace, grace),
        },
        DecideCase {
            name: "starting, spec changed: stop (replace)",
            desired: Some(desired(2, changed_spec())),
            observed: Some(observed(Phase::Starting, spec())),
            now: NOW,
            want: stop(StopReason::Replace, grace),
        },
        DecideCase {
            name: "running, health check added: stop (replace)",
            desired: Some(desired(2, checked_spec())),
            observed: Some(observed(Phase::Running, spec())),
            now: NOW,
            want: stop(StopReason::Replace, grace),
        },
        DecideCase {
            name: "running, spec changed and unhealthy: replace wins",
            desired: Some(desired(
                2,
                ProcessSpec {
                    args: vec!["1".to_string()],
                    ..checked_spec()
                },
            )),
            observed: Some(ObservedRecord {
                probe_failures: 5,
                health: Health::Unhealthy,
                ..observed(Phase::Running, checked_spec())
            }),
            now: NOW,
            want: stop(StopReason::Replace, grace),
        },
        // Stop: unhealthy
        DecideCase {
            name: "running, probe failures at the threshold: stop (unhealthy)",
            desired: Some(desired(1, checked_spec())),
            observed: Some(ObservedRecord {
                probe_failures: 3,
                health: Health::Unhealthy,
                ..observed(Phase::Running, checked_spec())
            }),
            now: NOW,
            want: stop(StopReason::Unhealthy, grace),
        },
        DecideCase {
            name: "running, probe failures above the threshold: stop (unhealthy)",
            desired: Some(desired(1, checked_spec())),
            observed: Some(ObservedRecord {
                probe_failures: 10,
                health: Health::Unhealthy,
                ..observed(Phase::Running, checked_spec())
            }),
            now: NOW,
            want: stop(StopReason::Unhealthy, grace),
        },
        DecideCase {
            name: "running, probe failures below the threshold: nothing",
            desired: Some(desired(1, checked_spec())),
            observed: Some(ObservedRecord {
                probe_failures: 2,
                health: Health::Unhealthy,
                ..observed(Phase::Running, checked_spec())
            }),
            now: NOW,
            want: nothing(),
        },
        // Ready deadline: started 5 s before NOW, 3 periods of 10 s to pass a probe.
        DecideCase {
            name: "starting, probe failures above the threshold: wait for the ready deadline \
                   (readiness is not liveness)",
            desired: Some(desired(1, checked_spec())),
            observed: Some(ObservedRecord {
                probe_failures: 10,
                ..observed(Phase::Starting, checked_spec())
            }),
            now: NOW,
            want: wait_until(after(25_000)),
        },
        DecideCase {
            name: "starting at its ready deadline: stop (not ready), a failure",
            desired: Some(desired(1, checked_spec())),
            observed: Some(observed(Phase::Starting, checked_spec())),
            now: after(25_000),
            want: stop(StopReason::NotReady, grace),
        },
        DecideCase {
            name: "starting with an initial delay: the deadline moves by it",
            desired: Some(desired(
                1,
                ProcessSpec {
                    health_check: Some(HealthCheck {
                        initial_delay: Duration::from_secs(60),
                        ..health_check()
                    }),
                    ..spec()
                },
            )),
            observed: Some(observed(
                Phase::Starting,
                ProcessSpec {
                    health_check: Some(HealthCheck {
                        initial_delay: Duration::from_secs(60),
                        ..health_check()
                    }),
                    ..spec()
                },
            )),
            now: after(25_000),
            want: wait_until(after(85_000)),
        },
        DecideCase {
            name: "running (ready) long after the deadline: nothing",
            desired: Some(desired(1, checked_spec())),
            observed: Some(observed(Phase::Running, checked_spec())),
            now: after(3_600_000),
            want: nothing(),
        },
        DecideCase {
            name: "running without a health check, probe failures set: nothing",
            desired: Some(desired(1, spec())),
            observed: Some(ObservedRecord {
                probe_failures: 10,
                ..observed(Phase::Running, spec())
            }),
            now: NOW,
            want: nothing(),
        },
        // Kill and stop deadlines
        DecideCase {
            name: "stopping past its deadline, not killed: kill",
            desired: None,
            observed: Some(stopping(StopReason::Undesired, Some(before(1)), false)),
            now: NOW,
            want: kill(),
        },
        DecideCase {
            name: "stopping at exactly its deadline: kill",
            desired: None,
            observed: Some(stopping(StopReason::Undesired, Some(NOW), false)),
            now: NOW,
            want: kill(),
        },
        DecideCase {
            name: "stopping for replace past its deadline while desired: kill",
            desired: Some(desired(2, changed_spec())),
            observed: Some(stopping(StopReason::Replace, Some(before(1)), false)),
            now: NOW,
            want: kill(),
        },
        DecideCase {
            name: "stopping without a deadline: kill",
            desired: None,
            observed: Some(stopping(StopReason::Shutdown, None, false)),
            now: NOW,
            want: kill(),
        },
        DecideCase {
            name: "stopping past its deadline, already killed: no second kill",
            desired: None,
            observed: Some(stopping(StopReason::Undesired, Some(before(1)), true)),
            now: NOW,
            want: nothing(),
        },
        DecideCase {
            name: "stopping, desired, already killed: no second kill",
            desired: Some(desired(2, changed_spec())),
            observed: Some(stopping(StopReason::Replace, Some(before(10_000)), true)),
            now: NOW,
            want: nothing(),
        },
        DecideCase {
            name: "stopping before its deadline: wait until the deadline",
            desired: None,
            observed: Some(stopping(StopReason::Undesired, Some(after(7_000)), false)),
            now: NOW,
            want: wait_until(after(7_000)),
        },
        DecideCase {
            name: "stopping for replace before its deadline while desired: wait",
            desired: Some(desired(2, changed_spec())),
            observed: Some(stopping(StopReason::Replace, Some(after(1)), false)),
            now: NOW,
            want: wait_until(after(1)),
        },
        // Forget
        DecideCase {
            name: "backing off, not desired: forget",
            desired: None,
            observed: Some(backing_off(Some(after(5_000)))),
            now: NOW,
            want: forget(),
        },
        DecideCase {
            name: "exited, not desired: forget",
            desired: None,
            observed: Some(observed(Phase::Exited, spec())),
            now: NOW,
            want: forget(),
        },
        DecideCase {
            name: "stopped, not desired: forget",
            desired: None,
            observed: Some(observed(Phase::Stopped, spec())),
            now: NOW,
            want: forget(),
        },
        // Record a generation
        DecideCase {
            name: "running, only labels changed: record the generation, no restart",
            desired: Some(desired(2, relabelled_spec())),
            observed: Some(observed(Phase::Running, spec())),
            now: NOW,
            want: record_generation_to(2),
        },
        DecideCase {
            name: "starting, only labels changed: record the generation",
            desired: Some(desired(5, relabelled_spec())),
            observed: Some(observed(Phase::Starting, spec())),
            now: NOW,
            want: record_generation_to(5),
        },
        DecideCase {
            name: "exited, only labels changed: record the generation",
            desired: Some(desired(2, relabelled_spec())),
            observed: Some(observed(Phase::Exited, spec())),
            now: NOW,
            want: record_generation_to(2),
        },
        // In sync
        DecideCase {
            name: "running, in sync: nothing",
            desired: Some(desired(1, spec())),
            observed: Some(observed(Phase::Running, spec())),
            now: NOW,
            want: nothing(),
        },
        DecideCase {
            name: "starting, in sync: wait for its ready deadline",
            desired: Some(desired(1, checked_spec())),
            observed: Some(observed(Phase::Starting, checked_spec())),
            now: NOW,
            want: wait_until(after(25_000)),
        },
        DecideCase {
            name: "running healthy with a health check, in sync: nothing",
            desired: Some(desired(1, checked_spec())),
            observed: Some(observed(Phase::Running, checked_spec())),
            now: NOW,
            want: nothing(),
        },
        DecideCase {
            name: "exited with the same spec: nothing",
            desired: Some(desired(1, policy_spec(RestartPolicy::Never))),
            observed: Some(ObservedRecord {
                last_exit: Some(ExitStatus::Code(1)),
                ..observed(Phase::Exited, policy_spec(RestartPolicy::Never))
            }),
            now: NOW,
            want: nothing(),
        },
        DecideCase {
            name: "exited, spec changed: start",
            desired: Some(desired(2, changed_spec())),
            observed: Some(observed(Phase::Exited, spec())),
            now: NOW,
            want: start(false),
        },
    ];

    for case in cases {
        let got = decide(case.desired.as_ref(), case.observed.as_ref(), case.now);
        assert_eq!(got, case.want, "case: {}", case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// plan
// ---------------------------------------------------------------------------------------------

struct PlanCase {
    name: &'static str,
    pairs: Vec<(Option<DesiredRecord>, Option<ObservedRecord>)>,
    want: Plan,
}

#[test]
fn plan_table() {
    let cases = vec![
        PlanCase {
            name: "no pairs: empty plan",
            pairs: vec![],
            want: Plan::default(),
        },
        PlanCase {
            name: "only (None, None): ignored",
            pairs: vec![(None, None), (None, None)],
            want: Plan::default(),
        },
        PlanCase {
            name: "all in sync: empty plan",
            pairs: vec![
                (
                    Some(desired_for("a", 1, spec())),
                    Some(observed_for("a", Phase::Running, spec())),
                ),
                (
                    Some(desired_for("b", 1, spec())),
                    Some(observed_for("b", Phase::Running, spec())),
                ),
            ],
            want: Plan::default(),
        },
        PlanCase {
            name: "mixed: actions keep pair order, wake-ups carry their id",
            pairs: vec![
                // "z" first so that the order cannot come from sorting ids.
                (Some(desired_for("z", 1, spec())), None),
                (None, None),
                (
                    Some(desired_for("b", 1, spec())),
                    Some(ObservedRecord {
                        next_restart_at: Some(after(2_000)),
                        ..observed_for("b", Phase::BackingOff, spec())
                    }),
                ),
                (None, Some(observed_for("a", Phase::Running, spec()))),
                (
                    None,
                    Some(ObservedRecord {
                        stop_reason: Some(StopReason::Undesired),
                        stop_deadline: Some(after(7_000)),
                        ..observed_for("s", Phase::Stopping, spec())
                    }),
                ),
                (None, Some(observed_for("e", Phase::Exited, spec()))),
                (
                    Some(desired_for("c", 3, relabelled_spec())),
                    Some(observed_for("c", Phase::Running, spec())),
                ),
            ],
            want: Plan {
                actions: vec![
                    Action::Start {
                        id: id("z"),
                        restart: false,
                    },
                    Action::Stop {
                        id: id("a"),
                        reason: StopReason::Undesired,
                        grace: spec().termination_grace,
                    },
                    Action::Forget { id: id("e") },
                    Action::RecordGeneration {
                        id: id("c"),
                        generation: 3,
                    },
                ],
                wake_at: vec![(id("b"), after(2_000)), (id("s"), after(7_000))],
            },
        },
    ];

    for case in cases {
        let got = plan(
            case.pairs.iter().map(|(d, o)| (d.as_ref(), o.as_ref())),
            NOW,
            SourcesRead::ALL,
        );
        assert_eq!(got, case.want, "case: {}", case.name);
    }
}

#[test]
fn nothing_moves_for_files_until_the_spec_directory_has_been_read() {
    let from_file = |name: &str, spec: ProcessSpec| DesiredRecord {
        source: Source::file(Path::new("/specs/a.yaml")),
        ..desired_for(name, 2, spec)
    };
    let edited = ProcessSpec {
        args: vec!["edited".to_string()],
        ..spec()
    };
    let running_old = observed_for("replaced", Phase::Running, spec());
    let crashed = backing_off(Some(before(1)));
    let pairs = [
        (Some(from_file("new", spec())), None),
        (Some(from_file("replaced", edited)), Some(running_old)),
        (
            Some(from_file("crashed", spec())),
            Some(ObservedRecord {
                id: id("crashed"),
                ..crashed.clone()
            }),
        ),
        (Some(desired_for("launched", 1, spec())), None),
        (
            None,
            Some(observed_for("undesired", Phase::Running, spec())),
        ),
    ];
    let ids = |plan: &Plan| -> Vec<(String, &'static str)> {
        plan.actions
            .iter()
            .map(|action| (action.id().to_string(), action.kind()))
            .collect()
    };
    let pairs_iter = || pairs.iter().map(|(d, o)| (d.as_ref(), o.as_ref()));
    // Before: what the API and admin own moves, what no source wants is stopped; files wait.
    let before_read = plan(pairs_iter(), NOW, SourcesRead::NONE);
    assert_eq!(
        ids(&before_read),
        vec![
            ("launched".to_string(), "start"),
            ("undesired".to_string(), "stop")
        ]
    );
    assert!(before_read.wake_at.is_empty(), "{before_read:?}");
    // After: everything the files declare moves too.
    let after_read = plan(pairs_iter(), NOW, SourcesRead::ALL);
    assert_eq!(
        ids(&after_read),
        vec![
            ("new".to_string(), "start"),
            ("replaced".to_string(), "stop"),
            ("crashed".to_string(), "restart"),
            ("launched".to_string(), "start"),
            ("undesired".to_string(), "stop")
        ]
    );
}

/// A launcher whose store held what files declared in an earlier run waits for the spec
/// directory's scan before acting on any of it; one whose store held none acts on each file's
/// records as the scan writes them (nothing stale can be among them).
#[test]
fn files_wait_for_the_scan_only_when_an_earlier_run_left_records_of_theirs() {
    let from_file = DesiredRecord {
        source: Source::file(Path::new("/specs/new.yaml")),
        ..desired_for("new", 1, spec())
    };
    let pairs = [(Some(from_file), None)];
    let kinds = |read: SourcesRead| -> Vec<&'static str> {
        plan(
            pairs.iter().map(|(d, o)| (d.as_ref(), o.as_ref())),
            NOW,
            read,
        )
        .actions
        .iter()
        .map(Action::kind)
        .collect()
    };
    for (files_declared_earlier, expected) in [(true, vec![]), (false, vec!["start"])] {
        let read = SourcesRead::at_start(files_declared_earlier);
        assert!(!read.admin_suspended);
        assert_eq!(
            kinds(read),
            expected,
            "files declared earlier: {files_declared_earlier}"
        );
    }
    // The API's and admin's records never wait for the scan.
    let from_api = [(Some(desired_for("launched", 1, spec())), None)];
    let plan_at_start = plan(
        from_api.iter().map(|(d, o)| (d.as_ref(), o.as_ref())),
        NOW,
        SourcesRead::at_start(true),
    );
    assert_eq!(plan_at_start.actions.len(), 1);
}

#[test]
fn action_id_and_kind() {
    let cases = vec![
        (
            "start",
            Action::Start {
                id: id("a"),
                restart: false,
            },
        ),
        (
            "restart",
            Action::Start {
                id: id("a"),
                restart: true,
            },
        ),
        (
            "stop",
            Action::Stop {
                id: id("a"),
                reason: StopReason::Undesired,
                grace: Duration::ZERO,
            },
        ),
        ("kill", Action::Kill { id: id("a") }),
        ("forget", Action::Forget { id: id("a") }),
        (
            "record-generation",
            Action::RecordGeneration {
                id: id("a"),
                generation: 2,
            },
        ),
    ];
    for (kind, action) in cases {
        assert_eq!(action.kind(), kind, "case: {kind}");
        assert_eq!(action.id(), &id("a"), "case: {kind}");
    }
}

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

#[test]
fn backoff_delay_table() {
    let secs = Duration::from_secs;
    let huge = Backoff {
        initial: Duration::from_secs(u64::MAX / 4),
        max: Duration::MAX,
        stable_after: Duration::from_secs(600),
        failure_threshold: 5,
    };
    let cases: Vec<(&str, Backoff, u32, Duration)> = vec![
        ("0th failure: immediate", backoff(), 0, Duration::ZERO),
        ("1st failure: immediate", backoff(), 1, Duration::ZERO),
        ("2nd failure: initial", backoff(), 2, secs(1)),
        ("3rd failure: doubled", backoff(), 3, secs(2)),
        ("4th failure: doubled again", backoff(), 4, secs(4)),
        ("7th failure: 32s", backoff(), 7, secs(32)),
        ("8th failure: 64s capped at max", backoff(), 8, secs(60)),
        ("100th failure: max", backoff(), 100, secs(60)),
        (
            "u32::MAX failures: max, no overflow",
            backoff(),
            u32::MAX,
            secs(60),
        ),
        (
            "default backoff, 2nd failure: 1s",
            Backoff::default(),
            2,
            secs(1),
        ),
        (
            "default backoff, many failures: 300s",
            Backoff::default(),
            1_000,
            secs(300),
        ),
        (
            "huge initial, 3rd failure: doubled without overflow",
            huge,
            3,
            Duration::from_secs(u64::MAX / 4 * 2),
        ),
        (
            "huge initial, u32::MAX failures: multiplication overflows to max",
            huge,
            u32::MAX,
            Duration::MAX,
        ),
    ];
    for (name, backoff, failures, want) in cases {
        assert_eq!(backoff.delay(failures), want, "case: {name}");
    }
}

#[test]
fn backoff_delay_never_decreases() {
    let backoff = backoff();
    let mut previous = Duration::ZERO;
    for failures in (0..100).chain([u32::MAX - 1, u32::MAX]) {
        let delay = backoff.delay(failures);
        assert!(
            delay >= previous,
            "delay({failures}) = {delay:?} < {previous:?}"
        );
        assert!(delay <= backoff.max, "delay({failures}) = {delay:?} > max");
        previous = delay;
    }
}

// ---------------------------------------------------------------------------------------------
// ExitStatus
// ---------------------------------------------------------------------------------------------

#[test]
fn exit_status_display_and_success() {
    let cases = vec![
        ("exit 0", ExitStatus::Code(0), "exit code 0", true),
        ("exit 1", ExitStatus::Code(1), "exit code 1", false),
        ("exit -1", ExitStatus::Code(-1), "exit code -1", false),
        ("SIGKILL", ExitStatus::Signal(9), "signal SIGKILL", false),
        ("SIGTERM", ExitStatus::Signal(15), "signal SIGTERM", false),
        ("SIGSEGV", ExitStatus::Signal(11), "signal SIGSEGV", false),
        ("unnamed signal", ExitStatus::Signal(64), "signal 64", false),
    ];
    for (name, status, text, success) in cases {
        assert_eq!(status.to_string(), text, "case: {name}");
        assert_eq!(status.is_success(), success, "case: {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// record_exit
// ---------------------------------------------------------------------------------------------

struct ExitCase {
    name: &'static str,
    observed: ObservedRecord,
    status: ExitStatus,
    want_phase: Phase,
    want_consecutive_failures: u32,
    want_error_count: u32,
    want_next_restart_at: Option<UnixMillis>,
    /// The exact `last_error` expected.
    want_last_error: Option<&'static str>,
}

/// A running process, started 5 s ago, with a history: 2 failures in a row, 5 in all.
fn running_with_history(spec: ProcessSpec) -> ObservedRecord {
    ObservedRecord {
        consecutive_failures: 2,
        error_count: 5,
        restart_count: 4,
        last_error: Some("old error".to_string()),
        ..observed(Phase::Running, spec)
    }
}

fn stopping_with_history(reason: StopReason, spec: ProcessSpec) -> ObservedRecord {
    ObservedRecord {
        phase: Phase::Stopping,
        stop_reason: Some(reason),
        stop_deadline: Some(after(7_000)),
        ..running_with_history(spec)
    }
}

#[test]
fn record_exit_table() {
    let backoff = backoff();
    // With 2 failures in a row before, the next failure is the 3rd: delay(3) = 2 s.
    let third_failure_at = Some(after(2_000));
    let cases = vec![
        // Planned stops
        ExitCase {
            name: "stopped because undesired: stopped, no failure counted",
            observed: stopping_with_history(StopReason::Undesired, spec()),
            status: ExitStatus::Signal(15),
            want_phase: Phase::Stopped,
            want_consecutive_failures: 2,
            want_error_count: 5,
            want_next_restart_at: None,
            want_last_error: Some("old error"),
        },
        ExitCase {
            name: "stopped to be replaced: stopped, no failure counted",
            observed: stopping_with_history(StopReason::Replace, spec()),
            status: ExitStatus::Code(143),
            want_phase: Phase::Stopped,
            want_consecutive_failures: 2,
            want_error_count: 5,
            want_next_restart_at: None,
            want_last_error: Some("old error"),
        },
        ExitCase {
            name: "stopped for shutdown, then killed: stopped, no failure counted",
            observed: ObservedRecord {
                killed: true,
                ..stopping_with_history(StopReason::Shutdown, spec())
            },
            status: ExitStatus::Signal(9),
            want_phase: Phase::Stopped,
            want_consecutive_failures: 2,
            want_error_count: 5,
            want_next_restart_at: None,
            want_last_error: Some("old error"),
        },
        ExitCase {
            name: "planned stop under Never: still stopped, not exited",
            observed: stopping_with_history(
                StopReason::Undesired,
                policy_spec(RestartPolicy::Never),
            ),
            status: ExitStatus::Code(1),
            want_phase: Phase::Stopped,
            want_consecutive_failures: 2,
            want_error_count: 5,
            want_next_restart_at: None,
            want_last_error: Some("old error"),
        },
        // Always
        ExitCase {
            name: "crash under Always: backing off, failure counted",
            observed: running_with_history(spec()),
            status: ExitStatus::Code(1),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("exited with exit code 1"),
        },
        ExitCase {
            name: "killed by SIGKILL under Always: backing off, signal named",
            observed: running_with_history(spec()),
            status: ExitStatus::Signal(9),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("exited with signal SIGKILL"),
        },
        ExitCase {
            name: "first crash under Always: restart is immediate",
            observed: observed(Phase::Running, spec()),
            status: ExitStatus::Code(2),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 1,
            want_error_count: 1,
            want_next_restart_at: Some(NOW),
            want_last_error: Some("exited with exit code 2"),
        },
        ExitCase {
            name: "success under Always: backs off, streak counts, no error",
            observed: running_with_history(spec()),
            status: ExitStatus::Code(0),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 5,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("old error"),
        },
        ExitCase {
            name: "starting process crashes under Always: backing off",
            observed: ObservedRecord {
                phase: Phase::Starting,
                health: Health::Unknown,
                ..running_with_history(checked_spec())
            },
            status: ExitStatus::Code(1),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("exited with exit code 1"),
        },
        // OnFailure
        ExitCase {
            name: "success under OnFailure: exited",
            observed: running_with_history(policy_spec(RestartPolicy::OnFailure)),
            status: ExitStatus::Code(0),
            want_phase: Phase::Exited,
            want_consecutive_failures: 2,
            want_error_count: 5,
            want_next_restart_at: None,
            want_last_error: Some("old error"),
        },
        ExitCase {
            name: "failure under OnFailure: backing off",
            observed: running_with_history(policy_spec(RestartPolicy::OnFailure)),
            status: ExitStatus::Code(1),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("exited with exit code 1"),
        },
        // Never
        ExitCase {
            name: "failure under Never: exited, error counted",
            observed: running_with_history(policy_spec(RestartPolicy::Never)),
            status: ExitStatus::Code(1),
            want_phase: Phase::Exited,
            want_consecutive_failures: 2,
            want_error_count: 6,
            want_next_restart_at: None,
            want_last_error: Some("exited with exit code 1"),
        },
        ExitCase {
            name: "success under Never: exited, no error",
            observed: running_with_history(policy_spec(RestartPolicy::Never)),
            status: ExitStatus::Code(0),
            want_phase: Phase::Exited,
            want_consecutive_failures: 2,
            want_error_count: 5,
            want_next_restart_at: None,
            want_last_error: Some("old error"),
        },
        // Unhealthy
        ExitCase {
            name: "stopped for failing liveness under Always: counted as a failure",
            observed: stopping_with_history(StopReason::Unhealthy, checked_spec()),
            status: ExitStatus::Signal(15),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("restarted after failing its liveness probe (signal SIGTERM)"),
        },
        ExitCase {
            name: "stopped for failing liveness, exits 0 under OnFailure: still a failure",
            observed: stopping_with_history(
                StopReason::Unhealthy,
                ProcessSpec {
                    restart_policy: RestartPolicy::OnFailure,
                    ..checked_spec()
                },
            ),
            status: ExitStatus::Code(0),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("restarted after failing its liveness probe (exit code 0)"),
        },
        ExitCase {
            name: "stopped for not getting ready in time: counted as a failure",
            observed: stopping_with_history(StopReason::NotReady, checked_spec()),
            status: ExitStatus::Signal(15),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some(
                "not ready within 30s: its health check never passed (signal SIGTERM)",
            ),
        },
        // Stable runs
        ExitCase {
            name: "crash after running exactly stable_after: streak reset, immediate restart",
            observed: ObservedRecord {
                started_at: Some(before(600_000)),
                ..running_with_history(spec())
            },
            status: ExitStatus::Code(1),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 1,
            want_error_count: 6,
            want_next_restart_at: Some(NOW),
            want_last_error: Some("exited with exit code 1"),
        },
        ExitCase {
            name: "crash after running long: streak reset, immediate restart",
            observed: ObservedRecord {
                started_at: Some(UnixMillis(0)),
                consecutive_failures: 30,
                ..running_with_history(spec())
            },
            status: ExitStatus::Signal(11),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 1,
            want_error_count: 6,
            want_next_restart_at: Some(NOW),
            want_last_error: Some("exited with signal SIGSEGV"),
        },
        ExitCase {
            name: "crash just before stable_after: streak continues",
            observed: ObservedRecord {
                started_at: Some(before(599_999)),
                ..running_with_history(spec())
            },
            status: ExitStatus::Code(1),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 3,
            want_error_count: 6,
            want_next_restart_at: third_failure_at,
            want_last_error: Some("exited with exit code 1"),
        },
        ExitCase {
            name: "long streak: delay capped at max",
            observed: ObservedRecord {
                consecutive_failures: 40,
                ..running_with_history(spec())
            },
            status: ExitStatus::Code(1),
            want_phase: Phase::BackingOff,
            want_consecutive_failures: 41,
            want_error_count: 6,
            want_next_restart_at: Some(after(60_000)),
            want_last_error: Some("exited with exit code 1"),
        },
    ];

    for case in cases {
        let name = case.name;
        let got = record_exit(&case.observed, case.status, &backoff, 0.0, NOW);
        assert_eq!(got.phase, case.want_phase, "phase, case: {name}");
        assert_eq!(
            got.consecutive_failures, case.want_consecutive_failures,
            "consecutive_failures, case: {name}"
        );
        assert_eq!(
            got.error_count, case.want_error_count,
            "error_count, case: {name}"
        );
        assert_eq!(
            got.next_restart_at, case.want_next_restart_at,
            "next_restart_at, case: {name}"
        );
        assert_eq!(
            got.last_error.as_deref(),
            case.want_last_error,
            "last_error, case: {name}"
        );
        // What every exit does, whatever its kind.
        assert_eq!(got.last_exit, Some(case.status), "last_exit, case: {name}");
        assert_eq!(got.pid, None, "pid, case: {name}");
        assert_eq!(got.pid_start_ticks, None, "pid_start_ticks, case: {name}");
        assert_eq!(got.started_at, None, "started_at, case: {name}");
        assert_eq!(got.stop_deadline, None, "stop_deadline, case: {name}");
        assert!(!got.killed, "killed, case: {name}");
        assert_eq!(got.probe_failures, 0, "probe_failures, case: {name}");
        assert_eq!(got.probe_successes, 0, "probe_successes, case: {name}");
        let want_health = if case.observed.spec.health_check.is_some() {
            Health::Unknown
        } else {
            Health::NotChecked
        };
        assert_eq!(got.health, want_health, "health, case: {name}");
        if got.phase != Phase::Stopped {
            assert_eq!(got.stop_reason, None, "stop_reason, case: {name}");
        }
        // What no exit touches.
        assert_eq!(got.id, case.observed.id, "id, case: {name}");
        assert_eq!(got.spec, case.observed.spec, "spec, case: {name}");
        assert_eq!(
            got.generation, case.observed.generation,
            "generation, case: {name}"
        );
        assert_eq!(got.ports, case.observed.ports, "ports, case: {name}");
        assert_eq!(
            got.restart_count, case.observed.restart_count,
            "restart_count, case: {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// record_spawned
// ---------------------------------------------------------------------------------------------

struct SpawnedCase {
    name: &'static str,
    desired: DesiredRecord,
    previous: Option<ObservedRecord>,
    want_phase: Phase,
    want_health: Health,
    want_restart_count: u32,
    want_consecutive_failures: u32,
    want_error_count: u32,
}

fn previous_with_history(phase: Phase, spec: ProcessSpec) -> ObservedRecord {
    ObservedRecord {
        restart_count: 2,
        consecutive_failures: 3,
        error_count: 4,
        last_exit: Some(ExitStatus::Code(1)),
        last_error: Some("exited with exit code 1".to_string()),
        next_restart_at: (phase == Phase::BackingOff).then_some(before(1)),
        ..observed(phase, spec)
    }
}

#[test]
fn record_spawned_table() {
    let cases = vec![
        SpawnedCase {
            name: "first spawn, no health check: running, not checked",
            desired: desired(1, spec()),
            previous: None,
            want_phase: Phase::Running,
            want_health: Health::NotChecked,
            want_restart_count: 0,
            want_consecutive_failures: 0,
            want_error_count: 0,
        },
        SpawnedCase {
            name: "first spawn with a health check: starting, health unknown",
            desired: desired(1, checked_spec()),
            previous: None,
            want_phase: Phase::Starting,
            want_health: Health::Unknown,
            want_restart_count: 0,
            want_consecutive_failures: 0,
            want_error_count: 0,
        },
        SpawnedCase {
            name: "restart after backoff: restart counted, streak kept",
            desired: desired(1, spec()),
            previous: Some(previous_with_history(Phase::BackingOff, spec())),
            want_phase: Phase::Running,
            want_health: Health::NotChecked,
            want_restart_count: 3,
            want_consecutive_failures: 3,
            want_error_count: 4,
        },
        SpawnedCase {
            name: "restart after backoff with a health check: starting",
            desired: desired(1, checked_spec()),
            previous: Some(previous_with_history(Phase::BackingOff, checked_spec())),
            want_phase: Phase::Starting,
            want_health: Health::Unknown,
            want_restart_count: 3,
            want_consecutive_failures: 3,
            want_error_count: 4,
        },
        SpawnedCase {
            name: "restart after backoff, labels-only change: streak kept",
            desired: desired(2, relabelled_spec()),
            previous: Some(previous_with_history(Phase::BackingOff, spec())),
            want_phase: Phase::Running,
            want_health: Health::NotChecked,
            want_restart_count: 3,
            want_consecutive_failures: 3,
            want_error_count: 4,
        },
        SpawnedCase {
            name: "start from backoff with a new spec: streak reset, a replacement not a restart",
            desired: desired(2, changed_spec()),
            previous: Some(previous_with_history(Phase::BackingOff, spec())),
            want_phase: Phase::Running,
            want_health: Health::NotChecked,
            want_restart_count: 2,
            want_consecutive_failures: 0,
            want_error_count: 4,
        },
        SpawnedCase {
            name: "start after a planned stop: no restart counted",
            desired: desired(1, spec()),
            previous: Some(previous_with_history(Phase::Stopped, spec())),
            want_phase: Phase::Running,
            want_health: Health::NotChecked,
            want_restart_count: 2,
            want_consecutive_failures: 3,
            want_error_count: 4,
        },
        SpawnedCase {
            name: "replacement after a stop with a new spec: no restart counted, streak reset",
            desired: desired(2, changed_spec()),
            previous: Some(previous_with_history(Phase::Stopped, spec())),
            want_phase: Phase::Running,
            want_health: Health::NotChecked,
            want_restart_count: 2,
            want_consecutive_failures: 0,
            want_error_count: 4,
        },
        SpawnedCase {
            name: "start after exit with a new spec: no restart counted, streak reset",
            desired: desired(2, changed_spec()),
            previous: Some(previous_with_history(Phase::Exited, spec())),
            want_phase: Phase::Running,
            want_health: Health::NotChecked,
            want_restart_count: 2,
            want_consecutive_failures: 0,
            want_error_count: 4,
        },
    ];

    let spawned = Spawned {
        pid: 777,
        start_ticks: Some(12_345),
        ports: ports(),
        instance: "instance-1".to_string(),
    };
    for case in cases {
        let name = case.name;
        let got = record_spawned(&case.desired, case.previous.as_ref(), spawned.clone(), NOW);
        assert_eq!(got.phase, case.want_phase, "phase, case: {name}");
        assert_eq!(got.health, case.want_health, "health, case: {name}");
        assert_eq!(
            got.restart_count, case.want_restart_count,
            "restart_count, case: {name}"
        );
        assert_eq!(
            got.consecutive_failures, case.want_consecutive_failures,
            "consecutive_failures, case: {name}"
        );
        assert_eq!(
            got.error_count, case.want_error_count,
            "error_count, case: {name}"
        );
        assert_eq!(got.id, case.desired.id, "id, case: {name}");
        assert_eq!(got.spec, case.desired.spec, "spec, case: {name}");
        assert_eq!(
            got.generation, case.desired.generation,
            "generation, case: {name}"
        );
        assert_eq!(got.pid, Some(777), "pid, case: {name}");
        assert_eq!(got.pid_start_ticks, Some(12_345), "ticks, case: {name}");
        assert_eq!(got.ports, ports(), "ports, case: {name}");
        assert_eq!(got.started_at, Some(NOW), "started_at, case: {name}");
        assert_eq!(got.probe_successes, 0, "probe_successes, case: {name}");
        assert_eq!(got.probe_failures, 0, "probe_failures, case: {name}");
        assert_eq!(got.next_restart_at, None, "next_restart_at, case: {name}");
        assert_eq!(got.stop_reason, None, "stop_reason, case: {name}");
        assert_eq!(got.stop_deadline, None, "stop_deadline, case: {name}");
        assert!(!got.killed, "killed, case: {name}");
        assert_eq!(
            got.last_exit,
            case.previous.as_ref().and_then(|p| p.last_exit),
            "last_exit carried over, case: {name}"
        );
        assert_eq!(
            got.last_error,
            case.previous.as_ref().and_then(|p| p.last_error.clone()),
            "last_error carried over, case: {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// record_spawn_failed
// ---------------------------------------------------------------------------------------------

struct SpawnFailedCase {
    name: &'static str,
    desired: DesiredRecord,
    previous: Option<ObservedRecord>,
    want_consecutive_failures: u32,
    want_error_count: u32,
    want_restart_count: u32,
    want_next_restart_at: UnixMillis,
}

#[test]
fn record_spawn_failed_table() {
    let backoff = backoff();
    let cases = vec![
        SpawnFailedCase {
            name: "first failure: waits initial, not zero",
            desired: desired(1, spec()),
            previous: None,
            want_consecutive_failures: 1,
            want_error_count: 1,
            want_restart_count: 0,
            want_next_restart_at: after(1_000),
        },
        SpawnFailedCase {
            name: "first failure with a health check: waits initial",
            desired: desired(1, checked_spec()),
            previous: None,
            want_consecutive_failures: 1,
            want_error_count: 1,
            want_restart_count: 0,
            want_next_restart_at: after(1_000),
        },
        SpawnFailedCase {
            name: "failing again after backoff: streak grows, delay doubles",
            desired: desired(1, spec()),
            previous: Some(previous_with_history(Phase::BackingOff, spec())),
            want_consecutive_failures: 4,
            want_error_count: 5,
            want_restart_count: 3,
            want_next_restart_at: after(4_000),
        },
        SpawnFailedCase {
            name: "failing with a new spec: streak starts again, not a restart",
            desired: desired(2, changed_spec()),
            previous: Some(previous_with_history(Phase::BackingOff, spec())),
            want_consecutive_failures: 1,
            want_error_count: 5,
            want_restart_count: 2,
            want_next_restart_at: after(1_000),
        },
        SpawnFailedCase {
            name: "failing after a planned stop: no restart counted",
            desired: desired(1, spec()),
            previous: Some(previous_with_history(Phase::Stopped, spec())),
            want_consecutive_failures: 4,
            want_error_count: 5,
            want_restart_count: 2,
            want_next_restart_at: after(4_000),
        },
        SpawnFailedCase {
            name: "long streak: capped at max",
            desired: desired(1, spec()),
            previous: Some(ObservedRecord {
                consecutive_failures: 50,
                ..previous_with_history(Phase::BackingOff, spec())
            }),
            want_consecutive_failures: 51,
            want_error_count: 5,
            want_restart_count: 3,
            want_next_restart_at: after(60_000),
        },
    ];

    for case in cases {
        let name = case.name;
        let error = "No such file or directory (os error 2)".to_string();
        let got = record_spawn_failed(
            &case.desired,
            case.previous.as_ref(),
            ports(),
            error.clone(),
            &backoff,
            0.0,
            NOW,
        );
        assert_eq!(got.phase, Phase::BackingOff, "phase, case: {name}");
        assert_eq!(
            got.consecutive_failures, case.want_consecutive_failures,
            "consecutive_failures, case: {name}"
        );
        assert_eq!(
            got.error_count, case.want_error_count,
            "error_count, case: {name}"
        );
        assert_eq!(
            got.restart_count, case.want_restart_count,
            "restart_count, case: {name}"
        );
        assert_eq!(
            got.next_restart_at,
            Some(case.want_next_restart_at),
            "next_restart_at, case: {name}"
        );
        assert!(
            got.next_restart_at >= Some(NOW.saturating_add(backoff.initial)),
            "waits at least initial, case: {name}"
        );
        assert_eq!(got.last_error, Some(error), "last_error, case: {name}");
        assert_eq!(
            got.last_exit,
            case.previous.as_ref().and_then(|p| p.last_exit),
            "last_exit carried over, case: {name}"
        );
        assert_eq!(got.id, case.desired.id, "id, case: {name}");
        assert_eq!(got.spec, case.desired.spec, "spec, case: {name}");
        assert_eq!(
            got.generation, case.desired.generation,
            "generation, case: {name}"
        );
        assert_eq!(got.ports, ports(), "ports, case: {name}");
        assert_eq!(got.pid, None, "pid, case: {name}");
        assert_eq!(got.started_at, None, "started_at, case: {name}");
        assert_eq!(got.stop_reason, None, "stop_reason, case: {name}");
        assert!(!got.killed, "killed, case: {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// record_probe
// ---------------------------------------------------------------------------------------------

struct ProbeCase {
    name: &'static str,
    observed: ObservedRecord,
    result: Result<(), String>,
    want: ObservedRecord,
}

fn starting_checked(success_threshold: u32) -> ObservedRecord {
    observed(
        Phase::Starting,
        ProcessSpec {
            health_check: Some(HealthCheck {
                success_threshold,
                ..health_check()
            }),
            ..spec()
        },
    )
}

#[test]
fn record_probe_table() {
    let fail = || Err("connection refused".to_string());
    let running = observed(Phase::Running, checked_spec());
    let running_failing = ObservedRecord {
        health: Health::Unhealthy,
        probe_failures: 2,
        last_error: Some("health check failed: timeout".to_string()),
        ..observed(Phase::Running, checked_spec())
    };
    let starting_one = starting_checked(1);
    let starting_two = starting_checked(2);
    let starting_two_passed_once = ObservedRecord {
        probe_successes: 1,
        ..starting_checked(2)
    };
    let unchecked_running = observed(Phase::Running, spec());
    let stopping_checked = ObservedRecord {
        stop_reason: Some(StopReason::Undesired),
        stop_deadline: Some(after(7_000)),
        ..observed(Phase::Stopping, checked_spec())
    };
    let backing_off_checked = ObservedRecord {
        next_restart_at: Some(after(1_000)),
        ..observed(Phase::BackingOff, checked_spec())
    };
    let exited_checked = observed(Phase::Exited, checked_spec());

    let cases = vec![
        ProbeCase {
            name: "starting, pass, success threshold 1: running and healthy",
            observed: starting_one.clone(),
            result: Ok(()),
            want: ObservedRecord {
                phase: Phase::Running,
                health: Health::Healthy,
                probe_successes: 1,
                ..starting_one.clone()
            },
        },
        ProbeCase {
            name: "starting, first pass, success threshold 2: still starting",
            observed: starting_two.clone(),
            result: Ok(()),
            want: ObservedRecord {
                probe_successes: 1,
                ..starting_two.clone()
            },
        },
        ProbeCase {
            name: "starting, second pass, success threshold 2: running and healthy",
            observed: starting_two_passed_once.clone(),
            result: Ok(()),
            want: ObservedRecord {
                phase: Phase::Running,
                health: Health::Healthy,
                probe_successes: 2,
                ..starting_two_passed_once.clone()
            },
        },
        ProbeCase {
            name: "starting, fail: stays starting, health unchanged",
            observed: starting_one.clone(),
            result: fail(),
            want: starting_one.clone(),
        },
        ProbeCase {
            name: "starting, fail after a pass: passes start over",
            observed: starting_two_passed_once.clone(),
            result: fail(),
            want: ObservedRecord {
                probe_successes: 0,
                ..starting_two_passed_once.clone()
            },
        },
        ProbeCase {
            name: "running, fail: unhealthy, one more failure",
            observed: running.clone(),
            result: fail(),
            want: ObservedRecord {
                health: Health::Unhealthy,
                probe_failures: 1,
                last_error: Some("health check failed: connection refused".to_string()),
                ..running.clone()
            },
        },
        ProbeCase {
            name: "running unhealthy, fail again: failures grow",
            observed: running_failing.clone(),
            result: fail(),
            want: ObservedRecord {
                probe_failures: 3,
                last_error: Some("health check failed: connection refused".to_string()),
                ..running_failing.clone()
            },
        },
        ProbeCase {
            name: "running unhealthy, pass: failures reset, healthy again",
            observed: running_failing.clone(),
            result: Ok(()),
            want: ObservedRecord {
                health: Health::Healthy,
                probe_failures: 0,
                probe_successes: 1,
                ..running_failing.clone()
            },
        },
        ProbeCase {
            name: "running without a health check: probe ignored",
            observed: unchecked_running.clone(),
            result: fail(),
            want: unchecked_running.clone(),
        },
        ProbeCase {
            name: "stopping: probe ignored",
            observed: stopping_checked.clone(),
            result: fail(),
            want: stopping_checked.clone(),
        },
        ProbeCase {
            name: "backing off: passing probe ignored",
            observed: backing_off_checked.clone(),
            result: Ok(()),
            want: backing_off_checked.clone(),
        },
        ProbeCase {
            name: "exited: failing probe ignored",
            observed: exited_checked.clone(),
            result: fail(),
            want: exited_checked.clone(),
        },
    ];

    for case in cases {
        let got = record_probe(&case.observed, case.result);
        assert_eq!(got, case.want, "case: {}", case.name);
    }
}

#[test]
fn liveness_failures_lead_to_an_unhealthy_stop() {
    // Probes and `decide` together: the threshold-th failure of a ready process stops it.
    let desired = desired(1, checked_spec());
    let mut record = observed(Phase::Running, checked_spec());
    for failure in 1..=3 {
        record = record_probe(&record, Err("refused".to_string()));
        let want = if failure < 3 {
            nothing()
        } else {
            stop(StopReason::Unhealthy, spec().termination_grace)
        };
        assert_eq!(
            decide(Some(&desired), Some(&record), NOW),
            want,
            "after failure {failure}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// record_stop_started, record_killed, record_generation
// ---------------------------------------------------------------------------------------------

#[test]
fn record_stop_kill_and_generation_table() {
    let running = observed(Phase::Running, spec());
    let stopping_unkilled = stopping(StopReason::Undesired, Some(after(7_000)), false);
    let cases: Vec<(&str, ObservedRecord, ObservedRecord)> = vec![
        (
            "stop started: stopping with reason and deadline now + grace",
            record_stop_started(&running, StopReason::Replace, Duration::from_secs(7), NOW),
            ObservedRecord {
                phase: Phase::Stopping,
                stop_reason: Some(StopReason::Replace),
                stop_deadline: Some(after(7_000)),
                ..running.clone()
            },
        ),
        (
            "stop started on a killed record: kill flag cleared",
            record_stop_started(
                &ObservedRecord {
                    killed: true,
                    ..running.clone()
                },
                StopReason::Shutdown,
                Duration::ZERO,
                NOW,
            ),
            ObservedRecord {
                phase: Phase::Stopping,
                stop_reason: Some(StopReason::Shutdown),
                stop_deadline: Some(NOW),
                killed: false,
                ..running.clone()
            },
        ),
        (
            "killed: only the kill flag changes",
            record_killed(&stopping_unkilled),
            ObservedRecord {
                killed: true,
                ..stopping_unkilled.clone()
            },
        ),
        (
            "generation recorded: generation and labels taken, nothing else",
            record_generation(&running, &desired(2, relabelled_spec())),
            ObservedRecord {
                generation: 2,
                spec: Arc::new(relabelled_spec()),
                ..running.clone()
            },
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(got, want, "case: {name}");
    }
}

#[test]
fn stop_then_kill_then_exit_sequence() {
    // decide → record_stop_started → wait → Kill → record_killed → no repeat → record_exit.
    let mut record = observed(Phase::Running, spec());
    let grace = record.spec.termination_grace;
    assert_eq!(
        decide(None, Some(&record), NOW),
        stop(StopReason::Undesired, grace)
    );
    record = record_stop_started(&record, StopReason::Undesired, grace, NOW);
    let deadline = NOW.saturating_add(grace);
    assert_eq!(decide(None, Some(&record), after(1)), wait_until(deadline));
    assert_eq!(decide(None, Some(&record), deadline), kill());
    record = record_killed(&record);
    assert_eq!(decide(None, Some(&record), after(60_000)), nothing());
    record = record_exit(
        &record,
        ExitStatus::Signal(9),
        &backoff(),
        0.0,
        after(60_000),
    );
    assert_eq!(record.phase, Phase::Stopped);
    assert_eq!(record.error_count, 0);
    assert_eq!(decide(None, Some(&record), after(60_000)), forget());
}

#[test]
fn crash_loop_backs_off_and_restarts() {
    // spawn → crash → restart at once → crash → wait 1 s → restart → ...
    let backoff = backoff();
    let desired = desired(1, spec());
    let spawned = Spawned {
        pid: 1,
        start_ticks: None,
        ports: ports(),
        instance: "instance-1".to_string(),
    };
    let mut now = NOW;
    let mut record = record_spawned(&desired, None, spawned.clone(), now);
    let want_delays_ms = [0, 1_000, 2_000, 4_000];
    for (crash, want_delay) in want_delays_ms.into_iter().enumerate() {
        now = now.saturating_add(Duration::from_millis(10));
        record = record_exit(&record, ExitStatus::Code(1), &backoff, 0.0, now);
        let due = now.saturating_add(Duration::from_millis(want_delay));
        assert_eq!(record.next_restart_at, Some(due), "crash {crash}");
        if want_delay > 0 {
            assert_eq!(
                decide(Some(&desired), Some(&record), now),
                wait_until(due),
                "crash {crash}"
            );
        }
        now = due;
        assert_eq!(
            decide(Some(&desired), Some(&record), now),
            start(true),
            "crash {crash}"
        );
        record = record_spawned(&desired, Some(&record), spawned.clone(), now);
        assert_eq!(record.restart_count, crash as u32 + 1, "crash {crash}");
    }
    assert_eq!(record.error_count, 4);
    assert_eq!(record.consecutive_failures, 4);
}

// ---------------------------------------------------------------------------------------------
// diff
// ---------------------------------------------------------------------------------------------

struct DiffCase {
    name: &'static str,
    desired: Option<DesiredRecord>,
    observed: Option<ObservedRecord>,
    want_kind: DiffKind,
    /// A part of the detail that must appear.
    want_detail: &'static str,
}

#[test]
fn diff_table() {
    let cases = vec![
        DiffCase {
            name: "neither: in sync",
            desired: None,
            observed: None,
            want_kind: DiffKind::InSync,
            want_detail: "",
        },
        DiffCase {
            name: "running as desired: in sync",
            desired: Some(desired(1, spec())),
            observed: Some(observed(Phase::Running, spec())),
            want_kind: DiffKind::InSync,
            want_detail: "",
        },
        DiffCase {
            name: "running, labels-only change: in sync",
            desired: Some(desired(2, relabelled_spec())),
            observed: Some(observed(Phase::Running, spec())),
            want_kind: DiffKind::InSync,
            want_detail: "",
        },
        DiffCase {
            name: "starting as desired: in sync",
            desired: Some(desired(1, checked_spec())),
            observed: Some(observed(Phase::Starting, checked_spec())),
            want_kind: DiffKind::InSync,
            want_detail: "waiting for its first passing probe",
        },
        DiffCase {
            name: "exited successfully under its policy: in sync",
            desired: Some(desired(1, policy_spec(RestartPolicy::OnFailure))),
            observed: Some(ObservedRecord {
                last_exit: Some(ExitStatus::Code(0)),
                ..observed(Phase::Exited, policy_spec(RestartPolicy::OnFailure))
            }),
            want_kind: DiffKind::InSync,
            want_detail: "completed",
        },
        DiffCase {
            name: "desired, nothing observed: start",
            desired: Some(desired(1, spec())),
            observed: None,
            want_kind: DiffKind::Start,
            want_detail: "not started yet",
        },
        DiffCase {
            name: "desired and stopped: start",
            desired: Some(desired(1, spec())),
            observed: Some(observed(Phase::Stopped, spec())),
            want_kind: DiffKind::Start,
            want_detail: "will start again",
        },
        DiffCase {
            name: "running, spec changed: replace",
            desired: Some(desired(2, changed_spec())),
            observed: Some(observed(Phase::Running, spec())),
            want_kind: DiffKind::Replace,
            want_detail: "generation 1 runs, 2 desired",
        },
        DiffCase {
            name: "starting, spec changed: replace",
            desired: Some(desired(3, changed_spec())),
            observed: Some(observed(Phase::Starting, spec())),
            want_kind: DiffKind::Replace,
            want_detail: "generation 1 runs, 3 desired",
        },
        DiffCase {
            name: "stopping to replace: replace",
            desired: Some(desired(2, changed_spec())),
            observed: Some(stopping(StopReason::Replace, Some(after(1)), false)),
            want_kind: DiffKind::Replace,
            want_detail: "stopping to replace",
        },
        DiffCase {
            name: "backing off, spec changed: replace",
            desired: Some(desired(2, changed_spec())),
            observed: Some(backing_off(Some(after(1)))),
            want_kind: DiffKind::Replace,
            want_detail: "while backing off",
        },
        DiffCase {
            name: "exited, spec changed: replace",
            desired: Some(desired(2, changed_spec())),
            observed: Some(observed(Phase::Exited, spec())),
            want_kind: DiffKind::Replace,
            want_detail: "after exit",
        },
        DiffCase {
            name: "running, not desired: stop",
            desired: None,
            observed: Some(observed(Phase::Running, spec())),
            want_kind: DiffKind::Stop,
            want_detail: "will be stopped",
        },
        DiffCase {
            name: "stopping, not desired: stop",
            desired: None,
            observed: Some(stopping(StopReason::Undesired, Some(after(1)), false)),
            want_kind: DiffKind::Stop,
            want_detail: "stopping",
        },
        DiffCase {
            name: "exited, not desired: stop (record removed)",
            desired: None,
            observed: Some(observed(Phase::Exited, spec())),
            want_kind: DiffKind::Stop,
            want_detail: "record will be removed",
        },
        DiffCase {
            name: "stopping for shutdown while desired: stop",
            desired: Some(desired(1, spec())),
            observed: Some(stopping(StopReason::Shutdown, Some(after(1)), false)),
            want_kind: DiffKind::Stop,
            want_detail: "stopping",
        },
        DiffCase {
            name: "running unhealthy: failing",
            desired: Some(desired(1, checked_spec())),
            observed: Some(ObservedRecord {
                health: Health::Unhealthy,
                probe_failures: 2,
                last_error: Some("health check failed: refused".to_string()),
                ..observed(Phase::Running, checked_spec())
            }),
            want_kind: DiffKind::Failing,
            want_detail: "2 probe failures in a row",
        },
        DiffCase {
            name: "stopping after failed liveness: failing",
            desired: Some(desired(1, checked_spec())),
            observed: Some(ObservedRecord {
                stop_reason: Some(StopReason::Unhealthy),
                stop_deadline: Some(after(1)),
                ..observed(Phase::Stopping, checked_spec())
            }),
            want_kind: DiffKind::Failing,
            want_detail: "failed liveness",
        },
        DiffCase {
            name: "backing off: failing, with the last error and the restart time",
            desired: Some(desired(1, spec())),
            observed: Some(backing_off(Some(after(2_000)))),
            want_kind: DiffKind::Failing,
            want_detail: "exited with exit code 1; restart 2 due unix ms 1002000",
        },
        DiffCase {
            name: "exited with a failure under its policy: failing",
            desired: Some(desired(1, policy_spec(RestartPolicy::Never))),
            observed: Some(ObservedRecord {
                last_exit: Some(ExitStatus::Signal(9)),
                ..observed(Phase::Exited, policy_spec(RestartPolicy::Never))
            }),
            want_kind: DiffKind::Failing,
            want_detail: "exited with signal SIGKILL",
        },
    ];

    for case in cases {
        let got = diff(case.desired.as_ref(), case.observed.as_ref(), NOW);
        assert_eq!(got.kind, case.want_kind, "kind, case: {}", case.name);
        assert!(
            got.detail.contains(case.want_detail),
            "detail {:?} lacks {:?}, case: {}",
            got.detail,
            case.want_detail,
            case.name
        );
    }
}

#[test]
fn diff_summary_counts_each_kind() {
    let cases: Vec<(&str, Vec<DiffKind>, DiffSummary)> = vec![
        ("nothing added", vec![], DiffSummary::default()),
        (
            "one of each",
            vec![
                DiffKind::InSync,
                DiffKind::Start,
                DiffKind::Replace,
                DiffKind::Stop,
                DiffKind::Failing,
                DiffKind::Held,
            ],
            DiffSummary {
                to_start: 1,
                to_replace: 1,
                to_stop: 1,
                failing: 1,
                in_sync: 1,
                held: 1,
            },
        ),
        (
            "repeats",
            vec![
                DiffKind::InSync,
                DiffKind::InSync,
                DiffKind::InSync,
                DiffKind::Failing,
                DiffKind::Failing,
                DiffKind::Start,
            ],
            DiffSummary {
                to_start: 1,
                to_replace: 0,
                to_stop: 0,
                failing: 2,
                in_sync: 3,
                held: 0,
            },
        ),
    ];
    for (name, kinds, want) in cases {
        let mut summary = DiffSummary::default();
        for kind in kinds {
            summary.add(kind);
        }
        assert_eq!(summary, want, "case: {name}");
    }
}

#[test]
fn diff_kind_names() {
    let cases = [
        (DiffKind::InSync, "in-sync"),
        (DiffKind::Start, "start"),
        (DiffKind::Replace, "replace"),
        (DiffKind::Stop, "stop"),
        (DiffKind::Failing, "failing"),
        (DiffKind::Held, "held"),
    ];
    for (kind, name) in cases {
        assert_eq!(kind.as_str(), name, "case: {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// requires_restart_from
// ---------------------------------------------------------------------------------------------

/// A change made to a copy of `spec()`.
type SpecChange = fn(&mut ProcessSpec);

#[test]
fn requires_restart_from_table() {
    let cases: Vec<(&str, SpecChange, bool)> = vec![
        ("identical", |_| {}, false),
        (
            "labels added",
            |s| {
                s.labels.insert("team".into(), "data".into());
            },
            false,
        ),
        (
            "env changed",
            |s| {
                s.env.insert("RUST_LOG".into(), "debug".into());
            },
            true,
        ),
        ("args changed", |s| s.args.push("--verbose".into()), true),
        (
            "executable changed",
            |s| s.executable = PathBuf::from("/bin/true"),
            true,
        ),
        (
            "process type changed",
            |s| s.process_type = ProcessType::Proxy,
            true,
        ),
        (
            "inherit_env changed",
            |s| s.inherit_env.push("HOME".into()),
            true,
        ),
        (
            "working dir changed",
            |s| s.working_dir = Some(PathBuf::from("/tmp")),
            true,
        ),
        ("pattern changed", |s| s.pattern = Some("kv".into()), true),
        (
            "isolation changed",
            |s| s.isolation = Isolation::Session,
            true,
        ),
        (
            "namespace changed",
            |s| s.namespace = Some("ns".into()),
            true,
        ),
        (
            "session changed",
            |s| s.session_id = Some("s1".into()),
            true,
        ),
        (
            "health check added",
            |s| s.health_check = Some(health_check()),
            true,
        ),
        (
            "restart policy changed: applies at the next exit, no new process",
            |s| s.restart_policy = RestartPolicy::Never,
            false,
        ),
        (
            "success exit codes changed: no new process",
            |s| s.success_exit_codes = vec![0, 3],
            false,
        ),
        (
            "backoff changed: no new process",
            |s| s.backoff.failure_threshold = Some(2),
            false,
        ),
        (
            "termination grace changed",
            |s| s.termination_grace = Duration::from_secs(1),
            true,
        ),
        (
            "resources added",
            |s| {
                s.resources = Some(Resources {
                    cpu_millis: Some(500),
                    memory_bytes: None,
                })
            },
            true,
        ),
        (
            "requested ports changed",
            |s| s.requested_ports.grpc = Some(9_000),
            true,
        ),
    ];
    for (name, change, want) in cases {
        let running = spec();
        let mut new = spec();
        change(&mut new);
        assert_eq!(new.requires_restart_from(&running), want, "case: {name}");
        assert_eq!(
            running.requires_restart_from(&new),
            want,
            "case (reversed): {name}"
        );
    }
}

#[test]
fn pattern_process_ids_follow_the_isolation_level() {
    let cases = [
        (Isolation::None, "", "", "hello", Ok("shared:hello")),
        (
            Isolation::Namespace,
            "my-app",
            "",
            "hello",
            Ok("ns:my-app:hello"),
        ),
        (
            Isolation::Session,
            "my-app",
            "u-1",
            "hello",
            Ok("session:my-app:u-1:hello"),
        ),
        (Isolation::Namespace, "a:b", "", "hello", Err(':')),
        (Isolation::Session, "ns", "s/1", "hello", Err('/')),
    ];
    for (isolation, namespace, session, pattern, expected) in cases {
        let got = pattern_process_id(isolation, namespace, session, pattern);
        match expected {
            Ok(id) => assert_eq!(got.map(|id| id.to_string()), Ok(id.to_string())),
            Err(character) => assert!(
                matches!(got, Err(InvalidProcessId::BadCharacter { character: c, .. }) if c == character),
                "{namespace:?}/{session:?}: {got:?}"
            ),
        }
    }
}

#[test]
fn the_circuit_opens_after_the_threshold_and_a_reset_or_a_new_spec_closes_it() {
    let backoff = Backoff {
        failure_threshold: 3,
        ..backoff()
    };
    let wanted = desired(1, spec());
    let mut record = observed(Phase::Running, spec());
    let mut now = NOW;
    let mut phases = Vec::new();
    for _ in 0..3 {
        record = record_exit(&record, ExitStatus::Code(1), &backoff, 0.0, now);
        phases.push(record.phase);
        if record.phase == Phase::BackingOff {
            let at = record.next_restart_at.expect("a restart time");
            assert_eq!(
                decide(Some(&wanted), Some(&record), at).action,
                Some(Action::Start {
                    id: wanted.id.clone(),
                    restart: true
                })
            );
            now = at;
            record = record_spawned(&wanted, Some(&record), spawned(4243), now);
        }
    }
    assert_eq!(
        phases,
        [Phase::BackingOff, Phase::BackingOff, Phase::Tripped]
    );
    assert_eq!(record.tripped_at, Some(now));
    assert_eq!(record.next_restart_at, None);
    assert!(
        record
            .last_error
            .as_deref()
            .unwrap()
            .contains("circuit open after 3 consecutive failures"),
        "{record:?}"
    );
    let much_later = now.saturating_add(Duration::from_secs(86_400));
    assert_eq!(
        decide(Some(&wanted), Some(&record), much_later),
        Decision::default(),
        "terminal: never restarted by time alone"
    );
    assert_eq!(
        diff(Some(&wanted), Some(&record), NOW).kind,
        DiffKind::Failing
    );
    assert!(diff(Some(&wanted), Some(&record), NOW)
        .detail
        .contains("prism-launcher reset"));

    let reset = DesiredRecord {
        resets: 1,
        ..wanted.clone()
    };
    assert_eq!(
        decide(Some(&reset), Some(&record), much_later).action,
        Some(Action::Start {
            id: wanted.id.clone(),
            restart: true
        })
    );
    let restarted = record_spawned(&reset, Some(&record), spawned(5000), much_later);
    assert_eq!(
        restarted.consecutive_failures, 0,
        "a reset starts the streak afresh"
    );
    assert_eq!(restarted.resets_seen, 1);
    assert_eq!(restarted.tripped_at, None);
    assert_eq!(
        decide(Some(&reset), Some(&restarted), much_later),
        Decision::default(),
        "a reset acts once"
    );

    let mut changed = spec();
    changed.args = vec!["--fixed".into()];
    let fixed = desired(2, changed);
    assert_eq!(
        decide(Some(&fixed), Some(&record), much_later).action,
        Some(Action::Start {
            id: wanted.id.clone(),
            restart: false
        })
    );
    assert_eq!(
        record_spawned(&fixed, Some(&record), spawned(5001), much_later).consecutive_failures,
        0
    );
    assert_eq!(
        decide(None, Some(&record), much_later).action,
        Some(Action::Forget {
            id: wanted.id.clone()
        })
    );
}

#[test]
fn spawn_failures_trip_the_circuit_too_and_per_spec_settings_override_the_launcher() {
    let mut own = spec();
    own.backoff = BackoffOverrides {
        initial: Some(Duration::from_secs(7)),
        max: None,
        reset_after: None,
        failure_threshold: Some(2),
    };
    let wanted = desired(1, own);
    let first = record_spawn_failed(
        &wanted,
        None,
        ports(),
        "no such file".into(),
        &backoff(),
        0.0,
        NOW,
    );
    assert_eq!(first.phase, Phase::BackingOff);
    assert_eq!(
        first.next_restart_at,
        Some(NOW.saturating_add(Duration::from_secs(7))),
        "the spec's initial delay"
    );
    let second = record_spawn_failed(
        &wanted,
        Some(&first),
        ports(),
        "no such file".into(),
        &backoff(),
        0.0,
        NOW,
    );
    assert_eq!(second.phase, Phase::Tripped, "the spec's threshold of 2");
    assert_eq!(second.next_restart_at, None);
}

#[test]
fn jitter_stretches_a_delay_by_at_most_a_fifth() {
    let backoff = backoff();
    for failures in 2..8 {
        let plain = backoff.delay(failures);
        assert_eq!(backoff.jittered_delay(failures, 0.0), plain);
        let most = backoff.jittered_delay(failures, 0.999_999);
        assert!(
            most > plain && most <= plain.mul_f64(1.0 + JITTER_FRACTION),
            "{failures}: {most:?}"
        );
        assert_eq!(
            backoff.jittered_delay(failures, f64::NAN),
            plain,
            "a bad sample adds nothing"
        );
    }
}

#[test]
fn success_exit_codes_decide_what_on_failure_restarts() {
    let mut own = spec();
    own.restart_policy = RestartPolicy::OnFailure;
    own.success_exit_codes = vec![0, 3];
    let record = ObservedRecord {
        spec: Arc::new(own),
        ..observed(Phase::Running, spec())
    };
    let done = record_exit(&record, ExitStatus::Code(3), &backoff(), 0.0, NOW);
    assert_eq!(done.phase, Phase::Exited, "3 counts as success");
    assert_eq!(done.error_count, record.error_count);
    let crashed = record_exit(&record, ExitStatus::Code(0), &backoff(), 0.0, NOW);
    assert_eq!(crashed.phase, Phase::Exited, "0 is listed too");
    let failed = record_exit(&record, ExitStatus::Code(1), &backoff(), 0.0, NOW);
    assert_eq!(failed.phase, Phase::BackingOff);
    let killed = record_exit(&record, ExitStatus::Signal(9), &backoff(), 0.0, NOW);
    assert_eq!(
        killed.phase,
        Phase::BackingOff,
        "a signal is never a success"
    );
}

#[test]
fn the_restart_budget_refills_over_time() {
    let mut budget = RestartBudget::new(2, NOW);
    assert_eq!(budget.take(NOW), Ok(()));
    assert_eq!(budget.take(NOW), Ok(()));
    let retry_at = budget.take(NOW).expect_err("empty");
    assert_eq!(
        retry_at,
        NOW.saturating_add(Duration::from_millis(500)),
        "one token per 500 ms at 2/s"
    );
    assert_eq!(budget.take(retry_at), Ok(()));
    let mut unlimited = RestartBudget::new(0, NOW);
    for _ in 0..1000 {
        assert_eq!(unlimited.take(NOW), Ok(()));
    }
}

#[test]
fn pending_processes_start_when_room_frees_and_are_forgotten_when_undesired() {
    let wanted = desired(1, spec());
    let pending = record_pending(&wanted, None, ports(), "full".into());
    assert_eq!(pending.phase, Phase::Pending);
    assert!(!holds_slot(&pending));
    assert_eq!(
        decide(Some(&wanted), Some(&pending), NOW).action,
        Some(Action::Start {
            id: wanted.id.clone(),
            restart: false
        })
    );
    assert_eq!(
        decide(None, Some(&pending), NOW).action,
        Some(Action::Forget {
            id: wanted.id.clone()
        })
    );
    let shown = diff(Some(&wanted), Some(&pending), NOW);
    assert_eq!(
        (shown.kind, shown.detail.as_str()),
        (DiffKind::Start, "pending: full")
    );
    assert!(holds_slot(&observed(Phase::Running, spec())));
    assert!(!holds_slot(&observed(Phase::Tripped, spec())));
}

fn spawned(pid: u32) -> Spawned {
    Spawned {
        pid,
        start_ticks: Some(7),
        ports: ports(),
        instance: "instance-1".to_string(),
    }
}

#[test]
fn each_process_type_is_validated_on_its_own_terms() {
    let backend = |backend_type: &str, connection: &str| BackendConfig {
        backend_type: backend_type.into(),
        connection_string: Secret::new(connection),
        credentials: BTreeMap::from([("password".to_string(), Secret::new("hunter2"))]),
        options: BTreeMap::new(),
    };
    let proxy = |id: &str, control: u16, data: u16| {
        TypeConfig::Proxy(ProxyConfig {
            proxy_id: id.into(),
            admin_endpoint: "admin:8981".into(),
            control_port: control,
            data_port: data,
            partition_ranges: vec![0, 63],
        })
    };
    let cases: Vec<(&str, TypeConfig, ProcessType, &[&str])> = vec![
        (
            "a good proxy",
            proxy("proxy-01", 9090, 9091),
            ProcessType::Proxy,
            &[],
        ),
        (
            "a proxy without an id",
            proxy(" ", 9090, 9091),
            ProcessType::Proxy,
            &["proxy.proxy_id"],
        ),
        (
            "a proxy with one port twice",
            proxy("p", 9090, 9090),
            ProcessType::Proxy,
            &["proxy.data_port"],
        ),
        (
            "a proxy without ports",
            proxy("p", 0, 9090),
            ProcessType::Proxy,
            &["proxy"],
        ),
        (
            "a proxy without its config",
            TypeConfig::None,
            ProcessType::Proxy,
            &["proxy"],
        ),
        (
            "a good backend",
            TypeConfig::Backend(backend("redis", "redis://h:6379")),
            ProcessType::Backend,
            &[],
        ),
        (
            "a backend without type or connection",
            TypeConfig::Backend(backend("", "")),
            ProcessType::Backend,
            &["backend.backend_type", "backend.connection_string"],
        ),
        (
            "a backend without its config",
            TypeConfig::None,
            ProcessType::Backend,
            &["backend"],
        ),
        (
            "a utility with a bad target",
            TypeConfig::Utility(UtilityConfig {
                utility_type: "log-collector".into(),
                settings: BTreeMap::new(),
                target_processes: vec!["ok".into(), "not/ok".into()],
            }),
            ProcessType::Utility,
            &["utility.target_processes"],
        ),
        (
            "a pattern slot without a backend type",
            TypeConfig::Pattern(PatternConfig {
                pattern_type: "keyvalue".into(),
                slots: BTreeMap::from([("store".to_string(), backend("", "x"))]),
                settings: BTreeMap::new(),
            }),
            ProcessType::Pattern,
            &["pattern.slots.store.backend_type"],
        ),
        (
            "a proxy config on a backend",
            proxy("p", 1, 2),
            ProcessType::Backend,
            &["proxy"],
        ),
        (
            "a plain utility",
            TypeConfig::None,
            ProcessType::Utility,
            &[],
        ),
    ];
    for (name, config, process_type, expected) in cases {
        let fields: Vec<String> = config
            .problems(process_type)
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(fields, expected, "{name}");
    }
}

#[test]
fn each_process_type_maps_to_documented_environment_variables_and_hides_secrets() {
    let backend = BackendConfig {
        backend_type: "postgres".into(),
        connection_string: Secret::new("postgres://u:pw@db/x"),
        credentials: BTreeMap::from([("api-key".to_string(), Secret::new("s3cret"))]),
        options: BTreeMap::from([("pool.size".to_string(), "4".to_string())]),
    };
    let cases: Vec<(TypeConfig, Vec<(&str, &str)>)> = vec![
        (
            TypeConfig::Proxy(ProxyConfig {
                proxy_id: "proxy-01".into(),
                admin_endpoint: "admin:8981".into(),
                control_port: 9090,
                data_port: 9091,
                partition_ranges: vec![0, 63],
            }),
            vec![
                ("PROXY_ID", "proxy-01"),
                ("PROXY_ADMIN_ENDPOINT", "admin:8981"),
                ("PROXY_CONTROL_PORT", "9090"),
                ("PROXY_DATA_PORT", "9091"),
                ("PROXY_PARTITION_RANGES", "0,63"),
            ],
        ),
        (
            TypeConfig::Backend(backend.clone()),
            vec![
                ("BACKEND_TYPE", "postgres"),
                ("BACKEND_CONNECTION_STRING", "postgres://u:pw@db/x"),
                ("BACKEND_CREDENTIAL_API_KEY", "s3cret"),
                ("BACKEND_OPTION_POOL_SIZE", "4"),
            ],
        ),
        (
            TypeConfig::Pattern(PatternConfig {
                pattern_type: "keyvalue".into(),
                slots: BTreeMap::from([("store".to_string(), backend.clone())]),
                settings: BTreeMap::from([("ttl".to_string(), "60".to_string())]),
            }),
            vec![
                ("PATTERN_TYPE", "keyvalue"),
                ("PATTERN_SETTING_TTL", "60"),
                ("PATTERN_SLOTS", "store"),
                ("PATTERN_SLOT_STORE_TYPE", "postgres"),
                (
                    "PATTERN_SLOT_STORE_CONNECTION_STRING",
                    "postgres://u:pw@db/x",
                ),
                ("PATTERN_SLOT_STORE_CREDENTIAL_API_KEY", "s3cret"),
                ("PATTERN_SLOT_STORE_OPTION_POOL_SIZE", "4"),
            ],
        ),
        (
            TypeConfig::Utility(UtilityConfig {
                utility_type: "log-collector".into(),
                settings: BTreeMap::from([("level".to_string(), "info".to_string())]),
                target_processes: vec!["a".into(), "b".into()],
            }),
            vec![
                ("UTILITY_TYPE", "log-collector"),
                ("UTILITY_SETTING_LEVEL", "info"),
                ("UTILITY_TARGET_PROCESSES", "a,b"),
            ],
        ),
    ];
    for (config, expected) in cases {
        let env = config.environment();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, expected);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains(":pw@"),
            "a secret in Debug: {shown}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The vocabulary, the child's environment, the one validation, the one projection
// ---------------------------------------------------------------------------------------------

/// Every word of `T` parses back to its value, and nothing else does.
fn assert_round_trip<T: Vocabulary + PartialEq + std::fmt::Debug + std::fmt::Display>() {
    assert_eq!(T::ALL.len(), T::WORDS.len());
    for (value, word) in T::ALL.iter().zip(T::WORDS) {
        assert_eq!(value.to_string(), *word);
        assert_eq!(T::parse_word(word), Ok(*value), "{word}");
        assert_eq!(
            word.to_lowercase(),
            *word,
            "one lower-case spelling: {word}"
        );
    }
    let error = T::parse_word("no-such-word").unwrap_err();
    assert_eq!(error.kind, T::KIND);
    assert_eq!(error.expected, T::WORDS.join(", "));
}

#[test]
fn every_closed_set_has_one_lower_case_spelling_that_parses_back() {
    assert_round_trip::<Isolation>();
    assert_round_trip::<ProcessType>();
    assert_round_trip::<RestartPolicy>();
    assert_round_trip::<Phase>();
    assert_round_trip::<Health>();
    assert_round_trip::<DiffKind>();
    assert_round_trip::<ClientState>();
    assert_round_trip::<StopReason>();
    assert_eq!("session".parse(), Ok(Isolation::Session));
    assert_eq!(
        "Namespace".parse::<Isolation>().unwrap_err().to_string(),
        "isolation \"Namespace\" is not one of none, namespace, session"
    );
    // Spec files have always used Kubernetes' spelling of restart policies.
    assert_eq!("OnFailure".parse(), Ok(RestartPolicy::OnFailure));
    assert_eq!(RestartPolicy::OnFailure.to_string(), "on-failure");
    assert_eq!(Isolation::Namespace.distribution_key(), "Namespace");
}

#[test]
fn the_child_environment_sets_exactly_the_injected_variables_and_nothing_overrides_them() {
    let spec = ProcessSpec {
        env: BTreeMap::from([("MODE".to_string(), "fast".to_string())]),
        inherit_env: vec!["SECRET_INHERITED".to_string()],
        pattern: Some("echo".to_string()),
        isolation: Isolation::Session,
        namespace: Some("tenant".to_string()),
        session_id: Some("s1".to_string()),
        process_type: ProcessType::Utility,
        ..spec()
    };
    let child = ChildIdentity {
        id: &id("session:tenant:s1:echo"),
        ports: ports(),
        launcher_id: "launcher-1",
        instance: "0123",
    };
    let launcher_env = |name: &str| match name {
        "PATH" => Some("/launcher/bin".to_string()),
        "SECRET_INHERITED" => Some("inherited".to_string()),
        "PROCESS_ID" => Some("from the launcher's own environment".to_string()),
        "NOT_PASSED" => Some("never".to_string()),
        _ => None,
    };
    let env = child_environment(&spec, child, launcher_env);
    for name in INJECTED_ENV {
        assert!(env.contains_key(name), "{name} is injected");
    }
    let expected = [
        ("PATTERN_NAME", "echo"),
        ("NAMESPACE", "tenant"),
        ("SESSION_ID", "s1"),
        ("GRPC_PORT", "50051"),
        ("HEALTH_PORT", "8081"),
        ("PROCESS_ID", "session:tenant:s1:echo"),
        ("PROCESS_TYPE", "utility"),
        ("PRISM_LAUNCHER_ID", "launcher-1"),
        ("PRISM_INSTANCE_ID", "0123"),
        ("PATH", "/launcher/bin"),
        ("SECRET_INHERITED", "inherited"),
        ("MODE", "fast"),
    ];
    for (name, value) in expected {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert_eq!(env.len(), expected.len(), "nothing else: {env:#?}");
    let without_path = child_environment(&spec, child, |_| None);
    assert_eq!(
        without_path.get("PATH").map(String::as_str),
        Some(DEFAULT_PATH)
    );
}

#[test]
fn a_valid_spec_has_no_problems_and_each_rule_names_its_field() {
    assert_eq!(spec().problems(), vec![]);
    assert_eq!(checked_spec().problems(), vec![]);
    let cases: Vec<(&str, ProcessSpec, Vec<SpecField>)> = vec![
        (
            "relative executable",
            ProcessSpec {
                executable: PathBuf::from("bin/x"),
                ..spec()
            },
            vec![SpecField::Executable],
        ),
        (
            "session without namespace or session",
            ProcessSpec {
                isolation: Isolation::Session,
                ..spec()
            },
            vec![SpecField::Namespace, SpecField::SessionId],
        ),
        (
            "an empty namespace is none",
            ProcessSpec {
                isolation: Isolation::Namespace,
                namespace: Some(String::new()),
                ..spec()
            },
            vec![SpecField::Namespace],
        ),
        (
            "bad variables",
            ProcessSpec {
                env: BTreeMap::from([
                    ("HEALTH_PORT".to_string(), "1".to_string()),
                    ("A-B".to_string(), "1".to_string()),
                    ("NUL".to_string(), "a\0".to_string()),
                ]),
                inherit_env: vec!["1X".to_string()],
                ..spec()
            },
            vec![
                SpecField::Env,
                SpecField::Env,
                SpecField::Env,
                SpecField::InheritEnv,
            ],
        ),
        (
            "a health check with every problem",
            ProcessSpec {
                health_check: Some(HealthCheck {
                    probe: Probe::Http {
                        path: "health".to_string(),
                        port: None,
                    },
                    initial_delay: MAX_DURATION + Duration::from_secs(1),
                    interval: Duration::from_millis(50),
                    timeout: Duration::ZERO,
                    failure_threshold: 0,
                    success_threshold: 0,
                }),
                ..spec()
            },
            vec![
                SpecField::HealthCheck(HealthCheckField::HttpPath),
                SpecField::HealthCheck(HealthCheckField::Interval),
                SpecField::HealthCheck(HealthCheckField::Timeout),
                SpecField::HealthCheck(HealthCheckField::FailureThreshold),
                SpecField::HealthCheck(HealthCheckField::SuccessThreshold),
                SpecField::HealthCheck(HealthCheckField::InitialDelay),
            ],
        ),
        (
            "ports, backoff and grace",
            ProcessSpec {
                requested_ports: RequestedPorts {
                    grpc: Some(0),
                    health: Some(0),
                },
                backoff: BackoffOverrides {
                    initial: Some(Duration::from_secs(60)),
                    max: Some(Duration::from_secs(1)),
                    reset_after: None,
                    failure_threshold: Some(0),
                },
                termination_grace: MAX_DURATION + Duration::from_secs(1),
                ..spec()
            },
            vec![
                SpecField::GrpcPort,
                SpecField::HealthPort,
                SpecField::BackoffFailureThreshold,
                SpecField::BackoffInitial,
                SpecField::TerminationGrace,
            ],
        ),
        (
            "a proxy without its config",
            ProcessSpec {
                process_type: ProcessType::Proxy,
                ..spec()
            },
            vec![SpecField::TypeConfig("proxy".to_string())],
        ),
    ];
    for (case, spec, fields) in cases {
        let found: Vec<SpecField> = spec
            .problems()
            .into_iter()
            .map(|problem| problem.field)
            .collect();
        assert_eq!(found, fields, "{case}");
    }
}

#[test]
fn a_problem_is_worded_with_the_writers_own_field_names() {
    let problems = ProcessSpec {
        isolation: Isolation::Session,
        namespace: Some("ns".to_string()),
        backoff: BackoffOverrides {
            failure_threshold: Some(0),
            ..Default::default()
        },
        ..spec()
    }
    .problems();
    let file = |field: &SpecField| match field {
        SpecField::SessionId => "spec.sessionId".to_string(),
        _ => "spec.backoff.failureThreshold".to_string(),
    };
    let wire = |field: &SpecField| match field {
        SpecField::SessionId => "session_id".to_string(),
        _ => "config.backoff.failure_threshold".to_string(),
    };
    let messages = |names: &dyn Fn(&SpecField) -> String| -> Vec<String> {
        problems
            .iter()
            .map(|problem| problem.message(&names))
            .collect()
    };
    assert_eq!(
        messages(&file),
        [
            "isolation session needs a sessionId",
            "failureThreshold must be at least 1"
        ]
    );
    assert_eq!(
        messages(&wire),
        [
            "isolation session needs a session_id",
            "failure_threshold must be at least 1"
        ]
    );
}

#[test]
fn join_pairs_records_by_id_in_id_order() {
    let rows = join(
        vec![desired_for("b", 1, spec()), desired_for("a", 1, spec())],
        vec![
            observed_for("c", Phase::Running, spec()),
            observed_for("a", Phase::Running, spec()),
        ],
    );
    let summary: Vec<(&str, bool, bool)> = rows
        .iter()
        .map(|row| {
            (
                row.id().as_str(),
                row.desired().is_some(),
                row.observed().is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("a", true, true), ("b", true, false), ("c", false, true)]
    );
    assert!(ProcessRow::new(id("x"), None, None).is_none());
}

#[test]
fn one_projection_gives_every_client_its_words() {
    let exited = |status| ObservedRecord {
        last_exit: Some(status),
        ..observed(Phase::Exited, spec())
    };
    // (desired? and held?, observed) → the state, the heartbeat word.
    let cases: Vec<(Option<bool>, Option<ObservedRecord>, ClientState, &str)> = vec![
        (Some(false), None, ClientState::Pending, "starting"),
        (None, None, ClientState::Stopped, "stopped"),
        (
            Some(false),
            Some(observed(Phase::Pending, spec())),
            ClientState::Pending,
            "starting",
        ),
        (
            Some(false),
            Some(observed(Phase::Starting, checked_spec())),
            ClientState::Starting,
            "starting",
        ),
        (
            Some(false),
            Some(observed(Phase::Running, spec())),
            ClientState::Running,
            "running",
        ),
        (
            None,
            Some(observed(Phase::Stopping, spec())),
            ClientState::Stopping,
            "stopping",
        ),
        (
            Some(false),
            Some(observed(Phase::BackingOff, spec())),
            ClientState::Failed,
            "failed",
        ),
        (
            Some(false),
            Some(observed(Phase::Tripped, spec())),
            ClientState::Failed,
            "failed",
        ),
        (
            Some(false),
            Some(exited(ExitStatus::Code(0))),
            ClientState::Exited,
            "stopped",
        ),
        (
            Some(false),
            Some(exited(ExitStatus::Code(3))),
            ClientState::Failed,
            "failed",
        ),
        (
            Some(false),
            Some(observed(Phase::Stopped, spec())),
            ClientState::Pending,
            "starting",
        ),
        (
            None,
            Some(observed(Phase::Stopped, spec())),
            ClientState::Stopped,
            "stopped",
        ),
        // Held by an operator: stopped once nothing runs, whatever it was doing before.
        (Some(true), None, ClientState::Stopped, "stopped"),
        (
            Some(true),
            Some(observed(Phase::Stopped, spec())),
            ClientState::Stopped,
            "stopped",
        ),
        (
            Some(true),
            Some(observed(Phase::Tripped, spec())),
            ClientState::Stopped,
            "stopped",
        ),
        (
            Some(true),
            Some(observed(Phase::BackingOff, spec())),
            ClientState::Stopped,
            "stopped",
        ),
        (
            Some(true),
            Some(observed(Phase::Stopping, spec())),
            ClientState::Stopping,
            "stopping",
        ),
        (
            Some(true),
            Some(observed(Phase::Running, spec())),
            ClientState::Running,
            "running",
        ),
    ];
    for (wish, observed, state, heartbeat) in cases {
        let phase = observed.as_ref().map(|record| record.phase);
        let desired = wish.map(|held| DesiredRecord {
            held,
            ..desired(1, spec())
        });
        assert_eq!(
            client_state(desired.as_ref(), observed.as_ref()),
            state,
            "{phase:?}, desired and held {wish:?}"
        );
        assert_eq!(state.heartbeat_status(), heartbeat, "{state:?}");
        assert_eq!(state.metric_label(), state.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping: the grace a stop gets, shortening a stop under way, the shutdown schedule
// ---------------------------------------------------------------------------------------------

#[test]
fn stop_grace_table() {
    let spec_grace = Duration::from_secs(10);
    let asked = Some(Duration::from_secs(2));
    let cases = [
        (StopReason::Undesired, asked, Duration::from_secs(2)),
        (StopReason::Undesired, Some(Duration::ZERO), Duration::ZERO),
        (StopReason::Undesired, None, spec_grace),
        (StopReason::Replace, asked, spec_grace),
        (StopReason::Unhealthy, asked, spec_grace),
        (StopReason::Shutdown, asked, spec_grace),
    ];
    for (reason, requested, expected) in cases {
        assert_eq!(
            stop_grace(reason, spec_grace, requested),
            expected,
            "{reason:?} {requested:?}"
        );
    }
}

#[test]
fn shorten_stop_table() {
    let stopping = |deadline: Option<UnixMillis>, killed: bool| ObservedRecord {
        stop_deadline: deadline,
        killed,
        stop_reason: Some(StopReason::Undesired),
        ..observed(Phase::Stopping, spec())
    };
    let grace = Duration::from_secs(1);
    // (record, whether the request shortens it, and to what)
    let cases = [
        (stopping(Some(after(5_000)), false), Some(after(1_000))),
        (stopping(Some(after(500)), false), None),
        (stopping(Some(after(1_000)), false), None),
        (stopping(None, false), Some(after(1_000))),
        (stopping(Some(after(5_000)), true), None),
        (observed(Phase::Running, spec()), None),
    ];
    for (record, expected) in cases {
        let shortened = shorten_stop(&record, grace, NOW);
        assert_eq!(
            shortened.as_ref().and_then(|next| next.stop_deadline),
            expected,
            "{:?} deadline {:?}",
            record.phase,
            record.stop_deadline
        );
        if let Some(next) = shortened {
            assert_eq!(
                ObservedRecord {
                    stop_deadline: record.stop_deadline,
                    ..next
                },
                record,
                "only the deadline changes"
            );
        }
    }
}

#[test]
fn shutdown_schedule_kills_by_the_longest_grace_and_gives_up_after_a_margin() {
    let with_grace = |name: &str, grace: u64, phase: Phase| ObservedRecord {
        spec: Arc::new(ProcessSpec {
            termination_grace: Duration::from_secs(grace),
            ..spec()
        }),
        ..observed_for(name, phase, spec())
    };
    let quick = ObservedRecord {
        stop_deadline: Some(after(2_000)),
        ..with_grace("quick", 2, Phase::Stopping)
    };
    let slow = ObservedRecord {
        // A TerminatePattern asked for longer than its spec's grace before the shutdown.
        stop_deadline: Some(after(60_000)),
        ..with_grace("slow", 5, Phase::Stopping)
    };
    let gone = with_grace("gone", 30, Phase::Stopped);
    let margin = Duration::from_secs(2);
    let schedule = ShutdownSchedule::new([&quick, &slow, &gone], NOW, margin);
    assert_eq!(
        schedule,
        ShutdownSchedule {
            kill_all_at: after(5_000),
            give_up_at: after(7_000),
        },
        "the longest grace of what lives, not of what stopped"
    );
    assert!(!schedule.kill_due(&quick, after(1_999)));
    assert!(schedule.kill_due(&quick, after(2_000)));
    assert!(!schedule.kill_due(&slow, after(4_999)));
    assert!(
        schedule.kill_due(&slow, after(5_000)),
        "everyone is killed by the longest grace"
    );
    assert!(!schedule.kill_due(&gone, after(10_000)), "nothing to kill");
    let killed = ObservedRecord {
        killed: true,
        ..quick.clone()
    };
    assert!(!schedule.kill_due(&killed, after(3_000)), "killed once");
    assert_eq!(schedule.next_wake([&quick, &slow]), after(2_000));
    assert_eq!(schedule.next_wake([&slow]), after(5_000));
    assert_eq!(schedule.next_wake([&killed]), after(7_000));
    assert_eq!(
        ShutdownSchedule::new([], NOW, margin),
        ShutdownSchedule {
            kill_all_at: NOW,
            give_up_at: after(2_000),
        }
    );
}

#[test]
fn port_needs_follow_the_seed_contract_and_what_a_spec_asks() {
    let needs = |spec: ProcessSpec| spec.port_needs();
    assert_eq!(
        needs(spec()),
        PortNeeds {
            grpc: true,
            health: true
        },
        "a pattern gets GRPC_PORT and HEALTH_PORT"
    );
    let utility = ProcessSpec {
        process_type: ProcessType::Utility,
        ..spec()
    };
    assert_eq!(
        needs(utility.clone()),
        PortNeeds::default(),
        "nothing to bind"
    );
    assert_eq!(
        needs(ProcessSpec {
            health_check: Some(health_check()),
            ..utility.clone()
        }),
        PortNeeds {
            grpc: false,
            health: true
        },
        "a TCP probe of HEALTH_PORT"
    );
    assert_eq!(
        needs(ProcessSpec {
            health_check: Some(HealthCheck {
                probe: Probe::Tcp { port: Some(9000) },
                ..health_check()
            }),
            ..utility.clone()
        }),
        PortNeeds::default(),
        "a probe of its own port"
    );
    assert_eq!(
        needs(ProcessSpec {
            requested_ports: RequestedPorts {
                grpc: Some(7000),
                health: None
            },
            ..utility
        }),
        PortNeeds {
            grpc: true,
            health: false
        }
    );
}

#[test]
fn the_ready_deadline_is_the_initial_delay_plus_threshold_periods_and_at_least_a_second() {
    let check = |initial_ms: u64, interval_ms: u64, timeout_ms: u64, threshold: u32| HealthCheck {
        initial_delay: Duration::from_millis(initial_ms),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        failure_threshold: threshold,
        ..health_check()
    };
    for (name, check, want_ms) in [
        ("defaults: 3 × 10 s", check(0, 10_000, 1_000, 3), 30_000),
        (
            "an initial delay adds",
            check(5_000, 10_000, 1_000, 3),
            35_000,
        ),
        (
            "a timeout longer than the interval is the period",
            check(0, 500, 2_000, 2),
            4_000,
        ),
        ("never under a second", check(0, 200, 200, 1), 1_000),
    ] {
        assert_eq!(
            check.ready_deadline(),
            Duration::from_millis(want_ms),
            "{name}"
        );
    }
}

#[test]
fn an_adopted_starting_process_gets_its_whole_ready_deadline_from_the_adoption() {
    let long_ago = ObservedRecord {
        started_at: Some(before(600_000)),
        ..observed(Phase::Starting, checked_spec())
    };
    // Unprobed by this run, it would be stopped at once...
    assert_eq!(
        decide(Some(&desired(1, checked_spec())), Some(&long_ago), NOW),
        stop(StopReason::NotReady, spec().termination_grace)
    );
    // ...adopted, it has 30 s from now to pass a probe.
    let adopted = record_adopted(&long_ago, NOW);
    assert_eq!(
        decide(Some(&desired(1, checked_spec())), Some(&adopted), NOW),
        wait_until(after(30_000))
    );
    let running = ObservedRecord {
        started_at: Some(before(600_000)),
        ..observed(Phase::Running, checked_spec())
    };
    assert_eq!(
        record_adopted(&running, NOW),
        running,
        "a ready process keeps its start"
    );
}

#[test]
fn changed_fields_name_what_differs_in_the_order_a_spec_lists_it() {
    let with_check = |probe: Probe| ProcessSpec {
        health_check: Some(HealthCheck {
            probe,
            ..health_check()
        }),
        ..spec()
    };
    let http = |path: &str, port: Option<u16>| Probe::Http {
        path: path.to_string(),
        port,
    };
    let cases: Vec<(&str, ProcessSpec, ProcessSpec, Vec<SpecField>)> = vec![
        ("the same", spec(), spec(), vec![]),
        (
            "a health check added",
            spec(),
            checked_spec(),
            vec![SpecField::HealthCheck(HealthCheckField::Probe)],
        ),
        (
            "only the HTTP path",
            with_check(http("/a", None)),
            with_check(http("/b", None)),
            vec![SpecField::HealthCheck(HealthCheckField::HttpPath)],
        ),
        (
            "the probe's port",
            with_check(http("/a", None)),
            with_check(http("/a", Some(9000))),
            vec![SpecField::HealthCheck(HealthCheckField::Probe)],
        ),
        (
            "HTTP to TCP, and the interval",
            with_check(http("/a", None)),
            ProcessSpec {
                health_check: Some(HealthCheck {
                    interval: Duration::from_secs(1),
                    ..health_check()
                }),
                ..spec()
            },
            vec![
                SpecField::HealthCheck(HealthCheckField::Probe),
                SpecField::HealthCheck(HealthCheckField::Interval),
            ],
        ),
        (
            "type, limits, policy, config block and labels",
            spec(),
            ProcessSpec {
                process_type: ProcessType::Proxy,
                restart_policy: RestartPolicy::Never,
                resources: Some(Resources {
                    cpu_millis: Some(500),
                    memory_bytes: None,
                }),
                type_config: TypeConfig::Proxy(ProxyConfig {
                    proxy_id: "p".to_string(),
                    admin_endpoint: String::new(),
                    control_port: 1,
                    data_port: 2,
                    partition_ranges: Vec::new(),
                }),
                labels: BTreeMap::from([("team".to_string(), "storage".to_string())]),
                ..spec()
            },
            vec![
                SpecField::ProcessType,
                SpecField::RestartPolicy,
                SpecField::CpuLimit,
                SpecField::TypeConfig("proxy".to_string()),
                SpecField::Labels,
            ],
        ),
        (
            "a config block removed is named by the block it was",
            ProcessSpec {
                type_config: TypeConfig::Utility(UtilityConfig::default()),
                ..spec()
            },
            spec(),
            vec![SpecField::TypeConfig("utility".to_string())],
        ),
    ];
    for (name, before, after, expected) in cases {
        assert_eq!(after.changed_fields(&before), expected, "{name}");
        // Whatever changes restarts the process shows as a changed field.
        if after.requires_restart_from(&before) {
            assert!(!expected.is_empty(), "{name}");
        }
    }
}
