//! Tests of spec file parsing and validation.
