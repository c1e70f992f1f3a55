//! Tests of spec file parsing and validation.

use super::super::catalog::{load_catalog, CatalogEntry, CatalogError};
use super::*;
use crate::reconcile::INJECTED_ENV;
use std::time::Duration;

const FILE: &str = "/specs/test.yaml";
const BASE: &str = "/specs";
const HEAD: &str = "apiVersion: prism.launcher/v1\nkind: Process\n";

fn id(name: &str) -> ProcessId {
    ProcessId::new(name).unwrap()
}

fn parse_with(text: &str, catalog: &Catalog) -> Result<Vec<FileSpec>, Vec<SpecError>> {
    parse_spec_text(Path::new(FILE), text, Path::new(BASE), catalog)
}

fn parse(text: &str) -> Result<Vec<FileSpec>, Vec<SpecError>> {
    parse_with(text, &Catalog::default())
}

fn specs(text: &str) -> Vec<FileSpec> {
    match parse(text) {
        Ok(specs) => specs,
        Err(errors) => panic!("expected valid specs, got {errors:#?}"),
    }
}

fn errors_with(text: &str, catalog: &Catalog) -> Vec<SpecError> {
    match parse_with(text, catalog) {
        Ok(specs) => panic!("expected errors, got {specs:#?}"),
        Err(errors) => errors,
    }
}

fn errors(text: &str) -> Vec<SpecError> {
    errors_with(text, &Catalog::default())
}

/// The only error of `text`.
fn single_error(text: &str) -> SpecError {
    let mut errors = errors(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.remove(0)
}

/// The 1-based line of the only line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let matches: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(index, _)| index + 1)
        .collect();
    assert_eq!(
        matches.len(),
        1,
        "{needle:?} should occur on exactly one line"
    );
    matches[0]
}

/// A valid single document named `name` running `/bin/true`, with `extra` lines appended under
/// `spec:` (each indented by two spaces).
fn binary_doc(name: &str, extra: &str) -> String {
    format!("{HEAD}metadata:\n  name: {name}\nspec:\n  binary: /bin/true\n{extra}")
}

fn hello_entry() -> CatalogEntry {
    CatalogEntry {
        name: "hello-pattern".to_string(),
        version: "1.0.0".to_string(),
        executable: PathBuf::from("/opt/patterns/hello-pattern/hello-pattern"),
        isolation: Some(Isolation::Namespace),
        health_check: Some(HealthCheck {
            probe: Probe::Http {
                path: "/ready".to_string(),
                port: None,
            },
            initial_delay: Duration::ZERO,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            failure_threshold: 4,
            success_threshold: 1,
        }),
        health_port: Some(9090),
        resources: Some(Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(256 << 20),
        }),
        environment: BTreeMap::from([
            ("LOG_LEVEL".to_string(), "info".to_string()),
            ("REGION".to_string(), "eu-west".to_string()),
        ]),
        allowed_config_keys: None,
        manifest: PathBuf::from("/opt/patterns/hello-pattern/manifest.yaml"),
    }
}

fn catalog_with(entries: impl IntoIterator<Item = CatalogEntry>) -> Catalog {
    let mut catalog = Catalog::default();
    for entry in entries {
        catalog.insert(entry);
    }
    catalog
}

// ---------------------------------------------------------------------------------------------
// Splitting documents
// ---------------------------------------------------------------------------------------------

#[test]
fn split_documents_skips_empty_and_comment_only_documents_and_keeps_file_lines() {
    let text = "---\n# only a comment\n\n---\na: 1\nb: 2\n--- # second\n# lead\nc: 3\n---\n\n";
    let documents = split_documents(text);
    let summary: Vec<(usize, usize, &str)> = documents
        .iter()
        .map(|document| (document.index, document.first_line, document.text))
        .collect();
    assert_eq!(
        summary,
        vec![(1, 5, "a: 1\nb: 2\n"), (2, 8, "# lead\nc: 3\n")]
    );
}

#[test]
fn split_documents_ignores_indented_markers_and_handles_crlf() {
    let text = "a: |\n  ---\n  text\n---\r\nb: 1\r\n";
    let documents = split_documents(text);
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0].text, "a: |\n  ---\n  text\n");
    assert_eq!((documents[1].index, documents[1].first_line), (2, 5));
    assert_eq!(documents[1].text, "b: 1\r\n");
    assert!(split_documents("").is_empty());
    assert!(split_documents("# nothing\n---\n---\n").is_empty());
}

#[test]
fn locate_field_follows_the_dotted_path_in_block_style() {
    let text = "kind: Process\nmetadata:\n  name: a\nspec:\n  env:\n    A: b\n  healthCheck:\n    http:\n      path: x\n";
    assert_eq!(locate_field(text, "kind"), Some((0, 1)));
    assert_eq!(locate_field(text, "metadata.name"), Some((2, 3)));
    assert_eq!(locate_field(text, "spec.env"), Some((4, 3)));
    assert_eq!(
        locate_field(text, "spec.healthCheck.http.path"),
        Some((8, 7))
    );
    // A missing leaf falls back to the deepest parent found.
    assert_eq!(locate_field(text, "spec.namespace"), Some((3, 1)));
    // A key in a sequence item: the column of the key, after the dash.
    assert_eq!(
        locate_field(
            "items:
  - name: é
    ports:
",
            "items.name"
        ),
        Some((1, 5))
    );
    assert_eq!(locate_field(text, "nothing.here"), None);
    assert_eq!(locate_field(text, ""), None);
}

// ---------------------------------------------------------------------------------------------
// Valid files
// ---------------------------------------------------------------------------------------------

const MULTI: &str = "\
# A file with three processes.
---
# the first one
apiVersion: prism.launcher/v1
kind: Process
metadata:
  name: alpha
spec:
  binary: /bin/alpha
  healthCheck:
    http: {}
--- # the second one
apiVersion: prism.launcher/v1
kind: Process
metadata:
  name: beta
  labels:
    team: storage
