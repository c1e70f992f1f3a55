//! The `prism-launcher` binary: flags, wiring and shutdown.

mod cli;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tokio::task::JoinSet;

use prism_launcher::api::admin_client::{self, AdminSettings};
use prism_launcher::api::control_plane::{AssignmentPolicy, ControlPlaneService};
use prism_launcher::api::{self, catalog, catalog_watch, spec_watch, SourceProblems};
use prism_launcher::reconcile::{Backoff, Isolation, ProcessType, UsageBoard};
use prism_launcher::runtime::{self, RuntimeConfig};
use prism_launcher::store::Store;
use prism_launcher::telemetry::{Metrics, Readiness};

/// The address file a running launcher writes in its data directory, so that `status` (and
/// tests that bind port 0) can find it.
const ADDRESS_FILE: &str = "launcher.addr";

/// The address file of the HTTP endpoint, beside `launcher.addr`.
const METRICS_ADDRESS_FILE: &str = "metrics.addr";

#[derive(Debug, Parser)]
#[command(
    name = "prism-launcher",
    version,
    about = "A declarative reconciler for the processes of one host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the launcher: watch the spec directory, serve gRPC, reconcile processes.
    Serve(Box<ServeArgs>),
    /// Show desired vs actual for every process of a running launcher.
    Status(StatusArgs),
    /// Clear a process's failure streak: a terminal (circuit open) or backing-off process
    /// starts again at once.
    Reset(ResetArgs),
    /// Print a process's log (stdout and stderr), and with --follow what it writes next.
    Logs(LogsArgs),
    /// Check spec files offline and report every error.
    Validate(ValidateArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where the store and the children's logs live.
    #[arg(long, default_value = "data", env = "PRISM_LAUNCHER_DATA_DIR")]
    data_dir: PathBuf,
    /// The watched directory of desired-state spec files.
    #[arg(long, default_value = "examples/desired-state")]
    specs_dir: PathBuf,
    /// The pattern catalog: <dir>/<name>/manifest.yaml.
    #[arg(long, default_value = "manifests")]
    patterns_dir: PathBuf,
    /// The gRPC listen address. Port 0 picks a free port (see <data-dir>/launcher.addr).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Ports handed to children as GRPC_PORT and HEALTH_PORT come from this range.
    #[arg(long, default_value = "40000-44999", value_parser = parse_port_range)]
    port_range: (u16, u16),
    /// A full reconcile (and spec directory rescan) runs this often even without events.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration_flag)]
    resync_interval: Duration,
    /// This launcher's id, given to children as PRISM_LAUNCHER_ID. Default: the one recorded in
    /// the store, or a new random one.
    #[arg(long)]
    launcher_id: Option<String>,
    /// Delay before the second restart in a row (the first is immediate); doubles after that.
    #[arg(long, default_value = "1s", value_parser = parse_duration_flag)]
    backoff_initial: Duration,
    /// The longest delay between restarts.
    #[arg(long, default_value = "5m", value_parser = parse_duration_flag)]
    backoff_max: Duration,
    /// A process that ran this long before it exited starts its failure count afresh.
    #[arg(long, default_value = "10m", value_parser = parse_duration_flag)]
    backoff_reset_after: Duration,
    /// Consecutive failures after which a process is terminal (circuit open) until its spec
    /// changes or `prism-launcher reset` runs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    failure_threshold: u32,
    /// Processes beyond this many are left pending (not started) with a reason.
    #[arg(long)]
    max_processes: Option<u32>,
    /// Restarts allowed per second across the host, so that a host-wide failure does not become
    /// a restart storm; 0 is no limit.
    #[arg(long, default_value_t = 20)]
    max_restarts_per_second: u32,
    /// The isolation of a LaunchPattern that says UNSPECIFIED, for patterns whose manifest has
    /// no isolation_level.
    #[arg(long, default_value = "none", value_parser = parse_isolation)]
    default_isolation: Isolation,
    /// prism-admin's address (host:port); the launcher registers there and heartbeats. Without
    /// it the launcher runs standalone.
    #[arg(long)]
    admin_endpoint: Option<String>,
    /// The address prism-admin should dial to reach this launcher. Default: the listen address
    /// (with the host name in place of an unspecified address such as 0.0.0.0).
    #[arg(long)]
    advertise_address: Option<String>,
    /// The process types this launcher runs.
    #[arg(long, value_delimiter = ',', default_value = "pattern,proxy,backend,utility", value_parser = parse_process_type)]
    capabilities: Vec<ProcessType>,
    /// The region reported to prism-admin.
    #[arg(long, default_value = "")]
    region: String,
    /// How often the launcher heartbeats to prism-admin.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration_flag)]
    heartbeat_interval: Duration,
    /// Executables that prism-admin pushes must be under one of these folders. Default: the
    /// patterns and spec directories.
    #[arg(long = "allowed-executable-root")]
    allowed_executable_roots: Vec<PathBuf>,
    /// How long LaunchPattern waits for a healthy process (never less than its health check
    /// needs).
    #[arg(long, default_value = "30s", value_parser = parse_duration_flag)]
    launch_timeout: Duration,
    /// Where `/metrics`, `/metrics.json`, `/healthz` and `/readyz` are served over HTTP.
    #[arg(long, default_value = "127.0.0.1:9092")]
    metrics_listen: SocketAddr,
    /// How often /proc is scanned for orphans (processes carrying this launcher's id that it
    /// does not track), which are terminated; they are also looked for at start.
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration_flag)]
    orphan_scan_interval: Duration,
    /// At shutdown, leave the processes running for the next launcher to adopt (for upgrades)
    /// instead of stopping them.
    #[arg(long)]
    keep_processes: bool,
    /// A child's log file is rotated past this size (e.g. 10Mi)...
    #[arg(long, default_value = "10Mi", value_parser = parse_size_flag)]
    log_max_size: u64,
    /// ...keeping this many rotated files (`<id>.log.1` the newest).
    #[arg(long, default_value_t = 5)]
    log_max_files: u32,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How client commands find a running launcher.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The launcher's gRPC address. Default: the address in <data-dir>/launcher.addr, else
    /// 127.0.0.1:7070.
    #[arg(long, env = "PRISM_LAUNCHER_ADDR")]
    addr: Option<String>,
    /// The data directory of the launcher to ask, used to find its address.
    #[arg(long, default_value = "data", env = "PRISM_LAUNCHER_DATA_DIR")]
    data_dir: PathBuf,
    /// Give up on an unresponsive launcher after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag)]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = cli::OutputFormat::Table)]
    output: cli::OutputFormat,
    /// Only processes from this source: file, api or admin.
    #[arg(long)]
    source: Option<String>,
    /// Only processes in this state (pending, starting, running, stopping, backing-off, tripped,
    /// exited, stopped).
    #[arg(long)]
    state: Option<String>,
    /// Refresh every --interval until interrupted (in place on a terminal).
    #[arg(short, long)]
    watch: bool,
    /// How often --watch refreshes.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration_flag)]
    interval: Duration,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The process id.
    id: String,
    /// Keep printing what the process writes, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Lines from the end to start with; 0 prints the whole current file.
    #[arg(short = 'n', long, default_value_t = 100)]
    tail: u32,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The process id.
    id: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Spec files or directories of spec files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The pattern catalog that `pattern:` references resolve against.
    #[arg(long, default_value = "manifests")]
    patterns_dir: PathBuf,
}

