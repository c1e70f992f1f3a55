//! `prism-launcher serve` and the old `pattern-launcher` command line: flags into an
//! `app::Config` (the old flags map onto it directly), listeners bound here, the launcher run
//! until SIGTERM or SIGINT.

use super::parse_word;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use prism_launcher::api::tls::{ClientTlsFiles, ServerTlsFiles};
use prism_launcher::app::{self, Config, Listeners, Security};
use prism_launcher::reconcile::{Backoff, Isolation, ProcessType};
use prism_launcher::sources::values::{parse_duration, parse_memory, parse_positive_duration};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A YAML file of these flags by their long names (`listen: 0.0.0.0:7070`, `capabilities:
    /// [pattern, proxy]`); a flag given here, or its PRISM_LAUNCHER_* variable, overrides it.
    #[arg(long, env = super::config::CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (a --config file, each value with where it came
    /// from) and exit.
    #[arg(long)]
    print_config: bool,
    /// Where the store and the children's logs live.
    #[arg(long, default_value = "data", env = "PRISM_LAUNCHER_DATA_DIR")]
    data_dir: PathBuf,
    /// The watched directory of desired-state spec files.
    #[arg(
        long,
        env = "PRISM_LAUNCHER_SPECS_DIR",
        default_value = "examples/desired-state"
    )]
    specs_dir: PathBuf,
    /// The pattern catalog: <dir>/<name>/manifest.yaml.
    #[arg(long, env = "PRISM_LAUNCHER_PATTERNS_DIR", default_value = "manifests")]
    patterns_dir: PathBuf,
    /// The gRPC listen address. Port 0 picks a free port (see <data-dir>/launcher.addr).
    #[arg(long, env = "PRISM_LAUNCHER_LISTEN", default_value = "127.0.0.1:7070", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Ports handed to children as GRPC_PORT and HEALTH_PORT come from this range.
    #[arg(long, env = "PRISM_LAUNCHER_PORT_RANGE", default_value = "40000-44999", value_parser = parse_port_range)]
    port_range: (u16, u16),
    /// A full reconcile (and spec directory rescan) runs this often even without events.
    #[arg(long, env = "PRISM_LAUNCHER_RESYNC_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    resync_interval: Duration,
    /// This launcher's id, given to children as PRISM_LAUNCHER_ID. Default: the one recorded in
    /// the store, or a new random one.
    #[arg(long, env = "PRISM_LAUNCHER_LAUNCHER_ID")]
    launcher_id: Option<String>,
    /// Delay before the second restart in a row (the first is immediate); doubles after that.
    #[arg(long, env = "PRISM_LAUNCHER_BACKOFF_INITIAL", default_value = "1s", value_parser = parse_duration)]
    backoff_initial: Duration,
    /// The longest delay between restarts.
    #[arg(long, env = "PRISM_LAUNCHER_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    backoff_max: Duration,
    /// A process that ran this long before it exited starts its failure count afresh.
    #[arg(long, env = "PRISM_LAUNCHER_BACKOFF_RESET_AFTER", default_value = "10m", value_parser = parse_duration)]
    backoff_reset_after: Duration,
    /// Consecutive failures after which a process is terminal (circuit open) until its spec
    /// changes or `prism-launcher reset` runs.
    #[arg(long, env = "PRISM_LAUNCHER_FAILURE_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    failure_threshold: u32,
    /// Processes beyond this many are left pending (not started) with a reason.
    #[arg(long, env = "PRISM_LAUNCHER_MAX_PROCESSES")]
    max_processes: Option<u32>,
    /// Restarts allowed per second across the host, so that a host-wide failure does not become
    /// a restart storm; 0 is no limit.
    #[arg(
        long,
        env = "PRISM_LAUNCHER_MAX_RESTARTS_PER_SECOND",
        default_value_t = 20
    )]
    max_restarts_per_second: u32,
    /// The isolation of a LaunchPattern that says UNSPECIFIED, for patterns whose manifest has
    /// no isolation_level.
    #[arg(long, env = "PRISM_LAUNCHER_DEFAULT_ISOLATION", default_value = "none", value_parser = parse_word::<Isolation>)]
    default_isolation: Isolation,
    /// prism-admin's address (host:port); the launcher registers there and heartbeats. Without
    /// it the launcher runs standalone.
    #[arg(long, env = "PRISM_LAUNCHER_ADMIN_ENDPOINT")]
    admin_endpoint: Option<String>,
    /// The address prism-admin should dial to reach this launcher. Default: the listen address
    /// (with the host name in place of an unspecified address such as 0.0.0.0).
    #[arg(long, env = "PRISM_LAUNCHER_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// The process types this launcher runs.
    #[arg(long, env = "PRISM_LAUNCHER_CAPABILITIES", value_delimiter = ',', default_value = "pattern,proxy,backend,utility", value_parser = parse_word::<ProcessType>)]
    capabilities: Vec<ProcessType>,
    /// The region reported to prism-admin.
    #[arg(long, env = "PRISM_LAUNCHER_REGION", default_value = "")]
    region: String,
    /// How often the launcher heartbeats to prism-admin.
    #[arg(long, env = "PRISM_LAUNCHER_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_positive_duration)]
    heartbeat_interval: Duration,
    /// The deadline of every call to prism-admin (registration, heartbeat) and of connecting to
    /// it; a partition is noticed within it.
    #[arg(long, env = "PRISM_LAUNCHER_ADMIN_CALL_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    admin_call_timeout: Duration,
    /// Stop prism-admin's processes once it has been unreachable this long (they start again,
    /// as its set says, when it is back). Default: off; they keep running through a partition.
    #[arg(long, env = "PRISM_LAUNCHER_ADMIN_DISCONNECT_GRACE", value_name = "DURATION", value_parser = parse_positive_duration)]
    admin_disconnect_grace: Option<Duration>,
    /// Executables that prism-admin pushes must be under one of these folders. Default: the
    /// patterns and spec directories.
    #[arg(
        long = "allowed-executable-root",
        env = "PRISM_LAUNCHER_ALLOWED_EXECUTABLE_ROOT"
    )]
    allowed_executable_roots: Vec<PathBuf>,
    /// How long LaunchPattern waits for a healthy process (never less than its health check
    /// needs).
    #[arg(long, env = "PRISM_LAUNCHER_LAUNCH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    launch_timeout: Duration,
    /// Where `/metrics`, `/metrics.json`, `/healthz` and `/readyz` are served over HTTP.
    #[arg(long, env = "PRISM_LAUNCHER_METRICS_LISTEN", default_value = "127.0.0.1:9092", value_parser = parse_listen)]
    metrics_listen: SocketAddr,
    /// How often /proc is scanned for orphans (processes carrying this launcher's id that it
    /// does not track), which are terminated; they are also looked for at start.
    #[arg(long, env = "PRISM_LAUNCHER_ORPHAN_SCAN_INTERVAL", default_value = "60s", value_parser = parse_positive_duration)]
    orphan_scan_interval: Duration,
    /// At shutdown, leave the processes running for the next launcher to adopt (for upgrades)
    /// instead of stopping them.
    #[arg(long, env = "PRISM_LAUNCHER_KEEP_PROCESSES")]
    keep_processes: bool,
    /// A child's log file is rotated past this size (e.g. 10Mi)...
    #[arg(long, env = "PRISM_LAUNCHER_LOG_MAX_SIZE", default_value = "10Mi", value_parser = parse_memory)]
    log_max_size: u64,
    /// ...keeping this many rotated files (`<id>.log.1` the newest).
    #[arg(long, env = "PRISM_LAUNCHER_LOG_MAX_FILES", default_value_t = 5)]
    log_max_files: u32,
    /// Log format.
    #[arg(long, env = "PRISM_LAUNCHER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    security: SecurityArgs,
}

