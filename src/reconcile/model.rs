//! The domain types: what is desired, what is observed, and the values they are made of.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::echo;
use super::process_types::TypeConfig;
use super::validation::{HealthCheckField, SpecField};

/// Unix time in milliseconds. The reconcile module never reads a clock: callers pass `now` in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Whole seconds since the epoch, as the wire's `int64` timestamps carry them.
    pub fn whole_seconds(self) -> i64 {
        i64::try_from(self.0 / 1000).unwrap_or(i64::MAX)
    }

    pub fn saturating_add(self, duration: Duration) -> UnixMillis {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        UnixMillis(self.0.saturating_add(millis))
    }

    pub fn saturating_duration_since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Longest process id accepted. Ids become file names (logs) and later cgroup names.
pub const MAX_PROCESS_ID_LEN: usize = 200;

/// A validated process id: a spec's `metadata.name`, `shared:<pattern>`, `ns:<ns>:<pattern>`,
/// `session:<ns>:<session>:<pattern>`, or an admin's process id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProcessId {
    #[error("process id is empty")]
    Empty,
    #[error("process id {} is {len} bytes long; at most {MAX_PROCESS_ID_LEN} are allowed", echo(.id))]
    TooLong { id: String, len: usize },
    #[error(
        "process id {} contains {character:?}; only letters, digits and . _ - : @ are allowed",
        echo(.id)
    )]
    BadCharacter { id: String, character: char },
    #[error("process id {} starts with '.'; ids become file names and must not be hidden or relative", echo(.id))]
    LeadingDot { id: String },
}

impl ProcessId {
    pub fn new(id: impl Into<String>) -> Result<ProcessId, InvalidProcessId> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidProcessId::Empty);
        }
        if id.len() > MAX_PROCESS_ID_LEN {
            let len = id.len();
            return Err(InvalidProcessId::TooLong { id, len });
        }
        if let Some(character) = id.chars().find(|c| !is_id_character(*c)) {
            return Err(InvalidProcessId::BadCharacter { id, character });
        }
        if id.starts_with('.') {
            return Err(InvalidProcessId::LeadingDot { id });
        }
        Ok(ProcessId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_id_character(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')
}

impl TryFrom<String> for ProcessId {
    type Error = InvalidProcessId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ProcessId::new(value)
    }
}

impl From<ProcessId> for String {
    fn from(id: ProcessId) -> String {
        id.0
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id a pattern launch maps to: `shared:<pattern>`, `ns:<namespace>:<pattern>` or
/// `session:<namespace>:<session>:<pattern>`. The same launch always maps to the same id, which
/// is how isolation shares or separates processes.
pub fn pattern_process_id(
    isolation: Isolation,
    namespace: &str,
    session_id: &str,
    pattern: &str,
) -> Result<ProcessId, InvalidProcessId> {
    for part in [namespace, session_id, pattern] {
        // A ':' inside a part would make two different launches share an id.
        if let Some(character) = part.chars().find(|c| *c == ':' || !is_id_character(*c)) {
            return Err(InvalidProcessId::BadCharacter {
                id: part.to_string(),
                character,
            });
        }
    }
    ProcessId::new(match isolation {
        Isolation::None => format!("shared:{pattern}"),
        Isolation::Namespace => format!("ns:{namespace}:{pattern}"),
        Isolation::Session => format!("session:{namespace}:{session_id}:{pattern}"),
    })
}

/// The kinds of process of ADR-057. Every kind shares one lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ProcessType {
    #[default]
    Pattern,
    Proxy,
    Backend,
    Utility,
}

/// Bulkhead isolation: decides the process id of a pattern launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Isolation {
    #[default]
    None,
    Namespace,
    Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Where a desired record came from. One id has exactly one owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// A spec file in the watched directory; the path as the watcher saw it.
    File { path: PathBuf },
    /// A `LaunchPattern` call.
    Api,
    /// An assignment pushed by prism-admin, with the admin's config version.
    Admin { version: i64 },
}

