//! OpenTelemetry export through the SDK's OTLP/HTTP exporter, against a loopback collector that
//! decodes what it receives (protobuf, and JSON when asked) and answers as each test tells it.

mod otlp_collector;
mod run_fixture;

use agenthelm::otlp::{spans_of, trace_id_of, OtlpError, OtlpExporter, Protocol};
use agenthelm::store::StoredRun;
use agenthelm::{Event, EventKind, StepStatus};
use agenthelm_test_support::{MockServer, Reply, TempDir};
use otlp_collector::{decode, Attr, Collector, Span};
use run_fixture::{trip_run, PAYMENT_ERROR};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

async fn failed_trip() -> StoredRun {
    let dir = TempDir::new("otlp-trip");
    trip_run(&dir, true).await
}

fn spans_named<'a>(spans: &'a [Span], prefix: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .collect()
}

fn step_span<'a>(spans: &'a [Span], step: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == format!("step {step}"))
        .unwrap_or_else(|| panic!("no span for step {step}"))
}

#[tokio::test]
async fn a_failed_run_is_exported_as_one_span_tree() {
    let run = failed_trip().await;
    let collector = Collector::start();
    let exporter = OtlpExporter::new(collector.url())
        .unwrap()
        .header("x-api-key", "sekrit-value-123")
        .unwrap();
    let sent = exporter.export(&run.events).await.unwrap();

    let received = collector.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(
        format!("{} {} {}", request.method, request.path, request.version),
        "POST /v1/traces HTTP/1.1"
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf"),
        "protobuf unless asked otherwise"
    );
    assert_eq!(request.header("x-api-key"), Some("sekrit-value-123"));
    let spans = decode(request);
    assert_eq!(spans.len(), sent);
    assert!(spans
        .iter()
        .all(|s| s.service == "agenthelm" && s.scope == "agenthelm"));

    // One trace, its id derived from the run id; well-formed ids and times.
    let trace_id = trace_id_of(&run.summary.run_id).to_string();
    for span in &spans {
        assert_eq!(span.trace_id, trace_id);
        assert_eq!(span.span_id.len(), 16);
        assert!(
            span.start_unix_nano > 1_600_000_000_000_000_000
                && span.start_unix_nano <= span.end_unix_nano,
            "{span:?}"
        );
    }
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");

    // The tree: run → steps → calls; compensating calls under their compensation.
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1);
    let root = roots[0];
    assert_eq!(root.name, "agenthelm.run");
    assert_eq!(
        root.str("agenthelm.run.id"),
        Some(run.summary.run_id.as_str())
    );
    assert_eq!(root.status_code, 2);
    assert!(root.status_message.contains(PAYMENT_ERROR));
    // Five steps started (confirm was skipped and never ran).
    for step in [
        "find_flight",
        "find_hotel",
        "book_flight",
        "book_hotel",
        "pay",
    ] {
        let span = step_span(&spans, step);
        assert_eq!(span.parent_span_id, root.span_id, "{step}");
        assert_eq!(span.str("agenthelm.step.id"), Some(step));
    }
    assert!(spans.iter().all(|s| s.name != "step confirm"));
    let pay = step_span(&spans, "pay");
    assert_eq!(pay.status_code, 2);
    assert_eq!(pay.status_message, PAYMENT_ERROR);
    assert_eq!(pay.str("gen_ai.agent.name"), Some("clerk"));
    assert_eq!(pay.str("agenthelm.step.status"), Some("failed"));

    // LLM calls: under their step, client spans with model and token counts.
    let find_flight = step_span(&spans, "find_flight");
    let llm = spans_named(&spans, "chat ");
    assert_eq!(llm.len(), 2);
    let mut tokens = Vec::new();
    for span in &llm {
        assert_eq!(span.parent_span_id, find_flight.span_id);
        assert_eq!(span.kind, 3, "client span");
        assert_eq!(span.str("gen_ai.operation.name"), Some("chat"));
        assert_eq!(
            span.str("gen_ai.request.model"),
            Some("scripted/trip-model")
        );
        assert_eq!(span.str("gen_ai.provider.name"), Some("scripted"));
        tokens.push((
            span.int("gen_ai.usage.input_tokens").unwrap(),
            span.int("gen_ai.usage.output_tokens").unwrap(),
        ));
        assert!(matches!(span.attr("agenthelm.cost_usd"), Some(Attr::Double(c)) if *c > 0.0));
    }
    assert_eq!(tokens, [(420, 18), (510, 12)]);
    assert_eq!(root.int("agenthelm.usage.input_tokens"), Some(930));

    // Tool calls: under their step, the failed one with its error; compensations under the
    // step they undo, each with its compensating call inside.
    let tools = spans_named(&spans, "execute_tool ");
    let execute: Vec<&&Span> = tools
        .iter()
        .filter(|s| s.str("agenthelm.tool.purpose") == Some("execute"))
        .collect();
    assert_eq!(
        execute.len(),
        5,
        "search (agent), search, book, book, charge"
    );
    for span in &execute {
        let step = span.str("agenthelm.step.id").unwrap();
        assert_eq!(span.parent_span_id, step_span(&spans, step).span_id);
        assert_eq!(span.int("agenthelm.attempts"), Some(1));
        assert!(span.str("gen_ai.tool.name").is_some());
    }
    let charge = execute
        .iter()
        .find(|s| s.name == "execute_tool charge")
        .unwrap();
    assert_eq!(charge.status_code, 2);
    assert_eq!(charge.status_message, PAYMENT_ERROR);
    let compensations = spans_named(&spans, "compensate ");
    assert_eq!(compensations.len(), 2);
    for comp in &compensations {
        let step = comp.str("agenthelm.step.id").unwrap();
        assert!(step == "book_flight" || step == "book_hotel");
        assert_eq!(comp.parent_span_id, step_span(&spans, step).span_id);
        assert_eq!(comp.status_code, 0, "succeeded");
        assert_eq!(
            comp.attr("agenthelm.compensation.success"),
            Some(&Attr::Bool(true))
        );
        let calls: Vec<&&Span> = tools
            .iter()
            .filter(|t| t.parent_span_id == comp.span_id)
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].name, "execute_tool cancel");
        assert_eq!(
            step_span(&spans, step).str("agenthelm.step.status"),
            Some("compensated")
        );
    }
    assert_eq!(
        spans.len(),
        1 + 5 + 2 + 5 + 2 + 2,
        "run, steps, LLM calls, tool calls, compensations, compensating calls"
    );
}

