//! The only code that touches processes, signals, timers, /proc and children's files. Runs the
//! reconcile loop.

pub mod logs;
mod oom;
mod pidfd;
pub mod ports;
mod probe;
pub mod procfs;
mod reaper;
mod spawn;
mod supervisor;

pub use spawn::log_path;
pub use supervisor::{run, RuntimeConfig, RuntimeError};
