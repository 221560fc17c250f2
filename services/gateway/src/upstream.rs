//! Channels to the backends: mutual TLS, bounded connect and call time, so
//! a backend that is down yields UNAVAILABLE promptly instead of a hang.
//!
//! Each upstream is a pool of endpoints (the listed addresses, and every
//! A/AAAA record of the listed names, re-resolved periodically). Admitted
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

use tokio::sync::{mpsc, watch, Notify};
use todoapp_runtime::server::BoxError;
use todoapp_runtime::ConfigError;
use tonic::body::Body;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, ServiceExt};

use crate::config::UpstreamSettings;

type HttpRequest = http::Request<Body>;
type HttpResponse = http::Response<Body>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type CallFuture = BoxFuture<Result<HttpResponse, BoxError>>;
type Balancer = tower::buffer::Buffer<HttpRequest, CallFuture>;
type Discovered = Change<SocketAddr, PendingRequests<EndpointService, CompleteOnResponse>>;

/// Calls queued for the balancer before callers wait (as in tonic's Channel).
const BALANCER_QUEUE: usize = 1024;
/// Health rounds that callers ask for (nothing admitted) are this far apart
/// at least, so a dead upstream is not probed once per call.
const MIN_ROUND_SPACING: Duration = Duration::from_millis(100);

pub fn client_tls(settings: &UpstreamSettings) -> Result<ClientTlsConfig, ConfigError> {
    todoapp_runtime::tls::client_tls(
        "upstream.ca",
        &settings.ca,
        Some((&settings.client_cert, &settings.client_key)),
        settings.server_name.as_deref(),
    )
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
        let invalid = || ConfigError::invalid(key, format!("`{url}` is not an https://HOST:PORT URL"));
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
        if uri.scheme_str() != Some("https")
            || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        {
            return Err(invalid());
        }
        Ok(Self {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
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
/// of all their A/AAAA records. A name that does not resolve now keeps the
/// addresses it had in `previous` (a DNS hiccup must not empty the pool).
pub async fn resolve(
    targets: &[Target],
    previous: &BTreeMap<SocketAddr, Target>,
) -> BTreeMap<SocketAddr, Target> {
    let mut addresses = BTreeMap::new();
    for target in targets {
        if let Some(address) = target.address() {
            addresses.insert(address, target.clone());
            continue;
        }
        match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
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
    source: BoxError,
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

/// One backend instance: its own lazily connecting channel, counting
/// connection failures.
#[derive(Clone)]
struct EndpointService {
    channel: Channel,
    failures: Arc<FailureCount>,
}

impl Service<HttpRequest> for EndpointService {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.channel.poll_ready(cx).map_err(BoxError::from)
    }

    fn call(&mut self, request: HttpRequest) -> CallFuture {
        let call = self.channel.call(request);
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
                    failures.failed(&error);
                    Err(EndpointError {
                        endpoint: failures.address,
                        source: error.into(),
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
        Poll::Ready(match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => Some(Ok(frame)),
            Some(Err(status)) => {
                this.failures.failed(&status);
                Some(Err(EndpointError {
                    endpoint: this.failures.address,
                    source: status.into(),
                }))
            }
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// Builds the channel of one endpoint address.
struct EndpointFactory {
    tls: ClientTlsConfig,
    /// `upstream.server_name` is set: it names every endpoint.
    fixed_server_name: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
    eject_after_failures: u32,
    ejections: mpsc::UnboundedSender<SocketAddr>,
}

impl EndpointFactory {
    /// A lazily connecting channel: the gateway starts (and answers
    /// UNAVAILABLE) even while a backend is down, and reconnects by itself.
    /// An address found under a name is verified against that name.
    fn service(&self, address: SocketAddr, target: &Target) -> Result<EndpointService, BoxError> {
        let mut tls = self.tls.clone();
        if !self.fixed_server_name && target.address().is_none() {
            tls = tls.domain_name(target.host.clone());
        }
        let channel = Endpoint::from_shared(format!("https://{address}"))?
            .tls_config(tls)?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(EndpointService {
            channel,
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
        let channels: Vec<(SocketAddr, Channel)> = self
            .members()
            .iter()
            .map(|(address, member)| (*address, member.service.channel.clone()))
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

/// One `grpc.health.v1` check of `service` on an endpoint's channel.
async fn check(channel: Channel, service: &'static str, limit: Duration) -> Result<(), String> {
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
    let mut resolved = BTreeMap::new();
    let has_names = targets.iter().any(|target| target.address().is_none());
    let mut health = tokio::time::interval(intervals.health);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resolving = tokio::time::interval(intervals.resolve);
    resolving.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = resolving.tick() => {
                if !resolved.is_empty() && !has_names {
                    continue;
                }
                let now = resolve(&targets, &resolved).await;
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
            fixed_server_name: settings.server_name.is_some(),
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
        let balancer = tower::buffer::Buffer::new(
            tower::util::BoxService::new(balance),
            BALANCER_QUEUE,
        );
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
    let balanced: CallFuture = Box::pin(balancer.oneshot(request));
    balanced.await
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
