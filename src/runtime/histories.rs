//! The events of the processes' lives that `describe` tells: gathered during a pass, written
//! with its records in one batch, and forgotten with the ids they tell of. Forgetting waits
//! until the loop has been quiet for `FORGET_QUIET`: a mass stop would otherwise remove
//! thousands of events between two reaps (about a third of the time a stop of 1000 took,
//! BENCHMARKS.md), while nothing is lost by removing them a moment later.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::supervisor::Supervisor;
use crate::error_chain::Chain;
use crate::reconcile::{Happened, LifeEvent, ProcessId, UnixMillis};

/// How long the loop must have done nothing before the histories of forgotten ids are removed.
const FORGET_QUIET: Duration = Duration::from_millis(200);

/// How many forgotten ids' histories one turn of the loop removes (a few milliseconds at most,
/// so that an exit that comes meanwhile waits no longer).
const FORGET_STEP: usize = 64;

/// The histories the loop has not written or not forgotten yet.
#[derive(Default)]
pub(super) struct Histories {
    /// Events since the last write to the store, by id, in order.
    unsaved: HashMap<ProcessId, Vec<LifeEvent>>,
    /// Ids the loop forgot whose histories are still in the store.
    to_forget: BTreeSet<ProcessId>,
    /// When the loop last had work; forgetting waits for `FORGET_QUIET` after it.
    busy_at: Option<UnixMillis>,
}

impl Histories {
    /// The loop had work at `now`.
    pub(super) fn busy(&mut self, now: UnixMillis) {
        self.busy_at = Some(now);
    }

    /// Whether events wait to be written.
    pub(super) fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.unsaved.shrink_to_fit();
    }
}

impl Supervisor {
    /// Adds events of `id`'s life that happened at `now`, for the next `persist` to write.
    pub(super) fn add_events(&mut self, id: &ProcessId, events: Vec<Happened>, now: UnixMillis) {
        if events.is_empty() {
            return;
        }
        self.histories
            .unsaved
            .entry(id.clone())
            .or_default()
            .extend(
                events
                    .into_iter()
                    .map(|happened| LifeEvent { at: now, happened }),
            );
    }

    /// Whether the loop has forgotten `id` (`supervisor::is_forgotten`): its history goes.
    fn is_forgotten(&self, id: &ProcessId) -> bool {
        super::supervisor::is_forgotten(&self.desired, &self.observed, id)
    }

    /// Writes the events of the pass in ONE batch, flushed with the observed records. A
    /// forgotten id's events are not written (they would go with it) and its history is left for
    /// `forget_quiet_histories`; an id known again whose old history is still there has it
    /// removed in the same batch, before its new events, so that its history starts again as it
    /// would have after an immediate removal. A history that cannot be written is logged and
    /// left: it is what `describe` tells, not what the loop decides by.
    pub(super) fn persist_events(&mut self) {
        let newly_forgotten: Vec<ProcessId> = self
            .unsaved
            .iter()
            .filter(|id| self.is_forgotten(id))
            .cloned()
            .collect();
        self.histories.to_forget.extend(newly_forgotten);
        let mut appended = Vec::with_capacity(self.histories.unsaved.len());
        let mut forgotten_first = Vec::new();
        for (id, events) in std::mem::take(&mut self.histories.unsaved) {
            if self.is_forgotten(&id) {
                self.histories.to_forget.insert(id);
                continue;
            }
            if self.histories.to_forget.remove(&id) {
                forgotten_first.push(id.clone());
            }
            appended.push((id, events));
        }
        if appended.is_empty() && forgotten_first.is_empty() {
            return;
        }
        if let Err(error) = self.store.record_histories(&appended, &forgotten_first) {
            tracing::warn!(error = %Chain(&error), "cannot record the events of the processes' lives");
        }
    }

    /// How long until `forget_quiet_histories` should run: `None` while no history waits to be
    /// forgotten, or while the store is busy (`Store::is_busy`: the loop would wait for it, or
    /// the removal fail; the loop turns again when it is usable, `Event::StoreUsable`).
    pub fn histories_forgotten_in(&self, now: UnixMillis) -> Option<Duration> {
        if self.histories.to_forget.is_empty() || self.store.is_busy() {
            return None;
        }
        let quiet_since = self.histories.busy_at.unwrap_or(now);
        Some(FORGET_QUIET.saturating_sub(now.saturating_duration_since(quiet_since)))
    }

    /// Removes the histories of up to `FORGET_STEP` forgotten ids from the store (not flushed: a
    /// history a crash leaves behind goes at the next start, `forget_stray_histories`). An id
    /// known again meanwhile keeps its history: its next events are written after its removal
    /// (`persist_events`), or it has been written already.
    pub fn forget_quiet_histories(&mut self) {
        let mut step = Vec::with_capacity(FORGET_STEP.min(self.histories.to_forget.len()));
        while step.len() < FORGET_STEP {
            let Some(id) = self.histories.to_forget.pop_first() else {
                break;
            };
            if self.is_forgotten(&id) {
                step.push(id);
            }
        }
        if step.is_empty() {
            return;
        }
        if let Err(error) = self.store.record_histories(&[], &step) {
            tracing::warn!(error = %Chain(&error), ids = step.len(), first = %step[0],
                "cannot forget the histories of forgotten processes; the next start does");
        }
    }

    /// Forgets the histories of the ids neither desired nor observed (at start: ids that lost
    /// their records while no launcher ran, or whose histories a crash left).
    pub fn forget_stray_histories(&self) {
        let known = |id: &ProcessId| !self.is_forgotten(id);
        match self.store.forget_histories_except(known) {
            Ok(0) => {}
            Ok(forgotten) => {
                tracing::debug!(
                    forgotten,
                    "forgot the histories of ids nobody knows any more"
                )
            }
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot forget the histories of forgotten ids")
            }
        }
    }
}
