//! Preparing the state directory and starting the services.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use todoapp_devkit::galera::GaleraCluster;
use todoapp_devkit::mariadb::{MariaDb, ServerOptions};
use todoapp_devkit::pki::{self, files};
use todoapp_devkit::toml_table as table;

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
    /// `mariadbd` on PATH, data in the state dir), `galera` (a private
    /// 3-node Galera cluster on loopback ports, data in the state dir) or a
    /// `mysql://` server URL.
    #[arg(long, value_name = "DB", default_value = "sqlite")]
    database: String,
    /// Serve no Prometheus metrics (they are on by default), e.g. to
    /// measure what they cost.
    #[arg(long)]
    no_metrics: bool,
    /// Instances of each service, gateways included (each gateway on its own
    /// port). More than one needs a shared server database: `mariadb`,
    /// `galera` or a URL. With `galera`, instance i uses node i mod 3.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
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

    let replicas = usize::from(cli.replicas);
    if replicas > 1 && cli.database == "sqlite" {
        return Err(format!(
            "--replicas {replicas} needs a database every instance can share: \
             --database mariadb, galera or a mysql:// URL (a SQLite file is \
             written by one process)"
        )
        .into());
    }
    let mut servers = DatabaseServers::default();
    // Per instance: the user and the todo database URL.
    let databases: Vec<(String, String)> = match cli.database.as_str() {
        "sqlite" => vec![(
            format!("sqlite://{}", state.join("user.db").display()),
            format!("sqlite://{}", state.join("todo.db").display()),
        )],
        "mariadb" | "mysql" => {
            eprintln!(
                "[stack] starting a private MariaDB in {}",
                state.join("mariadb").display()
            );
            let base = state.join("mariadb");
            // Started on this (the main) thread, which lives as long as the
            // stack: the server stops when the stack dies, even by SIGKILL.
            let options = ServerOptions {
                die_with_parent: true,
                ..ServerOptions::default()
            };
            let server = tokio::task::block_in_place(|| MariaDb::start_with(&base, &options))?;
            let urls = (
                server.create_database("todoapp_user").await?,
                server.create_database("todoapp_todo").await?,
            );
            servers.mariadb = Some(server);
            vec![urls; replicas]
        }
        "galera" => {
            let base = state.join("galera");
            eprintln!(
                "[stack] starting a private 3-node Galera cluster in {}",
                base.display()
            );
            allow_database_account_through(&state)?;
            // Started on this (the main) thread, as the single server above:
            // the nodes stop when the stack dies, even by SIGKILL.
            let cluster =
                tokio::task::block_in_place(|| GaleraCluster::start_tied_to_this_thread(&base))?;
            let user = cluster.create_database("todoapp_user").await;
            let todo = cluster.create_database("todoapp_todo").await;
            servers.galera = Some(cluster);
            let (user, todo) = match (user, todo) {
                (Ok(user), Ok(todo)) => (user, todo),
                (Err(e), _) | (_, Err(e)) => {
                    shutdown(Vec::new(), servers).await;
                    return Err(e.into());
                }
            };
            (0..replicas)
                .map(|i| {
                    let node = i % user.len();
                    (user[node].clone(), todo[node].clone())
                })
                .collect()
        }
        url if url.starts_with("mysql://") || url.starts_with("mariadb://") => {
            let base = url.trim_end_matches('/');
            vec![
                (
                    format!("{base}/todoapp_user"),
                    format!("{base}/todoapp_todo"),
                );
                replicas
            ]
        }
        other => {
            return Err(format!(
                "--database: expected sqlite, mariadb, galera or mysql://URL, not `{other}`"
            )
            .into())
        }
    };

    // The stack holds the listening sockets, like systemd: a restarted
    // service takes over its socket and no connection is refused meanwhile.
    // The first gateway listens on --listen, the others on free ports of the
    // same address.
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut gateway_sockets = vec![bind(cli.listen)?];
    for _ in 1..replicas {
        gateway_sockets.push(bind(SocketAddr::new(cli.listen.ip(), 0))?);
    }
    let mut user_sockets = Vec::new();
    let mut todo_sockets = Vec::new();
    for _ in 0..replicas {
        user_sockets.push(bind(loopback)?);
        todo_sockets.push(bind(loopback)?);
    }
    let addrs = |sockets: &[TcpListener]| {
        sockets
            .iter()
            .map(TcpListener::local_addr)
            .collect::<Result<Vec<_>, _>>()
    };
    let gateway_addrs = addrs(&gateway_sockets)?;
    let user_addrs = addrs(&user_sockets)?;
    let todo_addrs = addrs(&todo_sockets)?;

    // Configs are TOML tables serialised by the toml crate, so any path
    // (quotes, backslashes) is written correctly.
    let pki_path = |name: &str| toml::Value::String(pki_dir.join(name).display().to_string());
    let backend_config = |cert: &str, key: &str, addr: SocketAddr, db: &str| {
        table([
            ("listen", addr.to_string().into()),
            (
                "tls",
                table([
                    ("cert", pki_path(cert)),
                    ("key", pki_path(key)),
                    ("client_ca", pki_path(files::INTERNAL_CA_CERT)),
                ])
                .into(),
            ),
            ("database", table([("url", db.into())]).into()),
        ])
    };
    let user_config = |addr: SocketAddr, db: &str| {
        let mut config = backend_config(files::USER_CERT, files::USER_KEY, addr, db);
        config.insert(
            "jwt".into(),
            table([("private_key", pki_path(files::JWT_PRIVATE_KEY))]).into(),
        );
        // Every client of a local stack is this machine: the per-address
        // limits (meant for the internet) would soon refuse the test suite
        // and the benchmark. The per-account login limits stay at their
        // defaults.
        config.insert(
            "throttle".into(),
            table([
                ("address_failures", 100_000.into()),
                ("registrations", 100_000.into()),
            ])
            .into(),
        );
        config
    };
    let gateway_config = |i: usize| {
        let (user, todo) = upstreams(i, &user_addrs, &todo_addrs);
        table([
            ("listen", gateway_addrs[i].to_string().into()),
            (
                "tls",
                table([
                    ("cert", pki_path(files::GATEWAY_CERT)),
                    ("key", pki_path(files::GATEWAY_KEY)),
                ])
                .into(),
            ),
            (
                "upstream",
                table([
                    ("user", user),
                    ("todo", todo),
                    ("ca", pki_path(files::INTERNAL_CA_CERT)),
                    ("client_cert", pki_path(files::GATEWAY_CLIENT_CERT)),
                    ("client_key", pki_path(files::GATEWAY_CLIENT_KEY)),
                ])
                .into(),
            ),
            (
                "jwt",
                table([(
                    "public_keys",
                    toml::Value::Array(vec![pki_path(files::JWT_PUBLIC_KEY)]),
                )])
                .into(),
            ),
        ])
    };

    // Metrics: every instance serves them on a loopback port of its own.
    let metrics: Vec<MetricsAddrs> = if cli.no_metrics {
        Vec::new()
    } else {
        (0..replicas)
            .map(|_| MetricsAddrs::reserve())
            .collect::<Result<_, _>>()?
    };
    let with_metrics =
        |mut config: toml::Table, i: usize, pick: fn(&MetricsAddrs) -> SocketAddr| {
            if let Some(addrs) = metrics.get(i) {
                config.insert(
                    "metrics".into(),
                    table([("listen", pick(addrs).to_string().into())]).into(),
                );
            }
            config
        };

    ensure_service_binaries().await?;
    let mut services = Vec::new();
    for (i, socket) in user_sockets.into_iter().enumerate() {
        let config = user_config(user_addrs[i], &databases[i % databases.len()].0);
        let config = with_metrics(config, i, |m| m.user);
        services.push((instance_name("user", i), "user", config, socket));
    }
    for (i, socket) in todo_sockets.into_iter().enumerate() {
        let config = backend_config(
            files::TODO_CERT,
            files::TODO_KEY,
            todo_addrs[i],
            &databases[i % databases.len()].1,
        );
        let config = with_metrics(config, i, |m| m.todo);
        services.push((instance_name("todo", i), "todo", config, socket));
    }
    for (i, socket) in gateway_sockets.into_iter().enumerate() {
        let config = with_metrics(gateway_config(i), i, |m| m.gateway);
        services.push((instance_name("gateway", i), "gateway", config, socket));
    }
    let mut running: Vec<Supervised> = Vec::new();
    for (name, kind, config, socket) in services {
        let config_path = run_dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, toml::to_string(&config)?)?;
        let spec = ServiceSpec {
            name,
            binary: todoapp_devkit::bins::locate(&format!("todoapp-{kind}"))?,
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
        shutdown(running, servers).await;
        return Err(e);
    }

    let gateway_addr = gateway_addrs[0];
    let info = serde_json::json!({
        "gateway": gateway_addr.to_string(),
        "gateways": gateway_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ca_cert": ca_cert.display().to_string(),
        // The first instance of each service; with --replicas the others
        // are in `metrics_instances`, in instance order.
        "metrics": metrics.first().map(MetricsAddrs::json),
        "metrics_instances": metrics.iter().map(MetricsAddrs::json).collect::<Vec<_>>(),
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
    for (i, addr) in gateway_addrs.iter().enumerate().skip(1) {
        println!("  gateway {}: {addr}", i + 1);
    }
    for (i, metrics) in metrics.iter().enumerate() {
        metrics.print(i);
    }
    println!("  state:   {}", state.display());
    println!("Stop with Ctrl-C.");

    todoapp_signal().await;
    eprintln!("[stack] stopping");
    let _ = std::fs::remove_file(&stack_json);
    shutdown(running, servers).await;
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

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "gateway": self.gateway.to_string(),
            "user": self.user.to_string(),
            "todo": self.todo.to_string(),
        })
    }

    fn print(&self, instance: usize) {
        let label = if instance == 0 {
            "metrics:".to_owned()
        } else {
            format!("metrics {}:", instance + 1)
        };
        println!(
            "  {label} http://{}/metrics (gateway), http://{}/metrics (user), http://{}/metrics (todo)",
            self.gateway, self.user, self.todo
        );
    }
}

