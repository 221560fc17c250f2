//! Fair share through the real gateway, run in-process on port 0 (see
//! `support/in_process.rs`): per-user rate limits with
//! `google.rpc.RetryInfo` and no backend call, the per-user in-flight cap,
//! and the todo service's quota reaching clients through the gateway. Bad
//! limits are refused by the binaries, as processes.
//!
//! The rate and in-flight tests put a todo backend (mutual TLS with the
//! workspace's internal CA) behind the gateway that counts the calls it
//! receives and can hold them, so "no backend call" is observed, not
//! inferred.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::in_process::{gateway_config, sqlite_url, todo_config, Running};
use support::{free_addr, Workspace};
use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::to_do_server::{ToDo, ToDoServer};
use todoapp_api::*;
use todoapp_devkit::pki::files;
use todoapp_e2e::client::authed;
use todoapp_gateway::config::FairShareSettings;
use todoapp_gateway::GatewayService;
use todoapp_todo::TodoService;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Channel, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

const ANN: &str = "6f1c7d7e-8a51-4b8e-9d33-1e2f3a4b5c6d";
const BOB: &str = "0b5c7f62-2a44-4d8c-8f3e-6a1b2c3d4e5f";

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

/// A todo backend that counts every call it receives; GetToDo waits for a
/// permit from `release`, so calls can be held in flight.
#[derive(Clone)]
struct CountingBackend {
    calls: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
}

impl Default for CountingBackend {
    fn default() -> Self {
        Self {
            calls: Arc::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

#[tonic::async_trait]
impl ToDo for CountingBackend {
    async fn create_to_do(
        &self,
        _: Request<CreateToDoReq>,
    ) -> Result<Response<CreateToDoRsp>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(CreateToDoRsp { id: 1 }))
    }

    async fn get_to_do(&self, _: Request<GetToDoReq>) -> Result<Response<GetToDoRsp>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let permit = self.release.acquire().await;
        drop(permit);
        Ok(Response::new(GetToDoRsp { item: None }))
    }

    async fn delete_to_do(
        &self,
        _: Request<DeleteToDoReq>,
    ) -> Result<Response<DeleteToDoRsp>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(DeleteToDoRsp {}))
    }

    async fn update_to_do(
        &self,
        _: Request<UpdateToDoReq>,
    ) -> Result<Response<UpdateToDoRsp>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(UpdateToDoRsp {}))
    }

    async fn list_to_do(&self, _: Request<ListToDoReq>) -> Result<Response<ListToDoRsp>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(ListToDoRsp::default()))
    }
}

/// The counting backend serving on a free loopback port with the todo
/// service's certificate, requiring the gateway's client certificate.
/// Returns its address.
async fn serve_backend(ws: &Workspace, backend: CountingBackend) -> SocketAddr {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let read = |name: &str| std::fs::read(ws.pki(name)).expect("pki file");
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(files::TODO_CERT),
            read(files::TODO_KEY),
        ))
        .client_ca_root(Certificate::from_pem(read(files::INTERNAL_CA_CERT)));
    // Serving `grpc.health.v1` too, as the real backends do: the gateway
    // sends calls only to endpoints whose health check passes.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ToDoServer<CountingBackend>>().await;
    let server = Server::builder()
        .tls_config(tls)
        .expect("server tls")
        .add_service(health_service)
        .add_service(ToDoServer::new(backend));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

/// A gateway in front of `todo` only: its user upstream points at the
/// todo backend too, whose health service does not serve `User`, so the
/// gateway never sends a call there.
async fn gateway_for_todo(
    ws: &Workspace,
    todo: SocketAddr,
    fair_share: FairShareSettings,
) -> (Running, Channel, SocketAddr) {
    let mut config = gateway_config(ws, todo, todo);
    config.fair_share = fair_share;
    let gateway = Running::start::<GatewayService>(config).await;
    let address = gateway.addr;
    let channel = todoapp_e2e::client::connect(&ws.gateway_target(address))
        .await
        .expect("connect");
    (gateway, channel, address)
}

/// A gateway in front of the counting backend, a connection to it, and
/// its address.
async fn gateway_with_backend(
    ws: &Workspace,
    fair_share: FairShareSettings,
    backend: CountingBackend,
) -> (Running, Channel, SocketAddr) {
    let todo = serve_backend(ws, backend).await;
    gateway_for_todo(ws, todo, fair_share).await
}