#[tokio::test]
async fn the_json_protocol_sends_the_same_spans() {
    let run = failed_trip().await;
    let collector =
        Collector::answering(Reply::raw(200, "{}").header("content-type", "application/json"));
    let exporter = OtlpExporter::new(&format!("{}/", collector.url())).unwrap();
    exporter.export(&run.events).await.unwrap();
    exporter
        .clone()
        .protocol(Protocol::HttpJson)
        .export(&run.events)
        .await
        .unwrap();
    let received = collector.requests();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].header("content-type"), Some("application/json"));
    assert!(received[1].text().contains("\"resourceSpans\""));
    let key = |s: &Span| {
        (
            s.span_id.clone(),
            s.parent_span_id.clone(),
            s.name.clone(),
            s.status_code,
        )
    };
    let proto: Vec<_> = decode(&received[0]).iter().map(key).collect();
    let json: Vec<_> = decode(&received[1]).iter().map(key).collect();
    assert_eq!(proto, json);
    assert_eq!(spans_of(&run.events), spans_of(&run.events), "pure");

    // Another run of the same plan is another trace.
    let other = failed_trip().await;
    assert_ne!(
        spans_of(&other.events)[0].span_context.trace_id(),
        spans_of(&run.events)[0].span_context.trace_id()
    );
}

#[tokio::test]
async fn a_collector_error_is_reported_with_its_status_and_body() {
    let run = failed_trip().await;
    let collector = Collector::answering(
        Reply::raw(400, r#"{"message":"bad spans"}"#).header("content-type", "application/json"),
    );
    let url = collector.url();
    let exporter = OtlpExporter::new(url)
        .unwrap()
        .header("authorization", "Bearer top-secret")
        .unwrap();
    let error = exporter.export(&run.events).await.unwrap_err();
    assert!(
        matches!(error, OtlpError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("HTTP 400") && message.contains("bad spans"),
        "{message}"
    );
    assert!(message.contains(&format!("{url}/v1/traces")), "{message}");
    assert!(!message.contains("top-secret") && !format!("{error:?}").contains("top-secret"));
    assert!(!format!("{exporter:?}").contains("top-secret"));
    assert_eq!(collector.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn a_collector_that_drops_spans_is_an_error() {
    let run = failed_trip().await;
    let collector = Collector::answering(
        Reply::raw(
            200,
            r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"spans too old"}}"#,
        )
        .header("content-type", "application/json"),
    );
    let error = OtlpExporter::new(collector.url())
        .unwrap()
        .protocol(Protocol::HttpJson)
        .export(&run.events)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            OtlpError::PartiallyRejected {
                rejected: 3,
                sent: 17,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("spans too old"));
}

#[tokio::test]
async fn nobody_listening_is_a_clear_error_within_the_timeout() {
    let run = failed_trip().await;
    // A port that was free a moment ago and has no listener now.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let error = OtlpExporter::new(&url)
        .unwrap()
        .timeout(Duration::from_secs(3))
        .export(&run.events)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
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
    let started = Instant::now();
    let error = exporter.export(&run.events).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
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
    let collector = Collector::start();
    let sent = OtlpExporter::new(collector.url())
        .unwrap()
        .export(&events)
        .await
        .unwrap();
    assert_eq!(sent, 1501);
    let counts: Vec<usize> = collector
        .requests()
        .iter()
        .map(|r| decode(r).len())
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
