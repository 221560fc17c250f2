//! Prometheus metrics: one process-wide registry, the gRPC server and client
//! metrics under the de-facto `grpc_*` names, values sampled at scrape time
//! (pool sizes, queue depths, process figures), and the HTTP listener that
//! serves them (`metrics.listen`).

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use tonic::Code;

/// The registry and what was registered in it, by name, so that a second
/// registration of a name (a component built twice in one process, as in
/// tests) shares the first metric instead of duplicating the name.
struct Registered {
    registry: Registry,
    metrics: HashMap<String, Box<dyn Any + Send>>,
    sampled: Arc<Sampled>,
}

static REGISTERED: LazyLock<Mutex<Registered>> = LazyLock::new(|| {
    let sampled = Arc::new(Sampled::default());
    let mut registry = Registry::default();
    registry.register_collector(Box::new(sampled.clone()));
    registry.register_collector(Box::new(ProcessCollector));
    Mutex::new(Registered {
        registry,
        metrics: HashMap::new(),
        sampled,
    })
});

fn registered() -> std::sync::MutexGuard<'static, Registered> {
    // A panic while registering leaves nothing half-done worth refusing.
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The metric registered as `name`, registering `make()` the first time.
/// Counters are named without `_total`: the exposition adds it.
pub fn register<M: Metric + Clone + Send>(name: &str, help: &str, make: impl FnOnce() -> M) -> M {
    let mut registered = registered();
    if let Some(existing) = registered
        .metrics
        .get(name)
        .and_then(|m| m.downcast_ref::<M>())
    {
        return existing.clone();
    }
    let metric = make();
    registered.registry.register(name, help, metric.clone());
    registered
        .metrics
        .insert(name.to_owned(), Box::new(metric.clone()));
    metric
}

pub fn counter(name: &str, help: &str) -> Counter {
    register(name, help, Counter::default)
}

pub fn gauge(name: &str, help: &str) -> Gauge {
    register(name, help, Gauge::default)
}

pub fn counter_family<L>(name: &str, help: &str) -> Family<L, Counter>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    register(name, help, Family::default)
}

/// A histogram of durations in seconds, from 100 µs to about 26 s.
pub fn seconds_histogram(name: &str, help: &str) -> Histogram {
    register(name, help, || Histogram::new(latency_buckets()))
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 19)
}

/// A gauge whose value `sample` reads at every scrape (a pool's size, a
/// queue's depth). Registering `name` again replaces the sampler.
pub fn sampled_gauge(name: &str, help: &str, sample: impl Fn() -> i64 + Send + Sync + 'static) {
    let sampled = registered().sampled.clone();
    sampled.insert(name, help, SampleKind::Gauge, Box::new(sample));
}

/// A counter whose value `sample` reads at every scrape.
pub fn sampled_counter(name: &str, help: &str, sample: impl Fn() -> i64 + Send + Sync + 'static) {
    let sampled = registered().sampled.clone();
    sampled.insert(name, help, SampleKind::Counter, Box::new(sample));
}

/// The exposition (OpenMetrics text) of everything registered.
pub fn encode() -> String {
    let registered = registered();
    let mut text = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registered.registry);
    text
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Sampler = Box<dyn Fn() -> i64 + Send + Sync>;

#[derive(Clone, Copy, Debug)]
enum SampleKind {
    Gauge,
    Counter,
}

#[derive(Default)]
struct Sampled {
    samplers: Mutex<Vec<(String, String, SampleKind, Sampler)>>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampled")
    }
}

impl Sampled {
    fn insert(&self, name: &str, help: &str, kind: SampleKind, sampler: Sampler) {
        let mut samplers = self.samplers.lock().unwrap_or_else(|e| e.into_inner());
        samplers.retain(|(existing, ..)| existing != name);
        samplers.push((name.to_owned(), help.to_owned(), kind, sampler));
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samplers = self.samplers.lock().unwrap_or_else(|e| e.into_inner());
        for (name, help, kind, sample) in samplers.iter() {
            let value = sample();
            match kind {
                SampleKind::Gauge => {
                    let gauge = ConstGauge::new(value);
                    gauge.encode(encoder.encode_descriptor(
                        name,
                        help,
                        None,
                        gauge.metric_type(),
                    )?)?
                }
                SampleKind::Counter => {
                    let counter = ConstCounter::new(value.max(0) as u64);
                    counter.encode(encoder.encode_descriptor(
                        name,
                        help,
                        None,
                        counter.metric_type(),
                    )?)?
                }
            }
        }
        Ok(())
    }
}

