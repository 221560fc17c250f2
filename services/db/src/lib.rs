//! Connection pools for the two supported stores and the one error type
//! the store layers of every service report.
//!
//! MariaDB is the production store, SQLite the embedded default. Both are
//! opened with the same safety settings wherever the engines allow:
//! strict SQL mode and utf8mb4 on MariaDB, WAL and a busy timeout on SQLite,
//! and a short acquire timeout so a vanished database surfaces as
//! UNAVAILABLE within seconds instead of hanging calls.
//!
//! On SQLite the hot reads and one-statement writes skip sqlx, which runs
//! every connection on a thread of its own: they run on the calling thread
//! (`sqlite_reads`, `sqlite_writer`), and checkpoints run on a thread of
//! their own instead of inside commits (`sqlite_checkpoint`). On MariaDB
//! they run on connections lent outside sqlx's pool, which pings every
//! connection it takes back (`mariadb_statements`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Executor;
use todoapp_runtime::config::read_file;
use todoapp_runtime::service::FileChecks;
use todoapp_runtime::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `mysql://USER@HOST/DB[?socket=/run/mysqld/mysqld.sock]`.
    pub url: Secret<String>,
    /// File holding the MariaDB password, when the URL carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Connections in the pool; unset, the engine's default
    /// ([`DatabaseSettings::pool_size`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    pub acquire_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn sqlite(path: &str) -> Self {
        Self {
            url: Secret::new(format!("sqlite://{path}")),
            password_file: None,
            max_connections: None,
            acquire_timeout_ms: 3000,
        }
    }

    /// `max_connections`, or else 4 on SQLite and 16 on MariaDB. SQLite runs
    /// each connection on a thread of its own and lets one writer in at a
    /// time, so a few connections serve best (on 2 cores, 4 against 16:
    /// GetToDo +16 %, CreateToDo +12 %, BENCHMARKS "Tail latency (issue
    /// 16)"); a MariaDB connection mostly waits on the server.
    pub fn pool_size(&self, kind: Kind) -> u32 {
        self.max_connections.unwrap_or(match kind {
            Kind::Sqlite => 4,
            Kind::MySql => 16,
        })
    }

    /// Sets `max_connections` to the engine's default when unset, so that
    /// `--print-config` shows the pool size in effect. An invalid URL is
    /// left for `validate` to report.
    pub fn fill_defaults(&mut self) {
        if let Ok(kind) = self.kind() {
            self.max_connections = Some(self.pool_size(kind));
        }
    }

    pub fn kind(&self) -> Result<Kind, ConfigError> {
        let url = self.url.expose();
        if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url)
                .map_err(|_| ConfigError::invalid("database.url", "not a valid sqlite URL"))?;
            Ok(Kind::Sqlite)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            MySqlConnectOptions::from_str(&mysql_url(url))
                .map_err(|_| ConfigError::invalid("database.url", "not a valid mysql:// URL"))?;
            Ok(Kind::MySql)
        } else {
            Err(ConfigError::invalid(
                "database.url",
                "must start with sqlite:// or mysql://",
            ))
        }
    }

    pub fn validate(&self, files: FileChecks) -> Result<(), ConfigError> {
        let kind = self.kind()?;
        if self.max_connections == Some(0) {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if self.acquire_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "database.acquire_timeout_ms",
                "must be at least 1",
            ));
        }
        if let (Some(path), FileChecks::Read) = (&self.password_file, files) {
            if kind == Kind::Sqlite {
                return Err(ConfigError::invalid(
                    "database.password_file",
                    "SQLite takes no password",
                ));
            }
            read_file("database.password_file", path)?;
        }
        Ok(())
    }
}

fn mysql_url(url: &str) -> String {
    match url.strip_prefix("mariadb:") {
        Some(rest) => format!("mysql:{rest}"),
        None => url.to_owned(),
    }
}

