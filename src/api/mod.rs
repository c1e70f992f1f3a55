//! The only code that knows the generated protobuf types: the gRPC services, and the readers of
//! the files people write (spec files, the pattern catalog) with the watcher of the spec directory.

pub mod admin_client;
pub mod catalog;
pub mod catalog_watch;
pub mod client;
pub mod control_plane;
mod errors;
pub mod http;
pub mod logs;
pub mod pattern_launcher;
mod problems;
pub mod proto;
pub mod server;
pub mod spec_file;
pub mod spec_watch;
pub mod status;
mod values;
mod waiting;

pub use problems::SourceProblems;
pub use values::{parse_duration, parse_memory, MAX_DURATION};
