//! `prism-launcher delete ID... | -f FILE`: undeclares processes through the running launcher:
//! one declared by a spec file by removing its file from the spec directory, a pattern launched
//! over the API as TerminatePattern does (`--grace`); prism-admin's are refused, naming the
//! owner. Answers once the processes have stopped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use prism_launcher::api::client::delete_processes;
use prism_launcher::sources::spec_dir::spec_files_in;
use prism_launcher::sources::spec_file::{declared_names, read_bounded_text, MAX_SPEC_FILE_BYTES};
use prism_launcher::sources::values::parse_duration;

use super::client::{block_on, launcher_target, ConnectArgs};
use super::{EXIT_ERROR, EXIT_INVALID};

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The process ids.
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    ids: Vec<String>,
    /// The processes a spec file (or a directory of them, or - for standard input) declares.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
    /// Time between SIGTERM and SIGKILL instead of each spec's grace period (0s kills at once).
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub fn delete(args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let ids = if args.files.is_empty() {
        args.ids.clone()
    } else {
        match names_in(&args.files)? {
            Ok(ids) => ids,
            Err(errors) => {
                for error in errors {
                    println!("error: {error}");
                }
                eprintln!("prism-launcher: nothing deleted: fix the errors above");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        }
    };
    if ids.is_empty() {
        anyhow::bail!("the files declare no process: nothing to delete");
    }
    let target = launcher_target(&args.connect)?;
    let deleted = block_on(delete_processes(
        &target,
        ids,
        args.grace,
        args.connect.timeout,
    ))?;
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut all_stopped = true;
    for process in &deleted {
        let how = match &process.removed_file {
            Some(file) => {
                let file = Path::new(file);
                format!(
                    "removed {}",
                    file.strip_prefix(&cwd).unwrap_or(file).display()
                )
            }
            None => "terminated".to_string(),
        };
        let state = if process.stopped {
            "stopped"
        } else {
            "still stopping"
        };
        println!(
            "deleted {} ({}): {how}, {state}",
            process.id, process.source
        );
        all_stopped &= process.stopped;
    }
    Ok(if all_stopped {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERROR)
    })
}

/// The names the files declare, or the errors of those whose names cannot be read.
fn names_in(paths: &[PathBuf]) -> anyhow::Result<Result<Vec<String>, Vec<String>>> {
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let texts: Vec<(PathBuf, Result<String, String>)> = if path == Path::new("-") {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_SPEC_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            let text = if bytes.len() as u64 > MAX_SPEC_FILE_BYTES {
                Err(format!("it holds more than {MAX_SPEC_FILE_BYTES} bytes"))
            } else {
                String::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_string())
            };
            vec![(path.clone(), text)]
        } else if path.is_dir() {
            spec_files_in(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .into_iter()
                .map(|file| {
                    let text = read_bounded_text(&file, MAX_SPEC_FILE_BYTES);
                    (file, text)
                })
                .collect()
        } else {
            vec![(path.clone(), read_bounded_text(path, MAX_SPEC_FILE_BYTES))]
        };
        for (file, text) in texts {
            match text.map(|text| declared_names(&file, &text)) {
                Ok(Ok(declared)) => names.extend(declared.into_iter().map(String::from)),
                Ok(Err(problems)) => errors.extend(problems.iter().map(ToString::to_string)),
                Err(message) => errors.push(format!("{}: {message}", file.display())),
            }
        }
    }
    Ok(if errors.is_empty() {
        Ok(names)
    } else {
        Err(errors)
    })
}