/// What kind of source a `Source` is: the word `status`, `--source` and the metrics' `source`
/// label use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    File,
    Api,
    Admin,
}

/// What the loop knows of its sources of desired state beyond their records.
///
/// Which have been read in full in this run (kubelet's `sourcesReady`): until the spec directory
/// has been, the records files own are the last run's word, which may be stale (a file deleted
/// while the launcher was down), so nothing is started, replaced or stopped for them. The API's
/// records are written by the calls themselves, and prism-admin's by its assignments, so the
/// store is their whole truth from the start.
///
/// And whether prism-admin's processes are suspended: it has been unreachable for longer than
/// `--admin-disconnect-grace` (`admin_stop_at`), so they are stopped and none starts, their
/// records kept, until a registration succeeds again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcesRead {
    pub files: bool,
    pub admin_suspended: bool,
}

impl SourcesRead {
    /// Every source read: what a running launcher has once its spec directory was scanned.
    pub const ALL: SourcesRead = SourcesRead {
        files: true,
        admin_suspended: false,
    };

    /// Where a launcher starts: only what the store holds by itself.
    pub const NONE: SourcesRead = SourcesRead {
        files: false,
        admin_suspended: false,
    };

    /// Where a launcher starts whose store held, when it was opened, records that spec files
    /// declared (`files_declared_earlier`) or none. Those records wait for the spec directory's
    /// scan: the file may have been changed or deleted while the launcher was down. With none,
    /// every record a file declares is written by this run's scan, so each is acted on as the
    /// scan writes it, and the first processes start while later files are still being read.
    pub fn at_start(files_declared_earlier: bool) -> SourcesRead {
        if files_declared_earlier {
            SourcesRead::NONE
        } else {
            SourcesRead::ALL
        }
    }

    /// Whether records of `source` may be acted on.
    pub fn has_read(&self, source: &Source) -> bool {
        match source.kind() {
            SourceKind::File => self.files,
            SourceKind::Api | SourceKind::Admin => true,
        }
    }

    /// Whether the processes of `source` are kept down (prism-admin's, past the grace).
    pub fn suspends(&self, source: &Source) -> bool {
        self.admin_suspended && source.kind() == SourceKind::Admin
    }
}

impl SourceKind {
    /// The kind of a source as `Source`'s `Display` writes it (`file:<path>`, `api`, `admin`).
    pub fn of_label(label: &str) -> Option<SourceKind> {
        let word = label.split_once(':').map_or(label, |(word, _)| word);
        word.parse().ok()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File { path } => write!(f, "{}:{}", SourceKind::File, path.display()),
            Source::Api | Source::Admin { .. } => f.write_str(self.kind().as_str()),
        }
    }
}

impl Source {
    /// The spec file at `path`.
    pub fn file(path: &Path) -> Source {
        Source::File {
            path: path.to_path_buf(),
        }
    }

    pub fn kind(&self) -> SourceKind {
        match self {
            Source::File { .. } => SourceKind::File,
            Source::Api => SourceKind::Api,
            Source::Admin { .. } => SourceKind::Admin,
        }
    }

    /// Whether two sources are the same owner (an admin's version does not change who owns an id).
    pub fn same_owner(&self, other: &Source) -> bool {
        match (self, other) {
            (Source::File { path: a }, Source::File { path: b }) => a == b,
            (Source::Api, Source::Api) => true,
            (Source::Admin { .. }, Source::Admin { .. }) => true,
            _ => false,
        }
    }
}

