//! Preparing the state directory and starting the services.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use todoapp_devkit::mariadb::MariaDb;
use todoapp_devkit::pki::{self, files};

use crate::supervisor::{self, ServiceSpec, Supervised};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Run the whole todoapp system on this machine: a development PKI, databases and the gateway, user and todo services as supervised processes."
)]
pub struct Cli {
    /// Where certificates, keys, databases and stack.json live.
    /// Default: $XDG_STATE_HOME/todoapp, else ~/.local/state/todoapp.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The gateway's public address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// `sqlite` (embedded, default), `mariadb` (a private server from
    /// `mariadbd` on PATH, data in the state dir) or a `mysql://` server URL.
    #[arg(long, value_name = "DB", default_value = "sqlite")]
    database: String,
    /// Serve no Prometheus metrics (they are on by default), e.g. to
    /// measure what they cost.
    #[arg(long)]
    no_metrics: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Only create a development/test PKI and JWT key pair in DIR, then exit.
    GenCerts {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Extra host name or IP for the server certificates (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
}

const STOP_GRACE: Duration = Duration::from_secs(15);

fn default_state_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("todoapp"));
    }
    let home = std::env::var_os("HOME")
        .ok_or("neither XDG_STATE_HOME nor HOME is set; pass --state-dir")?;
    Ok(PathBuf::from(home).join(".local/state/todoapp"))
}

fn make_dir(path: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()).into())
}