/// Who may call the launcher (README, "Security").
#[derive(Debug, clap::Args)]
pub struct SecurityArgs {
    /// A file (mode 0600) holding the bearer token that privileged calls over TCP must send as
    /// `authorization: Bearer <token>` (and every call, when not listening on loopback).
    #[arg(long, env = "PRISM_LAUNCHER_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// The gRPC listener's TLS certificate (PEM); with --tls-key.
    #[arg(long, env = "PRISM_LAUNCHER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PRISM_LAUNCHER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate this CA (PEM) signed.
    #[arg(long, env = "PRISM_LAUNCHER_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Members of this group (name or gid) may use the Unix socket <data-dir>/launcher.sock as
    /// well as root and the launcher's user.
    #[arg(long, env = "PRISM_LAUNCHER_SOCKET_GROUP", value_parser = parse_group)]
    socket_group: Option<u32>,
    /// Serve a non-loopback --listen address with no token and no mutual TLS: anyone who can
    /// reach it can launch processes.
    #[arg(long, env = "PRISM_LAUNCHER_INSECURE")]
    insecure: bool,
    /// TLS to prism-admin: the CA certificate (PEM) that signed admin's certificate.
    #[arg(long, env = "PRISM_LAUNCHER_ADMIN_CA")]
    admin_ca: Option<PathBuf>,
    /// Mutual TLS to prism-admin: this launcher's certificate (PEM), with --admin-key.
    #[arg(long, env = "PRISM_LAUNCHER_ADMIN_CERT")]
    admin_cert: Option<PathBuf>,
    /// The private key of --admin-cert (PEM).
    #[arg(long, env = "PRISM_LAUNCHER_ADMIN_KEY")]
    admin_key: Option<PathBuf>,
    /// A file (mode 0600) holding a bearer token sent to prism-admin on every call.
    #[arg(long, env = "PRISM_LAUNCHER_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
}

