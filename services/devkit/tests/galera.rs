//! The private Galera cluster forms, survives a node crash and heals.

use std::time::Instant;

use sqlx::{Connection, MySqlConnection};
use todoapp_devkit::galera::{status, GaleraCluster, NODES};

#[test]
fn cluster_forms_replicates_and_a_killed_node_rejoins() {
    let base = std::env::temp_dir().join(format!("todoapp-devkit-galera-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let started = Instant::now();
    let mut cluster = GaleraCluster::start(&base).expect("a 3-node Galera cluster starts");
    eprintln!("cluster formed in {:?}", started.elapsed());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let urls = runtime
        .block_on(cluster.create_database("devkit_galera"))
        .expect("database");
    runtime.block_on(async {
        let mut first = MySqlConnection::connect(&urls[0]).await.expect("node0");
        sqlx::query("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)")
            .execute(&mut first)
            .await
            .expect("create table");
        sqlx::query("INSERT INTO t (v) VALUES (1)")
            .execute(&mut first)
            .await
            .expect("insert");
        for url in &urls {
            assert_eq!(
                status(url, "wsrep_cluster_size").await.expect("status"),
                "3"
            );
            let mut conn = MySqlConnection::connect(url).await.expect("node");
            sqlx::query("SET SESSION wsrep_sync_wait = 1")
                .execute(&mut conn)
                .await
                .expect("sync wait");
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
                .fetch_one(&mut conn)
                .await
                .expect("count");
            assert_eq!(n, 1, "the row replicated to {url}");
        }
    });

    cluster.kill(1);
    cluster
        .wait_cluster_size(NODES - 1)
        .expect("the survivors evict the killed node");
    runtime.block_on(async {
        let mut conn = MySqlConnection::connect(&urls[2]).await.expect("node2");
        sqlx::query("INSERT INTO t (v) VALUES (2)")
            .execute(&mut conn)
            .await
            .expect("a survivor takes writes");
    });
    let restarted = Instant::now();
    cluster.restart(1).expect("the killed node rejoins");
    eprintln!("node1 rejoined in {:?}", restarted.elapsed());
    runtime.block_on(async {
        let mut conn = MySqlConnection::connect(&urls[1]).await.expect("node1");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE v = 2")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!(n, 1, "the write made while node1 was down reached it");
    });
    drop(cluster);
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
}
