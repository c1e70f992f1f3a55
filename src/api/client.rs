//! The client side of our own service, for `prism-launcher status`, `reset`, `logs`, the
//! operator's verbs and `describe`: asks a running launcher and hands back plain structs, so
//! that callers never see protobuf types.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use std::path::PathBuf;
use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::auth::{BearerToken, WithToken};
use super::declare::{delete_bound, APPLY_BOUND};
use super::proto::prism::launcher::v1 as pb;
use super::tls::ClientTls;
use pb::launcher_admin_client::LauncherAdminClient;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{address:?} is not a valid launcher address")]
    BadAddress {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("no launcher answers at {address}")]
    Unreachable {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the launcher at {address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("the launcher at {address} refused: {}", refusal(status))]
    Refused {
        address: String,
        status: tonic::Status,
    },
}

/// A refusal in words: the launcher's message, and the code when the message does not say
/// enough on its own (tonic's own rendering repeats both and the metadata).
fn refusal(status: &tonic::Status) -> String {
    let message = status.message().trim();
    let code = match status.code() {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::ResourceExhausted => "resource exhausted",
        tonic::Code::Unimplemented => "not implemented by this launcher",
        tonic::Code::Internal => "internal error",
        other => other.description(),
    };
    if message.is_empty() {
        code.to_string()
    } else {
        format!("{message} ({code})")
    }
}

/// Desired vs actual, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub launcher_id: String,
    pub generated_at_unix_ms: i64,
    pub summary: SummaryView,
    pub processes: Vec<ProcessView>,
    /// Source (e.g. `file:/path/x.yaml`) → its errors.
    pub source_problems: BTreeMap<String, Vec<String>>,
    /// The link to prism-admin.
    pub admin: AdminLinkView,
}

/// The link to prism-admin, as `status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdminLinkView {
    /// standalone, connecting, connected, unreachable
    pub state: String,
    pub endpoint: Option<String>,
    /// When the state began; for unreachable, since when the link has been down.
    pub since_unix_ms: Option<i64>,
    pub last_heartbeat_unix_ms: Option<i64>,
    pub registrations: u64,
    pub last_error: Option<String>,
    /// The newest admin term seen.
    pub term: Option<u64>,
    /// `--admin-disconnect-grace`; none when off.
    pub disconnect_grace_ms: Option<i64>,
    /// Admin-owned processes are stopped: the grace ran out.
    pub processes_suspended: bool,
    /// Admin-owned processes its last view did not name (kept running).
    pub unconfirmed: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SummaryView {
    pub to_start: u32,
    pub to_replace: u32,
    pub to_stop: u32,
    pub failing: u32,
    pub in_sync: u32,
    /// Held stopped by the operator: neither a difference nor a failure.
    pub held: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    pub id: String,
    pub process_type: String,
    pub source: String,
    pub admin_version: i64,
    pub desired_generation: u64,
    pub running_generation: u64,
    pub actual: String,
    pub diff: String,
    pub diff_detail: String,
    pub pid: Option<i32>,
    pub health: String,
    pub restart_count: u32,
    pub consecutive_failures: u32,
    pub last_error: String,
    pub last_exit: String,
    pub started_at_unix_ms: Option<i64>,
    pub next_restart_at_unix_ms: Option<i64>,
    pub exited_at_unix_ms: Option<i64>,
    pub tripped_at_unix_ms: Option<i64>,
    pub pattern: String,
    pub labels: BTreeMap<String, String>,
    pub grpc_port: u32,
    pub health_port: u32,
    /// Declared limits and how the host enforces them.
    pub resources: Option<ResourcesView>,
    /// Held stopped by the operator (`prism-launcher stop`) until `prism-launcher start`.
    pub held: bool,
    /// Admin-owned, and prism-admin's last view did not name it (kept running until an
    /// authoritative view or an assignment says).
    pub unconfirmed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourcesView {
    pub cpu_limit_millis: Option<u32>,
    pub memory_limit_bytes: Option<u64>,
    /// How the limits are enforced on the launcher's host: cgroup, rlimit or none.
    pub memory_enforcement: String,
    pub cpu_enforcement: String,
    /// What the process uses now (resident bytes, percent of a core), when it runs.
    pub memory_bytes: Option<u64>,
    pub cpu_percent: Option<f32>,
}

/// What a reset did.
#[derive(Debug, Clone, Serialize)]
pub struct ResetView {
    pub process_id: String,
    pub previous_state: String,
    pub consecutive_failures: u32,
}

/// What an operator's `stop` or `start` did.
#[derive(Debug, Clone, Serialize)]
pub struct HoldView {
    pub process_id: String,
    /// False when the process was held (for `stop`) or not held (for `start`) already.
    pub changed: bool,
    pub previous_state: String,
}

/// What an operator's `restart` asked for.
#[derive(Debug, Clone, Serialize)]
pub struct RestartView {
    pub process_id: String,
    /// The request's number: the replacement happened once a description's
    /// `restart_requests_done` reaches it.
    pub restart_request: u64,
    /// The pid being replaced, if one runs.
    pub previous_pid: Option<i32>,
}

/// Everything `describe` shows of one process.
#[derive(Debug, Clone, Serialize)]
pub struct DescriptionView {
    /// What `status` shows of it.
    pub status: ProcessView,
    pub spec: SpecView,
    /// The last events of its life, oldest first.
    pub events: Vec<EventView>,
    /// The last lines of its log (invalid UTF-8 replaced).
    pub log_tail: String,
    /// Why there is no log tail, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_note: Option<String>,
    pub restart_requests: u64,
    pub restart_requests_done: u64,
    pub error_count: u32,
    pub probe_successes: u32,
    pub probe_failures: u32,
    pub instance: Option<String>,
    pub stop_reason: Option<String>,
    pub stop_deadline_unix_ms: Option<i64>,
    pub ready_deadline_unix_ms: Option<i64>,
}

/// The spec a process is desired with (else the one it last ran with).
#[derive(Debug, Clone, Serialize)]
pub struct SpecView {
    pub executable: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub inherit_env: Vec<String>,
    pub working_dir: Option<String>,
    pub isolation: String,
    pub namespace: Option<String>,
    pub session_id: Option<String>,
    pub restart_policy: String,
    pub success_exit_codes: Vec<i32>,
    pub termination_grace_ms: i64,
    pub health_check: Option<String>,
    pub requested_grpc_port: Option<u32>,
    pub requested_health_port: Option<u32>,
}

/// One event of a process's life.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub at_unix_ms: i64,
    pub kind: String,
    pub message: String,
}

