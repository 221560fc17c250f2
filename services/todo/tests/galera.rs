//! The todo store over a real 3-node Galera cluster (one per test binary,
//! started from `mariadbd` and galera-4; the tests take turns on it):
//! concurrent migrations through different nodes, reading one's own writes
//! through another node, paging under concurrent inserts through all nodes,
//! a node killed under load losing no acknowledged write, and one request id
//! sent through every node at once creating one entry.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{Connection, MySqlConnection};
use todoapp_db::{connect, DatabaseSettings, Pool};
use todoapp_devkit::galera::{GaleraCluster, NODES};
use todoapp_runtime::Secret;
use todoapp_todo::domain::{Content, Page, RequestId, TodoId, UserId};
use todoapp_todo::quota::{QuotaExceeded, QuotaSettings, WriteError};
use todoapp_todo::store::{CreateOnce, SqlTodoStore, TodoStore};

struct Shared {
    cluster: Mutex<Option<GaleraCluster>>,
}

/// The binary's cluster, started on first use and stopped at exit; holding
/// the guard gives a test the cluster to itself.
fn cluster() -> MutexGuard<'static, Option<GaleraCluster>> {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("todoapp-galera-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let started = Instant::now();
        let cluster = GaleraCluster::start(&base).expect("a private 3-node Galera cluster");
        eprintln!("Galera cluster formed in {:?}", started.elapsed());
        // SAFETY: registering a plain `extern "C" fn` with atexit.
        unsafe { libc::atexit(stop_cluster) };
        Shared {
            cluster: Mutex::new(Some(cluster)),
        }
    });
    shared.cluster.lock().unwrap_or_else(|e| e.into_inner())
}

extern "C" fn stop_cluster() {
    let mut guard = cluster();
    if let Some(mut cluster) = guard.take() {
        let base = cluster.base().to_path_buf();
        cluster.stop();
        let _ = std::fs::remove_dir_all(base);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn settings(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: Secret::new(url.to_owned()),
        max_connections: Some(8),
        ..DatabaseSettings::sqlite("unused")
    }
}

/// A fresh database; its URL on each node.
fn database(cluster: &GaleraCluster, runtime: &tokio::runtime::Runtime, name: &str) -> Vec<String> {
    let db = format!("{name}_{}", std::process::id());
    runtime
        .block_on(cluster.create_database(&db))
        .expect("create database")
}

/// Runs `test` with the cluster to itself, on a fresh database whose URL
/// on each node it is given.
fn on_fresh_database<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let guard = cluster();
    let cluster = guard.as_ref().expect("cluster");
    let runtime = runtime();
    let urls = database(cluster, &runtime, name);
    runtime.block_on(test(urls));
}

/// How many MariaDB migrations the todo service has.
fn migrations() -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/mysql");
    std::fs::read_dir(dir).expect("migrations").count()
}

async fn store_on(url: &str) -> (Pool, SqlTodoStore) {
    let pool = connect(&settings(url)).await.expect("connect");
    (pool.clone(), SqlTodoStore::new(pool))
}

/// A store on each node, the schema migrated through the first.
async fn migrated_stores(urls: &[String]) -> Vec<SqlTodoStore> {
    let mut stores = Vec::new();
    for url in urls {
        stores.push(store_on(url).await.1);
    }
    stores[0].migrate().await.expect("migrate");
    stores
}

/// The ids of all of `user`'s entries (the tests keep under 1000).
async fn all_entries(store: &SqlTodoStore, user: &UserId) -> BTreeSet<i32> {
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
        .iter()
        .map(|r| r.id)
        .collect()
}

fn content(title: &str) -> Content {
    Content::new(title.into(), "x".into(), None).expect("content")
}

fn user(n: u32) -> UserId {
    UserId::parse(&format!("00000000-0000-4000-8000-{n:012}")).expect("uuid")
}

