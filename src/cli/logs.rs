//! `prism-launcher logs`: a process's output through the running launcher, or, when no launcher
//! answers (post-mortem, exactly when it matters), from the log files in the data directory. Both
//! ways give the same selection (`--previous`, `--since`, `-n`) and the same `--timestamps`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use prism_launcher::api::client::{stream_logs, ClientError, LogOptions};
use prism_launcher::api::logs::{LineStamps, FOLLOW_INTERVAL};
use prism_launcher::clock::now;
use prism_launcher::reconcile::{ProcessId, UnixMillis};
use prism_launcher::runtime::logs::{log_path, read_from, select, Selection};
use prism_launcher::sources::values::parse_positive_duration;

use super::client::{launcher_target, run_call, with_hint, ConnectArgs};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The process id.
    id: String,
    /// Keep printing what the process writes, until interrupted.
    #[arg(short, long, conflicts_with = "previous")]
    follow: bool,
    /// Lines from the end to start with (100 when not given; with --since, all of the
    /// window's); 0 prints the whole current file (or instance).
    #[arg(short = 'n', long)]
    tail: Option<u32>,
    /// The previous instance's output (the one before the last start), from its marker line;
    /// read across the rotated files.
    #[arg(short, long)]
    previous: bool,
    /// Prefix each line with the time it was read (RFC 3339, UTC): children write their logs
    /// themselves, so no line records when it was written; following, the read is within
    /// 200 ms of the write. A line that was in the file already gets `<` and the time of the
    /// call (written before then). The marker line before each instance says when it started.
    #[arg(long)]
    timestamps: bool,
    /// Only the output of instances that ran within this long (e.g. 10m), across the rotated
    /// files: a line carries no time of its own, so an instance that ran into the window is
    /// shown whole.
    #[arg(long, value_parser = parse_positive_duration)]
    since: Option<Duration>,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// The lines `-n` asks for when it is not given.
const DEFAULT_TAIL: u32 = 100;

impl LogsArgs {
    /// The lines to start with: `-n`, else all of a `--since` window (it is the window that
    /// bounds what is shown, not a count nobody asked for), else `DEFAULT_TAIL`.
    fn tail(&self) -> u32 {
        match (self.tail, self.since) {
            (Some(tail), _) => tail,
            (None, Some(_)) => 0,
            (None, None) => DEFAULT_TAIL,
        }
    }
}

pub fn logs(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let target = launcher_target(&args.connect)?;
    let stdout = std::io::stdout();
    let options = LogOptions {
        tail: args.tail(),
        follow: args.follow,
        previous: args.previous,
        timestamps: args.timestamps,
        since: args.since,
    };
    let streamed = run_call(stream_logs(
        &target,
        &args.id,
        options,
        args.connect.timeout,
        stdout.lock(),
    ))?;
    match streamed {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // Post-mortem, exactly when it matters: with no launcher to ask, the log file in the
        // data directory is read directly.
        Err(error @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. })) => {
            read_log_files(args, error)
        }
        Err(error) => Err(with_hint(error)),
    }
}

/// `logs` from the files in `<data-dir>/logs`, the way the launcher reads them, after `error`
/// (no launcher answered).
fn read_log_files(args: &LogsArgs, error: ClientError) -> anyhow::Result<ExitCode> {
    let logs = args.connect.data_dir.join("logs");
    let id = ProcessId::new(args.id.clone())
        .with_context(|| format!("{:?} is not a process id", args.id))?;
    let path = log_path(&logs, &id);
    let selection = Selection {
        lines: (args.tail() > 0).then_some(args.tail() as usize),
        previous: args.previous,
        since: args.since.map(|since| {
            let since = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
            UnixMillis(now().0.saturating_sub(since))
        }),
    };
    let (first, offset) = match select(&logs, &id, selection) {
        Ok(Some(read)) => read,
        Ok(None) => anyhow::bail!(
            "{error}; and {} with its rotated files holds no instance before the last one",
            path.display()
        ),
        Err(missing) if missing.kind() == std::io::ErrorKind::NotFound => {
            return Err(anyhow::Error::new(error).context(format!(
                "and there is no log file {} to read instead; is `prism-launcher serve` running? \
                 pass --addr or --data-dir to point at it",
                path.display()
            )));
        }
        Err(unreadable) => {
            return Err(
                anyhow::Error::new(unreadable).context(format!("cannot read {}", path.display()))
            )
        }
    };
    eprintln!(
        "prism-launcher: {error}; reading {} directly",
        path.display()
    );
    let stamps = args.timestamps.then(LineStamps::default);
    print_log_file(
        &logs,
        &id,
        (first, offset),
        args.follow,
        stamps,
        std::io::stdout().lock(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Prints `first` (what was selected of the log of `id` in `logs`, which ends at `offset` in
/// the current file), then, when `follow`, what is appended to it, read again as often as the
/// launcher's own follow does, until interrupted; each line after the time it was read when
/// `stamps`.
fn print_log_file(
    logs: &Path,
    id: &ProcessId,
    (first, mut offset): (Vec<u8>, u64),
    follow: bool,
    mut stamps: Option<LineStamps>,
    mut out: impl Write,
) -> anyhow::Result<()> {
    // What was in the files already was written at some time before now; what follows is
    // read within `FOLLOW_INTERVAL` of its write.
    let mut bytes = match &mut stamps {
        Some(stamps) => stamps.stamp_earlier(&first, now()),
        None => first,
    };
    loop {
        // A closed stdout (`logs ... | head`) ends the command quietly.
        if out.write_all(&bytes).and_then(|()| out.flush()).is_err() || !follow {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_INTERVAL);
        (bytes, offset) = read_from(logs, id, offset)
            .with_context(|| format!("cannot read the log of {id} in {}", logs.display()))?;
        if let Some(stamps) = &mut stamps {
            bytes = stamps.stamp(&bytes, now());
        }
    }
}
