//! The same store behaviour, checked against SQLite and a real MariaDB.

use todoapp_db::{connect, DatabaseSettings, Kind};
use todoapp_runtime::Secret;
use todoapp_todo::domain::{Content, Page, RequestId, TodoId, UserId};
use todoapp_todo::store::{CreateOnce, SqlTodoStore, TodoStore};

fn settings(url: String) -> DatabaseSettings {
    DatabaseSettings {
        url: Secret::new(url),
        ..DatabaseSettings::sqlite("unused")
    }
}

fn content(title: &str, text: &str, done: Option<bool>) -> Content {
    Content::new(title.into(), text.into(), done).expect("valid content")
}

async fn exercise(store: SqlTodoStore) {
    store.migrate().await.expect("migrations are idempotent");
    let ann = UserId::parse("11111111-1111-4111-8111-111111111111").expect("uuid");
    let bob = UserId::parse("22222222-2222-4222-8222-222222222222").expect("uuid");

    let title = "🎉".repeat(200);
    let text = "ü✓".repeat(1000);
    let first = store
        .create(&ann, &content(&title, &text, None))
        .await
        .expect("create");
    let got = store
        .get(&ann, TodoId(first))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (got.title.as_str(), got.text.as_str(), got.done),
        (title.as_str(), text.as_str(), false)
    );
    assert!(got.created_at > 0);
    assert_eq!(got.updated_at, None);

    // Other users' entries do not exist for them.
    assert!(store.get(&bob, TodoId(first)).await.expect("get").is_none());
    assert!(!store
        .update(&bob, TodoId(first), &content("x", "", None))
        .await
        .expect("update"));
    assert!(!store.delete(&bob, TodoId(first)).await.expect("delete"));
    assert!(store
        .list(
            &bob,
            Page {
                after: 0,
                limit: 10
            },
            usize::MAX
        )
        .await
        .expect("list")
        .is_empty());

    assert!(store
        .update(&ann, TodoId(first), &content("new", "body", Some(true)))
        .await
        .expect("update"));
    let got = store
        .get(&ann, TodoId(first))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (got.title.as_str(), got.text.as_str(), got.done),
        ("new", "body", true)
    );
    assert!(got.updated_at.expect("updated_at set") >= got.created_at);
    // `done` absent leaves it unchanged.
    assert!(store
        .update(&ann, TodoId(first), &content("newer", "", None))
        .await
        .expect("update"));
    assert!(
        store
            .get(&ann, TodoId(first))
            .await
            .expect("get")
            .expect("exists")
            .done
    );

    let mut ids = vec![first];
    for i in 0..4 {
        ids.push(
            store
                .create(&ann, &content(&format!("t{i}"), "", None))
                .await
                .expect("create"),
        );
    }
    store
        .create(&bob, &content("bob's", "", None))
        .await
        .expect("create");
    let page = store
        .list(&ann, Page { after: 0, limit: 3 }, usize::MAX)
        .await
        .expect("list");
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..3]);
    let rest = store
        .list(
            &ann,
            Page {
                after: ids[2],
                limit: 3,
            },
            usize::MAX,
        )
        .await
        .expect("list");
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), ids[3..]);

    // The byte budget: reading stops after the first entry that passes it
    // (the "newer" entry's 5 bytes, then "t0"... 2 bytes each).
    let budgeted = store
        .list(
            &ann,
            Page {
                after: 0,
                limit: 10,
            },
            6,
        )
        .await
        .expect("list");
    assert_eq!(
        budgeted.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..2],
        "stops at the entry that passes 6 bytes"
    );

    assert!(store.delete(&ann, TodoId(first)).await.expect("delete"));
    assert!(store.get(&ann, TodoId(first)).await.expect("get").is_none());
    assert!(!store
        .delete(&ann, TodoId(first))
        .await
        .expect("delete twice"));
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("todo.db").display());
    let store = SqlTodoStore::new(connect(&settings(url)).await.expect("connect"));
    assert_eq!(store.kind(), Kind::Sqlite);
    exercise(store).await;
}

