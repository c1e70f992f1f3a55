//! prism-admin's `prism.ControlPlane` (WIRE.md §2), the launcher's side: AssignProcess and
//! RevokeProcess are served here; RegisterLauncher and LauncherHeartbeat are what the launcher
//! calls on prism-admin (see `admin_client`), so they answer UNIMPLEMENTED.
//!
//! An assignment is validated, checked against capabilities and capacity, ordered by version,
//! and written as a desired record with source `admin`; the ack means durable, not running.
//! Both calls may carry the admin's term (`x-prism-admin-term` metadata): one older than the
//! newest term seen comes from a stale admin and is refused with FAILED_PRECONDITION naming
//! both (checked first, and again in the write's own transaction).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::blocking::{blocking, store_call};
use super::context::ApiContext;
use super::convert::from_proto::{admin_term, assignment_spec};
use super::convert::to_proto::exit_code;
use super::errors::{assignment_status, AssignmentError};
use super::proto::prism as pb;
use super::waiting::{wait_for_observed, WaitError};
use crate::reconcile::{
    AdminTerm, ProcessId, ProcessType, Source, UnixMillis, MAX_DURATION, MAX_NAME_BYTES,
};
use crate::sources::catalog::read_catalog;
use crate::store::Assigned;

/// What RevokeProcess waits for when `graceful_timeout_seconds` is 0.
pub const DEFAULT_REVOKE_GRACE: Duration = Duration::from_secs(30);

/// What RevokeProcess waits beyond the grace period for the exit to be recorded.
const REVOKE_MARGIN: Duration = Duration::from_secs(5);

/// What the launcher accepts from prism-admin.
#[derive(Debug, Clone)]
pub struct AssignmentPolicy {
    pub launcher_id: String,
    pub capabilities: Vec<ProcessType>,
    pub max_processes: Option<u32>,
    /// Executables pushed over the network must be under one of these (canonical) folders.
    pub allowed_roots: Vec<PathBuf>,
}

pub struct ControlPlaneService {
    pub context: Arc<ApiContext>,
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
        // Validating the binary reads the file system and the write waits for the disk: the
        // whole assignment runs on the blocking pool.
        let context = self.context.clone();
        let term = admin_term(request.metadata()).map_err(assignment_status)?;
        let assignment = request.into_inner();
        blocking(move || assign(&context, assignment, term))
            .await
            .map_err(AssignmentError::from)
            .and_then(|assigned| assigned)
            .map(Response::new)
            .map_err(assignment_status)
    }

    async fn revoke_process(
        &self,
        request: Request<pb::ProcessRevocation>,
    ) -> Result<Response<pb::ProcessRevocationAck>, Status> {
        let term = admin_term(request.metadata()).map_err(assignment_status)?;
        self.revoke(request.into_inner(), term)
            .await
            .map(Response::new)
            .map_err(assignment_status)
    }
}

