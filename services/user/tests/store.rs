//! The same store behaviour, checked against SQLite and a real MariaDB.

use todoapp_db::{connect, DatabaseSettings, Kind, StoreError};
use todoapp_runtime::Secret;
use todoapp_user::store::{unique_field, NewUser, SqlUserStore, UserStore};

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

/// The field a refused insert names, classified by constraint name only.
async fn conflict(store: &SqlUserStore, new: NewUser) -> &'static str {
    match store.insert(&new).await {
        Err(StoreError::Conflict { constraint, source }) => {
            assert!(!source.to_string().is_empty(), "the driver error is kept");
            unique_field(&constraint)
                .unwrap_or_else(|| panic!("unknown constraint {constraint:?} ({source})"))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Same input, same account, on both engines: no trailing-space folding.
async fn exact_usernames(store: &SqlUserStore) {
    store
        .insert(&user(10, "name", "name@example.org"))
        .await
        .expect("insert");
    assert!(store.credentials("name ").await.expect("lookup").is_none());
    assert_eq!(
        store.taken("name ", "x@example.org").await.expect("taken"),
        None
    );
    store
        .insert(&user(11, "name ", "name2@example.org"))
        .await
        .expect("'name ' is another name");
    let with_space = store
        .credentials("name ")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(with_space.id, "00000000-0000-4000-8000-000000000011");
    let plain = store
        .credentials("name")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(plain.id, "00000000-0000-4000-8000-000000000010");
    // Composed and decomposed forms are different bytes: the service stores NFC.
    store
        .insert(&user(12, "Jos\u{e9}", "jose@example.org"))
        .await
        .expect("insert");
    assert!(store
        .credentials("Jose\u{301}")
        .await
        .expect("lookup")
        .is_none());

    // A username containing "email" that is taken is a username conflict.
    store
        .insert(&user(13, "my-email", "me@example.org"))
        .await
        .expect("insert");
    assert_eq!(
        conflict(store, user(14, "my-email", "me2@example.org")).await,
        "username"
    );
    assert_eq!(
        store
            .taken("my-email", "zz@example.org")
            .await
            .expect("taken"),
        Some("username")
    );
    assert_eq!(
        store.taken("zz", "me@example.org").await.expect("taken"),
        Some("email")
    );
    assert_eq!(
        store.taken("zz", "zz@example.org").await.expect("taken"),
        None
    );
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

    assert_eq!(
        conflict(&store, user(3, "ann", "other@example.org")).await,
        "username"
    );
    assert_eq!(
        conflict(&store, user(4, "bob", "ann@example.org")).await,
        "email"
    );
    assert!(
        store.credentials("bob").await.expect("lookup").is_none(),
        "failed insert left a row"
    );
    exact_usernames(&store).await;
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
