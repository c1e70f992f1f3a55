//! Any bytes as the text of a spec file: parsing never panics, and every error names the file.

#![no_main]

mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use prism_launcher::sources::spec_file::parse_spec_text;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/specs/fuzzed.yaml");
    if let Err(errors) = parse_spec_text(path, text, Path::new("/specs"), common::catalog()) {
        for error in errors {
            assert!(
                error.to_string().contains("fuzzed.yaml"),
                "an error that does not name its file: {error}"
            );
        }
    }
});
