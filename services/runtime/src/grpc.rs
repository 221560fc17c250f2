//! The layer at every service's gRPC edge: a tracing span per call carrying
//! its trace id, one log line per call (method, status, latency), the
//! `grpc_server_*` metrics, and the mapping of tonic's OUT_OF_RANGE for oversized
//! messages to RESOURCE_EXHAUSTED, which is what clients expect.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::{MethodDescription, MethodMetrics, MethodTable};
use crate::trace::{TraceContext, TRACEPARENT};

const GRPC_STATUS: &str = "grpc-status";

/// gRPC's hint for when a refused call may be retried, in milliseconds.
pub const RETRY_PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";

/// UNAVAILABLE for a client, with `detail` logged here (once) and never sent.
pub fn unavailable(detail: &str) -> tonic::Status {
    tracing::warn!(%detail, "dependency unavailable");
    tonic::Status::unavailable("service temporarily unavailable")
}

/// INTERNAL for a client, with `detail` logged here (once) and never sent.
pub fn internal(detail: &str) -> tonic::Status {
    tracing::error!(%detail, "internal error");
    tonic::Status::internal("internal error")
}

#[derive(Clone)]
pub struct GrpcEdgeLayer {
    service: &'static str,
    methods: Arc<MethodTable>,
}

impl GrpcEdgeLayer {
    /// `service` names the service in every call line; `methods` are the
    /// methods it serves, each counted under its own labels.
    pub fn new(service: &'static str, methods: &[MethodDescription]) -> Self {
        Self {
            service,
            methods: Arc::new(MethodTable::server(methods)),
        }
    }
}

impl<S> Layer<S> for GrpcEdgeLayer {
    type Service = GrpcEdge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcEdge {
            inner,
            service: self.service,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcEdge<S> {
    inner: S,
    service: &'static str,
    methods: Arc<MethodTable>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcEdge<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ObservedBody<ResBody, CallRecord>>;
    type Error = S::Error;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let metrics = self.methods.get(request.uri().path()).clone();
        metrics.started();
        let context = match request
            .headers()
            .get(TRACEPARENT)
            .and_then(|value| TraceContext::parse(value.as_bytes()))
        {
            Some(parent) => TraceContext::child_of(&parent),
            None => TraceContext::start(),
        };
        // Every line logged while the call runs carries its trace id.
        let span = tracing::info_span!(
            "call",
            service = self.service,
            trace_id = %format_args!("{:032x}", context.trace_id),
        );
        let record = CallRecord {
            method: request.uri().path().to_owned(),
            start: Instant::now(),
            done: false,
            metrics,
            span: span.clone(),
        };
        let inner = context.sync_scope(|| span.in_scope(|| self.inner.call(request)));
        EdgeFuture {
            inner,
            record: Some(record),
            context,
            span,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        record: Option<CallRecord>,
        context: TraceContext,
        span: tracing::Span,
    }
}

impl<F, ResBody, E> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ObservedBody<ResBody, CallRecord>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = {
            let _entered = this.span.enter();
            ready!(this.context.sync_scope(|| inner.poll(cx)))
        };
        Poll::Ready(result.map(|response| observe_response(response, this.record.take())))
    }
}

/// Watches a response for its gRPC status (in the headers of a
/// trailers-only response, else in the trailers) and hands it to the
/// observer once.
pub trait StatusObserver {
    /// Called with the headers or trailers that carry `grpc-status`; may
    /// rewrite them. Returns whether the call's outcome is now known.
    fn observe(&mut self, map: &mut HeaderMap) -> bool;
}

pub(crate) fn observe_response<B, O: StatusObserver>(
    response: Response<B>,
    mut observer: Option<O>,
) -> Response<ObservedBody<B, O>> {
    let (mut parts, body) = response.into_parts();
    // A trailers-only response (every error tonic raises before the
    // handler runs) carries its status in the headers.
    if let Some(watching) = observer.as_mut() {
        if parts.headers.contains_key(GRPC_STATUS) && watching.observe(&mut parts.headers) {
            observer = None;
        }
    }
    Response::from_parts(
        parts,
        ObservedBody {
            inner: body,
            observer,
        },
    )
}

