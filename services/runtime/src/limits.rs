//! The call bounds at every gRPC server: request header size, calls in
//! flight per connection and in total. Excess calls fail at once (load
//! shedding) instead of queueing; a call holds its slots until its reply
//! body is sent or dropped, so unread replies count too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::ServerLimits;
use crate::connection::{CallSlot, ConnectionInfo};

/// Bytes a header block counts for, as HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`
/// counts them: name + value + 32 per field (pseudo-headers included).
pub fn header_list_bytes<B>(request: &Request<B>) -> usize {
    const FIELD_OVERHEAD: usize = 32;
    let pseudo = [
        ":method".len() + request.method().as_str().len(),
        ":path".len()
            + request
                .uri()
                .path_and_query()
                .map_or(0, |p| p.as_str().len()),
        ":scheme".len() + request.uri().scheme_str().map_or(0, str::len),
        ":authority".len() + request.uri().authority().map_or(0, |a| a.as_str().len()),
    ];
    let pseudo: usize = pseudo.iter().map(|n| n + FIELD_OVERHEAD).sum();
    pseudo + fields_bytes(request.headers())
}

fn fields_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

#[derive(Debug, Clone)]
pub struct CallLimitLayer {
    max_header_list_bytes: usize,
    per_connection: usize,
    total: Arc<Semaphore>,
}

impl CallLimitLayer {
    pub fn new(limits: &ServerLimits) -> Self {
        crate::metrics::declare_shed_reasons(&[SHED_HEADERS, SHED_CONNECTION_CAP, SHED_SERVER_CAP]);
        Self {
            max_header_list_bytes: limits.max_header_list_bytes as usize,
            per_connection: limits.max_calls_per_connection,
            total: Arc::new(Semaphore::new(limits.max_calls)),
        }
    }
}

impl<S> Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimit {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallLimit<S> {
    inner: S,
    limits: CallLimitLayer,
}

const SHED_HEADERS: &str = "headers_too_large";
const SHED_CONNECTION_CAP: &str = "connection_call_cap";
const SHED_SERVER_CAP: &str = "server_call_cap";

/// The slots for a call, or the status refusing it before it starts.
fn admit<B>(request: &Request<B>, limits: &CallLimitLayer) -> Result<CallSlots, Status> {
    if header_list_bytes(request) > limits.max_header_list_bytes {
        crate::metrics::count_shed(SHED_HEADERS);
        return Err(Status::resource_exhausted("request headers too large"));
    }
    let connection = match request.extensions().get::<ConnectionInfo>() {
        Some(info) => Some(
            info.state
                .begin_call(limits.per_connection)
                .ok_or_else(|| {
                    crate::metrics::count_shed(SHED_CONNECTION_CAP);
                    Status::resource_exhausted("too many calls on this connection")
                })?,
        ),
        None => None,
    };
    let total = limits.total.clone().try_acquire_owned().map_err(|_| {
        crate::metrics::count_shed(SHED_SERVER_CAP);
        Status::unavailable("server busy, retry later")
    })?;
    Ok(CallSlots {
        _connection: connection,
        _total: total,
    })
}

/// The slots a call holds while its reply is outstanding.
#[derive(Debug)]
struct CallSlots {
    _connection: Option<CallSlot>,
    _total: OwnedSemaphorePermit,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CallLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<LimitedBody<ResBody>>;
    type Error = S::Error;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // tonic's `Request::remote_addr()` (which the gateway's client
        // address and throttling rely on) reads `TcpConnectInfo`; our own
        // connection type carries the peer in `ConnectionInfo`.
        if let Some(peer) = request.extensions().get::<ConnectionInfo>().map(|i| i.peer) {
            request
                .extensions_mut()
                .insert(tonic::transport::server::TcpConnectInfo {
                    local_addr: None,
                    remote_addr: Some(peer),
                });
        }
        match admit(&request, &self.limits) {
            Ok(slots) => LimitFuture::Admitted {
                inner: self.inner.call(request),
                slots: Some(slots),
            },
            Err(status) => LimitFuture::Refused {
                status: Some(status),
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = LimitFutureProj]
    pub enum LimitFuture<F> {
        Admitted { #[pin] inner: F, slots: Option<CallSlots> },
        Refused { status: Option<Status> },
    }
}

impl<F, ResBody, E> Future for LimitFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<LimitedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitFutureProj::Admitted { inner, slots } => {
                let response = std::task::ready!(inner.poll(cx))?;
                let slots = slots.take();
                Poll::Ready(Ok(response.map(|body| LimitedBody {
                    inner: Some(body),
                    pending: None,
                    _slots: slots,
                })))
            }
            LimitFutureProj::Refused { status } => {
                let status = status
                    .take()
                    .unwrap_or_else(|| Status::internal("polled after completion"));
                Poll::Ready(Ok(status.into_http()))
            }
        }
    }
}

/// Largest piece of a reply handed to HTTP/2 at a time. hyper asks for the
/// next piece only once flow control lets the last one go out, so a reply
/// is finished (and its call's slots freed) only when the client has
/// really taken it, and little of it waits in HTTP/2's send buffer.
const REPLY_CHUNK_BYTES: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// A reply body that keeps its call's slots until it is done or
    /// dropped; `None` is the empty body of a refused call.
    pub struct LimitedBody<B> {
        #[pin]
        inner: Option<B>,
        // The rest of a data frame larger than REPLY_CHUNK_BYTES.
        pending: Option<Bytes>,
        _slots: Option<CallSlots>,
    }
}

impl<B> Default for LimitedBody<B> {
    fn default() -> Self {
        Self {
            inner: None,
            pending: None,
            _slots: None,
        }
    }
}

fn next_chunk(data: &mut Option<Bytes>) -> Option<Bytes> {
    let rest = data.as_mut()?;
    if rest.len() > REPLY_CHUNK_BYTES {
        Some(rest.split_to(REPLY_CHUNK_BYTES))
    } else {
        data.take()
    }
}

impl<B: Body<Data = Bytes>> Body for LimitedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(chunk) = next_chunk(this.pending) {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = match std::task::ready!(inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        match frame.into_data() {
            Ok(data) => {
                *this.pending = Some(data);
                let chunk = next_chunk(this.pending).unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Err(frame) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if self.pending.is_some() {
            return SizeHint::default();
        }
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_frames_go_out_in_chunks() {
        let mut data = Some(Bytes::from(vec![7u8; REPLY_CHUNK_BYTES * 2 + 5]));
        let sizes: Vec<usize> = std::iter::from_fn(|| next_chunk(&mut data))
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [REPLY_CHUNK_BYTES, REPLY_CHUNK_BYTES, 5]);
    }

    #[test]
    fn header_bytes_count_like_http2() {
        let request = Request::builder()
            .uri("https://h:1/ToDo/GetToDo")
            .header("authorization", "x".repeat(100))
            .body(())
            .expect("request");
        let bytes = header_list_bytes(&request);
        // 100 + 13 + 32 for the field, plus the four pseudo-headers.
        assert!(bytes > 145 && bytes < 145 + 4 * 32 + 64, "{bytes}");
    }
}
