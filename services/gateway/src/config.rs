use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use todoapp_runtime::config::{ServerSettings, TlsFiles};
use todoapp_runtime::service::FileChecks;
use todoapp_runtime::ConfigError;

pub use crate::fair_share::FairShareSettings;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayConfig {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub tls: TlsFiles,
    pub upstream: UpstreamSettings,
    pub jwt: JwtVerifySettings,
    /// Reverse proxies in front of the gateway whose `X-Forwarded-For` is
    /// believed. Calls from anywhere else are from the address they come from.
    pub trusted_proxies: Vec<IpAddr>,
    pub fair_share: FairShareSettings,
}

/// How the gateway reaches the backends: mutual TLS with its own client
/// certificate, trusting only the internal CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub user: Endpoints,
    pub todo: Endpoints,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Name to verify in the backends' certificates, when it differs from
    /// the host in the URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// How often every endpoint is health-checked (`grpc.health.v1`).
    pub health_interval_ms: u64,
    /// How often host names in the URLs are resolved again.
    pub resolve_interval_ms: u64,
    /// Calls in a row failing on an endpoint's connection that eject it
    /// until it passes a health check again.
    pub eject_after_failures: u32,
}

/// One backend URL, or a list of them: every address listed and every
/// A/AAAA record of every name listed is an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Endpoints {
    One(String),
    Many(Vec<String>),
}

