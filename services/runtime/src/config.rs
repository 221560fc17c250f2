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
    /// Bounds on what one client, and all clients together, may hold.
    #[serde(default)]
    pub limits: ServerLimits,
}

/// Connection, stream and call bounds of a service's gRPC server (`[limits]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised per connection.
    pub max_concurrent_streams: u32,
    /// Calls in flight on one connection (a call holds its slot until its
    /// reply is sent); more fail fast with RESOURCE_EXHAUSTED.
    pub max_calls_per_connection: usize,
    /// Calls in flight over all connections; more fail fast with UNAVAILABLE.
    pub max_calls: usize,
    /// Open connections from one IP address; more are closed on accept.
    pub max_connections_per_address: usize,
    /// Open connections in total; more are closed on accept.
    pub max_connections: usize,
    /// Request header block (HTTP/2 accounting: name + value + 32 per
    /// field); larger gets RESOURCE_EXHAUSTED. HTTP/2 itself refuses blocks
    /// over four times this with a bare HTTP 431.
    pub max_header_list_bytes: u32,
    /// HTTP/2 flow-control window per stream (request data buffered).
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection.
    pub connection_window_bytes: u32,
    /// A connection with no call in flight is closed after this long.
    pub idle_timeout_secs: u64,
    /// HTTP/2 PING interval to detect dead peers.
    pub keepalive_interval_secs: u64,
    /// A PING unanswered for this long closes the connection.
    pub keepalive_timeout_secs: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            max_calls_per_connection: 100,
            max_calls: 512,
            max_connections_per_address: 64,
            max_connections: 4096,
            max_header_list_bytes: 16 * 1024,
            stream_window_bytes: 256 * 1024,
            connection_window_bytes: 1024 * 1024,
            idle_timeout_secs: 300,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
        }
    }
}

impl ServerLimits {
    /// The HTTP/2 hard limit on a header block, above the one that gets a
    /// gRPC status, so that most oversized blocks reach the service and
    /// get a proper status instead of a bare HTTP 431.
    pub fn hard_header_list_bytes(&self) -> u32 {
        self.max_header_list_bytes.saturating_mul(4)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range<T: PartialOrd + Copy + fmt::Display>(
            key: &'static str,
            value: T,
            min: T,
            max: T,
        ) -> Result<(), ConfigError> {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    format!("must be between {min} and {max}"),
                ));
            }
            Ok(())
        }
        range(
            "limits.max_concurrent_streams",
            self.max_concurrent_streams,
            1,
            10_000,
        )?;
        range(
            "limits.max_calls_per_connection",
            self.max_calls_per_connection,
            1,
            100_000,
        )?;
        range("limits.max_calls", self.max_calls, 1, 1_000_000)?;
        range(
            "limits.max_connections_per_address",
            self.max_connections_per_address,
            1,
            1_000_000,
        )?;
        range("limits.max_connections", self.max_connections, 1, 1_000_000)?;
        range(
            "limits.max_header_list_bytes",
            self.max_header_list_bytes,
            4096,
            1024 * 1024,
        )?;
        // RFC 9113: windows are at least the initial 65535 and at most 2^31-1.
        range(
            "limits.stream_window_bytes",
            self.stream_window_bytes,
            65_535,
            (1 << 31) - 1,
        )?;
        range(
            "limits.connection_window_bytes",
            self.connection_window_bytes,
            65_535,
            (1 << 31) - 1,
        )?;
        range(
            "limits.idle_timeout_secs",
            self.idle_timeout_secs,
            1,
            86_400,
        )?;
        range(
            "limits.keepalive_interval_secs",
            self.keepalive_interval_secs,
            1,
            86_400,
        )?;
        range(
            "limits.keepalive_timeout_secs",
            self.keepalive_timeout_secs,
            1,
            3600,
        )?;
        Ok(())
    }
}

impl ServerSettings {
    pub fn with_listen(listen: &str) -> Self {
        Self {
            listen: listen.to_owned(),
            log_level: "info".to_owned(),
            max_message_bytes: 64 * 1024,
            tls_handshake_timeout_secs: 10,
            shutdown_timeout_secs: 10,
            limits: ServerLimits::default(),
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
        self.limits.validate()
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
    fn limits_load_from_a_section_and_are_validated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[limits]\nmax_concurrent_streams = 7\n").expect("write");
        let cfg: Sample = load("cfgtest4", Some(&path)).expect("load");
        assert_eq!(cfg.server.limits.max_concurrent_streams, 7);
        assert_eq!(
            cfg.server.limits.max_calls,
            ServerLimits::default().max_calls
        );

        std::env::set_var("TODOAPP_CFGTEST5_LIMITS__IDLE_TIMEOUT_SECS", "9");
        let cfg: Sample = load("cfgtest5", Some(&path)).expect("load");
        assert_eq!(cfg.server.limits.idle_timeout_secs, 9);

        let mut zero = ServerSettings::with_listen("127.0.0.1:1");
        zero.limits.max_calls_per_connection = 0;
        let err = zero.validate().expect_err("zero cap");
        assert!(
            err.to_string().contains("limits.max_calls_per_connection"),
            "{err}"
        );
        let mut tiny = ServerSettings::with_listen("127.0.0.1:1");
        tiny.limits.stream_window_bytes = 100;
        let err = tiny.validate().expect_err("tiny window");
        assert!(
            err.to_string().contains("limits.stream_window_bytes"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
