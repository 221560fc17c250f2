//! The todo service's storage interface and its sqlx implementation
//! (SQLite and MariaDB): reads and idempotent creates in the same portable
//! SQL on both; creates, updates and deletes in one call each, the way each
//! engine allows (a statement with triggers on SQLite, a stored procedure on
//! MariaDB).

use std::future::Future;

use futures_util::TryStreamExt;

use todoapp_db::{now_micros, on_pool, retry_contended, Kind, Pool, StoreError};

use crate::domain::{Content, Page, RequestId, TodoId, UserId};
use crate::quota::{QuotaSettings, WriteError};

/// How long a request_id is remembered (AIP-155 suggests at least a day).
pub const REQUEST_ID_RETENTION_MICROS: i64 = 24 * 3600 * 1_000_000;

/// The idempotent create's statements on `create_requests`: SQLite's
/// transaction runs all three; on MariaDB the `todo_create_once` procedure
/// does this work, and only the lookup runs from here, for a create whose
/// key another call inserted first (through another Galera node).
const EARLIER_REQUEST: &str = "SELECT todo_id, fingerprint, created_at FROM create_requests WHERE user_id = ? AND request_id = ?";
const REMEMBER_REQUEST: &str = "INSERT INTO create_requests (todo_id, fingerprint, created_at, user_id, request_id) VALUES (?, ?, ?, ?, ?)";
const REPLACE_EXPIRED_REQUEST: &str = "UPDATE create_requests SET todo_id = ?, fingerprint = ?, created_at = ? WHERE user_id = ? AND request_id = ?";

/// A request id's earlier use: the entry it created, that call's content
/// fingerprint and when (Unix microseconds).
type EarlierRequest = (i32, Vec<u8>, i64);

/// An earlier use within the retention is answered from it; an older one
/// is replaced.
fn still_remembered(earlier: &EarlierRequest, now: i64) -> bool {
    earlier.2 >= now - REQUEST_ID_RETENTION_MICROS
}

/// The answer to a repeated request id: the first call's id when the
/// content is the same.
fn judge_repeat((id, earlier, _): &EarlierRequest, fingerprint: &[u8]) -> CreateOnce {
    if earlier[..] == *fingerprint {
        CreateOnce::Repeated(*id)
    } else {
        CreateOnce::Mismatch
    }
}

