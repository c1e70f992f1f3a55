//! `prism-launcher validate`: spec files checked offline against the catalog, every error
//! reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use prism_launcher::reconcile::ProcessId;
use prism_launcher::sources::catalog::load_catalog;
use prism_launcher::sources::spec_dir::spec_files_in;
use prism_launcher::sources::spec_file::{load_spec_file, SpecError};

use super::EXIT_INVALID;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Spec files or directories of spec files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The pattern catalog that `pattern:` references resolve against.
    #[arg(long, default_value = "manifests")]
    patterns_dir: PathBuf,
}

pub fn validate(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let (catalog, catalog_errors) = load_catalog(&args.patterns_dir);
    let mut failed = false;
    for error in &catalog_errors {
        eprintln!("warning: {error}");
    }
    let mut files = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            let found =
                spec_files_in(path).with_context(|| format!("cannot read {}", path.display()))?;
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut processes = 0;
    // One id in two files is a conflict in the spec directory: the watcher keeps the owner it
    // has and reports the other file.
    let mut first_declared: BTreeMap<ProcessId, PathBuf> = BTreeMap::new();
    for file in &files {
        match load_spec_file(Path::new(file), &catalog) {
            Ok(specs) => {
                let twice: Vec<SpecError> = specs
                    .iter()
                    .filter_map(|spec| match first_declared.get(&spec.id) {
                        Some(first) if first != file => Some(SpecError {
                            file: file.clone(),
                            document: spec.document,
                            field: "metadata.name".to_string(),
                            line: Some(spec.line),
                            column: None,
                            message: format!(
                                "name {} is already declared by {}; an id may be declared \
                                     by one file only",
                                spec.id,
                                first.display()
                            ),
                        }),
                        Some(_) => None,
                        None => {
                            first_declared.insert(spec.id.clone(), file.clone());
                            None
                        }
                    })
                    .collect();
                if !twice.is_empty() {
                    failed = true;
                    for error in twice {
                        println!("error: {error}");
                    }
                    continue;
                }
                processes += specs.len();
                println!(
                    "ok: {} ({} process{})",
                    file.display(),
                    specs.len(),
                    if specs.len() == 1 { "" } else { "es" }
                );
            }
            Err(errors) => {
                failed = true;
                for error in errors {
                    println!("error: {error}");
                }
            }
        }
    }
    if failed {
        Ok(ExitCode::from(EXIT_INVALID))
    } else {
        println!(
            "{} file(s), {processes} process(es), no errors",
            files.len()
        );
        Ok(ExitCode::SUCCESS)
    }
}
