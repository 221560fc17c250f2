//! Accounts: registration and login, their validation and failures,
//! exact usernames, login throttling; and idempotent creates (issue 9).

use std::time::{Duration, Instant};

use std::time::SystemTime;
use todoapp_api::*;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{expect_code, expect_invalid_field, jwt_part, ok, Ctx, Outcome};
use crate::client::authed;

fn register(username: &str, password: &str, email: &str) -> RegisterReq {
    RegisterReq {
        username: username.into(),
        password: password.into(),
        email: email.into(),
    }
}

fn login(username: &str, password: &str) -> LoginReq {
    LoginReq {
        username: username.into(),
        password: password.into(),
    }
}

/// The `sub` of a token.
fn subject(token: &str) -> Result<String, String> {
    let claims = super::jwt_part(token, 1)?;
    claims["sub"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "token without sub".into())
}

pub(super) async fn exact_usernames(ctx: &Ctx) -> Outcome {
    let name = ctx.unique("exact");
    let password = "exact password 1";
    ok(
        ctx.users()
            .register(register(&name, password, &format!("{name}@example.org")))
            .await,
        "register",
    )?;
    // Leading/trailing whitespace is refused, not folded into `name`.
    for padded in [
        format!("{name} "),
        format!(" {name}"),
        format!("{name}\u{a0}"),
    ] {
        let status = expect_code(
            ctx.users()
                .register(register(&padded, password, &format!("p{name}@example.org")))
                .await,
            Code::InvalidArgument,
            "padded username",
        )?;
        if !status.message().contains("username") {
            return Err(format!(
                "message does not name the field: {}",
                status.message()
            ));
        }
        expect_code(
            ctx.users().login(login(&padded, password)).await,
            Code::Unauthenticated,
            "login with a padded username",
        )?;
    }
    // Two spellings of "é" are one account: NFC.
    let composed = format!("{name}-jos\u{e9}");
    let decomposed = format!("{name}-jose\u{301}");
    ok(
        ctx.users()
            .register(register(
                &composed,
                password,
                &format!("c{name}@example.org"),
            ))
            .await,
        "register composed",
    )?;
    let status = expect_code(
        ctx.users()
            .register(register(
                &decomposed,
                password,
                &format!("d{name}@example.org"),
            ))
            .await,
        Code::AlreadyExists,
        "the decomposed spelling of a taken name",
    )?;
    if !status.message().contains("username") {
        return Err(format!(
            "expected a username conflict: {}",
            status.message()
        ));
    }
    let a = ok(
        ctx.users().login(login(&composed, password)).await,
        "login composed",
    )?;
    let b = ok(
        ctx.users().login(login(&decomposed, password)).await,
        "login decomposed",
    )?;
    if subject(&a.jwt_token)? != subject(&b.jwt_token)? {
        return Err("the two spellings logged into different accounts".into());
    }
    // Case matters for usernames, not for emails.
    expect_code(
        ctx.users()
            .login(login(&name.to_uppercase(), password))
            .await,
        Code::Unauthenticated,
        "login with other case",
    )?;
    let status = expect_code(
        ctx.users()
            .register(register(
                &ctx.unique("other"),
                password,
                &format!("{name}@EXAMPLE.org").to_uppercase(),
            ))
            .await,
        Code::AlreadyExists,
        "email in other case",
    )?;
    if !status.message().contains("email") {
        return Err(format!("expected an email conflict: {}", status.message()));
    }
    // A taken username containing "email" is a username conflict.
    let emailish = ctx.unique("my-email");
    ok(
        ctx.users()
            .register(register(
                &emailish,
                password,
                &format!("{emailish}@example.org"),
            ))
            .await,
        "register emailish",
    )?;
    let status = expect_code(
        ctx.users()
            .register(register(
                &emailish,
                password,
                &format!("x{emailish}@example.org"),
            ))
            .await,
        Code::AlreadyExists,
        "taken emailish username",
    )?;
    if status.message() != "username is already registered" {
        return Err(format!("misclassified conflict: {}", status.message()));
    }
    Ok(())
}

