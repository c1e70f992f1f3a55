//! Work spread over a few threads when there is enough of it: the bursts the launcher meets (a
//! thousand spawns, a thousand spec files to parse at start) use the cores, one item costs no
//! thread, and a burst starts none either: its helpers are long-lived and wait, costing nothing,
//! between bursts.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// `work` applied to every item, in order. From `from` items on, and with at least two cores,
/// the calling thread and the shared pool's helpers (one per further core, at most four
/// workers in all) take the items one at a time, each the next one left, so that a slow item
/// (a spawn that waits for a busy core, a large file) holds up no share of the others; below
/// that, the caller does them all. Spread, an item whose work panics (a bug) is left out of the
/// results, which each caller says how it recovers from, and the other items are still done.
pub fn map_in_parallel<T, R>(
    items: Vec<T>,
    from: usize,
    work: impl Fn(T) -> R + Send + Sync + 'static,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    if items.len() < from {
        return items.into_iter().map(work).collect();
    }
    shared_pool().map(items, work)
}

/// Helpers that take items of a caller's batch beside it. Each waits (blocked, no timer) for a
/// batch to help with; a batch is offered to every helper, and those that come to it before it is
/// done help. Each burst used to start a scoped thread per further core and end it after: a cold
/// start of 1000 spawns in 63 steps, each of which paid a thread's start and end, a fresh stack
/// for its vfork children and pages of a malloc arena to fault in again, about 10 ms of the
/// launcher's 190 ms of CPU (BENCHMARKS.md, ninth section).
struct Pool {
    shared: Arc<PoolShared>,
    helpers: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct PoolShared {
    offers: Mutex<Offers>,
    offered: Condvar,
}

#[derive(Default)]
struct Offers {
    /// Batches to help with, once per helper each.
    waiting: VecDeque<Arc<dyn Help>>,
    /// Set when the pool is dropped: the helpers end.
    closing: bool,
}

/// A batch a helper can take items of.
trait Help: Send + Sync {
    fn help(&self);
}

/// One call's items, results and helpers.
struct Batch<T, R, W> {
    items: Mutex<std::iter::Enumerate<std::vec::IntoIter<T>>>,
    done: Mutex<Vec<(usize, R)>>,
    work: W,
    helping: Mutex<Helping>,
    /// Notified when the last helper leaves a closed batch.
    left: Condvar,
}

#[derive(Default)]
struct Helping {
    /// How many helpers are taking items now.
    active: usize,
    /// The caller is done with the items: no helper joins any more.
    closed: bool,
}

/// Locks `mutex` whatever a panic left in it: no lock here is held while `work` runs, so no
/// panic can leave one in the middle of an update.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Send, R: Send, W: Fn(T) -> R + Send + Sync> Batch<T, R, W> {
    /// Takes the items one at a time until none is left. A panic costs the item it came from.
    fn take_items(&self) {
        loop {
            let next = lock(&self.items).next();
            let Some((index, item)) = next else {
                return;
            };
            let work = std::panic::AssertUnwindSafe(|| (self.work)(item));
            if let Ok(result) = std::panic::catch_unwind(work) {
                lock(&self.done).push((index, result));
            }
        }
    }
}

impl<T: Send, R: Send, W: Fn(T) -> R + Send + Sync> Help for Batch<T, R, W> {
    fn help(&self) {
        {
            let mut helping = lock(&self.helping);
            if helping.closed {
                return;
            }
            helping.active += 1;
        }
        self.take_items();
        let mut helping = lock(&self.helping);
        helping.active -= 1;
        if helping.active == 0 {
            self.left.notify_all();
        }
    }
}

impl Pool {
    /// A pool of up to `helpers` helper threads: fewer when the system refuses one (at its
    /// limit of processes), the caller then taking their share.
    fn new(helpers: usize) -> Pool {
        let shared = Arc::new(PoolShared::default());
        let mut started = Vec::with_capacity(helpers);
        for number in 1..=helpers {
            let for_helper = Arc::clone(&shared);
            match std::thread::Builder::new()
                .name(format!("parallel-{number}"))
                .spawn(move || run_helper(&for_helper))
            {
                Ok(handle) => started.push(handle),
                Err(error) => {
                    tracing::warn!(%error, "cannot start a thread to share bursts of work; going on with fewer");
                    break;
                }
            }
        }
        Pool {
            shared,
            helpers: started,
        }
    }

