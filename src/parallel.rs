//! Work spread over a few threads when there is enough of it: the bursts the launcher meets (a
//! thousand spawns, a thousand spec files to parse at start) use the cores, one item costs no
//! thread.

use std::sync::{Mutex, OnceLock, PoisonError};

/// `work` applied to every item, in order. From `from` items on, and with at least two cores,
/// the calling thread and one scoped thread per further core (at most four in all) take the
/// items one at a time, each the next one left, so that a slow item (a spawn that waits for a
/// busy core, a large file) holds up no share of the others; below that, the caller does them
/// all. Spread, an item whose work panics (a bug) is left out of the results, which each caller
/// says how it recovers from, and the other items are still done.
pub fn map_in_parallel<T: Send, R: Send>(
    items: Vec<T>,
    from: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    map_on_threads(items, from, threads(), work)
}

/// `map_in_parallel` on `threads` workers, the caller among them.
fn map_on_threads<T: Send, R: Send>(
    items: Vec<T>,
    from: usize,
    threads: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if items.len() < from || threads < 2 {
        return items.into_iter().map(work).collect();
    }
    let count = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(count));
    // Neither lock is held while `work` runs, so no panic can poison one in the middle of an
    // update; a poisoned one is taken as it is.
    let take = || queue.lock().unwrap_or_else(PoisonError::into_inner).next();
    let worker = || {
        while let Some((index, item)) = take() {
            // A panic costs the item it came from; the worker goes on with the next.
            let Ok(result) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)))
            else {
                continue;
            };
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((index, result));
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // A thread the system refuses (at its limit of processes) is one worker fewer: the
            // others, the caller at least, take its share.
            if let Err(error) = std::thread::Builder::new().spawn_scoped(scope, worker) {
                tracing::warn!(%error, "cannot start a thread to share a burst of work; going on with fewer");
                break;
            }
        }
        // The caller is a worker too.
        worker();
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_unstable_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// How many threads a burst is spread over: the cores the launcher may use, at most four. Read
/// once: `available_parallelism` reads the process's cgroup files each time (a millisecond and
/// more on a busy host), which a restart, a spawn of one, must not pay.
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS
        .get_or_init(|| std::thread::available_parallelism().map_or(1, |cores| cores.get().min(4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_the_order_of_the_items_whether_spread_or_not() {
        let items: Vec<u32> = (0..100).collect();
        let expected: Vec<u32> = items.iter().map(|n| n * 2).collect();
        assert_eq!(map_in_parallel(items.clone(), 8, |n| n * 2), expected);
        assert_eq!(map_in_parallel(items, 1000, |n| n * 2), expected);
        assert!(map_in_parallel(Vec::<u32>::new(), 0, |n| n).is_empty());
    }

    /// Spread, an item whose work panics (a bug) loses its own result only, whichever worker
    /// takes it; the rest are done and come in order. (On the caller's own thread, below the
    /// threshold, a panic is the caller's, as any other.)
    #[test]
    fn a_panicking_item_costs_only_its_own_result_when_spread() {
        for threads in [2, 3] {
            let items: Vec<u32> = (0..200).collect();
            let results = map_on_threads(items, 8, threads, |n| {
                assert!(n % 50 != 7, "item {n} stands for a bug");
                n
            });
            let expected: Vec<u32> = (0..200).filter(|n| n % 50 != 7).collect();
            assert_eq!(results, expected, "{threads} workers");
        }
    }

    /// Spread, the caller takes items too, and each item is done once.
    #[test]
    fn the_caller_is_one_of_the_workers_and_each_item_is_done_once() {
        let caller = std::thread::current().id();
        let done_here = std::sync::atomic::AtomicUsize::new(0);
        let items: Vec<u32> = (0..64).collect();
        let results = map_on_threads(items, 8, 2, |n| {
            if std::thread::current().id() == caller {
                done_here.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            // Long enough that the scoped thread cannot take every item before the caller
            // looks at the queue.
            std::thread::sleep(std::time::Duration::from_millis(1));
            n
        });
        assert_eq!(results, (0..64).collect::<Vec<u32>>());
        assert!(done_here.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }
}
