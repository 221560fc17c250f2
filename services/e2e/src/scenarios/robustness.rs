//! Robustness: oversized and malformed messages, unknown methods, and
//! the health and reflection services.

use todoapp_api::*;
use tonic::{Code, Request, Status};

use super::{expect_code, ok, Ctx, Outcome};
use crate::client::authed;

pub(super) async fn oversized_messages(ctx: &Ctx) -> Outcome {
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

pub(super) async fn malformed_input(ctx: &Ctx) -> Outcome {
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

pub(super) async fn health_and_reflection(ctx: &Ctx) -> Outcome {
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
