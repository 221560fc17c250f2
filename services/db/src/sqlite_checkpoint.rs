//! SQLite checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL
//! past 1000 pages: it copies the WAL into the database file and fsyncs
//! both while that writer, and every writer queued behind it on the
//! service's write lock, waits (about 20 ms each time on these machines, up
//! to seconds when the disk is busy: UpdateToDo p99.9 of 1.3 and 2.8 s).
//! Here commits only append to the WAL; a thread of its own copies and
//! fsyncs, PASSIVE (never waiting for readers or writers).
//!
//! Under steady writes a PASSIVE checkpoint never catches up with the last
//! frame, and SQLite starts the WAL over only when a writer begins after a
//! complete one, so the WAL would grow for as long as the writes go on.
//! Once it passes [`RESTART_AT_FRAMES`], the thread takes the write lock
//! for one more PASSIVE checkpoint, which now only has the frames written
//! since its last pass to copy, so the next writer starts the WAL over.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::SqliteShared;

/// How often the thread checkpoints what the WAL has gained while writes go
/// on: often, so that the pass under the write lock has little to copy
/// (every 1 s made CreateToDo's p99 worse than SQLite's own checkpoints;
/// every 100 ms still a little, 25 ms not; BENCHMARKS, issue 16).
const BUSY_EVERY: Duration = Duration::from_millis(25);
/// How often it looks while the WAL is not growing.
const IDLE_EVERY: Duration = Duration::from_millis(250);
/// How long it waits after a failure (one warning each time).
const AFTER_FAILURE: Duration = Duration::from_secs(5);

/// WAL frames (pages, 4 KiB each) past which writers are held for a moment
/// so that the WAL starts over: about 16 MiB.
pub(crate) const RESTART_AT_FRAMES: i64 = 4096;

/// The checkpoint thread; stopped and joined by [`Checkpointer::stop`].
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread for the database at `path`. It also ends by itself
    /// once every handle on the pool is gone.
    pub(crate) fn spawn(path: &Path, shared: Weak<SqliteShared>) -> std::io::Result<Self> {
        let path = path.to_owned();
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&path, &shared, &stopped))?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread and waits until it has closed its connection, so
    /// that the pool's last connection to close can checkpoint the WAL and
    /// remove it.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        if self.thread.join().is_err() {
            tracing::warn!("the SQLite checkpoint thread panicked");
        }
    }
}

fn run(path: &Path, shared: &Weak<SqliteShared>, stopped: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut conn = None;
    let mut last_frames = 0;
    let mut forced_at = 0;
    let mut wait = IDLE_EVERY;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if conn.is_none() {
            conn = crate::open_sqlite(path, Duration::from_secs(1), "")
                .map_err(|e| tracing::warn!(error = %e, "SQLite checkpointer cannot open the database; retrying"))
                .ok();
        }
        let Some(open) = &conn else {
            wait = AFTER_FAILURE;
            continue;
        };
        match checkpoint(open, &shared, &mut forced_at) {
            Ok(frames) => {
                wait = if frames == last_frames {
                    IDLE_EVERY
                } else {
                    BUSY_EVERY
                };
                last_frames = frames;
            }
            Err(e) => {
                tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
                conn = None;
                wait = AFTER_FAILURE;
            }
        }
    }
}

