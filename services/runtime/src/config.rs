//! Layered configuration: built-in defaults < TOML file < environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::cell::Cell;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretBox};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use tracing_subscriber::filter::{Directive, LevelFilter};

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
    /// A key that names no setting: a typo would otherwise leave the
    /// default silently in force.
    #[error("configuration: unknown key `{key}` {origin}")]
    UnknownKey { key: String, origin: String },
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
/// e.g. `TODOAPP_GATEWAY_TLS__CERT`). A key in the file or a variable with
/// the service's prefix that names no setting is an error.
pub fn load<T>(service: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    let mut file_settings = None;
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError::Parse(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        let toml = Toml::file_exact(file);
        file_settings = Some(default_profile(&toml)?);
        figment = figment.merge(toml);
    }
    let prefix = env_prefix(service);
    let env = Env::prefixed(&prefix).split("__");
    figment = figment.merge(env.clone());
    // Errors in the keys every service flattens into its top level (the
    // ServerSettings) lose their key path through serde's flatten;
    // extracting those settings alone first keeps it.
    figment
        .extract::<ServerSettings>()
        .map_err(|e| ConfigError::Parse(one_line(&e)))?;
    let config = figment
        .extract::<T>()
        .map_err(|e| ConfigError::Parse(one_line(&e)))?;

    // Deserializing drops keys that match no field (serde's flatten hides
    // them even from `deny_unknown_fields`), so every key given must
    // reappear when the result is serialized again. This needs no list of
    // keys and covers settings added later.
    let effective = match Value::serialize(&config) {
        Ok(Value::Dict(_, dict)) => dict,
        Ok(_) => return Err(ConfigError::Parse("settings are not a table".into())),
        Err(e) => return Err(ConfigError::Parse(one_line(&e))),
    };
    if let (Some(file), Some(given)) = (file, &file_settings) {
        if let Some(key) = first_unknown_key(&effective, given, "") {
            return Err(ConfigError::UnknownKey {
                key,
                origin: format!("in {}", file.display()),
            });
        }
    }
    for (key, raw) in env.iter() {
        let value = match raw.parse::<Value>() {
            Ok(value) => value,
            Err(never) => match never {},
        };
        let Some(given) = figment::util::nest(key.as_str(), value).into_dict() else {
            continue;
        };
        if let Some(key_path) = first_unknown_key(&effective, &given, "") {
            let variable = format!(
                "{prefix}{}",
                key.as_str().to_ascii_uppercase().replace('.', "__")
            );
            return Err(ConfigError::UnknownKey {
                key: key_path,
                origin: format!("from environment variable {variable}"),
            });
        }
    }
    Ok(config)
}

/// `TODOAPP_<SERVICE>_`: the prefix of a service's environment variables.
pub fn env_prefix(service: &str) -> String {
    format!("TODOAPP_{}_", service.to_ascii_uppercase())
}

fn default_profile(provider: &impl Provider) -> Result<Dict, ConfigError> {
    let mut profiles = provider
        .data()
        .map_err(|e| ConfigError::Parse(one_line(&e)))?;
    Ok(profiles.remove(&Profile::Default).unwrap_or_default())
}

