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

pub use spawn::{child_environment, log_path, PASSED_THROUGH_ENV};
pub use supervisor::{now, run, RuntimeConfig, RuntimeError};