/// What an idempotent create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOnce {
    /// Stored a new entry with this id.
    Created(i32),
    /// The request_id was used before with the same content: that call's id.
    Repeated(i32),
    /// The request_id was used before with other content; nothing stored.
    Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoRecord {
    pub id: i32,
    pub title: String,
    pub text: String,
    pub done: bool,
    /// Unix microseconds.
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

type Row = (i32, String, String, bool, i64, Option<i64>);

impl From<Row> for TodoRecord {
    fn from((id, title, text, done, created_at, updated_at): Row) -> Self {
        Self {
            id,
            title,
            text,
            done,
            created_at,
            updated_at,
        }
    }
}

/// The columns of a [`Row`] and of [`read_row`], in their order.
macro_rules! columns {
    () => {
        "id, title, text, done, created_at, updated_at"
    };
}

/// A row of `SELECT columns!()` on SQLite's read connections
/// ([`todoapp_db::SqliteReads`]).
fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TodoRecord> {
    Ok(TodoRecord {
        id: row.get(0)?,
        title: row.get(1)?,
        text: row.get(2)?,
        done: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

/// Every operation is scoped to one user: another user's entries do not exist.
pub trait TodoStore: Send + Sync + 'static {
    /// Refused with [`WriteError::Quota`] when the user's quota is full.
    fn create(
        &self,
        user: &UserId,
        content: &Content,
    ) -> impl Future<Output = Result<i32, WriteError>> + Send;
    /// Creates once per (user, request_id) within the retention period;
    /// a new entry is refused with [`WriteError::Quota`] like `create`.
    fn create_once(
        &self,
        user: &UserId,
        content: &Content,
        request: &RequestId,
    ) -> impl Future<Output = Result<CreateOnce, WriteError>> + Send;
    fn get(
        &self,
        user: &UserId,
        id: TodoId,
    ) -> impl Future<Output = Result<Option<TodoRecord>, StoreError>> + Send;
    /// Whether the entry existed (and so was updated). Refused with
    /// [`WriteError::Quota`] when it would grow past the byte quota.
    fn update(
        &self,
        user: &UserId,
        id: TodoId,
        content: &Content,
    ) -> impl Future<Output = Result<bool, WriteError>> + Send;
    /// Whether the entry existed (and so was deleted).
    fn delete(
        &self,
        user: &UserId,
        id: TodoId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Up to `page.limit` entries with ids above `page.after`, ascending,
    /// stopping after the first entry that takes the title and text bytes
    /// read past `max_bytes` (so at most one entry over the budget is read).
    fn list(
        &self,
        user: &UserId,
        page: Page,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<TodoRecord>, StoreError>> + Send;
}

#[derive(Debug, Clone)]
pub struct SqlTodoStore {
    pool: Pool,
    quota: QuotaSettings,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

impl SqlTodoStore {
    /// A store with the default quotas.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            quota: QuotaSettings::default(),
        }
    }

    pub fn with_quota(self, quota: QuotaSettings) -> Self {
        Self { quota, ..self }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.pool
            .migrate(&SQLITE_MIGRATIONS, &MYSQL_MIGRATIONS)
            .await
    }

    pub fn kind(&self) -> Kind {
        self.pool.kind()
    }

    /// Forgets request ids recorded before `cutoff` (Unix microseconds);
    /// returns how many.
    pub async fn forget_requests_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let _writer = self.pool.write_lock().await;
        const SQL: &str = "DELETE FROM create_requests WHERE created_at < ?";
        let pool = &self.pool;
        retry_contended(|| async move {
            Ok(on_pool!(pool, |p| sqlx::query(SQL)
                .bind(cutoff)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))?)
        })
        .await
    }

    /// Forgets expired request ids now and every `every` from now on.
    pub fn spawn_request_expiry(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let cutoff = now_micros() - REQUEST_ID_RETENTION_MICROS;
                match store.forget_requests_before(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(forgotten = n, "expired request ids removed"),
                    Err(e) => tracing::warn!(error = %e.detail(), "request id expiry failed"),
                }
            }
        })
    }
}

impl TodoStore for SqlTodoStore {
    async fn create(&self, user: &UserId, content: &Content) -> Result<i32, WriteError> {
        let created = now_micros();
        let quota = self.quota;
        match &self.pool {
            Pool::MySql(_, mariadb) => {
                retry_contended(|| procedures::create(mariadb, user, content, created, quota)).await
            }
            Pool::Sqlite(..) => {
                self.pool
                    .sqlite_write(|conn| statements::create(conn, user, content, created, quota))
                    .await
            }
        }
    }

    async fn create_once(
        &self,
        user: &UserId,
        content: &Content,
        request: &RequestId,
    ) -> Result<CreateOnce, WriteError> {
        let fingerprint = content.fingerprint();
        let quota = self.quota;
        let mariadb = match &self.pool {
            Pool::Sqlite(..) => {
                // One transaction on the writer connection, on this thread.
                return self
                    .pool
                    .sqlite_write(|conn| {
                        statements::create_once(conn, user, content, request, &fingerprint, quota)
                    })
                    .await;
            }
            Pool::MySql(_, mariadb) => mariadb,
        };
        // One call of the procedure, which holds the user's usage slot for
        // its transaction: the entry, its request id and the usage change
        // are stored together or not at all, and a repeat is answered before
        // the quota is consulted, so the retry of a create that filled the
        // quota still gets its id. Two concurrent first calls with one key
        // through one node queue on the slot; should both still insert
        // (through two Galera nodes, where the loser of certification is
        // retried), the second one's key violates the primary key, its
        // transaction rolls back and it answers with the first one's id.
        let attempt = retry_contended(|| {
            procedures::create_once(mariadb, user, content, request, &fingerprint, quota)
        })
        .await;
        match attempt {
            Err(WriteError::Store(StoreError::Conflict { .. })) => {
                let earlier: Option<EarlierRequest> =
                    on_pool!(&self.pool, |p| sqlx::query_as(EARLIER_REQUEST)
                        .bind(user.as_str())
                        .bind(request.as_str())
                        .fetch_optional(p)
                        .await)
                    .map_err(StoreError::from)?;
                Ok(earlier
                    .map(|earlier| judge_repeat(&earlier, &fingerprint))
                    .ok_or_else(|| StoreError::internal("request id conflict without a row"))?)
            }
            other => other,
        }
    }

