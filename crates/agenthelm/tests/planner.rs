//! PlannerAgent against scripted models: valid plans, wrapped plans, repairs and refusals.

use agenthelm::lm::{ModelPrice, Pricing, ResponseFormat, Role};
use agenthelm::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;

/// Search the web.
#[tool]
fn search(query: String) -> String {
    format!("results for {query}")
}

/// Write a file.
#[tool(compensating_tool = "delete_file")]
fn write_file(path: String, content: String) -> String {
    format!("{path}: {} bytes", content.len())
}

/// Delete a file.
#[tool]
fn delete_file(path: String) -> String {
    format!("deleted {path}")
}

fn good_plan() -> Value {
    json!({
        "goal": "Research Rust and write a summary",
        "reasoning": "Search two topics at once, then write.",
        "steps": [
            {"id": "search_a", "description": "Search Rust", "tool_name": "search",
             "args": {"query": "rust"}, "depends_on": []},
            {"id": "search_b", "description": "Search Tokio", "tool_name": "search",
             "args": {"query": "tokio"}, "depends_on": []},
            {"id": "write", "description": "Write the summary", "tool_name": "write_file",
             "args": {"path": "summary.md", "content": "{{steps.search_a.result}}"},
             "depends_on": ["search_a", "search_b"]}
        ]
    })
}

fn scripted(replies: Vec<ScriptedReply>) -> (Arc<ScriptedLm>, Lm) {
    let model = Arc::new(ScriptedLm::new(replies).with_model_id("acme/planner-1"));
    let lm = Lm::from_arc(model.clone())
        .with_pricing(Pricing::new().with("acme/planner-1", ModelPrice::new(1.0, 2.0)));
    (model, lm)
}

fn planner(lm: Lm) -> PlannerAgent {
    PlannerAgent::new("planner", lm, tools![search, write_file, delete_file])
}

fn ids(plan: &Plan) -> Vec<&str> {
    plan.steps.iter().map(|s| s.id.as_str()).collect()
}

/// The last user message of the `n`-th request.
fn last_user_message(model: &ScriptedLm, n: usize) -> String {
    let request = &model.requests()[n];
    let message = request.messages.last().unwrap();
    assert_eq!(message.role, Role::User);
    message.content.clone()
}

#[tokio::test]
async fn a_good_plan_is_returned_unapproved() {
    let (model, lm) = scripted(vec![
        ScriptedReply::text(good_plan().to_string()).with_usage(1_000, 500)
    ]);
    let plan = planner(lm)
        .role("Plans research")
        .plan("Research Rust and write a summary")
        .await
        .unwrap();
    assert_eq!(ids(&plan), ["search_a", "search_b", "write"]);
    assert!(!plan.approved);
    assert_eq!(plan.steps[2].depends_on, ["search_a", "search_b"]);
    assert!(plan.steps.iter().all(|s| s.status == StepStatus::Pending));

    // One call, with structured output whose schema only allows the given tools.
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let Some(ResponseFormat::JsonSchema { name, schema }) = &requests[0].response_format else {
        panic!(
            "no structured output requested: {:?}",
            requests[0].response_format
        );
    };
    assert_eq!(name, "plan");
    assert_eq!(
        schema["properties"]["steps"]["items"]["properties"]["tool_name"]["enum"],
        json!(["search", "write_file", "delete_file"])
    );
    let system = &requests[0].messages[0].content;
    assert!(system.contains("Plans research"), "{system}");
    assert!(system.contains("- search: Search the web."), "{system}");
    assert!(requests[0].messages[1].content.contains("Research Rust"));
}

#[tokio::test]
async fn a_plan_in_a_fence_with_prose_is_read() {
    let reply = format!(
        "Sure! Here is the plan:\n\n```json\n{}\n```\n\nLet me know if you want changes.",
        serde_json::to_string_pretty(&good_plan()).unwrap()
    );
    let (_, lm) = scripted(vec![ScriptedReply::text(reply)]);
    let plan = planner(lm).plan("goal").await.unwrap();
    assert_eq!(ids(&plan), ["search_a", "search_b", "write"]);

    // Prose around a bare object works too.
    let reply = format!("My plan: {} Hope it helps.", good_plan());
    let (_, lm) = scripted(vec![ScriptedReply::text(reply)]);
    assert_eq!(planner(lm).plan("goal").await.unwrap().steps.len(), 3);
}