/// Validates an assignment and writes it as a desired record (blocking).
fn assign(
    context: &ApiContext,
    assignment: pb::ProcessAssignment,
    term: Option<AdminTerm>,
) -> Result<pb::ProcessAssignmentAck, AssignmentError> {
    // A stale admin is told so whatever it asks, before its request is looked at.
    context.store.check_admin_term(term)?;
    let policy = &context.policy;
    let (id, spec) = assignment_spec(&assignment, policy, &read_catalog(&context.catalog))?;
    if let Some(max) = policy.max_processes {
        let is_new = context.store.desired(&id)?.is_none();
        let full = context.store.desired_count()? >= usize::try_from(max).unwrap_or(usize::MAX);
        if is_new && full {
            return Err(AssignmentError::AtCapacity {
                launcher_id: policy.launcher_id.clone(),
                max,
            });
        }
    }
    let version = assignment.version;
    let message = match context.store.assign_admin(&id, &spec, version, term)? {
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

impl ControlPlaneService {
    async fn revoke(
        &self,
        revocation: pb::ProcessRevocation,
        term: Option<AdminTerm>,
    ) -> Result<pb::ProcessRevocationAck, AssignmentError> {
        let context = &self.context;
        let store = context.store.clone();
        {
            let store = store.clone();
            store_call(move || store.check_admin_term(term)).await?;
        }
        // Empty is refused rather than taken for "this launcher": prism-admin always names the
        // launcher, and a revocation that names none may have been meant for another.
        if revocation.launcher_id.is_empty() {
            return Err(AssignmentError::MissingLauncherId);
        }
        if revocation.launcher_id.len() > MAX_NAME_BYTES {
            return Err(AssignmentError::TooLong {
                field: "launcher_id",
                len: revocation.launcher_id.len(),
                max: MAX_NAME_BYTES,
            });
        }
        if revocation.launcher_id != context.launcher_id {
            return Err(AssignmentError::WrongLauncher {
                ours: context.launcher_id.clone(),
                asked: revocation.launcher_id,
            });
        }
        let grace = match revocation.graceful_timeout_seconds {
            0 => DEFAULT_REVOKE_GRACE,
            seconds => u64::try_from(seconds)
                .ok()
                .map(Duration::from_secs)
                .filter(|grace| *grace <= MAX_DURATION)
                .ok_or(AssignmentError::BadTimeout(seconds))?,
        };
        let unknown = || AssignmentError::UnknownProcess(revocation.process_id.clone());
        let id = ProcessId::new(revocation.process_id.clone()).map_err(|_| unknown())?;
        let (desired, observed) = {
            let (store, id) = (store.clone(), id.clone());
            store_call(move || Ok((store.desired(&id)?, store.observed(&id)?))).await?
        };
        match &desired {
            None if observed.is_none() => return Err(unknown()),
            Some(record) if !matches!(record.source, Source::Admin { .. }) => {
                return Err(AssignmentError::NotAssigned {
                    id,
                    owner: record.source.clone(),
                })
            }
            _ => {}
        }
        let asked_at = context.now();
        {
            let (store, id) = (store.clone(), id.clone());
            store_call(move || {
                if !store.revoke_admin(&id, grace, term)? {
                    store.request_stop(&id, grace)?;
                }
                Ok(())
            })
            .await?;
        }
        tracing::info!(%id, ?grace, "revoked by prism-admin");
        let observed = wait_for_observed(
            &store,
            &context.stopping,
            &id,
            grace.saturating_add(REVOKE_MARGIN),
            |observed| observed.is_none_or(|record| !record.phase.has_live_process()),
        )
        .await
        .map_err(|error| match error {
            WaitError::ShuttingDown => AssignmentError::ShuttingDown,
            WaitError::Store(error) => error.into(),
        })?;
        if observed.is_some_and(|record| record.phase.has_live_process()) {
            return Ok(pb::ProcessRevocationAck {
                success: false,
                message: format!("{id} was still stopping after {grace:?}"),
                stopped_at: 0,
                exit_code: 0,
            });
        }
        let exit = {
            let (store, id) = (store.clone(), id.clone());
            store_call(move || store.last_exit(&id)).await?
        }
        .filter(|(_, at)| *at >= earliest(asked_at));
        let (exit_code, stopped_at) = match exit {
            Some((status, at)) => (exit_code(status), at),
            // It had no running process to stop (it was backing off or pending).
            None => (0, context.now()),
        };
        Ok(pb::ProcessRevocationAck {
            success: true,
            message: format!("{id} stopped"),
            stopped_at: stopped_at.whole_seconds(),
            exit_code,
        })
    }
}

/// Exits recorded at or after this belong to the revocation asked at `asked_at` (a little slack
/// for clocks read in two places).
fn earliest(asked_at: UnixMillis) -> UnixMillis {
    UnixMillis(asked_at.0.saturating_sub(1000))
}
