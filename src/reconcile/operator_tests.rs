//! Table tests of the operator's verbs (hold, release, restart) and what `plan` and `diff` make
//! of them, of the events of a process's life derived from its records, and of label selectors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::fixtures::*;
use super::*;

fn desired_record(held: bool, restarts: u64) -> DesiredRecord {
    DesiredRecord {
        id: id("web"),
        spec: Arc::new(spec()),
        generation: 1,
        source: Source::Api,
        resets: 0,
        held,
        restarts,
    }
}

fn nothing() -> Decision {
    Decision::default()
}

fn desired(generation: u64, spec: ProcessSpec) -> DesiredRecord {
    DesiredRecord {
        generation,
        spec: Arc::new(spec),
        ..desired_record(false, 0)
    }
}

fn held() -> DesiredRecord {
    desired_record(true, 0)
}

/// A desired record with `restarts` restart requests, against observed records that acted on
/// none (`restarts_seen` 0).
fn restarting(restarts: u64) -> DesiredRecord {
    desired_record(false, restarts)
}

fn stop_decision(reason: StopReason) -> Decision {
    Decision {
        action: Some(Action::Stop {
            id: id("web"),
            reason,
            grace: spec().termination_grace,
        }),
        wake_at: None,
    }
}

fn start_decision(restart: bool) -> Decision {
    Decision {
        action: Some(Action::Start {
            id: id("web"),
            restart,
        }),
        wake_at: None,
    }
}

fn stopping(reason: StopReason, deadline: UnixMillis) -> ObservedRecord {
    ObservedRecord {
        stop_reason: Some(reason),
        stop_deadline: Some(deadline),
        ..observed(Phase::Stopping, spec())
    }
}

fn backing_off_until(at: UnixMillis) -> ObservedRecord {
    ObservedRecord {
        consecutive_failures: 2,
        error_count: 2,
        next_restart_at: Some(at),
        last_exit: Some(ExitStatus::Code(1)),
        last_error: Some("exited with exit code 1".to_string()),
        ..observed(Phase::BackingOff, spec())
    }
}

