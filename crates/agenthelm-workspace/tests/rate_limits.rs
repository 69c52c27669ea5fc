//! `rate_limits:` reaches every model an assembly builds: the planner's and the agents' models
//! take their turns from one budget. (A file of its own: the test sets `OPENAI_BASE_URL` for its
//! whole process.)

use agenthelm::lm::{CompletionRequest, Message, RateLimitCause, RateWait};
use agenthelm_test_support::{MockServer, Reply};
use agenthelm_workspace::{Assembly, ModelNeed, UserConfig, Workspace};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn the_planner_and_every_agent_share_the_workspace_limit() {
    let server = MockServer::always(Reply::json(
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
    ));
    std::env::set_var("OPENAI_BASE_URL", format!("{}/v1", server.url()));
    let workspace = Workspace::from_text(
        Path::new("agenthelm.yaml"),
        "model: openai/test-model\nagents:\n  a: {}\n  b: {}\nrate_limits:\n  openai: {requests_per_minute: 2}\n",
    )
    .unwrap();
    let assembly = Assembly::new(&workspace, &UserConfig::default(), None);
    let request = CompletionRequest {
        messages: vec![Message::user("hi")],
        ..Default::default()
    };

    // Two calls from two models built apart use up the minute's two requests...
    let planner = assembly.lm(None, ModelNeed::Required).unwrap();
    let agent = assembly.lm(Some("a"), ModelNeed::Required).unwrap();
    planner.complete(&request).await.unwrap();
    agent.complete(&request).await.unwrap();

    // ...so a third model's call waits for the first to be a minute old (it is given up here).
    let other = assembly.lm(Some("b"), ModelNeed::Required).unwrap();
    let waits = Arc::new(Mutex::new(Vec::<RateWait>::new()));
    let seen = Arc::clone(&waits);
    let call = other.complete_observed(&request, move |w| seen.lock().unwrap().push(*w));
    let gave_up = tokio::time::timeout(Duration::from_millis(300), call).await;
    assert!(gave_up.is_err(), "the third call went through: {gave_up:?}");
    assert_eq!(server.received().len(), 2);
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0].cause, RateLimitCause::Requests);
    assert!(waits[0].wait > Duration::from_secs(59), "{waits:?}");
}