/// Where a launcher listens, as a client reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// The Unix socket in its data directory.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(address) => f.write_str(address),
        }
    }
}

/// A launcher to call, and the credentials to call it with.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: Address,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<Arc<BearerToken>>,
    /// TLS for a TCP address.
    pub tls: Option<ClientTls>,
}

impl Target {
    /// A launcher at `host:port`, with no credentials.
    pub fn tcp(address: impl Into<String>) -> Target {
        Target {
            address: Address::Tcp(address.into()),
            token: None,
            tls: None,
        }
    }

    /// A launcher on its Unix socket.
    pub fn unix(path: impl Into<PathBuf>) -> Target {
        Target {
            address: Address::Unix(path.into()),
            token: None,
            tls: None,
        }
    }
}

type Client = LauncherAdminClient<InterceptedService<Channel, WithToken>>;

/// Asks the launcher at `target` for its status.
pub async fn fetch_status(target: &Target, timeout: Duration) -> Result<StatusView, ClientError> {
    let report = call(target, timeout, |mut client| async move {
        client.get_status(pb::GetStatusRequest {}).await
    })
    .await?;
    Ok(StatusView::from(report))
}

/// Asks the launcher at `target` to reset the process `id`.
pub async fn reset_process(
    target: &Target,
    id: &str,
    timeout: Duration,
) -> Result<ResetView, ClientError> {
    let process_id = id.to_string();
    let answer = call(target, timeout, |mut client| async move {
        client
            .reset_process(pb::ResetProcessRequest { process_id })
            .await
    })
    .await?;
    Ok(ResetView {
        process_id: answer.process_id,
        previous_state: answer.previous_state,
        consecutive_failures: answer.consecutive_failures,
    })
}

/// Asks the launcher at `target` to hold the process `id` stopped (`prism-launcher stop`).
pub async fn stop_process(
    target: &Target,
    id: &str,
    timeout: Duration,
) -> Result<HoldView, ClientError> {
    let process_id = id.to_string();
    let answer = call(target, timeout, |mut client| async move {
        client
            .stop_process(pb::StopProcessRequest { process_id })
            .await
    })
    .await?;
    Ok(HoldView {
        process_id: answer.process_id,
        changed: answer.changed,
        previous_state: answer.previous_state,
    })
}

