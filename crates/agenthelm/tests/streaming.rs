//! Streamed answers (server-sent events) from loopback servers speaking the OpenAI and the
//! Anthropic wire formats: pieces in order, tool calls put together by index, usage from the
//! final chunk (or none), streams cut halfway, and what agents, orchestrators and the journal
//! make of them.

mod support;

use agenthelm::agent::{AgentStreamItem, TextDelta};
use agenthelm::lm::{StreamDelta, ToolCall};
use agenthelm::prelude::*;
use agenthelm::redact::Redactor;
use agenthelm::{EventKind, LmError};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{ask, fast_retries, MockServer, Reply};

/// An SSE body: each value as a `data:` event; when `done`, a chunk with the finish reason
/// (unless one has it) and OpenAI's `[DONE]`.
fn sse(chunks: &[Value], done: bool) -> String {
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    if done {
        let finished = chunks
            .iter()
            .any(|c| !c["choices"][0]["finish_reason"].is_null());
        if !finished {
            let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            body.push_str(&format!("data: {finish}\n\n"));
        }
        body.push_str("data: [DONE]\n\n");
    }
    body
}

fn stream_reply(body: String) -> Reply {
    Reply::raw(200, body).header("content-type", "text/event-stream")
}

/// An OpenAI chunk whose first choice has `delta`.
fn chunk(delta: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
           "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
}

fn text_chunks(pieces: &[&str]) -> Vec<Value> {
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}))];
    chunks.extend(pieces.iter().map(|p| chunk(json!({"content": p}))));
    chunks
}

fn usage_chunk(input: u64, output: u64) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
           "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output,
                                    "total_tokens": input + output}})
}

