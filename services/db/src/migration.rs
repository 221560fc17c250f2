//! A migration lock that holds across a Galera cluster.
//!
//! sqlx's MySQL migrator serialises concurrent migrators with `GET_LOCK`,
//! which is local to one server: Galera does not replicate it, so instances
//! starting at once against different nodes would all run the same
//! migration (and fail on each other's tables or `_sqlx_migrations` rows).
//! This lock is a row instead: inserting it commits on one node only, every
//! other insert fails on the primary key (or Galera certification) and
//! waits. A holder that crashed leaves the row behind; it is taken over once
//! its lease has expired.

use std::time::Duration;

use sqlx::MySqlPool;

use crate::{now_micros, StoreError};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS _todoapp_migration_lock (\
    id TINYINT NOT NULL PRIMARY KEY, \
    holder VARCHAR(100) NOT NULL, \
    expires_at BIGINT NOT NULL) ENGINE = InnoDB";
const TAKE: &str = "INSERT INTO _todoapp_migration_lock (id, holder, expires_at) VALUES (1, ?, ?)";
const EXPIRE: &str = "DELETE FROM _todoapp_migration_lock WHERE id = 1 AND expires_at < ?";
const RELEASE: &str = "DELETE FROM _todoapp_migration_lock WHERE id = 1 AND holder = ?";

/// How long a holder may keep the lock: far longer than the migrations take.
const LEASE: Duration = Duration::from_secs(60);
/// How long to wait for another holder before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct ClusterLock {
    holder: String,
}

impl ClusterLock {
    pub async fn acquire(pool: &MySqlPool) -> Result<Self, StoreError> {
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let holder = format!(
            "pid {} #{} at {}",
            std::process::id(),
            SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            now_micros()
        );
        retry_ddl(pool, CREATE).await?;
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            sqlx::query(EXPIRE)
                .bind(now_micros())
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(StoreError::from)
                .or_else(ignore_contention)?;
            let lease = LEASE.as_micros() as i64;
            match sqlx::query(TAKE)
                .bind(&holder)
                .bind(now_micros() + lease)
                .execute(pool)
                .await
                .map_err(StoreError::from)
            {
                Ok(_) => return Ok(Self { holder }),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) if e.is_contention() => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(StoreError::internal(format!(
                    "another instance held the migration lock for over {WAIT_LIMIT:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Releases the lock; should that fail, its lease expires.
    pub async fn release(self, pool: &MySqlPool) {
        if let Err(e) = sqlx::query(RELEASE).bind(&self.holder).execute(pool).await {
            tracing::warn!(error = %e, "releasing the migration lock failed; it expires in {LEASE:?}");
        }
    }
}

fn ignore_contention(e: StoreError) -> Result<(), StoreError> {
    if e.is_contention() {
        Ok(())
    } else {
        Err(e)
    }
}

/// DDL runs cluster-wide in total order on Galera; two concurrent
/// `CREATE TABLE IF NOT EXISTS` may still refuse one another.
async fn retry_ddl(pool: &MySqlPool, sql: &str) -> Result<(), StoreError> {
    crate::retry_contended(|| async {
        sqlx::query(sql)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(StoreError::from)
    })
    .await
}
