//! Every behaviour of the public API, as black-box scenarios. Each
//! registers its own fresh users, so the suite can run against any
//! deployment, any number of times.

use std::sync::atomic::{AtomicU32, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::user_client::UserClient;
use todoapp_api::*;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::client::authed;
pub use crate::harness::Outcome;

/// A failed check ends the scenario with this message.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

pub mod accounts;
pub mod robustness;
pub mod todos;
pub mod tokens;

pub type Scenario = crate::harness::Scenario<Ctx>;

/// Every scenario, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario::new("register and login return a signed EdDSA JWT", |ctx| {
            Box::pin(accounts::register_and_login(ctx))
        }),
        Scenario::new(
            "register rejects invalid fields by name and stores nothing",
            |ctx| Box::pin(accounts::register_validation(ctx)),
        ),
        Scenario::new("a taken username or email is ALREADY_EXISTS", |ctx| {
            Box::pin(accounts::register_duplicates(ctx))
        }),
        Scenario::new("passwords are used exactly as typed", |ctx| {
            Box::pin(accounts::password_exactness(ctx))
        }),
        Scenario::new(
            "login failures are UNAUTHENTICATED with one message",
            |ctx| Box::pin(accounts::login_failures(ctx)),
        ),
        Scenario::new("todo create, get, update, delete round trip", |ctx| {
            Box::pin(todos::todo_round_trip(ctx))
        }),
        Scenario::new(
            "invalid todo input is INVALID_ARGUMENT and changes nothing",
            |ctx| Box::pin(todos::todo_validation(ctx)),
        ),
        Scenario::new("users never see each other's entries", |ctx| {
            Box::pin(todos::isolation(ctx))
        }),
        Scenario::new(
            "list pages in creation order with continuation tokens",
            |ctx| Box::pin(todos::list_paging(ctx)),
        ),
        Scenario::new(
            "list limit 0 is 100 and limits over 1000 are capped",
            |ctx| Box::pin(todos::list_limits(ctx)),
        ),
        Scenario::new("todo calls need a valid token, bare or Bearer", |ctx| {
            Box::pin(tokens::tokens_required(ctx))
        }),
        Scenario::new("forged and tampered tokens are UNAUTHENTICATED", |ctx| {
            Box::pin(tokens::tampered_tokens(ctx))
        }),
        Scenario::new("identity metadata sent by clients is ignored", |ctx| {
            Box::pin(tokens::spoofed_identity(ctx))
        }),
        Scenario::new("users multiplexed on one connection stay apart", |ctx| {
            Box::pin(tokens::multiplexed_users(ctx))
        }),
        Scenario::new(
            "oversized messages are RESOURCE_EXHAUSTED and serving goes on",
            |ctx| Box::pin(robustness::oversized_messages(ctx)),
        ),
        Scenario::new(
            "malformed messages and unknown methods leave the server serving",
            |ctx| Box::pin(robustness::malformed_input(ctx)),
        ),
        Scenario::new("health and reflection answer", |ctx| {
            Box::pin(robustness::health_and_reflection(ctx))
        }),
        Scenario::new(
            "usernames are exact, visible and NFC; conflicts name the right field",
            |ctx| Box::pin(accounts::exact_usernames(ctx)),
        ),
        Scenario::new(
            "a repeated request_id creates once; other content is ALREADY_EXISTS",
            |ctx| Box::pin(accounts::idempotent_create(ctx)),
        ),
        Scenario::new(
            "repeated failed logins are throttled with a retry delay",
            |ctx| Box::pin(accounts::login_throttling(ctx)),
        ),
    ]
}

/// Shared by the scenarios: one connection, and unique names per run.
pub struct Ctx {
    pub channel: Channel,
    run: String,
    counter: AtomicU32,
}

pub struct Account {
    pub username: String,
    pub password: String,
    pub token: String,
}

