//! The service binaries as real processes: mutual TLS, bounded failure
//! when a backend or database is gone, config errors, graceful shutdown,
//! and the systemd protocols (socket activation, sd_notify).

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{bin, free_addr, wait_for_port, Proc, Workspace};
use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::user_client::UserClient;
use todoapp_api::{CreateToDoReq, ListToDoReq, LoginReq, RegisterReq, ToDoEntry};
use todoapp_devkit::mariadb::MariaDb;
use todoapp_devkit::pki::files;
use tonic::{Code, Request};

const USER_ID: &str = "6f1c7d7e-8a51-4b8e-9d33-1e2f3a4b5c6d";

fn as_user<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-todoapp-user-id", USER_ID.parse().expect("ascii"));
    request
}

fn sign_token(ws: &Workspace, sub: &str) -> String {
    let pem = std::fs::read(ws.pki(files::JWT_PRIVATE_KEY)).expect("jwt key");
    let key = todoapp_auth::SigningKey::from_pkcs8_pem(&pem).expect("signing key");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = todoapp_auth::Claims {
        sub: sub.into(),
        iat: now,
        exp: now + 600,
        iss: "todoapp".into(),
        aud: "todoapp".into(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding).expect("sign")
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_require_a_client_certificate_from_the_internal_ca() {
    let ws = Workspace::new();
    let addr = free_addr();
    let db = format!("sqlite://{}", ws.path().join("todo.db").display());
    let config = ws.todo_config(addr, &db, "");
    let _todo = Proc::service("todo", &config);
    wait_for_port(addr, Duration::from_secs(30));

    let channel = ws.backend_channel(addr, true).await.expect("mTLS connect");
    ToDoClient::new(channel)
        .list_to_do(as_user(ListToDoReq::default()))
        .await
        .expect("with client cert");

    // Without a client certificate the handshake (or the first call) fails.
    let refused = match ws.backend_channel(addr, false).await {
        Err(_) => true,
        Ok(channel) => ToDoClient::new(channel)
            .list_to_do(as_user(ListToDoReq::default()))
            .await
            .is_err(),
    };
    assert!(refused, "a peer without a client certificate was served");

    // A certificate from another CA is refused too.
    let other = Workspace::new();
    let foreign = std::fs::read(other.pki(files::GATEWAY_CLIENT_CERT)).expect("cert");
    let foreign_key = std::fs::read(other.pki(files::GATEWAY_CLIENT_KEY)).expect("key");
    let ca = std::fs::read(ws.pki(files::INTERNAL_CA_CERT)).expect("ca");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(foreign, foreign_key))
        .domain_name("localhost");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls");
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => ToDoClient::new(channel)
            .list_to_do(as_user(ListToDoReq::default()))
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from a foreign CA was accepted");

    // And a mutually authenticated caller that names no user is refused.
    let channel = ws.backend_channel(addr, true).await.expect("mTLS connect");
    let status = ToDoClient::new(channel)
        .list_to_do(ListToDoReq::default())
        .await
        .expect_err("no identity");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_answers_unavailable_promptly_when_backends_are_down() {
    let ws = Workspace::new();
    let (gateway, user, todo) = (free_addr(), free_addr(), free_addr());
    let config = ws.gateway_config(gateway, user, todo, "");
    let _gw = Proc::service("gateway", &config);
    wait_for_port(gateway, Duration::from_secs(30));
    let channel = todoapp_e2e::client::connect(&ws.gateway_target(gateway))
        .await
        .expect("connect");

    let started = Instant::now();
    let status = UserClient::new(channel.clone())
        .login(LoginReq {
            username: "someone".into(),
            password: "password1".into(),
        })
        .await
        .expect_err("user service is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !status.message().contains("transport"),
        "leaks transport detail: {}",
        status.message()
    );

    let token = sign_token(&ws, USER_ID);
    let started = Instant::now();
    let status = ToDoClient::new(channel.clone())
        .list_to_do(todoapp_e2e::client::authed(ListToDoReq::default(), &token))
        .await
        .expect_err("todo service is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    // A bad token is refused before anything is forwarded: UNAUTHENTICATED,
    // not UNAVAILABLE, even though the backend is down.
    let status = ToDoClient::new(channel)
        .list_to_do(todoapp_e2e::client::authed(
            ListToDoReq::default(),
            "not-a-token",
        ))
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn database_outage_is_unavailable_and_recovers_without_restart() {
    let ws = Workspace::new();
    let base = ws.path().join("mariadb");
    let server = tokio::task::spawn_blocking({
        let base = base.clone();
        move || MariaDb::start(&base)
    })
    .await
    .expect("join")
    .expect("private MariaDB (install mariadb-server)");
    let url = server
        .create_database("todo_outage")
        .await
        .expect("database");

    let addr = free_addr();
    let config = ws.todo_config(addr, &url, "");
    let todo = Proc::service("todo", &config);
    wait_for_port(addr, Duration::from_secs(30));
    let channel = ws.backend_channel(addr, true).await.expect("connect");
    let mut client = ToDoClient::new(channel);
    let item = || {
        Some(ToDoEntry {
            title: "outage".into(),
            ..Default::default()
        })
    };
    client
        .create_to_do(as_user(CreateToDoReq {
            item: item(),
            ..Default::default()
        }))
        .await
        .expect("create while up");

    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop MariaDB");
    let started = Instant::now();
    let status = client
        .create_to_do(as_user(CreateToDoReq {
            item: item(),
            ..Default::default()
        }))
        .await
        .expect_err("database is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !status.message().to_lowercase().contains("sql"),
        "leaks: {}",
        status.message()
    );

    let server = tokio::task::spawn_blocking(move || MariaDb::start(&base))
        .await
        .expect("join")
        .expect("restart MariaDB");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .create_to_do(as_user(CreateToDoReq {
                item: item(),
                ..Default::default()
            }))
            .await
        {
            Ok(_) => break,
            Err(status) => assert!(Instant::now() < deadline, "no recovery: {status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = client
        .list_to_do(as_user(ListToDoReq::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed.items.len(),
        2,
        "data written before the outage must survive"
    );
    assert!(
        todo.log().matches("serving").count() == 1,
        "service restarted"
    );
    drop(todo);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop");
}

#[test]
fn configuration_errors_stop_the_service_with_one_line_naming_the_setting() {
    let ws = Workspace::new();
    let addr = free_addr();
    let db = format!("sqlite://{}", ws.path().join("todo.db").display());

    let run = |config: &std::path::Path, extra: &[&str]| {
        Command::new(bin("todoapp-todo"))
            .arg("--config")
            .arg(config)
            .args(extra)
            .output()
            .expect("run")
    };
    let cases = [
        ("max_message_bytes = \"lots\"", "max_message_bytes"),
        ("listen = \"nowhere\"", "listen"),
        (
            "tls_handshake_timeout_secs = 0",
            "tls_handshake_timeout_secs",
        ),
    ];
    for (line, setting) in cases {
        let config = ws.todo_config(addr, &db, line);
        let out = run(&config, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line}: started anyway");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{line}: not one line:\n{stderr}"
        );
        assert!(stderr.contains(setting), "{line}: {stderr}");
    }
    let bad_db = ws.todo_config(addr, "postgres://nope", "");
    let stderr = String::from_utf8_lossy(&run(&bad_db, &[]).stderr).into_owned();
    assert!(stderr.contains("database.url"), "{stderr}");

    // Missing key file: named by --check-config, ignored by --no-files.
    let good = ws.todo_config(addr, &db, "");
    let text = std::fs::read_to_string(&good)
        .expect("read")
        .replace(&ws.pki(files::TODO_KEY), "/nonexistent/todo.key");
    let missing_key = ws.write("missing-key.toml", &text);
    let out = run(&missing_key, &["--check-config"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.key"));
    let out = run(&missing_key, &["--check-config", "--no-files"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&good, &["--check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    assert!(
        !ws.path().join("todo.db").exists(),
        "--check-config must start nothing"
    );

    // Environment variables override the file.
    let out = Command::new(bin("todoapp-todo"))
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .env("TODOAPP_TODO_LISTEN", "not-an-address")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));

    // `migrate` creates the schema and exits.
    let out = run(&good, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ws.path().join("todo.db").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_calls_then_exits_zero() {
    let ws = Workspace::new();
    let addr = free_addr();
    let db = format!("sqlite://{}", ws.path().join("user.db").display());
    // Expensive hashing makes Register take a while: a call in flight.
    let config = ws.user_config(
        addr,
        &db,
        "",
        "memory_kib = 65536\niterations = 12\nparallelism = 1\nmax_concurrent_hashes = 1",
    );
    let user = Proc::service("user", &config);
    wait_for_port(addr, Duration::from_secs(30));
    let channel = ws.backend_channel(addr, true).await.expect("connect");
    let mut client = UserClient::new(channel);
    let call = tokio::spawn(async move {
        client
            .register(RegisterReq {
                username: "slow".into(),
                password: "password1".into(),
                email: "slow@example.org".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    user.signal(libc::SIGTERM);
    let result = call.await.expect("join");
    assert!(result.is_ok(), "in-flight call failed: {result:?}");
    let mut user = user;
    let status = user.wait(Duration::from_secs(20));
    assert!(status.success(), "exit {status}");
    let log = user.log();
    assert!(log.contains("draining"), "{log}");
    // One log line per call with method, status and latency; nothing secret.
    assert!(
        log.contains("method=/User/Register")
            && log.contains("status=Ok")
            && log.contains("latency_us="),
        "{log}"
    );
    assert!(!log.contains("password1"), "password reached the log");
}

#[test]
fn tls_handshakes_that_never_finish_are_dropped() {
    let ws = Workspace::new();
    let (gateway, user, todo) = (free_addr(), free_addr(), free_addr());
    let config = ws.gateway_config(gateway, user, todo, "tls_handshake_timeout_secs = 1");
    let _gw = Proc::service("gateway", &config);
    wait_for_port(gateway, Duration::from_secs(30));
    let mut stream = std::net::TcpStream::connect(gateway).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut stream, &mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "server sent data to a silent client"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

/// Receives sd_notify datagrams the way systemd does.
fn notify_socket(ws: &Workspace) -> (UnixDatagram, std::path::PathBuf) {
    let path = ws.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    (socket, path)
}

fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("sd_notify message within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_activated_service_serves_on_the_passed_socket_and_notifies() {
    let ws = Workspace::new();
    let addr = free_addr();
    let db_path = ws.path().join("todo.db");
    // The configured address is deliberately unusable: only the passed
    // socket can make this work.
    let config = ws.todo_config(
        "127.0.0.1:1".parse().expect("addr"),
        &format!("sqlite://{}", db_path.display()),
        "",
    );
    let (notify, notify_path) = notify_socket(&ws);
    let activator = bin("systemd-socket-activate");
    let mut cmd = Command::new(activator);
    cmd.arg("--listen")
        .arg(addr.to_string())
        .arg("--fdname=todo")
        .arg("-E")
        .arg("NOTIFY_SOCKET")
        .arg(bin("todoapp-todo"))
        .arg("--config")
        .arg(&config);
    // systemd-socket-activate passes on only the variables named with -E.
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let mut activated = Proc::spawn(cmd);
    wait_for_port(addr, Duration::from_secs(30));
    assert!(
        !db_path.exists(),
        "service started before the first connection"
    );

    let channel = ws
        .backend_channel(addr, true)
        .await
        .expect("connect through the passed socket");
    let mut client = ToDoClient::new(channel);
    client
        .create_to_do(as_user(CreateToDoReq {
            item: Some(ToDoEntry {
                title: "activated".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .expect("create");

    let ready = next_notification(&notify);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("socket-activated")),
        "{ready}"
    );
    activated.wait_for_log("socket-activated", Duration::from_secs(5));

    activated.signal(libc::SIGTERM);
    let stopping = next_notification(&notify);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let status = activated.wait(Duration::from_secs(20));
    assert!(status.success(), "exit {status}");
}

#[test]
fn ready_is_sent_only_once_the_database_is_migrated() {
    let ws = Workspace::new();
    let addr = free_addr();
    let db_path = ws.path().join("todo.db");
    let config = ws.todo_config(addr, &format!("sqlite://{}", db_path.display()), "");
    let (notify, notify_path) = notify_socket(&ws);
    let mut cmd = Command::new(bin("todoapp-todo"));
    cmd.arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path);
    let mut todo = Proc::spawn(cmd);
    let ready = next_notification(&notify);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // At READY=1 the schema exists and the listener is live.
    let tables = Command::new("sqlite3")
        .arg(&db_path)
        .arg(".tables")
        .output()
        .expect("sqlite3");
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains("todos"),
        "schema missing at READY"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "listener not live at READY"
    );
    todo.signal(libc::SIGTERM);
    assert!(next_notification(&notify).contains("STOPPING=1"));
    assert!(todo.wait(Duration::from_secs(20)).success());

    // With its database unreachable a service never reports READY and exits non-zero.
    let dead = ws.todo_config(
        free_addr(),
        "mysql://root@localhost/x?socket=/nonexistent/mysqld.sock",
        "",
    );
    let (notify, notify_path) = {
        let path = ws.path().join("notify2.sock");
        let socket = UnixDatagram::bind(&path).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        (socket, path)
    };
    let mut cmd = Command::new(bin("todoapp-todo"));
    cmd.arg("--config")
        .arg(&dead)
        .env("NOTIFY_SOCKET", &notify_path);
    let mut todo = Proc::spawn(cmd);
    let status = todo.wait(Duration::from_secs(30));
    assert!(!status.success());
    let mut buf = [0u8; 256];
    assert!(
        notify.recv(&mut buf).is_err(),
        "READY sent without a database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_reports_not_serving_then_exits_after_the_drain_deadline() {
    let ws = Workspace::new();
    let addr = free_addr();
    let config = ws.todo_config(
        addr,
        &format!("sqlite://{}", ws.path().join("todo.db").display()),
        "shutdown_timeout_secs = 2",
    );
    let mut todo = Proc::service("todo", &config);
    wait_for_port(addr, Duration::from_secs(30));
    let channel = ws.backend_channel(addr, true).await.expect("connect");
    let mut watch = support::HealthWatch::serving(channel, "ToDo").await;

    todo.signal(libc::SIGTERM);
    watch.next_is_not_serving().await;
    let started = Instant::now();
    let status = todo.wait(Duration::from_secs(10));
    assert!(status.success(), "exit {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain deadline not applied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watchdog_is_fed_only_while_the_database_works() {
    let ws = Workspace::new();
    let base = ws.path().join("mariadb");
    let server = tokio::task::spawn_blocking({
        let base = base.clone();
        move || MariaDb::start(&base)
    })
    .await
    .expect("join")
    .expect("private MariaDB (install mariadb-server)");
    let url = server
        .create_database("todo_watchdog")
        .await
        .expect("database");
    let (notify, notify_path) = notify_socket(&ws);
    notify
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let config = ws.todo_config(free_addr(), &url, "");
    // systemd sets WATCHDOG_PID to the service's pid; the shell's $$ is the
    // pid exec hands to the service.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$@""#)
        .arg(bin("todoapp-todo"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "600000");
    let _todo = Proc::spawn(cmd);

    let mut buf = [0u8; 4096];
    let mut receive = || {
        notify
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let mut watchdog_pings = |window: Duration| {
        let deadline = Instant::now() + window;
        let mut pings = 0;
        while Instant::now() < deadline {
            if receive().is_some_and(|m| m.lines().any(|l| l == "WATCHDOG=1")) {
                pings += 1;
            }
        }
        pings
    };
    assert!(
        watchdog_pings(Duration::from_secs(2)) >= 2,
        "watchdog not fed while healthy"
    );

    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop MariaDB");
    // Connections already in the pool may take a moment to notice.
    let _ = watchdog_pings(Duration::from_secs(2));
    assert_eq!(
        watchdog_pings(Duration::from_secs(3)),
        0,
        "watchdog fed without a database"
    );

    let server = tokio::task::spawn_blocking(move || MariaDb::start(&base))
        .await
        .expect("join")
        .expect("restart");
    let mut resumed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while resumed == 0 && Instant::now() < deadline {
        resumed = watchdog_pings(Duration::from_secs(1));
    }
    assert!(
        resumed > 0,
        "watchdog not resumed after the database came back"
    );
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_feeds_the_watchdog_it_is_given() {
    // The units set WatchdogSec= for every service; a gateway that never
    // pings would be killed by systemd every interval.
    let ws = Workspace::new();
    let (notify, notify_path) = notify_socket(&ws);
    notify
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let config = ws.gateway_config(free_addr(), free_addr(), free_addr(), "");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$@""#)
        .arg(bin("todoapp-gateway"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "600000");
    let _gateway = Proc::spawn(cmd);

    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pings = 0;
    while pings < 3 && Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "WATCHDOG=1")
            {
                pings += 1;
            }
        }
    }
    assert!(pings >= 3, "gateway fed the watchdog {pings} times in 10 s");
}
