//! The Anthropic provider against a loopback server speaking the messages API.

mod support;

use agenthelm::lm::{
    CompletionRequest, Message, ResponseFormat, ToolCall, ToolChoice, ToolDefinition,
};
use agenthelm::prelude::*;
use agenthelm::LmError;
use serde_json::{json, Value};
use std::time::Duration;
use support::{ask, fast_retries, MockServer, Reply};

const KEY: &str = "sk-ant-test-0a1b2c3d4e5f-secret";

fn answer(content: Value, usage: Value) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": content,
            "stop_reason": "end_turn",
            "usage": usage
        }),
    )
}

fn builder(server: &MockServer) -> agenthelm::lm::LmBuilder {
    Lm::builder("anthropic/claude-sonnet-4-5")
        .base_url(&server.base_url)
        .api_key(KEY)
        .retry_policy(fast_retries())
}

#[tokio::test]
async fn plain_reply_with_usage_and_cost() {
    let server = MockServer::start(vec![answer(
        json!([{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]),
        json!({"input_tokens": 1000, "output_tokens": 200}),
    )])
    .await;
    let lm = builder(&server).build().unwrap();
    let completion = lm.complete(&ask("hi")).await.unwrap();
    assert_eq!(completion.text.as_deref(), Some("Hello there"));
    assert_eq!(completion.usage, TokenUsage::new(1000, 200));
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    // Built-in price: $3 / $15 per million tokens.
    let cost = completion.cost_usd.unwrap();
    assert!(
        (cost - (1000.0 * 3.0 + 200.0 * 15.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    let received = server.received();
    assert_eq!(received[0].path, "/v1/messages");
    assert_eq!(received[0].header("x-api-key"), Some(KEY));
    assert_eq!(received[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(received[0].header("authorization"), None);
    let body = received[0].json();
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["system"], "be brief");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
}

#[tokio::test]
async fn several_tool_uses_and_tool_results() {
    let server = MockServer::start(vec![answer(
        json!([
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"query": "rust"}},
            {"type": "tool_use", "id": "toolu_2", "name": "search", "input": {"query": "tokio"}}
        ]),
        json!({"input_tokens": 50, "output_tokens": 30, "cache_read_input_tokens": 10}),
    )])
    .await;
    let request = CompletionRequest {
        messages: vec![
            Message::system("sys"),
            Message::user("find"),
            Message::assistant(
                "",
                vec![
                    ToolCall {
                        id: "t1".into(),
                        name: "now".into(),
                        arguments: json!({}),
                    },
                    ToolCall {
                        id: "t2".into(),
                        name: "now".into(),
                        arguments: json!("{\"tz\":\"UTC\"}"),
                    },
                ],
            ),
            Message::tool("t1", "12:00"),
            Message::tool("t2", "13:00"),
        ],
        tools: vec![ToolDefinition {
            name: "search".into(),
            description: "Search".into(),
            parameters: json!({"type": "object"}),
        }],
        tool_choice: Some(ToolChoice::Required),
        max_tokens: Some(256),
        ..CompletionRequest::default()
    };
    let lm = builder(&server).build().unwrap();
    let completion = lm.complete(&request).await.unwrap();
    assert_eq!(completion.text.as_deref(), Some("Let me look."));
    let calls: Vec<(&str, &Value)> = completion
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), &c.arguments))
        .collect();
    assert_eq!(
        calls,
        [
            ("toolu_1", &json!({"query": "rust"})),
            ("toolu_2", &json!({"query": "tokio"}))
        ]
    );
    assert_eq!(completion.usage, TokenUsage::new(60, 30));

    let body = server.received()[0].json();
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "find"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "now", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "now", "input": {"tz": "UTC"}}
            ]},
            // Both results in one user turn: the API wants user and assistant to alternate.
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "12:00"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "13:00"}
            ]}
        ])
    );
}

