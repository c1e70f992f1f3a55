//! `prism.launcher.PatternLauncher`, wire-compatible with existing Prism clients (WIRE.md §1).
//!
//! The RPCs only write desired state and then watch the observed state that the reconcile loop
//! records; they never start or stop a process themselves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::catalog::{read_catalog, Launch, SharedCatalog};
use super::errors::pattern_status;
use super::proto::prism::launcher as pb;
use super::spec_file::{is_env_name, INJECTED_ENV};
use super::status::Clock;
use super::values::MAX_DURATION;
use super::waiting::{wait_for_observed, WaitError};
use crate::reconcile::{
    pattern_process_id, DesiredRecord, Health, InvalidProcessId, Isolation, ObservedRecord, Phase,
    ProcessId, ProcessSpec, ProcessType, Source, UnixMillis,
};
use crate::store::{Store, StoreError};

/// How long LaunchPattern waits for a healthy process by default.
pub const DEFAULT_LAUNCH_WAIT: Duration = Duration::from_secs(30);

/// What TerminatePattern waits beyond the grace period for the exit to be recorded.
const TERMINATE_MARGIN: Duration = Duration::from_secs(5);

/// Longest namespace or session id accepted.
const MAX_NAME_PART: usize = 63;

/// Most `config` entries accepted in one launch.
const MAX_CONFIG_ENTRIES: usize = 256;