/// What every handle on one SQLite pool shares besides the sqlx pool, which
/// serves migrations, transactions of several statements and the services'
/// other queries.
#[derive(Debug)]
pub struct SqliteShared {
    write_lock: tokio::sync::Mutex<()>,
    reads: SqliteReads,
    writer: SqliteWriter,
    checkpointer: std::sync::Mutex<Option<sqlite_checkpoint::Checkpointer>>,
    /// WAL length past which the checkpoint thread makes it start over
    /// ([`sqlite_checkpoint::RESTART_AT_FRAMES`]; tests lower it).
    restart_at_frames: std::sync::atomic::AtomicI64,
}

impl SqliteShared {
    /// The connections reads run on from the calling thread.
    pub fn reads(&self) -> &SqliteReads {
        &self.reads
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    MySql,
}

/// An open pool on one of the supported engines.
#[derive(Debug, Clone)]
pub enum Pool {
    /// With the lock every writer takes first (see [`Pool::write_lock`]),
    /// the connections calls read and write on from their own thread
    /// ([`Pool::sqlite_reads`], [`Pool::sqlite_write`]) and the checkpoint
    /// thread.
    Sqlite(SqlitePool, std::sync::Arc<SqliteShared>),
    /// With the connections the calls' own statements run on
    /// ([`Pool::mariadb_statements`]).
    MySql(MySqlPool, std::sync::Arc<MariaDbStatements>),
}

/// Runs the same sqlx expression against whichever engine `pool` is, with
/// the engine's pool bound to `$p`. Queries must be portable SQL (`?` binds).
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::Pool::Sqlite($p, _) => $body,
            $crate::Pool::MySql($p, _) => $body,
        }
    };
}

/// sqlx reports how long each pool acquire waited only as a tracing event
/// (target `sqlx::pool::acquire`); at this level the runtime turns those
/// events into `todoapp_db_pool_acquire_wait_seconds` without logging them.
const ACQUIRE_EVENTS: log::LevelFilter = log::LevelFilter::Trace;

/// sqlx pings every connection before handing it out by default: a round
/// trip to the server (on SQLite a hand-off to the connection's thread and
/// back) in front of every query. Only a connection that sat idle this long
/// is checked now; one in steady use has just answered, and should it fail
/// anyway the call fails as UNAVAILABLE and sqlx drops the connection.
/// (sqlx 0.8 also pings each connection as it goes back into the pool, in a
/// task of its own after the caller has its rows; that one has no switch,
/// which is why [`MariaDbStatements`] exists.)
const CHECK_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// For `before_acquire`: whether a pooled connection may be handed out.
async fn usable<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    Ok(meta.idle_for < CHECK_WHEN_IDLE_FOR || conn.ping().await.is_ok())
}

/// Settings every MariaDB session gets: strict mode so nothing is silently
/// truncated or coerced, UTC, utf8mb4.
const MYSQL_SESSION: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'";

/// On a Galera node, reads and the start of every transaction (bit 1:
/// SELECT, SHOW, BEGIN) first wait until this node has applied every write
/// set the cluster committed before them, so a caller whose previous call
/// wrote through another node reads its own writes. Writes need no wait:
/// they start with BEGIN or are certified cluster-wide at commit.
const GALERA_SESSION: &str = "SET SESSION wsrep_sync_wait = 1";

/// Whether the server is a Galera node with replication on (`wsrep_on`).
/// Servers without wsrep support (MySQL) do not know the variable: not one.
async fn is_galera_node(conn: &mut sqlx::MySqlConnection) -> bool {
    let on: Result<Option<String>, _> = sqlx::query_scalar("SELECT CAST(@@wsrep_on AS CHAR)")
        .fetch_optional(&mut *conn)
        .await;
    matches!(on, Ok(Some(v)) if v == "1" || v.eq_ignore_ascii_case("ON"))
}