#[test]
fn instances_migrating_at_once_through_different_nodes_all_succeed() {
    on_fresh_database("galera_migrate", |urls| async move {
        // Two instances per node, all starting at once.
        let mut starts = Vec::new();
        for i in 0..2 * NODES {
            let url = urls[i % NODES].clone();
            starts.push(tokio::spawn(async move {
                let (_, store) = store_on(&url).await;
                store.migrate().await
            }));
        }
        for (i, start) in starts.into_iter().enumerate() {
            start
                .await
                .expect("task")
                .unwrap_or_else(|e| panic!("instance {i} failed to migrate: {}", e.detail()));
        }
        for url in &urls {
            let mut conn = MySqlConnection::connect(url).await.expect("node");
            let applied: Vec<(i64, bool)> =
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&mut conn)
                    .await
                    .expect("migrations table");
            assert_eq!(
                applied.len(),
                migrations(),
                "each migration recorded once on {url}"
            );
            assert!(
                applied.iter().all(|(_, ok)| *ok),
                "all complete: {applied:?}"
            );
            let locks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _todoapp_migration_lock")
                .fetch_one(&mut conn)
                .await
                .expect("lock table");
            assert_eq!(locks, 0, "the migration lock was released");
        }
    });
}

#[test]
fn a_write_through_one_node_is_read_through_the_others_at_once() {
    on_fresh_database("galera_ryw", |urls| async move {
        let mut stores = Vec::new();
        for url in &urls {
            stores.push(store_on(url).await);
        }
        stores[0].1.migrate().await.expect("migrate");
        // Every connection of a pool on a Galera node waits for causality
        // on reads, those of the calls' own statements included.
        if let Pool::MySql(p, statements) = &stores[1].0 {
            let wait: u64 = sqlx::query_scalar("SELECT @@SESSION.wsrep_sync_wait")
                .fetch_one(p)
                .await
                .expect("sync wait");
            assert_eq!(wait, 1);
            let mut lease = statements.lease().await.expect("lease");
            let wait = sqlx::query_scalar::<_, u64>("SELECT @@SESSION.wsrep_sync_wait")
                .fetch_one(lease.connection())
                .await;
            assert_eq!(lease.finish(wait).expect("sync wait"), 1);
        } else {
            panic!("a Galera URL opened another engine");
        }
        let ann = user(1);
        for round in 0..150 {
            let (writer, reader) = (round % NODES, (round + 1) % NODES);
            let id = stores[writer]
                .1
                .create(&ann, &content(&format!("r{round}")))
                .await
                .expect("create");
            let seen = stores[reader].1.get(&ann, TodoId(id)).await.expect("get");
            assert!(
                seen.is_some(),
                "round {round}: entry {id} written through node{writer} not yet visible through node{reader}"
            );
            stores[reader]
                .1
                .update(&ann, TodoId(id), &content(&format!("u{round}")))
                .await
                .expect("update through another node");
            let updated = stores[writer].1.get(&ann, TodoId(id)).await.expect("get");
            assert_eq!(
                updated.map(|r| r.title),
                Some(format!("u{round}")),
                "round {round}: the update is read back through node{writer}"
            );
        }
    });
}

#[test]
fn paging_under_concurrent_inserts_through_all_nodes_never_skips_or_repeats() {
    on_fresh_database("galera_paging", |urls| async move {
        let stores = migrated_stores(&urls).await;
        let ann = user(2);
        let mut before = BTreeSet::new();
        // Runs of inserts through one node step by the cluster size
        // (auto_increment_increment under wsrep_auto_increment_control).
        for i in 0..60 {
            let id = stores[(i / 10) % NODES]
                .create(&ann, &content(&format!("before {i}")))
                .await
                .expect("create");
            before.insert(id);
        }
        let steps: BTreeSet<i32> = before
            .iter()
            .zip(before.iter().skip(1))
            .map(|(a, b)| b - a)
            .collect();
        assert!(
            steps.iter().any(|s| *s > 1),
            "ids from three nodes are not consecutive (auto_increment_increment): {steps:?}"
        );

        for pass in 0..3 {
            // Writers through every node while one listing pages through
            // the nodes in turn.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut writers = Vec::new();
            for (n, store) in stores.iter().enumerate() {
                let (store, stop, ann) = (store.clone(), stop.clone(), ann.clone());
                writers.push(tokio::spawn(async move {
                    let mut written = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        store
                            .create(&ann, &content(&format!("during {pass} {n} {written}")))
                            .await
                            .expect("concurrent create");
                        written += 1;
                    }
                    written
                }));
            }
            let mut seen = Vec::new();
            let mut after = 0;
            for page_no in 0.. {
                let page = stores[page_no % NODES]
                    .list(&ann, Page { after, limit: 7 }, usize::MAX)
                    .await
                    .expect("list");
                let Some(last) = page.last() else { break };
                after = last.id;
                seen.extend(page.iter().map(|r| r.id));
                tokio::task::yield_now().await;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut written = 0;
            for writer in writers {
                written += writer.await.expect("writer");
            }
            assert!(written > 0, "pass {pass}: inserts ran during the listing");
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "pass {pass}: ascending, no entry twice"
            );
            let seen: BTreeSet<i32> = seen.into_iter().collect();
            let missed: Vec<_> = before.difference(&seen).collect();
            assert!(missed.is_empty(), "pass {pass}: skipped {missed:?}");
            // Everything this pass wrote existed before the next listing.
            before = all_entries(&stores[0], &ann).await;
        }
    });
}

