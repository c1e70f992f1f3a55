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
use super::waiting::{wait_for_row, WaitError};
use crate::reconcile::{
    echo, DesiredRecord, ProcessId, ProcessRow, ProcessSpec, Source, SpecField, MAX_DURATION,
    MAX_ENTRIES, MAX_PATH_BYTES,
};
use crate::sources::applied::{
    applied_file, holds_text, remove_spec_file, write_spec_file, SpecDirWriteError,
};
use crate::sources::catalog::read_catalog;
use crate::sources::spec_file::{
    declared_names, document_texts, parse_spec_text, read_bounded_text, spec_file_field, FileSpec,
    SpecError, MAX_SPEC_FILE_BYTES,
};
use crate::store::Store;

/// How long `apply` waits for the spec watcher to record what it wrote (it does within about a
/// second: a debounced watch, then one transaction).
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// What `delete` waits beyond the grace period for the exits to be recorded (as
/// TerminatePattern does).
const DELETE_MARGIN: Duration = Duration::from_secs(5);

/// The longest an `apply` waits before it answers (beyond its blocking work): clients await
/// its answer this long and a margin.
pub const APPLY_BOUND: Duration = APPLY_WAIT;

/// The longest a `delete` whose processes' longest grace period is `longest_grace` waits
/// before it answers (beyond its blocking work): for the watcher to undeclare what it removed,
/// then for the stops.
pub fn delete_bound(longest_grace: Duration) -> Duration {
    APPLY_WAIT
        .saturating_add(longest_grace)
        .saturating_add(DELETE_MARGIN)
}

/// Most validation errors answered for one text (each is at most a few hundred bytes).
const MAX_REPORTED_ERRORS: usize = 256;

/// Most problems named of a spec-directory file whose declared names cannot be read.
const MAX_NAMED_PROBLEMS: usize = 3;

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
        let not_durable = blocking(move || write_all(&specs_dir, &writes))
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
        let applied = wait_for_desired(&context, &mut changes, APPLY_WAIT, move |store| {
            for (id, spec, source) in &expected {
                let recorded = store.desired(id)?;
                if !recorded.is_some_and(|record| *record.spec == *spec && record.source == *source)
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await?;
        // Written, applied or not, but maybe not durable: said once the rest is done.
        if let Some(error) = not_durable {
            return Err(error.into());
        }
        applied
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
    // A removal done but maybe not durable: the delete goes on (the files are gone), and says
    // so at the end.
    let mut not_durable = None;
    if !removed.is_empty() {
        // Subscribed before the files go, so that the watcher's record is never missed; and
        // only for this wait, so that nothing piles up in it while the stops are awaited.
        let mut changes = context.store.subscribe();
        let (store, specs_dir, files, stopping) = (
            context.store.clone(),
            context.specs_dir.clone(),
            removed.clone(),
            from_files.clone(),
        );
        not_durable = blocking(move || {
            // A grace asked for is recorded before the files go, as TerminatePattern records it
            // with its delete: the loop takes it when the watcher undeclares the process.
            if let Some(grace) = grace {
                for id in &stopping {
                    store
                        .request_stop(id, grace)
                        .map_err(|error| AdminError::Store(error.into()))?;
                }
            }
            match remove_all(&specs_dir, &files) {
                Ok(durability) => Ok(durability),
                Err(error) => {
                    // Not to be taken by some later stop of these ids.
                    for id in &stopping {
                        let _ = store.take_stop_request(id);
                    }
                    Err(AdminError::from(error))
                }
            }
        })
        .await
        .map_err(|error| AdminError::Store(error.into()))??;
        for file in &removed {
            tracing::info!(file = %file.display(), "spec file removed for delete");
        }
        // The files' processes go once the watcher has seen their files go.
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
        // Done once the loop has forgotten the process, so that what the caller asks next
        // (`status`, GetProcessStatus) no longer shows it.
        let row = wait_for_row(&context.store, &context.stopping, &target.id, left, |row| {
            row.is_none()
        })
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
            stopped: is_deleted(row.as_ref()),
        });
    }
    if let Some(error) = not_durable {
        return Err(error.into());
    }
    Ok(pb::DeleteProcessesResponse { processes })
}

