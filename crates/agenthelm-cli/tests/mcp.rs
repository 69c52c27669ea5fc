//! MCP from the command line: `mcp list-tools`, `mcp run`, and `mcp_servers:` in the workspace
//! file (agents with `server.tool` / `server.*` tools, plans rolled back through MCP tools).
//!
//! The servers are the reference ones `scripts/test` installs (`../shared/peers/mcp-install.sh`,
//! into `$PEERS_DIR`, default `/tmp/peers`) and the peers demo server; a test whose server is
//! missing says so and returns. Models are a scripted OpenAI-compatible server on 127.0.0.1.

mod common;
use agenthelm_test_support::stops_running_within;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn peers_dir() -> PathBuf {
    std::env::var_os("PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/peers"))
}

/// The demo server's command, or `None` after saying why the test is skipped.
fn demo_server() -> Option<Vec<String>> {
    let python = peers_dir().join("venv-mcp/bin/python");
    let script = std::env::var_os("MCP_DEMO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/mcp-demo-server.py")
        });
    if python.exists() && script.exists() {
        Some(vec![
            python.display().to_string(),
            script.display().to_string(),
        ])
    } else {
        eprintln!(
            "SKIP: the peers demo MCP server is not installed ({} / {}); run \
             ../shared/peers/mcp-install.sh (scripts/test does)",
            python.display(),
            script.display()
        );
        None
    }
}

fn memory_server() -> Option<String> {
    let bin = peers_dir().join("npm/node_modules/.bin/mcp-server-memory");
    if bin.exists() {
        Some(bin.display().to_string())
    } else {
        eprintln!(
            "SKIP: {} is not installed; run ../shared/peers/mcp-install.sh",
            bin.display()
        );
        None
    }
}

fn args<'a>(head: &[&'a str], command: &'a [String]) -> Vec<&'a str> {
    let mut all = head.to_vec();
    all.push("--");
    all.extend(command.iter().map(String::as_str));
    all
}

/// The scripted model server; killed when dropped.
struct ScriptedLlm {
    child: Child,
    url: String,
    log: PathBuf,
}

impl ScriptedLlm {
    /// A model that first calls `tool` with `arguments`, then reports what the tool said.
    fn start(dir: &TempDir, tool: &str, arguments: &str) -> ScriptedLlm {
        let port_file = dir.path().join("llm.port");
        let log = dir.path().join("llm.log");
        let child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scripted_llm.py"))
            .arg(&port_file)
            .arg(&log)
            .env("SCRIPTED_TOOL", tool)
            .env("SCRIPTED_ARGS", arguments)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut port = None;
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                port = Some(text);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = port.expect("the scripted model server did not start");
        ScriptedLlm {
            child,
            url: format!("http://127.0.0.1:{}/v1", port.trim()),
            log,
        }
    }

    /// The request bodies it received.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// agenthelm mcp list-tools

#[test]
fn list_tools_shows_names_descriptions_and_parameters() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    let run = run(dir.path(), &args(&["mcp", "list-tools"], &demo));
    assert_eq!(run.code, 0, "{}", run.all());
    for expected in [
        "add",
        "Add two integers.",
        "a: integer, b: integer",
        "fail",
        "[msg: string]",
        "sleep",
    ] {
        assert!(
            run.stdout.contains(expected),
            "missing {expected:?}:\n{}",
            run.all()
        );
    }
    assert!(
        run.stderr
            .contains("4 tools from MCP server `mcp-demo-server`"),
        "{}",
        run.stderr
    );
}

#[test]
fn list_tools_as_json() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    let run = run(dir.path(), &args(&["mcp", "list-tools", "--json"], &demo));
    assert_eq!(run.code, 0, "{}", run.all());
    let tools: Value = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "echo", "fail", "sleep"]);
    assert_eq!(tools[0]["parameters"]["properties"]["b"]["type"], "integer");
}

#[test]
fn list_tools_refuses_bad_servers_with_clear_errors() {
    let dir = TempDir::new("cli-mcp");
    let none = run(dir.path(), &["mcp", "list-tools"]);
    assert_eq!(none.code, 2, "{}", none.all());
    assert!(none.stderr.contains("which MCP server?"), "{}", none.stderr);

    let missing = run(
        dir.path(),
        &[
            "mcp",
            "list-tools",
            "--",
            "/nonexistent/agenthelm-mcp-server",
        ],
    );
    assert_eq!(missing.code, 2, "{}", missing.all());
    assert!(
        missing.stderr.contains("could not start MCP server")
            && missing.stderr.contains("/nonexistent/agenthelm-mcp-server"),
        "{}",
        missing.stderr
    );

    let silent = run(
        dir.path(),
        &[
            "mcp",
            "list-tools",
            "--startup-timeout",
            "1",
            "--",
            "sleep",
            "600",
        ],
    );
    assert_eq!(silent.code, 1, "{}", silent.all());
    assert!(
        silent
            .stderr
            .contains("did not answer `initialize` within 1.0s"),
        "{}",
        silent.stderr
    );

    let bad_url = run(dir.path(), &["mcp", "list-tools", "--url", "ftp://x"]);
    assert_eq!(bad_url.code, 2, "{}", bad_url.all());
    let bad_timeout = run(
        dir.path(),
        &["mcp", "list-tools", "--startup-timeout", "-3", "--", "x"],
    );
    assert_eq!(bad_timeout.code, 2, "{}", bad_timeout.all());
}

