//! OpenTelemetry export over OTLP/HTTP+JSON, against a tiny collector on 127.0.0.1 that keeps
//! every request it gets and answers as each test tells it.

mod run_fixture;

use agenthelm::otlp::{spans_of, trace_id_of, OtlpError, OtlpExporter};
use agenthelm::store::StoredRun;
use agenthelm::{Event, EventKind, StepStatus};
use agenthelm_test_support::{MockServer, Reply, TempDir};
use run_fixture::{trip_run, PAYMENT_ERROR};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A collector on a free loopback port answering every request with `status` and a JSON `body`
/// (recording each request before it answers).
fn collector(status: u16, body: &str) -> MockServer {
    MockServer::always(Reply::raw(status, body).header("content-type", "application/json"))
}

async fn failed_trip() -> StoredRun {
    let dir = TempDir::new("otlp-trip");
    trip_run(&dir, true).await
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn spans_named<'a>(spans: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with(prefix))
        .collect()
}

fn step_span<'a>(spans: &'a [Value], step: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == format!("step {step}"))
        .unwrap_or_else(|| panic!("no span for step {step}"))
}

#[tokio::test]
async fn a_failed_run_is_exported_as_one_span_tree() {
    let run = failed_trip().await;
    let collector = collector(200, "{}");
    let exporter = OtlpExporter::new(collector.url())
        .unwrap()
        .header("x-api-key", "sekrit-value-123")
        .unwrap();
    let sent = exporter.export(&run.events).await.unwrap();

    let received = collector.received();
    let request = received.first().expect("a request arrived");
    assert_eq!(
        format!("{} {} {}", request.method, request.path, request.version),
        "POST /v1/traces HTTP/1.1"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-api-key"), Some("sekrit-value-123"));
    let body = request.json();
    let resource = &body["resourceSpans"][0];
    assert_eq!(
        attr(&resource["resource"], "service.name").unwrap()["stringValue"],
        "agenthelm"
    );
    let spans: Vec<Value> = resource["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(spans.len(), sent);

    // One trace, its id derived from the run id; well-formed ids and times.
    let trace_id = trace_id_of(&run.summary.run_id);
    for span in &spans {
        assert_eq!(span["traceId"], trace_id.as_str());
        let id = span["spanId"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        let start: u64 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u64 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start > 1_600_000_000_000_000_000 && start <= end, "{span}");
    }
    let ids: std::collections::HashSet<&str> = spans
        .iter()
        .map(|s| s["spanId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");

    // The tree: run → steps → calls; compensating calls under their compensation.
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s.get("parentSpanId").is_none())
        .collect();
    assert_eq!(roots.len(), 1);
    let root = roots[0];
    assert_eq!(root["name"], "agenthelm.run");
    assert_eq!(
        attr(root, "agenthelm.run.id").unwrap()["stringValue"],
        run.summary.run_id.as_str()
    );
    assert_eq!(root["status"]["code"], 2);
    assert!(root["status"]["message"]
        .as_str()
        .unwrap()
        .contains(PAYMENT_ERROR));
    // Five steps started (confirm was skipped and never ran).
    for step in [
        "find_flight",
        "find_hotel",
        "book_flight",
        "book_hotel",
        "pay",
    ] {
        let span = step_span(&spans, step);
        assert_eq!(span["parentSpanId"], root["spanId"], "{step}");
        assert_eq!(
            attr(span, "agenthelm.step.id").unwrap()["stringValue"],
            step
        );
    }
    assert!(spans.iter().all(|s| s["name"] != "step confirm"));
    let pay = step_span(&spans, "pay");
    assert_eq!(pay["status"]["code"], 2);
    assert_eq!(pay["status"]["message"], PAYMENT_ERROR);
    assert_eq!(
        attr(pay, "gen_ai.agent.name").unwrap()["stringValue"],
        "clerk"
    );

    // LLM calls: under their step, with model and token counts.
    let find_flight = step_span(&spans, "find_flight");
    let llm = spans_named(&spans, "chat ");
    assert_eq!(llm.len(), 2);
    let mut tokens = Vec::new();
    for span in &llm {
        assert_eq!(span["parentSpanId"], find_flight["spanId"]);
        assert_eq!(span["kind"], 3, "client span");
        assert_eq!(
            attr(span, "gen_ai.request.model").unwrap()["stringValue"],
            "scripted/trip-model"
        );
        assert_eq!(
            attr(span, "gen_ai.provider.name").unwrap()["stringValue"],
            "scripted"
        );
        tokens.push((
            attr(span, "gen_ai.usage.input_tokens").unwrap()["intValue"]
                .as_str()
                .unwrap()
                .to_owned(),
            attr(span, "gen_ai.usage.output_tokens").unwrap()["intValue"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
        assert!(
            attr(span, "agenthelm.cost_usd").unwrap()["doubleValue"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
    assert_eq!(
        tokens,
        [("420".into(), "18".into()), ("510".into(), "12".into())]
    );
    assert_eq!(
        attr(root, "agenthelm.usage.input_tokens").unwrap()["intValue"],
        "930"
    );

    // Tool calls: under their step, the failed one with its error; compensations under the
    // step they undo, each with its compensating call inside.
    let tools = spans_named(&spans, "execute_tool ");
    let execute: Vec<&&Value> = tools
        .iter()
        .filter(|s| attr(s, "agenthelm.tool.purpose").unwrap()["stringValue"] == "execute")
        .collect();
    assert_eq!(
        execute.len(),
        5,
        "search (agent), search, book, book, charge"
    );
    for span in &execute {
        let step = attr(span, "agenthelm.step.id").unwrap()["stringValue"]
            .as_str()
            .unwrap();
        assert_eq!(span["parentSpanId"], step_span(&spans, step)["spanId"]);
        assert_eq!(attr(span, "agenthelm.attempts").unwrap()["intValue"], "1");
    }
    let charge = execute
        .iter()
        .find(|s| s["name"] == "execute_tool charge")
        .unwrap();
    assert_eq!(charge["status"]["code"], 2);
    assert_eq!(charge["status"]["message"], PAYMENT_ERROR);
    let compensations = spans_named(&spans, "compensate ");
    assert_eq!(compensations.len(), 2);
    for comp in &compensations {
        let step = attr(comp, "agenthelm.step.id").unwrap()["stringValue"]
            .as_str()
            .unwrap();
        assert!(step == "book_flight" || step == "book_hotel");
        assert_eq!(comp["parentSpanId"], step_span(&spans, step)["spanId"]);
        assert_eq!(comp["status"], serde_json::json!({}), "succeeded");
        let calls: Vec<&&Value> = tools
            .iter()
            .filter(|t| t["parentSpanId"] == comp["spanId"])
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["name"], "execute_tool cancel");
    }
    assert_eq!(
        spans.len(),
        1 + 5 + 2 + 5 + 2 + 2,
        "run, steps, LLM calls, tool calls, compensations, compensating calls"
    );
}

#[tokio::test]
async fn the_same_run_gives_the_same_trace() {
    let run = failed_trip().await;
    let collector = collector(200, "");
    let exporter = OtlpExporter::new(&format!("{}/", collector.url())).unwrap();
    exporter.export(&run.events).await.unwrap();
    exporter.export(&run.events).await.unwrap();
    let received = collector.received();
    let first = received[0].json();
    let second = received[1].json();
    assert_eq!(first, second);
    assert_eq!(spans_of(&run.events), spans_of(&run.events));

    // Another run of the same plan is another trace.
    let other = failed_trip().await;
    assert_ne!(
        spans_of(&other.events)[0].trace_id,
        spans_of(&run.events)[0].trace_id
    );
}

#[tokio::test]
async fn a_collector_error_is_reported_with_its_status_and_body() {
    let run = failed_trip().await;
    let collector = collector(500, r#"{"message":"collector overloaded"}"#);
    let url = collector.url();
    let exporter = OtlpExporter::new(url)
        .unwrap()
        .header("authorization", "Bearer top-secret")
        .unwrap();
    let error = exporter.export(&run.events).await.unwrap_err();
    assert!(
        matches!(error, OtlpError::Rejected { status: 500, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("HTTP 500") && message.contains("collector overloaded"),
        "{message}"
    );
    assert!(message.contains(&format!("{url}/v1/traces")), "{message}");
    assert!(!message.contains("top-secret") && !format!("{error:?}").contains("top-secret"));
    assert!(!format!("{exporter:?}").contains("top-secret"));
}

#[tokio::test]
async fn a_collector_that_drops_spans_is_an_error() {
    let run = failed_trip().await;
    let collector = collector(
        200,
        r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"spans too old"}}"#,
    );
    let error = OtlpExporter::new(collector.url())
        .unwrap()
        .export(&run.events)
        .await
        .unwrap_err();
    assert!(
        matches!(error, OtlpError::PartiallyRejected { rejected: 3, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("spans too old"));
}

#[tokio::test]
async fn nobody_listening_is_a_clear_error() {
    let run = failed_trip().await;
    // A port that was free a moment ago and has no listener now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let error = OtlpExporter::new(&url)
        .unwrap()
        .export(&run.events)
        .await
        .unwrap_err();
    assert!(matches!(error, OtlpError::Unreachable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}/v1/traces")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("connect"), "{message}");
}

#[tokio::test]
async fn a_silent_collector_times_out() {
    let run = failed_trip().await;
    let collector = MockServer::always(Reply::silence());
    let exporter = OtlpExporter::new(collector.url())
        .unwrap()
        .timeout(Duration::from_millis(300));
    let error = exporter.export(&run.events).await.unwrap_err();
    assert!(
        matches!(error, OtlpError::Timeout { after, .. } if after == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(error.to_string().contains("timed out"));
    assert!(
        !collector.wait_for(1, Duration::from_secs(10)).is_empty(),
        "the request did arrive"
    );
}

fn event(step: Option<&str>, ms: u64, kind: EventKind) -> Event {
    Event {
        timestamp_ms: 1_780_000_000_000 + ms,
        run_id: Some(Arc::from("big-run")),
        step_id: step.map(Arc::from),
        agent: None,
        kind,
    }
}

#[tokio::test]
async fn a_large_run_goes_in_several_requests() {
    let mut events = vec![event(
        None,
        0,
        EventKind::RunStarted {
            goal: "big".into(),
            steps: 1500,
            budget: None,
        },
    )];
    for i in 0..1500 {
        let id = format!("s{i}");
        events.push(event(
            Some(&id),
            i,
            EventKind::StepStarted { direct_tool: None },
        ));
        events.push(event(
            Some(&id),
            i + 1,
            EventKind::StepFinished {
                status: StepStatus::Completed,
                result: None,
                result_call: None,
                duration_ms: 1.0,
                error: None,
            },
        ));
    }
    events.push(event(
        None,
        1501,
        EventKind::RunFinished {
            success: true,
            duration_ms: 1501.0,
        },
    ));
    let collector = collector(200, "{}");
    let sent = OtlpExporter::new(collector.url())
        .unwrap()
        .export(&events)
        .await
        .unwrap();
    assert_eq!(sent, 1501);
    let counts: Vec<usize> = collector
        .received()
        .iter()
        .map(|request| {
            request.json()["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(counts, [1000, 501]);

    // No events, no spans, no request (the URL has nobody behind it).
    assert_eq!(
        OtlpExporter::new("http://127.0.0.1:9")
            .unwrap()
            .export(&[])
            .await
            .unwrap(),
        0
    );
}
