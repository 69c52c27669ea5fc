//! OpenTelemetry export: a finished run's events as spans, sent over OTLP/HTTP with the JSON
//! encoding (`POST {endpoint}/v1/traces`, `Content-Type: application/json`).
//!
//! One trace per run, its id derived from the run id (the same run always lands in the same
//! trace, so exporting a run twice updates rather than duplicates it in most back ends):
//!
//! ```text
//! run                         agenthelm.run
//! ├── step                    step <id>
//! │   ├── LLM call            chat <model>          gen_ai.* attributes, tokens
//! │   ├── tool call           execute_tool <tool>
//! │   └── compensation        compensate <tool>
//! │       └── tool call       execute_tool <tool>   (the compensating call)
//! └── …
//! ```
//!
//! Attributes follow the OpenTelemetry GenAI conventions where they exist
//! (`gen_ai.request.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.agent.name`) and use `agenthelm.*` for the
//! rest (step id, cost, attempts, status). A failed step, call or compensation has status ERROR
//! with its message. Tool arguments and outputs are not exported: they may hold personal data,
//! and the run store keeps them.
//!
//! No OpenTelemetry SDK is needed: spans are built from the events after the run, by the pure
//! [`spans_of`], and sent with one request.
//!
//! ```no_run
//! use agenthelm::otlp::OtlpExporter;
//! # async fn demo(events: Vec<agenthelm::Event>) -> Result<(), agenthelm::otlp::OtlpError> {
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318, or explicitly:
//! let exporter = match OtlpExporter::from_env() {
//!     Some(exporter) => exporter?,
//!     None => OtlpExporter::new("http://127.0.0.1:4318")?,
//! };
//! let sent = exporter.export(&events).await?;
//! println!("{sent} spans exported");
//! # Ok(()) }
//! ```

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::plan::StepStatus;
use crate::trace::{CallPurpose, Event, EventKind};