spec:
  type: backend
  binary: /usr/bin/beta
  args: [\"--port\", \"$GRPC_PORT\"]
  isolation: session
  namespace: tenant-a
  sessionId: s-42
  env:
    LOG_LEVEL: debug
  inheritEnv: [HOME, PATH]
  workingDir: /var/lib/beta
  healthCheck:
    tcp:
      port: 8080
    initialDelay: 2s
    interval: 1m30s
    timeout: 500ms
    failureThreshold: 5
    successThreshold: 2
  restartPolicy: Never
  terminationGracePeriod: 1m
  resources:
    cpuLimit: 250m
    memoryLimit: 1Gi
  ports:
    grpc: 7000
    health: 7001
  backend:
    backendType: redis
    connectionString: redis://127.0.0.1:6379
    credentials: {password: hunter2}
---
apiVersion: prism.launcher/v1
kind: Process
metadata:
  name: gamma
spec:
  binary: /bin/gamma
  restartPolicy: OnFailure
---
# trailing document with only a comment

";

#[test]
fn a_valid_multi_document_file_yields_every_spec_with_its_document_and_line() {
    let specs = specs(MULTI);
    let summary: Vec<(ProcessId, usize, usize)> = specs
        .iter()
        .map(|spec| (spec.id.clone(), spec.document, spec.line))
        .collect();
    // Each spec's line is the line of its name, where duplicate-name errors point.
    assert_eq!(
        summary,
        vec![
            (id("alpha"), 1, line_of(MULTI, "name: alpha")),
            (id("beta"), 2, line_of(MULTI, "name: beta")),
            (id("gamma"), 3, line_of(MULTI, "name: gamma"))
        ]
    );
}

#[test]
fn defaults_are_applied_when_fields_are_left_out() {
    let specs = specs(MULTI);
    let alpha = &specs[0].spec;
    assert_eq!(alpha.process_type, ProcessType::Pattern);
    assert_eq!(alpha.executable, PathBuf::from("/bin/alpha"));
    assert!(alpha.args.is_empty());
    assert!(alpha.env.is_empty());
    assert!(alpha.inherit_env.is_empty());
    assert_eq!(alpha.working_dir, None);
    assert_eq!(alpha.pattern, None);
    assert_eq!(alpha.isolation, Isolation::None);
    assert_eq!(alpha.namespace, None);
    assert_eq!(alpha.session_id, None);
    assert_eq!(alpha.restart_policy, RestartPolicy::Always);
    assert_eq!(alpha.termination_grace, Duration::from_secs(10));
    assert_eq!(
        alpha.termination_grace,
        ProcessSpec::DEFAULT_TERMINATION_GRACE
    );
    assert_eq!(alpha.resources, None);
    assert_eq!(alpha.requested_ports, RequestedPorts::default());
    assert!(alpha.labels.is_empty());
    assert_eq!(
        alpha.health_check,
        Some(HealthCheck {
            probe: Probe::Http {
                path: "/health".to_string(),
                port: None,
            },
            initial_delay: Duration::ZERO,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
        })
    );

    let gamma = &specs[2].spec;
    assert_eq!(gamma.health_check, None);
    assert_eq!(gamma.restart_policy, RestartPolicy::OnFailure);
}

#[test]
fn every_field_is_read_when_given() {
    let beta = specs(MULTI).remove(1).spec;
    let expected = ProcessSpec {
        process_type: ProcessType::Backend,
        executable: PathBuf::from("/usr/bin/beta"),
        args: vec!["--port".to_string(), "$GRPC_PORT".to_string()],
        env: BTreeMap::from([("LOG_LEVEL".to_string(), "debug".to_string())]),
        inherit_env: vec!["HOME".to_string(), "PATH".to_string()],
        working_dir: Some(PathBuf::from("/var/lib/beta")),
        pattern: None,
        isolation: Isolation::Session,
        namespace: Some("tenant-a".to_string()),
        session_id: Some("s-42".to_string()),
        health_check: Some(HealthCheck {
            probe: Probe::Tcp { port: Some(8080) },
            initial_delay: Duration::from_secs(2),
            interval: Duration::from_secs(90),
            timeout: Duration::from_millis(500),
            failure_threshold: 5,
            success_threshold: 2,
        }),
        restart_policy: RestartPolicy::Never,
        success_exit_codes: Vec::new(),
        backoff: Default::default(),
        termination_grace: Duration::from_secs(60),
        resources: Some(Resources {
            cpu_millis: Some(250),
            memory_bytes: Some(1 << 30),
        }),
        requested_ports: RequestedPorts {
            grpc: Some(7000),
            health: Some(7001),
        },
        type_config: TypeConfig::Backend(BackendConfig {
            backend_type: "redis".into(),
            connection_string: Secret::new("redis://127.0.0.1:6379"),
            credentials: BTreeMap::from([("password".to_string(), Secret::new("hunter2"))]),
            options: BTreeMap::new(),
        }),
        labels: BTreeMap::from([("team".to_string(), "storage".to_string())]),
    };
    assert_eq!(beta, expected);
}

#[test]
fn crlf_files_parse_with_the_right_lines() {
    let text = "---\r\n# c\r\napiVersion: prism.launcher/v1\r\nkind: Process\r\nmetadata:\r\n  name: crlf\r\nspec:\r\n  binary: /bin/true\r\n  bogus: 1\r\n";
    let error = single_error(text);
    assert_eq!(error.field, "spec.bogus");
    assert_eq!(error.line, Some(9));
    let fixed = text.replace("  bogus: 1\r\n", "");
    let specs = specs(&fixed);
    assert_eq!(specs[0].id, id("crlf"));
    assert_eq!(specs[0].line, 6, "the line of `name: crlf`");
}

#[test]
fn an_empty_file_has_no_specs() {
    assert_eq!(parse(""), Ok(vec![]));
    assert_eq!(parse("# nothing yet\n---\n"), Ok(vec![]));
}

#[test]
fn an_http_probe_keeps_its_path_and_port() {
    let text = binary_doc(
        "web",
        "  healthCheck:\n    http:\n      path: /ready\n      port: 8081\n",
    );
    let check = specs(&text).remove(0).spec.health_check.unwrap();
    assert_eq!(
        check.probe,
        Probe::Http {
            path: "/ready".to_string(),
            port: Some(8081),
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Parse errors: every one, each on its file line
// ---------------------------------------------------------------------------------------------

#[test]
fn every_bad_document_is_reported_not_just_the_first() {
    let text = format!(
        "# three bad documents\n---\n{}---\n{}---\n{}",
        binary_doc("one", "  bogus: true\n"),
        binary_doc("two", "  restartPolicy: Sometimes\n"),
        binary_doc("\"a/b\"", ""),
    );
    let errors = errors(&text);
    let summary: Vec<(usize, &str, Option<usize>)> = errors
        .iter()
        .map(|error| (error.document, error.field.as_str(), error.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "spec.bogus", Some(line_of(&text, "bogus"))),
            (2, "spec.restartPolicy", Some(line_of(&text, "Sometimes"))),
            (3, "metadata.name", Some(line_of(&text, "a/b"))),
        ]
    );
    assert!(errors.iter().all(|error| error.file == Path::new(FILE)));
    assert!(
        errors[0].message.contains("unknown field `bogus`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].message.contains("\"Sometimes\" is not one of"),
        "{}",
        errors[1]
    );
    assert!(errors[2].message.contains("'/'"), "{}", errors[2]);
}

#[test]
fn one_bad_document_among_good_ones_fails_the_file_with_only_its_error() {
    let text = format!(
        "{}---\n{}---\n{}",
        binary_doc("good-1", ""),
        binary_doc("bad", "  args: not-a-list\n"),
        binary_doc("good-2", ""),
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].document, 2);
    assert_eq!(errors[0].field, "spec.args");
    assert_eq!(errors[0].line, Some(line_of(&text, "not-a-list")));
    assert!(
        errors[0].message.contains("expected a sequence"),
        "{}",
        errors[0]
    );
}

#[test]
fn unknown_fields_are_refused_at_every_level_on_their_line() {
    let cases = [
        (
            "top-level",
            format!("{}status: {{}}\n", binary_doc("x", "")),
            "status",
            "status",
        ),
        (
            "metadata",
            format!(
                "{HEAD}metadata:\n  name: x\n  annotations: {{}}\nspec:\n  binary: /bin/true\n"
            ),
            "metadata.annotations",
            "annotations",
        ),
        (
            "spec",
            binary_doc("x", "  replicas: 2\n"),
            "spec.replicas",
            "replicas",
        ),
        (
            "healthCheck",
            binary_doc("x", "  healthCheck:\n    http: {}\n    period: 5s\n"),
            "spec.healthCheck.period",
            "period",
        ),
        (
            "http probe",
            binary_doc(
                "x",
                "  healthCheck:\n    http:\n      path: /h\n      scheme: HTTPS\n",
            ),
            "spec.healthCheck.http.scheme",
            "scheme",
        ),
        (
            "resources",
            binary_doc("x", "  resources:\n    gpuLimit: 1\n"),
            "spec.resources.gpuLimit",
            "gpuLimit",
        ),
        (
            "ports",
            binary_doc("x", "  ports:\n    metrics: 9100\n"),
            "spec.ports.metrics",
            "metrics",
        ),
    ];
    for (case, body, field, needle) in cases {
        // Preceded by a valid document and a comment, so document and file lines differ.
        let text = format!("{}---\n# {case}\n{body}", binary_doc("first", ""));
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{case}: {errors:#?}");
        let error = &errors[0];
        assert_eq!(error.document, 2, "{case}");
        assert_eq!(error.field, field, "{case}");
        assert_eq!(error.line, Some(line_of(&text, needle)), "{case}: {error}");
        assert!(error.message.contains("unknown field"), "{case}: {error}");
    }
}

#[test]
fn bad_values_are_reported_on_their_own_line() {
    let cases = [
        (
            "restart policy",
            binary_doc("x", "  restartPolicy: Sometimes\n"),
            "spec.restartPolicy",
            "restartPolicy",
            "\"Sometimes\" is not one of",
        ),
        (
            "isolation",
            binary_doc("x", "  isolation: Namespace\n"),
            "spec.isolation",
            "isolation",
            "\"Namespace\" is not one of",
        ),
        (
            "type",
            binary_doc("x", "  type: daemon\n"),
            "spec.type",
            "daemon",
            "\"daemon\" is not one of",
        ),
        (
            "args as a string",
            binary_doc("x", "  args: --verbose\n"),
            "spec.args",
            "args",
            "expected a sequence",
        ),
        (
            "env as a list",
            binary_doc("x", "  env:\n    - A=b\n"),
            "spec.env",
            "A=b",
            "expected a map",
        ),
        (
            "port out of range",
            binary_doc("x", "  ports:\n    grpc: 70000\n"),
            "spec.ports.grpc",
            "70000",
            "expected u16",
        ),
        (
            "threshold as text",
            binary_doc(
                "x",
                "  healthCheck:\n    tcp: {}\n    failureThreshold: many\n",
            ),
            "spec.healthCheck.failureThreshold",
            "many",
            "expected u32",
        ),
        (
            "name as the first metadata key",
            format!("{HEAD}metadata:\n  name: \"a/b\"\nspec:\n  binary: /bin/true\n"),
            "metadata.name",
            "a/b",
            "contains '/'",
        ),
    ];
    for (case, body, field, needle, message) in cases {
        let text = format!(
            "# leading comment\n---\n{}---\n{body}",
            binary_doc("first", "")
        );
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{case}: {errors:#?}");
        let error = &errors[0];
        assert_eq!(error.document, 2, "{case}");
        assert_eq!(error.field, field, "{case}");
        assert_eq!(error.line, Some(line_of(&text, needle)), "{case}: {error}");
        assert!(error.message.contains(message), "{case}: {error}");
        assert!(!error.message.contains(" at line "), "{case}: {error}");
    }
}

/// Bad durations are refused by `DurationValue`'s own check, after the string is read. Their line
/// must still be the field's, not the first line of the enclosing mapping.
#[test]
fn a_bad_duration_is_reported_on_its_own_line() {
    let cases = [
        (
            binary_doc(
                "x",
                "  restartPolicy: Always\n  terminationGracePeriod: ten\n",
            ),
            "spec.terminationGracePeriod",
        ),
        (
            binary_doc(
                "x",
                "  healthCheck:\n    http:\n      path: /h\n    interval: ten\n",
            ),
            "spec.healthCheck.interval",
        ),
        (
            binary_doc("x", "  healthCheck:\n    http: {}\n    interval: 10\n"),
            "spec.healthCheck.interval",
        ),
        (
            binary_doc("x", "  healthCheck:\n    tcp: {}\n    timeout: 1.5s\n"),
            "spec.healthCheck.timeout",
        ),
    ];
    let mut wrong = Vec::new();
    for (body, field) in cases {
        let text = format!("---\n{body}");
        let error = single_error(&text);
        assert_eq!(error.field, field);
        assert!(error.message.contains("is not a duration"), "{error}");
        let leaf = field.rsplit('.').next().unwrap();
        let expected = line_of(&text, &format!("{leaf}:"));
        if error.line != Some(expected) {
            wrong.push(format!(
                "{field} is on line {expected} but the error says {error}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// An invalid `metadata.name` is refused by `ProcessId`'s own check; its line must be the name's
/// even when it is not the first key of `metadata`.
#[test]
fn a_bad_name_after_labels_is_reported_on_its_own_line() {
    let text = format!(
        "{HEAD}metadata:\n  labels:\n    team: storage\n  name: \"a/b\"\nspec:\n  binary: /bin/true\n"
    );
    let error = single_error(&text);
    assert_eq!(error.field, "metadata.name");
    assert_eq!(error.line, Some(line_of(&text, "a/b")), "{error}");
}

#[test]
fn missing_required_fields_and_non_mappings_are_reported() {
    let missing_kind =
        "apiVersion: prism.launcher/v1\nmetadata:\n  name: a\nspec:\n  binary: /bin/true\n";
    let error = single_error(missing_kind);
    assert!(error.message.contains("missing field `kind`"), "{error}");
    assert_eq!(error.document, 1);
    assert!(error.line.is_some());

    let missing_name = format!("{HEAD}metadata:\n  labels: {{}}\nspec:\n  binary: /bin/true\n");
    let error = single_error(&missing_name);
    assert!(error.message.contains("missing field `name`"), "{error}");
    assert_eq!(error.field, "metadata");

    let error = single_error("---\n---\njust a string\n");
    assert_eq!(error.document, 1);
    assert_eq!(error.field, "");
    assert_eq!(error.line, Some(3));
    assert!(error.message.contains("invalid type"), "{error}");
}

#[test]
fn yaml_syntax_errors_are_reported_on_a_file_line() {
    let body =
        format!("{HEAD}metadata:\n  name: x\nspec:\n  binary: /bin/true\n  args: [\"unclosed\"\n");
    let text = format!("{}---\n{body}", binary_doc("first", ""));
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].document, 2);
    let line = errors[0].line.expect("a syntax error has a line");
    assert!(
        line >= line_of(&text, "unclosed") && line <= text.lines().count() + 1,
        "line {line} should be at or after the unclosed list: {}",
        errors[0]
    );
}

#[test]
fn errors_display_as_path_line_document_field_message() {
    let text = format!(
        "{}---\n{}",
        binary_doc("first", ""),
        binary_doc("x", "  bogus: 1\n")
    );
    let error = single_error(&text);
    let line = line_of(&text, "bogus");
    assert_eq!(line, 14);
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{FILE}:{line}:3: document 2, field spec.bogus: ")),
        "{shown}"
    );
    assert!(shown.ends_with(&error.message), "{shown}");

    let semantic = single_error(&format!(
        "{}---\napiVersion: v1\nkind: Process\nmetadata:\n  name: y\nspec:\n  binary: /bin/true\n",
        binary_doc("first", "")
    ));
    assert_eq!(
        semantic.to_string(),
        format!(
            "{FILE}:8:1: document 2, field apiVersion: apiVersion \"v1\" is not supported; use \"{API_VERSION}\""
        )
    );

    let whole_file = SpecError::whole_file(Path::new(FILE), "cannot read the file".to_string());
    assert_eq!(
        whole_file.to_string(),
        format!("{FILE}: cannot read the file")
    );
}

/// serde_yaml's messages start with the path of the enclosing mapping; the error already names
/// the field, so Display should not say it twice.
#[test]
fn parse_error_messages_do_not_repeat_the_field_path() {
    for body in [
        binary_doc("x", "  restartPolicy: Sometimes\n"),
        binary_doc("x", "  bogus: 1\n"),
        binary_doc("x", "  healthCheck:\n    http: {}\n    interval: ten\n"),
    ] {
        let error = single_error(&body);
        assert!(
            !error.message.starts_with("spec"),
            "the message repeats the path: {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Semantic errors
// ---------------------------------------------------------------------------------------------

/// Asserts `text` has exactly one error, on `field`, on the line containing `needle`, with a
/// message containing `message`.
fn assert_semantic(text: &str, catalog: &Catalog, field: &str, needle: &str, message: &str) {
    let errors = errors_with(text, catalog);
    assert_eq!(errors.len(), 1, "{field}: {errors:#?}");
    let error = &errors[0];
    assert_eq!(error.field, field, "{error}");
    assert_eq!(error.line, Some(line_of(text, needle)), "{error}");
    assert!(error.message.contains(message), "{field}: {error}");
}

#[test]
fn pattern_and_binary_are_exclusive_and_one_is_needed() {
    let catalog = catalog_with([hello_entry()]);
    let both = format!(
        "# c\n{HEAD}metadata:\n  name: x\nspec:\n  namespace: ns\n  pattern: hello-pattern\n  binary: /bin/true\n"
    );
    assert_semantic(&both, &catalog, "spec.binary", "binary:", "not both");

    let neither = format!("# c\n{HEAD}metadata:\n  name: x\nspec:\n  args: [a]\n");
    assert_semantic(
        &neither,
        &catalog,
        "spec",
        "spec:",
        "needs `pattern` (a catalog entry) or `binary`",
    );

    let empty = binary_doc("x", "").replace("/bin/true", "\"  \"");
    assert_semantic(
        &empty,
        &catalog,
        "spec.binary",
        "binary:",
        "binary is empty",
    );
}

#[test]
fn an_unknown_pattern_lists_the_known_ones() {
    let mut other = hello_entry();
    other.name = "alpha-pattern".to_string();
    let catalog = catalog_with([hello_entry(), other]);
    let text = format!("{HEAD}metadata:\n  name: x\nspec:\n  type: pattern\n  pattern: nope\n");
    assert_semantic(
        &text,
        &catalog,
        "spec.pattern",
        "nope",
        "pattern \"nope\" is not in the catalog (known: alpha-pattern, hello-pattern)",
    );
    assert_semantic(
        &text,
        &Catalog::default(),
        "spec.pattern",
        "nope",
        "(known: none)",
    );
}

#[test]
fn isolation_needs_its_namespace_and_session() {
    let no_namespace = binary_doc("x", "  isolation: namespace\n  args: []\n");
    assert_semantic(
        &no_namespace,
        &Catalog::default(),
        "spec.namespace",
        "spec:",
        "isolation namespace needs a namespace",
    );
    let empty_namespace = binary_doc("x", "  isolation: namespace\n  namespace: \"\"\n");
    assert_semantic(
        &empty_namespace,
        &Catalog::default(),
        "spec.namespace",
        "namespace: \"\"",
        "needs a namespace",
    );
    let no_session = binary_doc("x", "  isolation: session\n  namespace: ns\n");
    assert_semantic(
        &no_session,
        &Catalog::default(),
        "spec.sessionId",
        "spec:",
        "isolation session needs a sessionId",
    );
    let both_missing = binary_doc("x", "  isolation: session\n");
    let errors = errors(&both_missing);
    let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
    assert_eq!(fields, vec!["spec.namespace", "spec.sessionId"]);

    let fine = binary_doc(
        "x",
        "  isolation: session\n  namespace: ns\n  sessionId: s1\n",
    );
    let spec = specs(&fine).remove(0).spec;
    assert_eq!(spec.isolation, Isolation::Session);
    assert_eq!(spec.namespace.as_deref(), Some("ns"));
    assert_eq!(spec.session_id.as_deref(), Some("s1"));
}

#[test]
fn injected_variables_cannot_be_overridden() {
    for name in INJECTED_ENV {
        let text = binary_doc(
            "x",
            &format!("  args: []\n  env:\n    OK: fine\n    {name}: mine\n"),
        );
        assert_semantic(
            &text,
            &Catalog::default(),
            "spec.env",
            "env:",
            &format!("{name} is set by the launcher and cannot be overridden"),
        );
    }
}

#[test]
fn environment_variable_names_are_checked() {
    for bad in ["1ABC", "A-B", "WITH SPACE", "É"] {
        let text = binary_doc("x", &format!("  env:\n    \"{bad}\": v\n"));
        assert_semantic(
            &text,
            &Catalog::default(),
            "spec.env",
            "env:",
            &format!("{bad:?} is not a valid environment variable name"),
        );
        let text = binary_doc(
            "x",
            &format!("  inheritEnv:\n    - HOME\n    - \"{bad}\"\n"),
        );
        assert_semantic(
            &text,
            &Catalog::default(),
            "spec.inheritEnv",
            "inheritEnv:",
            "is not a valid environment variable name",
        );
    }
    let good = binary_doc("x", "  env:\n    _UNDER: a\n    lower_1: b\n");
    assert_eq!(specs(&good)[0].spec.env.len(), 2);
}

#[test]
fn api_version_and_kind_are_checked_together() {
    let text = "# c\napiVersion: prism.launcher/v2\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  binary: /bin/true\n  pattern: p\n";
    let errors = errors(text);
    let summary: Vec<(&str, Option<usize>)> = errors
        .iter()
        .map(|error| (error.field.as_str(), error.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("apiVersion", Some(2)),
            ("kind", Some(3)),
            ("spec.pattern", Some(8)),
            ("spec.binary", Some(7)),
        ]
    );
    assert!(errors[0]
        .message
        .contains("\"prism.launcher/v2\" is not supported"));
    assert!(errors[1]
        .message
        .contains("kind \"Deployment\" is not supported; use \"Process\""));
}

#[test]
fn health_check_problems_are_located() {
    let exec = binary_doc(
        "x",
        "  healthCheck:\n    exec:\n      command: [test, -f, ready]\n",
    );
    assert_eq!(
        specs(&exec)[0].spec.health_check.as_ref().unwrap().probe,
        Probe::Exec {
            command: vec!["test".into(), "-f".into(), "ready".into()]
        }
    );
    let empty_exec = binary_doc("x", "  healthCheck:\n    exec:\n      command: []\n");
    assert_semantic(
        &empty_exec,
        &Catalog::default(),
        "spec.healthCheck.exec.command",
        "command:",
        "needs at least a program",
    );
    let two = binary_doc("x", "  healthCheck:\n    http: {}\n    tcp: {}\n");
    assert_semantic(
        &two,
        &Catalog::default(),
        "spec.healthCheck",
        "healthCheck:",
        "give one probe: http, tcp or exec, not several",
    );
    let restart = binary_doc(
        "x",
        "  restartPolicy: OnFailure\n  successExitCodes: [0, 3]\n  backoff:\n    initial: 2s\n    max: 1m\n    resetAfter: 5m\n    failureThreshold: 7\n",
    );
    let restart = &specs(&restart)[0].spec;
    assert_eq!(restart.success_exit_codes, [0, 3]);
    assert_eq!(
        restart.backoff,
        BackoffOverrides {
            initial: Some(Duration::from_secs(2)),
            max: Some(Duration::from_secs(60)),
            reset_after: Some(Duration::from_secs(300)),
            failure_threshold: Some(7),
        }
    );
    let backwards = binary_doc("x", "  backoff:\n    initial: 2m\n    max: 1m\n");
    assert_semantic(
        &backwards,
        &Catalog::default(),
        "spec.backoff.initial",
        "initial:",
        "longer than max",
    );
    let zero = binary_doc("x", "  backoff:\n    failureThreshold: 0\n");
    assert_semantic(
        &zero,
        &Catalog::default(),
        "spec.backoff.failureThreshold",
        "failureThreshold:",
        "at least 1",
    );
    let none = binary_doc("x", "  healthCheck:\n    interval: 5s\n");
    assert_semantic(
        &none,
        &Catalog::default(),
        "spec.healthCheck",
        "healthCheck:",
        "needs a probe",
    );
    let fast = binary_doc("x", "  healthCheck:\n    tcp: {}\n    interval: 50ms\n");
    assert_semantic(
        &fast,
        &Catalog::default(),
        "spec.healthCheck.interval",
        "interval:",
        "interval 50ms is too short; it must be at least 100ms",
    );
    let edge = binary_doc("x", "  healthCheck:\n    tcp: {}\n    interval: 100ms\n");
    assert_eq!(
        specs(&edge)[0].spec.health_check.as_ref().unwrap().interval,
        Duration::from_millis(100)
    );
    let zero_timeout = binary_doc("x", "  healthCheck:\n    tcp: {}\n    timeout: 0s\n");
    assert_semantic(
        &zero_timeout,
        &Catalog::default(),
        "spec.healthCheck.timeout",
        "timeout:",
        "timeout must be positive",
    );
    let relative_path = binary_doc("x", "  healthCheck:\n    http:\n      path: health\n");
    assert_semantic(
        &relative_path,
        &Catalog::default(),
        "spec.healthCheck.http.path",
        "path:",
        "must start with '/'",
    );
    let zero_failures = binary_doc(
        "x",
        "  healthCheck:\n    tcp: {}\n    failureThreshold: 0\n",
    );
    assert_semantic(
        &zero_failures,
        &Catalog::default(),
        "spec.healthCheck.failureThreshold",
        "failureThreshold",
        "failureThreshold must be at least 1",
    );
    let zero_successes = binary_doc(
        "x",
        "  healthCheck:\n    tcp: {}\n    successThreshold: 0\n",
    );
    assert_semantic(
        &zero_successes,
        &Catalog::default(),
        "spec.healthCheck.successThreshold",
        "successThreshold",
        "successThreshold must be at least 1",
    );
}

#[test]
fn port_zero_cannot_be_requested() {
    let grpc = binary_doc("x", "  ports:\n    grpc: 0\n    health: 8000\n");
    assert_semantic(
        &grpc,
        &Catalog::default(),
        "spec.ports.grpc",
        "grpc:",
        "port 0 cannot be requested",
    );
    let health = binary_doc("x", "  ports:\n    grpc: 8000\n    health: 0\n");
    assert_semantic(
        &health,
        &Catalog::default(),
        "spec.ports.health",
        "health:",
        "port 0 cannot be requested",
    );
}

#[test]
fn bad_resource_quantities_are_located() {
    let cpu = binary_doc(
        "x",
        "  resources:\n    cpuLimit: lots\n    memoryLimit: 1Gi\n",
    );
    assert_semantic(
        &cpu,
        &Catalog::default(),
        "spec.resources.cpuLimit",
        "cpuLimit",
        "is not a CPU quantity",
    );
    let memory = binary_doc(
        "x",
        "  resources:\n    cpuLimit: 0.5\n    memoryLimit: 12XB\n",
    );
    assert_semantic(
        &memory,
        &Catalog::default(),
        "spec.resources.memoryLimit",
        "memoryLimit",
        "is not a memory quantity",
    );
    let numbers = binary_doc(
        "x",
        "  resources:\n    cpuLimit: 2\n    memoryLimit: 4194304\n",
    );
    assert_eq!(
        specs(&numbers)[0].spec.resources,
        Some(Resources {
            cpu_millis: Some(2000),
            memory_bytes: Some(4194304),
        })
    );
}

#[test]
fn semantic_errors_of_every_document_are_reported_with_file_lines() {
    let text = format!(
        "# header\n---\n{}---\n# second\n{}",
        binary_doc("a", "  ports:\n    grpc: 0\n"),
        binary_doc("b", "  env:\n    PROCESS_ID: x\n"),
    );
    let errors = errors(&text);
    let summary: Vec<(usize, &str, Option<usize>)> = errors
        .iter()
        .map(|error| (error.document, error.field.as_str(), error.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "spec.ports.grpc", Some(line_of(&text, "grpc: 0"))),
            (2, "spec.env", Some(line_of(&text, "env:"))),
        ]
    );
}

#[test]
fn flow_style_errors_fall_back_to_the_nearest_line_found() {
    let text =
        format!("# c\n{HEAD}metadata: {{name: x}}\nspec: {{binary: /bin/true, pattern: p}}\n");
    let errors = errors(&text);
    assert!(!errors.is_empty());
    for error in &errors {
        assert_eq!(error.line, Some(line_of(&text, "spec:")), "{error}");
    }
}

#[test]
fn duplicate_names_in_one_file_name_the_first_document() {
    let text = format!(
        "{}---\n{}---\n{}",
        binary_doc("same", ""),
        binary_doc("other", ""),
        binary_doc("same", ""),
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = &errors[0];
    assert_eq!(error.document, 3);
    assert_eq!(error.field, "metadata.name");
    assert_eq!(error.message, "name same is already declared by document 1");
    assert!(error
        .line
        .is_some_and(|line| line > line_of(&text, "other")));
}

/// The duplicate's error names `metadata.name`, so its line should be the name's, as for every
/// other error on a field written in block style.
#[test]
fn a_duplicate_name_is_reported_on_the_name_line() {
    let text = format!("{}---\n{}", binary_doc("dup", ""), binary_doc("dup", ""));
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    // The second `name: dup` line, in document 2.
    let expected = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains("name: dup"))
        .map(|(index, _)| index + 1)
        .nth(1);
    assert_eq!(errors[0].line, expected, "{}", errors[0]);
}

// ---------------------------------------------------------------------------------------------
// Catalog inheritance and paths
// ---------------------------------------------------------------------------------------------

#[test]
fn a_pattern_spec_inherits_from_its_catalog_entry() {
    let catalog = catalog_with([hello_entry()]);
    let text = format!(
        "{HEAD}metadata:\n  name: hello-ns\nspec:\n  pattern: hello-pattern\n  namespace: my-app\n  env:\n    LOG_LEVEL: debug\n    EXTRA: \"1\"\n"
    );
    let spec = parse_with(&text, &catalog).unwrap().remove(0).spec;
    let entry = hello_entry();
    assert_eq!(spec.pattern.as_deref(), Some("hello-pattern"));
    assert_eq!(spec.executable, entry.executable);
    assert_eq!(spec.isolation, Isolation::Namespace);
    assert_eq!(spec.namespace.as_deref(), Some("my-app"));
    assert_eq!(
        spec.env,
        BTreeMap::from([
            ("EXTRA".to_string(), "1".to_string()),
            ("LOG_LEVEL".to_string(), "debug".to_string()),
            ("REGION".to_string(), "eu-west".to_string()),
        ])
    );
    assert_eq!(spec.health_check, entry.health_check);
    assert_eq!(spec.resources, entry.resources);
    assert_eq!(
        spec.requested_ports,
        RequestedPorts {
            grpc: None,
            health: Some(9090),
        }
    );
}

#[test]
fn a_pattern_spec_overrides_what_it_states() {
    let catalog = catalog_with([hello_entry()]);
    let text = format!(
        "{HEAD}metadata:\n  name: hello-shared\nspec:\n  pattern: hello-pattern\n  isolation: none\n  healthCheck:\n    tcp: {{}}\n  resources:\n    memoryLimit: 64Mi\n  ports:\n    grpc: 7100\n    health: 7101\n"
    );
    let spec = parse_with(&text, &catalog).unwrap().remove(0).spec;
    assert_eq!(spec.isolation, Isolation::None);
    assert_eq!(spec.namespace, None);
    assert_eq!(spec.health_check.unwrap().probe, Probe::Tcp { port: None });
    assert_eq!(
        spec.resources,
        Some(Resources {
            cpu_millis: None,
            memory_bytes: Some(64 << 20),
        })
    );
    assert_eq!(
        spec.requested_ports,
        RequestedPorts {
            grpc: Some(7100),
            health: Some(7101),
        }
    );
    assert_eq!(spec.env.get("REGION").map(String::as_str), Some("eu-west"));
}

#[test]
fn an_inherited_isolation_still_needs_a_namespace() {
    let catalog = catalog_with([hello_entry()]);
    let text = format!("{HEAD}metadata:\n  name: x\nspec:\n  pattern: hello-pattern\n");
    assert_semantic(
        &text,
        &catalog,
        "spec.namespace",
        "spec:",
        "isolation namespace needs a namespace",
    );
}

#[test]
fn catalog_environment_is_checked_too() {
    let mut entry = hello_entry();
    entry
        .environment
        .insert("HEALTH_PORT".to_string(), "1".to_string());
    let catalog = catalog_with([entry]);
    let text =
        format!("{HEAD}metadata:\n  name: x\nspec:\n  pattern: hello-pattern\n  namespace: n\n");
    assert_semantic(
        &text,
        &catalog,
        "spec.env",
        "spec:",
        "HEALTH_PORT is set by the launcher",
    );
}

#[test]
fn relative_binaries_and_working_dirs_resolve_against_the_base_dir() {
    let text = format!(
        "{}---\n{}---\n{}",
        binary_doc("abs", ""),
        binary_doc("rel", "  workingDir: data\n").replace("/bin/true", "bin/worker"),
        binary_doc("dot", "  workingDir: ./run/\n").replace("/bin/true", "./tools/run.sh"),
    );
    let specs = specs(&text);
    assert_eq!(specs[0].spec.executable, PathBuf::from("/bin/true"));
    assert_eq!(specs[1].spec.executable, PathBuf::from("/specs/bin/worker"));
    assert_eq!(
        specs[1].spec.working_dir,
        Some(PathBuf::from("/specs/data"))
    );
    assert_eq!(
        specs[2].spec.executable,
        PathBuf::from("/specs/tools/run.sh")
    );
    assert!(specs[2]
        .spec
        .working_dir
        .as_ref()
        .unwrap()
        .starts_with("/specs/run"));

    let relative_base = parse_spec_text(
        Path::new("specs/x.yaml"),
        &binary_doc("rel", "").replace("/bin/true", "bin/worker"),
        Path::new("specs"),
        &Catalog::default(),
    )
    .unwrap();
    let executable = &relative_base[0].spec.executable;
    assert!(executable.is_absolute(), "{}", executable.display());
    assert!(
        executable.ends_with("specs/bin/worker"),
        "{}",
        executable.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

#[test]
fn load_spec_file_resolves_against_the_file_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("procs.yaml");
    std::fs::write(&path, binary_doc("w", "").replace("/bin/true", "bin/w")).unwrap();
    let specs = load_spec_file(&path, &Catalog::default()).unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].spec.executable, dir.path().join("bin/w"));
}

#[test]
fn load_spec_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, binary_doc("w", "  bogus: 1\n")).unwrap();
    let errors = load_spec_file(&path, &Catalog::default()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, path);
    assert!(errors[0]
        .to_string()
        .starts_with(&format!("{}:7:3: document 1", path.display())));
}

#[test]
fn load_spec_file_refuses_files_that_are_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let size = MAX_SPEC_FILE_BYTES + 1;
    std::fs::write(&path, "#".repeat(size as usize)).unwrap();
    let errors = load_spec_file(&path, &Catalog::default()).unwrap_err();
    assert_eq!(
        errors,
        vec![SpecError {
            file: path.clone(),
            document: 0,
            field: String::new(),
            line: None,
            column: None,
            message: format!(
                "the file is {size} bytes; it may be at most {MAX_SPEC_FILE_BYTES} bytes"
            ),
        }]
    );

    let at_limit = dir.path().join("limit.yaml");
    std::fs::write(&at_limit, "#".repeat(MAX_SPEC_FILE_BYTES as usize)).unwrap();
    assert_eq!(load_spec_file(&at_limit, &Catalog::default()), Ok(vec![]));
}

#[test]
fn a_refused_value_is_quoted_short_even_in_serdes_own_messages() {
    let long = "9".repeat(5000);
    let errors = errors_with(
        &binary_doc(
            "x",
            &format!("  ports: {{grpc: \"{long}\"}}\n  env: {{{long}: [1]}}\n"),
        ),
        &Catalog::default(),
    );
    assert!(!errors.is_empty());
    for error in &errors {
        assert!(error.message.len() < 600, "{} bytes", error.message.len());
        assert!(error.field.len() < 600, "{} bytes", error.field.len());
    }
    assert_eq!(errors[0].line, Some(7), "{}", errors[0]);
    assert!(errors[0].message.contains("(5"), "{}", errors[0].message);
    // A 5000-character plain key is also a syntax error (keys are at most 1024), named after.
    assert!(
        errors[1..]
            .iter()
            .all(|error| error.message.starts_with("YAML syntax")),
        "{errors:?}"
    );
}

#[test]
fn a_byte_order_mark_is_accepted_and_deep_nesting_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let with_bom = dir.path().join("bom.yaml");
    std::fs::write(
        &with_bom,
        "\u{feff}apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: bom\nspec:\n  binary: /bin/true\n",
    )
    .unwrap();
    let specs = load_spec_file(&with_bom, &Catalog::default()).unwrap();
    assert_eq!(specs[0].id.as_str(), "bom");

    let nested = dir.path().join("nested.yaml");
    std::fs::write(
        &nested,
        format!(
            "kind: Process\napiVersion: {}{}\n",
            "[".repeat(500_000),
            "]".repeat(500_000)
        ),
    )
    .unwrap();
    let errors = load_spec_file(&nested, &Catalog::default()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, Some(2));
    assert!(
        errors[0]
            .message
            .contains("nested more than 64 levels deep"),
        "{}",
        errors[0].message
    );
}

#[test]
fn load_spec_file_never_reads_a_device_or_waits_on_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let zero = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let folder = dir.path().join("folder.yaml");
    std::fs::create_dir(&folder).unwrap();
    for (path, what) in [
        (fifo, "a FIFO"),
        (zero, "a device"),
        (folder, "a directory"),
    ] {
        let errors = load_spec_file(&path, &Catalog::default()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].message,
            format!("it is {what}, not a regular file; only regular files are read")
        );
    }
    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"name: caf\xe9\n").unwrap();
    let errors = load_spec_file(&latin1, &Catalog::default()).unwrap_err();
    assert_eq!(
        errors[0].message,
        "cannot read the file: it is not UTF-8 (at byte 9)"
    );
}

