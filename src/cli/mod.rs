//! The command line: the subcommands and their flags, each beside what it runs, and the old
//! `pattern-launcher` command line.

mod admin_link;
mod apply;
mod client;
mod config;
mod delete;
mod describe;
mod logs;
mod serve;
mod validate;
mod verbs;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use prism_launcher::api::client::ClientError;
use prism_launcher::reconcile::Vocabulary;

/// Exit code of a command that failed (the launcher refused, an I/O error...), and of `status
/// --exit-code` when a process differs from what is desired.
pub const EXIT_ERROR: u8 = 1;
/// Exit code of a client command when no launcher answers (or not in time).
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code of a command line that is wrong (clap's own for a bad flag).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `validate` when a spec file has errors.
pub const EXIT_INVALID: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "prism-launcher",
    version,
    about = "A declarative reconciler for the processes of one host",
    long_about = "A declarative reconciler for the processes of one host. With no subcommand it \
                  runs the launcher, as `serve` does, with serve's flags (ADR-057's command line: \
                  `prism-launcher --admin-endpoint ... --listen :7070`).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: `serve`'s flags.
    #[command(flatten)]
    serve: serve::ServeArgs,
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
        (
            "prism-launcher",
            run_command_line(std::env::args_os().collect()),
        )
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{name}: {}", one_line(&error));
            let client = error
                .chain()
                .find_map(|cause| cause.downcast_ref::<ClientError>());
            match client {
                Some(ClientError::Unreachable { .. } | ClientError::Timeout { .. }) => {
                    eprintln!("{name}: is `prism-launcher serve` running? pass --addr or --data-dir to point at it");
                    ExitCode::from(EXIT_UNREACHABLE)
                }
                Some(ClientError::BadAddress { .. }) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::from(EXIT_ERROR),
            }
        }
    }
}

/// An error and its causes on one line, each said once: what failed, with what input, why
/// (transport errors repeat their cause in their own message, "tcp connect error: tcp connect
/// error").
fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || parts.iter().any(|part| part.contains(text)) {
            continue;
        }
        parts.push(text.to_string());
    }
    parts.join(": ")
}

/// The command line's definition.
fn cli_command() -> clap::Command {
    Cli::command()
}

/// Parses `args` (a config file's values as serve's defaults) and runs what they say.
fn run_command_line(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    let command = cli_command();
    let serve_command = command
        .find_subcommand("serve")
        .cloned()
        .context("the command line has no serve")?;
    let file = match config::ConfigFile::find(args.get(1..).unwrap_or_default(), &serve_command) {
        Ok(file) => file,
        Err(error) => {
            // A bad configuration is bad usage, as a bad flag is.
            eprintln!("prism-launcher: {error:#}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let command = file
        .as_defaults(command)
        .mut_subcommand("serve", |serve| file.as_defaults(serve));
    let matches = command.clone().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    match cli.command {
        Some(Command::Serve(args)) => {
            let serve_matches = matches
                .subcommand_matches("serve")
                .context("serve was parsed without its flags")?;
            serve_or_print(*args, &serve_command, serve_matches, &file)
        }
        None => serve_or_print(cli.serve, &serve_command, &matches, &file),
        Some(other) => run(other),
    }
}

/// `serve` with `args`, or with `--print-config` the configuration it would run with.
fn serve_or_print(
    args: serve::ServeArgs,
    command: &clap::Command,
    matches: &ArgMatches,
    file: &config::ConfigFile,
) -> anyhow::Result<ExitCode> {
    if args.print_config() {
        print!("{}", config::print(command, matches, file));
        return Ok(ExitCode::SUCCESS);
    }
    serve::serve(args.into_serve()?)
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
