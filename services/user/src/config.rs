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
    pub throttle: ThrottleSettings,
}

/// Login and registration limits (see `throttle.rs`). The counters are kept
/// in the user database, shared by every instance over it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSettings {
    /// Failed logins for one username from one address before lockouts start.
    pub login_failures: u32,
    /// A username/address pair's failures are forgotten after this long without one.
    pub login_window_secs: u64,
    /// The first lockout; it doubles with each further failure.
    pub login_backoff_initial_ms: u64,
    /// The longest lockout.
    pub login_backoff_max_secs: u64,
    /// Failed logins from one address, across usernames, per window.
    pub address_failures: u32,
    pub address_window_secs: u64,
    /// Registration attempts from one address per window.
    pub registrations: u32,
    pub registration_window_secs: u64,
    /// Counters of each kind kept (checked every minute) and refusals
    /// remembered in memory; the least recently used are forgotten.
    pub max_tracked: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            login_failures: 5,
            login_window_secs: 15 * 60,
            login_backoff_initial_ms: 1000,
            login_backoff_max_secs: 15 * 60,
            address_failures: 30,
            address_window_secs: 10 * 60,
            registrations: 10,
            registration_window_secs: 3600,
            max_tracked: 100_000,
        }
    }
}

impl ThrottleSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("throttle.login_failures", u64::from(self.login_failures)),
            ("throttle.login_window_secs", self.login_window_secs),
            (
                "throttle.login_backoff_initial_ms",
                self.login_backoff_initial_ms,
            ),
            (
                "throttle.login_backoff_max_secs",
                self.login_backoff_max_secs,
            ),
            (
                "throttle.address_failures",
                u64::from(self.address_failures),
            ),
            ("throttle.address_window_secs", self.address_window_secs),
            ("throttle.registrations", u64::from(self.registrations)),
            (
                "throttle.registration_window_secs",
                self.registration_window_secs,
            ),
            ("throttle.max_tracked", self.max_tracked as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        // A day bounds every window and lockout: longer ones only lock out
        // users, and keep Instant arithmetic far from overflow.
        const DAY: u64 = 24 * 3600;
        for (key, secs) in [
            ("throttle.login_window_secs", self.login_window_secs),
            (
                "throttle.login_backoff_max_secs",
                self.login_backoff_max_secs,
            ),
            ("throttle.address_window_secs", self.address_window_secs),
            (
                "throttle.registration_window_secs",
                self.registration_window_secs,
            ),
        ] {
            if secs > DAY {
                return Err(ConfigError::invalid(key, "must be at most 86400"));
            }
        }
        if self.login_backoff_initial_ms > self.login_backoff_max_secs * 1000 {
            return Err(ConfigError::invalid(
                "throttle.login_backoff_initial_ms",
                "must not exceed throttle.login_backoff_max_secs",
            ));
        }
        Ok(())
    }
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
            throttle: ThrottleSettings::default(),
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
        self.throttle.validate()?;
        if files == FileChecks::Read {
            todoapp_runtime::tls::server_config(&self.tls)?;
            crate::token::TokenIssuer::load(jwt)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut ThrottleSettings)) -> String {
        let mut config = UserConfig::default();
        change(&mut config.throttle);
        config
            .validate(FileChecks::Skip)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn throttle_limits_are_validated_by_name() {
        UserConfig::default()
            .validate(FileChecks::Skip)
            .expect("defaults are valid");
        assert!(refused(|t| t.login_failures = 0).contains("throttle.login_failures"));
        assert!(refused(|t| t.max_tracked = 0).contains("throttle.max_tracked"));
        assert!(
            refused(|t| t.address_window_secs = 90_000).contains("throttle.address_window_secs")
        );
        assert!(refused(|t| t.login_backoff_initial_ms = 901_000)
            .contains("throttle.login_backoff_initial_ms"));
    }

    #[test]
    fn debug_of_the_config_does_not_show_the_database_password() {
        let mut config = UserConfig::default();
        config.database.url =
            todoapp_runtime::Secret::new("mysql://todoapp:s3cret-pw@db/todoapp_user".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("url: Secret(<redacted>)"), "{shown}");
    }
}
