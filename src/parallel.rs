//! Work spread over a few threads when there is enough of it: the bursts the launcher meets (a
//! thousand spawns, a thousand spec files to parse at start) use the cores, one item costs no
//! thread, and a burst starts none either: its helpers are long-lived and, between bursts,
//! blocked (no CPU, no timer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;

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

/// Helpers that take items of callers' batches beside them. A call puts an offer of its batch
/// in the pool's queue per helper; a helper takes the first offer, does one item of it, and
/// goes on with the same batch unless another offer waits, in which case it puts the offer back
/// at the end and takes the next: two callers at once (a round's spawns while spec files are
/// read) both get help, item by item in turn. Each burst used to start a scoped thread per
/// further core and end it after: a cold start of 1000 spawns in 63 steps, each of which paid a
/// thread's start and end, a fresh stack for its vfork children and pages of a malloc arena to
/// fault in again: 7–16 ms of the launcher's 170–220 ms of CPU (BENCHMARKS.md, ninth section).
struct Pool {
    shared: Arc<PoolShared>,
    /// The helpers running; topped up to `wanted` at each call (a thread the system refused
    /// at its limit of processes is tried again at the next burst).
    helpers: Mutex<Vec<JoinHandle<()>>>,
    wanted: usize,
    /// Whether a refused helper was reported: once per pool, not once per burst.
    refusal_reported: AtomicBool,
}

#[derive(Default)]
struct PoolShared {
    offers: Mutex<Offers>,
    offered: Condvar,
}

#[derive(Default)]
struct Offers {
    /// Offers of batches to help with, a batch's as many times as there were helpers.
    waiting: VecDeque<Arc<dyn Help>>,
    /// Set when the pool is dropped: the helpers end.
    closing: bool,
}

/// A batch a helper can take items of.
trait Help: Send + Sync {
    /// Does one item, unless the batch is closed or has none left: whether it did.
    fn help_with_one(&self) -> bool;
}

/// One call's items, results and helpers.
struct Batch<T, R, W> {
    items: Mutex<std::iter::Enumerate<std::vec::IntoIter<T>>>,
    done: Mutex<Vec<(usize, R)>>,
    work: W,
    helping: Mutex<Helping>,
    /// Notified when the last helper in a batch leaves it.
    left: Condvar,
}

#[derive(Default)]
struct Helping {
    /// How many helpers are doing an item now.
    active: usize,
    /// The caller is done with the items: no helper comes in any more.
    closed: bool,
}

/// Locks `mutex` whatever a panic left in it: no lock here is held while `work` runs, so no
/// panic can leave one in the middle of an update.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Send, R: Send, W: Fn(T) -> R + Send + Sync> Batch<T, R, W> {
    /// Does the next item, if any is left; a panic costs the item it came from.
    fn do_next(&self) -> bool {
        let next = lock(&self.items).next();
        let Some((index, item)) = next else {
            return false;
        };
        let work = std::panic::AssertUnwindSafe(|| (self.work)(item));
        if let Ok(result) = std::panic::catch_unwind(work) {
            lock(&self.done).push((index, result));
        }
        true
    }
}

/// A helper inside a batch: it leaves (and the caller waiting for it hears so) however its item
/// ends.
struct Inside<'a> {
    helping: &'a Mutex<Helping>,
    left: &'a Condvar,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut helping = lock(self.helping);
        helping.active -= 1;
        if helping.active == 0 {
            self.left.notify_all();
        }
    }
}

impl<T: Send, R: Send, W: Fn(T) -> R + Send + Sync> Help for Batch<T, R, W> {
    fn help_with_one(&self) -> bool {
        {
            let mut helping = lock(&self.helping);
            if helping.closed {
                return false;
            }
            helping.active += 1;
        }
        let _inside = Inside {
            helping: &self.helping,
            left: &self.left,
        };
        self.do_next()
    }
}

impl Pool {
    /// A pool of `helpers` helper threads, started now (as many as the system allows).
    fn new(helpers: usize) -> Pool {
        let pool = Pool {
            shared: Arc::new(PoolShared::default()),
            helpers: Mutex::new(Vec::with_capacity(helpers)),
            wanted: helpers,
            refusal_reported: AtomicBool::new(false),
        };
        pool.top_up();
        pool
    }