/// Asks the launcher at `target` to release its hold of `id` (`prism-launcher start`).
pub async fn start_process(
    target: &Target,
    id: &str,
    timeout: Duration,
) -> Result<HoldView, ClientError> {
    let process_id = id.to_string();
    let answer = call(target, timeout, |mut client| async move {
        client
            .start_process(pb::StartProcessRequest { process_id })
            .await
    })
    .await?;
    Ok(HoldView {
        process_id: answer.process_id,
        changed: answer.changed,
        previous_state: answer.previous_state,
    })
}

/// Asks the launcher at `target` for a new process of `id` (`prism-launcher restart`).
pub async fn restart_process(
    target: &Target,
    id: &str,
    timeout: Duration,
) -> Result<RestartView, ClientError> {
    let process_id = id.to_string();
    let answer = call(target, timeout, |mut client| async move {
        client
            .restart_process(pb::RestartProcessRequest { process_id })
            .await
    })
    .await?;
    Ok(RestartView {
        process_id: answer.process_id,
        restart_request: answer.restart_request,
        previous_pid: (answer.previous_pid > 0).then_some(answer.previous_pid),
    })
}

/// Asks the launcher at `target` for everything about `id`, with the last `log_lines` lines of
/// its log (0: none).
pub async fn describe_process(
    target: &Target,
    id: &str,
    log_lines: u32,
    timeout: Duration,
) -> Result<DescriptionView, ClientError> {
    let process_id = id.to_string();
    let answer = call(target, timeout, |mut client| async move {
        client
            .describe_process(pb::DescribeProcessRequest {
                process_id,
                log_lines,
            })
            .await
    })
    .await?;
    Ok(DescriptionView::from(answer))
}

impl From<pb::ProcessDescription> for DescriptionView {
    fn from(description: pb::ProcessDescription) -> DescriptionView {
        let spec = description.spec.unwrap_or_default();
        let text = |value: String| (!value.is_empty()).then_some(value);
        let positive = |value: i64| (value > 0).then_some(value);
        let port = |value: u32| (value > 0).then_some(value);
        DescriptionView {
            status: ProcessView::from(description.status.unwrap_or_default()),
            spec: SpecView {
                executable: spec.executable,
                args: spec.args,
                env: spec.env.into_iter().collect(),
                inherit_env: spec.inherit_env,
                working_dir: text(spec.working_dir),
                isolation: spec.isolation,
                namespace: text(spec.namespace),
                session_id: text(spec.session_id),
                restart_policy: spec.restart_policy,
                success_exit_codes: spec.success_exit_codes,
                termination_grace_ms: spec.termination_grace_ms,
                health_check: text(spec.health_check),
                requested_grpc_port: port(spec.requested_grpc_port),
                requested_health_port: port(spec.requested_health_port),
            },
            events: description
                .events
                .into_iter()
                .map(|event| EventView {
                    at_unix_ms: event.at_unix_ms,
                    kind: event.kind,
                    message: event.message,
                })
                .collect(),
            log_tail: String::from_utf8_lossy(&description.log_tail).into_owned(),
            log_note: text(description.log_note),
            restart_requests: description.restart_requests,
            restart_requests_done: description.restart_requests_done,
            error_count: description.error_count,
            probe_successes: description.probe_successes,
            probe_failures: description.probe_failures,
            instance: text(description.instance),
            stop_reason: text(description.stop_reason),
            stop_deadline_unix_ms: positive(description.stop_deadline_unix_ms),
            ready_deadline_unix_ms: positive(description.ready_deadline_unix_ms),
        }
    }
}

/// What `logs` asks for of a process's log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Lines from the end to start with; 0: all.
    pub tail: u32,
    /// Go on with what the process writes next, until the launcher goes away.
    pub follow: bool,
    /// The previous instance's output instead of the current file.
    pub previous: bool,
    /// Each line prefixed with the time the launcher read it.
    pub timestamps: bool,
    /// Only instances that ran within this long before now.
    pub since: Option<Duration>,
}

