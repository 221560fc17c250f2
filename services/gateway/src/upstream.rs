//! The gateway's clients of the backends: mutual TLS, bounded connect and
//! call time, so a backend that is down yields UNAVAILABLE promptly instead
//! of a hang.
//!
//! Each upstream is a pool of endpoints (the listed addresses, and every
//! A/AAAA record of the listed names, re-resolved periodically), each with
//! one HTTP/2 connection of its own ([`BackendConnection`]). Admitted
//! endpoints are balanced by tower's power-of-two-choices balancer on
//! in-flight calls. A supervisor task health-checks every endpoint with
//! `grpc.health.v1` and ejects an endpoint that fails a check or
//! `eject_after_failures` calls in a row on the connection, and readmits
//! it once a check passes again.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use todoapp_runtime::server::BoxError;
use todoapp_runtime::ConfigError;
use tokio::sync::{mpsc, watch, Notify};
use tonic::body::Body;
use tonic::transport::Uri;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, ServiceExt};

use crate::backend_connection::{BackendConnection, Connector, Keepalive};
use crate::config::UpstreamSettings;

type HttpRequest = http::Request<Body>;
type HttpResponse = http::Response<Body>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type CallFuture = BoxFuture<Result<HttpResponse, BoxError>>;
/// tower's balancer, shared by every call: a call takes the lock only to
/// wait for a ready endpoint and hand its request over, then awaits the
/// reply without it. (A `tower::buffer::Buffer` would share it through a
/// task of its own, a hand-off and a wake-up more per call.)
type Balancer =
    Arc<tokio::sync::Mutex<tower::util::BoxService<HttpRequest, HttpResponse, BoxError>>>;
type Discovered = Change<SocketAddr, PendingRequests<EndpointService, CompleteOnResponse>>;

/// Health rounds that callers ask for (nothing admitted) are this far apart
/// at least, so a dead upstream is not probed once per call.
const MIN_ROUND_SPACING: Duration = Duration::from_millis(100);

pub fn client_tls(settings: &UpstreamSettings) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    todoapp_runtime::tls::client_config(
        "upstream.ca",
        &settings.ca,
        Some(todoapp_runtime::tls::Identity {
            cert_key: "upstream.client_cert",
            cert: &settings.client_cert,
            key_key: "upstream.client_key",
            key: &settings.client_key,
        }),
    )
}

/// The name every endpoint's certificate must carry when
/// `upstream.server_name` is set.
pub fn fixed_server_name(
    settings: &UpstreamSettings,
) -> Result<Option<ServerName<'static>>, ConfigError> {
    settings
        .server_name
        .as_ref()
        .map(|name| {
            ServerName::try_from(name.clone()).map_err(|_| {
                ConfigError::invalid(
                    "upstream.server_name",
                    format!("`{name}` is not a DNS name or IP address"),
                )
            })
        })
        .transpose()
}

/// One configured `https://HOST:PORT`: a fixed address, or a name whose
/// records are the endpoints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The host without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(key: &'static str, url: &str) -> Result<Self, ConfigError> {
        let invalid =
            || ConfigError::invalid(key, format!("`{url}` is not an https://HOST:PORT URL"));
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
        if uri.scheme_str() != Some("https")
            || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        {
            return Err(invalid());
        }
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(443),
        })
    }

    fn address(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// Every address of `targets`: fixed ones as they are, names by a lookup
/// of all their A/AAAA records, each lookup bounded by `limit` (a hung
/// resolver must not stall the health checks).
pub async fn resolve(
    targets: &[Target],
    previous: &BTreeMap<SocketAddr, Target>,
    limit: Duration,
) -> BTreeMap<SocketAddr, Target> {
    let mut lookups = Vec::with_capacity(targets.len());
    for target in targets {
        lookups.push(match target.address() {
            Some(address) => Ok(vec![address]),
            None => {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                match tokio::time::timeout(limit, lookup).await {
                    Ok(found) => found.map(Iterator::collect),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "lookup timed out",
                    )),
                }
            }
        });
    }
    addresses(targets, lookups, previous)
}

