//! Accounts and retries on SQLite and MariaDB: throttling seen from two
//! client addresses (127.0.0.1 and 127.0.0.2), with the services in-process
//! (see `support/in_process.rs`), and `kill -9` of the todo service under
//! a create load with request ids, with the binaries as processes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::in_process::{self, Stack};
use support::{free_addr, wait_for_port, Proc, Workspace};
use todoapp_api::{CreateToDoReq, LoginReq, RegisterReq, ToDoEntry};
use todoapp_e2e::client::{authed, connect_from};
use todoapp_e2e::scenarios::accounts::stranger_cannot_lock_out_the_owner;
use todoapp_e2e::scenarios::Ctx;
use tonic::Code;

const AWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Cheap hashes for tests, and small limits so they are reached quickly.
/// Cheap hashes and tight throttling limits, as TOML for the process tests
/// (the `[argon2]` table's keys, and a top-level `[throttle]` table).
const CHEAP_ARGON2: &str = "memory_kib = 1024\niterations = 1\nparallelism = 1\n";
const TIGHT_THROTTLE: &str =
    "[throttle]\nlogin_failures = 3\naddress_failures = 8\nregistrations = 4\n";

/// The in-process stack with [`CHEAP_ARGON2`]'s and [`TIGHT_THROTTLE`]'s settings, the user
/// database at `user_db`.
async fn start_throttled_stack(ws: &Workspace, user_db: &str) -> Stack {
    let mut user = in_process::user_config(ws, user_db);
    user.argon2.memory_kib = 1024;
    user.argon2.iterations = 1;
    user.argon2.parallelism = 1;
    user.throttle.login_failures = 3;
    user.throttle.address_failures = 8;
    user.throttle.registrations = 4;
    let todo = in_process::todo_config(ws, &in_process::sqlite_url(ws, "todo"));
    Stack::start(ws, user, todo, |_| {}).await
}