pub async fn run(cli: Cli) -> Result<(), Error> {
    if let Some(Command::GenCerts { out, names }) = cli.command {
        pki::ensure(&out, &names)?;
        println!("test PKI in {}", out.display());
        return Ok(());
    }

    // todoctl finds a stack in the default state dir by itself.
    let found_by_todoctl = cli.state_dir.is_none();
    let state = match cli.state_dir {
        Some(dir) => dir,
        None => default_state_dir()?,
    };
    make_dir(&state)?;
    let state = std::fs::canonicalize(&state)?;
    let _lock = lock_state_dir(&state)?;
    let pki_dir = state.join("pki");
    let run_dir = state.join("run");
    make_dir(&pki_dir)?;
    make_dir(&run_dir)?;
    if pki::ensure(&pki_dir, &[])? {
        eprintln!(
            "[stack] created a development PKI and JWT key pair in {}",
            pki_dir.display()
        );
    }

    let mut mariadb = None;
    let (user_db, todo_db) = match cli.database.as_str() {
        "sqlite" => (
            format!("sqlite://{}", state.join("user.db").display()),
            format!("sqlite://{}", state.join("todo.db").display()),
        ),
        "mariadb" | "mysql" => {
            eprintln!(
                "[stack] starting a private MariaDB in {}",
                state.join("mariadb").display()
            );
            let base = state.join("mariadb");
            let server = tokio::task::spawn_blocking(move || MariaDb::start(&base)).await??;
            let urls = (
                server.create_database("todoapp_user").await?,
                server.create_database("todoapp_todo").await?,
            );
            mariadb = Some(server);
            urls
        }
        url if url.starts_with("mysql://") || url.starts_with("mariadb://") => {
            let base = url.trim_end_matches('/');
            (
                format!("{base}/todoapp_user"),
                format!("{base}/todoapp_todo"),
            )
        }
        other => {
            return Err(format!(
                "--database: expected sqlite, mariadb or mysql://URL, not `{other}`"
            )
            .into())
        }
    };

    // The stack holds the listening sockets, like systemd: a restarted
    // service takes over its socket and no connection is refused meanwhile.
    let gateway_socket = bind(cli.listen)?;
    let gateway_addr = gateway_socket.local_addr()?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let user_socket = bind(loopback)?;
    let todo_socket = bind(loopback)?;
    let user_addr = user_socket.local_addr()?;
    let todo_addr = todo_socket.local_addr()?;

    let pki_path = |name: &str| pki_dir.join(name).display().to_string();
    let backend_config = |cert: &str, key: &str, addr: SocketAddr, db: &str| {
        toml_config(
            &[("listen", addr.to_string())],
            &[
                (
                    "tls",
                    vec![
                        ("cert", pki_path(cert)),
                        ("key", pki_path(key)),
                        ("client_ca", pki_path(files::INTERNAL_CA_CERT)),
                    ],
                ),
                ("database", vec![("url", db.to_owned())]),
            ],
        )
    };
    let mut user_config = backend_config(files::USER_CERT, files::USER_KEY, user_addr, &user_db);
    user_config.push_str(&toml_config(
        &[],
        &[(
            "jwt",
            vec![("private_key", pki_path(files::JWT_PRIVATE_KEY))],
        )],
    ));
    // Every client of a local stack is this machine: the per-address limits
    // (meant for the internet) would soon refuse the test suite and the
    // benchmark. The per-account login limits stay at their defaults.
    user_config.push_str("\n[throttle]\naddress_failures = 100000\nregistrations = 100000\n");
    let todo_config = backend_config(files::TODO_CERT, files::TODO_KEY, todo_addr, &todo_db);
    let mut gateway_config = toml_config(
        &[("listen", gateway_addr.to_string())],
        &[
            (
                "tls",
                vec![
                    ("cert", pki_path(files::GATEWAY_CERT)),
                    ("key", pki_path(files::GATEWAY_KEY)),
                ],
            ),
            (
                "upstream",
                vec![
                    ("user", format!("https://{user_addr}")),
                    ("todo", format!("https://{todo_addr}")),
                    ("ca", pki_path(files::INTERNAL_CA_CERT)),
                    ("client_cert", pki_path(files::GATEWAY_CLIENT_CERT)),
                    ("client_key", pki_path(files::GATEWAY_CLIENT_KEY)),
                ],
            ),
        ],
    );
    gateway_config.push_str(&format!(
        "\n[jwt]\npublic_keys = [{}]\n",
        toml::Value::String(pki_path(files::JWT_PUBLIC_KEY))
    ));

    // Metrics: each service serves them on a loopback port of its own.
    let metrics = (!cli.no_metrics).then(MetricsAddrs::reserve).transpose()?;
    let mut todo_config = todo_config;
    if let Some(metrics) = &metrics {
        user_config.push_str(&metrics.config(metrics.user));
        todo_config.push_str(&metrics.config(metrics.todo));
        gateway_config.push_str(&metrics.config(metrics.gateway));
    }

    ensure_service_binaries().await?;
    let services = [
        ("user", user_config, user_socket),
        ("todo", todo_config, todo_socket),
        ("gateway", gateway_config, gateway_socket),
    ];
    let mut running: Vec<Supervised> = Vec::new();
    for (name, config, socket) in services {
        let config_path = run_dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config)?;
        let spec = ServiceSpec {
            name,
            binary: todoapp_devkit::bins::locate(&format!("todoapp-{name}"))?,
            config: config_path,
            listener: OwnedFd::from(socket),
            run_dir: run_dir.clone(),
        };
        running.push(supervisor::spawn(spec, STOP_GRACE));
    }

    let stack_json = state.join("stack.json");
    let ca_cert = pki_dir.join(files::CA_CERT);
    let outcome = tokio::select! {
        ready = wait_ready(&mut running) => ready,
        _ = todoapp_signal() => Err("interrupted before the stack was ready".into()),
    };
    if let Err(e) = outcome {
        shutdown(running, mariadb).await;
        return Err(e);
    }

    let info = serde_json::json!({
        "gateway": gateway_addr.to_string(),
        "ca_cert": ca_cert.display().to_string(),
        "metrics": metrics.as_ref().map(MetricsAddrs::json),
    });
    let tmp = state.join("stack.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
    std::fs::rename(&tmp, &stack_json)?;
    println!("todoapp is running.");
    println!(
        "  gateway: {gateway_addr} (TLS; CA certificate: {})",
        ca_cert.display()
    );
    if found_by_todoctl {
        println!("  try:     todoctl register NAME --email ADDRESS");
    } else {
        println!(
            "  try:     todoctl --gateway {gateway_addr} --ca {} register NAME --email ADDRESS",
            ca_cert.display()
        );
    }
    println!(
        "  or:      grpcurl -cacert {} {gateway_addr} list",
        ca_cert.display()
    );
    if let Some(metrics) = &metrics {
        metrics.print();
    }
    println!("  state:   {}", state.display());
    println!("Stop with Ctrl-C.");

    todoapp_signal().await;
    eprintln!("[stack] stopping");
    let _ = std::fs::remove_file(&stack_json);
    shutdown(running, mariadb).await;
    Ok(())
}

