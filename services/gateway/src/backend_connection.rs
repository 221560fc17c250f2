//! One HTTP/2 connection to one backend endpoint, over mutual TLS, driven
//! by h2 directly.
//!
//! tonic's `Channel` (hyper's client underneath) costs each call a hand-off
//! to the channel's buffer task, and sends a request's HEADERS and its
//! message in two writes: hyper pipes a body only once h2 has opened the
//! stream on its connection task, so the backend is woken twice per call.
//! Here a unary request's message is handed to h2 with its headers, and
//! the connection task writes both at once.
//!
//! The connection is opened lazily by the first call (the gateway starts,
//! and answers UNAVAILABLE, while a backend is down) and again after it
//! broke; calls that arrive while it is being opened share that attempt.
//! Every call, the connect included, is bounded by the request timeout or
//! the call's own `grpc-timeout`, whichever is shorter. A keep-alive ping
//! that goes unanswered closes the connection, failing its calls at once
//! rather than at their timeouts.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http_body::Body as _;
use rustls_pki_types::ServerName;
use todoapp_runtime::server::BoxError;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tonic::body::Body;

type Connection = h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>, Bytes>;

// hyper's client defaults, which the backends were tuned against.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// How to reach one endpoint.
pub struct Connector {
    pub address: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    /// The name the endpoint's certificate must carry.
    pub server_name: ServerName<'static>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub keepalive: Keepalive,
}

/// A ping every `interval` (idle or not) that must be answered within
/// `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a call found no connection to send on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to backend {address}: {source}")]
    Io {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/2 handshake with backend {address} failed: {source}")]
    Handshake {
        address: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("backend {0} did not negotiate HTTP/2")]
    NotHttp2(SocketAddr),
    #[error("connecting to backend {0} timed out")]
    TimedOut(SocketAddr),
}

/// A clone shares the connection.
#[derive(Clone)]
pub struct BackendConnection {
    shared: Arc<Shared>,
}

struct Shared {
    connector: Connector,
    authority: http::uri::Authority,
    state: Mutex<State>,
}

type Attempt = watch::Receiver<Option<Result<Live, Arc<ConnectError>>>>;

enum State {
    Idle,
    Connecting(Attempt),
    Connected(Live),
}

#[derive(Clone)]
struct Live {
    sender: SendRequest<Bytes>,
    /// Set when the connection's task ended: the next call opens another.
    closed: Arc<AtomicBool>,
}