#[tokio::test]
async fn a_cyclic_plan_is_sent_back_and_repaired() {
    let mut cyclic = good_plan();
    cyclic["steps"][0]["depends_on"] = json!(["write"]);
    let (model, lm) = scripted(vec![
        ScriptedReply::text(cyclic.to_string()).with_usage(100, 50),
        ScriptedReply::text(good_plan().to_string()).with_usage(200, 50),
    ]);
    let (plan, report) = planner(lm).plan_traced("goal").await;
    let plan = plan.unwrap();
    assert_eq!(plan.steps[0].depends_on, Vec::<String>::new());

    let repair = last_user_message(&model, 1);
    assert!(
        repair.contains("dependency cycle: search_a -> write -> search_a"),
        "{repair}"
    );
    // The model sees its own invalid reply before the list of problems.
    let second = &model.requests()[1];
    assert_eq!(second.messages[2].role, Role::Assistant);
    assert_eq!(second.messages[2].content, cyclic.to_string());

    // Both calls are accounted for: events with model, tokens, cost and latency.
    assert_eq!(report.iterations, 2);
    assert_eq!(report.token_usage, TokenUsage::new(300, 100));
    assert!((report.total_cost_usd - 500e-6).abs() < 1e-12);
    let calls: Vec<(String, TokenUsage, Option<f64>)> = report
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LlmCall {
                model,
                usage,
                cost_usd,
                latency_ms,
                ..
            } => {
                assert!(*latency_ms >= 0.0);
                Some((model.clone(), *usage, *cost_usd))
            }
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "acme/planner-1");
    assert_eq!(calls[0].1, TokenUsage::new(100, 50));
    assert!(report
        .events
        .iter()
        .all(|e| e.agent.as_deref() == Some("planner")));
}

#[tokio::test]
async fn an_unknown_tool_is_repaired() {
    let mut bad = good_plan();
    bad["steps"][1]["tool_name"] = json!("rm_rf");
    let (model, lm) = scripted(vec![
        ScriptedReply::text(bad.to_string()),
        ScriptedReply::text(good_plan().to_string()),
    ]);
    let plan = planner(lm).plan("goal").await.unwrap();
    assert_eq!(plan.steps[1].tool_name.as_deref(), Some("search"));
    let repair = last_user_message(&model, 1);
    assert!(
        repair.contains(
            "step `search_b`: tool `rm_rf` is not available (available tools: search, write_file, delete_file)"
        ),
        "{repair}"
    );
}