impl Endpoints {
    pub fn urls(&self) -> &[String] {
        match self {
            Self::One(url) => std::slice::from_ref(url),
            Self::Many(urls) => urls,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtVerifySettings {
    /// Ed25519 public keys (SPKI PEM). Tokens pick one by `kid`; list the
    /// old and the new key while rotating.
    pub public_keys: Vec<PathBuf>,
    pub issuer: String,
    pub audience: String,
    /// Tokens whose `exp - iat` exceeds this are refused.
    pub max_lifetime_secs: u64,
    /// Clock skew allowed on `exp`, `nbf` and `iat`; at most 60.
    pub leeway_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            server: ServerSettings::with_listen("127.0.0.1:50051"),
            tls: TlsFiles {
                cert: "gateway.crt".into(),
                key: "gateway.key".into(),
                client_ca: None,
            },
            upstream: UpstreamSettings {
                user: Endpoints::One("https://127.0.0.1:50061".into()),
                todo: Endpoints::One("https://127.0.0.1:50062".into()),
                ca: "internal-ca.crt".into(),
                client_cert: "gateway-client.crt".into(),
                client_key: "gateway-client.key".into(),
                server_name: None,
                connect_timeout_ms: 2000,
                request_timeout_ms: 10_000,
                health_interval_ms: 1000,
                resolve_interval_ms: 5000,
                eject_after_failures: 2,
            },
            jwt: JwtVerifySettings {
                public_keys: vec!["jwt-ed25519.pub".into()],
                issuer: "todoapp".into(),
                audience: "todoapp".into(),
                max_lifetime_secs: 24 * 3600,
                leeway_secs: 60,
            },
            trusted_proxies: Vec::new(),
            fair_share: FairShareSettings::default(),
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self, files: FileChecks) -> Result<(), ConfigError> {
        if self.tls.client_ca.is_some() {
            return Err(ConfigError::invalid(
                "tls.client_ca",
                "the gateway authenticates clients by token, not certificate; remove it",
            ));
        }
        for (key, endpoints) in [
            ("upstream.user", &self.upstream.user),
            ("upstream.todo", &self.upstream.todo),
        ] {
            let urls = endpoints.urls();
            if urls.is_empty() {
                return Err(ConfigError::invalid(key, "at least one URL is required"));
            }
            let mut seen = std::collections::BTreeSet::new();
            for url in urls {
                let target = crate::upstream::Target::parse(key, url)?;
                if !seen.insert(target) {
                    return Err(ConfigError::invalid(
                        key,
                        format!("`{url}` is listed twice"),
                    ));
                }
            }
        }
        let upstream = &self.upstream;
        if upstream.connect_timeout_ms == 0 || upstream.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "upstream.connect_timeout_ms",
                "timeouts must be positive",
            ));
        }
        for (key, value) in [
            ("upstream.health_interval_ms", upstream.health_interval_ms),
            ("upstream.resolve_interval_ms", upstream.resolve_interval_ms),
        ] {
            if !(100..=3_600_000).contains(&value) {
                return Err(ConfigError::invalid(key, "must be between 100 and 3600000"));
            }
        }
        if !(1..=100).contains(&upstream.eject_after_failures) {
            return Err(ConfigError::invalid(
                "upstream.eject_after_failures",
                "must be between 1 and 100",
            ));
        }
        let jwt = &self.jwt;
        if jwt.public_keys.is_empty() {
            return Err(ConfigError::invalid(
                "jwt.public_keys",
                "at least one key is required",
            ));
        }
        if jwt.leeway_secs > 60 {
            return Err(ConfigError::invalid(
                "jwt.leeway_secs",
                "must be at most 60",
            ));
        }
        if jwt.max_lifetime_secs == 0 || jwt.max_lifetime_secs > 24 * 3600 {
            return Err(ConfigError::invalid(
                "jwt.max_lifetime_secs",
                "must be between 1 and 86400",
            ));
        }
        if jwt.issuer.is_empty() || jwt.audience.is_empty() {
            return Err(ConfigError::invalid(
                "jwt.issuer",
                "issuer and audience must not be empty",
            ));
        }
        self.fair_share.validate()?;
        crate::upstream::fixed_server_name(&self.upstream)?;
        if files == FileChecks::Read {
            todoapp_runtime::tls::server_config(&self.tls)?;
            crate::token::TokenVerifier::load(jwt)?;
            crate::upstream::client_tls(&self.upstream)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(upstream: &str) -> Result<GatewayConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, format!("[upstream]\n{upstream}\n")).expect("write");
        let config: GatewayConfig = todoapp_runtime::config::load("gateway", Some(&file))?;
        config.validate(FileChecks::Skip)?;
        Ok(config)
    }

    fn refusal(upstream: &str) -> String {
        load(upstream).expect_err("refused").to_string()
    }

    #[test]
    fn upstreams_take_one_url_or_a_list() {
        let config = load("todo = \"https://10.0.0.2:50062\"").expect("one URL");
        assert_eq!(config.upstream.todo.urls(), ["https://10.0.0.2:50062"]);
        assert_eq!(config.upstream.user.urls(), ["https://127.0.0.1:50061"]);
        let config = load(
            "todo = [\"https://10.0.0.2:50062\", \"https://[fd00::3]:50062\", \"https://todo.internal:50062\"]\nhealth_interval_ms = 250\nresolve_interval_ms = 30000\neject_after_failures = 5",
        )
        .expect("a list");
        assert_eq!(config.upstream.todo.urls().len(), 3);
        assert_eq!(
            (
                config.upstream.health_interval_ms,
                config.upstream.resolve_interval_ms,
                config.upstream.eject_after_failures
            ),
            (250, 30000, 5)
        );
    }

    #[test]
    fn bad_upstreams_are_refused_naming_the_setting() {
        assert!(refusal("todo = []").contains("upstream.todo"));
        assert!(refusal("user = [\"https://a:1\", \"https://a:1/\"]").contains("listed twice"));
        assert!(refusal("todo = [\"https://a:1\", \"http://b:1\"]").contains("upstream.todo"));
        assert!(refusal("health_interval_ms = 10").contains("upstream.health_interval_ms"));
        assert!(refusal("resolve_interval_ms = 0").contains("upstream.resolve_interval_ms"));
        assert!(refusal("eject_after_failures = 0").contains("upstream.eject_after_failures"));
        assert!(refusal("server_name = \"todo backend\"").contains("upstream.server_name"));
    }
}
