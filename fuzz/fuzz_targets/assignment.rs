//! Any bytes as a prism-admin assignment: decoding and converting it never panics, and what is
//! accepted is a valid spec.

#![no_main]

mod common;

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use prism_launcher::api::control_plane::AssignmentPolicy;
use prism_launcher::api::convert::from_proto::assignment_spec;
use prism_launcher::api::proto::prism::ProcessAssignment;
use prism_launcher::reconcile::{ProcessType, Vocabulary};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(assignment) = ProcessAssignment::decode(data) else {
        return;
    };
    let policy = AssignmentPolicy {
        launcher_id: "fuzz".to_string(),
        capabilities: ProcessType::ALL.to_vec(),
        max_processes: None,
        allowed_roots: vec![PathBuf::from("/bin"), PathBuf::from("/usr/bin")],
    };
    if let Ok((_, spec)) = assignment_spec(&assignment, &policy, common::catalog()) {
        assert!(
            spec.problems().is_empty(),
            "an accepted assignment with problems"
        );
    }
});
