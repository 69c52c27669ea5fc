//! Redaction in `agenthelm serve` (issue 13, item 3): a plan reviewed, approved and run through
//! the HTTP API, with a token read as `{{env.NAME}}` and an e-mail address in its goal, a
//! person's reason and a tool's result. The tool gets the real token; the store, the run's API
//! views, its report and its event stream hold neither.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

mod common;

const AL: &str = "al-token-0123456789abcdef";
/// Set in this test process only: the workspace lists it under `redact.env`.
const TOKEN_VAR: &str = "AGENTHELM_SERVER_TEST_MAIL_TOKEN";
const TOKEN: &str = "srv-token-PLANTED-93b1";
const EMAIL: &str = "planted.person@example.com";

const WORKSPACE: &str = r#"
tools:
  send:
    command: [sh, -c, "cat >> sent.log; echo >> sent.log; echo '{\"owner\": \"planted.person@example.com\"}'"]
redact:
  env: [AGENTHELM_SERVER_TEST_MAIL_TOKEN]
  presets: [email]
"#;

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).bearer_auth(AL).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.text().await.unwrap()
}

/// The event stream of a finished run, as text.
async fn stream_text(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).bearer_auth(AL).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("run_finished") {
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            _ => break,
        }
    }
    text
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "{what} holds the token:\n{text}");
    assert!(!text.contains(EMAIL), "{what} holds the email:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_run_keeps_no_planted_secret() {
    // Edition 2021: setting a variable is safe; the name is this test's own.
    std::env::set_var(TOKEN_VAR, TOKEN);
    let server = common::start_with("server-redaction", WORKSPACE, &[("al", AL)], None).await;
    let http = reqwest::Client::new();
    let plan = format!(
        "goal: write to {EMAIL}\nsteps:\n  - {{id: send, tool: send, args: {{token: \"{{{{env.{TOKEN_VAR}}}}}\"}}}}\n"
    );
    let submitted = http
        .post(format!("{}/api/runs", server.url))
        .bearer_auth(AL)
        .json(&json!({"plan": plan, "approve": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::CREATED);
    let id = submitted.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approved = http
        .post(format!("{}/api/runs/{id}/approve", server.url))
        .bearer_auth(AL)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        approved.status(),
        StatusCode::OK,
        "{}",
        approved.text().await.unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run: Value =
            serde_json::from_str(&get_text(&http, &format!("{}/api/runs/{id}", server.url)).await)
                .unwrap();
        if run["state"] == "succeeded" {
            break run;
        }
        assert!(Instant::now() < deadline, "never succeeded: {run:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };

    let sent = std::fs::read_to_string(server.dir.path().join("sent.log")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(sent.trim()).unwrap(),
        json!({"token": TOKEN}),
        "the tool got the real value"
    );
    let run_text = run.to_string();
    assert_clean("the run's view", &run_text);
    assert!(run_text.contains("[redacted:email]"), "{run_text}");
    let report = get_text(&http, &format!("{}/api/runs/{id}/report", server.url)).await;
    assert_clean("the report", &report);
    let events = stream_text(&http, &format!("{}/api/runs/{id}/events", server.url)).await;
    assert!(events.contains("run_finished"), "{events}");
    assert_clean("the event stream", &events);
    // The call's arguments are on record as the plan wrote them: the reference, not the value.
    assert!(
        events.contains("{{env.AGENTHELM_SERVER_TEST_MAIL_TOKEN}}"),
        "{events}"
    );
    assert!(events.contains("[redacted:email]"), "{events}");

    // A rejected plan's reason is redacted in the run list too.
    let rejected_plan = "goal: nothing\nsteps:\n  - {id: send, tool: send, args: {}}\n";
    let submitted = http
        .post(format!("{}/api/runs", server.url))
        .bearer_auth(AL)
        .json(&json!({"plan": rejected_plan, "approve": false}))
        .send()
        .await
        .unwrap();
    let other = submitted.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rejected = http
        .post(format!("{}/api/runs/{other}/reject", server.url))
        .bearer_auth(AL)
        .json(&json!({"reason": format!("ask {EMAIL} first")}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), StatusCode::OK);
    let list = get_text(&http, &format!("{}/api/runs", server.url)).await;
    assert_clean("the run list", &list);

    let mut stored = String::new();
    for entry in std::fs::read_dir(server.dir.path().join(".agenthelm")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    assert_clean("the store", &stored);
    assert!(stored.contains("[redacted:email]"));
}
