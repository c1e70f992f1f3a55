//! The `history` tree: the last `MAX_LIFE_EVENTS` events of each id's life, which `describe`
//! tells. One key per event, `<id> NUL <seq>` with `seq` a big-endian u64 that grows by one
//! per event of the id, so an id's events are one contiguous, ordered range of keys (no id
//! contains a NUL): a pass appends an event by inserting one small record, never by reading and
//! rewriting the whole history, and all of a pass's appends and forgets go in ONE sled batch,
//! flushed with the pass's observed records.
//!
//! The next `seq` of each id is kept in memory (`Store::history_next`), found once per id per
//! run with a reverse scan of its range; the event that falls out of the window is removed
//! blindly by its key (`seq - MAX_LIFE_EVENTS`), so an append costs O(its events) whatever the
//! history holds.

use std::collections::{HashMap, HashSet};

use crate::reconcile::{LifeEvent, ProcessId, MAX_LIFE_EVENTS};

use super::{decode, encode, io, Store, StoreError, Trees};

/// `MAX_LIFE_EVENTS` as a distance between sequence numbers.
const WINDOW: u64 = MAX_LIFE_EVENTS as u64;

/// The first bytes of every key of `id`'s events: the id, then a NUL.
pub(super) fn history_prefix(id: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(id.len() + 9);
    prefix.extend_from_slice(id);
    prefix.push(0);
    prefix
}

