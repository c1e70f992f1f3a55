//! Architecture invariants, checked on the source text so that a crossing fails the build:
//! sled only in `store`, protobuf types only in `api`, no I/O or clock in `reconcile`, `api` and
//! `runtime` never import each other, every module opens with a `//!` line, and no `unwrap()` or
//! `expect()` outside tests.

use std::path::{Path, PathBuf};

fn source_files() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, files: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "found the sources");
    files
}

/// The part of a file that is not test code: files named `*tests.rs` are all test code, and a
/// file's own `#[cfg(test)]` module comes last by convention.
fn production_code(path: &Path, text: &str) -> String {
    if path
        .file_name()
        .is_some_and(|name| name.to_string_lossy().ends_with("tests.rs"))
    {
        return String::new();
    }
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn in_module(path: &Path, module: &str) -> bool {
    path.components().any(|part| part.as_os_str() == module)
}

fn violations(forbidden: &[&str], allowed_in: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in source_files() {
        if allowed_in(&path) {
            continue;
        }
        let code = production_code(&path, &text);
        for word in forbidden {
            if code.contains(word) {
                found.push(format!("{} uses {word}", path.display()));
            }
        }
    }
    found
}

#[test]
fn only_store_names_sled() {
    let found = violations(&["sled::", "use sled"], |path| in_module(path, "store"));
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn only_api_names_protobuf_types() {
    // Our generated types live in `api::proto` (packages `prism...`); prometheus's own plain
    // `prometheus::proto` model is not a wire type of ours.
    let found = violations(&["tonic", "prost", "api::proto", "proto::prism"], |path| {
        in_module(path, "api")
    });
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn reconcile_is_pure() {
    let found = violations(
        &[
            "tokio",
            "sled",
            "tonic",
            "std::fs",
            "std::process",
            "std::net",
            "std::env",
            "SystemTime",
            "Instant",
            "crate::store",
            "crate::runtime",
            "crate::api",
        ],
        |path| !in_module(path, "reconcile"),
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn api_and_runtime_never_import_each_other() {
    let api = violations(&["crate::runtime"], |path| !in_module(path, "api"));
    let runtime = violations(&["crate::api"], |path| !in_module(path, "runtime"));
    assert!(
        api.is_empty() && runtime.is_empty(),
        "{api:#?} {runtime:#?}"
    );
}

#[test]
fn every_module_opens_with_a_doc_line() {
    let missing: Vec<String> = source_files()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a //! line: {missing:#?}"
    );
}

#[test]
fn no_unwrap_or_expect_outside_tests() {
    let found = violations(&[".unwrap()", ".expect("], |_| false);
    assert!(found.is_empty(), "{found:#?}");
}
