//! Live export: the library's `tracing` spans of a run, through `LiveExport`'s layer and the
//! SDK's batch processor, arrive at a loopback collector as one trace with the run's tree.

mod otlp_collector;

use agenthelm::otlp::{LiveExport, OtlpExporter};
use agenthelm::prelude::*;
use otlp_collector::{Collector, Span};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

/// Create a file. Undone by `remove`.
#[tool(compensating_tool = "remove")]
fn create(name: String) -> String {
    format!("created {name}")
}

/// Remove a file.
#[tool]
fn remove(name: String) -> String {
    format!("removed {name}")
}

/// Always fails.
#[tool]
fn explode(token: String) -> Result<String, ToolError> {
    Err(ToolError::new(format!("exploded with {token}")))
}

fn find<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span `{name}` in {:#?}", names(spans)))
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn live_spans_of_a_failing_run_reach_the_collector() {
    let collector = Collector::start();
    let exporter = OtlpExporter::new(collector.url())
        .unwrap()
        .header("x-api-key", "live-secret")
        .unwrap();
    let live = LiveExport::new(&exporter).unwrap();
    let subscriber = tracing_subscriber::registry().with(live.layer());
    let _default = tracing::subscriber::set_default(subscriber);

    let scripted = ScriptedLm::new(vec![
        ScriptedReply::tool_call("create", json!({"name": "a.txt"})).with_usage(120, 30),
        ScriptedReply::text("made a.txt").with_usage(200, 10),
    ]);
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new(
            "maker",
            Lm::from_model(scripted),
            tools![create, remove, explode],
        ))
        .unwrap();
    let mut plan = Plan::new("make, then fail");
    plan.steps
        .push(PlanStep::new("make", "make a file").agent("maker"));
    plan.steps.push(
        PlanStep::new("boom", "explode")
            .agent("maker")
            .tool("explode")
            .args(json!({"token": "t"}))
            .depends_on(["make"]),
    );
    plan.approved = true;
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    // Nothing is sent before the batch is due; shutting down sends what is left.
    live.shutdown().await.unwrap();

    let requests = collector.requests();
    assert!(!requests.is_empty());
    assert!(requests
        .iter()
        .all(|r| r.header("x-api-key") == Some("live-secret")));
    let spans = collector.spans();
    let run = find(&spans, "invoke_workflow agenthelm");
    assert!(run.parent_span_id.is_empty(), "the run is the root");
    assert_eq!(run.str("agenthelm.run_id"), result.run_id.as_deref());
    assert!(
        spans.iter().all(|s| s.trace_id == run.trace_id),
        "one trace"
    );
    assert!(spans.iter().all(|s| s.service == "agenthelm"));

    let make = find(&spans, "invoke_agent maker");
    assert_eq!(make.parent_span_id, run.span_id);
    assert_eq!(make.str("gen_ai.agent.name"), Some("maker"));
    let chats: Vec<&Span> = spans.iter().filter(|s| s.name == "chat scripted").collect();
    assert_eq!(chats.len(), 2, "{:?}", names(&spans));
    assert!(chats.iter().all(|c| c.parent_span_id == make.span_id));
    assert_eq!(chats[0].str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(chats[0].int("gen_ai.usage.input_tokens"), Some(120));
    assert_eq!(chats[0].int("gen_ai.usage.output_tokens"), Some(30));
    let create = spans
        .iter()
        .find(|s| s.name == "execute_tool create")
        .unwrap();
    assert_eq!(create.parent_span_id, make.span_id);
    assert_eq!(create.str("gen_ai.tool.name"), Some("create"));
    assert_eq!(create.status_code, 0);
    assert_eq!(create.int("agenthelm.attempts"), Some(1));

    let explode = find(&spans, "execute_tool explode");
    assert_eq!(explode.status_code, 2, "error status");
    let boom = spans
        .iter()
        .find(|s| s.span_id == explode.parent_span_id)
        .expect("the failed call's step");
    assert_eq!(boom.parent_span_id, run.span_id);
    assert_eq!(boom.str("agenthelm.step_id"), Some("boom"));

    let rollback = find(&spans, "rollback");
    assert_eq!(rollback.parent_span_id, run.span_id);
    assert_eq!(rollback.int("agenthelm.rollback.steps"), Some(1));
    let remove = find(&spans, "execute_tool remove");
    assert_eq!(remove.parent_span_id, rollback.span_id);
}
