//! The one error type of todoctl: a one-line message and its exit status.

use tonic::Code;

#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Auth(String),
    NotFound(String),
    Unavailable(String),
    Other(String),
    /// Already reported (one line per failed item); only the status is left.
    Silent(u8),
}

impl CliError {
    /// The documented exit status (see `cli::EXIT_STATUS`).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Auth(_) => 3,
            CliError::NotFound(_) => 4,
            CliError::Unavailable(_) => 5,
            CliError::Silent(code) => *code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CliError::Usage(m)
            | CliError::Auth(m)
            | CliError::NotFound(m)
            | CliError::Unavailable(m)
            | CliError::Other(m) => m,
            CliError::Silent(_) => "",
        }
    }

    /// A gRPC status answering `what` (e.g. "login"), as a person reads it.
    pub fn from_status(what: &str, status: &tonic::Status) -> Self {
        let detail = one_line(status.message());
        let detail = if detail.is_empty() {
            format!("{:?}", status.code())
        } else {
            detail
        };
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                CliError::Auth(format!("{what}: {detail}"))
            }
            Code::NotFound => CliError::NotFound(format!("{what}: not found")),
            Code::InvalidArgument | Code::OutOfRange => {
                CliError::Usage(format!("{what}: {detail}"))
            }
            Code::Unavailable | Code::DeadlineExceeded => {
                CliError::Unavailable(format!("{what}: gateway unavailable: {detail}"))
            }
            Code::AlreadyExists => CliError::Other(format!("{what}: {detail}")),
            Code::ResourceExhausted => CliError::Other(format!(
                "{what}: refused for now ({detail}); try again later"
            )),
            _ => CliError::Other(format!("{what}: {detail}")),
        }
    }
}

/// Messages end up on one terminal line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

pub type Result<T> = std::result::Result<T, CliError>;
