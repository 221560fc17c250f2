//! The layer around a client channel to a backend: passes the current
//! call's trace context on as `traceparent` and counts the calls as
//! `grpc_client_*{backend}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

use crate::grpc::{observe_response, ObservedBody, StatusObserver};
use crate::metrics::{MethodDescription, MethodMetrics, MethodTable};
use crate::trace::{TraceContext, TRACEPARENT};

#[derive(Clone)]
pub struct UpstreamLayer {
    methods: Arc<MethodTable>,
}

impl UpstreamLayer {
    /// Calls to `backend` (the `backend` label: `user`, `todo`), which
    /// serves `methods`.
    pub fn new(backend: &'static str, methods: &[MethodDescription]) -> Self {
        Self {
            methods: Arc::new(MethodTable::client(backend, methods)),
        }
    }
}

impl<S> Layer<S> for UpstreamLayer {
    type Service = Upstream<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Upstream {
            inner,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Upstream<S> {
    inner: S,
    methods: Arc<MethodTable>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Upstream<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ObservedBody<ResBody, ClientRecord>>;
    type Error = S::Error;
    type Future = UpstreamFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let metrics = self.methods.get(request.uri().path()).clone();
        metrics.started();
        // The backend's span is a child of this hop's.
        let context = TraceContext::current().unwrap_or_else(TraceContext::start);
        if let Ok(value) = HeaderValue::try_from(context.to_string()) {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        UpstreamFuture {
            inner: self.inner.call(request),
            record: Some(ClientRecord {
                metrics,
                start: Instant::now(),
                done: false,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct UpstreamFuture<F> {
        #[pin]
        inner: F,
        record: Option<ClientRecord>,
    }
}

impl<F, ResBody, E> Future for UpstreamFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ObservedBody<ResBody, ClientRecord>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let record = this.record.take();
        Poll::Ready(match result {
            Ok(response) => Ok(observe_response(response, record)),
            Err(error) => {
                // A transport failure reaches the caller as UNAVAILABLE.
                if let Some(mut record) = record {
                    record.finish(Code::Unavailable);
                }
                Err(error)
            }
        })
    }
}

/// One upstream call's metrics; CANCELLED if dropped before its status.
pub struct ClientRecord {
    metrics: Arc<MethodMetrics>,
    start: Instant,
    done: bool,
}

impl ClientRecord {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.metrics.handled(code, self.start.elapsed());
        }
    }
}

impl StatusObserver for ClientRecord {
    fn observe(&mut self, map: &mut HeaderMap) -> bool {
        match map.get("grpc-status") {
            Some(value) => {
                self.finish(Code::from_bytes(value.as_bytes()));
                true
            }
            None => false,
        }
    }
}

impl Drop for ClientRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}