fn retry_delay(status: &Status) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("no RetryInfo in {status:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_refuses_with_retry_info_and_no_backend_call() {
    let ws = Workspace::new();
    let backend = CountingBackend::default();
    let calls = backend.calls.clone();
    let fair_share = FairShareSettings {
        reads_per_sec: 1,
        read_burst: 5,
        writes_per_sec: 1,
        write_burst: 3,
        ..Default::default()
    };
    let (_gateway, channel, _) = gateway_with_backend(&ws, fair_share, backend).await;
    let mut client = ToDoClient::new(channel);
    let (ann, bob) = (sign_token(&ws, ANN), sign_token(&ws, BOB));
    let list = |token: &str| authed(ListToDoReq::default(), token);

    for _ in 0..5 {
        client.list_to_do(list(&ann)).await.expect("within burst");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    for _ in 0..3 {
        let status = client
            .list_to_do(list(&ann))
            .await
            .expect_err("over the read budget");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("rate limit"), "{status:?}");
        let delay = retry_delay(&status);
        assert!(
            delay > Duration::ZERO && delay <= Duration::from_secs(1),
            "{delay:?}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "refused calls reached the backend"
    );

    // Writes have a budget of their own, and so does every other user.
    let create = |token: &str| {
        authed(
            CreateToDoReq {
                item: Some(ToDoEntry {
                    title: "t".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            token,
        )
    };
    for _ in 0..3 {
        client
            .create_to_do(create(&ann))
            .await
            .expect("write budget");
    }
    let status = client.create_to_do(create(&ann)).await.expect_err("over");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("writes"), "{status:?}");
    client
        .list_to_do(list(&bob))
        .await
        .expect("bob's own budget");
    assert_eq!(calls.load(Ordering::SeqCst), 5 + 3 + 1);

    // Waiting as told is enough.
    let status = client.list_to_do(list(&ann)).await.expect_err("still over");
    tokio::time::sleep(retry_delay(&status) + Duration::from_millis(20)).await;
    client
        .list_to_do(list(&ann))
        .await
        .expect("after the delay");
    assert_eq!(calls.load(Ordering::SeqCst), 10);

    // A bad token is still UNAUTHENTICATED, not throttled.
    let status = client
        .list_to_do(list("not-a-token"))
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_cap_per_user_fails_fast() {
    let ws = Workspace::new();
    let backend = CountingBackend::default();
    let (calls, release) = (backend.calls.clone(), backend.release.clone());
    let fair_share = FairShareSettings {
        max_in_flight_per_user: 2,
        ..Default::default()
    };
    let (_gateway, channel, _) = gateway_with_backend(&ws, fair_share, backend).await;
    let (ann, bob) = (sign_token(&ws, ANN), sign_token(&ws, BOB));
    let get = |token: &str| authed(GetToDoReq { id: 1 }, token);

    // Two of ann's calls held at the backend.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut client = ToDoClient::new(channel.clone());
            let request = get(&ann);
            tokio::spawn(async move { client.get_to_do(request).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "held calls did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A third fails at once, without reaching the backend.
    let mut client = ToDoClient::new(channel.clone());
    let started = Instant::now();
    let status = client.get_to_do(get(&ann)).await.expect_err("over the cap");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("in flight"), "{status:?}");
    assert!(retry_delay(&status) > Duration::ZERO);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Bob is not held up by ann's calls.
    let bobs = tokio::spawn({
        let mut client = client.clone();
        let request = get(&bob);
        async move { client.get_to_do(request).await }
    });
    while calls.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "bob's call did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Once the held calls finish, ann may call again.
    release.add_permits(1000);
    for call in held {
        call.await.expect("join").expect("held call completes");
    }
    bobs.await.expect("join").expect("bob's call completes");
    client.get_to_do(get(&ann)).await.expect("room again");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// Five refused calls one after another on one connection, and how long
/// they took.
async fn five_refusals(client: &mut ToDoClient<Channel>, token: &str) -> Duration {
    let started = Instant::now();
    for _ in 0..5 {
        let status = client
            .list_to_do(authed(ListToDoReq::default(), token))
            .await
            .expect_err("over the read budget");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_retrying_at_once_is_read_only_after_a_pause() {
    let ws = Workspace::new();
    let (ann, bob) = (sign_token(&ws, ANN), sign_token(&ws, BOB));
    // ListToDo: the counting backend holds GetToDo calls.
    let list = |token: &str| authed(ListToDoReq::default(), token);
    let pause = Duration::from_millis(200);
    let settings = |pause_ms: u128| FairShareSettings {
        reads_per_sec: 1,
        read_burst: 1,
        refused_read_pause_ms: pause_ms.try_into().expect("pause in ms"),
        ..Default::default()
    };

    let backend = CountingBackend::default();
    let calls = backend.calls.clone();
    let (_gateway, channel, address) =
        gateway_with_backend(&ws, settings(pause.as_millis()), backend).await;
    let mut client = ToDoClient::new(channel);
    client.list_to_do(list(&ann)).await.expect("within burst");
    // Each refusal pauses reading from the connection, so the next call
    // is read (and refused) only a pause later.
    let took = five_refusals(&mut client, &ann).await;
    assert!(took >= pause * 4, "five refusals in {took:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a refusal reached the backend"
    );

    // Only that connection waits: bob, on his own, is served during ann's pause.
    let target = ws.gateway_target(address);
    let mut bobs = ToDoClient::new(
        todoapp_e2e::client::connect(&target)
            .await
            .expect("connect"),
    );
    // Refused again (a token may have come back during the refusals above).
    let mut refused = false;
    for _ in 0..3 {
        if client.list_to_do(list(&ann)).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "ann was not refused again");
    let started = Instant::now();
    bobs.list_to_do(list(&bob)).await.expect("bob's call");
    assert!(
        started.elapsed() < pause / 2,
        "bob waited {:?}",
        started.elapsed()
    );

    // With pauses off, the same refusals come back at once.
    let (_gateway, channel, _) =
        gateway_with_backend(&ws, settings(0), CountingBackend::default()).await;
    let mut client = ToDoClient::new(channel);
    client.list_to_do(list(&ann)).await.expect("within burst");
    let took = five_refusals(&mut client, &ann).await;
    assert!(took < pause, "five refusals without pauses took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_refusals_reach_clients_through_the_gateway() {
    let ws = Workspace::new();
    let mut todo = todo_config(&ws, &sqlite_url(&ws, "todo"));
    todo.quota.max_entries = 2;
    let todo = Running::start::<TodoService>(todo).await;
    let (gateway, channel, _) =
        gateway_for_todo(&ws, todo.addr, FairShareSettings::default()).await;
    let mut client = ToDoClient::new(channel);
    let token = sign_token(&ws, ANN);
    let create = || {
        authed(
            CreateToDoReq {
                item: Some(ToDoEntry {
                    title: "t".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &token,
        )
    };
    client.create_to_do(create()).await.expect("first");
    client.create_to_do(create()).await.expect("second");
    let status = client.create_to_do(create()).await.expect_err("over quota");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("entry quota exceeded: at most 2 entries"),
        "{status:?}"
    );
    let listed = client
        .list_to_do(authed(ListToDoReq::default(), &token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.items.len(), 2, "the refused create stored something");
    gateway.stop().await;
    todo.stop().await;
}

#[test]
fn bad_limits_stop_the_services_with_one_line_naming_the_setting() {
    let ws = Workspace::new();
    let addr = free_addr();
    let db = format!("sqlite://{}", ws.path().join("todo.db").display());
    let cases = [
        (
            "gateway",
            "[fair_share]\nread_burst = 0\n",
            "fair_share.read_burst",
        ),
        (
            "gateway",
            "[fair_share]\nmax_in_flight_per_user = 0\n",
            "fair_share.max_in_flight_per_user",
        ),
        ("todo", "[quota]\nmax_entries = 0\n", "quota.max_entries"),
        ("todo", "[quota]\nmax_bytes = 100\n", "quota.max_bytes"),
    ];
    for (service, extra, setting) in cases {
        // Each config is written (to the same file) just before its run.
        let config = match service {
            "gateway" => ws.gateway_config(addr, addr, addr, extra),
            _ => ws.todo_config(addr, &db, extra),
        };
        let out = std::process::Command::new(support::bin(&format!("todoapp-{service}")))
            .arg("--config")
            .arg(&config)
            .args(["--check-config", "--no-files"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setting}: accepted");
        assert_eq!(stderr.trim().lines().count(), 1, "{setting}:\n{stderr}");
        assert!(stderr.contains(setting), "{setting}: {stderr}");
    }
}
