//! ToolAgent's reasoning loop with ScriptedLm: answers, tool calls, errors back to the model,
//! concurrency of calls in one turn, limits, events and approval.

use agenthelm::lm::{Message, Role};
use agenthelm::prelude::*;
use agenthelm::tool::ToolCallInfo;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Add two numbers.
#[tool]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn scripted(replies: Vec<ScriptedReply>) -> (Arc<ScriptedLm>, Lm) {
    let lm = Arc::new(ScriptedLm::new(replies));
    (Arc::clone(&lm), Lm::from_arc(lm))
}

fn tool_messages(lm: &ScriptedLm, request: usize) -> Vec<Message> {
    lm.requests()[request]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .cloned()
        .collect()
}

fn counting_tool(name: &str, counter: Arc<AtomicUsize>) -> FnTool {
    FnTool::new(
        name,
        "counts calls",
        json!({"type": "object", "properties": {}}),
        move |_, _| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(json!("counted"))
            }
        },
    )
    .unwrap()
}

#[tokio::test]
async fn plain_text_answer() {
    let (lm, handle) = scripted(vec![ScriptedReply::text("Paris")
        .with_usage(12, 3)
        .with_cost(0.5)]);
    let agent = ToolAgent::new("geo", handle, tools![add]).role("Knows capitals");
    assert_eq!(agent.name(), "geo");
    assert_eq!(agent.description(), Some("Knows capitals"));
    let result = agent.run("Capital of France?").await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.answer.as_deref(), Some("Paris"));
    assert_eq!(result.error, None);
    assert_eq!(result.iterations, 1);
    assert_eq!(result.token_usage, TokenUsage::new(12, 3));
    assert_eq!(result.total_cost_usd, 0.5);

    let requests = lm.requests();
    assert_eq!(requests.len(), 1);
    let messages = &requests[0].messages;
    assert_eq!(messages[0].role, Role::System);
    assert!(messages[0].content.contains("Knows capitals"));
    assert_eq!(messages[1].role, Role::User);
    assert_eq!(messages[1].content, "Capital of France?");
    assert_eq!(requests[0].tools.len(), 1);
    assert_eq!(requests[0].tools[0].name, "add");
    assert_eq!(requests[0].tools[0].parameters["type"], "object");

    let llm: Vec<&Event> = result
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LlmCall { .. }))
        .collect();
    assert_eq!(llm.len(), 1);
    let EventKind::LlmCall {
        model,
        usage,
        cost_usd,
        tool_calls,
        error,
        ..
    } = &llm[0].kind
    else {
        unreachable!()
    };
    assert_eq!(model, "scripted");
    assert_eq!(*usage, TokenUsage::new(12, 3));
    assert_eq!(*cost_usd, Some(0.5));
    assert_eq!(*tool_calls, 0);
    assert_eq!(*error, None);
    assert_eq!(llm[0].agent.as_deref(), Some("geo"));
}

#[tokio::test]
async fn tool_call_then_answer() {
    let (lm, handle) = scripted(vec![
        ScriptedReply::tool_call("add", json!({"a": 2, "b": 3})).with_usage(10, 5),
        ScriptedReply::text("5").with_usage(20, 1).with_cost(0.25),
    ]);
    let agent = ToolAgent::new("math", handle, tools![add]);
    let result = agent.run("2+3?").await;
    assert!(result.success);
    assert_eq!(result.answer.as_deref(), Some("5"));
    assert_eq!(result.iterations, 2);
    assert_eq!(result.token_usage, TokenUsage::new(30, 6));
    assert_eq!(result.total_cost_usd, 0.25);
    assert_eq!(result.unpriced_calls, 1, "the first reply had no price");

    let second = &lm.requests()[1].messages;
    let assistant = second.iter().find(|m| m.role == Role::Assistant).unwrap();
    assert_eq!(assistant.tool_calls[0].name, "add");
    let tools = tool_messages(&lm, 1);
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].content, "5");
    assert_eq!(
        tools[0].tool_call_id.as_deref(),
        Some(assistant.tool_calls[0].id.as_str())
    );

    let calls: Vec<&EventKind> = result
        .events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::ToolCall { .. }))
        .collect();
    assert_eq!(calls.len(), 1);
    let EventKind::ToolCall {
        tool,
        args,
        output,
        error,
        attempts,
        ..
    } = calls[0]
    else {
        unreachable!()
    };
    assert_eq!(tool, "add");
    assert_eq!(args, &json!({"a": 2, "b": 3}));
    assert_eq!(output, &Some(json!(5)));
    assert_eq!(error, &None);
    assert_eq!(*attempts, 1);
}

