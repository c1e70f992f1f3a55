//! The operator's verbs: `stop` and `start` (a hold that keeps the definition, kept across
//! launcher restarts) and `restart` (a new process without a spec change; with `--all` or a
//! label selector, a rolling restart, one process at a time). Each asks the launcher, which
//! only records the wish; then, unless `--no-wait`, the command follows the process (through
//! `describe`) until the loop has done it, so that its exit status says whether it happened.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;

use prism_launcher::api::client::{
    describe_process, fetch_status, restart_process, start_process, stop_process, DescriptionView,
    Target,
};
use prism_launcher::reconcile::{DiffKind, Health, LabelSelector, Phase};
use prism_launcher::sources::values::parse_positive_duration;

use super::client::{block_on, launcher_target, ConnectArgs};

/// How often a waiting verb looks at the process again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How a verb waits for the loop to have done what it asked.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Return once the launcher has recorded the request, without waiting for the process.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting for a process after this long (for each process of a rolling restart).
    #[arg(long, default_value = "2m", value_parser = parse_positive_duration)]
    wait_timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The process id.
    id: String,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The process id.
    id: String,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all", "selector"])))]
pub struct RestartArgs {
    /// The process id.
    id: Option<String>,
    /// Every desired process, one after the other (held ones are skipped).
    #[arg(long)]
    all: bool,
    /// The processes whose labels match, one after the other: key=value, key!=value, key,
    /// !key, joined by commas (all must hold), as kubectl's -l.
    #[arg(short = 'l', long = "selector", value_parser = parse_selector)]
    selector: Option<LabelSelector>,
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    text.parse()
        .map_err(|error: prism_launcher::reconcile::SelectorError| error.to_string())
}