/// `process_*` figures from /proc, as the official clients name them.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(process) = ProcessFigures::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(process.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                process.resident_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                process.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                process.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                process.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

impl ProcessFigures {
    /// This process's figures, or `None` where /proc is unreadable.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may itself hold spaces and
        // parentheses: the last ')' ends it. Field 3 (state) is index 0.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        // SAFETY: sysconf only reads a constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
        let resident_bytes = field(24)? * page;
        let start_ticks = field(22)?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        Some(Self {
            cpu_seconds,
            resident_bytes,
            open_fds,
            max_fds,
            start_time_seconds: boot_time as f64 + start_ticks as f64 / ticks,
        })
    }
}

/// `todoapp_build_info{service,version,revision} 1`. The revision comes from
/// `TODOAPP_GIT_REVISION` at build time (the flake sets it), else `unknown`.
pub fn register_build_info(service: &'static str, version: &'static str) {
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct BuildLabels {
        service: &'static str,
        version: &'static str,
        revision: &'static str,
    }
    let info: Family<BuildLabels, Gauge> = register(
        "todoapp_build_info",
        "Version and git revision of the running build",
        Family::default,
    );
    info.get_or_create(&BuildLabels {
        service,
        version,
        revision: option_env!("TODOAPP_GIT_REVISION").unwrap_or("unknown"),
    })
    .set(1);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counts a call refused to protect the service (`todoapp_calls_shed_total`
/// by `reason`): over a call or header cap, a fair share, a throttle.
pub fn count_shed(reason: &'static str) {
    SHED.get_or_create(&ReasonLabel { reason }).inc();
}

/// Exports `reasons` at 0 before any call is shed, so that rates and
/// alerts see the series from the start.
pub fn declare_shed_reasons(reasons: &[&'static str]) {
    for &reason in reasons {
        let _ = SHED.get_or_create(&ReasonLabel { reason });
    }
}

static SHED: LazyLock<Family<ReasonLabel, Counter>> = LazyLock::new(|| {
    counter_family(
        "todoapp_calls_shed",
        "Calls refused to protect the service (caps, fair shares, throttles)",
    )
});

// ---------------------------------------------------------------------------
// gRPC call metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: Arc<str>,
    grpc_method: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: Arc<str>,
    grpc_method: Arc<str>,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientMethodLabels {
    backend: &'static str,
    grpc_type: &'static str,
    grpc_service: Arc<str>,
    grpc_method: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientHandledLabels {
    backend: &'static str,
    grpc_type: &'static str,
    grpc_service: Arc<str>,
    grpc_method: Arc<str>,
    grpc_code: &'static str,
}

/// gRPC's status code names, as the `grpc_code` label spells them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

const CODES: usize = 17;

/// One method's metric handles, resolved once so that a call costs a map
/// lookup and a few atomic adds.
pub struct MethodMetrics {
    pub path: Arc<str>,
    started: Counter,
    handling: Histogram,
    handled: [OnceLock<Counter>; CODES],
    make_handled: Box<dyn Fn(Code) -> Counter + Send + Sync>,
}

/// Whether calls are counted: only where metrics are served, so that a
/// service without `metrics.listen` pays nothing for them.
static CALLS_COUNTED: AtomicBool = AtomicBool::new(false);

/// Turns on counting calls (`grpc_server_*`, `grpc_client_*`).
pub fn count_calls() {
    CALLS_COUNTED.store(true, Ordering::Relaxed);
}

impl MethodMetrics {
    pub fn started(&self) {
        if CALLS_COUNTED.load(Ordering::Relaxed) {
            self.started.inc();
        }
    }

    pub fn handled(&self, code: Code, elapsed: Duration) {
        if !CALLS_COUNTED.load(Ordering::Relaxed) {
            return;
        }
        let index = (code as usize).min(CODES - 1);
        self.handled[index]
            .get_or_init(|| (self.make_handled)(code))
            .inc();
        self.handling.observe(elapsed.as_secs_f64());
    }
}

/// The methods a server or client may see, so that the label values stay
/// bounded: any other path is counted as service and method `unknown`.
pub struct MethodTable {
    methods: HashMap<Arc<str>, Arc<MethodMetrics>>,
    unknown: Arc<MethodMetrics>,
}

/// A method as the descriptor sets describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodDescription {
    /// `/package.Service/Method`
    pub path: String,
    pub service: String,
    pub method: String,
    pub grpc_type: &'static str,
}

/// Every method of every service in the encoded `FileDescriptorSet`s.
pub fn methods_of(descriptor_sets: &[&[u8]]) -> Vec<MethodDescription> {
    use prost::Message;
    let mut methods = Vec::new();
    for set in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            let package = file.package().to_owned();
            for service in &file.service {
                let service_name = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                for method in &service.method {
                    let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    methods.push(MethodDescription {
                        path: format!("/{service_name}/{}", method.name()),
                        service: service_name.clone(),
                        method: method.name().to_owned(),
                        grpc_type,
                    });
                }
            }
        }
    }
    methods
}

struct Families {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

impl MethodTable {
    /// The server-side table: `grpc_server_*`.
    pub fn server(methods: &[MethodDescription]) -> Self {
        let families = Families {
            started: counter_family(
                "grpc_server_started",
                "Total number of RPCs started on the server",
            ),
            handled: counter_family(
                "grpc_server_handled",
                "Total number of RPCs completed on the server, regardless of success or failure",
            ),
            handling: register(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
                || Family::new_with_constructor(new_latency_histogram as fn() -> Histogram),
            ),
        };
        Self::build(methods, |description| {
            let labels = MethodLabels {
                grpc_type: description.grpc_type,
                grpc_service: description.service.as_str().into(),
                grpc_method: description.method.as_str().into(),
            };
            let handled = families.handled.clone();
            let handled_labels = labels.clone();
            MethodMetrics {
                path: description.path.as_str().into(),
                started: families.started.get_or_create_owned(&labels),
                handling: families.handling.get_or_create_owned(&labels),
                handled: Default::default(),
                make_handled: Box::new(move |code| {
                    handled.get_or_create_owned(&HandledLabels {
                        grpc_type: handled_labels.grpc_type,
                        grpc_service: handled_labels.grpc_service.clone(),
                        grpc_method: handled_labels.grpc_method.clone(),
                        grpc_code: code_name(code),
                    })
                }),
            }
        })
    }

    /// The client-side table for calls to `backend`: `grpc_client_*`.
    pub fn client(backend: &'static str, methods: &[MethodDescription]) -> Self {
        let started: Family<ClientMethodLabels, Counter> = counter_family(
            "grpc_client_started",
            "Total number of RPCs started on the client",
        );
        let handled: Family<ClientHandledLabels, Counter> = counter_family(
            "grpc_client_handled",
            "Total number of RPCs completed by the client, regardless of success or failure",
        );
        let handling: Family<ClientMethodLabels, Histogram, fn() -> Histogram> = register(
            "grpc_client_handling_seconds",
            "Histogram of response latency (seconds) of the gRPC until it is finished by the application",
            || Family::new_with_constructor(new_latency_histogram as fn() -> Histogram),
        );
        Self::build(methods, |description| {
            let labels = ClientMethodLabels {
                backend,
                grpc_type: description.grpc_type,
                grpc_service: description.service.as_str().into(),
                grpc_method: description.method.as_str().into(),
            };
            let handled = handled.clone();
            let handled_labels = labels.clone();
            MethodMetrics {
                path: description.path.as_str().into(),
                started: started.get_or_create_owned(&labels),
                handling: handling.get_or_create_owned(&labels),
                handled: Default::default(),
                make_handled: Box::new(move |code| {
                    handled.get_or_create_owned(&ClientHandledLabels {
                        backend: handled_labels.backend,
                        grpc_type: handled_labels.grpc_type,
                        grpc_service: handled_labels.grpc_service.clone(),
                        grpc_method: handled_labels.grpc_method.clone(),
                        grpc_code: code_name(code),
                    })
                }),
            }
        })
    }

    fn build(
        methods: &[MethodDescription],
        make: impl Fn(&MethodDescription) -> MethodMetrics,
    ) -> Self {
        let unknown = Arc::new(make(&MethodDescription {
            path: String::new(),
            service: "unknown".into(),
            method: "unknown".into(),
            grpc_type: "unknown",
        }));
        let methods = methods
            .iter()
            .map(|description| {
                (
                    Arc::<str>::from(description.path.as_str()),
                    Arc::new(make(description)),
                )
            })
            .collect();
        Self { methods, unknown }
    }

    pub fn get(&self, path: &str) -> &Arc<MethodMetrics> {
        self.methods.get(path).unwrap_or(&self.unknown)
    }
}

// ---------------------------------------------------------------------------
// The HTTP listener

/// Serves `GET /metrics` on `addr` (or on the socket passed by systemd as
/// `<service>-metrics`) until the returned task is aborted.
pub async fn spawn_listener(
    service: &'static str,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let socket_name = format!("{service}-metrics");
    let (listener, _) = crate::listener::acquire_named(&socket_name, addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _peer)) = listener.accept().await else {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = hyper::service::service_fn(|request| async move {
                    Ok::<_, std::convert::Infallible>(respond(&request))
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, service);
                // A scrape is small: a connection that takes longer is dropped.
                let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
            });
        }
    });
    Ok((local, task))
}