fn spawned(pid: u32, instance: &str) -> Spawned {
    Spawned {
        pid,
        start_ticks: Some(7),
        ports: ports(),
        instance: instance.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The verbs on a desired record
// ---------------------------------------------------------------------------------------------

#[test]
fn operate_table() {
    // (verb, held before, restarts before) → (held after, restarts after), or refused.
    let cases = [
        (OperatorVerb::Hold, false, 0, Ok((true, 0))),
        (OperatorVerb::Hold, true, 0, Ok((true, 0))),
        (OperatorVerb::Release, true, 3, Ok((false, 3))),
        (OperatorVerb::Release, false, 3, Ok((false, 3))),
        (OperatorVerb::Restart, false, 0, Ok((false, 1))),
        (OperatorVerb::Restart, false, 4, Ok((false, 5))),
        (
            OperatorVerb::Restart,
            true,
            0,
            Err(OperatorRefusal::RestartWhileHeld { id: id("web") }),
        ),
    ];
    for (verb, was_held, restarts, want) in cases {
        let before = desired_record(was_held, restarts);
        let got = operate(&before, verb).map(|after| {
            assert_eq!(
                after.generation, before.generation,
                "{verb:?}: not a spec change"
            );
            assert_eq!(after.spec, before.spec);
            assert_eq!(after.resets, before.resets);
            (after.held, after.restarts)
        });
        assert_eq!(got, want, "{verb:?}, held {was_held}, restarts {restarts}");
    }
    let refusal = operate(&held(), OperatorVerb::Restart).unwrap_err();
    assert!(
        refusal.to_string().contains("`prism-launcher start web`"),
        "the refusal says what to do: {refusal}"
    );
}

// ---------------------------------------------------------------------------------------------
// What plan makes of them
// ---------------------------------------------------------------------------------------------

#[test]
fn a_held_process_is_stopped_and_nothing_starts_it() {
    let deadline = after(7_000);
    let cases = vec![
        ("held, nothing observed: not started", None, nothing()),
        (
            "held and running: stopped with its spec's grace",
            Some(observed(Phase::Running, spec())),
            stop_decision(StopReason::Held),
        ),
        (
            "held and starting: stopped",
            Some(observed(Phase::Starting, spec())),
            stop_decision(StopReason::Held),
        ),
        (
            "held and stopping: waits for the deadline",
            Some(stopping(StopReason::Held, deadline)),
            Decision {
                action: None,
                wake_at: Some(deadline),
            },
        ),
        (
            "held and stopping past the deadline: killed",
            Some(stopping(StopReason::Held, before(1))),
            Decision {
                action: Some(Action::Kill { id: id("web") }),
                wake_at: None,
            },
        ),
        (
            "held and stopped for the hold: stays stopped",
            Some(held_down()),
            nothing(),
        ),
        (
            "held and stopped for another reason (a replacement): put down for the hold",
            Some(observed(Phase::Stopped, spec())),
            record_held_decision(),
        ),
        (
            "held and backing off, due: not restarted, put down for the hold",
            Some(backing_off_until(before(1))),
            record_held_decision(),
        ),
        (
            "held and backing off, not due: no timer, put down for the hold",
            Some(backing_off_until(after(1))),
            record_held_decision(),
        ),
        (
            "held and tripped: nothing",
            Some(observed(Phase::Tripped, spec())),
            nothing(),
        ),
        (
            "held and exited: nothing",
            Some(observed(Phase::Exited, spec())),
            nothing(),
        ),
        (
            "held and pending: not started, put down for the hold (it waits for no slot)",
            Some(observed(Phase::Pending, spec())),
            record_held_decision(),
        ),
    ];
    for (name, observed, want) in cases {
        assert_eq!(
            decide(Some(&held()), observed.as_ref(), NOW),
            want,
            "{name}"
        );
    }
    // A new spec does not lift the hold either.
    let edited = DesiredRecord {
        spec: Arc::new(ProcessSpec {
            args: vec!["120".to_string()],
            ..spec()
        }),
        generation: 2,
        ..held()
    };
    assert_eq!(decide(Some(&edited), Some(&held_down()), NOW), nothing());
}

/// A record stopped for an operator's hold, as a held process's exit or `record_held` leave it.
fn held_down() -> ObservedRecord {
    ObservedRecord {
        stop_reason: Some(StopReason::Held),
        ..observed(Phase::Stopped, spec())
    }
}

fn record_held_decision() -> Decision {
    Decision {
        action: Some(Action::RecordHeld { id: id("web") }),
        wake_at: None,
    }
}

#[test]
fn a_hold_on_a_process_that_would_start_later_drops_its_backoff_and_its_slot() {
    let backing_off = backing_off_until(after(60_000));
    assert!(holds_slot(&backing_off));
    let Some(Action::RecordHeld { .. }) = decide(Some(&held()), Some(&backing_off), NOW).action
    else {
        panic!("a hold puts a backing-off process down")
    };
    let down = record_held(&backing_off);
    assert_eq!(down.phase, Phase::Stopped);
    assert_eq!(down.stop_reason, Some(StopReason::Held));
    assert_eq!(down.next_restart_at, None, "no restart to come");
    assert_eq!(
        (down.consecutive_failures, down.error_count, down.last_exit),
        (2, 2, Some(ExitStatus::Code(1))),
        "what it went through is kept"
    );
    assert!(!holds_slot(&down), "its slot is given up");
    assert_eq!(decide(Some(&held()), Some(&down), NOW), nothing());
    assert_eq!(
        observed_events(Some(&backing_off), &down, NOW),
        [Happened::Stopped {
            reason: Some(StopReason::Held)
        }]
    );
    let shown = diff(Some(&held()), Some(&down), NOW);
    assert_eq!(shown.kind, DiffKind::Held, "{}", shown.detail);
    assert!(!shown.detail.contains("restart"), "{}", shown.detail);
    // Released: it starts at once (no backoff left to wait out), as a new start (not a
    // restart after a crash), which capacity may leave pending.
    assert_eq!(
        decide(Some(&desired_record(false, 0)), Some(&down), NOW),
        start_decision(false)
    );
}

#[test]
fn holds_slot_table() {
    let with_reason = |phase: Phase, reason: Option<StopReason>| ObservedRecord {
        stop_reason: reason,
        ..observed(phase, spec())
    };
    let cases = [
        (Phase::Starting, None, true),
        (Phase::Running, None, true),
        (Phase::Stopping, Some(StopReason::Held), true),
        (Phase::Stopping, Some(StopReason::Replace), true),
        (Phase::BackingOff, None, true),
        (Phase::Stopped, None, true),
        (Phase::Stopped, Some(StopReason::Held), false),
        (Phase::Pending, None, false),
        (Phase::Exited, None, false),
        (Phase::Tripped, None, false),
    ];
    for (phase, reason, holds) in cases {
        assert_eq!(
            holds_slot(&with_reason(phase, reason)),
            holds,
            "{phase} ({reason:?})"
        );
    }
}

#[test]
fn a_restart_request_replaces_the_process_as_a_spec_change_does() {
    let cases = vec![
        (
            "running: stopped to restart, with its grace",
            observed(Phase::Running, spec()),
            stop_decision(StopReason::Restart),
        ),
        (
            "starting: stopped to restart",
            observed(Phase::Starting, spec()),
            stop_decision(StopReason::Restart),
        ),
        (
            "stopping: waits for the exit",
            stopping(StopReason::Restart, after(7_000)),
            Decision {
                action: None,
                wake_at: Some(after(7_000)),
            },
        ),
        (
            "stopped: started (a replacement, not a restart after a crash)",
            observed(Phase::Stopped, spec()),
            start_decision(false),
        ),
        (
            "backing off, not due: started now",
            backing_off_until(after(60_000)),
            start_decision(false),
        ),
        (
            "tripped: started, as a new spec would",
            observed(Phase::Tripped, spec()),
            start_decision(false),
        ),
        (
            "exited under its policy: started",
            observed(Phase::Exited, spec()),
            start_decision(false),
        ),
    ];
    for (name, observed, want) in cases {
        assert_eq!(
            decide(Some(&restarting(1)), Some(&observed), NOW),
            want,
            "{name}"
        );
    }
    // Acted on already (the process was started for it): nothing more.
    let acted = ObservedRecord {
        restarts_seen: 1,
        ..observed(Phase::Running, spec())
    };
    assert_eq!(decide(Some(&restarting(1)), Some(&acted), NOW), nothing());
    // A spec change at the same time is a replacement for the new spec.
    let changed = DesiredRecord {
        spec: Arc::new(ProcessSpec {
            args: vec!["120".to_string()],
            ..spec()
        }),
        generation: 2,
        ..restarting(1)
    };
    assert_eq!(
        decide(Some(&changed), Some(&observed(Phase::Running, spec())), NOW),
        stop_decision(StopReason::Replace)
    );
}

#[test]
fn a_restart_goes_through_stop_exit_and_start_once_and_keeps_the_counters_honest() {
    let backoff = Backoff::default();
    let desired = restarting(1);
    let running = ObservedRecord {
        consecutive_failures: 2,
        restart_count: 3,
        error_count: 4,
        instance: Some("old".to_string()),
        ..observed(Phase::Running, spec())
    };
    let Some(Action::Stop { reason, grace, .. }) =
        decide(Some(&desired), Some(&running), NOW).action
    else {
        panic!("a restart stops the running process first")
    };
    let stopping = record_stop_started(&running, reason, grace, NOW);
    let stopped = record_exit(&stopping, ExitStatus::Signal(15), &backoff, 0.0, after(10));
    assert_eq!(
        stopped.phase,
        Phase::Stopped,
        "a planned stop, not a failure"
    );
    assert_eq!(stopped.error_count, 4);
    assert_eq!(
        decide(Some(&desired), Some(&stopped), after(10)).action,
        Some(Action::Start {
            id: id("web"),
            restart: false
        })
    );
    let started = record_spawned(&desired, Some(&stopped), spawned(5_000, "new"), after(20));
    assert_eq!(started.restarts_seen, 1, "the request is acted on");
    assert_eq!(
        started.consecutive_failures, 0,
        "a new chance, as with a new spec"
    );
    assert_eq!(
        started.restart_count, 3,
        "a replacement is not a restart after a crash"
    );
    assert_eq!(started.error_count, 4);
    assert_eq!(decide(Some(&desired), Some(&started), after(20)), nothing());
    assert_eq!(
        diff(Some(&desired), Some(&started), after(20)).kind,
        DiffKind::InSync
    );

    // A start that fails acts on the request too: it is not retried as a restart request
    // (its backoff retries it).
    let failed = record_spawn_failed(
        &desired,
        Some(&stopped),
        ports(),
        "no such file".to_string(),
        &backoff,
        0.0,
        after(20),
    );
    assert_eq!(failed.restarts_seen, 1);
}

#[test]
fn a_hold_stops_without_a_failure_and_a_release_starts_it_again() {
    let backoff = Backoff::default();
    let running = ObservedRecord {
        error_count: 1,
        ..observed(Phase::Running, spec())
    };
    let Some(Action::Stop { reason, grace, .. }) =
        decide(Some(&held()), Some(&running), NOW).action
    else {
        panic!("a hold stops the running process")
    };
    assert_eq!(
        (reason, grace),
        (StopReason::Held, spec().termination_grace)
    );
    let stopping = record_stop_started(&running, reason, grace, NOW);
    let stopped = record_exit(&stopping, ExitStatus::Signal(15), &backoff, 0.0, after(5));
    assert_eq!(stopped.phase, Phase::Stopped);
    assert_eq!(
        stopped.stop_reason,
        Some(StopReason::Held),
        "stopped for the hold"
    );
    assert!(!holds_slot(&stopped), "a held process gives its slot up");
    assert_eq!((stopped.error_count, stopped.consecutive_failures), (1, 0));
    assert_eq!(decide(Some(&held()), Some(&stopped), after(5)), nothing());

    let released = desired_record(false, 0);
    assert_eq!(
        decide(Some(&released), Some(&stopped), after(6)),
        start_decision(false)
    );
    let started = record_spawned(&released, Some(&stopped), spawned(7, "again"), after(7));
    assert_eq!(started.stop_reason, None);
    // A stop for another reason is done with its reason.
    let replaced = record_exit(
        &record_stop_started(&running, StopReason::Replace, grace, NOW),
        ExitStatus::Signal(15),
        &backoff,
        0.0,
        after(5),
    );
    assert_eq!(
        (replaced.phase, replaced.stop_reason),
        (Phase::Stopped, None)
    );
    assert!(holds_slot(&replaced), "a replacement keeps its slot");
}

#[test]
fn status_shows_a_held_process_as_held_not_as_a_difference_and_a_restart_as_a_replacement() {
    let cases = vec![
        (
            "held, never run",
            held(),
            None,
            DiffKind::Held,
            "not started",
        ),
        (
            "held and running",
            held(),
            Some(observed(Phase::Running, spec())),
            DiffKind::Stop,
            "held by the operator; will be stopped",
        ),
        (
            "held and stopping",
            held(),
            Some(stopping(StopReason::Held, after(1))),
            DiffKind::Stop,
            "held by the operator; stopping",
        ),
        (
            "held and stopped",
            held(),
            Some(observed(Phase::Stopped, spec())),
            DiffKind::Held,
            "`prism-launcher start web` releases it",
        ),
        (
            "held and tripped",
            held(),
            Some(observed(Phase::Tripped, spec())),
            DiffKind::Held,
            "held by the operator (tripped)",
        ),
        (
            "released while stopping",
            desired_record(false, 0),
            Some(stopping(StopReason::Held, after(1))),
            DiffKind::Start,
            "starts again once stopped",
        ),
        (
            "restart asked, running",
            restarting(1),
            Some(observed(Phase::Running, spec())),
            DiffKind::Replace,
            "restart requested by the operator",
        ),
        (
            "restarting",
            restarting(1),
            Some(stopping(StopReason::Restart, after(1))),
            DiffKind::Replace,
            "stopping to restart at the operator's request",
        ),
        (
            "restart asked, tripped",
            restarting(1),
            Some(observed(Phase::Tripped, spec())),
            DiffKind::Start,
            "will start",
        ),
    ];
    let mut summary = DiffSummary::default();
    for (name, desired, observed, kind, detail) in cases {
        let got = diff(Some(&desired), observed.as_ref(), NOW);
        assert_eq!(got.kind, kind, "{name}: {}", got.detail);
        assert!(got.detail.contains(detail), "{name}: {}", got.detail);
        summary.add(got.kind);
    }
    assert_eq!(summary.held, 3);
    assert_eq!(summary.failing, 0, "a hold is never a failure");
}

// ---------------------------------------------------------------------------------------------
// The events of a process's life
// ---------------------------------------------------------------------------------------------

#[test]
fn observed_events_table() {
    let backoff = Backoff::default();
    let desired = desired(1, spec());
    let running = ObservedRecord {
        instance: Some("one".to_string()),
        ..observed(Phase::Running, spec())
    };
    let stopping_held =
        record_stop_started(&running, StopReason::Held, Duration::from_secs(7), NOW);
    let never = ProcessSpec {
        restart_policy: RestartPolicy::Never,
        ..spec()
    };
    let tripping = ObservedRecord {
        consecutive_failures: 4,
        ..running.clone()
    };
    let backing_off = backing_off_until(after(1_000));
    let checked = ProcessSpec {
        health_check: Some(HealthCheck::new(Probe::Tcp { port: None })),
        ..spec()
    };
    let starting = ObservedRecord {
        health: Health::Unknown,
        ..observed(Phase::Starting, checked.clone())
    };
    let probed_running = ObservedRecord {
        health: Health::Healthy,
        ..observed(Phase::Running, checked)
    };
    let spawn_error = |previous: Option<&ObservedRecord>| {
        record_spawn_failed(
            &desired,
            previous,
            ports(),
            "no such file".to_string(),
            &backoff,
            0.0,
            NOW,
        )
    };
    let cases: Vec<(&str, Option<ObservedRecord>, ObservedRecord, Vec<Happened>)> = vec![
        (
            "first spawn",
            None,
            record_spawned(&desired, None, spawned(10, "a"), NOW),
            vec![Happened::Started {
                pid: 10,
                generation: 1,
            }],
        ),
        (
            "a new instance after a stop",
            Some(observed(Phase::Stopped, spec())),
            record_spawned(
                &desired,
                Some(&observed(Phase::Stopped, spec())),
                spawned(11, "b"),
                NOW,
            ),
            vec![Happened::Started {
                pid: 11,
                generation: 1,
            }],
        ),
        (
            "a stop with its grace",
            Some(running.clone()),
            stopping_held.clone(),
            vec![Happened::Stopping {
                reason: StopReason::Held,
                grace: Duration::from_secs(7),
            }],
        ),
        (
            "the kill after the grace",
            Some(stopping_held.clone()),
            record_killed(&stopping_held),
            vec![Happened::Killed],
        ),
        (
            "the exit of a held process",
            Some(stopping_held.clone()),
            record_exit(&stopping_held, ExitStatus::Signal(15), &backoff, 0.0, NOW),
            vec![
                Happened::Exited {
                    pid: 4_242,
                    status: ExitStatus::Signal(15),
                },
                Happened::Stopped {
                    reason: Some(StopReason::Held),
                },
            ],
        ),
        (
            "a crash: the exit and the backoff chosen",
            Some(running.clone()),
            record_exit(&running, ExitStatus::Code(1), &backoff, 0.0, NOW),
            vec![
                Happened::Exited {
                    pid: 4_242,
                    status: ExitStatus::Code(1),
                },
                Happened::BackingOff {
                    restart_at: NOW,
                    failures: 1,
                },
            ],
        ),
        (
            "the crash that opens the circuit",
            Some(tripping.clone()),
            record_exit(&tripping, ExitStatus::Code(1), &backoff, 0.0, NOW),
            vec![
                Happened::Exited {
                    pid: 4_242,
                    status: ExitStatus::Code(1),
                },
                Happened::Tripped { failures: 5 },
            ],
        ),
        (
            "an exit its policy keeps down",
            Some(observed(Phase::Running, never.clone())),
            record_exit(
                &observed(Phase::Running, never),
                ExitStatus::Code(0),
                &backoff,
                0.0,
                NOW,
            ),
            vec![
                Happened::Exited {
                    pid: 4_242,
                    status: ExitStatus::Code(0),
                },
                Happened::KeptDown,
            ],
        ),
        (
            "a failed spawn",
            None,
            spawn_error(None),
            vec![
                Happened::SpawnFailed {
                    error: "no such file".to_string(),
                },
                Happened::BackingOff {
                    restart_at: after(1_000),
                    failures: 1,
                },
            ],
        ),
        (
            "a failed spawn while backing off chooses its backoff again",
            Some(backing_off.clone()),
            spawn_error(Some(&backing_off)),
            vec![
                Happened::SpawnFailed {
                    error: "no such file".to_string(),
                },
                Happened::BackingOff {
                    restart_at: after(2_000),
                    failures: 3,
                },
            ],
        ),
        (
            "left pending",
            None,
            record_pending(&desired, None, ports(), "the launcher is full".to_string()),
            vec![Happened::Pending {
                reason: "the launcher is full".to_string(),
            }],
        ),
        (
            "ready",
            Some(starting.clone()),
            record_probe(&starting, Ok(())),
            vec![Happened::Healthy],
        ),
        (
            "unhealthy",
            Some(probed_running.clone()),
            record_probe(&probed_running, Err("connection refused".to_string())),
            vec![Happened::Unhealthy {
                error: "health check failed: connection refused".to_string(),
            }],
        ),
        (
            "a second failed probe tells nothing new",
            Some(record_probe(&probed_running, Err("refused".to_string()))),
            record_probe(
                &record_probe(&probed_running, Err("refused".to_string())),
                Err("refused".to_string()),
            ),
            vec![],
        ),
        (
            "a label change recorded",
            Some(running.clone()),
            record_generation(&running, &desired_for_generation(2)),
            vec![],
        ),
    ];
    for (name, before, after, want) in cases {
        assert_eq!(
            observed_events(before.as_ref(), &after, NOW),
            want,
            "{name}"
        );
    }
}

fn desired_for_generation(generation: u64) -> DesiredRecord {
    DesiredRecord {
        generation,
        ..desired_record(false, 0)
    }
}

/// (name, before, after, the events told).
type DesiredEventsCase = (
    &'static str,
    Option<DesiredRecord>,
    Option<DesiredRecord>,
    Vec<Happened>,
);

#[test]
fn desired_events_table() {
    let base = desired_record(false, 0);
    let with = |change: fn(&mut DesiredRecord)| {
        let mut record = base.clone();
        change(&mut record);
        record
    };
    let cases: Vec<DesiredEventsCase> = vec![
        ("nothing", None, None, vec![]),
        (
            "declared",
            None,
            Some(base.clone()),
            vec![Happened::Declared {
                generation: 1,
                source: Source::Api,
            }],
        ),
        (
            "undeclared",
            Some(base.clone()),
            None,
            vec![Happened::Undeclared],
        ),
        ("unchanged", Some(base.clone()), Some(base.clone()), vec![]),
        (
            "a new spec",
            Some(base.clone()),
            Some(with(|r| r.generation = 2)),
            vec![Happened::SpecChanged { generation: 2 }],
        ),
        (
            "taken over by another source",
            Some(base.clone()),
            Some(with(|r| {
                r.generation = 2;
                r.source = Source::Admin { version: 3 };
            })),
            vec![Happened::Declared {
                generation: 2,
                source: Source::Admin { version: 3 },
            }],
        ),
        (
            "held",
            Some(base.clone()),
            Some(with(|r| r.held = true)),
            vec![Happened::Held],
        ),
        (
            "released",
            Some(with(|r| r.held = true)),
            Some(base.clone()),
            vec![Happened::Released],
        ),
        (
            "restart asked",
            Some(base.clone()),
            Some(with(|r| r.restarts = 1)),
            vec![Happened::RestartRequested],
        ),
        (
            "reset",
            Some(base.clone()),
            Some(with(|r| r.resets = 1)),
            vec![Happened::Reset],
        ),
    ];
    for (name, before, after, want) in cases {
        assert_eq!(
            desired_events(before.as_ref(), after.as_ref()),
            want,
            "{name}"
        );
    }
}

#[test]
fn events_read_as_sentences_and_only_the_last_ones_are_kept() {
    let event = |happened| LifeEvent { at: NOW, happened };
    let sentences = [
        (
            Happened::Stopping {
                reason: StopReason::Held,
                grace: Duration::from_secs(10),
            },
            "stopping (held by the operator): SIGTERM to its process group, SIGKILL after 10s",
        ),
        (
            Happened::Exited {
                pid: 7,
                status: ExitStatus::Signal(15),
            },
            "pid 7 exited with signal SIGTERM",
        ),
        (
            Happened::BackingOff {
                restart_at: after(2_000),
                failures: 3,
            },
            "backing off: restart after failure 3 in a row due in 2s",
        ),
        (
            Happened::Stopped {
                reason: Some(StopReason::Restart),
            },
            "stopped (restarted by the operator)",
        ),
        (
            Happened::Started {
                pid: 8,
                generation: 2,
            },
            "started with pid 8 (generation 2)",
        ),
    ];
    for (happened, sentence) in sentences {
        assert_eq!(event(happened).to_string(), sentence);
    }
    assert_eq!(Happened::RestartRequested.word(), "restart-requested");

    let mut history = Vec::new();
    for n in 0..(MAX_LIFE_EVENTS as u64 + 5) {
        append_events(
            &mut history,
            [LifeEvent {
                at: UnixMillis(n),
                happened: Happened::Killed,
            }],
        );
    }
    assert_eq!(history.len(), MAX_LIFE_EVENTS);
    assert_eq!(history[0].at, UnixMillis(5), "the oldest go first");
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

#[test]
fn label_selectors_table() {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    };
    let storage = labels(&[("team", "storage"), ("tier", "cache")]);
    let web = labels(&[("team", "web")]);
    let none = labels(&[]);
    // (selector, matches storage, web, none)
    let cases = [
        ("team=storage", [true, false, false]),
        ("team==storage", [true, false, false]),
        (" team = storage ", [true, false, false]),
        ("team!=storage", [false, true, true]),
        ("team", [true, true, false]),
        ("!team", [false, false, true]),
        ("team=storage,tier=cache", [true, false, false]),
        ("team,!tier", [false, true, false]),
        ("tier=", [false, false, false]),
    ];
    for (text, want) in cases {
        let selector: LabelSelector = text
            .parse()
            .unwrap_or_else(|error| panic!("{text}: {error}"));
        let got = [&storage, &web, &none].map(|labels| selector.matches(labels));
        assert_eq!(got, want, "{text}");
        let again: LabelSelector = selector.to_string().parse().unwrap();
        assert_eq!(again, selector, "{text} is displayed as it reads");
    }
    for (bad, error) in [
        ("", SelectorError::Empty),
        (
            "team=storage,",
            SelectorError::NoKey {
                selector: "team=storage,".to_string(),
                part: String::new(),
            },
        ),
        (
            "=storage",
            SelectorError::NoKey {
                selector: "=storage".to_string(),
                part: "=storage".to_string(),
            },
        ),
        (
            "team=a b",
            SelectorError::BadValue {
                selector: "team=a b".to_string(),
                value: "a b".to_string(),
            },
        ),
        (
            "te am",
            SelectorError::BadKey {
                selector: "te am".to_string(),
                key: "te am".to_string(),
            },
        ),
    ] {
        assert_eq!(bad.parse::<LabelSelector>(), Err(error), "{bad:?}");
    }
}