#[test]
fn load_spec_file_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let errors = load_spec_file(&path, &Catalog::default()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, path);
    assert_eq!(errors[0].document, 0);
    assert_eq!(errors[0].line, None);
    assert!(
        errors[0].message.starts_with("cannot read the file"),
        "{}",
        errors[0]
    );
}

// ---------------------------------------------------------------------------------------------
// The repository's own examples and manifests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_repository_manifests_load() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests"));
    let (catalog, errors) = load_catalog(dir);
    assert!(errors.is_empty(), "{errors:#?}");
    let entry = catalog
        .get("hello-pattern")
        .expect("hello-pattern is in the catalog");
    assert_eq!(entry.version, "1.0.0");
    assert_eq!(entry.executable, dir.join("hello-pattern/hello-pattern"));
    assert_eq!(entry.isolation, Some(Isolation::Namespace));
    assert_eq!(entry.health_port, Some(9090));
    let check = entry.health_check.as_ref().expect("a health check");
    assert_eq!(
        check.probe,
        Probe::Http {
            path: "/health".to_string(),
            port: None,
        }
    );
    assert_eq!(check.interval, Duration::from_secs(30));
    assert_eq!(check.timeout, Duration::from_secs(5));
    assert_eq!(check.failure_threshold, 3);
    assert_eq!(
        entry.resources,
        Some(Resources {
            cpu_millis: Some(1000),
            memory_bytes: Some(268_435_456),
        })
    );
    assert_eq!(
        entry.environment.get("LOG_LEVEL").map(String::as_str),
        Some("info")
    );
}

