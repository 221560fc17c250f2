//! A private MariaDB server started from `mariadbd` on PATH: its own data
//! directory and socket, no TCP, stopped when dropped (or, for the shared
//! test server, when the process exits).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::DevError;

const INSTALL_HINT: &str =
    "install MariaDB (Debian/Ubuntu: `apt-get install mariadb-server`; Fedora: `dnf install mariadb-server`)";

pub struct MariaDb {
    child: Child,
    socket: PathBuf,
    base: PathBuf,
}

/// How to run a server beyond the defaults: extra `mariadbd` options and,
/// when started as root, the account it switches to.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Options appended to the command line (e.g. the wsrep settings).
    pub extra_args: Vec<String>,
    /// Run as this account when started as root (its files are given to
    /// it); default `root`.
    pub os_user: Option<String>,
    /// Stop the server (SIGTERM) when the thread that starts it ends (see
    /// [`crate::process::die_with_parent`]), also when it runs as another
    /// account: it is switched to that account before it starts.
    pub die_with_parent: bool,
}

impl ServerOptions {
    pub(crate) fn os_user_if_root(&self) -> Option<&str> {
        let as_root = unsafe { libc::geteuid() } == 0;
        as_root.then(|| self.os_user.as_deref().unwrap_or("root"))
    }
}

impl MariaDb {
    /// Starts a server whose files all live under `base` (created if
    /// needed). An existing data directory is reused, so data persists.
    pub fn start(base: &Path) -> Result<Self, DevError> {
        Self::start_with(base, &ServerOptions::default())
    }

