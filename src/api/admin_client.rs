//! The launcher as a client of prism-admin: registration (retried with capped exponential
//! backoff, in the background, while the launcher works standalone), `initial_processes` applied
//! as the admin's whole desired set, heartbeats with real process health and resources, and
//! re-registration after admin was unreachable or stopped knowing the launcher.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::blocking::{store_call, BlockingStoreError};
use super::context::ApiContext;
use super::convert::from_proto::assignment_spec;
use super::convert::to_proto::{capability_words, heartbeat_request};
use super::proto::prism as pb;
use crate::error_chain::Chain;
use crate::reconcile::{ProcessId, ProcessSpec, Source};
use crate::sources::catalog::read_catalog;
use crate::store::StoreError;
use crate::telemetry::{Metrics, UsageBoard};
use pb::control_plane_client::ControlPlaneClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::auth::{BearerToken, WithToken};
use super::tls::ClientTls;

/// The first wait before registering again; it doubles up to `REGISTER_RETRY_MAX`.
const REGISTER_RETRY_INITIAL: Duration = Duration::from_millis(250);
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(30);
/// A call to admin that takes longer than this has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("--admin-endpoint {endpoint:?} is not a valid address")]
    BadEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Who the launcher is, as it tells prism-admin.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `host:port` or a URL.
    pub endpoint: String,
    pub launcher_id: String,
    /// Where admin dials the launcher (never an unspecified address).
    pub advertise_address: String,
    pub region: String,
    pub max_processes: Option<u32>,
    pub heartbeat_interval: Duration,
    pub metadata: BTreeMap<String, String>,
    pub metrics: Metrics,
    /// TLS to admin (its CA, and this launcher's certificate when admin asks for one).
    pub tls: Option<ClientTls>,
    /// Sent to admin as `authorization: Bearer <token>`.
    pub token: Option<Arc<BearerToken>>,
}

type AdminClient = ControlPlaneClient<InterceptedService<Channel, WithToken>>;

