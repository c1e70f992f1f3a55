//! The launcher assembled: `run(config, listeners, shutdown)` opens the store, loads the catalog,
//! and runs the reconcile loop, the watchers of the spec directory and the catalog, the gRPC
//! server, the HTTP endpoint and (when configured) the prism-admin client until `shutdown`
//! completes or one of them fails. The binary binds the listeners and passes them in, so a test
//! can run a whole launcher in-process on `127.0.0.1:0`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::admin_client::{admin_link, run_admin_client, AdminSettings};
use crate::api::auth::{listener_auth, AuthError, BearerToken, ListenerAuth};
use crate::api::context::ApiContext;
use crate::api::control_plane::AssignmentPolicy;
use crate::api::logs::LogSource;
use crate::api::server::GrpcListeners;
use crate::api::tls::{ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, TlsError};
use crate::clock::{now, system_clock};
use crate::private_fs::{self, DirState, PrivateFsError};
use crate::reconcile::{Backoff, Isolation, ProcessId, ProcessType, UnixMillis, Vocabulary};
use crate::runtime::cgroup::{CgroupTree, HostLimits};
use crate::runtime::{self, RuntimeConfig, Watchdog};
use crate::sources::catalog::SharedCatalog;
use crate::sources::catalog_watch::{reload_catalog, watch_catalog};
use crate::sources::spec_dir::{watch_spec_dir, SpecWatch};
use crate::sources::SourceProblems;
use crate::store::{Store, StoreError};
use crate::telemetry::http::{serve_http, HttpState};
use crate::telemetry::https::{HttpsConfig, HttpsError};
use crate::telemetry::{Metrics, MetricsError, Readiness, UsageBoard};

/// The file in the data directory where a running launcher writes its gRPC address, so that
/// client commands (and tests that bind port 0) find it.
pub const ADDRESS_FILE: &str = "launcher.addr";

/// The Unix socket in the data directory, which client commands use by default.
pub const SOCKET_FILE: &str = "launcher.sock";

/// The file beside `ADDRESS_FILE` with the HTTP endpoint's address.
pub const METRICS_ADDRESS_FILE: &str = "metrics.addr";

/// Everything a launcher runs with, as plain values (the command line, the legacy command line
/// and tests all make one).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the store and the children's logs live.
    pub data_dir: PathBuf,
    /// The watched directory of desired-state spec files.
    pub specs_dir: PathBuf,
    /// The pattern catalog: `<dir>/<name>/manifest.yaml`.
    pub patterns_dir: PathBuf,
    /// Ports handed to children as GRPC_PORT and HEALTH_PORT come from this range.
    pub port_range: RangeInclusive<u16>,
    /// A full reconcile (and spec directory rescan) runs this often even without events.
    pub resync_interval: Duration,
    /// This launcher's id; `None` takes the one recorded in the store, or a new random one.
    pub launcher_id: Option<String>,
    pub backoff: Backoff,
    /// Processes beyond this many are left pending.
    pub max_processes: Option<u32>,
    /// Restarts allowed per second across the host; 0 is no limit.
    pub max_restarts_per_second: u32,
    /// The isolation of a launch that does not say, for patterns whose manifest does not either.
    pub default_isolation: Isolation,
    /// prism-admin's address; `None` runs standalone.
    pub admin_endpoint: Option<String>,
    /// The address prism-admin should dial; `None` derives it from the gRPC listener.
    pub advertise_address: Option<String>,
    /// The process types this launcher runs.
    pub capabilities: Vec<ProcessType>,
    /// The region reported to prism-admin.
    pub region: String,
    pub heartbeat_interval: Duration,
    /// The deadline of every call to prism-admin (and of connecting to it).
    pub admin_call_timeout: Duration,
    /// Stop prism-admin's processes once it has been unreachable this long (they start again
    /// when it is back); `None`, the default, keeps them running through any partition.
    pub admin_disconnect_grace: Option<Duration>,
    /// Executables prism-admin pushes must be under one of these; empty means the patterns and
    /// spec directories.
    pub allowed_executable_roots: Vec<PathBuf>,
    /// How long LaunchPattern waits for a healthy process.
    pub launch_timeout: Duration,
    /// How often /proc is scanned for orphans.
    pub orphan_scan_interval: Duration,
    /// At shutdown, leave the processes running for the next launcher to adopt.
    pub keep_processes: bool,
    /// A child's log file is rotated past this size...
    pub log_max_bytes: u64,
    /// ...keeping this many rotated files.
    pub log_max_files: u32,
    /// Who may call what over the network, and the Unix socket's group.
    pub security: Security,
}