/// The key of `id`'s event number `seq`.
pub(super) fn history_key(id: &[u8], seq: u64) -> Vec<u8> {
    let mut key = history_prefix(id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number of a key of `prefix`'s range; `None` for a key of another shape.
fn seq_of(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let suffix = key.strip_prefix(prefix)?;
    <[u8; 8]>::try_from(suffix).ok().map(u64::from_be_bytes)
}

/// The key text for messages (ids are ASCII; a NUL and the sequence number are escaped), made
/// only when a message is.
fn key_text(key: &[u8]) -> impl std::fmt::Display + '_ {
    key.escape_ascii()
}

impl Store {
    /// The last events of `id`'s life, oldest first (empty when there are none). An event that
    /// does not decode is left out with a warning rather than hiding the others.
    pub fn history(&self, id: &ProcessId) -> Result<Vec<LifeEvent>, StoreError> {
        let prefix = history_prefix(id.as_str().as_bytes());
        let mut newest_first = self.with_trees(|trees| {
            let mut newest_first = Vec::with_capacity(MAX_LIFE_EVENTS);
            for entry in trees
                .history
                .scan_prefix(&prefix)
                .rev()
                .take(MAX_LIFE_EVENTS)
            {
                let (key, bytes) =
                    entry.map_err(|source| io(format!("reading the history of {id}"), source))?;
                match decode::<LifeEvent>("history", key_text(&key), &bytes) {
                    Ok(event) => newest_first.push(event),
                    Err(error) => {
                        tracing::warn!(%id, error = %crate::error_chain::Chain(&error), "skipping an event of a process's history that does not decode");
                    }
                }
            }
            Ok(newest_first)
        })?;
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Adds each id's `appended` events (in order) to its history, keeping the last
    /// `MAX_LIFE_EVENTS`, and forgets the whole history of each `forgotten` id: all in ONE
    /// batch of the history tree, applied at once or not at all. Not flushed: the loop writes
    /// it with its observed records and flushes once.
    pub fn record_histories(
        &self,
        appended: &[(ProcessId, Vec<LifeEvent>)],
        forgotten: &[ProcessId],
    ) -> Result<(), StoreError> {
        if appended.is_empty() && forgotten.is_empty() {
            return Ok(());
        }
        // Taken before the trees (as everywhere): the map and the tree change together.
        let mut known_next = self.lock_history_next();
        let next_after =
            self.with_trees(|trees| append_and_forget(trees, &known_next, appended, forgotten))?;
        for id in forgotten {
            known_next.remove(id);
        }
        for (id, next) in next_after {
            known_next.insert(id.clone(), next);
        }
        Ok(())
    }

    /// Forgets the histories of the ids `known` says nothing of (at start: ids that lost their
    /// records while no launcher ran). Returns how many ids' histories went. Visits each id's
    /// range once (a seek past it, not a read of its events); not flushed: a history left by a
    /// crash is harmless and goes at the next start. `known` must not call the store.
    pub fn forget_histories_except(
        &self,
        known: impl Fn(&ProcessId) -> bool,
    ) -> Result<usize, StoreError> {
        let forgotten = self.with_trees(|trees| forget_except(trees, known))?;
        let mut known_next = self.lock_history_next();
        for id in &forgotten {
            known_next.remove(id);
        }
        Ok(forgotten.len())
    }

    fn lock_history_next(&self) -> std::sync::MutexGuard<'_, HashMap<ProcessId, u64>> {
        // Each change is one insert or remove after the batch applied, so a panic elsewhere
        // cannot leave the map half-written.
        self.history_next
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `Store::record_histories` on the trees: writes the batch, and returns the next sequence
/// number of each id it appended to, for `known_next` once the batch is applied (so that a
/// failed write leaves no gap that the blind trimming would step over).
fn append_and_forget<'a>(
    trees: &Trees,
    known_next: &HashMap<ProcessId, u64>,
    appended: &'a [(ProcessId, Vec<LifeEvent>)],
    forgotten: &[ProcessId],
) -> Result<HashMap<&'a ProcessId, u64>, StoreError> {
    let mut batch = sled::Batch::default();
    let mut next_after: HashMap<&ProcessId, u64> = HashMap::new();
    let forgotten_here: HashSet<&ProcessId> = forgotten.iter().collect();
    for id in forgotten {
        let prefix = history_prefix(id.as_str().as_bytes());
        for entry in trees.history.scan_prefix(&prefix).keys() {
            let key = entry.map_err(|source| {
                io(format!("listing the history of {id} to forget it"), source)
            })?;
            batch.remove(key);
        }
    }
    for (id, events) in appended {
        if events.is_empty() {
            continue;
        }
        let mut next = match next_after.get(id) {
            Some(next) => *next,
            // Its removals come first in the batch, and these inserts after them win.
            None if forgotten_here.contains(id) => 0,
            None => match known_next.get(id) {
                Some(next) => *next,
                None => next_history_seq(trees, id)?,
            },
        };
        let name = id.as_str().as_bytes();
        for event in events {
            let key = history_key(name, next);
            let bytes = encode("history", key_text(&key), event)?;
            batch.insert(key, bytes);
            if let Some(fallen_out) = next.checked_sub(WINDOW) {
                batch.remove(history_key(name, fallen_out));
            }
            next += 1;
        }
        next_after.insert(id, next);
    }
    trees.history.apply_batch(batch).map_err(|source| {
        let first = |ids: &mut dyn Iterator<Item = &ProcessId>| {
            ids.next()
                .map_or_else(String::new, |id| format!(" (the first: {id})"))
        };
        io(
            format!(
                "writing the events of {} process(es){} and forgetting the histories of {}{}",
                appended.len(),
                first(&mut appended.iter().map(|(id, _)| id)),
                forgotten.len(),
                first(&mut forgotten.iter()),
            ),
            source,
        )
    })?;
    Ok(next_after)
}

/// The sequence number `id`'s next event gets: one past its newest stored event (a reverse
/// scan of its range, once per id per run), 0 for an id with no history.
fn next_history_seq(trees: &Trees, id: &ProcessId) -> Result<u64, StoreError> {
    let prefix = history_prefix(id.as_str().as_bytes());
    for entry in trees.history.scan_prefix(&prefix).keys().rev() {
        let key = entry.map_err(|source| {
            io(
                format!("finding the newest event of the history of {id}"),
                source,
            )
        })?;
        if let Some(seq) = seq_of(&prefix, &key) {
            return Ok(seq.saturating_add(1));
        }
    }
    Ok(0)
}

/// `Store::forget_histories_except` on the trees: returns the ids whose histories went.
fn forget_except(
    trees: &Trees,
    known: impl Fn(&ProcessId) -> bool,
) -> Result<Vec<ProcessId>, StoreError> {
    let mut forgotten = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let Some(entry) = trees.history.range(from.as_slice()..).keys().next() else {
            return Ok(forgotten);
        };
        let key = entry.map_err(|source| io("scanning the history tree", source))?;
        let Some(end) = key.iter().position(|byte| *byte == 0) else {
            // No key of this shape is ever written: remove it, and go on after it.
            trees.history.remove(&key).map_err(|source| {
                io(
                    format!("forgetting the stray history key {}", key_text(&key)),
                    source,
                )
            })?;
            from = history_prefix(&key);
            continue;
        };
        let name = &key[..end];
        let kept = std::str::from_utf8(name)
            .ok()
            .and_then(|name| ProcessId::new(name).ok())
            .is_some_and(|id| known(&id));
        if !kept {
            let prefix = history_prefix(name);
            let mut batch = sled::Batch::default();
            for stray in trees.history.scan_prefix(&prefix).keys() {
                let stray = stray.map_err(|source| {
                    io(
                        format!("listing the stray history of {}", key_text(name)),
                        source,
                    )
                })?;
                batch.remove(stray);
            }
            trees.history.apply_batch(batch).map_err(|source| {
                io(
                    format!("forgetting the stray history of {}", key_text(name)),
                    source,
                )
            })?;
            if let Ok(id) = ProcessId::new(String::from_utf8_lossy(name).into_owned()) {
                forgotten.push(id);
            }
        }
        // The first key after every `<id> NUL ...`: the id followed by a 1.
        from = name.to_vec();
        from.push(1);
    }
}