/// Streams the log of `id` from the launcher at `target` into `out`, as `options` ask.
pub async fn stream_logs(
    target: &Target,
    id: &str,
    options: LogOptions,
    timeout: Duration,
    mut out: impl std::io::Write,
) -> Result<(), ClientError> {
    let request = pb::StreamLogsRequest {
        process_id: id.to_string(),
        tail_lines: options.tail,
        follow: options.follow,
        previous: options.previous,
        timestamps: options.timestamps,
        // At least a millisecond: 0 would mean no limit.
        since_ms: options.since.map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX).max(1)
        }),
    };
    // The timeout bounds connecting only: a followed stream has no end.
    let mut client = connect(target, timeout).await?;
    let refused = |status| ClientError::Refused {
        address: target.address.to_string(),
        status,
    };
    let mut stream = client
        .stream_logs(request)
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(chunk) = stream.message().await.map_err(refused)? {
        // A closed stdout (`logs ... | head`) ends the command quietly.
        if out
            .write_all(&chunk.data)
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// What `apply` asks the launcher for: one spec file's text.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub text: String,
    /// Where the text was read (a path, or `-`), for the errors.
    pub origin: String,
    /// The absolute directory its relative paths were written against.
    pub base_dir: Option<PathBuf>,
    pub dry_run: bool,
}

/// What the launcher answered to `apply`.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyView {
    /// Every problem of the text; nothing was written when there is one.
    pub errors: Vec<String>,
    pub processes: Vec<ProcessChangeView>,
    /// The spec-directory files written (or that would be, for a dry run).
    pub written_files: Vec<String>,
    /// Whether the launcher's desired state held it all when it answered.
    pub applied: bool,
}

/// How `apply` changes one process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessChangeView {
    pub id: String,
    /// created, changed, unchanged
    pub change: String,
    pub changed_fields: Vec<String>,
    pub replaces: bool,
    pub file: String,
}

/// What `delete` did to one process.
#[derive(Debug, Clone, Serialize)]
pub struct DeletedView {
    pub id: String,
    pub source: String,
    pub removed_file: Option<String>,
    pub stopped: bool,
}

/// Asks the launcher at `target` to apply one spec file's text. `timeout` bounds connecting;
/// the launcher bounds its own wait for the spec watcher.
pub async fn apply_specs(
    target: &Target,
    request: ApplyRequest,
    timeout: Duration,
) -> Result<ApplyView, ClientError> {
    let request = pb::ApplySpecsRequest {
        text: request.text,
        origin: request.origin,
        base_dir: request
            .base_dir
            .map(|dir| dir.display().to_string())
            .unwrap_or_default(),
        dry_run: request.dry_run,
    };
    let deadline = answer_deadline(APPLY_BOUND);
    let answer = call_waiting(
        target,
        timeout,
        deadline,
        |mut client, grpc_timeout| async move {
            client
                .apply_specs(with_timeout(request, grpc_timeout))
                .await
        },
    )
    .await?;
    Ok(ApplyView {
        errors: answer.errors,
        processes: answer
            .processes
            .into_iter()
            .map(|process| ProcessChangeView {
                id: process.id,
                change: process.change,
                changed_fields: process.changed_fields,
                replaces: process.replaces,
                file: process.file,
            })
            .collect(),
        written_files: answer.written_files,
        applied: answer.applied,
    })
}

/// Asks the launcher at `target` to undeclare `ids`, stopping their processes with `grace`
/// (their specs' when `None`). `timeout` bounds connecting (and, without `grace`, asking each
/// process's grace period first); the launcher bounds its wait for the stops by their grace
/// periods, and the answer is awaited that long and a margin.
pub async fn delete_processes(
    target: &Target,
    ids: Vec<String>,
    grace: Option<Duration>,
    timeout: Duration,
) -> Result<Vec<DeletedView>, ClientError> {
    let longest_grace = match grace {
        Some(grace) => grace,
        None => longest_grace(target, &ids, timeout).await?,
    };
    let request = pb::DeleteProcessesRequest {
        process_ids: ids,
        grace_ms: grace.map(|grace| u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)),
    };
    let deadline = answer_deadline(delete_bound(longest_grace));
    let answer = call_waiting(
        target,
        timeout,
        deadline,
        |mut client, grpc_timeout| async move {
            client
                .delete_processes(with_timeout(request, grpc_timeout))
                .await
        },
    )
    .await?;
    Ok(answer
        .processes
        .into_iter()
        .map(|process| DeletedView {
            id: process.id,
            source: process.source,
            removed_file: (!process.removed_file.is_empty()).then_some(process.removed_file),
            stopped: process.stopped,
        })
        .collect())
}

