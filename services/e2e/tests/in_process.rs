//! The end-to-end scenario suite against the three services running inside
//! this test process (real TLS and mutual TLS, SQLite and MariaDB), and the
//! in-process seam itself: listeners on port 0, and a stop that does what
//! SIGTERM does.

mod support;

use std::time::{Duration, Instant};

use support::in_process::{mariadb_url, sqlite_url, todo_config, user_config, Running, Stack};
use support::{http_get, HealthWatch, Workspace};
use todoapp_todo::TodoService;

/// The whole scenario suite through an in-process stack whose databases
/// are at `user_db` and `todo_db`.
async fn scenarios_pass(ws: &Workspace, user_db: &str, todo_db: &str) {
    let mut user = user_config(ws, user_db);
    // As in todoapp-stack: every client here is this machine, so the
    // per-address limits (meant for the internet) would refuse the suite;
    // the per-account limits stay at their defaults.
    user.throttle.address_failures = 100_000;
    user.throttle.registrations = 100_000;
    let todo = todo_config(ws, todo_db);
    // The suite's bulk creates (1001 entries) would wait ~18 s for the
    // per-user write rate; the fair share has tests of its own.
    let stack = Stack::start(ws, user, todo, |gateway| {
        gateway.fair_share.writes_per_sec = 100_000;
        gateway.fair_share.write_burst = 100_000;
    })
    .await;
    for running in [&stack.user, &stack.todo, &stack.gateway] {
        assert!(running.addr.ip().is_loopback() && running.addr.port() != 0);
    }

    let failures = todoapp_e2e::run(&stack.target(ws), None)
        .await
        .expect("connect to the in-process gateway");
    assert_eq!(failures, 0, "scenarios failed (see the output above)");
    assert!(!todoapp_e2e::scenarios::all().is_empty(), "no scenario ran");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_pass_in_process() {
    let ws = Workspace::new();
    scenarios_pass(&ws, &sqlite_url(&ws, "user"), &sqlite_url(&ws, "todo")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_pass_in_process_mariadb() {
    let ws = Workspace::new();
    let (user_db, todo_db) = (
        mariadb_url("inproc_user").await,
        mariadb_url("inproc_todo").await,
    );
    scenarios_pass(&ws, &user_db, &todo_db).await;
}

/// The shutdown future passed to `run_until` does what SIGTERM does for the
/// binaries: NOT_SERVING at once, no new connections, in-flight calls
/// drained for at most `shutdown_timeout_secs`, then the service returns.
#[tokio::test(flavor = "multi_thread")]
async fn stopping_reports_not_serving_refuses_connections_and_bounds_the_drain() {
    let ws = Workspace::new();
    let mut config = todo_config(&ws, &sqlite_url(&ws, "todo"));
    config.server.shutdown_timeout_secs = 2;
    config.server.metrics.listen = "127.0.0.1:0".into();
    let todo = Running::start::<TodoService>(config).await;
    let addr = todo.addr;
    let metrics = todo.metrics.expect("metrics listener");
    assert_ne!(metrics.port(), 0);
    let (head, body) = http_get(metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("todoapp_db_pool_connections"), "{body}");

    let channel = ws.backend_channel(addr, true).await.expect("connect");
    let mut watch = HealthWatch::serving(channel, "ToDo").await;

    let started = Instant::now();
    let stopped = tokio::spawn(todo.stop());
    watch.next_is_not_serving().await;
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        while ws.backend_channel(addr, true).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "still accepting connections while draining"
    );

    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("stopped after the drain deadline")
        .expect("stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "the watch stream was abandoned after {took:?}, not the 2 s deadline"
    );
}
