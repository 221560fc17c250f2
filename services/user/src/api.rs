//! The `/User/*` gRPC methods.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use secrecy::SecretString;
use todoapp_api::user_server::User;
use todoapp_api::{LoginReq, LoginRsp, RegisterReq, RegisterRsp};
use tonic::{Request, Response, Status};

use crate::domain::{Email, Password, Username};
use crate::error::UserError;
use crate::password::Hasher;
use crate::store::{NewUser, UserStore};
use crate::throttle::Throttle;
use crate::token::TokenIssuer;

pub struct UserApi<S> {
    store: Arc<S>,
    hasher: Hasher,
    issuer: Arc<TokenIssuer>,
    throttle: Throttle,
}

/// The address the call came from: the gateway's word for it (only the
/// gateway can reach this service, over mutual TLS, and it overwrites any
/// copy a client sent), else the peer itself.
fn client_address<T>(request: &Request<T>) -> IpAddr {
    request
        .metadata()
        .get(todoapp_auth::CLIENT_ADDRESS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .or_else(|| request.remote_addr().map(|peer| peer.ip()))
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
}

/// The name a login attempt is counted under: the normalised username when
/// valid, else (bounded) what was sent.
fn throttle_key(sent: &str, username: Option<&Username>) -> String {
    match username {
        Some(username) => username.as_str().to_owned(),
        None => sent.chars().take(100).collect(),
    }
}

impl<S: UserStore> UserApi<S> {
    pub fn new(store: S, hasher: Hasher, issuer: TokenIssuer, throttle: Throttle) -> Self {
        Self {
            store: Arc::new(store),
            hasher,
            issuer: Arc::new(issuer),
            throttle,
        }
    }

    async fn register(&self, req: RegisterReq, client: IpAddr) -> Result<(), UserError> {
        let username = Username::try_from(req.username)?;
        let password = Password::try_from(req.password)?;
        let email = Email::try_from(req.email)?;
        self.throttle.registration(client).await??;
        // A taken name or address costs a lookup, not a hash. Two racing
        // registrations both pass here; the unique index refuses the second.
        if let Some(field) = self.store.taken(username.as_str(), email.as_str()).await? {
            return Err(UserError::AlreadyExists(field));
        }
        let password_hash = self.hasher.hash(password.secret()).await?;
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

    async fn login(&self, req: LoginReq, client: IpAddr) -> Result<LoginRsp, UserError> {
        // Malformed input is just another wrong password: same message, same cost.
        let username = Username::try_from(req.username.clone()).ok();
        // Decided before any lookup or hash, so a refusal is cheap.
        let key = throttle_key(&req.username, username.as_ref());
        self.throttle.login_attempt(&key, client).await??;
        let password = Password::try_from(req.password).ok();
        let credentials = match &username {
            Some(username) => self.store.credentials(username.as_str()).await?,
            None => None,
        };
        let empty = SecretString::from("");
        let typed = password.as_ref().map_or(&empty, Password::secret);
        let (user_id, stored) = match credentials {
            Some(c) if password.is_some() => (Some(c.id), Some(c.password_hash)),
            _ => (None, None),
        };
        let verified = self.hasher.verify(stored, typed).await?;
        let user_id = match (verified, user_id) {
            (true, Some(id)) => id,
            _ => return Err(UserError::BadCredentials),
        };
        if let Err(e) = self.throttle.login_succeeded(&key, client).await {
            // The login stands; the pair's failures just stay counted.
            tracing::warn!(error = %e.detail(), "clearing the login failures failed");
        }
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
        let client = client_address(&request);
        Ok(Response::new(
            UserApi::login(self, request.into_inner(), client).await?,
        ))
    }

    async fn register(
        &self,
        request: Request<RegisterReq>,
    ) -> Result<Response<RegisterRsp>, Status> {
        let client = client_address(&request);
        UserApi::register(self, request.into_inner(), client).await?;
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
    use crate::config::{Argon2Settings, JwtSettings, ThrottleSettings};
    use crate::store::Credentials;

    fn conflict(constraint: &str) -> StoreError {
        StoreError::Conflict {
            constraint: constraint.into(),
            source: "duplicate".into(),
        }
    }

    #[derive(Default)]
    struct MemoryStore(Mutex<HashMap<String, NewUser>>);

    impl UserStore for MemoryStore {
        async fn taken(
            &self,
            username: &str,
            email: &str,
        ) -> Result<Option<&'static str>, StoreError> {
            let users = self
                .0
                .lock()
                .map_err(|_| StoreError::internal("poisoned"))?;
            if users.contains_key(username) {
                return Ok(Some("username"));
            }
            Ok(users.values().any(|u| u.email == email).then_some("email"))
        }

        async fn insert(&self, user: &NewUser) -> Result<(), StoreError> {
            let mut users = self
                .0
                .lock()
                .map_err(|_| StoreError::internal("poisoned"))?;
            if users.values().any(|u| u.email == user.email) {
                return Err(conflict("users_email"));
            }
            if users.contains_key(&user.username) {
                return Err(conflict("users_username"));
            }
            users.insert(user.username.clone(), user.clone());
            Ok(())
        }

        async fn credentials(&self, username: &str) -> Result<Option<Credentials>, StoreError> {
            let users = self
                .0
                .lock()
                .map_err(|_| StoreError::internal("poisoned"))?;
            Ok(users.get(username).map(|u| Credentials {
                id: u.id.clone(),
                password_hash: u.password_hash.clone(),
            }))
        }
    }

    /// The throttling counters' database: SQLite in `dir`.
    async fn throttle_pool(dir: &std::path::Path) -> todoapp_db::Pool {
        let path = dir.join("user.db");
        let settings = todoapp_db::DatabaseSettings::sqlite(&path.display().to_string());
        let pool = todoapp_db::connect(&settings).await.expect("sqlite");
        crate::store::SqlUserStore::new(pool.clone())
            .migrate()
            .await
            .expect("migrate");
        pool
    }

    async fn api(dir: &std::path::Path) -> UserApi<MemoryStore> {
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
            Throttle::new(
                ThrottleSettings {
                    login_failures: 3,
                    registrations: 5,
                    ..ThrottleSettings::default()
                },
                throttle_pool(dir).await,
            ),
        )
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const AWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn login_req(name: &str, password: &str) -> LoginReq {
        LoginReq {
            username: name.into(),
            password: password.into(),
        }
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
        let api = api(dir.path()).await;
        UserApi::register(&api, register_req("ann"), HOME)
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
            HOME,
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
            HOME,
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
            HOME,
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
            HOME,
        )
        .await
        .expect("login");
        assert!(ok.expiration.ends_with('Z'));
    }

    #[tokio::test]
    async fn stored_hash_is_argon2id_and_never_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = api(dir.path()).await;
        UserApi::register(&api, register_req("bob"), HOME)
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
        let api = api(dir.path()).await;
        let mut bad = register_req("carl");
        bad.email = "broken".into();
        assert!(matches!(
            UserApi::register(&api, bad, HOME).await,
            Err(UserError::InvalidArgument { field: "email", .. })
        ));
        assert!(api.store.0.lock().expect("lock").is_empty());
        UserApi::register(&api, register_req("carl"), HOME)
            .await
            .expect("register");
        let mut dup = register_req("carl2");
        dup.email = "carl@example.org".into();
        assert!(matches!(
            UserApi::register(&api, dup, HOME).await,
            Err(UserError::AlreadyExists("email"))
        ));
    }

    #[tokio::test]
    async fn a_taken_name_is_refused_before_hashing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = api(dir.path()).await;
        UserApi::register(&api, register_req("dora"), HOME)
            .await
            .expect("register");
        let hashes = || api.hasher.stats().hashes.load(Ordering::SeqCst);
        let before = hashes();
        let mut dup = register_req("dora");
        dup.email = "new@example.org".into();
        assert!(matches!(
            UserApi::register(&api, dup, HOME).await,
            Err(UserError::AlreadyExists("username"))
        ));
        let mut dup = register_req("dora2");
        dup.email = "DORA@example.org".into();
        assert!(matches!(
            UserApi::register(&api, dup, HOME).await,
            Err(UserError::AlreadyExists("email"))
        ));
        assert_eq!(hashes(), before, "a refused registration computed a hash");
    }

    #[test]
    fn conflicts_are_classified_by_constraint_name_only() {
        // A username containing "email" once made a username conflict read
        // as an email conflict; only the constraint's name counts.
        let conflict = |constraint: &str| {
            UserError::from(StoreError::Conflict {
                constraint: constraint.into(),
                source: "Duplicate entry 'my-email' for key 'users_username'".into(),
            })
        };
        assert!(matches!(
            conflict("users_username"),
            UserError::AlreadyExists("username")
        ));
        assert!(matches!(
            conflict("users.username"),
            UserError::AlreadyExists("username")
        ));
        assert!(matches!(
            conflict("users_email"),
            UserError::AlreadyExists("email")
        ));
        assert!(matches!(
            conflict("users.email"),
            UserError::AlreadyExists("email")
        ));
        assert!(matches!(conflict("PRIMARY"), UserError::Internal(_)));
    }

    #[tokio::test]
    async fn throttled_logins_cost_no_hash_and_answer_fast() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = api(dir.path()).await;
        UserApi::register(&api, register_req("eve"), HOME)
            .await
            .expect("register");
        for _ in 0..3 {
            assert!(matches!(
                UserApi::login(&api, login_req("eve", "wrong-password"), HOME).await,
                Err(UserError::BadCredentials)
            ));
        }
        let verifications = || api.hasher.stats().verifications.load(Ordering::SeqCst);
        let before = verifications();
        for n in 0..20 {
            let start = std::time::Instant::now();
            let refused = UserApi::login(&api, login_req("eve", "password1"), HOME).await;
            let elapsed = start.elapsed();
            match refused {
                Err(UserError::Throttled(wait)) => {
                    assert!(
                        wait > std::time::Duration::ZERO
                            && wait <= std::time::Duration::from_secs(1)
                    );
                }
                other => panic!("expected throttling, got {other:?}"),
            }
            // The first refusal is the database's decision; the instance
            // remembers it, and answers the repeats from memory.
            if n > 0 {
                assert!(elapsed < std::time::Duration::from_millis(5), "{elapsed:?}");
            }
        }
        assert_eq!(
            verifications(),
            before,
            "a throttled attempt verified a hash"
        );

        // The owner, from elsewhere, is not locked out by the stranger.
        UserApi::login(&api, login_req("eve", "password1"), AWAY)
            .await
            .expect("login from another address");
    }

    #[tokio::test]
    async fn registrations_are_limited_per_address_before_any_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = api(dir.path()).await;
        for n in 0..5 {
            UserApi::register(&api, register_req(&format!("reg{n}")), HOME)
                .await
                .expect("register");
        }
        let hashes = api.hasher.stats().hashes.load(Ordering::SeqCst);
        assert!(matches!(
            UserApi::register(&api, register_req("reg5"), HOME).await,
            Err(UserError::Throttled(_))
        ));
        assert_eq!(api.hasher.stats().hashes.load(Ordering::SeqCst), hashes);
        assert!(!api.store.0.lock().expect("lock").contains_key("reg5"));
        UserApi::register(&api, register_req("reg5"), AWAY)
            .await
            .expect("another address may register");
    }

    #[test]
    fn throttling_maps_to_resource_exhausted_with_retry_info() {
        use tonic_types::StatusExt;
        let status = Status::from(UserError::Throttled(std::time::Duration::from_millis(2500)));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry = status
            .get_details_retry_info()
            .expect("RetryInfo in the details");
        assert_eq!(
            retry.retry_delay,
            Some(std::time::Duration::from_millis(2500))
        );
        assert_eq!(
            status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .map(|v| v.to_str().ok()),
            Some(Some("2500"))
        );
    }
}
