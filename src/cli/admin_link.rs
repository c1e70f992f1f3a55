//! What `status` prints of the link to prism-admin: one line of the link's state under the
//! table, a second one when processes are unconfirmed, and the mark in the source column of an
//! unconfirmed process.

use prism_launcher::api::client::{AdminLinkView, ProcessView};
use prism_launcher::reconcile::AdminLinkState;

use super::client::human_age;

/// The source column's suffix for `process`: a mark on an admin-owned process that
/// prism-admin's last view did not name.
pub(super) fn unconfirmed_mark(process: &ProcessView) -> &'static str {
    if process.unconfirmed {
        " unconfirmed"
    } else {
        ""
    }
}

/// The lines under the status table about prism-admin, at `now` (unix milliseconds); none for
/// a standalone launcher that has never heard of an admin.
pub(super) fn admin_lines(admin: &AdminLinkView, now: i64) -> Vec<String> {
    let state = admin.state.parse::<AdminLinkState>().ok();
    if state.is_none_or(|state| state == AdminLinkState::Standalone) && admin.term.is_none() {
        return Vec::new();
    }
    let ago = |at: i64| human_age(now.saturating_sub(at));
    let endpoint = admin.endpoint.as_deref().unwrap_or("(no --admin-endpoint)");
    let mut facts = Vec::new();
    let since = admin
        .since_unix_ms
        .map(ago)
        .unwrap_or_else(|| "-".to_string());
    facts.push(match state {
        Some(AdminLinkState::Connected) => format!("connected for {since}"),
        Some(AdminLinkState::Connecting) => format!("connecting for {since}"),
        Some(AdminLinkState::Unreachable) => match &admin.last_error {
            Some(error) => format!("unreachable for {since} ({error})"),
            None => format!("unreachable for {since}"),
        },
        Some(AdminLinkState::Standalone) => "standalone".to_string(),
        None => admin.state.clone(),
    });
    facts.push(match admin.last_heartbeat_unix_ms {
        Some(at) => format!("last heartbeat {} ago", ago(at)),
        None => "no heartbeat yet".to_string(),
    });
    facts.push(match admin.registrations {
        1 => "1 registration".to_string(),
        count => format!("{count} registrations"),
    });
    if let Some(term) = admin.term {
        facts.push(format!("term {term}"));
    }
    let mut line = format!("prism-admin {endpoint}: {}", facts.join(", "));
    let down = matches!(
        state,
        Some(AdminLinkState::Unreachable | AdminLinkState::Connecting)
    );
    match (admin.processes_suspended, admin.disconnect_grace_ms, down) {
        (true, grace, _) => line.push_str(&format!(
            "; its processes are stopped (unreachable for longer than {}) until it is back",
            grace.map_or_else(|| "the grace".to_string(), human_age)
        )),
        (false, Some(grace), true) => line.push_str(&format!(
            "; its processes keep running, for {} of it at most",
            human_age(grace)
        )),
        (false, None, true) => line.push_str("; its processes keep running"),
        (false, _, false) => {}
    }
    let mut lines = vec![line];
    if admin.unconfirmed > 0 {
        lines.push(format!(
            "{} admin process{} unconfirmed: prism-admin's last registration answer did not name {} and was not authoritative, so {} kept running",
            admin.unconfirmed,
            if admin.unconfirmed == 1 { " is" } else { "es are" },
            if admin.unconfirmed == 1 { "it" } else { "them" },
            if admin.unconfirmed == 1 { "it is" } else { "they are" },
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(state: &str) -> AdminLinkView {
        AdminLinkView {
            state: state.to_string(),
            endpoint: Some("admin:8981".to_string()),
            since_unix_ms: Some(60_000),
            last_heartbeat_unix_ms: Some(100_000),
            registrations: 2,
            last_error: None,
            term: Some(7),
            disconnect_grace_ms: None,
            processes_suspended: false,
            unconfirmed: 0,
        }
    }

    #[test]
    fn the_admin_line_says_the_state_the_heartbeat_the_registrations_and_what_runs() {
        assert_eq!(
            admin_lines(&link("connected"), 120_000),
            ["prism-admin admin:8981: connected for 1m, last heartbeat 20s ago, 2 registrations, term 7"]
        );
        let down = AdminLinkView {
            last_error: Some("heartbeat failed: deadline".to_string()),
            disconnect_grace_ms: Some(300_000),
            unconfirmed: 2,
            ..link("unreachable")
        };
        assert_eq!(
            admin_lines(&down, 120_000),
            [
                "prism-admin admin:8981: unreachable for 1m (heartbeat failed: deadline), last heartbeat 20s ago, 2 registrations, term 7; its processes keep running, for 5m of it at most",
                "2 admin processes are unconfirmed: prism-admin's last registration answer did not name them and was not authoritative, so they are kept running",
            ]
        );
        let suspended = AdminLinkView {
            processes_suspended: true,
            ..down
        };
        assert!(
            admin_lines(&suspended, 120_000)[0].ends_with(
                "; its processes are stopped (unreachable for longer than 5m) until it is back"
            ),
            "{:?}",
            admin_lines(&suspended, 120_000)
        );
        let standalone = AdminLinkView {
            term: None,
            endpoint: None,
            ..link("standalone")
        };
        assert!(admin_lines(&standalone, 120_000).is_empty());
    }
}
