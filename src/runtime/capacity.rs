//! `--max-processes`: the slots that running (or soon running) processes hold
//! (`reconcile::holds_slot`), and the desired processes left pending until one frees. Only
//! brand-new processes count against the limit; restarts and replacements keep the slot they
//! hold, so capacity never disturbs what runs. A process held down by the operator gives its slot
//! up (and leaves the pending set): its release is a start like a new process's.

use std::collections::BTreeSet;

use crate::reconcile::{holds_slot, ObservedRecord, ProcessId};

#[derive(Debug)]
pub struct Capacity {
    max: Option<usize>,
    slots_in_use: usize,
    pending: BTreeSet<ProcessId>,
}

impl Capacity {
    /// No limit when `max` is `None`.
    pub fn new(max: Option<u32>) -> Capacity {
        Capacity {
            max: max.map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
            slots_in_use: 0,
            pending: BTreeSet::new(),
        }
    }

    /// Counts the slots and pending processes of records read back from the store.
    pub fn recount<'a>(&mut self, observed: impl IntoIterator<Item = &'a ObservedRecord>) {
        self.slots_in_use = 0;
        self.pending.clear();
        for record in observed {
            if holds_slot(record) {
                self.slots_in_use += 1;
            }
            if record.phase == crate::reconcile::Phase::Pending {
                self.pending.insert(record.id.clone());
            }
        }
    }

    /// Follows an observed record changing from `before` to `after` (`None`: no record).
    /// Returns whether a slot was freed, so pending processes deserve another look.
    pub fn record_changed(
        &mut self,
        before: Option<&ObservedRecord>,
        after: Option<&ObservedRecord>,
    ) -> bool {
        match (
            before.is_some_and(holds_slot),
            after.is_some_and(holds_slot),
        ) {
            (false, true) => {
                self.slots_in_use += 1;
                false
            }
            (true, false) => {
                self.slots_in_use = self.slots_in_use.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// Whether starting a process whose current record is `current` would exceed the limit,
    /// with `taken` slots promised already to the earlier starts of the same round (their
    /// records, which hold the slots, are written only once they are spawned).
    pub fn full_for(&self, current: Option<&ObservedRecord>, taken: usize) -> bool {
        let Some(max) = self.max else {
            return false;
        };
        self.takes_slot(current) && self.slots_in_use.saturating_add(taken) >= max
    }

    /// Whether starting a process whose current record is `current` takes a slot: a new one
    /// does, a restart or a replacement keeps the slot it holds.
    pub fn takes_slot(&self, current: Option<&ObservedRecord>) -> bool {
        !current.is_some_and(holds_slot)
    }

    /// The limit (`None`: no limit).
    pub fn max(&self) -> Option<usize> {
        self.max
    }

    pub fn leave_pending(&mut self, id: &ProcessId) {
        self.pending.insert(id.clone());
    }

    pub fn forget_pending(&mut self, id: &ProcessId) {
        self.pending.remove(id);
    }

    /// The processes waiting for a slot.
    pub fn pending(&self) -> impl Iterator<Item = &ProcessId> {
        self.pending.iter()
    }

    #[cfg(test)]
    pub fn slots_in_use(&self) -> usize {
        self.slots_in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{observed_for, spec};
    use crate::reconcile::Phase;

    fn record(name: &str, phase: Phase) -> ObservedRecord {
        observed_for(name, phase, spec())
    }

    #[test]
    fn only_new_processes_count_against_the_limit_and_a_freed_slot_is_reported() {
        let mut capacity = Capacity::new(Some(2));
        let running = record("a", Phase::Running);
        let backing_off = record("b", Phase::BackingOff);
        let tripped = record("c", Phase::Tripped);
        capacity.recount([
            &running,
            &backing_off,
            &tripped,
            &record("d", Phase::Pending),
        ]);
        assert_eq!(
            capacity.slots_in_use(),
            2,
            "running and backing off hold slots"
        );
        assert_eq!(capacity.pending().count(), 1);
        assert!(capacity.full_for(None, 0), "a new process waits");
        assert!(
            capacity.full_for(Some(&tripped), 0),
            "a tripped one holds none"
        );
        assert!(
            !capacity.full_for(Some(&backing_off), 0),
            "a restart keeps its slot"
        );
        let stopped = record("a", Phase::Stopped);
        assert!(!capacity.record_changed(Some(&running), Some(&stopped)));
        assert!(
            capacity.record_changed(Some(&stopped), Some(&tripped)),
            "tripping frees the slot"
        );
        assert_eq!(capacity.slots_in_use(), 1);
        assert!(!capacity.full_for(None, 0));
        assert!(!capacity.record_changed(None, Some(&record("e", Phase::Running))));
        assert!(capacity.full_for(None, 0));
        assert!(capacity.record_changed(Some(&record("e", Phase::Running)), None));
        assert!(!Capacity::new(None).full_for(None, 0), "no limit");
        // Put down for an operator's hold: the slot goes, and a release needs a free one.
        let held_down = crate::reconcile::record_held(&backing_off);
        assert!(capacity.record_changed(Some(&backing_off), Some(&held_down)));
        assert_eq!(capacity.slots_in_use(), 0);
        assert!(!capacity.record_changed(None, Some(&record("f", Phase::Running))));
        assert!(!capacity.record_changed(None, Some(&record("g", Phase::Running))));
        assert!(capacity.full_for(Some(&held_down), 0), "a release waits");
        // Slots promised within a round count as taken.
        let mut round = Capacity::new(Some(3));
        round.recount([&record("a", Phase::Running)]);
        assert!(!round.full_for(None, 1));
        assert!(round.full_for(None, 2), "one running and two promised");
        assert!(
            !round.full_for(Some(&record("a", Phase::Running)), 2),
            "a restart"
        );
        assert!(round.takes_slot(None));
        assert!(!round.takes_slot(Some(&record("a", Phase::BackingOff))));
    }
}