/// Jepsen-style set check: clients create (and read and list) through all
/// three nodes while node 2 is killed with SIGKILL; the clients of the other
/// nodes go on; after node 2 restarts and rejoins (IST), every acknowledged
/// create is present on every node, read from each node directly.
#[test]
fn a_node_killed_under_load_loses_no_acknowledged_write() {
    const VICTIM: usize = 2;
    const CLIENTS_PER_NODE: usize = 3;
    const LOAD: Duration = Duration::from_secs(8);
    const KILL_AT: Duration = Duration::from_secs(2);
    let mut guard = cluster();
    let cluster = guard.as_mut().expect("cluster");
    let runtime = runtime();
    let urls = database(cluster, &runtime, "galera_kill");

    let outcome = runtime.block_on(async {
        let stores = migrated_stores(&urls).await;
        let started = Instant::now();
        let mut clients = Vec::new();
        for (node, store) in stores.iter().enumerate() {
            for c in 0..CLIENTS_PER_NODE {
                let store = store.clone();
                let me = user((node * CLIENTS_PER_NODE + c) as u32 + 100);
                clients.push(tokio::spawn(async move {
                    let mut client = Client {
                        node,
                        ..Client::default()
                    };
                    let mut n = 0;
                    while started.elapsed() < LOAD {
                        n += 1;
                        let title = format!("n{node} c{c} #{n}");
                        let created = tokio::time::timeout(
                            Duration::from_secs(5),
                            store.create(&me, &content(&title)),
                        )
                        .await;
                        let Ok(Ok(id)) = created else {
                            client.failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        if started.elapsed() > KILL_AT + Duration::from_secs(1) {
                            client.acked_after_kill += 1;
                        }
                        client.acked.push((me.as_str().to_owned(), id));
                        // A mixed load: read it back and list a page.
                        let got = store.get(&me, TodoId(id)).await;
                        let listed = store
                            .list(&me, Page { after: 0, limit: 5 }, usize::MAX)
                            .await;
                        if !matches!(got, Ok(Some(_))) || listed.is_err() {
                            client.failed_reads += 1;
                        }
                    }
                    client
                }));
            }
        }
        tokio::time::sleep(KILL_AT).await;
        cluster.kill(VICTIM);
        let mut outcome = Vec::new();
        for client in clients {
            outcome.push(client.await.expect("client"));
        }
        outcome
    });

    let survivors: Vec<&Client> = outcome.iter().filter(|c| c.node != VICTIM).collect();
    let survivor_failures: usize = survivors.iter().map(|c| c.failures + c.failed_reads).sum();
    let after_kill: usize = survivors.iter().map(|c| c.acked_after_kill).sum();
    let acked: Vec<(String, i32)> = outcome.iter().flat_map(|c| c.acked.clone()).collect();
    eprintln!(
        "acknowledged creates: {} ({} through survivors after the kill); survivor failures: {survivor_failures}; victim failures: {}",
        acked.len(),
        after_kill,
        outcome.iter().filter(|c| c.node == VICTIM).map(|c| c.failures).sum::<usize>()
    );
    assert_eq!(
        survivor_failures, 0,
        "calls through the surviving nodes failed"
    );
    assert!(after_kill > 0, "the surviving nodes went on taking writes");

    let restarted = Instant::now();
    cluster.restart(VICTIM).expect("the killed node rejoins");
    eprintln!("node{VICTIM} rejoined in {:?}", restarted.elapsed());

    runtime.block_on(async {
        for url in &urls {
            let mut conn = MySqlConnection::connect(url).await.expect("node");
            // user_id is an ASCII binary column: raw bytes.
            let stored: Vec<(Vec<u8>, i32)> = sqlx::query_as("SELECT user_id, id FROM todos")
                .fetch_all(&mut conn)
                .await
                .expect("read node");
            let stored: BTreeSet<(String, i32)> = stored
                .into_iter()
                .map(|(user, id)| (String::from_utf8_lossy(&user).into_owned(), id))
                .collect();
            let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(a)).collect();
            assert!(lost.is_empty(), "{url} lacks acknowledged creates {lost:?}");
        }
    });
}