    async fn get(&self, user: &UserId, id: TodoId) -> Result<Option<TodoRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM todos WHERE id = ? AND user_id = ?"
        );
        let mariadb = match &self.pool {
            Pool::Sqlite(_, sqlite) => {
                return sqlite.reads().read(|conn| {
                    use rusqlite::OptionalExtension;
                    conn.prepare_cached(SQL)?
                        .query_row((id.0, user.as_str()), read_row)
                        .optional()
                })
            }
            Pool::MySql(_, mariadb) => mariadb,
        };
        let mut lease = mariadb.lease().await?;
        let row = sqlx::query_as::<_, Row>(SQL)
            .bind(id.0)
            .bind(user.as_str())
            .fetch_optional(lease.connection())
            .await;
        Ok(lease.finish(row)?.map(TodoRecord::from))
    }

    async fn update(
        &self,
        user: &UserId,
        id: TodoId,
        content: &Content,
    ) -> Result<bool, WriteError> {
        let updated = now_micros();
        let quota = self.quota;
        match &self.pool {
            Pool::MySql(_, mariadb) => {
                retry_contended(|| procedures::update(mariadb, user, id, content, updated, quota))
                    .await
            }
            Pool::Sqlite(..) => {
                self.pool
                    .sqlite_write(|conn| {
                        statements::update(conn, user, id, content, updated, quota)
                    })
                    .await
            }
        }
    }

    async fn delete(&self, user: &UserId, id: TodoId) -> Result<bool, StoreError> {
        match &self.pool {
            Pool::MySql(_, mariadb) => {
                retry_contended(|| procedures::delete(mariadb, user, id)).await
            }
            Pool::Sqlite(..) => {
                self.pool
                    .sqlite_write(|conn| statements::delete(conn, user, id))
                    .await
            }
        }
    }

    async fn list(
        &self,
        user: &UserId,
        page: Page,
        max_bytes: usize,
    ) -> Result<Vec<TodoRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM todos WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?"
        );
        // Rows are read one at a time, so a page of large entries never sits
        // in memory beyond the budget.
        let mariadb = match &self.pool {
            Pool::Sqlite(_, sqlite) => {
                return sqlite.reads().read(|conn| {
                    let mut statement = conn.prepare_cached(SQL)?;
                    let mut found = statement.query((user.as_str(), page.after, page.limit))?;
                    let mut records = Vec::new();
                    let mut bytes = 0usize;
                    while let Some(row) = found.next()? {
                        let record = read_row(row)?;
                        bytes += record.title.len() + record.text.len();
                        records.push(record);
                        if bytes > max_bytes {
                            break;
                        }
                    }
                    Ok(records)
                })
            }
            Pool::MySql(_, mariadb) => mariadb,
        };
        let mut lease = mariadb.lease().await?;
        let conn = lease.connection();
        let rows = async {
            let mut stream = sqlx::query_as::<_, Row>(SQL)
                .bind(user.as_str())
                .bind(page.after)
                .bind(i64::from(page.limit))
                .fetch(&mut *conn);
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            let mut cut_short = false;
            while let Some(row) = stream.try_next().await? {
                bytes += row.1.len() + row.2.len();
                rows.push(row);
                if bytes > max_bytes {
                    cut_short = true;
                    break;
                }
            }
            drop(stream);
            if cut_short {
                // Reads the rest of the result off the connection now, so
                // the server finishes the statement before the connection
                // waits idle.
                sqlx::Connection::ping(&mut *conn).await?;
            }
            Ok::<_, sqlx::Error>(rows)
        }
        .await;
        let rows = lease.finish(rows)?;
        Ok(rows.into_iter().map(TodoRecord::from).collect())
    }
}

/// SQLite's write paths, run on the calling thread under the service's
/// write lock ([`todoapp_db::Pool::sqlite_write`]): one statement each,
/// with the quota check in its WHERE clause and the usage counted by the
/// triggers of migration `20261130000030_usage_triggers.sql`.
mod statements {
    use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
    use todoapp_db::StoreError;