/// The endpoints from each target's lookup. A name that did not resolve
/// keeps the addresses it had in `previous`: a DNS hiccup must not empty
/// the pool.
fn addresses(
    targets: &[Target],
    lookups: Vec<std::io::Result<Vec<SocketAddr>>>,
    previous: &BTreeMap<SocketAddr, Target>,
) -> BTreeMap<SocketAddr, Target> {
    let mut addresses = BTreeMap::new();
    for (target, lookup) in targets.iter().zip(lookups) {
        match lookup {
            Ok(found) => {
                for address in found {
                    addresses.insert(address, target.clone());
                }
            }
            Err(error) => {
                tracing::warn!(host = %target.host, %error, "upstream name did not resolve; keeping its last addresses");
                for (address, known) in previous {
                    if known == target {
                        addresses.insert(*address, known.clone());
                    }
                }
            }
        }
    }
    addresses
}

/// What changed between two resolutions: (added, removed).
pub fn diff(
    before: &BTreeMap<SocketAddr, Target>,
    after: &BTreeMap<SocketAddr, Target>,
) -> (BTreeSet<SocketAddr>, BTreeSet<SocketAddr>) {
    let before_keys: BTreeSet<SocketAddr> = before.keys().copied().collect();
    let after_keys: BTreeSet<SocketAddr> = after.keys().copied().collect();
    (
        after_keys.difference(&before_keys).copied().collect(),
        before_keys.difference(&after_keys).copied().collect(),
    )
}

/// Marks the retry of a call that failed on `0`'s connection: it goes to
/// another admitted endpoint when there is one.
#[derive(Debug, Clone, Copy)]
pub struct AvoidEndpoint(pub SocketAddr);

/// A call that failed on an endpoint's connection (or, for a response
/// body, mid-stream), naming the endpoint.
#[derive(Debug)]
pub struct EndpointError {
    pub endpoint: SocketAddr,
    pub source: BoxError,
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend {}: {}", self.endpoint, self.source)
    }
}

impl std::error::Error for EndpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// No endpoint of the upstream passes its health check.
#[derive(Debug, thiserror::Error)]
#[error("no healthy {0} backend")]
pub struct NoHealthyEndpoint(&'static str);

fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Consecutive connection failures of one endpoint; at the threshold the
/// supervisor is told to eject it.
struct FailureCount {
    address: SocketAddr,
    consecutive: AtomicU32,
    threshold: u32,
    eject: mpsc::UnboundedSender<SocketAddr>,
}

impl FailureCount {
    fn succeeded(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }

    fn failed(&self, error: &(dyn std::error::Error + 'static)) {
        // A slow backend is not a broken connection.
        if is_timeout(error) {
            return;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.threshold {
            let _ = self.eject.send(self.address);
        }
    }
}

/// One backend instance: its own lazily opened connection, counting
/// connection failures.
#[derive(Clone)]
struct EndpointService {
    connection: BackendConnection,
    failures: Arc<FailureCount>,
}

impl Service<HttpRequest> for EndpointService {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.connection.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> CallFuture {
        let call = self.connection.call(request);
        let failures = self.failures.clone();
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    failures.succeeded();
                    Ok(response.map(|body| {
                        Body::new(WatchedBody {
                            inner: body,
                            failures,
                        })
                    }))
                }
                Err(error) => {
                    failures.failed(&*error);
                    Err(EndpointError {
                        endpoint: failures.address,
                        source: error,
                    }
                    .into())
                }
            }
        })
    }
}

