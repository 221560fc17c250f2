//! SQLite writes on the calling thread.
//!
//! Writers take turns on the service's write lock anyway, and a commit only
//! appends to the WAL (no fsync: `synchronous = NORMAL`, and checkpoints
//! run on a thread of their own, see `sqlite_checkpoint`), so a one-
//! statement write is tens of microseconds of work: it runs where the call
//! already is, on one connection kept for it, instead of being handed to a
//! sqlx connection's thread and back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

use crate::StoreError;

/// How long a write waits on a lock SQLite holds. The service's own
/// writers queue on the write lock instead, so this is only ever another
/// process on the same file (`todoapp-todo migrate`, the sqlite3 shell).
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// The one connection writes run on, used only under the write lock.
#[derive(Debug)]
pub struct SqliteWriter {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
    closed: AtomicBool,
}

impl SqliteWriter {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            conn: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `write` on the writer connection, on this thread. Callers hold
    /// [`crate::Pool::write_lock`] (see [`crate::Pool::sqlite_write`]).
    /// A failed write drops the connection; the next one opens another.
    pub(crate) fn write<T, E: From<StoreError>>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the database is closed".into()).into());
        }
        let mut slot = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(self.connect()?);
        }
        let Some(conn) = slot.as_ref() else {
            return Err(StoreError::internal("the SQLite writer vanished").into());
        };
        let written = write(conn);
        // A write that failed half-way must not leave a transaction open
        // for the next one.
        if written.is_err() && !conn.is_autocommit() {
            *slot = None;
        }
        written
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        // As the pool's connections: NORMAL (the WAL is synced at each
        // checkpoint), foreign keys, and no automatic checkpoint inside a
        // commit.
        Ok(crate::open_sqlite(
            &self.path,
            BUSY_TIMEOUT,
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0;",
        )?)
    }
}
