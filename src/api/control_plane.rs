//! prism-admin's `prism.ControlPlane` (WIRE.md §2), the launcher's side: AssignProcess and
//! RevokeProcess are served here; RegisterLauncher and LauncherHeartbeat are what the launcher
//! calls on prism-admin (see `admin_client`), so they answer UNIMPLEMENTED.
//!
//! An assignment is validated, checked against capabilities and capacity, ordered by version,
//! and written as a desired record with source `admin`; the ack means durable, not running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::catalog::{read_catalog, SharedCatalog};
use super::errors::assignment_status;
use super::proto::prism as pb;
use super::spec_file::{is_env_name, INJECTED_ENV};
use super::waiting::{wait_for_observed, WaitError};
use crate::reconcile::{
    BackendConfig, ExitStatus, InvalidProcessId, Isolation, PatternConfig, ProcessId, ProcessSpec,
    ProcessType, ProxyConfig, RequestedPorts, RestartPolicy, Secret, Source, TypeConfig,
    UnixMillis, UtilityConfig,
};
use crate::store::{Assigned, Store, StoreError};

/// What RevokeProcess waits for when `graceful_timeout_seconds` is 0.
pub const DEFAULT_REVOKE_GRACE: Duration = Duration::from_secs(30);

/// What RevokeProcess waits beyond the grace period for the exit to be recorded.
const REVOKE_MARGIN: Duration = Duration::from_secs(5);

