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
        Ok(Response::new(
            UserApi::login(self, request.into_inner()).await?,
        ))
    }

    async fn register(
        &self,
        request: Request<RegisterReq>,
    ) -> Result<Response<RegisterRsp>, Status> {
        UserApi::register(self, request.into_inner()).await?;
        Ok(Response::new(RegisterRsp {}))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    use todoapp_db::StoreError;

    use super::*;
    use crate::config::{Argon2Settings, JwtSettings};
    use crate::store::Credentials;

    #[derive(Default)]
    struct MemoryStore(Mutex<HashMap<String, NewUser>>);

    impl UserStore for MemoryStore {
        async fn insert(&self, user: &NewUser) -> Result<(), StoreError> {
            let mut users = self
                .0
                .lock()
                .map_err(|_| StoreError::Internal("poisoned".into()))?;
            if users.values().any(|u| u.email == user.email) {
                return Err(StoreError::Conflict("users.email".into()));
            }
            if users.contains_key(&user.username) {
                return Err(StoreError::Conflict("users.username".into()));
            }
            users.insert(user.username.clone(), user.clone());
            Ok(())
        }

        async fn credentials(&self, username: &str) -> Result<Option<Credentials>, StoreError> {
            let users = self
                .0
                .lock()
                .map_err(|_| StoreError::Internal("poisoned".into()))?;
            Ok(users.get(username).map(|u| Credentials {
                id: u.id.clone(),
                password_hash: u.password_hash.clone(),
            }))
        }
    }

    fn api(dir: &std::path::Path) -> UserApi<MemoryStore> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("keypair");
        let key = dir.join("jwt.key");
        std::fs::write(&key, pair.serialize_pem()).expect("write");
        let jwt = JwtSettings {
            private_key: key,
            issuer: "todoapp".into(),
            audience: "todoapp".into(),
            lifetime_secs: 3600,
        };
        let argon2 = Argon2Settings {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_concurrent_hashes: 2,
        };
        UserApi::new(
            MemoryStore::default(),
            Hasher::new(&argon2).expect("hasher"),
            TokenIssuer::load(&jwt).expect("issuer"),
        )
    }

    fn register_req(name: &str) -> RegisterReq {
        RegisterReq {
            username: name.into(),
            password: "password1".into(),
            email: format!("{name}@example.org"),
        }
    }

    #[tokio::test]
    async fn both_login_failures_cost_exactly_one_verification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = api(dir.path());
        UserApi::register(&api, register_req("ann"))
            .await
            .expect("register");
        let verifications = || api.hasher.stats().verifications.load(Ordering::SeqCst);

        let before = verifications();
        let unknown = UserApi::login(
            &api,
            LoginReq {
                username: "nobody".into(),
                password: "password1".into(),
            },
        )
        .await;
        assert!(matches!(unknown, Err(UserError::BadCredentials)));
        assert_eq!(
            verifications() - before,
            1,
            "unknown user must still verify once"
        );

        let before = verifications();
        let wrong = UserApi::login(
            &api,
            LoginReq {
                username: "ann".into(),
                password: "password2".into(),
            },
        )
        .await;
        assert!(matches!(wrong, Err(UserError::BadCredentials)));
        assert_eq!(verifications() - before, 1);

        let before = verifications();
        let malformed = UserApi::login(
            &api,
            LoginReq {
                username: String::new(),
                password: "x".into(),
            },
        )
        .await;
        assert!(matches!(malformed, Err(UserError::BadCredentials)));
        assert_eq!(verifications() - before, 1);

        let ok = UserApi::login(
            &api,
            LoginReq {
                username: "ann".into(),
                password: "password1".into(),
            },
        )
        .await
        .expect("login");
        assert!(ok.expiration.ends_with('Z'));
    }

    #[tokio::test]
    async fn stored_hash_is_argon2id_and_never_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = api(dir.path());
        UserApi::register(&api, register_req("bob"))
            .await
            .expect("register");
        let stored = api
            .store
            .0
            .lock()
            .expect("lock")
            .get("bob")
            .expect("stored")
            .password_hash
            .clone();
        assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
        assert!(!stored.contains("password1"));
    }

    #[tokio::test]
    async fn invalid_registration_stores_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = api(dir.path());
        let mut bad = register_req("carl");
        bad.email = "broken".into();
        assert!(matches!(
            UserApi::register(&api, bad).await,
            Err(UserError::InvalidArgument { field: "email", .. })
        ));
        assert!(api.store.0.lock().expect("lock").is_empty());
        UserApi::register(&api, register_req("carl"))
            .await
            .expect("register");
        let mut dup = register_req("carl2");
        dup.email = "carl@example.org".into();
        assert!(matches!(
            UserApi::register(&api, dup).await,
            Err(UserError::AlreadyExists("email"))
        ));
    }
}