pub fn stop(args: &StopArgs) -> anyhow::Result<ExitCode> {
    let target = launcher_target(&args.connect)?;
    let held = block_on(stop_process(&target, &args.id, args.connect.timeout))?;
    let id = &held.process_id;
    if !held.changed {
        println!("{id} was held already ({})", held.previous_state);
    }
    if args.wait.no_wait {
        if held.changed {
            println!(
                "{id}: hold recorded; the launcher stops it (was {})",
                held.previous_state
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(
        &target,
        &args.wait,
        args.connect.timeout,
        id,
        "to stop",
        |description| {
            let phase = description.status.actual.parse::<Phase>().ok();
            Ok(phase.is_some_and(|phase| !phase.has_live_process()))
        },
    )?;
    if held.changed {
        println!(
            "stopped {id}: held until `prism-launcher start {id}` (was {})",
            held.previous_state
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn start(args: &StartArgs) -> anyhow::Result<ExitCode> {
    let target = launcher_target(&args.connect)?;
    let released = block_on(start_process(&target, &args.id, args.connect.timeout))?;
    if !released.changed {
        println!(
            "{} was not held ({}); nothing changed",
            released.process_id, released.previous_state
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.wait.no_wait {
        println!(
            "{}: hold released; the launcher starts it",
            released.process_id
        );
        return Ok(ExitCode::SUCCESS);
    }
    let running = follow(
        &target,
        &args.wait,
        args.connect.timeout,
        &args.id,
        "to be ready",
        ready,
    )?;
    println!("started {}: {}", released.process_id, pid_words(&running));
    Ok(ExitCode::SUCCESS)
}

pub fn restart(args: &RestartArgs) -> anyhow::Result<ExitCode> {
    let target = launcher_target(&args.connect)?;
    let ids = match &args.id {
        Some(id) => vec![id.clone()],
        None => chosen_ids(&target, args)?,
    };
    for (done, id) in ids.iter().enumerate() {
        let rest = &ids[done + 1..];
        let asked = block_on(restart_process(&target, id, args.connect.timeout))
            .map_err(|error| not_restarted(error, rest))?;
        if args.wait.no_wait {
            println!("{id}: restart requested");
            continue;
        }
        let request = asked.restart_request;
        let replaced = follow(
            &target,
            &args.wait,
            args.connect.timeout,
            id,
            "to be replaced and ready",
            |description| {
                if description.restart_requests_done < request {
                    return Ok(false);
                }
                ready(description)
            },
        )
        .map_err(|error| not_restarted(error, rest))?;
        let before = asked
            .previous_pid
            .map_or_else(|| "not running".to_string(), |pid| format!("pid {pid}"));
        println!("restarted {id}: {before} → {}", pid_words(&replaced));
    }
    Ok(ExitCode::SUCCESS)
}

/// The ids `--all` or `--selector` pick among the desired processes, in id order: the held
/// ones are left out (said on stderr), since they are stopped on purpose.
fn chosen_ids(target: &Target, args: &RestartArgs) -> anyhow::Result<Vec<String>> {
    let status = block_on(fetch_status(target, args.connect.timeout))?;
    let mut ids = Vec::new();
    for process in status.processes {
        let desired = process.desired_generation > 0;
        let selected = args
            .selector
            .as_ref()
            .is_none_or(|selector| selector.matches(&process.labels));
        if !desired || !selected {
            continue;
        }
        if process.held {
            eprintln!(
                "prism-launcher: skipping {}: held by the operator (`prism-launcher start {}` first)",
                process.id, process.id
            );
            continue;
        }
        ids.push(process.id);
    }
    if ids.is_empty() {
        match &args.selector {
            Some(selector) => {
                bail!("no desired process that is not held matches the selector {selector}")
            }
            None => {
                eprintln!("prism-launcher: no desired process that is not held; nothing to restart")
            }
        }
    }
    Ok(ids)
}

/// The failure of a restart, with what a rolling restart left undone because of it.
fn not_restarted(error: anyhow::Error, rest: &[String]) -> anyhow::Error {
    if rest.is_empty() {
        error
    } else {
        error.context(format!(
            "the rolling restart stopped; not restarted: {}",
            rest.join(", ")
        ))
    }
}

/// Follows `id` (each look within `call_timeout`) until `done` says so, a state shows it never
/// will (`done` fails), or `wait.wait_timeout` passes.
fn follow(
    target: &Target,
    wait: &WaitArgs,
    call_timeout: Duration,
    id: &str,
    what: &str,
    done: impl Fn(&DescriptionView) -> anyhow::Result<bool>,
) -> anyhow::Result<DescriptionView> {
    let deadline = Instant::now() + wait.wait_timeout;
    loop {
        let description = block_on(describe_process(target, id, 0, call_timeout))?;
        if done(&description)? {
            return Ok(description);
        }
        if Instant::now() >= deadline {
            bail!(
                "{id} did not come {what} within {:?}: it is {}{}",
                wait.wait_timeout,
                description.status.actual,
                reason(&description)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Whether the process is ready (running, and healthy when it has a health check); an error
/// when its state says it will not become so without someone's help.
fn ready(description: &DescriptionView) -> anyhow::Result<bool> {
    let status = &description.status;
    let healthy = matches!(
        status.health.parse::<Health>(),
        Ok(Health::Healthy | Health::NotChecked)
    );
    match status.actual.parse::<Phase>() {
        Ok(Phase::Running) if healthy => Ok(true),
        // It ran and completed, as its restart policy allows.
        Ok(Phase::Exited) if status.diff == DiffKind::InSync.as_str() => Ok(true),
        Ok(Phase::Tripped | Phase::Exited) => bail!(
            "{} did not start: {}{}",
            status.id,
            status.actual,
            reason(description)
        ),
        _ if status.held => bail!(
            "{} is held by the operator again (`prism-launcher start {}`)",
            status.id,
            status.id
        ),
        _ => Ok(false),
    }
}

/// ": <why>" from the diff's detail or the last error, or nothing.
fn reason(description: &DescriptionView) -> String {
    let status = &description.status;
    let why = if status.diff_detail.is_empty() {
        &status.last_error
    } else {
        &status.diff_detail
    };
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}

/// "pid 1234" (", healthy" when a health check says so), or its state when nothing runs (a
/// process that completed under its restart policy).
fn pid_words(description: &DescriptionView) -> String {
    let status = &description.status;
    match status.pid {
        Some(pid) if status.health == Health::Healthy.as_str() => format!("pid {pid}, healthy"),
        Some(pid) => format!("pid {pid}"),
        None => status.actual.clone(),
    }
}
