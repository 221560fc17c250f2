use serde::{Deserialize, Serialize};
use todoapp_db::DatabaseSettings;
use todoapp_runtime::config::{ServerSettings, TlsFiles};
use todoapp_runtime::service::FileChecks;
use todoapp_runtime::ConfigError;

pub use crate::quota::QuotaSettings;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TodoConfig {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub tls: TlsFiles,
    pub database: DatabaseSettings,
    /// Byte budget of one ListToDo reply: a page ends early, with a
    /// continuation token, when the next entry would pass it.
    #[serde(default = "default_list_max_bytes")]
    pub list_max_bytes: usize,
    pub quota: QuotaSettings,
}

/// Smallest budget: one maximal entry (~8.8 KB) always fits with room.
pub const MIN_LIST_MAX_BYTES: usize = 64 * 1024;

fn default_list_max_bytes() -> usize {
    512 * 1024
}

impl Default for TodoConfig {
    fn default() -> Self {
        Self {
            server: ServerSettings::with_listen("127.0.0.1:50062"),
            tls: TlsFiles {
                cert: "todo.crt".into(),
                key: "todo.key".into(),
                client_ca: Some("internal-ca.crt".into()),
            },
            database: DatabaseSettings::sqlite("todo.db"),
            list_max_bytes: default_list_max_bytes(),
            quota: QuotaSettings::default(),
        }
    }
}

impl TodoConfig {
    pub fn validate(&self, files: FileChecks) -> Result<(), ConfigError> {
        self.tls.require_client_ca()?;
        if !(MIN_LIST_MAX_BYTES..=todoapp_api::MAX_LIST_REPLY_BYTES).contains(&self.list_max_bytes)
        {
            return Err(ConfigError::invalid(
                "list_max_bytes",
                format!(
                    "must be between {MIN_LIST_MAX_BYTES} and {}",
                    todoapp_api::MAX_LIST_REPLY_BYTES
                ),
            ));
        }
        self.database.validate(files)?;
        self.quota.validate()?;
        if files == FileChecks::Read {
            todoapp_runtime::tls::server_config(&self.tls)?;
        }
        Ok(())
    }
}