/// Registers with admin and heartbeats until `shutdown` completes.
pub async fn run_admin_client(
    settings: AdminSettings,
    context: Arc<ApiContext>,
    usage: UsageBoard,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdminClientError> {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = if settings.endpoint.contains("://") {
        settings.endpoint.clone()
    } else {
        format!("{scheme}://{}", settings.endpoint)
    };
    let bad_endpoint = |source| AdminClientError::BadEndpoint {
        endpoint: settings.endpoint.clone(),
        source,
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(bad_endpoint)?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    if let Some(tls) = &settings.tls {
        endpoint = endpoint.tls_config(tls.0.clone()).map_err(bad_endpoint)?;
    }
    let client = ControlPlaneClient::with_interceptor(
        endpoint.connect_lazy(),
        WithToken::new(settings.token.as_deref()),
    );
    let admin = Admin {
        settings,
        context,
        usage,
    };
    tokio::pin!(shutdown);
    let mut retry = REGISTER_RETRY_INITIAL;
    loop {
        if admin.register(client.clone()).await {
            retry = REGISTER_RETRY_INITIAL;
            admin.settings.metrics.admin_registered.set(1);
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = admin.heartbeat_until_lost(client.clone()) => {}
            }
            admin.settings.metrics.admin_registered.set(0);
        } else {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(REGISTER_RETRY_MAX);
        }
    }
}

struct Admin {
    settings: AdminSettings,
    context: Arc<ApiContext>,
    usage: UsageBoard,
}

impl Admin {
    /// One registration attempt; applies the admin's desired set when it succeeds.
    async fn register(&self, mut client: AdminClient) -> bool {
        let settings = &self.settings;
        let capabilities = capability_words(&self.context.policy.capabilities);
        let registration = pb::LauncherRegistration {
            launcher_id: settings.launcher_id.clone(),
            address: settings.advertise_address.clone(),
            region: settings.region.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: capabilities.clone(),
            max_processes: settings
                .max_processes
                .map_or(0, |max| i32::try_from(max).unwrap_or(i32::MAX)),
            process_types: capabilities,
            metadata: settings.metadata.clone().into_iter().collect(),
        };
        let ack = match client.register_launcher(registration).await {
            Ok(ack) => ack.into_inner(),
            Err(status) => {
                tracing::warn!(endpoint = %settings.endpoint, code = ?status.code(), message = status.message(),
                    "cannot register with prism-admin; running standalone and retrying");
                return false;
            }
        };
        if !ack.success {
            tracing::warn!(endpoint = %settings.endpoint, message = %ack.message,
                "prism-admin refused the registration; retrying");
            return false;
        }
        tracing::info!(endpoint = %settings.endpoint, initial = ack.initial_processes.len(),
            "registered with prism-admin");
        let context = self.context.clone();
        let initial = ack.initial_processes;
        let applied = store_call(move || apply_initial(&context, &initial)).await;
        if let Err(error) = applied {
            tracing::error!(error = %Chain(&error), "cannot apply prism-admin's initial processes");
        }
        true
    }

    /// Heartbeats every interval until admin is unreachable or no longer knows the launcher.
    async fn heartbeat_until_lost(&self, mut client: AdminClient) {
        let mut ticker = tokio::time::interval(self.settings.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let request = match self.heartbeat().await {
                Ok(request) => request,
                Err(error) => {
                    tracing::error!(error = %Chain(&error), "cannot read the state for a heartbeat");
                    continue;
                }
            };
            match client.launcher_heartbeat(request).await {
                Ok(ack) if ack.get_ref().success => {}
                Ok(ack) => {
                    self.settings.metrics.heartbeat_failures.inc();
                    tracing::warn!(message = %ack.get_ref().message,
                        "prism-admin does not accept our heartbeat; registering again");
                    return;
                }
                Err(status) => {
                    self.settings.metrics.heartbeat_failures.inc();
                    tracing::warn!(code = ?status.code(), message = status.message(),
                        "prism-admin is unreachable; registering again when it is back (processes keep running)");
                    return;
                }
            }
        }
    }

    /// The heartbeat: the store read and the usage sampled (both O(processes)) on the
    /// blocking pool.
    async fn heartbeat(&self) -> Result<pb::LauncherHeartbeatRequest, BlockingStoreError> {
        let context = self.context.clone();
        let usage = self.usage.clone();
        let launcher_id = self.settings.launcher_id.clone();
        let max_processes = self.settings.max_processes;
        store_call(move || {
            let now = context.now();
            Ok(heartbeat_request(
                &launcher_id,
                &context.store.rows()?,
                &usage.sample(now),
                max_processes,
                now,
            ))
        })
        .await
    }
}

/// Applies `initial_processes` as the admin's whole desired set. An invalid entry is logged
/// and leaves what runs for its id as it was. Blocking: it writes the store.
fn apply_initial(
    context: &ApiContext,
    assignments: &[pb::ProcessAssignment],
) -> Result<(), StoreError> {
    let store = &context.store;
    let mut set: Vec<(ProcessId, ProcessSpec, i64)> = Vec::new();
    for assignment in assignments {
        let resolved =
            assignment_spec(assignment, &context.policy, &read_catalog(&context.catalog));
        match resolved {
            Ok((id, spec)) => set.push((id, spec, assignment.version)),
            Err(error) => {
                tracing::error!(process_id = %assignment.process_id, error = %Chain(&error),
                    "initial process refused; what runs for it is kept");
                if let Some(existing) = ProcessId::new(assignment.process_id.clone())
                    .ok()
                    .map(|id| store.desired(&id))
                    .transpose()?
                    .flatten()
                {
                    if let Source::Admin { version } = existing.source {
                        set.push((existing.id, Arc::unwrap_or_clone(existing.spec), version));
                    }
                }
            }
        }
    }
    let outcome = store.apply_admin_set(&set)?;
    for (id, owner) in &outcome.conflicts {
        tracing::warn!(%id, %owner, "initial process skipped: stale version or owned elsewhere");
    }
    for id in &outcome.deleted {
        tracing::info!(%id, "no longer in prism-admin's desired set: removed");
    }
    Ok(())
}