/// The `upstream.user` and `upstream.todo` values of gateway `i`: with
/// several instances, every gateway balances over all of them (a TOML array
/// of endpoints). Nothing ties a call to one instance: quotas and login
/// throttling are kept in the databases.
fn upstreams(
    i: usize,
    user_addrs: &[SocketAddr],
    todo_addrs: &[SocketAddr],
) -> (toml::Value, toml::Value) {
    let url = |addr: &SocketAddr| toml::Value::String(format!("https://{addr}"));
    if user_addrs.len() > 1 {
        (
            toml::Value::Array(user_addrs.iter().map(url).collect()),
            toml::Value::Array(todo_addrs.iter().map(url).collect()),
        )
    } else {
        (url(&user_addrs[i]), url(&todo_addrs[i]))
    }
}

/// `user`, `user-2`, `user-3`…: the first instance keeps the plain name.
fn instance_name(kind: &str, i: usize) -> String {
    if i == 0 {
        kind.to_owned()
    } else {
        format!("{kind}-{}", i + 1)
    }
}

/// The private database servers the stack started.
#[derive(Default)]
struct DatabaseServers {
    mariadb: Option<MariaDb>,
    galera: Option<GaleraCluster>,
}

/// Started as root, the Galera nodes run as the `mysql` account, which must
/// be able to pass through the state directory (mode 0700) to its files:
/// allow traversal (not listing) by others. The PKI directory stays 0700.
fn allow_database_account_through(state: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("cannot make {} traversable: {e}", state.display()).into())
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

async fn wait_ready(running: &mut [Supervised]) -> Result<(), Error> {
    for service in running.iter_mut() {
        let name = service.name.clone();
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

async fn shutdown(running: Vec<Supervised>, servers: DatabaseServers) {
    // Gateways first, so no new calls reach the backends while they drain.
    for service in running.into_iter().rev() {
        service.stop(STOP_GRACE).await;
    }
    let _ = tokio::task::spawn_blocking(move || drop(servers)).await;
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