fn openai(server: &MockServer) -> Lm {
    Lm::builder("openai/gpt-4o-mini")
        .base_url(&server.base_url)
        .api_key("sk-test-streaming")
        .timeout(Duration::from_secs(10))
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

fn anthropic(server: &MockServer) -> Lm {
    Lm::builder("anthropic/claude-sonnet-4-5")
        .env(|_| None)
        .api_key("sk-ant-test-streaming")
        .base_url(&server.base_url)
        .build()
        .unwrap()
}

/// Streams `request` from `lm`, returning the pieces seen and the outcome.
async fn stream(
    lm: &Lm,
    request: &agenthelm::lm::CompletionRequest,
) -> (Vec<StreamDelta>, Result<agenthelm::lm::Completion, LmError>) {
    let mut seen = Vec::new();
    let outcome = lm.stream(request, &mut |delta| seen.push(delta)).await;
    (seen, outcome)
}

fn texts(deltas: &[StreamDelta]) -> Vec<String> {
    deltas
        .iter()
        .filter_map(|d| match d {
            StreamDelta::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn openai_text_arrives_in_order_and_usage_comes_from_the_final_chunk() {
    let mut chunks = text_chunks(&["Hel", "lo", " there"]);
    chunks.push(json!({"model": "gpt-4o-mini-2024-07-18",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    chunks.push(usage_chunk(12, 5));
    let server = MockServer::start(vec![stream_reply(sse(&chunks, true))]).await;
    let (seen, outcome) = stream(&openai(&server), &ask("hi")).await;
    let completion = outcome.unwrap();
    assert_eq!(texts(&seen), vec!["Hel", "lo", " there"]);
    assert_eq!(seen.len(), 3, "no pieces but text: {seen:?}");
    assert_eq!(completion.text.as_deref(), Some("Hello there"));
    assert_eq!(completion.usage, TokenUsage::new(12, 5));
    assert_eq!(completion.model, "gpt-4o-mini-2024-07-18");
    // Priced like a whole answer.
    assert!(completion.cost_usd.is_some_and(|c| c > 0.0));

    let body = server.received()[0].json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn openai_tool_call_pieces_are_put_together_by_index() {
    // OpenAI's way: id and name once, arguments in pieces, two calls interleaved.
    let call = |index: usize, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut function = json!({"arguments": args});
        if let Some(name) = name {
            function["name"] = json!(name);
        }
        let mut piece = json!({"index": index, "function": function});
        if let Some(id) = id {
            piece["id"] = json!(id);
            piece["type"] = json!("function");
        }
        chunk(json!({"tool_calls": [piece]}))
    };
    let chunks = vec![
        chunk(json!({"role": "assistant", "content": null})),
        call(0, Some("call_a"), Some("search"), ""),
        call(0, None, None, "{\"query\": "),
        call(1, Some("call_b"), Some("now"), ""),
        call(0, None, None, "\"rust\"}"),
        call(1, None, None, "{}"),
        usage_chunk(30, 20),
    ];
    let server = MockServer::start(vec![stream_reply(sse(&chunks, true))]).await;
    let (seen, outcome) = stream(&openai(&server), &ask("look it up")).await;
    let completion = outcome.unwrap();
    assert_eq!(completion.text, None);
    assert_eq!(
        completion.tool_calls,
        vec![
            ToolCall {
                id: "call_a".into(),
                name: "search".into(),
                arguments: json!({"query": "rust"})
            },
            ToolCall {
                id: "call_b".into(),
                name: "now".into(),
                arguments: json!({})
            },
        ]
    );
    assert_eq!(completion.usage, TokenUsage::new(30, 20));
    assert!(texts(&seen).is_empty());
    assert_eq!(seen.len(), 5, "{seen:?}");
}

#[tokio::test]
async fn llama_cpp_style_pieces_repeat_ids_and_names_carry_function_call_and_no_usage() {
    // As llama-cpp-python streams a tool call: id, type and name in every piece, the legacy
    // `function_call` beside `tool_calls`, and no usage chunk although it was asked for.
    let piece = |args: &str| {
        json!({"id": "chatcmpl-x", "model": "smollm2", "choices": [{"index": 0, "delta": {
            "role": null, "content": null,
            "function_call": {"name": "add", "arguments": args},
            "tool_calls": [{"index": 0, "id": "call__0_add_cmpl-x", "type": "function",
                            "function": {"name": "add", "arguments": args}}]
        }, "finish_reason": null}]})
    };
    let chunks = vec![
        piece("{\"a\": 2"),
        piece(", \"b\": 3}"),
        json!({"id": "chatcmpl-x", "model": "smollm2",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ];
    let server = MockServer::start(vec![stream_reply(sse(&chunks, true))]).await;
    let (seen, outcome) = stream(&openai(&server), &ask("add")).await;
    let completion = outcome.unwrap();
    assert_eq!(
        completion.tool_calls.len(),
        1,
        "{:?}",
        completion.tool_calls
    );
    assert_eq!(completion.tool_calls[0].id, "call__0_add_cmpl-x");
    assert_eq!(completion.tool_calls[0].name, "add");
    assert_eq!(completion.tool_calls[0].arguments, json!({"a": 2, "b": 3}));
    // No usage chunk: estimated, the answer one token a piece, the prompt by its size.
    assert_eq!(completion.usage.output_tokens, 2);
    let sent = server.received()[0].body.len() as u64;
    assert_eq!(completion.usage.input_tokens, sent / 4, "{sent} bytes sent");
    assert_eq!(completion.model, "smollm2");
    assert_eq!(
        seen,
        vec![
            StreamDelta::ToolCall {
                index: 0,
                id: Some("call__0_add_cmpl-x".into()),
                name: Some("add".into()),
                arguments: "{\"a\": 2".into()
            },
            StreamDelta::ToolCall {
                index: 0,
                id: None,
                name: None,
                arguments: ", \"b\": 3}".into()
            },
        ]
    );
}

#[tokio::test]
async fn a_legacy_function_call_alone_is_a_tool_call() {
    let chunks = vec![
        chunk(json!({"role": "assistant", "function_call": {"name": "now", "arguments": ""}})),
        chunk(json!({"function_call": {"arguments": "{\"tz\": \"UTC\"}"}})),
    ];
    let server = MockServer::start(vec![stream_reply(sse(&chunks, true))]).await;
    let (_, outcome) = stream(&openai(&server), &ask("time?")).await;
    let calls = outcome.unwrap().tool_calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "now");
    assert_eq!(calls[0].id, "call_0");
    assert_eq!(calls[0].arguments, json!({"tz": "UTC"}));
}

#[tokio::test]
async fn a_stream_cut_after_text_was_shown_is_a_clear_error_and_not_retried() {
    let cut = sse(&text_chunks(&["Half an ", "answer"]), false);
    let server = MockServer::start(vec![
        stream_reply(cut),
        stream_reply(sse(&text_chunks(&["never asked for"]), true)),
    ])
    .await;
    let (seen, outcome) = stream(&openai(&server), &ask("hi")).await;
    let error = outcome.unwrap_err();
    assert!(matches!(error, LmError::StreamCut { .. }), "{error:?}");
    assert_eq!(error.kind(), "stream_cut");
    let message = error.to_string();
    assert!(
        message.contains("the model's stream ended before the answer was complete"),
        "{message}"
    );
    assert!(message.contains("openai/gpt-4o-mini"), "{message}");
    assert_eq!(texts(&seen), vec!["Half an ", "answer"]);
    // What was shown cannot be taken back: no second request.
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_connection_broken_after_text_was_shown_is_a_clear_error_and_not_retried() {
    let body = sse(&text_chunks(&["Half"]), false);
    let claimed = body.len() + 500;
    let server = MockServer::start(vec![
        stream_reply(body).truncated_to_claim(claimed),
        stream_reply(sse(&text_chunks(&["never asked for"]), true)),
    ])
    .await;
    let (seen, outcome) = stream(&openai(&server), &ask("hi")).await;
    let error = outcome.unwrap_err();
    assert!(matches!(error, LmError::StreamCut { .. }), "{error:?}");
    assert_eq!(texts(&seen), vec!["Half"]);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn done_without_a_finish_reason_is_a_cut_stream() {
    // llama.cpp drops a stream for a newer request this way: role chunk, then `[DONE]`.
    let dropped = |pieces: &[&str]| {
        let mut body = sse(&text_chunks(pieces), false);
        body.push_str("data: [DONE]\n\n");
        stream_reply(body)
    };
    let server = MockServer::start(vec![
        dropped(&[]),
        stream_reply(sse(&text_chunks(&["Second ", "try"]), true)),
    ])
    .await;
    let (seen, outcome) = stream(&openai(&server), &ask("hi")).await;
    assert_eq!(outcome.unwrap().text.as_deref(), Some("Second try"));
    assert_eq!(texts(&seen), vec!["Second ", "try"]);
    assert_eq!(server.received().len(), 2);

    let server = MockServer::start(vec![dropped(&["Some"]), dropped(&["never"])]).await;
    let (_, outcome) = stream(&openai(&server), &ask("hi")).await;
    let message = outcome.unwrap_err().to_string();
    assert!(message.contains("no finish reason"), "{message}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_stream_cut_before_anything_was_shown_is_retried() {
    // The first answer stops after its role chunk (no text yet), the second is whole.
    let cut = sse(&[chunk(json!({"role": "assistant", "content": ""}))], false);
    let whole = sse(&text_chunks(&["Second ", "time"]), true);
    let server = MockServer::start(vec![stream_reply(cut), stream_reply(whole)]).await;
    let (seen, outcome) = stream(&openai(&server), &ask("hi")).await;
    assert_eq!(outcome.unwrap().text.as_deref(), Some("Second time"));
    assert_eq!(texts(&seen), vec!["Second ", "time"]);
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_stream_cut_every_time_gives_up_after_the_retries() {
    let cut = || stream_reply(sse(&[chunk(json!({"role": "assistant"}))], false));
    let server = MockServer::start(vec![cut(), cut(), cut(), cut()]).await;
    let lm = Lm::builder("openai/gpt-4o-mini")
        .base_url(&server.base_url)
        .api_key("sk-test-streaming")
        .retry_policy(fast_retries())
        .max_retries(2)
        .build()
        .unwrap();
    let (_, outcome) = stream(&lm, &ask("hi")).await;
    let message = outcome.unwrap_err().to_string();
    assert!(message.contains("gave up after 3 attempts"), "{message}");
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn an_http_error_before_the_stream_is_retried_like_any_call() {
    let server = MockServer::start(vec![
        Reply::json(503, json!({"error": {"message": "busy"}})),
        stream_reply(sse(&text_chunks(&["ok"]), true)),
    ])
    .await;
    let (_, outcome) = stream(&openai(&server), &ask("hi")).await;
    assert_eq!(outcome.unwrap().text.as_deref(), Some("ok"));
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_server_that_answers_whole_is_understood() {
    let whole = json!({
        "model": "local", "choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}
    });
    let server = MockServer::start(vec![Reply::json(200, whole)]).await;
    let (seen, outcome) = stream(&openai(&server), &ask("hi")).await;
    let completion = outcome.unwrap();
    assert_eq!(completion.text.as_deref(), Some("All at once"));
    assert_eq!(completion.usage, TokenUsage::new(3, 4));
    assert_eq!(texts(&seen), vec!["All at once"]);
}

#[tokio::test]
async fn a_server_refusing_stream_options_is_asked_again_without_them() {
    let server = MockServer::start(vec![
        Reply::json(
            400,
            json!({"error": {"message": "Unrecognized request argument: stream_options"}}),
        ),
        stream_reply(sse(&text_chunks(&["fine"]), true)),
        stream_reply(sse(&text_chunks(&["again"]), true)),
    ])
    .await;
    let lm = openai(&server);
    let (_, outcome) = stream(&lm, &ask("hi")).await;
    assert_eq!(outcome.unwrap().text.as_deref(), Some("fine"));
    let (_, outcome) = stream(&lm, &ask("hi")).await;
    assert_eq!(outcome.unwrap().text.as_deref(), Some("again"));
    let received = server.received();
    assert_eq!(received.len(), 3);
    assert!(received[1].json().get("stream_options").is_none());
    assert!(received[2].json().get("stream_options").is_none());
}

/// Anthropic's events, each with its `event:` line.
fn anthropic_sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

fn anthropic_start() -> Value {
    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}})
}

#[tokio::test]
async fn anthropic_text_and_tool_use_stream_with_usage() {
    let events = vec![
        anthropic_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block":
               {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}}),
        json!({"type": "message_stop"}),
    ];
    let server = MockServer::start(vec![stream_reply(anthropic_sse(&events))]).await;
    let (seen, outcome) = stream(&anthropic(&server), &ask("weather?")).await;
    let completion = outcome.unwrap();
    assert_eq!(texts(&seen), vec!["Let me ", "check."]);
    assert_eq!(completion.text.as_deref(), Some("Let me check."));
    assert_eq!(
        completion.tool_calls,
        vec![ToolCall {
            id: "toolu_1".into(),
            name: "weather".into(),
            arguments: json!({"city": "Paris"})
        }]
    );
    assert_eq!(completion.usage, TokenUsage::new(30, 42));
    assert_eq!(completion.model, "claude-sonnet-4-5-20250929");
    assert!(completion.cost_usd.is_some());
    let received = server.received();
    assert_eq!(received[0].path, "/v1/messages");
    assert_eq!(received[0].json()["stream"], true);
}

#[tokio::test]
async fn anthropic_stream_cut_after_text_is_an_error_and_an_overload_before_text_is_retried() {
    let cut = anthropic_sse(&[
        anthropic_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partial"}}),
    ]);
    let server = MockServer::start(vec![stream_reply(cut)]).await;
    let (seen, outcome) = stream(&anthropic(&server), &ask("hi")).await;
    assert!(
        matches!(outcome, Err(LmError::StreamCut { .. })),
        "{outcome:?}"
    );
    assert_eq!(texts(&seen), vec!["Partial"]);
    assert_eq!(server.received().len(), 1);

    let overloaded = anthropic_sse(&[
        anthropic_start(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]);
    let whole = anthropic_sse(&[
        anthropic_start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Fine"}}),
        json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 2}}),
        json!({"type": "message_stop"}),
    ]);
    let server = MockServer::start(vec![stream_reply(overloaded), stream_reply(whole)]).await;
    let lm = Lm::builder("anthropic/claude-sonnet-4-5")
        .env(|_| None)
        .api_key("sk-ant-test-streaming")
        .base_url(&server.base_url)
        .retry_policy(fast_retries())
        .build()
        .unwrap();
    let (_, outcome) = stream(&lm, &ask("hi")).await;
    assert_eq!(outcome.unwrap().text.as_deref(), Some("Fine"));
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn anthropic_error_event_that_is_not_passing_ends_the_call() {
    let events = anthropic_sse(&[
        anthropic_start(),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad input"}}),
    ]);
    let server = MockServer::start(vec![stream_reply(events)]).await;
    let (_, outcome) = stream(&anthropic(&server), &ask("hi")).await;
    let message = outcome.unwrap_err().to_string();
    assert!(
        message.contains("invalid_request_error: bad input"),
        "{message}"
    );
    assert_eq!(server.received().len(), 1);
}

fn llm_calls(events: &[Event]) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LlmCall { .. }))
        .map(|e| e.kind.clone())
        .collect()
}

/// The parts of an `LlmCall` event that do not depend on timing.
fn without_latency(kind: EventKind) -> EventKind {
    match kind {
        EventKind::LlmCall {
            model,
            usage,
            cost_usd,
            tool_calls,
            error,
            exchange,
            ..
        } => EventKind::LlmCall {
            model,
            usage,
            cost_usd,
            latency_ms: 0.0,
            tool_calls,
            error,
            exchange,
        },
        other => other,
    }
}

#[tokio::test]
async fn a_streaming_agent_journals_the_same_call_as_one_that_is_not() {
    let mut chunks = text_chunks(&["The ", "answer ", "is 42."]);
    chunks.push(usage_chunk(20, 6));
    let streamed = MockServer::start(vec![stream_reply(sse(&chunks, true))]).await;
    let shown = Arc::new(Mutex::new(Vec::<TextDelta>::new()));
    let sink = Arc::clone(&shown);
    let agent = ToolAgent::new("answerer", openai(&streamed), ToolSet::new())
        .on_text(move |delta| sink.lock().unwrap().push(delta.clone()));
    let result = agent.run("What is the answer?").await;
    assert!(result.success, "{:?}", result.error);
    assert_eq!(result.answer.as_deref(), Some("The answer is 42."));
    let shown = shown.lock().unwrap().clone();
    let pieces: Vec<&str> = shown.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(pieces, vec!["The ", "answer ", "is 42."]);
    assert_eq!(shown[0].agent.as_deref(), Some("answerer"));

    let whole = MockServer::start(vec![Reply::json(
        200,
        json!({"model": "gpt-4o-mini-2024-07-18",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 42."}}],
               "usage": {"prompt_tokens": 20, "completion_tokens": 6}}),
    )])
    .await;
    let plain = ToolAgent::new("answerer", openai(&whole), ToolSet::new())
        .run("What is the answer?")
        .await;

    let streamed_calls = llm_calls(&result.events);
    assert_eq!(streamed_calls.len(), 1, "one event, not one per piece");
    let EventKind::LlmCall {
        usage, exchange, ..
    } = &streamed_calls[0]
    else {
        unreachable!()
    };
    assert_eq!(*usage, TokenUsage::new(20, 6));
    assert_eq!(
        exchange.as_ref().and_then(|e| e.text.as_deref()),
        Some("The answer is 42.")
    );
    let plain_calls: Vec<EventKind> = llm_calls(&plain.events)
        .into_iter()
        .map(without_latency)
        .collect();
    let streamed_calls: Vec<EventKind> = streamed_calls.into_iter().map(without_latency).collect();
    assert_eq!(streamed_calls, plain_calls);
    // Nothing but the usual events: the pieces are not events.
    let kinds = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{:?}", std::mem::discriminant(&e.kind)))
            .collect()
    };
    assert_eq!(kinds(&result.events), kinds(&plain.events));
}

#[tokio::test]
async fn run_streaming_gives_every_turns_text_then_the_result() {
    // Turn 1: some words and a tool call; turn 2: the answer.
    let turn1 = vec![
        chunk(json!({"role": "assistant", "content": "Checking. "})),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                     "function": {"name": "echo", "arguments": "{\"text\": \"x\"}"}}]}),
        ),
    ];
    let turn2 = text_chunks(&["Done", "!"]);
    let server = MockServer::start(vec![
        stream_reply(sse(&turn1, true)),
        stream_reply(sse(&turn2, true)),
    ])
    .await;
    let echo = FnTool::new(
        "echo",
        "Echo the text",
        json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        |args: Value, _| async move { Ok::<Value, ToolError>(args["text"].clone()) },
    )
    .unwrap();
    let agent = ToolAgent::new("echoer", openai(&server), ToolSet::new().with(echo));
    let items: Vec<AgentStreamItem> = agent.run_streaming("echo x").collect().await;
    let mut pieces = Vec::new();
    let mut finished = None;
    for item in items {
        match item {
            AgentStreamItem::Text(delta) => {
                assert!(finished.is_none(), "text after the result");
                pieces.push(delta.text);
            }
            AgentStreamItem::Finished(result) => finished = Some(result),
            _ => {}
        }
    }
    assert_eq!(pieces, vec!["Checking. ", "Done", "!"]);
    let result = finished.expect("the result comes last");
    assert!(result.success, "{:?}", result.error);
    assert_eq!(result.answer.as_deref(), Some("Done!"));
}

