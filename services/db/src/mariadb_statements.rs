//! MariaDB connections lent for one statement at a time, without sqlx's
//! ping on release.
//!
//! sqlx's pool pings every connection as it goes back into the pool, in a
//! task of its own, and has no switch for it: a second round trip to the
//! server, and a wake-up of one of its threads, for every query. The ping is
//! there for connections a dropped future left in the middle of a statement
//! or inside a transaction. These connections serve only statements that
//! run outside any transaction (a SELECT, a procedure call), and one goes
//! back for reuse only when the caller hands in the statement's result
//! ([`Lease::finish`]) and the server answered it; a lease dropped before
//! that (a cancelled call) or one whose connection failed closes the
//! connection instead. Like the pool, a connection that sat idle for
//! [`crate::CHECK_WHEN_IDLE_FOR`] or more is pinged before it is lent.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnection, MySqlPool};
use sqlx::Connection;
use tokio::sync::{Semaphore, SemaphorePermit};

/// A connection idle this long is closed rather than kept (the most
/// recently used are lent first, so after a burst the extra ones age out).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The gauges of these connections: open (lent and idle), idle, and the
/// most allowed. Only a MariaDB-backed service exports them.
pub const STATEMENT_CONNECTION_GAUGES: [&str; 3] = [
    "todoapp_db_statement_connections",
    "todoapp_db_statement_idle_connections",
    "todoapp_db_statement_max_connections",
];

/// Up to `max` connections of their own, opened through `pool` (so each
/// gets the pool's session settings) and detached from it.
#[derive(Debug)]
pub struct MariaDbStatements {
    pool: MySqlPool,
    max: u32,
    permits: Semaphore,
    /// Most recently used last.
    idle: Mutex<Vec<Idle>>,
    open: AtomicI64,
    acquire_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    conn: MySqlConnection,
    since: Instant,
}

impl MariaDbStatements {
    pub(crate) fn new(pool: MySqlPool, max: u32, acquire_timeout: Duration) -> Self {
        Self {
            pool,
            max,
            permits: Semaphore::new(max as usize),
            idle: Mutex::new(Vec::new()),
            open: AtomicI64::new(0),
            acquire_timeout,
        }
    }

    /// A connection for one statement, waiting at most the pool's acquire
    /// timeout (then `PoolTimedOut`, as the pool would).
    pub async fn lease(&self) -> Result<Lease<'_>, sqlx::Error> {
        let started = Instant::now();
        let lease = tokio::time::timeout(self.acquire_timeout, self.lease_unbounded())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        todoapp_runtime::telemetry::register_pool_acquire_wait()
            .observe(started.elapsed().as_secs_f64());
        lease
    }

    async fn lease_unbounded(&self) -> Result<Lease<'_>, sqlx::Error> {
        loop {
            let permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| sqlx::Error::PoolClosed)?;
            let idle = self.idle().pop();
            let Some(Idle { conn, since }) = idle else {
                let conn = self.pool.acquire().await?.detach();
                self.open.fetch_add(1, Ordering::Relaxed);
                return Ok(self.lent(conn, permit));
            };
            // Lent before the check, so that a caller gone meanwhile closes
            // it like any unfinished lease.
            let mut lease = self.lent(conn, permit);
            if since.elapsed() < crate::CHECK_WHEN_IDLE_FOR
                || lease.connection().ping().await.is_ok()
            {
                return Ok(lease);
            }
            // The server dropped it while idle: closed with the lease.
        }
    }

    fn lent<'a>(&'a self, conn: MySqlConnection, permit: SemaphorePermit<'a>) -> Lease<'a> {
        Lease {
            conn: Some(conn),
            owner: self,
            _permit: permit,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing is left half-done under this lock.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open (lent and idle).
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// [`STATEMENT_CONNECTION_GAUGES`], read at each scrape.
    pub(crate) fn register_metrics(self: &Arc<Self>) {
        type Sample = fn(&MariaDbStatements) -> i64;
        let [open, idle, max] = STATEMENT_CONNECTION_GAUGES;
        let gauges: [(&str, &str, Sample); 3] = [
            (
                open,
                "MariaDB connections open outside the pool for the calls' own statements (busy and idle)",
                Self::open,
            ),
            (
                idle,
                "Idle MariaDB connections for the calls' own statements",
                |s| s.idle().len() as i64,
            ),
            (
                max,
                "Most MariaDB connections the calls' own statements may open",
                |s| i64::from(s.max),
            ),
        ];
        for (name, help, sample) in gauges {
            let statements = Arc::clone(self);
            todoapp_runtime::metrics::sampled_gauge(name, help, move || sample(&statements));
        }
    }

    /// Lends no more and closes the idle connections; lent ones close as
    /// they come back.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle());
        for Idle { conn, .. } in idle {
            self.open.fetch_sub(1, Ordering::Relaxed);
            let _ = conn.close().await;
        }
    }

    fn give_back(&self, conn: MySqlConnection) {
        if self.permits.is_closed() {
            self.discard(conn);
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle();
        let stale = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
            .count();
        let stale: Vec<Idle> = idle.drain(..stale).collect();
        idle.push(Idle { conn, since: now });
        drop(idle);
        for Idle { conn, .. } in stale {
            self.open.fetch_sub(1, Ordering::Relaxed);
            close_in_background(conn);
        }
    }

    fn discard(&self, conn: MySqlConnection) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        drop(conn);
    }
}

/// Says goodbye to the server (COM_QUIT) off the caller's path.
fn close_in_background(conn: MySqlConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = conn.close().await;
        });
    }
}

/// One connection, lent until [`Lease::finish`]; dropped unfinished, it is
/// closed (it may be in the middle of a statement).
#[derive(Debug)]
pub struct Lease<'a> {
    conn: Option<MySqlConnection>,
    owner: &'a MariaDbStatements,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    pub fn connection(&mut self) -> &mut MySqlConnection {
        // Present until finish or drop, which consume the lease.
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("a lease holds its connection until it ends"))
    }

    /// Ends the lease with the statement's result: the connection is kept
    /// when the server answered (rows, or an error of its own such as a
    /// deadlock), closed when the connection failed.
    pub fn finish<T>(mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Some(conn) = self.conn.take() {
            match &result {
                Ok(_) | Err(sqlx::Error::Database(_)) => self.owner.give_back(conn),
                Err(_) => self.owner.discard(conn),
            }
        }
        result
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.owner.discard(conn);
        }
    }
}
