//! Serving a service's gRPC routes: listener, TLS with a handshake timeout,
//! connection and call bounds, readiness, health, graceful shutdown with a
//! drain deadline.
//!
//! Two steps, so that tests can run a service inside their own process on
//! port 0: [`bind`] takes the listeners and reports ready, and
//! [`BoundServer::run_until`] serves until a shutdown future resolves (the
//! binaries' is SIGTERM/SIGINT: [`crate::service::main`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::config::{ServerLimits, ServerSettings};
use crate::connection::{AcceptErrorLog, Connection, ConnectionTracker};
use crate::grpc::GrpcEdgeLayer;
use crate::limits::CallLimitLayer;
use crate::listener::{self, Origin};
use crate::metrics::MethodDescription;
use crate::readiness::{self, Probe};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything [`bind`] needs besides the routes.
pub struct ServeOptions {
    /// Service name: the socket name in `LISTEN_FDNAMES`, and log context.
    pub name: &'static str,
    pub settings: ServerSettings,
    pub tls: Arc<rustls::ServerConfig>,
    pub health: HealthReporter,
    /// gRPC service names reported NOT_SERVING once shutdown starts.
    pub health_services: Vec<&'static str>,
    /// Feeds the systemd watchdog while it passes.
    pub probe: Option<Probe>,
    /// Encoded `FileDescriptorSet`s describing the services served: each
    /// method of `health_services` (and of gRPC health) gets its own metric
    /// labels; other paths count as `unknown`.
    pub descriptor_sets: Vec<&'static [u8]>,
}

