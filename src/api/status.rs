//! `prism.launcher.v1.LauncherAdmin`: desired vs actual for `prism-launcher status`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::errors::store_status;
use super::logs::{stream_logs, LogSource, LogStream};
use super::problems::SourceProblems;
use super::proto::prism::launcher::v1 as pb;
use crate::reconcile::{self, DesiredRecord, ObservedRecord, Phase, ProcessId, Source, UnixMillis};
use crate::store::Store;

/// Reads the clock for `generated_at`; injected so that the api module stays clock-agnostic.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

pub struct LauncherAdminService {
    pub store: Arc<Store>,
    pub launcher_id: String,
    pub problems: SourceProblems,
    pub clock: Clock,
    pub logs: Arc<dyn LogSource>,
}

#[tonic::async_trait]
impl pb::launcher_admin_server::LauncherAdmin for LauncherAdminService {
    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::StatusReport>, Status> {
        let (desired, _corrupt_desired) = self.store.all_desired().map_err(store_status)?;
        let (observed, _corrupt_observed) = self.store.all_observed().map_err(store_status)?;
        let report = status_report(
            &self.launcher_id,
            desired,
            observed,
            self.problems.snapshot(),
            (self.clock)(),
        );
        Ok(Response::new(report))
    }

    type StreamLogsStream = LogStream;

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        stream_logs(self.logs.clone(), request.into_inner()).map(Response::new)
    }

    async fn reset_process(
        &self,
        request: Request<pb::ResetProcessRequest>,
    ) -> Result<Response<pb::ResetProcessResponse>, Status> {
        let process_id = request.into_inner().process_id;
        let unknown = || Status::not_found(format!("nothing desires a process {process_id:?}"));
        let id = ProcessId::new(process_id.clone()).map_err(|_| unknown())?;
        let observed = self.store.observed(&id).map_err(store_status)?;
        let reset = self.store.reset_desired(&id).map_err(store_status)?;
        if reset.is_none() {
            return Err(unknown());
        }
        tracing::info!(%id, "reset requested: failure streak cleared");
        Ok(Response::new(pb::ResetProcessResponse {
            process_id,
            previous_state: observed
                .as_ref()
                .map_or("pending", |record| record.phase.as_str())
                .to_string(),
            consecutive_failures: observed.map_or(0, |record| record.consecutive_failures),
        }))
    }
}

/// Builds the report from the records: one row per id that is desired or observed.
pub fn status_report(
    launcher_id: &str,
    desired: Vec<DesiredRecord>,
    observed: Vec<ObservedRecord>,
    problems: BTreeMap<String, Vec<String>>,
    now: UnixMillis,
) -> pb::StatusReport {
    let mut rows: BTreeMap<ProcessId, (Option<DesiredRecord>, Option<ObservedRecord>)> =
        BTreeMap::new();
    for record in desired {
        let id = record.id.clone();
        rows.entry(id).or_default().0 = Some(record);
    }
    for record in observed {
        let id = record.id.clone();
        rows.entry(id).or_default().1 = Some(record);
    }
    let mut summary = reconcile::DiffSummary::default();
    let processes = rows
        .into_iter()
        .map(|(id, (desired, observed))| {
            let diff = reconcile::diff(desired.as_ref(), observed.as_ref());
            summary.add(diff.kind);
            process_status(id, desired.as_ref(), observed.as_ref(), diff)
        })
        .collect();
    pb::StatusReport {
        launcher_id: launcher_id.to_string(),
        generated_at_unix_ms: unix_ms(now),
        processes,
        source_problems: problems
            .into_iter()
            .map(|(source, errors)| pb::SourceProblem { source, errors })
            .collect(),
        summary: Some(pb::DiffSummary {
            to_start: summary.to_start,
            to_replace: summary.to_replace,
            to_stop: summary.to_stop,
            failing: summary.failing,
            in_sync: summary.in_sync,
        }),
    }
}

fn process_status(
    id: ProcessId,
    desired: Option<&DesiredRecord>,
    observed: Option<&ObservedRecord>,
    diff: reconcile::Diff,
) -> pb::ProcessStatus {
    let spec = desired
        .map(|record| &record.spec)
        .or(observed.map(|record| &record.spec));
    let actual = observed.map_or("pending", |record| record.phase.as_str());
    pb::ProcessStatus {
        id: id.to_string(),
        process_type: spec
            .map_or("", |spec| spec.process_type.as_str())
            .to_string(),
        source: desired.map_or_else(String::new, |record| record.source.to_string()),
        admin_version: match desired.map(|record| &record.source) {
            Some(Source::Admin { version }) => *version,
            _ => 0,
        },
        desired_generation: desired.map_or(0, |record| record.generation),
        running_generation: observed
            .filter(|record| record.phase != Phase::Stopped)
            .map_or(0, |record| record.generation),
        actual: actual.to_string(),
        diff: diff.kind.as_str().to_string(),
        diff_detail: diff.detail,
        pid: observed
            .and_then(|record| record.pid)
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0),
        health: observed
            .map_or_else(
                || {
                    if spec.is_some_and(|spec| spec.health_check.is_some()) {
                        "unknown"
                    } else {
                        "none"
                    }
                },
                |record| record.health.as_str(),
            )
            .to_string(),
        restart_count: observed.map_or(0, |record| record.restart_count),
        consecutive_failures: observed.map_or(0, |record| record.consecutive_failures),
        last_error: observed
            .and_then(|record| record.last_error.clone())
            .unwrap_or_default(),
        last_exit: observed
            .and_then(|record| record.last_exit)
            .map_or_else(String::new, |status| status.to_string()),
        started_at_unix_ms: observed
            .and_then(|record| record.started_at)
            .map_or(0, unix_ms),
        next_restart_at_unix_ms: observed
            .and_then(|record| record.next_restart_at)
            .map_or(0, unix_ms),
        pattern: spec
            .and_then(|spec| spec.pattern.clone())
            .unwrap_or_default(),
        labels: spec
            .map(|spec| spec.labels.clone().into_iter().collect())
            .unwrap_or_default(),
        exited_at_unix_ms: observed
            .and_then(|record| record.exited_at)
            .map_or(0, unix_ms),
        tripped_at_unix_ms: observed
            .and_then(|record| record.tripped_at)
            .map_or(0, unix_ms),
        cpu_limit_millis: spec
            .and_then(|spec| spec.resources.as_ref())
            .and_then(|resources| resources.cpu_millis)
            .unwrap_or(0),
        memory_limit_bytes: spec
            .and_then(|spec| spec.resources.as_ref())
            .and_then(|resources| resources.memory_bytes)
            .unwrap_or(0),
        grpc_port: observed.map_or(0, |record| u32::from(record.ports.grpc)),
        health_port: observed.map_or(0, |record| u32::from(record.ports.health)),
    }
}

fn unix_ms(at: UnixMillis) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}
