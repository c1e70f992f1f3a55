//! Problems of the sources of desired state (bad spec files, conflicting names), kept for
//! `status` and the log. A bad source never changes what runs; it is only reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::reconcile::{ProcessId, Source};

#[derive(Debug, Default)]
struct Problems {
    /// Errors that kept a file from being applied.
    invalid: BTreeMap<PathBuf, Vec<String>>,
    /// Names a file declares that another source owns.
    conflicts: BTreeMap<PathBuf, Vec<(ProcessId, Source)>>,
    /// Catalog manifests that failed to load, by manifest path.
    manifests: BTreeMap<PathBuf, Vec<String>>,
}

/// Shared between the spec watcher, which writes it, and the status service, which reads it.
#[derive(Debug, Default, Clone)]
pub struct SourceProblems {
    inner: Arc<Mutex<Problems>>,
}

impl SourceProblems {
    fn lock(&self) -> MutexGuard<'_, Problems> {
        // Every update replaces one map entry, so a panic elsewhere cannot leave it half-written.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_invalid(&self, file: &Path, errors: Vec<String>) {
        self.lock().invalid.insert(file.to_path_buf(), errors);
    }

    pub fn set_conflicts(&self, file: &Path, conflicts: Vec<(ProcessId, Source)>) {
        let mut problems = self.lock();
        if conflicts.is_empty() {
            problems.conflicts.remove(file);
        } else {
            problems.conflicts.insert(file.to_path_buf(), conflicts);
        }
    }

    /// Forgets every problem of `file` (it was applied cleanly or removed).
    pub fn clear(&self, file: &Path) {
        let mut problems = self.lock();
        problems.invalid.remove(file);
        problems.conflicts.remove(file);
    }

    pub fn clear_invalid(&self, file: &Path) {
        self.lock().invalid.remove(file);
    }

    /// Replaces the catalog's problems with those of the latest load.
    pub fn set_catalog_errors(&self, errors: &[super::catalog::CatalogError]) {
        let mut problems = self.lock();
        problems.manifests.clear();
        for error in errors {
            problems
                .manifests
                .entry(error.manifest.clone())
                .or_default()
                .push(error.message.clone());
        }
    }

    /// Files that declare a name another source owns, to retry when owners change.
    pub fn files_with_conflicts(&self) -> Vec<PathBuf> {
        self.lock().conflicts.keys().cloned().collect()
    }

    /// Files with any problem recorded, so a rescan can forget those of files that are gone.
    pub fn files_with_problems(&self) -> Vec<PathBuf> {
        let problems = self.lock();
        problems
            .invalid
            .keys()
            .chain(problems.conflicts.keys())
            .cloned()
            .collect()
    }

    /// Every problem by source, each conflict reported on both files.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        let problems = self.lock();
        let mut report: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (manifest, errors) in &problems.manifests {
            report
                .entry(format!("manifest:{}", manifest.display()))
                .or_default()
                .extend(errors.iter().cloned());
        }
        for (file, errors) in &problems.invalid {
            report
                .entry(file_source(file))
                .or_default()
                .extend(errors.iter().cloned());
        }
        for (file, conflicts) in &problems.conflicts {
            for (id, owner) in conflicts {
                report.entry(file_source(file)).or_default().push(format!(
                    "name {id} is already declared by {owner}; the first owner keeps it"
                ));
                if let Source::File { path } = owner {
                    report.entry(file_source(path)).or_default().push(format!(
                        "name {id} is also declared by {}; this file keeps it",
                        file_source(file)
                    ));
                }
            }
        }
        report
    }
}

fn file_source(path: &Path) -> String {
    Source::file(path).to_string()
}
