//! The sources of desired state that people write: spec files in a watched directory and the
//! pattern catalog, their formats (every error located), the values people write in them
//! (durations, quantities), the debounced directory watch they share, and the problems they
//! report, and the spec directory written for `apply` and `delete`. Nothing here knows gRPC or
//! touches a process: a source only writes desired records to the store (and, for `apply`, spec
//! files to its directory).

pub mod applied;
pub mod catalog;
pub mod catalog_watch;
mod problems;
pub mod spec_dir;
pub mod spec_file;
pub mod values;
mod watch;
pub mod yaml_shape;

pub use problems::SourceProblems;