fn create_req(title: &str, request_id: &str) -> CreateToDoReq {
    CreateToDoReq {
        item: Some(ToDoEntry {
            title: title.into(),
            text: "idempotent".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

pub(super) async fn idempotent_create(ctx: &Ctx) -> Outcome {
    let a = ctx.account().await?;
    let b = ctx.account().await?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let first = ok(
        ctx.todos()
            .create_to_do(authed(create_req("once", &request_id), &a.token))
            .await,
        "create",
    )?
    .id;
    // The same request again, also in upper case: the first id, nothing new.
    for id in [request_id.clone(), request_id.to_uppercase()] {
        let again = ok(
            ctx.todos()
                .create_to_do(authed(create_req("once", &id), &a.token))
                .await,
            "repeat",
        )?
        .id;
        if again != first {
            return Err(format!("repeat returned {again}, first call {first}"));
        }
    }
    // Same request id, other content: refused, nothing stored.
    expect_code(
        ctx.todos()
            .create_to_do(authed(create_req("other", &request_id), &a.token))
            .await,
        Code::AlreadyExists,
        "request_id with other content",
    )?;
    let listed = ctx.first_page(&a.token, "list").await?;
    if listed.items.len() != 1 || listed.items[0].id != first {
        return Err(format!(
            "expected exactly entry {first}, got {:?}",
            listed.items
        ));
    }
    // Another user with the same request id makes their own entry.
    let theirs = ok(
        ctx.todos()
            .create_to_do(authed(create_req("once", &request_id), &b.token))
            .await,
        "other user",
    )?
    .id;
    if theirs == first {
        return Err("users' request ids collided".into());
    }
    expect_code(
        ctx.todos()
            .create_to_do(authed(create_req("bad", "not-a-uuid"), &a.token))
            .await,
        Code::InvalidArgument,
        "malformed request_id",
    )?;
    // Without a request id every call creates.
    let x = ctx.create(&a.token, "plain", "").await?;
    let y = ctx.create(&a.token, "plain", "").await?;
    if x == y {
        return Err("two creates without request_id returned one id".into());
    }
    Ok(())
}

/// The wait a throttled answer carries, checked in both forms.
fn retry_delay(status: &Status) -> Result<Duration, String> {
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .ok_or_else(|| format!("no google.rpc.RetryInfo in {status:?}"))?;
    if delay.is_zero() {
        return Err("RetryInfo with a zero delay".into());
    }
    let pushback = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("no grpc-retry-pushback-ms")?;
    if pushback != delay.as_millis() as u64 {
        return Err(format!("pushback {pushback} ms, RetryInfo {delay:?}"));
    }
    Ok(delay)
}

/// Fails logins for `username` through `ctx` until throttled (at most
/// `limit` attempts); returns the throttled status.
async fn fail_until_throttled(ctx: &Ctx, username: &str, limit: usize) -> Result<Status, String> {
    for attempt in 1..=limit {
        match ctx.users().login(login(username, "not the password")).await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            Err(status) if status.code() == Code::ResourceExhausted => {
                if attempt == 1 {
                    return Err("throttled before any failure".into());
                }
                return Ok(status);
            }
            other => return Err(format!("attempt {attempt}: {other:?}")),
        }
    }
    Err(format!("{limit} failed logins were never throttled"))
}

pub(super) async fn login_throttling(ctx: &Ctx) -> Outcome {
    let account = ctx.account().await?;
    let throttled = fail_until_throttled(ctx, &account.username, 50).await?;
    retry_delay(&throttled)?;
    // While throttled even the right password is refused, quickly: no hash.
    let start = Instant::now();
    let status = expect_code(
        ctx.users()
            .login(login(&account.username, &account.password))
            .await,
        Code::ResourceExhausted,
        "right password while throttled",
    )?;
    let elapsed = start.elapsed();
    retry_delay(&status)?;
    if elapsed > Duration::from_millis(250) {
        return Err(format!("a throttled answer took {elapsed:?}"));
    }
    // Other accounts from the same address are not affected.
    let other = ctx.account().await?;
    ok(
        ctx.users()
            .login(login(&other.username, &other.password))
            .await,
        "another account",
    )?;
    Ok(())
}

/// A stranger on `away` guessing `home`'s password is throttled there, and
/// only there: the owner on `home` still logs in. Each address has its own
/// budget; neither can reset the other's. Needs two source addresses (e.g.
/// 127.0.0.1 and 127.0.0.2 for a gateway on loopback).
pub async fn stranger_cannot_lock_out_the_owner(home: &Ctx, away: &Ctx) -> Outcome {
    let owner = home.account().await?;
    let throttled = fail_until_throttled(away, &owner.username, 50).await?;
    let wait = retry_delay(&throttled)?;
    expect_code(
        away.users()
            .login(login(&owner.username, &owner.password))
            .await,
        Code::ResourceExhausted,
        "the right password from the throttled address",
    )?;
    // A client cannot move itself to another address with headers.
    for (name, value) in [
        ("x-todoapp-client-address", "127.0.0.9"),
        ("x-forwarded-for", "127.0.0.9"),
    ] {
        let mut request = tonic::Request::new(login(&owner.username, &owner.password));
        request
            .metadata_mut()
            .insert(name, value.parse().map_err(|_| "metadata")?);
        expect_code(
            away.users().login(request).await,
            Code::ResourceExhausted,
            name,
        )?;
    }
    let rsp = ok(
        home.users()
            .login(login(&owner.username, &owner.password))
            .await,
        "the owner from home while the stranger is throttled",
    )?;
    if rsp.jwt_token.is_empty() {
        return Err("empty token".into());
    }
    if wait > Duration::from_secs(60 * 60) {
        return Err(format!("implausible wait {wait:?}"));
    }
    Ok(())
}

pub(super) async fn register_and_login(ctx: &Ctx) -> Outcome {
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
    ctx.first_page(&login.jwt_token, "list with fresh token")
        .await?;
    Ok(())
}

pub(super) async fn register_validation(ctx: &Ctx) -> Outcome {
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
        expect_invalid_field(ctx.users().register(req).await, field)?;
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

pub(super) async fn register_duplicates(ctx: &Ctx) -> Outcome {
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

pub(super) async fn password_exactness(ctx: &Ctx) -> Outcome {
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

pub(super) async fn login_failures(ctx: &Ctx) -> Outcome {
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