/// A client of the launcher at `target`, connected within `timeout`.
async fn connect(target: &Target, timeout: Duration) -> Result<Client, ClientError> {
    let address = target.address.to_string();
    let bad_address = |source| ClientError::BadAddress {
        address: address.clone(),
        source,
    };
    let uri = match (&target.address, &target.tls) {
        (Address::Unix(_), _) => address.clone(),
        (Address::Tcp(host_port), None) => format!("http://{host_port}"),
        (Address::Tcp(host_port), Some(_)) => format!("https://{host_port}"),
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(bad_address)?
        .connect_timeout(timeout);
    if let (Address::Tcp(_), Some(tls)) = (&target.address, &target.tls) {
        endpoint = endpoint.tls_config(tls.0.clone()).map_err(bad_address)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Unreachable {
            address: address.clone(),
            source,
        })?;
    Ok(LauncherAdminClient::with_interceptor(
        channel,
        // The socket authenticates by the caller's uid; a token sent there would go to whoever
        // owns that socket file, which need not be the launcher.
        WithToken::new(match target.address {
            Address::Unix(_) => None,
            Address::Tcp(_) => target.token.as_deref(),
        }),
    ))
}

/// Connects to `target` and makes one call, all within `timeout`.
async fn call<T, F, Fut>(target: &Target, timeout: Duration, request: F) -> Result<T, ClientError>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let address = target.address.to_string();
    let ask = async {
        request(connect(target, timeout).await?)
            .await
            .map_err(|status| ClientError::Refused {
                address: address.clone(),
                status,
            })
    };
    let answer = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ClientError::Timeout {
            address: address.clone(),
            timeout,
        })??;
    Ok(answer.into_inner())
}

