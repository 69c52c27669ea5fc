//! A real run to draw and export: a small trip-booking plan executed by the orchestrator into a
//! JSON-lines store and loaded back. Two branches run in parallel, one step asks a scripted
//! model (so there are LLM calls with tokens and cost), tools take a few milliseconds so the
//! timeline has shape, and with `fail` the payment step fails, which rolls back both bookings
//! and skips the last step.
#![allow(dead_code)]

use agenthelm::prelude::*;
use agenthelm::store::{JsonlStore, RunStore, StoredRun};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn slow_tool(name: &'static str, millis: u64) -> FnTool {
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    FnTool::new(
        name,
        format!("{name} something"),
        schema,
        move |args: Value, _call| async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok(json!(format!(
                "{name}: {}",
                args["name"].as_str().unwrap_or_default()
            )))
        },
    )
    .unwrap()
}

/// The error the payment step fails with: hostile on purpose, to check escaping end to end.
pub const PAYMENT_ERROR: &str = r#"card <declined> & "blocked" by 'bank'"#;

/// Runs the trip plan into a store in `dir` and returns the run as the store keeps it.
pub async fn trip_run(dir: &Path, fail: bool) -> StoredRun {
    let charge = {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        FnTool::new(
            "charge",
            "Charge the card",
            schema,
            move |_args: Value, _call| async move {
                tokio::time::sleep(Duration::from_millis(15)).await;
                if fail {
                    Err(ToolError::new(PAYMENT_ERROR))
                } else {
                    Ok(json!("charged"))
                }
            },
        )
        .unwrap()
    };
    let tools = ToolSet::new()
        .with(slow_tool("search", 40))
        .with(slow_tool("book", 30).compensating_tool("cancel"))
        .with(slow_tool("cancel", 10))
        .with(slow_tool("email", 5))
        .with(charge);
    let lm = Lm::from_model(
        ScriptedLm::new(vec![
            ScriptedReply::tool_call("search", json!({"name": "flights to Lisbon"}))
                .with_usage(420, 18)
                .with_cost(0.00021)
                .with_delay(Duration::from_millis(25)),
            ScriptedReply::text("TAP 1234 at 09:05")
                .with_usage(510, 12)
                .with_cost(0.00024)
                .with_delay(Duration::from_millis(20)),
        ])
        .with_model_id("scripted/trip-model"),
    );
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new("researcher", lm, tools.clone()))
        .unwrap();
    registry
        .register(ToolAgent::new(
            "clerk",
            Lm::from_model(ScriptedLm::new(vec![])),
            tools,
        ))
        .unwrap();
    let store = JsonlStore::open(dir).unwrap();
    let orchestrator = Orchestrator::new(registry).store(store);

    let direct = |id: &str, agent: &str, tool: &str, name: &str| {
        PlanStep::new(id, format!("{tool} {name}"))
            .agent(agent)
            .tool(tool)
            .args(json!({ "name": name }))
    };
    let mut plan = Plan::new("Book a trip to Lisbon <3 & \"enjoy\"");
    plan.steps = vec![
        PlanStep::new("find_flight", "Find a morning flight to Lisbon").agent("researcher"),
        direct("find_hotel", "clerk", "search", "hotels in Alfama"),
        direct("book_flight", "clerk", "book", "TAP 1234").depends_on(["find_flight"]),
        direct("book_hotel", "clerk", "book", "Hotel Alfama").depends_on(["find_hotel"]),
        direct("pay", "clerk", "charge", "visa").depends_on(["book_flight", "book_hotel"]),
        direct("confirm", "clerk", "email", "traveller").depends_on(["pay"]),
    ];
    plan.approved = true;
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(result.success, !fail, "{:?}", result.error);
    let run_id = result.run_id.expect("a stored run has an id");
    JsonlStore::open(dir).unwrap().load_run(&run_id).unwrap()
}

/// A plan of `layers` × `width` steps, each depending on one or two steps of the layer before,
/// every step a direct tool call of a few milliseconds; with `fail`, one step in the middle
/// fails, which rolls back what completed and skips the rest.
pub async fn wide_run(dir: &Path, layers: usize, width: usize, fail: bool) -> StoredRun {
    let schema =
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let failing = (layers / 2, width / 2);
    let work = FnTool::new(
        "work",
        "Do a little work",
        schema.clone(),
        move |args: Value, _call| async move {
            let n = args["n"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(1 + n % 7)).await;
            if fail && n == (failing.0 * 1000 + failing.1) as u64 {
                Err(ToolError::new("the disk <is> full"))
            } else {
                Ok(json!(n))
            }
        },
    )
    .unwrap()
    .compensating_tool("unwork");
    let unwork = FnTool::new(
        "unwork",
        "Undo the work",
        schema,
        |_args: Value, _call| async { Ok(json!("undone")) },
    )
    .unwrap();
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new(
            "worker",
            Lm::from_model(ScriptedLm::new(vec![])),
            ToolSet::new().with(work).with(unwork),
        ))
        .unwrap();
    let orchestrator = Orchestrator::new(registry)
        .max_concurrency(16)
        .store(JsonlStore::open(dir).unwrap());
    let id = |layer: usize, i: usize| format!("l{layer:02}-s{i:02}");
    let mut plan = Plan::new(format!("{} steps in {layers} layers", layers * width));
    for layer in 0..layers {
        for i in 0..width {
            let mut step = PlanStep::new(id(layer, i), format!("work item {layer}/{i}"))
                .agent("worker")
                .tool("work")
                .args(json!({ "n": layer * 1000 + i }));
            if layer > 0 {
                let mut deps = vec![id(layer - 1, i)];
                if i % 3 == 0 {
                    deps.push(id(layer - 1, (i + 7) % width));
                }
                step = step.depends_on(deps);
            }
            plan.steps.push(step);
        }
    }
    plan.approved = true;
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(result.success, !fail);
    JsonlStore::open(dir)
        .unwrap()
        .load_run(&result.run_id.unwrap())
        .unwrap()
}