    /// [`MariaDb::start`] with extra options.
    pub fn start_with(base: &Path, options: &ServerOptions) -> Result<Self, DevError> {
        let mariadbd = find_mariadbd()?;
        let datadir = base.join("data");
        let socket = base.join("mysqld.sock");
        // A temporary directory of its own: servers installed at the same
        // time must not share /tmp's `#sql-temptable-*` files.
        std::fs::create_dir_all(base.join("tmp"))
            .map_err(DevError::io(format!("creating {}", base.display())))?;
        let os_user = options.os_user_if_root();
        if let Some(user) = os_user.filter(|u| *u != "root") {
            give_to(base, user)?;
        }

        if !datadir.join("mysql").is_dir() {
            let install = crate::bins::on_path("mariadb-install-db")
                .or_else(|| crate::bins::on_path("mysql_install_db"))
                .ok_or_else(|| {
                    DevError::Missing(format!(
                        "`mariadb-install-db` is not on PATH: {INSTALL_HINT}"
                    ))
                })?;
            let mut cmd = Command::new(install);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .arg(format!("--tmpdir={}", base.join("tmp").display()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some(user) = os_user {
                cmd.arg(format!("--user={user}"));
            }
            let out = cmd
                .output()
                .map_err(DevError::io("running mariadb-install-db"))?;
            if !out.status.success() {
                let _ = std::fs::remove_dir_all(&datadir);
                return Err(DevError::MariaDb(format!(
                    "mariadb-install-db failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }

        let _ = std::fs::remove_file(&socket);
        let log = base.join("mariadbd.log");
        let mut cmd = server_command(&mariadbd, base, options)?;
        let child = cmd.spawn().map_err(DevError::io("starting mariadbd"))?;
        let mut server = Self {
            child,
            socket,
            base: base.to_path_buf(),
        };
        server.wait_until_accepting(Duration::from_secs(60), &log)?;
        Ok(server)
    }

    fn wait_until_accepting(&mut self, limit: Duration, log: &Path) -> Result<(), DevError> {
        let deadline = Instant::now() + limit;
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The log's end in the message: a test harness may remove
                // the directory before anyone reads it.
                return Err(DevError::MariaDb(format!(
                    "mariadbd exited ({status}) during start; {}:\n{}",
                    log.display(),
                    log_tail(log, 15)
                )));
            }
            if Instant::now() > deadline {
                return Err(DevError::MariaDb(format!(
                    "mariadbd did not accept connections within {limit:?}; {}:\n{}",
                    log.display(),
                    log_tail(log, 15)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// URL of database `db` for the passwordless root account over the socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "mysql://root@localhost/{db}?socket={}",
            self.socket.display()
        )
    }

    /// Creates database `db` if needed and returns its URL.
    pub async fn create_database(&self, db: &str) -> Result<String, DevError> {
        create_database_at(&self.url(""), db).await?;
        Ok(self.url(db))
    }

    /// Stops the server (SIGTERM, then SIGKILL after 30 s).
    pub fn stop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server outright (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn base(&self) -> &Path {
        &self.base
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `mariadbd` command line of a server under `base`; later options
/// override earlier ones, so callers may append more.
pub(crate) fn server_command(
    mariadbd: &Path,
    base: &Path,
    options: &ServerOptions,
) -> Result<Command, DevError> {
    let mut cmd = Command::new(mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", base.join("data").display()))
        .arg(format!("--socket={}", base.join("mysqld.sock").display()))
        .arg(format!("--tmpdir={}", base.join("tmp").display()))
        .arg(format!(
            "--pid-file={}",
            base.join("mariadbd.pid").display()
        ))
        .arg(format!(
            "--log-error={}",
            base.join("mariadbd.log").display()
        ))
        .arg("--skip-networking")
        .arg("--skip-log-bin")
        .arg("--innodb-use-native-aio=0")
        .arg("--innodb-buffer-pool-size=32M")
        .arg("--character-set-server=utf8mb4")
        .arg("--collation-server=utf8mb4_bin")
        .args(&options.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match options.os_user_if_root() {
        // mariadbd refuses to run as root unless told so.
        Some("root") => {
            cmd.arg("--user=root");
        }
        // Switched before exec, not by `--user`: a process that changes its
        // user id loses its parent-death signal.
        Some(user) => crate::process::run_as(&mut cmd, user)
            .map_err(DevError::io(format!("running mariadbd as `{user}`")))?,
        None => {}
    }
    if options.die_with_parent {
        crate::process::die_with_parent(&mut cmd, libc::SIGTERM);
    }
    Ok(cmd)
}

pub(crate) fn find_mariadbd() -> Result<PathBuf, DevError> {
    crate::bins::on_path("mariadbd")
        .or_else(|| crate::bins::on_path("mysqld"))
        .ok_or_else(|| DevError::Missing(format!("`mariadbd` is not on PATH: {INSTALL_HINT}")))
}

/// Hands `dir` and everything in it to `user`, which must also be able to
/// reach it: a server started as root switches to that account.
pub(crate) fn give_to(dir: &Path, user: &str) -> Result<(), DevError> {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:"))
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(DevError::io("running chown"))?;
    if !out.status.success() {
        return Err(DevError::MariaDb(format!(
            "cannot give {} to the `{user}` account: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map_err(DevError::io(format!("reading {}", ancestor.display())))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(DevError::MariaDb(format!(
                "the `{user}` account cannot reach {} ({} is mode {:o}; it needs o+x)",
                dir.display(),
                ancestor.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

pub(crate) async fn create_database_at(server_url: &str, db: &str) -> Result<(), DevError> {
    if !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(DevError::MariaDb(format!("bad database name {db:?}")));
    }
    let mut conn = sqlx::MySqlConnection::connect(server_url)
        .await
        .map_err(|e| DevError::MariaDb(format!("connecting: {e}")))?;
    sqlx::query(&format!(
        "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .execute(&mut conn)
    .await
    .map_err(|e| DevError::MariaDb(format!("creating database {db}: {e}")))?;
    let _ = conn.close().await;
    Ok(())
}

/// A throwaway MariaDB for tests: one server per test process, a fresh
/// database per call. With `TODOAPP_TEST_MYSQL_URL` set (a server URL such
/// as `mysql://root:pw@127.0.0.1:3306/`), that server is used instead.
/// Fails, never skips, when neither is possible.
pub async fn test_database(prefix: &str) -> Result<String, DevError> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let db = format!("{prefix}_{}_{n}", std::process::id());
    if let Ok(server) = std::env::var("TODOAPP_TEST_MYSQL_URL") {
        let server = server.trim_end_matches('/').to_owned();
        create_database_at(&format!("{server}/"), &db).await?;
        return Ok(format!("{server}/{db}"));
    }
    let server = shared_test_server()?;
    server.create_database(&db).await
}

struct SharedServer {
    socket: PathBuf,
}

impl SharedServer {
    async fn create_database(&self, db: &str) -> Result<String, DevError> {
        let url = |d: &str| {
            format!(
                "mysql://root@localhost/{d}?socket={}",
                self.socket.display()
            )
        };
        create_database_at(&url(""), db).await?;
        Ok(url(db))
    }
}

fn shared_test_server() -> Result<&'static SharedServer, DevError> {
    static SERVER: OnceLock<Result<SharedServer, String>> = OnceLock::new();
    let result = SERVER.get_or_init(|| {
        let base =
            std::env::temp_dir().join(format!("todoapp-test-mariadb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        match MariaDb::start(&base) {
            Ok(server) => {
                let shared = SharedServer {
                    socket: server.socket().to_path_buf(),
                };
                *SHARED_CLEANUP.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
                // SAFETY: registering a plain `extern "C" fn` with atexit.
                unsafe { libc::atexit(stop_shared_server) };
                Ok(shared)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&base);
                Err(e.to_string())
            }
        }
    });
    result
        .as_ref()
        .map_err(|e| DevError::MariaDb(format!("cannot start a throwaway MariaDB for tests: {e}")))
}

static SHARED_CLEANUP: std::sync::Mutex<Option<MariaDb>> = std::sync::Mutex::new(None);

extern "C" fn stop_shared_server() {
    if let Ok(mut guard) = SHARED_CLEANUP.lock() {
        if let Some(mut server) = guard.take() {
            server.stop();
            let _ = std::fs::remove_dir_all(server.base());
        }
    }
}

/// The last `lines` lines of a log file, or why they cannot be read.
fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}
