//! The loop's timers: when to look again at an id (a backoff due, a grace period over, a
//! restart the host-wide budget deferred). Plain data, so the loop's waiting is testable with
//! any clock.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::reconcile::{ProcessId, UnixMillis};

#[derive(Debug, Default)]
pub struct Timers {
    due: BTreeSet<(UnixMillis, ProcessId)>,
}

impl Timers {
    /// Looks at `id` again at `at` (a timer already set for the same time is not repeated).
    pub fn insert(&mut self, at: UnixMillis, id: ProcessId) {
        self.due.insert((at, id));
    }

    /// How long until the earliest timer, if any (zero when one is overdue).
    pub fn next_in(&self, now: UnixMillis) -> Option<Duration> {
        self.due
            .first()
            .map(|(at, _)| at.saturating_duration_since(now))
    }

    /// Removes and returns the ids whose timers are due at `now`, earliest first.
    pub fn take_due(&mut self, now: UnixMillis) -> Vec<ProcessId> {
        let mut due = Vec::new();
        while self.due.first().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, id)) = self.due.pop_first() {
                due.push(id);
            }
        }
        due
    }

    /// Keeps only the timers of ids for which `keep` holds, in a set built anew: after a
    /// burst, the timers of ids the loop has forgotten (a grace period set for each of ten
    /// thousand stops) would otherwise live on until they fire, spread over the memory of the
    /// burst. O(timers).
    pub fn retain(&mut self, mut keep: impl FnMut(&ProcessId) -> bool) {
        self.due = std::mem::take(&mut self.due)
            .into_iter()
            .filter(|(_, id)| keep(id))
            .collect();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> ProcessId {
        ProcessId::new(name).unwrap()
    }

    #[test]
    fn timers_fire_in_order_once_and_an_identical_timer_is_not_repeated() {
        let mut timers = Timers::default();
        assert_eq!(timers.next_in(UnixMillis(0)), None);
        timers.insert(UnixMillis(300), id("late"));
        timers.insert(UnixMillis(100), id("early"));
        timers.insert(UnixMillis(100), id("early"));
        timers.insert(UnixMillis(200), id("middle"));
        assert_eq!(timers.len(), 3);
        assert_eq!(
            timers.next_in(UnixMillis(40)),
            Some(Duration::from_millis(60))
        );
        assert_eq!(timers.next_in(UnixMillis(150)), Some(Duration::ZERO));
        assert_eq!(timers.take_due(UnixMillis(99)), Vec::<ProcessId>::new());
        assert_eq!(
            timers.take_due(UnixMillis(200)),
            vec![id("early"), id("middle")]
        );
        assert_eq!(timers.take_due(UnixMillis(200)), Vec::<ProcessId>::new());
        assert_eq!(timers.take_due(UnixMillis(1_000)), vec![id("late")]);
        assert_eq!(timers.next_in(UnixMillis(1_000)), None);
    }

    #[test]
    fn retain_keeps_the_timers_of_the_ids_kept_in_order() {
        let mut timers = Timers::default();
        for (at, name) in [(300, "kept"), (100, "gone"), (200, "kept"), (50, "gone")] {
            timers.insert(UnixMillis(at), id(name));
        }
        timers.retain(|id| id.as_str() == "kept");
        assert_eq!(timers.len(), 2);
        assert_eq!(
            timers.next_in(UnixMillis(0)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            timers.take_due(UnixMillis(1_000)),
            vec![id("kept"), id("kept")]
        );
    }
}