#[tokio::test]
async fn several_calls_in_one_turn_run_concurrently() {
    // Each call waits until the other has started: run one after another they would never finish.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let waiting_tool = |name: &str| {
        let barrier = Arc::clone(&barrier);
        FnTool::new(
            name,
            "waits for its partner",
            json!({"type": "object"}),
            move |_, _| {
                let barrier = Arc::clone(&barrier);
                async move {
                    barrier.wait().await;
                    Ok(json!("met"))
                }
            },
        )
        .unwrap()
    };
    let tools = ToolSet::new()
        .with(waiting_tool("left"))
        .with(waiting_tool("right"));
    let (lm, handle) = scripted(vec![
        ScriptedReply::tool_calls([("left", json!({})), ("right", json!({}))]),
        ScriptedReply::text("both met"),
    ]);
    let agent = ToolAgent::new("pair", handle, tools);
    let result = tokio::time::timeout(Duration::from_secs(20), agent.run("meet"))
        .await
        .expect("the two tool calls did not run at the same time");
    assert!(result.success);
    let answers: Vec<String> = tool_messages(&lm, 1)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(answers, ["met", "met"]);
}

#[tokio::test]
async fn unknown_tool_and_bad_arguments_go_back_to_the_model() {
    let (lm, handle) = scripted(vec![
        ScriptedReply::tool_calls([
            ("multiply", json!({"a": 1})),
            ("add", json!({"a": "one", "b": 2})),
        ]),
        ScriptedReply::tool_call("add", json!("{\"a\": 1, \"b\": 2}")),
        ScriptedReply::text("3"),
    ]);
    let agent = ToolAgent::new("math", handle, tools![add]);
    let result = agent.run("1+2").await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.answer.as_deref(), Some("3"));

    let first = tool_messages(&lm, 1);
    assert_eq!(first.len(), 2);
    assert_eq!(
        first[0].content,
        "error: unknown tool `multiply` (available: add)"
    );
    assert!(
        first[1]
            .content
            .starts_with("error: invalid arguments for tool `add`"),
        "{}",
        first[1].content
    );
    assert!(
        first[1].content.contains("`a`: expected integer"),
        "{}",
        first[1].content
    );
    // Arguments sent as a JSON string are read as the object they hold.
    let second = tool_messages(&lm, 2);
    assert_eq!(second.last().unwrap().content, "3");
}

#[tokio::test]
async fn a_failing_tool_is_reported_to_the_model() {
    let failing = FnTool::new("flaky", "fails", json!({"type": "object"}), |_, _| async {
        Err::<Value, _>(ToolError::new("backend down"))
    })
    .unwrap();
    let panicking = FnTool::new("boom", "panics", json!({"type": "object"}), |_, _| async {
        panic!("tool bug");
    })
    .unwrap();
    let (lm, handle) = scripted(vec![
        ScriptedReply::tool_calls([("flaky", json!({})), ("boom", json!({}))]),
        ScriptedReply::text("gave up"),
    ]);
    let agent = ToolAgent::new("a", handle, ToolSet::new().with(failing).with(panicking));
    let result = agent.run("try").await;
    assert!(result.success);
    let messages = tool_messages(&lm, 1);
    assert_eq!(messages[0].content, "error: backend down");
    assert!(
        messages[1]
            .content
            .contains("tool `boom` panicked: tool bug"),
        "{}",
        messages[1].content
    );
}