pub async fn connect(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    let kind = settings
        .kind()
        .map_err(|e| StoreError::Internal(e.into()))?;
    let acquire = Duration::from_millis(settings.acquire_timeout_ms);
    match kind {
        Kind::Sqlite => {
            let options = SqliteConnectOptions::from_str(settings.url.expose())
                .map_err(StoreError::from)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                // 1 MiB of page cache per connection (SQLite's default is
                // 2 MiB), so a full pool stays small; the OS caches the file.
                .pragma("cache_size", "-1024")
                // Commits only append to the WAL; a thread of its own
                // checkpoints (see sqlite_checkpoint).
                .pragma("wal_autocheckpoint", "0");
            let file = options.get_filename().to_owned();
            let reads = SqliteReads::new(file.clone());
            let pool = SqlitePoolOptions::new()
                .max_connections(settings.pool_size(kind))
                .acquire_timeout(acquire)
                .acquire_time_level(ACQUIRE_EVENTS)
                .test_before_acquire(false)
                .before_acquire(|conn, meta| Box::pin(usable(conn, meta)))
                // Each connection is a thread with its own page cache;
                // after a burst the pool shrinks back within seconds
                // (reopening a SQLite connection is cheap).
                .idle_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            let shared = std::sync::Arc::new(SqliteShared {
                write_lock: Default::default(),
                reads,
                writer: SqliteWriter::new(file.clone()),
                checkpointer: Default::default(),
                restart_at_frames: sqlite_checkpoint::RESTART_AT_FRAMES.into(),
            });
            let checkpointer =
                sqlite_checkpoint::Checkpointer::spawn(&file, std::sync::Arc::downgrade(&shared))
                    .map_err(|e| StoreError::Internal(e.into()))?;
            *shared
                .checkpointer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(checkpointer);
            Ok(Pool::Sqlite(pool, shared))
        }
        Kind::MySql => {
            let mut options = MySqlConnectOptions::from_str(&mysql_url(settings.url.expose()))
                .map_err(StoreError::from)?
                .charset("utf8mb4")
                .pipes_as_concat(false);
            if let Some(path) = &settings.password_file {
                let password = read_file("database.password_file", path)
                    .map_err(|e| StoreError::Internal(e.into()))?;
                let password = String::from_utf8_lossy(&password).trim_end().to_owned();
                options = options.password(&password);
            }
            let pool = MySqlPoolOptions::new()
                .max_connections(settings.pool_size(kind))
                .min_connections(1)
                .acquire_timeout(acquire)
                .acquire_time_level(ACQUIRE_EVENTS)
                .test_before_acquire(false)
                .before_acquire(|conn, meta| Box::pin(usable(conn, meta)))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(MYSQL_SESSION).await?;
                        if is_galera_node(conn).await {
                            conn.execute(GALERA_SESSION).await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            let statements =
                MariaDbStatements::new(pool.clone(), settings.pool_size(kind), acquire);
            Ok(Pool::MySql(pool, std::sync::Arc::new(statements)))
        }
    }
}

/// Now, in Unix microseconds: how both stores keep timestamps.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Pool {
    /// Runs the embedded migrations for this pool's engine. On MariaDB,
    /// under [`migration::ClusterLock`]: sqlx's own lock (`GET_LOCK`) is
    /// local to one server, and Galera does not replicate it.
    pub async fn migrate(
        &self,
        sqlite: &sqlx::migrate::Migrator,
        mysql: &sqlx::migrate::Migrator,
    ) -> Result<(), StoreError> {
        match self {
            Pool::Sqlite(p, _) => sqlite.run(p).await?,
            Pool::MySql(p, _) => {
                let lock = migration::ClusterLock::acquire(p).await?;
                let migrated = mysql.run(p).await;
                lock.release(p).await;
                migrated?;
            }
        }
        Ok(())
    }

    /// A readiness probe for the systemd watchdog: the pool works.
    pub fn probe(&self) -> todoapp_runtime::readiness::Probe {
        let pool = self.clone();
        std::sync::Arc::new(move || {
            let pool = pool.clone();
            Box::pin(async move { pool.ping().await })
        })
    }

    /// Held by writers for the length of one write statement. SQLite lets
    /// one writer in at a time and makes the others sleep and retry (its busy
    /// handler backs off up to 100 ms), which made the write latency tail
    /// long under concurrency; queueing writers here, in order, avoids the
    /// retries. MariaDB needs no such lock.
    pub async fn write_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        static WAIT: std::sync::LazyLock<prometheus_client::metrics::histogram::Histogram> =
            std::sync::LazyLock::new(|| {
                todoapp_runtime::metrics::seconds_histogram(
                    "todoapp_db_write_lock_wait_seconds",
                    "Time a SQLite writer waited for the write lock",
                )
            });
        match self {
            Pool::Sqlite(_, shared) => {
                let start = std::time::Instant::now();
                let guard = shared.write_lock.lock().await;
                WAIT.observe(start.elapsed().as_secs_f64());
                Some(guard)
            }
            Pool::MySql(..) => None,
        }
    }

    /// Exposes the pool's size and idle connections as gauges
    /// (`todoapp_db_pool_connections`, `todoapp_db_pool_idle_connections`),
    /// likewise the MariaDB statement connections (`todoapp_db_statement_*`),
    /// read at each scrape, and the acquire wait histogram
    /// (`todoapp_db_pool_acquire_wait_seconds`, both kinds of connection).
    pub fn register_metrics(&self) {
        todoapp_runtime::telemetry::register_pool_acquire_wait();
        let pool = self.clone();
        todoapp_runtime::metrics::sampled_gauge(
            "todoapp_db_pool_connections",
            "Database connections open in the pool (busy and idle)",
            move || on_pool!(&pool, |p| i64::from(p.size())),
        );
        let pool = self.clone();
        todoapp_runtime::metrics::sampled_gauge(
            "todoapp_db_pool_idle_connections",
            "Idle database connections in the pool",
            move || on_pool!(&pool, |p| p.num_idle() as i64),
        );
        let pool = self.clone();
        todoapp_runtime::metrics::sampled_gauge(
            "todoapp_db_pool_max_connections",
            "Most database connections the pool may open",
            move || on_pool!(&pool, |p| i64::from(p.options().get_max_connections())),
        );
        match self {
            Pool::Sqlite(_, shared) => {
                let shared = shared.clone();
                todoapp_runtime::metrics::sampled_gauge(
                    "todoapp_db_sqlite_read_connections",
                    "SQLite connections open for reads on the calling thread (idle and in use)",
                    move || shared.reads.connections() as i64,
                );
            }
            Pool::MySql(_, statements) => statements.register_metrics(),
        }
    }

    /// On SQLite, the connections reads run on the calling thread with
    /// ([`SqliteReads`]); `None` on MariaDB, where a read is a round trip.
    pub fn sqlite_reads(&self) -> Option<&SqliteReads> {
        match self {
            Pool::Sqlite(_, shared) => Some(shared.reads()),
            Pool::MySql(..) => None,
        }
    }

    /// On MariaDB, the connections the calls' own one-statement reads and
    /// procedure calls run on, outside the pool; `None` on SQLite.
    pub fn mariadb_statements(&self) -> Option<&MariaDbStatements> {
        match self {
            Pool::MySql(_, statements) => Some(statements),
            Pool::Sqlite(..) => None,
        }
    }

    /// On SQLite, runs `write` on the calling thread, on the one writer
    /// connection, holding the write lock ([`SqliteWriter`]). `write` must
    /// not wait on anything but SQLite. An internal error on MariaDB.
    pub async fn sqlite_write<T, E: From<StoreError>>(
        &self,
        write: impl FnOnce(&rusqlite::Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let Pool::Sqlite(_, shared) = self else {
            return Err(StoreError::internal("a SQLite write on another engine").into());
        };
        let _writer = self.write_lock().await;
        shared.writer.write(write)
    }

    /// Whether the pool can hand out a working connection right now.
    pub async fn ping(&self) -> bool {
        on_pool!(self, |p| sqlx::query("SELECT 1").execute(p).await.is_ok())
    }

    pub fn kind(&self) -> Kind {
        match self {
            Pool::Sqlite(..) => Kind::Sqlite,
            Pool::MySql(..) => Kind::MySql,
        }
    }

    /// Closes every connection. On SQLite the checkpoint thread and the
    /// read connections go first, so that the pool's last connection
    /// checkpoints the WAL as it closes and removes it.
    pub async fn close(&self) {
        if let Pool::Sqlite(_, shared) = self {
            shared.reads.close();
            shared.writer.close();
            let checkpointer = shared
                .checkpointer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(checkpointer) = checkpointer {
                let _ = tokio::task::spawn_blocking(move || checkpointer.stop()).await;
            }
        }
        if let Some(statements) = self.mariadb_statements() {
            statements.close().await;
        }
        on_pool!(self, |p| p.close().await)
    }
}