/// Whether a process whose row is `row` has been deleted: forgotten, or no longer desired nor
/// running (what is left the loop forgets at its next flush).
fn is_deleted(row: Option<&ProcessRow>) -> bool {
    row.is_none_or(ProcessRow::is_gone)
}

/// Removes `files` from the spec directory. A removal done but not durably (the directory's
/// fsync failed) is done all the same: the others are removed too, and the first such error is
/// returned as `Ok(Some)`, for the caller to report once the call has done the rest.
fn remove_all(
    specs_dir: &Path,
    files: &[PathBuf],
) -> Result<Option<SpecDirWriteError>, SpecDirWriteError> {
    let mut not_durable = None;
    for file in files {
        match remove_spec_file(specs_dir, file) {
            Ok(()) => {}
            Err(error @ SpecDirWriteError::NotDurable { .. }) => {
                not_durable.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(not_durable)
}

/// Writes `writes` into the spec directory, as `remove_all` removes.
fn write_all(
    specs_dir: &Path,
    writes: &[(PathBuf, String)],
) -> Result<Option<SpecDirWriteError>, SpecDirWriteError> {
    let mut not_durable = None;
    for (path, text) in writes {
        match write_spec_file(specs_dir, path, text) {
            Ok(()) => {}
            Err(error @ SpecDirWriteError::NotDurable { .. }) => {
                not_durable.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(not_durable)
}

/// The ids that `file`, a spec-directory file that `apply` would rewrite or `delete` remove
/// (`action`), declares now, read from the file itself: the store knows only what the watcher
/// last applied, and a document with an error (a typo while it is edited) is in the file but
/// not in the store. A file that does not exist declares nothing; one whose names cannot all
/// be read is refused, naming it, since what it declares could not be kept (blocking: reads).
fn declared_in_file(file: &Path, action: &'static str) -> Result<Vec<ProcessId>, AdminError> {
    let unreadable = |problems: Vec<String>| AdminError::UnreadableSpecFile {
        file: file.to_path_buf(),
        action,
        problems,
    };
    match std::fs::symlink_metadata(file) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(unreadable(vec![error.to_string()])),
        Ok(_) => {}
    }
    let text = read_bounded_text(file, MAX_SPEC_FILE_BYTES)
        .map_err(|message| unreadable(vec![message]))?;
    declared_names(file, &text).map_err(|errors| {
        let count = errors.len();
        let mut problems: Vec<String> = errors
            .iter()
            .take(MAX_NAMED_PROBLEMS)
            .map(|error| {
                let line = error
                    .line
                    .map_or_else(String::new, |line| format!(" (line {line})"));
                format!("document {}{line}: {}", error.document, error.message)
            })
            .collect();
        if count > MAX_NAMED_PROBLEMS {
            problems.push(format!("and {} more", count - MAX_NAMED_PROBLEMS));
        }
        unreadable(problems)
    })
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
    let mut files = files_for(specs_dir, &specs, &records)?;
    // What each of these files declares now, read from the file itself: the store knows only
    // what the watcher last applied, and a document it could not apply (a typo) is in the
    // file only.
    let mut declared: BTreeMap<PathBuf, Vec<ProcessId>> = BTreeMap::new();
    for file in &files {
        if !declared.contains_key(file) {
            declared.insert(file.clone(), declared_in_file(file, "rewritten")?);
        }
    }
    // A process the store does not know goes back into the file that declares it, if one of
    // these does (the document the watcher could not apply, fixed), rather than into a new one.
    for ((spec, record), file) in specs.iter().zip(&records).zip(files.iter_mut()) {
        let declares =
            |file: &PathBuf| declared.get(file).is_some_and(|ids| ids.contains(&spec.id));
        if record.is_none() && !declares(file) {
            if let Some(declaring) = declared.keys().find(|other| declares(other)) {
                *file = declaring.clone();
            }
        }
    }
    // Files in the order they first appear, with the documents each gets.
    let mut placed: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        match placed.iter_mut().find(|(placed, _)| placed == file) {
            Some((_, indices)) => indices.push(index),
            None => placed.push((file.clone(), vec![index])),
        }
    }
    // What a rewritten file declares beyond the text's processes would be undeclared: the ids
    // the store has from it, and the ones the file itself names.
    let applied: BTreeSet<&ProcessId> = specs.iter().map(|spec| &spec.id).collect();
    for (file, _) in &placed {
        let mut left: BTreeSet<ProcessId> = store
            .owned_by(&Source::file(file))
            .map_err(|error| AdminError::Store(error.into()))?
            .into_iter()
            .collect();
        left.extend(declared.get(file).into_iter().flatten().cloned());
        left.retain(|id| !applied.contains(id));
        if !left.is_empty() {
            return Err(AdminError::WouldUndeclare {
                file: file.clone(),
                ids: left.into_iter().collect(),
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
            let texts = indices
                .iter()
                .map(|index| {
                    let document = specs[*index].document;
                    document
                        .checked_sub(1)
                        .and_then(|at| documents.get(at))
                        .copied()
                        .ok_or_else(|| AdminError::MissingDocument {
                            origin: origin.to_string(),
                            document,
                        })
                })
                .collect::<Result<Vec<&str>, AdminError>>()?;
            joined_documents(texts.into_iter())
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
    // Removing a file undeclares all it declares: the ids the store has from it, and the ones
    // the file itself names (a document the watcher could not apply is in the file only).
    for (file, named) in &by_file {
        let mut others: BTreeSet<ProcessId> = store
            .owned_by(&Source::file(file))
            .map_err(store_error)?
            .into_iter()
            .collect();
        others.extend(declared_in_file(file, "removed")?);
        others.retain(|id| !named.contains(id));
        if !others.is_empty() {
            return Err(AdminError::WouldUndeclare {
                file: file.clone(),
                ids: others.into_iter().collect(),
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
    use crate::reconcile::fixtures::{observed_for, spec};
    use crate::reconcile::{Isolation, LimitMode, Phase};

    /// Logs are not what these tests read.
    struct NoLogs;

    impl super::super::logs::LogSource for NoLogs {
        fn select(
            &self,
            _id: &ProcessId,
            _lines: Option<usize>,
            _previous: bool,
            _since: Option<crate::reconcile::UnixMillis>,
        ) -> std::io::Result<Option<(Vec<u8>, u64)>> {
            Err(std::io::ErrorKind::NotFound.into())
        }
        fn read_from(&self, _id: &ProcessId, _offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }

    /// A context on a store and a spec directory in `dir`, with no loop: the tests play its
    /// part on the store.
    fn context(dir: &Path) -> (Arc<ApiContext>, tokio::sync::watch::Sender<bool>) {
        let specs_dir = dir.join("specs");
        std::fs::create_dir(&specs_dir).unwrap();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let context = ApiContext {
            store: Arc::new(Store::open(&dir.join("store")).unwrap()),
            catalog: Default::default(),
            specs_dir,
            problems: Default::default(),
            clock: crate::clock::system_clock(),
            stopping,
            launcher_id: "test".to_string(),
            started_at: crate::clock::now(),
            launch_wait: Duration::from_secs(1),
            default_isolation: Isolation::None,
            policy: super::super::control_plane::AssignmentPolicy {
                launcher_id: "test".to_string(),
                capabilities: Vec::new(),
                max_processes: None,
                allowed_roots: Vec::new(),
            },
            logs: Arc::new(NoLogs),
            limit_mode: LimitMode::Rlimit,
            usage: Default::default(),
            admin: super::super::admin_client::admin_link(
                None,
                None,
                crate::clock::now(),
                crate::clock::now(),
            )
            .1,
        };
        (Arc::new(context), stop)
    }

    /// Regression: `delete` answered once the process had stopped, while its record still
    /// waited for the loop to forget it, so a `status` right after still listed it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_answers_once_the_loop_has_forgotten_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let (context, _stop) = context(dir.path());
        let id = ProcessId::new("launched").unwrap();
        let store = context.store.clone();
        store.put_desired(&id, &spec(), &Source::Api).unwrap();
        store
            .put_observed(&observed_for("launched", Phase::Running, spec()))
            .unwrap();
        store.flush().unwrap();

        // The loop's part: once the process is undesired, its exit is recorded (one flush)...
        let mut changes = store.subscribe();
        let (stopped_sender, stopped) = tokio::sync::oneshot::channel();
        let (forget_sender, forget) = tokio::sync::oneshot::channel::<()>();
        let loop_store = store.clone();
        let loop_part = tokio::spawn(async move {
            while changes.recv().await.is_some() {
                if loop_store
                    .desired(&ProcessId::new("launched").unwrap())
                    .unwrap()
                    .is_none()
                {
                    break;
                }
            }
            loop_store
                .put_observed(&observed_for("launched", Phase::Stopped, spec()))
                .unwrap();
            loop_store.flush().unwrap();
            stopped_sender.send(()).unwrap();
            // ... and the record is forgotten with a later one.
            forget.await.unwrap();
            loop_store
                .delete_observed(&ProcessId::new("launched").unwrap())
                .unwrap();
            loop_store.flush().unwrap();
        });

        let request = pb::DeleteProcessesRequest {
            process_ids: vec![id.to_string()],
            grace_ms: None,
        };
        let mut deleting = tokio::spawn(delete_processes(context.clone(), request));
        stopped.await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut deleting)
                .await
                .is_err(),
            "delete answered while the record still waited to be forgotten"
        );
        forget_sender.send(()).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), deleting)
            .await
            .expect("delete answers once the record is forgotten")
            .unwrap()
            .unwrap();
        assert!(answer.processes[0].stopped, "{answer:?}");
        assert!(store.row(&id).unwrap().is_none());
        loop_part.await.unwrap();
    }

    #[test]
    fn a_deleted_process_is_one_forgotten_or_neither_desired_nor_running() {
        let id = ProcessId::new("web").unwrap();
        let row = |desired: bool, phase: Phase| {
            ProcessRow::new(
                id.clone(),
                desired.then(|| record("web", Source::Api).unwrap()),
                Some(observed_for("web", phase, spec())),
            )
        };
        assert!(is_deleted(None));
        assert!(is_deleted(row(false, Phase::Stopped).as_ref()));
        assert!(!is_deleted(row(false, Phase::Stopping).as_ref()));
        assert!(!is_deleted(row(true, Phase::Stopped).as_ref()));
    }

    /// Regression: `apply` and `delete` asked only the store what a file declares, and a
    /// document the watcher could not apply (a typo) is in the file only.
    #[test]
    fn a_file_declares_what_it_names_even_where_the_watcher_could_not_apply_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pair.yaml");
        assert_eq!(declared_in_file(&file, "removed").unwrap(), []);
        std::fs::write(
            &file,
            "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: left}\nspec: \
             {binary: /bin/sleep}\n---\napiVersion: prism.launcher/v1\nkind: Process\n\
             metadata: {name: right}\nspec: {binary: /bin/sleep, bogus: 1}\n",
        )
        .unwrap();
        assert_eq!(
            declared_in_file(&file, "removed").unwrap(),
            [
                ProcessId::new("left").unwrap(),
                ProcessId::new("right").unwrap()
            ]
        );
        // A document whose name cannot be read: what the file declares is unknown.
        std::fs::write(
            &file,
            "apiVersion: prism.launcher/v1\nkind: Process\nmetadata: {name: left}\n---\n\
             metadata: [unclosed\n",
        )
        .unwrap();
        let error = declared_in_file(&file, "rewritten").unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, AdminError::UnreadableSpecFile { .. })
                && message.contains("pair.yaml would be rewritten")
                && message.contains("document 2"),
            "{message}"
        );
    }

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
