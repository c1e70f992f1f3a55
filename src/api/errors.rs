//! The one place where errors become gRPC statuses.

use tonic::Status;

use super::blocking::BlockingStoreError;
use super::control_plane::AssignmentError;
use super::pattern_launcher::PatternError;
use crate::error_chain::Chain;
use crate::store::StoreError;

/// The status a store failure answers with.
pub fn store_status(error: StoreError) -> Status {
    let message = Chain(&error).to_string();
    match &error {
        StoreError::OwnedByAnother { .. }
        | StoreError::UnsupportedSchema { .. }
        | StoreError::UnreadableSchema { .. }
        | StoreError::StaleVersion { .. } => Status::failed_precondition(message),
        StoreError::Open { .. }
        | StoreError::Locked { .. }
        | StoreError::Io { .. }
        | StoreError::Corrupt { .. }
        | StoreError::Encode { .. } => Status::internal(message),
    }
}

/// The status of a store operation run on the blocking pool.
pub fn blocking_status(error: BlockingStoreError) -> Status {
    match error {
        BlockingStoreError::Store(error) => store_status(error),
        BlockingStoreError::Interrupted(error) => Status::unavailable(Chain(&error).to_string()),
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
        | AssignmentError::NegativeTimeout(_) => Status::invalid_argument(message),
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
