//! Any bytes as a LaunchPattern request: decoding and converting it never panics, and what is
//! accepted is a valid spec.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use prism_launcher::api::convert::from_proto::launch_from_request;
use prism_launcher::api::proto::prism::launcher::LaunchRequest;
use prism_launcher::reconcile::Isolation;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = LaunchRequest::decode(data) else {
        return;
    };
    if let Ok((_, spec)) = launch_from_request(&request, common::catalog(), Isolation::None) {
        assert!(
            spec.problems().is_empty(),
            "an accepted launch with problems"
        );
    }
});
