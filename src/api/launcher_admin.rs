//! `prism.launcher.v1.LauncherAdmin`, our own service: desired vs actual for `prism-launcher
//! status`, resetting a tripped process, streaming a child's log, the operator's verbs (stop and
//! start: a hold; restart), `describe`, and declaring and undeclaring processes through the
//! spec directory (`apply`, `delete`: `declare`). The verbs only write desired state (the
//! hold, a restart request, a spec file); the reconcile loop stops, starts and replaces.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::blocking::{blocking, store_call};
use super::context::ApiContext;
use super::convert::to_proto::{process_description, status_report, AdminReport, LogTail};
use super::declare::{apply_specs, delete_processes};
use super::errors::{admin_status, blocking_status, AdminError};
use super::logs::{stream_logs, LogStream};
use super::proto::prism::launcher::v1 as pb;
use crate::reconcile::{ObservedRecord, OperatorVerb, Phase, ProcessId};
use crate::store::Operated;
use crate::telemetry::Reader;

/// Most log lines a description carries.
const MAX_DESCRIBE_LOG_LINES: u32 = 1000;

/// Most bytes of log a description carries (the last ones, from the start of a line when one
/// starts within them), so that a description stays far below gRPC's 4 MiB message limit.
const MAX_DESCRIBE_LOG_BYTES: usize = 64 * 1024;

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
            let admin = AdminReport {
                link: context.admin.link.borrow().clone(),
                endpoint: context.admin.endpoint.clone(),
                disconnect_grace: context.admin.disconnect_grace,
                suspended: *context.admin.suspended.borrow(),
                term: context.store.admin_term()?,
                unconfirmed: context.store.unconfirmed_admin()?,
            };
            Ok(status_report(
                &context.launcher_id,
                &rows,
                context.problems.snapshot(),
                context.limit_mode,
                &usage,
                &admin,
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

    async fn stop_process(
        &self,
        request: Request<pb::StopProcessRequest>,
    ) -> Result<Response<pb::StopProcessResponse>, Status> {
        let process_id = request.into_inner().process_id;
        let (changed, observed) = self
            .operate(&process_id, OperatorVerb::Hold)
            .await
            .map_err(admin_status)?;
        if changed {
            tracing::info!(id = %process_id, "operator hold: the process is stopped until started again");
        }
        Ok(Response::new(pb::StopProcessResponse {
            process_id,
            changed,
            previous_state: phase_word(observed.as_ref()),
        }))
    }

    async fn start_process(
        &self,
        request: Request<pb::StartProcessRequest>,
    ) -> Result<Response<pb::StartProcessResponse>, Status> {
        let process_id = request.into_inner().process_id;
        let (changed, observed) = self
            .operate(&process_id, OperatorVerb::Release)
            .await
            .map_err(admin_status)?;
        if changed {
            tracing::info!(id = %process_id, "operator hold released: the process may run again");
        }
        Ok(Response::new(pb::StartProcessResponse {
            process_id,
            changed,
            previous_state: phase_word(observed.as_ref()),
        }))
    }

    async fn restart_process(
        &self,
        request: Request<pb::RestartProcessRequest>,
    ) -> Result<Response<pb::RestartProcessResponse>, Status> {
        let process_id = request.into_inner().process_id;
        let id = ProcessId::new(process_id.clone())
            .map_err(|error| admin_status(AdminError::InvalidId(error)))?;
        let store = self.context.store.clone();
        let asked = id.clone();
        let (observed, operated) = store_call(move || {
            Ok((
                store.observed(&asked)?,
                store.operate(&asked, OperatorVerb::Restart)?,
            ))
        })
        .await
        .map_err(blocking_status)?;
        let after = match operated {
            Operated::Done { after, .. } => after,
            Operated::Refused { refusal, .. } => {
                return Err(admin_status(AdminError::Refused(refusal)))
            }
            Operated::NotDesired => {
                return Err(admin_status(AdminError::UnknownProcess(process_id)))
            }
        };
        tracing::info!(%id, request = after.restarts, "operator restart requested");
        Ok(Response::new(pb::RestartProcessResponse {
            process_id,
            restart_request: after.restarts,
            previous_pid: observed
                .filter(|record| record.phase.has_live_process())
                .and_then(|record| record.pid)
                .and_then(|pid| i32::try_from(pid).ok())
                .unwrap_or(0),
        }))
    }

    async fn describe_process(
        &self,
        request: Request<pb::DescribeProcessRequest>,
    ) -> Result<Response<pb::ProcessDescription>, Status> {
        let request = request.into_inner();
        let id = ProcessId::new(request.process_id.clone())
            .map_err(|error| admin_status(AdminError::InvalidId(error)))?;
        let context = self.context.clone();
        let read = id.clone();
        let (row, history, unconfirmed) = store_call(move || {
            Ok((
                context.store.row(&read)?,
                context.store.history(&read)?,
                context.store.unconfirmed_admin()?.contains(&read),
            ))
        })
        .await
        .map_err(blocking_status)?;
        let Some(row) = row else {
            return Err(admin_status(AdminError::NotKnown(request.process_id)));
        };
        let log = self
            .log_tail(&id, request.log_lines.min(MAX_DESCRIBE_LOG_LINES))
            .await;
        let now = self.context.now();
        let usage = if row.spec().resources.is_some() {
            let context = self.context.clone();
            let sampled = id.clone();
            blocking(move || context.usage.sample_one(Reader::Status, now, &sampled))
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        Ok(Response::new(process_description(
            &row,
            &history,
            self.context.limit_mode,
            usage.as_ref(),
            log,
            unconfirmed,
            now,
        )))
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

impl LauncherAdminService {
    /// Applies an operator's hold or its release to `process_id`; returns whether the record
    /// changed, and what was observed of the process before.
    async fn operate(
        &self,
        process_id: &str,
        verb: OperatorVerb,
    ) -> Result<(bool, Option<ObservedRecord>), AdminError> {
        let id = ProcessId::new(process_id.to_string()).map_err(AdminError::InvalidId)?;
        let store = self.context.store.clone();
        let (observed, operated) =
            store_call(move || Ok((store.observed(&id)?, store.operate(&id, verb)?))).await?;
        match operated {
            Operated::Done { before, after } => Ok((before != after, observed)),
            Operated::Refused { refusal, .. } => Err(AdminError::Refused(refusal)),
            Operated::NotDesired => Err(AdminError::UnknownProcess(process_id.to_string())),
        }
    }

    /// The last `lines` lines of the log of `id` (none for 0), at most
    /// `MAX_DESCRIBE_LOG_BYTES`, or why there are none; read on the blocking pool.
    async fn log_tail(&self, id: &ProcessId, lines: u32) -> LogTail {
        if lines == 0 {
            return LogTail::default();
        }
        let (logs, read) = (self.context.logs.clone(), id.clone());
        let tail = blocking(move || logs.select(&read, Some(lines as usize), false, None)).await;
        match tail {
            Ok(Ok(Some((bytes, _)))) => LogTail {
                bytes: last_bytes(bytes, MAX_DESCRIBE_LOG_BYTES),
                note: String::new(),
            },
            // Only a `previous` selection finds no instance.
            Ok(Ok(None)) => LogTail::default(),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => LogTail {
                bytes: Vec::new(),
                note: "no log yet: the process has not been started by this launcher".to_string(),
            },
            Ok(Err(error)) => LogTail {
                bytes: Vec::new(),
                note: format!("cannot read the log: {error}"),
            },
            Err(error) => LogTail {
                bytes: Vec::new(),
                note: format!("cannot read the log: {error}"),
            },
        }
    }
}

/// The phase word of what was observed (`pending` before anything was).
fn phase_word(observed: Option<&ObservedRecord>) -> String {
    observed
        .map_or(Phase::Pending, |record| record.phase)
        .to_string()
}

/// The last `max` bytes of `bytes`, from the start of a line when one starts within them.
fn last_bytes(mut bytes: Vec<u8>, max: usize) -> Vec<u8> {
    if bytes.len() <= max {
        return bytes;
    }
    let start = bytes.len() - max;
    let cut = bytes[start..]
        .iter()
        .position(|byte| *byte == b'\n')
        .map_or(start, |newline| start + newline + 1);
    bytes.drain(..cut);
    bytes
}

#[cfg(test)]
mod tests {
    use super::last_bytes;

    #[test]
    fn a_long_log_tail_is_cut_at_a_line_start() {
        assert_eq!(last_bytes(b"one\ntwo\n".to_vec(), 64), b"one\ntwo\n");
        assert_eq!(last_bytes(b"one\ntwo\nthree\n".to_vec(), 9), b"three\n");
        assert_eq!(
            last_bytes(b"abcdefgh".to_vec(), 3),
            b"fgh",
            "no line start: the bytes"
        );
    }
}
