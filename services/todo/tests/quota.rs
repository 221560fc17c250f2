//! Per-user quotas, checked against SQLite and a real MariaDB: atomic under
//! concurrency, both limits, updates that grow, deletes that free, and the
//! migration that counts entries stored before quotas existed.

use std::path::Path;

use todoapp_db::{connect, DatabaseSettings, Pool};
use todoapp_runtime::Secret;
use todoapp_todo::domain::{Content, Page, RequestId, TodoId, UserId};
use todoapp_todo::quota::{QuotaExceeded, QuotaSettings, WriteError};
use todoapp_todo::store::{CreateOnce, SqlTodoStore, TodoStore};

/// Bytes of an entry of maximal size: 200 and 2000 four-byte characters.
const MAX_ENTRY: u64 = 8800;

fn settings(url: String) -> DatabaseSettings {
    DatabaseSettings {
        url: Secret::new(url),
        ..DatabaseSettings::sqlite("unused")
    }
}

async fn sqlite_pool(dir: &Path) -> Pool {
    let url = format!("sqlite://{}", dir.join("todo.db").display());
    connect(&settings(url)).await.expect("connect")
}

async fn mariadb_pool(prefix: &str) -> Pool {
    let url = todoapp_devkit::mariadb::test_database(prefix)
        .await
        .expect("MariaDB for tests");
    connect(&settings(url)).await.expect("connect")
}

fn user(n: u8) -> UserId {
    UserId::parse(&format!("{n:08x}-1111-4111-8111-111111111111")).expect("uuid")
}

fn content(title: &str, text: &str) -> Content {
    Content::new(title.into(), text.into(), None).expect("valid content")
}

async fn store(pool: Pool, quota: QuotaSettings) -> SqlTodoStore {
    let store = SqlTodoStore::new(pool).with_quota(quota);
    store.migrate().await.expect("migrate");
    store
}

async fn count(store: &SqlTodoStore, user: &UserId) -> usize {
    store
        .list(
            user,
            Page {
                after: 0,
                limit: 1000,
            },
            usize::MAX,
        )
        .await
        .expect("list")
        .len()
}

/// How the creates of [`concurrent_creates`] are sent.
#[derive(Clone, Copy)]
enum Creates {
    Plain,
    /// Idempotent creates, each with a request id of its own.
    EachWithAFreshKey,
}

