//! Todo entries: the create/get/update/delete round trip, validation,
//! isolation between users, list paging and limits.

use futures_util::future::join_all;
use todoapp_api::*;
use tonic::Code;

use super::{expect_code, expect_invalid_field, ok, Ctx, Outcome};
use crate::client::authed;

pub(super) async fn todo_round_trip(ctx: &Ctx) -> Outcome {
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

pub(super) async fn todo_validation(ctx: &Ctx) -> Outcome {
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
        expect_invalid_field(
            ctx.todos()
                .create_to_do(authed(
                    CreateToDoReq {
                        item: Some(item.clone()),
                        ..Default::default()
                    },
                    &a.token,
                ))
                .await,
            field,
        )?;
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
    let listed = ctx.first_page(&a.token, "list").await?;
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

pub(super) async fn isolation(ctx: &Ctx) -> Outcome {
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
    let listed = ctx.first_page(&b.token, "B lists").await?;
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

pub(super) async fn list_paging(ctx: &Ctx) -> Outcome {
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

pub(super) async fn list_limits(ctx: &Ctx) -> Outcome {
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
