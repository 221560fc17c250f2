//! The small runtime every todoapp service is built on.
//!
//! A service describes itself with [`service::Service`]; [`service::main`]
//! then owns the command line, configuration, telemetry, the Tokio runtime
//! and exit codes, builds the service into a [`service::Application`] and
//! runs it until SIGTERM; [`server::bind`] and
//! [`server::BoundServer::run_until`] own listening (bound or
//! socket-activated), TLS, readiness, health and graceful shutdown.

pub mod config;
pub mod connection;
pub mod grpc;
pub mod limits;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod readiness;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod upstream;

pub use config::{ConfigError, Secret};
