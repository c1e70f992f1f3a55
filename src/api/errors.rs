//! The one place where errors become gRPC statuses.

use tonic::Status;

use crate::store::StoreError;

/// The status a store failure answers with.
pub fn store_status(error: StoreError) -> Status {
    match &error {
        StoreError::OwnedByAnother { .. } => Status::failed_precondition(error.to_string()),
        StoreError::UnsupportedSchema { .. } => Status::failed_precondition(error.to_string()),
        StoreError::Open { .. }
        | StoreError::Io { .. }
        | StoreError::Corrupt { .. }
        | StoreError::Encode { .. } => Status::internal(error.to_string()),
    }
}