impl SecurityArgs {
    fn into_security(self) -> anyhow::Result<Security> {
        Ok(Security {
            auth_token_file: self.auth_token_file,
            tls: ServerTlsFiles::from_flags(self.tls_cert, self.tls_key, self.tls_client_ca)?,
            socket_group: self.socket_group,
            insecure: self.insecure,
            admin_tls: ClientTlsFiles {
                ca: self.admin_ca,
                cert: self.admin_cert,
                key: self.admin_key,
            },
            admin_token_file: self.admin_token_file,
        })
    }
}

/// A group by name or number.
fn parse_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group is named {text:?}")),
        Err(errno) => Err(format!("cannot look group {text:?} up: {errno}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `serve` runs: the launcher's configuration and what the binary itself binds and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Serve {
    pub config: Config,
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// Whether `--print-config` asks for the configuration instead of a run.
    pub fn print_config(&self) -> bool {
        self.print_config
    }

    pub fn into_serve(self) -> anyhow::Result<Serve> {
        Ok(Serve {
            config: Config {
                data_dir: self.data_dir,
                specs_dir: self.specs_dir,
                patterns_dir: self.patterns_dir,
                port_range: self.port_range.0..=self.port_range.1,
                resync_interval: self.resync_interval,
                launcher_id: self.launcher_id,
                backoff: Backoff {
                    initial: self.backoff_initial,
                    max: self.backoff_max,
                    stable_after: self.backoff_reset_after,
                    failure_threshold: self.failure_threshold,
                },
                max_processes: self.max_processes,
                max_restarts_per_second: self.max_restarts_per_second,
                default_isolation: self.default_isolation,
                admin_endpoint: self.admin_endpoint,
                advertise_address: self.advertise_address,
                capabilities: self.capabilities,
                region: self.region,
                heartbeat_interval: self.heartbeat_interval,
                admin_call_timeout: self.admin_call_timeout,
                admin_disconnect_grace: self.admin_disconnect_grace,
                allowed_executable_roots: self.allowed_executable_roots,
                launch_timeout: self.launch_timeout,
                orphan_scan_interval: self.orphan_scan_interval,
                keep_processes: self.keep_processes,
                log_max_bytes: self.log_max_size,
                log_max_files: self.log_max_files,
                security: self.security.into_security()?,
            },
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            log_format: self.log_format,
        })
    }
}

/// The old `pattern-launcher` command line (ADR-057 compatibility): no subcommand, the old flags.
#[derive(Debug, Parser)]
#[command(
    name = "pattern-launcher",
    version,
    about = "prism-launcher under its old name, with the old flags"
)]
pub struct LegacyCli {
    /// The pattern catalog: <dir>/<name>/manifest.yaml.
    #[arg(long, default_value = "manifests")]
    patterns_dir: PathBuf,
    /// The gRPC port, on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    grpc_port: u16,
    /// The isolation of launches that do not say, for patterns whose manifest does not either.
    #[arg(long, default_value = "none", value_parser = parse_word::<Isolation>)]
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
    /// ADR-057's flags, as `serve` has them: the gRPC listen address (`:7070` for every
    /// interface, which needs a token or mutual TLS), in place of --grpc-port.
    #[arg(long, value_parser = parse_listen, conflicts_with = "grpc_port")]
    listen: Option<SocketAddr>,
    /// prism-admin's address (host:port), as `serve --admin-endpoint`.
    #[arg(long)]
    admin_endpoint: Option<String>,
    /// This launcher's id, as `serve --launcher-id`.
    #[arg(long)]
    launcher_id: Option<String>,
    /// As `serve --max-processes`.
    #[arg(long)]
    max_processes: Option<u32>,
    /// As `serve --capabilities`.
    #[arg(long, value_delimiter = ',', value_parser = parse_word::<ProcessType>)]
    capabilities: Option<Vec<ProcessType>>,
    /// As `serve --region`.
    #[arg(long)]
    region: Option<String>,
}

