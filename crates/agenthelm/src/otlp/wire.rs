//! Spans as OTLP describes them, and their JSON encoding.

use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::Value;

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
pub(super) struct ExportBody<'a> {
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
    pub(super) fn new(spans: &'a [Span]) -> Self {
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

pub(super) fn span_id_of(trace_id: &str, key: &str) -> String {
    // FNV-1a, 64 bits, over the trace and the span's role in it.
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in trace_id.bytes().chain([b'/']).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{:016x}", hash.max(1))
}

pub(super) fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

/// Start of something that ended at `end_ms` after `duration_ms`.
pub(super) fn nanos_before(end_ms: u64, duration_ms: f64) -> u64 {
    let duration = if duration_ms.is_finite() && duration_ms > 0.0 {
        (duration_ms * 1e6) as u64
    } else {
        0
    };
    nanos(end_ms).saturating_sub(duration)
}
