//! The public `User` and `ToDo` services: verify, then forward.

use std::sync::Arc;

use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::to_do_server::ToDo;
use todoapp_api::user_client::UserClient;
use todoapp_api::user_server::User;
use todoapp_api::*;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::fair_share::{Budget, FairShare, InFlight, Refusal};
use crate::token::{TokenError, TokenVerifier};

/// Largest backend response the gateway relays (a full ListToDo page of
/// maximal entries is several MiB).
const MAX_UPSTREAM_RESPONSE: usize = 64 * 1024 * 1024;

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

/// When to retry a call refused for the in-flight cap: about one call's time.
const IN_FLIGHT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Backends already send client-safe messages for the codes they use on
/// purpose; anything else (transport failures, timeouts, panics) is logged
/// here once and replaced by a generic message.
fn sanitise_upstream(status: Status) -> Status {
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::FailedPrecondition => Status::new(status.code(), status.message()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            todoapp_runtime::grpc::unavailable(&format!("backend: {status:?}"))
        }
        // OUT_OF_RANGE from a backend means our own request exceeded its limit.
        Code::OutOfRange => Status::resource_exhausted("message too large"),
        _ => todoapp_runtime::grpc::internal(&format!("backend: {status:?}")),
    }
}

/// Builds the backend request: only the message and the identity the
/// gateway vouches for. Nothing else a client sent is passed on, so a
/// client cannot forge the identity header.
fn upstream_request<T>(message: T, user_id: Option<&str>) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    if let Some(user_id) = user_id {
        let value =
            MetadataValue::try_from(user_id).map_err(|_| Status::internal("internal error"))?;
        request
            .metadata_mut()
            .insert(todoapp_auth::USER_ID_HEADER, value);
    }
    Ok(request)
}

pub struct UserProxy {
    client: UserClient<Channel>,
}

impl UserProxy {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: UserClient::new(channel).max_decoding_message_size(MAX_UPSTREAM_RESPONSE),
        }
    }
}

#[tonic::async_trait]
impl User for UserProxy {
    async fn login(&self, request: Request<LoginReq>) -> Result<Response<LoginRsp>, Status> {
        let upstream = upstream_request(request.into_inner(), None)?;
        let response = self.client.clone().login(upstream).await;
        Ok(Response::new(
            response.map_err(GatewayError::Upstream)?.into_inner(),
        ))
    }

    async fn register(
        &self,
        request: Request<RegisterReq>,
    ) -> Result<Response<RegisterRsp>, Status> {
        let upstream = upstream_request(request.into_inner(), None)?;
        let response = self.client.clone().register(upstream).await;
        Ok(Response::new(
            response.map_err(GatewayError::Upstream)?.into_inner(),
        ))
    }
}

pub struct TodoProxy {
    client: ToDoClient<Channel>,
    verifier: Arc<TokenVerifier>,
    fair_share: Arc<FairShare>,
}

impl TodoProxy {
    pub fn new(channel: Channel, verifier: Arc<TokenVerifier>, fair_share: Arc<FairShare>) -> Self {
        Self {
            client: ToDoClient::new(channel).max_decoding_message_size(MAX_UPSTREAM_RESPONSE),
            verifier,
            fair_share,
        }
    }

    /// Verifies this call's own token, admits it within the user's fair
    /// share and prepares the backend request. The call counts as in flight
    /// until the returned guard is dropped.
    fn authorise<T>(
        &self,
        request: Request<T>,
        budget: Budget,
    ) -> Result<(Request<T>, InFlight), Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let user_id = self
            .verifier
            .verify(authorization)
            .map_err(GatewayError::Unauthenticated)?;
        let in_flight = self
            .fair_share
            .admit(&user_id, budget)
            .map_err(GatewayError::Throttled)?;
        Ok((
            upstream_request(request.into_inner(), Some(&user_id))?,
            in_flight,
        ))
    }
}

fn relay<T>(response: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
    Ok(Response::new(
        response.map_err(GatewayError::Upstream)?.into_inner(),
    ))
}

#[tonic::async_trait]
impl ToDo for TodoProxy {
    async fn create_to_do(
        &self,
        request: Request<CreateToDoReq>,
    ) -> Result<Response<CreateToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Write)?;
        relay(self.client.clone().create_to_do(upstream).await)
    }

    async fn get_to_do(
        &self,
        request: Request<GetToDoReq>,
    ) -> Result<Response<GetToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Read)?;
        relay(self.client.clone().get_to_do(upstream).await)
    }

    async fn delete_to_do(
        &self,
        request: Request<DeleteToDoReq>,
    ) -> Result<Response<DeleteToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Write)?;
        relay(self.client.clone().delete_to_do(upstream).await)
    }

    async fn update_to_do(
        &self,
        request: Request<UpdateToDoReq>,
    ) -> Result<Response<UpdateToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Write)?;
        relay(self.client.clone().update_to_do(upstream).await)
    }

    async fn list_to_do(
        &self,
        request: Request<ListToDoReq>,
    ) -> Result<Response<ListToDoRsp>, Status> {
        let (upstream, _in_flight) = self.authorise(request, Budget::Read)?;
        relay(self.client.clone().list_to_do(upstream).await)
    }
}