/// A response body whose stream errors (the connection broke mid-reply)
/// count against its endpoint and name it.
struct WatchedBody {
    inner: Body,
    failures: Arc<FailureCount>,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = EndpointError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, EndpointError>>> {
        let this = &mut *self;
        Poll::Ready(
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => Some(Ok(frame)),
                Some(Err(status)) => {
                    this.failures.failed(&status);
                    Some(Err(EndpointError {
                        endpoint: this.failures.address,
                        source: status.into(),
                    }))
                }
                None => None,
            },
        )
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// Builds the connection of one endpoint address.
struct EndpointFactory {
    tls: Arc<rustls::ClientConfig>,
    /// `upstream.server_name`, which names every endpoint when set.
    fixed_server_name: Option<ServerName<'static>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    eject_after_failures: u32,
    ejections: mpsc::UnboundedSender<SocketAddr>,
}

impl EndpointFactory {
    /// A lazily opened connection: the gateway starts (and answers
    /// UNAVAILABLE) even while a backend is down, and reconnects by itself.
    /// An address found under a name is verified against that name, a
    /// listed address against itself.
    fn service(&self, address: SocketAddr, target: &Target) -> Result<EndpointService, BoxError> {
        let server_name = match &self.fixed_server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(target.host.clone())?,
        };
        let connection = BackendConnection::new(Connector {
            address,
            tls: self.tls.clone(),
            server_name,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            keepalive: Keepalive::default(),
        })?;
        Ok(EndpointService {
            connection,
            failures: Arc::new(FailureCount {
                address,
                consecutive: AtomicU32::new(0),
                threshold: self.eject_after_failures,
                eject: self.ejections.clone(),
            }),
        })
    }
}

struct Member {
    service: EndpointService,
    admitted: bool,
}

/// The endpoints of one upstream and which of them the balancer has.
struct Pool {
    upstream: &'static str,
    members: Mutex<BTreeMap<SocketAddr, Member>>,
    admitted: AtomicUsize,
    /// Picks the endpoint for a retry among the other admitted ones.
    rotation: AtomicUsize,
    changes: mpsc::UnboundedSender<Discovered>,
    /// A caller found nothing admitted and wants a health round now.
    round_wanted: Notify,
    /// Counts finished health rounds.
    rounds: watch::Sender<u64>,
    check_timeout: Duration,
    request_timeout: Duration,
}

