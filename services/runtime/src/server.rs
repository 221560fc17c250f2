//! Serving a service's gRPC routes: listener, TLS with a handshake timeout,
//! readiness, health, graceful shutdown with a drain deadline.

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

use crate::config::ServerSettings;
use crate::grpc::GrpcEdgeLayer;
use crate::listener::{self, Origin};
use crate::readiness::{self, Probe};
use crate::shutdown;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything [`serve`] needs besides the routes.
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
}

/// Serves `routes` until SIGTERM/SIGINT, then drains in-flight calls for at
/// most `shutdown_timeout_secs`. READY=1 is sent once the listener is live.
pub async fn serve(options: ServeOptions, routes: Routes) -> Result<(), BoxError> {
    let addr = options.settings.listen_addr()?;
    let (listener, origin) = listener::acquire(options.name, addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(options.tls.clone());
    let incoming = tls_incoming(listener, acceptor, options.settings.handshake_timeout());

    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(GrpcEdgeLayer::new(options.name))
        .add_routes(routes);

    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let health = options.health.clone();
    let health_services = options.health_services.clone();
    let name = options.name;
    let signal = async move {
        shutdown::signal_received().await;
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

    let watchdog = options.probe.clone().and_then(readiness::spawn_watchdog);
    let how = match origin {
        Origin::SocketActivated => "socket-activated",
        Origin::Bound => "bound",
    };
    tracing::info!(service = options.name, %local, how, "serving");
    readiness::ready(&format!("serving on {local} ({how})"));

    let serving = server.serve_with_incoming_shutdown(incoming, signal);
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
            tracing::warn!(service = options.name, "drain deadline passed; abandoning remaining calls");
            Ok(())
        }
    };
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!(service = options.name, "stopped");
    result
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop,
/// dropping any that take longer than `handshake_timeout`. The loop ends (and
/// the listener closes) as soon as the server stops taking connections.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