/// The old `pattern-launcher` command line (ADR-057 compatibility): no subcommand, the old flags.
#[derive(Debug, Parser)]
#[command(
    name = "pattern-launcher",
    version,
    about = "prism-launcher under its old name, with the old flags"
)]
struct LegacyCli {
    /// The pattern catalog: <dir>/<name>/manifest.yaml.
    #[arg(long, default_value = "manifests")]
    patterns_dir: PathBuf,
    /// The gRPC port, on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    grpc_port: u16,
    /// The isolation of launches that do not say, for patterns whose manifest does not either.
    #[arg(long, default_value = "none", value_parser = parse_isolation)]
    isolation: Isolation,
    /// The metrics port (on 127.0.0.1): /metrics, /metrics.json, /healthz, /readyz.
    #[arg(long, default_value_t = 9092)]
    metrics_port: u16,
    /// The old health port; its /healthz is served on the metrics port.
    #[arg(long)]
    health_port: Option<u16>,
    /// Where the store and the children's logs live; spec files are watched in <data-dir>/specs.
    #[arg(long, default_value = "data", env = "PRISM_LAUNCHER_DATA_DIR")]
    data_dir: PathBuf,
}

/// Whether the binary was started as `pattern-launcher` (a symlink, or the compatibility binary).
fn invoked_as_pattern_launcher() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|path| path.file_name().map(|name| name == "pattern-launcher"))
        .unwrap_or(false)
}

