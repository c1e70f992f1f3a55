//! The commands that talk to a running launcher (`status`, `reset`), their flags, and what they
//! print: the `status` table and its JSON and YAML forms; and how every client command finds the
//! launcher and makes its call. (The operator's verbs and `describe` are in `verbs.rs` and
//! `describe.rs`, `apply`, `delete` and `logs` in files of their own, on the helpers made
//! `pub(super)` here.)

use super::parse_word;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

use std::sync::Arc;

use prism_launcher::api::auth::BearerToken;
use prism_launcher::api::client::{
    fetch_status, reset_process, Address, ClientError, ProcessView, StatusView, SummaryView, Target,
};
use prism_launcher::api::tls::ClientTlsFiles;
use prism_launcher::app::{ADDRESS_FILE, SOCKET_FILE};
use prism_launcher::reconcile::{DiffKind, Phase, SourceKind};
use prism_launcher::sources::values::{parse_duration, parse_positive_duration};

/// How client commands find a running launcher.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The launcher's gRPC address: host:port, or unix:PATH for a Unix socket. Default: the
    /// socket <data-dir>/launcher.sock, else the address in <data-dir>/launcher.addr, else
    /// 127.0.0.1:7070.
    #[arg(long, env = "PRISM_LAUNCHER_ADDR", value_parser = parse_addr)]
    addr: Option<String>,
    /// A file holding the launcher's bearer token (its --auth-token-file), for privileged calls
    /// over TCP.
    #[arg(long, env = "PRISM_LAUNCHER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// TLS: the CA certificate (PEM) that signed the launcher's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Mutual TLS: this client's certificate (PEM), with --key.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The data directory of the launcher to ask, used to find its address.
    #[arg(long, default_value = "data", env = "PRISM_LAUNCHER_DATA_DIR")]
    pub(super) data_dir: PathBuf,
    /// Give up on an unresponsive launcher after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(super) timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only these processes (an id that is neither desired nor running is an error).
    ids: Vec<String>,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format; `wide` is the table with ports, failures, the last exit and the labels.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Exit with 1 when a process shown differs from what is desired (to start, replace, stop,
    /// or failing); 0 when all are in sync or held.
    #[arg(long)]
    exit_code: bool,
    /// Only processes from this source (file, api, admin).
    #[arg(long, value_parser = parse_word::<SourceKind>)]
    source: Option<SourceKind>,
    /// Only processes in this state (pending, starting, running, stopping, backing-off, tripped,
    /// exited, stopped).
    #[arg(long, value_parser = parse_word::<Phase>)]
    state: Option<Phase>,
    /// Refresh every --interval until interrupted (in place on a terminal).
    #[arg(short, long)]
    watch: bool,
    /// How often --watch refreshes.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    interval: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The process id.
    id: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// The address `status` uses when neither a flag nor an address file says otherwise.
const DEFAULT_ADDRESS: &str = "127.0.0.1:7070";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Wide,
    Json,
    Yaml,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let target = launcher_target(&args.connect)?;
    let terminal = std::io::stdout().is_terminal();
    let mut unreachable_since: Option<std::time::SystemTime> = None;
    loop {
        let fetched = run_call(fetch_status(&target, args.connect.timeout))?;
        let mut view = match fetched {
            Ok(view) => {
                unreachable_since = None;
                view
            }
            // Watching goes on through a launcher restart: it says so and asks again.
            Err(error @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. }))
                if args.watch =>
            {
                let since = *unreachable_since.get_or_insert_with(std::time::SystemTime::now);
                let waited = since.elapsed().unwrap_or_default().as_secs();
                let line = format!(
                    "{error} (for {waited}s; asking again every {:?})\n",
                    args.interval
                );
                if terminal {
                    print!("\x1b[2J\x1b[H{line}");
                } else {
                    print!("{line}");
                }
                std::io::stdout()
                    .flush()
                    .context("cannot write the status")?;
                std::thread::sleep(args.interval);
                continue;
            }
            Err(error) => return Err(with_hint(error)),
        };
        let missing = select(&mut view, args);
        let shown = match args.output {
            OutputFormat::Json => {
                serde_json::to_string_pretty(&view).context("cannot encode the status")? + "\n"
            }
            OutputFormat::Yaml => {
                serde_yaml::to_string(&view).context("cannot encode the status")?
            }
            OutputFormat::Table | OutputFormat::Wide => render_table(
                &view,
                &current_dir(),
                terminal,
                args.output == OutputFormat::Wide,
            ),
        };
        if !args.watch {
            print!("{shown}");
            if !missing.is_empty() {
                anyhow::bail!(
                    "no process {} is desired or running",
                    missing
                        .iter()
                        .map(|id| format!("{id:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let differs = view.summary.to_start
                + view.summary.to_replace
                + view.summary.to_stop
                + view.summary.failing
                > 0;
            return Ok(if args.exit_code && differs {
                ExitCode::from(super::EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            });
        }
        if terminal {
            // Clear the screen and go home, so the table refreshes in place.
            print!("\x1b[2J\x1b[H{shown}");
        } else {
            println!("{shown}");
        }
        std::io::stdout()
            .flush()
            .context("cannot write the status")?;
        std::thread::sleep(args.interval);
    }
}

/// Keeps the processes `args` asks for (ids, source, state) and makes the summary count only
/// them; returns the asked ids that are not there.
fn select(view: &mut StatusView, args: &StatusArgs) -> Vec<String> {
    view.processes.retain(|process| {
        (args.ids.is_empty() || args.ids.contains(&process.id))
            && args
                .source
                .is_none_or(|kind| SourceKind::of_label(&process.source) == Some(kind))
            && args
                .state
                .is_none_or(|state| process.actual == state.as_str())
    });
    view.summary = summarize(&view.processes);
    args.ids
        .iter()
        .filter(|id| !view.processes.iter().any(|process| process.id == **id))
        .cloned()
        .collect()
}

/// The summary of `processes`, from each one's diff (what the launcher's summary counts, for the
/// processes shown).
fn summarize(processes: &[ProcessView]) -> SummaryView {
    let mut summary = SummaryView::default();
    for process in processes {
        match process.diff.parse() {
            Ok(DiffKind::InSync) => summary.in_sync += 1,
            Ok(DiffKind::Start) => summary.to_start += 1,
            Ok(DiffKind::Replace) => summary.to_replace += 1,
            Ok(DiffKind::Stop) => summary.to_stop += 1,
            Ok(DiffKind::Held) => summary.held += 1,
            Ok(DiffKind::Failing) | Err(_) => summary.failing += 1,
        }
    }
    summary
}

/// `--addr`: `host:port` or `unix:PATH`.
fn parse_addr(text: &str) -> Result<String, String> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix("unix:") {
        return if path.is_empty() {
            Err("unix: needs the socket's path, as in unix:data/launcher.sock".to_string())
        } else {
            Ok(text.to_string())
        };
    }
    if text.contains("://") {
        return Err(format!(
            "{text:?} is a URL; --addr takes host:port (127.0.0.1:7070) or unix:PATH, and --ca for TLS"
        ));
    }
    match text.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0) =>
        {
            Ok(text.to_string())
        }
        _ => Err(format!(
            "{text:?} has no port; --addr takes host:port (127.0.0.1:7070) or unix:PATH"
        )),
    }
}

