//! The only code that touches processes, signals, timers, /proc, cgroups and children's files. Runs the
//! reconcile loop on a thread of its own.

mod adoption;
mod capacity;
pub mod cgroup;
mod event_loop;
mod executor;
mod histories;
mod leaves;
pub mod logs;
mod oom;
pub mod pidfd;
pub mod ports;
mod probe;
pub mod procfs;
mod reaper;
mod shutdown;
mod signals;
mod spawn;
mod supervisor;
mod timers;
mod vfork_spawn;

pub use event_loop::{run, RuntimeConfig, RuntimeError, Watchdog, FOLLOW_UP_DELAY};
pub use spawn::log_path;

/// The sampler the usage board reads with (on demand: a status, a scrape, a heartbeat; never
/// per event): the CPU ticks of a pid from /proc, and its memory: in cgroup mode, for a process
/// in its leaf, the leaf's `memory.current` (what `memory.max` is held against: the whole tree
/// the process started, and the page cache it caused); else the pid's resident memory.
pub fn usage_sampler(cgroup_tree: Option<cgroup::CgroupTree>) -> crate::telemetry::Sampler {
    std::sync::Arc::new(move |id, pid| {
        let (resident, ticks) = procfs::usage(pid)?;
        let in_leaf = cgroup_tree
            .as_ref()
            .filter(|tree| tree.holds(id, pid).unwrap_or(false))
            .and_then(|tree| tree.memory_current(id).ok());
        Some((in_leaf.unwrap_or(resident), ticks))
    })
}

/// Clock ticks per second, the unit of the usage sampler's CPU times.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}
