//! prism-launcher: a declarative reconciler for the processes of one host.
//!
//! See ARCHITECTURE.md for the codemap. `reconcile` decides, `store` remembers, `runtime` acts on
//! processes, `sources` read what people write, `api` speaks gRPC, `telemetry` counts; `app`
//! wires them together; `private_fs` keeps the data directory private; `systemd` notifies
//! systemd; `random` draws the samples decisions are given; `allocator` is the binary's global
//! allocator.

pub mod allocator;
pub mod api;
pub mod app;
pub mod clock;
pub mod error_chain;
pub mod parallel;
pub mod private_fs;
pub mod random;
pub mod reconcile;
pub mod runtime;
pub mod sources;
pub mod store;
pub mod systemd;
pub mod telemetry;
