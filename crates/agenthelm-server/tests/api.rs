//! The HTTP API over real HTTP on loopback: every route, every error code, the run state
//! machine (plan review, tool-call approval, cancel), and the event stream with
//! `Last-Event-ID`. Each test serves a workspace of command tools from a temp folder.

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const AL: &str = "al-token-0123456789abcdef";
const BO: &str = "bo-token-0123456789abcdef";

const WORKSPACE: &str = r#"
tools:
  note:
    command: [sh, -c, "cat > /dev/null; echo '{\"ok\": true}'"]
  slow:
    command: [sh, -c, "cat > /dev/null; sleep 30; echo null"]
    timeout: 60
  make:
    command: [sh, -c, "cat >> made.log; echo >> made.log; echo '{\"id\": 7}'"]
    compensating_tool: unmake
  unmake:
    command: [sh, -c, "cat >> unmade.log; echo >> unmade.log; echo null"]
  pay:
    description: Pays an amount
    command: [sh, -c, "cat >> paid.log; echo >> paid.log; echo '\"paid\"'"]
    parameters: {type: object, properties: {amount: {type: integer}}, required: [amount]}
    requires_approval: true
    compensating_tool: unmake
  fail:
    command: [sh, -c, "cat > /dev/null; echo 'boom <b>bold</b>' >&2; exit 3"]
"#;

mod common;

/// A server of [`WORKSPACE`] for al and bo, and a client.
struct Served {
    server: common::TestServer,
    http: reqwest::Client,
}

async fn serve() -> Served {
    serve_with(None).await
}

/// A server whose planner answers with `plan` (a scripted model, no network).
async fn serve_with(plan: Option<Value>) -> Served {
    let server = common::start_with("server-api", WORKSPACE, &[("al", AL), ("bo", BO)], plan).await;
    Served {
        server,
        http: reqwest::Client::new(),
    }
}

