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
    pub quota: QuotaSettings,
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
            quota: QuotaSettings::default(),
        }
    }
}

impl TodoConfig {
    pub fn validate(&self, files: FileChecks) -> Result<(), ConfigError> {
        self.tls.require_client_ca()?;
        self.database.validate(files)?;
        self.quota.validate()?;
        if files == FileChecks::Read {
            todoapp_runtime::tls::server_config(&self.tls)?;
        }
        Ok(())
    }
}