impl LegacyCli {
    /// The old flags on the launcher's defaults. The spec directory is `<data-dir>/specs`.
    pub fn into_serve(self) -> Serve {
        let specs_dir = self.data_dir.join("specs");
        let defaults = Config::default();
        Serve {
            config: Config {
                specs_dir,
                patterns_dir: self.patterns_dir,
                default_isolation: self.isolation,
                data_dir: self.data_dir,
                admin_endpoint: self.admin_endpoint,
                launcher_id: self.launcher_id,
                max_processes: self.max_processes,
                capabilities: self.capabilities.unwrap_or(defaults.capabilities.clone()),
                region: self.region.unwrap_or(defaults.region.clone()),
                ..defaults
            },
            listen: self
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], self.grpc_port))),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], self.metrics_port)),
            log_format: LogFormat::Text,
        }
    }

    /// The old health port, which has no listener of its own any more.
    pub fn health_port(&self) -> Option<u16> {
        self.health_port
    }
}

/// Runs the launcher until SIGTERM or SIGINT.
pub fn serve(serve: Serve) -> anyhow::Result<ExitCode> {
    init_tracing(serve.log_format);
    start_again_without_thread_caches();
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(serve))?;
    Ok(ExitCode::SUCCESS)
}

/// The tunable the launcher runs with: glibc's per-thread caches of freed blocks off. Each thread
/// (the runtime's workers, the loop, sled's I/O threads) keeps up to seven freed blocks of every
/// size; after a burst those blocks, scattered over the heap, keep its pages resident and no call
/// returns them: 10 MiB of the 29 MiB a launcher holds after 10,000 processes came and went,
/// against 12 MiB idle (BENCHMARKS.md). The launcher allocates little on its hot paths (a restart
/// is a few hundred allocations), so the caches buy it nothing that matters.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THREAD_CACHES_OFF: &str = "glibc.malloc.tcache_count=0";

/// Starts the launcher again (same pid, same arguments) with `THREAD_CACHES_OFF` added to
/// `GLIBC_TUNABLES`, which glibc reads only when a program starts. An operator's own setting of
/// the tunable wins, and is how it is turned back on (`glibc.malloc.tcache_count=7`, glibc's
/// default). Children never see the variable: it is one the launcher refuses to pass on. Returns
/// only when the launcher runs with it already, or cannot start again (said in the log).
fn start_again_without_thread_caches() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let current = std::env::var_os("GLIBC_TUNABLES");
        if current.as_ref().is_some_and(|tunables| {
            tunables
                .to_string_lossy()
                .contains("glibc.malloc.tcache_count")
        }) {
            restore_program_name();
            return;
        }
        let tunables = match current {
            Some(mut tunables) if !tunables.is_empty() => {
                tunables.push(":");
                tunables.push(THREAD_CACHES_OFF);
                tunables
            }
            _ => THREAD_CACHES_OFF.into(),
        };
        let mut args = std::env::args_os();
        let Some(program) = args.next() else {
            return;
        };
        let error = std::process::Command::new("/proc/self/exe")
            .arg0(program)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        tracing::warn!(%error, "cannot start again with glibc's per-thread caches off; running with them (more memory kept after bursts)");
    }
}

/// Gives the launcher back the name it was started as, after `start_again_without_thread_caches`:
/// the kernel names a process after the last part of the path it was started from, "exe" for
/// /proc/self/exe, and `ps`, `top`, `pgrep -x prism-launcher` and `pidof` go by that name. The
/// name is the file name of argv[0] (what the first start was named after, unless a caller set
/// argv[0] apart from the path), cut to the kernel's 15 bytes. A launcher an operator started
/// with the tunable set was not started again, and keeps its name.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn restore_program_name() {
    use std::os::unix::ffi::OsStrExt;
    let started_again =
        std::fs::read("/proc/self/comm").is_ok_and(|comm| comm.trim_ascii_end() == b"exe");
    let Some(program) = std::env::args_os().next() else {
        return;
    };
    let Some(name) = std::path::Path::new(&program).file_name() else {
        return;
    };
    let name = &name.as_bytes()[..name.len().min(15)];
    if !started_again || name == b"exe" {
        return;
    }
    // An argument of the command line holds no NUL byte, so this cannot fail.
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from the pointer,
    // which `name` owns for the call. A refusal leaves the name "exe", which only costs the
    // operator's tools their match.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
    }
}