/// The environment variable naming the collector's base URL.
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The environment variable naming the exact URL for traces (takes precedence over
/// [`ENDPOINT_ENV`]; nothing is appended to it).
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The environment variable with extra request headers, `key=value,key2=value2`.
pub const HEADERS_ENV: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// How long one export may take unless [`OtlpExporter::timeout`] says otherwise (the
/// OpenTelemetry default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most spans sent in one request, which keeps each body well under collectors' size limits.
pub const MAX_SPANS_PER_REQUEST: usize = 1000;

/// Why an export could not be set up or did not go through. Header values never appear here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The endpoint is not an `http` or `https` URL.
    #[error("OTLP endpoint `{endpoint}` is not usable: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given (credentials in it masked).
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header (from `OTEL_EXPORTER_OTLP_HEADERS` or [`OtlpExporter::header`]) is malformed.
    #[error("OTLP header {position}: {reason}")]
    InvalidHeader {
        /// Which header: its name, or its position in the list when it has no usable name.
        position: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer in time.
    #[error("OTLP export to {url} timed out after {after:?}")]
    Timeout {
        /// Where the spans were sent.
        url: String,
        /// The time allowed.
        after: Duration,
    },
    /// The collector could not be reached (refused, unknown host, TLS failure...).
    #[error("OTLP export to {url} failed: {message}")]
    Unreachable {
        /// Where the spans were sent.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },
    /// The collector answered with a status other than 2xx.
    #[error("OTLP collector at {url} answered HTTP {status}: {body}")]
    Rejected {
        /// Where the spans were sent.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The collector accepted the request but dropped some spans.
    #[error("OTLP collector at {url} rejected {rejected} of {sent} spans: {message}")]
    PartiallyRejected {
        /// Where the spans were sent.
        url: String,
        /// Spans sent.
        sent: usize,
        /// Spans the collector dropped.
        rejected: u64,
        /// Its explanation.
        message: String,
    },
}

/// Sends spans to an OpenTelemetry collector over OTLP/HTTP with JSON.
///
/// ```
/// use agenthelm::otlp::OtlpExporter;
/// let exporter = OtlpExporter::new("http://127.0.0.1:4318")?
///     .header("x-tenant", "team-a")?
///     .timeout(std::time::Duration::from_secs(5));
/// assert_eq!(exporter.traces_url(), "http://127.0.0.1:4318/v1/traces");
/// assert!(OtlpExporter::new("127.0.0.1:4318").is_err()); // no scheme
/// # Ok::<(), agenthelm::otlp::OtlpError>(())
/// ```
#[derive(Clone)]
pub struct OtlpExporter {
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
    client: reqwest::Client,
}

impl fmt::Debug for OtlpExporter {
    // Header values may be API keys: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("OtlpExporter")
            .field("url", &masked(&self.url))
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpExporter {
    /// An exporter to the collector at `endpoint`, its base URL (`http://host:4318`): spans go
    /// to `{endpoint}/v1/traces`. Errors when the endpoint is not an `http`/`https` URL with a
    /// host.
    pub fn new(endpoint: &str) -> Result<Self, OtlpError> {
        let mut url = validated(endpoint)?;
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(Self::to(url))
    }

    /// An exporter that posts to `url` exactly as given, like
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (no `/v1/traces` is added).
    ///
    /// ```
    /// use agenthelm::otlp::OtlpExporter;
    /// let exporter = OtlpExporter::with_traces_url("https://otel.example/ingest/traces")?;
    /// assert_eq!(exporter.traces_url(), "https://otel.example/ingest/traces");
    /// # Ok::<(), agenthelm::otlp::OtlpError>(())
    /// ```
    pub fn with_traces_url(url: &str) -> Result<Self, OtlpError> {
        validated(url).map(Self::to)
    }

    fn to(url: Url) -> Self {
        OtlpExporter {
            url,
            headers: HeaderMap::new(),
            timeout: DEFAULT_TIMEOUT,
            client: reqwest::Client::new(),
        }
    }

    /// The exporter the environment asks for: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
    /// it is) or else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, as in [`new`](Self::new)), with
    /// the headers of `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`, values
    /// percent-decoded). `None` when neither endpoint is set (or both are empty).
    pub fn from_env() -> Option<Result<Self, OtlpError>> {
        from_lookup(|name| std::env::var(name).ok())
    }

    /// Adds a header to every export (an API key, a tenant). Its value is never shown.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, OtlpError> {
        let invalid = |reason: &str| OtlpError::InvalidHeader {
            position: format!("`{name}`"),
            reason: reason.to_owned(),
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| invalid("not a valid header name"))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| invalid("its value has characters a header cannot carry"))?;
        value.set_sensitive(true);
        self.headers.append(name, value);
        Ok(self)
    }

    /// How long one export may take (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where spans are sent: `{endpoint}/v1/traces`.
    pub fn traces_url(&self) -> &str {
        self.url.as_str()
    }

    /// Sends the spans of a finished run's `events` (see [`spans_of`]) and returns how many
    /// were sent. Nothing is sent when there are no spans; a large run goes in requests of at
    /// most [`MAX_SPANS_PER_REQUEST`] spans, and the first request that fails stops the export
    /// with its error.
    pub async fn export(&self, events: &[Event]) -> Result<usize, OtlpError> {
        let spans = spans_of(events);
        for batch in spans.chunks(MAX_SPANS_PER_REQUEST) {
            self.send(batch).await?;
        }
        Ok(spans.len())
    }

    async fn send(&self, spans: &[Span]) -> Result<(), OtlpError> {
        let url = masked(&self.url);
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeout)
            .json(&ExportBody::new(spans))
            .send()
            .await
            .map_err(|e| self.send_error(&url, e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(OtlpError::Rejected {
                url,
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        // A 2xx may still report spans it dropped (`partialSuccess`).
        if let Ok(answer) = serde_json::from_str::<Value>(&body) {
            let partial = &answer["partialSuccess"];
            let rejected = match &partial["rejectedSpans"] {
                Value::String(s) => s.parse().unwrap_or(0),
                v => v.as_u64().unwrap_or(0),
            };
            if rejected > 0 {
                return Err(OtlpError::PartiallyRejected {
                    url,
                    sent: spans.len(),
                    rejected,
                    message: partial["errorMessage"].as_str().unwrap_or("").to_owned(),
                });
            }
        }
        Ok(())
    }

    fn send_error(&self, url: &str, error: reqwest::Error) -> OtlpError {
        if error.is_timeout() {
            return OtlpError::Timeout {
                url: url.to_owned(),
                after: self.timeout,
            };
        }
        // The source chain says why (connection refused, DNS...); the URL is given separately.
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        OtlpError::Unreachable {
            url: url.to_owned(),
            message,
        }
    }
}

/// [`OtlpExporter::from_env`] over any source of variables (tests use a map).
fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Result<OtlpExporter, OtlpError>> {
    let set = |name| lookup(name).filter(|v: &String| !v.trim().is_empty());
    let exporter = match (set(TRACES_ENDPOINT_ENV), set(ENDPOINT_ENV)) {
        (Some(url), _) => OtlpExporter::with_traces_url(&url),
        (None, Some(endpoint)) => OtlpExporter::new(&endpoint),
        (None, None) => return None,
    };
    let with_headers = |mut exporter: OtlpExporter| {
        for (name, value) in parse_headers(&lookup(HEADERS_ENV).unwrap_or_default())? {
            exporter = exporter.header(&name, &value)?;
        }
        Ok(exporter)
    };
    Some(exporter.and_then(with_headers))
}

/// `endpoint` as a URL, if it is an `http`/`https` URL with a host and no query.
fn validated(endpoint: &str) -> Result<Url, OtlpError> {
    let endpoint = endpoint.trim();
    let invalid = |reason: String| OtlpError::InvalidEndpoint {
        endpoint: Url::parse(endpoint)
            .map(|u| masked(&u))
            .unwrap_or_else(|_| endpoint.to_owned()),
        reason,
    };
    if !endpoint.contains("://") {
        return Err(invalid(format!(
            "it has no scheme (did you mean `http://{endpoint}`?)"
        )));
    }
    let url = Url::parse(endpoint).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme must be http or https, not `{}`",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment".to_owned()));
    }
    Ok(url)
}

/// `key=value,key2=value2` as pairs, values percent-decoded (the OTLP exporter spec's format).
/// Errors name the entry by position or key, never by value.
fn parse_headers(list: &str) -> Result<Vec<(String, String)>, OtlpError> {
    let mut headers = Vec::new();
    for (n, entry) in list.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let position = || format!("{} in {HEADERS_ENV}", n + 1);
        let Some((key, value)) = entry.split_once('=') else {
            return Err(OtlpError::InvalidHeader {
                position: position(),
                reason: "expected key=value".to_owned(),
            });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(OtlpError::InvalidHeader {
                position: position(),
                reason: "the key is empty".to_owned(),
            });
        }
        let value = percent_decode(value.trim()).ok_or_else(|| OtlpError::InvalidHeader {
            position: format!("`{key}` in {HEADERS_ENV}"),
            reason: "its value has a bad percent-escape".to_owned(),
        })?;
        headers.push((key.to_owned(), value));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced by `***`.
fn masked(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
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

// ---- spans ----

/// One span, as OTLP describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lowercase hex digits, the same for every span of a run.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The enclosing span; `None` for a run's root span.
    pub parent_span_id: Option<String>,
    /// What the span is, e.g. `step book_hotel` or `chat openai/gpt-4o`.
    pub name: String,
    /// Its OTLP kind.
    pub kind: SpanKind,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// Key–value attributes, in the order they were set.
    pub attributes: Vec<(String, AttributeValue)>,
    /// Whether it failed.
    pub status: SpanStatus,
}

impl Span {
    /// The value of attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The span in the OTLP JSON mapping.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

// Serialized by hand into the OTLP JSON mapping: camelCase names, 64-bit numbers as strings,
// an absent parent left out. Straight to bytes, with no `Value` tree in between, keeps the
// export of a 10,000-step run quick.
impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut span = serializer.serialize_struct("Span", 9)?;
        span.serialize_field("traceId", &self.trace_id)?;
        span.serialize_field("spanId", &self.span_id)?;
        match &self.parent_span_id {
            Some(parent) => span.serialize_field("parentSpanId", parent)?,
            None => span.skip_field("parentSpanId")?,
        }
        span.serialize_field("name", &self.name)?;
        span.serialize_field("kind", &self.kind.code())?;
        span.serialize_field("startTimeUnixNano", &self.start_unix_nano.to_string())?;
        span.serialize_field("endTimeUnixNano", &self.end_unix_nano.to_string())?;
        span.serialize_field("attributes", &Attributes(&self.attributes))?;
        span.serialize_field("status", &self.status)?;
        span.end()
    }
}

/// The OTLP span kinds AgentHelm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the process: runs, steps, tool calls, compensations.
    Internal,
    /// A request to another service: LLM calls.
    Client,
}

impl SpanKind {
    /// The number OTLP gives the kind.
    pub fn code(self) -> u8 {
        match self {
            SpanKind::Internal => 1,
            SpanKind::Client => 3,
        }
    }
}

/// A span's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// Nothing went wrong (OpenTelemetry leaves success unset).
    Unset,
    /// It failed, with this message.
    Error(String),
}

