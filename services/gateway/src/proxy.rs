//! The public `User` and `ToDo` services: verify, then forward.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::to_do_server::ToDo;
use todoapp_api::user_client::UserClient;
use todoapp_api::user_server::User;
use todoapp_api::*;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use todoapp_runtime::connection::ConnectionInfo;

use crate::fair_share::{Budget, FairShare, InFlight, Refusal, IN_FLIGHT_RETRY};
use crate::token::{TokenError, TokenVerifier};
use crate::upstream::{failed_endpoint, AvoidEndpoint, Backend};

/// Largest backend response the gateway relays: follows from the largest
/// ListToDo byte budget the todo service accepts.
const MAX_UPSTREAM_RESPONSE: usize = todoapp_api::MAX_RELAYED_REPLY_BYTES;

/// The gateway's one error type, mapped to gRPC codes in one place.
#[derive(Debug)]
enum GatewayError {
    Unauthenticated(TokenError),
    Upstream(Status),
    /// Refused by the user's fair share; never reached a backend.
    Throttled(Refusal),
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::Unauthenticated(reason) => {
                tracing::debug!(%reason, "token refused");
                Status::unauthenticated("invalid or missing token")
            }
            GatewayError::Upstream(status) => sanitise_upstream(status),
            GatewayError::Throttled(refusal) => throttled(refusal),
        }
    }
}

/// How a backend call failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The backend answered with this status itself.
    Answered,
    /// The deadline passed before an answer.
    TimedOut,
    /// The connection failed (refused, reset, GOAWAY, TLS, ...): the call
    /// may or may not have reached the backend.
    Transport,
}

/// A status tonic made up from a transport error carries that error as its
/// source; one a backend sent has none.
fn failure_of(status: &Status) -> Failure {
    let Some(source) = std::error::Error::source(status) else {
        return Failure::Answered;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(error) = cause {
        if error.is::<tonic::TimeoutExpired>() {
            return Failure::TimedOut;
        }
        cause = error.source();
    }
    Failure::Transport
}

/// RESOURCE_EXHAUSTED, with `google.rpc.RetryInfo` saying when trying
/// again can succeed.
fn throttled(refusal: Refusal) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    tracing::debug!(?refusal, "call refused");
    let (message, retry_after) = match refusal {
        Refusal::RateLimited {
            budget: Budget::Read,
            retry_after,
        } => ("rate limit exceeded for reads", retry_after),
        Refusal::RateLimited {
            budget: Budget::Write,
            retry_after,
        } => ("rate limit exceeded for writes", retry_after),
        Refusal::TooManyInFlight { .. } => ("too many calls in flight", IN_FLIGHT_RETRY),
        Refusal::TooManyUsers { retry_after } => ("too many active users", retry_after),
    };
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// Backends already send client-safe messages for the codes they use on
/// purpose; anything else is logged here once and replaced by a generic
/// message. Every transport failure (reset, refused, GOAWAY, a dead
/// backend) becomes UNAVAILABLE and a passed deadline DEADLINE_EXCEEDED, so
/// clients know to retry; only an INTERNAL or UNKNOWN a backend sent itself
/// stays INTERNAL.
fn sanitise_upstream(status: Status) -> Status {
    match failure_of(&status) {
        Failure::Transport => {
            return todoapp_runtime::grpc::unavailable(&format!("backend: {status:?}"))
        }
        Failure::TimedOut => {
            tracing::warn!(?status, "backend call timed out");
            return Status::deadline_exceeded("deadline exceeded");
        }
        Failure::Answered => {}
    }
    match status.code() {
        // RESOURCE_EXHAUSTED keeps its details (google.rpc.RetryInfo) and
        // the retry pushback: they tell the client when to try again.
        Code::ResourceExhausted => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(pushback) = status
                .metadata()
                .get(todoapp_runtime::grpc::RETRY_PUSHBACK_HEADER)
            {
                metadata.insert(
                    todoapp_runtime::grpc::RETRY_PUSHBACK_HEADER,
                    pushback.clone(),
                );
            }
            Status::with_details_and_metadata(
                status.code(),
                status.message(),
                status.details().to_vec().into(),
                metadata,
            )
        }
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unauthenticated
        | Code::FailedPrecondition => Status::new(status.code(), status.message()),
        Code::Unavailable | Code::Cancelled => {
            todoapp_runtime::grpc::unavailable(&format!("backend: {status:?}"))
        }
        Code::DeadlineExceeded => Status::deadline_exceeded("deadline exceeded"),
        // OUT_OF_RANGE from a backend means our own request exceeded its limit.
        Code::OutOfRange => Status::resource_exhausted("message too large"),
        _ => todoapp_runtime::grpc::internal(&format!("backend: {status:?}")),
    }
}