/// SQLite reads and writes run on the calling thread on connections of
/// their own: reads answer while every pooled connection and the write lock
/// are taken, see writes committed through the pool at once, reuse one
/// connection when called one after another; writes need no pooled
/// connection either; both fail as UNAVAILABLE once the pool closes.
#[tokio::test]
async fn sqlite_reads_and_writes_need_no_pooled_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("todo.db").display());
    let db = DatabaseSettings {
        acquire_timeout_ms: 300,
        ..settings(url)
    };
    let pool = connect(&db).await.expect("connect");
    let store = SqlTodoStore::new(pool.clone());
    store.migrate().await.expect("migrate");
    let ann = UserId::parse("11111111-1111-4111-8111-111111111111").expect("uuid");
    let id = store
        .create(&ann, &content("kept", "", None))
        .await
        .expect("create");

    let todoapp_db::Pool::Sqlite(sqlx_pool, _) = &pool else {
        panic!("a SQLite pool");
    };
    let mut held = Vec::new();
    for _ in 0..db.pool_size(Kind::Sqlite) {
        held.push(sqlx_pool.acquire().await.expect("a pooled connection"));
    }
    let _writer = pool.write_lock().await;
    for _ in 0..3 {
        let got = store
            .get(&ann, TodoId(id))
            .await
            .expect("get without the pool");
        assert_eq!(got.expect("exists").title, "kept");
        let page = store
            .list(
                &ann,
                Page {
                    after: 0,
                    limit: 10,
                },
                usize::MAX,
            )
            .await
            .expect("list without the pool");
        assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
    }
    let reads = pool.sqlite_reads().expect("SQLite reads");
    assert_eq!(reads.connections(), 1, "one read connection, reused");
    // Writes by the pool's connections are seen by the next read.
    sqlx::query("UPDATE todos SET title = 'changed' WHERE id = ?")
        .bind(id)
        .execute(&mut *held[0])
        .await
        .expect("update through a pooled connection");
    let got = store.get(&ann, TodoId(id)).await.expect("get");
    assert_eq!(got.expect("exists").title, "changed");
    // The read connections refuse writes.
    let refused = reads.read(|conn| conn.execute("DELETE FROM todos", ()));
    assert!(refused.is_err(), "a read connection wrote: {refused:?}");

    drop(_writer);
    // Writes, with every pooled connection still taken.
    let second = store
        .create(&ann, &content("second", "", None))
        .await
        .expect("create without the pool");
    assert!(store
        .update(
            &ann,
            TodoId(second),
            &content("second, changed", "", Some(true))
        )
        .await
        .expect("update without the pool"));
    let got = store.get(&ann, TodoId(second)).await.expect("get");
    assert_eq!(got.expect("exists").title, "second, changed");
    assert!(store
        .delete(&ann, TodoId(second))
        .await
        .expect("delete without the pool"));
    assert!(store
        .get(&ann, TodoId(second))
        .await
        .expect("get")
        .is_none());

    drop(held);
    pool.close().await;
    assert_eq!(reads.connections(), 0, "closing the pool closes them");
    let closed = store.get(&ann, TodoId(id)).await;
    assert!(
        matches!(closed, Err(todoapp_db::StoreError::Unavailable(_))),
        "{closed:?}"
    );
    let closed = store.delete(&ann, TodoId(id)).await;
    assert!(
        matches!(closed, Err(todoapp_db::StoreError::Unavailable(_))),
        "{closed:?}"
    );
}

#[tokio::test]
async fn mariadb_store() {
    let url = todoapp_devkit::mariadb::test_database("todo_store")
        .await
        .expect("MariaDB for tests");
    let store = SqlTodoStore::new(connect(&settings(url)).await.expect("connect"));
    assert_eq!(store.kind(), Kind::MySql);
    exercise(store).await;
}

