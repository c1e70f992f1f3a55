//! The decisions about stopping that the runtime used to make itself: which grace period a stop
//! gets, when a later request shortens a stop under way, and when each process is killed while
//! the launcher shuts down.

use std::time::Duration;

use super::model::{ObservedRecord, StopReason, UnixMillis};

/// The grace period of a stop. What a delete asked for (TerminatePattern's grace or `force`,
/// RevokeProcess's timeout) applies to the stop of a process that is no longer desired; every
/// other stop (a replacement, a failed liveness probe, the shutdown) takes its spec's grace.
pub fn stop_grace(
    reason: StopReason,
    spec_grace: Duration,
    requested: Option<Duration>,
) -> Duration {
    match (reason, requested) {
        (StopReason::Undesired, Some(requested)) => requested,
        _ => spec_grace,
    }
}

/// A stop under way after a later request asked for `grace` from `now`: the record with the
/// earlier deadline when the request ends sooner, else `None` (a request never lengthens a
/// stop, and a process that is not stopping has no stop to shorten).
pub fn shorten_stop(
    observed: &ObservedRecord,
    grace: Duration,
    now: UnixMillis,
) -> Option<ObservedRecord> {
    if observed.phase != super::model::Phase::Stopping || observed.killed {
        return None;
    }
    let deadline = now.saturating_add(grace);
    observed
        .stop_deadline
        .is_none_or(|current| deadline < current)
        .then(|| ObservedRecord {
            stop_deadline: Some(deadline),
            ..observed.clone()
        })
}

/// When the processes still alive at shutdown are killed: every one by the longest grace
/// period its spec asks for (even one whose stop began earlier with a longer grace, such as a
/// TerminatePattern), and the launcher gives up waiting `margin` after that, so that shutdown
/// is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSchedule {
    pub kill_all_at: UnixMillis,
    pub give_up_at: UnixMillis,
}

impl ShutdownSchedule {
    /// The schedule for the processes `live`, for a shutdown that began at `started`.
    pub fn new<'a>(
        live: impl IntoIterator<Item = &'a ObservedRecord>,
        started: UnixMillis,
        margin: Duration,
    ) -> ShutdownSchedule {
        let longest_grace = live
            .into_iter()
            .filter(|record| record.phase.has_live_process())
            .map(|record| record.spec.termination_grace)
            .max()
            .unwrap_or(Duration::ZERO);
        let kill_all_at = started.saturating_add(longest_grace);
        ShutdownSchedule {
            kill_all_at,
            give_up_at: kill_all_at.saturating_add(margin),
        }
    }

    /// Whether `observed`, still alive at `now`, must be SIGKILLed: its own grace is over, or
    /// everyone's is. A process killed already is not killed again.
    pub fn kill_due(&self, observed: &ObservedRecord, now: UnixMillis) -> bool {
        observed.phase.has_live_process()
            && !observed.killed
            && (now >= self.kill_all_at || observed.stop_deadline.is_none_or(|at| at <= now))
    }

    /// When the shutdown must look again at `live` if no exit comes first: the next deadline of
    /// a process not killed yet, never later than giving up.
    pub fn next_wake<'a>(&self, live: impl IntoIterator<Item = &'a ObservedRecord>) -> UnixMillis {
        live.into_iter()
            .filter(|record| record.phase.has_live_process() && !record.killed)
            .filter_map(|record| record.stop_deadline)
            .map(|deadline| deadline.min(self.kill_all_at))
            .min()
            .unwrap_or(self.give_up_at)
            .min(self.give_up_at)
    }
}