/// How a process is checked for health.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Probe {
    /// HTTP GET on `127.0.0.1:<port><path>`; a 2xx answer is healthy. No port means `HEALTH_PORT`.
    Http { path: String, port: Option<u16> },
    /// A TCP connect to `127.0.0.1:<port>`. No port means `HEALTH_PORT`.
    Tcp { port: Option<u16> },
    /// A command run beside the process (same environment and working directory); exit code
    /// 0 is healthy.
    Exec { command: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    pub initial_delay: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures of a ready process after which it is restarted.
    pub failure_threshold: u32,
    /// Consecutive passes needed to become ready.
    pub success_threshold: u32,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

    /// The least time a process is given to pass its first probe.
    pub const MIN_READY_DEADLINE: Duration = Duration::from_secs(1);

    /// How long a started process has to pass its health check before that counts as a failure
    /// (it is stopped, restarted with the backoff, and trips the breaker like any failure): its
    /// initial delay plus `failureThreshold` periods of the longer of interval and timeout, as
    /// a liveness failure of a ready process would take, and at least `MIN_READY_DEADLINE`. A
    /// program that is slow to start says so with its `initialDelay`.
    pub fn ready_deadline(&self) -> Duration {
        let period = self.interval.max(self.timeout);
        self.initial_delay
            .saturating_add(period.saturating_mul(self.failure_threshold))
            .max(HealthCheck::MIN_READY_DEADLINE)
    }

    /// A check with `probe` and the default timing and thresholds, which a spec file or a
    /// manifest then overrides with what it states.
    pub fn new(probe: Probe) -> HealthCheck {
        HealthCheck {
            probe,
            initial_delay: Duration::ZERO,
            interval: HealthCheck::DEFAULT_INTERVAL,
            timeout: HealthCheck::DEFAULT_TIMEOUT,
            failure_threshold: HealthCheck::DEFAULT_FAILURE_THRESHOLD,
            success_threshold: 1,
        }
    }
}

/// The check in a sentence, as `describe` shows it: "http GET /health on HEALTH_PORT every 10s
/// (timeout 1s, initial delay 0ns); unhealthy after 3 failures, ready after 1 pass".
impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = |port: &Option<u16>| {
            port.map_or_else(|| "HEALTH_PORT".to_string(), |port| port.to_string())
        };
        match &self.probe {
            Probe::Http { path, port: on } => write!(f, "http GET {path} on {}", port(on))?,
            Probe::Tcp { port: on } => write!(f, "tcp connect to {}", port(on))?,
            Probe::Exec { command } => write!(f, "exec {command:?}")?,
        }
        write!(
            f,
            " every {:?} (timeout {:?}, initial delay {:?}); unhealthy after {} failure{}, \
             ready after {} pass{}",
            self.interval,
            self.timeout,
            self.initial_delay,
            self.failure_threshold,
            if self.failure_threshold == 1 { "" } else { "s" },
            self.success_threshold,
            if self.success_threshold == 1 {
                ""
            } else {
                "es"
            },
        )
    }
}

/// Resource limits as declared. A spec without limits has no `Resources` at all (`None`):
/// there is one way to say "no limits", so that a spec with an empty `resources: {}` and one
/// without the block are the same spec (`Resources::limits` makes them so).
#[derive(Debug, Clone, PartialEq, Hash, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in millicores (0.5 cores = 500).
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
}

impl Resources {
    /// The limits a spec declares: `None` when it declares neither (an empty block included).
    /// Every reader of specs (spec files, manifests, the store) makes its `Resources` here.
    pub fn limits(cpu_millis: Option<u32>, memory_bytes: Option<u64>) -> Option<Resources> {
        (cpu_millis.is_some() || memory_bytes.is_some()).then_some(Resources {
            cpu_millis,
            memory_bytes,
        })
    }
}

/// Reads a spec's stored `resources` through `Resources::limits`: a record written before an
/// empty block meant none holds `{}` (a stored spec compared with its file's must not differ
/// in that alone, or an upgrade would replace the process).
fn stored_limits<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Resources>, D::Error> {
    let stored = Option::<Resources>::deserialize(deserializer)?;
    Ok(
        stored
            .and_then(|resources| Resources::limits(resources.cpu_millis, resources.memory_bytes)),
    )
}

