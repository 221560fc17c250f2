use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use todoapp_e2e::Target;

/// Runs the todoapp end-to-end scenarios against a running deployment.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The gateway, HOST:PORT.
    #[arg(long, required_unless_present_any = ["state_dir", "list"])]
    gateway: Option<String>,
    /// CA certificate (PEM) that signed the gateway's certificate.
    #[arg(long, required_unless_present_any = ["state_dir", "list"])]
    ca: Option<PathBuf>,
    /// Name to verify in the gateway's certificate, when not HOST.
    #[arg(long)]
    server_name: Option<String>,
    /// Read the gateway and CA from a todoapp-stack state dir's stack.json.
    #[arg(long, conflicts_with_all = ["gateway", "ca"])]
    state_dir: Option<PathBuf>,
    /// Only scenarios whose name contains this text.
    #[arg(long, alias = "only", value_name = "SUBSTR")]
    filter: Option<String>,
    /// Print the names of the scenarios (those --filter selects), one per
    /// line, and exit without connecting anywhere.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        todoapp_e2e::harness::list(
            todoapp_e2e::scenarios::all().into_iter().map(|s| s.name),
            cli.filter.as_deref(),
        );
        return ExitCode::SUCCESS;
    }
    let target = match (&cli.state_dir, cli.gateway, cli.ca) {
        (Some(dir), _, _) => match Target::from_stack_json(&dir.join("stack.json")) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("todoapp-e2e: error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(gateway), Some(ca)) => Target {
            gateway,
            ca,
            server_name: None,
        },
        _ => unreachable!("clap enforces the arguments"),
    };
    let target = Target {
        server_name: cli.server_name.or(target.server_name),
        ..target
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("todoapp-e2e: error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(todoapp_e2e::run(&target, cli.filter.as_deref())) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("todoapp-e2e: error: {e}");
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}
