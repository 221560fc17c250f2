//! `todoapp-stack` as a newcomer runs it, with `todoapp-e2e` against it:
//! SQLite and MariaDB, persistence across restarts, clean stop, restarts of
//! crashed services.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::bin;
use todoapp_api::{CreateToDoReq, ListToDoReq, LoginReq, RegisterReq, ToDoEntry};
use todoapp_e2e::client::{authed, connect};
use todoapp_e2e::scenarios::Ctx;
use todoapp_e2e::Target;

struct Stack {
    stack: todoapp_devkit::stack::Stack,
    target: Target,
}

fn start_stack(state: &Path, database: &str) -> Stack {
    start_stack_with(state, database, &[])
}

fn start_stack_with(state: &Path, database: &str, extra: &[&str]) -> Stack {
    let stack = todoapp_devkit::stack::Stack::launch(state, database)
        .and_then(|launch| launch.args(extra).start())
        .unwrap_or_else(|e| panic!("{e}"));
    let target = Target::from_stack_json(&state.join("stack.json")).expect("stack.json");
    assert!(target.ca.is_absolute(), "ca_cert must be absolute");
    Stack { stack, target }
}

fn stop_stack(stack: Stack, state: &Path) {
    let log = stack.stack.log();
    let status = stack.stack.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "stack exit {status}; log:\n{log}");
    assert!(!state.join("stack.json").exists(), "stack.json left behind");
}

fn run_e2e(target: &Target) {
    let out = Command::new(env!("CARGO_BIN_EXE_todoapp-e2e"))
        .args(["--gateway", &target.gateway, "--ca"])
        .arg(&target.ca)
        .output()
        .expect("run todoapp-e2e");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success(),
        "todoapp-e2e failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: usize = last
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(last, format!("{passed} passed, 0 failed"));
    assert_eq!(
        passed,
        todoapp_e2e::scenarios::all().len(),
        "not every scenario ran"
    );
}

/// `todoapp-e2e --filter SUBSTR` runs exactly the scenarios whose name
/// contains SUBSTR.
fn run_e2e_filtered(target: &Target, filter: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_todoapp-e2e"))
        .args(["--gateway", &target.gateway, "--filter", filter, "--ca"])
        .arg(&target.ca)
        .output()
        .expect("run todoapp-e2e");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "todoapp-e2e --filter failed:\n{stdout}"
    );
    let expected: Vec<&str> = todoapp_e2e::scenarios::all()
        .into_iter()
        .map(|s| s.name)
        .filter(|name| name.contains(filter))
        .collect();
    assert!(
        expected.len() > 1,
        "`{filter}` selects too few scenarios to test"
    );
    let ran: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("PASS  "))
        .filter_map(|line| line.rsplit_once(" (").map(|(name, _)| name))
        .collect();
    assert_eq!(ran, expected, "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some(format!("{} passed, 0 failed", expected.len()).as_str())
    );
}

/// `todoapp-e2e --list` prints every scenario's name in order, without a
/// gateway; with `--filter` only the matching ones.
#[test]
fn e2e_lists_its_scenarios_and_filters_them_by_name() {
    let list = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_todoapp-e2e"))
            .arg("--list")
            .args(args)
            .output()
            .expect("run todoapp-e2e --list");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let all: Vec<String> = todoapp_e2e::scenarios::all()
        .into_iter()
        .map(|s| s.name.to_owned())
        .collect();
    assert_eq!(all.len(), 20, "a scenario was lost or added unnoticed");
    assert_eq!(list(&[]), all);
    let tokens: Vec<String> = all
        .iter()
        .filter(|name| name.contains("token"))
        .cloned()
        .collect();
    assert_eq!(tokens.len(), 3);
    assert_eq!(list(&["--filter", "token"]), tokens);
    assert_eq!(
        list(&["--filter", "no scenario is called this"]),
        Vec::<String>::new()
    );

    let out = Command::new(env!("CARGO_BIN_EXE_todoapp-abuse"))
        .arg("--list")
        .output()
        .expect("run todoapp-abuse --list");
    let abuse: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(abuse, todoapp_e2e::abuse::scenario_names());
}