impl Pool {
    fn members(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, Member>> {
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(&self, address: SocketAddr) {
        let mut members = self.members();
        let Some(member) = members.get_mut(&address) else {
            return;
        };
        if member.admitted {
            return;
        }
        member.admitted = true;
        member.service.failures.succeeded();
        let load = PendingRequests::new(member.service.clone(), CompleteOnResponse::default());
        let _ = self.changes.send(Change::Insert(address, load));
        self.admitted.fetch_add(1, Ordering::SeqCst);
        tracing::info!(upstream = self.upstream, endpoint = %address, "backend endpoint admitted");
    }

    fn eject(&self, address: SocketAddr, reason: &str) {
        let mut members = self.members();
        let Some(member) = members.get_mut(&address) else {
            return;
        };
        if !member.admitted {
            return;
        }
        member.admitted = false;
        let _ = self.changes.send(Change::Remove(address));
        self.admitted.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(upstream = self.upstream, endpoint = %address, reason, "backend endpoint ejected");
    }

    /// Applies a new resolution: new addresses join unadmitted (their first
    /// health check admits them), vanished ones leave.
    fn update(
        &self,
        before: &BTreeMap<SocketAddr, Target>,
        after: &BTreeMap<SocketAddr, Target>,
        factory: &EndpointFactory,
    ) {
        let (added, removed) = diff(before, after);
        for address in removed {
            self.eject(address, "no longer resolved");
            self.members().remove(&address);
            tracing::info!(upstream = self.upstream, endpoint = %address, "backend endpoint removed");
        }
        for address in added {
            let Some(target) = after.get(&address) else {
                continue;
            };
            match factory.service(address, target) {
                Ok(service) => {
                    self.members().insert(
                        address,
                        Member {
                            service,
                            admitted: false,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(upstream = self.upstream, endpoint = %address, %error, "cannot build a channel")
                }
            }
        }
    }

    /// An admitted endpoint other than `failed`, in turn.
    fn other_than(&self, failed: SocketAddr) -> Option<EndpointService> {
        let members = self.members();
        let others: Vec<&Member> = members
            .iter()
            .filter(|(address, member)| member.admitted && **address != failed)
            .map(|(_, member)| member)
            .collect();
        if others.is_empty() {
            return None;
        }
        let turn = self.rotation.fetch_add(1, Ordering::Relaxed) % others.len();
        Some(others[turn].service.clone())
    }

    /// With nothing admitted, asks for a health round and waits for it
    /// (bounded); whether an endpoint is admitted afterwards.
    async fn await_round(&self) -> bool {
        let mut rounds = self.rounds.subscribe();
        rounds.borrow_and_update();
        self.round_wanted.notify_one();
        let wait = self.check_timeout + MIN_ROUND_SPACING * 2;
        // Boxed as a `Send` future: spelled out, rustc proves `Send` for the
        // caller's future (rust-lang/rust#102211).
        let changed: BoxFuture<()> = Box::pin(async move {
            let _ = rounds.changed().await;
        });
        let _ = tokio::time::timeout(wait, changed).await;
        self.admitted.load(Ordering::SeqCst) > 0
    }

    /// Checks every endpoint at once; admits those serving, ejects the rest.
    async fn health_round(&self, service: &'static str) {
        let channels: Vec<(SocketAddr, BackendConnection)> = self
            .members()
            .iter()
            .map(|(address, member)| (*address, member.service.connection.clone()))
            .collect();
        let mut checks = tokio::task::JoinSet::new();
        for (address, channel) in channels {
            let limit = self.check_timeout;
            checks.spawn(async move { (address, check(channel, service, limit).await) });
        }
        while let Some(done) = checks.join_next().await {
            match done {
                Ok((address, Ok(()))) => self.admit(address),
                Ok((address, Err(reason))) => {
                    tracing::debug!(upstream = self.upstream, endpoint = %address, %reason, "health check failed");
                    self.eject(address, &format!("health check: {reason}"));
                }
                Err(error) => tracing::error!(%error, "health check task failed"),
            }
        }
        self.rounds.send_modify(|n| *n += 1);
    }
}

/// One `grpc.health.v1` check of `service` on an endpoint's connection.
async fn check(
    channel: BackendConnection,
    service: &'static str,
    limit: Duration,
) -> Result<(), String> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request.set_timeout(limit);
    match tokio::time::timeout(limit, HealthClient::new(channel).check(request)).await {
        Ok(Ok(response)) => match response.get_ref().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(other.as_str_name().to_owned()),
        },
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// How often the supervisor of an upstream acts.
#[derive(Debug, Clone, Copy)]
struct Intervals {
    health: Duration,
    resolve: Duration,
}

async fn supervise(
    pool: Arc<Pool>,
    targets: Vec<Target>,
    factory: EndpointFactory,
    mut ejections: mpsc::UnboundedReceiver<SocketAddr>,
    intervals: Intervals,
    health_service: &'static str,
) {
    // The first resolution and health round before anything else: calls
    // that arrive meanwhile wait for this round.
    let mut resolved = resolve(&targets, &BTreeMap::new(), pool.check_timeout).await;
    pool.update(&BTreeMap::new(), &resolved, &factory);
    pool.health_round(health_service).await;
    let mut last_round = tokio::time::Instant::now();
    let has_names = targets.iter().any(|target| target.address().is_none());
    let mut health = tokio::time::interval_at(last_round + intervals.health, intervals.health);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolving = tokio::time::interval_at(last_round + intervals.resolve, intervals.resolve);
    resolving.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = resolving.tick() => {
                if !has_names {
                    continue;
                }
                let now = resolve(&targets, &resolved, pool.check_timeout).await;
                if now == resolved {
                    continue;
                }
                pool.update(&resolved, &now, &factory);
                resolved = now;
            }
            _ = health.tick() => {}
            _ = pool.round_wanted.notified() => {
                tokio::time::sleep_until(last_round + MIN_ROUND_SPACING).await;
            }
            Some(address) = ejections.recv() => {
                pool.eject(address, "consecutive connection failures");
                continue;
            }
        }
        pool.health_round(health_service).await;
        last_round = tokio::time::Instant::now();
    }
}

/// The transport of one upstream's clients: calls go to the balancer over
/// the admitted endpoints; a retry marked [`AvoidEndpoint`] goes to another
/// admitted endpoint directly; with none admitted, a call waits for one
/// health round and fails as a connection failure if that admits none.
#[derive(Clone)]
pub struct Balanced {
    balancer: Balancer,
    pool: Arc<Pool>,
}

impl Balanced {
    /// Starts balancing over `endpoints` (the `key` setting's URLs) and the
    /// supervisor that resolves, checks, ejects and readmits them.
    pub fn start(
        key: &'static str,
        health_service: &'static str,
        endpoints: &[String],
        settings: &UpstreamSettings,
    ) -> Result<Self, ConfigError> {
        let targets = endpoints
            .iter()
            .map(|url| Target::parse(key, url))
            .collect::<Result<Vec<_>, _>>()?;
        let (ejections_tx, ejections) = mpsc::unbounded_channel();
        let factory = EndpointFactory {
            tls: client_tls(settings)?,
            fixed_server_name: fixed_server_name(settings)?,
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            eject_after_failures: settings.eject_after_failures,
            ejections: ejections_tx,
        };
        let (changes, discovered) = mpsc::unbounded_channel::<Discovered>();
        let discover = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::UnboundedReceiverStream::new(discovered),
            Ok::<_, std::convert::Infallible>,
        );
        let balance = tower::balance::p2c::Balance::new(discover);
        let balancer = Arc::new(tokio::sync::Mutex::new(tower::util::BoxService::new(
            balance,
        )));
        let pool = Arc::new(Pool {
            upstream: key,
            members: Mutex::new(BTreeMap::new()),
            admitted: AtomicUsize::new(0),
            rotation: AtomicUsize::new(0),
            changes,
            round_wanted: Notify::new(),
            rounds: watch::channel(0).0,
            check_timeout: factory.connect_timeout,
            request_timeout: factory.request_timeout,
        });
        let intervals = Intervals {
            health: Duration::from_millis(settings.health_interval_ms),
            resolve: Duration::from_millis(settings.resolve_interval_ms),
        };
        tokio::spawn(supervise(
            pool.clone(),
            targets,
            factory,
            ejections,
            intervals,
            health_service,
        ));
        Ok(Self { balancer, pool })
    }
}

impl Service<HttpRequest> for Balanced {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited per call, on the service the call goes to.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> CallFuture {
        let pool = self.pool.clone();
        let balancer = self.balancer.clone();
        // A safety net: the endpoint channels bound each call, but a call
        // must not wait without bound for the balancer either.
        let limit = pool.request_timeout + pool.check_timeout + MIN_ROUND_SPACING * 2;
        Box::pin(async move {
            match tokio::time::timeout(limit, route(pool, balancer, request)).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(tonic::TimeoutExpired(())) as BoxError),
            }
        })
    }
}

