//! The errors of the gRPC services and the one place where errors become gRPC statuses.

use tonic::Status;

use std::path::PathBuf;
use std::time::Duration;

use super::auth::Denial;
use super::blocking::{BlockingStoreError, Interrupted};
use crate::error_chain::Chain;
use crate::reconcile::{
    echo, InvalidProcessId, OperatorRefusal, ProcessId, ProcessType, Source, UnknownWord,
    MAX_DURATION, MAX_ENTRIES,
};
use crate::sources::applied::SpecDirWriteError;
use crate::store::StoreError;

/// The status a store failure answers with.
pub fn store_status(error: StoreError) -> Status {
    let message = Chain(&error).to_string();
    match &error {
        StoreError::OwnedByAnother { .. }
        | StoreError::UnsupportedSchema { .. }
        | StoreError::UnreadableSchema { .. }
        | StoreError::StaleVersion { .. }
        | StoreError::StaleAdminTerm(_) => Status::failed_precondition(message),
        StoreError::Open { .. }
        | StoreError::Locked { .. }
        | StoreError::Replaced { .. }
        | StoreError::Io { .. }
        | StoreError::Journal { .. }
        | StoreError::Corrupt { .. }
        | StoreError::Encode { .. } => Status::internal(message),
        // The store is being opened again after it gave its memory back: a later call retries.
        StoreError::Reopen { .. } | StoreError::Closed { .. } => Status::unavailable(message),
    }
}

/// The status of a call the authentication layer refused: UNAUTHENTICATED when credentials are
/// missing or wrong, PERMISSION_DENIED when the caller is known and not allowed.
pub fn denial_status(denial: Denial) -> Status {
    let message = denial.to_string();
    match denial {
        Denial::NoToken { .. } | Denial::WrongToken { .. } | Denial::NotProven { .. } => {
            Status::unauthenticated(message)
        }
        Denial::NoPeer { .. } | Denial::Peer { .. } => Status::permission_denied(message),
    }
}

/// The status of a store operation run on the blocking pool.
pub fn blocking_status(error: BlockingStoreError) -> Status {
    match error {
        BlockingStoreError::Store(error) => store_status(error),
        BlockingStoreError::Interrupted(error) => Status::unavailable(Chain(&error).to_string()),
    }
}

/// The status of a message that could not be decoded (`api::codec`): prost reports it as
/// INTERNAL, but a request that is not valid protobuf (a string that is not UTF-8, a truncated
/// field) is the caller's error. prost's message names the message and field, e.g.
/// `failed to decode Protobuf message: LaunchRequest.pattern_name: invalid string value: data
/// is not UTF-8 encoded`.
pub fn decode_status(error: Status) -> Status {
    match error.code() {
        tonic::Code::Internal => Status::invalid_argument(error.message()),
        _ => error,
    }
}

/// The status a refused PatternLauncher call answers with.
pub fn pattern_status(error: PatternError) -> Status {
    let message = Chain(&error).to_string();
    match error {
        PatternError::MissingPatternName
        | PatternError::TooLong { .. }
        | PatternError::InvalidId(_)
        | PatternError::InvalidSpec(_)
        | PatternError::TooMuchConfig { .. }
        | PatternError::BadGrace(_)
        | PatternError::BadEnum { .. }
        | PatternError::MissingProcessId => Status::invalid_argument(message),
        PatternError::UnknownPattern { .. } | PatternError::UnknownProcess { .. } => {
            Status::not_found(message)
        }
        PatternError::NotLaunchedHere { .. } | PatternError::OtherPattern { .. } => {
            Status::failed_precondition(message)
        }
        PatternError::ShuttingDown | PatternError::Interrupted(_) => Status::unavailable(message),
        PatternError::Store(error) => store_status(error),
    }
}

