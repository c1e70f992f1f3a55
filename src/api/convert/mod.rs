//! The wire conversions, in one place (as rust-analyzer keeps `to_proto` and `from_proto`):
//! requests into domain values, domain values into answers. The services stay thin.

pub mod from_proto;
pub mod to_proto;

#[cfg(test)]
mod inputs_tests;
#[cfg(test)]
mod request_proptests;
#[cfg(test)]
mod writers_tests;
