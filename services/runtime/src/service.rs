//! The shared `main` of every service binary: command line, configuration,
//! telemetry, runtime and exit codes. Each binary's `main` is one call.
//!
//! A service is built into an [`Application`] (listeners taken, ready) and
//! then run until a shutdown future resolves: the binary's is SIGTERM or
//! SIGINT, an in-process test's is its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::service::Routes;

use crate::config::{ConfigError, ServerSettings};
use crate::server::{BoundServer, BoxError, ServeOptions};

/// Whether validation may open the key, certificate and credential files.
/// Build-time checks (e.g. in a Nix derivation) have the settings but not the
/// secrets, which exist only at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChecks {
    Read,
    Skip,
}

pub trait Service {
    /// Short name: `user`, `todo`, `gateway`. Environment variables are
    /// `TODOAPP_<NAME>_...`; the binary is `todoapp-<name>`.
    const NAME: &'static str;
    /// Whether the service has a database (and so a `migrate` mode).
    const HAS_DATABASE: bool;
    type Config: DeserializeOwned + Serialize + Default + Send + 'static;

    fn server_settings(config: &Self::Config) -> &ServerSettings;
    /// Fills in, after loading, the settings whose default depends on
    /// others (the pool size on the database engine), so that
    /// `--print-config` shows what is in effect.
    fn fill_defaults(_config: &mut Self::Config) {}
    fn validate(config: &Self::Config, files: FileChecks) -> Result<(), ConfigError>;
    fn migrate(config: Self::Config) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Opens what the service needs (keys, databases, upstreams) and takes
    /// its listeners; the result serves once run.
    fn build(config: Self::Config) -> impl Future<Output = Result<Application, BoxError>> + Send;
}

/// A built service: its listeners are taken and it has reported ready.
/// [`Application::run_until`] serves calls until shutdown, drains them,
/// then releases what the service holds (database pools and their tasks).
pub struct Application {
    server: BoundServer,
    release: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Application {
    /// Takes the listeners and reports ready (see [`crate::server::bind`]).
    /// `release` runs once the server has stopped, or at once if it cannot
    /// bind: e.g. closing the service's database pool.
    pub async fn bind(
        options: ServeOptions,
        routes: Routes,
        release: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, BoxError> {
        match crate::server::bind(options, routes).await {
            Ok(server) => Ok(Self {
                server,
                release: Box::pin(release),
            }),
            Err(e) => {
                release.await;
                Err(e)
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls for at
    /// most `shutdown_timeout_secs` and releases the service's resources.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
        let served = self.server.run_until(shutdown).await;
        self.release.await;
        served
    }
}

#[derive(Debug, Parser)]
#[command(version, about = "A todoapp service. Serves gRPC until SIGTERM.")]
struct Cli {
    /// TOML configuration file (layered over defaults, under environment variables).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Load and validate the configuration and its key and certificate files,
    /// print the first error, and exit; nothing is started.
    #[arg(long)]
    check_config: bool,
    /// With --check-config: check the settings only, without opening any
    /// key, certificate or credential file.
    #[arg(long, requires = "check_config")]
    no_files: bool,
    /// Print the effective configuration (defaults, file and environment
    /// merged) as TOML with secrets redacted, and exit; nothing is started.
    #[arg(long, conflicts_with = "check_config")]
    print_config: bool,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve (the default).
    Serve,
    /// Run the database migrations and exit.
    Migrate,
}

/// Runs service `S` with the process's arguments; returns its exit code.
pub fn main<S: Service>() -> ExitCode {
    let cli = Cli::parse();
    let program = format!("todoapp-{}", S::NAME);
    let fail = |message: &dyn std::fmt::Display| {
        eprintln!("{program}: error: {message}");
        ExitCode::FAILURE
    };

    let mut config: S::Config = match crate::config::load(S::NAME, cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    S::fill_defaults(&mut config);
    let files = if cli.no_files || cli.print_config {
        FileChecks::Skip
    } else {
        FileChecks::Read
    };
    let validated = S::server_settings(&config)
        .validate()
        .and_then(|()| S::validate(&config, files));
    if let Err(e) = validated {
        return fail(&e);
    }
    if cli.check_config {
        println!("{program}: configuration OK");
        return ExitCode::SUCCESS;
    }
    if cli.print_config {
        return match crate::config::to_redacted_toml(&config) {
            Ok(toml) => {
                print!("{toml}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }

    let settings = S::server_settings(&config);
    let log_guard = crate::telemetry::init(&settings.log_level, settings.log_format);
    crate::metrics::register_build_info(S::NAME, env!("CARGO_PKG_VERSION"));
    crate::tls::install_crypto_provider();
    crate::memory::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let no_database = format!("{program} has no database to migrate");
    let outcome = runtime.block_on(async move {
        match cli.mode.unwrap_or(Mode::Serve) {
            Mode::Serve => {
                S::build(config)
                    .await?
                    .run_until(crate::shutdown::signal_received())
                    .await
            }
            Mode::Migrate if S::HAS_DATABASE => S::migrate(config).await,
            Mode::Migrate => Err(no_database.into()),
        }
    });
    // The runtime's tasks log no more once it is gone; the guard then
    // writes out every line before the error below.
    drop(runtime);
    let fatal = outcome.err().map(|e| {
        tracing::error!(error = %e, "fatal");
        e
    });
    drop(log_guard);
    match fatal {
        None => ExitCode::SUCCESS,
        Some(e) => fail(&e),
    }
}
