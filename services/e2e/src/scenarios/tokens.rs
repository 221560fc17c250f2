//! Tokens and identity: calls need a valid token, forged or tampered
//! ones are refused, identity sent by clients is ignored, users sharing a
//! connection stay apart.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures_util::future::join_all;
use todoapp_api::*;
use tonic::{Code, Request};

use super::{expect_code, jwt_part, ok, Ctx, Outcome};
use crate::client::{authed, with_authorization};

pub(super) async fn tokens_required(ctx: &Ctx) -> Outcome {
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

pub(super) async fn tampered_tokens(ctx: &Ctx) -> Outcome {
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

pub(super) async fn spoofed_identity(ctx: &Ctx) -> Outcome {
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

pub(super) async fn multiplexed_users(ctx: &Ctx) -> Outcome {
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
        let listed = ctx.first_page(&acc.token, "list").await?;
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
