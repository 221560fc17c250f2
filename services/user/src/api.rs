//! The `/User/*` gRPC methods.

use std::sync::Arc;

use todoapp_api::user_server::User;
use todoapp_api::{LoginReq, LoginRsp, RegisterReq, RegisterRsp};
use tonic::{Request, Response, Status};

use crate::domain::{Email, Password, Username};
use crate::error::UserError;
use crate::password::Hasher;
use crate::store::{NewUser, UserStore};
use crate::token::TokenIssuer;

pub struct UserApi<S> {
    store: Arc<S>,
    hasher: Hasher,
    issuer: Arc<TokenIssuer>,
}

impl<S: UserStore> UserApi<S> {
    pub fn new(store: S, hasher: Hasher, issuer: TokenIssuer) -> Self {
        Self {
            store: Arc::new(store),
            hasher,
            issuer: Arc::new(issuer),
        }
    }

    async fn register(&self, req: RegisterReq) -> Result<(), UserError> {
        let username = Username::try_from(req.username)?;
        let password = Password::try_from(req.password)?;
        let email = Email::try_from(req.email)?;
        let password_hash = self.hasher.hash(password.expose().to_owned()).await?;
        let user = NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.as_str().to_owned(),
            email: email.as_str().to_owned(),
            password_hash,
        };
        self.store.insert(&user).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(())
    }

    async fn login(&self, req: LoginReq) -> Result<LoginRsp, UserError> {
        // Malformed input is just another wrong password: same message, same cost.
        let username = Username::try_from(req.username).ok();
        let password = Password::try_from(req.password).ok();
        let credentials = match &username {
            Some(username) => self.store.credentials(username.as_str()).await?,
            None => None,
        };
        let typed = password.as_ref().map_or("", |p| p.expose()).to_owned();
        let (user_id, stored) = match credentials {
            Some(c) if password.is_some() => (Some(c.id), Some(c.password_hash)),
            _ => (None, None),
        };
        let verified = self.hasher.verify(stored, typed).await?;
        let user_id = match (verified, user_id) {
            (true, Some(id)) => id,
            _ => return Err(UserError::BadCredentials),
        };
        let token = self.issuer.issue(&user_id)?;
        Ok(LoginRsp {
            jwt_token: token.jwt,
            expiration: humantime::format_rfc3339_seconds(token.expires_at).to_string(),
        })
    }
}

#[tonic::async_trait]
impl<S: UserStore> User for UserApi<S> {
    async fn login(&self, request: Request<LoginReq>) -> Result<Response<LoginRsp>, Status> {
        Ok(Response::new(UserApi::login(self, request.into_inner()).await?))
    }

    async fn register(&self, request: Request<RegisterReq>) -> Result<Response<RegisterRsp>, Status> {
        UserApi::register(self, request.into_inner()).await?;
        Ok(Response::new(RegisterRsp {}))
    }
}
