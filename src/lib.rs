//! prism-launcher: a declarative reconciler for the processes of one host.
//!
//! See ARCHITECTURE.md for the codemap. `reconcile` decides, `store` remembers, `runtime` acts on
//! processes, `api` talks to the outside world; `main` wires them together.

pub mod api;
pub mod error_chain;
pub mod reconcile;
pub mod runtime;
pub mod store;
pub mod telemetry;
