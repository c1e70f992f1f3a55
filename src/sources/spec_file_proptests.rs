//! Property tests of spec-file parsing: whatever the text (arbitrary bytes, or well-formed YAML
//! with arbitrary values in every field), parsing never panics, every error names the file and
//! a line, an echoed value is truncated, and every spec accepted is valid and within the bounds.

use std::path::Path;

use proptest::prelude::*;

use super::{parse_spec_text, FileSpec, SpecError};
use crate::reconcile::{
    MAX_ARGS_ENV_BYTES, MAX_ENTRIES, MAX_NAME_PART, MAX_PATH_BYTES, MAX_VALUE_BYTES,
};
use crate::sources::catalog::Catalog;

const FILE: &str = "/specs/fuzzed.yaml";

/// Longest message an error may have: every echoed value is cut to 64 characters, so a message
/// is a sentence, never a copy of its input.
const MAX_MESSAGE: usize = 2048;

fn parse(text: &str) -> Result<Vec<FileSpec>, Vec<SpecError>> {
    parse_spec_text(
        Path::new(FILE),
        text,
        Path::new("/specs"),
        &Catalog::default(),
    )
}

/// Every error is located: the file, and a line within the text (or just past its end).
fn check_errors(text: &str, errors: &[SpecError]) -> Result<(), TestCaseError> {
    let lines = text.lines().count().max(1) + 1;
    prop_assert!(!errors.is_empty());
    for error in errors {
        prop_assert_eq!(error.file.as_path(), Path::new(FILE));
        let line = error.line;
        prop_assert!(
            line.is_some_and(|line| (1..=lines).contains(&line)),
            "{error:?} has no line within the text's {lines}"
        );
        prop_assert!(!error.message.is_empty());
        prop_assert!(
            error.message.len() <= MAX_MESSAGE,
            "a message of {} bytes",
            error.message.len()
        );
    }
    Ok(())
}

/// Every spec accepted is valid, and within the bounds.
fn check_specs(specs: &[FileSpec]) -> Result<(), TestCaseError> {
    for found in specs {
        let spec = &found.spec;
        prop_assert!(spec.problems().is_empty(), "{:?}", spec.problems());
        prop_assert!(spec.args_and_env_bytes() <= MAX_ARGS_ENV_BYTES);
        prop_assert!(spec.executable.as_os_str().len() <= MAX_PATH_BYTES);
        prop_assert!(spec.env.len() <= MAX_ENTRIES && spec.args.len() <= MAX_ENTRIES);
        prop_assert!(spec
            .env
            .values()
            .all(|value| value.len() <= MAX_VALUE_BYTES));
        prop_assert!(spec
            .namespace
            .iter()
            .chain(&spec.session_id)
            .all(|part| part.len() <= MAX_NAME_PART));
    }
    Ok(())
}

/// A value for a field: mostly plausible words, sometimes any text, sometimes past a bound.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[A-Za-z0-9_./:-]{0,12}",
        3 => any::<String>(),
        1 => prop::sample::select(vec![64usize, 254, 4097]).prop_map(|len| "v".repeat(len)),
    ]
}

/// Mostly `valid`, else any `value()`: so that some documents pass and the checks of accepted
/// specs are exercised too.
fn mostly(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![9 => valid, 1 => value()].boxed()
}