/// Whether a call may be sent again after a transport failure, when the
/// first attempt may have been carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Repeating it changes nothing (reads; updates to the same content;
    /// creates with a request_id).
    Safe,
    /// Repeating it could act twice or answer misleadingly (a Delete that
    /// went through would be NOT_FOUND; Register, Login count attempts).
    Never,
}

/// A backend call the gateway vouches for: the message, the verified
/// identity and the client's address, nothing else a client sent (so it
/// cannot forge those headers), and the client's deadline capped by ours.
struct Upstream<T> {
    message: T,
    user_id: Option<String>,
    client_address: Option<IpAddr>,
    timeout: Duration,
}

impl<T: Clone> Upstream<T> {
    fn request(&self) -> Result<Request<T>, Status> {
        let mut request = Request::new(self.message.clone());
        let metadata = request.metadata_mut();
        if let Some(user_id) = &self.user_id {
            let value = MetadataValue::try_from(user_id.as_str())
                .map_err(|_| Status::internal("internal error"))?;
            metadata.insert(todoapp_auth::USER_ID_HEADER, value);
        }
        if let Some(address) = self.client_address {
            let value = MetadataValue::try_from(address.to_string())
                .map_err(|_| Status::internal("internal error"))?;
            metadata.insert(todoapp_auth::CLIENT_ADDRESS_HEADER, value);
        }
        request.set_timeout(self.timeout);
        Ok(request)
    }

    /// Sends the call, and once more if it is safe to repeat and the first
    /// attempt failed on the connection: on another endpoint when there is
    /// one (the failed one's channel reconnects meanwhile).
    async fn send<R, F, Fut>(self, retry: Retry, send: F) -> Result<Response<R>, Status>
    where
        F: Fn(Request<T>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let first = send(self.request()?).await;
        let response = match first {
            Err(status) if retry == Retry::Safe && failure_of(&status) == Failure::Transport => {
                tracing::debug!(?status, "backend connection failed; retrying once");
                let mut request = self.request()?;
                if let Some(failed) = failed_endpoint(&status) {
                    request.extensions_mut().insert(AvoidEndpoint(failed));
                }
                send(request).await
            }
            other => other,
        };
        Ok(Response::new(
            response.map_err(GatewayError::Upstream)?.into_inner(),
        ))
    }
}

/// The client's `grpc-timeout`, if it sent a valid one.
fn client_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    // At most 8 digits and a unit (gRPC over HTTP/2, "Timeout").
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Where a call came from. A direct peer is the client. A peer listed in
/// `trusted_proxies` is a reverse proxy: each proxy appends the address it
/// received the call from to `X-Forwarded-For`, so the client is the
/// rightmost entry that is not itself a trusted proxy; entries left of it
/// could be forged by the client and are ignored. An unreadable entry ends
/// the search at the proxy's own address.
fn client_address<T>(request: &Request<T>, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = request.remote_addr()?.ip();
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<&str> = request
        .metadata()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for entry in forwarded.iter().rev() {
        let Some(address) = parse_forwarded(entry.trim()) else {
            return Some(peer);
        };
        if !trusted_proxies.contains(&address) {
            return Some(address);
        }
    }
    Some(peer)
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// What every proxy needs to build backend calls.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// `upstream.request_timeout_ms`: the longest any backend call may take.
    pub request_timeout: Duration,
    pub trusted_proxies: Arc<[IpAddr]>,
}

impl CallSettings {
    fn upstream<T>(&self, request: Request<T>, user_id: Option<String>) -> Upstream<T> {
        let timeout = client_deadline(request.metadata()).map_or(self.request_timeout, |client| {
            client.min(self.request_timeout)
        });
        Upstream {
            client_address: client_address(&request, &self.trusted_proxies),
            message: request.into_inner(),
            user_id,
            timeout,
        }
    }
}

pub struct UserProxy {
    client: UserClient<Backend>,
    settings: CallSettings,
}

impl UserProxy {
    pub fn new(channel: Backend, settings: CallSettings) -> Self {
        Self {
            client: UserClient::new(channel).max_decoding_message_size(MAX_UPSTREAM_RESPONSE),
            settings,
        }
    }
}

#[tonic::async_trait]
impl User for UserProxy {
    async fn login(&self, request: Request<LoginReq>) -> Result<Response<LoginRsp>, Status> {
        let client = &self.client;
        self.settings
            .upstream(request, None)
            .send(Retry::Never, |r| {
                let mut client = client.clone();
                async move { client.login(r).await }
            })
            .await
    }

