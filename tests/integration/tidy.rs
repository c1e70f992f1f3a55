//! Architecture rules, checked on the source text under `src/` so that a crossing fails the
//! build. What is checked, in production code only (see "test code" below):
//!
//! - only `store` names `sled` (the word, anywhere in the code);
//! - only `api` names gRPC: the words `tonic`, `prost`, `tonic_*`, `prost_*`, and paths through
//!   `api::proto` or `proto::prism` (prometheus's own `prometheus::proto` is fine);
//! - `reconcile` is pure: it names none of `tokio`, `sled`, `tonic`, `SystemTime`, `Instant`,
//!   the shared-state types (`Mutex`, `RwLock`, `Rc`, the `Cell`s, `OnceLock`,
//!   `LazyLock`, `thread_local`, `atomic`, `Atomic*`, `static mut`), no path into `std::fs`,
//!   `std::io` (all of it), `std::process`, `std::net`, `std::env` or `std::thread`, calls none
//!   of the macros `println!`, `eprintln!`, `print!`, `eprint!`, `dbg!`, starts no path with the
//!   crates `tracing`, `log` (logging is output: reconcile returns data), `rand`, `getrandom` or
//!   `fastrand`, and imports nothing else of the crate;
//! - `store`, `runtime`, `api`, `sources` and `telemetry` import of the crate only what
//!   `IMPORT_LAYOUT` lists for them (the glue `app`, `clock`, `random`, `error_chain`, `private_fs`,
//!   `parallel`, `systemd`, `lib` and the binaries may import anything);
//! - every file, test files included, opens with a `//!` line;
//! - there is no `.unwrap()` or `.expect(` call.
//!
//! Each rule is a plain function from one file read as code to the violations in it. A `#[test]`
//! per rule applies it to the real tree, and `every_rule_fires_on_planted_violations` shows, on a
//! small in-memory file set, that each rule finds every violation planted for it and flags
//! nothing else.
//!
//! How a file is read: comments, string literals and char literals are blanked first, so the
//! contents of a comment or a literal are never code: `crate::runtime` in a doc comment,
//! `"println!"` in an error message, a string that happens to spell a path are deliberately not
//! flagged. The rest is split into tokens. `use` declarations are parsed, their brace groups
//! expanded into full paths, and `crate::`, `super::`, `self::` and `prism_launcher::` paths
//! resolved to the module of the library they name; paths written in the code itself
//! (`crate::runtime::now()`) count as well.
//!
//! Test code is left out: each item that a `#[cfg(test)]` attribute annotates (only that item:
//! code after a test module is still checked; an inner `#![cfg(test)]` leaves out the whole
//! file), and each file named `tests.rs` or `*_tests.rs` that some file of the tree declares as a
//! module under `#[cfg(test)]` (`#[cfg(test)] mod tests;`, `#[cfg(test)] mod writers_tests;`,
//! `#[cfg(test)] #[path = "spec_file_tests.rs"] mod tests;`), the declaration resolved to a file
//! as rustc does. A file named like a test file that nothing declares so (`api/contests.rs`, a
//! `mod stray_tests;` without the cfg) is production code. Only the exact `cfg(test)` counts:
//! `cfg(all(test, ...))` is checked as production code, and so are the files of a test module's
//! own submodules.
//!
//! What is not checked: the text of comments and literals (above); what macros expand to (a
//! macro from another crate that prints or locks is not seen, only its name); what a path leads
//! to beyond its name: an area's import is judged by the module path written, not by where a
//! re-exported item is defined, a `use x as y` rename is judged by `x`, a crate renamed in
//! `Cargo.toml` is seen under its new name, and a bare `log::` or `rand::` is taken to be the
//! crate even where it is a child module (write `self::log::` for that); a method that does I/O
//! on a value `reconcile` was handed; `Option::unwrap(x)` written as a function call, and
//! `unwrap_or`, `unwrap_err` and the like; `#[path]` on a production module (a file's module is
//! taken from its place under `src/`); and anything outside `src/` (`tests/`, `benches/`,
//! `build.rs`).

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::Path;

// =================================================================================================
// The layout
// =================================================================================================

/// What each area with a fixed place in the layout may import of the library, besides itself:
/// the list is the rule, so `runtime` importing `app` is a crossing as much as `runtime`
/// importing `api`. `reconcile` (which may import nothing else) is checked by
/// `reconcile_is_pure`. The glue (`app`, `clock`, `random`, `error_chain`, `private_fs`, `parallel`, `systemd`,
/// `lib`) and the binaries may import anything.
const IMPORT_LAYOUT: &[(&str, &[&str])] = &[
    ("store", &["reconcile", "error_chain"]),
    (
        "runtime",
        &[
            "reconcile",
            "store",
            "telemetry",
            "clock",
            "random",
            "error_chain",
            "private_fs",
            "parallel",
            "systemd",
        ],
    ),
    (
        "api",
        &[
            "reconcile",
            "store",
            "sources",
            "telemetry",
            "clock",
            "random",
            "error_chain",
        ],
    ),
    (
        "sources",
        &[
            "reconcile",
            "store",
            "telemetry",
            "clock",
            "error_chain",
            "parallel",
        ],
    ),
    ("telemetry", &["reconcile", "store", "clock", "error_chain"]),
];

