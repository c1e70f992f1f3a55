//! Starting sled's I/O thread pool once, at the first open, on a thread the scheduler runs ahead
//! of the pool's own threads, so that starting it does not cost a few milliseconds of every core.
//!
//! sled 0.34 starts its pool lazily, on the first work handed to it: the thread that hands it
//! starts seven threads, and each of them, as soon as it runs, busy-waits (its `Lazy` spins on an
//! atomic, without yielding) until the last one is started. Those spinners take the cores from
//! the very thread that starts the rest, so on two cores the start took up to 12 ms of both
//! cores, in the middle of a cold start's first spawns (BENCHMARKS.md, "Steps of 64 that yield to
//! a crash, and sled's pool started ahead"). Started here by a thread under `SCHED_FIFO`, which no
//! ordinary thread preempts, with `SCHED_RESET_ON_FORK` so that the pool's threads it starts are
//! ordinary ones, the seven are started back to back and spin only for that long. Where the
//! launcher may not raise a thread (no `CAP_SYS_NICE`, `RLIMIT_RTPRIO` 0), the pool is started
//! the same way at an ordinary priority: at the first open rather than in the middle of other
//! work.
//!
//! This helps the first open of an empty store (a launcher's first start on a host, every cold
//! start of the benchmark): sled opening an existing store reads it through the pool, so there the
//! pool is started by the open itself, at an ordinary priority, before anything else of the
//! launcher runs.

use std::future::Future;
use std::sync::Once;
use std::task::{Context, Waker};

/// Starts sled's I/O pool, once per process: hands it a flush of `db` and leaves the flush to it.
pub(super) fn start_once(db: &sled::Db) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let db = db.clone();
        let starter = std::thread::Builder::new()
            .name("store-pool-start".to_string())
            .spawn(move || {
                let raised = ahead_of_ordinary_threads();
                // The first poll hands the flush to the pool, which sled starts right there;
                // the flush runs there on its own, and its result, of no interest, is dropped.
                let mut flush = std::pin::pin!(db.flush_async());
                let _ = flush.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                raised
            });
        match starter.map(std::thread::JoinHandle::join) {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::debug!(%error, "cannot run the start of the store's I/O pool ahead of other threads; started at an ordinary priority");
            }
            // A thread the system refuses, or one that panicked: the pool starts on first use,
            // as sled does by itself.
            Ok(Err(_)) => tracing::debug!("the thread starting the store's I/O pool panicked"),
            Err(error) => {
                tracing::debug!(%error, "cannot start a thread to start the store's I/O pool")
            }
        }
    });
}

/// Puts the calling thread under `SCHED_FIFO` at the lowest real-time priority, with
/// `SCHED_RESET_ON_FORK` (threads it starts are ordinary). Only the starter thread calls this,
/// and it ends right after.
fn ahead_of_ordinary_threads() -> std::io::Result<()> {
    let lowest = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is the calling thread; `lowest` is a valid sched_param for the call.
    let set = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &lowest)
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
