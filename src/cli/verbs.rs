//! The operator's verbs: `stop` and `start` (a hold that keeps the definition, kept across
//! launcher restarts) and `restart` (a new process without a spec change; with `--all` or a
//! label selector, a rolling restart, one process at a time). Each asks the launcher, which
//! only records the wish; then, unless `--no-wait`, the command follows the process (through
//! `describe`) until the loop has done it, so that its exit status says whether it happened:
//! a started or restarted process counts as up only once its new process has run, ready and
//! without a failure, for `--min-ready` (`StaysUp`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;

use prism_launcher::api::client::{
    describe_process, fetch_status, restart_process, start_process, stop_process, DescriptionView,
    Target,
};
use prism_launcher::reconcile::{DiffKind, Health, LabelSelector, Phase};
use prism_launcher::sources::values::{parse_duration, parse_positive_duration};

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

/// How long a started or restarted process must stay up before it counts as up.
#[derive(Debug, clap::Args)]
pub struct ReadyArgs {
    /// The new process must run, ready (healthy, when it has a health check) and without a
    /// failure, this long before the command reports it up (and a rolling restart asks for the
    /// next one); 0s takes the first sight of it ready.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    min_ready: Duration,
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
    ready: ReadyArgs,
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
    ready: ReadyArgs,
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
    // The failure streak it is released with (a held process's does not change while it is
    // down): its new process must add none.
    let failures_before = block_on(describe_process(&target, &args.id, 0, args.connect.timeout))
        .map_or(0, |description| description.status.consecutive_failures);
    let released = block_on(start_process(&target, &args.id, args.connect.timeout))?;
    let id = &released.process_id;
    if released.previous_state == Phase::Tripped.as_str() {
        // A release does not close a circuit: it would wait for a start that never comes.
        let what = if released.changed {
            "hold released, but it is tripped"
        } else {
            "it is not held but tripped"
        };
        eprintln!(
            "prism-launcher: {id}: {what} (circuit open after repeated failures), so it does not \
             start; `prism-launcher reset {id}` starts it"
        );
        return Ok(ExitCode::FAILURE);
    }
    if !released.changed {
        println!(
            "{id} was not held ({}); nothing changed",
            released.previous_state
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.wait.no_wait {
        println!("{id}: hold released; the launcher starts it");
        return Ok(ExitCode::SUCCESS);
    }
    let mut stays_up = StaysUp::new(None, failures_before, args.ready.min_ready);
    let running = follow(
        &target,
        &args.wait,
        args.connect.timeout,
        id,
        "up",
        |description| stays_up.check(description, "started"),
    )?;
    println!("started {id}: {}", pid_words(&running));
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
        // A restart starts the failure streak afresh: its new process must add none.
        let mut stays_up = StaysUp::new(asked.previous_pid, 0, args.ready.min_ready);
        let replaced = follow(
            &target,
            &args.wait,
            args.connect.timeout,
            id,
            "replaced and up",
            |description| {
                // Until the loop acted on the request, what runs is the old process.
                if description.restart_requests_done < request {
                    return Ok(false);
                }
                stays_up.check(description, "restarted")
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
    mut done: impl FnMut(&DescriptionView) -> anyhow::Result<bool>,
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

/// What a started or restarted process must do before the command calls it up: its new
/// process (not `previous_pid`, the one a restart replaces) runs, ready, for `min_ready`
/// (this command's clock, from the first look that saw it so), the same instance throughout,
/// and nothing of it fails meanwhile: its failure streak stays at `failures_before` (a failed
/// spawn, an exit that is restarted, a missed ready deadline or a failed liveness probe all
/// count in it), and no exit is recorded after it started. One look that sees it running is not
/// enough: a process that exits at once is running at some look, then crashes, and under
/// `Always` it is running again at the next.
struct StaysUp {
    previous_pid: Option<i32>,
    failures_before: u32,
    min_ready: Duration,
    /// The new process once seen running and ready: instance, pid, its start (the launcher's
    /// clock) and when this command first saw it so.
    seen: Option<SeenUp>,
}

struct SeenUp {
    instance: String,
    pid: i32,
    started_at_unix_ms: i64,
    since: Instant,
}

impl StaysUp {
    fn new(previous_pid: Option<i32>, failures_before: u32, min_ready: Duration) -> StaysUp {
        StaysUp {
            previous_pid,
            failures_before,
            min_ready,
            seen: None,
        }
    }

    /// Whether the process has stayed up long enough; an error when it failed, or when its
    /// state says it will not come up without someone's help. `verb` is what was done to it
    /// ("started", "restarted"), for messages.
    fn check(&mut self, description: &DescriptionView, verb: &str) -> anyhow::Result<bool> {
        let status = &description.status;
        let id = &status.id;
        if status.held {
            bail!("{id} is held by the operator again (`prism-launcher start {id}`)");
        }
        let phase = status.actual.parse::<Phase>().ok();
        let failed = status.consecutive_failures > self.failures_before
            || matches!(phase, Some(Phase::BackingOff | Phase::Tripped))
            || self.seen.as_ref().is_some_and(|seen| {
                status
                    .exited_at_unix_ms
                    .is_some_and(|exited| exited > seen.started_at_unix_ms)
            });
        if failed {
            bail!(
                "{id} failed after it was {verb}: it is {}{}{}",
                status.actual,
                reason(description),
                last_exit(description)
            );
        }
        let healthy = matches!(
            status.health.parse::<Health>(),
            Ok(Health::Healthy | Health::NotChecked)
        );
        match (phase, status.pid) {
            // It ran and completed, as its restart policy allows.
            (Some(Phase::Exited), _) if status.diff == DiffKind::InSync.as_str() => Ok(true),
            (Some(Phase::Exited), _) => bail!(
                "{id} is not up after it was {verb}: it is {}{}{}",
                status.actual,
                reason(description),
                last_exit(description)
            ),
            (Some(Phase::Running), Some(pid)) if healthy && Some(pid) != self.previous_pid => {
                let instance = description.instance.clone().unwrap_or_default();
                match &self.seen {
                    Some(seen) if seen.instance == instance && seen.pid == pid => {
                        Ok(seen.since.elapsed() >= self.min_ready)
                    }
                    Some(seen) => bail!(
                        "{id} did not stay up after it was {verb}: pid {} was replaced by pid \
                         {pid}{}",
                        seen.pid,
                        last_exit(description)
                    ),
                    None => {
                        self.seen = Some(SeenUp {
                            instance,
                            pid,
                            started_at_unix_ms: status.started_at_unix_ms.unwrap_or_default(),
                            since: Instant::now(),
                        });
                        Ok(self.min_ready.is_zero())
                    }
                }
            }
            _ => {
                if let Some(seen) = &self.seen {
                    if status.pid != Some(seen.pid) {
                        bail!(
                            "{id} did not stay up after it was {verb}: pid {} is gone and it \
                             is {}{}{}",
                            seen.pid,
                            status.actual,
                            reason(description),
                            last_exit(description)
                        );
                    }
                    // The same process, not ready any more (unhealthy): its time starts over;
                    // a liveness restart would count as a failure.
                    self.seen = None;
                }
                Ok(false)
            }
        }
    }
}

/// " (last exit: STATUS)" when one is recorded, or nothing.
fn last_exit(description: &DescriptionView) -> String {
    let exit = &description.status.last_exit;
    if exit.is_empty() {
        String::new()
    } else {
        format!(" (last exit: {exit})")
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
