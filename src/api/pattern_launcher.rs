//! `prism.launcher.PatternLauncher`, wire-compatible with existing Prism clients (WIRE.md §1).
//!
//! The RPCs only write desired state and then watch the observed state that the reconcile loop
//! records; they never start or stop a process themselves.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::blocking::store_call;
use super::context::ApiContext;
use super::convert::from_proto::{
    grace_from_request, launch_from_request, list_filters, requested_process_id,
};
use super::convert::to_proto::{health_response, pattern_info, process_state};
use super::errors::{pattern_status, PatternError};
use super::proto::prism::launcher as pb;
use super::waiting::{wait_for_observed, WaitError};
use crate::reconcile::{
    ObservedRecord, Phase, ProcessId, ProcessRow, ProcessSpec, ProcessType, Source,
};
use crate::sources::catalog::read_catalog;
use crate::store::{Store, StoreError};

/// What TerminatePattern waits beyond the grace period for the exit to be recorded.
const TERMINATE_MARGIN: Duration = Duration::from_secs(5);

pub struct PatternLauncherService {
    pub context: Arc<ApiContext>,
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
        let state_filter = list_filters(&request).map_err(pattern_status)?;
        let now = self.context.now();
        let rows = self.pattern_rows().await.map_err(pattern_status)?;
        let total_count = i32::try_from(rows.len()).unwrap_or(i32::MAX);
        let patterns = rows
            .iter()
            .filter(|row| state_filter.is_none_or(|state| process_state(row.state()) == state))
            .map(|row| pattern_info(row, now))
            .filter(|info| {
                request.pattern_name.is_empty() || info.pattern_name == request.pattern_name
            })
            .filter(|info| request.namespace.is_empty() || info.namespace == request.namespace)
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
        let rows = self.pattern_rows().await.map_err(pattern_status)?;
        Ok(Response::new(health_response(
            &rows,
            request.into_inner().include_processes,
            self.context.started_at,
            self.context.now(),
        )))
    }

    async fn get_process_status(
        &self,
        request: Request<pb::GetProcessStatusRequest>,
    ) -> Result<Response<pb::GetProcessStatusResponse>, Status> {
        let request = request.into_inner();
        let id = requested_process_id(&request.process_id).map_err(pattern_status)?;
        let not_found = Response::new(pb::GetProcessStatusResponse {
            process: None,
            not_found: true,
        });
        let Some(id) = id else {
            return Ok(not_found);
        };
        let row = self.row(&id).await.map_err(pattern_status)?;
        Ok(match row {
            // Terminated and stopped: its record is only waiting to be forgotten.
            Some(row) if !row.is_gone() => Response::new(pb::GetProcessStatusResponse {
                process: Some(pattern_info(&row, self.context.now())),
                not_found: false,
            }),
            _ => not_found,
        })
    }
}

impl PatternLauncherService {
    async fn launch(&self, request: pb::LaunchRequest) -> Result<pb::LaunchResponse, PatternError> {
        let (id, spec) = launch_from_request(
            &request,
            &read_catalog(&self.context.catalog),
            self.context.default_isolation,
        )?;
        let pattern = spec.pattern.clone().unwrap_or_default();
        let wait = self.context.launch_wait.max(readiness_needs(&spec));
        let store = self.context.store.clone();
        let (record, created) = {
            let (id, spec) = (id.clone(), spec.clone());
            store_call(move || store.create_desired_if_absent(&id, &spec, &Source::Api)).await?
        };
        if !created && record.spec.pattern.as_deref() != Some(pattern.as_str()) {
            return Err(PatternError::OtherPattern {
                id,
                running: record.spec.pattern.clone().unwrap_or_default(),
                requested: pattern,
            });
        }
        if created {
            tracing::info!(%id, %pattern, "launch requested over the API");
        }
        if record.held {
            // An operator's hold outranks a launch: it is answered at once, not waited out.
            let observed = self.row(&id).await?.and_then(|row| row.observed().cloned());
            let row = ProcessRow::new(id.clone(), Some(record), observed)
                .ok_or_else(|| PatternError::UnknownProcess { id: id.to_string() })?;
            let info = pattern_info(&row, self.context.now());
            return Ok(pb::LaunchResponse {
                process_id: id.to_string(),
                state: info.state,
                address: info.address,
                healthy: false,
                error: format!(
                    "{id} is held stopped by the operator (`prism-launcher stop`); \
                     `prism-launcher start {id}` runs it again"
                ),
            });
        }
        let generation = record.generation;
        let observed = self
            .wait_for(&id, wait, |observed| match observed {
                Some(observed) => observed.generation >= generation && launch_settled(observed),
                None => false,
            })
            .await?;
        let row = ProcessRow::new(id.clone(), Some(record), observed)
            .ok_or_else(|| PatternError::UnknownProcess { id: id.to_string() })?;
        let info = pattern_info(&row, self.context.now());
        let error = if info.healthy {
            String::new()
        } else {
            let reason = row
                .observed()
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
        let unknown = || PatternError::UnknownProcess {
            id: request.process_id.clone(),
        };
        let id = requested_process_id(&request.process_id)?.ok_or_else(unknown)?;
        let row = self.row(&id).await?.ok_or_else(unknown)?;
        if let Some(desired) = row.desired() {
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
        let store = self.context.store.clone();
        let stopped = id.clone();
        store_call(move || undesire_launched(&store, &stopped, grace)).await?;
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
        wait_for_observed(
            &self.context.store,
            &self.context.stopping,
            id,
            timeout,
            done,
        )
        .await
        .map_err(|error| match error {
            WaitError::ShuttingDown => PatternError::ShuttingDown,
            WaitError::Store(error) => error.into(),
        })
    }

    async fn row(&self, id: &ProcessId) -> Result<Option<ProcessRow>, PatternError> {
        let store = self.context.store.clone();
        let id = id.clone();
        Ok(store_call(move || store.row(&id)).await?)
    }

    /// Every pattern process, desired or observed, by id.
    async fn pattern_rows(&self) -> Result<Vec<ProcessRow>, PatternError> {
        let store = self.context.store.clone();
        Ok(store_call(move || {
            let mut rows = store.rows()?;
            rows.retain(|row| row.spec().process_type == ProcessType::Pattern);
            Ok(rows)
        })
        .await?)
    }
}

/// Removes the desired record of `id`, launched over the API, asking for `grace` (zero: kill at
/// once; `None`: its spec's) for its stop; TerminatePattern's and `delete`'s way.
pub(super) fn undesire_launched(
    store: &Store,
    id: &ProcessId,
    grace: Option<Duration>,
) -> Result<(), StoreError> {
    let deleted = store.delete_desired_with_grace(id, &Source::Api, grace)?;
    if let (false, Some(grace)) = (deleted, grace) {
        // Already being stopped (an earlier terminate): a shorter grace or `force` still
        // applies to the stop under way.
        store.request_stop(id, grace)?;
    }
    Ok(())
}

/// Whether a launch can answer: the process is ready, or it has stopped for good.
fn launch_settled(observed: &ObservedRecord) -> bool {
    match observed.phase {
        Phase::Running => observed.is_ready(),
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
