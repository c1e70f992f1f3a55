//! Requests into the domain: a LaunchPattern request and a prism-admin assignment become the id
//! and the `ProcessSpec` to store, checked by the one validation every writer shares
//! (`ProcessSpec::problems`), with the fields named as the wire names them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::control_plane::AssignmentPolicy;
use crate::api::errors::{AssignmentError, PatternError};
use crate::api::proto::prism as admin_pb;
use crate::api::proto::prism::launcher as launcher_pb;
use crate::reconcile::{
    pattern_process_id, request_env_problems, AdminTerm, BackendConfig, HealthCheckField,
    Isolation, PatternConfig, ProcessId, ProcessSpec, ProcessType, ProxyConfig, RequestedPorts,
    RestartPolicy, Secret, SpecField, SpecProblem, TypeConfig, UtilityConfig, Vocabulary,
    MAX_DURATION, MAX_ENTRIES, MAX_NAME_BYTES, MAX_NAME_PART, MAX_PATH_BYTES, MAX_PROCESS_ID_LEN,
};
use crate::reconcile::{ADMIN_TERM_KEY, INITIAL_SET_KEY};
use crate::sources::catalog::{Catalog, Launch};

/// The isolation a launch asks for; `None` when it leaves it to the manifest or the launcher.
/// A number outside the enum is refused: proto3 keeps unknown enum values as they were sent,
/// and taking one for "unspecified" would launch with an isolation nobody asked for.
pub fn requested_isolation(isolation: i32) -> Result<Option<Isolation>, PatternError> {
    match launcher_pb::IsolationLevel::try_from(isolation) {
        Ok(launcher_pb::IsolationLevel::IsolationNone) => Ok(Some(Isolation::None)),
        Ok(launcher_pb::IsolationLevel::IsolationNamespace) => Ok(Some(Isolation::Namespace)),
        Ok(launcher_pb::IsolationLevel::IsolationSession) => Ok(Some(Isolation::Session)),
        Ok(launcher_pb::IsolationLevel::Unspecified) => Ok(None),
        Err(_) => Err(PatternError::BadEnum {
            field: "isolation",
            value: isolation,
        }),
    }
}

/// The state a ListPatterns request filters on; `None` for all. A number outside the enum is
/// refused, as for `requested_isolation`.
pub fn requested_state(state: i32) -> Result<Option<launcher_pb::ProcessState>, PatternError> {
    match launcher_pb::ProcessState::try_from(state) {
        Ok(launcher_pb::ProcessState::StateUnspecified) => Ok(None),
        Ok(state) => Ok(Some(state)),
        Err(_) => Err(PatternError::BadEnum {
            field: "state",
            value: state,
        }),
    }
}

