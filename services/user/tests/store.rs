//! The same store behaviour, checked against SQLite and a real MariaDB.

use todoapp_db::{connect, DatabaseSettings, Kind, StoreError};
use todoapp_runtime::Secret;
use todoapp_user::store::{NewUser, SqlUserStore, UserStore};

fn settings(url: String) -> DatabaseSettings {
    DatabaseSettings {
        url: Secret::new(url),
        ..DatabaseSettings::sqlite("unused")
    }
}

fn user(n: u32, username: &str, email: &str) -> NewUser {
    NewUser {
        id: format!("00000000-0000-4000-8000-{n:012}"),
        username: username.into(),
        email: email.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
    }
}

async fn exercise(store: SqlUserStore) {
    store.migrate().await.expect("migrations are idempotent");
    store
        .insert(&user(1, "ann", "ann@example.org"))
        .await
        .expect("insert");

    let creds = store
        .credentials("ann")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(creds.id, "00000000-0000-4000-8000-000000000001");
    assert!(creds.password_hash.starts_with("$argon2id$"));
    assert!(store.credentials("nobody").await.expect("lookup").is_none());
    // Usernames match exactly, on both engines.
    assert!(store.credentials("ANN").await.expect("lookup").is_none());

    // Emoji and long names survive unchanged (utf8mb4, no truncation).
    let name = format!("😀{}", "ü".repeat(99));
    store
        .insert(&user(2, &name, "emoji@example.org"))
        .await
        .expect("insert emoji");
    assert!(store.credentials(&name).await.expect("lookup").is_some());

    match store.insert(&user(3, "ann", "other@example.org")).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("username"), "{msg}"),
        other => panic!("expected a username conflict, got {other:?}"),
    }
    match store.insert(&user(4, "bob", "ann@example.org")).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("email"), "{msg}"),
        other => panic!("expected an email conflict, got {other:?}"),
    }
    assert!(
        store.credentials("bob").await.expect("lookup").is_none(),
        "failed insert left a row"
    );
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("user.db").display());
    let store = SqlUserStore::new(connect(&settings(url)).await.expect("connect"));
    assert_eq!(store.kind(), Kind::Sqlite);
    exercise(store).await;
}

#[tokio::test]
async fn mariadb_store() {
    let url = todoapp_devkit::mariadb::test_database("user_store")
        .await
        .expect("MariaDB for tests");
    let store = SqlUserStore::new(connect(&settings(url)).await.expect("connect"));
    assert_eq!(store.kind(), Kind::MySql);
    exercise(store).await;
}
