//! `todoapp-stack`: the whole system on one machine, in one command.

use std::process::ExitCode;

use clap::Parser;

mod launcher;
mod supervisor;

fn main() -> ExitCode {
    let cli = launcher::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("todoapp-stack: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(launcher::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("todoapp-stack: error: {e}");
            ExitCode::FAILURE
        }
    }
}