/// A spec's own backoff and circuit-breaker settings; unset ones come from the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BackoffOverrides {
    pub initial: Option<Duration>,
    pub max: Option<Duration>,
    pub reset_after: Option<Duration>,
    /// Consecutive failures that open the circuit.
    pub failure_threshold: Option<u32>,
}

/// Whether `value` is its type's default: such fields are left out of the stored JSON (schema
/// version 3), which keeps each record, and the store's cache of it, a fraction of its size.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Everything needed to run one process, fully resolved (catalog entries inherited, paths absolute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub process_type: ProcessType,
    pub executable: PathBuf,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Variables the spec sets, on top of the injected ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables copied from the launcher's environment when present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// The catalog entry this spec came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub isolation: Isolation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart_policy: RestartPolicy,
    /// Exit codes that count as success for `OnFailure` (and are not failures); empty means 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success_exit_codes: Vec<i32>,
    /// Per-process settings that override the launcher's backoff and circuit breaker.
    #[serde(default, skip_serializing_if = "is_default")]
    pub backoff: BackoffOverrides,
    pub termination_grace: Duration,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "stored_limits"
    )]
    pub resources: Option<Resources>,
    /// Ports asked for; used when free, else ports are allocated from the launcher's range.
    #[serde(default, skip_serializing_if = "is_default")]
    pub requested_ports: RequestedPorts,
    /// The type-specific configuration (ADR-057), handed to the child as environment variables.
    #[serde(default, skip_serializing_if = "is_default")]
    pub type_config: TypeConfig,
    /// Labels are metadata: changing them never restarts a process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ProcessSpec {
    pub const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(10);

    /// Whether `status` is a success for this process: exit code 0, or one of its
    /// `success_exit_codes` when it lists any.
    pub fn is_success(&self, status: ExitStatus) -> bool {
        match status {
            ExitStatus::Code(code) if self.success_exit_codes.is_empty() => code == 0,
            ExitStatus::Code(code) => self.success_exit_codes.contains(&code),
            ExitStatus::Signal(_) | ExitStatus::OomKilled | ExitStatus::Unknown => false,
        }
    }

    /// Whether a process started from `running` must be replaced to honour `self`.
    pub fn requires_restart_from(&self, running: &ProcessSpec) -> bool {
        let ProcessSpec {
            process_type,
            executable,
            args,
            env,
            inherit_env,
            working_dir,
            pattern,
            isolation,
            namespace,
            session_id,
            health_check,
            // How exits are treated applies from the next exit on; it needs no new process.
            restart_policy: _,
            success_exit_codes: _,
            backoff: _,
            termination_grace,
            resources,
            requested_ports,
            type_config,
            labels: _,
        } = self;
        // Destructuring without `..` makes a new field a compile error here, so that nobody forgets
        // to decide whether changing it restarts the process.
        *process_type != running.process_type
            || *executable != running.executable
            || *args != running.args
            || *env != running.env
            || *inherit_env != running.inherit_env
            || *working_dir != running.working_dir
            || *pattern != running.pattern
            || *isolation != running.isolation
            || *namespace != running.namespace
            || *session_id != running.session_id
            || *health_check != running.health_check
            || *termination_grace != running.termination_grace
            || *resources != running.resources
            || *requested_ports != running.requested_ports
            || *type_config != running.type_config
    }
}

