//! The OpenAI-compatible provider against a loopback server speaking chat completions.

mod support;

use agenthelm::lm::{CompletionRequest, Message, ResponseFormat, ToolChoice, ToolDefinition};
use agenthelm::prelude::*;
use agenthelm::{EventKind, LmError, RetryPolicy};
use serde_json::{json, Value};
use std::time::Duration;
use support::{ask, fast_retries, MockServer, Reply};

const KEY: &str = "sk-test-9f8e7d6c5b4a-secret";

fn answer(content: Value, tool_calls: Value, usage: Value) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "tool_calls": tool_calls},
            "finish_reason": "stop"
        }],
        "usage": usage
    })
}

fn text_answer(text: &str) -> Reply {
    Reply::json(
        200,
        answer(
            json!(text),
            Value::Null,
            json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}),
        ),
    )
}

/// A model at `server` with a small, fast retry policy.
fn lm(server: &MockServer) -> Lm {
    builder(server).build().unwrap()
}

fn builder(server: &MockServer) -> agenthelm::lm::LmBuilder {
    Lm::builder("openai/gpt-4o-mini")
        .base_url(&server.base_url)
        .api_key(KEY)
        .timeout(Duration::from_secs(10))
        .retry_policy(fast_retries())
}

#[tokio::test]
async fn plain_reply_with_usage() {
    let server = MockServer::start(vec![text_answer("Hello there")]).await;
    let completion = lm(&server).complete(&ask("hi")).await.unwrap();
    assert_eq!(completion.text.as_deref(), Some("Hello there"));
    assert!(completion.tool_calls.is_empty());
    assert_eq!(completion.usage, TokenUsage::new(12, 5));
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");

    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, "POST");
    assert_eq!(received[0].path, "/v1/chat/completions");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body = received[0].json();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert!(body.get("tools").is_none());
    assert!(body.get("response_format").is_none());
}

#[tokio::test]
async fn several_tool_calls_in_one_reply() {
    let server = MockServer::start(vec![Reply::json(
        200,
        answer(
            Value::Null,
            json!([
                {"id": "call_a", "type": "function",
                 "function": {"name": "search", "arguments": "{\"query\": \"rust\"}"}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "search", "arguments": "{\"query\": \"tokio\"}"}},
                {"id": "call_c", "type": "function", "function": {"name": "now", "arguments": ""}}
            ]),
            json!({"prompt_tokens": 30, "completion_tokens": 20}),
        ),
    )])
    .await;
    let request = CompletionRequest {
        messages: vec![
            Message::user("look things up"),
            // A previous turn: assistant tool call and the tool's answer.
            Message::assistant(
                "",
                vec![agenthelm::lm::ToolCall {
                    id: "call_0".into(),
                    name: "now".into(),
                    arguments: json!({}),
                }],
            ),
            Message::tool("call_0", "12:00"),
        ],
        tools: vec![ToolDefinition {
            name: "search".into(),
            description: "Search the web".into(),
            parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}}),
        }],
        tool_choice: Some(ToolChoice::Tool("search".into())),
        ..CompletionRequest::default()
    };
    let completion = lm(&server).complete(&request).await.unwrap();
    assert_eq!(completion.text, None);
    let calls: Vec<(&str, &str, &Value)> = completion
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), &c.arguments))
        .collect();
    assert_eq!(
        calls,
        [
            ("call_a", "search", &json!({"query": "rust"})),
            ("call_b", "search", &json!({"query": "tokio"})),
            ("call_c", "now", &json!({})),
        ]
    );
    assert_eq!(completion.usage, TokenUsage::new(30, 20));

    let body = server.received()[0].json();
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "search");
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "search"}})
    );
    // The assistant turn keeps a string content (never null) and its call's arguments as text.
    assert_eq!(body["messages"][1]["content"], "");
    assert_eq!(
        body["messages"][1]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_0", "content": "12:00"})
    );
}

fn schema_request() -> CompletionRequest {
    CompletionRequest {
        response_format: Some(ResponseFormat::JsonSchema {
            name: "city".into(),
            schema: json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
        }),
        ..ask("name a city")
    }
}