/// A YAML scalar holding `text` (a JSON string is a YAML double-quoted scalar).
fn scalar(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// A spec document with `values` in its fields, well-formed as YAML.
#[derive(Debug, Clone)]
struct Document {
    name: String,
    binary: String,
    isolation: String,
    namespace: String,
    session: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    labels: Vec<(String, String)>,
    grace: String,
    interval: String,
    memory: String,
    /// A string where a port number goes, sometimes: serde's message quotes it.
    port: Option<String>,
}

fn document() -> impl Strategy<Value = Document> {
    let isolation = mostly(prop::sample::select(vec![
        "none".to_string(),
        "namespace".to_string(),
        "session".to_string(),
    ]));
    let duration = prop_oneof![
        8 => prop::sample::select(vec!["10s".to_string(), "200ms".to_string()]),
        1 => prop::sample::select(vec!["169h".to_string(), "0s".to_string()]),
        1 => value(),
    ];
    // A spec file may set loader variables (it is the operator's), not injected ones.
    let env_name = prop_oneof![
        1 => Just("PATH".to_string()),
        1 => Just("LD_PRELOAD".to_string()),
        1 => Just("PROCESS_ID".to_string()),
        10 => "[A-Z][A-Z0-9_]{0,8}",
        1 => value(),
    ];
    (
        (
            mostly("[a-z][a-z0-9-]{0,10}"),
            value(),
            isolation,
            mostly("[a-z0-9-]{1,70}"),
            mostly("[a-z0-9-]{1,70}"),
        ),
        prop::collection::vec(value(), 0..6),
        prop::collection::vec((env_name, value()), 0..6),
        prop::collection::vec((value(), value()), 0..3),
        prop::option::weighted(0.1, value()),
        (
            duration.clone(),
            duration,
            prop_oneof![
                8 => prop::sample::select(vec!["256Mi".to_string(), "1Gi".to_string()]),
                1 => Just("0".to_string()),
                1 => value(),
            ],
        ),
    )
        .prop_map(
            |((name, binary, isolation, namespace, session), args, env, labels, port, times)| {
                Document {
                    name,
                    binary,
                    isolation,
                    namespace,
                    session,
                    args,
                    env,
                    labels,
                    grace: times.0,
                    interval: times.1,
                    memory: times.2,
                    port,
                }
            },
        )
}

impl Document {
    fn text(&self) -> String {
        let map = |entries: &[(String, String)]| {
            entries
                .iter()
                .map(|(key, value)| format!("{}: {}", scalar(key), scalar(value)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let args: Vec<String> = self.args.iter().map(|arg| scalar(arg)).collect();
        let ports = self.port.as_ref().map_or_else(String::new, |port| {
            format!("  ports: {{grpc: {}}}\n", scalar(port))
        });
        format!(
            "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: {}\n  labels: {{{}}}\n\
             spec:\n  binary: {}\n  isolation: {}\n  namespace: {}\n  sessionId: {}\n  \
             args: [{}]\n  env: {{{}}}\n  terminationGracePeriod: {}\n  healthCheck:\n    \
             tcp: {{}}\n    interval: {}\n  resources:\n    memoryLimit: {}\n{ports}",
            scalar(&self.name),
            map(&self.labels),
            scalar(&self.binary),
            scalar(&self.isolation),
            scalar(&self.namespace),
            scalar(&self.session),
            args.join(", "),
            map(&self.env),
            scalar(&self.grace),
            scalar(&self.interval),
            scalar(&self.memory),
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_parses_or_fails_with_located_errors(text in any::<String>()) {
        match parse(&text) {
            Ok(specs) => check_specs(&specs)?,
            Err(errors) => check_errors(&text, &errors)?,
        }
    }

    #[test]
    fn any_bytes_read_as_text_parse_or_fail_with_located_errors(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        let text = String::from_utf8_lossy(&bytes);
        match parse(&text) {
            Ok(specs) => check_specs(&specs)?,
            Err(errors) => check_errors(&text, &errors)?,
        }
    }

    #[test]
    fn any_values_in_a_well_formed_spec_parse_or_fail_with_located_errors(
        documents in prop::collection::vec(document(), 1..3)
    ) {
        let text = documents
            .iter()
            .map(Document::text)
            .collect::<Vec<_>>()
            .join("---\n");
        match parse(&text) {
            Ok(specs) => {
                prop_assert_eq!(specs.len(), documents.len());
                check_specs(&specs)?;
            }
            Err(errors) => check_errors(&text, &errors)?,
        }
    }
}
