//! What a program using the workspace crate does: load a workspace, assemble its agents and an
//! orchestrator, run command tools, and read the errors a bad file gives.

use agenthelm::tool::{Tool, ToolCallInfo, ToolError, ToolSpec};
use agenthelm::{Plan, PlanStep, StepStatus, ToolContract};
use agenthelm_test_support::{pid_in, stops_running, TempDir};
use agenthelm_workspace::{
    open_store, Assembly, CommandTool, ModelNeed, UserConfig, Workspace, WorkspaceError,
};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const WORKSPACE: &str = "\
model: openai/test-model
default_agent: writer
agents:
  writer:
    role: writes things
    tools: [shout, unshout]
  reader:
    max_iters: 3
tools:
  shout:
    description: Upper-case the arguments
    command: [sh, -c, 'tr a-z A-Z']
    parameters:
      type: object
      properties: { text: { type: string } }
      required: [text]
    compensating_tool: unshout
    retries: 1
    timeout: 5
    tags: [text]
  unshout:
    command: [sh, -c, 'cat']
";

#[tokio::test]
async fn a_workspace_from_a_folder_becomes_a_registry_and_an_orchestrator() {
    let dir = TempDir::new("load");
    dir.write("agenthelm.yaml", WORKSPACE);
    std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
    let file = agenthelm_workspace::discover(&dir.path().join("sub/deeper"))
        .unwrap()
        .unwrap();
    let workspace = Workspace::load(&file).unwrap();
    assert_eq!(workspace.dir, std::path::absolute(dir.path()).unwrap());

    let shout = &workspace.config.tools["shout"];
    assert_eq!(
        shout.contract,
        ToolContract {
            compensating_tool: Some("unshout".into()),
            retries: 1,
            timeout: Some(Duration::from_secs(5)),
            tags: vec!["text".into()],
            ..ToolContract::default()
        }
    );

    let assembly = Assembly::new(&workspace, &UserConfig::default(), None);
    let registry = assembly.registry(ModelNeed::OnDemand).await.unwrap();
    assert_eq!(registry.names(), ["reader", "writer"]);
    let tools = assembly.agent_tools("writer").await.unwrap();
    assert_eq!(tools.get("shout").unwrap().spec().contract.retries, 1);
    assert_eq!(
        assembly.model_id(Some("reader")).as_deref(),
        Some("openai/test-model")
    );
    assert_eq!(
        assembly.pick_agent(None).unwrap(),
        "writer",
        "the default agent"
    );

    // A plan step that names a tool with fitting arguments calls it directly: no model.
    let store = open_store(&workspace).unwrap();
    assert!(store.location.ends_with(".agenthelm/agenthelm.db"));
    let orchestrator = assembly
        .orchestrator()
        .await
        .unwrap()
        .store_shared(store.store);
    let mut plan = Plan::new("shout");
    plan.steps.push(
        PlanStep::new("loud", "shout it")
            .tool("shout")
            .args(json!({"text": "hi"})),
    );
    plan.approved = true;
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success, "{:?}", result.error);
    assert_eq!(plan.steps[0].status, StepStatus::Completed);
    assert_eq!(plan.steps[0].result, Some(json!({"TEXT": "HI"})));
    assembly.shutdown().await;
}

#[tokio::test]
async fn a_model_that_is_required_and_missing_is_bad_input() {
    let dir = TempDir::new("model");
    let file = dir.write("agenthelm.yaml", "agents:\n  a: {}\n");
    let workspace = Workspace::load(&file).unwrap();
    let assembly = Assembly::new(&workspace, &UserConfig::default(), None);
    let error = assembly.agent("a", ModelNeed::Required).await.unwrap_err();
    assert!(error.is_bad_input());
    assert!(
        error.to_string().contains("no model is configured"),
        "{error}"
    );
    // On demand, the agent is built and its model says why when it is asked.
    assert!(assembly.agent("a", ModelNeed::OnDemand).await.is_ok());
    let unknown = assembly.agent("b", ModelNeed::OnDemand).await.unwrap_err();
    assert!(
        matches!(&unknown, WorkspaceError::UnknownAgent { name, defined, .. } if name == "b" && defined == &["a"]),
        "{unknown}"
    );
}