/// How a violation names what an area may import.
fn describe_allowed(allowed: &[&str]) -> String {
    if allowed.is_empty() {
        return "which may import nothing else of the crate".to_string();
    }
    let list = allowed
        .iter()
        .map(|area| format!("`{area}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("which may import only {list} of the crate")
}

/// The names that make `reconcile` impure wherever they appear as a word of the code, and why.
/// (Any `Atomic*` type and `static mut` count as shared state too; `std::fs`, `std::io`, ... are
/// in `IMPURE_STD_MODULES`, the output macros in `OUTPUT_MACROS`, and the logging and randomness
/// crates in `IMPURE_CRATES`.)
const IMPURE_IN_RECONCILE: &[(&str, &str)] = &[
    ("tokio", "the async runtime"),
    ("sled", "storage"),
    ("tonic", "gRPC"),
    ("SystemTime", "the clock (time is an argument)"),
    ("Instant", "the clock (time is an argument)"),
    ("Mutex", "shared state"),
    ("RwLock", "shared state"),
    // `Arc` is not here: the records share their immutable `ProcessSpec` through one (one copy
    // per process in memory instead of one per record and per read), and an `Arc` of a value
    // nobody can change is a copy, not shared state; what could make it state (`Mutex`,
    // `RwLock`, the `Cell`s, atomics) stays forbidden.
    ("Rc", "shared state"),
    ("RefCell", "shared state"),
    ("Cell", "shared state"),
    ("UnsafeCell", "shared state"),
    ("OnceCell", "shared state"),
    ("OnceLock", "shared state"),
    ("LazyLock", "shared state"),
    ("thread_local", "shared state"),
    ("atomic", "shared state"),
];

/// The modules of `std` that do I/O (`io` whole: stdin, stdout, files, `Write`) or touch
/// processes, the environment or threads. `reconcile` may name none of them (`std::fmt` is fine).
const IMPURE_STD_MODULES: &[&str] = &["fs", "io", "process", "net", "env", "thread"];

/// The macros that write to stdout or stderr: output, which `reconcile` leaves to its callers.
/// Flagged as a macro call (`println!(`, `dbg![`, `print!{`), not as a bare word, so that a
/// variable named `print` is fine.
const OUTPUT_MACROS: &[&str] = &["println", "eprintln", "print", "eprint", "dbg"];

/// The crates `reconcile` must not use, and why. Flagged where a path starts with the crate
/// (`tracing::info!`, `use log::warn`, `rand::random()`, `use getrandom;`), so that a variable
/// or a method named `log` is fine; a child module that shares a name with one of these must be
/// written `self::log::...`.
const IMPURE_CRATES: &[(&str, &str)] = &[
    (
        "tracing",
        "logging, which is output (reconcile returns what it decided as data)",
    ),
    (
        "log",
        "logging, which is output (reconcile returns what it decided as data)",
    ),
    ("rand", "randomness (a random draw is an argument)"),
    ("getrandom", "randomness (a random draw is an argument)"),
    ("fastrand", "randomness (a random draw is an argument)"),
];

// =================================================================================================
// The rules: each one file (path relative to `src/`, text) to its violations
// =================================================================================================

/// A rule: one file of the tree, read as code (`Code::read`), to the violations in it.
type Rule = fn(&Code) -> Vec<Violation>;

/// Every rule, with the name of the test that applies it to the real tree.
const RULES: &[(&str, Rule)] = &[
    ("only_store_names_sled", sled_outside_store),
    ("only_api_names_grpc_and_proto_types", grpc_outside_api),
    ("reconcile_is_pure", impurities_in_reconcile),
    (
        "modules_import_only_what_the_layout_allows",
        imports_outside_the_layout,
    ),
    ("every_file_opens_with_a_doc_line", missing_doc_line),
    (
        "no_unwrap_or_expect_outside_tests",
        unwrap_or_expect_in_production_code,
    ),
];

/// Rule 1: sled is the store's business; anywhere else it would be a second way to the data.
fn sled_outside_store(code: &Code) -> Vec<Violation> {
    if code.area == "store" {
        return Vec::new();
    }
    let found = code
        .tokens
        .iter()
        .filter(|token| token.text == "sled")
        .map(|token| code.violation(token.line, "names `sled`: only `store` may use sled"))
        .collect();
    sorted_and_unique(found)
}

/// Rule 2: the wire format stays at the edge. Outside `api` no file names the gRPC crates
/// (`tonic`, `prost` and their `tonic_*`/`prost_*` companions) or our generated types
/// (`api::proto`, `proto::prism`). `prometheus::proto` is prometheus's own model, not ours, and is
/// fine (telemetry uses it). The binaries are held to this too: they reach a launcher through
/// `prism_launcher::api::client`.
fn grpc_outside_api(code: &Code) -> Vec<Violation> {
    if code.area == "api" {
        return Vec::new();
    }
    let mut found = Vec::new();
    for token in &code.tokens {
        let word = token.text.as_str();
        let is_grpc_crate = word == "tonic"
            || word == "prost"
            || word.starts_with("tonic_")
            || word.starts_with("prost_");
        if is_grpc_crate {
            found.push(code.violation(
                token.line,
                format!("names `{word}`: only `api` may use gRPC"),
            ));
        }
    }
    for path in &code.paths {
        for pair in path.segments.windows(2) {
            let (first, second) = (pair[0].as_str(), pair[1].as_str());
            if matches!((first, second), ("api", "proto") | ("proto", "prism")) {
                found.push(code.violation(
                    path.line,
                    format!("names `{first}::{second}`: only `api` may use the generated types"),
                ));
            }
        }
    }
    sorted_and_unique(found)
}

/// Rule 3: `reconcile` only decides. It does no I/O and writes no output (no `std::io`, no
/// `println!` or `dbg!`, no logging: what it decided is its return value), reads no clock, draws
/// no random numbers, runs on no async runtime, holds no shared state (a decision is a function
/// of its arguments), and imports nothing else of the crate.
fn impurities_in_reconcile(code: &Code) -> Vec<Violation> {
    if code.area != "reconcile" {
        return Vec::new();
    }
    let word_at = |index: usize| code.tokens.get(index).map(|token| token.text.as_str());
    let mut found = Vec::new();
    for (index, token) in code.tokens.iter().enumerate() {
        let word = token.text.as_str();
        let is_macro_call =
            word_at(index + 1) == Some("!") && matches!(word_at(index + 2), Some("(" | "[" | "{"));
        let why = if let Some((_, why)) = IMPURE_IN_RECONCILE.iter().find(|(name, _)| *name == word)
        {
            *why
        } else if word.starts_with("Atomic")
            || (word == "static" && word_at(index + 1) == Some("mut"))
        {
            "shared state"
        } else if is_macro_call && OUTPUT_MACROS.contains(&word) {
            "output (reconcile returns what it decided as data)"
        } else {
            continue;
        };
        let shown = if is_macro_call && OUTPUT_MACROS.contains(&word) {
            format!("{word}!")
        } else {
            word.to_string()
        };
        found.push(code.violation(
            token.line,
            format!("names `{shown}`, {why}: `reconcile` must stay pure"),
        ));
    }
    for path in &code.paths {
        let Some(first) = path.segments.first() else {
            continue;
        };
        if let Some((name, why)) = IMPURE_CRATES.iter().find(|(name, _)| name == first) {
            found.push(code.violation(
                path.line,
                format!("names `{name}`, {why}: `reconcile` must stay pure"),
            ));
        }
        if let [first, second, ..] = path.segments.as_slice() {
            if first == "std" && IMPURE_STD_MODULES.contains(&second.as_str()) {
                found.push(code.violation(
                    path.line,
                    format!("names `std::{second}`: `reconcile` does no I/O"),
                ));
            }
        }
    }
    found.extend(code.imports_outside(&[]));
    sorted_and_unique(found)
}

/// Rule 4: the areas import each other only as the layout says (`IMPORT_LAYOUT`): `api` and
/// `runtime` never import each other, neither `runtime` nor `telemetry` imports `sources`,
/// `sources` and `telemetry` import neither `api` nor `runtime`, `store` imports only
/// `reconcile` and `error_chain`, and none of them imports `app`.
fn imports_outside_the_layout(code: &Code) -> Vec<Violation> {
    match IMPORT_LAYOUT.iter().find(|(area, _)| *area == code.area) {
        Some((_, allowed)) => sorted_and_unique(code.imports_outside(allowed)),
        None => Vec::new(),
    }
}

/// Rule 5: every file, test files included, opens with a `//!` line saying what it is for.
fn missing_doc_line(code: &Code) -> Vec<Violation> {
    if code.opens_with_doc_line {
        return Vec::new();
    }
    vec![code.violation(1, "does not open with a `//!` line saying what it is for")]
}

/// Rule 6: production code handles its errors; `.unwrap()` and `.expect(` are for tests.
fn unwrap_or_expect_in_production_code(code: &Code) -> Vec<Violation> {
    let word_at = |index: usize| code.tokens.get(index).map(|token| token.text.as_str());
    let mut found = Vec::new();
    for (index, token) in code.tokens.iter().enumerate() {
        if token.text != "." || word_at(index + 2) != Some("(") {
            continue;
        }
        let call = match word_at(index + 1) {
            Some("unwrap") if word_at(index + 3) == Some(")") => ".unwrap()",
            Some("expect") => ".expect(",
            _ => continue,
        };
        found.push(code.violation(
            token.line,
            format!("calls `{call}` outside test code: return or handle the error"),
        ));
    }
    sorted_and_unique(found)
}

// =================================================================================================
// The rules applied to the real tree
// =================================================================================================

/// Every `.rs` file under `src/`, as (path relative to `src/` with `/` separators, text), sorted.
fn source_files() -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative_path = path
                    .strip_prefix(root)
                    .unwrap()
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((relative_path, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    assert!(files.len() > 10, "found the sources");
    files
}

fn assert_tree_obeys(rule: Rule) {
    let violations: Vec<String> = read_tree(&source_files())
        .iter()
        .flat_map(rule)
        .map(|violation| format!("src/{violation}"))
        .collect();
    assert!(
        violations.is_empty(),
        "{} violation(s):\n  {}",
        violations.len(),
        violations.join("\n  ")
    );
}

#[test]
fn only_store_names_sled() {
    assert_tree_obeys(sled_outside_store);
}

#[test]
fn only_api_names_grpc_and_proto_types() {
    assert_tree_obeys(grpc_outside_api);
}

#[test]
fn reconcile_is_pure() {
    assert_tree_obeys(impurities_in_reconcile);
}

#[test]
fn modules_import_only_what_the_layout_allows() {
    assert_tree_obeys(imports_outside_the_layout);
}

#[test]
fn every_file_opens_with_a_doc_line() {
    assert_tree_obeys(missing_doc_line);
}

#[test]
fn no_unwrap_or_expect_outside_tests() {
    assert_tree_obeys(unwrap_or_expect_in_production_code);
}

// =================================================================================================
// Violations
// =================================================================================================

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    /// The file, relative to `src/`.
    path: String,
    line: usize,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// In line order, each violation once (a line may name the same thing twice).
fn sorted_and_unique(mut violations: Vec<Violation>) -> Vec<Violation> {
    violations.sort();
    violations.dedup();
    violations
}

// =================================================================================================
// Reading a file as code
// =================================================================================================

/// One source file read as code: where it sits in the crate, and what its production code says.
struct Code {
    relative_path: String,
    /// Whether the file's first non-blank line is a `//!` line.
    opens_with_doc_line: bool,
    /// The top-level module of the library the file is in (`api`, `store`, `app`, ...), `lib`
    /// for the crate root, or `binary` for `main.rs`, `cli/` and `bin/`.
    area: String,
    /// The tokens of the production code: no comments, no literal contents, no test code.
    tokens: Vec<Token>,
    /// Every path the production code names: each full path of each `use` (groups expanded),
    /// and each `a::b::c` path written in the code.
    paths: Vec<NamedPath>,
}

/// A path the code names, as written (`super::super::runtime::now`).
#[derive(Debug)]
struct NamedPath {
    segments: Vec<String>,
    line: usize,
    /// The module the path is written in: the file's module, plus any inline `mod x { ... }`
    /// around it. `super::` and `self::` start from here.
    module: Vec<String>,
}

#[derive(Clone, Debug)]
struct Token {
    text: String,
    line: usize,
    /// Where the token starts in the file, in chars (blanking keeps every char in its place, so
    /// this is also where it starts in the original text).
    offset: usize,
}

/// Every file of a tree (path relative to `src/`, text) read as code; the files that
/// `#[cfg(test)]` declarations make test code (`test_files`) have no production code.
fn read_tree(files: &[(String, String)]) -> Vec<Code> {
    let test_files = test_files(files);
    files
        .iter()
        .map(|(relative_path, text)| {
            Code::read(relative_path, text, test_files.contains(relative_path))
        })
        .collect()
}

impl Code {
    /// Reads one file; a test file (`is_test_file`) is test code throughout, so none of it is
    /// production code.
    fn read(relative_path: &str, text: &str, is_test_file: bool) -> Code {
        let tokens = if is_test_file {
            Vec::new()
        } else {
            without_test_code(tokenize(&blank_comments_and_literals(text)))
        };
        let paths = named_paths(&tokens, &module_of(relative_path));
        Code {
            relative_path: relative_path.to_string(),
            opens_with_doc_line: text.trim_start().starts_with("//!"),
            area: area_of(relative_path),
            tokens,
            paths,
        }
    }

    fn violation(&self, line: usize, message: impl Into<String>) -> Violation {
        Violation {
            path: self.relative_path.clone(),
            line,
            message: message.into(),
        }
    }

    /// The paths naming a module of the library in another area than `allowed` (or this one).
    fn imports_outside(&self, allowed: &[&str]) -> Vec<Violation> {
        let mut found = Vec::new();
        for path in &self.paths {
            let Some(target) = self.library_path(path) else {
                continue;
            };
            let Some(target_area) = target.first() else {
                continue;
            };
            if *target_area == self.area || allowed.contains(&target_area.as_str()) {
                continue;
            }
            found.push(self.violation(
                path.line,
                format!(
                    "names `crate::{}`, but this is `{}`, {}",
                    target.join("::"),
                    self.area,
                    describe_allowed(allowed)
                ),
            ));
        }
        found
    }

    /// Where in the library `path` leads, written from the crate root (`["runtime", "now"]` for
    /// `crate::runtime::now`), or `None` for a path outside the library: another crate, a
    /// binary's own modules, or a bare name. A bare name is an item in scope (imported by a
    /// `use`, which is checked itself) or a child module, and a child is in the same area as its
    /// parent (except children of `lib.rs`, which is glue and unchecked).
    fn library_path(&self, path: &NamedPath) -> Option<Vec<String>> {
        let (first, rest) = path.segments.split_first()?;
        let in_library = self.area != "binary";
        match first.as_str() {
            "prism_launcher" => Some(rest.to_vec()),
            "crate" if in_library => Some(rest.to_vec()),
            "super" | "self" if in_library => {
                let mut module = path.module.clone();
                let mut remaining = path.segments.as_slice();
                while let Some((head, tail)) = remaining.split_first() {
                    match head.as_str() {
                        // Climbing above the crate root does not compile; nothing to check.
                        "super" => {
                            module.pop()?;
                        }
                        "self" => {}
                        _ => break,
                    }
                    remaining = tail;
                }
                module.extend_from_slice(remaining);
                Some(module)
            }
            _ => None,
        }
    }
}

/// The files that are test code throughout: each file named `tests.rs` or `*_tests.rs` (or
/// `tests/mod.rs`, `*_tests/mod.rs`) that a file of the tree declares as a module under
/// `#[cfg(test)]`: `#[cfg(test)] mod tests;`, `#[cfg(test)] mod writers_tests;`, or
/// `#[cfg(test)] #[path = "spec_file_tests.rs"] mod tests;` (the attributes in any order). A file
/// named like a test file that nothing declares so (`api/contests.rs`, or a `*_tests.rs` declared
/// without `#[cfg(test)]`) is production code. The files of a test module's own submodules are
/// not followed: they are checked as production code.
fn test_files(files: &[(String, String)]) -> BTreeSet<String> {
    let declared: BTreeSet<String> = files
        .iter()
        .flat_map(|(relative_path, text)| cfg_test_module_files(relative_path, text))
        .collect();
    files
        .iter()
        .map(|(relative_path, _)| relative_path)
        .filter(|relative_path| {
            declared.contains(*relative_path) && is_named_as_tests(relative_path)
        })
        .cloned()
        .collect()
}

/// Whether a file is named as test code: `tests.rs`, `*_tests.rs`, or `mod.rs` in a folder so
/// named.
fn is_named_as_tests(relative_path: &str) -> bool {
    let mut parts = relative_path.rsplit('/');
    let file = parts.next().unwrap_or_default();
    let name = match file.strip_suffix(".rs") {
        Some("mod") => parts.next().unwrap_or_default(),
        Some(stem) => stem,
        None => return false,
    };
    name == "tests" || name.ends_with("_tests")
}

/// The files (relative to `src/`) where the modules this file declares under `#[cfg(test)]`
/// without a body (`mod name;`) may be: `name.rs` and `name/mod.rs` in the file's module folder,
/// or the file a `#[path = "..."]` attribute names.
fn cfg_test_module_files(relative_path: &str, text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let tokens = tokenize(&blank_comments_and_literals(text));
    let inline_modules = inline_modules(&tokens);
    let word_at = |index: usize| tokens.get(index).map(|token| token.text.as_str());
    let mut files = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        // A run of outer attributes, then the item they annotate.
        let mut attributes = Vec::new();
        let mut item = index;
        while let Some(after) = attribute_end(&tokens, item) {
            if word_at(item + 1) == Some("!") {
                break;
            }
            attributes.push(&tokens[item..after]);
            item = after;
        }
        if attributes.is_empty() {
            index += 1;
            continue;
        }
        index = item;
        // `pub`, `pub(crate)`, `pub(in path)`.
        if word_at(item) == Some("pub") {
            item += 1;
            if word_at(item) == Some("(") {
                item = matching_close(&tokens, item) + 1;
            }
        }
        let declares_file = word_at(item) == Some("mod")
            && word_at(item + 1).is_some_and(is_identifier)
            && word_at(item + 2) == Some(";");
        if !declares_file || !attributes.iter().any(|attribute| is_cfg_test(attribute)) {
            continue;
        }
        let name = &tokens[item + 1].text;
        let inline_path: Vec<&str> = inline_modules
            .iter()
            .filter(|(body, _)| body.contains(&item))
            .map(|(_, name)| name.as_str())
            .collect();
        let path_attribute = attributes
            .iter()
            .find_map(|attribute| path_attribute(attribute, &chars));
        files.extend(module_files(
            relative_path,
            &inline_path,
            name,
            path_attribute.as_deref(),
        ));
    }
    files
}

/// The file a `#[path = "..."]` attribute names, read from the original text (the literal is
/// blank in the tokens).
fn path_attribute(attribute: &[Token], chars: &[char]) -> Option<String> {
    let [hash, open, path, equals, literal, close] = attribute else {
        return None;
    };
    let shape = [
        &hash.text,
        &open.text,
        &path.text,
        &equals.text,
        &close.text,
    ];
    if shape != ["#", "[", "path", "=", "]"] || !literal.text.starts_with('"') {
        return None;
    }
    let written: String = chars
        .get(literal.offset..literal.offset + literal.text.chars().count())?
        .iter()
        .collect();
    let (_, after_open) = written.split_once('"')?;
    let (contents, _) = after_open.rsplit_once('"')?;
    Some(contents.to_string())
}

/// Where the module `name`, declared without a body in `relative_path` (inside the inline
/// modules `inline_path`), may be, as rustc looks for it: `name.rs` or `name/mod.rs` in the
/// declaring module's folder (the file's own folder for `mod.rs` and crate roots, a folder named
/// after the file otherwise, then a folder per inline module); with `#[path]`, that path taken
/// from the file's own folder (or, inside inline modules, from the module folder).
fn module_files(
    relative_path: &str,
    inline_path: &[&str],
    name: &str,
    path_attribute: Option<&str>,
) -> Vec<String> {
    let (folder, file) = relative_path
        .rsplit_once('/')
        .unwrap_or(("", relative_path));
    let stem = file.strip_suffix(".rs").unwrap_or(file);
    let is_mod_rs = stem == "mod" || module_of(relative_path).is_empty();
    let mut module_folder: Vec<&str> = folder.split('/').filter(|part| !part.is_empty()).collect();
    if !is_mod_rs {
        module_folder.push(stem);
    }
    module_folder.extend_from_slice(inline_path);
    let candidates = match path_attribute {
        Some(path) if inline_path.is_empty() => vec![format!("{folder}/{path}")],
        Some(path) => vec![format!("{}/{path}", module_folder.join("/"))],
        None => vec![
            format!("{}/{name}.rs", module_folder.join("/")),
            format!("{}/{name}/mod.rs", module_folder.join("/")),
        ],
    };
    candidates.iter().map(|path| normalized(path)).collect()
}

/// A relative path with its empty and `.` parts dropped and each `..` applied.
fn normalized(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// The files of the binaries: `main.rs`, `cli/` and `bin/`. In them `crate::` is the binary,
/// and the library is `prism_launcher::`.
fn is_binary_file(relative_path: &str) -> bool {
    relative_path == "main.rs"
        || relative_path.starts_with("cli/")
        || relative_path.starts_with("bin/")
}

/// The top-level module of the library a file is in (`api/server.rs` and `api/mod.rs` are in
/// `api`, `app.rs` is `app`), `lib` for `lib.rs`, or `binary`.
fn area_of(relative_path: &str) -> String {
    if is_binary_file(relative_path) {
        return "binary".to_string();
    }
    let first = relative_path.split('/').next().unwrap_or_default();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// The module a file is, from its place under `src/`: `api/convert/to_proto.rs` is
/// `api::convert::to_proto`, `api/convert/mod.rs` is `api::convert`, and `lib.rs`, `main.rs`
/// and each `bin/x.rs` (or `bin/x/main.rs`) are the root of their crate. (A `#[path]` attribute
/// on a production `mod` would move a module; the layout has none.)
fn module_of(relative_path: &str) -> Vec<String> {
    let without_extension = relative_path.strip_suffix(".rs").unwrap_or(relative_path);
    let mut parts: Vec<&str> = without_extension.split('/').collect();
    if parts.first() == Some(&"bin") {
        parts.remove(0);
        // `bin/x.rs` is a crate root; `bin/x/y.rs` is module `y` of binary `x`.
        if parts.len() == 1 {
            parts.clear();
        } else {
            parts.remove(0);
        }
    }
    if parts.last() == Some(&"mod") || parts == ["lib"] || parts == ["main"] {
        parts.pop();
    }
    parts.into_iter().map(String::from).collect()
}

/// The text with comments (line, doc and nested block comments) and the contents of string and
/// char literals (plain, byte, C and raw strings) replaced by spaces. Line breaks stay, so line
/// numbers still match the file; a string keeps its quotes so that it remains one token.
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let blank = |blanked: &mut String, range: Range<usize>| {
        for &c in &chars[range] {
            blanked.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    let mut blanked = String::with_capacity(text.len());
    let mut index = 0;
    while index < chars.len() {
        let next = chars.get(index + 1).copied();
        let end = if chars[index] == '/' && next == Some('/') {
            let end = chars[index..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |offset| index + offset);
            blank(&mut blanked, index..end);
            end
        } else if chars[index] == '/' && next == Some('*') {
            let end = end_of_block_comment(&chars, index);
            blank(&mut blanked, index..end);
            end
        } else if let Some(end) = end_of_string_literal(&chars, index) {
            blanked.push('"');
            blank(
                &mut blanked,
                index + 1..end.saturating_sub(1).max(index + 1),
            );
            if end > index + 1 {
                blanked.push('"');
            }
            end
        } else if let Some(end) = end_of_char_literal(&chars, index) {
            blank(&mut blanked, index..end);
            end
        } else {
            blanked.push(chars[index]);
            index + 1
        };
        index = end;
    }
    blanked
}

fn is_identifier_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The end of the block comment starting at `start` (block comments nest).
fn end_of_block_comment(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut index = start;
    while index + 1 < chars.len() {
        match (chars[index], chars[index + 1]) {
            ('/', '*') => {
                depth += 1;
                index += 2;
            }
            ('*', '/') => {
                depth -= 1;
                index += 2;
                if depth == 0 {
                    return index;
                }
            }
            _ => index += 1,
        }
    }
    chars.len()
}

/// If a string literal starts at `start` (`"..."`, `b"..."`, `c"..."`, `r#"..."#`, `br"..."`),
/// the index just after it.
fn end_of_string_literal(chars: &[char], start: usize) -> Option<usize> {
    let mut index = start;
    if chars[start] != '"' {
        // A prefix counts only where no identifier runs into it (`for"` is not `r"`).
        if start > 0 && is_identifier_char(chars[start - 1]) {
            return None;
        }
        if matches!(chars[index], 'b' | 'c') {
            index += 1;
        }
    }
    let is_raw = chars.get(index) == Some(&'r');
    let mut hashes = 0;
    if is_raw {
        index += 1;
        while chars.get(index) == Some(&'#') {
            hashes += 1;
            index += 1;
        }
    }
    if chars.get(index) != Some(&'"') {
        return None;
    }
    index += 1;
    while index < chars.len() {
        match chars[index] {
            // A raw string ends at a quote followed by as many `#` as it opened with.
            '"' if is_raw => {
                if (1..=hashes).all(|offset| chars.get(index + offset) == Some(&'#')) {
                    return Some(index + 1 + hashes);
                }
                index += 1;
            }
            '\\' if !is_raw => index += 2,
            '"' => return Some(index + 1),
            _ => index += 1,
        }
    }
    Some(chars.len())
}

/// If a char literal starts at `start` (`'x'`, `'\''`, `'\u{7b}'`), the index just after it.
/// A quote followed by a name and no closing quote is a lifetime or a label, not a literal.
fn end_of_char_literal(chars: &[char], start: usize) -> Option<usize> {
    if chars[start] != '\'' {
        return None;
    }
    match (chars.get(start + 1), chars.get(start + 2)) {
        (Some('\\'), _) => {
            // Skip the backslash and the escaped char, then run to the closing quote.
            let closing = chars[start + 3..].iter().position(|&c| c == '\'')?;
            Some(start + 3 + closing + 1)
        }
        (Some(c), Some('\'')) if *c != '\'' => Some(start + 3),
        _ => None,
    }
}

/// Splits blanked code into identifiers (keywords and numbers too), `::`, lifetimes, string
/// literals (blank by now) and single punctuation characters, each with its line.
fn tokenize(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c.is_whitespace() {
            if c == '\n' {
                line += 1;
            }
            index += 1;
            continue;
        }
        let (start, start_line) = (index, line);
        if is_identifier_char(c) {
            while index < chars.len() && is_identifier_char(chars[index]) {
                index += 1;
            }
            // A raw identifier `r#type` is the identifier `type`.
            let is_raw_identifier = c == 'r'
                && index == start + 1
                && chars.get(index) == Some(&'#')
                && chars.get(index + 1).is_some_and(|&c| is_identifier_char(c));
            if is_raw_identifier {
                index += 1;
                let name_start = index;
                while index < chars.len() && is_identifier_char(chars[index]) {
                    index += 1;
                }
                tokens.push(Token {
                    text: chars[name_start..index].iter().collect(),
                    line,
                    offset: name_start,
                });
                continue;
            }
        } else if c == ':' && chars.get(index + 1) == Some(&':') {
            index += 2;
        } else if c == '\'' {
            // A lifetime or a label; char literals are blank by now.
            index += 1;
            while index < chars.len() && is_identifier_char(chars[index]) {
                index += 1;
            }
        } else if c == '"' {
            index += 1;
            while index < chars.len() && chars[index] != '"' {
                if chars[index] == '\n' {
                    line += 1;
                }
                index += 1;
            }
            index += 1;
        } else {
            index += 1;
        }
        tokens.push(Token {
            text: chars[start..index.min(chars.len())].iter().collect(),
            line: start_line,
            offset: start,
        });
    }
    tokens
}

fn is_identifier(word: &str) -> bool {
    word.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The index of the bracket that closes the one at `open`, or `tokens.len()` if none does.
fn matching_close(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (index, token) in tokens.iter().enumerate().skip(open) {
        match token.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return index;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Leaves out test code: each item a `#[cfg(test)]` attribute annotates, together with the
/// other attributes on it (`#[path = "x_tests.rs"]`). The item runs to its `;` (`mod tests;`,
/// `use ...;`) or to the `}` that closes its body (`mod tests { ... }`, `fn helper() { ... }`);
/// a field or match arm runs to its `,`. Code after it is kept. An inner `#![cfg(test)]` at the
/// top of a file makes the whole file test code.
fn without_test_code(tokens: Vec<Token>) -> Vec<Token> {
    let mut is_test = vec![false; tokens.len()];
    let mut index = 0;
    while index < tokens.len() {
        let Some(after_attribute) = attribute_end(&tokens, index) else {
            index += 1;
            continue;
        };
        if !is_cfg_test(&tokens[index..after_attribute]) {
            index = after_attribute;
            continue;
        }
        if tokens[index + 1].text == "!" {
            if tokens[..index].iter().all(|token| token.text != "{") {
                return Vec::new();
            }
            index = after_attribute;
            continue;
        }
        let mut item_start = after_attribute;
        while let Some(after_next_attribute) = attribute_end(&tokens, item_start) {
            item_start = after_next_attribute;
        }
        let item_end = item_end(&tokens, item_start);
        is_test[index..item_end].fill(true);
        index = item_end;
    }
    tokens
        .into_iter()
        .zip(is_test)
        .filter(|(_, is_test)| !is_test)
        .map(|(token, _)| token)
        .collect()
}

/// If an attribute (`#[...]` or `#![...]`) starts at `start`, the index just after its `]`.
fn attribute_end(tokens: &[Token], start: usize) -> Option<usize> {
    if tokens.get(start)?.text != "#" {
        return None;
    }
    let mut open = start + 1;
    if tokens.get(open)?.text == "!" {
        open += 1;
    }
    if tokens.get(open)?.text != "[" {
        return None;
    }
    Some((matching_close(tokens, open) + 1).min(tokens.len()))
}

fn is_cfg_test(attribute: &[Token]) -> bool {
    let inside: Vec<&str> = attribute
        .iter()
        .map(|token| token.text.as_str())
        .filter(|text| !matches!(*text, "#" | "!" | "[" | "]"))
        .collect();
    inside == ["cfg", "(", "test", ")"]
}

/// The words an item can start with; anything else under `#[cfg(test)]` is a field, a match arm
/// or a statement.
const ITEM_KEYWORDS: &[&str] = &[
    "pub",
    "mod",
    "fn",
    "impl",
    "struct",
    "enum",
    "union",
    "trait",
    "use",
    "const",
    "static",
    "type",
    "extern",
    "macro_rules",
    "unsafe",
    "async",
    "let",
];

/// The index just after the item starting at `start`.
fn item_end(tokens: &[Token], start: usize) -> usize {
    let is_item = tokens
        .get(start)
        .is_some_and(|token| ITEM_KEYWORDS.contains(&token.text.as_str()));
    let mut depth = 0;
    for (index, token) in tokens.iter().enumerate().skip(start) {
        match token.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            // The enclosing block closes: the item (a last field, say) ended just before.
            ")" | "]" | "}" if depth == 0 => return index,
            ")" | "]" => depth -= 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return index + 1;
                }
            }
            ";" if depth == 0 => return index + 1,
            "," if depth == 0 && !is_item => return index + 1,
            _ => {}
        }
    }
    tokens.len()
}

/// The token ranges of the bodies of inline modules (`mod helpers { ... }`), with their names.
fn inline_modules(tokens: &[Token]) -> Vec<(Range<usize>, String)> {
    let mut modules = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let name = tokens.get(index + 1).map(|token| token.text.as_str());
        let opens_body = tokens.get(index + 2).is_some_and(|token| token.text == "{");
        if token.text == "mod" && name.is_some_and(is_identifier) && opens_body {
            let open = index + 2;
            modules.push((
                open..matching_close(tokens, open),
                tokens[index + 1].text.clone(),
            ));
        }
    }
    modules
}

/// Every path the code names: each full path of each `use` declaration (however it is split
/// over lines and groups), and each path of two or more segments written in the code itself.
fn named_paths(tokens: &[Token], file_module: &[String]) -> Vec<NamedPath> {
    let inline_modules = inline_modules(tokens);
    let module_at = |index: usize| -> Vec<String> {
        let mut module = file_module.to_vec();
        for (body, name) in &inline_modules {
            if body.contains(&index) {
                module.push(name.clone());
            }
        }
        module
    };
    let mut paths = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        let text = tokens[index].text.as_str();
        let next = tokens.get(index + 1).map(|token| token.text.as_str());
        let previous = index
            .checked_sub(1)
            .map(|before| tokens[before].text.as_str());
        // `use<'a>` is a precise-capturing bound, not a declaration.
        if text == "use" && next != Some("<") {
            let end = tokens[index..]
                .iter()
                .position(|token| token.text == ";")
                .map_or(tokens.len(), |offset| index + offset);
            let mut position = index + 1;
            let mut expanded = Vec::new();
            expand_use_tree(&tokens[..end], &mut position, &[], &mut expanded);
            for (segments, line) in expanded {
                paths.push(NamedPath {
                    segments,
                    line,
                    module: module_at(index),
                });
            }
            index = end + 1;
            continue;
        }
        // A path in the code starts at a name not preceded by `::`, or at a leading `::`
        // (`::std::fs::read`).
        let start = if is_identifier(text) && previous != Some("::") {
            index
        } else if text == "::"
            && next.is_some_and(is_identifier)
            && !previous.is_some_and(|previous| is_identifier(previous) || previous == ">")
        {
            index + 1
        } else {
            index += 1;
            continue;
        };
        let mut segments = vec![tokens[start].text.clone()];
        let mut end = start + 1;
        while tokens.get(end).is_some_and(|token| token.text == "::")
            && tokens
                .get(end + 1)
                .is_some_and(|token| is_identifier(&token.text))
        {
            segments.push(tokens[end + 1].text.clone());
            end += 2;
        }
        if segments.len() > 1 {
            paths.push(NamedPath {
                segments,
                line: tokens[start].line,
                module: module_at(start),
            });
        }
        index = end;
    }
    paths
}

/// Parses the use tree at `tokens[*position]` and adds each full path it names, with the line of
/// its last segment: `crate::{a::{b, c as d}, e::{self, f::*}}` names `crate::a::b`,
/// `crate::a::c`, `crate::e` and `crate::e::f::*`.
fn expand_use_tree(
    tokens: &[Token],
    position: &mut usize,
    prefix: &[String],
    paths: &mut Vec<(Vec<String>, usize)>,
) {
    let mut path = prefix.to_vec();
    let mut line = None;
    while let Some(token) = tokens.get(*position) {
        match token.text.as_str() {
            // Separators, a leading `::`, and the `$` of `$crate` in a macro.
            "::" | "$" => *position += 1,
            "{" => {
                // A group: each member is a use tree of its own under the path so far.
                *position += 1;
                while let Some(token) = tokens.get(*position) {
                    match token.text.as_str() {
                        "}" => {
                            *position += 1;
                            return;
                        }
                        "," => *position += 1,
                        _ => {
                            let before = *position;
                            expand_use_tree(tokens, position, &path, paths);
                            if *position == before {
                                *position += 1;
                            }
                        }
                    }
                }
                return;
            }
            "*" => {
                path.push("*".to_string());
                line = Some(token.line);
                *position += 1;
                break;
            }
            // `as name` renames the path for this module; the path named stays the same.
            "as" => {
                *position += 2;
                break;
            }
            word if is_identifier(word) => {
                path.push(word.to_string());
                line = Some(token.line);
                *position += 1;
            }
            _ => break,
        }
    }
    // `a::{self}` names `a` itself.
    if path.last().is_some_and(|segment| segment == "self") && path.len() > 1 {
        path.pop();
    }
    if let Some(line) = line {
        paths.push((path, line));
    }
}

// =================================================================================================
// The rules on planted strings: each fires where it should and nowhere else
// =================================================================================================

/// A small fake source tree. A line ending in `// planted: rule_a, rule_b` breaks those rules
/// (named by their tests); every other line must not be flagged by any rule. The markers are
/// comments, so the rules never see them.
const PLANTED_FILES: &[(&str, &str)] = &[
    (
        "api/server.rs",
        r#"//! A fake gRPC server: api may name tonic and its generated types, but never runtime.
use crate::{runtime, store}; // planted: modules_import_only_what_the_layout_allows
use crate::{reconcile::{plan::{self, Plan}, model::Record}, sources::spec_file};
use tonic::{Request, Response, Status};
use super::proto::prism::v1::StatusReply;
pub use crate::runtime::Supervisor; // planted: modules_import_only_what_the_layout_allows
use crate::{
    telemetry::Metrics,
    runtime::{ // a group names nothing by itself; its members do
        spawn::Spawner, // planted: modules_import_only_what_the_layout_allows
        self, // planted: modules_import_only_what_the_layout_allows
    },
};

/* A block comment naming crate::runtime::now() is not code, /* even nested */ crate::runtime. */
pub fn serve() -> Result<(), Status> {
    // Nor is a line comment: crate::runtime::now()
    let message = "crate::runtime is only text"; // string contents are not code: not flagged
    let started = crate::runtime::now(); // planted: modules_import_only_what_the_layout_allows
    let sibling = super::runtime::now(); // `api::runtime`, inside api
    let climbed = super::super::runtime::now(); // planted: modules_import_only_what_the_layout_allows
    Ok(())
}

mod helpers {
    // Inside the inline module `api::server::helpers`, `super::super` is `api`.
    use super::super::runtime::Local;
    use super::super::super::runtime::Far; // planted: modules_import_only_what_the_layout_allows
}
"#,
    ),
    (
        "api/convert/mod.rs",
        r#"//! The module `api::convert`: `super` is `api`, so `super::super` is the crate root.
use super::super::runtime::Supervisor; // planted: modules_import_only_what_the_layout_allows
use super::proto::prism::v1::ProcessStatus;

#[cfg(test)]
mod writers_tests;
"#,
    ),
    (
        "api/convert/writers_tests.rs",
        r#"//! Declared by `#[cfg(test)] mod writers_tests;` in `api/convert/mod.rs`: test code.
use crate::runtime::Supervisor;

#[test]
fn writes() {
    let written = "1".parse::<u32>().unwrap();
}
"#,
    ),
    (
        "api/contests.rs",
        r#"//! A production module whose name merely ends in `tests.rs`: checked like any other.
use crate::runtime::Supervisor; // planted: modules_import_only_what_the_layout_allows

pub fn count() -> u32 {
    "1".parse().unwrap() // planted: no_unwrap_or_expect_outside_tests
}
"#,
    ),
    (
        "api/convert/to_proto.rs",
        r#"//! The module `api::convert::to_proto`: here `super::super` is `api`, not the root.
use super::super::runtime::Local;
use super::super::super::runtime::Supervisor; // planted: modules_import_only_what_the_layout_allows
"#,
    ),
    (
        "reconcile/plan.rs",
        r##"//! A fake planner: pure, except where planted.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex}; // planted: reconcile_is_pure
use std::{fmt, fs}; // planted: reconcile_is_pure
use crate::store::Store; // planted: reconcile_is_pure
use crate::{reconcile::model::Phase, runtime}; // planted: reconcile_is_pure
use super::model::{Record, Spec};

pub struct Shared {
    records: Arc<Mutex<BTreeMap<String, Record>>>, // planted: reconcile_is_pure
}

pub fn decide(now_millis: u64) -> Option<u64> {
    let closing_brace = "}"; // braces in literals and comments do not count: }
    let opening_brace = '{';
    let lifetime_free: &'static str = r#"{"#;
    Some(now_millis)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;
    use super::*;
    /* } */

    #[test]
    fn decides() {
        println!("test output is fine");
        tracing::info!("so is logging in a test");
        let brace = '}';
        let started = Instant::now();
        let text = std::fs::read_to_string("x").unwrap();
        assert_eq!(decide(1).unwrap(), 1);
    }
}

pub fn after_the_tests() -> u64 {
    decide(2).unwrap() // planted: no_unwrap_or_expect_outside_tests
}

pub fn now() -> std::time::SystemTime { // planted: reconcile_is_pure
    std::time::SystemTime::now() // planted: reconcile_is_pure
}

pub static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0); // planted: reconcile_is_pure

use std::io::{self, Write}; // planted: reconcile_is_pure
use ::std::io::stdout; // planted: reconcile_is_pure
use tracing::{debug, info}; // planted: reconcile_is_pure
use log; // planted: reconcile_is_pure
use rand::Rng; // planted: reconcile_is_pure

pub fn report(plan: &Plan) -> Plan {
    println!("{plan:?}"); // planted: reconcile_is_pure
    eprintln!("{plan:?}"); // planted: reconcile_is_pure
    print!("{plan:?}"); // planted: reconcile_is_pure
    eprint!["{plan:?}"]; // planted: reconcile_is_pure
    std::println!("{plan:?}"); // planted: reconcile_is_pure
    let shown = dbg!(plan.clone()); // planted: reconcile_is_pure
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line); // planted: reconcile_is_pure
    tracing::info!(?plan, "decided"); // planted: reconcile_is_pure
    #[tracing::instrument] // planted: reconcile_is_pure
    fn traced() {}
    log::warn!("decided"); // planted: reconcile_is_pure
    let draw: f64 = rand::random(); // planted: reconcile_is_pure
    let mut seed = [0u8; 8];
    let filled = getrandom::fill(&mut seed); // planted: reconcile_is_pure
    let quick = fastrand::u64(..); // planted: reconcile_is_pure
    shown
}

/// Clean: the same words as data, as names of our own, or in comments and literals.
pub fn explain(log: &mut Vec<String>, print: bool, random_draw: f64) -> bool {
    use std::fmt::Write as _;
    let message = "println!(\"x\") tracing::info! std::io::stdin() rand::random()"; // contents are not code
    // Nor are comments: println!("x"); dbg!(x); log::warn!("x"); std::io::stdout()
    let mut text = String::new();
    let written = write!(text, "{random_draw}"); // `write!` into a String is formatting
    log.push(format!("{random_draw} {}", random_draw.log(2.0))); // `log`, the argument and the method
    let logged = self::log::Entry::new(); // a child module of ours named `log`
    let base = f64::log(random_draw, 10.0);
    print != (random_draw > 0.5) // a comparison, not the `print!` macro
}
"##,
    ),
    (
        "runtime/spawn.rs",
        r##"//! A fake spawner: runtime acts on processes; storage and gRPC are not its business.
use std::process::Command;
use crate::{reconcile::Plan, store::Store, telemetry::Metrics, clock::Clock, error_chain::chain};
use crate::sources::spec_file::SpecFile; // planted: modules_import_only_what_the_layout_allows
use crate::api::client::Client; // planted: modules_import_only_what_the_layout_allows

pub fn open() {
    let db = sled::open("state"); // planted: only_store_names_sled
    // Literals that look like comments or quotes must not hide the code after them.
    let url = "http://host/\"quoted\""; let other = sled::open(url); // planted: only_store_names_sled
    let quote = '"'; let third = sled::open("c"); // planted: only_store_names_sled
    let raw = r#"a "quoted" // word"#; let fourth = sled::open(raw); // planted: only_store_names_sled
}

pub fn spawn() -> u32 {
    let monotonic_clock = 1; // `monotonic` is a word of its own, not `tonic`
    let child = Command::new("x").spawn().expect("spawns"); // planted: no_unwrap_or_expect_outside_tests
    child.id().checked_add(monotonic_clock).unwrap_or(0)
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;

#[cfg(test)]
mod helpers_tests; // the file is `runtime/spawn/helpers_tests.rs`

pub fn after_the_test_module() -> u32 {
    "1".parse().unwrap() // planted: no_unwrap_or_expect_outside_tests
}
"##,
    ),
    (
        "runtime/spawn_tests.rs",
        r#"//! The spawner's tests: the whole file is test code, so nothing here counts.
use crate::api::client::Client;

#[test]
fn spawns() {
    let db = sled::open("state").unwrap();
    let status = tonic::Status::ok("fine");
}
"#,
    ),
    (
        "runtime/spawn/helpers_tests.rs",
        r#"//! Declared by `#[cfg(test)] mod helpers_tests;` in `runtime/spawn.rs`: test code.
use crate::api::client::Client;

pub fn helper() -> u32 {
    "1".parse().unwrap()
}
"#,
    ),
    (
        "runtime/helpers_tests.rs",
        r#"//! Named like a test file, but no `#[cfg(test)]` declaration leads here: production code.
use crate::api::client::Client; // planted: modules_import_only_what_the_layout_allows

pub fn helper() -> u32 {
    "1".parse().unwrap() // planted: no_unwrap_or_expect_outside_tests
}
"#,
    ),
    (
        "runtime/mod.rs",
        r#"//! A fake runtime root: a module declared without `#[cfg(test)]` is production code.
pub mod spawn;
mod stray_tests;
#[cfg(not(test))]
mod other_tests;
"#,
    ),
    (
        "runtime/stray_tests.rs",
        r#"//! Declared by a plain `mod stray_tests;`: compiled into the launcher, so checked.
pub fn helper() -> u32 {
    "1".parse().unwrap() // planted: no_unwrap_or_expect_outside_tests
}
"#,
    ),
    (
        "runtime/other_tests.rs",
        r#"//! Declared under `#[cfg(not(test))]`: production code, so checked.
pub fn helper() -> u32 {
    "1".parse().expect("a number") // planted: no_unwrap_or_expect_outside_tests
}
"#,
    ),
    (
        "sources/spec_file.rs",
        r#"//! A fake spec file source.
use crate::{api::client, reconcile::ProcessSpec}; // planted: modules_import_only_what_the_layout_allows
use crate::{store::Store, telemetry::Metrics, clock::Clock, error_chain::Chain};
use crate::app::Config; // planted: modules_import_only_what_the_layout_allows
use super::values::MAX_DURATION;

pub fn refuse() -> tonic::Status { // planted: only_api_names_grpc_and_proto_types
    tonic::Status::invalid_argument("bad spec") // planted: only_api_names_grpc_and_proto_types
}

pub fn supervise() {
    crate::runtime::start(); // planted: modules_import_only_what_the_layout_allows
}

#[cfg(test)]
#[path = "spec_file_tests.rs"]
mod tests;
"#,
    ),
    (
        "sources/spec_file_tests.rs",
        r#"//! Declared by `#[cfg(test)] #[path = "spec_file_tests.rs"] mod tests;`: test code.
use crate::{api::client, app::Config, runtime::Supervisor};

#[test]
fn parses() {
    let spec = crate::sources::spec_file::parse("x").unwrap();
    let status = tonic::Status::ok("fine");
}
"#,
    ),
    (
        "telemetry/mod.rs",
        r#"pub mod http; // planted: every_file_opens_with_a_doc_line
"#,
    ),
    (
        "telemetry/http.rs",
        r#"//! A fake metrics endpoint.
use crate::api; // planted: modules_import_only_what_the_layout_allows
use crate::{reconcile::UnixMillis, store::Store, clock::Clock, error_chain::Chain};
use super::usage::UsageBoard;
use crate::sources::catalog::Catalog; // planted: modules_import_only_what_the_layout_allows
use crate::app::Handles; // planted: modules_import_only_what_the_layout_allows
use prometheus::proto::MetricFamily; // prometheus's own `proto`, not ours

pub fn kind() -> prometheus::proto::MetricType {
    prometheus::proto::MetricType::COUNTER
}
"#,
    ),
    (
        "store/mod.rs",
        r#"//! A fake store: the one place for sled.
use sled::Db;
use crate::reconcile::DesiredRecord;
use crate::error_chain::chain;
use crate::telemetry::Metrics; // planted: modules_import_only_what_the_layout_allows

#[cfg(test)]
mod tests;
"#,
    ),
    (
        "store/tests.rs",
        r#"//! Declared by `#[cfg(test)] mod tests;` in `store/mod.rs`: test code throughout.
use crate::runtime::Supervisor;

#[test]
fn stores() {
    let db = sled::open("state").unwrap();
    let message = "x".parse::<u32>().expect("a number");
}
"#,
    ),
    (
        "main.rs",
        r#"//! A fake binary: it may import every module of the library, but not gRPC.
mod cli;
use prism_launcher::{api::client::Client, runtime::Supervisor, sources, store::Store};
use prism_launcher::api::proto::prism::v1::StatusRequest; // planted: only_api_names_grpc_and_proto_types
use crate::cli::status;
"#,
    ),
    (
        "cli/status.rs",
        r#"//! A fake status command: it reaches the launcher through `prism_launcher::api::client`.
use prism_launcher::api::client::connect;
use tonic::transport::Channel; // planted: only_api_names_grpc_and_proto_types
"#,
    ),
    (
        "app.rs",
        r#"//! The fake wiring: app may import everything.
use crate::{api, runtime, sources, store, telemetry};

pub fn run() {
    crate::runtime::start();
}
"#,
    ),
];

/// The rules a planted line says it breaks: `// planted: rule_a, rule_b` at its end.
fn planted_rules(line: &str) -> Vec<&str> {
    match line.split_once("// planted:") {
        Some((_, names)) => names.split(',').map(str::trim).collect(),
        None => Vec::new(),
    }
}

#[test]
fn every_rule_fires_on_planted_violations() {
    let files: Vec<(String, String)> = PLANTED_FILES
        .iter()
        .map(|(relative_path, text)| (relative_path.to_string(), text.to_string()))
        .collect();
    let tree = read_tree(&files);
    let mut problems = Vec::new();
    for (rule_name, rule) in RULES {
        let mut planted = BTreeSet::new();
        for (relative_path, text) in PLANTED_FILES {
            for (index, line) in text.lines().enumerate() {
                if planted_rules(line).contains(rule_name) {
                    planted.insert((relative_path.to_string(), index + 1));
                }
            }
        }
        let flagged: Vec<Violation> = tree.iter().flat_map(rule).collect();
        assert!(
            !planted.is_empty(),
            "no violation of {rule_name} is planted"
        );
        let flagged_lines: BTreeSet<(String, usize)> = flagged
            .iter()
            .map(|violation| (violation.path.clone(), violation.line))
            .collect();
        for (relative_path, line) in planted.difference(&flagged_lines) {
            problems.push(format!(
                "{rule_name} missed the violation planted at {relative_path}:{line}"
            ));
        }
        for violation in &flagged {
            if !planted.contains(&(violation.path.clone(), violation.line)) {
                problems.push(format!("{rule_name} flagged a clean line: {violation}"));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn use_declarations_expand_into_full_paths() {
    let code = Code::read(
        "app.rs",
        "//! Groups, nesting, renames, `self`, globs, a leading `::` and several lines.\n\
         pub(crate) use crate::{a::{b, c as d}, e::{self, f::*}, g};\n\
         use ::std::{\n    fs,\n    io::{self, Read},\n};\n",
        false,
    );
    let paths: Vec<(String, usize)> = code
        .paths
        .iter()
        .map(|path| (path.segments.join("::"), path.line))
        .collect();
    let expected = [
        ("crate::a::b", 2),
        ("crate::a::c", 2),
        ("crate::e", 2),
        ("crate::e::f::*", 2),
        ("crate::g", 2),
        ("std::fs", 4),
        ("std::io", 5),
        ("std::io::Read", 5),
    ];
    let expected: Vec<(String, usize)> = expected
        .iter()
        .map(|(path, line)| (path.to_string(), *line))
        .collect();
    assert_eq!(paths, expected);
}

#[test]
fn paths_resolve_from_the_module_of_the_file() {
    assert_eq!(
        module_of("api/convert/to_proto.rs"),
        ["api", "convert", "to_proto"]
    );
    assert_eq!(module_of("api/convert/mod.rs"), ["api", "convert"]);
    assert_eq!(module_of("lib.rs"), Vec::<String>::new());
    assert_eq!(module_of("bin/hello-pattern.rs"), Vec::<String>::new());
    assert_eq!(module_of("cli/status.rs"), ["cli", "status"]);

    let code = Code::read(
        "api/convert/to_proto.rs",
        "use super::super::runtime::A;\nuse super::super::super::runtime::B;\nuse self::c::D;\n\
         fn f() { crate::runtime::now(); super::super::super::super::E; }\n",
        false,
    );
    let resolved: Vec<Option<String>> = code
        .paths
        .iter()
        .map(|path| code.library_path(path).map(|target| target.join("::")))
        .collect();
    assert_eq!(
        resolved,
        [
            Some("api::runtime::A".to_string()),
            Some("runtime::B".to_string()),
            Some("api::convert::to_proto::c::D".to_string()),
            Some("runtime::now".to_string()),
            None, // above the crate root
        ]
    );
}

#[test]
fn test_code_is_only_the_item_cfg_test_annotates() {
    let code = Code::read(
        "store/mod.rs",
        "//! x\nfn a() {}\n#[cfg(test)]\n#[path = \"t.rs\"]\nmod tests;\nfn b() {}\n\
         #[cfg(test)]\nmod more { fn c() { let s = \"}\"; let t = '}'; /* } */ } // }\n}\n\
         fn d() {}\n#[cfg(test)]\nimpl<A, B> Helper<A, B> { fn e() {} }\nfn f() {}\n",
        false,
    );
    let functions: Vec<&str> = code
        .tokens
        .windows(2)
        .filter(|pair| pair[0].text == "fn")
        .map(|pair| pair[1].text.as_str())
        .collect();
    assert_eq!(functions, ["a", "b", "d", "f"]);
}

#[test]
fn cfg_test_modules_resolve_to_their_files() {
    let declared = |relative_path: &str, text: &str| cfg_test_module_files(relative_path, text);
    // In `mod.rs` and crate roots a module's file is beside the declaring file.
    assert_eq!(
        declared("store/mod.rs", "//! x\n#[cfg(test)]\nmod tests;\n"),
        ["store/tests.rs", "store/tests/mod.rs"]
    );
    assert_eq!(
        declared("lib.rs", "#[cfg(test)] pub(crate) mod lib_tests;"),
        ["lib_tests.rs", "lib_tests/mod.rs"]
    );
    // Elsewhere it is in a folder named after the declaring file ...
    assert_eq!(
        declared("runtime/spawn.rs", "#[cfg(test)]\nmod tests;"),
        ["runtime/spawn/tests.rs", "runtime/spawn/tests/mod.rs"]
    );
    // ... unless `#[path]` names it, from the declaring file's folder, before or after the cfg.
    assert_eq!(
        declared(
            "sources/spec_file.rs",
            "#[cfg(test)]\n#[path = \"spec_file_tests.rs\"]\nmod tests;"
        ),
        ["sources/spec_file_tests.rs"]
    );
    assert_eq!(
        declared(
            "sources/spec_file.rs",
            "#[path = r\"../shared/x_tests.rs\"] #[cfg(test)] mod tests;"
        ),
        ["shared/x_tests.rs"]
    );
    // Inside an inline module, from the module's folder.
    assert_eq!(
        declared("api/mod.rs", "mod outer {\n #[cfg(test)]\n mod tests;\n}"),
        ["api/outer/tests.rs", "api/outer/tests/mod.rs"]
    );
    // Without `#[cfg(test)]`, with a body, in a comment or under another cfg: nothing.
    assert!(declared(
        "store/mod.rs",
        "mod tests;\n#[cfg(test)]\nmod inline {}\n// #[cfg(test)] mod a_tests;\n\
         #[cfg(all(test, unix))]\nmod b_tests;\n#[cfg(not(test))]\nmod c_tests;\n"
    )
    .is_empty());

    // Only a file both declared so and named as tests is test code.
    let files: Vec<(String, String)> = [
        (
            "store/mod.rs",
            "#[cfg(test)]\nmod tests;\n#[cfg(test)]\n#[path = \"contests.rs\"]\nmod x;",
        ),
        ("store/tests.rs", ""),
        ("store/contests.rs", ""),
        ("api/mod.rs", "mod writers_tests;"),
        ("api/writers_tests.rs", ""),
        ("api/orphan_tests.rs", ""),
    ]
    .iter()
    .map(|(path, text)| (path.to_string(), text.to_string()))
    .collect();
    assert_eq!(
        test_files(&files).into_iter().collect::<Vec<_>>(),
        ["store/tests.rs"]
    );
}
