//! A loopback OTLP/HTTP collector for tests: a [`MockServer`] that answers as told, and decodes
//! each trace export it received (protobuf or JSON, by content type) into flat spans.

#![allow(dead_code)] // each test file uses part of it

use agenthelm_test_support::{MockServer, Received, Reply};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use std::time::Duration;

/// An attribute value as the collector got it.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Other,
}

/// One span as the collector got it, ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP kind: 1 internal, 3 client.
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<(String, Attr)>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    /// The resource's `service.name`.
    pub service: String,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attributes
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Attr::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// The collector: a loopback server recording every request before it answers.
pub struct Collector {
    pub server: MockServer,
}

impl Collector {
    /// Answers every request 200 with an empty protobuf answer (a full success).
    pub fn start() -> Collector {
        Collector::answering(Reply::raw(200, "").header("content-type", "application/x-protobuf"))
    }

    /// Answers every request with `reply`.
    pub fn answering(reply: Reply) -> Collector {
        Collector {
            server: MockServer::always(reply),
        }
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.server.received()
    }

    /// Every span of every request received so far, in order.
    pub fn spans(&self) -> Vec<Span> {
        self.requests().iter().flat_map(decode).collect()
    }

    /// Waits until spans named `name` arrived (at most `limit`); all spans received by then.
    pub fn wait_for_span(&self, name: &str, limit: Duration) -> Vec<Span> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let spans = self.spans();
            if spans.iter().any(|s| s.name == name) || std::time::Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The spans of one export request; panics when it is not a trace export.
pub fn decode(request: &Received) -> Vec<Span> {
    assert_eq!(request.path, "/v1/traces", "traces go to /v1/traces");
    let content_type = request.header("content-type").unwrap_or("");
    let export: ExportTraceServiceRequest = match content_type {
        "application/x-protobuf" => {
            ExportTraceServiceRequest::decode(request.body.as_slice()).expect("OTLP protobuf")
        }
        "application/json" => serde_json::from_slice(&request.body).expect("OTLP JSON"),
        other => panic!("unexpected content type `{other}`"),
    };
    let mut spans = Vec::new();
    for resource in export.resource_spans {
        let service = resource
            .resource
            .map(|r| attributes(&r.attributes))
            .and_then(|attrs| {
                attrs.into_iter().find_map(|(k, v)| match v {
                    Attr::Str(s) if k == "service.name" => Some(s),
                    _ => None,
                })
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            let scope_name = scope.scope.map(|s| s.name).unwrap_or_default();
            for span in scope.spans {
                let status = span.status.unwrap_or_default();
                spans.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    status_code: status.code,
                    status_message: status.message,
                    service: service.clone(),
                    scope: scope_name.clone(),
                });
            }
        }
    }
    spans
}

fn attributes(list: &[KeyValue]) -> Vec<(String, Attr)> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => Attr::Str(s.clone()),
                Some(Any::IntValue(i)) => Attr::Int(*i),
                Some(Any::DoubleValue(d)) => Attr::Double(*d),
                Some(Any::BoolValue(b)) => Attr::Bool(*b),
                _ => Attr::Other,
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