/// `text`, refused when longer than `max` bytes; `field` is how the request names it.
pub fn bounded(field: &'static str, text: &str, max: usize) -> Result<(), PatternError> {
    if text.len() > max {
        return Err(PatternError::TooLong {
            field,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// A request's `process_id` (TerminatePattern, GetProcessStatus), refused when empty or longer
/// than any id can be; `Ok(None)` when it is no valid id (so no process has it).
pub fn requested_process_id(process_id: &str) -> Result<Option<ProcessId>, PatternError> {
    if process_id.is_empty() {
        return Err(PatternError::MissingProcessId);
    }
    bounded("process_id", process_id, MAX_PROCESS_ID_LEN)?;
    Ok(ProcessId::new(process_id).ok())
}

/// The filters of a ListPatterns request, bounded: a pattern name, a namespace, a state.
pub fn list_filters(
    request: &launcher_pb::ListPatternsRequest,
) -> Result<Option<launcher_pb::ProcessState>, PatternError> {
    bounded("pattern_name", &request.pattern_name, MAX_NAME_BYTES)?;
    bounded("namespace", &request.namespace, MAX_NAME_PART)?;
    requested_state(request.state)
}

/// A `grace_period_secs` of a request, refused when negative or longer than `MAX_DURATION`.
pub fn grace_from_request(secs: i64) -> Result<Duration, PatternError> {
    u64::try_from(secs)
        .ok()
        .map(Duration::from_secs)
        .filter(|grace| *grace <= MAX_DURATION)
        .ok_or(PatternError::BadGrace(secs))
}

/// A LaunchPattern request resolved against the catalog: the process id and the spec to store.
pub fn launch_from_request(
    request: &launcher_pb::LaunchRequest,
    catalog: &Catalog,
    default_isolation: Isolation,
) -> Result<(ProcessId, ProcessSpec), PatternError> {
    if request.pattern_name.is_empty() {
        return Err(PatternError::MissingPatternName);
    }
    bounded("pattern_name", &request.pattern_name, MAX_NAME_BYTES)?;
    let requested = requested_isolation(request.isolation)?;
    bounded("namespace", &request.namespace, MAX_NAME_PART)?;
    bounded("session_id", &request.session_id, MAX_NAME_PART)?;
    if request.config.len() > MAX_ENTRIES {
        return Err(PatternError::TooMuchConfig {
            count: request.config.len(),
        });
    }
    let entry = catalog
        .get(&request.pattern_name)
        .ok_or_else(|| PatternError::UnknownPattern {
            name: request.pattern_name.clone(),
            known: catalog.names_for_message(),
        })?;
    let isolation = requested.or(entry.isolation).unwrap_or(default_isolation);
    // Only the parts the isolation uses name the process: a namespace sent with a shared
    // launch is not part of it.
    let (namespace, session_id) = match isolation {
        Isolation::None => ("", ""),
        Isolation::Namespace => (request.namespace.as_str(), ""),
        Isolation::Session => (request.namespace.as_str(), request.session_id.as_str()),
    };
    let grace = match grace_from_request(request.grace_period_secs)? {
        grace if grace.is_zero() => None,
        grace => Some(grace),
    };
    // Sorted, so that the problems are reported in one order whatever the wire's.
    let config: BTreeMap<String, String> = request
        .config
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let request_problems = request_env_problems(
        config
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
        entry.allowed_config_keys.as_deref(),
    );
    let spec = entry.launch_spec(Launch {
        isolation,
        namespace: Some(namespace.to_string()).filter(|value| !value.is_empty()),
        session_id: Some(session_id.to_string()).filter(|value| !value.is_empty()),
        config,
        grace,
    });
    check_spec(&spec, request_problems, &launch_field).map_err(PatternError::InvalidSpec)?;
    let id = pattern_process_id(isolation, namespace, session_id, &entry.name)
        .map_err(PatternError::InvalidId)?;
    Ok((id, spec))
}

/// How LaunchPattern names the fields of the spec it makes; what comes from the pattern's
/// manifest is named as the manifest.
fn launch_field(field: &SpecField) -> String {
    match field {
        SpecField::Namespace => "namespace".to_string(),
        SpecField::SessionId => "session_id".to_string(),
        SpecField::Env | SpecField::ArgsAndEnv => "config".to_string(),
        SpecField::Pattern => "pattern_name".to_string(),
        SpecField::TerminationGrace => "grace_period_secs".to_string(),
        other => format!("manifest {}", wire_field(other)),
    }
}

/// The admin's term in a request's or an answer's metadata (`x-prism-admin-term`), `None` when
/// it names none; a value that is not a whole number (0 to 2^64-1) is refused rather than taken
/// for no term, which would let a stale admin through.
pub fn admin_term(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Option<AdminTerm>, AssignmentError> {
    let Some(value) = metadata.get(ADMIN_TERM_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let digits = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(term) if digits => Ok(Some(AdminTerm(term))),
        _ => Err(AssignmentError::BadTerm(
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )),
    }
}

/// The value of an answer's `x-prism-initial-set` metadata, if it has one (text that is not
/// visible ASCII is passed on as it reads, and so is not a marker the launcher knows).
pub fn initial_set_marker(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get(INITIAL_SET_KEY)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// An assignment turned into the id and spec to store, validating everything.
pub fn assignment_spec(
    assignment: &admin_pb::ProcessAssignment,
    policy: &AssignmentPolicy,
    catalog: &Catalog,
) -> Result<(ProcessId, ProcessSpec), AssignmentError> {
    if assignment.process_id.is_empty() {
        return Err(AssignmentError::MissingId);
    }
    let id = ProcessId::new(assignment.process_id.clone()).map_err(AssignmentError::InvalidId)?;
    if assignment.version < 0 {
        return Err(AssignmentError::NegativeVersion(assignment.version));
    }
    let process_type = match assignment.process_type.as_str() {
        "" => ProcessType::Pattern,
        word => ProcessType::parse_word(word).map_err(AssignmentError::UnknownType)?,
    };
    if !policy.capabilities.contains(&process_type) {
        return Err(AssignmentError::NotCapable {
            launcher_id: policy.launcher_id.clone(),
            process_type,
            capabilities: policy
                .capabilities
                .iter()
                .map(|capability| capability.as_str())
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    let config = assignment
        .config
        .as_ref()
        .ok_or(AssignmentError::MissingConfig)?;
    let type_config = type_config(process_type, config)?;

    // A pattern may name a catalog entry instead of a binary; the catalog gives the rest.
    let pattern_name = config
        .pattern
        .as_ref()
        .map(|pattern| pattern.pattern_type.as_str())
        .filter(|name| !name.is_empty());
    let catalog_entry = match (pattern_name, config.binary.is_empty()) {
        (Some(name), true) if process_type == ProcessType::Pattern => catalog.get(name),
        _ => None,
    };
    let executable = match catalog_entry {
        Some(entry) => entry.executable.clone(),
        None if config.binary.is_empty() => return Err(AssignmentError::MissingBinary),
        None => allowed_binary(&config.binary, &policy.allowed_roots)?,
    };
    // What the assignment itself sets, sorted so that problems come in one order.
    let mut request_env: BTreeMap<String, String> = config
        .env
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if !config.log_level.is_empty() {
        request_env.insert("LOG_LEVEL".to_string(), config.log_level.clone());
    }
    let request_problems = request_env_problems(
        request_env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
        catalog_entry.and_then(|entry| entry.allowed_config_keys.as_deref()),
    );
    let mut env = catalog_entry
        .map(|entry| entry.environment.clone())
        .unwrap_or_default();
    env.extend(request_env);
    let isolation = match config
        .pattern
        .as_ref()
        .map(|pattern| pattern.isolation_level.as_str())
    {
        None | Some("") => Isolation::None,
        Some(word) => Isolation::parse_word(word).map_err(AssignmentError::BadIsolation)?,
    };
    let spec = ProcessSpec {
        process_type,
        executable,
        args: config.args.clone(),
        env,
        inherit_env: Vec::new(),
        working_dir: None,
        pattern: catalog_entry.map(|entry| entry.name.clone()),
        isolation,
        namespace: Some(assignment.namespace.clone()).filter(|namespace| !namespace.is_empty()),
        // An assignment carries no session: a session-isolated assignment is refused below.
        session_id: None,
        health_check: catalog_entry.and_then(|entry| entry.health_check.clone()),
        restart_policy: RestartPolicy::Always,
        success_exit_codes: Vec::new(),
        backoff: Default::default(),
        termination_grace: crate::reconcile::ProcessSpec::DEFAULT_TERMINATION_GRACE,
        resources: catalog_entry.and_then(|entry| entry.resources.clone()),
        requested_ports: RequestedPorts {
            grpc: optional_port("config.port", config.port)?,
            health: optional_port("config.health_port", config.health_port)?
                .or(catalog_entry.and_then(|entry| entry.health_port)),
        },
        type_config,
        labels: BTreeMap::from([(
            "prism.admin/version".to_string(),
            assignment.version.to_string(),
        )]),
    };
    check_spec(&spec, request_problems, &assignment_field).map_err(|mut problems| {
        if isolation == Isolation::Session {
            problems.push(
                "config.pattern.isolation_level: an assignment carries no session id, so \
                 session isolation cannot be assigned; use none or namespace"
                    .to_string(),
            );
        }
        AssignmentError::InvalidSpec(problems)
    })?;
    Ok((id, spec))
}

/// How an assignment names the fields of the spec it makes.
fn assignment_field(field: &SpecField) -> String {
    match field {
        SpecField::Executable => "config.binary".to_string(),
        SpecField::Namespace => "namespace".to_string(),
        SpecField::SessionId => "session_id".to_string(),
        SpecField::Env => "config.env".to_string(),
        SpecField::ArgsAndEnv => "config.args+config.env".to_string(),
        SpecField::Pattern => "config.pattern.pattern_type".to_string(),
        SpecField::GrpcPort => "config.port".to_string(),
        SpecField::HealthPort => "config.health_port".to_string(),
        SpecField::Args => "config.args".to_string(),
        SpecField::TypeConfig(field) => format!("config.{field}"),
        other => format!("manifest {}", wire_field(other)),
    }
}

/// The snake-case name of a field that a request cannot set itself.
fn wire_field(field: &SpecField) -> &'static str {
    match field {
        SpecField::HealthCheck(HealthCheckField::HttpPath) => "healthcheck.path",
        SpecField::HealthCheck(_) => "healthcheck",
        SpecField::ProcessType => "process_type",
        SpecField::Isolation => "isolation_level",
        SpecField::RestartPolicy => "restart_policy",
        SpecField::CpuLimit => "resources.cpu_limit",
        SpecField::InheritEnv => "inherit_env",
        SpecField::BackoffInitial
        | SpecField::BackoffMax
        | SpecField::BackoffResetAfter
        | SpecField::BackoffFailureThreshold => "backoff",
        SpecField::TerminationGrace => "termination_grace",
        SpecField::MemoryLimit => "resources.memory_limit",
        SpecField::Executable => "executable",
        SpecField::Namespace => "namespace",
        SpecField::SessionId => "session_id",
        SpecField::Env => "environment",
        SpecField::GrpcPort | SpecField::HealthPort => "healthcheck.port",
        SpecField::TypeConfig(_) => "config",
        SpecField::Args => "args",
        SpecField::ArgsAndEnv => "args+environment",
        SpecField::WorkingDir => "working_dir",
        SpecField::Pattern => "name",
        SpecField::SuccessExitCodes => "success_exit_codes",
        SpecField::Labels => "labels",
    }
}

/// Every problem of `spec` (after those of the variables the request set itself, see
/// `request_env_problems`), worded with `names`, as one message per problem.
fn check_spec(
    spec: &ProcessSpec,
    request_problems: Vec<SpecProblem>,
    names: &dyn Fn(&SpecField) -> String,
) -> Result<(), Vec<String>> {
    let mut problems = request_problems;
    problems.extend(spec.problems());
    if problems.is_empty() {
        return Ok(());
    }
    Err(problems
        .iter()
        .map(|problem| format!("{}: {}", names(&problem.field), problem.message(&names)))
        .collect())
}

fn type_config(
    process_type: ProcessType,
    config: &admin_pb::ProcessConfig,
) -> Result<TypeConfig, AssignmentError> {
    Ok(match process_type {
        ProcessType::Pattern => match &config.pattern {
            Some(pattern) => TypeConfig::Pattern(PatternConfig {
                pattern_type: pattern.pattern_type.clone(),
                slots: pattern
                    .slots
                    .iter()
                    .map(|(slot, backend)| {
                        (
                            slot.clone(),
                            backend_config(
                                &backend.backend_type,
                                &backend.connection_string,
                                &backend.credentials,
                                &backend.options,
                            ),
                        )
                    })
                    .collect(),
                settings: sorted(&pattern.settings),
            }),
            None => TypeConfig::None,
        },
        ProcessType::Proxy => match &config.proxy {
            Some(proxy) => TypeConfig::Proxy(ProxyConfig {
                proxy_id: proxy.proxy_id.clone(),
                admin_endpoint: proxy.admin_endpoint.clone(),
                control_port: port("config.proxy.control_port", proxy.control_port)?,
                data_port: port("config.proxy.data_port", proxy.data_port)?,
                partition_ranges: proxy.partition_ranges.clone(),
            }),
            None => TypeConfig::None,
        },
        ProcessType::Backend => config.backend.as_ref().map_or(TypeConfig::None, |backend| {
            TypeConfig::Backend(backend_config(
                &backend.backend_type,
                &backend.connection_string,
                &backend.credentials,
                &backend.driver_options,
            ))
        }),
        ProcessType::Utility => match &config.utility {
            Some(utility) => TypeConfig::Utility(UtilityConfig {
                utility_type: utility.utility_type.clone(),
                settings: sorted(&utility.settings),
                target_processes: utility.target_processes.clone(),
            }),
            None => TypeConfig::None,
        },
    })
}

/// A backend's configuration, from a backend process or a pattern's slot (the wire has two
/// messages with the same fields).
fn backend_config(
    backend_type: &str,
    connection_string: &str,
    credentials: &HashMap<String, String>,
    options: &HashMap<String, String>,
) -> BackendConfig {
    BackendConfig {
        backend_type: backend_type.to_string(),
        connection_string: Secret::new(connection_string),
        credentials: credentials
            .iter()
            .map(|(key, value)| (key.clone(), Secret::new(value.clone())))
            .collect(),
        options: sorted(options),
    }
}

fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// A port field that 0 leaves unset.
fn optional_port(field: &'static str, value: i32) -> Result<Option<u16>, AssignmentError> {
    match value {
        0 => Ok(None),
        value => port(field, value).map(Some),
    }
}

fn port(field: &'static str, value: i32) -> Result<u16, AssignmentError> {
    u16::try_from(value)
        .ok()
        .filter(|port| *port != 0)
        .ok_or(AssignmentError::BadPort { field, value })
}

/// The binary, if it is an executable regular file under one of `roots` (both canonicalized,
/// so that `..` and symlinks cannot escape).
fn allowed_binary(binary: &str, roots: &[PathBuf]) -> Result<PathBuf, AssignmentError> {
    use std::os::unix::fs::PermissionsExt;

    if binary.len() > MAX_PATH_BYTES {
        return Err(AssignmentError::TooLong {
            field: "config.binary",
            len: binary.len(),
            max: MAX_PATH_BYTES,
        });
    }
    let path = Path::new(binary);
    if !path.is_absolute() {
        return Err(AssignmentError::RelativeBinary(binary.to_string()));
    }
    let unusable = |reason: String| AssignmentError::UnusableBinary {
        binary: binary.to_string(),
        reason,
    };
    let canonical = path
        .canonicalize()
        .map_err(|error| unusable(error.to_string()))?;
    if !roots.iter().any(|root| canonical.starts_with(root)) {
        return Err(AssignmentError::OutsideRoots {
            binary: binary.to_string(),
            roots: roots
                .iter()
                .map(|root| root.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    // Refused here rather than at every spawn until the breaker trips.
    let metadata = canonical
        .metadata()
        .map_err(|error| unusable(error.to_string()))?;
    if !metadata.is_file() {
        return Err(unusable(format!(
            "{} is not a regular file",
            canonical.display()
        )));
    }
    let mode = metadata.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(unusable(format!(
            "{} is not executable (mode {:o})",
            canonical.display(),
            mode & 0o7777
        )));
    }
    Ok(canonical)
}
