//! The HTTP side shared by the providers: one JSON POST (or one streamed answer, read as
//! server-sent events) with a timeout per attempt, retries with
//! exponential backoff and jitter on 408/409/429/5xx and connection errors (honouring
//! `Retry-After`), and errors that never carry the API key.
//!
//! Every attempt, retries included, first takes its turn from the model's [`RateLimiter`]; what
//! the service says about its limits (a 429, rate-limit headers) pauses that limiter, so every
//! call sharing it waits, not just this one.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use sse_stream::SseStream;

use super::rate_headers::exhausted_for;
use super::stream::{DecodeError, Decoder, Step};
use super::{ApiKey, Completion, DeltaSink, LmError, RateLimiter, StreamDelta};
use crate::retry::RetryPolicy;

/// How a provider talks HTTP: client, limits and retry rules.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub client: reqwest::Client,
    /// The `provider/model` id, for error messages.
    pub model: String,
    pub key: Option<ApiKey>,
    pub settings: HttpSettings,
    /// Whose turn it is: shared with the other models of the same limit, or this model's own.
    pub limiter: RateLimiter,
}

/// Limits and retry rules of the HTTP providers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HttpSettings {
    /// Limit on each attempt, from sending the request to the end of the answer.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Backoff between attempts when the service says nothing.
    pub backoff: RetryPolicy,
    /// The longest `Retry-After` to wait for; a longer one ends the call at once.
    pub max_retry_wait: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(120),
            max_retries: 3,
            backoff: RetryPolicy {
                initial: Duration::from_millis(500),
                multiplier: 2.0,
                max: Duration::from_secs(20),
                jitter: 0.5,
            },
            max_retry_wait: Duration::from_secs(60),
        }
    }
}

/// Longest piece of an error body kept in an error message.
const MAX_ERROR_BODY: usize = 600;

/// One request as sent by [`Transport::post_stream`]: headers, JSON body, and which error
/// answers are final even where they would usually be retried.
pub(crate) struct Request<'a> {
    pub headers: HeaderMap,
    pub body: &'a Value,
    pub permanent: &'a (dyn Fn(u16, &str) -> bool + Sync),
}

/// What a failed attempt means for the next one.
enum Attempt {
    /// Try again, after the wait the service asked for if it did.
    Retry(Option<Duration>, LmError),
    /// Stop with this error.
    Stop(LmError),
}

impl Transport {
    /// POSTs `body` to `url` with `headers` and returns the parsed JSON answer.
    ///
    /// `permanent(status, body)` may declare an error status final even where it would usually
    /// be retried (a server that reports bad requests as 500, say).
    pub async fn post_json(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &Value,
        permanent: &(dyn Fn(u16, &str) -> bool + Sync),
    ) -> Result<Value, LmError> {
        let charge = if self.limiter.counts_tokens() {
            estimated_tokens(body)
        } else {
            0
        };
        let mut retry = 0;
        loop {
            // A failed attempt keeps its estimate charged: the service may have counted it.
            let permit = self.limiter.acquire(charge).await;
            let outcome = self.attempt(url, headers.clone(), body, permanent).await;
            match outcome {
                Ok(value) => {
                    if let Some(used) = tokens_used(&value) {
                        permit.settle(used);
                    }
                    return Ok(value);
                }
                Err(Attempt::Stop(error)) => return Err(error),
                Err(Attempt::Retry(asked, error)) => {
                    self.wait_to_retry(&mut retry, asked, error).await?
                }
            }
        }
    }

    /// Waits before the next attempt after `error` (as long as the server `asked`, else the
    /// backoff's delay), or gives up with it when the retries are used up.
    async fn wait_to_retry(
        &self,
        retry: &mut u32,
        asked: Option<Duration>,
        error: LmError,
    ) -> Result<(), LmError> {
        if *retry >= self.settings.max_retries {
            return Err(gave_up(error, *retry + 1));
        }
        *retry += 1;
        let wait = asked.unwrap_or_else(|| self.settings.backoff.delay(*retry));
        if matches!(error, LmError::Http { status: 429, .. }) {
            // The limit is the service's, for every call sharing the limiter: they all wait
            // (and the next attempt waits for its turn there).
            self.limiter.pause_for(wait);
        } else {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    async fn attempt(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &Value,
        permanent: &(dyn Fn(u16, &str) -> bool + Sync),
    ) -> Result<Value, Attempt> {
        let response = self.send(url, headers, body, permanent).await?;
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) if e.is_timeout() => return Err(Attempt::Stop(self.timeout())),
            Err(e) => {
                return Err(Attempt::Stop(self.malformed(format!(
                    "the answer's body was cut short ({})",
                    source_chain(&e)
                ))))
            }
        };
        self.json_body(&bytes).map_err(Attempt::Stop)
    }