/// The owner on 127.0.0.1 is not locked out by a stranger guessing from
/// 127.0.0.2 (the stack's per-address limits are raised, the per-account
/// ones are the defaults).
async fn two_addresses(target: &Target) {
    let home = Ctx::new(connect(target).await.expect("connect"));
    let away = Ctx::new(
        todoapp_e2e::client::connect_from(target, Some([127, 0, 0, 2].into()))
            .await
            .expect("connect from 127.0.0.2"),
    );
    todoapp_e2e::scenarios::accounts::stranger_cannot_lock_out_the_owner(&home, &away)
        .await
        .expect("stranger vs owner");
}

/// Registers a user with one entry; returns (username, password, entry id).
async fn seed(target: &Target, title: &str) -> (String, String, i32) {
    let ctx = Ctx::new(connect(target).await.expect("connect"));
    let account = ctx.account().await.expect("account");
    let id = ctx
        .create(&account.token, title, "persisted")
        .await
        .expect("create");
    (account.username, account.password, id)
}

async fn still_there(target: &Target, user: &(String, String, i32), title: &str) {
    let ctx = Ctx::new(connect(target).await.expect("connect"));
    let login = ctx
        .users()
        .login(LoginReq {
            username: user.0.clone(),
            password: user.1.clone(),
        })
        .await
        .expect("login after restart")
        .into_inner();
    let entry = ctx
        .get(&login.jwt_token, user.2)
        .await
        .expect("entry after restart");
    assert_eq!(entry.title, title);
}