/// The full path (`a.b.c`) of the first key in `given` that `effective`
/// lacks, looking into tables and arrays of tables.
fn first_unknown_key(effective: &Dict, given: &Dict, parent: &str) -> Option<String> {
    for (key, value) in given {
        let path = if parent.is_empty() {
            key.clone()
        } else {
            format!("{parent}.{key}")
        };
        match (effective.get(key), value) {
            (None, value) => return Some(first_leaf(path, value)),
            (Some(Value::Dict(_, known)), Value::Dict(_, nested)) => {
                if let Some(found) = first_unknown_key(known, nested, &path) {
                    return Some(found);
                }
            }
            (Some(Value::Array(_, known)), Value::Array(_, items)) => {
                for (index, (known, item)) in known.iter().zip(items).enumerate() {
                    if let (Value::Dict(_, known), Value::Dict(_, item)) = (known, item) {
                        let path = format!("{path}[{index}]");
                        if let Some(found) = first_unknown_key(known, item, &path) {
                            return Some(found);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// `[databse] url = ...` is reported as `databse.url`, the key as written.
fn first_leaf(mut path: String, mut value: &Value) -> String {
    while let Value::Dict(_, dict) = value {
        let Some((key, nested)) = dict.iter().next() else {
            break;
        };
        path = format!("{path}.{key}");
        value = nested;
    }
    path
}

fn one_line(error: &figment::Error) -> String {
    // figment's Display already names the key and the source; keep it to the first error.
    error
        .to_string()
        .replace('\n', " ")
        // figment prefixes key paths with the profile
        .replace("for key \"default.", "for key \"")
}

/// The configuration as TOML, with every [`Secret`] redacted (for
/// `--print-config`).
pub fn to_redacted_toml<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            REDACT_SECRETS.with(|redact| redact.set(false));
        }
    }
    REDACT_SECRETS.with(|redact| redact.set(true));
    let _restore = Restore;
    toml::to_string(config).map_err(|e| ConfigError::Parse(format!("cannot print: {e}")))
}

thread_local! {
    /// Set while [`to_redacted_toml`] serializes: secrets then serialize
    /// redacted. Loading serializes them in full (defaults, key check).
    static REDACT_SECRETS: Cell<bool> = const { Cell::new(false) };
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

/// A value that must never reach logs: its `Debug` is redacted, and so is
/// its serialization in [`to_redacted_toml`]; its memory is zeroed when it
/// is dropped (`secrecy`). [`Secret::expose`] is for where the value is
/// used (the database driver).
pub struct Secret<T: Zeroize>(SecretBox<T>);

impl<T: Serialize + Redact + Zeroize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if REDACT_SECRETS.with(Cell::get) {
            serializer.serialize_str(&self.expose().redacted())
        } else {
            self.expose().serialize(serializer)
        }
    }
}

impl<'de, T: Deserialize<'de> + Zeroize> Deserialize<'de> for Secret<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self::new)
    }
}

impl<T: Zeroize + Clone> Clone for Secret<T> {
    fn clone(&self) -> Self {
        Self::new(self.expose().clone())
    }
}

impl<T: Zeroize + Default> Default for Secret<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: Zeroize + PartialEq> PartialEq for Secret<T> {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl<T: Zeroize + Eq> Eq for Secret<T> {}

/// What of a secret may be shown.
pub trait Redact {
    fn redacted(&self) -> String;
}

impl Redact for String {
    /// A URL keeps all but its password (`mysql://todoapp:<redacted>@db/x`),
    /// so an operator still sees which database is in use; anything else is
    /// redacted whole.
    fn redacted(&self) -> String {
        const REDACTED: &str = "<redacted>";
        let Some((scheme, rest)) = self.split_once("://") else {
            return REDACTED.to_owned();
        };
        let valid_scheme = scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if scheme.is_empty() || !valid_scheme {
            return REDACTED.to_owned();
        }
        if rest.to_ascii_lowercase().contains("password") {
            // e.g. a password in the query string
            return format!("{scheme}://{REDACTED}");
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => match rest[..at].split_once(':') {
                Some((user, _password)) => {
                    format!("{scheme}://{user}:{REDACTED}{}", &rest[at..])
                }
                None => self.clone(),
            },
            None => self.clone(),
        }
    }
}

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(SecretBox::new(Box::new(value)))
    }

    pub fn expose(&self) -> &T {
        self.0.expose_secret()
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
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
    /// `text` (human-readable lines) or `json` (one object per line). Under
    /// systemd (`JOURNAL_STREAM` set) logs go to the journal as structured
    /// fields whatever this says.
    #[serde(default)]
    pub log_format: LogFormat,
    /// The Prometheus metrics listener (`[metrics]`).
    #[serde(default)]
    pub metrics: MetricsSettings,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where metrics are served over HTTP (`GET /metrics`); off when `listen`
/// is empty (the default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `IP:port` of the metrics listener; empty: no metrics listener.
    pub listen: String,
}

impl MetricsSettings {
    /// The address to serve metrics on, if metrics are on.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            ConfigError::invalid(
                "metrics.listen",
                format!("`{}` is not an IP:port address", self.listen),
            )
        })
    }
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
            log_format: LogFormat::default(),
            metrics: MetricsSettings::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if let Some(metrics) = self.metrics.listen_addr()? {
            // Port 0 asks for any free port: two of those never collide.
            if metrics.port() != 0 && Some(metrics) == self.listen_addr().ok() {
                return Err(ConfigError::invalid(
                    "metrics.listen",
                    "must differ from `listen`",
                ));
            }
        }
        check_log_filter(&self.log_level)?;
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

