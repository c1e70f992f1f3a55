//! The desired-state spec file format (Kubernetes-style YAML, DESIGN.md §3) and its validation.
//!
//! Parsing is strict and collects every error it can: each document is checked on its own, and
//! each error names the file, the document, the field and the line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::catalog::Catalog;
use super::values::{parse_cpu, parse_memory, DurationValue, QuantityValue, TextVisitor, Word};
use super::yaml_shape::check_shape;
use crate::reconcile::{
    echo, shortened, BackendConfig, BackoffOverrides, HealthCheck, HealthCheckField, Isolation,
    PatternConfig, Probe, ProcessId, ProcessSpec, ProcessType, ProxyConfig, RequestedPorts,
    Resources, RestartPolicy, Secret, SpecField, TypeConfig, UtilityConfig,
};

pub const API_VERSION: &str = "prism.launcher/v1";
pub const KIND: &str = "Process";

/// How much of serde's and YAML's own messages (and of a field path, which holds map keys) an
/// error keeps: they quote the value they refuse whole.
const MAX_QUOTED_CHARS: usize = 256;

/// Largest spec file read; bigger files are refused rather than parsed.
pub const MAX_SPEC_FILE_BYTES: u64 = 1024 * 1024;

/// One problem in a spec file, located as precisely as the YAML allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file; 0 when the file itself is the problem.
    pub document: usize,
    /// Dotted path of the field, empty when the whole document is concerned.
    pub field: String,
    pub line: Option<usize>,
    /// 1-based column on `line`, where the parser or the field's key tells it.
    pub column: Option<usize>,
    pub message: String,
}