impl Serialize for SpanStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SpanStatus::Unset => serializer.serialize_map(Some(0))?.end(),
            SpanStatus::Error(message) => {
                let mut status = serializer.serialize_map(Some(2))?;
                status.serialize_entry("code", &2)?;
                status.serialize_entry("message", message)?;
                status.end()
            }
        }
    }
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// Text.
    String(String),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Double(f64),
    /// Yes or no.
    Bool(bool),
}

impl Serialize for AttributeValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serializer.serialize_map(Some(1))?;
        match self {
            AttributeValue::String(s) => value.serialize_entry("stringValue", s)?,
            // OTLP/JSON writes 64-bit integers as strings.
            AttributeValue::Int(i) => value.serialize_entry("intValue", &i.to_string())?,
            AttributeValue::Double(d) => value.serialize_entry("doubleValue", d)?,
            AttributeValue::Bool(b) => value.serialize_entry("boolValue", b)?,
        }
        value.end()
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::String(s.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::String(s)
    }
}
impl From<u64> for AttributeValue {
    fn from(n: u64) -> Self {
        AttributeValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<usize> for AttributeValue {
    fn from(n: usize) -> Self {
        AttributeValue::from(n as u64)
    }
}
impl From<f64> for AttributeValue {
    fn from(d: f64) -> Self {
        AttributeValue::Double(d)
    }
}
impl From<bool> for AttributeValue {
    fn from(b: bool) -> Self {
        AttributeValue::Bool(b)
    }
}

/// Attributes as OTLP's list of `{"key", "value"}` objects.
struct Attributes<'a>(&'a [(String, AttributeValue)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct KeyValue<'a> {
            key: &'a str,
            value: &'a AttributeValue,
        }
        serializer.collect_seq(self.0.iter().map(|(key, value)| KeyValue { key, value }))
    }
}

/// An OTLP `ExportTraceServiceRequest` carrying some spans, ready to serialize.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportBody<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource {
    attributes: Vec<KeyValueOwned>,
}

#[derive(Serialize)]
struct KeyValueOwned {
    key: &'static str,
    value: AttributeValue,
}

#[derive(Serialize)]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: &'a [Span],
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

