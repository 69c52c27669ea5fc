//! A `tracing` subscriber sees a run as spans: run → step → model call / tool call, and the
//! rollback with its compensations, named and attributed as OpenTelemetry's GenAI conventions
//! say, with events for failures and decisions, and never an argument, a result or a secret.

use agenthelm::lm::{ModelPrice, Pricing};
use agenthelm::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const SECRET: &str = "sk-secret-PLANTED-0123456789";

/// A span or an event as the subscriber saw it: name, fields, and its parent span (an index
/// into the spans).
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    fields: BTreeMap<String, String>,
    parent: Option<usize>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Log {
    spans: Vec<Seen>,
    events: Vec<Seen>,
    /// Span ids are reused once a span closes: the open ones, to their index.
    open: HashMap<u64, usize>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .and_then(|p| seen.open.get(&p.id().into_u64()).copied());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let index = seen.spans.len();
        seen.spans.push(Seen {
            name: attrs.metadata().name().to_owned(),
            fields,
            parent,
        });
        seen.open.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(&index) = seen.open.get(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.spans[index].fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        let parent = ctx
            .event_span(event)
            .and_then(|span| seen.open.get(&span.id().into_u64()).copied());
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        seen.events.push(Seen {
            name: fields.get("message").cloned().unwrap_or_default(),
            fields,
            parent,
        });
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        self.0.lock().unwrap().open.remove(&id.into_u64());
    }
}

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

#[tokio::test]
async fn a_subscriber_sees_the_span_tree_of_a_failing_run_and_its_rollback() {
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    // The agent creates a file whose name is a secret; then a direct step fails.
    let scripted = ScriptedLm::new(vec![
        ScriptedReply::tool_call("create", json!({"name": SECRET})).with_usage(120, 30),
        ScriptedReply::text(format!("made {SECRET}")).with_usage(200, 10),
    ]);
    let lm = Lm::from_model(scripted)
        .with_pricing(Pricing::new().with("scripted", ModelPrice::new(1.0, 2.0)));
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new("maker", lm, tools![create, remove, explode]))
        .unwrap();
    let mut plan = Plan::new("make, then fail");
    plan.steps
        .push(PlanStep::new("make", "make a file").agent("maker"));
    plan.steps.push(
        PlanStep::new("boom", "explode")
            .agent("maker")
            .tool("explode")
            .args(json!({"token": SECRET}))
            .depends_on(["make"]),
    );
    plan.approved = true;
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    assert_eq!(
        plan.get_step("make").unwrap().status,
        StepStatus::Compensated
    );

    let seen = recorder.0.lock().unwrap();
    let spans = &seen.spans;
    let find = |name: &str, key: &str, value: &str| -> usize {
        spans
            .iter()
            .position(|s| s.name == name && s.field(key) == Some(value))
            .unwrap_or_else(|| panic!("no `{name}` span with {key} = {value}: {spans:#?}"))
    };
    let run = find("run", "gen_ai.operation.name", "invoke_workflow");
    assert_eq!(spans[run].parent, None);
    assert_eq!(
        spans[run].field("agenthelm.run_id"),
        result.run_id.as_deref()
    );

    let make = find("step", "agenthelm.step_id", "make");
    assert_eq!(spans[make].parent, Some(run));
    assert_eq!(spans[make].field("otel.name"), Some("invoke_agent maker"));
    assert_eq!(spans[make].field("gen_ai.agent.name"), Some("maker"));

    let chats: Vec<&Seen> = spans.iter().filter(|s| s.name == "chat").collect();
    assert_eq!(chats.len(), 2, "{chats:#?}");
    let chat = chats[0];
    assert_eq!(chat.parent, Some(make));
    assert_eq!(chat.field("gen_ai.operation.name"), Some("chat"));
    assert_eq!(chat.field("gen_ai.request.model"), Some("scripted"));
    assert_eq!(chat.field("gen_ai.usage.input_tokens"), Some("120"));
    assert_eq!(chat.field("gen_ai.usage.output_tokens"), Some("30"));
    assert!(chat.field("agenthelm.cost_usd").is_some(), "{chat:?}");

    let created = find("execute_tool", "gen_ai.tool.name", "create");
    assert_eq!(spans[created].parent, Some(make));
    assert_eq!(spans[created].field("agenthelm.purpose"), Some("execute"));
    assert_eq!(
        spans[created].field("otel.name"),
        Some("execute_tool create")
    );

    let boom = find("step", "agenthelm.step_id", "boom");
    assert_eq!(spans[boom].parent, Some(run));
    let exploded = find("execute_tool", "gen_ai.tool.name", "explode");
    assert_eq!(spans[exploded].parent, Some(boom));
    assert_eq!(spans[exploded].field("error.type"), Some("failed"));
    assert_eq!(spans[exploded].field("otel.status_code"), Some("ERROR"));

    let rollback = find("rollback", "agenthelm.rollback.steps", "1");
    assert_eq!(spans[rollback].parent, Some(run));
    let removed = find("execute_tool", "gen_ai.tool.name", "remove");
    assert_eq!(spans[removed].parent, Some(rollback));
    assert_eq!(
        spans[removed].field("agenthelm.purpose"),
        Some("compensate")
    );

    let events = &seen.events;
    let failed = events
        .iter()
        .find(|e| e.name == "step failed")
        .expect("a step failed event");
    assert_eq!(failed.parent, Some(boom));
    assert!(events
        .iter()
        .any(|e| e.name == "rolling back completed work"));

    // Nothing the subscriber saw holds an argument, a result or the secret.
    for seen in spans.iter().chain(events.iter()) {
        for value in seen.fields.values() {
            assert!(!value.contains(SECRET), "{seen:?}");
        }
    }
}
