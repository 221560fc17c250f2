//! Observability of a running system (gateway, user, todo as separate
//! processes): the metrics scraped after known calls count exactly those
//! calls per method and code at every hop; one call's trace id is in the
//! logs of every service it crosses; JSON logs parse and hold no secret;
//! every metric the dashboard and alerts use exists in a real scrape.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use support::{free_addr, http_get, table, wait_for_port, Proc, Workspace};
use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::user_client::UserClient;
use todoapp_api::{CreateToDoReq, GetToDoReq, LoginReq, RegisterReq, ToDoEntry};
use tonic::{Code, Request};

const PASSWORD: &str = "correct horse battery";

/// One scrape: sample name + sorted labels -> value.
struct Scrape(BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Scrape {
    fn fetch(addr: SocketAddr) -> Self {
        let (head, body) = http_get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        let mut samples = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            samples.insert(
                (name.to_owned(), labels),
                value.parse::<f64>().expect("value"),
            );
        }
        Self(samples)
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|((sample, sample_labels), _)| {
                sample == name
                    && labels
                        .iter()
                        .all(|(k, v)| sample_labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    fn names(&self) -> BTreeSet<String> {
        self.0.keys().map(|(name, _)| name.clone()).collect()
    }

    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|(sample, _)| sample == name)
    }
}

fn handled(scrape: &Scrape, side: &str, service: &str, method: &str, code: &str) -> f64 {
    scrape.sum(
        &format!("grpc_{side}_handled_total"),
        &[
            ("grpc_service", service),
            ("grpc_method", method),
            ("grpc_code", code),
        ],
    )
}

fn with_trace<T>(message: T, traceparent: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("ascii"));
    request
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

struct System {
    ws: Workspace,
    gateway: Proc,
    user: Proc,
    todo: Proc,
    gateway_addr: SocketAddr,
    metrics: [SocketAddr; 3],
}

fn start_system() -> System {
    let ws = Workspace::new();
    let (gateway_addr, user_addr, todo_addr) = (free_addr(), free_addr(), free_addr());
    let metrics = [free_addr(), free_addr(), free_addr()];
    let extra = |addr: SocketAddr| {
        toml::to_string(&table([
            ("log_format", "json".into()),
            (
                "metrics",
                table([("listen", addr.to_string().into())]).into(),
            ),
        ]))
        .expect("TOML")
    };
    let user_db = format!("sqlite://{}", ws.path().join("user.db").display());
    let todo_db = format!("sqlite://{}", ws.path().join("todo.db").display());
    let user_config = ws.user_config(
        user_addr,
        &user_db,
        &extra(metrics[1]),
        "memory_kib = 1024\niterations = 1\nparallelism = 1",
    );
    let todo_config = ws.todo_config(todo_addr, &todo_db, &extra(metrics[2]));
    let gateway_config = ws.gateway_config(gateway_addr, user_addr, todo_addr, &extra(metrics[0]));
    let user = Proc::service("user", &user_config);
    let todo = Proc::service("todo", &todo_config);
    let gateway = Proc::service("gateway", &gateway_config);
    for addr in [user_addr, todo_addr, gateway_addr]
        .into_iter()
        .chain(metrics)
    {
        wait_for_port(addr, Duration::from_secs(60));
    }
    System {
        ws,
        gateway,
        user,
        todo,
        gateway_addr,
        metrics,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_traces_and_logs_follow_every_call() {
    let system = start_system();
    let target = system.ws.gateway_target(system.gateway_addr);
    let channel = todoapp_e2e::client::connect(&target)
        .await
        .expect("connect to the gateway");
    let mut users = UserClient::new(channel.clone());
    let mut todos = ToDoClient::new(channel);

    // The calls, with the outcome each must have.
    users
        .register(RegisterReq {
            username: "observer".into(),
            password: PASSWORD.into(),
            email: "observer@example.org".into(),
        })
        .await
        .expect("register");
    let login_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let token = users
        .login(with_trace(
            LoginReq {
                username: "observer".into(),
                password: PASSWORD.into(),
            },
            login_trace,
        ))
        .await
        .expect("login")
        .into_inner()
        .jwt_token;
    let wrong = users
        .login(LoginReq {
            username: "observer".into(),
            password: "wrong password".into(),
        })
        .await
        .expect_err("wrong password");
    let created = todos
        .create_to_do(with_token(
            CreateToDoReq {
                item: Some(ToDoEntry {
                    title: "watch the metrics".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("create")
        .into_inner();
    let id = created.id;
    let get_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut get = with_token(GetToDoReq { id }, &token);
    get.metadata_mut()
        .insert("traceparent", get_trace.parse().expect("ascii"));
    todos.get_to_do(get).await.expect("get");
    let missing = todos
        .get_to_do(with_token(GetToDoReq { id: id + 1000 }, &token))
        .await
        .expect_err("unknown id");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let unauthenticated = todos
        .get_to_do(GetToDoReq { id })
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let login_failure = format!("{:?}", wrong.code());

    // The counters at every hop.
    let [gateway, user, todo] = system.metrics.map(Scrape::fetch);
    let code_label = |code: Code| match code {
        Code::Unauthenticated => "Unauthenticated",
        Code::InvalidArgument => "InvalidArgument",
        Code::NotFound => "NotFound",
        other => panic!("unexpected login failure {other:?}"),
    };
    let login_code = code_label(wrong.code());
    for (scrape, side) in [
        (&gateway, "server"),
        (&user, "server"),
        (&gateway, "client"),
    ] {
        assert_eq!(
            handled(scrape, side, "User", "Register", "OK"),
            1.0,
            "{side}"
        );
        assert_eq!(handled(scrape, side, "User", "Login", "OK"), 1.0, "{side}");
        assert_eq!(
            handled(scrape, side, "User", "Login", login_code),
            1.0,
            "{side} {login_failure}"
        );
    }
    for (scrape, side) in [
        (&gateway, "server"),
        (&todo, "server"),
        (&gateway, "client"),
    ] {
        assert_eq!(
            handled(scrape, side, "ToDo", "CreateToDo", "OK"),
            1.0,
            "{side}"
        );
        assert_eq!(
            handled(scrape, side, "ToDo", "GetToDo", "OK"),
            1.0,
            "{side}"
        );
        assert_eq!(
            handled(scrape, side, "ToDo", "GetToDo", "NotFound"),
            1.0,
            "{side}"
        );
    }
    // Refused at the gateway: never reaches the todo service.
    assert_eq!(
        handled(&gateway, "server", "ToDo", "GetToDo", "Unauthenticated"),
        1.0
    );
    assert_eq!(
        handled(&todo, "server", "ToDo", "GetToDo", "Unauthenticated"),
        0.0
    );
    // started = handled, and the latency histogram saw every call.
    let get = [("grpc_service", "ToDo"), ("grpc_method", "GetToDo")];
    assert_eq!(gateway.sum("grpc_server_started_total", &get), 3.0);
    assert_eq!(gateway.sum("grpc_server_handled_total", &get), 3.0);
    assert_eq!(gateway.sum("grpc_server_handling_seconds_count", &get), 3.0);
    assert_eq!(todo.sum("grpc_server_handling_seconds_count", &get), 2.0);
    assert_eq!(
        gateway.sum(
            "grpc_client_handling_seconds_count",
            &[("backend", "todo"), ("grpc_method", "GetToDo")]
        ),
        2.0
    );
    assert_eq!(
        gateway.sum("grpc_client_started_total", &[("backend", "user")]),
        3.0
    );
    // Token verifications: three valid (create, get, get), one missing; the
    // second and third use of the token came from the cache.
    assert_eq!(
        gateway.sum("todoapp_token_verifications_total", &[("outcome", "valid")]),
        3.0
    );
    assert_eq!(
        gateway.sum(
            "todoapp_token_verifications_total",
            &[("outcome", "missing")]
        ),
        1.0
    );
    assert_eq!(gateway.sum("todoapp_token_cache_hits_total", &[]), 2.0);
    // Gauges and process figures are there and plausible.
    assert!(user.has("todoapp_argon2_queue_depth"));
    assert_eq!(user.sum("todoapp_argon2_queue_depth", &[]), 0.0);
    assert!(user.sum("todoapp_argon2_queue_wait_seconds_count", &[]) >= 3.0);
    for scrape in [&user, &todo] {
        assert!(scrape.sum("todoapp_db_pool_connections", &[]) >= 1.0);
        assert!(scrape.has("todoapp_db_pool_idle_connections"));
        // Every store call took a pool connection; sqlx's own timing of
        // each acquire feeds the wait histogram.
        assert!(scrape.sum("todoapp_db_pool_acquire_wait_seconds_count", &[]) >= 3.0);
    }
    assert!(!gateway.has("todoapp_db_pool_acquire_wait_seconds_count"));
    for (scrape, service) in [(&gateway, "gateway"), (&user, "user"), (&todo, "todo")] {
        assert_eq!(
            scrape.sum("todoapp_build_info", &[("service", service)]),
            1.0,
            "{service}"
        );
        assert!(scrape.sum("process_resident_memory_bytes", &[]) > 1e6);
        assert!(scrape.sum("process_open_fds", &[]) >= 5.0);
        assert!(scrape.has("process_cpu_seconds_total"));
        assert!(
            scrape.sum("todoapp_connections_open", &[]) >= 1.0,
            "{service}"
        );
    }

    let (head, _) = http_get(system.metrics[0], "/");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    check_logs(&system, &token);
    check_dashboard_and_alert_names(&[&gateway, &user, &todo]);
}

/// The trace ids sent with Login and GetToDo are in the logs of the gateway
/// and of the backend each went to; a call sent without one gets one at the
/// gateway, which the backend logs too. Every line is JSON; nothing secret.
fn check_logs(system: &System, token: &str) {
    let logs = [
        ("gateway", system.gateway.log()),
        ("user", system.user.log()),
        ("todo", system.todo.log()),
    ];
    let mut calls: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for (service, log) in &logs {
        assert!(!log.contains(token), "{service} logged a token");
        assert!(!log.contains(PASSWORD), "{service} logged a password");
        for line in log.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{service}: not JSON ({e}): {line}"));
            if value["fields"]["message"] == "call" {
                calls.entry(service).or_default().push(value);
            }
        }
    }
    let trace_of = |service: &str, method: &str| -> Vec<String> {
        calls[service]
            .iter()
            .filter(|call| call["fields"]["method"] == method)
            .map(|call| {
                call["span"]["trace_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no trace id: {call}"))
                    .to_owned()
            })
            .collect()
    };
    let login = "0af7651916cd43dd8448eb211c80319c".to_owned();
    assert!(trace_of("gateway", "/User/Login").contains(&login));
    assert!(trace_of("user", "/User/Login").contains(&login));
    let get = "4bf92f3577b34da6a3ce929d0e0e4736".to_owned();
    assert!(trace_of("gateway", "/ToDo/GetToDo").contains(&get));
    assert!(trace_of("todo", "/ToDo/GetToDo").contains(&get));
    // Register was sent without a traceparent: the gateway started a trace
    // and the user service logged the same id.
    let started = trace_of("gateway", "/User/Register");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].len(), 32);
    assert_eq!(trace_of("user", "/User/Register"), started);
    // The call line carries service, method, status and latency.
    let line = &calls["todo"][0];
    assert_eq!(line["span"]["service"], "todo", "{line}");
    assert!(line["fields"]["latency_us"].is_u64(), "{line}");
    assert!(line["fields"]["status"].is_string(), "{line}");
}

/// Every metric the Grafana dashboard and the alert rules query exists in
/// a real scrape, so neither can drift from what the services export. The
/// system here runs on SQLite: the MariaDB-only gauges are checked against
/// a real MariaDB by the todo store tests, through the same constant.
fn check_dashboard_and_alert_names(scrapes: &[&Scrape]) {
    let mut exported: BTreeSet<String> = scrapes.iter().flat_map(|s| s.names()).collect();
    exported.extend(todoapp_db::STATEMENT_CONNECTION_GAUGES.map(str::to_owned));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability");
    let mut checked = 0;
    for file in ["grafana-dashboard.json", "alerts.yml"] {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
        for name in metric_names(&text) {
            assert!(
                exported.contains(&name),
                "{file} uses `{name}`, which no service exports; exported: {exported:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "too few metric names found: {checked}");
}

/// Words in `text` that name one of our metrics (prefixes grpc_, todoapp_,
/// process_).
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| {
            ["grpc_server_", "grpc_client_", "todoapp_", "process_"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
        })
        .map(str::to_owned)
        .collect()
}