#[tokio::test]
async fn max_iters_returns_failure_keeping_the_work_done() {
    let counter = Arc::new(AtomicUsize::new(0));
    let (lm, handle) = scripted(vec![
        ScriptedReply::tool_call("count", json!({})).with_usage(1, 1),
        ScriptedReply::tool_call("count", json!({})).with_usage(1, 1),
        ScriptedReply::tool_call("count", json!({})).with_usage(1, 1),
        ScriptedReply::text("never reached"),
    ]);
    let tools = ToolSet::new().with(counting_tool("count", Arc::clone(&counter)));
    let agent = ToolAgent::new("looper", handle, tools).max_iters(2);
    let result = agent.run("loop").await;
    assert!(!result.success);
    let error = result.error.as_deref().unwrap();
    assert!(
        error.contains("looper") && error.contains("2 model calls"),
        "{error}"
    );
    assert_eq!(result.iterations, 2);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        2,
        "the tool calls made were kept"
    );
    assert_eq!(result.token_usage, TokenUsage::new(2, 2));
    let tool_events = result
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ToolCall { .. }))
        .count();
    assert_eq!(tool_events, 2);
    assert_eq!(lm.remaining(), 2);
    // max_iters(0) still allows one call.
    let (_, handle) = scripted(vec![ScriptedReply::text("ok")]);
    assert!(
        ToolAgent::new("z", handle, ToolSet::new())
            .max_iters(0)
            .run("x")
            .await
            .success
    );
}

#[tokio::test]
async fn a_model_error_ends_the_task_with_the_error() {
    let (_, handle) = scripted(vec![
        ScriptedReply::tool_call("add", json!({"a": 1, "b": 1})),
        ScriptedReply::error("rate limited"),
    ]);
    let agent = ToolAgent::new("m", handle, tools![add]);
    let result = agent.run("x").await;
    assert!(!result.success);
    let error = result.error.as_deref().unwrap();
    assert!(
        error.contains("rate limited") && error.contains("agent `m`"),
        "{error}"
    );
    assert_eq!(result.iterations, 2);
    let failed_call = result.events.iter().find_map(|e| match &e.kind {
        EventKind::LlmCall {
            error: Some(error), ..
        } => Some(error.clone()),
        _ => None,
    });
    assert!(failed_call.unwrap().contains("rate limited"));
}

#[tokio::test]
async fn an_exhausted_script_is_an_error() {
    let (lm, handle) = scripted(vec![ScriptedReply::tool_call(
        "add",
        json!({"a": 1, "b": 1}),
    )]);
    let agent = ToolAgent::new("m", handle, tools![add]);
    let result = agent.run("x").await;
    assert!(!result.success);
    assert!(
        result.error.as_deref().unwrap().contains("no reply left"),
        "{result:?}"
    );
    assert_eq!(lm.requests().len(), 2);
    assert_eq!(lm.remaining(), 0);

    let empty = ScriptedLm::new(vec![]);
    let err = empty
        .complete(&agenthelm::lm::CompletionRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        agenthelm::LmError::ScriptExhausted { replies: 0, .. }
    ));
}

/// Delete everything.
#[tool(requires_approval)]
fn wipe(target: String) -> String {
    format!("wiped {target}")
}

#[tokio::test]
async fn tools_that_require_approval_are_denied_by_default() {
    let (lm, handle) = scripted(vec![
        ScriptedReply::tool_call("wipe", json!({"target": "db"})),
        ScriptedReply::text("could not"),
    ]);
    let result = ToolAgent::new("ops", handle, tools![wipe])
        .run("wipe db")
        .await;
    assert!(result.success);
    let message = &tool_messages(&lm, 1)[0].content;
    assert!(
        message.starts_with("error: tool `wipe` was not approved"),
        "{message}"
    );
    let approval = result.events.iter().find_map(|e| match &e.kind {
        EventKind::Approval { approved, tool, .. } => Some((*approved, tool.clone())),
        _ => None,
    });
    assert_eq!(approval, Some((false, "wipe".to_owned())));
    let attempts = result.events.iter().find_map(|e| match &e.kind {
        EventKind::ToolCall { attempts, .. } => Some(*attempts),
        _ => None,
    });
    assert_eq!(attempts, Some(0), "a denied tool never runs");
}

