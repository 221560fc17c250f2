//! What the load goes to: the gateway (as any client reaches it), or the
//! backends straight over mutual TLS with the gateway's client certificate.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use todoapp_devkit::pki::files;
use todoapp_e2e::Target;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Which way calls travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Client → gateway (TLS, JWT checked) → backend (mTLS).
    Gateway,
    /// Client → backend (mTLS), identity in `x-todoapp-user-id`.
    Direct,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Gateway => "gateway",
            Via::Direct => "direct",
        })
    }
}

/// K connections to each service a scenario calls. Through the gateway
/// all three lists are the same connections.
#[derive(Clone)]
pub struct Conns {
    pub via: Via,
    pub todo: Vec<Channel>,
    pub user: Vec<Channel>,
    /// Where `health` calls go: the gateway, or directly the todo backend.
    pub health: Vec<Channel>,
    /// Connections of their own (to the gateway, or the todo backend) for
    /// workers that act as separate clients, such as the fair-share users:
    /// they must not share a connection, and its per-connection bounds,
    /// with the load they are compared against.
    pub own: Vec<Channel>,
}

pub async fn gateway(target: &Target, connections: usize, own: usize) -> Result<Conns, String> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        channels.push(todoapp_e2e::client::connect(target).await?);
    }
    let mut own_channels = Vec::with_capacity(own);
    for _ in 0..own {
        own_channels.push(todoapp_e2e::client::connect(target).await?);
    }
    Ok(Conns {
        via: Via::Gateway,
        todo: channels.clone(),
        user: channels.clone(),
        health: channels,
        own: own_channels,
    })
}

pub async fn direct(state_dir: &Path, connections: usize, own: usize) -> Result<Conns, String> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = state_dir.join("pki");
    let read = |name: &str| {
        let path = pki.join(name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(files::INTERNAL_CA_CERT)?))
        .identity(Identity::from_pem(
            read(files::GATEWAY_CLIENT_CERT)?,
            read(files::GATEWAY_CLIENT_KEY)?,
        ))
        .domain_name("localhost");
    let run = state_dir.join("run");
    let todo_addr = backend_addr(&run, "todo")?;
    let user_addr = backend_addr(&run, "user")?;
    let mut todo = Vec::new();
    let mut user = Vec::new();
    for _ in 0..connections.max(1) {
        todo.push(mtls_channel(&todo_addr, &tls).await?);
        user.push(mtls_channel(&user_addr, &tls).await?);
    }
    let mut own_channels = Vec::with_capacity(own);
    for _ in 0..own {
        own_channels.push(mtls_channel(&todo_addr, &tls).await?);
    }
    Ok(Conns {
        via: Via::Direct,
        health: todo.clone(),
        todo,
        user,
        own: own_channels,
    })
}

async fn mtls_channel(addr: &str, tls: &ClientTlsConfig) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| format!("bad backend address {addr}: {e}"))?
        .tls_config(tls.clone())
        .map_err(|e| format!("TLS setup: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to backend {addr}: {e:?}"))
}

/// The `listen` address in `<run>/<name>.toml`, as written by todoapp-stack.
pub fn backend_addr(run_dir: &Path, name: &str) -> Result<String, String> {
    let path = run_dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (is a todoapp-stack running on this state dir?)",
            path.display()
        )
    })?;
    parse_listen(&text)
        .ok_or_else(|| format!("{}: no top-level `listen = \"HOST:PORT\"`", path.display()))
}

/// The top-level `listen = "…"` of a TOML document (before any `[table]`).
/// The stack writes it as one basic string; that is all this reads.
pub fn parse_listen(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            return None;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "listen" {
            continue;
        }
        let value = value.trim();
        let inner = value.strip_prefix('"')?.split('"').next()?;
        return (!inner.is_empty()).then(|| inner.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_top_level_listen_address() {
        let text = "listen = \"127.0.0.1:41234\"\n\n[tls]\ncert = \"/x\"\n";
        assert_eq!(parse_listen(text).as_deref(), Some("127.0.0.1:41234"));
        assert_eq!(
            parse_listen("# c\n  listen=\"[::1]:5\"  \n").as_deref(),
            Some("[::1]:5")
        );
        assert_eq!(parse_listen("[tls]\nlisten = \"127.0.0.1:1\"\n"), None);
        assert_eq!(parse_listen("listener = \"a\"\n"), None);
        assert_eq!(parse_listen("listen = 5\n"), None);
        assert_eq!(parse_listen(""), None);
    }
}
