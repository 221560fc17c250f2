//! Channels to the backends: mutual TLS, bounded connect and call time, so
//! a backend that is down yields UNAVAILABLE promptly instead of a hang.

use std::time::Duration;

use todoapp_runtime::ConfigError;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::UpstreamSettings;

pub fn client_tls(settings: &UpstreamSettings) -> Result<ClientTlsConfig, ConfigError> {
    todoapp_runtime::tls::client_tls(
        "upstream.ca",
        &settings.ca,
        Some((&settings.client_cert, &settings.client_key)),
        settings.server_name.as_deref(),
    )
}

/// A lazily connecting channel: the gateway starts (and answers
/// UNAVAILABLE) even while a backend is down, and reconnects by itself.
pub fn channel(
    key: &'static str,
    url: &str,
    settings: &UpstreamSettings,
) -> Result<Channel, ConfigError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::invalid(key, e.to_string()))?
        .tls_config(client_tls(settings)?)
        .map_err(|e| ConfigError::invalid(key, e.to_string()))?
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .timeout(Duration::from_millis(settings.request_timeout_ms))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// A backend channel whose calls pass the current trace context on and are
/// counted as `grpc_client_*{backend}`.
pub type Backend = todoapp_runtime::upstream::Upstream<Channel>;

/// Wraps the channel (or any client service) to `backend` (`user`,
/// `todo`), which serves the gRPC service `service`.
pub fn instrument<S>(
    backend: &'static str,
    service: &str,
    channel: S,
) -> todoapp_runtime::upstream::Upstream<S> {
    let methods: Vec<_> = todoapp_runtime::metrics::methods_of(&[todoapp_api::FILE_DESCRIPTOR_SET])
        .into_iter()
        .filter(|method| method.service == service)
        .collect();
    tower_layer::Layer::layer(
        &todoapp_runtime::upstream::UpstreamLayer::new(backend, &methods),
        channel,
    )
}