#[tokio::test]
async fn a_plan_that_keeps_an_unknown_tool_is_refused() {
    let mut bad = good_plan();
    bad["steps"][1]["tool_name"] = json!("rm_rf");
    bad["steps"][2]["compensate_tool"] = json!("format_disk");
    let replies = (0..3)
        .map(|_| ScriptedReply::text(bad.to_string()))
        .collect();
    let (model, lm) = scripted(replies);
    let error = planner(lm).plan("goal").await.unwrap_err();
    match &error {
        PlannerError::Invalid {
            attempts, problems, ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(problems.len(), 2, "{problems:?}");
            assert!(problems[0].contains("`rm_rf`"));
            assert!(problems[1].contains("compensating tool `format_disk`"));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(error.to_string().contains("rm_rf"), "{error}");
    assert_eq!(model.remaining(), 0);
}

#[tokio::test]
async fn garbage_until_it_gives_up() {
    let replies = [
        "I think you should search.",
        "```\nnot json\n```",
        "{\"goal\": ",
    ]
    .into_iter()
    .map(ScriptedReply::text)
    .collect();
    let (model, lm) = scripted(replies);
    let error = planner(lm).max_repairs(2).plan("goal").await.unwrap_err();
    let PlannerError::Invalid {
        attempts, problems, ..
    } = &error
    else {
        panic!("expected Invalid, got {error:?}");
    };
    assert_eq!(*attempts, 3);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("no JSON object"), "{problems:?}");
    assert_eq!(model.requests().len(), 3);
    assert!(last_user_message(&model, 1).contains("no JSON object"));

    // With no repairs allowed, one bad reply is the end.
    let (model, lm) = scripted(vec![ScriptedReply::text("[1, 2]")]);
    let error = planner(lm).max_repairs(0).plan("goal").await.unwrap_err();
    assert!(
        matches!(error, PlannerError::Invalid { attempts: 1, .. }),
        "{error:?}"
    );
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn wrong_json_shape_is_named_by_field() {
    let mut bad = good_plan();
    bad["steps"][0]["depends_on"] = json!("search_b");
    let (model, lm) = scripted(vec![
        ScriptedReply::text(bad.to_string()),
        ScriptedReply::text(good_plan().to_string()),
    ]);
    planner(lm).plan("goal").await.unwrap();
    let repair = last_user_message(&model, 1);
    assert!(repair.contains("steps[0].depends_on"), "{repair}");
}

#[tokio::test]
async fn arguments_are_checked_against_tool_schemas() {
    let mut bad = good_plan();
    bad["steps"][0]["args"] = json!({"q": "rust"});
    bad["steps"][2]["args"] = json!({"path": 7, "content": "{{steps.search_a.result}}"});
    let (model, lm) = scripted(vec![
        ScriptedReply::text(bad.to_string()),
        ScriptedReply::text(good_plan().to_string()),
    ]);
    let plan = planner(lm).plan("goal").await.unwrap();
    // A `{{steps.<id>.result}}` reference passes: it is filled in at run time.
    assert_eq!(plan.steps[2].args["content"], "{{steps.search_a.result}}");
    let repair = last_user_message(&model, 1);
    assert!(
        repair.contains(
            "step `search_a`: arguments for `search`: `query`: required field is missing"
        ),
        "{repair}"
    );
    assert!(
        repair.contains("step `write`: arguments for `write_file`: `path`"),
        "{repair}"
    );
    assert!(!repair.contains("`content`"), "{repair}");
}

#[tokio::test]
async fn a_reference_to_a_step_not_depended_on_is_a_problem() {
    let mut bad = good_plan();
    bad["steps"][2]["depends_on"] = json!(["search_b"]);
    let (model, lm) = scripted(vec![
        ScriptedReply::text(bad.to_string()),
        ScriptedReply::text(good_plan().to_string()),
    ]);
    planner(lm).plan("goal").await.unwrap();
    let repair = last_user_message(&model, 1);
    assert!(
        repair.contains("step `write` uses the result of `search_a`, but does not depend on it"),
        "{repair}"
    );
}

#[tokio::test]
async fn too_many_steps_and_no_steps_are_problems() {
    let empty = json!({"goal": "g", "reasoning": "", "steps": []});
    let (model, lm) = scripted(vec![
        ScriptedReply::text(empty.to_string()),
        ScriptedReply::text(good_plan().to_string()),
    ]);
    let error = planner(lm)
        .max_steps(2)
        .max_repairs(1)
        .plan("goal")
        .await
        .unwrap_err();
    assert!(last_user_message(&model, 1).contains("the plan has no steps"));
    assert!(
        error
            .to_string()
            .contains("the plan has 3 steps; at most 2 are allowed"),
        "{error}"
    );
}

#[tokio::test]
async fn steps_are_checked_against_the_agents() {
    let worker_lm = Lm::from_model(ScriptedLm::new(vec![]));
    let mut registry = AgentRegistry::new();
    registry
        .register(
            ToolAgent::new("researcher", worker_lm.clone(), tools![search]).role("Finds facts"),
        )
        .unwrap();
    registry
        .register(ToolAgent::new(
            "writer",
            worker_lm,
            tools![write_file, delete_file],
        ))
        .unwrap();

    let mut bad = good_plan();
    bad["steps"][0]["agent_name"] = json!("writer"); // has no `search`
    bad["steps"][1]["agent_name"] = json!("ghost");
    let mut good = good_plan();
    for (i, agent) in ["researcher", "researcher", "writer"].iter().enumerate() {
        good["steps"][i]["agent_name"] = json!(agent);
    }
    let (model, lm) = scripted(vec![
        ScriptedReply::text(bad.to_string()),
        ScriptedReply::text(good.to_string()),
    ]);
    let plan = planner(lm).agents(&registry).plan("goal").await.unwrap();
    assert_eq!(plan.steps[0].agent_name.as_deref(), Some("researcher"));

    let system = &model.requests()[0].messages[0].content;
    assert!(
        system.contains("- researcher: Finds facts (tools: search)"),
        "{system}"
    );
    let repair = last_user_message(&model, 1);
    assert!(
        repair.contains("step `search_a`: agent `writer` does not have tool `search`"),
        "{repair}"
    );
    assert!(
        repair.contains("step `search_b` names agent `ghost`, which does not exist (agents: researcher, writer)"),
        "{repair}"
    );

    // Without a registry, naming an agent is a problem too.
    let (_, lm) = scripted(vec![ScriptedReply::text(good.to_string())]);
    let error = planner(lm).max_repairs(0).plan("goal").await.unwrap_err();
    assert!(
        error.to_string().contains("no agents are available"),
        "{error}"
    );
}

#[tokio::test]
async fn run_state_from_the_model_is_reset() {
    let mut plan = good_plan();
    plan["approved"] = json!(true);
    plan["steps"][0]["status"] = json!("completed");
    plan["steps"][0]["result"] = json!("made up");
    plan["goal"] = json!("");
    plan["steps"][0]["agent_name"] = json!("");
    plan["steps"][1]["compensate_tool"] = json!(" ");
    let (_, lm) = scripted(vec![ScriptedReply::text(plan.to_string())]);
    let plan = planner(lm).plan("the real goal").await.unwrap();
    assert!(!plan.approved);
    assert_eq!(plan.goal, "the real goal");
    assert_eq!(plan.steps[0].status, StepStatus::Pending);
    assert_eq!(plan.steps[0].result, None);
    assert_eq!(plan.steps[0].agent_name, None);
    assert_eq!(plan.steps[1].compensate_tool, None);
}

#[tokio::test]
async fn a_failing_model_is_a_planner_error() {
    let (_, lm) = scripted(vec![ScriptedReply::error("service down")]);
    let error = planner(lm).plan("goal").await.unwrap_err();
    assert!(matches!(error, PlannerError::Lm { .. }), "{error:?}");
    assert!(error.to_string().contains("service down"), "{error}");
}

#[tokio::test]
async fn the_planner_is_an_agent_that_answers_with_yaml() {
    let (_, lm) = scripted(vec![
        ScriptedReply::text(good_plan().to_string()).with_usage(10, 10),
        ScriptedReply::text("nonsense"),
    ]);
    let mut registry = AgentRegistry::new();
    registry.register(planner(lm).max_repairs(0)).unwrap();
    let agent = &registry["planner"];

    let result = agent.run("Research Rust").await;
    assert!(result.success, "{result:?}");
    let plan = Plan::from_yaml(result.answer.as_deref().unwrap()).unwrap();
    assert_eq!(ids(&plan), ["search_a", "search_b", "write"]);
    assert_eq!(result.iterations, 1);
    assert_eq!(result.token_usage, TokenUsage::new(10, 10));
    assert_eq!(result.unpriced_calls, 0);
    assert!(result
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::LlmCall { .. })));

    let failed = agent.run("again").await;
    assert!(!failed.success);
    assert!(failed.error.unwrap().contains("no JSON object"));
}

/// Remove a file for good.
#[tool]
fn shred(path: String) -> String {
    format!("shredded {path}")
}

#[tokio::test]
async fn an_agents_tool_the_planner_was_not_given_is_not_available() {
    let worker_lm = Lm::from_model(ScriptedLm::new(vec![]));
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new("janitor", worker_lm, tools![search, shred]))
        .unwrap();
    let mut bad = good_plan();
    bad["steps"][0]["agent_name"] = json!("janitor");
    bad["steps"][0]["tool_name"] = json!("shred");
    bad["steps"][0]["args"] = json!({"path": "x"});
    let (model, lm) = scripted(vec![
        ScriptedReply::text(bad.to_string()),
        ScriptedReply::text(good_plan().to_string()),
    ]);
    planner(lm).agents(&registry).plan("goal").await.unwrap();
    let repair = last_user_message(&model, 1);
    assert!(
        repair.contains("step `search_a`: tool `shred` is not available (available tools: search, write_file, delete_file)"),
        "{repair}"
    );
    // The prompt teaches the reference syntax the checker reads.
    let system = &model.requests()[0].messages[0].content;
    assert!(
        system.contains("write \"{{steps.<id>.result}}\""),
        "{system}"
    );
}
