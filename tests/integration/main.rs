//! The integration tests: one binary that runs the real `prism-launcher` against real processes.

mod admin;
mod configuration;
mod declarative;
mod harness;
mod hostile_specs;
mod inputs;
mod lifecycle;
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