pin_project_lite::pin_project! {
    pub struct ObservedBody<B, O> {
        #[pin]
        inner: B,
        observer: Option<O>,
    }
}

impl<B: Body, O: StatusObserver> Body for ObservedBody<B, O> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let frame = frame.map(|frame| {
            frame.map(|mut frame| {
                if let Some(trailers) = frame.trailers_mut() {
                    if let Some(observer) = this.observer.as_mut() {
                        if trailers.contains_key(GRPC_STATUS) && observer.observe(trailers) {
                            *this.observer = None;
                        }
                    }
                }
                frame
            })
        });
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Corrects two codes tonic raises before a handler runs, in place, and
/// returns the final code, if the map carries one:
/// - OUT_OF_RANGE (only tonic's size limit raises it; our services never
///   do) becomes RESOURCE_EXHAUSTED;
/// - INTERNAL for an undecodable request message becomes INVALID_ARGUMENT:
///   the client sent bad input, nothing broke.
fn rewrite_status(map: &mut HeaderMap) -> Option<Code> {
    let value = map.get(GRPC_STATUS)?;
    let code = match Code::from_bytes(value.as_bytes()) {
        Code::OutOfRange => Code::ResourceExhausted,
        Code::Internal if is_decode_failure(map) => Code::InvalidArgument,
        unchanged => return Some(unchanged),
    };
    map.insert(GRPC_STATUS, HeaderValue::from(code as i32));
    Some(code)
}

fn is_decode_failure(map: &HeaderMap) -> bool {
    // prost's DecodeError text, percent-encoded in grpc-message.
    map.get("grpc-message").is_some_and(|m| {
        let m = m.as_bytes();
        m.starts_with(b"failed%20to%20decode%20Protobuf")
            || m.starts_with(b"failed to decode Protobuf")
    })
}

/// One call's log line and metrics; written when the status is known, or
/// as CANCELLED if the response is dropped first.
pub struct CallRecord {
    method: String,
    start: Instant,
    done: bool,
    metrics: Arc<MethodMetrics>,
    span: tracing::Span,
}

impl CallRecord {
    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.elapsed();
        self.metrics.handled(code, elapsed);
        let micros = elapsed.as_micros() as u64;
        self.span.in_scope(|| {
            tracing::info!(
                target: "todoapp::call",
                method = %self.method,
                status = ?code,
                latency_us = micros,
                "call"
            )
        });
    }
}

impl StatusObserver for CallRecord {
    fn observe(&mut self, map: &mut HeaderMap) -> bool {
        match rewrite_status(map) {
            Some(code) => {
                self.finish(code);
                true
            }
            None => false,
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_becomes_resource_exhausted() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("11"));
        assert_eq!(rewrite_status(&mut headers), Some(Code::ResourceExhausted));
        assert_eq!(headers[GRPC_STATUS], "8");

        let mut ok = HeaderMap::new();
        ok.insert(GRPC_STATUS, HeaderValue::from_static("5"));
        assert_eq!(rewrite_status(&mut ok), Some(Code::NotFound));
        assert_eq!(ok[GRPC_STATUS], "5");
        assert_eq!(rewrite_status(&mut HeaderMap::new()), None);

        let mut decode = HeaderMap::new();
        decode.insert(GRPC_STATUS, HeaderValue::from_static("13"));
        decode.insert(
            "grpc-message",
            HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message"),
        );
        assert_eq!(rewrite_status(&mut decode), Some(Code::InvalidArgument));
        assert_eq!(decode[GRPC_STATUS], "3");

        let mut internal = HeaderMap::new();
        internal.insert(GRPC_STATUS, HeaderValue::from_static("13"));
        internal.insert("grpc-message", HeaderValue::from_static("internal%20error"));
        assert_eq!(rewrite_status(&mut internal), Some(Code::Internal));
    }
}
