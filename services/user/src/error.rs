//! The user service's one error type, mapped to gRPC codes in one place.

use todoapp_db::StoreError;
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
        match error {
            StoreError::Unavailable(detail) => UserError::Unavailable(detail),
            StoreError::Conflict(detail) if detail.contains("email") => {
                UserError::AlreadyExists("email")
            }
            StoreError::Conflict(detail) if detail.contains("username") => {
                UserError::AlreadyExists("username")
            }
            StoreError::Conflict(detail) | StoreError::Internal(detail) => {
                UserError::Internal(detail)
            }
        }
    }
}

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        match error {
            UserError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            UserError::AlreadyExists(_) => Status::already_exists(error.to_string()),
            UserError::BadCredentials => Status::unauthenticated(error.to_string()),
            // Logged there, once; clients get the generic text only.
            UserError::Unavailable(detail) => todoapp_runtime::grpc::unavailable(&detail),
            UserError::Internal(detail) => todoapp_runtime::grpc::internal(&detail),
        }
    }
}