pub fn reset(args: &ResetArgs) -> anyhow::Result<ExitCode> {
    let target = launcher_target(&args.connect)?;
    let reset = block_on(reset_process(&target, &args.id, args.connect.timeout))?;
    println!(
        "reset {}: was {}, {} consecutive failure{} cleared",
        reset.process_id,
        reset.previous_state,
        reset.consecutive_failures,
        if reset.consecutive_failures == 1 {
            ""
        } else {
            "s"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs one client call to completion, with the hint every client command gives on failure.
pub(super) fn block_on<T>(
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> anyhow::Result<T> {
    run_call(call)?.map_err(with_hint)
}

/// Runs one client call to completion; the outer error is the runtime's own.
pub(super) fn run_call<T>(
    call: impl std::future::Future<Output = Result<T, ClientError>>,
) -> anyhow::Result<Result<T, ClientError>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(call))
}

/// A client call's failure as the command's error (`cli::main` prints it, with a hint when no
/// launcher answers, and chooses the exit code from it).
pub(super) fn with_hint(error: ClientError) -> anyhow::Error {
    anyhow::Error::new(error)
}

/// Where client commands find the launcher (`--addr`, else the data directory's socket, else
/// its address file, else the default) and the credentials they call it with.
pub(super) fn launcher_target(connect: &ConnectArgs) -> anyhow::Result<Target> {
    let address = match &connect.addr {
        Some(address) => match address.strip_prefix("unix:") {
            Some(path) => Address::Unix(PathBuf::from(path)),
            None => Address::Tcp(address.clone()),
        },
        None => {
            let socket = connect.data_dir.join(SOCKET_FILE);
            let tls_asked = connect.ca.is_some() || connect.cert.is_some();
            if !tls_asked && socket_exists(&socket) {
                Address::Unix(socket)
            } else {
                Address::Tcp(
                    address_from_data_dir(&connect.data_dir)
                        .unwrap_or_else(|| DEFAULT_ADDRESS.to_string()),
                )
            }
        }
    };
    let token = connect
        .token_file
        .as_deref()
        .map(BearerToken::from_file)
        .transpose()?
        .map(Arc::new);
    let tls_files = ClientTlsFiles {
        ca: connect.ca.clone(),
        cert: connect.cert.clone(),
        key: connect.key.clone(),
    };
    let tls = tls_files
        .is_set()
        .then(|| tls_files.load(["--ca", "--cert", "--key"]))
        .transpose()?;
    Ok(Target {
        address,
        token,
        tls,
    })
}

fn socket_exists(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.file_type().is_socket())
}

fn address_from_data_dir(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(ADDRESS_FILE)).ok()?;
    let address = text.trim();
    (!address.is_empty()).then(|| address.to_string())
}

