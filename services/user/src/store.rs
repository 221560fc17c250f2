//! The user service's storage interface and its sqlx implementation
//! (SQLite and MariaDB, same portable SQL).

use std::future::Future;

use todoapp_db::{now_micros, on_pool, retry_contended, Kind, Pool, StoreError};

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: String,
    pub password_hash: String,
}

/// The unique fields of a user, as the error that names one reports it.
pub fn unique_field(constraint: &str) -> Option<&'static str> {
    // MariaDB names the index; SQLite names the indexed column.
    match constraint {
        "users_username" | "users.username" => Some("username"),
        "users_email" | "users.email" => Some("email"),
        _ => None,
    }
}

pub trait UserStore: Send + Sync + 'static {
    /// Which of `username` (exact) and `email` (stored lower-cased) is
    /// already registered, username first. A cheap check before hashing; the
    /// unique indexes still decide between concurrent registrations.
    fn taken(
        &self,
        username: &str,
        email: &str,
    ) -> impl Future<Output = Result<Option<&'static str>, StoreError>> + Send;
    /// Fails with [`StoreError::Conflict`] when the username or email is taken.
    fn insert(&self, user: &NewUser) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn credentials(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<Credentials>, StoreError>> + Send;
}

#[derive(Debug, Clone)]
pub struct SqlUserStore {
    pool: Pool,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

impl SqlUserStore {
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

impl UserStore for SqlUserStore {
    async fn taken(&self, username: &str, email: &str) -> Result<Option<&'static str>, StoreError> {
        for (field, sql) in [
            ("username", "SELECT 1 FROM users WHERE username = ?"),
            ("email", "SELECT 1 FROM users WHERE email = ?"),
        ] {
            let value = if field == "username" { username } else { email };
            let found = on_pool!(&self.pool, |p| sqlx::query(sql)
                .bind(value)
                .fetch_optional(p)
                .await
                .map(|row| row.is_some()))?;
            if found {
                return Ok(Some(field));
            }
        }
        Ok(None)
    }

    async fn insert(&self, user: &NewUser) -> Result<(), StoreError> {
        let _writer = self.pool.write_lock().await;
        const SQL: &str = "INSERT INTO users (id, username, email, password_hash, created_at) VALUES (?, ?, ?, ?, ?)";
        let created = now_micros();
        let pool = &self.pool;
        // On Galera, a registration racing one through another node for the
        // same username loses certification; retried, it meets the unique
        // index and reports the conflict.
        retry_contended(|| async move {
            Ok(on_pool!(pool, |p| sqlx::query(SQL)
                .bind(&user.id)
                .bind(&user.username)
                .bind(&user.email)
                .bind(&user.password_hash)
                .bind(created)
                .execute(p)
                .await
                .map(|_| ()))?)
        })
        .await
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>, StoreError> {
        const SQL: &str = "SELECT id, password_hash FROM users WHERE username = ?";
        let row: Option<(String, String)> = on_pool!(&self.pool, |p| sqlx::query_as(SQL)
            .bind(username)
            .fetch_optional(p)
            .await)?;
        Ok(row.map(|(id, password_hash)| Credentials { id, password_hash }))
    }
}
