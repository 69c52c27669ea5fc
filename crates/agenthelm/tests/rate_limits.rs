//! Rate limits against a loopback OpenAI-compatible server that records when each request
//! arrives: concurrent steps share one limit and never exceed it, tokens are charged and
//! corrected, and what the service says about its limits holds back every call sharing it.

use agenthelm::lm::{CompletionRequest, Message, RateLimit, RateLimitCause, RateLimits, RateWait};
use agenthelm::prelude::*;
use agenthelm_test_support::{MockServer, Received, Reply};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A chat-completions answer with `message` and the given usage.
fn answer(message: Value, prompt_tokens: u64, completion_tokens: u64) -> Reply {
    Reply::json(
        200,
        json!({
            "model": "test-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        }),
    )
}

fn text(content: &str) -> Reply {
    answer(json!({"role": "assistant", "content": content}), 10, 5)
}

/// A model that first asks for the `note` tool, then answers once it has the tool's result: two
/// calls per conversation, whatever the order in which concurrent conversations arrive.
fn tool_then_answer(request: &Received) -> Reply {
    let body = request.json();
    let has_tool_result = body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
    if has_tool_result {
        return text("done");
    }
    answer(
        json!({"role": "assistant", "content": "", "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "note", "arguments": "{\"text\": \"x\"}"}
        }]}),
        10,
        5,
    )
}

/// The arrival times of what `server` received, in order.
fn arrivals(server: &MockServer) -> Vec<Instant> {
    let mut times: Vec<Instant> = server.received().iter().map(|r| r.at).collect();
    times.sort();
    times
}

/// The most arrivals any window of `window` holds.
fn busiest(times: &[Instant], window: Duration) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn builder(server: &MockServer) -> agenthelm::LmBuilder {
    Lm::builder("openai/test-model").base_url(format!("{}/v1", server.url()))
}

fn ask(text: &str, max_tokens: u32) -> CompletionRequest {
    CompletionRequest {
        messages: vec![Message::user(text)],
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

/// Collects the waits reported for one call.
fn recorder() -> (
    Arc<Mutex<Vec<RateWait>>>,
    impl Fn(&RateWait) + Send + Sync + 'static,
) {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&waits);
    (waits, move |wait: &RateWait| {
        seen.lock().unwrap().push(*wait)
    })
}

/// Between the limiter letting a request through and the server reading it lies the time to
/// send it, which differs a little from request to request; the server's windows are checked
/// this much shorter than the limit's.
const SEND_JITTER: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_concurrent_steps_never_exceed_the_shared_limit_and_show_their_waits() {
    /// Write a note.
    #[tool]
    fn note(text: String) -> String {
        format!("noted: {text}")
    }

    let server = MockServer::responding(tool_then_answer);
    let window = Duration::from_secs(1);
    let limits = RateLimits::new().with("openai", RateLimit::per(3, window).unwrap());
    let mut registry = AgentRegistry::new();
    let mut steps = Vec::new();
    for i in 0..4 {
        // Each agent has a model of its own, built apart: the limit is shared all the same.
        let lm = builder(&server).rate_limits(&limits).build().unwrap();
        registry
            .register(ToolAgent::new(format!("w{i}"), lm, tools![note]))
            .unwrap();
        steps.push(PlanStep::new(format!("s{i}"), "write a note").agent(format!("w{i}")));
    }
    let mut plan = Plan::new("four notes");
    plan.steps = steps;
    plan.approved = true;

    let started = Instant::now();
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    let took = started.elapsed();

    assert!(result.success, "{:?}", result.error);
    let calls: Vec<&Event> = result
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::LlmCall { .. }))
        .collect();
    assert_eq!(calls.len(), 8, "two calls a step");
    assert!(
        calls
            .iter()
            .all(|e| matches!(&e.kind, EventKind::LlmCall { error: None, .. })),
        "every call waited, none failed"
    );
    let times = arrivals(&server);
    assert_eq!(times.len(), 8);
    assert!(
        busiest(&times, window - SEND_JITTER) <= 3,
        "more than 3 requests within a window: {:?}",
        times.iter().map(|t| *t - times[0]).collect::<Vec<_>>()
    );
    // 8 requests at 3 a second: the last ones go in the third window.
    assert!(times[7] - times[0] >= window * 2 - SEND_JITTER, "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // The waits are in the events, on the steps that waited, with how long they expected.
    let waits: Vec<(&str, f64)> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RateLimitWait {
                model,
                limit,
                wait_ms,
            } => {
                assert_eq!(model, "openai/test-model");
                assert_eq!(*limit, RateLimitCause::Requests);
                Some((e.step_id.as_deref().unwrap(), *wait_ms))
            }
            _ => None,
        })
        .collect();
    assert!(waits.len() >= 5, "5 of the 8 calls wait: {waits:?}");
    assert!(
        waits.iter().all(|(_, ms)| *ms >= 1.0 && *ms <= 2100.0),
        "{waits:?}"
    );
    // Each wait comes before the call it held back, in the same step.
    for (step, _) in &waits {
        let wait_at = result.events.iter().position(|e| {
            matches!(e.kind, EventKind::RateLimitWait { .. }) && e.step_id.as_deref() == Some(step)
        });
        let call_at = result.events.iter().rposition(|e| {
            matches!(e.kind, EventKind::LlmCall { .. }) && e.step_id.as_deref() == Some(step)
        });
        assert!(wait_at < call_at, "{step}");
    }
}