impl ProcessSpec {
    /// The fields in which `self` differs from `before`, in the order a spec lists them, for
    /// an operator reading a diff (`apply --dry-run`); whether the change replaces the process
    /// is `requires_restart_from`.
    pub fn changed_fields(&self, before: &ProcessSpec) -> Vec<SpecField> {
        let ProcessSpec {
            process_type,
            executable,
            args,
            env,
            inherit_env,
            working_dir,
            pattern,
            isolation,
            namespace,
            session_id,
            health_check,
            restart_policy,
            success_exit_codes,
            backoff,
            termination_grace,
            resources,
            requested_ports,
            type_config,
            labels,
        } = self;
        // Destructured without `..`, as in `requires_restart_from`: a new field does not
        // compile until it is given its place in the diff.
        let mut changed = Vec::new();
        let mut note = |differs: bool, field: SpecField| {
            if differs {
                changed.push(field);
            }
        };
        note(*process_type != before.process_type, SpecField::ProcessType);
        note(*pattern != before.pattern, SpecField::Pattern);
        note(*executable != before.executable, SpecField::Executable);
        note(*args != before.args, SpecField::Args);
        note(*env != before.env, SpecField::Env);
        note(*inherit_env != before.inherit_env, SpecField::InheritEnv);
        note(*working_dir != before.working_dir, SpecField::WorkingDir);
        note(*isolation != before.isolation, SpecField::Isolation);
        note(*namespace != before.namespace, SpecField::Namespace);
        note(*session_id != before.session_id, SpecField::SessionId);
        match (health_check, &before.health_check) {
            (Some(now), Some(was)) => {
                // Every field named, as above: a new one does not compile until it has its
                // place in the diff.
                let HealthCheck {
                    probe,
                    initial_delay,
                    interval,
                    timeout,
                    failure_threshold,
                    success_threshold,
                } = now;
                let probe_field = match (probe, &was.probe) {
                    (_, _) if *probe == was.probe => None,
                    (Probe::Http { port, .. }, Probe::Http { port: was_port, .. })
                        if port == was_port =>
                    {
                        Some(HealthCheckField::HttpPath)
                    }
                    (Probe::Exec { .. }, Probe::Exec { .. }) => Some(HealthCheckField::ExecCommand),
                    _ => Some(HealthCheckField::Probe),
                };
                if let Some(field) = probe_field {
                    note(true, SpecField::HealthCheck(field));
                }
                for (differs, field) in [
                    (
                        *initial_delay != was.initial_delay,
                        HealthCheckField::InitialDelay,
                    ),
                    (*interval != was.interval, HealthCheckField::Interval),
                    (*timeout != was.timeout, HealthCheckField::Timeout),
                    (
                        *failure_threshold != was.failure_threshold,
                        HealthCheckField::FailureThreshold,
                    ),
                    (
                        *success_threshold != was.success_threshold,
                        HealthCheckField::SuccessThreshold,
                    ),
                ] {
                    note(differs, SpecField::HealthCheck(field));
                }
            }
            // Added or removed.
            (now, was) => note(now != was, SpecField::HealthCheck(HealthCheckField::Probe)),
        }
        note(
            *restart_policy != before.restart_policy,
            SpecField::RestartPolicy,
        );
        note(
            *success_exit_codes != before.success_exit_codes,
            SpecField::SuccessExitCodes,
        );
        let BackoffOverrides {
            initial,
            max,
            reset_after,
            failure_threshold,
        } = backoff;
        note(
            *initial != before.backoff.initial,
            SpecField::BackoffInitial,
        );
        note(*max != before.backoff.max, SpecField::BackoffMax);
        note(
            *reset_after != before.backoff.reset_after,
            SpecField::BackoffResetAfter,
        );
        note(
            *failure_threshold != before.backoff.failure_threshold,
            SpecField::BackoffFailureThreshold,
        );
        note(
            *termination_grace != before.termination_grace,
            SpecField::TerminationGrace,
        );
        let limits = |resources: &Option<Resources>| match resources {
            Some(Resources {
                cpu_millis,
                memory_bytes,
            }) => (*cpu_millis, *memory_bytes),
            None => (None, None),
        };
        let ((cpu, memory), (was_cpu, was_memory)) = (limits(resources), limits(&before.resources));
        note(cpu != was_cpu, SpecField::CpuLimit);
        note(memory != was_memory, SpecField::MemoryLimit);
        let RequestedPorts { grpc, health } = requested_ports;
        note(*grpc != before.requested_ports.grpc, SpecField::GrpcPort);
        note(
            *health != before.requested_ports.health,
            SpecField::HealthPort,
        );
        if *type_config != before.type_config {
            let block = match (type_config, &before.type_config) {
                (TypeConfig::None, was) => was.block_name(),
                (now, _) => now.block_name(),
            };
            note(true, SpecField::TypeConfig(block.to_string()));
        }
        note(*labels != before.labels, SpecField::Labels);
        changed
    }
}