#[tokio::test]
async fn structured_output_sends_the_json_schema() {
    let server = MockServer::start(vec![text_answer(r#"{"name": "Lyon"}"#)]).await;
    let completion = lm(&server).complete(&schema_request()).await.unwrap();
    assert_eq!(completion.text.as_deref(), Some(r#"{"name": "Lyon"}"#));
    let body = server.received()[0].json();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["name"], "city");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["name"])
    );
}

#[tokio::test]
async fn structured_output_falls_back_to_json_object_when_json_schema_is_refused() {
    // What llama.cpp's server does: a validation error reported as HTTP 500.
    let refusal = Reply::json(
        500,
        json!({"error": {"message": "1 validation error for CreateChatCompletionRequest\nresponse_format\n  Input tag 'json_schema' found using 'type' does not match"}}),
    );
    let server = MockServer::start(vec![
        refusal,
        text_answer(r#"{"name": "Oslo"}"#),
        text_answer(r#"{"name": "Rome"}"#),
    ])
    .await;
    let lm = lm(&server);
    let first = lm.complete(&schema_request()).await.unwrap();
    assert_eq!(first.text.as_deref(), Some(r#"{"name": "Oslo"}"#));
    let second = lm.complete(&schema_request()).await.unwrap();
    assert_eq!(second.text.as_deref(), Some(r#"{"name": "Rome"}"#));

    let received = server.received();
    // No blind retries of the refused form: one refusal, then the fallback, remembered.
    assert_eq!(received.len(), 3);
    assert_eq!(received[0].json()["response_format"]["type"], "json_schema");
    for request in &received[1..] {
        let format = &request.json()["response_format"];
        assert_eq!(format["type"], "json_object");
        assert_eq!(format["schema"]["required"], json!(["name"]));
    }
}

#[tokio::test]
async fn json_mode_asks_for_a_json_object() {
    let server = MockServer::start(vec![text_answer("{}")]).await;
    let request = CompletionRequest {
        response_format: Some(ResponseFormat::Json),
        ..ask("json please")
    };
    lm(&server).complete(&request).await.unwrap();
    assert_eq!(
        server.received()[0].json()["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn rate_limit_then_success_is_retried() {
    let server = MockServer::start(vec![
        Reply::json(429, json!({"error": {"message": "slow down"}})),
        Reply::json(503, json!({"error": {"message": "overloaded"}})),
        text_answer("finally"),
    ])
    .await;
    let completion = lm(&server).complete(&ask("hi")).await.unwrap();
    assert_eq!(completion.text.as_deref(), Some("finally"));
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = MockServer::start(vec![
        Reply::json(429, json!({"error": {"message": "slow down"}}))
            .header("retry-after-ms", "300"),
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "0.2"),
        text_answer("ok"),
    ])
    .await;
    let completion = lm(&server).complete(&ask("hi")).await.unwrap();
    assert_eq!(completion.text.as_deref(), Some("ok"));
    let received = server.received();
    assert_eq!(received.len(), 3);
    // Only lower bounds: the client waited at least as long as asked (the normal backoff here
    // is at most 20 ms, so these gaps come from the headers). A slow machine only adds time.
    assert!(received[1].at - received[0].at >= Duration::from_millis(300));
    assert!(received[2].at - received[1].at >= Duration::from_millis(200));
}

#[tokio::test]
async fn retry_after_longer_than_allowed_fails_at_once() {
    let server = MockServer::start(vec![
        Reply::json(429, json!({"error": {"message": "quota exceeded"}}))
            .header("retry-after", "3600"),
        text_answer("never reached"),
    ])
    .await;
    let lm = builder(&server)
        .max_retry_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let error = lm.complete(&ask("hi")).await.unwrap_err();
    match &error {
        LmError::Http {
            status, message, ..
        } => {
            assert_eq!(*status, 429);
            assert!(message.contains("quota exceeded"), "{message}");
            assert!(message.contains("3600"), "{message}");
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn server_errors_until_retries_run_out() {
    let server = MockServer::start(vec![
        Reply::json(500, json!({"error": {"message": "boom 1"}})),
        Reply::json(502, json!({"error": {"message": "boom 2"}})),
        Reply::json(500, json!({"error": {"message": "boom 3"}})),
        text_answer("too late"),
    ])
    .await;
    let lm = builder(&server).max_retries(2).build().unwrap();
    let error = lm.complete(&ask("hi")).await.unwrap_err();
    assert_eq!(server.received().len(), 3);
    match &error {
        LmError::Http {
            status, message, ..
        } => {
            assert_eq!(*status, 500);
            assert!(message.contains("boom 3"), "{message}");
            assert!(message.contains("gave up after 3 attempts"), "{message}");
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test]
async fn auth_and_bad_request_errors_are_not_retried() {
    for status in [400, 401, 403, 404] {
        let server = MockServer::start(vec![
            Reply::json(status, json!({"error": {"message": "no"}})),
            text_answer("unreachable"),
        ])
        .await;
        let error = lm(&server).complete(&ask("hi")).await.unwrap_err();
        assert!(
            matches!(error, LmError::Http { status: s, .. } if s == status),
            "{status}: {error:?}"
        );
        assert_eq!(server.received().len(), 1, "status {status} was retried");
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let slow = || text_answer("late").delay(Duration::from_secs(5));
    let server = MockServer::start(vec![slow(), slow()]).await;
    let lm = builder(&server)
        .timeout(Duration::from_millis(200))
        .max_retries(1)
        .build()
        .unwrap();
    let error = lm.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(error, LmError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{error:?}"
    );
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn malformed_json_is_an_error() {
    for body in [
        "not json at all",
        "{\"choices\": [",
        "[1, 2, 3]",
        "{\"choices\": []}",
    ] {
        let server = MockServer::start(vec![Reply::raw(200, body)]).await;
        let error = lm(&server).complete(&ask("hi")).await.unwrap_err();
        assert!(
            matches!(error, LmError::Malformed { .. }),
            "{body}: {error:?}"
        );
        assert_eq!(server.received().len(), 1);
    }
}

#[tokio::test]
async fn error_object_in_a_success_answer_is_an_error() {
    let server = MockServer::start(vec![Reply::json(
        200,
        json!({"error": {"message": "model crashed"}}),
    )])
    .await;
    let error = lm(&server).complete(&ask("hi")).await.unwrap_err();
    assert!(error.to_string().contains("model crashed"), "{error}");
}

#[tokio::test]
async fn truncated_body_is_an_error() {
    let full = answer(json!("a long answer"), Value::Null, json!({})).to_string();
    let cut = &full[..full.len() / 2];
    let server = MockServer::start(vec![Reply::raw(200, cut).truncated_to_claim(full.len())]).await;
    let error = lm(&server).complete(&ask("hi")).await.unwrap_err();
    assert!(matches!(error, LmError::Malformed { .. }), "{error:?}");
    assert!(error.to_string().contains("cut short"), "{error}");
}

#[tokio::test]
async fn unreachable_server_is_retried_then_reported() {
    // Bind a port, then free it: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let lm = Lm::builder("openai/gpt-4o-mini")
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY)
        .max_retries(1)
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let error = lm.complete(&ask("hi")).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("could not reach"), "{text}");
    assert!(text.contains("gave up after 2 attempts"), "{text}");
}

#[test]
fn missing_key_is_an_error_naming_the_variable() {
    let cases = [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY"),
        ("mistral/mistral-small-latest", "MISTRAL_API_KEY"),
        ("groq/llama-3.1-8b-instant", "GROQ_API_KEY"),
        (
            "openrouter/meta-llama/llama-3.1-8b-instruct",
            "OPENROUTER_API_KEY",
        ),
        ("deepseek/deepseek-chat", "DEEPSEEK_API_KEY"),
        ("together/meta-llama/Llama-3-8b-chat-hf", "TOGETHER_API_KEY"),
    ];
    for (model, variable) in cases {
        let error = Lm::builder(model).env(|_| None).build().unwrap_err();
        assert_eq!(
            error,
            LmError::MissingKey {
                model: model.into(),
                variable: variable.into()
            }
        );
        assert!(error.to_string().contains(variable));
        // An empty variable counts as unset.
        let error = Lm::builder(model)
            .env(|_| Some("  ".into()))
            .build()
            .unwrap_err();
        assert!(matches!(error, LmError::MissingKey { .. }), "{error:?}");
    }
}

#[test]
fn keys_and_base_urls_come_from_the_environment() {
    let env = |name: &str| match name {
        "MISTRAL_API_KEY" => Some("k".to_owned()),
        _ => None,
    };
    let lm = Lm::builder("mistral/mistral-small-latest")
        .env(env)
        .build()
        .unwrap();
    assert_eq!(lm.model_id(), "mistral/mistral-small-latest");

    // Ollama needs no key; a custom base URL (option or variable) makes the key optional.
    Lm::builder("ollama/llama3.2")
        .env(|_| None)
        .build()
        .unwrap();
    Lm::builder("openai/local-model")
        .env(|name| (name == "OPENAI_BASE_URL").then(|| "http://127.0.0.1:9/v1".to_owned()))
        .build()
        .unwrap();
    Lm::builder("vllm/qwen2.5")
        .env(|_| None)
        .base_url("http://127.0.0.1:9/v1")
        .build()
        .unwrap();
}

#[test]
fn bad_model_ids_and_urls_are_clear_errors() {
    let unknown = Lm::builder("acme/model-1")
        .env(|_| None)
        .build()
        .unwrap_err();
    let text = unknown.to_string();
    assert!(text.contains("unknown provider `acme`"), "{text}");
    assert!(text.contains("openai, "), "{text}");
    assert!(text.contains("base_url"), "{text}");

    for id in ["gpt-4o", "openai/", "/gpt-4o", ""] {
        let error = Lm::new(id).unwrap_err();
        assert!(
            error.to_string().contains("provider/model"),
            "{id}: {error}"
        );
    }

    let error = Lm::builder("openai/x")
        .base_url("ftp://example.invalid")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("http or https"), "{error}");
    let error = Lm::builder("openai/x")
        .base_url("not a url")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("not a URL"), "{error}");
}

/// Every error, every Debug output and every event is free of the key, even when the service
/// echoes the key back.
#[tokio::test]
async fn the_key_never_leaks() {
    let echo = format!("Incorrect API key provided: {KEY}. Bearer {KEY}");
    let server = MockServer::start(vec![
        Reply::json(401, json!({"error": {"message": echo}})),
        Reply::json(200, json!({"error": {"message": echo}})),
        Reply::raw(200, format!("<html>{echo}</html>")),
        Reply::json(500, json!({"error": {"message": echo}})),
        Reply::json(500, json!({"error": {"message": echo}})),
        // The agent run below: one call whose error echoes the key.
        Reply::json(403, json!({"error": {"message": echo}})),
    ])
    .await;
    let builder = builder(&server).max_retries(1);
    let mut outputs = vec![format!("{builder:?}")];
    let lm = builder.build().unwrap();
    outputs.push(format!("{lm:?}"));
    for _ in 0..4 {
        let error = lm.complete(&ask("hi")).await.unwrap_err();
        outputs.push(error.to_string());
        outputs.push(format!("{error:?}"));
    }
    let agent = ToolAgent::new("a", lm.clone(), ToolSet::new());
    let result = agent.run("hi").await;
    assert!(!result.success);
    outputs.push(format!("{result:?}"));
    outputs.push(serde_json::to_string(&result.events).unwrap());
    outputs.push(format!("{agent:?}"));
    assert!(
        result
            .events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::LlmCall { error: Some(_), .. })),
        "the failed call is recorded"
    );
    // Guard against a vacuous pass: the echo did reach the errors, scrubbed.
    assert!(outputs
        .iter()
        .any(|o| o.contains("Incorrect API key provided: [redacted]")));
    for output in &outputs {
        assert!(!output.contains(KEY), "key leaked in: {output}");
        assert!(!output.contains("9f8e7d6c5b4a"), "key leaked in: {output}");
    }
    assert_eq!(server.received().len(), 6);
}

#[tokio::test]
async fn tool_agent_runs_against_the_wire_format() {
    /// Add two numbers.
    #[tool]
    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    let server = MockServer::start(vec![
        Reply::json(
            200,
            answer(
                json!(""),
                json!([{"id": "c1", "type": "function",
                        "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]),
                json!({"prompt_tokens": 40, "completion_tokens": 10}),
            ),
        ),
        text_answer("2 + 3 = 5"),
    ])
    .await;
    let agent = ToolAgent::new("math", lm(&server), tools![add]);
    let result = agent.run("What is 2 + 3?").await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.answer.as_deref(), Some("2 + 3 = 5"));
    assert_eq!(result.token_usage, TokenUsage::new(52, 15));
    let llm_calls: Vec<&EventKind> = result
        .events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::LlmCall { .. }))
        .collect();
    assert_eq!(llm_calls.len(), 2);

    // The tool's result went back as a tool message answering the call.
    let second = server.received()[1].json();
    let messages = second["messages"].as_array().unwrap();
    let tool_message = messages.last().unwrap();
    assert_eq!(
        tool_message,
        &json!({"role": "tool", "tool_call_id": "c1", "content": "5"})
    );
}