#[tokio::test]
async fn tokens_are_charged_an_estimate_first_and_the_actual_use_after() {
    let server = MockServer::start_then(
        vec![
            // Two concurrent calls that use little; then one that uses nearly the whole budget.
            text("a").delay(Duration::from_millis(150)),
            text("b").delay(Duration::from_millis(150)),
            answer(json!({"role": "assistant", "content": "big"}), 300, 95),
        ],
        text("after"),
    );
    let limit = RateLimit::tokens_per(400, Duration::from_secs(1)).unwrap();
    let lm = builder(&server)
        .rate_limits(&RateLimits::new().with("openai/test-model", limit))
        .build()
        .unwrap();

    // Each asks for up to 300 tokens: the second cannot go beside the first's estimate, but
    // goes as soon as the first answer says it used 15, long before the window is over.
    let request = ask("hi", 300);
    let (first, second) = tokio::join!(lm.complete(&request), lm.complete(&request));
    first.unwrap();
    second.unwrap();
    let times = arrivals(&server);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(140),
        "waited for the first: {gap:?}"
    );
    assert!(
        gap < Duration::from_millis(700),
        "not for the window: {gap:?}"
    );

    // The third used 395 of 400: the fourth waits until it leaves the window.
    lm.complete(&request).await.unwrap();
    let (waits, on_wait) = recorder();
    lm.complete_observed(&request, on_wait).await.unwrap();
    let times = arrivals(&server);
    assert!(times[3] - times[2] >= Duration::from_secs(1) - SEND_JITTER);
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0].cause, RateLimitCause::Tokens);
}

#[tokio::test]
async fn nothing_remaining_in_the_headers_holds_back_every_model_sharing_the_limit() {
    let server = MockServer::start_then(
        vec![text("last one")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "400ms")],
        text("ok"),
    );
    // No limit of our own: models built with the same `RateLimits` still share the service's.
    let limits = RateLimits::new();
    let first = builder(&server).rate_limits(&limits).build().unwrap();
    let other = builder(&server).rate_limits(&limits).build().unwrap();

    let (before, on_wait) = recorder();
    first
        .complete_observed(&ask("hi", 10), on_wait)
        .await
        .unwrap();
    assert!(before.lock().unwrap().is_empty(), "nothing to wait for yet");
    let (waits, on_wait) = recorder();
    other
        .complete_observed(&ask("hi", 10), on_wait)
        .await
        .unwrap();

    let times = arrivals(&server);
    assert!(
        times[1] - times[0] >= Duration::from_millis(350),
        "{:?}",
        times[1] - times[0]
    );
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0].cause, RateLimitCause::Service);
    assert!(waits[0].wait > Duration::from_millis(300), "{waits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_the_shared_limiter_for_every_caller() {
    let server = MockServer::start_then(
        vec![Reply::json(429, json!({"error": {"message": "slow down"}}))
            .header("retry-after-ms", "400")],
        text("ok"),
    );
    // No limit of our own: clones of one model share the limiter every HTTP model has.
    let lm = builder(&server).build().unwrap();
    let started = Instant::now();
    let hit = {
        let lm = lm.clone();
        tokio::spawn(async move { lm.complete(&ask("first", 10)).await })
    };
    // The second call starts while the service's pause holds.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (waits, on_wait) = recorder();
    lm.complete_observed(&ask("second", 10), on_wait)
        .await
        .unwrap();
    hit.await.unwrap().unwrap();

    let times = arrivals(&server);
    assert_eq!(
        times.len(),
        3,
        "one 429 and two answers, nothing sent during the pause"
    );
    assert!(
        times[1] - times[0] >= Duration::from_millis(350),
        "{:?}",
        times[1] - times[0]
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0].cause, RateLimitCause::Service);
}