/// One per process id: what someone declared should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRecord {
    pub id: ProcessId,
    /// Shared with the observed record of the process started from it (and with the next
    /// read of an unchanged record), so that a launcher of 10,000 processes keeps one copy of
    /// each spec in memory rather than one per record.
    pub spec: Arc<ProcessSpec>,
    /// Grows by one on every change of `spec`; never reused for an id while its record exists.
    pub generation: u64,
    pub source: Source,
    /// Grows by one each time an operator resets the process (clears its failures and closes
    /// its circuit); not a spec change, so it does not bump the generation.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resets: u64,
    /// Set while an operator holds the process stopped (`prism-launcher stop`) and cleared by
    /// `prism-launcher start`: the definition stays, nothing runs. Kept when the spec changes,
    /// gone with the record. Not a spec change: the generation stays.
    #[serde(default, skip_serializing_if = "is_default")]
    pub held: bool,
    /// Grows by one each time an operator asks for a new process without a spec change
    /// (`prism-launcher restart`); like `resets`, the observed record acknowledges it
    /// (`restarts_seen`), so a request is acted on once, even across a launcher crash.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restarts: u64,
}

/// Ports a spec asks for (the catalog's health port, an admin's fixed ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RequestedPorts {
    pub grpc: Option<u16>,
    pub health: Option<u16>,
}

/// Which ports a process is given (`GRPC_PORT`, `HEALTH_PORT`): only the ones it uses, so that
/// the port range is no ceiling on how many processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortNeeds {
    pub grpc: bool,
    pub health: bool,
}

impl ProcessSpec {
    /// The ports this process uses: a pattern gets both (the seed's contract: `GRPC_PORT` and
    /// `HEALTH_PORT`); any process gets the ones its spec asks for, and `HEALTH_PORT` when its
    /// health check probes it (HTTP or TCP without a port of its own). Other processes get none.
    pub fn port_needs(&self) -> PortNeeds {
        let pattern = self.process_type == ProcessType::Pattern;
        let probes_health_port =
            self.health_check
                .as_ref()
                .is_some_and(|check| match &check.probe {
                    Probe::Http { port, .. } | Probe::Tcp { port } => port.is_none(),
                    Probe::Exec { .. } => false,
                });
        PortNeeds {
            grpc: pattern || self.requested_ports.grpc.is_some(),
            health: pattern || self.requested_ports.health.is_some() || probes_health_port,
        }
    }
}

/// Ports allocated to a process (0: none); they stay with the id across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ports {
    pub grpc: u16,
    pub health: u16,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// SIGKILLed by the kernel's out-of-memory killer (as far as the kernel tells).
    OomKilled,
    /// Exited with no status for this launcher: adopted from an earlier run (its parent, not
    /// us, reaped it), or reaped by something else.
    Unknown,
}

impl ExitStatus {
    pub fn is_success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "signal {}", signal_name(*signal)),
            ExitStatus::OomKilled => f.write_str("killed by the kernel's out-of-memory killer"),
            ExitStatus::Unknown => {
                f.write_str("an unknown status (adopted, or not reaped by this launcher)")
            }
        }
    }
}

/// The usual name of a Linux signal number, for messages people read.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("{signal}"),
    };
    name.to_string()
}

