//! The `/ToDo/*` gRPC methods.

use std::sync::Arc;

use prost::Message;
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
    list_max_bytes: usize,
}

impl<S: TodoStore> TodoApi<S> {
    /// `list_max_bytes`: the byte budget of one ListToDo reply.
    pub fn new(store: S, list_max_bytes: usize) -> Self {
        Self {
            store: Arc::new(store),
            list_max_bytes,
        }
    }
}

/// Room kept in a ListToDo reply for its `next_page_token` field.
const TOKEN_FIELD_BYTES: usize = 32;

/// Keeps the leading entries whose encoded size (as repeated fields of the
/// reply) stays within `max_bytes`; returns whether any were cut.
fn cut_to_budget(entries: &mut Vec<ToDoEntry>, max_bytes: usize) -> bool {
    let budget = max_bytes.saturating_sub(TOKEN_FIELD_BYTES);
    let mut used = 0usize;
    for (index, entry) in entries.iter().enumerate() {
        let len = entry.encoded_len();
        // Field key (1 byte) + length prefix + the entry itself.
        used += 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if used > budget {
            entries.truncate(index);
            return true;
        }
    }
    false
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

/// The methods in domain terms: each returns the domain error, which the
/// gRPC impl below turns into a status in one place (`From<TodoError>`).
impl<S: TodoStore> TodoApi<S> {
    async fn create(&self, user: UserId, req: CreateToDoReq) -> Result<CreateToDoRsp, TodoError> {
        let (_, content) = content_of(req.item)?;
        let id = match RequestId::parse(&req.request_id)? {
            None => self.store.create(&user, &content).await?,
            Some(request_id) => match self.store.create_once(&user, &content, &request_id).await? {
                CreateOnce::Created(id) | CreateOnce::Repeated(id) => id,
                CreateOnce::Mismatch => return Err(TodoError::RequestIdReused),
            },
        };
        Ok(CreateToDoRsp { id })
    }

    async fn get(&self, user: UserId, req: GetToDoReq) -> Result<GetToDoRsp, TodoError> {
        let id = TodoId::try_from(req.id)?;
        let record = self
            .store
            .get(&user, id)
            .await?
            .ok_or(TodoError::NotFound)?;
        Ok(GetToDoRsp {
            item: Some(record.into()),
        })
    }

    async fn delete(&self, user: UserId, req: DeleteToDoReq) -> Result<DeleteToDoRsp, TodoError> {
        let id = TodoId::try_from(req.id)?;
        if !self.store.delete(&user, id).await? {
            return Err(TodoError::NotFound);
        }
        Ok(DeleteToDoRsp {})
    }

    async fn update(&self, user: UserId, req: UpdateToDoReq) -> Result<UpdateToDoRsp, TodoError> {
        let (id, content) = content_of(req.item)?;
        let id = TodoId::try_from(id)?;
        if !self.store.update(&user, id, &content).await? {
            return Err(TodoError::NotFound);
        }
        Ok(UpdateToDoRsp {})
    }

    async fn list(&self, user: UserId, req: ListToDoReq) -> Result<ListToDoRsp, TodoError> {
        let page = Page::new(req.limit, &req.page_token)?;
        // One extra row tells whether another page follows.
        let probe = Page {
            limit: page.limit + 1,
            ..page
        };
        let mut records = self.store.list(&user, probe, self.list_max_bytes).await?;
        let mut more = records.len() > page.limit as usize;
        records.truncate(page.limit as usize);
        let mut items: Vec<ToDoEntry> = records.into_iter().map(ToDoEntry::from).collect();
        more |= cut_to_budget(&mut items, self.list_max_bytes);
        let next_page_token = match (more, items.last()) {
            (true, Some(last)) => encode_token(last.id),
            _ => String::new(),
        };
        Ok(ListToDoRsp {
            items,
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl<S: TodoStore> ToDo for TodoApi<S> {
    async fn create_to_do(
        &self,
        request: Request<CreateToDoReq>,
    ) -> Result<Response<CreateToDoRsp>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(
            self.create(user, request.into_inner()).await?,
        ))
    }

    async fn get_to_do(
        &self,
        request: Request<GetToDoReq>,
    ) -> Result<Response<GetToDoRsp>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(self.get(user, request.into_inner()).await?))
    }

    async fn delete_to_do(
        &self,
        request: Request<DeleteToDoReq>,
    ) -> Result<Response<DeleteToDoRsp>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(
            self.delete(user, request.into_inner()).await?,
        ))
    }

    async fn update_to_do(
        &self,
        request: Request<UpdateToDoReq>,
    ) -> Result<Response<UpdateToDoRsp>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(
            self.update(user, request.into_inner()).await?,
        ))
    }

    async fn list_to_do(
        &self,
        request: Request<ListToDoReq>,
    ) -> Result<Response<ListToDoRsp>, Status> {
        let user = caller(&request)?;
        Ok(Response::new(self.list(user, request.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i32, text_len: usize) -> ToDoEntry {
        ToDoEntry {
            id,
            title: "t".into(),
            text: "x".repeat(text_len),
            created_at: Some(timestamp(1)),
            updated_at: None,
            done: Some(false),
        }
    }

    #[test]
    fn pages_are_cut_before_the_entry_that_passes_the_budget() {
        let budget = 64 * 1024;
        let mut items: Vec<ToDoEntry> = (1..=20).map(|id| entry(id, 8000)).collect();
        assert!(cut_to_budget(&mut items, budget));
        assert_eq!(items.len(), 8, "8 entries of ~8 KB fit in 64 KiB");
        let reply = ListToDoRsp {
            items,
            next_page_token: encode_token(8),
        };
        assert!(reply.encoded_len() <= budget, "{}", reply.encoded_len());

        let mut small: Vec<ToDoEntry> = (1..=20).map(|id| entry(id, 10)).collect();
        assert!(!cut_to_budget(&mut small, budget));
        assert_eq!(small.len(), 20);
    }

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