/// One pass, and one more under the write lock when the WAL has grown too
/// long (once per length: after a complete pass the next writer starts the
/// WAL over, and until one comes there is nothing to copy); the WAL's
/// length in frames. A pass reports the WAL as it was when the pass began,
/// not the frames written meanwhile, so even a complete one is no sign
/// that the WAL will start over.
fn checkpoint(
    conn: &Connection,
    shared: &Arc<SqliteShared>,
    forced_at: &mut i64,
) -> rusqlite::Result<i64> {
    let (wal_frames, _copied) = passive(conn)?;
    let restart_at = shared.restart_at_frames.load(Ordering::Relaxed);
    if wal_frames >= restart_at && wal_frames != *forced_at {
        let start = Instant::now();
        let _writers_wait = shared.write_lock.blocking_lock();
        let (wal_frames, copied) = passive(conn)?;
        tracing::debug!(
            wal_frames,
            copied,
            waited_and_copied_us = start.elapsed().as_micros() as u64,
            "SQLite WAL checkpointed under the write lock, to start over"
        );
        *forced_at = wal_frames;
    }
    Ok(wal_frames)
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: the WAL's length in frames and how
/// many of them are now in the database file.
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", (), |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{connect, DatabaseSettings, Pool};

    const ROW_BYTES: usize = 16 * 1024;

    async fn sqlite(dir: &Path) -> (Pool, sqlx::SqlitePool) {
        let settings = DatabaseSettings::sqlite(&dir.join("t.db").display().to_string());
        let pool = connect(&settings).await.expect("connect");
        let Pool::Sqlite(sqlx_pool, _) = &pool else {
            panic!("a SQLite pool");
        };
        let sqlx_pool = sqlx_pool.clone();
        sqlx::query("CREATE TABLE t (b BLOB NOT NULL)")
            .execute(&sqlx_pool)
            .await
            .expect("create table");
        (pool, sqlx_pool)
    }

    async fn insert(pool: &Pool, sqlx_pool: &sqlx::SqlitePool) {
        let _writer = pool.write_lock().await;
        sqlx::query("INSERT INTO t (b) VALUES (zeroblob(?))")
            .bind(ROW_BYTES as i64)
            .execute(sqlx_pool)
            .await
            .expect("insert");
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// Commits do not checkpoint; the thread copies the WAL into the
    /// database file soon after, with no writer's help; closing the pool
    /// stops the thread first, so the last connection removes the WAL.
    #[tokio::test]
    async fn commits_leave_checkpoints_to_the_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, sqlx_pool) = sqlite(dir.path()).await;
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&sqlx_pool)
            .await
            .expect("pragma");
        assert_eq!(autocheckpoint, 0, "commits must not checkpoint");

        // 1 MiB: a quarter of what would start SQLite's own checkpoint.
        for _ in 0..64 {
            insert(&pool, &sqlx_pool).await;
        }
        let database = dir.path().join("t.db");
        let deadline = Instant::now() + Duration::from_secs(10);
        while file_len(&database) < 64 * ROW_BYTES as u64 {
            assert!(
                Instant::now() < deadline,
                "the rows never reached the database file ({} bytes)",
                file_len(&database)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        pool.close().await;
        let wal = dir.path().join("t.db-wal");
        assert!(!wal.exists(), "the WAL outlived the pool");
    }

    /// Under writes that never pause, the WAL still starts over, again and
    /// again: the checkpoint sequence number in its header counts the
    /// times (SQLite's WAL format). The restart length is lowered to 256
    /// frames, and four writers go on until the WAL has started over three
    /// times or 20 s have passed (without the pass under the lock it never
    /// does: a PASSIVE checkpoint under steady writes never completes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_steady_writes() {
        const RESTART_AT: i64 = 256;
        let dir = tempfile::tempdir().expect("tempdir");
        let (pool, sqlx_pool) = sqlite(dir.path()).await;
        let Pool::Sqlite(_, shared) = &pool else {
            panic!("a SQLite pool");
        };
        shared
            .restart_at_frames
            .store(RESTART_AT, Ordering::Relaxed);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (pool, sqlx_pool, stop) = (pool.clone(), sqlx_pool.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut rows = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _writer = pool.write_lock().await;
                        sqlx::query("INSERT INTO t (b) VALUES (zeroblob(100))")
                            .execute(&sqlx_pool)
                            .await
                            .expect("insert");
                        rows += 1;
                    }
                    rows
                })
            })
            .collect();
        let wal = dir.path().join("t.db-wal");
        let restarts = || {
            std::fs::read(&wal)
                .ok()
                .and_then(|header| Some(u32::from_be_bytes(header.get(12..16)?.try_into().ok()?)))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while restarts().unwrap_or(0) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut rows = 0;
        for writer in writers {
            rows += writer.await.expect("writer");
        }
        let restarts = restarts().unwrap_or(0);
        assert!(
            restarts >= 3,
            "the WAL started over {restarts} times in 20 s of writes ({rows} rows)"
        );
        pool.close().await;
    }
}
