//! Support for running todoapp on one machine: the `todoapp-stack`
//! launcher and the test suites use it. Nothing here runs in production.

pub mod bins;
pub mod galera;
pub mod mariadb;
pub mod pki;
pub mod process;
pub mod stack;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0}")]
    Missing(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("MariaDB: {0}")]
    MariaDb(String),
}

impl DevError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| DevError::Io { context, source }
    }
}
