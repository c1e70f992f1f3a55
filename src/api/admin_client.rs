//! The launcher as a client of prism-admin: registration (in the background, while the launcher
//! works standalone), the registration's `initial_processes` applied by the initial-set rule
//! (`reconcile::initial_set_view`: never a removal on partial knowledge), heartbeats with real
//! process health and resources (every one the whole health map), re-registration after admin
//! was unreachable or stopped knowing the launcher, the admin's term on the registration ack,
//! and the link's state for status and metrics (`AdminLinkWatch`), with the disconnect grace
//! that may stop admin-owned processes during a partition.
//!
//! Every call has a deadline (sent to admin as `grpc-timeout` too) and the channel sends HTTP/2
//! keepalive pings, so a partition is noticed within a call's timeout. Retries wait a
//! full-jitter delay (`reconcile::RetryBackoff`) drawn from a generator seeded per launcher, so
//! a fleet that lost admin at once does not come back in lockstep.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::blocking::{store_call, BlockingStoreError};
use super::context::ApiContext;
use super::convert::from_proto::{admin_term, assignment_spec, initial_set_marker};
use super::convert::to_proto::{capability_words, heartbeat_request};
use super::proto::prism as pb;
use crate::error_chain::Chain;
use crate::random::Jitter;
use crate::reconcile::{
    admin_stop_at, initial_set_view, AdminLink, AdminTerm, AdminView, InitialSetMarker, ProcessId,
    ProcessSpec, RetryBackoff, Source, UnixMillis, Vocabulary,
};
use crate::sources::catalog::read_catalog;
use crate::store::StoreError;
use crate::telemetry::{Metrics, UsageBoard};
use pb::control_plane_client::ControlPlaneClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::auth::{BearerToken, WithToken};
use super::tls::ClientTls;

/// How registrations are retried: a full-jitter draw below 250 ms doubling up to 30 s.
const REGISTER_RETRY: RetryBackoff = RetryBackoff {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(30),
};

/// The shortest interval of HTTP/2 keepalive pings: gRPC asks clients never to ping more often
/// (gRFC A8), and servers answer pings that come faster with GOAWAY.
const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error("--admin-endpoint {endpoint:?} is not a valid address")]
    BadEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Who the launcher is, as it tells prism-admin, and how it talks to it.
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
    /// The deadline of every call to admin (and of connecting).
    pub call_timeout: Duration,
    /// Admin-owned processes are stopped once admin has been unreachable this long; `None`
    /// keeps them running however long it takes.
    pub disconnect_grace: Option<Duration>,
    pub metadata: BTreeMap<String, String>,
    pub metrics: Metrics,
    /// TLS to admin (its CA, and this launcher's certificate when admin asks for one).
    pub tls: Option<ClientTls>,
    /// Sent to admin as `authorization: Bearer <token>`.
    pub token: Option<Arc<BearerToken>>,
    /// Seeds the retries' jitter (`random::entropy_seed`: different on every launcher).
    pub jitter_seed: u64,
}

/// What the rest of the launcher reads of the link to prism-admin: status, metrics, and the
/// loop (whether admin's processes are suspended).
#[derive(Debug, Clone)]
pub struct AdminLinkWatch {
    /// `--admin-endpoint`; `None` standalone.
    pub endpoint: Option<String>,
    pub disconnect_grace: Option<Duration>,
    pub link: watch::Receiver<AdminLink>,
    /// True while admin has been unreachable for longer than the disconnect grace.
    pub suspended: watch::Receiver<bool>,
}

/// The admin client's side of `AdminLinkWatch`.
#[derive(Debug)]
pub struct AdminLinkBoard {
    link: watch::Sender<AdminLink>,
    suspended: watch::Sender<bool>,
}

/// The link's two ends, for a launcher with prism-admin at `endpoint` (down since `down_since`,
/// see `reconcile::down_since_at_start`) or without (`None`: standalone, and the board can be
/// dropped). Suspended from the start when the disconnect grace is over at `now`.
pub fn admin_link(
    endpoint: Option<&str>,
    disconnect_grace: Option<Duration>,
    down_since: UnixMillis,
    now: UnixMillis,
) -> (AdminLinkBoard, AdminLinkWatch) {
    let first = match endpoint {
        Some(_) => AdminLink::connecting(down_since),
        None => AdminLink::standalone(now),
    };
    let suspended_at_start = admin_stop_at(&first, disconnect_grace).is_some_and(|at| now >= at);
    let (link, link_watch) = watch::channel(first);
    let (suspended, suspended_watch) = watch::channel(suspended_at_start);
    (
        AdminLinkBoard { link, suspended },
        AdminLinkWatch {
            endpoint: endpoint.map(str::to_string),
            disconnect_grace,
            link: link_watch,
            suspended: suspended_watch,
        },
    )
}

type AdminClient = ControlPlaneClient<InterceptedService<Channel, WithToken>>;