impl SpecError {
    /// A problem of the file as a whole (it cannot be read, or is not one to read).
    pub fn whole_file(file: &Path, message: String) -> SpecError {
        SpecError {
            file: file.to_path_buf(),
            document: 0,
            field: String::new(),
            line: None,
            column: None,
            message,
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if !self.field.is_empty() {
            write!(f, ", field {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A validated, resolved spec from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub id: ProcessId,
    pub spec: ProcessSpec,
    pub document: usize,
    /// The line of its `metadata.name` (else of the document's start).
    pub line: usize,
}

/// Reads, parses and resolves a spec file. Either every document is valid and all are returned,
/// or every error found is.
pub fn load_spec_file(path: &Path, catalog: &Catalog) -> Result<Vec<FileSpec>, Vec<SpecError>> {
    let file_error = |message: String| vec![SpecError::whole_file(path, message)];
    if path.file_name().and_then(|name| name.to_str()).is_none() {
        return Err(file_error(
            "the file name is not UTF-8, which status, logs and the store cannot name; rename \
             the file"
                .to_string(),
        ));
    }
    let text = read_bounded_text(path, MAX_SPEC_FILE_BYTES).map_err(file_error)?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse_spec_text(path, &text, base_dir, catalog)
}

/// The text of the regular file at `path`, refused (with the message) when it is something else
/// (a FIFO, whose open would block; a device such as `/dev/zero`, which never ends), larger than
/// `max_bytes`, or not UTF-8. At most `max_bytes + 1` bytes are ever read, even from a file
/// that grows while it is read. Spec files and catalog manifests are read through it.
pub fn read_bounded_text(path: &Path, max_bytes: u64) -> Result<String, String> {
    use std::io::Read;

    use std::os::unix::fs::OpenOptionsExt;

    let cannot = |error: std::io::Error| format!("cannot read the file: {error}");
    let not_regular = |metadata: &std::fs::Metadata| {
        let kind = metadata.file_type();
        let what = if kind.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&kind) {
            "a FIFO"
        } else if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            "a socket"
        } else if std::os::unix::fs::FileTypeExt::is_char_device(&kind)
            || std::os::unix::fs::FileTypeExt::is_block_device(&kind)
        {
            "a device"
        } else {
            "not a regular file"
        };
        format!("it is {what}, not a regular file; only regular files are read")
    };
    // Looked at before it is opened (opening some devices does something), and again through
    // the opened descriptor, in case it was swapped in between. Opened without blocking, so a
    // FIFO put there at that moment cannot hold the reader.
    let metadata = std::fs::metadata(path).map_err(cannot)?;
    if !metadata.is_file() {
        return Err(not_regular(&metadata));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    if !metadata.is_file() {
        return Err(not_regular(&metadata));
    }
    if metadata.len() > max_bytes {
        return Err(format!(
            "the file is {} bytes; it may be at most {max_bytes} bytes",
            metadata.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "the file grew past {max_bytes} bytes while it was read; it may be at most \
             {max_bytes} bytes"
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|error| {
        format!(
            "cannot read the file: it is not UTF-8 (at byte {})",
            error.utf8_error().valid_up_to()
        )
    })?;
    // Some editors on Windows start a UTF-8 file with a byte-order mark, which YAML allows.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Parses and resolves the text of a spec file; `base_dir` anchors relative paths.
pub fn parse_spec_text(
    path: &Path,
    text: &str,
    base_dir: &Path,
    catalog: &Catalog,
) -> Result<Vec<FileSpec>, Vec<SpecError>> {
    if let Err(problem) = check_shape(text) {
        return Err(vec![SpecError {
            line: Some(problem.line()),
            ..SpecError::whole_file(path, problem.to_string())
        }]);
    }
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    for document in split_documents(text) {
        let mut error_at = |field: &str, at: Option<(usize, Option<usize>)>, message: String| {
            errors.push(SpecError {
                file: path.to_path_buf(),
                document: document.index,
                field: field.to_string(),
                line: at.map(|(line, _)| line),
                column: at.and_then(|(_, column)| column),
                message,
            });
        };
        let parsed: Result<SpecDocument, _> =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(document.text));
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                let field = error.path().to_string();
                let inner = error.into_inner();
                let at = inner.location().map(|location| {
                    (
                        document.first_line + location.line() - 1,
                        Some(location.column()),
                    )
                });
                let field = if field == "." { String::new() } else { field };
                let message = clean_yaml_message(&inner.to_string(), &field);
                // serde quotes a value it refuses whole, and a map key can be any length.
                error_at(
                    &shortened(&field, MAX_QUOTED_CHARS),
                    at,
                    shortened(&message, MAX_QUOTED_CHARS),
                );
                // The typed parse stops at the first value of the wrong type, which may come
                // before a syntax error (`apiVersion: [unclosed` is "a sequence, expected a
                // string"): the syntax error, which the author must fix first, is named too.
                if let Err(syntax) = serde_yaml::from_str::<serde_yaml::Value>(document.text) {
                    if let Some(location) = syntax.location() {
                        let line = document.first_line + location.line() - 1;
                        let message = clean_yaml_message(&syntax.to_string(), "");
                        if message != clean_yaml_message(&inner.to_string(), "") {
                            error_at(
                                "",
                                Some((line, Some(location.column()))),
                                format!("YAML syntax: {}", shortened(&message, MAX_QUOTED_CHARS)),
                            );
                        }
                    }
                }
                continue;
            }
        };
        match parsed.resolve(base_dir, catalog) {
            Ok((id, spec)) => specs.push(FileSpec {
                id,
                spec,
                document: document.index,
                line: locate_field(document.text, "metadata.name")
                    .map_or(document.first_line, |(offset, _)| {
                        document.first_line + offset
                    }),
            }),
            Err(problems) => {
                for problem in problems {
                    // The field's key when the text has it, else the document's first line
                    // (a field left out, or written in flow style).
                    let at = locate_field(document.text, &problem.field)
                        .map_or((document.first_line, None), |(offset, column)| {
                            (document.first_line + offset, Some(column))
                        });
                    error_at(&problem.field, Some(at), problem.message);
                }
            }
        }
    }
    let mut seen: BTreeMap<&ProcessId, usize> = BTreeMap::new();
    for spec in &specs {
        if let Some(first) = seen.insert(&spec.id, spec.document) {
            errors.push(SpecError {
                file: path.to_path_buf(),
                document: spec.document,
                field: "metadata.name".to_string(),
                line: Some(spec.line),
                column: None,
                message: format!("name {} is already declared by document {first}", spec.id),
            });
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

/// The text of each document of a spec file, in order (`FileSpec::document` 1 is the first),
/// as `parse_spec_text` reads them: documents of nothing but comments and blank lines are left
/// out.
pub fn document_texts(text: &str) -> Vec<&str> {
    split_documents(text)
        .into_iter()
        .map(|document| document.text)
        .collect()
}

/// The names (`metadata.name`) a spec file's text declares, without checking anything else of
/// its documents (what `delete -f` needs of a file: which processes it names); every document
/// whose name cannot be read is an error.
pub fn declared_names(path: &Path, text: &str) -> Result<Vec<ProcessId>, Vec<SpecError>> {
    /// Only the name; every other field is ignored.
    #[derive(Deserialize)]
    struct NamedDocument {
        metadata: NamedMetadata,
    }
    #[derive(Deserialize)]
    struct NamedMetadata {
        name: NameValue,
    }
    if let Err(problem) = check_shape(text) {
        return Err(vec![SpecError {
            line: Some(problem.line()),
            ..SpecError::whole_file(path, problem.to_string())
        }]);
    }
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for document in split_documents(text) {
        match serde_yaml::from_str::<NamedDocument>(document.text) {
            Ok(named) => names.push(named.metadata.name.0),
            Err(error) => errors.push(SpecError {
                file: path.to_path_buf(),
                document: document.index,
                field: "metadata.name".to_string(),
                line: error
                    .location()
                    .map(|location| document.first_line + location.line() - 1),
                column: None,
                message: shortened(
                    &clean_yaml_message(&error.to_string(), ""),
                    MAX_QUOTED_CHARS,
                ),
            }),
        }
    }
    if errors.is_empty() {
        Ok(names)
    } else {
        Err(errors)
    }
}

/// serde_yaml prefixes its messages with the path of the enclosing mapping and appends
/// " at line L column C"; we report the field and the line ourselves.
fn clean_yaml_message(message: &str, field: &str) -> String {
    let message = match message.find(" at line ") {
        Some(index) => &message[..index],
        None => message,
    };
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && field.starts_with(path) => rest.to_string(),
        _ => message.to_string(),
    }
}

struct Document<'a> {
    index: usize,
    /// 1-based line of the document's first line in the file.
    first_line: usize,
    text: &'a str,
}

/// Splits a multi-document YAML text on `---` lines, skipping documents with nothing but
/// comments and blank lines.
fn split_documents<'a>(text: &'a str) -> Vec<Document<'a>> {
    let mut documents = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut byte = 0;
    let push = |documents: &mut Vec<Document<'a>>, start: usize, end: usize, line: usize| {
        let chunk = &text[start..end];
        let has_content = chunk.lines().any(|line| {
            let trimmed = line.trim();
            !trimmed.is_empty() && !trimmed.starts_with('#')
        });
        if has_content {
            let index = documents.len() + 1;
            documents.push(Document {
                index,
                first_line: line,
                text: chunk,
            });
        }
    };
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let line_number = number + 1;
        let marker = line.trim_end();
        if marker == "---" || marker.starts_with("--- ") {
            push(&mut documents, start_byte, byte, start_line);
            // What follows the marker on its line (`--- {kind: Process, ...}`) is the new
            // document's start, not something to drop.
            let rest = marker.strip_prefix("---").unwrap_or("").trim();
            if rest.is_empty() || rest.starts_with('#') {
                start_byte = byte + line.len();
                start_line = line_number + 1;
            } else {
                start_byte = byte + "--- ".len();
                start_line = line_number;
            }
        }
        byte += line.len();
    }
    push(&mut documents, start_byte, text.len(), start_line);
    documents
}

