//! The integration tests: one binary that runs the real `prism-launcher` against real processes.

mod admin;
mod apply_delete;
mod configuration;
mod declarative;
mod harness;
mod hostile_specs;
mod inputs;
mod kill_ours;
mod lifecycle;
mod log_instances;
mod multi_host;
mod observability;
mod operator;
mod operator_verbs;
mod pattern_api;
mod reflection;
mod security;
mod sources;
mod survival;
mod tidy;