impl BackendConnection {
    pub fn new(connector: Connector) -> Result<Self, BoxError> {
        let authority = http::uri::Authority::try_from(connector.address.to_string())?;
        Ok(Self {
            shared: Arc::new(Shared {
                connector,
                authority,
                state: Mutex::new(State::Idle),
            }),
        })
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The open connection, or the outcome of an attempt to open one
    /// (started here when none is under way).
    async fn live(self: &Arc<Self>) -> Result<Live, BoxError> {
        let mut attempt = {
            let mut state = self.state();
            match &*state {
                State::Connected(live) if !live.closed.load(Ordering::Acquire) => {
                    return Ok(live.clone());
                }
                State::Connecting(attempt) => attempt.clone(),
                State::Idle | State::Connected(_) => {
                    let (outcome, attempt) = watch::channel(None);
                    *state = State::Connecting(attempt.clone());
                    // A task of its own: a caller that gives up must not
                    // abort the attempt the others wait for.
                    tokio::spawn(self.clone().connect(outcome));
                    attempt
                }
            }
        };
        let outcome = attempt
            .wait_for(Option::is_some)
            .await
            .map_err(|_| BoxError::from("connection attempt abandoned"))?;
        match outcome.as_ref() {
            Some(Ok(live)) => Ok(live.clone()),
            Some(Err(error)) => Err(Box::new(SharedConnectError(error.clone()))),
            None => Err(BoxError::from("connection attempt abandoned")),
        }
    }

    /// A sender ready for a new stream. A connection that can take no more
    /// (it ended, or the backend said GOAWAY) is given up at once and the
    /// call tries one more: nothing was sent on it.
    async fn ready(self: &Arc<Self>) -> Result<(SendRequest<Bytes>, Live), BoxError> {
        let mut tries_left = 2;
        loop {
            let live = self.live().await?;
            match live.sender.clone().ready().await {
                Ok(sender) => return Ok((sender, live)),
                Err(error) => {
                    live.closed.store(true, Ordering::Release);
                    tries_left -= 1;
                    if tries_left == 0 {
                        return Err(error.into());
                    }
                }
            }
        }
    }

    async fn connect(
        self: Arc<Self>,
        outcome: watch::Sender<Option<Result<Live, Arc<ConnectError>>>>,
    ) {
        let address = self.connector.address;
        let result =
            match tokio::time::timeout(self.connector.connect_timeout, self.establish()).await {
                Ok(result) => result,
                Err(_) => Err(ConnectError::TimedOut(address)),
            }
            .map_err(Arc::new);
        *self.state() = match &result {
            Ok(live) => State::Connected(live.clone()),
            Err(error) => {
                tracing::debug!(%error, "backend connection failed");
                State::Idle
            }
        };
        let _ = outcome.send(Some(result));
    }

    async fn establish(&self) -> Result<Live, ConnectError> {
        let address = self.connector.address;
        let io = |source| ConnectError::Io { address, source };
        let tcp = TcpStream::connect(address).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let tls = TlsConnector::from(self.connector.tls.clone())
            .connect(self.connector.server_name.clone(), tcp)
            .await
            .map_err(io)?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectError::NotHttp2(address));
        }
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|source| ConnectError::Handshake { address, source })?;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(
            connection,
            closed.clone(),
            address,
            self.connector.keepalive,
        ));
        Ok(Live { sender, closed })
    }

    async fn send(
        self: Arc<Self>,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, BoxError> {
        let (mut parts, mut body) = request.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(http::uri::Scheme::HTTPS);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = http::Uri::from_parts(uri)?;
        let ready = ReadyFrames::take(&mut body).await?;
        let (mut sender, live) = self.ready().await?;
        let headers_end = ready.ended && ready.data.is_empty() && ready.trailers.is_none();
        let (response, mut stream) = sender
            .send_request(http::Request::from_parts(parts, ()), headers_end)
            .inspect_err(|_| live.closed.store(true, Ordering::Release))?;
        if !ready.data.is_empty() {
            stream.send_data(ready.data, ready.ended && ready.trailers.is_none())?;
        }
        if let Some(trailers) = ready.trailers {
            stream.send_trailers(trailers)?;
        } else if !ready.ended {
            tokio::spawn(pipe(body, stream));
        }
        let response = response.await?;
        Ok(response.map(|body| {
            Body::new(ResponseBody {
                body,
                data_done: false,
            })
        }))
    }
}

/// The frames of a request body that are ready at once: for a unary call,
/// the whole message.
struct ReadyFrames {
    data: Bytes,
    trailers: Option<http::HeaderMap>,
    ended: bool,
}

impl ReadyFrames {
    async fn take(body: &mut Body) -> Result<Self, BoxError> {
        let mut data: Option<Bytes> = None;
        let mut more = BytesMut::new();
        let mut trailers = None;
        let ended = std::future::poll_fn(|cx| loop {
            if body.is_end_stream() {
                return Poll::Ready(Ok(true));
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => match &data {
                        None => data = Some(chunk),
                        Some(first) => {
                            if more.is_empty() {
                                more.extend_from_slice(first);
                            }
                            more.extend_from_slice(&chunk);
                        }
                    },
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        return Poll::Ready(Ok(true));
                    }
                },
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Err(status)),
                Poll::Ready(None) => return Poll::Ready(Ok(true)),
                Poll::Pending => return Poll::Ready(Ok(false)),
            }
        })
        .await?;
        let data = if more.is_empty() {
            data.unwrap_or_default()
        } else {
            more.freeze()
        };
        Ok(Self {
            data,
            trailers,
            ended,
        })
    }
}