impl Ctx {
    pub fn new(channel: Channel) -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        Self {
            channel,
            run,
            counter: AtomicU32::new(0),
        }
    }

    pub fn users(&self) -> UserClient<Channel> {
        UserClient::new(self.channel.clone())
    }

    pub fn todos(&self) -> ToDoClient<Channel> {
        ToDoClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    pub fn unique(&self, what: &str) -> String {
        format!(
            "e2e-{what}-{}-{}",
            self.run,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Registers and logs in a fresh user.
    pub async fn account(&self) -> Result<Account, String> {
        let username = self.unique("user");
        let password = format!("pw {username} ✓");
        self.users()
            .register(RegisterReq {
                username: username.clone(),
                password: password.clone(),
                email: format!("{username}@example.org"),
            })
            .await
            .map_err(|s| format!("register {username}: {s:?}"))?;
        let login = self
            .users()
            .login(LoginReq {
                username: username.clone(),
                password: password.clone(),
            })
            .await
            .map_err(|s| format!("login {username}: {s:?}"))?
            .into_inner();
        Ok(Account {
            username,
            password,
            token: login.jwt_token,
        })
    }

    pub async fn create(&self, token: &str, title: &str, text: &str) -> Result<i32, String> {
        let item = ToDoEntry {
            title: title.into(),
            text: text.into(),
            ..Default::default()
        };
        // Bulk creates run into the gateway's per-user rate limit: wait as
        // it says and retry, as a well-behaved client does, for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let request = authed(
                CreateToDoReq {
                    item: Some(item.clone()),
                    ..Default::default()
                },
                token,
            );
            match self.todos().create_to_do(request).await {
                Ok(response) => return Ok(response.into_inner().id),
                Err(status) => match crate::client::retry_after(&status) {
                    Some(delay) if std::time::Instant::now() + delay < deadline => {
                        tokio::time::sleep(delay).await;
                    }
                    _ => return Err(format!("create {title:?}: {status:?}")),
                },
            }
        }
    }

    pub async fn get(&self, token: &str, id: i32) -> Result<ToDoEntry, Status> {
        let rsp = self
            .todos()
            .get_to_do(authed(GetToDoReq { id }, token))
            .await?;
        rsp.into_inner()
            .item
            .ok_or_else(|| Status::internal("GetToDo returned no item"))
    }
}

/// Texts that would mean internals leaked into a client-facing message.
const LEAK_MARKERS: [&str; 12] = [
    "sql",
    "select ",
    "insert ",
    "panicked",
    "backtrace",
    ".rs:",
    "mysql",
    "sqlite",
    "$argon2",
    "eyj",
    "stack",
    "constraint",
];

/// Expects failure with `code`; checks the message leaks nothing.
impl Ctx {
    /// The first page (server default limit) of the caller's entries.
    pub(crate) async fn first_page(&self, token: &str, what: &str) -> Result<ListToDoRsp, String> {
        ok(
            self.todos()
                .list_to_do(authed(ListToDoReq::default(), token))
                .await,
            what,
        )
    }
}

/// INVALID_ARGUMENT whose message names the refused `field`.
pub(crate) fn expect_invalid_field<T: std::fmt::Debug>(
    result: Result<Response<T>, Status>,
    field: &str,
) -> Result<(), String> {
    let status = expect_code(result, Code::InvalidArgument, field)?;
    if !status.message().contains(field) {
        return Err(format!(
            "message {:?} does not name {field}",
            status.message()
        ));
    }
    Ok(())
}

pub(crate) fn expect_code<T: std::fmt::Debug>(
    result: Result<Response<T>, Status>,
    code: Code,
    what: &str,
) -> Result<Status, String> {
    match result {
        Ok(rsp) => Err(format!(
            "{what}: expected {code:?}, got OK {:?}",
            rsp.into_inner()
        )),
        Err(status) if status.code() == code => {
            let lower = status.message().to_lowercase();
            if let Some(marker) = LEAK_MARKERS.iter().find(|m| lower.contains(*m)) {
                return Err(format!(
                    "{what}: message {:?} leaks internals ({marker})",
                    status.message()
                ));
            }
            Ok(status)
        }
        Err(status) => Err(format!(
            "{what}: expected {code:?}, got {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

pub(crate) fn ok<T>(result: Result<Response<T>, Status>, what: &str) -> Result<T, String> {
    result
        .map(Response::into_inner)
        .map_err(|s| format!("{what}: {:?}: {}", s.code(), s.message()))
}

pub(crate) fn jwt_part(token: &str, index: usize) -> Result<serde_json::Value, String> {
    let part = token
        .split('.')
        .nth(index)
        .ok_or("token has fewer than 3 parts")?;
    let bytes = B64
        .decode(part)
        .map_err(|e| format!("token part {index} is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("token part {index} is not JSON: {e}"))
}
