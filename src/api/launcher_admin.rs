//! `prism.launcher.v1.LauncherAdmin`, our own service: desired vs actual for `prism-launcher
//! status`, resetting a tripped process, streaming a child's log, and declaring and
//! undeclaring processes through the spec directory (`apply`, `delete`: `declare`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking::store_call;
use super::context::ApiContext;
use super::convert::to_proto::status_report;
use super::declare::{apply_specs, delete_processes};
use super::errors::{admin_status, blocking_status, AdminError};
use super::logs::{stream_logs, LogStream};
use super::proto::prism::launcher::v1 as pb;
use crate::reconcile::{Phase, ProcessId};
use crate::telemetry::Reader;

pub struct LauncherAdminService {
    pub context: Arc<ApiContext>,
}

#[tonic::async_trait]
impl pb::launcher_admin_server::LauncherAdmin for LauncherAdminService {
    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::StatusReport>, Status> {
        // Reading and decoding every record is O(processes): on the blocking pool.
        let context = self.context.clone();
        let report = store_call(move || {
            let rows = context.store.rows()?;
            let now = context.now();
            let usage = context.usage.sample_limited(Reader::Status, now, &rows);
            Ok(status_report(
                &context.launcher_id,
                &rows,
                context.problems.snapshot(),
                context.limit_mode,
                &usage,
                now,
            ))
        })
        .await
        .map_err(blocking_status)?;
        Ok(Response::new(report))
    }

    type StreamLogsStream = LogStream;

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        stream_logs(
            self.context.logs.clone(),
            request.into_inner(),
            self.context.stopping.clone(),
            self.context.clock.clone(),
        )
        .await
        .map(Response::new)
        .map_err(admin_status)
    }

    async fn apply_specs(
        &self,
        request: Request<pb::ApplySpecsRequest>,
    ) -> Result<Response<pb::ApplySpecsResponse>, Status> {
        apply_specs(self.context.clone(), request.into_inner())
            .await
            .map(Response::new)
            .map_err(admin_status)
    }

    async fn delete_processes(
        &self,
        request: Request<pb::DeleteProcessesRequest>,
    ) -> Result<Response<pb::DeleteProcessesResponse>, Status> {
        delete_processes(self.context.clone(), request.into_inner())
            .await
            .map(Response::new)
            .map_err(admin_status)
    }

    async fn reset_process(
        &self,
        request: Request<pb::ResetProcessRequest>,
    ) -> Result<Response<pb::ResetProcessResponse>, Status> {
        let process_id = request.into_inner().process_id;
        let unknown = || admin_status(AdminError::UnknownProcess(process_id.clone()));
        let id = ProcessId::new(process_id.clone()).map_err(|_| unknown())?;
        let store = self.context.store.clone();
        let reset_id = id.clone();
        let (observed, reset) =
            store_call(move || Ok((store.observed(&reset_id)?, store.reset_desired(&reset_id)?)))
                .await
                .map_err(blocking_status)?;
        if reset.is_none() {
            return Err(unknown());
        }
        tracing::info!(%id, "reset requested: failure streak cleared");
        Ok(Response::new(pb::ResetProcessResponse {
            process_id,
            previous_state: observed
                .as_ref()
                .map_or(Phase::Pending, |record| record.phase)
                .to_string(),
            consecutive_failures: observed.map_or(0, |record| record.consecutive_failures),
        }))
    }
}
