//! `LauncherAdmin.ApplySpecs` and `LauncherAdmin.DeleteProcesses`, what `prism-launcher apply`
//! and `delete` call: operator-declared state stays in the spec directory, so `apply` writes a
//! spec file there (`sources::applied`) and `delete` removes one, and the spec watcher applies
//! the change as it applies any edit of the directory; these calls then wait until the store
//! (for `apply`) or the loop (for `delete`) shows it.
//!
//! The request is not trusted: its text is bounded and validated here as the watcher will
//! validate it, its ids are checked, and no path of it is ever written: the files are the ones
//! the store names as owners or are named after the validated ids.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::blocking::{blocking, store_call, BlockingStoreError};
use super::context::ApiContext;
use super::errors::AdminError;
use super::pattern_launcher::undesire_launched;
use super::proto::prism::launcher::v1 as pb;
use super::waiting::{wait_for_observed, WaitError};
use crate::reconcile::{
    echo, DesiredRecord, ProcessId, ProcessSpec, Source, SpecField, MAX_DURATION, MAX_ENTRIES,
    MAX_PATH_BYTES,
};
use crate::sources::applied::{applied_file, holds_text, remove_spec_file, write_spec_file};
use crate::sources::catalog::read_catalog;
use crate::sources::spec_file::{
    document_texts, parse_spec_text, spec_file_field, FileSpec, SpecError, MAX_SPEC_FILE_BYTES,
};
use crate::store::Store;

/// How long `apply` waits for the spec watcher to record what it wrote (it does within about a
/// second: a debounced watch, then one transaction).
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// What `delete` waits beyond the grace period for the exits to be recorded (as
/// TerminatePattern does).
const DELETE_MARGIN: Duration = Duration::from_secs(5);

/// Most validation errors answered for one text (each is at most a few hundred bytes).
const MAX_REPORTED_ERRORS: usize = 256;

/// How an `apply` changes one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    /// The fields that differ, and whether the running process is replaced.
    Changed {
        fields: Vec<SpecField>,
        replaces: bool,
    },
    Unchanged,
}

