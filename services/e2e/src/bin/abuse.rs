use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use todoapp_e2e::abuse::{self, Bounds, Options};
use todoapp_e2e::Target;

/// Tries a running gateway as an attacker would (loopback addresses only)
/// and checks that every client stays bounded.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The gateway, HOST:PORT (IPv4 loopback only).
    #[arg(long, required_unless_present_any = ["state_dir", "list"])]
    gateway: Option<String>,
    /// CA certificate (PEM) that signed the gateway's certificate.
    #[arg(long, required_unless_present_any = ["state_dir", "list"])]
    ca: Option<PathBuf>,
    /// Name to verify in the gateway's certificate, when not HOST.
    #[arg(long)]
    server_name: Option<String>,
    /// A todoapp-stack state dir: read the gateway and CA from stack.json,
    /// and check the gateway's and todo service's memory and descriptors.
    #[arg(long, conflicts_with_all = ["gateway", "ca"])]
    state_dir: Option<PathBuf>,
    /// Only scenarios whose name contains this text.
    #[arg(long, alias = "only", value_name = "SUBSTR")]
    filter: Option<String>,
    /// Print the names of the scenarios (those --filter selects), one per
    /// line, and exit without connecting anywhere.
    #[arg(long)]
    list: bool,
    /// The gateway's `tls_handshake_timeout_secs`.
    #[arg(long, default_value_t = 10)]
    handshake_timeout_secs: u64,
    /// The gateway's `limits.idle_timeout_secs` (the idle scenario waits
    /// for it, so it must be at most 30).
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// The gateway's `limits.max_connections_per_address`.
    #[arg(long, default_value_t = 64)]
    max_connections_per_address: usize,
    /// The gateway's `limits.max_concurrent_streams`.
    #[arg(long, default_value_t = 100)]
    max_concurrent_streams: usize,
    /// The gateway's `limits.max_calls_per_connection`.
    #[arg(long, default_value_t = 100)]
    max_calls_per_connection: usize,
    /// The gateway's `limits.max_calls`.
    #[arg(long, default_value_t = 512)]
    max_calls: usize,
}

/// The suite holds a thousand sockets at once; the soft descriptor limit is
/// often 1024.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!("todoapp-abuse: warning: cannot raise the descriptor limit");
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        todoapp_e2e::harness::list(todoapp_e2e::abuse::scenario_names(), cli.filter.as_deref());
        return ExitCode::SUCCESS;
    }
    raise_fd_limit();
    let target = match (&cli.state_dir, cli.gateway, cli.ca) {
        (Some(dir), _, _) => match Target::from_stack_json(&dir.join("stack.json")) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("todoapp-abuse: error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(gateway), Some(ca)) => Target {
            gateway,
            ca,
            server_name: None,
        },
        _ => {
            eprintln!("todoapp-abuse: error: give --state-dir, or --gateway and --ca");
            return ExitCode::from(2);
        }
    };
    let target = Target {
        server_name: cli.server_name.or(target.server_name),
        ..target
    };
    let options = Options {
        target,
        state_dir: cli.state_dir,
        bounds: Bounds {
            handshake_timeout: Duration::from_secs(cli.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(cli.idle_timeout_secs),
            connections_per_address: cli.max_connections_per_address,
            concurrent_streams: cli.max_concurrent_streams,
            calls_per_connection: cli.max_calls_per_connection,
            calls: cli.max_calls,
        },
        only: cli.filter,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("todoapp-abuse: error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(abuse::run(options)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("todoapp-abuse: error: {e}");
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}