async fn route(
    pool: Arc<Pool>,
    balancer: Balancer,
    request: HttpRequest,
) -> Result<HttpResponse, BoxError> {
    if let Some(AvoidEndpoint(failed)) = request.extensions().get().copied() {
        if let Some(other) = pool.other_than(failed) {
            return other.oneshot(request).await;
        }
    }
    if pool.admitted.load(Ordering::SeqCst) == 0 && !pool.await_round().await {
        return Err(Box::new(NoHealthyEndpoint(pool.upstream)));
    }
    let call = {
        let mut balancer = balancer.lock().await;
        std::future::poll_fn(|cx| balancer.poll_ready(cx)).await?;
        balancer.call(request)
    };
    call.await
}

/// The endpoint a failed call went to, when its failure names one.
pub fn failed_endpoint(status: &tonic::Status) -> Option<SocketAddr> {
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(failed) = error.downcast_ref::<EndpointError>() {
            return Some(failed.endpoint);
        }
        cause = error.source();
    }
    None
}

/// A backend channel whose calls pass the current trace context on and are
/// counted as `grpc_client_*{backend}`.
pub type Backend = todoapp_runtime::upstream::Upstream<Balanced>;

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

#[cfg(test)]
mod tests {
    use std::net::ToSocketAddrs;
    use std::sync::atomic::AtomicUsize;