impl<'a> ExportBody<'a> {
    fn new(spans: &'a [Span]) -> Self {
        let attribute = |key, value: &str| KeyValueOwned {
            key,
            value: value.into(),
        };
        ExportBody {
            resource_spans: [ResourceSpans {
                resource: Resource {
                    attributes: vec![
                        attribute("service.name", "agenthelm"),
                        attribute("telemetry.sdk.name", "agenthelm"),
                        attribute("telemetry.sdk.language", "rust"),
                    ],
                },
                scope_spans: [ScopeSpans {
                    scope: Scope {
                        name: "agenthelm",
                        version: env!("CARGO_PKG_VERSION"),
                    },
                    spans,
                }],
            }],
        }
    }
}

/// The body of an OTLP `ExportTraceServiceRequest` carrying `spans`, in the JSON mapping.
pub fn export_request(spans: &[Span]) -> Value {
    serde_json::to_value(ExportBody::new(spans)).unwrap_or(Value::Null)
}

/// The trace id of run `run_id`: 32 hex digits, always the same for the same run.
///
/// ```
/// use agenthelm::otlp::trace_id_of;
/// assert_eq!(trace_id_of("run-1"), trace_id_of("run-1"));
/// assert_ne!(trace_id_of("run-1"), trace_id_of("run-2"));
/// assert_eq!(trace_id_of("run-1").len(), 32);
/// ```
pub fn trace_id_of(run_id: &str) -> String {
    // FNV-1a, 128 bits: stable across versions and platforms, unlike std's hasher. Not a
    // security boundary, only a stable name.
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for byte in "agenthelm-run:".bytes().chain(run_id.bytes()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    format!("{:032x}", hash.max(1))
}

fn span_id_of(trace_id: &str, key: &str) -> String {
    // FNV-1a, 64 bits, over the trace and the span's role in it.
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in trace_id.bytes().chain([b'/']).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{:016x}", hash.max(1))
}

fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// Start of something that ended at `end_ms` after `duration_ms`.
fn nanos_before(end_ms: u64, duration_ms: f64) -> u64 {
    let duration = if duration_ms.is_finite() && duration_ms > 0.0 {
        (duration_ms * 1e6) as u64
    } else {
        0
    };
    nanos(end_ms).saturating_sub(duration)
}

/// The spans of the runs in `events` (usually one finished run's events, oldest first): one
/// root span per run, a span per step under it, and a span per LLM call, tool call and
/// compensation under its step. Events of several runs make several traces; events without a
/// run id (a lone agent's) make one trace of their own. Pure: the same events give the same
/// spans, ids included.
///
/// ```
/// use agenthelm::{Event, EventKind, StepStatus};
/// use agenthelm::otlp::spans_of;
/// use std::sync::Arc;
///
/// let event = |step: Option<&str>, kind| Event {
///     timestamp_ms: 1_000,
///     run_id: Some(Arc::from("run-1")),
///     step_id: step.map(Arc::from),
///     agent: None,
///     kind,
/// };
/// let spans = spans_of(&[
///     event(None, EventKind::RunStarted { goal: "demo".into(), steps: 1 }),
///     event(Some("a"), EventKind::StepStarted { direct_tool: None }),
///     event(Some("a"), EventKind::StepFinished { status: StepStatus::Completed, result: None, duration_ms: 0.0, error: None }),
///     event(None, EventKind::RunFinished { success: true, duration_ms: 0.0 }),
/// ]);
/// assert_eq!(spans.len(), 2);
/// assert_eq!(spans[1].parent_span_id.as_ref(), Some(&spans[0].span_id));
/// ```
pub fn spans_of(events: &[Event]) -> Vec<Span> {
    let mut runs: Vec<(Option<&str>, Vec<&Event>)> = Vec::new();
    for event in events {
        let run = event.run_id.as_deref();
        match runs.iter_mut().find(|(id, _)| *id == run) {
            Some((_, group)) => group.push(event),
            None => runs.push((run, vec![event])),
        }
    }
    runs.into_iter()
        .flat_map(|(run_id, events)| TraceBuilder::new(run_id, &events).build(&events))
        .collect()
}

/// Builds the spans of one run, reading its events in order.
struct TraceBuilder<'e> {
    trace_id: String,
    root_id: String,
    /// Every span but the root, in the order they began.
    spans: Vec<Span>,
    /// Latest span of each step id, and how many spans the step has had (a resumed run may
    /// start a step again).
    steps: HashMap<String, (usize, usize)>,
    /// Open compensation span of each step.
    compensations: HashMap<String, usize>,
    /// Counts spans of calls and compensations, to give each a unique id.
    calls: usize,
    first_ms: u64,
    last_ms: u64,
    run: RunFacts<'e>,
}

/// What the root span says about the run.
#[derive(Default)]
struct RunFacts<'e> {
    run_id: Option<&'e str>,
    agent: Option<&'e str>,
    attributes: Vec<(String, AttributeValue)>,
    started_ms: Option<u64>,
    finished_ms: Option<u64>,
    success: Option<bool>,
    first_failure: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    resumes: usize,
}

