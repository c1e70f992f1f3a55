//! The domain and every decision about it: pure, with no I/O, no clock, no async, no shared state.
//!
//! `plan(desired, observed, now)` says what must happen; the `record_*` transitions say what the
//! observed record becomes once it happened. Time is always an argument. The vocabulary of the
//! domain (its closed sets and their spellings), what a valid spec is, the rules of a child's
//! environment, the bounds of every input and the projection of a lifecycle into client words are defined here once.
//! So are what an operator's verbs do to a desired record, the events of a process's life that
//! `describe` tells, and label selectors; and prism-admin as a source: when its word is
//! authoritative, its term, the link to it and the partition rule.

mod admin_link;
#[cfg(test)]
mod admin_link_tests;
mod enforcement;
mod environment;
#[cfg(test)]
#[path = "fixtures_tests.rs"]
pub(crate) mod fixtures;
mod history;
mod limits;
mod model;
mod operator;
#[cfg(test)]
mod operator_tests;
mod plan;
mod process_types;
mod rows;
mod selector;
#[cfg(test)]
mod spec_diff_proptests;
mod stopping;
#[cfg(test)]
mod tests;
mod validation;
mod vocabulary;

pub use admin_link::*;
pub use enforcement::*;
pub use environment::*;
pub use history::*;
pub use limits::*;
pub use model::*;
pub use operator::*;
pub use plan::*;
pub use process_types::*;
pub use rows::*;
pub use selector::*;
pub use stopping::*;
pub use validation::*;
pub use vocabulary::*;
