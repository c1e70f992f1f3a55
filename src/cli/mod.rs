//! The command line: the subcommands and their flags, each beside what it runs, and the old
//! `pattern-launcher` command line.

mod apply;
mod client;
mod delete;
mod describe;
mod logs;
mod serve;
mod validate;
mod verbs;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use prism_launcher::reconcile::Vocabulary;

/// Exit code of a command that failed (no launcher answers, I/O error...).
pub const EXIT_ERROR: u8 = 1;
/// Exit code of `validate` when a spec file has errors. (2 is clap's, for bad usage.)
pub const EXIT_INVALID: u8 = 3;

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
    Serve(Box<serve::ServeArgs>),
    /// Show desired vs actual for every process of a running launcher.
    Status(client::StatusArgs),
    /// Clear a process's failure streak: a terminal (circuit open) or backing-off process
    /// starts again at once.
    Reset(client::ResetArgs),
    /// Declare the processes of spec files through the running launcher: it writes them into
    /// its spec directory. Validates first and reports every error; --dry-run prints the diff.
    Apply(apply::ApplyArgs),
    /// Undeclare processes: remove the spec file that declares one from the spec directory,
    /// terminate a pattern launched over the API. prism-admin's are refused.
    Delete(delete::DeleteArgs),
    /// Print a process's log (stdout and stderr), and with --follow what it writes next.
    Logs(logs::LogsArgs),
    /// Stop a process and hold it stopped, across launcher restarts, until `start`; its
    /// definition is kept.
    Stop(verbs::StopArgs),
    /// Release a process held by `stop`: it runs again.
    Start(verbs::StartArgs),
    /// Replace a process with a new one without a spec change (as a spec edit would); with
    /// --all or -l, a rolling restart, each replacement ready before the next.
    Restart(verbs::RestartArgs),
    /// Show everything about one process: spec and source, state and why, ports, limits,
    /// health, the last events of its life and the last lines of its log.
    Describe(describe::DescribeArgs),
    /// Check spec files offline and report every error.
    Validate(validate::ValidateArgs),
    /// Print a shell completion script (e.g. `prism-launcher completions bash >
    /// /etc/bash_completion.d/prism-launcher`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), for `man -l -` or to install as prism-launcher.1.
    Man,
}

/// A word of one of the domain's closed sets, as `reconcile`'s vocabulary reads it (a bad one
/// is a usage error that lists the words).
fn parse_word<T: Vocabulary>(text: &str) -> Result<T, String> {
    T::parse_word(text.trim()).map_err(|error| error.to_string())
}

/// Runs the command line the binary was started with.
pub fn main() -> ExitCode {
    let (name, result) = if invoked_as_pattern_launcher() {
        ("pattern-launcher", legacy_main())
    } else {
        ("prism-launcher", run(Cli::parse().command))
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::serve(args.into_serve()?),
        Command::Status(args) => client::status(&args),
        Command::Reset(args) => client::reset(&args),
        Command::Apply(args) => apply::apply(&args),
        Command::Delete(args) => delete::delete(&args),
        Command::Logs(args) => logs::logs(&args),
        Command::Stop(args) => verbs::stop(&args),
        Command::Start(args) => verbs::start(&args),
        Command::Restart(args) => verbs::restart(&args),
        Command::Describe(args) => describe::describe(&args),
        Command::Validate(args) => validate::validate(&args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(
                shell,
                &mut command,
                "prism-launcher",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            clap_mangen::Man::new(command.clone())
                .render(&mut page)
                .context("cannot render the manual page")?;
            // One page for the whole tool: each subcommand's section follows the main one.
            for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
                let name = format!("prism-launcher-{}", sub.get_name());
                clap_mangen::Man::new(sub.clone().display_name(name))
                    .render(&mut page)
                    .context("cannot render the manual page")?;
            }
            std::io::Write::write_all(&mut std::io::stdout(), &page)
                .context("cannot write the manual page")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether the binary was started as `pattern-launcher` (a symlink, or the compatibility binary).
fn invoked_as_pattern_launcher() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|path| path.file_name().map(|name| name == "pattern-launcher"))
        .unwrap_or(false)
}

/// Runs `serve` from the old flags.
fn legacy_main() -> anyhow::Result<ExitCode> {
    let legacy = serve::LegacyCli::parse();
    let health_port = legacy.health_port();
    let serve = legacy.into_serve();
    if let Some(port) = health_port {
        eprintln!(
            "pattern-launcher: --health-port {port}: /healthz is served on the metrics port {}",
            serve.metrics_listen.port()
        );
    }
    let specs_dir = &serve.config.specs_dir;
    std::fs::create_dir_all(specs_dir)
        .with_context(|| format!("cannot create {}", specs_dir.display()))?;
    serve::serve(serve)
}
