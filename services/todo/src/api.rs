//! The `/ToDo/*` gRPC methods.

use std::sync::Arc;

use prost_types::Timestamp;
use todoapp_api::to_do_server::ToDo;
use todoapp_api::{
    CreateToDoReq, CreateToDoRsp, DeleteToDoReq, DeleteToDoRsp, GetToDoReq, GetToDoRsp,
    ListToDoReq, ListToDoRsp, ToDoEntry, UpdateToDoReq, UpdateToDoRsp,
};
use tonic::{Request, Response, Status};

use crate::domain::{encode_token, Content, Page, RequestId, TodoId, UserId};
use crate::error::TodoError;
use crate::store::{CreateOnce, TodoRecord, TodoStore};

pub struct TodoApi<S> {
    store: Arc<S>,
}

impl<S: TodoStore> TodoApi<S> {
    pub fn new(store: S) -> Self {
        Self {
            store: Arc::new(store),
        }
    }
}

/// The caller's id, put there by the gateway after verifying the token.
/// Only the gateway can reach this service (mutual TLS), so it is trusted.
fn caller<T>(request: &Request<T>) -> Result<UserId, TodoError> {
    let value = request
        .metadata()
        .get(todoapp_auth::USER_ID_HEADER)
        .ok_or(TodoError::Unauthenticated)?;
    UserId::parse(value.to_str().map_err(|_| TodoError::Unauthenticated)?)
}

fn content_of(item: Option<ToDoEntry>) -> Result<(i32, Content), TodoError> {
    let item = item.ok_or(TodoError::invalid("item", "is required"))?;
    Ok((item.id, Content::new(item.title, item.text, item.done)?))
}

fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

impl From<TodoRecord> for ToDoEntry {
    fn from(record: TodoRecord) -> Self {
        Self {
            id: record.id,
            title: record.title,
            text: record.text,
            created_at: Some(timestamp(record.created_at)),
            updated_at: record.updated_at.map(timestamp),
            done: Some(record.done),
        }
    }
}

#[tonic::async_trait]
impl<S: TodoStore> ToDo for TodoApi<S> {
    async fn create_to_do(
        &self,
        request: Request<CreateToDoReq>,
    ) -> Result<Response<CreateToDoRsp>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let (_, content) = content_of(req.item)?;
        let id = match RequestId::parse(&req.request_id)? {
            None => self
                .store
                .create(&user, &content)
                .await
                .map_err(TodoError::from)?,
            Some(request_id) => match self
                .store
                .create_once(&user, &content, &request_id)
                .await
                .map_err(TodoError::from)?
            {
                CreateOnce::Created(id) | CreateOnce::Repeated(id) => id,
                CreateOnce::Mismatch => return Err(TodoError::RequestIdReused.into()),
            },
        };
        Ok(Response::new(CreateToDoRsp { id }))
    }

    async fn get_to_do(
        &self,
        request: Request<GetToDoReq>,
    ) -> Result<Response<GetToDoRsp>, Status> {
        let user = caller(&request)?;
        let id = TodoId::try_from(request.into_inner().id)?;
        let record = self.store.get(&user, id).await.map_err(TodoError::from)?;
        let record = record.ok_or(TodoError::NotFound)?;
        Ok(Response::new(GetToDoRsp {
            item: Some(record.into()),
        }))
    }

    async fn delete_to_do(
        &self,
        request: Request<DeleteToDoReq>,
    ) -> Result<Response<DeleteToDoRsp>, Status> {
        let user = caller(&request)?;
        let id = TodoId::try_from(request.into_inner().id)?;
        if !self
            .store
            .delete(&user, id)
            .await
            .map_err(TodoError::from)?
        {
            return Err(TodoError::NotFound.into());
        }
        Ok(Response::new(DeleteToDoRsp {}))
    }

    async fn update_to_do(
        &self,
        request: Request<UpdateToDoReq>,
    ) -> Result<Response<UpdateToDoRsp>, Status> {
        let user = caller(&request)?;
        let (id, content) = content_of(request.into_inner().item)?;
        let id = TodoId::try_from(id)?;
        if !self
            .store
            .update(&user, id, &content)
            .await
            .map_err(TodoError::from)?
        {
            return Err(TodoError::NotFound.into());
        }
        Ok(Response::new(UpdateToDoRsp {}))
    }

    async fn list_to_do(
        &self,
        request: Request<ListToDoReq>,
    ) -> Result<Response<ListToDoRsp>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let page = Page::new(req.limit, &req.page_token)?;
        // One extra row tells whether another page follows.
        let probe = Page {
            limit: page.limit + 1,
            ..page
        };
        let mut records = self
            .store
            .list(&user, probe)
            .await
            .map_err(TodoError::from)?;
        let more = records.len() > page.limit as usize;
        records.truncate(page.limit as usize);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => encode_token(last.id),
            _ => String::new(),
        };
        Ok(Response::new(ListToDoRsp {
            items: records.into_iter().map(ToDoEntry::from).collect(),
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_split_micros() {
        assert_eq!(
            timestamp(1_500_000),
            Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            timestamp(-1),
            Timestamp {
                seconds: -1,
                nanos: 999_999_000
            }
        );
    }
}
