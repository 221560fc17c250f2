use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use todoapp_db::DatabaseSettings;
use todoapp_runtime::config::{ServerSettings, TlsFiles};
use todoapp_runtime::service::FileChecks;
use todoapp_runtime::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserConfig {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub tls: TlsFiles,
    pub database: DatabaseSettings,
    pub jwt: JwtSettings,
    pub argon2: Argon2Settings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Ed25519 private key, PKCS#8 PEM.
    pub private_key: PathBuf,
    pub issuer: String,
    pub audience: String,
    /// Token lifetime; at most 24 h.
    pub lifetime_secs: u64,
}

/// argon2id cost. Defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; 0 means one per CPU. Calls beyond it queue,
    /// so a login burst cannot take every thread from other calls.
    pub max_concurrent_hashes: usize,
}

pub const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

impl Default for UserConfig {
    fn default() -> Self {
        Self {
            server: ServerSettings::with_listen("127.0.0.1:50061"),
            tls: TlsFiles {
                cert: "user.crt".into(),
                key: "user.key".into(),
                client_ca: Some("internal-ca.crt".into()),
            },
            database: DatabaseSettings::sqlite("user.db"),
            jwt: JwtSettings {
                private_key: "jwt-ed25519.key".into(),
                issuer: "todoapp".into(),
                audience: "todoapp".into(),
                lifetime_secs: 3600,
            },
            argon2: Argon2Settings {
                memory_kib: 19 * 1024,
                iterations: 2,
                parallelism: 1,
                max_concurrent_hashes: 0,
            },
        }
    }
}

impl UserConfig {
    pub fn validate(&self, files: FileChecks) -> Result<(), ConfigError> {
        self.tls.require_client_ca()?;
        self.database.validate(files)?;
        let jwt = &self.jwt;
        if jwt.lifetime_secs == 0 || jwt.lifetime_secs > MAX_TOKEN_LIFETIME_SECS {
            return Err(ConfigError::invalid(
                "jwt.lifetime_secs",
                "must be between 1 and 86400",
            ));
        }
        if jwt.issuer.is_empty() {
            return Err(ConfigError::invalid("jwt.issuer", "must not be empty"));
        }
        if jwt.audience.is_empty() {
            return Err(ConfigError::invalid("jwt.audience", "must not be empty"));
        }
        crate::password::params(&self.argon2)?;
        if files == FileChecks::Read {
            todoapp_runtime::tls::server_config(&self.tls)?;
            crate::token::TokenIssuer::load(jwt)?;
        }
        Ok(())
    }
}
