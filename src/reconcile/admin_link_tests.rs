//! Table tests of prism-admin as a source: the initial-set rule, the term, the link, the
//! partition rule (and what `plan` and `diff` do under it) and the full-jitter delays.

use std::sync::Arc;
use std::time::Duration;

use super::fixtures::*;
use super::*;

fn ids(names: &[&str]) -> Vec<ProcessId> {
    names.iter().map(|name| id(name)).collect()
}

#[test]
fn an_initial_set_is_authoritative_only_when_non_empty_or_marked_complete() {
    use AdminView::{Authoritative, Partial};
    let cases: [(&str, usize, Option<&str>, AdminView); 8] = [
        ("the upstream admin: empty, unmarked", 0, None, Partial),
        ("non-empty, unmarked", 2, None, Authoritative),
        ("empty, marked complete", 0, Some("complete"), Authoritative),
        (
            "non-empty, marked complete",
            3,
            Some("complete"),
            Authoritative,
        ),
        ("non-empty, marked partial", 3, Some("partial"), Partial),
        ("empty, marked partial", 0, Some("partial"), Partial),
        (
            "an unknown marker is not taken for complete",
            0,
            Some("all"),
            Partial,
        ),
        (
            "nor is a spelling of another case",
            5,
            Some("Complete"),
            Partial,
        ),
    ];
    for (name, listed, marker, want) in cases {
        assert_eq!(initial_set_view(listed, marker), want, "case: {name}");
    }
}

#[test]
fn a_partial_view_removes_nothing_and_leaves_the_unnamed_unconfirmed() {
    let owned = ids(&["a", "b", "c"]);
    let cases = [
        (
            "authoritative: the unnamed go",
            AdminView::Authoritative,
            ids(&["b", "new"]),
            AdminSetChanges {
                remove: ids(&["a", "c"]),
                unconfirmed: vec![],
            },
        ),
        (
            "authoritative and empty (marked complete): everything goes",
            AdminView::Authoritative,
            vec![],
            AdminSetChanges {
                remove: ids(&["a", "b", "c"]),
                unconfirmed: vec![],
            },
        ),
        (
            "partial and empty (the upstream admin): everything kept, unconfirmed",
            AdminView::Partial,
            vec![],
            AdminSetChanges {
                remove: vec![],
                unconfirmed: ids(&["a", "b", "c"]),
            },
        ),
        (
            "partial: the named are confirmed, the others kept unconfirmed",
            AdminView::Partial,
            ids(&["c"]),
            AdminSetChanges {
                remove: vec![],
                unconfirmed: ids(&["a", "b"]),
            },
        ),
        (
            "authoritative naming them all: nothing changes",
            AdminView::Authoritative,
            ids(&["c", "b", "a"]),
            AdminSetChanges::default(),
        ),
    ];
    for (name, view, listed, want) in cases {
        assert_eq!(
            admin_set_changes(view, &owned, &listed),
            want,
            "case: {name}"
        );
    }
    assert_eq!(
        admin_set_changes(AdminView::Authoritative, &[], &ids(&["x"])),
        AdminSetChanges::default(),
        "nothing owned, nothing to do"
    );
}

#[test]
fn a_term_older_than_the_newest_is_refused_and_a_newer_one_becomes_the_newest() {
    let term = |n| Some(AdminTerm(n));
    let cases = [
        ("no term offered, none seen", None, None, Ok(None)),
        (
            "no term offered: admitted, nothing changes",
            term(5),
            None,
            Ok(None),
        ),
        ("the first term seen", None, term(1), Ok(term(1))),
        ("term 0 is a term", None, term(0), Ok(term(0))),
        ("the same term", term(3), term(3), Ok(None)),
        ("a newer term", term(3), term(4), Ok(term(4))),
        (
            "an older term",
            term(3),
            term(2),
            Err(StaleTerm {
                offered: AdminTerm(2),
                newest: AdminTerm(3),
            }),
        ),
    ];
    for (name, newest, offered, want) in cases {
        assert_eq!(admit_term(newest, offered), want, "case: {name}");
    }
    let refused = admit_term(term(7), term(6)).unwrap_err().to_string();
    assert_eq!(
        refused,
        "prism-admin term 6 is older than term 7, the newest this launcher has seen"
    );
}