/// The rest of a request body that was not ready with its headers (a
/// streaming request), sent as it comes, within the stream's flow control.
async fn pipe(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let sent = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => {
                    stream.reserve_capacity(chunk.len());
                    stream.send_data(chunk, body.is_end_stream())
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => stream.send_trailers(trailers),
                    Err(_) => continue,
                },
            },
            Some(Err(_)) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            None => stream.send_data(Bytes::new(), true),
        };
        if sent.is_err() || body.is_end_stream() {
            return;
        }
    }
}

/// Runs the connection until it ends or a keep-alive ping goes unanswered.
async fn drive(
    mut connection: Connection,
    closed: Arc<AtomicBool>,
    address: SocketAddr,
    keepalive: Keepalive,
) {
    let mut ping_pong = connection.ping_pong();
    let mut next_ping = tokio::time::Instant::now() + keepalive.interval;
    let mut pong_due: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(backend = %address, %error, "backend connection ended");
                }
                break;
            }
            _ = tokio::time::sleep_until(next_ping), if pong_due.is_none() && ping_pong.is_some() => {
                if let Some(pings) = ping_pong.as_mut() {
                    if pings.send_ping(h2::Ping::opaque()).is_err() {
                        break;
                    }
                }
                pong_due = Some(tokio::time::Instant::now() + keepalive.timeout);
            }
            pong = std::future::poll_fn(|cx| match ping_pong.as_mut() {
                Some(pings) => pings.poll_pong(cx),
                None => Poll::Pending,
            }), if pong_due.is_some() => {
                if pong.is_err() {
                    break;
                }
                pong_due = None;
                next_ping = tokio::time::Instant::now() + keepalive.interval;
            }
            _ = sleep_until_or_never(pong_due) => {
                tracing::warn!(backend = %address, "backend did not answer a keep-alive ping; closing its connection");
                break;
            }
        }
    }
    closed.store(true, Ordering::Release);
}

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A response's DATA frames, then its trailers; every frame's bytes are
/// released to the flow-control window once handed on.
struct ResponseBody {
    body: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match std::task::ready!(this.body.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    let _ = this.body.flow_control().release_capacity(chunk.len());
                    return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => this.data_done = true,
            }
        }
        match std::task::ready!(this.body.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// A failed connection attempt, as each call that waited for it sees it.
#[derive(Debug)]
struct SharedConnectError(Arc<ConnectError>);

impl std::fmt::Display for SharedConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// The call's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a
/// unit), when it has a valid one.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl tower::Service<http::Request<Body>> for BackendConnection {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Always ready, as a lazily connecting channel is: a connection
        // failure fails the call, and the balancer keeps the endpoint
        // (the health checks and failure counts eject it).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let limit = grpc_timeout(request.headers())
            .map_or(shared.connector.request_timeout, |asked| {
                asked.min(shared.connector.request_timeout)
            });
        Box::pin(async move {
            match tokio::time::timeout(limit, shared.send(request)).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(tonic::TimeoutExpired(())) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use todoapp_devkit::pki::{self, files};
    use tokio::io::{AsyncRead, ReadBuf};
    use tokio::net::TcpListener;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        let parse = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "grpc-timeout",
                http::HeaderValue::from_str(value).expect("header value"),
            );
            grpc_timeout(&headers)
        };
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    /// Counts the TLS records of the application-data type (every
    /// encrypted record, in TLS 1.3) that a peer sent, as they are read.
    struct RecordCounter<T> {
        inner: T,
        records: Arc<AtomicUsize>,
        header: Vec<u8>,
        body_left: usize,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for RecordCounter<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            for &byte in &buf.filled()[before..] {
                if self.body_left > 0 {
                    self.body_left -= 1;
                    continue;
                }
                self.header.push(byte);
                if self.header.len() == 5 {
                    if self.header[0] == 23 {
                        self.records.fetch_add(1, Ordering::SeqCst);
                    }
                    self.body_left =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    self.header.clear();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for RecordCounter<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, data)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// What the test backend does with its connections.
    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        /// Answers every call with an empty gRPC message and status OK.
        Answer,
        /// Completes the handshakes, then never reads or answers again.
        Mute,
        /// Accepts TCP connections and never speaks.
        Silent,
        /// Answers one call per connection, then closes it.
        CloseAfterOneCall,
    }

    /// A backend on loopback, over the dev PKI's mutual TLS, speaking
    /// HTTP/2 through h2's server: how many connections it accepted, and,
    /// at the end of each request, how many records its peer had sent.
    struct TestBackend {
        address: SocketAddr,
        connections: Arc<AtomicUsize>,
        records_at_request_end: Arc<Mutex<Vec<usize>>>,
    }

    impl TestBackend {
        async fn start(pki: &std::path::Path, behaviour: Behaviour) -> Self {
            let tls = todoapp_runtime::tls::server_config(&todoapp_runtime::config::TlsFiles {
                cert: pki.join(files::TODO_CERT),
                key: pki.join(files::TODO_KEY),
                client_ca: Some(pki.join(files::INTERNAL_CA_CERT)),
            })
            .expect("server TLS");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let connections = Arc::new(AtomicUsize::new(0));
            let records_at_request_end = Arc::new(Mutex::new(Vec::new()));
            let (accepted, ends) = (connections.clone(), records_at_request_end.clone());
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if behaviour == Behaviour::Silent {
                        held.push(tcp);
                        continue;
                    }
                    let tls = tokio_rustls::TlsAcceptor::from(tls.clone());
                    let ends = ends.clone();
                    tokio::spawn(async move {
                        let records = Arc::new(AtomicUsize::new(0));
                        let counted = RecordCounter {
                            inner: tcp,
                            records: records.clone(),
                            header: Vec::new(),
                            body_left: 0,
                        };
                        let Ok(stream) = tls.accept(counted).await else {
                            return;
                        };
                        let Ok(mut connection) = h2::server::handshake(stream).await else {
                            return;
                        };
                        if behaviour == Behaviour::Mute {
                            std::future::pending::<()>().await;
                        }
                        if behaviour == Behaviour::CloseAfterOneCall {
                            // Answered on a task of its own: the request's
                            // message arrives only while the connection is
                            // polled, which the loop below goes on doing.
                            if let Some(Ok((request, respond))) = connection.accept().await {
                                tokio::spawn(answer(request, respond, records, ends));
                            }
                            connection.graceful_shutdown();
                            while let Some(Ok(_)) = connection.accept().await {}
                            return;
                        }
                        while let Some(Ok((request, respond))) = connection.accept().await {
                            let (records, ends) = (records.clone(), ends.clone());
                            tokio::spawn(answer(request, respond, records, ends));
                        }
                    });
                }
            });
            Self {
                address,
                connections,
                records_at_request_end,
            }
        }

        fn connection(
            &self,
            pki: &std::path::Path,
            connect_timeout: Duration,
            keepalive: Keepalive,
        ) -> BackendConnection {
            BackendConnection::new(Connector {
                address: self.address,
                tls: todoapp_runtime::tls::client_config(
                    "upstream.ca",
                    &pki.join(files::INTERNAL_CA_CERT),
                    Some(todoapp_runtime::tls::Identity {
                        cert_key: "upstream.client_cert",
                        cert: &pki.join(files::GATEWAY_CLIENT_CERT),
                        key_key: "upstream.client_key",
                        key: &pki.join(files::GATEWAY_CLIENT_KEY),
                    }),
                )
                .expect("client TLS"),
                server_name: ServerName::try_from("127.0.0.1").expect("name"),
                connect_timeout,
                request_timeout: Duration::from_secs(10),
                keepalive,
            })
            .expect("connection")
        }
    }

    async fn answer(
        request: http::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        records: Arc<AtomicUsize>,
        ends: Arc<Mutex<Vec<usize>>>,
    ) {
        let mut body = request.into_body();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        ends.lock()
            .expect("lock")
            .push(records.load(Ordering::SeqCst));
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .expect("response");
        let Ok(mut stream) = respond.send_response(response, false) else {
            return;
        };
        // An empty message: uncompressed, length 0.
        let _ = stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let _ = stream.send_trailers(trailers);
    }

    async fn health_check(connection: &BackendConnection) -> Result<(), tonic::Status> {
        HealthClient::new(connection.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(drop)
    }

    /// Pings soon enough for a test to see an unanswered one.
    const QUICK_KEEPALIVE: Keepalive = Keepalive {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(300),
    };

    fn test_pki() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        pki::ensure(&pki, &[]).expect("dev PKI");
        (dir, pki)
    }

    // One thread: on several, an idle worker can run the connection task
    // between the call's handing over of its HEADERS and of its message,
    // and flush the HEADERS alone; this checks that both are handed over
    // before the call first yields.
    #[tokio::test]
    async fn a_unary_call_reaches_the_backend_in_one_record_on_one_connection() {
        let (_dir, pki) = test_pki();
        let backend = TestBackend::start(&pki, Behaviour::Answer).await;
        // No pings during the calls: they would be records of their own.
        let connection = backend.connection(&pki, Duration::from_secs(5), Keepalive::default());
        for _ in 0..12 {
            health_check(&connection).await.expect("call");
        }
        assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
        let ends = backend.records_at_request_end.lock().expect("lock").clone();
        assert_eq!(ends.len(), 12);
        // After the connection's first exchanges (preface, settings and
        // their acknowledgements), each call's HEADERS and message came in
        // a single record: one write, one wake-up of the backend.
        let per_call: Vec<usize> = ends.windows(2).skip(2).map(|w| w[1] - w[0]).collect();
        assert!(
            per_call.iter().all(|&n| n == 1),
            "records per call: {per_call:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn calls_during_a_connect_share_one_attempt_bounded_by_the_connect_timeout() {
        let (_dir, pki) = test_pki();
        let backend = TestBackend::start(&pki, Behaviour::Silent).await;
        let connection = backend.connection(&pki, Duration::from_millis(400), QUICK_KEEPALIVE);
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let connection = connection.clone();
                tokio::spawn(async move { health_check(&connection).await })
            })
            .collect();
        for call in calls {
            let status = call.await.expect("task").expect_err("nothing answers");
            let mut cause = std::error::Error::source(&status);
            let mut timed_out = false;
            while let Some(error) = cause {
                timed_out |= matches!(
                    error.downcast_ref::<SharedConnectError>(),
                    Some(SharedConnectError(failed)) if matches!(**failed, ConnectError::TimedOut(_))
                );
                cause = error.source();
            }
            assert!(timed_out, "not a connect timeout: {status:?}");
        }
        // One attempt for all sixteen, not one after another.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
        // The next call tries again.
        health_check(&connection).await.expect_err("still silent");
        assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unanswered_keepalive_fails_the_calls_on_the_connection_before_their_timeout() {
        let (_dir, pki) = test_pki();
        let backend = TestBackend::start(&pki, Behaviour::Mute).await;
        let connection = backend.connection(&pki, Duration::from_secs(5), QUICK_KEEPALIVE);
        let started = std::time::Instant::now();
        let status = health_check(&connection).await.expect_err("never answered");
        // Pinged after 200 ms, closed 300 ms later; the call's own
        // timeout is 10 s.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            std::error::Error::source(&status).is_some(),
            "not a transport failure: {status:?}"
        );
        // The next call opens another connection.
        health_check(&connection).await.expect_err("never answered");
        assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_connection_the_backend_closed_is_replaced_by_the_next_call() {
        let (_dir, pki) = test_pki();
        let backend = TestBackend::start(&pki, Behaviour::CloseAfterOneCall).await;
        // No pings: one arriving as the backend closes would be answered
        // with a reset that can beat the call's response.
        let connection = backend.connection(&pki, Duration::from_secs(5), Keepalive::default());
        for round in 1..=3 {
            health_check(&connection).await.expect("answered");
            assert_eq!(backend.connections.load(Ordering::SeqCst), round);
            let live = match &*connection.shared.state() {
                State::Connected(live) => live.clone(),
                _ => panic!("not connected after a call"),
            };
            tokio::time::timeout(Duration::from_secs(5), async {
                while !live.closed.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the backend's close noticed");
        }
    }
}