/// Why a PatternLauncher call was refused; `errors::pattern_status` maps each to a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("pattern_name is required")]
    MissingPatternName,
    #[error("pattern {name:?} is not in the catalog (known: {known})")]
    UnknownPattern { name: String, known: String },
    #[error("isolation {isolation} needs a namespace")]
    MissingNamespace { isolation: &'static str },
    #[error("isolation Session needs a session_id")]
    MissingSession,
    #[error("{field} is {len} characters long; at most {MAX_NAME_PART} are allowed")]
    TooLong { field: &'static str, len: usize },
    #[error("the launch maps to an invalid process id")]
    InvalidId(#[source] InvalidProcessId),
    #[error("config key {key:?} cannot be passed to the process: {reason}")]
    BadConfig { key: String, reason: &'static str },
    #[error("config has {count} entries; at most {MAX_CONFIG_ENTRIES} are allowed")]
    TooMuchConfig { count: usize },
    #[error("grace_period_secs {0} is out of range: it must be between 0 and {max}", max = MAX_DURATION.as_secs())]
    BadGrace(i64),
    #[error("process_id is required")]
    MissingProcessId,
    #[error("no process {id:?} is known to this launcher")]
    UnknownProcess { id: String },
    #[error("process {id} is declared by {owner}, not launched over the API; {hint}")]
    NotLaunchedHere {
        id: ProcessId,
        owner: Source,
        hint: &'static str,
    },
    #[error("process {id} runs pattern {running:?}, not {requested:?}")]
    OtherPattern {
        id: ProcessId,
        running: String,
        requested: String,
    },
    #[error("the launcher is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct PatternLauncherService {
    pub store: Arc<Store>,
    pub catalog: SharedCatalog,
    pub clock: Clock,
    /// When the launcher started, for `uptime_seconds`.
    pub started_at: UnixMillis,
    /// How long LaunchPattern waits for a healthy process (at least what the health check needs).
    pub launch_wait: Duration,
    /// The isolation of a launch that does not say, for patterns whose manifest does not either.
    pub default_isolation: Isolation,
    /// Becomes true when the launcher shuts down; waiting calls then end at once.
    pub stopping: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl pb::pattern_launcher_server::PatternLauncher for PatternLauncherService {
    async fn launch_pattern(
        &self,
        request: Request<pb::LaunchRequest>,
    ) -> Result<Response<pb::LaunchResponse>, Status> {
        self.launch(request.into_inner())
            .await
            .map(Response::new)
            .map_err(pattern_status)
    }

    async fn list_patterns(
        &self,
        request: Request<pb::ListPatternsRequest>,
    ) -> Result<Response<pb::ListPatternsResponse>, Status> {
        let request = request.into_inner();
        let now = (self.clock)();
        let rows = self.pattern_rows().map_err(pattern_status)?;
        let total_count = saturating_i32(rows.len());
        let state_filter =
            pb::ProcessState::try_from(request.state).unwrap_or(pb::ProcessState::StateUnspecified);
        let patterns = rows
            .iter()
            .map(|row| pattern_info(row, now))
            .filter(|info| {
                request.pattern_name.is_empty() || info.pattern_name == request.pattern_name
            })
            .filter(|info| request.namespace.is_empty() || info.namespace == request.namespace)
            .filter(|info| {
                state_filter == pb::ProcessState::StateUnspecified
                    || info.state == state_filter as i32
            })
            .collect();
        Ok(Response::new(pb::ListPatternsResponse {
            patterns,
            total_count,
        }))
    }

    async fn terminate_pattern(
        &self,
        request: Request<pb::TerminateRequest>,
    ) -> Result<Response<pb::TerminateResponse>, Status> {
        self.terminate(request.into_inner())
            .await
            .map(Response::new)
            .map_err(pattern_status)
    }

    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let now = (self.clock)();
        let rows = self.pattern_rows().map_err(pattern_status)?;
        let infos: Vec<pb::PatternInfo> = rows.iter().map(|row| pattern_info(row, now)).collect();
        let count = |state: pb::ProcessState| {
            saturating_i32(
                infos
                    .iter()
                    .filter(|info| info.state == state as i32)
                    .count(),
            )
        };
        let mut isolation_distribution: BTreeMap<String, i32> = BTreeMap::new();
        for row in &rows {
            *isolation_distribution
                .entry(row.spec().isolation.as_str().to_string())
                .or_default() += 1;
        }
        let failed_processes = count(pb::ProcessState::StateFailed);
        Ok(Response::new(pb::HealthResponse {
            // The launcher answers, so it lives; it is healthy while no pattern is failing.
            healthy: failed_processes == 0,
            total_processes: saturating_i32(infos.len()),
            running_processes: count(pb::ProcessState::StateRunning),
            terminating_processes: count(pb::ProcessState::StateTerminating),
            failed_processes,
            isolation_distribution: isolation_distribution.into_iter().collect(),
            processes: if request.into_inner().include_processes {
                infos
            } else {
                Vec::new()
            },
            uptime_seconds: seconds_between(self.started_at, now),
        }))
    }

    async fn get_process_status(
        &self,
        request: Request<pb::GetProcessStatusRequest>,
    ) -> Result<Response<pb::GetProcessStatusResponse>, Status> {
        let request = request.into_inner();
        if request.process_id.is_empty() {
            return Err(pattern_status(PatternError::MissingProcessId));
        }
        let not_found = Response::new(pb::GetProcessStatusResponse {
            process: None,
            not_found: true,
        });
        let Ok(id) = ProcessId::new(request.process_id) else {
            return Ok(not_found);
        };
        let row = self.row(&id).map_err(pattern_status)?;
        Ok(match row {
            Some(row) => Response::new(pb::GetProcessStatusResponse {
                process: Some(pattern_info(&row, (self.clock)())),
                not_found: false,
            }),
            None => not_found,
        })
    }
}

/// The desired and observed records of one id, at least one present.
struct Row {
    id: ProcessId,
    /// The desired spec, else the one that runs.
    spec: ProcessSpec,
    desired: Option<DesiredRecord>,
    observed: Option<ObservedRecord>,
}

impl Row {
    fn new(
        id: ProcessId,
        desired: Option<DesiredRecord>,
        observed: Option<ObservedRecord>,
    ) -> Option<Row> {
        let spec = desired
            .as_ref()
            .map(|record| record.spec.clone())
            .or_else(|| observed.as_ref().map(|record| record.spec.clone()))?;
        Some(Row {
            id,
            spec,
            desired,
            observed,
        })
    }

    fn spec(&self) -> &ProcessSpec {
        &self.spec
    }
}

impl PatternLauncherService {
    async fn launch(&self, request: pb::LaunchRequest) -> Result<pb::LaunchResponse, PatternError> {
        if request.pattern_name.is_empty() {
            return Err(PatternError::MissingPatternName);
        }
        let entry = {
            let catalog = read_catalog(&self.catalog);
            match catalog.get(&request.pattern_name) {
                Some(entry) => entry.clone(),
                None => {
                    return Err(PatternError::UnknownPattern {
                        name: request.pattern_name,
                        known: catalog.names_for_message(),
                    })
                }
            }
        };
        let isolation = match pb::IsolationLevel::try_from(request.isolation) {
            Ok(pb::IsolationLevel::IsolationNone) => Isolation::None,
            Ok(pb::IsolationLevel::IsolationNamespace) => Isolation::Namespace,
            Ok(pb::IsolationLevel::IsolationSession) => Isolation::Session,
            Ok(pb::IsolationLevel::Unspecified) | Err(_) => {
                entry.isolation.unwrap_or(self.default_isolation)
            }
        };
        for (field, value) in [
            ("namespace", &request.namespace),
            ("session_id", &request.session_id),
        ] {
            if value.len() > MAX_NAME_PART {
                return Err(PatternError::TooLong {
                    field,
                    len: value.len(),
                });
            }
        }
        if isolation != Isolation::None && request.namespace.is_empty() {
            return Err(PatternError::MissingNamespace {
                isolation: isolation.as_str(),
            });
        }
        if isolation == Isolation::Session && request.session_id.is_empty() {
            return Err(PatternError::MissingSession);
        }
        let (namespace, session_id) = match isolation {
            Isolation::None => (String::new(), String::new()),
            Isolation::Namespace => (request.namespace, String::new()),
            Isolation::Session => (request.namespace, request.session_id),
        };
        let id = pattern_process_id(isolation, &namespace, &session_id, &entry.name)
            .map_err(PatternError::InvalidId)?;
        let config = validated_config(request.config)?;
        let grace = match grace_from_request(request.grace_period_secs)? {
            grace if grace.is_zero() => None,
            grace => Some(grace),
        };
        let spec = entry.launch_spec(Launch {
            isolation,
            namespace: Some(namespace).filter(|value| !value.is_empty()),
            session_id: Some(session_id).filter(|value| !value.is_empty()),
            config,
            grace,
        });
        let wait = self.launch_wait.max(readiness_needs(&spec));
        let (record, created) = self
            .store
            .create_desired_if_absent(&id, &spec, &Source::Api)?;
        if !created && record.spec.pattern.as_deref() != Some(entry.name.as_str()) {
            return Err(PatternError::OtherPattern {
                id,
                running: record.spec.pattern.unwrap_or_default(),
                requested: entry.name,
            });
        }
        if created {
            tracing::info!(%id, pattern = %entry.name, "launch requested over the API");
        }
        let observed = self
            .wait_for(&id, wait, |observed| match observed {
                Some(observed) => {
                    observed.generation >= record.generation && launch_settled(observed)
                }
                None => false,
            })
            .await?;
        let row = Row {
            id: id.clone(),
            spec: record.spec.clone(),
            desired: Some(record),
            observed,
        };
        let info = pattern_info(&row, (self.clock)());
        let error = if info.healthy {
            String::new()
        } else {
            let reason = row
                .observed
                .as_ref()
                .and_then(|observed| observed.last_error.clone())
                .unwrap_or_else(|| "it has not passed a health check yet".to_string());
            format!("not healthy within {wait:?}: {reason}")
        };
        Ok(pb::LaunchResponse {
            process_id: id.to_string(),
            state: info.state,
            address: info.address,
            healthy: info.healthy,
            error,
        })
    }

    async fn terminate(
        &self,
        request: pb::TerminateRequest,
    ) -> Result<pb::TerminateResponse, PatternError> {
        if request.process_id.is_empty() {
            return Err(PatternError::MissingProcessId);
        }
        let unknown = || PatternError::UnknownProcess {
            id: request.process_id.clone(),
        };
        let id = ProcessId::new(request.process_id.clone()).map_err(|_| unknown())?;
        let row = self.row(&id)?.ok_or_else(unknown)?;
        if let Some(desired) = &row.desired {
            let hint = match desired.source {
                Source::File { .. } => "remove the file to stop it",
                Source::Admin { .. } => "prism-admin revokes it",
                Source::Api => "",
            };
            if desired.source != Source::Api {
                return Err(PatternError::NotLaunchedHere {
                    id,
                    owner: desired.source.clone(),
                    hint,
                });
            }
        }
        let requested = grace_from_request(request.grace_period_secs)?;
        let grace = if request.force {
            Some(Duration::ZERO)
        } else if !requested.is_zero() {
            Some(requested)
        } else {
            None
        };
        let deleted = self
            .store
            .delete_desired_with_grace(&id, &Source::Api, grace)?;
        if let (false, Some(grace)) = (deleted, grace) {
            // Already being stopped (an earlier terminate): a shorter grace or `force` still
            // applies to the stop under way.
            self.store.request_stop(&id, grace)?;
        }
        tracing::info!(%id, ?grace, force = request.force, "termination requested over the API");
        let wait = grace
            .unwrap_or(row.spec().termination_grace)
            .saturating_add(TERMINATE_MARGIN);
        let observed = self
            .wait_for(&id, wait, |observed| {
                observed.is_none_or(|observed| !observed.phase.has_live_process())
            })
            .await?;
        Ok(match observed {
            Some(observed) if observed.phase.has_live_process() => pb::TerminateResponse {
                success: false,
                error: format!("{id} was still stopping after {wait:?}"),
            },
            _ => pb::TerminateResponse {
                success: true,
                error: String::new(),
            },
        })
    }

    async fn wait_for(
        &self,
        id: &ProcessId,
        timeout: Duration,
        done: impl Fn(Option<&ObservedRecord>) -> bool,
    ) -> Result<Option<ObservedRecord>, PatternError> {
        wait_for_observed(&self.store, &self.stopping, id, timeout, done)
            .await
            .map_err(|error| match error {
                WaitError::ShuttingDown => PatternError::ShuttingDown,
                WaitError::Store(error) => PatternError::Store(error),
            })
    }

    fn row(&self, id: &ProcessId) -> Result<Option<Row>, PatternError> {
        let desired = self.store.desired(id)?;
        let observed = self.store.observed(id)?;
        Ok(Row::new(id.clone(), desired, observed))
    }

    /// Every pattern process, desired or observed, by id.
    fn pattern_rows(&self) -> Result<Vec<Row>, PatternError> {
        let (desired, _) = self.store.all_desired()?;
        let (observed, _) = self.store.all_observed()?;
        type Pair = (Option<DesiredRecord>, Option<ObservedRecord>);
        let mut pairs: BTreeMap<ProcessId, Pair> = BTreeMap::new();
        for record in desired {
            let id = record.id.clone();
            pairs.entry(id).or_default().0 = Some(record);
        }
        for record in observed {
            let id = record.id.clone();
            pairs.entry(id).or_default().1 = Some(record);
        }
        Ok(pairs
            .into_iter()
            .filter_map(|(id, (desired, observed))| Row::new(id, desired, observed))
            .filter(|row| row.spec().process_type == ProcessType::Pattern)
            .collect())
    }
}

/// Whether a launch can answer: the process is ready, or it has stopped for good.
fn launch_settled(observed: &ObservedRecord) -> bool {
    match observed.phase {
        Phase::Running => matches!(observed.health, Health::Healthy | Health::NotChecked),
        Phase::Exited | Phase::Tripped => true,
        Phase::Starting | Phase::Stopping | Phase::BackingOff | Phase::Stopped | Phase::Pending => {
            false
        }
    }
}

/// The least time a launch must wait for the health check to have had a chance to pass.
fn readiness_needs(spec: &ProcessSpec) -> Duration {
    spec.health_check.as_ref().map_or(Duration::ZERO, |check| {
        let attempts = check.success_threshold.max(1);
        let attempt = check.timeout.saturating_add(Duration::from_secs(1));
        check
            .initial_delay
            .saturating_add(attempt.saturating_mul(attempts))
    })
}

fn validated_config(
    config: std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, PatternError> {
    if config.len() > MAX_CONFIG_ENTRIES {
        return Err(PatternError::TooMuchConfig {
            count: config.len(),
        });
    }
    let mut validated = BTreeMap::new();
    for (key, value) in config {
        if INJECTED_ENV.contains(&key.as_str()) {
            return Err(PatternError::BadConfig {
                key,
                reason: "it is set by the launcher",
            });
        }
        if !is_env_name(&key) {
            return Err(PatternError::BadConfig {
                key,
                reason: "it is not a valid environment variable name",
            });
        }
        if value.contains('\0') {
            return Err(PatternError::BadConfig {
                key,
                reason: "its value contains a NUL byte",
            });
        }
        validated.insert(key, value);
    }
    Ok(validated)
}

/// The state clients see for a row.
fn process_state(row: &Row) -> pb::ProcessState {
    let Some(observed) = &row.observed else {
        return if row.desired.is_some() {
            pb::ProcessState::StateStarting
        } else {
            pb::ProcessState::StateTerminated
        };
    };
    match observed.phase {
        Phase::Starting => pb::ProcessState::StateStarting,
        Phase::Running => pb::ProcessState::StateRunning,
        Phase::Stopping => pb::ProcessState::StateTerminating,
        Phase::BackingOff | Phase::Tripped => pb::ProcessState::StateFailed,
        Phase::Pending => pb::ProcessState::StateStarting,
        Phase::Exited => match observed.last_exit {
            Some(status) if observed.spec.is_success(status) => pb::ProcessState::StateFinished,
            _ => pb::ProcessState::StateFailed,
        },
        Phase::Stopped if row.desired.is_some() => pb::ProcessState::StateStarting,
        Phase::Stopped => pb::ProcessState::StateTerminated,
    }
}

fn pattern_info(row: &Row, now: UnixMillis) -> pb::PatternInfo {
    let spec = row.spec();
    let state = process_state(row);
    let observed = row.observed.as_ref();
    let healthy = state == pb::ProcessState::StateRunning
        && observed.is_some_and(|observed| {
            matches!(observed.health, Health::Healthy | Health::NotChecked)
        });
    pb::PatternInfo {
        pattern_name: spec.pattern.clone().unwrap_or_default(),
        process_id: row.id.to_string(),
        state: state as i32,
        address: observed
            .filter(|observed| observed.ports.grpc != 0)
            .map_or_else(String::new, |observed| {
                format!("localhost:{}", observed.ports.grpc)
            }),
        healthy,
        uptime_seconds: observed
            .filter(|observed| observed.phase.has_live_process())
            .and_then(|observed| observed.started_at)
            .map_or(0, |started| seconds_between(started, now)),
        namespace: spec.namespace.clone().unwrap_or_default(),
        session_id: spec.session_id.clone().unwrap_or_default(),
        last_error: observed
            .and_then(|observed| observed.last_error.clone())
            .unwrap_or_default(),
        error_count: observed.map_or(0, |observed| saturating_i32(observed.error_count as usize)),
        restart_count: observed.map_or(0, |observed| {
            saturating_i32(observed.restart_count as usize)
        }),
        pid: observed
            .and_then(|observed| observed.pid)
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0),
    }
}

/// A `grace_period_secs` of a request, refused when negative or longer than `MAX_DURATION`.
fn grace_from_request(secs: i64) -> Result<Duration, PatternError> {
    u64::try_from(secs)
        .ok()
        .map(Duration::from_secs)
        .filter(|grace| *grace <= MAX_DURATION)
        .ok_or(PatternError::BadGrace(secs))
}

fn saturating_i32(value: usize) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn seconds_between(start: UnixMillis, end: UnixMillis) -> i64 {
    i64::try_from(end.saturating_duration_since(start).as_secs()).unwrap_or(i64::MAX)
}