/// The status a refused ControlPlane call answers with.
pub fn assignment_status(error: AssignmentError) -> Status {
    let message = Chain(&error).to_string();
    match error {
        AssignmentError::MissingId
        | AssignmentError::InvalidId(_)
        | AssignmentError::UnknownType(_)
        | AssignmentError::MissingConfig
        | AssignmentError::MissingBinary
        | AssignmentError::RelativeBinary(_)
        | AssignmentError::UnusableBinary { .. }
        | AssignmentError::BadPort { .. }
        | AssignmentError::BadIsolation(_)
        | AssignmentError::InvalidSpec(_)
        | AssignmentError::TooLong { .. }
        | AssignmentError::NegativeVersion(_)
        | AssignmentError::MissingLauncherId
        | AssignmentError::BadTerm(_)
        | AssignmentError::BadTimeout(_) => Status::invalid_argument(message),
        AssignmentError::OutsideRoots { .. } => Status::permission_denied(message),
        AssignmentError::NotCapable { .. }
        | AssignmentError::WrongLauncher { .. }
        | AssignmentError::NotAssigned { .. } => Status::failed_precondition(message),
        AssignmentError::AtCapacity { .. } => Status::resource_exhausted(message),
        AssignmentError::UnknownProcess(_) => Status::not_found(message),
        AssignmentError::ShuttingDown | AssignmentError::Interrupted(_) => {
            Status::unavailable(message)
        }
        AssignmentError::Store(error) => store_status(error),
    }
}

/// The status a refused LauncherAdmin call answers with.
pub fn admin_status(error: AdminError) -> Status {
    let message = Chain(&error).to_string();
    match error {
        AdminError::InvalidId(_)
        | AdminError::PreviousFollowed(_)
        | AdminError::TooLong { .. }
        | AdminError::BadBaseDir(_)
        | AdminError::NoIds
        | AdminError::BadGrace(_)
        | AdminError::SpecDir(SpecDirWriteError::TooLarge { .. }) => {
            Status::invalid_argument(message)
        }
        AdminError::UnknownProcess(_)
        | AdminError::NotKnown(_)
        | AdminError::NoLog(_)
        | AdminError::NoPreviousInstance(_) => Status::not_found(message),
        AdminError::Refused(_)
        | AdminError::OwnedElsewhere { .. }
        | AdminError::WouldUndeclare { .. }
        | AdminError::OutsideSpecDir { .. }
        | AdminError::UnreadableSpecFile { .. }
        | AdminError::SpecDir(
            SpecDirWriteError::Symlink { .. }
            | SpecDirWriteError::NotRegular { .. }
            | SpecDirWriteError::NotInDirectory { .. }
            | SpecDirWriteError::NotWritable { .. },
        ) => Status::failed_precondition(message),
        AdminError::UnreadableLog { .. }
        | AdminError::MissingDocument { .. }
        | AdminError::SpecDir(
            SpecDirWriteError::Write { .. }
            | SpecDirWriteError::Remove { .. }
            | SpecDirWriteError::NotDurable { .. },
        ) => Status::internal(message),
        AdminError::NotUndesired { .. } => Status::deadline_exceeded(message),
        AdminError::Interrupted { .. } | AdminError::ShuttingDown => Status::unavailable(message),
        AdminError::Store(error) => blocking_status(error),
    }
}