    /// `work` applied to every item, in order, by the caller and the helpers that come to it.
    fn map<T, R, W>(&self, items: Vec<T>, work: W) -> Vec<R>
    where
        T: Send + 'static,
        R: Send + 'static,
        W: Fn(T) -> R + Send + Sync + 'static,
    {
        let count = items.len();
        let batch = Arc::new(Batch {
            items: Mutex::new(items.into_iter().enumerate()),
            done: Mutex::new(Vec::with_capacity(count)),
            work,
            helping: Mutex::default(),
            left: Condvar::new(),
        });
        if !self.helpers.is_empty() {
            let offer: Arc<dyn Help> = batch.clone();
            let mut offers = lock(&self.shared.offers);
            offers
                .waiting
                .extend(std::iter::repeat_n(offer, self.helpers.len()));
            drop(offers);
            self.shared.offered.notify_all();
        }
        // The caller is a worker too, and finishes the items whether any helper comes or not.
        batch.take_items();
        {
            let mut helping = lock(&batch.helping);
            helping.closed = true;
            // A helper in the batch is on its last item: its result is wanted.
            while helping.active > 0 {
                helping = batch
                    .left
                    .wait(helping)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        // Offers no helper came to yet are withdrawn (a helper that takes one now finds the
        // batch closed anyway).
        let offered: *const () = Arc::as_ptr(&batch).cast();
        lock(&self.shared.offers)
            .waiting
            .retain(|waiting| Arc::as_ptr(waiting).cast::<()>() != offered);
        let mut done = std::mem::take(&mut *lock(&batch.done));
        done.sort_unstable_by_key(|(index, _)| *index);
        done.into_iter().map(|(_, result)| result).collect()
    }
}

/// A helper: takes the offers in turn until the pool closes.
fn run_helper(shared: &PoolShared) {
    loop {
        let offer = {
            let mut offers = lock(&shared.offers);
            loop {
                if offers.closing {
                    return;
                }
                if let Some(offer) = offers.waiting.pop_front() {
                    break offer;
                }
                offers = shared
                    .offered
                    .wait(offers)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        offer.help();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.offers).closing = true;
        self.shared.offered.notify_all();
        for helper in self.helpers.drain(..) {
            // A helper never panics (each item's panic is caught); there is nothing to report.
            let _ = helper.join();
        }
    }
}

/// The pool every burst shares: a helper per core the launcher may use beyond the caller's, at
/// most three, started at the first burst. Read once: `available_parallelism` reads the
/// process's cgroup files each time (a millisecond and more on a busy host).
fn shared_pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get().min(4));
        Pool::new(cores - 1)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn results_come_in_the_order_of_the_items_whether_spread_or_not() {
        let items: Vec<u32> = (0..100).collect();
        let expected: Vec<u32> = items.iter().map(|n| n * 2).collect();
        assert_eq!(map_in_parallel(items.clone(), 8, |n| n * 2), expected);
        assert_eq!(map_in_parallel(items, 1000, |n| n * 2), expected);
        assert!(map_in_parallel(Vec::<u32>::new(), 0, |n| n).is_empty());
        for helpers in [0, 1, 3] {
            let pool = Pool::new(helpers);
            let items: Vec<u32> = (0..100).collect();
            assert_eq!(pool.map(items, |n| n * 2), expected, "{helpers} helpers");
        }
    }

    /// Spread, an item whose work panics (a bug) loses its own result only, whichever worker
    /// takes it; the rest are done and come in order. (On the caller's own thread, below the
    /// threshold, a panic is the caller's, as any other.)
    #[test]
    fn a_panicking_item_costs_only_its_own_result_when_spread() {
        for helpers in [1, 2] {
            let pool = Pool::new(helpers);
            let items: Vec<u32> = (0..200).collect();
            let results = pool.map(items, |n| {
                assert!(n % 50 != 7, "item {n} stands for a bug");
                n
            });
            let expected: Vec<u32> = (0..200).filter(|n| n % 50 != 7).collect();
            assert_eq!(results, expected, "{helpers} helpers");
        }
    }

    /// Spread, the caller takes items too, the helpers as well, and each item is done once.
    #[test]
    fn the_caller_and_the_helpers_share_the_items_and_each_is_done_once() {
        let pool = Pool::new(1);
        let caller = std::thread::current().id();
        let by_caller = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&by_caller);
        let items: Vec<u32> = (0..64).collect();
        let results = pool.map(items, move |n| {
            if std::thread::current().id() == caller {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            // Long enough that neither worker can take every item before the other looks.
            std::thread::sleep(Duration::from_millis(1));
            n
        });
        assert_eq!(results, (0..64).collect::<Vec<u32>>());
        let by_caller = by_caller.load(Ordering::Relaxed);
        assert!(
            by_caller > 0 && by_caller < 64,
            "the caller did {by_caller} of 64"
        );
    }

    /// The helpers outlive a burst: a later burst is helped by the same threads, not new ones
    /// (the cost the pool exists to save).
    #[test]
    fn later_bursts_are_helped_by_the_same_threads() {
        let pool = Pool::new(2);
        let caller = std::thread::current().id();
        let helpers_of = |pool: &Pool| {
            let seen = Arc::new(Mutex::new(HashSet::new()));
            let recorded = Arc::clone(&seen);
            pool.map((0..64).collect::<Vec<u32>>(), move |n| {
                if std::thread::current().id() != caller {
                    lock(&recorded).insert(std::thread::current().id());
                }
                std::thread::sleep(Duration::from_millis(1));
                n
            });
            let seen = lock(&seen).clone();
            seen
        };
        let first = helpers_of(&pool);
        assert!(!first.is_empty(), "no helper took an item");
        let mut all = first.clone();
        for _ in 0..3 {
            all.extend(helpers_of(&pool));
        }
        assert!(
            all.len() <= 2,
            "{} threads helped with four bursts",
            all.len()
        );
    }

    /// Two callers at once (the spawns of a round while spec files are read) share the helpers
    /// and both get all their results; neither waits for the other's items.
    #[test]
    fn two_callers_at_once_both_finish_with_all_their_results() {
        let pool = Arc::new(Pool::new(1));
        let other = Arc::clone(&pool);
        let slow = std::thread::spawn(move || {
            other.map((0..40).collect::<Vec<u32>>(), |n| {
                std::thread::sleep(Duration::from_millis(2));
                n + 1000
            })
        });
        let quick = pool.map((0..400).collect::<Vec<u32>>(), |n| n * 3);
        assert_eq!(quick, (0..400).map(|n| n * 3).collect::<Vec<u32>>());
        let slow = slow.join().unwrap();
        assert_eq!(slow, (0..40).map(|n| n + 1000).collect::<Vec<u32>>());
        // No offer is left behind for a helper once both are done.
        assert!(lock(&pool.shared.offers).waiting.is_empty());
    }
}