/// Registers with admin and heartbeats, keeping `board` up to date, until `shutdown` completes.
pub async fn run_admin_client(
    settings: AdminSettings,
    board: AdminLinkBoard,
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
    // Pings check the connection while calls are under way (a partition during a call ends it
    // within the call timeout, besides the call's own deadline), never while it is idle: a
    // grpc-go or grpc-java admin, by default, closes a connection that pings while idle
    // ("too_many_pings"), and between heartbeats the next call's deadline finds a partition
    // anyway.
    let keepalive = settings.heartbeat_interval.max(MIN_KEEPALIVE_INTERVAL);
    let mut endpoint = tonic::transport::Endpoint::from_shared(url)
        .map_err(bad_endpoint)?
        .connect_timeout(settings.call_timeout)
        .timeout(settings.call_timeout)
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(settings.call_timeout)
        .keep_alive_while_idle(false)
        .tcp_keepalive(Some(keepalive));
    if let Some(tls) = &settings.tls {
        endpoint = endpoint.tls_config(tls.0.clone()).map_err(bad_endpoint)?;
    }
    let client = ControlPlaneClient::with_interceptor(
        endpoint.connect_lazy(),
        WithToken::new(settings.token.as_deref()),
    );
    let suspension = publish_suspension(
        board.link.subscribe(),
        settings.disconnect_grace,
        context.clone(),
        board.suspended,
        settings.metrics.clone(),
    );
    let admin = Admin {
        settings,
        context,
        usage,
        link: board.link,
    };
    tokio::select! {
        () = shutdown => {}
        () = admin.keep_registered(client) => {}
        () = suspension => {}
    }
    Ok(())
}

struct Admin {
    settings: AdminSettings,
    context: Arc<ApiContext>,
    usage: UsageBoard,
    link: watch::Sender<AdminLink>,
}

impl Admin {
    /// Registers, heartbeats until the link is lost, and registers again, forever. The first
    /// registration goes at once; every later attempt waits a full-jitter delay that grows with
    /// the failed registrations in a row.
    async fn keep_registered(&self, client: AdminClient) {
        let mut jitter = Jitter::seeded(self.settings.jitter_seed);
        let mut failures: u32 = 0;
        loop {
            if self.register(client.clone()).await {
                failures = 0;
                self.heartbeat_until_lost(client.clone()).await;
            } else {
                failures = failures.saturating_add(1);
            }
            tokio::time::sleep(REGISTER_RETRY.delay(failures, jitter.sample())).await;
        }
    }

    /// Changes the link's state (and the metrics that show it).
    fn set_link(&self, change: impl FnOnce(&AdminLink) -> AdminLink) {
        let metrics = &self.settings.metrics;
        self.link.send_modify(|link| {
            let next = change(link);
            if next.registrations > link.registrations {
                metrics.admin_registrations.inc();
            }
            *link = next;
        });
        metrics.show_admin_link(&self.link.borrow());
    }

    /// The link is down (or was never up) at `now`, because of `error`.
    fn lost(&self, error: String) {
        let now = self.context.now();
        self.set_link(|link| link.lost(now, error));
    }