/// Why a LauncherAdmin call (reset, logs, the operator's verbs, describe, apply, delete) was
/// refused; `errors::admin_status` maps each to a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    InvalidId(InvalidProcessId),
    #[error("nothing desires a process {}", echo(.0))]
    UnknownProcess(String),
    #[error("no process {} is known to this launcher (neither desired nor running)", echo(.0))]
    NotKnown(String),
    /// The verb does not apply to the process as it is (a restart of a held process).
    #[error(transparent)]
    Refused(OperatorRefusal),
    #[error("no log for process {0}")]
    NoLog(ProcessId),
    #[error(
        "the log of {0} holds no instance before the last one (its current and rotated files \
         were read)"
    )]
    NoPreviousInstance(ProcessId),
    #[error("the previous instance of {0} has ended: its log cannot be followed")]
    PreviousFollowed(ProcessId),
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("base_dir {0} is not an absolute path without NUL bytes")]
    BadBaseDir(String),
    #[error(
        "process {id} is declared by {}, not by a spec file; {hint}{}",
        owner_name(.owner),
        and_more(*.others)
    )]
    OwnedElsewhere {
        id: ProcessId,
        owner: Source,
        hint: &'static str,
        /// More ids refused for the same reason.
        others: usize,
    },
    #[error(
        "{} also declares {}, which this would undeclare; name them too, or edit the file",
        file.display(),
        id_list(.ids)
    )]
    WouldUndeclare { file: PathBuf, ids: Vec<ProcessId> },
    /// A spec-directory file that `apply` would rewrite or `delete` remove, whose declared
    /// names cannot all be read: what it declares cannot be kept, so it is not touched.
    #[error(
        "{} would be {action}, but what it declares cannot be read ({}); fix or remove the file \
         by hand first",
        file.display(),
        problems.join("; ")
    )]
    UnreadableSpecFile {
        file: PathBuf,
        action: &'static str,
        problems: Vec<String>,
    },
    /// A document the parser named that the text does not hold (never expected: both come from
    /// the same split of the text).
    #[error("{origin}: document {document} of the text cannot be found to write it")]
    MissingDocument { origin: String, document: usize },
    #[error(
        "process {id} is declared by {}, outside the spec directory {}; the launcher removes it \
         at its next scan",
        file.display(),
        specs_dir.display()
    )]
    OutsideSpecDir {
        id: ProcessId,
        file: PathBuf,
        specs_dir: PathBuf,
    },
    #[error("process_ids is empty; name at least one process")]
    NoIds,
    #[error("grace_ms {0} is out of range: it may be at most {max} ms", max = MAX_DURATION.as_millis())]
    BadGrace(u64),
    #[error(
        "removed {}, but the spec watcher had not undeclared its processes after {waited:?}; see \
         `prism-launcher status`",
        files.iter().map(|file| file.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotUndesired {
        files: Vec<PathBuf>,
        waited: Duration,
    },
    #[error(transparent)]
    SpecDir(#[from] SpecDirWriteError),
    #[error("the launcher is shutting down")]
    ShuttingDown,
    #[error("cannot read the log of {id}: {error}")]
    UnreadableLog {
        id: ProcessId,
        error: std::io::Error,
    },
    #[error("cannot read the log of {id}: {error}")]
    Interrupted { id: ProcessId, error: Interrupted },
    #[error(transparent)]
    Store(#[from] BlockingStoreError),
}

/// `api`, or `admin v3`: who declared a process, for a message.
fn owner_name(owner: &Source) -> String {
    match owner {
        Source::Admin { version } => format!("{owner} v{version}"),
        Source::Api | Source::File { .. } => owner.to_string(),
    }
}

/// ` (and 2 more like it)`, or nothing.
fn and_more(others: usize) -> String {
    match others {
        0 => String::new(),
        others => format!(" (and {others} more like it)"),
    }
}

/// Ids as a comma-separated list.
fn id_list(ids: &[ProcessId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a PatternLauncher call was refused; `errors::pattern_status` maps each to a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("pattern_name is required")]
    MissingPatternName,
    #[error("pattern {} is not in the catalog (known: {known})", echo(.name))]
    UnknownPattern { name: String, known: String },
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} {value} is not one of the values the enum defines")]
    BadEnum { field: &'static str, value: i32 },
    /// The id made of `namespace`, `session_id` and the pattern's name is not a valid id.
    #[error("namespace, session_id and pattern_name make an invalid process id")]
    InvalidId(#[source] InvalidProcessId),
    /// The spec the launch makes is not valid (`ProcessSpec::problems`, worded for the wire).
    #[error("invalid launch: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),
    #[error("config has {count} entries; at most {MAX_ENTRIES} are allowed")]
    TooMuchConfig { count: usize },
    #[error("grace_period_secs {0} is out of range: it must be between 0 and {max}", max = MAX_DURATION.as_secs())]
    BadGrace(i64),
    #[error("process_id is required")]
    MissingProcessId,
    #[error("no process {} is known to this launcher", echo(.id))]
    UnknownProcess { id: String },
    #[error("process {id} is declared by {owner}, not launched over the API; {hint}")]
    NotLaunchedHere {
        id: ProcessId,
        owner: Source,
        hint: &'static str,
    },
    #[error("process {id} runs pattern {running:?}, not {}", echo(.requested))]
    OtherPattern {
        id: ProcessId,
        running: String,
        requested: String,
    },
    #[error("the launcher is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

impl From<BlockingStoreError> for PatternError {
    fn from(error: BlockingStoreError) -> PatternError {
        match error {
            BlockingStoreError::Store(error) => PatternError::Store(error),
            BlockingStoreError::Interrupted(error) => PatternError::Interrupted(error),
        }
    }
}

/// Why an assignment or revocation was refused; `errors::assignment_status` maps each to a code.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    #[error("process_id is required")]
    MissingId,
    #[error("process_id is not valid")]
    InvalidId(#[source] InvalidProcessId),
    #[error("process_type: {0}")]
    UnknownType(UnknownWord),
    #[error("launcher {launcher_id} does not run {process_type} processes (capabilities: {capabilities})")]
    NotCapable {
        launcher_id: String,
        process_type: ProcessType,
        capabilities: String,
    },
    #[error("launcher {launcher_id} is full: it runs at most {max} processes")]
    AtCapacity { launcher_id: String, max: u32 },
    #[error("config is required")]
    MissingConfig,
    #[error("config.binary is required (or a pattern whose pattern_type is in the catalog)")]
    MissingBinary,
    #[error("config.binary {} must be an absolute path", echo(.0))]
    RelativeBinary(String),
    #[error("config.binary {} cannot be used: {reason}", echo(.binary))]
    UnusableBinary { binary: String, reason: String },
    #[error("config.binary {} is outside the allowed executable roots ({roots})", echo(.binary))]
    OutsideRoots { binary: String, roots: String },
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("version {0} is negative; assignment versions start at 0")]
    NegativeVersion(i64),
    #[error("launcher_id is required: a revocation names the launcher it is meant for")]
    MissingLauncherId,
    #[error("{field} {value} is not a port (1-65535)")]
    BadPort { field: &'static str, value: i32 },
    #[error("config.pattern.isolation_level: {0}")]
    BadIsolation(UnknownWord),
    /// The spec the assignment makes is not valid (`ProcessSpec::problems`, worded for the wire).
    #[error("invalid assignment: {}", .0.join("; "))]
    InvalidSpec(Vec<String>),
    #[error("this is launcher {ours}, not {}", echo(.asked))]
    WrongLauncher { ours: String, asked: String },
    #[error("graceful_timeout_seconds {0} is out of range: it must be between 0 and {max}", max = MAX_DURATION.as_secs())]
    BadTimeout(i32),
    #[error("no process {} is assigned to this launcher", echo(.0))]
    UnknownProcess(String),
    #[error("process {id} is declared by {owner}, not assigned by prism-admin")]
    NotAssigned { id: ProcessId, owner: Source },
    #[error("the launcher is shutting down")]
    ShuttingDown,
    #[error(
        "the {key} metadata {} is not a term: a whole number from 0 to {max}",
        echo(.0),
        key = crate::reconcile::ADMIN_TERM_KEY,
        max = u64::MAX
    )]
    BadTerm(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

impl From<BlockingStoreError> for AssignmentError {
    fn from(error: BlockingStoreError) -> AssignmentError {
        match error {
            BlockingStoreError::Store(error) => AssignmentError::Store(error),
            BlockingStoreError::Interrupted(error) => AssignmentError::Interrupted(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a spec directory the launcher may not write answered INTERNAL, as if the
    /// launcher had failed; it is the operator's to fix, and the message says how.
    #[test]
    fn a_spec_directory_the_launcher_may_not_change_is_a_failed_precondition() {
        let not_writable = AdminError::SpecDir(SpecDirWriteError::NotWritable {
            action: crate::sources::applied::SpecDirAction::Write,
            path: PathBuf::from("/specs/a.yaml"),
            dir: PathBuf::from("/specs"),
            error: std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
        });
        let status = admin_status(not_writable);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("make it writable"), "{status:?}");

        let unreadable = AdminError::UnreadableSpecFile {
            file: PathBuf::from("/specs/pair.yaml"),
            action: "removed",
            problems: vec!["document 2: did not find expected node content".to_string()],
        };
        assert_eq!(
            admin_status(unreadable).code(),
            tonic::Code::FailedPrecondition
        );
        let not_durable = AdminError::SpecDir(SpecDirWriteError::NotDurable {
            done: "written",
            path: PathBuf::from("/specs/a.yaml"),
            dir: PathBuf::from("/specs"),
            source: std::io::Error::from(std::io::ErrorKind::Other),
        });
        let status = admin_status(not_durable);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status
                .message()
                .starts_with("/specs/a.yaml is written, but may not be durable"),
            "{status:?}"
        );
    }
}