#[test]
fn config_errors_name_the_file_line_and_key() {
    let dir = TempDir::new("errors");
    let file = dir.write(
        "agenthelm.yaml",
        "agents:\n  a:\n    tools: [t]\ntools:\n  t:\n    command: [x]\n    timeout: 0\n",
    );
    let error = Workspace::load(&file).unwrap_err();
    assert!(error.is_bad_input());
    let WorkspaceError::File(problem) = &error else {
        panic!("not a file error: {error:?}")
    };
    assert_eq!(problem.file, file);
    assert_eq!(problem.line, Some(7));
    assert_eq!(problem.key, "tools.t.timeout");
    assert_eq!(
        problem.message,
        "expected a positive number of seconds, got 0"
    );

    // Contract keys and the tool's own keys are checked together.
    let typo = Workspace::from_text(
        Path::new("ws.yaml"),
        "tools:\n  t:\n    command: [x]\n    retry: 2\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        typo.starts_with("ws.yaml:4: `tools.t.retry`: unknown field `retry`, expected one of `description`, `command`, `parameters`, `max_output`, `env`, `pass_env`, `inherit_env`, `compensating_tool`, `requires_approval`, `retries`, `timeout`"),
        "{typo}"
    );
    let missing = Workspace::from_text(Path::new("ws.yaml"), "tools:\n  t:\n    retries: 2\n")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("`tools.t`: missing field `command`"),
        "{missing}"
    );

    // Checks after parsing report every problem at once.
    let several = Workspace::from_text(
        Path::new("ws.yaml"),
        "default_agent: ghost\ntools:\n  t:\n    command: [x]\n    compensating_tool: undo\n    parameters: { type: string }\n",
    )
    .unwrap_err();
    let WorkspaceError::Files(problems) = &several else {
        panic!("not several problems: {several:?}")
    };
    let keys: Vec<&str> = problems.0.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "default_agent",
            "tools.t.compensating_tool",
            "tools.t.parameters.type"
        ]
    );
    assert_eq!(problems.0[2].line, Some(6));
}

#[test]
fn tool_contracts_deserialize_from_yaml_and_name_a_bad_field() {
    let contract: ToolContract = yaml_serde::from_str(
        "compensating_tool: undo\nrequires_approval: true\nretries: 3\ntimeout: 0.25\nside_effects: [files]\npartial_effects: true\n",
    )
    .unwrap();
    assert_eq!(contract.compensating_tool.as_deref(), Some("undo"));
    assert!(contract.requires_approval && contract.partial_effects);
    assert_eq!(contract.retries, 3);
    assert_eq!(contract.timeout, Some(Duration::from_millis(250)));
    assert_eq!(contract.side_effects, ["files"]);
    assert_eq!(
        yaml_serde::from_str::<ToolContract>("{}").unwrap(),
        ToolContract::default()
    );

    let bad = |yaml: &str| {
        let deserializer = yaml_serde::Deserializer::from_str(yaml);
        let error = serde_path_to_error::deserialize::<_, ToolContract>(deserializer).unwrap_err();
        (error.path().to_string(), error.inner().to_string())
    };
    let (key, message) = bad("retries: many\n");
    assert_eq!(key, "retries");
    assert!(message.contains("invalid type"), "{message}");
    let (key, message) = bad("timeout: -1\n");
    assert_eq!(key, "timeout");
    assert!(message.contains("positive number of seconds"), "{message}");
    let (_, message) = bad("retrys: 1\n");
    assert!(message.contains("unknown field `retrys`"), "{message}");
}

fn command(argv: &[&str], dir: &Path) -> CommandTool {
    let spec = ToolSpec::new("cmd", "a command", json!({"type": "object"}));
    CommandTool::new(spec, argv.iter().map(|s| s.to_string()).collect(), dir)
}

fn call_info() -> ToolCallInfo {
    ToolCallInfo {
        call_id: "c1".into(),
        idempotency_key: "run-1:step-a:1".into(),
        run_id: Some("run-1".into()),
        step_id: Some("step-a".into()),
        attempt: 1,
    }
}

#[tokio::test]
async fn a_command_tool_that_times_out_is_killed_with_its_whole_group() {
    let dir = TempDir::new("group");
    let tool = command(
        &[
            "sh",
            "-c",
            "sleep 1000 >/dev/null 2>&1 & echo $! > grandchild.pid; wait",
        ],
        dir.path(),
    );
    let info = call_info();
    let call = tool.call(json!({}), &info);
    let outcome = tokio::time::timeout(Duration::from_secs(2), call).await;
    assert!(outcome.is_err(), "the tool returned: {outcome:?}");
    let pid = pid_in(dir.path().join("grandchild.pid"));
    assert!(
        stops_running(pid),
        "grandchild {pid} still runs after the timeout"
    );
}

#[tokio::test]
async fn a_command_tool_that_returns_leaves_nothing_running() {
    let dir = TempDir::new("leftover");
    let tool = command(
        &["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"],
        dir.path(),
    );
    let pid = tool.call(json!({}), &call_info()).await.unwrap();
    let pid = u32::try_from(pid.as_u64().unwrap()).unwrap();
    assert!(stops_running(pid), "background {pid} outlived its tool");
}

#[tokio::test]
async fn command_tools_get_arguments_on_stdin_and_ids_in_the_environment() {
    let dir = TempDir::new("env");
    let script = r#"printf '{"stdin": %s, "key": "%s", "run": "%s", "step": "%s"}' "$(cat)" "$AGENTHELM_IDEMPOTENCY_KEY" "$AGENTHELM_RUN_ID" "$AGENTHELM_STEP_ID""#;
    let tool = command(&["sh", "-c", script], dir.path());
    let out = tool
        .call(json!({"text": "a \"quoted\" $HOME"}), &call_info())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({
            "stdin": {"text": "a \"quoted\" $HOME"},
            "key": "run-1:step-a:1",
            "run": "run-1",
            "step": "step-a",
        })
    );
}