/// Where a process is in its lifecycle. See the state machine in ARCHITECTURE.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Spawned; waiting for its first passing readiness probe.
    Starting,
    /// Spawned and ready (or it has no health check).
    Running,
    /// SIGTERM sent to its process group; SIGKILL follows at `stop_deadline`.
    Stopping,
    /// Exited on its own; restarts at `next_restart_at`.
    BackingOff,
    /// Exited and its restart policy says it stays down.
    Exited,
    /// Stopped by the launcher (replaced, or the launcher itself stopped).
    Stopped,
    /// Circuit open: it failed too many times in a row and is not restarted until its spec
    /// changes or an operator resets it.
    Tripped,
    /// Desired but not started: the launcher is at `--max-processes`.
    Pending,
}

impl Phase {
    /// Whether a process with a pid is (or may still be) alive in this phase.
    pub fn has_live_process(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running | Phase::Stopping)
    }
}

/// Why the launcher is stopping a process; decides how its exit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// Nobody desires it any more.
    Undesired,
    /// Its spec changed in a way that needs a new process.
    Replace,
    /// Its liveness probe failed too many times in a row; counted as a failure.
    Unhealthy,
    /// Its health check did not pass within its ready deadline; counted as a failure.
    NotReady,
    /// The launcher is shutting down.
    Shutdown,
    /// An operator holds it stopped (`prism-launcher stop`).
    Held,
    /// An operator asked for a new process in its place (`prism-launcher restart`).
    Restart,
    /// prism-admin has been unreachable for longer than `--admin-disconnect-grace`: its
    /// processes are stopped until a registration succeeds again.
    AdminUnreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// No health check is declared.
    NotChecked,
    /// Declared, but no probe has answered yet.
    Unknown,
    Healthy,
    Unhealthy,
}

/// What runs (or last ran) for one id, as the runtime last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRecord {
    pub id: ProcessId,
    pub phase: Phase,
    /// The process (and process group) id while it lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The pid's start time in clock ticks since boot (from /proc), to tell it from a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_ticks: Option<u64>,
    /// The `PRISM_INSTANCE_ID` the process was started with: unique per spawn, inherited by its
    /// descendants, so that they are told from any other process of the same id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The desired generation the process was started from.
    pub generation: u64,
    /// The spec the process was started from (the desired record's, shared).
    pub spec: Arc<ProcessSpec>,
    pub ports: Ports,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<UnixMillis>,
    pub health: Health,
    /// Consecutive passes of the readiness probe so far (until ready).
    #[serde(default, skip_serializing_if = "is_default")]
    pub probe_successes: u32,
    /// Consecutive failures of the liveness probe.
    #[serde(default, skip_serializing_if = "is_default")]
    pub probe_failures: u32,
    /// Starts after the first one.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart_count: u32,
    /// Failures since the process last ran stably; drives the backoff.
    #[serde(default, skip_serializing_if = "is_default")]
    pub consecutive_failures: u32,
    /// Every failure ever counted (exits that count as failures, spawn errors, liveness restarts).
    #[serde(default, skip_serializing_if = "is_default")]
    pub error_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_at: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_deadline: Option<UnixMillis>,
    /// Set once SIGKILL has been sent, so the kill is not repeated while the exit is awaited.
    #[serde(default, skip_serializing_if = "is_default")]
    pub killed: bool,
    /// The desired record's `resets` this record has acted on.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resets_seen: u64,
    /// The desired record's `restarts` this record has acted on: set when a process is started
    /// (or its start failed) for the desired record.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restarts_seen: u64,
    /// When the circuit opened, while `phase` is `Tripped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped_at: Option<UnixMillis>,
    /// When the last process of this id exited (or failed to spawn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_at: Option<UnixMillis>,
}

impl ObservedRecord {
    /// Whether its process is ready: running and healthy (or without a health check).
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Running && matches!(self.health, Health::Healthy | Health::NotChecked)
    }
}