#[tokio::test]
async fn auto_approve_lets_them_run() {
    let (lm, handle) = scripted(vec![
        ScriptedReply::tool_call("wipe", json!({"target": "db"})),
        ScriptedReply::text("done"),
    ]);
    let agent = ToolAgent::new("ops", handle, tools![wipe]).approval_handler(AutoApprove);
    let result = agent.run("wipe db").await;
    assert!(result.success);
    assert_eq!(tool_messages(&lm, 1)[0].content, "wiped db");
}

#[tokio::test]
async fn observers_see_events_as_they_happen() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    let (_, handle) = scripted(vec![
        ScriptedReply::tool_call("add", json!({"a": 1, "b": 1})),
        ScriptedReply::text("2"),
    ]);
    let agent = ToolAgent::new("m", handle, tools![add]).on_event(move |e| {
        let name = serde_json::to_value(e).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_owned();
        log.lock().unwrap().push(name);
    });
    let result = agent.run("1+1").await;
    assert_eq!(*seen.lock().unwrap(), ["llm_call", "tool_call", "llm_call"]);
    assert_eq!(result.events.len(), 3);
}

#[tokio::test]
async fn tool_calls_get_distinct_ids_and_call_info() {
    let infos = Arc::new(Mutex::new(Vec::<ToolCallInfo>::new()));
    let record = Arc::clone(&infos);
    let tool = FnTool::new(
        "rec",
        "records",
        json!({"type": "object"}),
        move |_, info| {
            record.lock().unwrap().push(info);
            async { Ok(Value::Null) }
        },
    )
    .unwrap();
    let (_, handle) = scripted(vec![
        ScriptedReply::tool_calls([("rec", json!({})), ("rec", json!({}))]),
        ScriptedReply::tool_call("rec", json!({})),
        ScriptedReply::text("ok"),
    ]);
    let result = ToolAgent::new("r", handle, ToolSet::new().with(tool))
        .run("go")
        .await;
    assert!(result.success);
    let infos = infos.lock().unwrap();
    let mut ids: Vec<&str> = infos.iter().map(|i| i.call_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{infos:?}");
    assert!(infos.iter().all(|i| i.attempt == 1));
}

/// A deterministic agent with no model.
struct Echo;

#[agenthelm::async_trait]
impl Agent for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    async fn run(&self, task: &str) -> AgentResult {
        if task.is_empty() {
            AgentResult::fail("nothing to echo")
        } else {
            AgentResult::ok(task)
        }
    }
}

#[tokio::test]
async fn user_agents_and_agent_result() {
    assert_eq!(Echo.run("hi").await, AgentResult::ok("hi"));
    let failed = Echo.run("").await;
    assert!(!failed.success);
    assert_eq!(failed.error.as_deref(), Some("nothing to echo"));
    assert_eq!(failed.answer, None);
    assert!(Echo.tools().is_none() && Echo.description().is_none());

    let mut total = AgentResult::ok("x");
    let mut part = AgentResult::ok("y");
    part.token_usage = TokenUsage::new(3, 4);
    part.total_cost_usd = 0.5;
    part.iterations = 2;
    part.unpriced_calls = 1;
    total.add_usage(&part);
    total.add_usage(&part);
    assert_eq!(total.token_usage, TokenUsage::new(6, 8));
    assert_eq!(total.total_cost_usd, 1.0);
    assert_eq!(total.iterations, 4);
    assert_eq!(total.unpriced_calls, 2);
}