    /// A request to admin, with the call's deadline sent along.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.settings.call_timeout);
        request
    }

    /// One registration attempt; applies the admin's set when it succeeds.
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
        let response = match client.register_launcher(self.request(registration)).await {
            Ok(response) => response,
            Err(status) => {
                tracing::warn!(endpoint = %settings.endpoint, code = ?status.code(), message = status.message(),
                    "cannot register with prism-admin; running standalone and retrying");
                self.lost(format!(
                    "registration failed: {:?}: {}",
                    status.code(),
                    status.message()
                ));
                return false;
            }
        };
        let term = match admin_term(response.metadata()) {
            Ok(term) => term,
            Err(error) => {
                tracing::error!(endpoint = %settings.endpoint, error = %Chain(&error),
                    "prism-admin's registration answer has an unreadable term; not applying it, retrying");
                self.lost(format!("registration answer refused: {error}"));
                return false;
            }
        };
        let marker = initial_set_marker(response.metadata());
        let ack = response.into_inner();
        if !ack.success {
            tracing::warn!(endpoint = %settings.endpoint, message = %ack.message,
                "prism-admin refused the registration; retrying");
            self.lost(format!("registration refused: {}", ack.message));
            return false;
        }
        if let Some(word) = marker
            .as_deref()
            .filter(|word| word.parse::<InitialSetMarker>().is_err())
        {
            tracing::warn!(marker = word, key = crate::reconcile::INITIAL_SET_KEY,
                known = %InitialSetMarker::WORDS.join(", "),
                "prism-admin marked its initial set with a word this launcher does not know; taking the set as partial");
        }
        let view = initial_set_view(ack.initial_processes.len(), marker.as_deref());
        tracing::info!(endpoint = %settings.endpoint, initial = ack.initial_processes.len(),
            authoritative = view == AdminView::Authoritative, term = ?term.map(|term| term.0),
            "registered with prism-admin");
        let context = self.context.clone();
        let initial = ack.initial_processes;
        let applied = store_call(move || apply_initial(&context, &initial, view, term)).await;
        match applied {
            Ok(()) => {}
            Err(BlockingStoreError::Store(StoreError::StaleAdminTerm(stale))) => {
                tracing::warn!(endpoint = %settings.endpoint, %stale,
                    "the registration was answered by a stale prism-admin; nothing applied, registering again");
                self.lost(format!("registration answered by a stale admin: {stale}"));
                return false;
            }
            Err(error) => {
                // Not connected: a set that was not applied must not lift the disconnect
                // grace's hold (what it would remove could start again); registering again
                // applies it.
                tracing::error!(error = %Chain(&error), "cannot apply prism-admin's initial processes; registering again");
                self.lost(format!(
                    "the initial processes could not be applied: {error}"
                ));
                return false;
            }
        }
        // Connected only once the set is applied, so that processes held down by the
        // disconnect grace start again as the set says, never before it.
        let now = self.context.now();
        self.set_link(|link| link.registered(now));
        true
    }

    /// Heartbeats every interval (the first at once) until admin is unreachable or no longer
    /// knows the launcher.
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
            match client.launcher_heartbeat(self.request(request)).await {
                Ok(ack) if ack.get_ref().success => {
                    let now = self.context.now();
                    self.set_link(|link| link.heartbeat_accepted(now));
                }
                Ok(ack) => {
                    self.settings.metrics.heartbeat_failures.inc();
                    tracing::warn!(message = %ack.get_ref().message,
                        "prism-admin does not accept our heartbeat; registering again");
                    self.lost(format!(
                        "prism-admin does not accept our heartbeat: {}",
                        ack.get_ref().message
                    ));
                    return;
                }
                Err(status) => {
                    self.settings.metrics.heartbeat_failures.inc();
                    tracing::warn!(code = ?status.code(), message = status.message(),
                        "prism-admin is unreachable; registering again when it is back (processes keep running)");
                    self.lost(format!(
                        "heartbeat failed: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                    return;
                }
            }
        }
    }

    /// The heartbeat: every process's health (the whole map, each time), the store read and the
    /// usage sampled (both O(processes)) on the blocking pool.
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

/// Keeps `suspended` true while the link has been down for longer than `grace`
/// (`reconcile::admin_stop_at`), waking at the moment the grace runs out; ends when the link's
/// sender is gone.
async fn publish_suspension(
    mut link: watch::Receiver<AdminLink>,
    grace: Option<Duration>,
    context: Arc<ApiContext>,
    suspended: watch::Sender<bool>,
    metrics: Metrics,
) {
    loop {
        let stop_at = admin_stop_at(&link.borrow_and_update(), grace);
        let now = context.now();
        let suspend = stop_at.is_some_and(|at| now >= at);
        let changed = suspended.send_if_modified(|current| {
            let changed = *current != suspend;
            *current = suspend;
            changed
        });
        if changed {
            metrics.admin_suspended.set(i64::from(suspend));
            // Durable, so that a launcher restarted during the partition starts suspended.
            let store = context.store.clone();
            if let Err(error) = store_call(move || store.set_admin_suspended(suspend)).await {
                tracing::warn!(error = %Chain(&error), "cannot record whether prism-admin's processes are suspended");
            }
            if suspend {
                tracing::warn!(grace = ?grace,
                    "prism-admin has been unreachable for longer than --admin-disconnect-grace: stopping its processes until it is back");
            } else {
                tracing::info!("prism-admin is back: its processes start again as its set says");
            }
        }
        let wait = stop_at
            .filter(|_| !suspend)
            .map(|at| at.saturating_duration_since(now));
        tokio::select! {
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
        }
    }
}

/// Applies a registration's `initial_processes` as `view` says (`Store::apply_admin_set`), from
/// the admin's `term`. An invalid entry is logged and leaves what runs for its id as it was (it
/// still counts as named, so it is neither removed nor unconfirmed). Blocking: it writes the
/// store.
fn apply_initial(
    context: &ApiContext,
    assignments: &[pb::ProcessAssignment],
    view: AdminView,
    term: Option<AdminTerm>,
) -> Result<(), StoreError> {
    let store = &context.store;
    // A stale admin's set is refused before anything of it is looked at.
    store.check_admin_term(term)?;
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
    let outcome = store.apply_admin_set(&set, view, term)?;
    for (id, owner) in &outcome.conflicts {
        tracing::warn!(%id, %owner, "initial process skipped: stale version or owned elsewhere");
    }
    for id in &outcome.deleted {
        tracing::info!(%id, "no longer in prism-admin's desired set: removed");
    }
    if !outcome.unconfirmed.is_empty() {
        tracing::warn!(kept = outcome.unconfirmed.len(),
            "prism-admin's initial set is not authoritative (empty and not marked complete, or marked partial): \
             the admin-owned processes it does not name keep running, shown as unconfirmed");
    }
    Ok(())
}