/// The declared limits, what the process uses against them when it runs, and how each is
/// enforced: `mem 12.5Mi/64Mi rlimit, cpu 3%/500m none`, or `-`.
pub(super) fn limits_column(process: &ProcessView) -> String {
    let Some(resources) = &process.resources else {
        return "-".to_string();
    };
    let mut parts = Vec::new();
    if let Some(bytes) = resources.memory_limit_bytes {
        let used = resources
            .memory_bytes
            .map_or_else(String::new, |used| format!("{}/", approx_bytes(used)));
        parts.push(format!(
            "mem {used}{} {}",
            human_bytes(bytes),
            resources.memory_enforcement
        ));
    }
    if let Some(millis) = resources.cpu_limit_millis {
        let used = resources
            .cpu_percent
            .map_or_else(String::new, |percent| format!("{percent:.0}%/"));
        parts.push(format!("cpu {used}{millis}m {}", resources.cpu_enforcement));
    }
    parts.join(", ")
}

/// Bytes to one decimal in the largest binary unit they reach (`12.5Mi`).
fn approx_bytes(bytes: u64) -> String {
    for (shift, unit) in [(30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes >= 1 << shift {
            return format!("{:.1}{unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
}

/// Bytes in the largest binary unit that divides them (`64Mi`), else in bytes.
fn human_bytes(bytes: u64) -> String {
    for (shift, unit) in [(30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

pub(super) fn current_dir() -> String {
    std::env::current_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_default()
}

/// The status table, the diff lines, the one-line summary and the source problems; coloured
/// when `colour` (stdout is a terminal).
fn render_table(view: &StatusView, cwd: &str, colour: bool, wide: bool) -> String {
    let mut header = vec![
        "ID", "TYPE", "SOURCE", "DESIRED", "ACTUAL", "PID", "HEALTH", "RESTARTS", "AGE", "LIMITS",
    ];
    if wide {
        header.extend(["PORTS", "FAILURES", "LAST EXIT", "LABELS"]);
    }
    let rows: Vec<Vec<String>> = view
        .processes
        .iter()
        .map(|process| {
            let mut row = vec![
                process.id.clone(),
                dash_if_empty(&process.process_type),
                short_source(process, cwd),
                if process.desired_generation == 0 {
                    "-".to_string()
                } else {
                    format!("gen {}", process.desired_generation)
                },
                actual_column(process),
                process
                    .pid
                    .map_or_else(|| "-".to_string(), |pid| pid.to_string()),
                process.health.clone(),
                process.restart_count.to_string(),
                process.started_at_unix_ms.map_or_else(
                    || "-".to_string(),
                    |started| human_age(view.generated_at_unix_ms.saturating_sub(started)),
                ),
                limits_column(process),
            ];
            if wide {
                row.extend([
                    ports_column(process),
                    process.consecutive_failures.to_string(),
                    dash_if_empty(&process.last_exit),
                    labels_column(process),
                ]);
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths.iter().copied())
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push_row(
        &header
            .iter()
            .map(|title| title.to_string())
            .collect::<Vec<_>>(),
    );
    for row in &rows {
        push_row(row);
    }
    if view.processes.is_empty() {
        out.push_str("(no processes desired or running)\n");
    }
    let differing: Vec<&ProcessView> = view
        .processes
        .iter()
        .filter(|process| process.diff != DiffKind::InSync.as_str())
        .collect();
    if !differing.is_empty() {
        out.push('\n');
        for process in differing {
            let (marker, ansi) = match process.diff.parse() {
                Ok(DiffKind::Start) => ('+', "32"),
                Ok(DiffKind::Replace) => ('~', "33"),
                Ok(DiffKind::Stop) => ('-', "35"),
                // Held by the operator: as asked, so neither green nor red.
                Ok(DiffKind::Held) => ('=', "36"),
                _ => ('!', "31"),
            };
            let detail = humane_times(&process.diff_detail, view.generated_at_unix_ms);
            let line = format!("{marker} {}: {detail}", process.id);
            if colour {
                out.push_str(&format!("\x1b[{ansi}m{line}\x1b[0m\n"));
            } else {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    let summary = view.summary;
    let held = if summary.held > 0 {
        format!(", ={} held", summary.held)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "\n+{} to start, ~{} to replace, -{} to stop, !{} failing ({} in sync{held})\n",
        summary.to_start, summary.to_replace, summary.to_stop, summary.failing, summary.in_sync
    ));
    let admin = super::admin_link::admin_lines(&view.admin, view.generated_at_unix_ms);
    if !admin.is_empty() {
        out.push('\n');
        for line in admin {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !view.source_problems.is_empty() {
        out.push_str("\nproblems (what these sources declared before keeps running):\n");
        for (source, errors) in &view.source_problems {
            for error in errors {
                out.push_str(&format!("  {source}: {error}\n"));
            }
        }
    }
    out
}

/// The ports given to a process, as its environment names them.
fn ports_column(process: &ProcessView) -> String {
    let ports: Vec<String> = [("grpc", process.grpc_port), ("health", process.health_port)]
        .into_iter()
        .filter(|(_, port)| *port > 0)
        .map(|(name, port)| format!("{name}={port}"))
        .collect();
    if ports.is_empty() {
        "-".to_string()
    } else {
        ports.join(",")
    }
}

fn labels_column(process: &ProcessView) -> String {
    if process.labels.is_empty() {
        return "-".to_string();
    }
    process
        .labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Rewrites "unix ms N" in a diff detail as a time relative to `now_ms` ("in 4s", "2m ago").
fn humane_times(detail: &str, now_ms: i64) -> String {
    const MARK: &str = "unix ms ";
    let mut out = String::new();
    let mut rest = detail;
    while let Some(index) = rest.find(MARK) {
        out.push_str(&rest[..index]);
        let after = &rest[index + MARK.len()..];
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        match after[..digits].parse::<i64>() {
            Ok(at) if at >= now_ms => out.push_str(&format!("in {}", human_age(at - now_ms))),
            Ok(at) => out.push_str(&format!("{} ago", human_age(now_ms - at))),
            Err(_) => out.push_str(MARK),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

fn actual_column(process: &ProcessView) -> String {
    let behind = process.running_generation != 0
        && process.desired_generation != 0
        && process.running_generation != process.desired_generation;
    let actual = if process.held {
        format!("{} (held)", process.actual)
    } else {
        process.actual.clone()
    };
    if behind {
        format!("{actual} (gen {})", process.running_generation)
    } else {
        actual
    }
}

/// `file:<path>` shortened to a path relative to the current directory when it is inside it.
pub(super) fn short_source(process: &ProcessView, cwd: &str) -> String {
    match SourceKind::of_label(&process.source) {
        Some(SourceKind::File) => {
            let path = process.source.split_once(':').map_or("", |(_, path)| path);
            let relative = path
                .strip_prefix(cwd)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(path);
            format!("{}:{relative}", SourceKind::File)
        }
        Some(SourceKind::Admin) => format!(
            "{} v{}{}",
            SourceKind::Admin,
            process.admin_version,
            super::admin_link::unconfirmed_mark(process)
        ),
        Some(SourceKind::Api) | None => dash_if_empty(&process.source),
    }
}

pub(super) fn human_age(millis: i64) -> String {
    let seconds = millis.max(0) / 1000;
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m", seconds / 60),
        3600..=86_399 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_launcher::api::client::SummaryView;

    fn process(id: &str, diff: &str, detail: &str) -> ProcessView {
        ProcessView {
            id: id.to_string(),
            process_type: "pattern".to_string(),
            source: format!("file:/work/specs/{id}.yaml"),
            admin_version: 0,
            desired_generation: 2,
            running_generation: 1,
            actual: "running".to_string(),
            diff: diff.to_string(),
            diff_detail: detail.to_string(),
            pid: Some(4242),
            health: "healthy".to_string(),
            restart_count: 3,
            consecutive_failures: 0,
            last_error: String::new(),
            last_exit: String::new(),
            started_at_unix_ms: Some(1_000),
            next_restart_at_unix_ms: None,
            exited_at_unix_ms: None,
            tripped_at_unix_ms: None,
            pattern: String::new(),
            labels: Default::default(),
            grpc_port: 40000,
            health_port: 40001,
            resources: None,
            held: false,
            unconfirmed: false,
        }
    }

    #[test]
    fn the_limits_column_shows_use_against_each_limit_and_its_enforcement() {
        let mut limited = process("hog", "in-sync", "");
        assert_eq!(limits_column(&limited), "-");
        limited.resources = Some(prism_launcher::api::client::ResourcesView {
            cpu_limit_millis: Some(500),
            memory_limit_bytes: Some(64 << 20),
            memory_enforcement: "rlimit".to_string(),
            cpu_enforcement: "none".to_string(),
            memory_bytes: Some(13 << 20 | 1 << 19),
            cpu_percent: Some(2.6),
        });
        assert_eq!(
            limits_column(&limited),
            "mem 13.5Mi/64Mi rlimit, cpu 3%/500m none"
        );
    }

    #[test]
    fn the_table_shows_every_column_the_diff_lines_and_the_summary() {
        let view = StatusView {
            launcher_id: "launcher-1".to_string(),
            generated_at_unix_ms: 126_000,
            summary: SummaryView {
                to_start: 0,
                to_replace: 1,
                to_stop: 0,
                failing: 0,
                in_sync: 0,
                held: 0,
            },
            processes: vec![process(
                "orders",
                "replace",
                "spec changed: generation 1 runs, 2 desired",
            )],
            source_problems: [(
                "file:/work/specs/bad.yaml".to_string(),
                vec!["bad.yaml:3: oops".to_string()],
            )]
            .into_iter()
            .collect(),
            admin: Default::default(),
        };
        let table = render_table(&view, "/work", false, false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID", "TYPE", "SOURCE", "DESIRED", "ACTUAL", "PID", "HEALTH", "RESTARTS", "AGE",
                "LIMITS"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "orders",
                "pattern",
                "file:specs/orders.yaml",
                "gen",
                "2",
                "running",
                "(gen",
                "1)",
                "4242",
                "healthy",
                "3",
                "2m",
                "-"
            ]
        );
        assert!(
            table.contains("~ orders: spec changed: generation 1 runs, 2 desired"),
            "{table}"
        );
        assert!(
            table.contains("+0 to start, ~1 to replace, -0 to stop, !0 failing"),
            "{table}"
        );
        assert!(
            table.contains("file:/work/specs/bad.yaml: bad.yaml:3: oops"),
            "{table}"
        );
        assert!(!table.contains('\u{1b}'), "no colour unless asked");
        assert!(render_table(&view, "/work", true, false).contains("\u{1b}[33m~ orders"));
    }

    #[test]
    fn times_in_diff_details_read_as_people_say_them() {
        let now = 1_000_000;
        assert_eq!(
            humane_times(
                "exited with exit code 1; restart 3 due unix ms 1004000",
                now
            ),
            "exited with exit code 1; restart 3 due in 4s"
        );
        assert_eq!(
            humane_times("circuit open (tripped unix ms 880000): boom", now),
            "circuit open (tripped 2m ago): boom"
        );
        assert_eq!(humane_times("no time here", now), "no time here");
    }
}
