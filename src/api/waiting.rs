//! Waiting for the reconcile loop's outcome: RPCs write desired state, then wake on each flush
//! of observed state (never polling) until what they wait for holds, a deadline passes, or the
//! launcher shuts down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::blocking::{store_call, BlockingStoreError};
use crate::reconcile::{ObservedRecord, ProcessId, ProcessRow, MAX_DURATION};
use crate::store::{Store, StoreError};

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
    let id = id.clone();
    wait_for(
        store,
        stopping,
        timeout,
        move |store| store.observed(&id),
        |observed| done(observed.as_ref()),
    )
    .await
}

/// Waits until `done` holds for the row of `id` (its desired and observed records together;
/// `None` once the loop has forgotten it and nothing desires it), or `timeout` passes; returns
/// the last row seen.
pub async fn wait_for_row(
    store: &Arc<Store>,
    stopping: &watch::Receiver<bool>,
    id: &ProcessId,
    timeout: Duration,
    done: impl Fn(Option<&ProcessRow>) -> bool,
) -> Result<Option<ProcessRow>, WaitError> {
    let id = id.clone();
    wait_for(
        store,
        stopping,
        timeout,
        move |store| store.row(&id),
        |row| done(row.as_ref()),
    )
    .await
}

/// Reads `read` of the store after each flush of observed records until `done` holds of what it
/// read, or `timeout` passes; returns the last value read.
async fn wait_for<T: Send + 'static>(
    store: &Arc<Store>,
    stopping: &watch::Receiver<bool>,
    timeout: Duration,
    read: impl Fn(&Store) -> Result<T, StoreError> + Clone + Send + 'static,
    done: impl Fn(&T) -> bool,
) -> Result<T, WaitError> {
    let mut changes = store.subscribe_observed();
    let mut stopping = stopping.clone();
    let now = tokio::time::Instant::now();
    let deadline = now.checked_add(timeout).unwrap_or(now + MAX_DURATION);
    loop {
        // Marked seen before reading, so that a flush between the read and the wait wakes us.
        changes.borrow_and_update();
        let observed = {
            let (store, read) = (store.clone(), read.clone());
            store_call(move || read(&store)).await?
        };
        if done(&observed) {
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