/// Each service's metrics, at the address in stack.json (and printed),
/// after the e2e run: its calls were counted.
fn metrics_are_served(stack: &Stack) {
    let json = stack.stack.info();
    for service in ["gateway", "user", "todo"] {
        let addr = json["metrics"][service]
            .as_str()
            .unwrap_or_else(|| panic!("no metrics address for {service}: {json}"));
        assert!(
            stack
                .stack
                .log()
                .contains(&format!("http://{addr}/metrics")),
            "address not printed"
        );
        let (head, response) = support::http_get(addr.parse().expect("address"), "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            response.contains(&format!("todoapp_build_info{{service=\"{service}\"")),
            "{response}"
        );
        assert!(
            response.contains("grpc_server_handled_total{grpc_type=\"unary\""),
            "{service}: no call counted: {response}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_stack_passes_e2e_persists_and_stops_cleanly() {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(state.path(), "sqlite");
    let pki = state.path().join("pki");
    for key in [
        "gateway.key",
        "user.key",
        "todo.key",
        "gateway-client.key",
        "jwt-ed25519.key",
    ] {
        assert_eq!(mode(&pki.join(key)), 0o600, "{key} must be private");
    }
    let ca_before = std::fs::read(pki.join("ca.crt")).expect("ca");

    run_e2e(&stack.target);
    run_e2e_filtered(&stack.target, "token");
    two_addresses(&stack.target).await;
    metrics_are_served(&stack);
    let user = seed(&stack.target, "survives restarts").await;
    stop_stack(stack, state.path());

    let stack = start_stack(state.path(), "sqlite");
    assert_eq!(
        std::fs::read(pki.join("ca.crt")).expect("ca"),
        ca_before,
        "PKI must be reused"
    );
    still_there(&stack.target, &user, "survives restarts").await;
    stop_stack(stack, state.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_stack_passes_e2e_and_persists() {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(state.path(), "mariadb");
    assert!(
        state.path().join("mariadb/data").is_dir(),
        "MariaDB data must live in the state dir"
    );
    run_e2e(&stack.target);
    two_addresses(&stack.target).await;
    let user = seed(&stack.target, "in mariadb").await;
    stop_stack(stack, state.path());

    let stack = start_stack(state.path(), "mariadb");
    still_there(&stack.target, &user, "in mariadb").await;
    stop_stack(stack, state.path());
}

async fn create_titled(ctx: &Ctx, token: &str, title: &str) -> Result<(), tonic::Status> {
    let item = ToDoEntry {
        title: title.into(),
        ..Default::default()
    };
    ctx.todos()
        .create_to_do(authed(
            CreateToDoReq {
                item: Some(item),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|_| ())
}

fn pid_of_service(config: &Path) -> Option<i32> {
    pid_of("todoapp-todo", config)
}

/// The pid of the running `binary` started with `config`.
fn pid_of(binary: &str, config: &Path) -> Option<i32> {
    let needle = config.display().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with(binary)) && args.iter().any(|a| a == &needle) {
            return Some(pid);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn stack_restarts_a_crashed_service_and_refuses_a_second_instance() {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(state.path(), "sqlite");

    // A second stack on the same state dir must refuse to start.
    let second = Command::new(bin("todoapp-stack"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("second stack");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another todoapp-stack"));

    let ctx = Ctx::new(connect(&stack.target).await.expect("connect"));
    let account = ctx.account().await.expect("account");
    let config = std::fs::canonicalize(state.path())
        .expect("canon")
        .join("run/todo.toml");
    let pid = pid_of_service(&config).expect("todo service pid");
    // SAFETY: kill(2) on a process this test's stack started.
    unsafe { libc::kill(pid, libc::SIGKILL) };

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match create_titled(&ctx, &account.token, "after crash").await {
            Ok(_) => break,
            Err(status) => assert!(
                Instant::now() < deadline,
                "todo service not back: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_pid = pid_of_service(&config).expect("restarted todo service");
    assert_ne!(new_pid, pid);
    // Registration still works too.
    ctx.users()
        .register(RegisterReq {
            username: ctx.unique("late"),
            password: "password1".into(),
            email: format!("{}@example.org", ctx.unique("late")),
        })
        .await
        .expect("register");
    stop_stack(stack, state.path());
}

#[test]
fn replicas_over_sqlite_are_refused_with_a_clear_message() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("todoapp-stack"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["--listen", "127.0.0.1:0", "--replicas", "2"])
        .output()
        .expect("stack");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--replicas 2 needs a database every instance can share"),
        "{stderr}"
    );
    assert!(
        !state.path().join("todo.db").exists(),
        "nothing was created"
    );
}

/// Two instances of every service over a private 3-node Galera cluster,
/// every gateway balancing over all of them: the e2e suite passes through
/// the second gateway and reaches both instances of each backend, a write through one
/// gateway is read through the other, and with one gateway killed
/// (SIGKILL) the other goes on serving without a failed call.
#[tokio::test(flavor = "multi_thread")]
async fn galera_stack_with_two_replicas_serves_through_each_gateway_and_survives_a_gateway_kill() {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack_with(state.path(), "galera", &["--replicas", "2"]);
    let gateways = stack.stack.gateways();
    assert_eq!(gateways.len(), 2);
    assert_eq!(gateways[0], stack.target.gateway, "`gateway` is the first");
    let targets: Vec<Target> = gateways
        .iter()
        .map(|g| Target {
            gateway: g.clone(),
            ..stack.target.clone()
        })
        .collect();
    // The whole suite through the second gateway (instance 2, Galera node
    // 1); an entry written through the first gateway (node 0) is read
    // through the second.
    run_e2e(&targets[1]);
    // Every gateway balances over every instance: both user instances
    // answered logins (and the suite's throttling scenario still held, its
    // counters being in the database), both todo instances creates.
    for instance in stack.stack.info()["metrics_instances"]
        .as_array()
        .expect("metrics_instances")
    {
        for (service, method) in [("user", "Login"), ("todo", "CreateToDo")] {
            let addr = instance[service].as_str().expect("metrics address");
            let (_, metrics) = support::http_get(addr.parse().expect("address"), "/metrics");
            // Series of handled calls exist once a call ended.
            let handled = metrics.lines().any(|line| {
                line.starts_with("grpc_server_handled_total{")
                    && line.contains(&format!("grpc_method=\"{method}\""))
            });
            assert!(handled, "{service} instance at {addr} answered no {method}");
        }
    }
    let user = seed(&targets[0], "across gateways").await;
    still_there(&targets[1], &user, "across gateways").await;

    let config = std::fs::canonicalize(state.path())
        .expect("canon")
        .join("run/gateway.toml");
    let pid = pid_of("todoapp-gateway", &config).expect("first gateway pid");
    let ctx = Ctx::new(connect(&targets[1]).await.expect("connect"));
    let account = ctx.account().await.expect("account");
    // SAFETY: kill(2) on a process this test's stack started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Reads for two seconds, a write every tenth call, 20 calls a second:
    // below the gateway's per-user fair share (a tight loop would meet it).
    let until = Instant::now() + Duration::from_secs(2);
    let mut calls = 0;
    while Instant::now() < until {
        if calls % 10 == 0 {
            create_titled(&ctx, &account.token, &format!("after gateway kill {calls}"))
                .await
                .unwrap_or_else(|s| {
                    panic!("create {calls} through the other gateway failed: {s:?}")
                });
        } else {
            ctx.todos()
                .list_to_do(authed(ListToDoReq::default(), &account.token))
                .await
                .unwrap_or_else(|s| panic!("list {calls} through the other gateway failed: {s:?}"));
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(calls > 0);
    stop_stack(stack, state.path());
}

/// The processes whose parent is `parent`, as (pid, command name).
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((name, ppid, _)) = process_status(pid) {
            if ppid == parent {
                children.push((pid, name));
            }
        }
    }
    children
}

/// (command name, parent pid, state) of `pid` from `/proc/PID/stat`.
fn process_status(pid: u32) -> Option<(String, u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (NAME) STATE PPID …`; NAME may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((name, ppid, state))
}

/// Whether `pid` still runs (a zombie has stopped, only not been reaped).
fn is_alive(pid: u32) -> bool {
    process_status(pid).is_some_and(|(_, _, state)| state != 'Z')
}

/// A stack killed with SIGKILL (no chance to stop anything) leaves no
/// service and no private mariadbd running: they get SIGTERM when it dies.
#[test]
fn sigkilled_stack_leaves_no_service_or_database_server_behind() {
    sigkilled_stack_leaves_nothing_behind("mariadb", 1);
}

/// The same with a private Galera cluster, whose three nodes run as the
/// `mysql` account when the stack runs as root: they are switched to it
/// before they start, so the parent-death signal still holds.
#[test]
fn sigkilled_galera_stack_leaves_no_node_behind() {
    sigkilled_stack_leaves_nothing_behind("galera", 3);
}

fn sigkilled_stack_leaves_nothing_behind(database: &str, servers: usize) {
    let state = tempfile::tempdir().expect("tempdir");
    let stack = start_stack(state.path(), database);
    let pid = stack.stack.pid();
    let children = children_of(pid);
    let names: Vec<&str> = children.iter().map(|(_, name)| name.as_str()).collect();
    for expected in ["todoapp-gateway", "todoapp-user", "todoapp-todo"] {
        // /proc's command names are cut at 15 bytes.
        assert!(
            names.iter().any(|n| expected.starts_with(n)),
            "{expected} is not a child of the stack: {names:?}"
        );
    }
    assert_eq!(
        names.iter().filter(|n| **n == "mariadbd").count(),
        servers,
        "mariadbd children of the stack: {names:?}"
    );
    stack.stack.signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: Vec<&(u32, String)> =
            children.iter().filter(|(pid, _)| is_alive(*pid)).collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after the stack was killed: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
