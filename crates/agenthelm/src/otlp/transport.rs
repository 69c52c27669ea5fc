//! The HTTP client the SDK's OTLP exporter sends through: the workspace's reqwest.
//!
//! The SDK reduces a failed request to "network error" or a bare status code; this client keeps
//! what went wrong in words (refused, timed out, the collector's answer, spans it dropped) for
//! the caller to report. It also runs requests made from threads without a Tokio runtime (the
//! SDK's batch processor has its own thread) on the runtime it was made in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use serde_json::Value;
use tokio::runtime::Handle;

/// What the latest request ran into.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Trouble {
    /// No answer within the timeout.
    Timeout,
    /// No answer at all: refused, unknown host, TLS...
    Unreachable(String),
    /// An answer other than 2xx: its status and the start of its body.
    Rejected(u16, String),
    /// A 2xx that says some spans were dropped: how many, and why.
    Dropped(u64, String),
}

/// An [`HttpClient`] over reqwest that remembers its latest trouble.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    client: reqwest::Client,
    timeout: Duration,
    /// The runtime requests from runtime-less threads are run on.
    runtime: Option<Handle>,
    trouble: Arc<Mutex<Option<Trouble>>>,
    /// Live export: say each failure in a `tracing` warning, as nobody waits for the result.
    warn: bool,
}

impl Transport {
    pub(super) fn new(client: reqwest::Client, timeout: Duration) -> Self {
        Transport {
            client,
            timeout,
            runtime: Handle::try_current().ok(),
            trouble: Arc::default(),
            warn: false,
        }
    }

    /// Requests from any thread run on `runtime`; failures are logged.
    pub(super) fn live(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self.warn = true;
        self
    }

    /// What the latest request ran into, if anything; forgets it.
    pub(super) fn take_trouble(&self) -> Option<Trouble> {
        self.trouble.lock().ok().and_then(|mut t| t.take())
    }

    fn note(&self, trouble: Option<Trouble>) {
        if self.warn {
            if let Some(trouble) = &trouble {
                tracing::warn!(target: "agenthelm::otlp", ?trouble, "OTLP export failed");
            }
        }
        if let Ok(mut slot) = self.trouble.lock() {
            *slot = trouble;
        }
    }

    /// Notes a request that got no (whole) answer; the error for the SDK.
    fn failed(&self, error: reqwest::Error) -> HttpError {
        // The URL is reported separately (masked).
        let error = error.without_url();
        self.note(Some(if error.is_timeout() {
            Trouble::Timeout
        } else {
            Trouble::Unreachable(causes(&error))
        }));
        Box::new(error)
    }

    async fn exchange(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        *request.timeout_mut() = Some(self.timeout);
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| self.failed(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| self.failed(e))?;
        let json = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        self.note(if status.is_success() {
            dropped(&body, json)
        } else {
            Some(Trouble::Rejected(
                status.as_u16(),
                snippet(&String::from_utf8_lossy(&body)),
            ))
        });
        let mut answer = Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

#[async_trait]
impl HttpClient for Transport {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        if Handle::try_current().is_ok() {
            return self.exchange(request).await;
        }
        let Some(runtime) = &self.runtime else {
            return Err("no Tokio runtime to send OTLP requests on".into());
        };
        let this = self.clone();
        runtime
            .spawn(async move { this.exchange(request).await })
            .await?
    }
}

/// The spans a collector's 2xx answer says it dropped (`partialSuccess`), in either encoding.
fn dropped(body: &[u8], json: bool) -> Option<Trouble> {
    let (rejected, message) = if json {
        let answer: Value = serde_json::from_slice(body).ok()?;
        let partial = &answer["partialSuccess"];
        let rejected = match &partial["rejectedSpans"] {
            Value::String(s) => s.parse().unwrap_or(0),
            v => v.as_u64().unwrap_or(0),
        };
        let message = partial["errorMessage"].as_str().unwrap_or("").to_owned();
        (rejected, message)
    } else {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
        use prost::Message;
        let partial = ExportTraceServiceResponse::decode(body)
            .ok()?
            .partial_success?;
        (
            u64::try_from(partial.rejected_spans).unwrap_or(0),
            partial.error_message,
        )
    };
    (rejected > 0).then_some(Trouble::Dropped(rejected, message))
}

/// An error and its causes on one line (the URL is reported separately).
fn causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The start of a collector's answer, for an error message.
fn snippet(body: &str) -> String {
    let body = body.trim();
    if body.chars().count() <= 300 {
        return body.to_owned();
    }
    let mut cut: String = body.chars().take(300).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_spans_are_read_from_either_encoding() {
        use opentelemetry_proto::tonic::collector::trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceResponse,
        };
        use prost::Message;
        let json = br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"too old"}}"#;
        assert_eq!(
            dropped(json, true),
            Some(Trouble::Dropped(3, "too old".into()))
        );
        assert_eq!(dropped(b"{}", true), None);
        assert_eq!(
            dropped(b"", false),
            None,
            "an empty answer is a full success"
        );
        let proto = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "quota".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            dropped(&proto, false),
            Some(Trouble::Dropped(2, "quota".into()))
        );
        assert_eq!(snippet(&"x".repeat(400)).chars().count(), 301);
    }
}
