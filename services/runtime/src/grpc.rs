//! The layer at every service's gRPC edge: one log line per call (method,
//! status, latency) and the mapping of tonic's OUT_OF_RANGE for oversized
//! messages to RESOURCE_EXHAUSTED, which is what clients expect.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

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

#[derive(Debug, Clone, Copy)]
pub struct GrpcEdgeLayer {
    service: &'static str,
}

impl GrpcEdgeLayer {
    /// `service` names the service in every call line.
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for GrpcEdgeLayer {
    type Service = GrpcEdge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcEdge {
            inner,
            service: self.service,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcEdge<S> {
    inner: S,
    service: &'static str,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcEdge<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<EdgeBody<ResBody>>;
    type Error = S::Error;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let record = CallRecord {
            service: self.service,
            method: request.uri().path().to_owned(),
            start: Instant::now(),
            done: false,
        };
        EdgeFuture {
            inner: self.inner.call(request),
            record: Some(record),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        record: Option<CallRecord>,
    }
}

impl<F, ResBody, E> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<EdgeBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut record = this.record.take();
        Poll::Ready(result.map(|response| {
            let (mut parts, body) = response.into_parts();
            // A trailers-only response (every error tonic raises before the
            // handler runs) carries its status in the headers.
            if let Some(code) = rewrite_status(&mut parts.headers) {
                if let Some(record) = record.as_mut() {
                    record.finish(code);
                }
            }
            Response::from_parts(
                parts,
                EdgeBody {
                    inner: body,
                    record,
                },
            )
        }))
    }
}

pin_project_lite::pin_project! {
    pub struct EdgeBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
    }
}

impl<B: Body> Body for EdgeBody<B> {
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
                    if let Some(code) = rewrite_status(trailers) {
                        if let Some(record) = this.record.as_mut() {
                            record.finish(code);
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

/// One call's log line; written when the status is known, or as CANCELLED
/// if the response is dropped first.
pub struct CallRecord {
    service: &'static str,
    method: String,
    start: Instant,
    done: bool,
}

impl CallRecord {
    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        let micros = self.start.elapsed().as_micros() as u64;
        tracing::info!(
            target: "todoapp::call",
            service = self.service,
            method = %self.method,
            status = ?code,
            latency_us = micros,
            "call"
        );
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