/// Runs `serve` with the old flags mapped onto the new ones.
fn legacy_main() -> anyhow::Result<ExitCode> {
    let legacy = LegacyCli::parse();
    let specs_dir = legacy.data_dir.join("specs");
    std::fs::create_dir_all(&specs_dir)
        .with_context(|| format!("cannot create {}", specs_dir.display()))?;
    let isolation = match legacy.isolation {
        Isolation::None => "none",
        Isolation::Namespace => "namespace",
        Isolation::Session => "session",
    };
    let mapped = [
        "prism-launcher".to_string(),
        "serve".to_string(),
        "--patterns-dir".to_string(),
        legacy.patterns_dir.display().to_string(),
        "--listen".to_string(),
        format!("127.0.0.1:{}", legacy.grpc_port),
        "--default-isolation".to_string(),
        isolation.to_string(),
        "--data-dir".to_string(),
        legacy.data_dir.display().to_string(),
        "--specs-dir".to_string(),
        specs_dir.display().to_string(),
        "--metrics-listen".to_string(),
        format!("127.0.0.1:{}", legacy.metrics_port),
    ];
    let Command::Serve(args) = Cli::try_parse_from(mapped)?.command else {
        bail!("the old flags did not map onto `serve`");
    };
    if let Some(port) = legacy.health_port {
        eprintln!(
            "pattern-launcher: --health-port {port}: /healthz is served on the metrics port {}",
            legacy.metrics_port
        );
    }
    serve(*args)
}

