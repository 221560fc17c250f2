//! The todoapp todo service: each user's todo entries.
//!
//! It trusts the caller id the gateway passes on, because nothing but a
//! peer with a certificate from the internal CA can reach it.

mod api;
pub mod config;
pub mod domain;
mod error;
pub mod quota;
pub mod store;

use todoapp_api::to_do_server::ToDoServer;
use todoapp_runtime::config::ServerSettings;
use todoapp_runtime::server::{BoxError, ServeOptions};
use todoapp_runtime::service::{Application, FileChecks, Service};
use todoapp_runtime::ConfigError;

pub use crate::api::TodoApi;
pub use crate::config::TodoConfig;
use crate::store::SqlTodoStore;

pub struct TodoService;

async fn open_store(config: &TodoConfig) -> Result<(todoapp_db::Pool, SqlTodoStore), BoxError> {
    let pool = todoapp_db::connect(&config.database).await?;
    let store = SqlTodoStore::new(pool.clone()).with_quota(config.quota);
    store.migrate().await?;
    Ok((pool, store))
}

impl Service for TodoService {
    const NAME: &'static str = "todo";
    const HAS_DATABASE: bool = true;
    type Config = TodoConfig;

    fn server_settings(config: &TodoConfig) -> &ServerSettings {
        &config.server
    }

    fn fill_defaults(config: &mut Self::Config) {
        config.database.fill_defaults();
    }

    fn validate(config: &TodoConfig, files: FileChecks) -> Result<(), ConfigError> {
        config.validate(files)
    }

    async fn migrate(config: TodoConfig) -> Result<(), BoxError> {
        let (pool, _) = open_store(&config).await?;
        pool.close().await;
        tracing::info!("todo database migrated");
        Ok(())
    }

    async fn build(config: TodoConfig) -> Result<Application, BoxError> {
        let tls = todoapp_runtime::tls::server_config(&config.tls)?;
        let (pool, store) = open_store(&config).await?;
        pool.register_metrics();
        let expiry = store.spawn_request_expiry(std::time::Duration::from_secs(3600));

        let todo = ToDoServer::new(TodoApi::new(store, config.list_max_bytes))
            .max_decoding_message_size(config.server.max_message_bytes);
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ToDoServer<TodoApi<SqlTodoStore>>>()
            .await;
        let routes = tonic::service::Routes::new(health_service).add_service(todo);

        let options = ServeOptions {
            name: Self::NAME,
            settings: config.server,
            tls,
            health,
            health_services: vec![todoapp_api::service_names::TODO],
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
