//! The memory and CPU use of live processes, sampled on demand (a heartbeat, a scrape) rather
//! than on a timer, so that an idle launcher does nothing. The runtime tells the board which pid
//! each live process has (on spawn and exit only) and provides the sampler that reads /proc;
//! readers sample. Plain shared data, so that the gRPC side and the runtime never import each
//! other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::reconcile::{ProcessId, ProcessRow, UnixMillis};

/// What a process uses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceUsage {
    pub memory_bytes: u64,
    /// Of one CPU, since the previous sample of the same process (0 for the first).
    pub cpu_percent: f32,
}

/// Reads the memory (bytes) of a process (its id and pid) and the CPU time the pid used so far
/// (clock ticks).
pub type Sampler = Arc<dyn Fn(&ProcessId, u32) -> Option<(u64, u64)> + Send + Sync>;

#[derive(Clone)]
pub struct UsageBoard {
    state: Arc<Mutex<BoardState>>,
    sampler: Sampler,
    ticks_per_second: u64,
}

#[derive(Debug, Default)]
struct BoardState {
    live: BTreeMap<ProcessId, u32>,
    /// For each reader and pid: the CPU ticks at the reader's previous sample, when it was taken,
    /// and the percentage it gave. Each reader has its own, so that one reader's samples do not
    /// shorten another's window to nothing.
    previous: HashMap<(Reader, u32), (u64, UnixMillis, f32)>,
}

/// Who samples: each keeps its own window for CPU percentages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reader {
    Heartbeat,
    Status,
    Metrics,
}

/// The shortest window a CPU percentage is measured over: a sample closer than this to the
/// reader's previous one repeats that one's figure (the CPU time is counted in 10 ms ticks, so a
/// short window gives figures from 0 to several hundred percent for a steady load).
const MIN_CPU_WINDOW_MS: u64 = 1_000;

impl std::fmt::Debug for UsageBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageBoard").finish_non_exhaustive()
    }
}

impl Default for UsageBoard {
    /// A board that knows no usage (a sampler that reads nothing).
    fn default() -> UsageBoard {
        UsageBoard::new(Arc::new(|_, _| None), 100)
    }
}

impl UsageBoard {
    pub fn new(sampler: Sampler, ticks_per_second: u64) -> UsageBoard {
        UsageBoard {
            state: Arc::default(),
            sampler,
            ticks_per_second: ticks_per_second.max(1),
        }
    }

    /// `id` now runs as `pid`.
    pub fn track(&self, id: &ProcessId, pid: u32) {
        self.lock().live.insert(id.clone(), pid);
    }

    /// `id` runs no process any more.
    pub fn untrack(&self, id: &ProcessId) {
        let mut state = self.lock();
        if let Some(pid) = state.live.remove(id) {
            state.previous.retain(|(_, sampled), _| *sampled != pid);
        }
    }

    /// The usage of every live process now: O(live processes) reads of /proc, so call it off
    /// the async workers (a blocking task).
    pub fn sample(&self, now: UnixMillis) -> BTreeMap<ProcessId, ResourceUsage> {
        self.sample_where(Reader::Heartbeat, now, |_| true)
    }

    /// The usage of the live processes among `rows` that declare a limit: their use is what the
    /// limit is read against (status, metrics), and sampling every process would make each call
    /// O(processes) reads of /proc.
    pub fn sample_limited(
        &self,
        reader: Reader,
        now: UnixMillis,
        rows: &[ProcessRow],
    ) -> BTreeMap<ProcessId, ResourceUsage> {
        let limited: HashSet<&ProcessId> = rows
            .iter()
            .filter(|row| row.spec().resources.is_some())
            .map(ProcessRow::id)
            .collect();
        self.sample_where(reader, now, |id| limited.contains(id))
    }

    /// The usage of the live processes `wanted` picks (a walk of every live process: for one
    /// id, `sample_one`).
    pub fn sample_where(
        &self,
        reader: Reader,
        now: UnixMillis,
        wanted: impl Fn(&ProcessId) -> bool,
    ) -> BTreeMap<ProcessId, ResourceUsage> {
        let live: Vec<(ProcessId, u32)> = self
            .lock()
            .live
            .iter()
            .filter(|(id, _)| wanted(id))
            .map(|(id, pid)| (id.clone(), *pid))
            .collect();
        self.usage_of(reader, now, live)
    }

    /// The usage of `id`'s process, if it has a live one: one lookup, whatever the number of
    /// live processes (`describe`).
    pub fn sample_one(
        &self,
        reader: Reader,
        now: UnixMillis,
        id: &ProcessId,
    ) -> Option<ResourceUsage> {
        let pid = *self.lock().live.get(id)?;
        self.usage_of(reader, now, vec![(id.clone(), pid)])
            .remove(id)
    }