    /// Parses a successful answer's body.
    fn json_body(&self, bytes: &[u8]) -> Result<Value, LmError> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.malformed(format!(
                "the answer is not valid JSON ({e}); it starts with: {}",
                excerpt(&String::from_utf8_lossy(bytes), 200)
            ))
        })
    }

    /// Sends the request and returns the response when its status is a success; an error
    /// status is read and classified (retry or stop).
    async fn send(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &Value,
        permanent: &(dyn Fn(u16, &str) -> bool + Sync),
    ) -> Result<reqwest::Response, Attempt> {
        let request = self
            .client
            .post(url)
            .headers(headers)
            .timeout(self.settings.timeout)
            .json(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Err(Attempt::Retry(None, self.timeout())),
            Err(e) if e.is_connect() || e.is_request() => {
                return Err(Attempt::Retry(
                    None,
                    self.failed(format!("could not reach {url}: {}", source_chain(&e))),
                ))
            }
            Err(e) => return Err(Attempt::Stop(self.failed(source_chain(&e)))),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        if let Some(wait) = exhausted_for(response.headers(), SystemTime::now()) {
            // Nothing left until the reset: hold back the calls sharing the limiter, up to the
            // longest wait this client accepts from a service.
            self.limiter
                .pause_for(wait.min(self.settings.max_retry_wait));
        }
        if status.is_success() {
            return Ok(response);
        }
        let text = match response.bytes().await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.is_timeout() => return Err(Attempt::Stop(self.timeout())),
            Err(e) => {
                return Err(Attempt::Stop(self.malformed(format!(
                    "the answer's body was cut short ({})",
                    source_chain(&e)
                ))))
            }
        };
        let error = self.http_error(status, &text);
        if !is_transient(status) || permanent(status.as_u16(), &text) {
            return Err(Attempt::Stop(error));
        }
        match retry_after {
            Some(wait) if wait > self.settings.max_retry_wait => Err(Attempt::Stop(
                self.http_error(
                    status,
                    &format!(
                        "{} (the service asked to retry after {:.1}s, more than the {:.1}s allowed)",
                        text.trim(),
                        wait.as_secs_f64(),
                        self.settings.max_retry_wait.as_secs_f64()
                    ),
                ),
            )),
            wait => Err(Attempt::Retry(wait, error)),
        }
    }

    /// POSTs `body` (which asks for a stream) to `url` and feeds the server-sent events of the
    /// answer to a decoder made by `decoder`, which hands the pieces to `on_delta`; returns the
    /// decoder's answer once the stream is complete.
    ///
    /// Attempts are retried like [`post_json`](Self::post_json)'s, and a stream that breaks
    /// or ends early ([`LmError::StreamCut`]) too, but only while nothing reached `on_delta`:
    /// what was shown cannot be taken back, so after that the error ends the call.
    ///
    /// A server that ignores the request for a stream and answers with one JSON document is
    /// understood too: `whole` reads that answer, and its text is handed over as one piece.
    pub async fn post_stream<D: Decoder>(
        &self,
        url: &str,
        request: Request<'_>,
        decoder: impl Fn() -> D + Send + Sync,
        whole: &(dyn Fn(Value) -> Result<Completion, LmError> + Sync),
        on_delta: &mut DeltaSink<'_>,
    ) -> Result<Completion, LmError> {
        let charge = if self.limiter.counts_tokens() {
            estimated_tokens(request.body)
        } else {
            0
        };
        let mut shown = false;
        let mut retry = 0;
        loop {
            let permit = self.limiter.acquire(charge).await;
            let outcome = self
                .stream_attempt(url, &request, decoder(), whole, on_delta, &mut shown)
                .await;
            match outcome {
                Ok(completion) => {
                    let used = completion.usage.total();
                    if used > 0 {
                        permit.settle(used);
                    }
                    return Ok(completion);
                }
                Err(Attempt::Stop(error)) => return Err(error),
                Err(Attempt::Retry(_, error)) if shown => return Err(error),
                Err(Attempt::Retry(asked, error)) => {
                    self.wait_to_retry(&mut retry, asked, error).await?
                }
            }
        }
    }

    async fn stream_attempt<D: Decoder>(
        &self,
        url: &str,
        request: &Request<'_>,
        mut decoder: D,
        whole: &(dyn Fn(Value) -> Result<Completion, LmError> + Sync),
        on_delta: &mut DeltaSink<'_>,
        shown: &mut bool,
    ) -> Result<Completion, Attempt> {
        let response = self
            .send(
                url,
                request.headers.clone(),
                request.body,
                request.permanent,
            )
            .await?;
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
        if is_json {
            // No stream after all: the whole answer at once.
            let bytes = response.bytes().await.map_err(|e| {
                Attempt::Stop(self.malformed(format!(
                    "the answer's body was cut short ({})",
                    source_chain(&e)
                )))
            })?;
            let completion =
                whole(self.json_body(&bytes).map_err(Attempt::Stop)?).map_err(Attempt::Stop)?;
            if let Some(text) = completion.text.as_ref().filter(|t| !t.is_empty()) {
                *shown = true;
                on_delta(StreamDelta::Text(text.clone()));
            }
            return Ok(completion);
        }
        let mut events = SseStream::from_bytes_stream(response.bytes_stream());
        let mut emit = |delta: StreamDelta| {
            *shown = true;
            on_delta(delta);
        };
        loop {
            let event = match events.next().await {
                Some(Ok(event)) => event,
                Some(Err(sse_stream::Error::Body(e))) => {
                    let reason = if is_timeout(e.as_ref()) {
                        format!(
                            "no end within the {:.1}s limit",
                            self.settings.timeout.as_secs_f64()
                        )
                    } else {
                        format!("the connection broke ({})", source_chain(e.as_ref()))
                    };
                    return Err(Attempt::Retry(None, self.cut(reason)));
                }
                Some(Err(e)) => {
                    return Err(Attempt::Stop(
                        self.malformed(format!("the event stream could not be read: {e}")),
                    ))
                }
                None => {
                    return Err(Attempt::Retry(
                        None,
                        self.cut("the server closed the stream without its end marker"),
                    ))
                }
            };
            let Some(data) = event.data.as_deref() else {
                continue;
            };
            match decoder.event(event.event.as_deref(), data, &mut emit) {
                Ok(Step::Continue) => {}
                Ok(Step::Done) => return decoder.finish().map_err(Attempt::Stop),
                Err(DecodeError::Transient(error)) => return Err(Attempt::Retry(None, error)),
                Err(DecodeError::Fatal(error)) => return Err(Attempt::Stop(error)),
            }
        }
    }

    fn cut(&self, reason: impl Into<String>) -> LmError {
        super::stream::cut(&self.model, self.scrub(&reason.into()))
    }

    /// `message` with the key removed.
    pub fn scrub(&self, message: &str) -> String {
        match &self.key {
            Some(key) => key.scrub(message),
            None => message.to_owned(),
        }
    }

    fn timeout(&self) -> LmError {
        LmError::Timeout {
            model: self.model.clone(),
            after: self.settings.timeout,
        }
    }

    /// A typed answer from its JSON, or a `Malformed` error saying what did not fit.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, answer: Value) -> Result<T, LmError> {
        serde_json::from_value(answer)
            .map_err(|e| self.malformed(format!("unexpected JSON shape: {e}")))
    }

    /// An error the service reported, with the key removed.
    pub fn failed(&self, message: String) -> LmError {
        LmError::Failed {
            model: self.model.clone(),
            message: self.scrub(&message),
        }
    }

    pub fn malformed(&self, message: String) -> LmError {
        LmError::Malformed {
            model: self.model.clone(),
            message: self.scrub(&message),
        }
    }

    fn http_error(&self, status: StatusCode, body: &str) -> LmError {
        LmError::Http {
            model: self.model.clone(),
            status: status.as_u16(),
            message: self.scrub(&error_message(body)),
        }
    }
}