    /// Starts helpers until `wanted` run; returns how many run. A helper that ended (only a
    /// panic outside any item could end one) is replaced.
    fn top_up(&self) -> usize {
        let mut helpers = lock(&self.helpers);
        helpers.retain(|helper| !helper.is_finished());
        while helpers.len() < self.wanted {
            let shared = Arc::clone(&self.shared);
            match std::thread::Builder::new()
                .name(format!("parallel-{}", helpers.len() + 1))
                .spawn(move || run_helper(&shared))
            {
                Ok(helper) => helpers.push(helper),
                Err(error) => {
                    if !self.refusal_reported.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "cannot start a thread to share bursts of work; going on with fewer, and trying again at the next burst");
                    }
                    break;
                }
            }
        }
        helpers.len()
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
        let helpers = self.top_up();
        if helpers > 0 {
            let offer: Arc<dyn Help> = batch.clone();
            lock(&self.shared.offers)
                .waiting
                .extend(std::iter::repeat_n(offer, helpers));
            self.shared.offered.notify_all();
        }
        // The caller is a worker too, and finishes the items whether any helper comes or not.
        while batch.do_next() {}
        {
            let mut helping = lock(&batch.helping);
            helping.closed = true;
            // A helper still inside is on the batch's last items: their results are wanted.
            while helping.active > 0 {
                helping = batch
                    .left
                    .wait(helping)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        // Offers no helper took are withdrawn (one taken now finds the batch closed anyway).
        let offered: Arc<dyn Help> = batch.clone();
        lock(&self.shared.offers)
            .waiting
            .retain(|waiting| !same_batch(waiting, &offered));
        let mut done = std::mem::take(&mut *lock(&batch.done));
        done.sort_unstable_by_key(|(index, _)| *index);
        done.into_iter().map(|(_, result)| result).collect()
    }
}

/// Whether two offers are of one batch (their data pointers, whatever their vtables).
fn same_batch(one: &Arc<dyn Help>, other: &Arc<dyn Help>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(one), Arc::as_ptr(other))
}

