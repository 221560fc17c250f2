//! The todo service's storage interface and its sqlx implementation
//! (SQLite and MariaDB, same portable SQL).

use std::future::Future;

use futures_util::TryStreamExt;

use todoapp_db::{now_micros, on_pool, Kind, Pool, StoreError};

use crate::domain::{Content, Page, TodoId, UserId};

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

/// Every operation is scoped to one user: another user's entries do not exist.
pub trait TodoStore: Send + Sync + 'static {
    fn create(
        &self,
        user: &UserId,
        content: &Content,
    ) -> impl Future<Output = Result<i32, StoreError>> + Send;
    fn get(
        &self,
        user: &UserId,
        id: TodoId,
    ) -> impl Future<Output = Result<Option<TodoRecord>, StoreError>> + Send;
    /// Whether the entry existed (and so was updated).
    fn update(
        &self,
        user: &UserId,
        id: TodoId,
        content: &Content,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
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
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

impl SqlTodoStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.pool
            .migrate(&SQLITE_MIGRATIONS, &MYSQL_MIGRATIONS)
            .await
    }

    pub fn kind(&self) -> Kind {
        self.pool.kind()
    }
}

const COLUMNS: &str = "id, title, text, done, created_at, updated_at";

impl TodoStore for SqlTodoStore {
    async fn create(&self, user: &UserId, content: &Content) -> Result<i32, StoreError> {
        let _writer = self.pool.write_lock().await;
        // RETURNING works on SQLite ≥ 3.35 and MariaDB ≥ 10.5.
        const SQL: &str = "INSERT INTO todos (user_id, title, text, done, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id";
        let created = now_micros();
        let id: i32 = on_pool!(&self.pool, |p| sqlx::query_scalar(SQL)
            .bind(user.as_str())
            .bind(&content.title)
            .bind(&content.text)
            .bind(content.done.unwrap_or(false))
            .bind(created)
            .fetch_one(p)
            .await)?;
        Ok(id)
    }

    async fn get(&self, user: &UserId, id: TodoId) -> Result<Option<TodoRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM todos WHERE id = ? AND user_id = ?");
        let row: Option<Row> = on_pool!(&self.pool, |p| sqlx::query_as(&sql)
            .bind(id.0)
            .bind(user.as_str())
            .fetch_optional(p)
            .await)?;
        Ok(row.map(TodoRecord::from))
    }

    async fn update(
        &self,
        user: &UserId,
        id: TodoId,
        content: &Content,
    ) -> Result<bool, StoreError> {
        let _writer = self.pool.write_lock().await;
        const SQL: &str = "UPDATE todos SET title = ?, text = ?, done = COALESCE(?, done), updated_at = ? WHERE id = ? AND user_id = ?";
        let updated = now_micros();
        let affected = on_pool!(&self.pool, |p| sqlx::query(SQL)
            .bind(&content.title)
            .bind(&content.text)
            .bind(content.done)
            .bind(updated)
            .bind(id.0)
            .bind(user.as_str())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(affected > 0)
    }

    async fn delete(&self, user: &UserId, id: TodoId) -> Result<bool, StoreError> {
        let _writer = self.pool.write_lock().await;
        const SQL: &str = "DELETE FROM todos WHERE id = ? AND user_id = ?";
        let affected = on_pool!(&self.pool, |p| sqlx::query(SQL)
            .bind(id.0)
            .bind(user.as_str())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(affected > 0)
    }

    async fn list(
        &self,
        user: &UserId,
        page: Page,
        max_bytes: usize,
    ) -> Result<Vec<TodoRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM todos WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?");
        // Rows are streamed, so a page of large entries never sits in
        // memory beyond the budget.
        let rows: Vec<Row> = on_pool!(&self.pool, |p| async {
            let mut stream = sqlx::query_as::<_, Row>(&sql)
                .bind(user.as_str())
                .bind(page.after)
                .bind(i64::from(page.limit))
                .fetch(p);
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = stream.try_next().await? {
                bytes += row.1.len() + row.2.len();
                rows.push(row);
                if bytes > max_bytes {
                    break;
                }
            }
            Ok::<_, sqlx::Error>(rows)
        }
        .await)?;
        Ok(rows.into_iter().map(TodoRecord::from).collect())
    }
}