#[test]
fn the_link_counts_down_time_from_when_it_was_last_up() {
    let start = before(60_000);
    let connecting = AdminLink::connecting(start);
    assert_eq!(connecting.state, AdminLinkState::Connecting);
    assert_eq!(
        connecting.down_since(),
        Some(start),
        "never up: down since the start"
    );

    // A first failure keeps the start: the launcher has been without admin since then.
    let failed = connecting.lost(before(50_000), "connect timed out".to_string());
    assert_eq!(
        (failed.state, failed.since, failed.last_error.as_deref()),
        (
            AdminLinkState::Unreachable,
            start,
            Some("connect timed out")
        )
    );
    let failed_again = failed.lost(before(40_000), "refused".to_string());
    assert_eq!(failed_again.since, start, "still down since the start");
    assert_eq!(failed_again.last_error.as_deref(), Some("refused"));

    let up = failed_again.registered(before(30_000));
    assert_eq!(
        (up.state, up.since, up.registrations, up.last_error.clone()),
        (AdminLinkState::Connected, before(30_000), 1, None)
    );
    assert_eq!(up.down_since(), None);
    let beating = up.heartbeat_accepted(before(20_000));
    assert_eq!(beating.last_heartbeat_at, Some(before(20_000)));

    // Up, then down: down from the failure, the last heartbeat kept.
    let down = beating.lost(before(10_000), "deadline exceeded".to_string());
    assert_eq!(
        (down.state, down.since, down.last_heartbeat_at),
        (
            AdminLinkState::Unreachable,
            before(10_000),
            Some(before(20_000))
        )
    );
    let back = down.registered(NOW);
    assert_eq!((back.registrations, back.since), (2, NOW));
    assert_eq!(AdminLink::standalone(NOW).down_since(), None);
}

#[test]
fn admin_processes_stop_only_past_a_configured_grace() {
    let grace = Some(Duration::from_secs(30));
    let down = AdminLink::connecting(before(60_000)).lost(before(50_000), "x".to_string());
    let cases = [
        ("no grace: never", down.clone(), None, None),
        (
            "down: the grace after it went down (never up: after the start)",
            down.clone(),
            grace,
            Some(before(30_000)),
        ),
        ("connected: never", down.registered(NOW), grace, None),
        ("standalone: never", AdminLink::standalone(NOW), grace, None),
    ];
    for (name, link, grace, want) in cases {
        assert_eq!(admin_stop_at(&link, grace), want, "case: {name}");
    }
}

fn admin_desired(name: &str) -> DesiredRecord {
    DesiredRecord {
        id: id(name),
        spec: Arc::new(spec()),
        generation: 1,
        source: Source::Admin { version: 3 },
        resets: 0,
        held: false,
        restarts: 0,
    }
}

#[test]
fn a_suspended_admin_keeps_its_processes_down_and_others_move_as_ever() {
    let suspended = SourcesRead {
        admin_suspended: true,
        ..SourcesRead::ALL
    };
    let api_desired = DesiredRecord {
        source: Source::Api,
        ..admin_desired("api-new")
    };
    let stopping = ObservedRecord {
        stop_reason: Some(StopReason::AdminUnreachable),
        stop_deadline: Some(after(1_000)),
        ..observed_for("admin-stopping", Phase::Stopping, spec())
    };
    let pairs = [
        (
            Some(admin_desired("admin-running")),
            Some(observed_for("admin-running", Phase::Running, spec())),
        ),
        (Some(admin_desired("admin-new")), None),
        (
            Some(admin_desired("admin-stopped")),
            Some(observed_for("admin-stopped", Phase::Stopped, spec())),
        ),
        (
            Some(admin_desired("admin-backing-off")),
            Some(ObservedRecord {
                next_restart_at: Some(before(1)),
                ..observed_for("admin-backing-off", Phase::BackingOff, spec())
            }),
        ),
        (Some(admin_desired("admin-stopping")), Some(stopping)),
        (Some(api_desired), None),
    ];
    let planned = plan(
        pairs.iter().map(|(d, o)| (d.as_ref(), o.as_ref())),
        NOW,
        suspended,
    );
    assert_eq!(
        planned,
        Plan {
            actions: vec![
                Action::Stop {
                    id: id("admin-running"),
                    reason: StopReason::AdminUnreachable,
                    grace: spec().termination_grace,
                },
                Action::Start {
                    id: id("api-new"),
                    restart: false,
                },
            ],
            wake_at: vec![(id("admin-stopping"), after(1_000))],
        }
    );
    // Admin back: the stopped one starts again, the backing-off one restarts when due, the new
    // one starts.
    let back = plan(
        pairs.iter().map(|(d, o)| (d.as_ref(), o.as_ref())),
        NOW,
        SourcesRead::ALL,
    );
    let kinds: Vec<(String, &str)> = back
        .actions
        .iter()
        .map(|action| (action.id().to_string(), action.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("admin-new".to_string(), "start"),
            ("admin-stopped".to_string(), "start"),
            ("admin-backing-off".to_string(), "restart"),
            ("api-new".to_string(), "start"),
        ]
    );
    // A stop for the partition is a planned stop, not a failure.
    let stopping = ObservedRecord {
        stop_reason: Some(StopReason::AdminUnreachable),
        ..observed_for("admin-stopping", Phase::Stopping, spec())
    };
    let exited = record_exit(
        &stopping,
        ExitStatus::Signal(15),
        &Backoff::default(),
        0.5,
        NOW,
    );
    assert_eq!((exited.phase, exited.error_count), (Phase::Stopped, 0));
}

