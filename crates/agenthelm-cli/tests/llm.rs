//! `run` and `chat` against a loopback OpenAI-compatible server.

mod common;
use agenthelm_test_support::stops_running;
use common::*;
use serde_json::json;

fn llm_workspace() -> TempDir {
    let dir = TempDir::new("cli-llm");
    workspace(&dir, "");
    dir
}

#[test]
fn run_shows_tool_calls_answer_tokens_and_cost() {
    let dir = llm_workspace();
    let server = LlmServer::start(vec![
        tool_reply("create", json!({"name": "from-llm"})),
        text_reply("I created the file from-llm.", 30, 12),
    ]);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .env("OPENAI_API_KEY", "sk-secret-test-value")
        // The most verbose logs must not show the key either.
        .args(["-vvv", "run", "make a file called from-llm"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout.trim(), "I created the file from-llm.");
    assert!(
        run.stderr.contains(r#"· create({"name":"from-llm"})"#),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("tokens: 50 in, 19 out; cost: $"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("sk-secret-test-value"));
    assert!(dir.path().join("created/from-llm").exists());

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0]["line"]
        .as_str()
        .unwrap()
        .starts_with("POST /v1/chat/completions"));
    assert_eq!(requests[0]["body"]["model"], "test-model");
    let tools: Vec<&str> = requests[0]["body"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"create") && tools.contains(&"gate"),
        "{tools:?}"
    );
    let messages = requests[1]["body"]["messages"].as_array().unwrap();
    let tool_message = messages.iter().find(|m| m["role"] == "tool").unwrap();
    assert!(tool_message["content"]
        .as_str()
        .unwrap()
        .contains("from-llm"));
}

#[test]
fn run_fails_with_exit_1_when_the_model_fails() {
    let dir = llm_workspace();
    let server = LlmServer::start(vec![]);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["run", "anything"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 1, "{}", run.all());
    let last = run.stderr.trim_end().lines().last().unwrap();
    assert!(last.starts_with("error: agent `worker` failed:"), "{last}");
    assert!(last.contains("500"), "{last}");
}