/// Idempotent creates (AIP-155), the same on both engines.
async fn idempotent_creates(pool: todoapp_db::Pool) {
    let store = SqlTodoStore::new(pool.clone());
    store.migrate().await.expect("migrate");
    let ann = UserId::parse("33333333-3333-4333-8333-333333333333").expect("uuid");
    let bob = UserId::parse("44444444-4444-4444-8444-444444444444").expect("uuid");
    let key = RequestId::parse("5D3C6A51-0C0B-4F55-9F3E-8E1C2B7A6D10")
        .expect("uuid")
        .expect("present");
    let milk = content("milk", "2 l", None);
    let count = |user: UserId| {
        let store = store.clone();
        async move {
            store
                .list(
                    &user,
                    Page {
                        after: 0,
                        limit: 100,
                    },
                    usize::MAX,
                )
                .await
                .expect("list")
                .len()
        }
    };

    let CreateOnce::Created(first) = store.create_once(&ann, &milk, &key).await.expect("create")
    else {
        panic!("the first call creates");
    };
    assert_eq!(
        store.create_once(&ann, &milk, &key).await.expect("repeat"),
        CreateOnce::Repeated(first)
    );
    assert_eq!(count(ann.clone()).await, 1, "a repeat stores nothing");
    // Same key, other content: refused, nothing stored.
    assert_eq!(
        store
            .create_once(&ann, &content("milk", "3 l", None), &key)
            .await
            .expect("mismatch"),
        CreateOnce::Mismatch
    );
    assert_eq!(
        store
            .create_once(&ann, &content("milk", "2 l", Some(false)), &key)
            .await
            .expect("mismatch"),
        CreateOnce::Mismatch,
        "an explicit done is other content"
    );
    assert_eq!(count(ann.clone()).await, 1);
    // Another user's identical key is another request.
    let CreateOnce::Created(bobs) = store.create_once(&bob, &milk, &key).await.expect("bob") else {
        panic!("bob's key is his own");
    };
    assert_ne!(bobs, first);

    // A key past its retention that expiry has not removed yet is a new
    // request: replaced in place, with its new content and id.
    let aged = todoapp_todo::store::REQUEST_ID_RETENTION_MICROS + 1_000_000;
    const AGE: &str =
        "UPDATE create_requests SET created_at = created_at - ? WHERE user_id = ? AND request_id = ?";
    let aged_rows = todoapp_db::on_pool!(&pool, |p| sqlx::query(AGE)
        .bind(aged)
        .bind(ann.as_str())
        .bind(key.as_str())
        .execute(p)
        .await
        .map(|done| done.rows_affected()))
    .expect("age the key");
    assert_eq!(aged_rows, 1);
    let oat = content("oat milk", "1 l", None);
    let CreateOnce::Created(renewed) = store.create_once(&ann, &oat, &key).await.expect("renewed")
    else {
        panic!("an expired key creates anew");
    };
    assert_ne!(renewed, first);
    assert_eq!(
        store.create_once(&ann, &oat, &key).await.expect("repeat"),
        CreateOnce::Repeated(renewed)
    );
    assert_eq!(
        store
            .create_once(&ann, &milk, &key)
            .await
            .expect("old content"),
        CreateOnce::Mismatch,
        "the key now stands for the new content"
    );
    assert_eq!(count(ann.clone()).await, 2);

    // Concurrent first calls with one key: one entry, one id for all.
    let race = RequestId::parse("a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d")
        .expect("uuid")
        .expect("present");
    let bread = content("bread", "", None);
    let calls = (0..8).map(|_| {
        let (store, bob, race, bread) = (store.clone(), bob.clone(), race.clone(), bread.clone());
        tokio::spawn(async move { store.create_once(&bob, &bread, &race).await })
    });
    let mut ids = Vec::new();
    for call in calls {
        match call.await.expect("task").expect("create_once") {
            CreateOnce::Created(id) | CreateOnce::Repeated(id) => ids.push(id),
            CreateOnce::Mismatch => panic!("same content"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "racing repeats got different ids: {ids:?}");
    assert_eq!(count(bob.clone()).await, 2);

    // Expiry: keys older than the cutoff are forgotten, newer ones kept.
    assert_eq!(store.forget_requests_before(0).await.expect("expire"), 0);
    let forgotten = store
        .forget_requests_before(todoapp_db::now_micros() + 1)
        .await
        .expect("expire");
    assert_eq!(forgotten, 3);
    assert!(matches!(
        store.create_once(&ann, &milk, &key).await.expect("after expiry"),
        CreateOnce::Created(id) if id != first && id != renewed
    ));
}

#[tokio::test]
async fn sqlite_idempotent_creates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("todo.db").display());
    idempotent_creates(connect(&settings(url)).await.expect("connect")).await;
}

#[tokio::test]
async fn mariadb_idempotent_creates() {
    let url = todoapp_devkit::mariadb::test_database("todo_idem")
        .await
        .expect("MariaDB for tests");
    idempotent_creates(connect(&settings(url)).await.expect("connect")).await;
}

