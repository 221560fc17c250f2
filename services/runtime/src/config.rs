//! Layered configuration: built-in defaults < TOML file < environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A configuration problem, reported as one line naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration: `{key}`: cannot read {path}: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl ConfigError {
    pub fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }

    pub fn file(key: &'static str, path: &Path, reason: impl fmt::Display) -> Self {
        Self::File {
            key,
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Loads `T` from defaults, then `file` (which must exist when given), then
/// environment variables `TODOAPP_<SERVICE>_<KEY>` (nested keys joined by `__`,
/// e.g. `TODOAPP_GATEWAY_TLS__CERT`).
pub fn load<T>(service: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError::Parse(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let prefix = format!("TODOAPP_{}_", service.to_ascii_uppercase());
    figment = figment.merge(Env::prefixed(&prefix).split("__"));
    // Errors in the keys every service flattens into its top level (the
    // ServerSettings) lose their key path through serde's flatten;
    // extracting those settings alone first keeps it.
    figment
        .extract::<ServerSettings>()
        .map_err(|e| ConfigError::Parse(one_line(&e)))?;
    figment
        .extract::<T>()
        .map_err(|e| ConfigError::Parse(one_line(&e)))
}

fn one_line(error: &figment::Error) -> String {
    // figment's Display already names the key and the source; keep it to the first error.
    error.to_string().replace('\n', " ")
}

/// Resolves a key or certificate path. Relative paths resolve against
/// `$CREDENTIALS_DIRECTORY` when systemd's `LoadCredential=` set it.
pub fn resolve_path(path: &Path) -> PathBuf {
    if path.is_relative() {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            return Path::new(&dir).join(path);
        }
    }
    path.to_path_buf()
}

/// Reads a file named by setting `key` (resolved with [`resolve_path`]).
pub fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let resolved = resolve_path(path);
    std::fs::read(&resolved).map_err(|e| ConfigError::file(key, &resolved, e))
}

/// A value that must never reach logs: its `Debug` is redacted.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Settings of a service's own gRPC server.
///
/// Services flatten this into their top level, so the keys are `listen`,
/// `max_message_bytes`, ... (`TODOAPP_GATEWAY_LISTEN` in the environment).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerSettings {
    /// Address to bind when not socket-activated.
    pub listen: String,
    /// Log filter (`RUST_LOG` syntax); `RUST_LOG` itself wins when set.
    pub log_level: String,
    /// Largest accepted request message, in bytes.
    pub max_message_bytes: usize,
    /// TLS handshakes slower than this are dropped.
    pub tls_handshake_timeout_secs: u64,
    /// On SIGTERM, in-flight calls get this long to finish.
    pub shutdown_timeout_secs: u64,
}

impl ServerSettings {
    pub fn with_listen(listen: &str) -> Self {
        Self {
            listen: listen.to_owned(),
            log_level: "info".to_owned(),
            max_message_bytes: 64 * 1024,
            tls_handshake_timeout_secs: 10,
            shutdown_timeout_secs: 10,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.max_message_bytes < 1024 || self.max_message_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "max_message_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if self.tls_handshake_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "tls_handshake_timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "listen",
                format!("`{}` is not an IP:port address", self.listen),
            )
        })
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// A service's own certificate and key, plus the CA its clients must
/// present certificates from (backends: required; gateway: none).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Backends serve only mutually authenticated peers.
    pub fn require_client_ca(&self) -> Result<(), ConfigError> {
        match self.client_ca {
            Some(_) => Ok(()),
            None => Err(ConfigError::invalid(
                "tls.client_ca",
                "required: backends accept only mutually authenticated peers",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sample {
        #[serde(flatten)]
        server: ServerSettings,
        name: String,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                server: ServerSettings::with_listen("127.0.0.1:1"),
                name: "default".into(),
            }
        }
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "name = \"file\"\nlisten = \"127.0.0.1:2\"\n").expect("write");
        let cfg: Sample = load("cfgtest", Some(&path)).expect("load");
        assert_eq!(cfg.name, "file");
        assert_eq!(cfg.server.listen, "127.0.0.1:2");
        assert_eq!(cfg.server.max_message_bytes, 65536);

        std::env::set_var("TODOAPP_CFGTEST2_LISTEN", "127.0.0.1:3");
        let cfg: Sample = load("cfgtest2", Some(&path)).expect("load");
        assert_eq!(cfg.server.listen, "127.0.0.1:3");
    }

    #[test]
    fn errors_name_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "max_message_bytes = \"lots\"\n").expect("write");
        let err = load::<Sample>("cfgtest3", Some(&path)).expect_err("must fail");
        assert!(err.to_string().contains("max_message_bytes"), "{err}");

        let missing = load::<Sample>("cfgtest3", Some(&dir.path().join("nope.toml")));
        assert!(missing
            .expect_err("missing")
            .to_string()
            .contains("does not exist"));

        let bad = ServerSettings::with_listen("nonsense");
        assert!(bad
            .validate()
            .expect_err("bad")
            .to_string()
            .contains("listen"));
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