    use super::{
        judge_repeat, still_remembered, CreateOnce, EarlierRequest, EARLIER_REQUEST,
        REMEMBER_REQUEST, REPLACE_EXPIRED_REQUEST,
    };
    use crate::domain::{Content, RequestId, TodoId, UserId};
    use crate::quota::{stored_bytes, QuotaSettings, Usage, WriteError};

    const USAGE: &str = "SELECT COALESCE(SUM(entries), 0), COALESCE(SUM(bytes), 0) FROM todo_usage WHERE user_id = ?";
    const ENTRY_BYTES: &str = "SELECT LENGTH(CAST(title AS BLOB)) + LENGTH(CAST(text AS BLOB)) FROM todos WHERE id = ? AND user_id = ?";

    fn failed(error: rusqlite::Error) -> WriteError {
        StoreError::from(error).into()
    }

    fn usage(conn: &Connection, user: &UserId) -> Result<Usage, WriteError> {
        let (entries, bytes) = conn
            .prepare_cached(USAGE)
            .and_then(|mut usage| {
                usage.query_row([user.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
            })
            .map_err(failed)?;
        Ok(Usage { entries, bytes })
    }

    /// A write the statement's quota check refused: which quota, by the
    /// same rule in Rust (the write lock is still held, so the usage read
    /// now is the one the statement saw).
    fn refusal(admitted: Result<(), crate::quota::QuotaExceeded>) -> WriteError {
        match admitted {
            Err(quota) => quota.into(),
            Ok(()) => {
                StoreError::internal("a write was refused although its quota admits it").into()
            }
        }
    }

    pub(super) fn create(
        conn: &Connection,
        user: &UserId,
        content: &Content,
        created: i64,
        quota: QuotaSettings,
    ) -> Result<i32, WriteError> {
        const SQL: &str = "INSERT INTO todos (user_id, title, text, done, created_at) \
            SELECT ?1, ?2, ?3, ?4, ?5 \
            WHERE (SELECT COALESCE(SUM(entries), 0) FROM todo_usage WHERE user_id = ?1) < ?6 \
            AND (SELECT COALESCE(SUM(bytes), 0) FROM todo_usage WHERE user_id = ?1) + ?7 <= ?8 \
            RETURNING id";
        let bytes = stored_bytes(content);
        let (max_entries, max_bytes) = quota.sql_limits();
        let mut insert = conn.prepare_cached(SQL).map_err(failed)?;
        // Read to the end: the statement (and so its transaction) is done
        // before the lock is released.
        let ids: Vec<i32> = insert
            .query_map(
                rusqlite::params![
                    user.as_str(),
                    content.title,
                    content.text,
                    content.done.unwrap_or(false),
                    created,
                    max_entries,
                    bytes,
                    max_bytes,
                ],
                |row| row.get(0),
            )
            .and_then(|rows| rows.collect())
            .map_err(failed)?;
        match ids.first() {
            Some(&id) => Ok(id),
            None => Err(refusal(quota.admits_create(usage(conn, user)?, bytes))),
        }
    }

    /// The idempotent create in one transaction: a repeat is answered
    /// before the quota is consulted (so the retry of a create that filled
    /// the quota still gets its id), and the entry and its request id are
    /// stored together or not at all. The write lock keeps any other
    /// writer out meanwhile.
    pub(super) fn create_once(
        conn: &Connection,
        user: &UserId,
        content: &Content,
        request: &RequestId,
        fingerprint: &[u8],
        quota: QuotaSettings,
    ) -> Result<CreateOnce, WriteError> {
        const INSERT: &str = "INSERT INTO todos (user_id, title, text, done, created_at) \
            VALUES (?, ?, ?, ?, ?) RETURNING id";
        let now = super::now_micros();
        // Dropped without a commit (an early answer, an error): rolled back.
        let tx =
            Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(failed)?;
        let earlier: Option<EarlierRequest> = tx
            .prepare_cached(EARLIER_REQUEST)
            .and_then(|mut earlier| {
                earlier
                    .query_row((user.as_str(), request.as_str()), |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
            })
            .map_err(failed)?;
        if let Some(earlier) = earlier.as_ref().filter(|e| still_remembered(e, now)) {
            return Ok(judge_repeat(earlier, fingerprint));
        }
        let bytes = stored_bytes(content);
        quota.admits_create(usage(&tx, user)?, bytes)?;
        let id: i32 = tx
            .prepare_cached(INSERT)
            .and_then(|mut insert| {
                insert.query_row(
                    rusqlite::params![
                        user.as_str(),
                        content.title,
                        content.text,
                        content.done.unwrap_or(false),
                        now,
                    ],
                    |row| row.get(0),
                )
            })
            .map_err(failed)?;
        // An expired id not yet cleaned up is reused in place.
        let remember = if earlier.is_some() {
            REPLACE_EXPIRED_REQUEST
        } else {
            REMEMBER_REQUEST
        };
        tx.prepare_cached(remember)
            .and_then(|mut remember| {
                remember.execute(rusqlite::params![
                    id,
                    fingerprint,
                    now,
                    user.as_str(),
                    request.as_str(),
                ])
            })
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(CreateOnce::Created(id))
    }

    pub(super) fn update(
        conn: &Connection,
        user: &UserId,
        id: TodoId,
        content: &Content,
        updated: i64,
        quota: QuotaSettings,
    ) -> Result<bool, WriteError> {
        // Shrinking is always admitted, even over a lowered quota.
        const SQL: &str =
            "UPDATE todos SET title = ?1, text = ?2, done = COALESCE(?3, done), updated_at = ?4 \
            WHERE id = ?5 AND user_id = ?6 \
            AND (?7 <= LENGTH(CAST(title AS BLOB)) + LENGTH(CAST(text AS BLOB)) \
            OR (SELECT COALESCE(SUM(bytes), 0) FROM todo_usage WHERE user_id = ?6) \
            - LENGTH(CAST(title AS BLOB)) - LENGTH(CAST(text AS BLOB)) + ?7 <= ?8)";
        let bytes = stored_bytes(content);
        let changed = conn
            .prepare_cached(SQL)
            .and_then(|mut update| {
                update.execute(rusqlite::params![
                    content.title,
                    content.text,
                    content.done,
                    updated,
                    id.0,
                    user.as_str(),
                    bytes,
                    quota.sql_limits().1,
                ])
            })
            .map_err(failed)?;
        if changed > 0 {
            return Ok(true);
        }
        let old: Option<i64> = conn
            .prepare_cached(ENTRY_BYTES)
            .and_then(|mut old| {
                old.query_row((id.0, user.as_str()), |row| row.get(0))
                    .optional()
            })
            .map_err(failed)?;
        match old {
            None => Ok(false),
            Some(old) => Err(refusal(quota.admits_update(usage(conn, user)?, old, bytes))),
        }
    }

    pub(super) fn delete(conn: &Connection, user: &UserId, id: TodoId) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM todos WHERE id = ? AND user_id = ?";
        let deleted = conn
            .prepare_cached(SQL)
            .and_then(|mut delete| delete.execute((id.0, user.as_str())))?;
        Ok(deleted > 0)
    }
}

/// MariaDB's write paths: one call each of the procedures in migrations
/// `20261130000030_write_procedures.sql` and
/// `20261202000010_create_once_procedure.sql`, which run in one round trip
/// to the server what was a transaction of six to eight statements.
mod procedures {
    use todoapp_db::{now_micros, MariaDbStatements, StoreError};

    use super::{CreateOnce, REQUEST_ID_RETENTION_MICROS};
    use crate::domain::{Content, RequestId, TodoId, UserId};
    use crate::quota::{QuotaExceeded, QuotaSettings, WriteError};

    /// The procedures' first column: what the write did.
    const STORED: i64 = 0;
    const REFUSED_ENTRIES: i64 = 1;
    const REFUSED_BYTES: i64 = 2;
    const NO_SUCH_ENTRY: i64 = 3;

    /// Whether the entry was written (`false`: it does not exist).
    fn found(code: i64) -> Result<bool, StoreError> {
        match code {
            STORED => Ok(true),
            NO_SUCH_ENTRY => Ok(false),
            other => Err(StoreError::internal(format!(
                "write procedure answered {other}"
            ))),
        }
    }

    /// [`found`], or the quota that refused the write.
    fn admitted(code: i64, quota: QuotaSettings) -> Result<bool, WriteError> {
        match code {
            REFUSED_ENTRIES => Err(QuotaExceeded::Entries {
                limit: quota.max_entries,
            }
            .into()),
            REFUSED_BYTES => Err(QuotaExceeded::Bytes {
                limit: quota.max_bytes,
            }
            .into()),
            code => Ok(found(code)?),
        }
    }

    pub(super) async fn create(
        mariadb: &MariaDbStatements,
        user: &UserId,
        content: &Content,
        created: i64,
        quota: QuotaSettings,
    ) -> Result<i32, WriteError> {
        let mut lease = mariadb.lease().await.map_err(StoreError::from)?;
        let answer = sqlx::query_as("CALL todo_create(?, ?, ?, ?, ?, ?, ?)")
            .bind(user.as_str())
            .bind(&content.title)
            .bind(&content.text)
            .bind(content.done.unwrap_or(false))
            .bind(created)
            .bind(quota.sql_limits().0)
            .bind(quota.sql_limits().1)
            .fetch_one(lease.connection())
            .await;
        let (code, id): (i64, i64) = lease.finish(answer).map_err(StoreError::from)?;
        admitted(code, quota)?;
        i32::try_from(id)
            .map_err(|_| StoreError::internal(format!("todo id {id} out of range")).into())
    }

    /// `todo_create_once`'s outcomes beyond [`admitted`]'s.
    const REPEATED: i64 = 4;
    const MISMATCH: i64 = 5;

    /// An idempotent create (migration
    /// `20261202000010_create_once_procedure.sql`).
    pub(super) async fn create_once(
        mariadb: &MariaDbStatements,
        user: &UserId,
        content: &Content,
        request: &RequestId,
        fingerprint: &[u8],
        quota: QuotaSettings,
    ) -> Result<CreateOnce, WriteError> {
        let now = now_micros();
        let mut lease = mariadb.lease().await.map_err(StoreError::from)?;
        let answer = sqlx::query_as("CALL todo_create_once(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(user.as_str())
            .bind(request.as_str())
            .bind(fingerprint)
            .bind(&content.title)
            .bind(&content.text)
            .bind(content.done.unwrap_or(false))
            .bind(now)
            .bind(now - REQUEST_ID_RETENTION_MICROS)
            .bind(quota.sql_limits().0)
            .bind(quota.sql_limits().1)
            .fetch_one(lease.connection())
            .await;
        let (code, id): (i64, i64) = lease.finish(answer).map_err(StoreError::from)?;
        let id = i32::try_from(id)
            .map_err(|_| StoreError::internal(format!("todo id {id} out of range")))?;
        match code {
            REPEATED => Ok(CreateOnce::Repeated(id)),
            MISMATCH => Ok(CreateOnce::Mismatch),
            code => {
                admitted(code, quota)?;
                Ok(CreateOnce::Created(id))
            }
        }
    }

    pub(super) async fn update(
        mariadb: &MariaDbStatements,
        user: &UserId,
        id: TodoId,
        content: &Content,
        updated: i64,
        quota: QuotaSettings,
    ) -> Result<bool, WriteError> {
        let mut lease = mariadb.lease().await.map_err(StoreError::from)?;
        let answer = sqlx::query_scalar("CALL todo_update(?, ?, ?, ?, ?, ?, ?)")
            .bind(id.0)
            .bind(user.as_str())
            .bind(&content.title)
            .bind(&content.text)
            .bind(content.done)
            .bind(updated)
            .bind(quota.sql_limits().1)
            .fetch_one(lease.connection())
            .await;
        let code: i64 = lease.finish(answer).map_err(StoreError::from)?;
        admitted(code, quota)
    }

    pub(super) async fn delete(
        mariadb: &MariaDbStatements,
        user: &UserId,
        id: TodoId,
    ) -> Result<bool, StoreError> {
        let mut lease = mariadb.lease().await?;
        let answer = sqlx::query_scalar("CALL todo_delete(?, ?)")
            .bind(id.0)
            .bind(user.as_str())
            .fetch_one(lease.connection())
            .await;
        let code: i64 = lease.finish(answer)?;
        found(code)
    }
}
