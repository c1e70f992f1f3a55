//! Waiting for the reconcile loop's outcome: RPCs write desired state, then wake on each flush
//! of observed state (never polling) until what they wait for holds, a deadline passes, or the
//! launcher shuts down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::blocking::{store_call, BlockingStoreError};
use crate::reconcile::{ObservedRecord, ProcessId, MAX_DURATION};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("the launcher is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] BlockingStoreError),
}

/// Waits until `done` holds for the observed record of `id`, or `timeout` passes; returns the
/// last record seen.
pub async fn wait_for_observed(
    store: &Arc<Store>,
    stopping: &watch::Receiver<bool>,
    id: &ProcessId,
    timeout: Duration,
    done: impl Fn(Option<&ObservedRecord>) -> bool,
) -> Result<Option<ObservedRecord>, WaitError> {
    let mut changes = store.subscribe_observed();
    let mut stopping = stopping.clone();
    let now = tokio::time::Instant::now();
    let deadline = now.checked_add(timeout).unwrap_or(now + MAX_DURATION);
    loop {
        // Marked seen before reading, so that a flush between the read and the wait wakes us.
        changes.borrow_and_update();
        let observed = {
            let (store, id) = (store.clone(), id.clone());
            store_call(move || store.observed(&id)).await?
        };
        if done(observed.as_ref()) {
            return Ok(observed);
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(observed);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(observed),
            _ = stopping.wait_for(|stop| *stop) => return Err(WaitError::ShuttingDown),
        }
    }
}