/// Adds how many attempts were made to the final error.
fn gave_up(error: LmError, attempts: u32) -> LmError {
    match error {
        LmError::Http {
            model,
            status,
            message,
        } => LmError::Http {
            model,
            status,
            message: format!("{message} (gave up after {attempts} attempts)"),
        },
        LmError::Failed { model, message } => LmError::Failed {
            model,
            message: format!("{message} (gave up after {attempts} attempts)"),
        },
        LmError::StreamCut { model, reason } => LmError::StreamCut {
            model,
            reason: format!("{reason} (gave up after {attempts} attempts)"),
        },
        other => other,
    }
}

/// Answer length assumed for a request that sets no limit, in estimates of its tokens.
const ASSUMED_ANSWER_TOKENS: u64 = 1024;

/// The tokens a request may use, charged before it is sent: its JSON size at four bytes a token
/// (more than the prompt's tokens, as the JSON around the text counts too) plus the answer's
/// limit.
fn estimated_tokens(body: &Value) -> u64 {
    let prompt = body.to_string().len() as u64 / 4;
    let answer = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|field| body.get(field).and_then(Value::as_u64))
        .unwrap_or(ASSUMED_ANSWER_TOKENS);
    prompt.saturating_add(answer)
}

/// The tokens an answer says it used: OpenAI's `prompt_tokens` + `completion_tokens`, or
/// Anthropic's `input_tokens` + `output_tokens`.
fn tokens_used(answer: &Value) -> Option<u64> {
    let usage = answer.get("usage")?;
    let fields = [
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
    ];
    let counts: Vec<u64> = fields
        .iter()
        .filter_map(|field| usage.get(field).and_then(Value::as_u64))
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// Rate limits, overload and server errors pass; client errors (bad request, bad key) do not.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// The wait a service asks for: `retry-after-ms` (OpenAI) or `Retry-After` in seconds.
/// The HTTP-date form of `Retry-After` is not read; the normal backoff applies then.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    // A wait too long for a `Duration` is longer than any limit: saturate rather than panic.
    let wait = |secs: f64| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    number("retry-after-ms")
        .map(|ms| wait(ms / 1e3))
        .or_else(|| number("retry-after").map(wait))
}