#[tokio::test]
async fn an_orchestrator_streams_each_steps_text_and_redacts_it() {
    let secret = "sk-live-0123456789abcdef";
    let mut chunks = text_chunks(&["Your key is sk-live-0123", "456789ab", "cdef, keep it."]);
    chunks.push(usage_chunk(10, 10));
    let server = MockServer::start(vec![stream_reply(sse(&chunks, true))]).await;
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new("teller", openai(&server), ToolSet::new()))
        .unwrap();
    let shown = Arc::new(Mutex::new(Vec::<TextDelta>::new()));
    let sink = Arc::clone(&shown);
    let orchestrator = Orchestrator::new(registry)
        .redact(Redactor::new().secret("KEY", secret))
        .on_text(move |delta| sink.lock().unwrap().push(delta.clone()));
    let mut plan = Plan::new("tell");
    plan.steps
        .push(PlanStep::new("tell", "Tell the key").agent("teller"));
    plan.approved = true;
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success, "{:?}", result.error);
    let shown = shown.lock().unwrap().clone();
    let all: String = shown.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(all, "Your key is [redacted:KEY], keep it.");
    for delta in &shown {
        assert!(!delta.text.contains("sk-live"), "{shown:?}");
        assert_eq!(delta.step_id.as_deref(), Some("tell"));
        assert_eq!(delta.agent.as_deref(), Some("teller"));
        assert!(delta.run_id.is_some());
    }
    assert!(shown.len() >= 2, "shown in pieces: {shown:?}");
    assert_eq!(result.answer.as_deref(), Some(all.as_str()));
}

#[tokio::test]
async fn a_model_that_does_not_stream_hands_its_text_over_whole() {
    let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text("whole")]));
    let (seen, outcome) = stream(&lm, &ask("hi")).await;
    assert_eq!(outcome.unwrap().text.as_deref(), Some("whole"));
    assert_eq!(seen, vec![StreamDelta::Text("whole".into())]);
}