/// How callers are authenticated (see `api::auth`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// A file holding the bearer token that privileged calls over TCP must present.
    pub auth_token_file: Option<PathBuf>,
    /// TLS on the gRPC listener (mutual with a client CA).
    pub tls: Option<ServerTlsFiles>,
    /// Members of this group may use the Unix socket too (which is then 0660, and the data
    /// directory 0710).
    pub socket_group: Option<u32>,
    /// Serve a non-loopback address with no authentication.
    pub insecure: bool,
    /// TLS to prism-admin.
    pub admin_tls: ClientTlsFiles,
    /// A file holding the bearer token sent to prism-admin.
    pub admin_token_file: Option<PathBuf>,
}

impl Default for Config {
    /// The launcher's defaults: the ones `prism-launcher serve` documents for its flags.
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("data"),
            specs_dir: PathBuf::from("examples/desired-state"),
            patterns_dir: PathBuf::from("manifests"),
            port_range: 40000..=44999,
            resync_interval: Duration::from_secs(30),
            launcher_id: None,
            backoff: Backoff::default(),
            max_processes: None,
            max_restarts_per_second: 20,
            default_isolation: Isolation::None,
            admin_endpoint: None,
            advertise_address: None,
            capabilities: ProcessType::ALL.to_vec(),
            region: String::new(),
            heartbeat_interval: Duration::from_secs(30),
            admin_call_timeout: Duration::from_secs(5),
            admin_disconnect_grace: None,
            allowed_executable_roots: Vec::new(),
            launch_timeout: Duration::from_secs(30),
            orphan_scan_interval: Duration::from_secs(60),
            keep_processes: false,
            log_max_bytes: 10 << 20,
            log_max_files: 5,
            security: Security::default(),
        }
    }
}

/// The listeners the launcher serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Every gRPC service.
    pub grpc: TcpListener,
    /// `/metrics`, `/metrics.json`, `/healthz`, `/readyz`.
    pub metrics: TcpListener,
    /// The Unix socket in the data directory (`bind_socket`), if any.
    pub unix: Option<UnixListener>,
}