#[derive(Debug, Default)]
struct Client {
    node: usize,
    acked: Vec<(String, i32)>,
    acked_after_kill: usize,
    failures: usize,
    failed_reads: usize,
}

/// Latencies of one client's calls, and how its calls ended.
#[derive(Debug, Default)]
struct Creates {
    stored: usize,
    refused: usize,
    failed: Vec<String>,
    latencies: Vec<Duration>,
}

/// `clients` creates of `who` at once through every node for `load` (or, if
/// `until_refused`, until each client's first quota refusal).
async fn create_through_every_node(
    stores: &[SqlTodoStore],
    who: &UserId,
    clients: usize,
    load: Duration,
    until_refused: bool,
) -> Creates {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (node, store) in stores.iter().enumerate() {
        for c in 0..clients {
            let (store, who) = (store.clone(), who.clone());
            tasks.push(tokio::spawn(async move {
                let mut creates = Creates::default();
                while started.elapsed() < load {
                    let title = format!("n{node} c{c} #{}", creates.stored);
                    let call = Instant::now();
                    let created = store.create(&who, &content(&title)).await;
                    creates.latencies.push(call.elapsed());
                    match created {
                        Ok(_) => creates.stored += 1,
                        Err(WriteError::Quota(QuotaExceeded::Entries { .. })) => {
                            creates.refused += 1;
                            if until_refused {
                                break;
                            }
                        }
                        Err(e) => creates.failed.push(format!("node{node}: {e:?}")),
                    }
                }
                creates
            }));
        }
    }
    let mut all = Creates::default();
    for task in tasks {
        let one = task.await.expect("client");
        all.stored += one.stored;
        all.refused += one.refused;
        all.failed.extend(one.failed);
        all.latencies.extend(one.latencies);
    }
    all.latencies.sort();
    all
}

/// The user's usage over all slots, and what is stored, read through a node.
async fn usage_and_stored(url: &str, who: &UserId) -> ((i64, i64), (i64, i64), i64) {
    let mut conn = MySqlConnection::connect(url).await.expect("node");
    let usage: (i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(entries) AS SIGNED), CAST(SUM(bytes) AS SIGNED) FROM todo_usage WHERE user_id = ?",
    )
    .bind(who.as_str())
    .fetch_one(&mut conn)
    .await
    .expect("usage");
    let stored: (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(LENGTH(title) + LENGTH(text)), 0) AS SIGNED) FROM todos WHERE user_id = ?",
    )
    .bind(who.as_str())
    .fetch_one(&mut conn)
    .await
    .expect("stored");
    let slots: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM todo_usage WHERE user_id = ?")
        .bind(who.as_str())
        .fetch_one(&mut conn)
        .await
        .expect("slots");
    (usage, stored, slots)
}

