//! Helpers for the system tests: real binaries as real processes, a dev
//! PKI, clients with or without the internal client certificate.
#![allow(dead_code)]

pub mod in_process;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use todoapp_devkit::pki::{self, files};
pub use todoapp_devkit::toml_table as table;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Binary `name`, built from the current sources first (once per test
/// process) so that the tests never run a stale service.
pub fn bin(name: &str) -> PathBuf {
    todoapp_devkit::bins::current(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A temporary directory with a fresh development PKI in `pki/`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        pki::ensure(&dir.path().join("pki"), &[]).expect("dev PKI");
        Self { dir }
    }

    /// Like [`Workspace::new`], in a directory whose name starts with `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        pki::ensure(&dir.path().join("pki"), &[]).expect("dev PKI");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pki(&self, name: &str) -> String {
        self.dir.path().join("pki").join(name).display().to_string()
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    pub fn todo_config(&self, listen: SocketAddr, db_url: &str, extra: &str) -> PathBuf {
        self.todo_config_named("todo.toml", listen, db_url, extra)
    }

    /// Writes `config` serialised as TOML (so paths and URLs are escaped),
    /// with the TOML fragment `extra` merged in.
    fn write_config(&self, name: &str, mut config: toml::Table, extra: &str) -> PathBuf {
        merge(&mut config, fragment(extra));
        let text = toml::to_string(&config).expect("serialise config");
        self.write(name, &text)
    }

    /// A todo config in file `name`, for several instances side by side.
    pub fn todo_config_named(
        &self,
        name: &str,
        listen: SocketAddr,
        db_url: &str,
        extra: &str,
    ) -> PathBuf {
        let config = table([
            ("listen", listen.to_string().into()),
            (
                "tls",
                table([
                    ("cert", self.pki(files::TODO_CERT).into()),
                    ("key", self.pki(files::TODO_KEY).into()),
                    ("client_ca", self.pki(files::INTERNAL_CA_CERT).into()),
                ])
                .into(),
            ),
            ("database", table([("url", db_url.into())]).into()),
        ]);
        self.write_config(name, config, extra)
    }

    pub fn user_config(
        &self,
        listen: SocketAddr,
        db_url: &str,
        extra_top: &str,
        argon2: &str,
    ) -> PathBuf {
        let config = table([
            ("listen", listen.to_string().into()),
            (
                "tls",
                table([
                    ("cert", self.pki(files::USER_CERT).into()),
                    ("key", self.pki(files::USER_KEY).into()),
                    ("client_ca", self.pki(files::INTERNAL_CA_CERT).into()),
                ])
                .into(),
            ),
            ("database", table([("url", db_url.into())]).into()),
            (
                "jwt",
                table([("private_key", self.pki(files::JWT_PRIVATE_KEY).into())]).into(),
            ),
            ("argon2", argon2_keys(argon2).into()),
        ]);
        self.write_config("user.toml", config, extra_top)
    }

    pub fn gateway_config(
        &self,
        listen: SocketAddr,
        user: SocketAddr,
        todo: SocketAddr,
        extra_top: &str,
    ) -> PathBuf {
        self.gateway_config_endpoints(
            listen,
            &[format!("https://{user}")],
            &[format!("https://{todo}")],
            extra_top,
            "",
        )
    }

    /// A gateway config listing several URLs per upstream, with
    /// `extra_upstream` lines in its `[upstream]` table.
    pub fn gateway_config_endpoints(
        &self,
        listen: SocketAddr,
        user: &[String],
        todo: &[String],
        extra_top: &str,
        extra_upstream: &str,
    ) -> PathBuf {
        let mut upstream = table([
            ("user", toml_urls(user)),
            ("todo", toml_urls(todo)),
            ("ca", self.pki(files::INTERNAL_CA_CERT).into()),
            ("client_cert", self.pki(files::GATEWAY_CLIENT_CERT).into()),
            ("client_key", self.pki(files::GATEWAY_CLIENT_KEY).into()),
        ]);
        merge(&mut upstream, fragment(extra_upstream));
        let config = table([
            ("listen", listen.to_string().into()),
            (
                "tls",
                table([
                    ("cert", self.pki(files::GATEWAY_CERT).into()),
                    ("key", self.pki(files::GATEWAY_KEY).into()),
                ])
                .into(),
            ),
            ("upstream", upstream.into()),
            (
                "jwt",
                table([(
                    "public_keys",
                    toml::Value::Array(vec![self.pki(files::JWT_PUBLIC_KEY).into()]),
                )])
                .into(),
            ),
        ]);
        self.write_config("gateway.toml", config, extra_top)
    }

    /// A channel to a backend, presenting the gateway's client certificate
    /// (or none).
    pub async fn backend_channel(
        &self,
        addr: SocketAddr,
        with_client_cert: bool,
    ) -> Result<Channel, tonic::transport::Error> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = std::fs::read(self.pki(files::INTERNAL_CA_CERT)).expect("ca");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if with_client_cert {
            let cert = std::fs::read(self.pki(files::GATEWAY_CLIENT_CERT)).expect("cert");
            let key = std::fs::read(self.pki(files::GATEWAY_CLIENT_KEY)).expect("key");
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(format!("https://{addr}"))
            .expect("uri")
            .tls_config(tls)
            .expect("tls")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
    }

    pub fn gateway_target(&self, addr: SocketAddr) -> todoapp_e2e::Target {
        todoapp_e2e::Target {
            gateway: addr.to_string(),
            ca: self.pki(files::CA_CERT).into(),
            server_name: Some("localhost".into()),
        }
    }
}

/// Every entry of the token's user as id → title, read page by page with
/// ListToDo (how many entries a load test acknowledges depends on the
/// machine's speed, so they may not fit one page). An id seen twice means
/// the pages overlapped, which must not happen.
pub async fn stored_titles(
    ctx: &todoapp_e2e::scenarios::Ctx,
    token: &str,
) -> std::collections::BTreeMap<i32, String> {
    // Far more pages than any bounded test stores; ends a token loop.
    const MAX_PAGES: usize = 1000;
    let mut titles = std::collections::BTreeMap::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
        let listed = ctx
            .todos()
            .list_to_do(todoapp_e2e::client::authed(
                todoapp_api::ListToDoReq {
                    limit: 1000,
                    page_token: page_token.clone(),
                },
                token,
            ))
            .await
            .expect("list")
            .into_inner();
        for item in listed.items {
            let id = item.id;
            assert!(
                titles.insert(id, item.title).is_none(),
                "entry {id} listed on two pages"
            );
        }
        if listed.next_page_token.is_empty() {
            return titles;
        }
        page_token = listed.next_page_token;
    }
    panic!("ListToDo still had more pages after {MAX_PAGES}");
}