impl Served {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(AL), None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(AL), Some(body)).await
    }

    /// Submits `plan` (YAML) and returns its run id.
    async fn submit(&self, plan: &str, approve: bool) -> String {
        let (status, body) = self
            .post("/api/runs", json!({"plan": plan, "approve": approve}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["run_id"].as_str().unwrap().to_owned()
    }

    async fn run(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/runs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until run `id` is in `state` (at most 30 s) and returns it.
    async fn wait_for(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = self.run(id).await;
            if run["state"] == state {
                return run;
            }
            assert!(Instant::now() < deadline, "never {state}: {run:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.server.dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

const TWO_STEPS: &str = "goal: note then make\nsteps:\n  - {id: a, tool: note, args: {}}\n  - {id: b, tool: make, args: {name: x}, depends_on: [a]}\n";

#[tokio::test]
async fn every_route_but_health_needs_a_known_token() {
    let served = serve().await;
    let (status, body) = served.call("GET", "/api/health", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let routes = [
        ("GET", "/api/runs"),
        ("POST", "/api/runs"),
        ("GET", "/api/runs/run-x"),
        ("POST", "/api/runs/run-x/approve"),
        ("POST", "/api/runs/run-x/reject"),
        ("POST", "/api/runs/run-x/cancel"),
        ("POST", "/api/runs/run-x/replay"),
        ("GET", "/api/runs/run-x/events"),
        ("GET", "/api/runs/run-x/report"),
        ("GET", "/api/approvals"),
        ("POST", "/api/approvals/run-x:1"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let (status, body) = served.call(method, path, token, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        }
    }
    let (status, _) = served.call("GET", "/api/runs", Some(BO), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = served.get("/api/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn bad_submissions_name_what_is_wrong() {
    let served = serve().await;
    let response = served
        .http
        .post(format!("{}/api/runs", served.server.url))
        .bearer_auth(AL)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].is_string() && body["problems"].is_array(),
        "{body}"
    );

    let (status, body) = served
        .post("/api/runs", json!({"plan": TWO_STEPS, "goal": "both"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = served
        .post("/api/runs", json!({"plan": "goal: x\nsteps: [ {id: a"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line"),
        "{body}"
    );

    let unknown_tool =
        "goal: x\nsteps:\n  - {id: a, tool: note, args: {}}\n  - {id: b, tool: nope, args: {}}\n";
    let (status, body) = served
        .post("/api/runs", json!({"plan": unknown_tool}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["problems"][0]["field"], "steps[1].tool", "{body}");

    let cycle = json!({"goal": "x", "steps": [
        {"id": "a", "tool_name": "note", "args": {}, "depends_on": ["b"]},
        {"id": "b", "tool_name": "note", "args": {}, "depends_on": ["a"]}]});
    let (status, body) = served.post("/api/runs", json!({"plan": cycle})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["problems"][0]["field"]
            .as_str()
            .unwrap()
            .ends_with("depends_on"),
        "{body}"
    );

    let (status, body) = served.post("/api/runs", json!({"goal": "plan it"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no model"),
        "{body}"
    );

    let (status, body) = served.get("/api/runs?state=paused").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = served.get("/api/runs").await;
    assert_eq!(status, StatusCode::OK);
    let (runs_status, runs) = served.get("/api/runs").await;
    assert_eq!(
        (runs_status, runs),
        (StatusCode::OK, json!([])),
        "nothing was recorded"
    );
}

#[tokio::test]
async fn a_plan_waits_for_review_then_runs_as_approved() {
    let served = serve().await;
    let id = served.submit(TWO_STEPS, false).await;
    let run = served.run(&id).await;
    assert_eq!(run["state"], "awaiting_approval");
    assert_eq!(run["review"]["submitted_by"], "al");
    assert_eq!(run["review"]["decision"], Value::Null);
    assert!(
        served.log("made.log").is_empty(),
        "nothing runs before approval"
    );
    let (_, listed) = served.get("/api/runs?state=awaiting_approval").await;
    assert_eq!(listed[0]["run_id"], id.as_str());
    assert_eq!(listed[0]["steps"], 2);

    // An edit that fails the checks is refused with its field; nothing starts.
    let broken = TWO_STEPS.replace("tool: make", "tool: nope");
    let (status, body) = served
        .post(&format!("/api/runs/{id}/approve"), json!({"plan": broken}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["problems"][0]["field"], "steps[1].tool");
    assert_eq!(served.run(&id).await["state"], "awaiting_approval");

    // Bo approves an edited plan: one step more.
    let edited = format!("{TWO_STEPS}  - {{id: c, tool: note, args: {{}}, depends_on: [b]}}\n");
    let (status, body) = served
        .call(
            "POST",
            &format!("/api/runs/{id}/approve"),
            Some(BO),
            Some(json!({"plan": edited})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = served.wait_for(&id, "succeeded").await;
    assert_eq!(run["review"]["by"], "bo");
    assert_eq!(run["review"]["edited"], true);
    let statuses: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "completed", "completed"]);
    assert_eq!(run["steps"][1]["result"], json!({"id": 7}));
    assert_eq!(run["steps"][1]["attempts"], 1);
    assert_eq!(run["cost_complete"], true);
    assert_eq!(served.log("made.log").len(), 1);

    // Decided already: every decision is now a conflict.
    for action in ["approve", "reject"] {
        let (status, body) = served
            .post(&format!("/api/runs/{id}/{action}"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
    }
    let (status, _) = served
        .post(&format!("/api/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, report) = served.get(&format!("/api/runs/{id}/report")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        report.as_str().unwrap().contains("<html"),
        "the HTML report"
    );
}

#[tokio::test]
async fn a_rejected_plan_never_runs() {
    let served = serve().await;
    let id = served.submit(TWO_STEPS, false).await;
    let (status, body) = served
        .post(
            &format!("/api/runs/{id}/reject"),
            json!({"reason": "too risky"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = served.run(&id).await;
    assert_eq!(run["state"], "rejected");
    assert_eq!(run["review"]["decision"], "reject");
    assert_eq!(run["review"]["reason"], "too risky");
    let (status, _) = served
        .post(&format!("/api/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, rejected) = served.get("/api/runs?state=rejected").await;
    assert_eq!(rejected.as_array().unwrap().len(), 1);
    assert!(served.log("made.log").is_empty());
    for path in [
        "/api/runs/run-nope",
        "/api/runs/run-nope/report",
        "/api/runs/run-nope/events",
    ] {
        let (status, _) = served.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/api/runs/run-nope/approve",
        "/api/runs/run-nope/reject",
        "/api/runs/run-nope/cancel",
    ] {
        let (status, _) = served.post(path, json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_tool_call_waits_for_a_person_and_runs_as_decided() {
    let served = serve().await;
    let plan = "goal: pay\nsteps:\n  - {id: a, tool: note, args: {}}\n  - {id: b, tool: pay, args: {amount: 50}, depends_on: [a]}\n";
    let id = served.submit(plan, true).await;
    let run = served.wait_for(&id, "waiting_for_approval").await;
    assert_eq!(run["approvals"][0]["decision"], Value::Null);
    let (_, pending) = served.get("/api/approvals").await;
    let pending = pending.as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let approval = &pending[0];
    assert_eq!(
        (
            approval["run_id"].as_str(),
            approval["step_id"].as_str(),
            approval["tool"].as_str()
        ),
        (Some(id.as_str()), Some("b"), Some("pay"))
    );
    assert_eq!(approval["args"], json!({"amount": 50}));
    assert!(
        served.log("paid.log").is_empty(),
        "nothing paid before the decision"
    );
    let path = format!("/api/approvals/{}", approval["id"].as_str().unwrap());

    let (status, body) = served
        .post(
            &path,
            json!({"decision": "edit", "args": {"amount": "lots"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["problems"][0]["field"], "args.amount", "{body}");
    let (status, _) = served.post(&path, json!({"decision": "maybe"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = served.post(&path, json!({"decision": "edit"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = served
        .post("/api/approvals/run-nope:3", json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = served
        .post("/api/approvals/garbage", json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = served
        .call(
            "POST",
            &path,
            Some(BO),
            Some(json!({"decision": "edit", "args": {"amount": 5}, "reason": "half <b>now</b>"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = served.wait_for(&id, "succeeded").await;
    assert_eq!(
        served.log("paid.log"),
        [json!({"amount": 5})],
        "paid once, as edited"
    );
    let decided = &run["approvals"][0];
    assert_eq!(decided["decision"], "edit");
    assert_eq!(decided["by"], "bo");
    assert_eq!(decided["edited_args"], json!({"amount": 5}));
    assert_eq!(decided["reason"], "half <b>now</b>");
    // The report says who decided what, as text.
    let (_, report) = served.get(&format!("/api/runs/{id}/report")).await;
    let html = report.as_str().unwrap();
    assert!(html.contains(r#"<table id="approvals">"#), "{html}");
    assert!(
        html.contains("approved with edited arguments</td><td>bo</td>"),
        "{html}"
    );
    assert!(html.contains("half &lt;b&gt;now&lt;/b&gt;"), "escaped");
    assert!(
        html.contains("Plan: Submitted by al. Approved by al"),
        "{html}"
    );
    let (status, _) = served.post(&path, json!({"decision": "approve"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "decided already");
    let (_, pending) = served.get("/api/approvals").await;
    assert_eq!(pending, json!([]));
}

#[tokio::test]
async fn a_denied_call_fails_its_step_and_rolls_back() {
    let served = serve().await;
    let plan = "goal: pay\nsteps:\n  - {id: a, tool: make, args: {name: x}}\n  - {id: b, tool: pay, args: {amount: 50}, depends_on: [a]}\n";
    let id = served.submit(plan, true).await;
    let run = served.wait_for(&id, "waiting_for_approval").await;
    let path = format!(
        "/api/approvals/{}",
        run["approvals"][0]["id"].as_str().unwrap()
    );
    let (status, _) = served
        .post(&path, json!({"decision": "deny", "reason": "no"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let run = served.wait_for(&id, "failed").await;
    assert_eq!(run["approvals"][0]["decision"], "deny");
    assert!(
        run["steps"][1]["error"]
            .as_str()
            .unwrap()
            .contains("not approved: no"),
        "{run:#}"
    );
    assert_eq!(run["rollback"]["order"], json!(["a"]));
    assert_eq!(run["rollback"]["actions"][0]["state"], "done");
    assert!(served.log("paid.log").is_empty());
    assert_eq!(served.log("unmade.log").len(), 1);
}

#[tokio::test]
async fn cancelling_a_run_that_waits_for_a_person_rolls_it_back() {
    let served = serve().await;
    let plan = "goal: pay\nsteps:\n  - {id: a, tool: make, args: {name: x}}\n  - {id: b, tool: pay, args: {amount: 50}, depends_on: [a]}\n";
    let id = served.submit(plan, true).await;
    let run = served.wait_for(&id, "waiting_for_approval").await;
    let path = format!(
        "/api/approvals/{}",
        run["approvals"][0]["id"].as_str().unwrap()
    );
    let (status, _) = served
        .post(&format!("/api/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = served.wait_for(&id, "cancelled").await;
    assert_eq!(run["rollback"]["order"], json!(["a"]));
    assert_eq!(run["steps"][1]["status"], "skipped");
    let (_, pending) = served.get("/api/approvals").await;
    assert_eq!(
        pending,
        json!([]),
        "a call of a run that is over waits for nothing"
    );
    let (status, _) = served.post(&path, json!({"decision": "approve"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(served.log("paid.log").is_empty());
    assert_eq!(served.log("unmade.log").len(), 1);
}

#[tokio::test]
async fn a_failing_plan_rolls_back_and_cancel_stops_a_running_one() {
    let served = serve().await;
    let failing = "goal: fail\nsteps:\n  - {id: a, tool: make, args: {name: x}}\n  - {id: b, tool: fail, args: {}, depends_on: [a]}\n";
    let id = served.submit(failing, true).await;
    let run = served.wait_for(&id, "failed").await;
    assert!(run["steps"][1]["error"]
        .as_str()
        .unwrap()
        .contains("boom <b>bold</b>"));
    assert_eq!(run["rollback"]["actions"][0]["tool"], "unmake");

    let slow = "goal: slow\nsteps:\n  - {id: a, tool: make, args: {name: y}}\n  - {id: b, tool: slow, args: {}, depends_on: [a]}\n";
    let id = served.submit(slow, true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.run(&id).await["steps"][1]["status"] != "running" {
        assert!(Instant::now() < deadline, "b never started");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, _) = served
        .post(&format!("/api/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = served.wait_for(&id, "cancelled").await;
    assert_eq!(run["rollback"]["order"], json!(["a"]));
    assert_eq!(
        served.log("unmade.log").len(),
        2,
        "both runs undid their make"
    );
    let (status, _) = served
        .post(&format!("/api/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_run_submitted_with_a_budget_stops_when_it_is_spent() {
    let served = serve().await;
    let plan = "goal: busy\nsteps:\n  - {id: a, tool: make, args: {name: z}}\n  - {id: b, tool: note, args: {}, depends_on: [a]}\n";
    let (status, body) = served
        .post(
            "/api/runs",
            json!({"plan": plan, "approve": true, "budget": {"max_duration": "1ms"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["run_id"].as_str().unwrap();
    let run = served.wait_for(id, "failed").await;
    assert_eq!(run["budget"]["max_duration"], "1ms", "{run:#}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .starts_with("duration budget exceeded: "),
        "{run:#}"
    );
    assert_eq!(run["steps"][1]["status"], "skipped", "{run:#}");
    assert_eq!(served.log("unmade.log").len(), 1, "a was undone");

    let (status, body) = served
        .post(
            "/api/runs",
            json!({"plan": plan, "budget": {"max_duration": "soon"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("max_duration"), "{body}");
}

/// The events of an SSE stream as (id, event name, data), until it ends or `until` is seen.
async fn read_events(response: reqwest::Response, until: &str) -> Vec<(usize, String, Value)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(at) = buffer.find("\n\n") {
            let block: String = buffer.drain(..at + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            if let (Some(id), Some(event), Some(data)) =
                (field("id:"), field("event:"), field("data:"))
            {
                events.push((
                    id.parse().unwrap(),
                    event.clone(),
                    serde_json::from_str(&data).unwrap(),
                ));
                if event == until {
                    return events;
                }
            }
        }
    }
    events
}

#[tokio::test]
async fn the_event_stream_sends_history_then_live_events_and_resumes_after_last_event_id() {
    let served = serve().await;
    let id = served.submit(TWO_STEPS, false).await;
    let events_url = format!("{}/api/runs/{id}/events", served.server.url);
    // Opened while the plan waits: history first, then the run live once approved.
    let live = served
        .http
        .get(&events_url)
        .bearer_auth(AL)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (status, _) = served
        .post(&format!("/api/runs/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = read_events(live, "run_finished").await;
    let names: Vec<&str> = seen.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"plan_submitted"), "{names:?}");
    assert_eq!(names.last(), Some(&"run_finished"), "{names:?}");
    let ids: Vec<usize> = seen.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=seen.len()).collect::<Vec<_>>(),
        "ids are journal positions"
    );
    for (_, name, data) in &seen {
        assert_eq!(data["type"], name.as_str());
    }

    // The whole history again, then the stream ends (the run is over).
    served.wait_for(&id, "succeeded").await;
    let again = served
        .http
        .get(&events_url)
        .bearer_auth(AL)
        .send()
        .await
        .unwrap();
    let replayed = read_events(again, "never").await;
    assert_eq!(replayed.len(), seen.len());
    // After Last-Event-ID: only what came later.
    let after = seen.len() - 2;
    let resumed = served
        .http
        .get(&events_url)
        .bearer_auth(AL)
        .header("Last-Event-ID", after.to_string())
        .send()
        .await
        .unwrap();
    let rest = read_events(resumed, "never").await;
    let rest_ids: Vec<usize> = rest.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(rest_ids, [after + 1, after + 2]);
    assert_eq!(rest[1].2, seen[after + 1].2);
}

#[tokio::test]
async fn a_goal_is_planned_by_the_workspace_planner_and_waits_for_review() {
    let plan = json!({"goal": "note it", "reasoning": "one step", "steps": [
        {"id": "only", "description": "Take a note", "tool_name": "note", "args": {}, "depends_on": []}]});
    let served = serve_with(Some(plan)).await;
    let (status, body) = served.post("/api/runs", json!({"goal": "note it"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["state"], "awaiting_approval",
        "a written plan is reviewed first"
    );
    let run = served.run(body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["plan"]["steps"][0]["id"], "only");
    assert_eq!(run["plan"]["steps"][0]["tool_name"], "note");
}

#[tokio::test]
async fn a_replay_reproduces_a_finished_run_without_running_its_tools() {
    let served = serve().await;
    let id = served.submit(TWO_STEPS, true).await;
    served.wait_for(&id, "succeeded").await;
    assert_eq!(served.log("made.log").len(), 1);

    let (status, report) = served
        .post(&format!("/api/runs/{id}/replay"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["reproduced"], true, "{report}");
    assert_eq!(report["tool_calls_served"], 2);
    assert_eq!(served.log("made.log").len(), 1, "the tool ran again");

    let (status, body) = served.post("/api/runs/run-nope/replay", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
