//! Hot reload of the pattern catalog: any change under the patterns directory reloads it whole.
//! A manifest that fails to load is reported and keeps its previous valid entry.

use std::future::Future;
use std::path::PathBuf;
use std::sync::PoisonError;

use tokio::sync::watch;

use super::catalog::{load_catalog, read_catalog, SharedCatalog};
use super::problems::SourceProblems;
use super::watch::{debounce, watch_directory};

/// Reloads `catalog` from `dir` on every change until `shutdown` completes; `changed` is bumped
/// after each reload that altered the catalog. A directory that cannot be watched is logged and
/// the catalog stays as loaded at start.
pub async fn watch_catalog(
    dir: PathBuf,
    catalog: SharedCatalog,
    changed: watch::Sender<u64>,
    problems: SourceProblems,
    shutdown: impl Future<Output = ()>,
) {
    let (_watcher, mut changes) = match watch_directory(&dir, true) {
        Ok(watch) => watch,
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "cannot watch the patterns directory; the catalog will not reload");
            shutdown.await;
            return;
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            Some(first) = changes.recv() => {
                debounce(first, &mut changes).await;
                // Reading and parsing manifests runs on the blocking pool.
                let (dir, catalog, problems) = (dir.clone(), catalog.clone(), problems.clone());
                let reloaded = tokio::task::spawn_blocking(move || {
                    reload_catalog(&dir, &catalog, &problems)
                })
                .await;
                match reloaded {
                    Ok(true) => changed.send_modify(|version| *version += 1),
                    Ok(false) => {}
                    Err(error) => tracing::error!(%error, "the catalog reload did not finish"),
                }
            }
        }
    }
}

/// Loads the catalog from `dir` into `catalog`, keeping entries whose manifest broke. Returns
/// whether the catalog changed.
pub fn reload_catalog(
    dir: &std::path::Path,
    catalog: &SharedCatalog,
    problems: &SourceProblems,
) -> bool {
    let (fresh, errors) = load_catalog(dir);
    for error in &errors {
        tracing::error!(%error, "pattern manifest rejected; its previous version stays loaded");
    }
    problems.set_catalog_errors(&errors);
    let next = read_catalog(catalog).reloaded(fresh, &errors);
    let mut current = catalog.write().unwrap_or_else(PoisonError::into_inner);
    if *current == next {
        return false;
    }
    tracing::info!(patterns = %next.names_for_message(), "pattern catalog reloaded");
    *current = next;
    true
}