#[test]
fn list_tools_of_a_workspace_server() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    dir.write(
        "agenthelm.yaml",
        &format!("mcp_servers:\n  demo:\n    command: {demo:?}\n"),
    );
    let listed = run(
        dir.path(),
        &["mcp", "list-tools", "--server", "demo", "--json"],
    );
    assert_eq!(listed.code, 0, "{}", listed.all());
    assert!(listed.stdout.contains("\"add\""), "{}", listed.stdout);
    let unknown = run(dir.path(), &["mcp", "list-tools", "--server", "nope"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(
        unknown
            .stderr
            .contains("`nope` is not defined under `mcp_servers:`")
            && unknown.stderr.contains("defined: demo"),
        "{}",
        unknown.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// agenthelm mcp run

#[test]
fn mcp_run_gives_the_agent_the_servers_tools() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    let llm = ScriptedLlm::start(&dir, "add", r#"{"a": 20, "b": 22}"#);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &llm.url)
        .args(args(
            &[
                "mcp",
                "run",
                "-t",
                "add 20 and 22",
                "--model",
                "openai/scripted",
            ],
            &demo,
        ))
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        run.stdout.trim(),
        r#"tool said: {"result":42}"#,
        "{}",
        run.all()
    );

    // The model was offered the server's tools, schemas included.
    let first = &llm.requests()[0];
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["add", "echo", "fail", "sleep"]);
    assert_eq!(
        first["tools"][0]["function"]["parameters"]["required"],
        serde_json::json!(["a", "b"])
    );
}

#[test]
fn mcp_run_reports_tool_errors_to_the_model() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    let llm = ScriptedLlm::start(&dir, "fail", r#"{"msg": "no such invoice"}"#);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &llm.url)
        .args(args(
            &[
                "mcp",
                "run",
                "-t",
                "fail please",
                "--model",
                "openai/scripted",
            ],
            &demo,
        ))
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("no such invoice"), "{}", run.all());
}