    use todoapp_api::to_do_client::ToDoClient;
    use todoapp_api::to_do_server::{ToDo, ToDoServer};
    use todoapp_api::*;
    use todoapp_devkit::pki::{self, files};
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    use tonic::{Request, Response, Status};
    use tonic_health::server::HealthReporter;

    use super::*;
    use crate::config::{Endpoints, GatewayConfig};

    #[test]
    fn targets_are_https_urls_with_a_host() {
        let parse = |url: &str| Target::parse("upstream.todo", url).ok();
        let target = |host: &str, port| {
            Some(Target {
                host: host.into(),
                port,
            })
        };
        assert_eq!(parse("https://127.0.0.1:50062"), target("127.0.0.1", 50062));
        assert_eq!(parse("https://[::1]:7"), target("::1", 7));
        assert_eq!(
            parse("https://todo.internal:7/"),
            target("todo.internal", 7)
        );
        assert_eq!(parse("https://todo"), target("todo", 443));
        for bad in [
            "http://127.0.0.1:1",
            "127.0.0.1:1",
            "https://",
            "https://h:1/path",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let refusal = Target::parse("upstream.todo", "ftp://x").expect_err("refused");
        assert!(refusal.to_string().contains("upstream.todo"), "{refusal}");
    }

    #[tokio::test]
    async fn names_resolve_to_every_record_and_a_failed_lookup_keeps_the_last() {
        let port = 50999;
        let localhost = Target {
            host: "localhost".into(),
            port,
        };
        let fixed = Target {
            host: "127.0.0.7".into(),
            port: 1,
        };
        let targets = [localhost.clone(), fixed.clone()];
        let resolved = tokio::time::timeout(
            Duration::from_secs(5),
            resolve(&targets, &BTreeMap::new(), Duration::from_secs(2)),
        )
        .await
        .expect("localhost resolves at once");
        // Every record the system has for the name (127.0.0.1, and ::1
        // where /etc/hosts lists it), plus the fixed address.
        let mut expected: BTreeSet<SocketAddr> = ("localhost", port)
            .to_socket_addrs()
            .expect("system lookup")
            .collect();
        assert!(expected.contains(&"127.0.0.1:50999".parse().expect("address")));
        expected.insert("127.0.0.7:1".parse().expect("address"));
        assert_eq!(resolved.keys().copied().collect::<BTreeSet<_>>(), expected);

        // The name now resolves to one other address: one added, the
        // others removed; the fixed address stays.
        let moved: SocketAddr = "127.0.0.9:50999".parse().expect("address");
        let after = addresses(
            &targets,
            vec![
                Ok(vec![moved]),
                Ok(vec!["127.0.0.7:1".parse().expect("address")]),
            ],
            &resolved,
        );
        let (added, removed) = diff(&resolved, &after);
        assert_eq!(added, BTreeSet::from([moved]));
        let mut gone: BTreeSet<SocketAddr> = expected.clone();
        gone.remove(&"127.0.0.7:1".parse().expect("address"));
        assert_eq!(removed, gone);

        // A failed lookup keeps the name's last addresses: nothing changes.
        let failed = addresses(
            &targets,
            vec![
                Err(std::io::Error::other("SERVFAIL")),
                Ok(vec!["127.0.0.7:1".parse().expect("address")]),
            ],
            &after,
        );
        assert_eq!(failed, after);
        assert_eq!(diff(&after, &failed), (BTreeSet::new(), BTreeSet::new()));
    }

    /// A todo backend in-process, over mutual TLS, counting the calls it
    /// serves, with a health status the test sets.
    struct FakeTodo {
        calls: Arc<AtomicUsize>,
    }

    impl FakeTodo {
        fn counted<T: Default>(&self) -> Result<Response<T>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(T::default()))
        }
    }

    #[tonic::async_trait]
    impl ToDo for FakeTodo {
        async fn create_to_do(
            &self,
            _: Request<CreateToDoReq>,
        ) -> Result<Response<CreateToDoRsp>, Status> {
            self.counted()
        }
        async fn get_to_do(&self, _: Request<GetToDoReq>) -> Result<Response<GetToDoRsp>, Status> {
            self.counted()
        }
        async fn delete_to_do(
            &self,
            _: Request<DeleteToDoReq>,
        ) -> Result<Response<DeleteToDoRsp>, Status> {
            self.counted()
        }
        async fn update_to_do(
            &self,
            _: Request<UpdateToDoReq>,
        ) -> Result<Response<UpdateToDoRsp>, Status> {
            self.counted()
        }
        async fn list_to_do(
            &self,
            _: Request<ListToDoReq>,
        ) -> Result<Response<ListToDoRsp>, Status> {
            self.counted()
        }
    }

    struct Backend {
        address: SocketAddr,
        calls: Arc<AtomicUsize>,
        health: HealthReporter,
    }

    impl Backend {
        async fn start(pki: &std::path::Path) -> Self {
            let read = |name: &str| std::fs::read(pki.join(name)).expect("dev PKI file");
            let tls = ServerTlsConfig::new()
                .identity(Identity::from_pem(
                    read(files::TODO_CERT),
                    read(files::TODO_KEY),
                ))
                .client_ca_root(Certificate::from_pem(read(files::INTERNAL_CA_CERT)));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            let calls = Arc::new(AtomicUsize::new(0));
            let (health, health_service) = tonic_health::server::health_reporter();
            health
                .set_service_status(
                    todoapp_api::service_names::TODO,
                    tonic_health::ServingStatus::Serving,
                )
                .await;
            let router = Server::builder()
                .tls_config(tls)
                .expect("server TLS")
                .add_service(health_service)
                .add_service(ToDoServer::new(FakeTodo {
                    calls: calls.clone(),
                }));
            tokio::spawn(
                router
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            Self {
                address,
                calls,
                health,
            }
        }

        async fn set(&self, status: tonic_health::ServingStatus) {
            self.health
                .set_service_status(todoapp_api::service_names::TODO, status)
                .await;
        }

        fn take_calls(&self) -> usize {
            self.calls.swap(0, Ordering::SeqCst)
        }
    }

    /// A todo upstream over `addresses` with the dev PKI's client identity;
    /// also its `eject_after_failures`.
    fn balanced_over(
        pki: &std::path::Path,
        addresses: &[SocketAddr],
        health_interval_ms: u64,
    ) -> (Balanced, u32) {
        let mut settings = GatewayConfig::default().upstream;
        settings.ca = pki.join(files::INTERNAL_CA_CERT);
        settings.client_cert = pki.join(files::GATEWAY_CLIENT_CERT);
        settings.client_key = pki.join(files::GATEWAY_CLIENT_KEY);
        settings.health_interval_ms = health_interval_ms;
        let urls: Vec<String> = addresses.iter().map(|a| format!("https://{a}")).collect();
        settings.todo = Endpoints::Many(urls.clone());
        let balanced = Balanced::start(
            "upstream.todo",
            todoapp_api::service_names::TODO,
            &urls,
            &settings,
        )
        .expect("start");
        (balanced, settings.eject_after_failures)
    }

    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "{what} within 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn gets(client: &ToDoClient<Balanced>, n: usize, avoid: Option<SocketAddr>) {
        for _ in 0..n {
            let mut request = Request::new(GetToDoReq { id: 1 });
            if let Some(address) = avoid {
                request.extensions_mut().insert(AvoidEndpoint(address));
            }
            client.clone().get_to_do(request).await.expect("get");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unhealthy_endpoints_get_no_calls_until_healthy_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        pki::ensure(&pki, &[]).expect("dev PKI");
        let (a, b) = (Backend::start(&pki).await, Backend::start(&pki).await);
        b.set(tonic_health::ServingStatus::NotServing).await;

        let (balanced, _) = balanced_over(&pki, &[a.address, b.address], 100);
        let pool = balanced.pool.clone();
        let client = ToDoClient::new(balanced);

        // B says NOT_SERVING: every call goes to A.
        gets(&client, 40, None).await;
        assert_eq!((a.take_calls(), b.take_calls()), (40, 0));
        assert_eq!(pool.admitted.load(Ordering::SeqCst), 1);

        // Serving again: readmitted, and the balancer uses both.
        b.set(tonic_health::ServingStatus::Serving).await;
        until("B readmitted", || pool.admitted.load(Ordering::SeqCst) == 2).await;
        gets(&client, 200, None).await;
        let (to_a, to_b) = (a.take_calls(), b.take_calls());
        assert_eq!(to_a + to_b, 200);
        assert!(to_a >= 50 && to_b >= 50, "not balanced: {to_a} / {to_b}");

        // A retry marked as avoiding A goes to B, the other admitted one.
        gets(&client, 20, Some(a.address)).await;
        assert_eq!((a.take_calls(), b.take_calls()), (0, 20));

        // A turns unhealthy: ejected, no call reaches it.
        a.set(tonic_health::ServingStatus::NotServing).await;
        until("A ejected", || pool.admitted.load(Ordering::SeqCst) == 1).await;
        gets(&client, 40, None).await;
        assert_eq!((a.take_calls(), b.take_calls()), (0, 40));

        // With none healthy, calls fail promptly as a connection failure
        // (the gateway's UNAVAILABLE), not a hang.
        b.set(tonic_health::ServingStatus::NotServing).await;
        until("B ejected", || pool.admitted.load(Ordering::SeqCst) == 0).await;
        let started = std::time::Instant::now();
        let status = client
            .clone()
            .get_to_do(Request::new(GetToDoReq { id: 1 }))
            .await
            .expect_err("no healthy endpoint");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(
            std::error::Error::source(&status).is_some(),
            "not a transport failure: {status:?}"
        );
        assert_eq!((a.take_calls(), b.take_calls()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_endpoint_that_goes_down_is_ejected_and_the_retry_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        pki::ensure(&pki, &[]).expect("dev PKI");
        let a = Backend::start(&pki).await;
        // Nothing listens here.
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        // Rounds far apart: only failed calls can eject it here.
        let (balanced, eject_after_failures) = balanced_over(&pki, &[a.address, down], 3_600_000);
        let pool = balanced.pool.clone();
        until("the first round", || *pool.rounds.borrow() >= 1).await;
        assert_eq!(
            pool.admitted.load(Ordering::SeqCst),
            1,
            "the first round admits A only"
        );

        // Admit the dead endpoint as if it had just been healthy: calls to
        // it fail on the connection, name it, and eject it after
        // `eject_after_failures` in a row.
        pool.admit(down);
        let client = ToDoClient::new(balanced);
        let mut failures = 0;
        for _ in 0..200 {
            if pool.admitted.load(Ordering::SeqCst) == 1 {
                break;
            }
            if let Err(status) = client
                .clone()
                .get_to_do(Request::new(GetToDoReq { id: 1 }))
                .await
            {
                assert_eq!(failed_endpoint(&status), Some(down), "{status:?}");
                failures += 1;
                if failures < eject_after_failures {
                    assert_eq!(pool.admitted.load(Ordering::SeqCst), 2, "ejected too early");
                }
            }
        }
        until("the dead endpoint ejected", || {
            pool.admitted.load(Ordering::SeqCst) == 1
        })
        .await;
        assert!(failures >= eject_after_failures, "{failures} failures");
        a.take_calls();
        gets(&client, 20, None).await;
        assert_eq!(a.take_calls(), 20);
    }
}
