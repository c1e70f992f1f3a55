//! prism-admin as a source of desired state, and the link to it: when a registration's set is
//! the admin's whole word (`initial_set_view`) and what it then does to the records the admin
//! owns (`admin_set_changes`: never a removal on partial knowledge), the admin's term that
//! fences a stale admin (`admit_term`), the link's state (`AdminLink`), when a partition stops
//! admin-owned processes (`admin_stop_at`), and the full-jitter delay of the admin client's
//! retries (`RetryBackoff`). Pure: time and randomness are arguments.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::{ProcessId, UnixMillis};

/// The gRPC metadata key of a registration ack that says what its `initial_processes` are.
pub const INITIAL_SET_KEY: &str = "x-prism-initial-set";

/// The gRPC metadata key of the admin's term, on AssignProcess, RevokeProcess and the
/// registration ack.
pub const ADMIN_TERM_KEY: &str = "x-prism-admin-term";

/// What the admin says of the set in its registration ack (`x-prism-initial-set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialSetMarker {
    /// Every process the admin wants on this launcher is in the set.
    Complete,
    /// The set names some of them only.
    Partial,
}

/// What a registration ack's set may be taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminView {
    /// The admin's whole desired set for this launcher: what it does not name goes.
    Authoritative,
    /// Part of it, or nothing said at all: what it does not name is kept, unconfirmed.
    Partial,
}

/// What a registration ack's set of `listed` entries is, given the value of its
/// `x-prism-initial-set` metadata (`None` when absent). A non-empty set is the admin's whole
/// word unless marked `partial`; an empty one only when marked `complete`, since the upstream
/// prism-admin answers every registration with an empty set and would otherwise have every
/// admin-owned process stopped (kubelet's rule: never reap on partial knowledge). A marker that
/// is not one of the known words says the admin meant something this launcher does not
/// understand, so the set is taken as partial.
pub fn initial_set_view(listed: usize, marker: Option<&str>) -> AdminView {
    match marker.map(str::parse::<InitialSetMarker>) {
        Some(Ok(InitialSetMarker::Complete)) => AdminView::Authoritative,
        Some(Ok(InitialSetMarker::Partial) | Err(_)) => AdminView::Partial,
        None if listed > 0 => AdminView::Authoritative,
        None => AdminView::Partial,
    }
}

/// What a registration's set does to the admin-owned records beyond the entries it lists
/// (which are created or updated by version either way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSetChanges {
    /// Admin-owned ids the set does not name, removed: only on an authoritative view.
    pub remove: Vec<ProcessId>,
    /// Admin-owned ids the set does not name, kept and shown unconfirmed until an
    /// authoritative view or an assignment names them. Every other id is confirmed.
    pub unconfirmed: Vec<ProcessId>,
}

/// What a set with the ids `listed`, taken as `view`, does to the ids the admin owns now
/// (`owned`, in order).
pub fn admin_set_changes(
    view: AdminView,
    owned: &[ProcessId],
    listed: &[ProcessId],
) -> AdminSetChanges {
    let listed: HashSet<&ProcessId> = listed.iter().collect();
    let unlisted: Vec<ProcessId> = owned
        .iter()
        .filter(|id| !listed.contains(id))
        .cloned()
        .collect();
    match view {
        AdminView::Authoritative => AdminSetChanges {
            remove: unlisted,
            unconfirmed: Vec::new(),
        },
        AdminView::Partial => AdminSetChanges {
            remove: Vec::new(),
            unconfirmed: unlisted,
        },
    }
}

/// prism-admin's term (an epoch that grows with each leader, as Raft's does): a request from an
/// older term than the newest seen comes from a stale admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdminTerm(pub u64);

impl fmt::Display for AdminTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A request from a term older than the newest one this launcher has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "prism-admin term {offered} is older than term {newest}, the newest this launcher has seen"
)]
pub struct StaleTerm {
    pub offered: AdminTerm,
    pub newest: AdminTerm,
}

/// Whether a request of the admin's `offered` term (`None`: it named none) is admitted when the
/// newest term seen is `newest`; `Ok(Some(term))` when the newest term becomes `term`. A request
/// without a term is admitted and changes nothing (the upstream prism-admin sends none), so
/// fencing holds among admins that send terms.
pub fn admit_term(
    newest: Option<AdminTerm>,
    offered: Option<AdminTerm>,
) -> Result<Option<AdminTerm>, StaleTerm> {
    match (newest, offered) {
        (_, None) => Ok(None),
        (Some(newest), Some(offered)) if offered < newest => Err(StaleTerm { offered, newest }),
        (Some(newest), Some(offered)) if offered == newest => Ok(None),
        (_, Some(offered)) => Ok(Some(offered)),
    }
}