/// Why an assignment or revocation was refused; `errors::assignment_status` maps each to a code.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("process_id is required")]
    MissingId,
    #[error("process_id is not valid")]
    InvalidId(#[source] InvalidProcessId),
    #[error("process_type {0:?} is not one of pattern, proxy, backend, utility")]
    UnknownType(String),
    #[error("launcher {launcher_id} does not run {process_type} processes (capabilities: {capabilities})")]
    NotCapable {
        launcher_id: String,
        process_type: &'static str,
        capabilities: String,
    },
    #[error("launcher {launcher_id} is full: it runs at most {max} processes")]
    AtCapacity { launcher_id: String, max: u32 },
    #[error("config is required")]
    MissingConfig,
    #[error("config.binary is required (or a pattern whose pattern_type is in the catalog)")]
    MissingBinary,
    #[error("config.binary {0:?} must be an absolute path")]
    RelativeBinary(String),
    #[error("config.binary {binary} cannot be used: {reason}")]
    UnusableBinary { binary: String, reason: String },
    #[error("config.binary {binary} is outside the allowed executable roots ({roots})")]
    OutsideRoots { binary: String, roots: String },
    #[error("{field} {value} is not a port (1-65535)")]
    BadPort { field: &'static str, value: i32 },
    #[error("config.pattern.isolation_level {0:?} is not one of none, namespace, session")]
    BadIsolation(String),
    #[error("config.env {name:?} cannot be set: {reason}")]
    BadEnv { name: String, reason: &'static str },
    #[error("invalid {process_type} config: {problems}")]
    BadTypeConfig {
        process_type: &'static str,
        problems: String,
    },
    #[error("this is launcher {ours}, not {asked}")]
    WrongLauncher { ours: String, asked: String },
    #[error("graceful_timeout_seconds {0} is negative")]
    NegativeTimeout(i32),
    #[error("no process {0:?} is assigned to this launcher")]
    UnknownProcess(String),
    #[error("process {id} is declared by {owner}, not assigned by prism-admin")]
    NotAssigned { id: ProcessId, owner: Source },
    #[error("the launcher is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the launcher accepts from prism-admin.
#[derive(Debug, Clone)]
pub struct AssignmentPolicy {
    pub launcher_id: String,
    pub capabilities: Vec<ProcessType>,
    pub max_processes: Option<u32>,
    /// Executables pushed over the network must be under one of these (canonical) folders.
    pub allowed_roots: Vec<PathBuf>,
}

/// Turns an assignment into the id, spec and version to store, validating everything.
pub fn spec_from_assignment(
    assignment: &pb::ProcessAssignment,
    policy: &AssignmentPolicy,
    catalog: &SharedCatalog,
) -> Result<(ProcessId, ProcessSpec), AssignmentError> {
    if assignment.process_id.is_empty() {
        return Err(AssignmentError::MissingId);
    }
    let id = ProcessId::new(assignment.process_id.clone()).map_err(AssignmentError::InvalidId)?;
    let process_type = match assignment.process_type.as_str() {
        "" | "pattern" => ProcessType::Pattern,
        "proxy" => ProcessType::Proxy,
        "backend" => ProcessType::Backend,
        "utility" => ProcessType::Utility,
        other => return Err(AssignmentError::UnknownType(other.to_string())),
    };
    if !policy.capabilities.contains(&process_type) {
        return Err(AssignmentError::NotCapable {
            launcher_id: policy.launcher_id.clone(),
            process_type: process_type.as_str(),
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
    let problems = type_config.problems(process_type);
    if !problems.is_empty() {
        return Err(AssignmentError::BadTypeConfig {
            process_type: process_type.as_str(),
            problems: problems
                .into_iter()
                .map(|(field, message)| format!("{field}: {message}"))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }

    // A pattern may name a catalog entry instead of a binary; the catalog gives the rest.
    let pattern_name = config
        .pattern
        .as_ref()
        .map(|pattern| pattern.pattern_type.clone())
        .filter(|name| !name.is_empty());
    let catalog_entry = match (&pattern_name, config.binary.is_empty()) {
        (Some(name), true) if process_type == ProcessType::Pattern => {
            read_catalog(catalog).get(name).cloned()
        }
        _ => None,
    };
    let executable = match &catalog_entry {
        Some(entry) => entry.executable.clone(),
        None if config.binary.is_empty() => return Err(AssignmentError::MissingBinary),
        None => allowed_binary(&config.binary, &policy.allowed_roots)?,
    };

    let mut env = catalog_entry
        .as_ref()
        .map(|entry| entry.environment.clone())
        .unwrap_or_default();
    for (name, value) in &config.env {
        if INJECTED_ENV.contains(&name.as_str()) {
            return Err(AssignmentError::BadEnv {
                name: name.clone(),
                reason: "it is set by the launcher",
            });
        }
        if !is_env_name(name) || value.contains('\0') {
            return Err(AssignmentError::BadEnv {
                name: name.clone(),
                reason: "it is not a valid environment variable",
            });
        }
        env.insert(name.clone(), value.clone());
    }
    if !config.log_level.is_empty() {
        env.insert("LOG_LEVEL".to_string(), config.log_level.clone());
    }
    let isolation = match config
        .pattern
        .as_ref()
        .map(|pattern| pattern.isolation_level.as_str())
    {
        None | Some("") | Some("none") => Isolation::None,
        Some("namespace") => Isolation::Namespace,
        Some("session") => Isolation::Session,
        Some(other) => return Err(AssignmentError::BadIsolation(other.to_string())),
    };
    let spec = ProcessSpec {
        process_type,
        executable,
        args: config.args.clone(),
        env,
        inherit_env: Vec::new(),
        working_dir: None,
        pattern: catalog_entry.as_ref().map(|entry| entry.name.clone()),
        isolation,
        namespace: Some(assignment.namespace.clone()).filter(|namespace| !namespace.is_empty()),
        session_id: None,
        health_check: catalog_entry
            .as_ref()
            .and_then(|entry| entry.health_check.clone()),
        restart_policy: RestartPolicy::Always,
        success_exit_codes: Vec::new(),
        backoff: Default::default(),
        termination_grace: ProcessSpec::DEFAULT_TERMINATION_GRACE,
        resources: catalog_entry
            .as_ref()
            .and_then(|entry| entry.resources.clone()),
        requested_ports: RequestedPorts {
            grpc: optional_port("config.port", config.port)?,
            health: optional_port("config.health_port", config.health_port)?
                .or(catalog_entry.as_ref().and_then(|entry| entry.health_port)),
        },
        type_config,
        labels: BTreeMap::from([(
            "prism.admin/version".to_string(),
            assignment.version.to_string(),
        )]),
    };
    Ok((id, spec))
}

fn type_config(
    process_type: ProcessType,
    config: &pb::ProcessConfig,
) -> Result<TypeConfig, AssignmentError> {
    let backend = |backend: &pb::BackendProcessConfig| BackendConfig {
        backend_type: backend.backend_type.clone(),
        connection_string: Secret::new(backend.connection_string.clone()),
        credentials: secrets(&backend.credentials),
        options: backend.driver_options.clone().into_iter().collect(),
    };
    Ok(match process_type {
        ProcessType::Pattern => match &config.pattern {
            Some(pattern) => TypeConfig::Pattern(PatternConfig {
                pattern_type: pattern.pattern_type.clone(),
                slots: pattern
                    .slots
                    .iter()
                    .map(|(slot, slot_backend)| {
                        (
                            slot.clone(),
                            BackendConfig {
                                backend_type: slot_backend.backend_type.clone(),
                                connection_string: Secret::new(
                                    slot_backend.connection_string.clone(),
                                ),
                                credentials: secrets(&slot_backend.credentials),
                                options: slot_backend.options.clone().into_iter().collect(),
                            },
                        )
                    })
                    .collect(),
                settings: pattern.settings.clone().into_iter().collect(),
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
        ProcessType::Backend => config.backend.as_ref().map_or(TypeConfig::None, |value| {
            TypeConfig::Backend(backend(value))
        }),
        ProcessType::Utility => match &config.utility {
            Some(utility) => TypeConfig::Utility(UtilityConfig {
                utility_type: utility.utility_type.clone(),
                settings: utility.settings.clone().into_iter().collect(),
                target_processes: utility.target_processes.clone(),
            }),
            None => TypeConfig::None,
        },
    })
}

fn secrets(values: &std::collections::HashMap<String, String>) -> BTreeMap<String, Secret> {
    values
        .iter()
        .map(|(key, value)| (key.clone(), Secret::new(value.clone())))
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

/// The binary, if it is an existing file under one of `roots` (both canonicalized, so that
/// `..` and symlinks cannot escape).
fn allowed_binary(binary: &str, roots: &[PathBuf]) -> Result<PathBuf, AssignmentError> {
    let path = Path::new(binary);
    if !path.is_absolute() {
        return Err(AssignmentError::RelativeBinary(binary.to_string()));
    }
    let canonical = path
        .canonicalize()
        .map_err(|error| AssignmentError::UnusableBinary {
            binary: binary.to_string(),
            reason: error.to_string(),
        })?;
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
    Ok(canonical)
}

/// The exit code prism-admin sees: the code, or 128 + the signal as shells report it.
pub fn exit_code(status: ExitStatus) -> i32 {
    match status {
        ExitStatus::Code(code) => code,
        ExitStatus::Signal(signal) => 128 + signal,
        ExitStatus::OomKilled => 128 + 9,
        // Adopted processes are reaped by their real parent; report them as killed.
        ExitStatus::Unknown => 128 + 9,
    }
}

pub struct ControlPlaneService {
    pub store: Arc<Store>,
    pub catalog: SharedCatalog,
    pub policy: AssignmentPolicy,
    pub clock: super::status::Clock,
    pub stopping: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl pb::control_plane_server::ControlPlane for ControlPlaneService {
    async fn register_launcher(
        &self,
        _request: Request<pb::LauncherRegistration>,
    ) -> Result<Response<pb::LauncherRegistrationAck>, Status> {
        Err(Status::unimplemented(
            "prism-launcher does not serve RegisterLauncher: it registers itself with prism-admin",
        ))
    }

    async fn launcher_heartbeat(
        &self,
        _request: Request<pb::LauncherHeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatAck>, Status> {
        Err(Status::unimplemented(
            "prism-launcher does not serve LauncherHeartbeat: it sends heartbeats to prism-admin",
        ))
    }

    async fn assign_process(
        &self,
        request: Request<pb::ProcessAssignment>,
    ) -> Result<Response<pb::ProcessAssignmentAck>, Status> {
        self.assign(request.into_inner())
            .map(Response::new)
            .map_err(assignment_status)
    }

    async fn revoke_process(
        &self,
        request: Request<pb::ProcessRevocation>,
    ) -> Result<Response<pb::ProcessRevocationAck>, Status> {
        self.revoke(request.into_inner())
            .await
            .map(Response::new)
            .map_err(assignment_status)
    }
}

impl ControlPlaneService {
    fn assign(
        &self,
        assignment: pb::ProcessAssignment,
    ) -> Result<pb::ProcessAssignmentAck, AssignmentError> {
        let (id, spec) = spec_from_assignment(&assignment, &self.policy, &self.catalog)?;
        if let Some(max) = self.policy.max_processes {
            let is_new = self.store.desired(&id)?.is_none();
            let full = self.store.desired_count() >= usize::try_from(max).unwrap_or(usize::MAX);
            if is_new && full {
                return Err(AssignmentError::AtCapacity {
                    launcher_id: self.policy.launcher_id.clone(),
                    max,
                });
            }
        }
        let version = assignment.version;
        let message = match self.store.assign_admin(&id, &spec, version)? {
            Assigned::Created => format!("{id} assigned at version {version}"),
            Assigned::Updated => format!("{id} updated to version {version}"),
            Assigned::Unchanged => format!("{id} is already at version {version}; nothing changed"),
        };
        tracing::info!(%id, version, "{message}");
        Ok(pb::ProcessAssignmentAck {
            success: true,
            message,
        })
    }

    async fn revoke(
        &self,
        revocation: pb::ProcessRevocation,
    ) -> Result<pb::ProcessRevocationAck, AssignmentError> {
        if !revocation.launcher_id.is_empty() && revocation.launcher_id != self.policy.launcher_id {
            return Err(AssignmentError::WrongLauncher {
                ours: self.policy.launcher_id.clone(),
                asked: revocation.launcher_id,
            });
        }
        let grace = match revocation.graceful_timeout_seconds {
            0 => DEFAULT_REVOKE_GRACE,
            seconds if seconds < 0 => return Err(AssignmentError::NegativeTimeout(seconds)),
            seconds => Duration::from_secs(seconds.unsigned_abs().into()),
        };
        let unknown = || AssignmentError::UnknownProcess(revocation.process_id.clone());
        let id = ProcessId::new(revocation.process_id.clone()).map_err(|_| unknown())?;
        let desired = self.store.desired(&id)?;
        match &desired {
            None if self.store.observed(&id)?.is_none() => return Err(unknown()),
            Some(record) if !matches!(record.source, Source::Admin { .. }) => {
                return Err(AssignmentError::NotAssigned {
                    id,
                    owner: record.source.clone(),
                })
            }
            _ => {}
        }
        let asked_at = (self.clock)();
        let admin = Source::Admin { version: 0 };
        if !self
            .store
            .delete_desired_with_grace(&id, &admin, Some(grace))?
        {
            self.store.request_stop(&id, grace)?;
        }
        tracing::info!(%id, ?grace, "revoked by prism-admin");
        let observed = wait_for_observed(
            &self.store,
            &self.stopping,
            &id,
            grace.saturating_add(REVOKE_MARGIN),
            |observed| observed.is_none_or(|record| !record.phase.has_live_process()),
        )
        .await
        .map_err(|error| match error {
            WaitError::ShuttingDown => AssignmentError::ShuttingDown,
            WaitError::Store(error) => AssignmentError::Store(error),
        })?;
        if observed.is_some_and(|record| record.phase.has_live_process()) {
            return Ok(pb::ProcessRevocationAck {
                success: false,
                message: format!("{id} was still stopping after {grace:?}"),
                stopped_at: 0,
                exit_code: 0,
            });
        }
        let exit = self
            .store
            .last_exit(&id)?
            .filter(|(_, at)| *at >= earliest(asked_at));
        let (exit_code, stopped_at) = match exit {
            Some((status, at)) => (exit_code(status), at),
            // It had no running process to stop (it was backing off or pending).
            None => (0, (self.clock)()),
        };
        Ok(pb::ProcessRevocationAck {
            success: true,
            message: format!("{id} stopped"),
            stopped_at: i64::try_from(stopped_at.0 / 1000).unwrap_or(i64::MAX),
            exit_code,
        })
    }
}

/// Exits recorded at or after this belong to the revocation asked at `asked_at` (a little slack
/// for clocks read in two places).
fn earliest(asked_at: UnixMillis) -> UnixMillis {
    UnixMillis(asked_at.0.saturating_sub(1000))
}
