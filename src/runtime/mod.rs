//! The only code that touches processes, signals, timers, /proc, cgroups and children's files. Runs the
//! reconcile loop on a thread of its own.

mod adoption;
mod capacity;
pub mod cgroup;
mod event_loop;
mod executor;
mod leaves;
pub mod logs;
mod oom;
mod pidfd;
pub mod ports;
mod probe;
pub mod procfs;
mod reaper;
mod shutdown;
mod signals;
mod spawn;
mod supervisor;
mod timers;

pub use event_loop::{run, RuntimeConfig, RuntimeError};
pub use spawn::log_path;

/// The sampler the usage board reads /proc with: resident memory and CPU ticks of a pid.
pub fn usage_sampler() -> crate::telemetry::Sampler {
    std::sync::Arc::new(procfs::usage)
}

/// Clock ticks per second, the unit of the usage sampler's CPU times.
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}