#[test]
fn the_repository_examples_load_against_the_repository_catalog() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (catalog, errors) = load_catalog(&root.join("manifests"));
    assert!(errors.is_empty(), "{errors:#?}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("examples/desired-state"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples found");
    let mut total = 0;
    for file in &files {
        match load_spec_file(file, &catalog) {
            Ok(specs) => {
                assert!(!specs.is_empty(), "{} has no spec", file.display());
                total += specs.len();
            }
            Err(errors) => panic!(
                "{} does not load:\n{}",
                file.display(),
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    assert!(total >= files.len());
}

// ---------------------------------------------------------------------------------------------
// Catalog manifest errors
// ---------------------------------------------------------------------------------------------

fn write_manifest(root: &Path, folder: &str, text: &str) -> PathBuf {
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_manifests_are_reported_and_the_good_ones_kept() {
    let root = tempfile::tempdir().unwrap();
    write_manifest(
        root.path(),
        "good",
        "name: good\nexecutable: ./bin/good\nhealthcheck:\n  port: 9000\nresources:\n  cpu_limit: 500m\n",
    );
    let misnamed = write_manifest(root.path(), "misnamed", "name: other\nexecutable: ./x\n");
    let unknown = write_manifest(
        root.path(),
        "unknown",
        "name: unknown\nexecutable: ./x\nreplicas: 3\n",
    );
    let duration = write_manifest(
        root.path(),
        "duration",
        "name: duration\nexecutable: ./x\nhealthcheck:\n  interval: ten\n",
    );
    let fast = write_manifest(
        root.path(),
        "fast",
        "name: fast\nexecutable: ./x\nhealthcheck:\n  interval: 10ms\n",
    );
    std::fs::create_dir_all(root.path().join("no-manifest")).unwrap();

    let (catalog, errors) = load_catalog(root.path());
    let names: Vec<&str> = catalog.entries().map(|entry| entry.name.as_str()).collect();
    assert_eq!(names, vec!["good"]);
    let good = catalog.get("good").unwrap();
    assert_eq!(good.executable, root.path().join("good/bin/good"));
    assert_eq!(good.health_port, Some(9000));
    assert_eq!(
        good.resources,
        Some(Resources {
            cpu_millis: Some(500),
            memory_bytes: None,
        })
    );
    assert_eq!(good.manifest, root.path().join("good/manifest.yaml"));

    let by_path: BTreeMap<&Path, &CatalogError> = errors
        .iter()
        .map(|error| (error.manifest.as_path(), error))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let message = |path: &Path| by_path[path].message.clone();
    assert!(
        message(&misnamed).contains("name \"other\" does not match its folder \"misnamed\""),
        "{}",
        message(&misnamed)
    );
    assert!(
        message(&unknown).contains("unknown field `replicas`"),
        "{}",
        message(&unknown)
    );
    assert!(
        message(&unknown).contains("line 3"),
        "{}",
        message(&unknown)
    );
    assert!(
        message(&duration).contains("is not a duration"),
        "{}",
        message(&duration)
    );
    assert!(message(&fast).contains("too short"), "{}", message(&fast));
    assert!(by_path[misnamed.as_path()]
        .to_string()
        .starts_with(&misnamed.display().to_string()));
}

#[test]
fn a_manifest_may_narrow_config_keys_but_never_allow_a_loader_variable() {
    let root = tempfile::tempdir().unwrap();
    write_manifest(
        root.path(),
        "narrow",
        "name: narrow\nexecutable: ./x\nenvironment: {PATH: /opt/narrow/bin}\n\
         allowed_config_keys: [LOG_LEVEL, FOO]\n",
    );
    let widening = write_manifest(
        root.path(),
        "widening",
        "name: widening\nexecutable: ./x\nallowed_config_keys: [LOG_LEVEL, LD_PRELOAD, 1BAD]\n",
    );
    let (catalog, errors) = load_catalog(root.path());
    let narrow = catalog.get("narrow").unwrap();
    assert_eq!(
        narrow.allowed_config_keys,
        Some(vec!["LOG_LEVEL".to_string(), "FOO".to_string()])
    );
    // The manifest's own environment is the operator's: PATH is fine there.
    assert_eq!(narrow.environment["PATH"], "/opt/narrow/bin");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].manifest, widening);
    assert!(
        errors[0].message.contains(
            "allowed_config_keys: \"LD_PRELOAD\" changes how programs are loaded or interpreted"
        ),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0]
            .message
            .contains("allowed_config_keys: \"1BAD\" is not a valid environment variable name"),
        "{}",
        errors[0].message
    );
}

