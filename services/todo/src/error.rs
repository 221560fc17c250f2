//! The todo service's one error type, mapped to gRPC codes in one place.

use todoapp_db::StoreError;
use tonic::Status;

use crate::quota::{QuotaExceeded, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum TodoError {
    #[error("{field} {reason}")]
    InvalidArgument {
        field: &'static str,
        reason: &'static str,
    },
    #[error(transparent)]
    QuotaExceeded(#[from] QuotaExceeded),
    #[error("no such todo entry")]
    NotFound,
    /// A request_id reused with other content (AIP-155).
    #[error("request_id was already used for a different entry")]
    RequestIdReused,
    #[error("missing caller identity")]
    Unauthenticated,
    #[error("service temporarily unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl TodoError {
    pub fn invalid(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidArgument { field, reason }
    }
}

impl From<StoreError> for TodoError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Unavailable(_) => TodoError::Unavailable(error.detail()),
            StoreError::Conflict { .. } | StoreError::Internal(_) => {
                TodoError::Internal(error.detail())
            }
        }
    }
}

impl From<WriteError> for TodoError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Quota(exceeded) => exceeded.into(),
            WriteError::Store(store) => store.into(),
        }
    }
}

impl From<TodoError> for Status {
    fn from(error: TodoError) -> Self {
        match error {
            TodoError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            TodoError::QuotaExceeded(_) => Status::resource_exhausted(error.to_string()),
            TodoError::NotFound => Status::not_found(error.to_string()),
            TodoError::RequestIdReused => Status::already_exists(error.to_string()),
            TodoError::Unauthenticated => Status::unauthenticated(error.to_string()),
            // Logged there, once; clients get the generic text only.
            TodoError::Unavailable(detail) => todoapp_runtime::grpc::unavailable(&detail),
            TodoError::Internal(detail) => todoapp_runtime::grpc::internal(&detail),
        }
    }
}