#[test]
fn status_shows_a_suspended_admin_process_as_held_until_admin_is_back() {
    let suspended = SourcesRead {
        admin_suspended: true,
        ..SourcesRead::ALL
    };
    let running = observed_for("a", Phase::Running, spec());
    let stopped = observed_for("a", Phase::Stopped, spec());
    let cases = [
        ("running: to stop", Some(running.clone()), DiffKind::Stop),
        ("stopped: held", Some(stopped.clone()), DiffKind::Held),
        ("never started: held", None, DiffKind::Held),
    ];
    for (name, observed, want) in cases {
        let diff = diff_under(Some(&admin_desired("a")), observed.as_ref(), NOW, suspended);
        assert_eq!(diff.kind, want, "case: {name}");
        assert!(
            diff.detail.contains("--admin-disconnect-grace"),
            "case: {name}: {}",
            diff.detail
        );
    }
    // Not suspended, the same records differ as ever; other sources are never suspended.
    assert_eq!(
        diff_under(
            Some(&admin_desired("a")),
            Some(&stopped),
            NOW,
            SourcesRead::ALL
        )
        .kind,
        DiffKind::Start
    );
    let api = DesiredRecord {
        source: Source::Api,
        ..admin_desired("a")
    };
    assert_eq!(
        diff_under(Some(&api), Some(&stopped), NOW, suspended).kind,
        DiffKind::Start
    );
}

#[test]
fn retries_wait_a_uniform_draw_below_a_capped_doubling() {
    let backoff = RetryBackoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(30),
    };
    let cases = [
        ("a draw of 0 waits nothing", 0, 0.0, Duration::ZERO),
        (
            "the first attempt: below 250 ms",
            0,
            0.5,
            Duration::from_millis(125),
        ),
        ("doubling", 3, 0.5, Duration::from_millis(1_000)),
        ("capped", 10, 0.5, Duration::from_secs(15)),
        (
            "a huge attempt does not overflow",
            u32::MAX,
            0.5,
            Duration::from_secs(15),
        ),
        (
            "a draw just below 1: just below the cap",
            20,
            0.999,
            Duration::from_millis(29_970),
        ),
        (
            "a draw out of range is clamped",
            0,
            7.0,
            Duration::from_millis(250),
        ),
        ("a NaN draw waits nothing", 0, f64::NAN, Duration::ZERO),
    ];
    for (name, attempt, sample, want) in cases {
        assert_eq!(backoff.delay(attempt, sample), want, "case: {name}");
    }
}

#[test]
fn a_launcher_restarted_after_the_grace_stopped_admins_processes_starts_suspended() {
    let now = UnixMillis(1_000_000);
    let grace = Some(Duration::from_secs(30));
    for (grace, suspended_before, suspended_at_start) in [
        (grace, true, true),
        (grace, false, false),
        (None, true, false),
    ] {
        let since = down_since_at_start(now, grace, suspended_before);
        let link = AdminLink::connecting(since);
        let stop_at = admin_stop_at(&link, grace);
        assert_eq!(
            stop_at.is_some_and(|at| now >= at),
            suspended_at_start,
            "grace {grace:?}, suspended before {suspended_before}"
        );
    }
}