#[test]
fn a_missing_patterns_directory_is_one_error() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("nope");
    let (catalog, errors) = load_catalog(&missing);
    assert_eq!(catalog.entries().count(), 0);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].manifest, missing);
    assert!(errors[0]
        .message
        .contains("cannot read the patterns directory"));
}

#[test]
fn specs_resolve_against_a_loaded_catalog() {
    let root = tempfile::tempdir().unwrap();
    write_manifest(
        root.path(),
        "echo",
        "name: echo\nexecutable: ./echo\nisolation_level: none\nenvironment:\n  MODE: fast\nhealthcheck:\n  port: 9100\n  interval: 1s\n",
    );
    let (catalog, errors) = load_catalog(root.path());
    assert!(errors.is_empty(), "{errors:#?}");
    let text = format!("{HEAD}metadata:\n  name: shared-echo\nspec:\n  pattern: echo\n");
    let spec = parse_with(&text, &catalog).unwrap().remove(0).spec;
    assert_eq!(spec.executable, root.path().join("echo/echo"));
    assert_eq!(spec.isolation, Isolation::None);
    assert_eq!(spec.env.get("MODE").map(String::as_str), Some("fast"));
    assert_eq!(spec.requested_ports.health, Some(9100));
    let check = spec.health_check.unwrap();
    assert_eq!(check.interval, Duration::from_secs(1));
    assert_eq!(
        check.probe,
        Probe::Http {
            path: "/health".to_string(),
            port: None,
        }
    );
}

