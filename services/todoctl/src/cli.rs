//! Command line: global connection options and the subcommands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Shown at the end of `--help` and in the man page.
pub const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  any other error (e.g. username taken, server error)
  2  usage error or invalid input
  3  authentication: wrong password, not logged in, token expired or refused
  4  not found: no such entry
  5  unavailable: the gateway cannot be reached within --timeout, or none is configured

Where to connect, first found: --gateway/--ca, TODOCTL_GATEWAY/TODOCTL_CA, the
profile (remembered by `todoctl login --gateway ... --ca ...`), else the local
todoapp-stack's stack.json ($XDG_STATE_HOME/todoapp, default ~/.local/state/todoapp).
Tokens are kept per profile in $XDG_CONFIG_HOME/todoctl (default ~/.config/todoctl), mode 0600.";

#[derive(Debug, Parser)]
#[command(
    name = "todoctl",
    version,
    about = "Command-line client for todoapp: register, log in and manage your todo entries.",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The gateway's address.
    #[arg(long, global = true, env = "TODOCTL_GATEWAY", value_name = "HOST:PORT")]
    pub gateway: Option<String>,
    /// PEM file of the CA that signed the gateway's certificate.
    #[arg(long, global = true, env = "TODOCTL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Profile holding the token (and, when given at login, the gateway).
    #[arg(
        long,
        global = true,
        env = "TODOCTL_PROFILE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub profile: String,
    /// Give up after this long, retrying while the gateway is unavailable.
    #[arg(long, global = true, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct PasswordInput {
    /// Read the password from the first line of standard input instead of
    /// prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account, then log in to it.
    Register {
        username: String,
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Log in and keep the token in the profile.
    Login {
        /// Default: the profile's last user.
        username: Option<String>,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Forget the profile's token.
    Logout,
    /// Show the logged-in user, the gateway and when the token expires.
    Whoami,
    /// Add an entry; prints its id.
    Add {
        title: String,
        #[arg(long)]
        text: Option<String>,
    },
    /// List entries: id, done, title, created and updated.
    #[command(visible_alias = "list")]
    Ls {
        /// Every entry: follow the page tokens (default: the first page only).
        #[arg(long)]
        all: bool,
        /// Entries per page (default: the server's, 100; it caps at 1000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
        #[command(flatten)]
        format: Format,
    },
    /// Show one entry.
    Show {
        id: i32,
        #[command(flatten)]
        format: Format,
    },
    /// Change an entry's title and/or text.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["title", "text"])))]
    Edit {
        id: i32,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        text: Option<String>,
    },
    /// Mark entries done.
    Done {
        #[arg(required = true)]
        ids: Vec<i32>,
    },
    /// Mark entries not done.
    Undone {
        #[arg(required = true)]
        ids: Vec<i32>,
    },
    /// Delete entries.
    #[command(visible_alias = "delete")]
    Rm {
        #[arg(required = true)]
        ids: Vec<i32>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), for packaging.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Args)]
pub struct Format {
    /// One JSON document.
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,
    /// One JSON object per line (ls), for scripts.
    #[arg(long)]
    pub jsonl: bool,
}