    async fn register(
        &self,
        request: Request<RegisterReq>,
    ) -> Result<Response<RegisterRsp>, Status> {
        let client = &self.client;
        self.settings
            .upstream(request, None)
            .send(Retry::Never, |r| {
                let mut client = client.clone();
                async move { client.register(r).await }
            })
            .await
    }
}

pub struct TodoProxy {
    client: ToDoClient<Backend>,
    verifier: Arc<TokenVerifier>,
    settings: CallSettings,
    fair_share: Arc<FairShare>,
}

impl TodoProxy {
    pub fn new(
        channel: Backend,
        verifier: Arc<TokenVerifier>,
        settings: CallSettings,
        fair_share: Arc<FairShare>,
    ) -> Self {
        Self {
            client: ToDoClient::new(channel).max_decoding_message_size(MAX_UPSTREAM_RESPONSE),
            verifier,
            settings,
            fair_share,
        }
    }

    /// Verifies this call's own token, admits it within the user's fair
    /// share and prepares the backend call. The call counts as in flight
    /// until the returned guard is dropped.
    fn authorise<T>(
        &self,
        request: Request<T>,
        budget: Budget,
    ) -> Result<(Upstream<T>, InFlight), Status> {
        let mut values = request.metadata().get_all("authorization").iter();
        let authorization = values.next().map(|v| v.as_bytes());
        // Two tokens are ambiguous: whichever one we picked, the other was
        // meant to count too.
        if values.next().is_some() {
            return Err(GatewayError::Unauthenticated(
                self.verifier.refused(TokenError::Ambiguous),
            )
            .into());
        }
        let user_id = self
            .verifier
            .verify(authorization)
            .map_err(GatewayError::Unauthenticated)?;
        let in_flight = self.fair_share.admit(&user_id, budget).map_err(|refusal| {
            if let Some(connection) = request.extensions().get::<ConnectionInfo>() {
                connection
                    .state
                    .pause_reads(self.fair_share.read_pause(&refusal));
            }
            GatewayError::Throttled(refusal)
        })?;
        Ok((self.settings.upstream(request, Some(user_id)), in_flight))
    }
}