mod mariadb_statements;
pub mod migration;
mod retry;
mod sqlite_checkpoint;
mod sqlite_reads;
mod sqlite_writer;
pub use mariadb_statements::{Lease, MariaDbStatements, STATEMENT_CONNECTION_GAUGES};
pub use retry::{retry_contended, Contended, RETRY_ATTEMPTS};
pub use sqlite_reads::SqliteReads;
pub use sqlite_writer::SqliteWriter;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a storage operation failed, as far as callers need to know. Each
/// variant keeps the driver's error as its source, for the logs only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (or the pool is exhausted): retryable.
    #[error("database unavailable")]
    Unavailable(#[source] BoxError),
    /// A unique constraint refused the write. `constraint` identifies it:
    /// the index name on MariaDB, the indexed `table.column` list on SQLite
    /// (which reports no index name); see [`violated_constraint`].
    #[error("unique constraint {constraint} violated")]
    Conflict {
        constraint: String,
        #[source]
        source: BoxError,
    },
    /// Anything else: a bug or a broken database.
    #[error("database error")]
    Internal(#[source] BoxError),
}

impl StoreError {
    pub fn internal(detail: impl Into<String>) -> Self {
        StoreError::Internal(detail.into().into())
    }

    /// Whether the database refused the transaction because of another one
    /// (a deadlock, or on Galera a certification failure: MariaDB error
    /// 1213): nothing was written and the whole transaction may be retried.
    pub fn is_contention(&self) -> bool {
        let StoreError::Unavailable(source) = self else {
            return false;
        };
        source
            .downcast_ref::<sqlx::Error>()
            .and_then(mariadb_error_number)
            == Some(ER_LOCK_DEADLOCK)
    }

    /// This error and its sources, for one log line.
    pub fn detail(&self) -> String {
        let mut detail = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(error) = source {
            detail.push_str(": ");
            detail.push_str(&error.to_string());
            source = error.source();
        }
        detail
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(error.into()),
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
                constraint: violated_constraint(db.as_ref()),
                source: error.into(),
            },
            sqlx::Error::Database(db) if is_transient(db.code().as_deref()) => {
                StoreError::Unavailable(error.into())
            }
            sqlx::Error::Database(_)
                if mariadb_error_number(&error) == Some(ER_LOCK_WAIT_TIMEOUT) =>
            {
                StoreError::Unavailable(error.into())
            }
            _ => StoreError::Internal(error.into()),
        }
    }
}