fn respond<B>(request: &http::Request<B>) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => (http::StatusCode::OK, CONTENT_TYPE, encode()),
        (&http::Method::GET, _) => (
            http::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_read_from_proc() {
        let figures = ProcessFigures::read().expect("/proc is readable");
        assert!(figures.resident_bytes > 1024 * 1024, "{figures:?}");
        assert!(figures.open_fds >= 3, "{figures:?}");
        assert!(figures.max_fds >= figures.open_fds, "{figures:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            figures.start_time_seconds > now - 3600.0 && figures.start_time_seconds <= now + 1.0,
            "{figures:?}"
        );
        let text = encode();
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn registering_a_name_twice_shares_one_metric() {
        let first = counter("test_shared_counter", "a test counter");
        let second = counter("test_shared_counter", "a test counter");
        first.inc();
        second.inc();
        assert_eq!(first.get(), 2);
        let text = encode();
        assert_eq!(
            text.matches("# TYPE test_shared_counter counter").count(),
            1
        );
        assert!(text.contains("test_shared_counter_total 2\n"), "{text}");
    }

    #[test]
    fn sampled_values_are_read_at_scrape_time() {
        let value = Arc::new(std::sync::atomic::AtomicI64::new(3));
        let read = value.clone();
        sampled_gauge("test_sampled_depth", "a test gauge", move || {
            read.load(std::sync::atomic::Ordering::Relaxed)
        });
        assert!(encode().contains("test_sampled_depth 3\n"));
        value.store(5, std::sync::atomic::Ordering::Relaxed);
        assert!(encode().contains("test_sampled_depth 5\n"));
    }

    #[test]
    fn unknown_paths_share_one_label_set() {
        let methods = vec![MethodDescription {
            path: "/Test/Known".into(),
            service: "Test".into(),
            method: "Known".into(),
            grpc_type: "unary",
        }];
        let table = MethodTable::server(&methods);
        count_calls();
        table.get("/Test/Known").started();
        for garbage in ["/x/y", "/a/b", "/Test/Other"] {
            let metrics = table.get(garbage);
            metrics.started();
            metrics.handled(Code::Unimplemented, Duration::from_millis(1));
        }
        let text = encode();
        assert!(
            text.contains(
                "grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"Test\",grpc_method=\"Known\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "grpc_server_handled_total{grpc_type=\"unknown\",grpc_service=\"unknown\",grpc_method=\"unknown\",grpc_code=\"Unimplemented\"} 3"
            ),
            "{text}"
        );
        assert!(!text.contains("\"y\""), "{text}");
    }
}
