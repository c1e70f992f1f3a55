//! `prism-launcher apply -f FILE|DIR|-`: declares the processes of spec files through the
//! running launcher, which writes them into its spec directory (the one truth for what operators
//! declare) for its spec watcher to apply. Every file is validated by the launcher first (a dry
//! run, with its catalog) and every error reported as `validate` reports them; nothing is
//! written unless all are valid. `--dry-run` prints the diff and writes nothing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use prism_launcher::api::client::{apply_specs, ApplyRequest, ApplyView};
use prism_launcher::sources::spec_dir::spec_files_in;
use prism_launcher::sources::spec_file::{read_bounded_text, MAX_SPEC_FILE_BYTES};

use super::client::{block_on, launcher_target, ConnectArgs};
use super::{EXIT_ERROR, EXIT_INVALID};

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
    // One id in two inputs: each would be written over the other's, whichever came last
    // winning; refused before anything is written, as `validate` refuses it.
    invalid.extend(declared_twice(inputs.iter().zip(&checked).flat_map(
        |(input, view)| {
            view.processes
                .iter()
                .map(|process| (input.origin.as_str(), process.id.as_str()))
        },
    )));
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
    let mut all_applied = true;
    for input in &inputs {
        let view = block_on(apply_specs(&target, request(input, false), timeout))?;
        print_changes(&view, &cwd);
        if let Some(message) = not_applied(&view, &cwd) {
            eprintln!("prism-launcher: {message}");
            all_applied = false;
        }
    }
    Ok(if all_applied {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ERROR)
    })
}

/// What of `view` the launcher had not applied when it answered, in a sentence, or `None`
/// when it all was.
fn not_applied(view: &ApplyView, cwd: &Path) -> Option<String> {
    if view.applied {
        return None;
    }
    let shown = |file: &str| {
        let file = Path::new(file);
        file.strip_prefix(cwd).unwrap_or(file).display().to_string()
    };
    let processes: Vec<String> = view
        .processes
        .iter()
        .map(|process| format!("{} (in {})", process.id, shown(&process.file)))
        .collect();
    let written = if view.written_files.is_empty() {
        "its files held this text already".to_string()
    } else {
        let files: Vec<String> = view.written_files.iter().map(|file| shown(file)).collect();
        format!("{} written", files.join(", "))
    };
    Some(format!(
        "not applied: {}: {written}, but the launcher's spec watcher had not recorded it when \
         the launcher answered; see `prism-launcher status` for problems of the files",
        processes.join(", ")
    ))
}

/// An error line for each process id that more than one input declares, naming the inputs
/// (`(origin, id)` pairs, in input order).
fn declared_twice<'a>(declared: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut origins: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (origin, id) in declared {
        let seen = origins.entry(id).or_default();
        if !seen.contains(&origin) {
            seen.push(origin);
        }
    }
    origins
        .into_iter()
        .filter(|(_, origins)| origins.len() > 1)
        .map(|(id, origins)| {
            format!(
                "process {id} is declared by {} and {}: an id may be declared by one file only",
                origins[..origins.len() - 1].join(", "),
                origins[origins.len() - 1]
            )
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use prism_launcher::api::client::ProcessChangeView;

    fn view(applied: bool, written_files: &[&str]) -> ApplyView {
        ApplyView {
            errors: Vec::new(),
            processes: vec![ProcessChangeView {
                id: "sleeper".to_string(),
                change: "changed".to_string(),
                changed_fields: vec!["spec.args".to_string()],
                replaces: true,
                file: "/work/specs/applied-sleeper.yaml".to_string(),
            }],
            written_files: written_files.iter().map(ToString::to_string).collect(),
            applied,
        }
    }

    /// Regression: a change the launcher had not applied was reported with an empty file list
    /// ("prism-launcher:  written, ...") and `apply` exited 0.
    #[test]
    fn what_was_not_applied_is_named_with_its_files() {
        let cwd = Path::new("/work");
        assert_eq!(not_applied(&view(true, &[]), cwd), None);
        let message = not_applied(&view(false, &[]), cwd).unwrap();
        assert_eq!(
            message,
            "not applied: sleeper (in specs/applied-sleeper.yaml): its files held this text \
             already, but the launcher's spec watcher had not recorded it when the launcher \
             answered; see `prism-launcher status` for problems of the files"
        );
        let message =
            not_applied(&view(false, &["/work/specs/applied-sleeper.yaml"]), cwd).unwrap();
        assert!(
            message.contains(": specs/applied-sleeper.yaml written, but"),
            "{message}"
        );
    }

    #[test]
    fn an_id_declared_by_two_inputs_is_named_with_both() {
        let errors = declared_twice(
            [
                ("in/a.yaml", "x"),
                ("in/a.yaml", "y"),
                ("in/b.yaml", "x"),
                ("in/c.yaml", "z"),
                ("in/d.yaml", "x"),
            ]
            .into_iter(),
        );
        assert_eq!(
            errors,
            [
                "process x is declared by in/a.yaml, in/b.yaml and in/d.yaml: an id may be \
              declared by one file only"
            ]
        );
        assert!(declared_twice([("a", "x"), ("b", "y")].into_iter()).is_empty());
    }
}
