//! The end-to-end scenario suite against the three services running inside
//! this test process (real TLS and mutual TLS, SQLite databases), and the
//! in-process seam itself: port 0, then a clean stop.

mod support;

use support::in_process::{sqlite_url, todo_config, user_config, Stack};
use support::Workspace;

#[tokio::test(flavor = "multi_thread")]
async fn scenarios_pass_in_process() {
    let ws = Workspace::new();
    let mut user = user_config(&ws, &sqlite_url(&ws, "user"));
    // As in todoapp-stack: every client here is this machine, so the
    // per-address limits (meant for the internet) would refuse the suite;
    // the per-account limits stay at their defaults.
    user.throttle.address_failures = 100_000;
    user.throttle.registrations = 100_000;
    let todo = todo_config(&ws, &sqlite_url(&ws, "todo"));
    // The suite's bulk creates (1001 entries) would wait ~18 s for the
    // per-user write rate; the fair share has tests of its own.
    let stack = Stack::start(&ws, user, todo, |gateway| {
        gateway.fair_share.writes_per_sec = 100_000;
        gateway.fair_share.write_burst = 100_000;
    })
    .await;
    for running in [&stack.user, &stack.todo, &stack.gateway] {
        assert!(running.addr.ip().is_loopback() && running.addr.port() != 0);
    }

    let failures = todoapp_e2e::run(&stack.target(&ws), None)
        .await
        .expect("connect to the in-process gateway");
    assert_eq!(failures, 0, "scenarios failed (see the output above)");
    assert!(!todoapp_e2e::scenarios::all().is_empty(), "no scenario ran");
    stack.stop().await;
}
