//! Against a real OpenAI-compatible server on loopback: llama.cpp with SmolLM2-135M from
//! `../shared/peers/llm-up.sh`, which `scripts/test` starts and names in `AGENTHELM_TEST_LLM_URL`.
//!
//! The model is tiny, so these tests check the protocol (a reply arrives, usage is counted, a
//! forced tool call is parsed, structured output is accepted, agents and the planner get through
//! their loops), not the quality of the answers. Without the variable each test prints why it
//! skipped; with it, an unreachable server is a failure.

use agenthelm::lm::{CompletionRequest, Message, ResponseFormat, ToolChoice, ToolDefinition};
use agenthelm::prelude::*;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

/// One test at a time talks to the server: llama.cpp drops a stream it is writing when another
/// request arrives (it ends it with `[DONE]` early), which would fail the streaming tests.
static SERVER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The server's base URL and this test's turn with it, or `None` after printing why the test
/// is skipped.
async fn server_url(test: &str) -> Option<(String, tokio::sync::MutexGuard<'static, ()>)> {
    match std::env::var("AGENTHELM_TEST_LLM_URL") {
        Ok(url) if !url.trim().is_empty() => {
            Some((url.trim().to_owned(), SERVER_TURN.lock().await))
        }
        _ => {
            let why = std::env::var("AGENTHELM_TEST_LLM_SKIP").unwrap_or_else(|_| {
                "AGENTHELM_TEST_LLM_URL is not set (scripts/test sets it after starting \
                 ../shared/peers/llm-up.sh)"
                    .to_owned()
            });
            // Straight to stderr, past the test harness's capture, so the reason always shows.
            let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
            None
        }
    }
}

/// `model` is `smollm2` (forced tool choice, JSON output) or `smollm2-fc` (automatic tool
/// choice); the server accepts any id and serves the same weights.
fn lm(url: &str, model: &str) -> Lm {
    Lm::builder(&format!("openai/{model}"))
        .base_url(url)
        .timeout(Duration::from_secs(120))
        .max_retries(1)
        .max_tokens(200)
        .build()
        .expect("a model at a base URL needs no key")
}

fn llm_calls(events: &[Event]) -> Vec<(TokenUsage, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LlmCall { usage, error, .. } => Some((*usage, error.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn plain_reply_with_usage() {
    let Some((url, _turn)) = server_url("plain_reply_with_usage").await else {
        return;
    };
    let request = CompletionRequest {
        messages: vec![
            Message::system("You are a helpful assistant."),
            Message::user("Say hello in one short sentence."),
        ],
        max_tokens: Some(30),
        ..CompletionRequest::default()
    };
    let completion = lm(&url, "smollm2").complete(&request).await.unwrap();
    assert!(completion.text.is_some(), "{completion:?}");
    assert!(completion.usage.input_tokens > 0, "{completion:?}");
    assert!(completion.usage.output_tokens > 0, "{completion:?}");
    // A local model is not in the price table: its cost is unknown, not 0.
    assert_eq!(completion.cost_usd, None);
}

#[tokio::test]
async fn forced_tool_call_is_parsed() {
    let Some((url, _turn)) = server_url("forced_tool_call_is_parsed").await else {
        return;
    };
    let request = CompletionRequest {
        messages: vec![Message::user("What is the weather in Paris?")],
        tools: vec![ToolDefinition {
            name: "get_weather".into(),
            description: "Current weather in a city".into(),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            }),
        }],
        tool_choice: Some(ToolChoice::Tool("get_weather".into())),
        ..CompletionRequest::default()
    };
    let completion = lm(&url, "smollm2").complete(&request).await.unwrap();
    assert!(!completion.tool_calls.is_empty(), "{completion:?}");
    let call = &completion.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(!call.id.is_empty());
    assert!(call.arguments.is_object(), "{call:?}");
    assert!(completion.usage.total() > 0);
}

#[tokio::test]
async fn structured_output_falls_back_to_what_the_server_supports() {
    let Some((url, _turn)) =
        server_url("structured_output_falls_back_to_what_the_server_supports").await
    else {
        return;
    };
    let request = CompletionRequest {
        messages: vec![Message::user("Name one city in France as JSON.")],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "city".into(),
            schema: json!({
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40}},
                "required": ["city"]
            }),
        }),
        max_tokens: Some(60),
        ..CompletionRequest::default()
    };
    // llama.cpp answers `json_schema` with HTTP 500; the client must get through anyway.
    let lm = lm(&url, "smollm2");
    let completion = lm.complete(&request).await.unwrap();
    let text = completion.text.unwrap_or_default();
    assert!(text.trim_start().starts_with('{'), "{text}");
    let parsed: Result<Value, _> = serde_json::from_str(&text);
    if let Ok(value) = parsed {
        assert!(value.get("city").is_some(), "{value}");
    }
    // The fallback is remembered: a second call goes straight through.
    lm.complete(&request).await.unwrap();
}