/// The service's own error message when the body is the usual `{"error": {"message": ..}}`,
/// else the start of the body.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        let error = v.get("error").unwrap_or(v);
        error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .map(str::to_owned)
    });
    match message {
        Some(message) => excerpt(&message, MAX_ERROR_BODY),
        None if body.trim().is_empty() => "(empty body)".to_owned(),
        None => excerpt(body.trim(), MAX_ERROR_BODY),
    }
}

/// At most `max` characters of `text`, marked when cut.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Whether a body error is reqwest's timeout.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// An error with its causes, which reqwest keeps apart.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A header whose name and value are known to be valid (constant names, checked values).
pub(crate) fn header(
    headers: &mut HeaderMap,
    name: &'static str,
    value: &str,
) -> Result<(), LmError> {
    let value = HeaderValue::from_str(value).map_err(|_| {
        LmError::Config(format!(
            "the value for the HTTP header `{name}` has characters a header cannot carry"
        ))
    })?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            header(&mut map, name, value).unwrap();
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.25")])),
            Some(Duration::from_millis(250))
        );
        // Too long for a Duration: longer than any limit, and no panic.
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1e20")])),
            Some(Duration::MAX)
        );
        // OpenAI's millisecond header wins over the coarse one.
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1"), ("retry-after-ms", "20")])),
            Some(Duration::from_millis(20))
        );
    }

    #[test]
    fn retry_after_ignores_dates_and_nonsense() {
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            None
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "-5")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn transient_statuses() {
        for status in [408, 409, 429, 500, 502, 503, 529] {
            assert!(
                is_transient(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 422] {
            assert!(
                !is_transient(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn error_message_prefers_the_services_message() {
        assert_eq!(
            error_message(r#"{"error": {"message": "bad model", "type": "x"}}"#),
            "bad model"
        );
        assert_eq!(error_message(r#"{"error": "overloaded"}"#), "overloaded");
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(error_message(&"x".repeat(700)).chars().count(), 601);
    }
}