/// A part of the launcher failed, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the spec directory {} does not exist; create it or pass --specs-dir", path.display())]
    NoSpecsDir { path: PathBuf },
    #[error("cannot resolve {}", path.display())]
    ResolvePath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the data directory")]
    DataDir(#[from] PrivateFsError),
    #[error("cannot make the store in {} private", path.display())]
    PrivateStore {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot read the address of the {listener} listener")]
    ListenerAddress {
        listener: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    AddressFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("allowed executable root {}", path.display())]
    AllowedRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Https(#[from] HttpsError),
    #[error(
        "--admin-endpoint {endpoint} is not https:// but --admin-ca/--admin-cert ask for TLS; \
         write it as host:port or https://host:port"
    )]
    AdminScheme { endpoint: String },
    #[error("cannot give the data directory {} to the socket group {gid}", path.display())]
    SocketGroup {
        path: PathBuf,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve the Unix socket {}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{part} failed")]
    PartFailed {
        part: &'static str,
        #[source]
        source: PartError,
    },
    #[error("{part} stopped unexpectedly")]
    PartEnded { part: &'static str },
    #[error("a part of the launcher panicked: {0}")]
    PartPanicked(String),
}

/// The error a part of the launcher ended with.
pub type PartError = Box<dyn std::error::Error + Send + Sync>;

/// A launcher ready to run: its store open, its catalog loaded, everything checked that can be
/// checked before any listener is bound (so that a launcher that cannot start says why, not that
/// its port is taken).
pub struct Prepared {
    config: Config,
    specs_dir: PathBuf,
    store: Arc<Store>,
    launcher_id: String,
    catalog: SharedCatalog,
    problems: SourceProblems,
    allowed_roots: Vec<PathBuf>,
    metrics: Metrics,
    token: Option<Arc<BearerToken>>,
    tls: Option<ServerTls>,
    https: Option<HttpsConfig>,
    admin_tls: Option<ClientTls>,
    admin_token: Option<Arc<BearerToken>>,
    host_limits: HostLimits,
    /// The last run had stopped admin's processes past the disconnect grace.
    admin_suspended_before: bool,
    /// The store held records that spec files declared in an earlier run.
    files_declared_earlier: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("launcher_id", &self.launcher_id)
            .finish_non_exhaustive()
    }
}

/// How long a store lock left by a launcher that died is waited for: a child it was starting
/// holds the lock from its fork until its exec, a moment after the launcher itself is gone.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Checks the configuration, opens the store and loads the catalog (blocking: file I/O).
pub fn prepare(config: Config) -> Result<Prepared, AppError> {
    if !config.specs_dir.is_dir() {
        return Err(AppError::NoSpecsDir {
            path: config.specs_dir.clone(),
        });
    }
    let specs_dir =
        std::path::absolute(&config.specs_dir).map_err(|source| AppError::ResolvePath {
            path: config.specs_dir.clone(),
            source,
        })?;
    let data_dir_mode = match config.security.socket_group {
        Some(_) => private_fs::GROUP_TRAVERSE_DIR_MODE,
        None => private_fs::PRIVATE_DIR_MODE,
    };
    if let DirState::Tightened { was } =
        private_fs::ensure_private_dir(&config.data_dir, data_dir_mode)?
    {
        tracing::warn!(data_dir = %config.data_dir.display(), was = %format!("{was:o}"),
            now = %format!("{data_dir_mode:o}"), "the data directory was open to other users; made it private");
    }
    if let Some(gid) = config.security.socket_group {
        // The group's members reach the socket through the data directory, which must be theirs
        // to traverse (0710); nothing else in it is theirs.
        nix::unistd::chown(
            &config.data_dir,
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|errno| AppError::SocketGroup {
            path: config.data_dir.clone(),
            gid,
            source: errno.into(),
        })?;
    }
    let store_dir = config.data_dir.join("store");
    // Private before sled creates its files in it (with the process's umask), so that no group
    // member of a 0710 data directory can open one in between.
    private_fs::ensure_private_dir(&store_dir, private_fs::PRIVATE_DIR_MODE)?;
    let store = Arc::new(open_store(&store_dir)?);
    private_fs::tighten_tree(&store_dir).map_err(|source| AppError::PrivateStore {
        path: store_dir.clone(),
        source,
    })?;
    let launcher_id = match &config.launcher_id {
        Some(id) => id.clone(),
        None => store.launcher_id_or_insert(&new_launcher_id())?,
    };
    // What a launcher killed in the middle of an `apply` left in the spec directory (it may
    // hold credentials), before this run writes any. A directory the launcher may not write
    // keeps them: the operator is told, and nothing else depends on it.
    match crate::sources::applied::remove_leftover_temporaries(&specs_dir) {
        Ok(0) => {}
        Ok(removed) => tracing::info!(specs_dir = %specs_dir.display(), removed,
            "removed the temporary files of interrupted apply writes"),
        Err(error) => tracing::warn!(specs_dir = %specs_dir.display(), %error,
            "cannot remove the temporary files of interrupted apply writes"),
    }
    let allowed_roots = allowed_roots(&config, &specs_dir)?;
    let token = config
        .security
        .auth_token_file
        .as_deref()
        .map(BearerToken::from_file)
        .transpose()?
        .map(Arc::new);
    let tls_pem = config
        .security
        .tls
        .as_ref()
        .map(ServerTlsFiles::read)
        .transpose()?;
    let tls = tls_pem.as_ref().map(ServerTls::new);
    let https = tls_pem
        .as_ref()
        .map(|pem| HttpsConfig::from_pem(&pem.cert, &pem.key))
        .transpose()?;
    let admin_tls = config
        .security
        .admin_tls
        .is_set()
        .then(|| {
            config
                .security
                .admin_tls
                .load(["--admin-ca", "--admin-cert", "--admin-key"])
        })
        .transpose()?;
    if let Some(endpoint) = &config.admin_endpoint {
        let tls_asked = config.security.admin_tls.is_set();
        let scheme = endpoint.split_once("://").map(|(scheme, _)| scheme);
        if tls_asked && scheme.is_some_and(|scheme| scheme != "https") {
            return Err(AppError::AdminScheme {
                endpoint: endpoint.clone(),
            });
        }
    }
    let admin_token = config
        .security
        .admin_token_file
        .as_deref()
        .map(BearerToken::from_file)
        .transpose()?
        .map(Arc::new);
    let host_limits = runtime::cgroup::detect_host_limits(&launcher_id);
    tracing::info!(mode = ?host_limits.mode, "resource limits: {}", host_limits.reason);
    let metrics = Metrics::new()?;
    let problems = SourceProblems::default();
    let catalog = SharedCatalog::default();
    reload_catalog(&config.patterns_dir, &catalog, &problems);
    let admin_suspended_before = config.admin_endpoint.is_some()
        && config.admin_disconnect_grace.is_some()
        && store.admin_suspended()?;
    // Read before the spec watcher starts, so that no record its scan writes is taken for one of
    // an earlier run.
    let files_declared_earlier = store.holds_file_records()?;
    Ok(Prepared {
        config,
        specs_dir,
        store,
        launcher_id,
        catalog,
        problems,
        allowed_roots,
        metrics,
        token,
        tls,
        https,
        admin_tls,
        admin_token,
        host_limits,
        admin_suspended_before,
        files_declared_earlier,
    })
}

impl Prepared {
    /// How a gRPC listener at `address` authenticates, or why it must not be served (a
    /// non-loopback address with no authentication); checked before binding and again with the
    /// address bound.
    pub fn listener_auth(&self, address: SocketAddr) -> Result<ListenerAuth, AppError> {
        let security = &self.config.security;
        let client_certificates = security
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some());
        if self.token.is_some() && self.tls.is_none() && !address.ip().is_loopback() {
            tracing::warn!(%address, "a bearer token is required but the listener has no TLS: \
                the token crosses the network in clear text; give --tls-cert and --tls-key");
        }
        Ok(listener_auth(
            address,
            self.token.clone(),
            client_certificates,
            security.insecure,
        )?)
    }

    /// Binds the Unix socket `<data-dir>/launcher.sock`, 0600 (0660 with a socket group). A
    /// socket file already there is a dead launcher's: this one holds the store's lock.
    pub fn bind_socket(&self) -> Result<UnixListener, AppError> {
        let path = self.config.data_dir.join(SOCKET_FILE);
        let socket_error = |source| AppError::Socket {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_socket() => {
                std::fs::remove_file(&path).map_err(socket_error)?;
            }
            Ok(_) => {
                return Err(socket_error(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(socket_error(error)),
        }
        let listener = UnixListener::bind(&path).map_err(socket_error)?;
        let group = self.config.security.socket_group;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(socket_error)?;
        if let Some(gid) = group {
            nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|errno| socket_error(errno.into()))?;
        }
        Ok(listener)
    }
}

/// Opens the store, waiting a moment for a lock that a dead launcher's half-started child may
/// still hold (a lock held by a live launcher is still refused within `LOCK_WAIT`).
fn open_store(dir: &Path) -> Result<Store, StoreError> {
    let give_up = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match Store::open(dir) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// Removes the address files and the socket when the launcher stops, however it stops, so that
/// no client dials a launcher that is gone.
struct AddressFiles(Vec<PathBuf>);

impl Drop for AddressFiles {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Runs a prepared launcher until `shutdown` completes (then stops every child, unless
/// `keep_processes`) or until one of its parts fails, which stops the others and is returned.
pub async fn run(
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let tcp_auth = prepared.listener_auth(local_address(&listeners.grpc, "gRPC")?)?;
    let Prepared {
        config,
        specs_dir,
        store,
        launcher_id,
        catalog,
        problems,
        allowed_roots,
        metrics,
        token: _,
        tls,
        https,
        admin_tls,
        admin_token,
        host_limits,
        admin_suspended_before,
        files_declared_earlier,
    } = prepared;
    let grpc_address = local_address(&listeners.grpc, "gRPC")?;
    let metrics_address = local_address(&listeners.metrics, "metrics")?;
    let address_file = config.data_dir.join(ADDRESS_FILE);
    let metrics_address_file = config.data_dir.join(METRICS_ADDRESS_FILE);
    let mut served_files = vec![address_file.clone(), metrics_address_file.clone()];
    if listeners.unix.is_some() {
        served_files.push(config.data_dir.join(SOCKET_FILE));
    }
    let _served_files = AddressFiles(served_files);
    write_address(&address_file, grpc_address)?;
    tracing::info!(address = %grpc_address, %launcher_id, data_dir = %config.data_dir.display(),
        specs_dir = %specs_dir.display(), "prism-launcher serving");
    write_address(&metrics_address_file, metrics_address)?;
    tracing::info!(%metrics_address, "metrics served at /metrics, /metrics.json, /healthz, /readyz");

    let (stop, stopped) = watch::channel(false);
    let readiness = Readiness::default();
    let notifier = crate::systemd::Notifier::from_env().map(Arc::new);
    let usage = UsageBoard::new(
        runtime::usage_sampler(host_limits.tree.clone()),
        runtime::ticks_per_second(),
    );
    let started_at = now();
    let (admin_board, admin_watch) = admin_link(
        config.admin_endpoint.as_deref(),
        config.admin_disconnect_grace,
        crate::reconcile::down_since_at_start(
            started_at,
            config.admin_disconnect_grace,
            admin_suspended_before,
        ),
        started_at,
    );
    metrics.show_admin_link(&admin_watch.link.borrow());
    let context = Arc::new(ApiContext {
        store: store.clone(),
        catalog: catalog.clone(),
        specs_dir: specs_dir.clone(),
        problems: problems.clone(),
        clock: system_clock(),
        stopping: stopped.clone(),
        launcher_id: launcher_id.clone(),
        started_at,
        launch_wait: config.launch_timeout,
        default_isolation: config.default_isolation,
        policy: AssignmentPolicy {
            launcher_id: launcher_id.clone(),
            capabilities: config.capabilities.clone(),
            max_processes: config.max_processes,
            allowed_roots,
        },
        logs: Arc::new(ChildLogs {
            dir: config.data_dir.join("logs"),
        }),
        limit_mode: host_limits.mode,
        usage: usage.clone(),
        admin: admin_watch.clone(),
    });

    // The launcher's parts run until the shutdown, or until one of them ends on its own, which
    // is a failure: then every part is stopped too and the failure is reported.
    let mut parts = Parts::default();
    parts.spawn(
        LOOP_PART,
        runtime::run(
            store.clone(),
            RuntimeConfig {
                admin_suspended: config
                    .admin_endpoint
                    .is_some()
                    .then(|| admin_watch.suspended.clone()),
                files_declared_earlier,
                ..runtime_config(
                    &config,
                    host_limits.tree.clone(),
                    &launcher_id,
                    &metrics,
                    &readiness,
                    &usage,
                    notifier.clone(),
                )
            },
            stop_signal(&stopped),
        ),
    );
    let (catalog_changed, catalog_changes) = watch::channel(0u64);
    let watched = (
        config.patterns_dir.clone(),
        catalog.clone(),
        problems.clone(),
    );
    let catalog_stop = stop_signal(&stopped);
    parts.spawn("the catalog watcher", async move {
        let (dir, catalog, problems) = watched;
        watch_catalog(dir, catalog, catalog_changed, problems, catalog_stop).await;
        Ok::<(), std::convert::Infallible>(())
    });
    parts.spawn(
        "the spec watcher",
        watch_spec_dir(
            SpecWatch {
                dir: specs_dir.clone(),
                store: store.clone(),
                catalog,
                catalog_changes,
                problems,
                resync_interval: config.resync_interval,
                readiness: readiness.clone(),
            },
            stop_signal(&stopped),
        ),
    );
    if let Some(endpoint) = &config.admin_endpoint {
        let settings = AdminSettings {
            endpoint: endpoint.clone(),
            launcher_id: launcher_id.clone(),
            advertise_address: advertise_address(config.advertise_address.as_deref(), grpc_address),
            region: config.region.clone(),
            max_processes: config.max_processes,
            heartbeat_interval: config.heartbeat_interval,
            call_timeout: config.admin_call_timeout,
            disconnect_grace: config.admin_disconnect_grace,
            metadata: BTreeMap::from([("pid".to_string(), std::process::id().to_string())]),
            metrics: metrics.clone(),
            tls: admin_tls,
            token: admin_token,
            jitter_seed: crate::random::entropy_seed(started_at.0),
        };
        tracing::info!(%endpoint, advertise = %settings.advertise_address,
            disconnect_grace = ?config.admin_disconnect_grace, "prism-admin configured");
        parts.spawn(
            "the prism-admin client",
            run_admin_client(
                settings,
                admin_board,
                context.clone(),
                usage.clone(),
                stop_signal(&stopped),
            ),
        );
    }
    parts.spawn(
        "the HTTP endpoint",
        serve_http(
            listeners.metrics,
            https,
            HttpState {
                store,
                usage: usage.clone(),
                scrape: Arc::default(),
                metrics,
                readiness: readiness.clone(),
                clock: context.clock.clone(),
                started_at,
            },
            stop_signal(&stopped),
        ),
    );
    readiness.listening();
    if let Some(notifier) = notifier.clone() {
        let mut ready = readiness.when_ready();
        tokio::spawn(async move {
            if ready.wait_for(|ready| *ready).await.is_ok() {
                notifier.notify("READY=1\nSTATUS=reconciling");
            }
        });
    }
    parts.spawn(
        "the gRPC server",
        crate::api::server::serve(
            GrpcListeners {
                tcp: listeners.grpc,
                tcp_auth,
                tls,
                unix: listeners.unix,
                unix_auth: ListenerAuth::Unix {
                    own_uid: nix::unistd::geteuid().as_raw(),
                    group: config.security.socket_group,
                },
            },
            context,
            stop_signal(&stopped),
        ),
    );

    let mut failure = None;
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        Some(ended) = parts.join_next() => failure = part_failure(ended, false),
    }
    if let Some(notifier) = &notifier {
        notifier.notify("STOPPING=1\nSTATUS=stopping every process");
    }
    // Every part sees the stop; the loop stops every child with its grace period.
    let _ = stop.send(true);
    // The loop's own shutdown is bounded by the longest grace period; once it is over, the
    // servers get `DRAIN_MARGIN` to finish the calls under way, and are cut off after that.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let next = match drain_until {
            Some(deadline) => match tokio::time::timeout_at(deadline, parts.join_next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::warn!("calls still under way at shutdown were cut off");
                    parts.abort_all();
                    break;
                }
            },
            None => parts.join_next().await,
        };
        let Some(ended) = next else {
            break;
        };
        if matches!(&ended, Ok((part, _)) if *part == LOOP_PART) {
            drain_until = Some(tokio::time::Instant::now() + DRAIN_MARGIN);
        }
        if let Some(error) = part_failure(ended, true) {
            failure.get_or_insert(error);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The name of the part that runs the reconcile loop.
const LOOP_PART: &str = "the reconcile loop";

/// How long the servers may take to finish their calls once the loop has stopped every process.
const DRAIN_MARGIN: Duration = Duration::from_secs(3);

/// The launcher's parts as tasks, each with the name its failure is reported under.
#[derive(Default)]
struct Parts {
    tasks: JoinSet<(&'static str, Result<(), PartError>)>,
}

impl Parts {
    fn spawn<E>(
        &mut self,
        name: &'static str,
        part: impl Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.tasks.spawn(async move {
            let result = part.await.map_err(|error| Box::new(error) as PartError);
            (name, result)
        });
    }

    fn abort_all(&mut self) {
        self.tasks.abort_all();
    }

    async fn join_next(
        &mut self,
    ) -> Option<Result<(&'static str, Result<(), PartError>), tokio::task::JoinError>> {
        self.tasks.join_next().await
    }
}

/// The failure a part's end means: any error, or (before shutdown) ending at all.
fn part_failure(
    ended: Result<(&'static str, Result<(), PartError>), tokio::task::JoinError>,
    stopping: bool,
) -> Option<AppError> {
    match ended {
        Ok((_, Ok(()))) if stopping => None,
        Ok((part, Ok(()))) => Some(AppError::PartEnded { part }),
        Ok((part, Err(source))) => Some(AppError::PartFailed { part, source }),
        Err(error) => Some(AppError::PartPanicked(error.to_string())),
    }
}

/// Completes when the launcher stops.
fn stop_signal(stopped: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut stopped = stopped.clone();
    async move {
        // An error means the sender is gone, which also means stop.
        let _ = stopped.wait_for(|stop| *stop).await;
    }
}

fn runtime_config(
    config: &Config,
    cgroup_tree: Option<CgroupTree>,
    launcher_id: &str,
    metrics: &Metrics,
    readiness: &Readiness,
    usage: &UsageBoard,
    notifier: Option<Arc<crate::systemd::Notifier>>,
) -> RuntimeConfig {
    RuntimeConfig {
        data_dir: config.data_dir.clone(),
        cgroup_tree,
        launcher_id: launcher_id.to_string(),
        port_range: config.port_range.clone(),
        resync_interval: config.resync_interval,
        backoff: config.backoff,
        max_processes: config.max_processes,
        max_restarts_per_second: config.max_restarts_per_second,
        usage: usage.clone(),
        orphan_scan_interval: config.orphan_scan_interval,
        keep_processes: config.keep_processes,
        log_max_bytes: config.log_max_bytes,
        log_max_files: config.log_max_files,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        clock: system_clock(),
        follow_up_delay: runtime::FOLLOW_UP_DELAY,
        watchdog: notifier.and_then(|notifier| {
            crate::systemd::watchdog_interval().map(|interval| Watchdog { notifier, interval })
        }),
        // `run` gives the admin client's watch when there is one.
        admin_suspended: None,
        // `run` gives what the store held when it was opened.
        files_declared_earlier: true,
    }
}

fn local_address(listener: &TcpListener, name: &'static str) -> Result<SocketAddr, AppError> {
    listener
        .local_addr()
        .map_err(|source| AppError::ListenerAddress {
            listener: name,
            source,
        })
}

fn write_address(path: &Path, address: SocketAddr) -> Result<(), AppError> {
    private_fs::write_private(path, address.to_string().as_bytes()).map_err(|source| {
        AppError::AddressFile {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Folders that executables pushed by prism-admin must be in: the configured ones, else the
/// patterns and spec directories; canonical, so that prefixes compare safely.
fn allowed_roots(config: &Config, specs_dir: &Path) -> Result<Vec<PathBuf>, AppError> {
    let configured = !config.allowed_executable_roots.is_empty();
    let roots = if configured {
        config.allowed_executable_roots.clone()
    } else {
        vec![config.patterns_dir.clone(), specs_dir.to_path_buf()]
    };
    roots
        .iter()
        .filter(|root| configured || root.exists())
        .map(|root| {
            root.canonicalize().map_err(|source| AppError::AllowedRoot {
                path: root.clone(),
                source,
            })
        })
        .collect()
}

/// What prism-admin should dial: the configured address, else the listen address, with this
/// host's name in place of an unspecified address (which admin could not dial).
fn advertise_address(configured: Option<&str>, listening: SocketAddr) -> String {
    if let Some(address) = configured {
        return address.to_string();
    }
    if listening.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        return format!("{host}:{}", listening.port());
    }
    listening.to_string()
}

/// A fresh launcher id: `launcher-` and 12 random hex digits.
fn new_launcher_id() -> String {
    let mut bytes = [0u8; 6];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: the pid and the time still make a collision on one host unlikely.
        let seed = now().0 ^ (u64::from(std::process::id()) << 20);
        bytes.copy_from_slice(&seed.to_be_bytes()[2..]);
    }
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("launcher-{hex}")
}

/// The API's view of children's logs, read with the runtime's log functions (the gRPC side and
/// the runtime never import each other; they meet here).
struct ChildLogs {
    dir: PathBuf,
}

impl LogSource for ChildLogs {
    fn select(
        &self,
        id: &ProcessId,
        lines: Option<usize>,
        previous: bool,
        since: Option<UnixMillis>,
    ) -> std::io::Result<Option<(Vec<u8>, u64)>> {
        let selection = runtime::logs::Selection {
            lines,
            previous,
            since,
        };
        runtime::logs::select(&self.dir, id, selection)
    }

    fn read_from(&self, id: &ProcessId, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
        runtime::logs::read_from(&self.dir, id, offset)
    }
}
