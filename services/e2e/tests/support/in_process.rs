//! The services inside the test process: built from config structs on
//! 127.0.0.1 port 0 (the listener is bound before the address is known, so
//! no other process can take it in between), with the real TLS and mutual
//! TLS of the workspace's dev PKI and real databases, and stopped the way
//! SIGTERM stops them (NOT_SERVING, drain, pools closed).
//!
//! For behaviour that needs only calls. What needs processes (signals,
//! systemd protocols, socket activation, crashes, exit codes) is tested
//! with [`super::Proc`].
//!
//! Process-wide state the services share here: one metrics registry (a
//! metric registered by several services is one metric; sampled gauges
//! such as the pool sizes show the last service's pool; metrics are off
//! unless a test turns them on), one tracing subscriber (each log line
//! carries its service in the call span), and no `NOTIFY_SOCKET` or
//! `LISTEN_FDS`, so readiness is a no-op and every listener is bound.

use std::net::SocketAddr;

use todoapp_db::DatabaseSettings;
use todoapp_devkit::pki::files;
use todoapp_gateway::config::Endpoints;
use todoapp_gateway::{GatewayConfig, GatewayService};
use todoapp_runtime::config::TlsFiles;
use todoapp_runtime::service::{FileChecks, Service};
use todoapp_todo::{TodoConfig, TodoService};
use todoapp_user::{UserConfig, UserService};
use tokio::sync::oneshot;

use super::Workspace;

/// Any free port on loopback, chosen by the kernel when binding.
const ANY_LOOPBACK_PORT: &str = "127.0.0.1:0";

/// A service running on a task of the test's runtime. Dropping it starts
/// its shutdown; [`Running::stop`] also waits for the drain to finish.
pub struct Running {
    pub addr: SocketAddr,
    /// The metrics listener's address, when `metrics.listen` is set.
    pub metrics: Option<SocketAddr>,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Running {
    /// Validates `config` as the binary does (files read), builds the
    /// service and serves it until stopped. Panics with the reason if the
    /// service cannot start.
    pub async fn start<S: Service>(config: S::Config) -> Self {
        init_logs();
        todoapp_runtime::tls::install_crypto_provider();
        if let Err(e) = S::server_settings(&config)
            .validate()
            .and_then(|()| S::validate(&config, FileChecks::Read))
        {
            panic!("{} configuration: {e}", S::NAME);
        }
        let application = S::build(config)
            .await
            .unwrap_or_else(|e| panic!("{} did not start: {e}", S::NAME));
        let addr = application.local_addr();
        let metrics = application.metrics_addr();
        let (shutdown, shutdown_requested) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            application
                .run_until(async {
                    // Sent or dropped: either way, stop.
                    let _ = shutdown_requested.await;
                })
                .await
                .map_err(|e| e.to_string())
        });
        Self {
            addr,
            metrics,
            shutdown,
            task,
        }
    }

    /// Shuts the service down as SIGTERM would and waits until it has
    /// drained its calls and released its database; panics if it stopped
    /// with an error.
    pub async fn stop(self) {
        drop(self.shutdown);
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("service stopped with an error: {e}"),
            Err(e) => panic!("service task failed: {e}"),
        }
    }
}

/// User service, todo service and a gateway in front of them.
pub struct Stack {
    pub user: Running,
    pub todo: Running,
    pub gateway: Running,
}

impl Stack {
    /// Starts the backends from `user` and `todo`, then a gateway (its
    /// config from [`gateway_config`], changed by `tune_gateway`) forwarding
    /// to them.
    pub async fn start(
        ws: &Workspace,
        user: UserConfig,
        todo: TodoConfig,
        tune_gateway: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let user = Running::start::<UserService>(user).await;
        let todo = Running::start::<TodoService>(todo).await;
        let mut gateway = gateway_config(ws, user.addr, todo.addr);
        tune_gateway(&mut gateway);
        let gateway = Running::start::<GatewayService>(gateway).await;
        Self {
            user,
            todo,
            gateway,
        }
    }

