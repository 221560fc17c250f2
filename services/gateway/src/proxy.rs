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

use crate::token::{TokenError, TokenVerifier};

/// Largest backend response the gateway relays: follows from the largest
/// ListToDo byte budget the todo service accepts.
const MAX_UPSTREAM_RESPONSE: usize = todoapp_api::MAX_RELAYED_REPLY_BYTES;

/// The gateway's one error type, mapped to gRPC codes in one place.
#[derive(Debug)]
enum GatewayError {
    Unauthenticated(TokenError),
    Upstream(Status),
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::Unauthenticated(reason) => {
                tracing::debug!(%reason, "token refused");
                Status::unauthenticated("invalid or missing token")
            }
            GatewayError::Upstream(status) => sanitise_upstream(status),
        }
    }
}

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
}

impl TodoProxy {
    pub fn new(channel: Channel, verifier: Arc<TokenVerifier>) -> Self {
        Self {
            client: ToDoClient::new(channel).max_decoding_message_size(MAX_UPSTREAM_RESPONSE),
            verifier,
        }
    }

    /// Verifies this call's own token and prepares the backend request.
    fn authorise<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        let mut values = request.metadata().get_all("authorization").iter();
        let authorization = values.next().map(|v| v.as_bytes());
        // Two tokens are ambiguous: whichever one we picked, the other was
        // meant to count too.
        if values.next().is_some() {
            return Err(GatewayError::Unauthenticated(TokenError::Ambiguous).into());
        }
        let user_id = self
            .verifier
            .verify(authorization)
            .map_err(GatewayError::Unauthenticated)?;
        upstream_request(request.into_inner(), Some(&user_id))
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
        let upstream = self.authorise(request)?;
        relay(self.client.clone().create_to_do(upstream).await)
    }

    async fn get_to_do(
        &self,
        request: Request<GetToDoReq>,
    ) -> Result<Response<GetToDoRsp>, Status> {
        let upstream = self.authorise(request)?;
        relay(self.client.clone().get_to_do(upstream).await)
    }

    async fn delete_to_do(
        &self,
        request: Request<DeleteToDoReq>,
    ) -> Result<Response<DeleteToDoRsp>, Status> {
        let upstream = self.authorise(request)?;
        relay(self.client.clone().delete_to_do(upstream).await)
    }

    async fn update_to_do(
        &self,
        request: Request<UpdateToDoReq>,
    ) -> Result<Response<UpdateToDoRsp>, Status> {
        let upstream = self.authorise(request)?;
        relay(self.client.clone().update_to_do(upstream).await)
    }

    async fn list_to_do(
        &self,
        request: Request<ListToDoReq>,
    ) -> Result<Response<ListToDoRsp>, Status> {
        let upstream = self.authorise(request)?;
        relay(self.client.clone().list_to_do(upstream).await)
    }
}
