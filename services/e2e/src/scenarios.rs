//! Every behaviour of the public API, as black-box scenarios. Each
//! registers its own fresh users, so the suite can run against any
//! deployment, any number of times.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures_util::future::join_all;
use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::user_client::UserClient;
use todoapp_api::*;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::client::{authed, with_authorization};

pub mod accounts;

pub type Outcome = Result<(), String>;
type BoxFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    run: for<'a> fn(&'a Ctx) -> BoxFuture<'a>,
}

impl Scenario {
    pub async fn run(&self, ctx: &Ctx) -> Outcome {
        (self.run)(ctx).await
    }
}

macro_rules! scenarios {
    ($($name:literal => $f:path),* $(,)?) => {
        pub fn all() -> Vec<Scenario> {
            vec![$(Scenario { name: $name, run: |ctx| Box::pin($f(ctx)) }),*]
        }
    };
}

scenarios! {
    "register and login return a signed EdDSA JWT" => register_and_login,
    "register rejects invalid fields by name and stores nothing" => register_validation,
    "a taken username or email is ALREADY_EXISTS" => register_duplicates,
    "passwords are used exactly as typed" => password_exactness,
    "login failures are UNAUTHENTICATED with one message" => login_failures,
    "todo create, get, update, delete round trip" => todo_round_trip,
    "invalid todo input is INVALID_ARGUMENT and changes nothing" => todo_validation,
    "users never see each other's entries" => isolation,
    "list pages in creation order with continuation tokens" => list_paging,
    "list limit 0 is 100 and limits over 1000 are capped" => list_limits,
    "todo calls need a valid token, bare or Bearer" => tokens_required,
    "forged and tampered tokens are UNAUTHENTICATED" => tampered_tokens,
    "identity metadata sent by clients is ignored" => spoofed_identity,
    "users multiplexed on one connection stay apart" => multiplexed_users,
    "oversized messages are RESOURCE_EXHAUSTED and serving goes on" => oversized_messages,
    "malformed messages and unknown methods leave the server serving" => malformed_input,
    "health and reflection answer" => health_and_reflection,
    "usernames are exact, visible and NFC; conflicts name the right field" => accounts::exact_usernames,
    "a repeated request_id creates once; other content is ALREADY_EXISTS" => accounts::idempotent_create,
    "repeated failed logins are throttled with a retry delay" => accounts::login_throttling,
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

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
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
fn expect_code<T: std::fmt::Debug>(
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

fn ok<T>(result: Result<Response<T>, Status>, what: &str) -> Result<T, String> {
    result
        .map(Response::into_inner)
        .map_err(|s| format!("{what}: {:?}: {}", s.code(), s.message()))
}

fn jwt_part(token: &str, index: usize) -> Result<serde_json::Value, String> {
    let part = token
        .split('.')
        .nth(index)
        .ok_or("token has fewer than 3 parts")?;
    let bytes = B64
        .decode(part)
        .map_err(|e| format!("token part {index} is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("token part {index} is not JSON: {e}"))
}

async fn register_and_login(ctx: &Ctx) -> Outcome {
    let account = ctx.account().await?;
    ensure!(
        account.token.split('.').count() == 3,
        "not a JWS compact token"
    );
    let header = jwt_part(&account.token, 0)?;
    ensure!(header["alg"] == "EdDSA", "alg is {}", header["alg"]);
    ensure!(
        header["kid"].as_str().is_some_and(|k| !k.is_empty()),
        "no kid in header"
    );
    let claims = jwt_part(&account.token, 1)?;
    let sub = claims["sub"].as_str().ok_or("no sub")?;
    ensure!(
        uuid::Uuid::parse_str(sub).is_ok(),
        "sub {sub} is not a UUID"
    );
    for claim in ["iat", "exp"] {
        ensure!(claims[claim].as_u64().is_some(), "no numeric {claim}");
    }
    for claim in ["iss", "aud"] {
        ensure!(
            claims[claim].as_str().is_some() || claims[claim].is_array(),
            "no {claim}"
        );
    }
    let iat = claims["iat"].as_u64().unwrap_or(0);
    let exp = claims["exp"].as_u64().unwrap_or(0);
    ensure!(
        exp > iat && exp - iat <= 24 * 3600,
        "lifetime {} s",
        exp.saturating_sub(iat)
    );

    let login = ok(
        ctx.users()
            .login(LoginReq {
                username: account.username.clone(),
                password: account.password.clone(),
            })
            .await,
        "login",
    )?;
    let expiration = humantime::parse_rfc3339(&login.expiration)
        .map_err(|e| format!("expiration {:?}: {e}", login.expiration))?;
    ensure!(
        login.expiration.ends_with('Z'),
        "expiration {:?} is not UTC",
        login.expiration
    );
    let now = SystemTime::now();
    ensure!(
        expiration > now,
        "token already expired at {}",
        login.expiration
    );
    let exp_claim = jwt_part(&login.jwt_token, 1)?["exp"].as_u64().unwrap_or(0);
    let exp_time = SystemTime::UNIX_EPOCH + Duration::from_secs(exp_claim);
    ensure!(
        exp_time == expiration,
        "expiration {} differs from the exp claim",
        login.expiration
    );
    // The token works.
    ok(
        ctx.todos()
            .list_to_do(authed(ListToDoReq::default(), &login.jwt_token))
            .await,
        "list with fresh token",
    )?;
    Ok(())
}

async fn register_validation(ctx: &Ctx) -> Outcome {
    let name = ctx.unique("val");
    let email = format!("{name}@example.org");
    let cases: Vec<(RegisterReq, &str)> = vec![
        (
            RegisterReq {
                username: String::new(),
                password: "password1".into(),
                email: email.clone(),
            },
            "username",
        ),
        (
            RegisterReq {
                username: "u".repeat(101),
                password: "password1".into(),
                email: email.clone(),
            },
            "username",
        ),
        (
            RegisterReq {
                username: name.clone(),
                password: "short7!".into(),
                email: email.clone(),
            },
            "password",
        ),
        (
            RegisterReq {
                username: name.clone(),
                password: "p".repeat(129),
                email: email.clone(),
            },
            "password",
        ),
        (
            RegisterReq {
                username: name.clone(),
                password: "password1".into(),
                email: "not-an-email".into(),
            },
            "email",
        ),
        (
            RegisterReq {
                username: name.clone(),
                password: "password1".into(),
                email: String::new(),
            },
            "email",
        ),
        (
            RegisterReq {
                username: name.clone(),
                password: "password1".into(),
                email: format!("{}@example.org", "e".repeat(243)),
            },
            "email",
        ),
    ];
    for (req, field) in cases {
        let status = expect_code(
            ctx.users().register(req).await,
            Code::InvalidArgument,
            field,
        )?;
        ensure!(
            status.message().contains(field),
            "message {:?} does not name {field}",
            status.message()
        );
    }
    // None of the rejected attempts created the user.
    expect_code(
        ctx.users()
            .login(LoginReq {
                username: name.clone(),
                password: "password1".into(),
            })
            .await,
        Code::Unauthenticated,
        "login after rejects",
    )?;
    // Boundary values are accepted.
    let long_name = format!("{name}{}", "ü".repeat(100 - name.chars().count()));
    ok(
        ctx.users()
            .register(RegisterReq {
                username: long_name,
                password: "p".repeat(128),
                email,
            })
            .await,
        "register at limits",
    )?;
    ok(
        ctx.users()
            .register(RegisterReq {
                username: format!("{name}-8"),
                password: "8chars!!".into(),
                email: format!("{name}-8@example.org"),
            })
            .await,
        "8-char password",
    )?;
    Ok(())
}

async fn register_duplicates(ctx: &Ctx) -> Outcome {
    let account = ctx.account().await?;
    let email = format!("{}@example.org", account.username);
    let other = ctx.unique("dup");
    let status = expect_code(
        ctx.users()
            .register(RegisterReq {
                username: account.username.clone(),
                password: "password1".into(),
                email: format!("{other}@example.org"),
            })
            .await,
        Code::AlreadyExists,
        "same username",
    )?;
    ensure!(
        status.message().contains("username"),
        "message {:?}",
        status.message()
    );
    let status = expect_code(
        ctx.users()
            .register(RegisterReq {
                username: other.clone(),
                password: "password1".into(),
                email: email.to_uppercase(),
            })
            .await,
        Code::AlreadyExists,
        "same email, other case",
    )?;
    ensure!(
        status.message().contains("email"),
        "message {:?}",
        status.message()
    );
    // The original account is untouched.
    ok(
        ctx.users()
            .login(LoginReq {
                username: account.username,
                password: account.password,
            })
            .await,
        "original login",
    )?;
    Ok(())
}

async fn password_exactness(ctx: &Ctx) -> Outcome {
    let username = ctx.unique("exact");
    let password = format!("  Spaces and ünïcode 🔑 {} ", "x".repeat(90));
    ok(
        ctx.users()
            .register(RegisterReq {
                username: username.clone(),
                password: password.clone(),
                email: format!("{username}@example.org"),
            })
            .await,
        "register",
    )?;
    ok(
        ctx.users()
            .login(LoginReq {
                username: username.clone(),
                password: password.clone(),
            })
            .await,
        "exact password",
    )?;
    for variant in [
        password.trim().to_owned(),
        password.to_lowercase(),
        password[..password.len() - 1].to_owned(),
    ] {
        expect_code(
            ctx.users()
                .login(LoginReq {
                    username: username.clone(),
                    password: variant,
                })
                .await,
            Code::Unauthenticated,
            "altered password",
        )?;
    }
    Ok(())
}

async fn login_failures(ctx: &Ctx) -> Outcome {
    let account = ctx.account().await?;
    let wrong = expect_code(
        ctx.users()
            .login(LoginReq {
                username: account.username.clone(),
                password: "wrong password".into(),
            })
            .await,
        Code::Unauthenticated,
        "wrong password",
    )?;
    let unknown = expect_code(
        ctx.users()
            .login(LoginReq {
                username: ctx.unique("ghost"),
                password: "whatever1".into(),
            })
            .await,
        Code::Unauthenticated,
        "unknown user",
    )?;
    ensure!(
        wrong.message() == unknown.message(),
        "messages differ: {:?} vs {:?}",
        wrong.message(),
        unknown.message()
    );
    expect_code(
        ctx.users().login(LoginReq::default()).await,
        Code::Unauthenticated,
        "empty login",
    )?;
    Ok(())
}

async fn todo_round_trip(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    let title = format!("🎉 {}", "t".repeat(198));
    let text = "ü✓😀 ".repeat(500);
    ensure!(
        title.chars().count() == 200 && text.chars().count() == 2000,
        "test data sizes"
    );
    let id = ctx.create(&a.token, &title, &text).await?;
    ensure!(id > 0, "id {id}");
    let got = ctx
        .get(&a.token, id)
        .await
        .map_err(|s| format!("get: {s:?}"))?;
    ensure!(
        got.id == id && got.title == title && got.text == text,
        "stored entry differs"
    );
    ensure!(got.created_at.is_some(), "created_at not set");
    ensure!(got.updated_at.is_none(), "updated_at set before any update");
    ensure!(got.done != Some(true), "new entry is done");

    let item = ToDoEntry {
        id,
        title: "renamed".into(),
        text: String::new(),
        done: Some(true),
        ..Default::default()
    };
    ok(
        ctx.todos()
            .update_to_do(authed(UpdateToDoReq { item: Some(item) }, &a.token))
            .await,
        "update",
    )?;
    let updated = ctx
        .get(&a.token, id)
        .await
        .map_err(|s| format!("get after update: {s:?}"))?;
    ensure!(
        updated.title == "renamed" && updated.text.is_empty() && updated.done == Some(true),
        "update not applied: {updated:?}"
    );
    ensure!(updated.created_at == got.created_at, "created_at changed");
    let (created, changed) = (
        updated.created_at.unwrap_or_default(),
        updated.updated_at.ok_or("updated_at not set")?,
    );
    ensure!(
        (changed.seconds, changed.nanos) >= (created.seconds, created.nanos),
        "updated_at before created_at"
    );

    // `done` absent in an update leaves it unchanged.
    let item = ToDoEntry {
        id,
        title: "again".into(),
        ..Default::default()
    };
    ok(
        ctx.todos()
            .update_to_do(authed(UpdateToDoReq { item: Some(item) }, &a.token))
            .await,
        "update without done",
    )?;
    let again = ctx
        .get(&a.token, id)
        .await
        .map_err(|s| format!("get: {s:?}"))?;
    ensure!(
        again.done == Some(true),
        "done changed by an update without it"
    );

    ok(
        ctx.todos()
            .delete_to_do(authed(DeleteToDoReq { id }, &a.token))
            .await,
        "delete",
    )?;
    expect_code(
        ctx.todos()
            .get_to_do(authed(GetToDoReq { id }, &a.token))
            .await,
        Code::NotFound,
        "get deleted",
    )?;
    expect_code(
        ctx.todos()
            .delete_to_do(authed(DeleteToDoReq { id }, &a.token))
            .await,
        Code::NotFound,
        "delete twice",
    )?;
    let item = ToDoEntry {
        id,
        title: "ghost".into(),
        ..Default::default()
    };
    expect_code(
        ctx.todos()
            .update_to_do(authed(UpdateToDoReq { item: Some(item) }, &a.token))
            .await,
        Code::NotFound,
        "update deleted",
    )?;
    Ok(())
}

async fn todo_validation(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    let bad: Vec<(ToDoEntry, &str)> = vec![
        (
            ToDoEntry {
                title: String::new(),
                ..Default::default()
            },
            "title",
        ),
        (
            ToDoEntry {
                title: "🎉".repeat(201),
                ..Default::default()
            },
            "title",
        ),
        (
            ToDoEntry {
                title: "ok".into(),
                text: "x".repeat(2001),
                ..Default::default()
            },
            "text",
        ),
    ];
    for (item, field) in &bad {
        let status = expect_code(
            ctx.todos()
                .create_to_do(authed(
                    CreateToDoReq {
                        item: Some(item.clone()),
                        ..Default::default()
                    },
                    &a.token,
                ))
                .await,
            Code::InvalidArgument,
            field,
        )?;
        ensure!(
            status.message().contains(field),
            "message {:?} does not name {field}",
            status.message()
        );
    }
    expect_code(
        ctx.todos()
            .create_to_do(authed(
                CreateToDoReq {
                    item: None,
                    ..Default::default()
                },
                &a.token,
            ))
            .await,
        Code::InvalidArgument,
        "no item",
    )?;
    let listed = ok(
        ctx.todos()
            .list_to_do(authed(ListToDoReq::default(), &a.token))
            .await,
        "list",
    )?;
    ensure!(
        listed.items.is_empty(),
        "rejected creates stored {} entries",
        listed.items.len()
    );

    let id = ctx.create(&a.token, "keep", "me").await?;
    for (mut item, field) in bad {
        item.id = id;
        expect_code(
            ctx.todos()
                .update_to_do(authed(UpdateToDoReq { item: Some(item) }, &a.token))
                .await,
            Code::InvalidArgument,
            field,
        )?;
    }
    let kept = ctx
        .get(&a.token, id)
        .await
        .map_err(|s| format!("get: {s:?}"))?;
    ensure!(
        kept.title == "keep" && kept.text == "me" && kept.updated_at.is_none(),
        "rejected update changed the entry"
    );
    for bad_id in [0, -1] {
        expect_code(
            ctx.todos()
                .get_to_do(authed(GetToDoReq { id: bad_id }, &a.token))
                .await,
            Code::InvalidArgument,
            "id <= 0",
        )?;
    }
    Ok(())
}

async fn isolation(ctx: &Ctx) -> Outcome {
    let (a, b) = (ctx.account().await?, ctx.account().await?);
    let id = ctx.create(&a.token, "mine", "private").await?;
    expect_code(
        ctx.todos()
            .get_to_do(authed(GetToDoReq { id }, &b.token))
            .await,
        Code::NotFound,
        "B gets A's",
    )?;
    let item = ToDoEntry {
        id,
        title: "stolen".into(),
        ..Default::default()
    };
    expect_code(
        ctx.todos()
            .update_to_do(authed(UpdateToDoReq { item: Some(item) }, &b.token))
            .await,
        Code::NotFound,
        "B updates A's",
    )?;
    expect_code(
        ctx.todos()
            .delete_to_do(authed(DeleteToDoReq { id }, &b.token))
            .await,
        Code::NotFound,
        "B deletes A's",
    )?;
    let listed = ok(
        ctx.todos()
            .list_to_do(authed(ListToDoReq::default(), &b.token))
            .await,
        "B lists",
    )?;
    ensure!(
        listed.items.iter().all(|i| i.id != id),
        "A's entry listed for B"
    );
    let still = ctx
        .get(&a.token, id)
        .await
        .map_err(|s| format!("A gets own: {s:?}"))?;
    ensure!(
        still.title == "mine" && still.text == "private",
        "B's attempts changed A's entry"
    );
    Ok(())
}

async fn list_paging(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(ctx.create(&a.token, &format!("entry {i}"), "").await?);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = ok(
            ctx.todos()
                .list_to_do(authed(
                    ListToDoReq {
                        limit: 2,
                        page_token: token.clone(),
                    },
                    &a.token,
                ))
                .await,
            "list page",
        )?;
        ensure!(page.items.len() <= 2, "page of {}", page.items.len());
        seen.extend(page.items.iter().map(|i| i.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        ensure!(pages < 10, "paging does not end");
        token = page.next_page_token;
    }
    ensure!(seen == ids, "paged ids {seen:?} != created {ids:?}");
    ensure!(pages == 3, "{pages} pages for 5 entries by 2");
    let all = ok(
        ctx.todos()
            .list_to_do(authed(
                ListToDoReq {
                    limit: 5,
                    page_token: String::new(),
                },
                &a.token,
            ))
            .await,
        "exact page",
    )?;
    ensure!(
        all.items.len() == 5 && all.next_page_token.is_empty(),
        "exactly-full page must end the list"
    );
    for bad in ["garbage!", "AAAA", "eyJhbGciOiJub25lIn0"] {
        expect_code(
            ctx.todos()
                .list_to_do(authed(
                    ListToDoReq {
                        limit: 2,
                        page_token: bad.into(),
                    },
                    &a.token,
                ))
                .await,
            Code::InvalidArgument,
            "malformed page token",
        )?;
    }
    Ok(())
}

async fn list_limits(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    let total = 1001;
    let mut created = 0;
    for chunk in (0..total).collect::<Vec<_>>().chunks(50) {
        let results = join_all(chunk.iter().map(|i| {
            let title = format!("bulk {i}");
            let token = a.token.as_str();
            async move { ctx.create(token, &title, "").await }
        }))
        .await;
        for r in results {
            r?;
            created += 1;
        }
    }
    ensure!(created == total, "created {created}");
    let default = ok(
        ctx.todos()
            .list_to_do(authed(
                ListToDoReq {
                    limit: 0,
                    page_token: String::new(),
                },
                &a.token,
            ))
            .await,
        "limit 0",
    )?;
    ensure!(
        default.items.len() == 100 && !default.next_page_token.is_empty(),
        "limit 0 gave {}",
        default.items.len()
    );
    let capped = ok(
        ctx.todos()
            .list_to_do(authed(
                ListToDoReq {
                    limit: 5000,
                    page_token: String::new(),
                },
                &a.token,
            ))
            .await,
        "limit 5000",
    )?;
    ensure!(
        capped.items.len() == 1000,
        "limit 5000 gave {}",
        capped.items.len()
    );
    let rest = ok(
        ctx.todos()
            .list_to_do(authed(
                ListToDoReq {
                    limit: 5000,
                    page_token: capped.next_page_token,
                },
                &a.token,
            ))
            .await,
        "after cap",
    )?;
    ensure!(
        rest.items.len() == 1 && rest.next_page_token.is_empty(),
        "remaining page had {}",
        rest.items.len()
    );
    ensure!(
        capped.items.windows(2).all(|w| w[0].id < w[1].id),
        "not in ascending id order"
    );
    Ok(())
}

async fn tokens_required(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    expect_code(
        ctx.todos()
            .list_to_do(Request::new(ListToDoReq::default()))
            .await,
        Code::Unauthenticated,
        "no token",
    )?;
    for value in [
        "",
        "Bearer",
        "Bearer ",
        "garbage",
        "Basic dXNlcjpwYXNz",
        "Bearer a.b.c",
    ] {
        expect_code(
            ctx.todos()
                .list_to_do(with_authorization(ListToDoReq::default(), value))
                .await,
            Code::Unauthenticated,
            value,
        )?;
    }
    for value in [
        a.token.clone(),
        format!("Bearer {}", a.token),
        format!("bearer {}", a.token),
    ] {
        ok(
            ctx.todos()
                .list_to_do(with_authorization(ListToDoReq::default(), &value))
                .await,
            "valid token form",
        )?;
    }
    let long = format!("Bearer {}{}", a.token, "A".repeat(4100));
    expect_code(
        ctx.todos()
            .list_to_do(with_authorization(ListToDoReq::default(), &long))
            .await,
        Code::Unauthenticated,
        "authorization over 4 KiB",
    )?;
    Ok(())
}

fn forge(header: &serde_json::Value, claims: &serde_json::Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        signature
    )
}

async fn tampered_tokens(ctx: &Ctx) -> Outcome {
    let (a, b) = (ctx.account().await?, ctx.account().await?);
    let id = ctx.create(&a.token, "target", "").await?;
    let parts: Vec<&str> = a.token.split('.').collect();
    let header = jwt_part(&a.token, 0)?;
    let claims = jwt_part(&a.token, 1)?;
    let b_claims = jwt_part(&b.token, 1)?;

    let mut as_b = claims.clone();
    as_b["sub"] = b_claims["sub"].clone();
    let mut longer = claims.clone();
    longer["exp"] = serde_json::json!(claims["exp"].as_u64().unwrap_or(0) + 3600 * 24 * 365);
    let mut none_header = header.clone();
    none_header["alg"] = "none".into();
    let mut hs_header = header.clone();
    hs_header["alg"] = "HS256".into();
    let mut unknown_kid = header.clone();
    unknown_kid["kid"] = "not-a-known-key".into();
    let mut flipped = parts[2].as_bytes().to_vec();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).map_err(|e| e.to_string())?;

    let forged = [
        ("altered sub", forge(&header, &as_b, parts[2])),
        ("altered exp", forge(&header, &longer, parts[2])),
        (
            "altered signature",
            format!("{}.{}.{flipped}", parts[0], parts[1]),
        ),
        ("alg none", forge(&none_header, &claims, "")),
        (
            "alg none with signature",
            forge(&none_header, &claims, parts[2]),
        ),
        ("HS256", forge(&hs_header, &claims, parts[2])),
        ("unknown kid", forge(&unknown_kid, &claims, parts[2])),
        ("no signature", format!("{}.{}", parts[0], parts[1])),
    ];
    for (what, token) in forged {
        expect_code(
            ctx.todos()
                .get_to_do(authed(GetToDoReq { id }, &token))
                .await,
            Code::Unauthenticated,
            what,
        )?;
        expect_code(
            ctx.todos()
                .delete_to_do(authed(DeleteToDoReq { id }, &token))
                .await,
            Code::Unauthenticated,
            what,
        )?;
    }
    ctx.get(&a.token, id)
        .await
        .map_err(|s| format!("entry gone after forged calls: {s:?}"))?;
    Ok(())
}

async fn spoofed_identity(ctx: &Ctx) -> Outcome {
    let (a, b) = (ctx.account().await?, ctx.account().await?);
    let a_sub = jwt_part(&a.token, 1)?["sub"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let a_id = ctx.create(&a.token, "a's", "").await?;
    // B claims to be A through the internal header: it must not work.
    for name in ["x-todoapp-user-id", "x-user-id", "user-id"] {
        let mut req = authed(GetToDoReq { id: a_id }, &b.token);
        req.metadata_mut()
            .insert(name, a_sub.parse().map_err(|_| "metadata")?);
        expect_code(ctx.todos().get_to_do(req).await, Code::NotFound, name)?;
    }
    let mut req = authed(
        CreateToDoReq {
            item: Some(ToDoEntry {
                title: "b's".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        &b.token,
    );
    req.metadata_mut()
        .insert("x-todoapp-user-id", a_sub.parse().map_err(|_| "metadata")?);
    let b_id = ok(
        ctx.todos().create_to_do(req).await,
        "create with spoofed header",
    )?
    .id;
    ctx.get(&b.token, b_id)
        .await
        .map_err(|s| format!("entry not B's: {s:?}"))?;
    expect_code(
        ctx.todos()
            .get_to_do(authed(GetToDoReq { id: b_id }, &a.token))
            .await,
        Code::NotFound,
        "A sees B's spoofed entry",
    )?;
    Ok(())
}

async fn multiplexed_users(ctx: &Ctx) -> Outcome {
    let mut accounts = Vec::new();
    for _ in 0..4 {
        accounts.push(ctx.account().await?);
    }
    // All on the one shared HTTP/2 connection, interleaved.
    let calls = accounts.iter().enumerate().flat_map(|(n, acc)| {
        (0..10).map(move |i| async move {
            let id = ctx
                .create(&acc.token, &format!("owner {n} item {i}"), "")
                .await?;
            let got = ctx
                .get(&acc.token, id)
                .await
                .map_err(|s| format!("get: {s:?}"))?;
            ensure!(
                got.title == format!("owner {n} item {i}"),
                "user {n} read {:?}",
                got.title
            );
            Ok::<(), String>(())
        })
    });
    for result in join_all(calls).await {
        result?;
    }
    for (n, acc) in accounts.iter().enumerate() {
        let listed = ok(
            ctx.todos()
                .list_to_do(authed(ListToDoReq::default(), &acc.token))
                .await,
            "list",
        )?;
        ensure!(
            listed.items.len() == 10,
            "user {n} has {} entries",
            listed.items.len()
        );
        let prefix = format!("owner {n} ");
        ensure!(
            listed.items.iter().all(|i| i.title.starts_with(&prefix)),
            "user {n} sees another's entry"
        );
    }
    Ok(())
}

async fn oversized_messages(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    let item = ToDoEntry {
        title: "big".into(),
        text: "x".repeat(100 * 1024),
        ..Default::default()
    };
    expect_code(
        ctx.todos()
            .create_to_do(authed(
                CreateToDoReq {
                    item: Some(item),
                    ..Default::default()
                },
                &a.token,
            ))
            .await,
        Code::ResourceExhausted,
        "100 KiB message",
    )?;
    let big_login = LoginReq {
        username: "u".into(),
        password: "p".repeat(70 * 1024),
    };
    expect_code(
        ctx.users().login(big_login).await,
        Code::ResourceExhausted,
        "70 KiB login",
    )?;
    ctx.create(&a.token, "after big", "").await?;
    Ok(())
}

/// A message whose field 1 is bytes where the services expect integers.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    junk: Vec<u8>,
    #[prost(fixed64, tag = "2")]
    more: u64,
}

async fn raw_call(ctx: &Ctx, path: &'static str, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(ctx.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let message = Garbage {
        junk: vec![0xff; 64],
        more: u64::MAX,
    };
    let request = match token {
        Some(token) => authed(message, token),
        None => Request::new(message),
    };
    let codec = tonic_prost::ProstCodec::<Garbage, Garbage>::default();
    grpc.unary(
        request,
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|_| ())
}

async fn malformed_input(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    for (path, token) in [
        ("/ToDo/GetToDo", Some(a.token.as_str())),
        ("/ToDo/ListToDo", Some(a.token.as_str())),
        ("/User/Login", None),
        ("/User/Register", None),
    ] {
        match raw_call(ctx, path, token).await {
            Ok(()) => return Err(format!("{path}: garbage accepted")),
            Err(status)
                if matches!(status.code(), Code::InvalidArgument | Code::Unauthenticated) => {}
            Err(status) => {
                return Err(format!(
                    "{path}: garbage gave {:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
        }
    }
    match raw_call(ctx, "/ToDo/NoSuchMethod", Some(&a.token)).await {
        Err(status) if status.code() == Code::Unimplemented => {}
        other => return Err(format!("unknown method gave {other:?}")),
    }
    match raw_call(ctx, "/NoSuchService/Call", None).await {
        Err(status) if status.code() == Code::Unimplemented => {}
        other => return Err(format!("unknown service gave {other:?}")),
    }
    ctx.create(&a.token, "still serving", "").await?;
    Ok(())
}

async fn health_and_reflection(ctx: &Ctx) -> Outcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let mut health = HealthClient::new(ctx.channel.clone());
    for service in ["", "User", "ToDo"] {
        let rsp = ok(
            health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await,
            "health check",
        )?;
        ensure!(
            rsp.status == ServingStatus::Serving as i32,
            "{service:?} status {}",
            rsp.status
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(ctx.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ok(
        reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await,
        "reflection",
    )?;
    let first = stream
        .message()
        .await
        .map_err(|s| format!("reflection stream: {s:?}"))?
        .ok_or("no reflection answer")?;
    let names: Vec<String> = match first.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => return Err(format!("unexpected reflection answer {other:?}")),
    };
    for expected in ["User", "ToDo", "grpc.health.v1.Health"] {
        ensure!(
            names.iter().any(|n| n == expected),
            "reflection lists {names:?}, not {expected}"
        );
    }
    Ok(())
}
