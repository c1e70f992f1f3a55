//! The domain and every decision about it: pure, with no I/O, no clock, no async.
//!
//! `plan(desired, observed, now)` says what must happen; the `record_*` transitions say what the
//! observed record becomes once it happened. Time is always an argument.

mod model;
mod plan;
mod process_types;
#[cfg(test)]
mod tests;

pub use model::*;
pub use plan::*;
pub use process_types::*;