impl Change {
    /// The word the response and the CLI use.
    pub fn word(&self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Changed { .. } => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Validates `request`'s text, finds which spec-directory file each process it declares belongs
/// in, and (unless a dry run) writes the files and waits for the watcher to record them.
pub async fn apply_specs(
    context: Arc<ApiContext>,
    request: pb::ApplySpecsRequest,
) -> Result<pb::ApplySpecsResponse, AdminError> {
    let pb::ApplySpecsRequest {
        text,
        origin,
        base_dir,
        dry_run,
    } = request;
    bounded("text", text.len(), MAX_SPEC_FILE_BYTES as usize)?;
    bounded("origin", origin.len(), MAX_PATH_BYTES)?;
    bounded("base_dir", base_dir.len(), MAX_PATH_BYTES)?;
    let origin = if origin.is_empty() {
        "(request)".to_string()
    } else {
        origin
    };
    let base_dir = match base_dir.as_str() {
        "" => None,
        dir if Path::new(dir).is_absolute() && !dir.contains('\0') => Some(PathBuf::from(dir)),
        dir => return Err(AdminError::BadBaseDir(echo(dir).to_string())),
    };
    let planning = context.clone();
    let plan = blocking(move || plan_apply(&planning, &origin, &text, base_dir.as_deref()))
        .await
        .map_err(|error| AdminError::Store(error.into()))??;
    let plan = match plan {
        ApplyPlan::Invalid(errors) => {
            return Ok(pb::ApplySpecsResponse {
                errors,
                ..pb::ApplySpecsResponse::default()
            })
        }
        ApplyPlan::Ready(plan) => plan,
    };
    let written_files = plan
        .writes
        .iter()
        .map(|(path, _)| path.display().to_string())
        .collect();
    let applied = if dry_run {
        false
    } else {
        // Subscribed before the files are written, so that the watcher's record is never missed.
        let mut changes = context.store.subscribe();
        let (specs_dir, writes) = (context.specs_dir.clone(), plan.writes.clone());
        blocking(move || {
            writes
                .iter()
                .try_for_each(|(path, text)| write_spec_file(&specs_dir, path, text))
        })
        .await
        .map_err(|error| AdminError::Store(error.into()))??;
        for (path, _) in &plan.writes {
            tracing::info!(file = %path.display(), "spec file written for apply");
        }
        let expected: Vec<(ProcessId, ProcessSpec, Source)> = plan
            .processes
            .iter()
            .map(|process| {
                (
                    process.id.clone(),
                    process.spec.clone(),
                    Source::file(&process.file),
                )
            })
            .collect();
        wait_for_desired(&context, &mut changes, APPLY_WAIT, move |store| {
            for (id, spec, source) in &expected {
                let recorded = store.desired(id)?;
                if !recorded.is_some_and(|record| *record.spec == *spec && record.source == *source)
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?
    };
    Ok(pb::ApplySpecsResponse {
        errors: Vec::new(),
        processes: plan
            .processes
            .iter()
            .map(|process| pb::ProcessChange {
                id: process.id.to_string(),
                change: process.change.word().to_string(),
                changed_fields: match &process.change {
                    Change::Changed { fields, .. } => fields.iter().map(spec_file_field).collect(),
                    Change::Created | Change::Unchanged => Vec::new(),
                },
                replaces: matches!(process.change, Change::Changed { replaces: true, .. }),
                file: process.file.display().to_string(),
            })
            .collect(),
        written_files,
        applied,
    })
}

/// Undeclares the processes `request` names: removes the spec files of file-declared ones, and
/// terminates those launched over the API as TerminatePattern does; then waits until they have
/// stopped. Nothing is done unless every id can be.
pub async fn delete_processes(
    context: Arc<ApiContext>,
    request: pb::DeleteProcessesRequest,
) -> Result<pb::DeleteProcessesResponse, AdminError> {
    if request.process_ids.is_empty() {
        return Err(AdminError::NoIds);
    }
    bounded("process_ids", request.process_ids.len(), MAX_ENTRIES)?;
    let grace = request
        .grace_ms
        .map(|millis| match Duration::from_millis(millis) {
            grace if grace <= MAX_DURATION => Ok(grace),
            _ => Err(AdminError::BadGrace(millis)),
        })
        .transpose()?;
    let mut ids = Vec::new();
    for id in &request.process_ids {
        let id = ProcessId::new(id.clone()).map_err(AdminError::InvalidId)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let planning = (context.clone(), ids.clone());
    let targets = blocking(move || plan_delete(&planning.0, &planning.1))
        .await
        .map_err(|error| AdminError::Store(error.into()))??;

    let mut changes = context.store.subscribe();
    let removed: Vec<PathBuf> = targets
        .iter()
        .filter_map(|target| target.file.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let from_files: Vec<ProcessId> = targets
        .iter()
        .filter(|target| target.file.is_some())
        .map(|target| target.id.clone())
        .collect();
    let (store, specs_dir, files, stopping) = (
        context.store.clone(),
        context.specs_dir.clone(),
        removed.clone(),
        from_files.clone(),
    );
    blocking(move || {
        // A grace asked for is recorded before the files go, as TerminatePattern records it with
        // its delete: the loop takes it when the watcher undeclares the process, for its stop.
        if let Some(grace) = grace {
            for id in &stopping {
                store
                    .request_stop(id, grace)
                    .map_err(|error| AdminError::Store(error.into()))?;
            }
        }
        let removed = files
            .iter()
            .try_for_each(|file| remove_spec_file(&specs_dir, file));
        if removed.is_err() {
            // Not to be taken by some later stop of these ids.
            for id in &stopping {
                let _ = store.take_stop_request(id);
            }
        }
        removed.map_err(AdminError::from)
    })
    .await
    .map_err(|error| AdminError::Store(error.into()))??;
    for file in &removed {
        tracing::info!(file = %file.display(), "spec file removed for delete");
    }
    // The API's processes, as TerminatePattern undesires them.
    let launched: Vec<ProcessId> = targets
        .iter()
        .filter(|target| target.file.is_none())
        .map(|target| target.id.clone())
        .collect();
    if !launched.is_empty() {
        let store = context.store.clone();
        store_call(move || {
            launched
                .iter()
                .try_for_each(|id| undesire_launched(&store, id, grace))
        })
        .await?;
    }
    // The files' processes go once the watcher has seen their files go.
    if !from_files.is_empty() {
        let gone = from_files.clone();
        let undesired = wait_for_desired(&context, &mut changes, APPLY_WAIT, move |store| {
            for id in &gone {
                if store.desired(id)?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
        if !undesired {
            return Err(AdminError::NotUndesired {
                files: removed.clone(),
                waited: APPLY_WAIT,
            });
        }
    }
    for target in &targets {
        tracing::info!(id = %target.id, source = %target.source, ?grace, "deletion requested");
    }
    let longest_grace = targets
        .iter()
        .map(|target| grace.unwrap_or(target.grace))
        .max()
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + longest_grace.saturating_add(DELETE_MARGIN);
    let mut processes = Vec::new();
    for target in &targets {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let observed = wait_for_observed(
            &context.store,
            &context.stopping,
            &target.id,
            left,
            |observed| observed.is_none_or(|observed| !observed.phase.has_live_process()),
        )
        .await
        .map_err(|error| match error {
            WaitError::ShuttingDown => AdminError::ShuttingDown,
            WaitError::Store(error) => AdminError::Store(error),
        })?;
        processes.push(pb::DeletedProcess {
            id: target.id.to_string(),
            source: target.source.to_string(),
            removed_file: target
                .file
                .as_ref()
                .map(|file| file.display().to_string())
                .unwrap_or_default(),
            stopped: observed.is_none_or(|observed| !observed.phase.has_live_process()),
        });
    }
    Ok(pb::DeleteProcessesResponse { processes })
}

/// What `apply` found: every error of the text, or what to write.
enum ApplyPlan {
    Invalid(Vec<String>),
    Ready(ReadyApply),
}

struct ReadyApply {
    processes: Vec<PlannedProcess>,
    /// Files to write and their text; files that hold it already are left out.
    writes: Vec<(PathBuf, String)>,
}

struct PlannedProcess {
    id: ProcessId,
    spec: ProcessSpec,
    /// The spec-directory file that declares it.
    file: PathBuf,
    change: Change,
}

/// Validates `text` against the catalog, as the spec watcher will read it from the spec
/// directory, and plans where each process it declares is written (blocking: the store).
fn plan_apply(
    context: &ApiContext,
    origin: &str,
    text: &str,
    base_dir: Option<&Path>,
) -> Result<ApplyPlan, AdminError> {
    let specs_dir = &context.specs_dir;
    let origin_path = Path::new(origin);
    let specs = {
        let catalog = read_catalog(&context.catalog);
        let specs = match parse_spec_text(origin_path, text, specs_dir, &catalog) {
            Ok(specs) => specs,
            Err(errors) => return Ok(ApplyPlan::Invalid(reported(errors))),
        };
        if let Some(base_dir) = base_dir.filter(|base_dir| *base_dir != specs_dir.as_path()) {
            // The same text read where it was written: a relative path that resolves to
            // another file there than in the spec directory would change meaning.
            if let Ok(written) = parse_spec_text(origin_path, text, base_dir, &catalog) {
                let moved = relative_path_errors(origin_path, &specs, &written, specs_dir);
                if !moved.is_empty() {
                    return Ok(ApplyPlan::Invalid(reported(moved)));
                }
            }
        }
        specs
    };
    if specs.is_empty() {
        return Ok(ApplyPlan::Invalid(vec![format!(
            "{origin}: the text declares no process"
        )]));
    }
    let store = &context.store;
    let records = specs
        .iter()
        .map(|spec| store.desired(&spec.id))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| AdminError::Store(error.into()))?;
    let files = files_for(specs_dir, &specs, &records)?;
    // Files in the order they first appear, with the documents each gets.
    let mut placed: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        match placed.iter_mut().find(|(placed, _)| placed == file) {
            Some((_, indices)) => indices.push(index),
            None => placed.push((file.clone(), vec![index])),
        }
    }
    for (file, indices) in &placed {
        let declared: BTreeSet<&ProcessId> =
            indices.iter().map(|index| &specs[*index].id).collect();
        let owned = store
            .owned_by(&Source::file(file))
            .map_err(|error| AdminError::Store(error.into()))?;
        let left: Vec<ProcessId> = owned
            .into_iter()
            .filter(|id| !declared.contains(id))
            .collect();
        if !left.is_empty() {
            return Err(AdminError::WouldUndeclare {
                file: file.clone(),
                ids: left,
            });
        }
    }
    let documents = document_texts(text);
    let mut writes = Vec::new();
    for (file, indices) in &placed {
        let content = if placed.len() == 1 {
            // The whole text, comments included, when it all goes to one file.
            text.to_string()
        } else {
            joined_documents(indices.iter().map(|index| {
                documents
                    .get(specs[*index].document.saturating_sub(1))
                    .copied()
                    .unwrap_or_default()
            }))
        };
        if !holds_text(file, &content) {
            writes.push((file.clone(), content));
        }
    }
    let processes = specs
        .into_iter()
        .zip(records)
        .zip(files)
        .map(|((spec, record), file)| PlannedProcess {
            change: change_of(&spec.spec, record.as_ref()),
            id: spec.id,
            spec: spec.spec,
            file,
        })
        .collect();
    Ok(ApplyPlan::Ready(ReadyApply { processes, writes }))
}

/// The file each process belongs in: the spec-directory file that declares it now, else
/// `applied-<id>.yaml`. An id that another source owns is refused, naming the owner.
fn files_for(
    specs_dir: &Path,
    specs: &[FileSpec],
    records: &[Option<DesiredRecord>],
) -> Result<Vec<PathBuf>, AdminError> {
    let mut files = Vec::new();
    let mut refused: Vec<(&ProcessId, &Source)> = Vec::new();
    for (spec, record) in specs.iter().zip(records) {
        match record.as_ref().map(|record| &record.source) {
            Some(Source::File { path }) if path.parent() == Some(specs_dir) => {
                files.push(path.clone())
            }
            // Unknown, or a file outside the spec directory (another --specs-dir of an earlier
            // run, whose records the watcher's first scan removes).
            Some(Source::File { .. }) | None => files.push(applied_file(specs_dir, &spec.id)),
            Some(owner) => refused.push((&spec.id, owner)),
        }
    }
    match refused.first() {
        None => Ok(files),
        Some((id, owner)) => Err(AdminError::OwnedElsewhere {
            id: (*id).clone(),
            owner: (*owner).clone(),
            hint: owner_hint(owner),
            others: refused.len() - 1,
        }),
    }
}

/// How `spec` changes what `record` holds.
fn change_of(spec: &ProcessSpec, record: Option<&DesiredRecord>) -> Change {
    let Some(record) = record else {
        return Change::Created;
    };
    let fields = spec.changed_fields(&record.spec);
    if fields.is_empty() {
        Change::Unchanged
    } else {
        Change::Changed {
            fields,
            replaces: spec.requires_restart_from(&record.spec),
        }
    }
}

/// The relative paths (`binary:`, `workingDir:`) of a text that resolve to another file in
/// the spec directory (`here`) than where the text was written (`written`).
fn relative_path_errors(
    origin: &Path,
    here: &[FileSpec],
    written: &[FileSpec],
    specs_dir: &Path,
) -> Vec<SpecError> {
    let mut errors = Vec::new();
    for (here, written) in here.iter().zip(written) {
        let pairs = [
            (
                SpecField::Executable,
                Some(&here.spec.executable),
                Some(&written.spec.executable),
            ),
            (
                SpecField::WorkingDir,
                here.spec.working_dir.as_ref(),
                written.spec.working_dir.as_ref(),
            ),
        ];
        for (field, in_specs_dir, where_written) in pairs {
            if let (Some(in_specs_dir), Some(where_written)) = (in_specs_dir, where_written) {
                if in_specs_dir != where_written {
                    errors.push(SpecError {
                        file: origin.to_path_buf(),
                        document: here.document,
                        field: spec_file_field(&field),
                        line: Some(here.line),
                        column: None,
                        message: format!(
                            "a relative path means {} where the file is, but {} once it is in \
                             the spec directory {}; write it as an absolute path",
                            where_written.display(),
                            in_specs_dir.display(),
                            specs_dir.display()
                        ),
                    });
                }
            }
        }
    }
    errors
}

/// The errors as `validate` prints them, at most `MAX_REPORTED_ERRORS`.
fn reported(errors: Vec<SpecError>) -> Vec<String> {
    let count = errors.len();
    let mut lines: Vec<String> = errors
        .iter()
        .take(MAX_REPORTED_ERRORS)
        .map(ToString::to_string)
        .collect();
    if count > MAX_REPORTED_ERRORS {
        lines.push(format!(
            "... and {} more errors",
            count - MAX_REPORTED_ERRORS
        ));
    }
    lines
}

/// Documents as one YAML text, `---` between them.
fn joined_documents<'a>(documents: impl Iterator<Item = &'a str>) -> String {
    let mut joined = String::new();
    for document in documents {
        if !joined.is_empty() {
            joined.push_str("---\n");
        }
        joined.push_str(document);
        if !document.ends_with('\n') {
            joined.push('\n');
        }
    }
    joined
}

/// What to do instead, for a process another source owns.
fn owner_hint(owner: &Source) -> &'static str {
    match owner {
        Source::Api => "it was launched over the API: `prism-launcher delete` it first",
        Source::Admin { .. } => "it is prism-admin's to change or revoke",
        Source::File { .. } => "edit that file",
    }
}

/// One process `delete` undeclares.
struct DeleteTarget {
    id: ProcessId,
    source: Source,
    /// The spec file to remove; `None` for a process launched over the API.
    file: Option<PathBuf>,
    /// Its spec's grace period.
    grace: Duration,
}

/// Finds how each id is undeclared, refusing the whole call if any cannot be (blocking: the
/// store).
fn plan_delete(context: &ApiContext, ids: &[ProcessId]) -> Result<Vec<DeleteTarget>, AdminError> {
    let store: &Store = &context.store;
    let store_error = |error| AdminError::Store(BlockingStoreError::Store(error));
    let mut targets = Vec::new();
    let mut by_file: BTreeMap<PathBuf, Vec<ProcessId>> = BTreeMap::new();
    for id in ids {
        let record = store
            .desired(id)
            .map_err(store_error)?
            .ok_or_else(|| AdminError::UnknownProcess(id.to_string()))?;
        let file = match &record.source {
            Source::File { path } if path.parent() == Some(context.specs_dir.as_path()) => {
                by_file.entry(path.clone()).or_default().push(id.clone());
                Some(path.clone())
            }
            Source::File { path } => {
                return Err(AdminError::OutsideSpecDir {
                    id: id.clone(),
                    file: path.clone(),
                    specs_dir: context.specs_dir.clone(),
                })
            }
            Source::Api => None,
            Source::Admin { .. } => {
                return Err(AdminError::OwnedElsewhere {
                    id: id.clone(),
                    owner: record.source.clone(),
                    hint: owner_hint(&record.source),
                    others: 0,
                })
            }
        };
        targets.push(DeleteTarget {
            id: id.clone(),
            source: record.source.clone(),
            file,
            grace: record.spec.termination_grace,
        });
    }
    for (file, named) in &by_file {
        let others: Vec<ProcessId> = store
            .owned_by(&Source::file(file))
            .map_err(store_error)?
            .into_iter()
            .filter(|id| !named.contains(id))
            .collect();
        if !others.is_empty() {
            return Err(AdminError::WouldUndeclare {
                file: file.clone(),
                ids: others,
            });
        }
    }
    Ok(targets)
}

/// Waits until `done` holds of the store, woken by each change of desired records (never
/// polling), or `timeout` passes (false), or the launcher shuts down.
async fn wait_for_desired(
    context: &ApiContext,
    changes: &mut mpsc::UnboundedReceiver<ProcessId>,
    timeout: Duration,
    done: impl Fn(&Store) -> Result<bool, crate::store::StoreError> + Send + Sync + 'static,
) -> Result<bool, AdminError> {
    let done = Arc::new(done);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stopping = context.stopping.clone();
    loop {
        // What arrived before this check is covered by it.
        while changes.try_recv().is_ok() {}
        let (store, check) = (context.store.clone(), done.clone());
        if store_call(move || check(&store)).await? {
            return Ok(true);
        }
        tokio::select! {
            changed = changes.recv() => {
                if changed.is_none() {
                    return Ok(false);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(false),
            _ = stopping.wait_for(|stop| *stop) => return Err(AdminError::ShuttingDown),
        }
    }
}

/// Refuses a field of the request longer than `max`.
fn bounded(field: &'static str, len: usize, max: usize) -> Result<(), AdminError> {
    if len > max {
        Err(AdminError::TooLong { field, len, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::spec;

    fn file_spec(id: &str, document: usize) -> FileSpec {
        FileSpec {
            id: ProcessId::new(id).unwrap(),
            spec: spec(),
            document,
            line: document,
        }
    }

    fn record(id: &str, source: Source) -> Option<DesiredRecord> {
        Some(DesiredRecord {
            id: ProcessId::new(id).unwrap(),
            spec: Arc::new(spec()),
            generation: 1,
            source,
            resets: 0,
            held: false,
            restarts: 0,
        })
    }

    #[test]
    fn a_process_goes_to_the_file_that_declares_it_else_to_one_named_after_it() {
        let dir = Path::new("/specs");
        let specs = [
            file_spec("owned", 1),
            file_spec("new", 2),
            file_spec("moved", 3),
        ];
        let records = [
            record("owned", Source::file(Path::new("/specs/hand.yaml"))),
            None,
            // A record of another --specs-dir is not a file of this one.
            record("moved", Source::file(Path::new("/elsewhere/moved.yaml"))),
        ];
        assert_eq!(
            files_for(dir, &specs, &records).unwrap(),
            [
                PathBuf::from("/specs/hand.yaml"),
                PathBuf::from("/specs/applied-new.yaml"),
                PathBuf::from("/specs/applied-moved.yaml"),
            ]
        );
    }

    #[test]
    fn an_id_of_another_source_is_refused_naming_its_owner() {
        let dir = Path::new("/specs");
        let specs = [file_spec("launched", 1), file_spec("assigned", 2)];
        let records = [
            record("launched", Source::Api),
            record("assigned", Source::Admin { version: 3 }),
        ];
        let error = files_for(dir, &specs, &records).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("launched") && message.contains("api") && message.contains("1 more"),
            "{message}"
        );
    }

    #[test]
    fn a_change_names_its_fields_and_whether_it_replaces_the_process() {
        let mut changed = spec();
        changed.args = vec!["--verbose".to_string()];
        changed
            .labels
            .insert("team".to_string(), "storage".to_string());
        let before = record("p", Source::Api);
        assert_eq!(change_of(&spec(), None), Change::Created);
        assert_eq!(change_of(&spec(), before.as_ref()), Change::Unchanged);
        assert_eq!(
            change_of(&changed, before.as_ref()),
            Change::Changed {
                fields: vec![SpecField::Args, SpecField::Labels],
                replaces: true
            }
        );
        let mut labels_only = spec();
        labels_only
            .labels
            .insert("team".to_string(), "storage".to_string());
        assert_eq!(
            change_of(&labels_only, before.as_ref()),
            Change::Changed {
                fields: vec![SpecField::Labels],
                replaces: false
            }
        );
    }

    #[test]
    fn documents_are_joined_into_one_text() {
        assert_eq!(
            joined_documents(["a: 1\n", "b: 2"].into_iter()),
            "a: 1\n---\nb: 2\n"
        );
    }
}