async fn throttling_from_two_addresses(ws: &Workspace, user_db: &str) {
    let stack = start_throttled_stack(ws, user_db).await;
    let target = stack.target(ws);
    let home = Ctx::new(connect_from(&target, None).await.expect("connect"));
    let away = Ctx::new(
        connect_from(&target, Some(AWAY))
            .await
            .expect("connect from 127.0.0.2"),
    );

    // Per (account, address), and no lockout by a stranger.
    stranger_cannot_lock_out_the_owner(&home, &away)
        .await
        .expect("stranger vs owner");

    // Per address across accounts: 8 failures, whatever the usernames.
    let mut failures = 3; // the stranger's, above
    let mut refused_at = None;
    for n in 0..20 {
        let result = away
            .users()
            .login(LoginReq {
                username: away.unique(&format!("stuffing{n}")),
                password: "password1".into(),
            })
            .await;
        match result {
            Err(s) if s.code() == Code::Unauthenticated => failures += 1,
            Err(s) if s.code() == Code::ResourceExhausted => {
                refused_at = Some(failures);
                break;
            }
            other => panic!("stuffing attempt {n}: {other:?}"),
        }
    }
    assert_eq!(refused_at, Some(8), "the address limit is 8 failures");
    let status = home
        .users()
        .login(LoginReq {
            username: home.unique("stuffing"),
            password: "password1".into(),
        })
        .await
        .expect_err("unknown user");
    assert_eq!(status.code(), Code::Unauthenticated, "home is unaffected");

    // Registrations per address: 4, then RESOURCE_EXHAUSTED; home unaffected.
    let mut accepted = 0;
    loop {
        let name = away.unique("reg");
        let result = away
            .users()
            .register(RegisterReq {
                username: name.clone(),
                password: "password1".into(),
                email: format!("{name}@example.org"),
            })
            .await;
        match result {
            Ok(_) => accepted += 1,
            Err(s) if s.code() == Code::ResourceExhausted => break,
            Err(s) => panic!("register: {s:?}"),
        }
        assert!(accepted <= 4, "more than 4 registrations accepted");
    }
    assert_eq!(accepted, 4);
    home.account().await.expect("home may still register");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_from_two_addresses_sqlite() {
    let ws = Workspace::new();
    let db = in_process::sqlite_url(&ws, "user");
    throttling_from_two_addresses(&ws, &db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_from_two_addresses_mariadb() {
    let ws = Workspace::new();
    throttling_from_two_addresses(&ws, &in_process::mariadb_url("acct_throttle").await).await;
}

/// Creates under load with request ids while the todo service is killed
/// with SIGKILL and restarted; every failed call is retried with its
/// request id until it succeeds. Afterwards the stored entries are exactly
/// the acknowledged ones, and no call ever failed with INTERNAL or UNKNOWN.
async fn kill_9_under_create_load(user_db: String, todo_db: String) {
    const WORKERS: usize = 4;
    const PER_WORKER: usize = 30;

    let ws = Workspace::new();
    let (gateway, user, todo) = (free_addr(), free_addr(), free_addr());
    let user_config = ws.user_config(user, &user_db, TIGHT_THROTTLE, CHEAP_ARGON2);
    let todo_config = ws.todo_config(todo, &todo_db, "");
    // The load is one user's: the per-user rate limit would refuse calls
    // (RESOURCE_EXHAUSTED) that this test counts as transport failures.
    let gateway_config = ws.gateway_config(
        gateway,
        user,
        todo,
        "[fair_share]\nwrites_per_sec = 1000000\nwrite_burst = 1000000\nreads_per_sec = 1000000\nread_burst = 1000000\n",
    );
    let _user = Proc::service("user", &user_config);
    let todo_proc = Arc::new(Mutex::new(Some(Proc::service("todo", &todo_config))));
    let _gateway = Proc::service("gateway", &gateway_config);
    for addr in [user, todo, gateway] {
        wait_for_port(addr, Duration::from_secs(60));
    }
    let target = ws.gateway_target(gateway);
    let ctx = Arc::new(Ctx::new(
        connect_from(&target, None).await.expect("connect"),
    ));
    let account = ctx.account().await.expect("account");
    let token = Arc::new(account.token);

    let acknowledged = Arc::new(Mutex::new(BTreeMap::<i32, String>::new()));
    let failures = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (ctx, token) = (ctx.clone(), token.clone());
            let (acknowledged, failures) = (acknowledged.clone(), failures.clone());
            tokio::spawn(async move {
                for n in 0..PER_WORKER {
                    let title = format!("load {w}-{n}");
                    let request_id = uuid::Uuid::new_v4().to_string();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let request = CreateToDoReq {
                            item: Some(ToDoEntry {
                                title: title.clone(),
                                ..Default::default()
                            }),
                            request_id: request_id.clone(),
                        };
                        match ctx.todos().create_to_do(authed(request, &token)).await {
                            Ok(rsp) => {
                                let id = rsp.into_inner().id;
                                let previous =
                                    acknowledged.lock().expect("lock").insert(id, title.clone());
                                assert!(previous.is_none(), "id {id} acknowledged twice");
                                break;
                            }
                            Err(status) => {
                                *failures
                                    .lock()
                                    .expect("lock")
                                    .entry(format!("{:?}", status.code()))
                                    .or_default() += 1;
                                assert!(
                                    Instant::now() < deadline,
                                    "{title} never succeeded: {status:?}"
                                );
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Kill the todo service mid-load, twice, restarting it each time.
    for _ in 0..2 {
        let target_count = acknowledged.lock().expect("lock").len() + 15;
        let wait_until = Instant::now() + Duration::from_secs(60);
        while acknowledged.lock().expect("lock").len() < target_count && Instant::now() < wait_until
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let mut slot = todo_proc.lock().expect("lock");
            if let Some(mut proc) = slot.take() {
                proc.signal(libc::SIGKILL);
                proc.wait(Duration::from_secs(10));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        *todo_proc.lock().expect("lock") = Some(Proc::service("todo", &todo_config));
    }
    for worker in workers {
        worker.await.expect("worker");
    }

    let failures = failures.lock().expect("lock").clone();
    println!("failed attempts by code: {failures:?}");
    for code in failures.keys() {
        assert!(
            code == "Unavailable" || code == "DeadlineExceeded",
            "a transport failure reached the client as {code}: {failures:?}"
        );
    }
    assert!(
        !failures.is_empty(),
        "the kills interrupted nothing; the test proved nothing"
    );

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert_eq!(acknowledged.len(), WORKERS * PER_WORKER);
    let stored = support::stored_titles(&ctx, &token).await;
    let titles: BTreeSet<&String> = stored.values().collect();
    assert_eq!(titles.len(), stored.len(), "an entry was stored twice");
    assert_eq!(
        stored, acknowledged,
        "stored entries differ from acknowledged ones"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_create_load_stores_exactly_the_acknowledged_sqlite() {
    let ws = Workspace::new();
    let (user_db, todo_db) = (
        in_process::sqlite_url(&ws, "user"),
        in_process::sqlite_url(&ws, "todo"),
    );
    kill_9_under_create_load(user_db, todo_db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_create_load_stores_exactly_the_acknowledged_mariadb() {
    kill_9_under_create_load(
        in_process::mariadb_url("acct_kill_user").await,
        in_process::mariadb_url("acct_kill_todo").await,
    )
    .await;
}
