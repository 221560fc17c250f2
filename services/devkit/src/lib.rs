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

/// A TOML table of these entries, for the service configs the stack and
/// the tests write: serialised with the toml crate, any path or URL in it
/// is escaped as TOML needs.
pub fn toml_table<const N: usize>(entries: [(&str, toml::Value); N]) -> toml::Table {
    entries
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}
