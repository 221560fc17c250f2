//! The todoapp gateway: the only public endpoint.
//!
//! Terminates TLS, verifies every call's JWT itself, and forwards calls to
//! the user and todo services over mutual TLS, passing on the verified user
//! id. It also serves gRPC health and reflection.

mod backend_connection;
pub mod config;
mod fair_share;
mod proxy;
pub mod token;
mod upstream;

use std::sync::Arc;

use todoapp_api::to_do_server::ToDoServer;
use todoapp_api::user_server::UserServer;
use todoapp_runtime::config::ServerSettings;
use todoapp_runtime::server::{BoxError, ServeOptions};
use todoapp_runtime::service::{Application, FileChecks, Service};
use todoapp_runtime::ConfigError;

pub use crate::config::GatewayConfig;
use crate::proxy::{CallSettings, TodoProxy, UserProxy};
use crate::token::TokenVerifier;

pub struct GatewayService;

impl Service for GatewayService {
    const NAME: &'static str = "gateway";
    const HAS_DATABASE: bool = false;
    type Config = GatewayConfig;

    fn server_settings(config: &GatewayConfig) -> &ServerSettings {
        &config.server
    }

    fn validate(config: &GatewayConfig, files: FileChecks) -> Result<(), ConfigError> {
        config.validate(files)
    }

    async fn migrate(_config: GatewayConfig) -> Result<(), BoxError> {
        Err("the gateway has no database".into())
    }

    async fn build(config: GatewayConfig) -> Result<Application, BoxError> {
        let tls = todoapp_runtime::tls::server_config(&config.tls)?;
        let verifier = Arc::new(TokenVerifier::load(&config.jwt)?);
        let user_channel = upstream::Balanced::start(
            "upstream.user",
            todoapp_api::service_names::USER,
            config.upstream.user.urls(),
            &config.upstream,
        )?;
        let todo_channel = upstream::Balanced::start(
            "upstream.todo",
            todoapp_api::service_names::TODO,
            config.upstream.todo.urls(),
            &config.upstream,
        )?;
        let user_channel =
            upstream::instrument("user", todoapp_api::service_names::USER, user_channel);
        let todo_channel =
            upstream::instrument("todo", todoapp_api::service_names::TODO, todo_channel);

        let calls = CallSettings {
            request_timeout: std::time::Duration::from_millis(config.upstream.request_timeout_ms),
            trusted_proxies: config.trusted_proxies.clone().into(),
        };
        let limit = config.server.max_message_bytes;
        let user = UserServer::new(UserProxy::new(user_channel, calls.clone()))
            .max_decoding_message_size(limit);
        let fair_share = Arc::new(fair_share::FairShare::new(config.fair_share.clone()));
        let todo = ToDoServer::new(TodoProxy::new(todo_channel, verifier, calls, fair_share))
            .max_decoding_message_size(limit);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<UserServer<UserProxy>>().await;
        health.set_serving::<ToDoServer<TodoProxy>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(todoapp_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(todoapp_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let routes = tonic::service::Routes::new(health_service)
            .add_service(user)
            .add_service(todo)
            .add_service(reflection)
            .add_service(reflection_alpha);
        let options = ServeOptions {
            name: Self::NAME,
            settings: config.server,
            tls,
            health,
            health_services: vec![
                todoapp_api::service_names::USER,
                todoapp_api::service_names::TODO,
            ],
            // The units set WatchdogSec= for every service: an unfed
            // watchdog would have systemd kill the gateway every 30 s.
            probe: Some(todoapp_runtime::readiness::runtime_responsive()),
            descriptor_sets: vec![todoapp_api::FILE_DESCRIPTOR_SET],
        };
        Application::bind(options, routes, async {}).await
    }
}