#[test]
fn every_process_type_can_be_declared_and_is_validated() {
    let proxy = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: p}\nspec:\n  type: proxy\n  binary: /bin/proxy\n  proxy:\n    proxyId: proxy-01\n    controlPort: 9090\n    dataPort: 9090\n";
    let errors = errors_with(proxy, &Catalog::default());
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "spec.proxy.dataPort");
    assert_eq!(
        errors[0].line,
        Some(line_of(proxy, "dataPort")),
        "{}",
        errors[0]
    );
    let missing = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: b}\nspec:\n  type: backend\n  binary: /bin/b\n";
    let errors = errors_with(missing, &Catalog::default());
    assert!(
        errors[0].message.contains("needs its backend config"),
        "{errors:#?}"
    );
    let utility = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: u}\nspec:\n  type: utility\n  binary: /bin/u\n  utility: {utilityType: log-collector, targetProcesses: [a, b]}\n";
    let spec = &specs(utility)[0].spec;
    assert_eq!(
        spec.type_config,
        TypeConfig::Utility(UtilityConfig {
            utility_type: "log-collector".into(),
            settings: BTreeMap::new(),
            target_processes: vec!["a".into(), "b".into()],
        })
    );
    let two = "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: t}\nspec:\n  type: utility\n  binary: /bin/u\n  utility: {utilityType: x}\n  backend: {backendType: y, connectionString: z}\n";
    let errors = errors_with(two, &Catalog::default());
    assert!(
        errors
            .iter()
            .any(|error| error.message.contains("at most one of")),
        "{errors:#?}"
    );
}