/// The state of the link to prism-admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminLinkState {
    /// No `--admin-endpoint`: the launcher runs on its own.
    Standalone,
    /// Not registered yet in this run, and no attempt has failed yet.
    Connecting,
    /// Registered; heartbeats go through.
    Connected,
    /// A registration or a heartbeat failed (no answer in time, refused, or admin no longer
    /// knows the launcher): registering again.
    Unreachable,
}

/// The link to prism-admin as the admin client last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLink {
    pub state: AdminLinkState,
    /// When the state began. For `Unreachable`, when the link was last up (or the client
    /// started, when it never was in this run): what the disconnect grace counts from.
    pub since: UnixMillis,
    /// When prism-admin last accepted a heartbeat.
    pub last_heartbeat_at: Option<UnixMillis>,
    /// Successful registrations in this run.
    pub registrations: u64,
    /// Why the link went down, while it is.
    pub last_error: Option<String>,
}

impl AdminLink {
    /// A launcher without prism-admin.
    pub fn standalone(now: UnixMillis) -> AdminLink {
        AdminLink {
            state: AdminLinkState::Standalone,
            since: now,
            last_heartbeat_at: None,
            registrations: 0,
            last_error: None,
        }
    }

    /// The admin client starting.
    pub fn connecting(now: UnixMillis) -> AdminLink {
        AdminLink {
            state: AdminLinkState::Connecting,
            ..AdminLink::standalone(now)
        }
    }

    /// A registration succeeded at `now`.
    pub fn registered(&self, now: UnixMillis) -> AdminLink {
        AdminLink {
            state: AdminLinkState::Connected,
            since: now,
            registrations: self.registrations.saturating_add(1),
            last_error: None,
            ..self.clone()
        }
    }

    /// prism-admin accepted a heartbeat at `now`.
    pub fn heartbeat_accepted(&self, now: UnixMillis) -> AdminLink {
        AdminLink {
            last_heartbeat_at: Some(now),
            ..self.clone()
        }
    }

    /// A call failed at `now` with `error`. A link that was up is down from now; one that was
    /// down (or never up) stays down from when it went down.
    pub fn lost(&self, now: UnixMillis, error: String) -> AdminLink {
        let since = match self.state {
            AdminLinkState::Connected | AdminLinkState::Standalone => now,
            AdminLinkState::Connecting | AdminLinkState::Unreachable => self.since,
        };
        AdminLink {
            state: AdminLinkState::Unreachable,
            since,
            last_error: Some(error),
            ..self.clone()
        }
    }

    /// Since when the launcher has been without a registration, while it is.
    pub fn down_since(&self) -> Option<UnixMillis> {
        match self.state {
            AdminLinkState::Connecting | AdminLinkState::Unreachable => Some(self.since),
            AdminLinkState::Connected | AdminLinkState::Standalone => None,
        }
    }
}

/// From when the link to prism-admin counts as down at a launcher's start: now; or, when the last
/// run had stopped admin's processes past the disconnect grace (`suspended_before`: a record
/// stopped for `AdminUnreachable`), a grace earlier, so that they stay stopped until a
/// registration succeeds. A restart during a partition must not start what the grace stopped:
/// admin may have placed it elsewhere meanwhile.
pub fn down_since_at_start(
    now: UnixMillis,
    grace: Option<Duration>,
    suspended_before: bool,
) -> UnixMillis {
    match grace {
        Some(grace) if suspended_before => UnixMillis(
            now.0
                .saturating_sub(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)),
        ),
        _ => now,
    }
}

/// From when the admin-owned processes are stopped because prism-admin has been unreachable for
/// longer than `grace` (`--admin-disconnect-grace`; `None`: never, the default, so that they
/// keep running through a partition, as Nomad and kubelet keep what they were assigned). They
/// start again once a registration succeeds, as its set says.
pub fn admin_stop_at(link: &AdminLink, grace: Option<Duration>) -> Option<UnixMillis> {
    Some(link.down_since()?.saturating_add(grace?))
}

/// The delays between the admin client's attempts: "full jitter" (a uniform draw between zero
/// and a capped exponential), so that a fleet of launchers that lost prism-admin at once does
/// not come back in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    /// The cap of the first delay; it doubles with each attempt...
    pub initial: Duration,
    /// ...up to this.
    pub max: Duration,
}

impl RetryBackoff {
    /// The delay before retry number `attempt` (0 for the first), given `sample`, a random draw
    /// in [0, 1) (clamped into it).
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let doubled = 2u32
            .checked_pow(attempt)
            .and_then(|factor| self.initial.checked_mul(factor))
            .unwrap_or(self.max);
        let cap = doubled.min(self.max);
        let sample = if sample.is_finite() {
            sample.clamp(0.0, 1.0)
        } else {
            0.0
        };
        cap.mul_f64(sample)
    }
}