/// Takes the listener (passed by systemd, or bound to `listen`, port 0
/// included) and the metrics listener, starts the watchdog and tells the
/// service manager the service is ready. Calls are served once
/// [`BoundServer::run_until`] runs; until then connections wait in the
/// listen backlog.
pub async fn bind(options: ServeOptions, routes: Routes) -> Result<BoundServer, BoxError> {
    let addr = options.settings.listen_addr()?;
    let (listener, origin) = listener::acquire(options.name, addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    if options.settings.metrics.listen_addr()?.is_some() {
        crate::metrics::count_calls();
    }
    let limits = &options.settings.limits;
    let tracker =
        ConnectionTracker::new(limits.max_connections_per_address, limits.max_connections);

    let mut background = Background::default();
    let metrics_local = match options.settings.metrics.listen_addr()? {
        Some(addr) => {
            let (metrics_local, task) = crate::metrics::spawn_listener(options.name, addr)
                .await
                .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
            background.0.push(task);
            crate::metrics::sampled_gauge(
                "todoapp_connections_open",
                "Client connections open now",
                {
                    let tracker = tracker.clone();
                    move || tracker.open() as i64
                },
            );
            tracing::info!(service = options.name, local = %metrics_local, "serving metrics");
            Some(metrics_local)
        }
        None => None,
    };
    background
        .0
        .extend(options.probe.clone().and_then(readiness::spawn_watchdog));
    background
        .0
        .push(crate::memory::spawn_trimmer(Duration::from_secs(5)));
    let how = match origin {
        Origin::SocketActivated => "socket-activated",
        Origin::Bound => "bound",
    };
    tracing::info!(service = options.name, %local, how, "serving");
    readiness::ready(&format!("serving on {local} ({how})"));
    Ok(BoundServer {
        options,
        routes,
        listener,
        local,
        metrics_local,
        tracker,
        _background: background,
    })
}

/// A service whose listeners are taken and which has reported ready: what
/// [`bind`] returns. Dropping it without running stops its background tasks.
pub struct BoundServer {
    options: ServeOptions,
    routes: Routes,
    listener: TcpListener,
    local: SocketAddr,
    metrics_local: Option<SocketAddr>,
    tracker: Arc<ConnectionTracker>,
    _background: Background,
}

/// Tasks that live as long as the server: the metrics listener, the
/// watchdog and the memory trimmer. Aborted on drop.
#[derive(Default)]
struct Background(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl BoundServer {
    /// The address calls are served on (the bound port when `listen` asked
    /// for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The metrics listener's address, when metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_local
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING (gRPC
    /// health and the service manager), stops accepting, and drains
    /// in-flight calls for at most `shutdown_timeout_secs`.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        let Self {
            options,
            routes,
            listener,
            tracker,
            _background,
            ..
        } = self;
        let limits = &options.settings.limits;
        let incoming = tls_incoming(
            listener,
            TlsAcceptor::from(options.tls.clone()),
            options.settings.handshake_timeout(),
            limits,
            tracker,
        );
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_stream_window_size(limits.stream_window_bytes)
            .initial_connection_window_size(limits.connection_window_bytes)
            .http2_max_header_list_size(limits.hard_header_list_bytes())
            .http2_keepalive_interval(Some(Duration::from_secs(limits.keepalive_interval_secs)))
            .http2_keepalive_timeout(Some(Duration::from_secs(limits.keepalive_timeout_secs)))
            .layer(GrpcEdgeLayer::new(options.name, &served_methods(&options)))
            .layer(CallLimitLayer::new(limits))
            .add_routes(routes);

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let health = options.health.clone();
        let health_services = options.health_services.clone();
        let name = options.name;
        let stopping = async move {
            shutdown.await;
            readiness::stopping();
            for service in health_services {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            tracing::info!(
                service = name,
                "no longer accepting; draining in-flight calls"
            );
            let _ = draining_tx.send(());
        };

        let serving = server.serve_with_incoming_shutdown(incoming, stopping);
        tokio::pin!(serving);
        let drain_deadline = options.settings.shutdown_timeout();
        let result = tokio::select! {
            result = &mut serving => result.map_err(BoxError::from),
            _ = async {
                if draining_rx.await.is_ok() {
                    tokio::time::sleep(drain_deadline).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(service = name, "drain deadline passed; abandoning remaining calls");
                Ok(())
            }
        };
        tracing::info!(service = name, "stopped");
        result
    }
}

fn served_methods(options: &ServeOptions) -> Vec<MethodDescription> {
    let mut sets = options.descriptor_sets.clone();
    sets.push(tonic_health::pb::FILE_DESCRIPTOR_SET);
    crate::metrics::methods_of(&sets)
        .into_iter()
        .filter(|method| {
            method.service == "grpc.health.v1.Health"
                || options.health_services.contains(&method.service.as_str())
        })
        .collect()
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop.
/// Connections over the per-address or total cap are closed at once;
/// handshakes slower than `handshake_timeout` are dropped, and so are
/// connections that then send no HTTP/2 preface within it. The loop ends
/// (and the listener closes) as soon as the server stops taking connections.
///
/// Not tonic's `ServerTlsConfig`: it hands the TLS stream straight to hyper,
/// with no hook on the decrypted connection, which the preface deadline, the
/// idle timeout and the fair-share read pauses ([`Connection`]) need.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    limits: &ServerLimits,
    tracker: Arc<ConnectionTracker>,
) -> ReceiverStream<Result<Connection<TlsStream<TcpStream>>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    let refused = crate::metrics::counter(
        "todoapp_connections_refused",
        "Connections closed on accept because a connection cap was reached",
    );
    let idle_timeout = limits.idle_timeout();
    tokio::spawn(async move {
        let mut accept_errors = AcceptErrorLog::default();
        let mut refusals = AcceptErrorLog::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let Some(count) = accept_errors.record(std::time::Instant::now()) {
                        tracing::warn!(error = %e, count, "accept failed");
                    }
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = tracker.admit(peer.ip()) else {
                refused.inc();
                if let Some(count) = refusals.record(std::time::Instant::now()) {
                    tracing::warn!(%peer, count, open = tracker.open(), "connection cap reached; closing new connections");
                }
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let connection =
                            Connection::new(stream, peer, slot, handshake_timeout, idle_timeout);
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
