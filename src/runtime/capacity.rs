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

    /// Whether starting a process whose current record is `current` would exceed the limit.
    pub fn full_for(&self, current: Option<&ObservedRecord>) -> bool {
        let Some(max) = self.max else {
            return false;
        };
        !current.is_some_and(holds_slot) && self.slots_in_use >= max
    }

    /// The limit, for messages.
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
        assert!(capacity.full_for(None), "a new process waits");
        assert!(
            capacity.full_for(Some(&tripped)),
            "a tripped one holds none"
        );
        assert!(
            !capacity.full_for(Some(&backing_off)),
            "a restart keeps its slot"
        );
        let stopped = record("a", Phase::Stopped);
        assert!(!capacity.record_changed(Some(&running), Some(&stopped)));
        assert!(
            capacity.record_changed(Some(&stopped), Some(&tripped)),
            "tripping frees the slot"
        );
        assert_eq!(capacity.slots_in_use(), 1);
        assert!(!capacity.full_for(None));
        assert!(!capacity.record_changed(None, Some(&record("e", Phase::Running))));
        assert!(capacity.full_for(None));
        assert!(capacity.record_changed(Some(&record("e", Phase::Running)), None));
        assert!(!Capacity::new(None).full_for(None), "no limit");
        // Put down for an operator's hold: the slot goes, and a release needs a free one.
        let held_down = crate::reconcile::record_held(&backing_off);
        assert!(capacity.record_changed(Some(&backing_off), Some(&held_down)));
        assert_eq!(capacity.slots_in_use(), 0);
        assert!(!capacity.record_changed(None, Some(&record("f", Phase::Running))));
        assert!(!capacity.record_changed(None, Some(&record("g", Phase::Running))));
        assert!(capacity.full_for(Some(&held_down)), "a release waits");
    }
}