/// Which unique constraint a violation names. sqlx exposes the name
/// (`DatabaseError::constraint`) only for PostgreSQL, so for our engines it
/// is taken from the fixed part of the engine's report, never from text a
/// user could have put there:
/// - MariaDB error 1062 ends with `for key 'NAME'` (MySQL 8: `'table.NAME'`);
///   the duplicate value comes before it, so the last such clause is the key;
/// - SQLite reports `UNIQUE constraint failed: table.col[, table.col]`, the
///   indexed columns (it has no index name to give).
pub fn violated_constraint(db: &dyn sqlx::error::DatabaseError) -> String {
    if let Some(name) = db.constraint() {
        return name.to_owned();
    }
    let message = db.message();
    if let Some((_, key)) = message.rsplit_once(" for key '") {
        let key = key.strip_suffix('\'').unwrap_or(key);
        return key.rsplit('.').next().unwrap_or(key).to_owned();
    }
    sqlite_unique_columns(message)
        .unwrap_or_default()
        .to_owned()
}

/// The `table.col[, table.col]` of SQLite's unique-violation message.
fn sqlite_unique_columns(message: &str) -> Option<&str> {
    message.strip_prefix("UNIQUE constraint failed: ")
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{
            CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure,
        };
        match &error {
            rusqlite::Error::SqliteFailure(failure, Some(message))
                if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Conflict {
                    constraint: sqlite_unique_columns(message)
                        .unwrap_or_default()
                        .to_owned(),
                    source: error.into(),
                }
            }
            _ => match error.sqlite_error_code() {
                Some(DatabaseBusy | DatabaseLocked | CannotOpen | SystemIoFailure | DiskFull) => {
                    StoreError::Unavailable(error.into())
                }
                _ => StoreError::Internal(error.into()),
            },
        }
    }
}

