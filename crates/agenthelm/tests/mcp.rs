//! MCP servers as tools, against the real reference servers that `scripts/test` installs
//! (`../shared/peers/mcp-install.sh`) and small fixture servers in `tests/fixtures`.
//!
//! Servers are found in `$PEERS_DIR` (default `/tmp/peers`); the demo server script in
//! `$MCP_DEMO_SERVER` (default `<repo>/../shared/peers/mcp-demo-server.py`). A test whose server
//! is missing says so and returns.
#![cfg(feature = "mcp")]

use agenthelm::mcp::{McpError, McpServer, McpServerConfig, McpServers, ToolOverride};
use agenthelm::prelude::*;
use agenthelm::tool::ToolCallInfo;
use agenthelm_test_support::{is_running, pid_in, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Finding the servers

fn peers_dir() -> PathBuf {
    std::env::var_os("PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/peers"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `argv` if its program exists, else `None` after printing why the test is skipped.
fn available(what: &str, argv: Vec<String>) -> Option<Vec<String>> {
    let missing: Vec<&String> = argv
        .iter()
        .filter(|a| a.starts_with('/') && !Path::new(a).exists())
        .collect();
    if missing.is_empty() {
        Some(argv)
    } else {
        eprintln!(
            "SKIP: {what} is not installed ({missing:?} missing); run ../shared/peers/mcp-install.sh \
             or set PEERS_DIR (scripts/test does this)"
        );
        None
    }
}

fn npm_server(name: &str, args: &[&str]) -> Option<Vec<String>> {
    let bin = peers_dir().join("npm/node_modules/.bin").join(name);
    let mut argv = vec![bin.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    available(name, argv)
}

fn venv_python() -> String {
    peers_dir()
        .join("venv-mcp/bin/python")
        .display()
        .to_string()
}

fn demo_server() -> Option<Vec<String>> {
    let script = std::env::var_os("MCP_DEMO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/mcp-demo-server.py")
        });
    available(
        "the peers demo MCP server",
        vec![venv_python(), script.display().to_string()],
    )
}

fn time_server() -> Option<Vec<String>> {
    let bin = peers_dir().join("venv-mcp/bin/mcp-server-time");
    available(
        "mcp-server-time",
        vec![
            bin.display().to_string(),
            "--local-timezone".into(),
            "UTC".into(),
        ],
    )
}

fn lifecycle_server(mode: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "python3".to_owned(),
        fixtures()
            .join("mcp_lifecycle_server.py")
            .display()
            .to_string(),
    ];
    argv.extend(mode.iter().map(|m| m.to_string()));
    argv
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Waits (up to a generous limit, for a loaded machine) until `pid` is gone.
async fn gone(pid: u32) -> bool {
    for _ in 0..600 {
        if !is_running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until `path` exists.
async fn appears(path: &Path) -> bool {
    for _ in 0..600 {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn info() -> ToolCallInfo {
    ToolCallInfo::default()
}

// ---------------------------------------------------------------------------------------------
// Listing tools

#[tokio::test]
async fn lists_the_tools_of_the_reference_servers() {
    let files = TempDir::new("mcp-fs");
    let memory_dir = TempDir::new("mcp-memory-list");
    let memory_file = memory_dir.join("memory.jsonl");
    let mut expected: Vec<(&str, McpServerConfig, Vec<&str>)> = Vec::new();
    if let Some(argv) = npm_server("mcp-server-everything", &[]) {
        expected.push((
            "everything",
            McpServerConfig::command(argv),
            vec!["echo", "get-sum"],
        ));
    }
    if let Some(argv) = npm_server("mcp-server-filesystem", &[&files.display().to_string()]) {
        expected.push((
            "filesystem",
            McpServerConfig::command(argv),
            vec!["read_text_file", "write_file", "list_directory"],
        ));
    }
    if let Some(argv) = npm_server("mcp-server-memory", &[]) {
        let config = McpServerConfig::command(argv)
            .env("MEMORY_FILE_PATH", memory_file.display().to_string());
        expected.push(("memory", config, vec!["create_entities", "read_graph"]));
    }
    if let Some(argv) = time_server() {
        expected.push((
            "time",
            McpServerConfig::command(argv),
            vec!["get_current_time", "convert_time"],
        ));
    }
    let fetch = peers_dir().join("venv-mcp/bin/mcp-server-fetch");
    if let Some(argv) = available("mcp-server-fetch", vec![fetch.display().to_string()]) {
        expected.push(("fetch", McpServerConfig::command(argv), vec!["fetch"]));
    }
    if let Some(argv) = demo_server() {
        expected.push((
            "demo",
            McpServerConfig::command(argv),
            vec!["add", "echo", "fail", "sleep"],
        ));
    }
    for (name, config, wanted) in expected {
        let server = McpServer::new(name, config);
        assert!(
            !server.is_running().await,
            "{name} must not start before it is needed"
        );
        let tools = server
            .tools()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for tool in wanted {
            let spec = tools
                .get(tool)
                .unwrap_or_else(|| panic!("{name} lacks {tool}: {:?}", tools))
                .spec();
            assert!(
                !spec.description.is_empty(),
                "{name}.{tool} has no description"
            );
            assert_eq!(spec.parameters["type"], "object", "{name}.{tool} schema");
        }
        assert!(server.is_running().await);
        server.shutdown().await;
        assert!(!server.is_running().await);
    }
}

#[tokio::test]
async fn demo_tool_schemas_and_descriptions_come_through() {
    let Some(argv) = demo_server() else { return };
    let server = McpServer::new("demo", McpServerConfig::command(argv));
    let tools = server.tools().await.unwrap();
    let add = tools.get("add").unwrap().spec();
    assert_eq!(add.description, "Add two integers.");
    assert_eq!(add.parameters["properties"]["a"]["type"], "integer");
    let required: Vec<&str> = add.parameters["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, ["a", "b"]);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Calling tools

#[tokio::test]
async fn calls_tools_with_good_arguments() {
    let (Some(demo), Some(time), Some(everything)) = (
        demo_server(),
        time_server(),
        npm_server("mcp-server-everything", &[]),
    ) else {
        return;
    };
    let servers = McpServers::from_configs([
        ("demo", McpServerConfig::command(demo)),
        ("time", McpServerConfig::command(time)),
        ("everything", McpServerConfig::command(everything)),
    ]);
    let tools = servers
        .resolve(["demo.add", "time.get_current_time", "everything.echo"])
        .await
        .unwrap();
    assert_eq!(
        tools.names().collect::<Vec<_>>(),
        ["add", "get_current_time", "echo"]
    );

    // Structured content is the result.
    let sum = tools
        .get("add")
        .unwrap()
        .call(json!({"a": 2, "b": 40}), &info())
        .await;
    assert_eq!(sum, Ok(json!({"result": 42})));
    // Text that is JSON is parsed.
    let now = tools
        .get("get_current_time")
        .unwrap()
        .call(json!({"timezone": "UTC"}), &info())
        .await
        .unwrap();
    assert_eq!(now["timezone"], "UTC", "{now}");
    assert!(
        now["datetime"].as_str().is_some_and(|d| d.len() >= 19),
        "{now}"
    );
    // Plain text stays text.
    let echo = tools
        .get("echo")
        .unwrap()
        .call(json!({"message": "hello there"}), &info())
        .await
        .unwrap();
    assert!(
        echo.as_str().is_some_and(|t| t.contains("hello there")),
        "{echo}"
    );
    servers.shutdown().await;
}

#[tokio::test]
async fn bad_arguments_are_refused_locally_and_by_the_server() {
    let Some(demo) = demo_server() else { return };
    let server = McpServer::new("demo", McpServerConfig::command(demo));
    let tools = server.tools().await.unwrap();
    let add = tools.get("add").unwrap();

    // Through the contract path (what agents and the orchestrator use) the schema is checked
    // before anything is sent.
    let ctx = StepContext::new();
    let refused = ctx.call_tool(add, json!({"a": "two"})).await.unwrap_err();
    match &refused {
        ToolError::InvalidArguments { tool, problems } => {
            assert_eq!(tool, "add");
            let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
            assert!(paths.contains(&"a") && paths.contains(&"b"), "{refused}");
        }
        other => panic!("expected invalid arguments, got {other:?}"),
    }

    // Called directly, the server itself rejects them, and says why.
    let direct = add
        .call(json!({"a": "two", "b": 1}), &info())
        .await
        .unwrap_err();
    assert!(matches!(direct, ToolError::Failed(_)), "{direct:?}");
    assert!(
        direct
            .to_string()
            .contains("Input should be a valid integer"),
        "{direct}"
    );

    // Arguments that are not an object never reach the server.
    let not_object = server.call_tool("add", json!([1, 2])).await.unwrap_err();
    assert!(
        matches!(not_object, ToolError::InvalidArguments { .. }),
        "{not_object:?}"
    );

    // A tool the server does not have.
    let unknown = server.call_tool("multiply", json!({})).await.unwrap_err();
    assert!(unknown.to_string().contains("multiply"), "{unknown}");
    server.shutdown().await;
}

#[tokio::test]
async fn error_results_become_tool_failures_with_the_servers_message() {
    let Some(demo) = demo_server() else { return };
    let server = McpServer::new("demo", McpServerConfig::command(demo));
    let failed = server
        .call_tool("fail", json!({"msg": "disk on fire"}))
        .await
        .unwrap_err();
    match &failed {
        ToolError::Failed(message) => assert!(message.contains("disk on fire"), "{message}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // The server is fine afterwards.
    let echoed = server
        .call_tool("echo", json!({"message": "still here"}))
        .await;
    assert_eq!(echoed.unwrap(), json!({"result": "still here"}));
    server.shutdown().await;
}

#[tokio::test]
async fn contract_timeouts_cancel_slow_calls() {
    let Some(demo) = demo_server() else { return };
    let config = McpServerConfig::command(demo).tool(
        "sleep",
        ToolOverride {
            timeout: Some(Duration::from_millis(300)),
            ..ToolOverride::default()
        },
    );
    let server = McpServer::new("demo", config);
    let tools = server.tools().await.unwrap();
    let sleep = tools.get("sleep").unwrap();
    assert_eq!(
        sleep.spec().contract.timeout,
        Some(Duration::from_millis(300))
    );
    let outcome = StepContext::new()
        .call_tool(sleep, json!({"seconds": 60}))
        .await
        .unwrap_err();
    assert!(matches!(outcome, ToolError::Timeout { .. }), "{outcome:?}");
    // The connection survives a cancelled call.
    assert_eq!(
        server.call_tool("add", json!({"a": 1, "b": 1})).await,
        Ok(json!({"result": 2}))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn streamable_http_servers_work_like_stdio_ones() {
    let python = venv_python();
    if available("the peers venv (python MCP SDK)", vec![python.clone()]).is_none() {
        return;
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let script = fixtures().join("mcp_http_server.py");
    let mut http_server = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the HTTP fixture server did not start");

    let server = McpServer::new(
        "remote",
        McpServerConfig::url(format!("http://127.0.0.1:{port}/mcp")).header("X-Test", "1"),
    );
    let tools = server.tools().await.unwrap();
    assert_eq!(tools.names().collect::<Vec<_>>(), ["add", "fail"]);
    assert_eq!(server.pid().await, None);
    let sum = tools
        .get("add")
        .unwrap()
        .call(json!({"a": 3, "b": 4}), &info())
        .await;
    assert_eq!(sum, Ok(json!({"result": 7})));
    let failed = server
        .call_tool("fail", json!({"msg": "remote boom"}))
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("remote boom"), "{failed}");
    server.shutdown().await;
    http_server.kill().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_url_is_a_clear_start_error() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let server = McpServer::new(
        "nowhere",
        McpServerConfig::url(format!("http://127.0.0.1:{port}/mcp")),
    );
    let error = server.tools().await.unwrap_err();
    assert!(matches!(error, McpError::Initialize { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("`nowhere`") && text.contains(&port.to_string()),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test]
async fn a_command_that_does_not_exist_is_a_clear_error() {
    let server = McpServer::new(
        "ghost",
        McpServerConfig::command(["/nonexistent/agenthelm-no-such-mcp-server", "--flag"]),
    );
    let error = server.tools().await.unwrap_err();
    assert!(matches!(error, McpError::Spawn { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("`ghost`") && text.contains("/nonexistent/agenthelm-no-such-mcp-server"),
        "{text}"
    );
    // A call says the same, as a tool failure.
    let call = server.call_tool("anything", json!({})).await.unwrap_err();
    assert!(
        call.to_string()
            .contains("could not start MCP server `ghost`"),
        "{call}"
    );
}

#[tokio::test]
async fn a_server_that_exits_at_once_is_a_start_error_with_its_stderr() {
    let server = McpServer::new(
        "quitter",
        McpServerConfig::command([
            "python3",
            "-c",
            "import sys; sys.stderr.write('missing API token\\n'); sys.exit(2)",
        ]),
    );
    let error = server.tools().await.unwrap_err();
    assert!(matches!(error, McpError::Initialize { .. }), "{error:?}");
    assert!(error.to_string().contains("missing API token"), "{error}");
}

#[tokio::test]
async fn a_server_that_never_answers_initialize_times_out_and_is_killed() {
    let dir = TempDir::new("mcp-silent");
    let pid_file = dir.join("pid");
    let config = McpServerConfig::command(lifecycle_server(&["--silent"]))
        .env("FIXTURE_PID_FILE", pid_file.display().to_string())
        .startup_timeout(Duration::from_secs(2));
    let server = McpServer::new("silent", config);
    let error = server.tools().await.unwrap_err();
    match &error {
        McpError::StartupTimeout { server, after, .. } => {
            assert_eq!(server, "silent");
            assert_eq!(*after, Duration::from_secs(2));
        }
        other => panic!("expected a start-up timeout, got {other:?}"),
    }
    assert!(error.to_string().contains("startup_timeout"), "{error}");
    let pid = pid_in(&pid_file);
    assert!(gone(pid).await, "the silent server {pid} was left running");
}

#[tokio::test]
async fn a_server_that_exits_mid_call_fails_the_call_and_restarts_on_the_next() {
    let server = McpServer::new("fragile", McpServerConfig::command(lifecycle_server(&[])));
    let first: u32 = server
        .call_tool("pid", json!({}))
        .await
        .unwrap()
        .as_u64()
        .unwrap() as u32;
    assert_eq!(server.pid().await, Some(first));

    let crashed = server.call_tool("crash", json!({})).await.unwrap_err();
    let text = crashed.to_string();
    assert!(
        text.contains("`fragile` stopped while `crash` was running"),
        "{text}"
    );
    assert!(
        text.contains("crashing on purpose"),
        "the server's stderr is shown: {text}"
    );
    assert!(gone(first).await);

    let second = server.call_tool("pid", json!({})).await.unwrap();
    assert_ne!(second, json!(first), "a new process serves the next call");
    assert!(server.is_running().await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_killed_server_fails_calls_in_flight() {
    let dir = TempDir::new("mcp-killed");
    let marker = dir.join("hanging");
    let config = McpServerConfig::command(lifecycle_server(&[]))
        .env("FIXTURE_MARKER", marker.display().to_string());
    let server = McpServer::new("victim", config);
    let pid = server
        .call_tool("pid", json!({}))
        .await
        .unwrap()
        .as_u64()
        .unwrap() as u32;

    let calling = {
        let server = server.clone();
        tokio::spawn(async move { server.call_tool("hang", json!({})).await })
    };
    assert!(appears(&marker).await, "the call never reached the server");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let outcome = calling.await.unwrap().unwrap_err();
    assert!(
        outcome
            .to_string()
            .contains("`victim` stopped while `hang` was running"),
        "{outcome}"
    );
    // And it comes back.
    let again = server.call_tool("pid", json!({})).await.unwrap();
    assert_ne!(again, json!(pid));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_a_stubborn_server_and_its_children() {
    let server = McpServer::new(
        "stubborn",
        McpServerConfig::command(lifecycle_server(&["--stubborn"])),
    );
    let grandchild = server.call_tool("spawn_child", json!({})).await.unwrap();
    let grandchild = grandchild.as_u64().unwrap() as u32;
    let pid = server.pid().await.unwrap();
    assert!(is_running(pid) && is_running(grandchild));
    server.shutdown().await;
    assert!(gone(pid).await, "server {pid} survived shutdown");
    assert!(
        gone(grandchild).await,
        "grandchild {grandchild} survived shutdown"
    );
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    let server = McpServer::new(
        "dropped",
        McpServerConfig::command(lifecycle_server(&["--stubborn"])),
    );
    let grandchild = server.call_tool("spawn_child", json!({})).await.unwrap();
    let grandchild = grandchild.as_u64().unwrap() as u32;
    let pid = server.pid().await.unwrap();
    let tools = server.tools().await.unwrap();
    drop(server);
    assert!(is_running(pid), "tools still hold the server");
    drop(tools);
    assert!(gone(pid).await, "server {pid} survived its last handle");
    assert!(gone(grandchild).await, "grandchild {grandchild} survived");
}

#[test]
fn ending_the_runtime_leaves_no_server_behind() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (server, pid, grandchild) = runtime.block_on(async {
        let server = McpServer::new(
            "abandoned",
            McpServerConfig::command(lifecycle_server(&["--stubborn"])),
        );
        let grandchild = server.call_tool("spawn_child", json!({})).await.unwrap();
        let pid = server.pid().await.unwrap();
        (server, pid, grandchild.as_u64().unwrap() as u32)
    });
    // As when a program returns from main (or panics) with a server still running.
    drop(runtime);
    drop(server);
    let check = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        check.block_on(gone(pid)),
        "server {pid} outlived the runtime"
    );
    assert!(
        check.block_on(gone(grandchild)),
        "grandchild {grandchild} outlived the runtime"
    );
}

#[tokio::test]
async fn servers_get_only_a_safe_environment_unless_told_otherwise() {
    // Cargo sets CARGO_PKG_NAME for test binaries: it stands in for a secret such as an API key.
    assert!(std::env::var("CARGO_PKG_NAME").is_ok());
    let env_of = |config: McpServerConfig| async move {
        let server = McpServer::new("env", config);
        let env = server.call_tool("env", json!({})).await.unwrap();
        server.shutdown().await;
        env
    };
    let plain =
        env_of(McpServerConfig::command(lifecycle_server(&[])).env("SERVER_SETTING", "on")).await;
    assert_eq!(plain["SERVER_SETTING"], "on");
    // (A python launcher such as pyenv may put its own folders in front.)
    let path = std::env::var("PATH").unwrap();
    assert!(
        plain["PATH"].as_str().is_some_and(|p| p.ends_with(&path)),
        "{plain}"
    );
    assert!(plain.get("CARGO_PKG_NAME").is_none(), "leaked: {plain}");

    let passed =
        env_of(McpServerConfig::command(lifecycle_server(&[])).pass_env("CARGO_PKG_NAME")).await;
    assert_eq!(passed["CARGO_PKG_NAME"], "agenthelm");

    let inherited = env_of(McpServerConfig::command(lifecycle_server(&[])).inherit_env(true)).await;
    assert_eq!(inherited["CARGO_PKG_NAME"], "agenthelm");
}

#[tokio::test]
async fn concurrent_first_calls_start_one_server() {
    let server = McpServer::new("shared", McpServerConfig::command(lifecycle_server(&[])));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { server.call_tool("pid", json!({})).await })
        })
        .collect();
    let mut pids = Vec::new();
    for call in calls {
        pids.push(call.await.unwrap().unwrap());
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "{pids:?}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Configuration and references

#[tokio::test]
async fn workspace_config_resolves_references() {
    let Some(demo) = demo_server() else { return };
    let Some(everything) = npm_server("mcp-server-everything", &[]) else {
        return;
    };
    let yaml = format!(
        "demo:\n  command: {demo:?}\n  startup_timeout: 60\n  tools:\n    add: {{retries: 2, requires_approval: true}}\n\
         everything:\n  command: {everything:?}\n"
    );
    let configs: BTreeMap<String, McpServerConfig> = yaml_serde::from_str(&yaml).unwrap();
    let servers = McpServers::from_configs(configs);

    let all = servers.resolve(["demo.*"]).await.unwrap();
    assert_eq!(
        all.names().collect::<Vec<_>>(),
        ["add", "echo", "fail", "sleep"]
    );
    let add = all.get("add").unwrap().spec();
    assert_eq!(add.contract.retries, 2);
    assert!(add.contract.requires_approval);
    assert!(!all.get("echo").unwrap().spec().contract.requires_approval);

    let unknown = servers.resolve(["demo.multiply"]).await.unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "MCP server `demo` has no tool `multiply` (its tools: add, echo, fail, sleep)"
    );
    // Both servers have an `echo`.
    let clash = servers
        .resolve(["demo.*", "everything.echo"])
        .await
        .unwrap_err();
    assert!(matches!(clash, McpError::DuplicateTool { .. }), "{clash:?}");
    assert!(clash.to_string().contains("`echo`"), "{clash}");
    servers.shutdown().await;
}

#[tokio::test]
async fn a_rule_for_a_tool_the_server_lacks_is_an_error() {
    let Some(demo) = demo_server() else { return };
    let config = McpServerConfig::command(demo).tool("ad", ToolOverride::default());
    let server = McpServer::new("demo", config);
    let error = server.tools().await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("MCP server `demo` has no tool `ad`"),
        "{error}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Saga rollback with MCP tools

#[tokio::test]
async fn a_failed_plan_is_rolled_back_through_mcp_compensations() {
    let (Some(memory), Some(demo)) = (npm_server("mcp-server-memory", &[]), demo_server()) else {
        return;
    };
    let memory_dir = TempDir::new("mcp-memory-saga");
    let memory_file = memory_dir.join("memory.jsonl");
    // `create_relations` is undone by `delete_relations` with the same arguments: a rule in
    // the server config, as a workspace file would set it.
    let memory = McpServerConfig::command(memory)
        .env("MEMORY_FILE_PATH", memory_file.display().to_string())
        .tool(
            "create_relations",
            ToolOverride {
                compensating_tool: Some("delete_relations".into()),
                ..ToolOverride::default()
            },
        );
    let servers =
        McpServers::from_configs([("memory", memory), ("demo", McpServerConfig::command(demo))]);
    let tools = servers
        .resolve([
            "memory.create_entities",
            "memory.delete_entities",
            "memory.create_relations",
            "memory.delete_relations",
            "demo.fail",
        ])
        .await
        .unwrap();
    assert_eq!(
        tools
            .get("create_relations")
            .unwrap()
            .spec()
            .contract
            .compensating_tool
            .as_deref(),
        Some("delete_relations")
    );
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new(
            "keeper",
            Lm::from_model(ScriptedLm::new(vec![])),
            tools,
        ))
        .unwrap();

    let entities = json!({"entities": [
        {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]},
        {"name": "Engine", "entityType": "machine", "observations": []}
    ]});
    let relations =
        json!({"relations": [{"from": "Ada", "to": "Engine", "relationType": "programmed"}]});
    let mut plan = Plan::new("record Ada, then fail");
    plan.steps.push(
        PlanStep::new("people", "store the entities")
            .agent("keeper")
            .tool("create_entities")
            .args(entities)
            .compensate("delete_entities", json!({"entityNames": ["Ada", "Engine"]})),
    );
    plan.steps.push(
        PlanStep::new("links", "link them")
            .agent("keeper")
            .tool("create_relations")
            .args(relations)
            .depends_on(["people"]),
    );
    plan.steps.push(
        PlanStep::new("boom", "a step that fails")
            .agent("keeper")
            .tool("fail")
            .args(json!({"msg": "quota exceeded"}))
            .depends_on(["links"]),
    );
    plan.approved = true;

    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    assert_eq!(plan.get_step("boom").unwrap().status, StepStatus::Failed);
    assert!(
        plan.get_step("boom")
            .unwrap()
            .error
            .as_deref()
            .unwrap_or("")
            .contains("quota exceeded"),
        "{:?}",
        plan.get_step("boom")
    );
    assert_eq!(
        plan.get_step("links").unwrap().status,
        StepStatus::Compensated
    );
    assert_eq!(
        plan.get_step("people").unwrap().status,
        StepStatus::Compensated
    );

    // The memory server really holds nothing any more.
    let graph = servers
        .get("memory")
        .unwrap()
        .call_tool("read_graph", json!({}))
        .await
        .unwrap();
    assert_eq!(graph["entities"], json!([]), "{graph}");
    assert_eq!(graph["relations"], json!([]), "{graph}");
    servers.shutdown().await;
}