/// The longest grace period of the specs of `ids`, as the launcher describes them (an id it
/// does not know counts nothing: the delete itself answers for it), for the wait on a delete.
async fn longest_grace(
    target: &Target,
    ids: &[String],
    timeout: Duration,
) -> Result<Duration, ClientError> {
    let mut longest = Duration::ZERO;
    for id in ids {
        match describe_process(target, id, 0, timeout).await {
            Ok(description) => {
                let grace = u64::try_from(description.spec.termination_grace_ms).unwrap_or(0);
                longest = longest.max(Duration::from_millis(grace));
            }
            Err(ClientError::Refused { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(longest)
}

/// What a waiting call adds to the launcher's own bound on its answer: the blocking work
/// around its wait (reading and parsing, fsyncs, store reads) and the way there and back.
const WAIT_MARGIN: Duration = Duration::from_secs(20);

/// How much later than the client the launcher gives up on a call: the client's deadline
/// fires first, with its own error, and the launcher does not wait for an answer nobody reads.
const SERVER_GRACE: Duration = Duration::from_secs(1);

/// How long the answer of a call that the launcher bounds by `bound` is awaited.
fn answer_deadline(bound: Duration) -> Duration {
    bound.saturating_add(WAIT_MARGIN)
}

/// `message` as a request whose `grpc-timeout` is `timeout`.
fn with_timeout<M>(message: M, timeout: Duration) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Connects to `target` within `timeout` and makes one call whose answer the launcher itself
/// bounds in time (it waits for the loop or the watcher): the answer is awaited until
/// `deadline` (`answer_deadline` of that bound), never without one (a launcher that stopped
/// answering, a connection gone silent). `request` gets the client and the `grpc-timeout` to
/// send, a little after the client's own deadline.
async fn call_waiting<T, F, Fut>(
    target: &Target,
    timeout: Duration,
    deadline: Duration,
    request: F,
) -> Result<T, ClientError>
where
    F: FnOnce(Client, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let address = target.address.to_string();
    let client = tokio::time::timeout(timeout, connect(target, timeout))
        .await
        .map_err(|_| ClientError::Timeout {
            address: address.clone(),
            timeout,
        })??;
    let answer = tokio::time::timeout(deadline, request(client, deadline + SERVER_GRACE))
        .await
        .map_err(|_| ClientError::Timeout {
            address: address.clone(),
            timeout: deadline,
        })?
        .map_err(|status| ClientError::Refused { address, status })?;
    Ok(answer.into_inner())
}

impl From<pb::StatusReport> for StatusView {
    fn from(report: pb::StatusReport) -> StatusView {
        let summary = report.summary.unwrap_or_default();
        StatusView {
            launcher_id: report.launcher_id,
            generated_at_unix_ms: report.generated_at_unix_ms,
            summary: SummaryView {
                to_start: summary.to_start,
                to_replace: summary.to_replace,
                to_stop: summary.to_stop,
                failing: summary.failing,
                in_sync: summary.in_sync,
                held: summary.held,
            },
            processes: report
                .processes
                .into_iter()
                .map(ProcessView::from)
                .collect(),
            source_problems: report
                .source_problems
                .into_iter()
                .map(|problem| (problem.source, problem.errors))
                .collect(),
            admin: report.admin.map(AdminLinkView::from).unwrap_or_default(),
        }
    }
}

impl From<pb::AdminLinkStatus> for AdminLinkView {
    fn from(admin: pb::AdminLinkStatus) -> AdminLinkView {
        let positive = |value: i64| (value > 0).then_some(value);
        AdminLinkView {
            state: admin.state,
            endpoint: (!admin.endpoint.is_empty()).then_some(admin.endpoint),
            since_unix_ms: positive(admin.since_unix_ms),
            last_heartbeat_unix_ms: positive(admin.last_heartbeat_unix_ms),
            registrations: admin.registrations,
            last_error: (!admin.last_error.is_empty()).then_some(admin.last_error),
            term: admin.term,
            disconnect_grace_ms: positive(admin.disconnect_grace_ms),
            processes_suspended: admin.processes_suspended,
            unconfirmed: admin.unconfirmed,
        }
    }
}

impl From<pb::ProcessStatus> for ProcessView {
    fn from(process: pb::ProcessStatus) -> ProcessView {
        let positive = |value: i64| (value > 0).then_some(value);
        ProcessView {
            id: process.id,
            process_type: process.process_type,
            source: process.source,
            admin_version: process.admin_version,
            desired_generation: process.desired_generation,
            running_generation: process.running_generation,
            actual: process.actual,
            diff: process.diff,
            diff_detail: process.diff_detail,
            pid: (process.pid > 0).then_some(process.pid),
            health: process.health,
            restart_count: process.restart_count,
            consecutive_failures: process.consecutive_failures,
            last_error: process.last_error,
            last_exit: process.last_exit,
            started_at_unix_ms: positive(process.started_at_unix_ms),
            next_restart_at_unix_ms: positive(process.next_restart_at_unix_ms),
            exited_at_unix_ms: positive(process.exited_at_unix_ms),
            tripped_at_unix_ms: positive(process.tripped_at_unix_ms),
            pattern: process.pattern,
            labels: process.labels.into_iter().collect(),
            grpc_port: process.grpc_port,
            health_port: process.health_port,
            resources: (process.cpu_limit_millis > 0 || process.memory_limit_bytes > 0).then_some(
                ResourcesView {
                    cpu_limit_millis: (process.cpu_limit_millis > 0)
                        .then_some(process.cpu_limit_millis),
                    memory_limit_bytes: (process.memory_limit_bytes > 0)
                        .then_some(process.memory_limit_bytes),
                    memory_enforcement: process.memory_enforcement,
                    cpu_enforcement: process.cpu_enforcement,
                    memory_bytes: (process.memory_bytes > 0).then_some(process.memory_bytes),
                    cpu_percent: (process.memory_bytes > 0).then_some(process.cpu_percent),
                },
            ),
            held: process.held,
            unconfirmed: process.unconfirmed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `apply` and `delete` awaited the launcher's answer with no deadline, so a
    /// launcher that accepted the call and never answered held the CLI forever.
    #[tokio::test]
    async fn a_waiting_call_that_gets_no_answer_ends_at_its_deadline() {
        // Accepts connections and never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let target = Target::tcp(address);
        let call = call_waiting(
            &target,
            Duration::from_secs(2),
            Duration::from_millis(300),
            |mut client, grpc_timeout| async move {
                client
                    .apply_specs(with_timeout(pb::ApplySpecsRequest::default(), grpc_timeout))
                    .await
            },
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call ends by itself");
        assert!(
            matches!(answer, Err(ClientError::Timeout { timeout, .. }) if timeout == Duration::from_millis(300)),
            "{answer:?}"
        );
        silent.abort();
    }

    #[test]
    fn an_answer_is_awaited_as_long_as_the_launcher_waits_and_a_margin() {
        assert_eq!(
            answer_deadline(delete_bound(Duration::from_secs(30))),
            Duration::from_secs(10 + 30 + 5) + WAIT_MARGIN
        );
        assert!(answer_deadline(APPLY_BOUND) > APPLY_BOUND);
    }
}
