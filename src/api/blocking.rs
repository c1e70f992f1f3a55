//! Work that blocks (the store's reads and writes, which may wait for the disk, and reads of
//! /proc) runs on the blocking pool, never on the async workers that serve every RPC: a slow
//! disk delays the call that needs it, not the others.

use crate::store::StoreError;

/// A blocking task that could not finish: it panicked, or the runtime is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("a blocking task of the launcher did not finish: {0}")]
pub struct Interrupted(String);

/// Runs `work` on the blocking pool and waits for it.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Interrupted> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Interrupted(error.to_string()))
}

/// Runs a store operation on the blocking pool.
pub async fn store_call<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, BlockingStoreError> {
    Ok(blocking(work).await??)
}

/// A store operation that failed, or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BlockingStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}