/// The 0-based line offset of a dotted field path in a block-style YAML document, and the 1-based
/// column of its key, if found.
fn locate_field(text: &str, field: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for segment in field.split('.').filter(|segment| !segment.is_empty()) {
        let key = format!("{segment}:");
        let position = lines[from..].iter().position(|line| {
            let trimmed = line.trim_start().trim_start_matches("- ");
            trimmed.starts_with(&key)
        });
        match position {
            Some(position) => {
                let line = lines[from + position];
                let key_at = line.len() - line.trim_start().trim_start_matches("- ").len();
                // Columns count characters, as the parser's do.
                found = Some((from + position, line[..key_at].chars().count() + 1));
                from += position + 1;
            }
            None => break,
        }
    }
    found
}

/// A problem found while resolving a parsed document.
struct Problem {
    field: String,
    message: String,
}

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem {
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecDocument {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: SpecBody,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: NameValue,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecBody {
    #[serde(rename = "type")]
    process_type: Option<Word<ProcessType>>,
    pattern: Option<String>,
    binary: Option<String>,
    isolation: Option<Word<Isolation>>,
    namespace: Option<String>,
    session_id: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    inherit_env: Vec<String>,
    working_dir: Option<String>,
    health_check: Option<HealthCheckValue>,
    restart_policy: Option<Word<RestartPolicy>>,
    #[serde(default)]
    success_exit_codes: Vec<i32>,
    backoff: Option<BackoffValue>,
    termination_grace_period: Option<DurationValue>,
    resources: Option<ResourcesValue>,
    ports: Option<PortsValue>,
    pattern_config: Option<PatternConfigValue>,
    proxy: Option<ProxyValue>,
    backend: Option<BackendValue>,
    utility: Option<UtilityValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatternConfigValue {
    #[serde(default)]
    pattern_type: String,
    #[serde(default)]
    slots: BTreeMap<String, BackendValue>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProxyValue {
    #[serde(default)]
    proxy_id: String,
    #[serde(default)]
    admin_endpoint: String,
    #[serde(default)]
    control_port: u16,
    #[serde(default)]
    data_port: u16,
    #[serde(default)]
    partition_ranges: Vec<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BackendValue {
    #[serde(default)]
    backend_type: String,
    #[serde(default)]
    connection_string: String,
    #[serde(default)]
    credentials: BTreeMap<String, String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UtilityValue {
    #[serde(default)]
    utility_type: String,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    target_processes: Vec<String>,
}

impl BackendValue {
    fn into_config(self) -> BackendConfig {
        BackendConfig {
            backend_type: self.backend_type,
            connection_string: Secret::new(self.connection_string),
            credentials: self
                .credentials
                .into_iter()
                .map(|(key, value)| (key, Secret::new(value)))
                .collect(),
            options: self.options,
        }
    }
}

/// `metadata.name`, validated while its scalar is read so that an error gets the name's line.
#[derive(Debug)]
struct NameValue(ProcessId);

impl<'de> Deserialize<'de> for NameValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor {
            expecting: "a process name",
            parse: |text| {
                ProcessId::new(text)
                    .map(NameValue)
                    .map_err(|error| error.to_string())
            },
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HealthCheckValue {
    http: Option<HttpProbeValue>,
    tcp: Option<TcpProbeValue>,
    exec: Option<ExecProbeValue>,
    initial_delay: Option<DurationValue>,
    interval: Option<DurationValue>,
    timeout: Option<DurationValue>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpProbeValue {
    #[serde(default = "default_health_path")]
    path: String,
    port: Option<u16>,
}

fn default_health_path() -> String {
    "/health".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecProbeValue {
    command: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcpProbeValue {
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BackoffValue {
    initial: Option<DurationValue>,
    max: Option<DurationValue>,
    reset_after: Option<DurationValue>,
    failure_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ResourcesValue {
    cpu_limit: Option<QuantityValue>,
    memory_limit: Option<QuantityValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortsValue {
    grpc: Option<u16>,
    health: Option<u16>,
}

impl SpecDocument {
    fn resolve(
        self,
        base_dir: &Path,
        catalog: &Catalog,
    ) -> Result<(ProcessId, ProcessSpec), Vec<Problem>> {
        let mut problems = Vec::new();
        if self.api_version != API_VERSION {
            problems.push(problem(
                "apiVersion",
                format!(
                    "apiVersion {} is not supported; use {API_VERSION:?}",
                    echo(&self.api_version)
                ),
            ));
        }
        if self.kind != KIND {
            problems.push(problem(
                "kind",
                format!("kind {} is not supported; use {KIND:?}", echo(&self.kind)),
            ));
        }
        let spec = self
            .spec
            .resolve(self.metadata.labels, base_dir, catalog, &mut problems);
        match spec {
            Some(spec) if problems.is_empty() => Ok((self.metadata.name.0, spec)),
            _ => Err(problems),
        }
    }
}

impl SpecBody {
    /// The spec this body declares, with its catalog entry's defaults, once it is valid: the
    /// problems of reading it (a missing or ambiguous executable, an unknown pattern...) and
    /// then every problem of the resolved spec (`ProcessSpec::problems`, the one validation all
    /// writers share) go to `problems`.
    fn resolve(
        self,
        labels: BTreeMap<String, String>,
        base_dir: &Path,
        catalog: &Catalog,
        problems: &mut Vec<Problem>,
    ) -> Option<ProcessSpec> {
        let entry = match &self.pattern {
            Some(name) => match catalog.get(name) {
                Some(entry) => Some(entry),
                None => {
                    problems.push(problem(
                        "spec.pattern",
                        format!(
                            "pattern {} is not in the catalog (known: {})",
                            echo(name),
                            catalog.names_for_message()
                        ),
                    ));
                    None
                }
            },
            None => None,
        };
        let executable = match (&self.binary, &self.pattern) {
            (Some(_), Some(_)) => {
                problems.push(problem(
                    "spec.binary",
                    "give either `pattern` (a catalog entry) or `binary`, not both",
                ));
                None
            }
            (Some(binary), None) => {
                if binary.trim().is_empty() {
                    problems.push(problem("spec.binary", "binary is empty"));
                    None
                } else {
                    Some(absolute_from(base_dir, binary))
                }
            }
            (None, Some(_)) => entry.map(|entry| entry.executable.clone()),
            (None, None) => {
                problems.push(problem(
                    "spec",
                    "a process needs `pattern` (a catalog entry) or `binary` (an executable)",
                ));
                None
            }
        };
        let mut env = entry
            .map(|entry| entry.environment.clone())
            .unwrap_or_default();
        env.extend(self.env);
        let health_check = match self.health_check {
            Some(value) => value.resolve(problems),
            None => entry.and_then(|entry| entry.health_check.clone()),
        };
        let resources = match self.resources {
            Some(value) => value.resolve(problems),
            None => entry.and_then(|entry| entry.resources.clone()),
        };
        let requested_ports = RequestedPorts {
            grpc: self.ports.as_ref().and_then(|ports| ports.grpc),
            health: self
                .ports
                .as_ref()
                .and_then(|ports| ports.health)
                .or(entry.and_then(|entry| entry.health_port)),
        };
        let backoff = self
            .backoff
            .map_or_else(BackoffOverrides::default, |value| BackoffOverrides {
                initial: value.initial.map(|value| value.0),
                max: value.max.map(|value| value.0),
                reset_after: value.reset_after.map(|value| value.0),
                failure_threshold: value.failure_threshold,
            });
        let blocks = [
            self.pattern_config.map(|value| {
                TypeConfig::Pattern(PatternConfig {
                    pattern_type: value.pattern_type,
                    slots: value
                        .slots
                        .into_iter()
                        .map(|(slot, backend)| (slot, backend.into_config()))
                        .collect(),
                    settings: value.settings,
                })
            }),
            self.proxy.map(|value| {
                TypeConfig::Proxy(ProxyConfig {
                    proxy_id: value.proxy_id,
                    admin_endpoint: value.admin_endpoint,
                    control_port: value.control_port,
                    data_port: value.data_port,
                    partition_ranges: value.partition_ranges,
                })
            }),
            self.backend
                .map(|value| TypeConfig::Backend(value.into_config())),
            self.utility.map(|value| {
                TypeConfig::Utility(UtilityConfig {
                    utility_type: value.utility_type,
                    settings: value.settings,
                    target_processes: value.target_processes,
                })
            }),
        ];
        let mut given: Vec<TypeConfig> = blocks.into_iter().flatten().collect();
        if given.len() > 1 {
            problems.push(problem(
                "spec",
                "give at most one of patternConfig, proxy, backend and utility",
            ));
        }
        let type_config = given.pop().unwrap_or_default();

        let spec = ProcessSpec {
            process_type: self
                .process_type
                .map_or_else(ProcessType::default, |word| word.0),
            // An executable that could not be read was reported above; the spec is still
            // checked, so that every other problem of the document is reported too.
            executable: executable.clone().unwrap_or_default(),
            args: self.args,
            env,
            inherit_env: self.inherit_env,
            working_dir: self.working_dir.map(|dir| absolute_from(base_dir, &dir)),
            pattern: self.pattern,
            isolation: self
                .isolation
                .map(|word| word.0)
                .or(entry.and_then(|entry| entry.isolation))
                .unwrap_or_default(),
            namespace: self.namespace.filter(|namespace| !namespace.is_empty()),
            session_id: self.session_id.filter(|session| !session.is_empty()),
            health_check,
            restart_policy: self
                .restart_policy
                .map_or_else(RestartPolicy::default, |word| word.0),
            success_exit_codes: self.success_exit_codes,
            backoff,
            termination_grace: self
                .termination_grace_period
                .map_or(ProcessSpec::DEFAULT_TERMINATION_GRACE, |grace| grace.0),
            resources,
            requested_ports,
            type_config,
            labels,
        };
        for found in spec.problems() {
            if found.field == SpecField::Executable && executable.is_none() {
                continue;
            }
            problems.push(Problem {
                field: spec_file_field(&found.field),
                message: found.message(&spec_file_field),
            });
        }
        executable.map(|_| spec)
    }
}

/// How a spec file spells each field of a spec.
pub fn spec_file_field(field: &SpecField) -> String {
    let health = |name: &str| format!("spec.healthCheck.{name}");
    match field {
        SpecField::ProcessType => "spec.type".to_string(),
        SpecField::Isolation => "spec.isolation".to_string(),
        SpecField::RestartPolicy => "spec.restartPolicy".to_string(),
        SpecField::CpuLimit => "spec.resources.cpuLimit".to_string(),
        SpecField::HealthCheck(HealthCheckField::Probe) => "spec.healthCheck".to_string(),
        SpecField::Executable => "spec.binary".to_string(),
        SpecField::Args => "spec.args".to_string(),
        // The whole of what the child's exec takes: located on the spec itself.
        SpecField::ArgsAndEnv => "spec".to_string(),
        SpecField::Pattern => "spec.pattern".to_string(),
        SpecField::SuccessExitCodes => "spec.successExitCodes".to_string(),
        SpecField::Labels => "metadata.labels".to_string(),
        SpecField::WorkingDir => "spec.workingDir".to_string(),
        SpecField::Namespace => "spec.namespace".to_string(),
        SpecField::SessionId => "spec.sessionId".to_string(),
        SpecField::Env => "spec.env".to_string(),
        SpecField::InheritEnv => "spec.inheritEnv".to_string(),
        SpecField::HealthCheck(HealthCheckField::HttpPath) => health("http.path"),
        SpecField::HealthCheck(HealthCheckField::ExecCommand) => health("exec.command"),
        SpecField::HealthCheck(HealthCheckField::InitialDelay) => health("initialDelay"),
        SpecField::HealthCheck(HealthCheckField::Interval) => health("interval"),
        SpecField::HealthCheck(HealthCheckField::Timeout) => health("timeout"),
        SpecField::HealthCheck(HealthCheckField::FailureThreshold) => health("failureThreshold"),
        SpecField::HealthCheck(HealthCheckField::SuccessThreshold) => health("successThreshold"),
        SpecField::GrpcPort => "spec.ports.grpc".to_string(),
        SpecField::HealthPort => "spec.ports.health".to_string(),
        SpecField::BackoffInitial => "spec.backoff.initial".to_string(),
        SpecField::BackoffMax => "spec.backoff.max".to_string(),
        SpecField::BackoffResetAfter => "spec.backoff.resetAfter".to_string(),
        SpecField::BackoffFailureThreshold => "spec.backoff.failureThreshold".to_string(),
        SpecField::TerminationGrace => "spec.terminationGracePeriod".to_string(),
        SpecField::MemoryLimit => "spec.resources.memoryLimit".to_string(),
        SpecField::TypeConfig(field) => spec_field_of(field),
    }
}

/// The spec file's field for a field of the type-config block (`proxy.proxy_id` →
/// `spec.proxy.proxyId`).
fn spec_field_of(field: &str) -> String {
    let camel: Vec<String> = field
        .split('.')
        .map(|part| {
            let mut out = String::new();
            let mut upper = false;
            for c in part.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    out.push(c.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect();
    let joined = camel.join(".");
    let joined = joined
        .strip_prefix("pattern")
        .map_or(joined.clone(), |rest| format!("patternConfig{rest}"));
    format!("spec.{joined}")
}

impl HealthCheckValue {
    /// The health check as written; its values are checked with the rest of the spec.
    fn resolve(self, problems: &mut Vec<Problem>) -> Option<HealthCheck> {
        let probe = match (self.http, self.tcp, self.exec) {
            (Some(http), None, None) => Probe::Http {
                path: http.path,
                port: http.port,
            },
            (None, Some(tcp), None) => Probe::Tcp { port: tcp.port },
            (None, None, Some(exec)) => Probe::Exec {
                command: exec.command,
            },
            (None, None, None) => {
                problems.push(problem(
                    "spec.healthCheck",
                    "a health check needs a probe: http, tcp or exec",
                ));
                return None;
            }
            _ => {
                problems.push(problem(
                    "spec.healthCheck",
                    "give one probe: http, tcp or exec, not several",
                ));
                return None;
            }
        };
        let defaults = HealthCheck::new(probe);
        Some(HealthCheck {
            initial_delay: self
                .initial_delay
                .map_or(defaults.initial_delay, |value| value.0),
            interval: self.interval.map_or(defaults.interval, |value| value.0),
            timeout: self.timeout.map_or(defaults.timeout, |value| value.0),
            failure_threshold: self.failure_threshold.unwrap_or(defaults.failure_threshold),
            success_threshold: self.success_threshold.unwrap_or(defaults.success_threshold),
            ..defaults
        })
    }
}

impl ResourcesValue {
    fn resolve(self, problems: &mut Vec<Problem>) -> Option<Resources> {
        let cpu_millis = self.cpu_limit.and_then(|value| match parse_cpu(&value.0) {
            Ok(millis) => Some(millis),
            Err(message) => {
                problems.push(problem("spec.resources.cpuLimit", message));
                None
            }
        });
        let memory_bytes = self
            .memory_limit
            .and_then(|value| match parse_memory(&value.0) {
                Ok(bytes) => Some(bytes),
                Err(message) => {
                    problems.push(problem("spec.resources.memoryLimit", message));
                    None
                }
            });
        // An empty block is no limits, as no block is (one spelling of "none").
        Resources::limits(cpu_millis, memory_bytes)
    }
}

fn absolute_from(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

#[cfg(test)]
#[path = "spec_file_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "spec_file_proptests.rs"]
mod proptests;