    /// How a client reaches the gateway.
    pub fn target(&self, ws: &Workspace) -> todoapp_e2e::Target {
        ws.gateway_target(self.gateway.addr)
    }

    /// Stops the gateway, then the backends, each as SIGTERM would.
    pub async fn stop(self) {
        self.gateway.stop().await;
        self.user.stop().await;
        self.todo.stop().await;
    }
}

/// `sqlite://` URL of database file `name` in the workspace.
pub fn sqlite_url(ws: &Workspace, name: &str) -> String {
    format!(
        "sqlite://{}",
        ws.path().join(format!("{name}.db")).display()
    )
}

/// URL of a fresh database on the throwaway MariaDB of this test process
/// (started on first use); fails loudly without one.
pub async fn mariadb_url(prefix: &str) -> String {
    todoapp_devkit::mariadb::test_database(prefix)
        .await
        .expect("MariaDB for tests (install mariadb-server)")
}

/// Database settings for `url`, with the default pool settings.
pub fn database(url: &str) -> DatabaseSettings {
    let defaults = DatabaseSettings::sqlite("default.db");
    // Deserialised rather than assigned: the URL's secret wrapper is the
    // config layer's business.
    serde_json::from_value(serde_json::json!({
        "url": url,
        "acquire_timeout_ms": defaults.acquire_timeout_ms,
    }))
    .expect("database settings")
}

fn backend_tls(ws: &Workspace, cert: &str, key: &str) -> TlsFiles {
    TlsFiles {
        cert: ws.pki(cert).into(),
        key: ws.pki(key).into(),
        client_ca: Some(ws.pki(files::INTERNAL_CA_CERT).into()),
    }
}

/// The user service's defaults, on a free loopback port with the
/// workspace's certificates and JWT key and the database at `url`.
pub fn user_config(ws: &Workspace, url: &str) -> UserConfig {
    let mut config = UserConfig::default();
    config.server.listen = ANY_LOOPBACK_PORT.into();
    config.tls = backend_tls(ws, files::USER_CERT, files::USER_KEY);
    config.database = database(url);
    config.jwt.private_key = ws.pki(files::JWT_PRIVATE_KEY).into();
    config
}

/// The todo service's defaults, on a free loopback port with the
/// workspace's certificates and the database at `url`.
pub fn todo_config(ws: &Workspace, url: &str) -> TodoConfig {
    let mut config = TodoConfig::default();
    config.server.listen = ANY_LOOPBACK_PORT.into();
    config.tls = backend_tls(ws, files::TODO_CERT, files::TODO_KEY);
    config.database = database(url);
    config
}

/// The gateway's defaults, on a free loopback port with the workspace's
/// certificates and JWT public key, forwarding to `user` and `todo`.
pub fn gateway_config(ws: &Workspace, user: SocketAddr, todo: SocketAddr) -> GatewayConfig {
    let mut config = GatewayConfig::default();
    config.server.listen = ANY_LOOPBACK_PORT.into();
    config.tls = TlsFiles {
        cert: ws.pki(files::GATEWAY_CERT).into(),
        key: ws.pki(files::GATEWAY_KEY).into(),
        client_ca: None,
    };
    let upstream = &mut config.upstream;
    upstream.user = Endpoints::One(format!("https://{user}"));
    upstream.todo = Endpoints::One(format!("https://{todo}"));
    upstream.ca = ws.pki(files::INTERNAL_CA_CERT).into();
    upstream.client_cert = ws.pki(files::GATEWAY_CLIENT_CERT).into();
    upstream.client_key = ws.pki(files::GATEWAY_CLIENT_KEY).into();
    config.jwt.public_keys = vec![ws.pki(files::JWT_PUBLIC_KEY).into()];
    config
}

/// Service logs go to the test's captured output (shown when it fails);
/// `RUST_LOG` filters them (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Err: already set up by an earlier start in this process.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_target(false)
        .try_init();
}