/// One URL as a TOML string (the single-URL form), several as an array.
fn toml_urls(urls: &[String]) -> toml::Value {
    match urls {
        [one] => one.as_str().into(),
        many => toml::Value::Array(many.iter().map(|url| url.as_str().into()).collect()),
    }
}

/// The `[argon2]` table's keys; a table in them would land inside
/// `[argon2]`, so other sections go in the top-level fragment instead.
fn argon2_keys(text: &str) -> toml::Table {
    let keys = fragment(text);
    if let Some((name, _)) = keys.iter().find(|(_, value)| value.is_table()) {
        panic!("[{name}] in an argon2 fragment: pass it in the top-level fragment");
    }
    keys
}

/// A test's own TOML fragment (settings it adds), parsed.
fn fragment(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("bad TOML fragment in a test: {e}\n{text}"))
}

/// Adds `extra` to `config`, table by table; a key in both takes `extra`'s value.
fn merge(config: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (config.get_mut(&key), value) {
            (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => merge(mine, theirs),
            (_, value) => {
                config.insert(key, value);
            }
        }
    }
}

/// A free loopback port (bound and released; fine for tests).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A service process whose stderr is collected for assertions.
pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn service");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("  | {line}");
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            });
        }
        Self { child, log }
    }

    pub fn service(name: &str, config: &Path) -> Self {
        let mut cmd = Command::new(bin(&format!("todoapp-{name}")));
        cmd.arg("--config").arg(config);
        Self::spawn(cmd)
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "`{needle}` not logged within {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries `connect` until the port accepts TCP connections.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{addr} not listening within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` over plain HTTP/1.1 (a metrics listener): the status line
/// and headers, and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_owned(), body.to_owned())
}

/// A `grpc.health.v1` Watch of one service. The stream never ends by
/// itself, so it is also a call held in flight across a shutdown.
pub struct HealthWatch(tonic::Streaming<tonic_health::pb::HealthCheckResponse>);

impl HealthWatch {
    /// Starts watching `service` and checks that it is SERVING.
    pub async fn serving(channel: Channel, service: &str) -> Self {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
            .watch(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.message().await.expect("stream").expect("status");
        assert_eq!(first.status, ServingStatus::Serving as i32);
        Self(watch)
    }

    /// Checks that the next status, within 5 s, is NOT_SERVING.
    pub async fn next_is_not_serving(&mut self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.message())
            .await
            .expect("status change in time");
        assert_eq!(
            next.expect("stream").expect("status").status,
            ServingStatus::NotServing as i32
        );
    }
}
