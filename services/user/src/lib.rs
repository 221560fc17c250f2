//! The todoapp user service: registration and login.
//!
//! Passwords are stored only as argon2id PHC strings; login returns an
//! EdDSA-signed JWT that the gateway verifies on every call.

mod api;
pub mod config;
mod domain;
mod error;
mod password;
pub mod store;
pub mod throttle;
mod token;

use todoapp_api::user_server::UserServer;
use todoapp_runtime::config::ServerSettings;
use todoapp_runtime::server::{BoxError, ServeOptions};
use todoapp_runtime::service::{Application, FileChecks, Service};
use todoapp_runtime::ConfigError;

pub use crate::api::UserApi;
pub use crate::config::UserConfig;
pub use crate::password::Hasher;
use crate::store::SqlUserStore;
pub use crate::token::TokenIssuer;

pub struct UserService;

async fn open_store(config: &UserConfig) -> Result<(todoapp_db::Pool, SqlUserStore), BoxError> {
    let pool = todoapp_db::connect(&config.database).await?;
    let store = SqlUserStore::new(pool.clone());
    store.migrate().await?;
    Ok((pool, store))
}

impl Service for UserService {
    const NAME: &'static str = "user";
    const HAS_DATABASE: bool = true;
    type Config = UserConfig;

    fn server_settings(config: &UserConfig) -> &ServerSettings {
        &config.server
    }

    fn fill_defaults(config: &mut Self::Config) {
        config.database.fill_defaults();
    }

    fn validate(config: &UserConfig, files: FileChecks) -> Result<(), ConfigError> {
        config.validate(files)
    }

    async fn migrate(config: UserConfig) -> Result<(), BoxError> {
        let (pool, _) = open_store(&config).await?;
        pool.close().await;
        tracing::info!("user database migrated");
        Ok(())
    }

    async fn build(config: UserConfig) -> Result<Application, BoxError> {
        let tls = todoapp_runtime::tls::server_config(&config.tls)?;
        let issuer = TokenIssuer::load(&config.jwt)?;
        let hasher = Hasher::new(&config.argon2)?;
        let (pool, store) = open_store(&config).await?;
        pool.register_metrics();

        let limit = config.server.max_message_bytes;
        let throttle = throttle::Throttle::new(config.throttle.clone(), pool.clone());
        let expiry = throttle.spawn_expiry(std::time::Duration::from_secs(60));
        let user = UserServer::new(UserApi::new(store, hasher, issuer, throttle))
            .max_decoding_message_size(limit);
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<UserServer<UserApi<SqlUserStore>>>()
            .await;
        let routes = tonic::service::Routes::new(health_service).add_service(user);

        let options = ServeOptions {
            name: Self::NAME,
            settings: config.server,
            tls,
            health,
            health_services: vec![todoapp_api::service_names::USER],
            probe: Some(pool.probe()),
            descriptor_sets: vec![todoapp_api::FILE_DESCRIPTOR_SET],
        };
        let release = async move {
            expiry.abort();
            pool.close().await;
        };
        Application::bind(options, routes, release).await
    }
}