#[test]
fn a_syntax_error_after_a_type_error_is_named_with_its_line() {
    let errors = errors_with(
        "apiVersion: [unclosed\nkind: Process\n",
        &Catalog::default(),
    );
    let lines: Vec<(Option<usize>, &str)> = errors
        .iter()
        .map(|error| (error.line, error.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (Some(1), "invalid type: sequence, expected a string"),
            (Some(2), "YAML syntax: did not find expected ',' or ']'"),
        ]
    );
}

#[test]
fn a_memory_limit_no_program_can_start_under_is_refused_with_its_field() {
    let errors = errors_with(
        &binary_doc("tiny", "  resources: {memoryLimit: 1Mi}\n"),
        &Catalog::default(),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.resources.memoryLimit");
    assert!(
        errors[0]
            .message
            .contains("memoryLimit of 1048576 bytes is too small for any program to start"),
        "{}",
        errors[0].message
    );
    assert!(parse_with(
        &binary_doc("enough", "  resources: {memoryLimit: 4Mi}\n"),
        &Catalog::default()
    )
    .is_ok());
}

#[test]
fn a_document_written_on_its_marker_line_is_read_not_dropped() {
    let text = format!(
        "{HEAD}metadata: {{name: first}}\nspec: {{binary: /bin/true}}\n--- {{apiVersion: prism.launcher/v1, kind: Process, metadata: {{name: second}}, spec: {{binary: /bin/true}}}}\n"
    );
    let ids: Vec<String> = specs(&text)
        .iter()
        .map(|spec| spec.id.to_string())
        .collect();
    assert_eq!(ids, ["first", "second"]);
}

#[test]
fn the_documents_of_a_text_are_the_ones_parsing_numbers_and_their_names_read_alone() {
    let text = format!(
        "# a comment before anything\n{HEAD}metadata: {{name: one}}\nspec: {{binary: /bin/true}}\n\
         ---\n# only a comment\n---\n{HEAD}metadata: {{name: two}}\nspec: {{binary: /bin/true, bogus: 1}}\n"
    );
    let documents = document_texts(&text);
    assert_eq!(documents.len(), 2, "{documents:?}");
    assert!(documents[0].contains("name: one") && documents[1].contains("name: two"));
    // What `delete -f` needs: the names, whatever else the documents hold.
    assert_eq!(
        declared_names(Path::new(FILE), &text).unwrap(),
        [id("one"), id("two")]
    );
    let nameless = format!("{HEAD}metadata: {{}}\n---\n{HEAD}metadata: {{name: .hidden}}\n");
    let errors = declared_names(Path::new(FILE), &nameless).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors.iter().all(|error| error.field == "metadata.name"));
    assert_eq!((errors[0].document, errors[1].document), (1, 2));
}

/// Regression: `resources: {}` made a spec that differed from one without the block while
/// `changed_fields` named nothing, so `apply` said "unchanged" and the process was replaced.
#[test]
fn an_empty_resources_block_is_the_same_spec_as_none() {
    let without = specs(&format!(
        "{HEAD}metadata: {{name: p}}\nspec:\n  binary: /bin/sleep\n"
    ));
    let empty = specs(&format!(
        "{HEAD}metadata: {{name: p}}\nspec:\n  binary: /bin/sleep\n  resources: {{}}\n"
    ));
    assert_eq!(empty[0].spec.resources, None);
    assert_eq!(empty[0].spec, without[0].spec);
    assert!(empty[0].spec.changed_fields(&without[0].spec).is_empty());
    assert!(!empty[0].spec.requires_restart_from(&without[0].spec));
}
