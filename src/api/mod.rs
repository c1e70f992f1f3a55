//! The gRPC surface, and the only code that knows the generated protobuf types: the services
//! (PatternLauncher, ControlPlane, our LauncherAdmin) on the TCP listener and the Unix socket, who
//! may call them (`auth`), the client of our own
//! service that the CLI uses, the client of prism-admin, the one mapping of errors to gRPC
//! statuses, and the wire conversions.

pub mod admin_client;
pub mod auth;
mod blocking;
pub mod client;
pub mod codec;
pub mod context;
pub mod control_plane;
pub mod convert;
mod declare;
pub mod errors;
pub mod launcher_admin;
pub mod logs;
pub mod pattern_launcher;
pub mod proto;
pub mod server;
pub mod tls;
mod waiting;