/// Where each service serves its Prometheus metrics.
struct MetricsAddrs {
    gateway: SocketAddr,
    user: SocketAddr,
    todo: SocketAddr,
}

impl MetricsAddrs {
    /// Free loopback ports, found by binding port 0 (the services bind
    /// them again at once; nothing else on a developer machine races
    /// for ephemeral ports in that instant).
    fn reserve() -> Result<Self, Error> {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let held = [bind(loopback)?, bind(loopback)?, bind(loopback)?];
        Ok(Self {
            gateway: held[0].local_addr()?,
            user: held[1].local_addr()?,
            todo: held[2].local_addr()?,
        })
    }

    fn config(&self, addr: SocketAddr) -> String {
        format!("\n[metrics]\nlisten = \"{addr}\"\n")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "gateway": self.gateway.to_string(),
            "user": self.user.to_string(),
            "todo": self.todo.to_string(),
        })
    }

    fn print(&self) {
        println!(
            "  metrics: http://{}/metrics (gateway), http://{}/metrics (user), http://{}/metrics (todo)",
            self.gateway, self.user, self.todo
        );
    }
}

const SERVICE_BINARIES: [&str; 3] = ["todoapp-gateway", "todoapp-user", "todoapp-todo"];

/// `cargo run --bin todoapp-stack` builds only this package, not the
/// service binaries it starts. Started that way (cargo sets
/// `CARGO_MANIFEST_DIR` to this package), build them with the same profile
/// every time, so an edited service is never silently run from a stale
/// binary; cargo makes this a quick no-op when nothing changed. Started any
/// other way (installed, or by a test, which builds the binaries itself),
/// use what is there.
async fn ensure_service_binaries() -> Result<(), Error> {
    let started_by_cargo_run = std::env::var_os("CARGO_MANIFEST_DIR")
        .is_some_and(|dir| Path::new(&dir) == Path::new(env!("CARGO_MANIFEST_DIR")));
    if !started_by_cargo_run {
        return Ok(());
    }
    eprintln!("[stack] building the service binaries (cargo build)");
    tokio::task::spawn_blocking(|| {
        todoapp_devkit::bins::cargo_build(
            todoapp_devkit::bins::Build::Packages(&SERVICE_BINARIES),
            todoapp_devkit::bins::Output::Inherit,
        )
    })
    .await??;
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}").into())
}

/// A minimal TOML document: top-level keys, then tables of string keys.
fn toml_config(top: &[(&str, String)], tables: &[(&str, Vec<(&str, String)>)]) -> String {
    let mut out = String::new();
    for (key, value) in top {
        out.push_str(&format!("{key} = {}\n", toml::Value::String(value.clone())));
    }
    for (table, entries) in tables {
        out.push_str(&format!("\n[{table}]\n"));
        for (key, value) in entries {
            out.push_str(&format!("{key} = {}\n", toml::Value::String(value.clone())));
        }
    }
    out
}

async fn wait_ready(running: &mut [Supervised]) -> Result<(), Error> {
    for service in running.iter_mut() {
        let name = service.name;
        let waited = tokio::time::timeout(
            Duration::from_secs(120),
            service.ready.wait_for(|ready| *ready),
        )
        .await;
        match waited {
            Ok(Ok(_)) => eprintln!("[stack] {name} is ready"),
            Ok(Err(_)) => return Err(format!("{name} could not be started").into()),
            Err(_) => return Err(format!("{name} did not become ready within 120 s").into()),
        }
    }
    Ok(())
}

async fn shutdown(running: Vec<Supervised>, mariadb: Option<MariaDb>) {
    // Gateway first, so no new calls reach the backends while they drain.
    for service in running.into_iter().rev() {
        service.stop(STOP_GRACE).await;
    }
    if let Some(server) = mariadb {
        let _ = tokio::task::spawn_blocking(move || drop(server)).await;
    }
}

async fn todoapp_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One stack per state directory: a second one would fight over the
/// databases and stack.json.
fn lock_state_dir(state: &Path) -> Result<std::fs::File, Error> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(state.join("stack.lock"))?;
    // SAFETY: flock(2) on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!("another todoapp-stack is using {}", state.display()).into());
    }
    Ok(file)
}