    /// Samples `live` (ids and their pids) for `reader`: the /proc reads without the lock, then
    /// the CPU percentages against the reader's previous samples.
    fn usage_of(
        &self,
        reader: Reader,
        now: UnixMillis,
        live: Vec<(ProcessId, u32)>,
    ) -> BTreeMap<ProcessId, ResourceUsage> {
        let readings: Vec<(ProcessId, u32, u64, u64)> = live
            .into_iter()
            .filter_map(|(id, pid)| {
                let (memory, ticks) = (self.sampler)(&id, pid)?;
                Some((id, pid, memory, ticks))
            })
            .collect();
        let mut state = self.lock();
        let mut sample = BTreeMap::new();
        for (id, pid, memory_bytes, ticks) in readings {
            let key = (reader, pid);
            let cpu_percent = match state.previous.get(&key) {
                // Too soon after this reader's previous sample: its figure stands, and its window
                // keeps its start.
                Some((_, at, percent)) if now.0.saturating_sub(at.0) < MIN_CPU_WINDOW_MS => {
                    sample.insert(
                        id,
                        ResourceUsage {
                            memory_bytes,
                            cpu_percent: *percent,
                        },
                    );
                    continue;
                }
                Some((before, at, _)) => {
                    let seconds = now.saturating_duration_since(*at).as_secs_f64();
                    let used = ticks.saturating_sub(*before) as f64 / self.ticks_per_second as f64;
                    (used / seconds * 100.0) as f32
                }
                None => 0.0,
            };
            state.previous.insert(key, (ticks, now, cpu_percent));
            sample.insert(
                id,
                ResourceUsage {
                    memory_bytes,
                    cpu_percent,
                },
            );
        }
        sample
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // Every update is one insert or remove, so a panic elsewhere cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A board whose only process, pid 7, uses 4096 bytes and the CPU ticks the test sets (at
    /// 100 ticks a second).
    fn board_of_pid_7() -> (UsageBoard, Arc<Mutex<u64>>) {
        let ticks = Arc::new(Mutex::new(0u64));
        let reading = ticks.clone();
        let board = UsageBoard::new(
            Arc::new(move |_, pid| (pid == 7).then(|| (4096, *reading.lock().unwrap()))),
            100,
        );
        (board, ticks)
    }

    #[test]
    fn each_reader_has_its_own_cpu_window_of_at_least_a_second() {
        let (board, ticks) = board_of_pid_7();
        let id = ProcessId::new("a").unwrap();
        board.track(&id, 7);
        let cpu =
            |reader, at| board.sample_where(reader, UnixMillis(at), |_| true)[&id].cpu_percent;
        assert_eq!(cpu(Reader::Metrics, 0), 0.0);
        assert_eq!(cpu(Reader::Status, 0), 0.0);
        *ticks.lock().unwrap() = 100;
        // A full busy second for both readers, though the metrics sampled in between.
        assert_eq!(cpu(Reader::Metrics, 1_000), 100.0);
        // Too soon after its previous sample: the metrics repeat their figure, not 0 or 1000 %.
        *ticks.lock().unwrap() = 101;
        assert_eq!(cpu(Reader::Metrics, 1_010), 100.0);
        assert_eq!(cpu(Reader::Status, 1_010), 101.0 / 1.01);
    }

    #[test]
    fn usage_is_sampled_on_demand_with_cpu_since_the_previous_sample() {
        let (board, ticks) = board_of_pid_7();
        let id = ProcessId::new("a").unwrap();
        assert!(board.sample(UnixMillis(0)).is_empty());
        board.track(&id, 7);
        assert_eq!(board.sample(UnixMillis(1_000))[&id].cpu_percent, 0.0);
        *ticks.lock().unwrap() = 50;
        let sample = board.sample(UnixMillis(2_000));
        assert_eq!(sample[&id].memory_bytes, 4096);
        assert_eq!(sample[&id].cpu_percent, 50.0, "50 ticks of 100 in a second");
        board.untrack(&id);
        assert!(board.sample(UnixMillis(3_000)).is_empty());
    }

    #[test]
    fn one_process_is_sampled_by_its_id_alone() {
        let sampled = Arc::new(Mutex::new(Vec::new()));
        let seen = sampled.clone();
        let board = UsageBoard::new(
            Arc::new(move |_, pid| {
                seen.lock().unwrap().push(pid);
                Some((u64::from(pid) * 1024, 0))
            }),
            100,
        );
        for (name, pid) in [("a", 7), ("b", 8), ("c", 9)] {
            board.track(&ProcessId::new(name).unwrap(), pid);
        }
        let b = ProcessId::new("b").unwrap();
        let usage = board.sample_one(Reader::Status, UnixMillis(0), &b).unwrap();
        assert_eq!(usage.memory_bytes, 8 * 1024);
        assert_eq!(*sampled.lock().unwrap(), [8], "only b's process is read");
        board.untrack(&b);
        assert_eq!(board.sample_one(Reader::Status, UnixMillis(0), &b), None);
    }
}