/// A connection of the service's own on the SQLite file the pool opened
/// (which created it and set WAL mode, which the file keeps), outside
/// sqlx: the pool's 1 MiB page cache, then `pragmas`.
fn open_sqlite(
    path: &std::path::Path,
    busy_timeout: Duration,
    pragmas: &str,
) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch("PRAGMA cache_size = -1024;")?;
    conn.execute_batch(pragmas)?;
    Ok(conn)
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => StoreError::Internal(other.into()),
        }
    }
}

/// MariaDB's "deadlock found; try restarting transaction", also what a
/// Galera certification failure or brute-force abort reports.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// "Lock wait timeout exceeded", also what a Galera node reports when
/// `wsrep_sync_wait` cannot catch up in time (`wsrep_sync_wait` failures
/// have no error of their own).
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

fn mariadb_error_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .map(|e| e.number()),
        _ => None,
    }
}

/// MariaDB server-gone / shutdown codes (SQLSTATE 08xxx, or "70100" kill;
/// a Galera node outside the primary component answers 1047 with 08S01),
/// a transaction chosen as a deadlock victim or failing Galera
/// certification (SQLSTATE 40001, error 1213: retried in place, see
/// [`retry_contended`]) and a lock wait timeout (1205, after a wait of
/// seconds: not retried in place, the client may retry): all transient.
fn is_transient(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.starts_with("08") || c == "70100" || c == "40001")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, max_connections: Option<u32>) -> DatabaseSettings {
        DatabaseSettings {
            url: Secret::new(url.to_owned()),
            max_connections,
            ..DatabaseSettings::sqlite("unused")
        }
    }

    #[test]
    fn the_pool_size_is_the_setting_or_the_engines_default() {
        let sqlite = settings("sqlite:///var/lib/todo.db", None);
        assert_eq!(sqlite.pool_size(Kind::Sqlite), 4);
        let mariadb = settings("mysql://todo@localhost/todo", None);
        assert_eq!(mariadb.pool_size(Kind::MySql), 16);
        let chosen = settings("mysql://todo@localhost/todo", Some(7));
        assert_eq!(chosen.pool_size(Kind::MySql), 7);
        assert!(settings("sqlite://x.db", Some(0))
            .validate(FileChecks::Skip)
            .is_err());
    }

    #[test]
    fn filled_defaults_are_the_pool_size_in_effect() {
        let filled = |mut s: DatabaseSettings| {
            s.fill_defaults();
            s.max_connections
        };
        assert_eq!(filled(settings("sqlite://x.db", None)), Some(4));
        assert_eq!(
            filled(settings("mysql://todo@localhost/todo", None)),
            Some(16)
        );
        assert_eq!(
            filled(settings("mysql://todo@localhost/todo", Some(9))),
            Some(9)
        );
        assert_eq!(filled(settings("postgres://elsewhere", None)), None);
    }
}
