//! The shared `main` of every service binary: command line, configuration,
//! telemetry, runtime and exit codes. Each binary's `main` is one call.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{ConfigError, ServerSettings};
use crate::server::BoxError;

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
    fn validate(config: &Self::Config, files: FileChecks) -> Result<(), ConfigError>;
    fn migrate(config: Self::Config) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn serve(config: Self::Config) -> impl Future<Output = Result<(), BoxError>> + Send;
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

    let config: S::Config = match crate::config::load(S::NAME, cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
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
    crate::telemetry::init(&settings.log_level, settings.log_format);
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
            Mode::Serve => S::serve(config).await,
            Mode::Migrate if S::HAS_DATABASE => S::migrate(config).await,
            Mode::Migrate => Err(no_database.into()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "fatal");
            fail(&e)
        }
    }
}