impl<'e> TraceBuilder<'e> {
    fn new(run_id: Option<&'e str>, events: &[&'e Event]) -> Self {
        let first_ms = events.iter().map(|e| e.timestamp_ms).min().unwrap_or(0);
        let last_ms = events.iter().map(|e| e.timestamp_ms).max().unwrap_or(0);
        let agent = events.iter().find_map(|e| e.agent.as_deref());
        let key = match run_id {
            Some(id) => id.to_owned(),
            // No run id: name the trace by when and by whom, which is stable for these events.
            None => format!("events-{first_ms}-{}", agent.unwrap_or("")),
        };
        let trace_id = trace_id_of(&key);
        TraceBuilder {
            root_id: span_id_of(&trace_id, "run"),
            trace_id,
            spans: Vec::new(),
            steps: HashMap::new(),
            compensations: HashMap::new(),
            calls: 0,
            first_ms,
            last_ms,
            run: RunFacts {
                run_id,
                agent,
                ..RunFacts::default()
            },
        }
    }

    fn build(mut self, events: &[&'e Event]) -> Vec<Span> {
        for event in events {
            self.read(event);
        }
        let mut spans = Vec::with_capacity(self.spans.len() + 1);
        spans.push(self.root());
        spans.extend(self.spans);
        spans
    }

    fn read(&mut self, event: &Event) {
        let step = event.step_id.as_deref();
        let run = &mut self.run;
        match &event.kind {
            EventKind::RunStarted { goal, steps } => {
                run.started_ms.get_or_insert(event.timestamp_ms);
                run.attributes
                    .push(("agenthelm.goal".into(), goal.as_str().into()));
                run.attributes
                    .push(("agenthelm.steps".into(), (*steps).into()));
            }
            EventKind::RunResumed { .. } => run.resumes += 1,
            EventKind::RunFinished { success, .. } => {
                run.finished_ms = Some(event.timestamp_ms);
                run.success = Some(*success);
            }
            EventKind::RollbackStarted { steps } => {
                run.attributes
                    .push(("agenthelm.rollback.steps".into(), steps.len().into()));
            }
            EventKind::StepStarted { direct_tool } => {
                if let Some(id) = step {
                    self.step_started(event, id, direct_tool.as_deref());
                }
            }
            EventKind::StepFinished {
                status,
                duration_ms,
                error,
                ..
            } => {
                if let Some(id) = step {
                    self.step_finished(event, id, *status, *duration_ms, error.as_deref());
                }
            }
            EventKind::LlmCall { .. } => self.llm_call(event),
            EventKind::ToolCall { .. } => self.tool_call(event),
            EventKind::CompensationStarted { action, tool, .. } => {
                let index = self.open_compensation(event, *action, tool, nanos(self.last_ms));
                // Until its end is seen, a compensation is in doubt.
                self.spans[index].status = SpanStatus::Error(
                    "the compensation has no end on record: it may or may not have taken effect"
                        .into(),
                );
                if let Some(id) = step {
                    self.compensations.insert(id.to_owned(), index);
                }
            }
            EventKind::CompensationFinished {
                action,
                tool,
                success,
                error,
            } => {
                let index = match step.and_then(|s| self.compensations.remove(s)) {
                    Some(i) => i,
                    // The end of a compensation whose start is not on record.
                    None => self.open_compensation(event, *action, tool, 0),
                };
                let span = &mut self.spans[index];
                span.end_unix_nano = nanos(event.timestamp_ms).max(span.start_unix_nano);
                span.attributes
                    .push(("agenthelm.compensation.success".into(), (*success).into()));
                span.status = match (success, error) {
                    (true, _) => SpanStatus::Unset,
                    (false, Some(error)) => SpanStatus::Error(error.clone()),
                    (false, None) => SpanStatus::Error("the compensation failed".into()),
                };
            }
            EventKind::Approval { .. } | EventKind::Effect { .. } | EventKind::Note { .. } => {}
        }
    }

    fn span(
        &self,
        key: &str,
        parent: String,
        name: String,
        kind: SpanKind,
        start: u64,
        end: u64,
    ) -> Span {
        Span {
            trace_id: self.trace_id.clone(),
            span_id: span_id_of(&self.trace_id, key),
            parent_span_id: Some(parent),
            name,
            kind,
            start_unix_nano: start,
            end_unix_nano: end.max(start),
            attributes: Vec::new(),
            status: SpanStatus::Unset,
        }
    }

    /// Span id of the latest span of `step`, else the root's.
    fn parent_of(&self, step: Option<&str>) -> String {
        step.and_then(|s| self.steps.get(s)).map_or_else(
            || self.root_id.clone(),
            |&(i, _)| self.spans[i].span_id.clone(),
        )
    }

    /// A new span for step `id` (its first, or a later attempt's), starting at `start`.
    fn open_step(&mut self, event: &Event, id: &str, start: u64) -> usize {
        let attempt = self.steps.get(id).map_or(1, |&(_, n)| n + 1);
        let mut span = self.span(
            &format!("step/{id}#{attempt}"),
            self.root_id.clone(),
            format!("step {id}"),
            SpanKind::Internal,
            start,
            nanos(self.last_ms),
        );
        span.attributes
            .push(("agenthelm.step.id".into(), id.into()));
        if let Some(agent) = event.agent.as_deref() {
            span.attributes
                .push(("gen_ai.agent.name".into(), agent.into()));
        }
        if attempt > 1 {
            span.attributes
                .push(("agenthelm.step.attempt".into(), attempt.into()));
        }
        self.spans.push(span);
        self.steps
            .insert(id.to_owned(), (self.spans.len() - 1, attempt));
        self.spans.len() - 1
    }

    fn step_started(&mut self, event: &Event, id: &str, direct_tool: Option<&str>) {
        let index = self.open_step(event, id, nanos(event.timestamp_ms));
        if let Some(tool) = direct_tool {
            self.spans[index]
                .attributes
                .push(("agenthelm.step.direct_tool".into(), tool.into()));
        }
    }

    fn step_finished(
        &mut self,
        event: &Event,
        id: &str,
        status: StepStatus,
        duration_ms: f64,
        error: Option<&str>,
    ) {
        let index = match self.steps.get(id) {
            Some(&(i, _)) if self.spans[i].attribute("agenthelm.step.status").is_none() => i,
            // No start on record (or that span ended already): a span ending here.
            _ => self.open_step(event, id, nanos_before(event.timestamp_ms, duration_ms)),
        };
        let span = &mut self.spans[index];
        span.end_unix_nano = nanos(event.timestamp_ms).max(span.start_unix_nano);
        span.attributes
            .push(("agenthelm.step.status".into(), status.as_str().into()));
        span.attributes
            .push(("agenthelm.duration_ms".into(), duration_ms.into()));
        if status == StepStatus::Failed {
            let message = error.unwrap_or("the step failed").to_owned();
            self.run
                .first_failure
                .get_or_insert_with(|| format!("step `{id}` failed: {message}"));
            span.status = SpanStatus::Error(message);
        }
    }

    fn llm_call(&mut self, event: &Event) {
        let EventKind::LlmCall {
            model,
            usage,
            cost_usd,
            latency_ms,
            tool_calls,
            error,
        } = &event.kind
        else {
            return;
        };
        self.calls += 1;
        self.run.input_tokens += usage.input_tokens;
        self.run.output_tokens += usage.output_tokens;
        self.run.cost_usd += cost_usd.unwrap_or(0.0);
        let mut span = self.span(
            &format!("llm#{}", self.calls),
            self.parent_of(event.step_id.as_deref()),
            format!("chat {model}"),
            SpanKind::Client,
            nanos_before(event.timestamp_ms, *latency_ms),
            nanos(event.timestamp_ms),
        );
        let attrs = &mut span.attributes;
        attrs.push(("gen_ai.operation.name".into(), "chat".into()));
        if let Some((provider, _)) = model.split_once('/') {
            attrs.push(("gen_ai.provider.name".into(), provider.into()));
        }
        attrs.push(("gen_ai.request.model".into(), model.as_str().into()));
        attrs.push((
            "gen_ai.usage.input_tokens".into(),
            usage.input_tokens.into(),
        ));
        attrs.push((
            "gen_ai.usage.output_tokens".into(),
            usage.output_tokens.into(),
        ));
        if let Some(cost) = cost_usd {
            attrs.push(("agenthelm.cost_usd".into(), (*cost).into()));
        }
        attrs.push(("agenthelm.tool_calls".into(), (*tool_calls).into()));
        self.push_call(span, event, error.as_deref());
    }

    fn tool_call(&mut self, event: &Event) {
        let EventKind::ToolCall {
            call_id,
            tool,
            error,
            attempts,
            duration_ms,
            purpose,
            ..
        } = &event.kind
        else {
            return;
        };
        self.calls += 1;
        let step = event.step_id.as_deref();
        // A compensating call belongs to the compensation that made it.
        let parent = match (purpose, step.and_then(|s| self.compensations.get(s))) {
            (CallPurpose::Compensate, Some(&c)) => self.spans[c].span_id.clone(),
            _ => self.parent_of(step),
        };
        let mut span = self.span(
            &format!("tool#{}#{call_id}", self.calls),
            parent,
            format!("execute_tool {tool}"),
            SpanKind::Internal,
            nanos_before(event.timestamp_ms, *duration_ms),
            nanos(event.timestamp_ms),
        );
        let purpose = match purpose {
            CallPurpose::Execute => "execute",
            CallPurpose::Compensate => "compensate",
        };
        let attrs = &mut span.attributes;
        attrs.push(("gen_ai.operation.name".into(), "execute_tool".into()));
        attrs.push(("gen_ai.tool.name".into(), tool.as_str().into()));
        attrs.push(("gen_ai.tool.call.id".into(), call_id.as_str().into()));
        attrs.push(("agenthelm.attempts".into(), u64::from(*attempts).into()));
        attrs.push(("agenthelm.tool.purpose".into(), purpose.into()));
        self.push_call(span, event, error.as_deref());
    }

    /// A new compensation span under the step it undoes, from the event's time to `end`.
    fn open_compensation(&mut self, event: &Event, action: usize, tool: &str, end: u64) -> usize {
        self.calls += 1;
        let mut span = self.span(
            &format!("compensation#{}", self.calls),
            self.parent_of(event.step_id.as_deref()),
            format!("compensate {tool}"),
            SpanKind::Internal,
            nanos(event.timestamp_ms),
            end,
        );
        span.attributes
            .push(("agenthelm.compensation.tool".into(), tool.into()));
        span.attributes
            .push(("agenthelm.compensation.action".into(), action.into()));
        if let Some(id) = event.step_id.as_deref() {
            span.attributes
                .push(("agenthelm.step.id".into(), id.into()));
        }
        self.spans.push(span);
        self.spans.len() - 1
    }

    fn push_call(&mut self, mut span: Span, event: &Event, error: Option<&str>) {
        if let Some(agent) = event.agent.as_deref() {
            span.attributes
                .push(("gen_ai.agent.name".into(), agent.into()));
        }
        if let Some(step) = event.step_id.as_deref() {
            span.attributes
                .push(("agenthelm.step.id".into(), step.into()));
        }
        if let Some(error) = error {
            span.status = SpanStatus::Error(error.to_owned());
        }
        self.spans.push(span);
    }

    /// The run's span: from its start (or its earliest child) to its end (or its latest).
    fn root(&mut self) -> Span {
        let run = std::mem::take(&mut self.run);
        let start = self
            .spans
            .iter()
            .map(|s| s.start_unix_nano)
            .chain([nanos(run.started_ms.unwrap_or(self.first_ms))])
            .min()
            .unwrap_or(0);
        let end = self
            .spans
            .iter()
            .map(|s| s.end_unix_nano)
            .chain([nanos(run.finished_ms.unwrap_or(self.last_ms))])
            .max()
            .unwrap_or(start);
        let mut attributes: Vec<(String, AttributeValue)> = Vec::new();
        let name = match (run.run_id, run.agent) {
            (Some(id), _) => {
                attributes.push(("agenthelm.run.id".into(), id.into()));
                "agenthelm.run".to_owned()
            }
            (None, Some(agent)) => {
                attributes.push(("gen_ai.agent.name".into(), agent.into()));
                format!("invoke_agent {agent}")
            }
            (None, None) => "agenthelm.events".to_owned(),
        };
        attributes.extend(run.attributes);
        if let Some(success) = run.success {
            attributes.push(("agenthelm.run.success".into(), success.into()));
        }
        attributes.push((
            "agenthelm.usage.input_tokens".into(),
            run.input_tokens.into(),
        ));
        attributes.push((
            "agenthelm.usage.output_tokens".into(),
            run.output_tokens.into(),
        ));
        attributes.push(("agenthelm.cost_usd".into(), run.cost_usd.into()));
        if run.resumes > 0 {
            attributes.push(("agenthelm.run.resumed".into(), run.resumes.into()));
        }
        let status = match run.success {
            Some(false) => SpanStatus::Error(
                run.first_failure
                    .unwrap_or_else(|| "the run failed".to_owned()),
            ),
            _ => SpanStatus::Unset,
        };
        Span {
            trace_id: self.trace_id.clone(),
            span_id: self.root_id.clone(),
            parent_span_id: None,
            name,
            kind: SpanKind::Internal,
            start_unix_nano: start,
            end_unix_nano: end,
            attributes,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn endpoints_are_validated() {
        let ok = OtlpExporter::new(" https://collector.example:4318/otlp/ ").unwrap();
        assert_eq!(
            ok.traces_url(),
            "https://collector.example:4318/otlp/v1/traces"
        );
        for (bad, why) in [
            (
                "127.0.0.1:4318",
                "no scheme (did you mean `http://127.0.0.1:4318`?)",
            ),
            ("localhost:4318", "no scheme"),
            ("ftp://host", "scheme must be http or https, not `ftp`"),
            ("http://", "empty host"),
            ("http://host:4318?x=1", "query"),
            ("", "no scheme"),
        ] {
            let error = OtlpExporter::new(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.contains("OTLP endpoint"), "{error}");
        }
        // A password in the URL is masked in errors and Debug.
        let error = OtlpExporter::new("ftp://user:hunter2@host")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
        let exporter = OtlpExporter::new("http://user:hunter2@host").unwrap();
        assert!(!format!("{exporter:?}").contains("hunter2"));
    }

    #[test]
    fn the_environment_configures_the_exporter() {
        assert!(from_lookup(env(&[])).is_none());
        assert!(from_lookup(env(&[(ENDPOINT_ENV, "  ")])).is_none());
        let exporter = from_lookup(env(&[
            (ENDPOINT_ENV, "http://127.0.0.1:4318"),
            (HEADERS_ENV, "api-key=s3cr%3Dt%20x, x-tenant = team-a ,"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(exporter.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(exporter.headers["api-key"], "s3cr=t x");
        assert_eq!(exporter.headers["x-tenant"], "team-a");
        let debug = format!("{exporter:?}");
        assert!(
            debug.contains("api-key") && !debug.contains("s3cr"),
            "{debug}"
        );

        // The signal-specific URL wins and is used as it is.
        let exporter = from_lookup(env(&[
            (ENDPOINT_ENV, "http://127.0.0.1:4318"),
            (TRACES_ENDPOINT_ENV, "http://127.0.0.1:9999/custom/traces"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(exporter.traces_url(), "http://127.0.0.1:9999/custom/traces");

        let error = from_lookup(env(&[(ENDPOINT_ENV, "localhost:4318")]))
            .unwrap()
            .unwrap_err();
        assert!(matches!(error, OtlpError::InvalidEndpoint { .. }));
    }

    #[test]
    fn bad_headers_are_named_without_their_values() {
        for (list, expected) in [
            ("a=1,secretvalue", "OTLP header 2 in OTEL_EXPORTER_OTLP_HEADERS: expected key=value"),
            ("=secretvalue", "OTLP header 1 in OTEL_EXPORTER_OTLP_HEADERS: the key is empty"),
            ("key=secret%zz", "OTLP header `key` in OTEL_EXPORTER_OTLP_HEADERS: its value has a bad percent-escape"),
            ("bad key=secretvalue", "OTLP header `bad key`: not a valid header name"),
            ("key=secret%0Avalue", "OTLP header `key`: its value has characters a header cannot carry"),
        ] {
            let error = from_lookup(env(&[(ENDPOINT_ENV, "http://h"), (HEADERS_ENV, list)]))
                .unwrap()
                .unwrap_err()
                .to_string();
            assert_eq!(error, expected);
            assert!(!error.contains("secret"));
        }
    }

    fn event(run: Option<&str>, step: Option<&str>, ms: u64, kind: EventKind) -> Event {
        Event {
            timestamp_ms: 1_000 + ms,
            run_id: run.map(Arc::from),
            step_id: step.map(Arc::from),
            agent: Some(Arc::from("helper")),
            kind,
        }
    }

    #[test]
    fn events_without_a_run_make_an_agent_trace() {
        let call = EventKind::LlmCall {
            model: "local-model".into(),
            usage: crate::lm::TokenUsage::new(7, 3),
            cost_usd: None,
            latency_ms: 5.0,
            tool_calls: 0,
            error: Some("model overloaded".into()),
        };
        let spans = spans_of(&[event(None, None, 10, call)]);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "invoke_agent helper");
        assert_eq!(
            spans[1].parent_span_id.as_deref(),
            Some(spans[0].span_id.as_str())
        );
        assert_eq!(
            spans[1].status,
            SpanStatus::Error("model overloaded".into())
        );
        assert_eq!(
            spans[1].attribute("gen_ai.usage.input_tokens"),
            Some(&AttributeValue::Int(7))
        );
        assert_eq!(
            spans[1].attribute("gen_ai.provider.name"),
            None,
            "no provider prefix"
        );
        assert_eq!(spans[1].start_unix_nano, 1_005_000_000);
        assert_eq!(spans[1].end_unix_nano, 1_010_000_000);
        assert!(spans_of(&[]).is_empty());
    }

    #[test]
    fn resumed_steps_and_unfinished_compensations_are_told_apart() {
        let run = Some("r");
        let spans = spans_of(&[
            event(
                run,
                Some("a"),
                0,
                EventKind::StepStarted { direct_tool: None },
            ),
            // The process died; the resumed run starts `a` again.
            event(
                run,
                None,
                5,
                EventKind::RunResumed {
                    interrupted: vec!["a".into()],
                },
            ),
            event(
                run,
                Some("a"),
                6,
                EventKind::StepStarted { direct_tool: None },
            ),
            event(
                run,
                Some("a"),
                9,
                EventKind::StepFinished {
                    status: StepStatus::Completed,
                    result: None,
                    duration_ms: 3.0,
                    error: None,
                },
            ),
            event(
                run,
                Some("a"),
                10,
                EventKind::CompensationStarted {
                    action: 0,
                    tool: "undo".into(),
                    args: Value::Null,
                },
            ),
        ]);
        let steps: Vec<&Span> = spans.iter().filter(|s| s.name == "step a").collect();
        assert_eq!(steps.len(), 2);
        assert_ne!(steps[0].span_id, steps[1].span_id);
        assert_eq!(
            steps[0].attribute("agenthelm.step.status"),
            None,
            "the interrupted attempt"
        );
        assert_eq!(
            steps[1].attribute("agenthelm.step.attempt"),
            Some(&AttributeValue::Int(2))
        );
        assert_eq!(
            spans[0].attribute("agenthelm.run.resumed"),
            Some(&AttributeValue::Int(1))
        );
        let compensation = spans.iter().find(|s| s.name == "compensate undo").unwrap();
        assert_eq!(
            compensation.parent_span_id.as_deref(),
            Some(steps[1].span_id.as_str())
        );
        assert!(
            matches!(&compensation.status, SpanStatus::Error(m) if m.contains("no end on record"))
        );
    }

    #[test]
    fn json_mapping_uses_strings_for_64_bit_numbers() {
        let spans = spans_of(&[event(
            Some("r"),
            Some("a"),
            0,
            EventKind::StepStarted {
                direct_tool: Some("t".into()),
            },
        )]);
        let body = export_request(&spans);
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
        assert_eq!(span["startTimeUnixNano"], "1000000000");
        assert_eq!(span["kind"], 1);
        assert_eq!(
            span["attributes"][0],
            json!({"key": "agenthelm.step.id", "value": {"stringValue": "a"}})
        );
        assert_eq!(
            body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
            "agenthelm"
        );
        assert_eq!(
            serde_json::to_value(AttributeValue::from(u64::MAX)).unwrap(),
            json!({"intValue": i64::MAX.to_string()})
        );
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%20b%2Cc").as_deref(), Some("a b,c"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }
}
