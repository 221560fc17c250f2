//! The connection to the gateway, with retries while it is unavailable.

use std::future::Future;
use std::time::{Duration, Instant};

use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::user_client::UserClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::error::{one_line, CliError, Result};
use crate::target::Target;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct Gateway {
    channel: Channel,
    address: String,
    timeout: Duration,
    token: Option<String>,
    /// How to log in again, when the gateway refuses the token.
    login_hint: String,
}

impl Gateway {
    /// A lazily connected channel: connection failures surface as
    /// UNAVAILABLE on the first call, where they are retried.
    pub fn new(target: &Target, timeout: Duration) -> Result<Self> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = std::fs::read(&target.ca)
            .map_err(|e| CliError::Usage(format!("CA certificate {}: {e}", target.ca.display())))?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        let uri = if target.gateway.contains("://") {
            target.gateway.clone()
        } else {
            format!("https://{}", target.gateway)
        };
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| CliError::Usage(format!("gateway address `{}`: {e}", target.gateway)))?
            .tls_config(tls)
            .map_err(|e| CliError::Usage(format!("TLS setup: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            channel,
            address: target.gateway.clone(),
            timeout,
            token: None,
            login_hint: String::new(),
        })
    }

    pub fn with_token(mut self, token: String, login_hint: String) -> Self {
        self.token = Some(token);
        self.login_hint = login_hint;
        self
    }

    pub fn users(&self) -> UserClient<Channel> {
        UserClient::new(self.channel.clone())
    }

    pub fn todos(&self) -> ToDoClient<Channel> {
        ToDoClient::new(self.channel.clone())
            .max_decoding_message_size(todoapp_api::MAX_RELAYED_REPLY_BYTES)
    }

    /// `message` with the profile's token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }

    /// Runs `attempt` until it answers something other than UNAVAILABLE,
    /// backing off between attempts, for at most the timeout overall.
    /// Only UNAVAILABLE is retried: the call did not reach a service.
    pub async fn call<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match tokio::time::timeout(remaining, attempt()).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(self.gave_up(what, "no answer")),
            };
            match outcome {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(self.gave_up(what, &transport_reason(&status)));
                    }
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(status) if status.code() == Code::Unauthenticated && self.token.is_some() => {
                    return Err(CliError::Auth(format!(
                        "{what}: the gateway refused your login ({}): run `{}` again",
                        one_line(status.message()),
                        self.login_hint
                    )))
                }
                Err(status) => return Err(CliError::from_status(what, &status)),
            }
        }
    }

    fn gave_up(&self, what: &str, reason: &str) -> CliError {
        CliError::Unavailable(format!(
            "{what}: cannot reach the gateway at {} within {}: {reason}",
            self.address,
            humantime::format_duration(self.timeout)
        ))
    }
}

/// The innermost cause of a transport failure ("Connection refused"),
/// which says more than tonic's "transport error".
fn transport_reason(status: &Status) -> String {
    let mut reason = one_line(status.message());
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        reason = one_line(&error.to_string());
        source = error.source();
    }
    if reason.is_empty() {
        "unavailable".into()
    } else {
        reason
    }
}