/// `log_level` in `RUST_LOG` syntax, where every directive must carry a
/// level: `info`, `warn,todoapp_user=debug`. tracing's own parser takes a
/// bare word such as `infp` as a target name, which would silence every
/// other log line, errors included.
fn check_log_filter(filter: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| Err(ConfigError::invalid("log_level", reason));
    if filter.trim().is_empty() {
        return invalid("must not be empty (e.g. `info`)".into());
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        // An empty level parses as ERROR; an empty filter is caught above.
        if level.is_empty() || level.parse::<LevelFilter>().is_err() {
            return invalid(format!(
                "`{directive}` names no level: use off, error, warn, info, debug or trace, \
                 or TARGET=LEVEL"
            ));
        }
        if let Err(e) = directive.parse::<Directive>() {
            return invalid(format!("`{directive}`: {e}"));
        }
    }
    Ok(())
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
        section: Section,
    }

    /// Deliberately without `deny_unknown_fields`: the key check must not
    /// depend on it.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Section {
        url: Secret<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        optional: Option<String>,
        list: Vec<Item>,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Item {
        id: u32,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                server: ServerSettings::with_listen("127.0.0.1:1"),
                name: "default".into(),
                section: Section {
                    url: Secret::new("sqlite://default.db".into()),
                    optional: None,
                    list: vec![Item { id: 1 }],
                },
            }
        }
    }

    fn write_config(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, contents).expect("write");
        (dir, path)
    }

    fn unknown_key(service: &str, file: Option<&Path>) -> (String, String) {
        match load::<Sample>(service, file) {
            Err(ConfigError::UnknownKey { key, origin }) => (key, origin),
            other => panic!("expected an unknown-key error, got {other:?}"),
        }
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let (_dir, path) = write_config("name = \"file\"\nlisten = \"127.0.0.1:2\"\n");
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
        let (dir, path) = write_config("max_message_bytes = \"lots\"\n");
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
    fn every_known_key_is_accepted_including_optional_ones() {
        let (_dir, path) = write_config(
            "listen = \"127.0.0.1:2\"\nlog_level = \"debug\"\nname = \"n\"\n\
             [section]\nurl = \"sqlite://x.db\"\noptional = \"set\"\n\
             [[section.list]]\nid = 7\n",
        );
        let cfg: Sample = load("cfgtest5", Some(&path)).expect("all keys are known");
        assert_eq!(cfg.section.optional.as_deref(), Some("set"));
        assert_eq!(cfg.section.list, vec![Item { id: 7 }]);
    }

    #[test]
    fn unknown_top_level_table_in_the_file_is_an_error_naming_the_full_key() {
        // The operator meant [section]: the default URL would stay in force.
        let (_dir, path) = write_config("[sectoin]\nurl = \"mysql://db/x\"\n");
        let (key, origin) = unknown_key("cfgtest6", Some(&path));
        assert_eq!(key, "sectoin.url");
        assert!(origin.contains(&path.display().to_string()), "{origin}");
        let message = load::<Sample>("cfgtest6", Some(&path))
            .expect_err("unknown")
            .to_string();
        assert!(message.contains("unknown key `sectoin.url`"), "{message}");
    }

    #[test]
    fn unknown_flattened_top_level_key_is_an_error() {
        let (_dir, path) = write_config("listn = \"127.0.0.1:2\"\n");
        assert_eq!(unknown_key("cfgtest7", Some(&path)).0, "listn");
    }

    #[test]
    fn unknown_nested_keys_are_errors_at_every_level() {
        let (_dir, path) = write_config("[section]\nulr = \"mysql://db/x\"\n");
        assert_eq!(unknown_key("cfgtest8", Some(&path)).0, "section.ulr");
        let (_dir, path) = write_config("[[section.list]]\nid = 1\nidd = 2\n");
        assert_eq!(
            unknown_key("cfgtest9", Some(&path)).0,
            "section.list[0].idd"
        );
    }

    #[test]
    fn unknown_environment_variable_with_the_prefix_is_an_error_naming_it() {
        std::env::set_var("TODOAPP_CFGTEST10_SECTOIN__URL", "mysql://db/x");
        let (key, origin) = unknown_key("cfgtest10", None);
        assert_eq!(key, "sectoin.url");
        assert!(
            origin.contains("TODOAPP_CFGTEST10_SECTOIN__URL"),
            "{origin}"
        );

        std::env::set_var("TODOAPP_CFGTEST11_SECTION__ULR", "mysql://db/x");
        assert_eq!(unknown_key("cfgtest11", None).0, "section.ulr");

        std::env::set_var("TODOAPP_CFGTEST12_SECTION__URL", "mysql://db/x");
        std::env::set_var("TODOAPP_CFGTEST12_SECTION__OPTIONAL", "yes");
        let cfg: Sample = load("cfgtest12", None).expect("known variables");
        assert_eq!(cfg.section.url.expose(), "mysql://db/x");
        assert_eq!(cfg.section.optional.as_deref(), Some("yes"));
    }

    #[test]
    fn log_level_must_name_levels() {
        for good in [
            "info",
            "INFO",
            "warn,todoapp_user=debug",
            "todoapp=trace",
            "off",
            "info,",
        ] {
            check_log_filter(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "infp",
            "",
            " ",
            "todoapp_user",
            "todoapp=",
            "todoapp=loud",
            "info,nonsense",
        ] {
            let err = check_log_filter(bad).expect_err(bad).to_string();
            assert!(err.contains("`log_level`"), "{bad}: {err}");
        }
        let mut settings = ServerSettings::with_listen("127.0.0.1:1");
        settings.log_level = "infp".into();
        assert!(
            settings.validate().is_err(),
            "validate() must check log_level"
        );
    }

    #[test]
    fn metrics_and_log_format_load_and_are_validated() {
        let (_dir, path) =
            write_config("log_format = \"json\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n");
        let cfg: Sample = load("cfgtest14", Some(&path)).expect("load");
        assert_eq!(cfg.server.log_format, LogFormat::Json);
        assert_eq!(
            cfg.server.metrics.listen_addr().expect("valid"),
            Some("127.0.0.1:9100".parse().expect("addr"))
        );
        let defaults = ServerSettings::with_listen("127.0.0.1:1");
        assert_eq!(defaults.metrics.listen_addr().expect("valid"), None);
        assert_eq!(defaults.log_format, LogFormat::Text);

        let (_dir, path) = write_config("log_format = \"xml\"\n");
        let err = load::<Sample>("cfgtest15", Some(&path)).expect_err("bad format");
        assert!(err.to_string().contains("log_format"), "{err}");

        let mut bad = ServerSettings::with_listen("127.0.0.1:1");
        bad.metrics.listen = "localhost".into();
        let err = bad.validate().expect_err("bad address").to_string();
        assert!(err.contains("`metrics.listen`"), "{err}");
        bad.metrics.listen = "127.0.0.1:1".into();
        let err = bad.validate().expect_err("same as listen").to_string();
        assert!(err.contains("`metrics.listen`"), "{err}");
        let mut any_ports = ServerSettings::with_listen("127.0.0.1:0");
        any_ports.metrics.listen = "127.0.0.1:0".into();
        any_ports
            .validate()
            .expect("two port-0 listeners are distinct");
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn printed_configuration_is_the_effective_one_with_secrets_redacted() {
        std::env::set_var(
            "TODOAPP_CFGTEST13_SECTION__URL",
            "mysql://todoapp:hunter2@db:3306/todo?socket=/run/mysqld.sock",
        );
        let (_dir, path) = write_config("name = \"from-file\"\n");
        let cfg: Sample = load("cfgtest13", Some(&path)).expect("load");
        let printed = to_redacted_toml(&cfg).expect("print");
        assert!(!printed.contains("hunter2"), "{printed}");
        let parsed: toml::Table = printed.parse().expect("valid TOML");
        assert_eq!(parsed["name"].as_str(), Some("from-file"));
        assert_eq!(parsed["listen"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(
            parsed["section"]["url"].as_str(),
            Some("mysql://todoapp:<redacted>@db:3306/todo?socket=/run/mysqld.sock")
        );
        // Redaction is only for printing: loading still sees the secret.
        let full = Value::serialize(&cfg.section.url).expect("serialize");
        assert!(full.as_str().is_some_and(|url| url.contains("hunter2")));
    }

    #[test]
    fn redaction_keeps_only_what_is_not_secret() {
        let redact = |s: &str| s.to_string().redacted();
        assert_eq!(redact("sqlite://user.db"), "sqlite://user.db");
        assert_eq!(
            redact("mysql://todoapp@localhost/todo?socket=/run/mysqld/mysqld.sock"),
            "mysql://todoapp@localhost/todo?socket=/run/mysqld/mysqld.sock"
        );
        assert_eq!(redact("mysql://u:p@w@db/x"), "mysql://u:<redacted>@db/x");
        assert_eq!(redact("mysql://db/x?password=p"), "mysql://<redacted>");
        assert_eq!(redact("hunter2"), "<redacted>");
        assert_eq!(redact("a b://c"), "<redacted>");
    }
}