fn main() -> ExitCode {
    if invoked_as_pattern_launcher() {
        return match legacy_main() {
            Ok(code) => code,
            Err(error) => {
                eprintln!("pattern-launcher: {error:#}");
                ExitCode::from(cli::EXIT_ERROR)
            }
        };
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Status(args) => cli::status(&args),
        Command::Reset(args) => cli::reset(&args),
        Command::Logs(args) => cli::logs(&args),
        Command::Validate(args) => validate(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("prism-launcher: {error:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}

fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (start, end) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a port range; write it like 40000-44999"))?;
    let start: u16 = start
        .trim()
        .parse()
        .map_err(|_| format!("bad start port in {text:?}"))?;
    let end: u16 = end
        .trim()
        .parse()
        .map_err(|_| format!("bad end port in {text:?}"))?;
    if start == 0 || end <= start {
        return Err(format!(
            "port range {text:?} must be START-END with 0 < START < END"
        ));
    }
    Ok((start, end))
}

fn parse_duration_flag(text: &str) -> Result<Duration, String> {
    api::parse_duration(text)
}

fn parse_isolation(text: &str) -> Result<Isolation, String> {
    match text.trim() {
        "none" => Ok(Isolation::None),
        "namespace" => Ok(Isolation::Namespace),
        "session" => Ok(Isolation::Session),
        other => Err(format!(
            "{other:?} is not an isolation level; use none, namespace or session"
        )),
    }
}

fn parse_process_type(text: &str) -> Result<ProcessType, String> {
    match text.trim() {
        "pattern" => Ok(ProcessType::Pattern),
        "proxy" => Ok(ProcessType::Proxy),
        "backend" => Ok(ProcessType::Backend),
        "utility" => Ok(ProcessType::Utility),
        other => Err(format!(
            "{other:?} is not a process type; use pattern, proxy, backend or utility"
        )),
    }
}

fn parse_size_flag(text: &str) -> Result<u64, String> {
    api::parse_memory(text)
}

/// The API's view of children's logs, read with the runtime's log functions.
struct ChildLogs {
    dir: PathBuf,
}

impl api::logs::LogSource for ChildLogs {
    fn tail(
        &self,
        id: &prism_launcher::reconcile::ProcessId,
        lines: Option<usize>,
    ) -> std::io::Result<(Vec<u8>, u64)> {
        runtime::logs::tail(&self.dir, id, lines)
    }

    fn read_from(
        &self,
        id: &prism_launcher::reconcile::ProcessId,
        offset: u64,
    ) -> std::io::Result<(Vec<u8>, u64)> {
        runtime::logs::read_from(&self.dir, id, offset)
    }
}

fn parse_positive_duration_flag(text: &str) -> Result<Duration, String> {
    match api::parse_duration(text)? {
        duration if duration.is_zero() => Err(format!("{text:?} must be longer than zero")),
        duration => Ok(duration),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_async(args: ServeArgs) -> anyhow::Result<()> {
    if !args.specs_dir.is_dir() {
        bail!(
            "the spec directory {} does not exist; create it or pass --specs-dir",
            args.specs_dir.display()
        );
    }
    let specs_dir = std::path::absolute(&args.specs_dir)
        .with_context(|| format!("cannot resolve {}", args.specs_dir.display()))?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let store = Arc::new(Store::open(&args.data_dir.join("store"))?);
    let launcher_id = match &args.launcher_id {
        Some(id) => id.clone(),
        None => store.launcher_id_or_insert(&new_launcher_id())?,
    };

    let problems = SourceProblems::default();
    let catalog: catalog::SharedCatalog = Arc::default();
    catalog_watch::reload_catalog(&args.patterns_dir, &catalog, &problems);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let address_file = args.data_dir.join(ADDRESS_FILE);
    std::fs::write(&address_file, address.to_string())
        .with_context(|| format!("cannot write {}", address_file.display()))?;
    tracing::info!(%address, %launcher_id, data_dir = %args.data_dir.display(), specs_dir = %specs_dir.display(), "prism-launcher serving");

    let (stop, stopped) = watch::channel(false);
    let started_at = runtime::now();
    let usage = UsageBoard::default();
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
    let metrics_address = metrics_listener
        .local_addr()
        .context("cannot read the metrics address")?;
    let metrics_address_file = args.data_dir.join(METRICS_ADDRESS_FILE);
    std::fs::write(&metrics_address_file, metrics_address.to_string())
        .with_context(|| format!("cannot write {}", metrics_address_file.display()))?;
    tracing::info!(%metrics_address, "metrics served at /metrics, /metrics.json, /healthz, /readyz");
    let store_for_loop = store.clone();
    let runtime_config = RuntimeConfig {
        data_dir: args.data_dir.clone(),
        launcher_id: launcher_id.clone(),
        port_range: args.port_range.0..=args.port_range.1,
        resync_interval: args.resync_interval,
        backoff: Backoff {
            initial: args.backoff_initial,
            max: args.backoff_max,
            stable_after: args.backoff_reset_after,
            failure_threshold: args.failure_threshold,
        },
        max_processes: args.max_processes,
        max_restarts_per_second: args.max_restarts_per_second,
        usage: usage.clone(),
        orphan_scan_interval: args.orphan_scan_interval,
        keep_processes: args.keep_processes,
        log_max_bytes: args.log_max_size,
        log_max_files: args.log_max_files,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    };
    // The launcher's parts run until a signal, or until one of them ends on its own, which is a
    // failure: then every part is stopped too and the failure is reported.
    let mut parts: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let stopping = wait_for_stop(stopped.clone());
    parts.spawn(async move {
        let result = runtime::run(store_for_loop, runtime_config, stopping).await;
        ("the reconcile loop", result.map_err(anyhow::Error::from))
    });
    let (catalog_changed, catalog_changes) = watch::channel(0u64);
    let catalog_stopping = wait_for_stop(stopped.clone());
    let patterns_dir = args.patterns_dir.clone();
    let watched_catalog = catalog.clone();
    let catalog_problems = problems.clone();
    parts.spawn(async move {
        catalog_watch::watch_catalog(
            patterns_dir,
            watched_catalog,
            catalog_changed,
            catalog_problems,
            catalog_stopping,
        )
        .await;
        ("the catalog watcher", Ok(()))
    });
    let spec_watch = spec_watch::watch_spec_dir(
        spec_watch::SpecWatch {
            dir: specs_dir.clone(),
            store: store.clone(),
            catalog: catalog.clone(),
            catalog_changes,
            problems: problems.clone(),
            resync_interval: args.resync_interval,
            readiness: readiness.clone(),
        },
        wait_for_stop(stopped.clone()),
    );
    parts.spawn(async move {
        (
            "the spec watcher",
            spec_watch.await.map_err(anyhow::Error::from),
        )
    });
    let clock: api::status::Clock = Arc::new(runtime::now);
    let policy = AssignmentPolicy {
        launcher_id: launcher_id.clone(),
        capabilities: args.capabilities.clone(),
        max_processes: args.max_processes,
        allowed_roots: allowed_roots(&args, &specs_dir)?,
    };
    if let Some(endpoint) = &args.admin_endpoint {
        let settings = AdminSettings {
            endpoint: endpoint.clone(),
            launcher_id: launcher_id.clone(),
            advertise_address: advertise_address(args.advertise_address.as_deref(), address),
            region: args.region.clone(),
            max_processes: args.max_processes,
            heartbeat_interval: args.heartbeat_interval,
            metadata: BTreeMap::from([("pid".to_string(), std::process::id().to_string())]),
            metrics: metrics.clone(),
        };
        tracing::info!(%endpoint, advertise = %settings.advertise_address, "prism-admin configured");
        let admin = admin_client::run_admin_client(
            settings,
            policy.clone(),
            store.clone(),
            catalog.clone(),
            usage.clone(),
            clock.clone(),
            wait_for_stop(stopped.clone()),
        );
        parts.spawn(async move {
            (
                "the prism-admin client",
                admin.await.map_err(anyhow::Error::from),
            )
        });
    }
    let services = api::server::Services {
        admin: api::status::LauncherAdminService {
            store: store.clone(),
            launcher_id,
            problems,
            clock: clock.clone(),
            logs: Arc::new(ChildLogs {
                dir: args.data_dir.join("logs"),
            }),
        },
        control_plane: ControlPlaneService {
            store: store.clone(),
            catalog: catalog.clone(),
            policy,
            clock: clock.clone(),
            stopping: stopped.clone(),
        },
        launcher: api::pattern_launcher::PatternLauncherService {
            store: store.clone(),
            catalog,
            clock,
            started_at,
            launch_wait: args.launch_timeout,
            default_isolation: args.default_isolation,
            stopping: stopped.clone(),
        },
    };
    let http = api::http::serve_http(
        metrics_listener,
        api::http::HttpState {
            store: store.clone(),
            metrics,
            readiness: readiness.clone(),
            clock: Arc::new(runtime::now),
            started_at,
        },
        wait_for_stop(stopped.clone()),
    );
    parts.spawn(async move { ("the HTTP endpoint", http.await.map_err(anyhow::Error::from)) });
    readiness.listening();
    let serving = api::server::serve(listener, services, wait_for_stop(stopped.clone()));
    parts.spawn(async move {
        (
            "the gRPC server",
            serving.await.map_err(anyhow::Error::from),
        )
    });

    let mut failures = Vec::new();
    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal = signal?, "shutting down"),
        Some(ended) = parts.join_next() => failures.extend(part_failure(ended, false)),
    }
    // Every part sees the stop; the loop stops every child with its grace period.
    let _ = stop.send(true);
    while let Some(ended) = parts.join_next().await {
        failures.extend(part_failure(ended, true));
    }
    let _ = std::fs::remove_file(&address_file);
    if let Some(first) = failures.into_iter().next() {
        return Err(first);
    }
    Ok(())
}

/// Folders that executables pushed by prism-admin must be in: the flags, else the patterns and
/// spec directories; canonical, so that prefixes compare safely.
fn allowed_roots(args: &ServeArgs, specs_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let roots = if args.allowed_executable_roots.is_empty() {
        vec![args.patterns_dir.clone(), specs_dir.to_path_buf()]
    } else {
        args.allowed_executable_roots.clone()
    };
    roots
        .iter()
        .filter(|root| root.exists() || !args.allowed_executable_roots.is_empty())
        .map(|root| {
            root.canonicalize()
                .with_context(|| format!("allowed executable root {}", root.display()))
        })
        .collect()
}

/// What prism-admin should dial: the flag, else the listen address, with this host's name in
/// place of an unspecified address (which admin could not dial).
fn advertise_address(flag: Option<&str>, listening: SocketAddr) -> String {
    if let Some(address) = flag {
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

/// The failure a part's end means: any error, or (before shutdown) ending at all.
fn part_failure(
    ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
    stopping: bool,
) -> Option<anyhow::Error> {
    match ended {
        Ok((_, Ok(()))) if stopping => None,
        Ok((name, Ok(()))) => Some(anyhow::anyhow!("{name} stopped unexpectedly")),
        Ok((name, Err(error))) => Some(error.context(format!("{name} failed"))),
        Err(error) => Some(anyhow::anyhow!("a part of the launcher panicked: {error}")),
    }
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// A fresh launcher id: `launcher-` and 12 random hex digits.
fn new_launcher_id() -> String {
    let mut bytes = [0u8; 6];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes));
    if random.is_err() {
        // No /dev/urandom: the pid and the time still make a collision on one host unlikely.
        let seed = runtime::now().0 ^ (u64::from(std::process::id()) << 20);
        bytes.copy_from_slice(&seed.to_be_bytes()[2..]);
    }
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("launcher-{hex}")
}

fn validate(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let (catalog, catalog_errors) = catalog::load_catalog(&args.patterns_dir);
    let mut failed = false;
    for error in &catalog_errors {
        eprintln!("warning: {error}");
    }
    let mut files = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| spec_watch::is_spec_file_name(path))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut processes = 0;
    for file in &files {
        match api::spec_file::load_spec_file(Path::new(file), &catalog) {
            Ok(specs) => {
                processes += specs.len();
                println!(
                    "ok: {} ({} process{})",
                    file.display(),
                    specs.len(),
                    if specs.len() == 1 { "" } else { "es" }
                );
            }
            Err(errors) => {
                failed = true;
                for error in errors {
                    println!("error: {error}");
                }
            }
        }
    }
    if failed {
        Ok(ExitCode::from(cli::EXIT_INVALID))
    } else {
        println!(
            "{} file(s), {processes} process(es), no errors",
            files.len()
        );
        Ok(ExitCode::SUCCESS)
    }
}
