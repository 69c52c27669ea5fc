//! `agenthelm run` is traced into the run store like a one-step plan.

mod common;
use common::*;
use serde_json::{json, Value};

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.all()))
}

#[test]
fn an_agent_run_keeps_its_llm_calls_and_tool_calls() {
    let dir = TempDir::new("cli-run-traces");
    workspace(&dir, "");
    let server = LlmServer::start(vec![
        tool_reply("create", json!({"name": "traced"})),
        text_reply("Created traced.", 30, 12),
    ]);
    let out = output(
        agenthelm(dir.path())
            .env("OPENAI_BASE_URL", &server.base_url)
            .args(["run", "make a file called traced"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("(kept in "), "{}", out.stderr);

    let runs = json_of(&run(dir.path(), &["runs", "list", "--json"]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["goal"], "make a file called traced");
    assert_eq!(runs[0]["success"], true);
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert!(out.stderr.contains(&id), "{}", out.stderr);

    let shown = json_of(&run(dir.path(), &["runs", "show", &id, "--json"]));
    assert_eq!(shown["steps"][0]["status"], "completed");
    assert_eq!(shown["steps"][0]["agent"], "worker");
    assert!(shown["token_usage"]["input_tokens"].as_u64().unwrap() >= 30);

    let traces = json_of(&run(dir.path(), &["traces", "list", "--json"]));
    let kinds: Vec<(&str, &str)> = traces
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["kind"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    // Newest first: the answer, the tool call, the call that asked for it.
    assert_eq!(
        kinds,
        [
            ("llm_call", "test-model"),
            ("tool_call", "create"),
            ("llm_call", "test-model")
        ]
    );
    assert!(traces
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["run_id"] == id.as_str() && t["agent"] == "worker"));
    let only_tools = json_of(&run(
        dir.path(),
        &[
            "traces", "filter", "--agent", "worker", "--tool", "create", "--json",
        ],
    ));
    assert_eq!(only_tools.as_array().unwrap().len(), 1);
}

#[test]
fn an_agent_run_refuses_to_start_without_a_usable_store() {
    let dir = TempDir::new("cli-run-traces");
    workspace(&dir, "");
    let db = dir.write(".agenthelm/agenthelm.db", &"not a database\n".repeat(500));
    let server = LlmServer::start(vec![text_reply("should not be asked", 1, 1)]);
    let out = output(
        agenthelm(dir.path())
            .env("OPENAI_BASE_URL", &server.base_url)
            .args(["run", "anything"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains(&db.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(server.requests().is_empty(), "the model was asked untraced");
}

#[test]
fn a_failed_agent_run_undoes_what_its_tools_did() {
    // The task is a one-step plan run by the orchestrator, so Saga rollback applies: the model
    // has `create` make a file, then fails; `create`'s compensating tool removes the file.
    let dir = TempDir::new("cli-run-traces");
    workspace(&dir, "");
    let server = LlmServer::start(vec![tool_reply("create", json!({"name": "undone"}))]);
    let out = output(
        agenthelm(dir.path())
            .env("OPENAI_BASE_URL", &server.base_url)
            .args(["run", "make a file, then fail"])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains(r#"· create({"name":"undone"})"#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("task undone with delete"),
        "{}",
        out.stderr
    );
    let last = out.stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: agent `worker` failed:")
            && last.ends_with("; what its tools did was undone"),
        "{last}"
    );
    assert!(!dir.path().join("created/undone").exists());

    let runs = json_of(&run(dir.path(), &["runs", "list", "--json"]));
    assert_eq!(runs[0]["success"], false);
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let shown = json_of(&run(dir.path(), &["runs", "show", &id, "--json"]));
    assert_eq!(shown["steps"][0]["id"], "task");
}