/// The pool checks a connection before handing it out only when it sat idle
/// for a while (`todoapp_db`'s `CHECK_WHEN_IDLE_FOR`, 1 s): a connection the
/// server dropped while idle is replaced unnoticed, while one in steady use
/// costs no check in front of every query. A hot connection that died fails
/// its next query once (the service answers UNAVAILABLE) and is replaced.
#[tokio::test]
async fn mariadb_checks_only_idle_connections_before_use() {
    use sqlx::Connection;
    let (url, pool) = mariadb_with_one_connection("todo_pool_check").await;
    let todoapp_db::Pool::MySql(pool, _) = pool else {
        panic!("a MariaDB URL opened another engine");
    };
    let mut killer = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("second connection");
    let connection_id = || async {
        sqlx::query_scalar::<_, i64>("SELECT CAST(CONNECTION_ID() AS SIGNED)")
            .fetch_one(&pool)
            .await
    };
    // sqlx pings a connection as it goes back into the pool; a kill before
    // that ping ends would be caught there, not by the check under test.
    let back_in_pool = || async {
        for _ in 0..200 {
            if pool.num_idle() == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the connection did not go back into the pool");
    };
    let idle = connection_id().await.expect("first query");
    back_in_pool().await;
    kill(&mut killer, idle).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let replaced = connection_id()
        .await
        .expect("an idle connection the server dropped is replaced before use");
    assert_ne!(replaced, idle);

    // A hot connection: the query right after the kill must fail. That
    // needs the kill to finish well inside the idle threshold, which a busy
    // machine (CI runs tests side by side) does not always allow: a slow
    // try proves nothing either way and is made again.
    for _ in 0..10 {
        let hot = connection_id().await.expect("query on a live connection");
        back_in_pool().await;
        let released = std::time::Instant::now();
        kill(&mut killer, hot).await;
        let after_kill = connection_id().await;
        if released.elapsed() >= std::time::Duration::from_millis(800) {
            continue;
        }
        assert!(
            after_kill.is_err(),
            "a connection used a moment ago is handed out unchecked"
        );
        let fresh = connection_id()
            .await
            .expect("the broken connection was dropped and replaced");
        assert_ne!(fresh, hot);
        return;
    }
    panic!("killing a connection took 800 ms or more ten times: the machine is too busy to check");
}

/// The todo service's own statements on MariaDB (GetToDo, ListToDo and the
/// write procedures) run on connections lent outside sqlx's pool, which
/// pings every connection it takes back: here one goes back unpinged when
/// its statement finished, and is closed when it did not (a cancelled call)
/// or when the connection failed. Like the pool's, an idle one is checked
/// before use and a hot one that died fails its next statement once.
#[tokio::test]
async fn mariadb_statement_connections_are_reused_unpinged_and_closed_when_unsure() {
    use std::time::{Duration, Instant};
    let (url, pool) = mariadb_with_one_connection("todo_statements").await;
    let store = SqlTodoStore::new(pool.clone());
    store.migrate().await.expect("migrate");
    let statements = pool.mariadb_statements().expect("MariaDB statements");
    let ann = UserId::parse("11111111-1111-4111-8111-111111111111").expect("uuid");
    let id = TodoId(
        store
            .create(&ann, &content("kept", "", None))
            .await
            .expect("create"),
    );
    // The lent connection's id and how many pings it has answered (MariaDB
    // counts COM_PING in `Com_admin_commands`; checked below).
    let session = || async {
        let mut lease = statements.lease().await.expect("lease");
        let conn = lease.connection();
        let answer = async {
            let id: i64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
                .fetch_one(&mut *conn)
                .await?;
            let pings: String = sqlx::query_scalar(
                "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COM_ADMIN_COMMANDS'",
            )
            .fetch_one(&mut *conn)
            .await?;
            Ok((id, pings.parse::<u64>().expect("a count")))
        }
        .await;
        lease.finish(answer).expect("session status")
    };

    let (_, pings) = session().await;
    let mut lease = statements.lease().await.expect("lease");
    let pinged = sqlx::Connection::ping(lease.connection()).await;
    lease.finish(pinged).expect("ping");
    assert_eq!(
        session().await.1,
        pings + 1,
        "Com_admin_commands counts a ping"
    );

    // Steady use: every call on the one connection, and no ping. A pause of
    // a second or more would rightly add the idle check; on a machine that
    // busy the try is made again.
    let mut steady = false;
    for _ in 0..10 {
        let started = Instant::now();
        let (first, pings) = session().await;
        for _ in 0..20 {
            assert!(store.get(&ann, id).await.expect("get").is_some());
            let page = Page {
                after: 0,
                limit: 10,
            };
            assert_eq!(
                store
                    .list(&ann, page, usize::MAX)
                    .await
                    .expect("list")
                    .len(),
                1
            );
            assert!(store
                .update(&ann, id, &content("kept", "again", None))
                .await
                .expect("update"));
        }
        let (after, pings_after) = session().await;
        if started.elapsed() >= Duration::from_millis(800) {
            continue;
        }
        assert_eq!(after, first, "the connection is reused");
        assert_eq!(pings_after, pings, "no ping as connections go back");
        steady = true;
        break;
    }
    assert!(
        steady,
        "60 calls took 800 ms or more ten times: the machine is too busy to check"
    );

    // An error the server answered leaves the connection in step: kept.
    let (before, _) = session().await;
    let mut lease = statements.lease().await.expect("lease");
    let refused = sqlx::query("SELECT * FROM no_such_table")
        .execute(lease.connection())
        .await;
    assert!(matches!(
        lease.finish(refused),
        Err(sqlx::Error::Database(_))
    ));
    assert_eq!(session().await.0, before, "kept after a server error");
    assert_eq!(statements.open(), 1);
    // Operators see them beside the pool.
    pool.register_metrics();
    let exposition = todoapp_runtime::metrics::encode();
    // (The dashboard and alerts use these names; the system test of
    // observability, on SQLite, leaves them to this check.)
    for gauge in todoapp_db::STATEMENT_CONNECTION_GAUGES {
        let line = format!("{gauge} 1");
        assert!(
            exposition.lines().any(|l| l == line),
            "{line} in:\n{exposition}"
        );
    }

    // A statement cancelled midway (the caller went away) may leave its
    // connection mid-answer: closed, and the next lease opens another.
    let mut lease = statements.lease().await.expect("lease");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        sqlx::query("SELECT SLEEP(5)").execute(lease.connection()),
    )
    .await;
    assert!(cancelled.is_err(), "SLEEP(5) ended within 100 ms");
    drop(lease);
    assert_eq!(
        statements.open(),
        0,
        "the cancelled lease's connection is closed"
    );
    let (fresh, _) = session().await;
    assert_ne!(fresh, before);
    assert!(store.get(&ann, id).await.expect("get").is_some());

    // A connection the server dropped while idle is replaced before use.
    let mut killer = <sqlx::MySqlConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("second connection");
    kill(&mut killer, fresh).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(store
        .get(&ann, id)
        .await
        .expect("get after an idle kill")
        .is_some());
    let (replaced, _) = session().await;
    assert_ne!(replaced, fresh);

    // A hot one that died fails its next statement once (the service
    // answers UNAVAILABLE), is closed and replaced.
    for _ in 0..10 {
        let (hot, _) = session().await;
        let released = Instant::now();
        kill(&mut killer, hot).await;
        let after_kill = store.get(&ann, id).await;
        if released.elapsed() >= Duration::from_millis(800) {
            continue;
        }
        assert!(
            matches!(after_kill, Err(todoapp_db::StoreError::Unavailable(_))),
            "a connection used a moment ago is lent unchecked: {after_kill:?}"
        );
        assert!(store
            .get(&ann, id)
            .await
            .expect("get on a new connection")
            .is_some());
        assert_ne!(session().await.0, hot);
        assert_eq!(statements.open(), 1);
        return;
    }
    panic!("killing a connection took 800 ms or more ten times: the machine is too busy to check");
}

/// A fresh MariaDB test database and a pool of one connection on it (and
/// one statement connection), so each check sees the same connection.
async fn mariadb_with_one_connection(prefix: &str) -> (String, todoapp_db::Pool) {
    let url = todoapp_devkit::mariadb::test_database(prefix)
        .await
        .expect("MariaDB for tests");
    let pool = connect(&DatabaseSettings {
        max_connections: Some(1),
        ..settings(url.clone())
    })
    .await
    .expect("connect");
    (url, pool)
}

/// Kills a MariaDB connection through another one and waits until the
/// server has closed it (KILL returns before that).
async fn kill(killer: &mut sqlx::MySqlConnection, id: i64) {
    sqlx::query(&format!("KILL CONNECTION {id}"))
        .execute(&mut *killer)
        .await
        .expect("kill");
    for _ in 0..50 {
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?")
                .bind(id)
                .fetch_one(&mut *killer)
                .await
                .expect("processlist");
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("connection {id} still listed after KILL");
}