#[test]
fn mcp_run_needs_a_model() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    let run = run(dir.path(), &args(&["mcp", "run", "-t", "anything"], &demo));
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("no model"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// mcp_servers: in the workspace file

#[test]
fn workspace_agents_use_mcp_tools_by_reference() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    dir.write(
        "agenthelm.yaml",
        &format!(
            "model: openai/scripted\nagents:\n  calc:\n    tools: [demo.add]\n\
             mcp_servers:\n  demo:\n    command: {demo:?}\n"
        ),
    );
    let llm = ScriptedLlm::start(&dir, "add", r#"{"a": 1, "b": 2}"#);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &llm.url)
        .args(["run", "add 1 and 2"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout.trim(), r#"tool said: {"result":3}"#);
    let offered = llm.requests()[0]["tools"].as_array().unwrap().len();
    assert_eq!(offered, 1, "only the listed tool is offered");
}

#[test]
fn workspace_mcp_mistakes_name_the_file_line_and_key() {
    let dir = TempDir::new("cli-mcp");
    dir.write(
        "agenthelm.yaml",
        "agents:\n  a:\n    tools: [ghost.tool]\nmcp_servers:\n  demo:\n    command: [x]\n",
    );
    let run_ = run(dir.path(), &["run", "task"]);
    assert_eq!(run_.code, 2, "{}", run_.all());
    assert!(
        run_.stderr.contains("agenthelm.yaml:3: `agents.a.tools`")
            && run_
                .stderr
                .contains("`ghost` is not defined under `mcp_servers:` (defined: demo)"),
        "{}",
        run_.stderr
    );

    dir.write(
        "agenthelm.yaml",
        "mcp_servers:\n  demo:\n    command: [x]\n    url: http://127.0.0.1:1/mcp\n",
    );
    let both = run(dir.path(), &["run", "task"]);
    assert_eq!(both.code, 2, "{}", both.all());
    assert!(
        both.stderr.contains("`mcp_servers.demo`") && both.stderr.contains("not both"),
        "{}",
        both.stderr
    );

    dir.write(
        "agenthelm.yaml",
        "mcp_servers:\n  demo:\n    command: [x]\n    tools:\n      t: { retry: 1 }\n",
    );
    let typo = run(dir.path(), &["run", "task"]);
    assert_eq!(typo.code, 2, "{}", typo.all());
    assert!(
        typo.stderr.contains("agenthelm.yaml:5") && typo.stderr.contains("retry"),
        "{}",
        typo.stderr
    );
}

#[test]
fn an_unknown_tool_of_a_configured_server_is_bad_input() {
    let Some(demo) = demo_server() else { return };
    let dir = TempDir::new("cli-mcp");
    dir.write(
        "agenthelm.yaml",
        &format!(
            "model: openai/scripted\nagents:\n  calc:\n    tools: [demo.multiply]\n\
             mcp_servers:\n  demo:\n    command: {demo:?}\n"
        ),
    );
    let run = run(dir.path(), &["run", "task"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("agent `calc`")
            && run
                .stderr
                .contains("has no tool `multiply` (its tools: add, echo, fail, sleep)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_plan_with_mcp_steps_is_rolled_back_through_mcp_compensations() {
    let (Some(memory), Some(demo)) = (memory_server(), demo_server()) else {
        return;
    };
    let dir = TempDir::new("cli-mcp");
    let memory_file = dir.path().join("memory.jsonl");
    dir.write(
        "agenthelm.yaml",
        &format!(
            r#"agents:
  keeper:
    tools: [memory.create_entities, memory.create_relations, demo.fail]
mcp_servers:
  memory:
    command: [{memory:?}]
    env: {{ MEMORY_FILE_PATH: {memory_file:?} }}
    tools:
      create_relations: {{ compensating_tool: delete_relations }}
      create_entities: {{ compensating_tool: delete_entities }}
  demo:
    command: {demo:?}
"#
        ),
    );
    dir.write(
        "plan.yaml",
        r#"goal: record Ada, then fail
steps:
  - id: people
    agent: keeper
    tool: create_entities
    args: { entities: [ { name: Ada, entityType: person, observations: [] },
                        { name: Engine, entityType: machine, observations: [] } ] }
    # delete_entities takes names, not the entities: say how to undo this step.
    compensate_tool: delete_entities
    compensate_args: { entityNames: [Ada, Engine] }
  - id: link
    agent: keeper
    tool: create_relations
    args: { relations: [ { from: Ada, to: Engine, relationType: programmed } ] }
    depends_on: [people]
  - id: boom
    agent: keeper
    tool: fail
    args: { msg: quota exceeded }
    depends_on: [link]
"#,
    );
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    let status = |id: &str| {
        json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("boom"), "failed", "{}", run.all());
    assert_eq!(status("link"), "compensated", "{}", run.all());
    assert_eq!(status("people"), "compensated", "{}", run.all());
    assert!(run.all().contains("quota exceeded"), "{}", run.all());

    // The memory server's file holds no entity or relation any more.
    let stored = std::fs::read_to_string(&memory_file).unwrap_or_default();
    assert!(!stored.contains("Ada"), "left behind: {stored}");
}

// ---------------------------------------------------------------------------------------------
// No server is left behind

fn lifecycle_fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agenthelm/tests/fixtures/mcp_lifecycle_server.py")
        .display()
        .to_string()
}

/// Waits (generously, for a loaded machine) until `pid` is gone (a zombie counts as gone).
fn gone(pid: u32) -> bool {
    stops_running_within(pid, Duration::from_secs(30))
}

/// Waits until `path` has content, and returns it.
fn read_when_written(path: &Path) -> String {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} was never written", path.display());
}

#[test]
fn a_failed_run_stops_the_workspace_servers() {
    let dir = TempDir::new("cli-mcp");
    let pid_file = dir.path().join("server.pid");
    dir.write(
        "agenthelm.yaml",
        &format!(
            "model: openai/unreachable\nagents:\n  a:\n    tools: [life.*]\n\
             mcp_servers:\n  life:\n    command: [python3, {:?}, --stubborn]\n    \
             env: {{ FIXTURE_PID_FILE: {pid_file:?} }}\n",
            lifecycle_fixture()
        ),
    );
    // The model is a closed local port, so the run fails after the server started.
    let run = run(dir.path(), &["run", "do something"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let pid: u32 = read_when_written(&pid_file).trim().parse().unwrap();
    assert!(gone(pid), "MCP server {pid} outlived the failed run");
}

#[test]
fn ctrl_c_stops_the_server_of_mcp_run() {
    let dir = TempDir::new("cli-mcp");
    let marker = dir.path().join("hanging");
    let llm = ScriptedLlm::start(&dir, "hang", "{}");
    let mut child = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &llm.url)
        .env("FIXTURE_MARKER", &marker)
        .args([
            "mcp",
            "run",
            "-t",
            "hang",
            "--model",
            "openai/scripted",
            "--",
        ])
        .args(["python3", &lifecycle_fixture(), "--stubborn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server writes its pid into the marker when the call reaches it.
    let server: u32 = read_when_written(&marker).trim().parse().unwrap();
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(gone(server), "MCP server {server} outlived Ctrl-C");
}