/// 64 creates at once, each of `entry` bytes, against `quota`: returns how
/// many were stored and checks every refusal names the quota.
async fn concurrent_creates(
    store: &SqlTodoStore,
    who: &UserId,
    entry: &Content,
    expected: QuotaExceeded,
    how: Creates,
) -> usize {
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, who, entry) = (store.clone(), who.clone(), entry.clone());
            tokio::spawn(async move {
                match how {
                    Creates::Plain => store.create(&who, &entry).await.map(drop),
                    Creates::EachWithAFreshKey => {
                        match store.create_once(&who, &entry, &fresh_key()).await? {
                            CreateOnce::Created(_) => Ok(()),
                            other => panic!("a fresh key was seen before: {other:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(()) => stored += 1,
            Err(WriteError::Quota(exceeded)) => assert_eq!(exceeded, expected),
            Err(other) => panic!("unexpected store error: {other:?}"),
        }
    }
    stored
}

/// Deletes the user's `n` oldest entries.
async fn delete_oldest(store: &SqlTodoStore, who: &UserId, n: u32) {
    let oldest = store
        .list(who, Page { after: 0, limit: n }, usize::MAX)
        .await
        .expect("list");
    assert_eq!(oldest.len(), n as usize);
    for entry in &oldest {
        assert!(store.delete(who, TodoId(entry.id)).await.expect("delete"));
    }
}

async fn entry_quota_holds_under_concurrency(pool: Pool) {
    let store = store(
        pool,
        QuotaSettings {
            max_entries: 20,
            max_bytes: 1_000_000,
        },
    )
    .await;
    let (ann, bob) = (user(1), user(2));
    for i in 0..10 {
        store
            .create(&ann, &content(&format!("t{i}"), ""))
            .await
            .expect("under quota");
    }
    let stored = concurrent_creates(
        &store,
        &ann,
        &content("edge", ""),
        QuotaExceeded::Entries { limit: 20 },
        Creates::Plain,
    )
    .await;
    assert_eq!(stored, 10, "exactly the quota's remainder was stored");
    assert_eq!(count(&store, &ann).await, 20);

    // Full: refused, nothing stored. Another user has a quota of their own.
    let refused = store.create(&ann, &content("one more", "")).await;
    assert!(matches!(
        refused,
        Err(WriteError::Quota(QuotaExceeded::Entries { limit: 20 }))
    ));
    assert_eq!(count(&store, &ann).await, 20);
    store
        .create(&bob, &content("bob's", ""))
        .await
        .expect("bob has room");

    // A delete frees exactly one slot.
    delete_oldest(&store, &ann, 1).await;
    store
        .create(&ann, &content("freed", ""))
        .await
        .expect("room after delete");
    assert!(store.create(&ann, &content("again", "")).await.is_err());
    assert_eq!(count(&store, &ann).await, 20);

    // Idempotent creates hold the same quota under concurrency.
    delete_oldest(&store, &ann, 5).await;
    let stored = concurrent_creates(
        &store,
        &ann,
        &content("edge once", ""),
        QuotaExceeded::Entries { limit: 20 },
        Creates::EachWithAFreshKey,
    )
    .await;
    assert_eq!(stored, 5, "exactly the quota's remainder was stored");
    assert_eq!(count(&store, &ann).await, 20);

    // The create that filled the quota, repeated, still gets its id; a
    // refused one leaves its key unused.
    delete_oldest(&store, &ann, 1).await;
    let (filling, refused) = (fresh_key(), fresh_key());
    let CreateOnce::Created(id) = store
        .create_once(&ann, &content("fills it", ""), &filling)
        .await
        .expect("room for one")
    else {
        panic!("a fresh key creates");
    };
    assert_eq!(
        store
            .create_once(&ann, &content("fills it", ""), &filling)
            .await
            .expect("a repeat when full"),
        CreateOnce::Repeated(id)
    );
    assert!(matches!(
        store
            .create_once(&ann, &content("refused", ""), &refused)
            .await,
        Err(WriteError::Quota(QuotaExceeded::Entries { limit: 20 }))
    ));
    assert!(store.delete(&ann, TodoId(id)).await.expect("delete"));
    assert!(matches!(
        store
            .create_once(&ann, &content("refused", ""), &refused)
            .await
            .expect("room again"),
        CreateOnce::Created(_)
    ));
    assert_eq!(count(&store, &ann).await, 20);
}

fn fresh_key() -> RequestId {
    RequestId::parse(&uuid::Uuid::new_v4().to_string())
        .expect("uuid")
        .expect("present")
}

async fn byte_quota_holds_under_concurrency(pool: Pool) {
    let store = store(
        pool,
        QuotaSettings {
            max_entries: 10_000,
            max_bytes: 3 * MAX_ENTRY,
        },
    )
    .await;
    let ann = user(3);
    // 2001 bytes each: 13 fit in 26400 bytes.
    let entry = content("t", &"x".repeat(2000));
    let stored = concurrent_creates(
        &store,
        &ann,
        &entry,
        QuotaExceeded::Bytes {
            limit: 3 * MAX_ENTRY,
        },
        Creates::Plain,
    )
    .await;
    assert_eq!(stored, 13);
    assert_eq!(count(&store, &ann).await, 13);
    // A smaller entry still fits in what is left (26400 - 13 * 2001 = 387).
    store
        .create(&ann, &content("t", &"y".repeat(386)))
        .await
        .expect("fits exactly");
    assert!(matches!(
        store.create(&ann, &content("z", "")).await,
        Err(WriteError::Quota(QuotaExceeded::Bytes { .. }))
    ));
}

async fn updates_may_not_grow_past_the_byte_quota(pool: Pool) {
    let store = store(
        pool,
        QuotaSettings {
            max_entries: 10_000,
            max_bytes: 17_000,
        },
    )
    .await;
    let ann = user(4);
    let big = content(&"🎉".repeat(200), &"😀".repeat(2000));
    let a = store.create(&ann, &big).await.expect("8800 bytes");
    let b = store.create(&ann, &content("b", "")).await.expect("1 byte");

    // 8800 + 8800 > 17000: refused, b unchanged.
    let refused = store.update(&ann, TodoId(b), &big).await;
    assert!(
        matches!(
            refused,
            Err(WriteError::Quota(QuotaExceeded::Bytes { limit: 17_000 }))
        ),
        "{refused:?}"
    );
    let unchanged = store
        .get(&ann, TodoId(b))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (unchanged.title.as_str(), unchanged.updated_at),
        ("b", None)
    );

    // Growing within the quota is fine: 8800 + 8200 = 17000.
    let grown = content(&"ü".repeat(100), &"😀".repeat(2000));
    assert_eq!(grown.title.len() + grown.text.len(), 8200);
    assert!(store.update(&ann, TodoId(b), &grown).await.expect("fits"));
    // Now full: not one more byte; shrinking is always allowed.
    assert!(store.create(&ann, &content("c", "")).await.is_err());
    assert!(store
        .update(&ann, TodoId(a), &content("small", ""))
        .await
        .expect("shrink"));
    // The freed bytes are usable again.
    store
        .create(&ann, &content("c", &"x".repeat(2000)))
        .await
        .expect("room after shrinking");
    // Updating an entry that does not exist changes nothing.
    assert!(!store
        .update(&ann, TodoId(i32::MAX), &big)
        .await
        .expect("missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_entry_quota_holds_under_concurrency() {
    let dir = tempfile::tempdir().expect("tempdir");
    entry_quota_holds_under_concurrency(sqlite_pool(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_entry_quota_holds_under_concurrency() {
    entry_quota_holds_under_concurrency(mariadb_pool("todo_quota_entries").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_byte_quota_holds_under_concurrency() {
    let dir = tempfile::tempdir().expect("tempdir");
    byte_quota_holds_under_concurrency(sqlite_pool(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_byte_quota_holds_under_concurrency() {
    byte_quota_holds_under_concurrency(mariadb_pool("todo_quota_bytes").await).await;
}

#[tokio::test]
async fn sqlite_updates_may_not_grow_past_the_byte_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    updates_may_not_grow_past_the_byte_quota(sqlite_pool(dir.path()).await).await;
}

#[tokio::test]
async fn mariadb_updates_may_not_grow_past_the_byte_quota() {
    updates_may_not_grow_past_the_byte_quota(mariadb_pool("todo_quota_updates").await).await;
}

/// Every kind of write keeps the usage equal to what is stored: creates,
/// idempotent creates and their repeats, updates that grow and shrink, and
/// deletes, through the engine's own counting (SQLite: triggers; MariaDB:
/// the write procedures and create_once's transaction), never counted twice.
async fn usage_matches_the_entries_after_every_kind_of_write(pool: Pool) {
    let store = store(pool.clone(), QuotaSettings::default()).await;
    let (ann, bob) = (user(7), user(8));
    let a = store
        .create(&ann, &content("🎉", "ab"))
        .await
        .expect("create");
    let b = store
        .create(&ann, &content("x", "ü"))
        .await
        .expect("create");
    let key = RequestId::parse("7f1c2b3a-4d5e-4f60-8a7b-1c2d3e4f5a6b")
        .expect("uuid")
        .expect("present");
    let once = content("once", "only");
    store
        .create_once(&ann, &once, &key)
        .await
        .expect("create once");
    store.create_once(&ann, &once, &key).await.expect("repeat");
    store
        .create(&bob, &content("bob", ""))
        .await
        .expect("create");
    assert!(store
        .update(&ann, TodoId(a), &content("grown", "longer text"))
        .await
        .expect("grow"));
    // The same size: MariaDB's procedure then leaves the usage untouched.
    assert!(store
        .update(&ann, TodoId(a), &content("GROWN", "LONGER TEXT"))
        .await
        .expect("same size"));
    let same = store.get(&ann, TodoId(a)).await.expect("get").expect("a");
    assert_eq!(
        (same.title.as_str(), same.text.as_str()),
        ("GROWN", "LONGER TEXT")
    );
    assert!(store
        .update(&ann, TodoId(b), &content("s", ""))
        .await
        .expect("shrink"));
    assert!(store.delete(&ann, TodoId(b)).await.expect("delete"));
    assert!(!store.delete(&ann, TodoId(b)).await.expect("delete again"));
    assert!(!store
        .update(&bob, TodoId(a), &content("not", "bob's"))
        .await
        .expect("another user's entry"));

    for (who, expected) in [(&ann, (2, 5 + 11 + 4 + 4)), (&bob, (1, 3))] {
        let usage: (i64, i64) = todoapp_db::on_pool!(&pool, |p| sqlx::query_as(
            "SELECT CAST(SUM(entries) AS SIGNED), CAST(SUM(bytes) AS SIGNED) FROM todo_usage WHERE user_id = ?"
        )
        .bind(who.as_str())
        .fetch_one(p)
        .await)
        .expect("usage");
        assert_eq!(usage, expected, "usage of {}", who.as_str());
    }
}

#[tokio::test]
async fn sqlite_usage_matches_the_entries_after_every_kind_of_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    usage_matches_the_entries_after_every_kind_of_write(sqlite_pool(dir.path()).await).await;
}

#[tokio::test]
async fn mariadb_usage_matches_the_entries_after_every_kind_of_write() {
    usage_matches_the_entries_after_every_kind_of_write(mariadb_pool("todo_usage_kinds").await)
        .await;
}

/// MariaDB's writes run as procedures that open their own transaction
/// (migration `write_procedures`): one that fails inside must roll back and
/// leave its connection outside any transaction, or the next call on that
/// pooled connection would run inside the failed one. The failure here is a
/// title too long for its column, which only a caller skipping `Content`'s
/// validation can send.
#[tokio::test]
async fn mariadb_a_failed_write_rolls_back_and_leaves_no_transaction_open() {
    let url = todoapp_devkit::mariadb::test_database("todo_proc_rollback")
        .await
        .expect("MariaDB for tests");
    let pool = connect(&DatabaseSettings {
        max_connections: Some(1),
        ..settings(url)
    })
    .await
    .expect("connect");
    let store = store(pool.clone(), QuotaSettings::default()).await;
    let ann = user(1);
    let kept = content("kept", "as it was");
    let id = store.create(&ann, &kept).await.expect("create");
    let too_long = Content {
        title: "x".repeat(201),
        ..kept.clone()
    };
    let in_transaction = || async {
        let open: i64 = todoapp_db::on_pool!(&pool, |p| sqlx::query_scalar(
            "SELECT CAST(@@in_transaction AS SIGNED)"
        )
        .fetch_one(p)
        .await)
        .expect("read @@in_transaction");
        open
    };
    let usage = || async {
        let usage: (i64, i64) = todoapp_db::on_pool!(&pool, |p| sqlx::query_as(
            "SELECT CAST(SUM(entries) AS SIGNED), CAST(SUM(bytes) AS SIGNED) FROM todo_usage"
        )
        .fetch_one(p)
        .await)
        .expect("read usage");
        usage
    };
    let before = usage().await;
    assert_eq!(before, (1, 13));

    let refused = store.create(&ann, &too_long).await;
    assert!(
        matches!(refused, Err(WriteError::Store(_))),
        "an over-long title is a store error: {refused:?}"
    );
    assert_eq!(in_transaction().await, 0, "create left a transaction open");
    let refused = store.update(&ann, TodoId(id), &too_long).await;
    assert!(matches!(refused, Err(WriteError::Store(_))), "{refused:?}");
    assert_eq!(in_transaction().await, 0, "update left a transaction open");

    assert_eq!(usage().await, before, "a failed write changed the usage");
    let stored = store
        .get(&ann, TodoId(id))
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(
        (stored.title.as_str(), stored.text.as_str()),
        ("kept", "as it was")
    );
    assert_eq!(count(&store, &ann).await, 1);
}

/// Runs the engine's migrations that come before the first one whose file
/// name contains `left_out`, as an older release did.
async fn migrate_without(pool: &Pool, engine: &str, left_out: &str) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let old = tempfile::tempdir().expect("tempdir");
    let mut names: Vec<String> = std::fs::read_dir(manifest.join("migrations").join(engine))
        .expect("migrations")
        .map(|file| {
            file.expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut copied = 0;
    for name in names.iter().take_while(|name| !name.contains(left_out)) {
        let path = manifest.join("migrations").join(engine).join(name);
        std::fs::copy(&path, old.path().join(name)).expect("copy");
        copied += 1;
    }
    assert!(copied >= 1);
    let older = sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("older migrations");
    pool.migrate(&older, &older).await.expect("older schema");
}

/// Entries stored before the quota migration count against the quota, and
/// still do after the migration that splits usage into per-node slots
/// (`also_before_slots`: the entries' usage was counted by the release
/// between the two).
async fn migration_counts_existing_entries(pool: Pool, engine: &str, also_before_slots: bool) {
    // Only the migrations before the quota one, as an older release ran them.
    migrate_without(&pool, engine, "quota").await;
    let ann = user(5);
    let insert =
        "INSERT INTO todos (user_id, title, text, done, created_at) VALUES (?, ?, ?, FALSE, 1)";
    for (title, text) in [("🎉", "ab"), ("x", "ü")] {
        todoapp_db::on_pool!(&pool, |p| sqlx::query(insert)
            .bind(ann.as_str())
            .bind(title)
            .bind(text)
            .execute(p)
            .await
            .map(drop)
            .expect("old row"));
    }
    if also_before_slots {
        migrate_without(&pool, engine, "slots").await;
        let old_usage: (i64, i64) = todoapp_db::on_pool!(&pool, |p| sqlx::query_as(
            "SELECT entries, bytes FROM todo_usage WHERE user_id = ?"
        )
        .bind(ann.as_str())
        .fetch_one(p)
        .await
        .expect("usage row of the release before slots"));
        assert_eq!(old_usage, (2, 9));
    }

    // 2 entries of 6 and 3 bytes exist: 8791 bytes and one entry are left.
    let store = store(
        pool,
        QuotaSettings {
            max_entries: 3,
            max_bytes: MAX_ENTRY,
        },
    )
    .await;
    let title = "🎉".repeat(200);
    let one_too_many = content(&title, &"😀".repeat(1998));
    assert_eq!(one_too_many.title.len() + one_too_many.text.len(), 8792);
    assert!(matches!(
        store.create(&ann, &one_too_many).await,
        Err(WriteError::Quota(QuotaExceeded::Bytes { .. }))
    ));
    let just_fits = content(&title, &("😀".repeat(1997) + "xxx"));
    assert_eq!(just_fits.title.len() + just_fits.text.len(), 8791);
    store.create(&ann, &just_fits).await.expect("fits");
    assert!(matches!(
        store.create(&ann, &content("z", "")).await,
        Err(WriteError::Quota(QuotaExceeded::Entries { limit: 3 }))
    ));
}

#[tokio::test]
async fn sqlite_migration_counts_existing_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    migration_counts_existing_entries(sqlite_pool(dir.path()).await, "sqlite", false).await;
}

#[tokio::test]
async fn mariadb_migration_counts_existing_entries() {
    migration_counts_existing_entries(mariadb_pool("todo_quota_backfill").await, "mysql", false)
        .await;
}

#[tokio::test]
async fn sqlite_usage_moves_into_slots_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    migration_counts_existing_entries(sqlite_pool(dir.path()).await, "sqlite", true).await;
}

#[tokio::test]
async fn mariadb_usage_moves_into_slots_intact() {
    migration_counts_existing_entries(mariadb_pool("todo_quota_slots").await, "mysql", true).await;
}
