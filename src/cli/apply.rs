//! `prism-launcher apply -f FILE|DIR|-`: declares the processes of spec files through the
//! running launcher, which writes them into its spec directory (the one truth for what operators
//! declare) for its spec watcher to apply. Every file is validated by the launcher first (a dry
//! run, with its catalog) and every error reported as `validate` reports them; nothing is
//! written unless all are valid. `--dry-run` prints the diff and writes nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use prism_launcher::api::client::{apply_specs, ApplyRequest, ApplyView};
use prism_launcher::sources::spec_dir::spec_files_in;
use prism_launcher::sources::spec_file::{read_bounded_text, MAX_SPEC_FILE_BYTES};

use super::client::{block_on, launcher_target, ConnectArgs};
use super::EXIT_INVALID;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A spec file, a directory of spec files, or - for standard input (repeatable).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    files: Vec<PathBuf>,
    /// Print what would change (created, changed with the fields, unchanged) and write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One spec file's text, as read here.
struct Input {
    origin: String,
    text: String,
    /// Where its relative paths were written.
    base_dir: PathBuf,
}

pub fn apply(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let (inputs, unreadable) = read_inputs(&args.files)?;
    let target = launcher_target(&args.connect)?;
    let timeout = args.connect.timeout;
    let request = |input: &Input, dry_run: bool| ApplyRequest {
        text: input.text.clone(),
        origin: input.origin.clone(),
        base_dir: Some(input.base_dir.clone()),
        dry_run,
    };
    // Every file is checked by the launcher before any is written.
    let mut checked = Vec::new();
    let mut invalid = unreadable;
    for input in &inputs {
        let view = block_on(apply_specs(&target, request(input, true), timeout))?;
        invalid.extend(view.errors.iter().cloned());
        checked.push(view);
    }
    if !invalid.is_empty() {
        for error in &invalid {
            println!("error: {error}");
        }
        eprintln!("prism-launcher: nothing applied: fix the errors above");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    if args.dry_run {
        println!("dry run: nothing is written");
        for view in &checked {
            print_changes(view, &cwd);
        }
        return Ok(ExitCode::SUCCESS);
    }
    for input in &inputs {
        let view = block_on(apply_specs(&target, request(input, false), timeout))?;
        print_changes(&view, &cwd);
        if !view.applied {
            eprintln!(
                "prism-launcher: {} written, but the launcher had not applied it yet; see \
                 `prism-launcher status` for problems of the file",
                view.written_files.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The texts of `paths` (a directory gives its spec files, `-` standard input), and the errors
/// of those that cannot be read, as `validate` words them.
fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<(Vec<Input>, Vec<String>)> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_SPEC_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            if bytes.len() as u64 > MAX_SPEC_FILE_BYTES {
                errors.push(format!(
                    "-: standard input holds more than {MAX_SPEC_FILE_BYTES} bytes; a spec file \
                     may be at most that"
                ));
                continue;
            }
            match String::from_utf8(bytes) {
                Ok(text) => inputs.push(Input {
                    origin: "-".to_string(),
                    text,
                    base_dir: cwd.clone(),
                }),
                Err(_) => errors.push("-: standard input is not UTF-8".to_string()),
            }
            continue;
        }
        let files = if path.is_dir() {
            spec_files_in(path).with_context(|| format!("cannot read {}", path.display()))?
        } else {
            vec![path.clone()]
        };
        for file in files {
            match read_bounded_text(&file, MAX_SPEC_FILE_BYTES) {
                Ok(text) => {
                    let folder = file.parent().unwrap_or(Path::new("."));
                    inputs.push(Input {
                        origin: file.display().to_string(),
                        text,
                        base_dir: cwd.join(folder),
                    });
                }
                Err(message) => errors.push(format!("{}: {message}", file.display())),
            }
        }
    }
    Ok((inputs, errors))
}

/// One line per process: `created sleeper in specs/applied-sleeper.yaml`, `changed ticker in
/// specs/workers.yaml: spec.args (the process is replaced)`, `unchanged hello in ...`.
fn print_changes(view: &ApplyView, cwd: &Path) {
    for process in &view.processes {
        let file = Path::new(&process.file);
        let file = file.strip_prefix(cwd).unwrap_or(file).display();
        let mut line = format!("{} {} in {file}", process.change, process.id);
        if !process.changed_fields.is_empty() {
            line.push_str(&format!(
                ": {} ({})",
                process.changed_fields.join(", "),
                if process.replaces {
                    "the process is replaced"
                } else {
                    "no restart"
                }
            ));
        }
        println!("{line}");
    }
}
