//! SQLite reads on the calling thread.
//!
//! sqlx runs every SQLite connection on an OS thread of its own and hands
//! each statement and each row over channels, so a one-row read cost two
//! cross-thread wake-ups, a third of the todo service's CPU (BENCHMARKS,
//! "Tail latency (issue 16)"). A read here is a few tens of microseconds of
//! work in SQLite itself (the file is in the OS cache), so it runs where the
//! call already is, on a connection of its own opened on the same file. WAL
//! mode lets it see every write committed before it began, without taking
//! the write lock or waiting for writers.
//!
//! Writes stay on the sqlx pool under [`crate::Pool::write_lock`]: they
//! fsync and wait for each other, which must not stall a runtime thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

/// How long a read waits on a lock before failing as UNAVAILABLE. In WAL
/// mode readers wait only while a connection recovers the WAL after a
/// crash; that must not hold a runtime thread for long.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Idle read connections kept open. A read never awaits while it holds one,
/// so no more are in use at once than threads read at once (the runtime's
/// workers); more than this are closed after use.
const KEEP_IDLE: usize = 8;

/// Read-only connections on one SQLite file, taken for one synchronous read
/// at a time.
#[derive(Debug)]
pub struct SqliteReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    open: AtomicUsize,
    closed: AtomicBool,
}

impl SqliteReads {
    /// Connections are opened on first use; the file must exist by then
    /// (the sqlx pool creates it and sets WAL mode, which the file keeps).
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `read` on an idle connection (or a new one), on this thread.
    /// `read` must only read: the connection refuses writes (`query_only`).
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database is closed".into()));
        }
        let taken = self.lock_idle().pop();
        let conn = match taken {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = read(&conn).map_err(StoreError::from);
        let mut idle = self.lock_idle();
        if idle.len() < KEEP_IDLE && !self.closed.load(Ordering::Acquire) {
            idle.push(conn);
        } else {
            drop(idle);
            self.forget(conn);
        }
        result
    }

    /// Connections open now, idle or in use (a gauge).
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Closes the idle connections; reads from now on fail as UNAVAILABLE.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *self.lock_idle());
        for conn in idle {
            self.forget(conn);
        }
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        // Read-write so it can take part in WAL (the shared-memory index),
        // but it refuses writes.
        let conn = crate::open_sqlite(&self.path, BUSY_TIMEOUT, "PRAGMA query_only = ON;")?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    fn forget(&self, conn: Connection) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        drop(conn);
    }

    /// The idle list, even after a panic elsewhere left its lock poisoned
    /// (a Vec of connections is valid at every step).
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