#[tonic::async_trait]
impl ToDo for TodoProxy {
    async fn create_to_do(
        &self,
        request: Request<CreateToDoReq>,
    ) -> Result<Response<CreateToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Write)?;
        // With a request_id the backend stores a repeat only once.
        let retry = if upstream.message.request_id.is_empty() {
            Retry::Never
        } else {
            Retry::Safe
        };
        let client = &self.client;
        upstream
            .send(retry, |r| {
                let mut client = client.clone();
                async move { client.create_to_do(r).await }
            })
            .await
    }

    async fn get_to_do(
        &self,
        request: Request<GetToDoReq>,
    ) -> Result<Response<GetToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Read)?;
        let client = &self.client;
        upstream
            .send(Retry::Safe, |r| {
                let mut client = client.clone();
                async move { client.get_to_do(r).await }
            })
            .await
    }

    async fn delete_to_do(
        &self,
        request: Request<DeleteToDoReq>,
    ) -> Result<Response<DeleteToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Write)?;
        let client = &self.client;
        upstream
            .send(Retry::Never, |r| {
                let mut client = client.clone();
                async move { client.delete_to_do(r).await }
            })
            .await
    }

    async fn update_to_do(
        &self,
        request: Request<UpdateToDoReq>,
    ) -> Result<Response<UpdateToDoRsp>, Status> {
        // Setting the same title, text and done twice leaves the same entry
        // (only updated_at moves): safe to repeat.
        let (upstream, _in_flight) = self.authorise(request, Budget::Write)?;
        let client = &self.client;
        upstream
            .send(Retry::Safe, |r| {
                let mut client = client.clone();
                async move { client.update_to_do(r).await }
            })
            .await
    }

    async fn list_to_do(
        &self,
        request: Request<ListToDoReq>,
    ) -> Result<Response<ListToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Read)?;
        let client = &self.client;
        upstream
            .send(Retry::Safe, |r| {
                let mut client = client.clone();
                async move { client.list_to_do(r).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_deadlines_parse_per_the_grpc_spec() {
        let deadline = |value: &str| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().expect("ascii"));
            client_deadline(&metadata)
        };
        assert_eq!(deadline("250m"), Some(Duration::from_millis(250)));
        assert_eq!(deadline("3S"), Some(Duration::from_secs(3)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            deadline("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(deadline("123456789m"), None, "more than 8 digits");
        assert_eq!(deadline("m"), None);
        assert_eq!(deadline("5x"), None);
        assert_eq!(deadline("-5m"), None);
    }

    fn request_from(peer: &str, forwarded: &[&str]) -> Request<()> {
        let mut request = Request::new(());
        for value in forwarded {
            request
                .metadata_mut()
                .append("x-forwarded-for", value.parse().expect("ascii"));
        }
        let info = tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse().expect("socket address")),
        };
        request.extensions_mut().insert(info);
        request
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let trusted = [proxy];
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        // A direct client cannot claim another address.
        assert_eq!(
            client_address(
                &request_from("198.51.100.7:4000", &["203.0.113.9"]),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Behind the proxy: its rightmost entry is the client; a forged
        // entry the client put further left is ignored.
        assert_eq!(
            client_address(
                &request_from("10.0.0.5:4000", &["1.1.1.1, 203.0.113.9"]),
                &trusted
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(
                &request_from("10.0.0.5:4000", &["1.1.1.1", "[2001:db8::1]:443"]),
                &trusted
            ),
            ip("2001:db8::1")
        );
        // Chained trusted proxies are skipped.
        assert_eq!(
            client_address(
                &request_from("10.0.0.5:4000", &["203.0.113.9, 10.0.0.5"]),
                &trusted
            ),
            ip("203.0.113.9")
        );
        // No or unreadable header: the proxy itself.
        assert_eq!(
            client_address(&request_from("10.0.0.5:4000", &[]), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_address(
                &request_from("10.0.0.5:4000", &["1.1.1.1, garbage"]),
                &trusted
            ),
            ip("10.0.0.5")
        );
        // Without any trusted proxy the header means nothing.
        assert_eq!(
            client_address(&request_from("10.0.0.5:4000", &["203.0.113.9"]), &[]),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn transport_failures_become_unavailable_or_deadline_exceeded() {
        // What tonic makes of a reset connection: UNKNOWN/INTERNAL with the
        // transport error as source.
        let reset = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert_eq!(reset.code(), Code::Unknown);
        assert_eq!(failure_of(&reset), Failure::Transport);
        assert_eq!(sanitise_upstream(reset).code(), Code::Unavailable);

        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(failure_of(&timeout), Failure::TimedOut);
        assert_eq!(sanitise_upstream(timeout).code(), Code::DeadlineExceeded);

        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        ))));
        assert_eq!(sanitise_upstream(refused).code(), Code::Unavailable);

        // A backend's own INTERNAL is a bug and stays INTERNAL, generic text.
        let internal = sanitise_upstream(Status::internal("SQL: secret detail"));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
        assert_eq!(
            sanitise_upstream(Status::cancelled("x")).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn resource_exhausted_keeps_retry_details() {
        let mut status = Status::with_details(
            Code::ResourceExhausted,
            "too many attempts",
            vec![1, 2, 3].into(),
        );
        status
            .metadata_mut()
            .insert(todoapp_runtime::grpc::RETRY_PUSHBACK_HEADER, 1500u64.into());
        status
            .metadata_mut()
            .insert("x-secret", "no".parse().expect("ascii"));
        let relayed = sanitise_upstream(status);
        assert_eq!(relayed.code(), Code::ResourceExhausted);
        assert_eq!(relayed.details(), &[1, 2, 3]);
        assert_eq!(
            relayed
                .metadata()
                .get(todoapp_runtime::grpc::RETRY_PUSHBACK_HEADER),
            Some(&MetadataValue::from(1500u64))
        );
        assert!(relayed.metadata().get("x-secret").is_none());
    }

    fn call_settings() -> CallSettings {
        CallSettings {
            request_timeout: Duration::from_secs(10),
            trusted_proxies: Arc::from([]),
        }
    }

    fn reset() -> Status {
        Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )))
    }

    /// Sends through `Upstream::send`, the backend failing the first
    /// `failures` attempts with `failure`; returns (attempts, result).
    async fn attempts(
        retry: Retry,
        failures: usize,
        failure: fn() -> Status,
    ) -> (usize, Result<Response<i32>, Status>) {
        let count = std::sync::atomic::AtomicUsize::new(0);
        let result = call_settings()
            .upstream(Request::new(()), None)
            .send(retry, |_request| {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < failures {
                        Err(failure())
                    } else {
                        Ok(Response::new(7))
                    }
                }
            })
            .await;
        (count.into_inner(), result)
    }

    #[tokio::test]
    async fn safe_calls_are_retried_once_after_a_transport_failure() {
        let (n, result) = attempts(Retry::Safe, 1, reset).await;
        assert_eq!((n, result.map(|r| r.into_inner()).ok()), (2, Some(7)));
        // Only once: a second failure reaches the client, as UNAVAILABLE.
        let (n, result) = attempts(Retry::Safe, 2, reset).await;
        assert_eq!(n, 2);
        assert_eq!(result.expect_err("failed twice").code(), Code::Unavailable);
        // Calls that are not safe to repeat are not repeated.
        let (n, result) = attempts(Retry::Never, 1, reset).await;
        assert_eq!(n, 1);
        assert_eq!(result.expect_err("not retried").code(), Code::Unavailable);
        // A backend's own answer is final.
        let (n, result) = attempts(Retry::Safe, 1, || Status::unavailable("db down")).await;
        assert_eq!(n, 1);
        assert_eq!(result.expect_err("answered").code(), Code::Unavailable);
        // A timeout is not a connection failure: not retried.
        let (n, result) = attempts(Retry::Safe, 1, || {
            Status::from_error(Box::new(tonic::TimeoutExpired(())))
        })
        .await;
        assert_eq!(n, 1);
        assert_eq!(
            result.expect_err("timed out").code(),
            Code::DeadlineExceeded
        );
    }

    #[tokio::test]
    async fn the_retry_avoids_the_endpoint_that_failed() {
        let failed: std::net::SocketAddr = "127.0.0.1:9".parse().expect("address");
        let avoided = std::sync::Mutex::new(Vec::new());
        let result = call_settings()
            .upstream(Request::new(()), None)
            .send(Retry::Safe, |request| {
                let mut avoided = avoided.lock().expect("lock");
                avoided.push(request.extensions().get::<AvoidEndpoint>().map(|a| a.0));
                let first = avoided.len() == 1;
                async move {
                    if first {
                        Err(Status::from_error(Box::new(
                            crate::upstream::EndpointError {
                                endpoint: failed,
                                source: Box::new(std::io::Error::new(
                                    std::io::ErrorKind::ConnectionReset,
                                    "connection reset",
                                )),
                            },
                        )))
                    } else {
                        Ok(Response::new(7))
                    }
                }
            })
            .await;
        assert_eq!(result.expect("retried").into_inner(), 7);
        assert_eq!(
            avoided.into_inner().expect("lock"),
            [None, Some(failed)],
            "the first attempt avoids nothing, the retry the failed endpoint"
        );
    }

    #[test]
    fn client_deadlines_are_passed_on_capped_by_the_request_timeout() {
        let upstream_timeout = |grpc_timeout: Option<&str>| {
            let mut request = Request::new(());
            if let Some(value) = grpc_timeout {
                request
                    .metadata_mut()
                    .insert("grpc-timeout", value.parse().expect("ascii"));
            }
            let upstream = call_settings().upstream(request, None);
            let sent = upstream.request().expect("request");
            let header = sent
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (upstream.timeout, header)
        };
        let (timeout, header) = upstream_timeout(Some("250m"));
        assert_eq!(timeout, Duration::from_millis(250));
        assert!(header.is_some(), "the backend learns the deadline");
        assert_eq!(upstream_timeout(Some("1H")).0, Duration::from_secs(10));
        assert_eq!(upstream_timeout(None).0, Duration::from_secs(10));
        assert_eq!(upstream_timeout(Some("garbage")).0, Duration::from_secs(10));
    }

    #[test]
    fn client_sent_internal_headers_never_reach_a_backend() {
        let mut request = Request::new(());
        for name in [
            todoapp_auth::USER_ID_HEADER,
            todoapp_auth::CLIENT_ADDRESS_HEADER,
        ] {
            request
                .metadata_mut()
                .insert(name, "forged".parse().expect("ascii"));
        }
        let sent = call_settings()
            .upstream(request, None)
            .request()
            .expect("request");
        assert!(sent.metadata().get(todoapp_auth::USER_ID_HEADER).is_none());
        // Without a peer address (no connection in this test) none is sent.
        assert!(sent
            .metadata()
            .get(todoapp_auth::CLIENT_ADDRESS_HEADER)
            .is_none());

        let sent = call_settings()
            .upstream(request_from("198.51.100.7:1", &[]), Some("u-1".into()))
            .request()
            .expect("request");
        assert_eq!(
            sent.metadata()
                .get(todoapp_auth::CLIENT_ADDRESS_HEADER)
                .map(|v| v.to_str().ok()),
            Some(Some("198.51.100.7"))
        );
        assert_eq!(
            sent.metadata()
                .get(todoapp_auth::USER_ID_HEADER)
                .map(|v| v.to_str().ok()),
            Some(Some("u-1"))
        );
    }
}
