//! Connecting to a deployment's gateway the way any client would.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpSocket;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Request;

/// Where the gateway is and how to trust it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `HOST:PORT`.
    pub gateway: String,
    /// PEM file of the CA that signed the gateway's certificate.
    pub ca: std::path::PathBuf,
    /// Name to verify in the certificate when it differs from HOST.
    pub server_name: Option<String>,
}

impl Target {
    /// Reads `stack.json` written by `todoapp-stack`.
    pub fn from_stack_json(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let field = |name: &str| {
            json.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: no `{name}`", path.display()))
        };
        Ok(Self {
            gateway: field("gateway")?,
            ca: field("ca_cert")?.into(),
            server_name: None,
        })
    }
}

/// A new HTTP/2 connection to the gateway (TLS, verified against the CA).
pub async fn connect(target: &Target) -> Result<Channel, String> {
    connect_from(target, None).await
}

/// Like [`connect`], from the local address `source` when given: the
/// gateway sees the call coming from there (e.g. 127.0.0.2 for a second
/// client on one machine; loopback gateways only).
pub async fn connect_from(target: &Target, source: Option<IpAddr>) -> Result<Channel, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = std::fs::read(&target.ca).map_err(|e| format!("{}: {e}", target.ca.display()))?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(name) = &target.server_name {
        tls = tls.domain_name(name.clone());
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", target.gateway))
        .map_err(|e| format!("bad gateway address {}: {e}", target.gateway))?
        .tls_config(tls)
        .map_err(|e| format!("TLS setup: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    let connected = match source {
        None => endpoint.connect().await,
        Some(source) => {
            let gateway: SocketAddr = target
                .gateway
                .parse()
                .map_err(|e| format!("{}: need IP:PORT to bind a source: {e}", target.gateway))?;
            // tonic's Endpoint cannot choose the local address; this connector
            // binds the socket to `source` first, and tonic adds TLS on top.
            let connector = tower::service_fn(move |_: tonic::transport::Uri| async move {
                let socket = match gateway {
                    SocketAddr::V4(_) => TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(source, 0))?;
                let stream = socket.connect(gateway).await?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            });
            endpoint.connect_with_connector(connector).await
        }
    };
    connected.map_err(|e| format!("cannot connect to {}: {e:?}", target.gateway))
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    with_authorization(message, &format!("Bearer {token}"))
}

/// How long to wait before retrying a call the gateway refused for the
/// caller's fair share (RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`).
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt;
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    status.get_details_retry_info()?.retry_delay
}

/// `message` with a raw `authorization` value.
pub fn with_authorization<T>(message: T, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = MetadataValue::try_from(value) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