#[tokio::test]
async fn tool_agent_runs_its_loop() {
    let Some((url, _turn)) = server_url("tool_agent_runs_its_loop").await else {
        return;
    };
    /// Add two whole numbers.
    #[tool]
    fn add(a: i64, b: i64) -> i64 {
        a + b
    }
    let agent = ToolAgent::new("math", lm(&url, "smollm2-fc"), tools![add]).max_iters(3);
    let result = agent.run("What is 2 + 3? Use the add tool.").await;
    eprintln!("tool agent result: {result:?}");
    let calls = llm_calls(&result.events);
    assert!(!calls.is_empty(), "{result:?}");
    for (usage, error) in &calls {
        assert_eq!(error, &None, "{result:?}");
        assert!(usage.input_tokens > 0, "{result:?}");
    }
    assert_eq!(calls.len() as u32, result.iterations);
    assert_eq!(result.unpriced_calls, result.iterations);
    assert!(result.token_usage.total() > 0);
    // Either it answered, or it used up its model calls on tool calls; nothing else.
    if !result.success {
        let error = result.error.unwrap_or_default();
        assert!(error.contains("stopped after 3 model calls"), "{error}");
    }
}

#[tokio::test]
async fn planner_gets_a_checked_plan_or_names_the_problems() {
    let Some((url, _turn)) = server_url("planner_gets_a_checked_plan_or_names_the_problems").await
    else {
        return;
    };
    /// Search the web for a query.
    #[tool]
    fn search(query: String) -> String {
        format!("results for {query}")
    }
    let planner = PlannerAgent::new("planner", lm(&url, "smollm2"), tools![search])
        .max_steps(3)
        .max_repairs(1);
    let (outcome, report) = planner.plan_traced("Find out what Rust is").await;
    let calls = llm_calls(&report.events);
    assert!(!calls.is_empty());
    assert!(calls
        .iter()
        .all(|(usage, error)| error.is_none() && usage.total() > 0));
    eprintln!("planner outcome: {outcome:?}");
    match outcome {
        Ok(plan) => {
            assert!(!plan.approved);
            plan.validate().unwrap();
            for step in &plan.steps {
                if let Some(tool) = &step.tool_name {
                    assert_eq!(tool, "search", "{plan:?}");
                }
            }
        }
        Err(PlannerError::Invalid {
            problems, attempts, ..
        }) => {
            assert_eq!(attempts, 2);
            assert!(!problems.is_empty());
        }
        Err(other) => panic!("the protocol failed: {other}"),
    }
}

#[tokio::test]
async fn streamed_reply_arrives_in_pieces() {
    let Some((url, _turn)) = server_url("streamed_reply_arrives_in_pieces").await else {
        return;
    };
    let request = CompletionRequest {
        messages: vec![
            Message::system("You are a helpful assistant."),
            Message::user("Say hello in one short sentence."),
        ],
        max_tokens: Some(30),
        ..CompletionRequest::default()
    };
    let mut pieces = Vec::new();
    let completion = lm(&url, "smollm2")
        .stream(&request, &mut |delta| {
            if let agenthelm::lm::StreamDelta::Text(text) = delta {
                pieces.push(text);
            }
        })
        .await
        .unwrap();
    assert!(pieces.len() > 1, "one piece per token or so: {pieces:?}");
    assert_eq!(completion.text.as_deref(), Some(pieces.concat().as_str()));
    assert_eq!(completion.model, "smollm2");
}

#[tokio::test]
async fn streamed_forced_tool_call_is_put_together_once() {
    let Some((url, _turn)) = server_url("streamed_forced_tool_call_is_put_together_once").await
    else {
        return;
    };
    let request = CompletionRequest {
        messages: vec![Message::user("What is the weather in Paris?")],
        tools: vec![ToolDefinition {
            name: "get_weather".into(),
            description: "Current weather in a city".into(),
            parameters: json!({
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"]
            }),
        }],
        tool_choice: Some(ToolChoice::Tool("get_weather".into())),
        max_tokens: Some(60),
        ..CompletionRequest::default()
    };
    let mut pieces = 0;
    let completion = lm(&url, "smollm2")
        .stream(&request, &mut |_| pieces += 1)
        .await
        .unwrap();
    // llama.cpp repeats the id and name in every piece and sends `function_call` beside
    // `tool_calls`: still one call, with its name once.
    assert_eq!(completion.tool_calls.len(), 1, "{completion:?}");
    let call = &completion.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(call.id.starts_with("call_"), "{call:?}");
    assert!(call.arguments.is_object(), "{call:?}");
    assert!(pieces > 1, "{pieces}");
}