#[test]
fn run_bad_input_exits_2() {
    let dir = llm_workspace();
    let run = common::run(dir.path(), &["run", "x", "--agent", "nobody"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("agent `nobody` is not defined"),
        "{}",
        run.stderr
    );
    let run = common::run(dir.path(), &["run", "x", "--model", "nonsense"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("nonsense"), "{}", run.stderr);
    let run = common::run(dir.path(), &["run", "x", "--model", "warp/drive"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("unknown provider `warp`"),
        "{}",
        run.stderr
    );

    let bare = TempDir::new("cli-llm");
    bare.write("agenthelm.yaml", "agents:\n  a: {}\n");
    let run = common::run(bare.path(), &["run", "x"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("no model is configured"),
        "{}",
        run.stderr
    );
}

#[test]
fn run_uses_the_model_from_the_flag() {
    let dir = llm_workspace();
    let server = LlmServer::start(vec![text_reply("ok", 1, 1)]);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["run", "hi", "--model", "openai/other-model"])
        .output()
        .unwrap();
    assert_eq!(output(out).code, 0);
    assert_eq!(server.requests()[0]["body"]["model"], "other-model");
}

#[test]
fn chat_keeps_the_conversation() {
    use std::io::Write;
    let dir = llm_workspace();
    let server = LlmServer::start(vec![
        text_reply("Hello, Ada.", 5, 3),
        text_reply("Your name is Ada.", 9, 5),
    ]);
    let mut child = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"my name is Ada\n\nwhat is my name?\n")
        .unwrap();
    let run = output(child.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout, "Hello, Ada.\nYour name is Ada.\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let second = requests[1]["body"]["messages"].to_string();
    assert!(
        second.contains("my name is Ada") && second.contains("Hello, Ada."),
        "{second}"
    );
    assert!(second.contains("what is my name?"));
}

#[test]
fn execute_sends_underspecified_steps_to_the_agent_model() {
    let dir = llm_workspace();
    let server = LlmServer::start(vec![
        tool_reply("create", json!({"name": "by-agent"})),
        text_reply("done", 11, 2),
    ]);
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: think\n    description: create a file named by-agent\n",
    );
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["execute", "plan.yaml", "--yes", "--json"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["steps"][0]["agent"], "worker");
    assert_eq!(json["token_usage"]["input_tokens"], 31);
    assert!(dir.path().join("created/by-agent").exists());
}

fn planned() -> serde_json::Value {
    json!({
        "goal": "make two files and report",
        "reasoning": "the files are independent",
        "steps": [
            {"id": "one", "description": "first file", "agent_name": "worker", "tool_name": "create",
             "args": {"name": "one"}, "depends_on": []},
            {"id": "two", "description": "second file", "agent_name": "worker", "tool_name": "create",
             "args": {"name": "two"}, "depends_on": []},
            {"id": "report", "description": "report", "agent_name": "worker", "tool_name": "echo",
             "args": {"made": "{{steps.one.result.id}}"}, "depends_on": ["one", "two"]}
        ]
    })
}

#[test]
fn plan_shows_and_saves_a_plan_from_the_model() {
    let dir = llm_workspace();
    let server = LlmServer::start(vec![text_reply(&planned().to_string(), 100, 60)]);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["plan", "make two files and report", "-o", "saved.yaml"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("wave 1 (in parallel): one, two"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Saved the plan to saved.yaml"));
    assert!(
        run.stderr.contains("tokens: 100 in, 60 out"),
        "{}",
        run.stderr
    );
    assert!(
        !dir.path().join("created").exists(),
        "nothing runs without --approve"
    );
    // The planner was told about the workspace's agents and tools.
    let prompt = server.requests()[0]["body"]["messages"].to_string();
    assert!(
        prompt.contains("worker") && prompt.contains("create"),
        "{prompt}"
    );
    // The saved plan is a valid plan file for `show` and `execute`.
    let show = common::run(dir.path(), &["show", "saved.yaml", "-f", "json"]);
    assert_eq!(show.code, 0, "{}", show.all());
    let saved: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(saved["approved"], false);
    assert_eq!(saved["steps"][2]["depends_on"], json!(["one", "two"]));
    let executed = common::run(dir.path(), &["execute", "saved.yaml", "--yes"]);
    assert_eq!(executed.code, 0, "{}", executed.all());
}

#[test]
fn plan_approve_executes_at_once() {
    let dir = llm_workspace();
    let server = LlmServer::start(vec![text_reply(&planned().to_string(), 100, 60)]);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["plan", "make two files and report", "--approve", "--json"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["success"], true);
    assert_eq!(json["steps"][2]["result"]["args"]["made"], "one");
    assert!(dir.path().join("created/one").exists() && dir.path().join("created/two").exists());
    // The run is journaled like one of `execute`.
    let runs = common::run(dir.path(), &["runs", "list", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], json["run_id"]);
    assert_eq!(runs[0]["success"], true);
}

#[test]
fn plan_fails_with_exit_1_when_no_valid_plan_comes_back() {
    let dir = llm_workspace();
    let bad = json!({"goal": "g", "reasoning": "r", "steps": [
        {"id": "x", "description": "d", "tool_name": "teleport", "args": {}, "depends_on": []}]});
    let server = LlmServer::start(vec![
        text_reply(&bad.to_string(), 1, 1),
        text_reply(&bad.to_string(), 1, 1),
        text_reply(&bad.to_string(), 1, 1),
    ]);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["plan", "go somewhere", "-o", "never.yaml"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 1, "{}", run.all());
    let last = run.stderr.trim_end().lines().last().unwrap();
    assert!(
        last.contains("got no valid plan") && last.contains("teleport"),
        "{last}"
    );
    assert!(!dir.path().join("never.yaml").exists());
}

#[test]
fn ctrl_c_during_run_stops_the_running_tool() {
    let dir = llm_workspace();
    let server = LlmServer::start(vec![tool_reply("gate", json!({"name": "never"}))]);
    let mut child = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["run", "wait for the gate"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = dir.path().join("waiting");
    let mut tool_pid = String::new();
    for _ in 0..2000 {
        tool_pid = std::fs::read_to_string(&waiting).unwrap_or_default();
        if !tool_pid.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!tool_pid.is_empty(), "the tool never started");
    let tool_pid: u32 = tool_pid.trim().parse().unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let _ = child.stdin.take();
    let run = output(child.wait_with_output().unwrap());
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    // The tool (which never got the Ctrl-C itself) was sent SIGKILL with its process group; on a
    // busy machine it may take a moment to be torn down.
    assert!(stops_running(tool_pid), "tool {tool_pid} still runs");
    assert!(!dir.path().join("created/never").exists());
}

#[test]
fn run_shows_a_wait_for_the_services_rate_limit() {
    use agenthelm_test_support::{MockServer, Reply};
    let dir = llm_workspace();
    // The first answer says no request is left for 2 s (longer than the tool call between the
    // two model calls takes): the second call waits, visibly.
    let server = MockServer::start_then(
        vec![Reply::json(200, tool_reply("echo", json!({})))
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "2s")],
        Reply::json(200, text_reply("Echoed.", 5, 2)),
    );
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env("OPENAI_API_KEY", "sk-test")
        .args(["run", "echo something"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout.trim(), "Echoed.");
    assert!(
        run.stderr
            .contains("for the service's rate limit of openai/test-model"),
        "{}",
        run.stderr
    );
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert!(received[1].at - received[0].at >= std::time::Duration::from_millis(1900));
    // Only that wait: no limit of the workspace's own holds anything back.
    assert_eq!(run.stderr.matches("⏳").count(), 1, "{}", run.stderr);
}