#[tokio::test]
async fn structured_output_is_asked_for_in_the_system_prompt() {
    let server = MockServer::start(vec![answer(
        json!([{"type": "text", "text": "{\"name\": \"Lyon\"}"}]),
        json!({"input_tokens": 1, "output_tokens": 1}),
    )])
    .await;
    let request = CompletionRequest {
        response_format: Some(ResponseFormat::JsonSchema {
            name: "city".into(),
            schema: json!({"type": "object", "required": ["name"]}),
        }),
        ..ask("a city")
    };
    let completion = builder(&server)
        .build()
        .unwrap()
        .complete(&request)
        .await
        .unwrap();
    assert_eq!(completion.text.as_deref(), Some("{\"name\": \"Lyon\"}"));
    let system = server.received()[0].json()["system"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(system.starts_with("be brief"), "{system}");
    assert!(system.contains(r#""required":["name"]"#), "{system}");
}

#[tokio::test]
async fn overloaded_then_success_with_retry_after() {
    let overloaded =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let server = MockServer::start(vec![
        Reply::json(529, overloaded.clone()).header("retry-after", "0.2"),
        Reply::json(429, overloaded),
        answer(
            json!([{"type": "text", "text": "ok"}]),
            json!({"input_tokens": 1, "output_tokens": 1}),
        ),
    ])
    .await;
    let completion = builder(&server)
        .build()
        .unwrap()
        .complete(&ask("hi"))
        .await
        .unwrap();
    assert_eq!(completion.text.as_deref(), Some("ok"));
    let received = server.received();
    assert_eq!(received.len(), 3);
    assert!(received[1].at - received[0].at >= Duration::from_millis(200));
}

#[tokio::test]
async fn errors_exhaust_retries_and_auth_is_final() {
    let error_body =
        |m: &str| json!({"type": "error", "error": {"type": "api_error", "message": m}});
    let server = MockServer::start(vec![
        Reply::json(500, error_body("down 1")),
        Reply::json(500, error_body("down 2")),
    ])
    .await;
    let lm = builder(&server).max_retries(1).build().unwrap();
    let error = lm.complete(&ask("hi")).await.unwrap_err();
    assert!(
        matches!(&error, LmError::Http { status: 500, message, .. } if message.contains("down 2") && message.contains("2 attempts")),
        "{error:?}"
    );

    let server = MockServer::start(vec![Reply::json(
        401,
        json!({"type": "error", "error": {"type": "authentication_error", "message": format!("invalid x-api-key {KEY}")}}),
    )])
    .await;
    let error = builder(&server)
        .build()
        .unwrap()
        .complete(&ask("hi"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, LmError::Http { status: 401, .. }),
        "{error:?}"
    );
    assert_eq!(server.received().len(), 1);
    assert!(!error.to_string().contains(KEY));
    assert!(!format!("{error:?}").contains(KEY));
    assert!(
        error.to_string().contains("invalid x-api-key [redacted]"),
        "{error}"
    );
}

#[tokio::test]
async fn timeout_malformed_and_truncated_answers_are_errors() {
    let server = MockServer::start(vec![Reply::raw(200, "{}").delay(Duration::from_secs(5))]).await;
    let lm = builder(&server)
        .timeout(Duration::from_millis(150))
        .max_retries(0)
        .build()
        .unwrap();
    let error = lm.complete(&ask("hi")).await.unwrap_err();
    assert!(matches!(error, LmError::Timeout { .. }), "{error:?}");

    for reply in [
        Reply::raw(200, "{\"content\": [{\"type\": \"text\""),
        Reply::raw(200, "{\"content\": \"not blocks\"}"),
        Reply::raw(200, "{\"id\": \"msg\"}"),
        Reply::raw(200, "{\"content\": []}").truncated_to_claim(400),
    ] {
        let server = MockServer::start(vec![reply]).await;
        let error = builder(&server)
            .build()
            .unwrap()
            .complete(&ask("hi"))
            .await
            .unwrap_err();
        assert!(matches!(error, LmError::Malformed { .. }), "{error:?}");
    }
}

#[test]
fn missing_key_names_the_variable() {
    let error = Lm::builder("anthropic/claude-haiku-4-5")
        .env(|_| None)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("ANTHROPIC_API_KEY"), "{error}");
    let lm = Lm::builder("anthropic/claude-haiku-4-5")
        .env(|name| (name == "ANTHROPIC_API_KEY").then(|| KEY.to_owned()))
        .build()
        .unwrap();
    assert!(!format!("{lm:?}").contains(KEY));
}
