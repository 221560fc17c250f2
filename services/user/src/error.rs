//! The user service's one error type, mapped to gRPC codes in one place.

use todoapp_db::StoreError;

use crate::store::unique_field;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{field} {reason}")]
    InvalidArgument {
        field: &'static str,
        reason: &'static str,
    },
    #[error("{0} is already registered")]
    AlreadyExists(&'static str),
    #[error("invalid username or password")]
    BadCredentials,
    /// Too many attempts from this address (for this username): retry after the wait.
    #[error("too many attempts; retry in {} s", .0.as_secs().max(1))]
    Throttled(std::time::Duration),
    #[error("service temporarily unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl UserError {
    pub fn invalid(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidArgument { field, reason }
    }
}

impl From<StoreError> for UserError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Unavailable(_) => UserError::Unavailable(error.detail()),
            StoreError::Conflict { constraint, .. } => match unique_field(constraint) {
                Some(field) => UserError::AlreadyExists(field),
                None => UserError::Internal(error.detail()),
            },
            StoreError::Internal(_) => UserError::Internal(error.detail()),
        }
    }
}

impl From<crate::throttle::Throttled> for UserError {
    fn from(throttled: crate::throttle::Throttled) -> Self {
        UserError::Throttled(throttled.retry_after)
    }
}

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        match error {
            UserError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            UserError::AlreadyExists(_) => Status::already_exists(error.to_string()),
            UserError::BadCredentials => Status::unauthenticated(error.to_string()),
            UserError::Throttled(wait) => throttled(&error.to_string(), wait),
            // Logged there, once; clients get the generic text only.
            UserError::Unavailable(detail) => todoapp_runtime::grpc::unavailable(&detail),
            UserError::Internal(detail) => todoapp_runtime::grpc::internal(&detail),
        }
    }
}

/// RESOURCE_EXHAUSTED with the wait in `google.rpc.RetryInfo` (for clients
/// that read rich error details) and in `grpc-retry-pushback-ms` (which
/// gRPC clients with a retry policy honour).
fn throttled(message: &str, wait: std::time::Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut status = Status::with_error_details(
        tonic::Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(wait)),
    );
    status.metadata_mut().insert(
        todoapp_runtime::grpc::RETRY_PUSHBACK_HEADER,
        tonic::metadata::MetadataValue::from(wait.as_millis() as u64),
    );
    status
}