/// How many heaps glibc's allocator may keep. Its default is eight per core, one more for each
/// thread that allocates while the others are busy; the launcher's threads (async workers, the
/// loop, the blocking pool's short-lived ones) each left a heap of their own whose pages stay
/// resident, about 1.7 MiB of an idle launcher of 1000 processes (BENCHMARKS.md). Two heaps keep
/// allocation uncontended on the few threads that allocate at once.
const MALLOC_ARENAS: libc::c_int = 2;

/// Caps glibc's heaps at `MALLOC_ARENAS`, before any thread starts. An operator's own
/// `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator; called before the runtime's
        // threads exist, it races no allocation. A refusal (0) leaves glibc's default, which
        // only costs memory.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

async fn serve_async(serve: Serve) -> anyhow::Result<()> {
    // Signals are listened for before anything starts, so that an early SIGTERM is a shutdown.
    let shutdown = shutdown_signal()?;
    // Everything that can fail before the listeners are bound is checked first, so a launcher
    // that cannot start says why rather than that its port is taken.
    let config = serve.config;
    let prepared = tokio::task::spawn_blocking(move || app::prepare(config))
        .await
        .context("the launcher's preparation did not finish")??;
    prepared.listener_auth(serve.listen)?;
    let grpc = tokio::net::TcpListener::bind(serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    let metrics = tokio::net::TcpListener::bind(serve.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", serve.metrics_listen))?;
    let unix = Some(prepared.bind_socket()?);
    app::run(
        prepared,
        Listeners {
            grpc,
            metrics,
            unix,
        },
        shutdown,
    )
    .await?;
    Ok(())
}

/// Completes at the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "signal received");
    })
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

/// A listen address: `IP:PORT`, or `:PORT` for every interface (ADR-057's `--listen :7070`; a
/// listener on other than loopback needs a token or mutual TLS, see README "Security").
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let spelled = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    spelled.parse().map_err(|_| {
        format!("{text:?} is not a listen address; write IP:PORT (127.0.0.1:7070, [::1]:7070) or :PORT for every interface")
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct ServeOnly {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_flag_defaults_are_the_launchers_defaults() {
        let serve = ServeOnly::parse_from(["serve"]).serve.into_serve().unwrap();
        assert_eq!(serve.config, Config::default());
        assert_eq!(serve.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(serve.metrics_listen, "127.0.0.1:9092".parse().unwrap());
    }

    #[test]
    fn the_old_flags_map_onto_the_config_directly() {
        let legacy = LegacyCli::parse_from([
            "pattern-launcher",
            "--patterns-dir",
            "/opt/patterns",
            "--grpc-port",
            "8181",
            "--isolation",
            "namespace",
            "--metrics-port",
            "9191",
            "--data-dir",
            "/var/lib/launcher",
        ]);
        let serve = legacy.into_serve();
        assert_eq!(
            serve.config,
            Config {
                data_dir: PathBuf::from("/var/lib/launcher"),
                specs_dir: PathBuf::from("/var/lib/launcher/specs"),
                patterns_dir: PathBuf::from("/opt/patterns"),
                default_isolation: Isolation::Namespace,
                ..Config::default()
            }
        );
        assert_eq!(serve.listen, "127.0.0.1:8181".parse().unwrap());
        assert_eq!(serve.metrics_listen, "127.0.0.1:9191".parse().unwrap());
    }

    #[test]
    fn closed_sets_are_read_by_the_vocabulary() {
        let serve = ServeOnly::parse_from([
            "serve",
            "--default-isolation",
            "session",
            "--capabilities",
            "proxy,utility",
        ])
        .serve
        .into_serve()
        .unwrap();
        assert_eq!(serve.config.default_isolation, Isolation::Session);
        assert_eq!(
            serve.config.capabilities,
            vec![ProcessType::Proxy, ProcessType::Utility]
        );
        let error = ServeOnly::try_parse_from(["serve", "--default-isolation", "Tenant"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("isolation \"Tenant\" is not one of none, namespace, session"),
            "{error}"
        );
    }
}