#[tokio::test]
async fn command_tool_failures_say_what_went_wrong() {
    let dir = TempDir::new("fail");
    let failed = |e: ToolError| match e {
        ToolError::Failed(message) => message,
        other => panic!("{other:?}"),
    };
    let garbage = command(&["sh", "-c", r"printf 'ok \377'"], dir.path());
    let error = failed(garbage.call(json!({}), &call_info()).await.unwrap_err());
    assert_eq!(
        error,
        "tool `cmd`: printed output that is not UTF-8 text (invalid byte at offset 3)"
    );

    let killed = command(&["sh", "-c", "kill -TERM $$"], dir.path());
    let error = failed(killed.call(json!({}), &call_info()).await.unwrap_err());
    assert_eq!(
        error,
        "tool `cmd`: was killed by signal 15 (SIGTERM) (no message on stderr)"
    );

    // Megabytes on stderr: read to the end (no deadlock), a short message kept.
    let flood = command(
        &[
            "sh",
            "-c",
            "head -c 3000000 /dev/zero | tr '\\0' x >&2; exit 4",
        ],
        dir.path(),
    );
    let error = failed(flood.call(json!({}), &call_info()).await.unwrap_err());
    assert!(
        error.starts_with("tool `cmd`: exited with status 4: xxx"),
        "{error}"
    );
    assert!(
        error.ends_with('…') && error.len() < 2100,
        "{} chars",
        error.len()
    );

    let missing = command(&["./no-such-tool.sh"], dir.path());
    let error = failed(missing.call(json!({}), &call_info()).await.unwrap_err());
    assert!(
        error.starts_with("tool `cmd`: cannot start `") && error.contains("no-such-tool.sh"),
        "{error}"
    );
}

/// Two bookings whose cancellations each wait (up to 3 s) for the other to have begun: both are
/// undone only when they run at the same time. `pay` fails, so both are rolled back.
const MEETING_WORKSPACE: &str = r#"
tools:
  book:
    command: [python3, -c, "import json,sys; print(json.dumps(json.load(sys.stdin)))"]
    compensating_tool: cancel
  cancel:
    command:
      - python3
      - -c
      - |
        import json, os, sys, time
        args = json.load(sys.stdin)
        open(args["me"], "w").close()
        for _ in range(60):
            if os.path.exists(args["other"]):
                sys.exit(0)
            time.sleep(0.05)
        sys.exit("the other cancellation never began")
  pay:
    command: [sh, -c, "exit 3"]
"#;

async fn roll_back_two_bookings(mode: Option<&str>) -> agenthelm::RunResult {
    let dir = TempDir::new("rollback-mode");
    let text = match mode {
        Some(mode) => format!("rollback: {mode}\n{MEETING_WORKSPACE}"),
        None => MEETING_WORKSPACE.to_owned(),
    };
    dir.write("agenthelm.yaml", &text);
    let workspace = Workspace::load(&dir.path().join("agenthelm.yaml")).unwrap();
    let assembly = Assembly::new(&workspace, &UserConfig::default(), None);
    let orchestrator = assembly.orchestrator().await.unwrap();
    let marker = |name: &str| dir.path().join(name).display().to_string();
    let mut plan = Plan::new("meet");
    for (id, me, other) in [("a", "a.began", "b.began"), ("b", "b.began", "a.began")] {
        plan.steps.push(
            PlanStep::new(id, "book")
                .tool("book")
                .args(json!({"me": marker(me), "other": marker(other)})),
        );
    }
    plan.steps.push(
        PlanStep::new("pay", "pay")
            .tool("pay")
            .depends_on(["a", "b"]),
    );
    plan.approved = true;
    orchestrator.execute(&mut plan).await.unwrap()
}

#[tokio::test]
async fn the_workspace_rollback_mode_reaches_the_orchestrator() {
    let parallel = roll_back_two_bookings(Some("parallel")).await;
    let rollback = parallel.rollback.unwrap();
    assert!(rollback.fully_undone(), "{rollback:?}");
    assert_eq!(rollback.compensated.len(), 2);

    // The default is sequential: the first cancellation waits for the second in vain.
    let sequential = roll_back_two_bookings(None).await;
    let rollback = sequential.rollback.unwrap();
    assert_eq!(rollback.failed.len(), 1, "{rollback:?}");
}

#[test]
fn a_bad_rollback_mode_names_its_line() {
    let dir = TempDir::new("bad-rollback");
    let file = dir.write("agenthelm.yaml", "tools: {}\nrollback: sideways\n");
    let error = Workspace::load(&file).unwrap_err().to_string();
    assert!(error.contains("agenthelm.yaml:2"), "{error}");
    assert!(error.contains("rollback"), "{error}");
}
