//! Work spread over a few threads when there is enough of it: the bursts the launcher meets (a
//! thousand spawns, a thousand spec files to parse at start) use the cores, one item costs no
//! thread.

use std::sync::OnceLock;

/// `work` applied to every item, in order. From `from` items on, and with at least two cores,
/// the items are split into one chunk per core (at most four) and each chunk runs on a scoped
/// thread; below that, on the caller's thread. A thread only panics on a bug: the results of
/// its chunk are then missing, which each caller says how it recovers from.
pub fn map_in_parallel<T: Send, R: Send>(
    items: Vec<T>,
    from: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if items.len() < from {
        return items.into_iter().map(work).collect();
    }
    let threads = threads();
    if threads < 2 {
        return items.into_iter().map(work).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::new();
    let mut rest = items.into_iter();
    loop {
        let next: Vec<T> = rest.by_ref().take(chunk).collect();
        if next.is_empty() {
            break;
        }
        chunks.push(next);
    }
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(work).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    })
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
}
