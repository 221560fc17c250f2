//! The same store behaviour, checked against SQLite and a real MariaDB.

use todoapp_db::{connect, DatabaseSettings, Kind};
use todoapp_runtime::Secret;
use todoapp_todo::domain::{Content, Page, TodoId, UserId};
use todoapp_todo::store::{SqlTodoStore, TodoStore};

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

#[tokio::test]
async fn mariadb_store() {
    let url = todoapp_devkit::mariadb::test_database("todo_store")
        .await
        .expect("MariaDB for tests");
    let store = SqlTodoStore::new(connect(&settings(url)).await.expect("connect"));
    assert_eq!(store.kind(), Kind::MySql);
    exercise(store).await;
}