/// One user creating through all three nodes at once: the nodes keep the
/// user's usage in slots of their own, so no create fails certification
/// against another (none fails at all); the entry quota still refuses past
/// its limit, over it by at most one create in flight through each other
/// node; and the slots sum to exactly what is stored.
#[test]
fn one_users_creates_through_every_node_do_not_conflict_and_keep_the_quota() {
    const CLIENTS_PER_NODE: usize = 4;
    const LOAD: Duration = Duration::from_secs(4);
    const LIMIT: u64 = 60;
    on_fresh_database("galera_one_user", |urls| async move {
        let stores = migrated_stores(&urls).await;

        // Throughput: one user, 12 clients, 4 through each node.
        let ann = user(3);
        let load = create_through_every_node(&stores, &ann, CLIENTS_PER_NODE, LOAD, false).await;
        let p99 = load.latencies[load.latencies.len() * 99 / 100];
        eprintln!(
            "one user through {NODES} nodes, {} clients: {} creates in {LOAD:?} ({:.0}/s), p50 {:?}, p99 {p99:?}, failed {}",
            NODES * CLIENTS_PER_NODE,
            load.stored,
            load.stored as f64 / LOAD.as_secs_f64(),
            load.latencies[load.latencies.len() / 2],
            load.failed.len(),
        );
        assert!(
            load.failed.is_empty(),
            "creates failed: {:?}",
            &load.failed[..load.failed.len().min(5)]
        );
        assert!(load.stored > 0);

        // The quota: everyone creates until refused.
        let quota = QuotaSettings {
            max_entries: LIMIT,
            ..QuotaSettings::default()
        };
        let limited: Vec<SqlTodoStore> =
            stores.iter().map(|s| s.clone().with_quota(quota)).collect();
        let bob = user(4);
        let race = create_through_every_node(
            &limited,
            &bob,
            CLIENTS_PER_NODE,
            Duration::from_secs(30),
            true,
        )
        .await;
        eprintln!(
            "quota {LIMIT}: {} stored, {} refused, failed {}",
            race.stored,
            race.refused,
            race.failed.len()
        );
        assert!(
            race.failed.is_empty(),
            "creates failed: {:?}",
            &race.failed[..race.failed.len().min(5)]
        );
        assert_eq!(
            race.refused,
            NODES * CLIENTS_PER_NODE,
            "every client was refused in the end"
        );
        let overshoot = race.stored as u64 - LIMIT.min(race.stored as u64);
        assert!(
            race.stored as u64 >= LIMIT && overshoot < NODES as u64,
            "stored {} against a quota of {LIMIT}: at most {} over",
            race.stored,
            NODES - 1
        );
        for store in &limited {
            assert!(matches!(
                store.create(&bob, &content("one more")).await,
                Err(WriteError::Quota(QuotaExceeded::Entries { .. }))
            ));
        }

        for who in [&ann, &bob] {
            for url in &urls {
                let (usage, stored, slots) = usage_and_stored(url, who).await;
                assert_eq!(
                    usage, stored,
                    "usage slots sum to the stored entries on {url}"
                );
                assert_eq!(slots, NODES as i64, "one usage slot per node");
            }
        }
        assert_eq!(
            usage_and_stored(&urls[0], &ann).await.1 .0,
            load.stored as i64
        );
    });
}

/// A client's retries of one create, sent at once through every node (as
/// through gateways behind a load balancer): one entry and one id, whichever
/// node's transaction wins; the others lose certification or collide on the
/// key and answer with the winner's id.
#[test]
fn one_request_id_through_every_node_at_once_creates_one_entry() {
    on_fresh_database("galera_once", |urls| async move {
        let stores = migrated_stores(&urls).await;
        let ann = user(3);
        const KEYS: usize = 20;
        for round in 0..KEYS {
            let key = RequestId::parse(&format!("10000000-0000-4000-8000-{round:012}"))
                .expect("uuid")
                .expect("present");
            let entry = content(&format!("once {round}"));
            let calls: Vec<_> = stores
                .iter()
                .map(|store| {
                    let (store, ann, key, entry) =
                        (store.clone(), ann.clone(), key.clone(), entry.clone());
                    tokio::spawn(async move { store.create_once(&ann, &entry, &key).await })
                })
                .collect();
            let mut ids = BTreeSet::new();
            let mut created = 0;
            for call in calls {
                match call.await.expect("task").expect("create_once") {
                    CreateOnce::Created(id) => {
                        created += 1;
                        ids.insert(id);
                    }
                    CreateOnce::Repeated(id) => {
                        ids.insert(id);
                    }
                    CreateOnce::Mismatch => panic!("round {round}: same content"),
                }
            }
            assert_eq!(created, 1, "round {round}: one call creates");
            assert_eq!(ids.len(), 1, "round {round}: one id for all: {ids:?}");
        }
        let stored = all_entries(&stores[1], &ann).await;
        assert_eq!(stored.len(), KEYS, "one entry per request id");
    });
}
