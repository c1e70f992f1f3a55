//! The watched spec directory: files in, desired records out.
//!
//! A full scan runs at start and on every resync; between them, notify events name the files that
//! changed, and only those are read again (debounced, so an editor's burst of writes is one
//! change). A file is applied whole or not at all: a file with an error changes nothing, and what
//! it declared before keeps running.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::catalog::{read_catalog, SharedCatalog};
use super::problems::SourceProblems;
use super::spec_file::load_spec_file;
use super::watch::{debounce, watch_directory};
use crate::error_chain::Chain;
use crate::reconcile::Source;
use crate::store::Store;
use crate::telemetry::Readiness;

#[derive(Debug, thiserror::Error)]
pub enum SpecWatchError {
    #[error("cannot watch the spec directory {dir}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot read the spec directory {dir}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether a path in the spec directory is a spec file (not hidden, not an editor's temporary).
pub fn is_spec_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    !name.starts_with('.')
        && !name.ends_with('~')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// What the spec watcher works with.
pub struct SpecWatch {
    pub dir: PathBuf,
    pub store: Arc<Store>,
    pub catalog: SharedCatalog,
    /// Bumped on each catalog reload: every spec file is read again.
    pub catalog_changes: watch::Receiver<u64>,
    pub problems: SourceProblems,
    pub resync_interval: Duration,
    /// Told when the first full scan is done.
    pub readiness: Readiness,
}

/// Keeps the store's file-sourced desired records equal to the spec files in `dir` until
/// `shutdown` completes. Every spec file is read again when the catalog changes.
pub async fn watch_spec_dir(
    settings: SpecWatch,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SpecWatchError> {
    let SpecWatch {
        dir,
        store,
        catalog,
        mut catalog_changes,
        problems,
        resync_interval,
        readiness,
    } = settings;
    let (_watcher, mut changes) =
        watch_directory(&dir, false).map_err(|source| SpecWatchError::Watch {
            dir: dir.clone(),
            source,
        })?;
    let specs = SpecDir {
        dir,
        store,
        catalog,
        problems,
    };
    specs.full_scan()?;
    readiness.specs_synced();
    let mut resync = tokio::time::interval(resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = resync.tick() => specs.rescan(),
            Ok(()) = catalog_changes.changed() => specs.rescan(),
            Some(first) = changes.recv() => {
                let changed = debounce(first, &mut changes).await;
                specs.apply_changed(changed);
            }
        }
    }
}

struct SpecDir {
    dir: PathBuf,
    store: Arc<Store>,
    catalog: SharedCatalog,
    problems: SourceProblems,
}

impl SpecDir {
    fn rescan(&self) {
        if let Err(error) = self.full_scan() {
            tracing::error!(error = %Chain(&error), "spec directory rescan failed");
        }
    }

    /// Applies every spec file in the directory and removes what files that are gone declared.
    fn full_scan(&self) -> Result<(), SpecWatchError> {
        let read_error = |source| SpecWatchError::ReadDir {
            dir: self.dir.clone(),
            source,
        };
        let mut present: BTreeSet<PathBuf> = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if is_spec_file_name(&path) && path.is_file() {
                present.insert(path);
            }
        }
        let mut touched: BTreeSet<PathBuf> = present.clone();
        match self.store.all_desired() {
            Ok((records, _corrupt)) => {
                for record in records {
                    if let Source::File { path } = record.source {
                        if !present.contains(&path) {
                            touched.insert(path);
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(error = %Chain(&error), "cannot list desired records to find removed spec files")
            }
        }
        self.apply_changed(touched);
        Ok(())
    }

    /// Reads each changed spec file again (a missing one declares nothing), then retries files
    /// whose names were owned by another file, in case the owner let go.
    fn apply_changed(&self, changed: BTreeSet<PathBuf>) {
        // Removed files first, so that a name moved from one file to another (a rename) is let
        // go before the new file claims it.
        let (present, removed): (Vec<&PathBuf>, Vec<&PathBuf>) = changed
            .iter()
            .filter(|path| is_spec_file_name(path))
            .partition(|path| path.exists());
        // Files present now may take over names of files removed in the same burst (a rename,
        // a move between files) without the process ever being undesired in between.
        let gone: Vec<Source> = removed
            .iter()
            .map(|path| Source::File {
                path: (*path).clone(),
            })
            .collect();
        let mut released = false;
        for path in present {
            released |= self.apply_file(path, &gone);
        }
        for path in removed {
            released |= self.apply_file(path, &[]);
        }
        if released {
            for path in self.problems.files_with_conflicts() {
                self.apply_file(&path, &[]);
            }
        }
    }

    /// Applies one file, which may take over the names of `gone` sources. Returns whether it
    /// gave up any name (so waiting files can take it).
    fn apply_file(&self, path: &Path, gone: &[Source]) -> bool {
        let source = Source::File {
            path: path.to_path_buf(),
        };
        let specs = if path.exists() {
            let loaded = load_spec_file(path, &read_catalog(&self.catalog));
            match loaded {
                // An editor truncates a file before writing it again: an existing file that
                // declares nothing is taken for one caught mid-write, not as a wish to stop
                // everything it declared. Deleting the file is how that is said.
                Ok(specs) if specs.is_empty() => {
                    tracing::warn!(file = %path.display(), "spec file declares no process; what it declared before keeps running (delete the file to stop it)");
                    self.problems.set_invalid(
                        path,
                        vec![format!(
                            "{}: the file declares no process; what it declared before keeps running (delete the file to stop it)",
                            path.display()
                        )],
                    );
                    return false;
                }
                Ok(specs) => specs,
                Err(errors) => {
                    for error in &errors {
                        tracing::error!(%error, "spec file rejected; what it declared before keeps running");
                    }
                    self.problems
                        .set_invalid(path, errors.iter().map(ToString::to_string).collect());
                    return false;
                }
            }
        } else {
            Vec::new()
        };
        let declared: Vec<_> = specs.into_iter().map(|spec| (spec.id, spec.spec)).collect();
        match self
            .store
            .apply_source_taking_over(&source, &declared, gone)
        {
            Ok(outcome) => {
                for id in &outcome.created {
                    tracing::info!(%id, %source, "desired: created");
                }
                for id in &outcome.updated {
                    tracing::info!(%id, %source, "desired: updated");
                }
                for id in &outcome.deleted {
                    tracing::info!(%id, %source, "desired: deleted");
                }
                for (id, owner) in &outcome.conflicts {
                    tracing::error!(%id, %source, %owner, "name already owned by another source; the first owner keeps it");
                }
                if declared.is_empty() && !path.exists() {
                    self.problems.clear(path);
                } else {
                    self.problems.clear_invalid(path);
                    self.problems.set_conflicts(path, outcome.conflicts);
                }
                !outcome.deleted.is_empty()
            }
            Err(error) => {
                tracing::error!(%source, error = %Chain(&error), "cannot record the spec file's desired state");
                self.problems
                    .set_invalid(path, vec![Chain(&error).to_string()]);
                false
            }
        }
    }
}
