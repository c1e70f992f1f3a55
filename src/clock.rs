//! The launcher's wall clock. `reconcile` never reads it: the loop and the services read it here
//! and pass the reading in, and tests pass their own.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::reconcile::UnixMillis;

/// A clock handed to the parts that stamp times (`status`, metrics, waits), so tests can fix it.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The system clock as a `Clock`.
pub fn system_clock() -> Clock {
    Arc::new(now)
}

/// The current time in Unix milliseconds (0 before 1970, which no host lives in).
pub fn now() -> UnixMillis {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    UnixMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}
