//! The one place where errors become gRPC statuses.

use tonic::Status;

use crate::error_chain::Chain;
use crate::store::StoreError;

/// The status a store failure answers with.
pub fn store_status(error: StoreError) -> Status {
    let message = Chain(&error).to_string();
    match &error {
        StoreError::OwnedByAnother { .. } | StoreError::UnsupportedSchema { .. } => {
            Status::failed_precondition(message)
        }
        StoreError::Open { .. }
        | StoreError::Locked { .. }
        | StoreError::Io { .. }
        | StoreError::Corrupt { .. }
        | StoreError::Encode { .. } => Status::internal(message),
    }
}