/// A helper: takes offers until the pool closes, one item at a time, taking turns between the
/// batches on offer.
fn run_helper(shared: &PoolShared) {
    let mut offers = lock(&shared.offers);
    loop {
        if offers.closing {
            return;
        }
        let Some(offer) = offers.waiting.pop_front() else {
            offers = shared
                .offered
                .wait(offers)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        drop(offers);
        loop {
            let helped = offer.help_with_one();
            offers = lock(&shared.offers);
            if !helped || offers.closing {
                break;
            }
            if offers
                .waiting
                .front()
                .is_some_and(|next| !same_batch(next, &offer))
            {
                // Another batch waits for help: its turn, this one's after.
                offers.waiting.push_back(offer);
                break;
            }
            drop(offers);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared.offers).closing = true;
        self.shared.offered.notify_all();
        for helper in lock(&self.helpers).drain(..) {
            // A helper's items' panics are caught; there is nothing left to report.
            let _ = helper.join();
        }
    }
}

/// The pool every burst shares: a helper per core the launcher may use beyond the caller's, at
/// most three, started at the first burst. Sized once: `available_parallelism` reads the
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
    use std::sync::atomic::AtomicUsize;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    use super::*;

    /// Long enough for any helper to come on a loaded machine; a test that waits this long has
    /// failed.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// A meeting of `expected` items: each waits until all have come, or the deadline passed.
    /// Items that meet are on as many different workers, since a worker does one item at a time.
    struct Meeting {
        came: Mutex<usize>,
        all_came: Condvar,
        expected: usize,
    }

    impl Meeting {
        fn of(expected: usize) -> Arc<Meeting> {
            Arc::new(Meeting {
                came: Mutex::new(0),
                all_came: Condvar::new(),
                expected,
            })
        }

        /// Whether all came before the deadline.
        fn attend(&self) -> bool {
            let deadline = Instant::now() + DEADLINE;
            let mut came = lock(&self.came);
            *came += 1;
            self.all_came.notify_all();
            while *came < self.expected {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                came = self.all_came.wait_timeout(came, left).unwrap().0;
            }
            true
        }
    }

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

    /// Item 1's result comes in before item 0's: item 0 waits until item 2 begins, which the
    /// worker that did item 1 takes only after it handed item 1's result in. The results still
    /// come in the order of the items.
    #[test]
    fn results_come_in_order_when_a_later_item_finishes_first() {
        let pool = Pool::new(1);
        let third_began = Meeting::of(2);
        let met = Arc::clone(&third_began);
        let results = pool.map((0..32).collect::<Vec<u32>>(), move |n| match n {
            0 | 2 => (n, met.attend()),
            _ => (n, true),
        });
        let order: Vec<u32> = results.iter().map(|(n, _)| *n).collect();
        assert_eq!(order, (0..32).collect::<Vec<u32>>());
        assert!(results[0].1, "item 2 never began beside item 0");
    }

    /// The caller and a helper each take items (two items that meet are on two threads), and
    /// each item is done once.
    #[test]
    fn the_caller_and_a_helper_share_the_items_and_each_is_done_once() {
        let pool = Pool::new(1);
        let meeting = Meeting::of(2);
        let threads = Arc::new(Mutex::new(HashSet::new()));
        let (met, seen) = (Arc::clone(&meeting), Arc::clone(&threads));
        let done = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&done);
        let results = pool.map((0..64).collect::<Vec<u32>>(), move |n| {
            if n < 2 {
                assert!(met.attend(), "item {n} met no other worker");
                lock(&seen).insert(std::thread::current().id());
            }
            counted.fetch_add(1, Ordering::Relaxed);
            n
        });
        assert_eq!(results, (0..64).collect::<Vec<u32>>());
        assert_eq!(done.load(Ordering::Relaxed), 64);
        let threads = lock(&threads);
        assert_eq!(threads.len(), 2);
        assert!(threads.contains(&std::thread::current().id()));
    }

    /// Spread, an item whose work panics on a helper (a bug) loses its own result only; the rest
    /// are done and come in order. (On the caller's own thread, below the threshold, a panic is
    /// the caller's, as any other.)
    #[test]
    fn a_panicking_item_on_a_helper_costs_only_its_own_result() {
        let pool = Pool::new(1);
        let caller = std::thread::current().id();
        let meeting = Meeting::of(2);
        let met = Arc::clone(&meeting);
        let results = pool.map((0..200).collect::<Vec<u32>>(), move |n| {
            if n < 2 && met.attend() {
                assert!(
                    std::thread::current().id() == caller,
                    "item {n} stands for a bug"
                );
            }
            n
        });
        assert_eq!(results.len(), 199, "{results:?}");
        assert!(results.windows(2).all(|pair| pair[0] < pair[1]));
        assert!((2..200).all(|n| results.contains(&n)));
    }

    /// The helper of one burst is the helper of the next: no thread is started per burst.
    #[test]
    fn later_bursts_are_helped_by_the_same_thread() {
        let pool = Pool::new(1);
        let caller = std::thread::current().id();
        let helper_of_a_burst = || -> ThreadId {
            let meeting = Meeting::of(2);
            let helper = Arc::new(Mutex::new(None));
            let (met, seen) = (Arc::clone(&meeting), Arc::clone(&helper));
            pool.map((0..8).collect::<Vec<u32>>(), move |n| {
                if n < 2 {
                    assert!(met.attend(), "item {n} met no other worker");
                    if std::thread::current().id() != caller {
                        *lock(&seen) = Some(std::thread::current().id());
                    }
                }
            });
            let helper = lock(&helper).expect("a helper did an item");
            helper
        };
        let first = helper_of_a_burst();
        for _ in 0..3 {
            assert_eq!(helper_of_a_burst(), first);
        }
    }

    /// Two callers at once share the helper in turns: one with a long burst does not keep it
    /// from the other (whose two items can only meet on two workers).
    #[test]
    fn a_long_burst_does_not_keep_the_helper_from_another_caller() {
        let pool = Arc::new(Pool::new(1));
        let other_done = Arc::new(AtomicBool::new(false));
        let helper_in_long = Arc::new(AtomicBool::new(false));
        let long = {
            let (pool, other_done) = (Arc::clone(&pool), Arc::clone(&other_done));
            let helper_in = Arc::clone(&helper_in_long);
            std::thread::spawn(move || {
                let caller = std::thread::current().id();
                // Without turns, the helper would stay here for the whole burst (20 s).
                pool.map((0..10_000).collect::<Vec<u32>>(), move |n| {
                    if std::thread::current().id() != caller {
                        helper_in.store(true, Ordering::Relaxed);
                    }
                    if !other_done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(4));
                    }
                    n
                })
            })
        };
        // Once the helper is in the long burst.
        let deadline = Instant::now() + DEADLINE;
        while !helper_in_long.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < deadline,
                "the helper never came to the long burst"
            );
            std::thread::yield_now();
        }
        let meeting = Meeting::of(2);
        let met = Arc::clone(&meeting);
        let results = pool.map((0..4).collect::<Vec<u32>>(), move |n| {
            if n < 2 {
                assert!(met.attend(), "item {n} met no other worker");
            }
            n
        });
        other_done.store(true, Ordering::Relaxed);
        assert_eq!(results, (0..4).collect::<Vec<u32>>());
        assert_eq!(long.join().unwrap().len(), 10_000);
    }

    /// A caller whose batch no helper came to (the helper is busy elsewhere) takes its offer
    /// back: nothing of it is left queued.
    #[test]
    fn a_batch_no_helper_came_to_leaves_no_offer_behind() {
        let pool = Arc::new(Pool::new(1));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let both_in = Meeting::of(2);
        let busy = {
            let (pool, both_in) = (Arc::clone(&pool), Arc::clone(&both_in));
            std::thread::spawn(move || {
                // Two items that hold both of that call's workers, the helper among them.
                pool.map(vec![0u32, 1], move |n| {
                    assert!(both_in.attend(), "item {n} met no other worker");
                    let _ = lock(&released).recv_timeout(DEADLINE);
                    n
                })
            })
        };
        let deadline = Instant::now() + DEADLINE;
        while *lock(&both_in.came) < 2 {
            assert!(
                Instant::now() < deadline,
                "the helper never came to the first batch"
            );
            std::thread::yield_now();
        }
        assert_eq!(pool.map(vec![1u32, 2, 3], |n| n + 1), [2, 3, 4]);
        assert!(lock(&pool.shared.offers).waiting.is_empty());
        release.send(()).unwrap();
        release.send(()).unwrap();
        assert_eq!(busy.join().unwrap(), [0, 1]);
    }
}
