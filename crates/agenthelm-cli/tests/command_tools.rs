//! Command tools run by `execute`: arguments on stdin, environment, folder, and every way a
//! tool can go wrong (fails, hangs, prints garbage, is missing).

mod common;
use agenthelm_test_support::{pid_in, stops_running};
use common::*;
use serde_json::Value;

/// Executes a one-step plan calling `tool` with `args`; returns the run and the JSON result.
fn one_step(extra_tools: &str, tool: &str, args: &str) -> (Run, Value, TempDir) {
    let dir = TempDir::new("cli-command-tools");
    workspace(&dir, extra_tools);
    dir.write(
        "plan.yaml",
        &format!("goal: try a tool\nsteps:\n  - id: only\n    tool: {tool}\n    args: {args}\n"),
    );
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.all()));
    (run, json, dir)
}

fn step_error(json: &Value) -> String {
    json["steps"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn arguments_arrive_on_stdin_with_ids_in_the_environment() {
    let (run, json, dir) = one_step("", "echo", r#"{ text: "a \"quoted\" $HOME `x`" }"#);
    assert_eq!(run.code, 0, "{}", run.all());
    let result = &json["steps"][0]["result"];
    // No shell: the text arrives exactly as written.
    assert_eq!(result["args"]["text"], r#"a "quoted" $HOME `x`"#);
    let run_id = json["run_id"].as_str().unwrap();
    assert_eq!(result["env"]["AGENTHELM_RUN_ID"], run_id);
    assert_eq!(result["env"]["AGENTHELM_STEP_ID"], "only");
    let key = result["env"]["AGENTHELM_IDEMPOTENCY_KEY"].as_str().unwrap();
    assert!(key.starts_with(run_id), "{key}");
    let cwd = std::fs::canonicalize(result["cwd"].as_str().unwrap()).unwrap();
    assert_eq!(cwd, std::fs::canonicalize(dir.path()).unwrap());
}

#[test]
fn plain_text_output_is_trimmed() {
    let extra = "  words:\n    command: [python3, tools/t.py, text]\n";
    let (run, json, _dir) = one_step(extra, "words", "{}");
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(json["steps"][0]["result"], "plain words");
}

#[test]
fn a_failing_tool_fails_the_step_with_its_stderr() {
    let (run, json, _dir) = one_step("", "fail", "{}");
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(json["success"], false);
    assert_eq!(json["steps"][0]["status"], "failed");
    let error = step_error(&json);
    assert!(
        error.contains("tool `fail`: exited with status 3: boom: the disk is full"),
        "{error}"
    );
    assert!(run.stderr.contains("boom: the disk is full"));
}

#[test]
fn garbage_output_is_an_error() {
    let extra = "  garbage:\n    command: [python3, tools/t.py, garbage]\n  badjson:\n    command: [python3, tools/t.py, badjson]\n";
    let (run, json, _dir) = one_step(extra, "garbage", "{}");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        step_error(&json).contains("tool `garbage`: printed output that is not UTF-8"),
        "{}",
        step_error(&json)
    );
    let (run, json, _dir) = one_step(extra, "badjson", "{}");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        step_error(&json).contains("starts like JSON but is not valid JSON"),
        "{}",
        step_error(&json)
    );
}

#[test]
fn a_missing_program_is_bad_input_before_the_run() {
    let extra = "  ghost:\n    command: [./tools/not-there.sh]\n  ghost2:\n    command: [agenthelm-no-such-program-xyz]\n  plain:\n    command: [./tools/t.py]\n";
    let attempt = |tool: &str| {
        let dir = TempDir::new("cli-command-tools");
        workspace(&dir, extra);
        dir.write(
            "plan.yaml",
            &format!("goal: try\nsteps:\n  - {{id: only, tool: {tool}, args: {{}}}}\n"),
        );
        run(dir.path(), &["execute", "plan.yaml", "--yes"])
    };
    for (tool, why) in [
        ("ghost", "program `./tools/not-there.sh` does not exist"),
        (
            "ghost2",
            "program `agenthelm-no-such-program-xyz` is not found in PATH",
        ),
        ("plain", "program `./tools/t.py` is not executable"),
    ] {
        let run = attempt(tool);
        assert_eq!(run.code, 2, "{}", run.all());
        let expected = format!("tool `{tool}` (used by step `only`) cannot run: {why}");
        assert!(run.stderr.contains(&expected), "{}", run.stderr);
        assert!(!run.stderr.contains("Run run-"), "{}", run.stderr);
    }
}

#[test]
fn a_hanging_tool_is_killed_with_its_whole_process_group() {
    let extra = "  hang:\n    command: [python3, tools/t.py, hang]\n    timeout: 1\n";
    let dir = TempDir::new("cli-command-tools");
    let pidfile = dir.path().join("grandchild.pid");
    let (run, json, _d) = one_step(
        extra,
        "hang",
        &format!("{{ pidfile: {:?} }}", pidfile.to_str().unwrap()),
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        step_error(&json).contains("tool `hang` timed out after 1.000s"),
        "{}",
        step_error(&json)
    );
    // The tool's own child (`sleep 1000`) is gone too.
    let pid = pid_in(&pidfile);
    assert!(
        stops_running(pid),
        "grandchild {pid} still runs after the timeout"
    );
}

#[test]
fn retries_run_the_tool_again() {
    // Fails on the first attempt, succeeds on the second (state kept in a file).
    let extra = "  flaky:\n    command: [sh, -c, 'if [ -e tried ]; then echo fine; else touch tried; echo first >&2; exit 1; fi']\n    retries: 2\n";
    let (run, json, _dir) = one_step(extra, "flaky", "{}");
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(json["steps"][0]["result"], "fine");
}

#[test]
fn arguments_that_do_not_fit_the_schema_never_reach_the_tool() {
    // The step is not a direct call then: it goes to its agent, whose model (pointed at a
    // closed local port) cannot answer. The tool never runs.
    let (run, json, dir) = one_step("", "create", "{ name: 7 }");
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        step_error(&json).contains("agent `worker`"),
        "{}",
        step_error(&json)
    );
    assert_eq!(json["steps"][0]["direct_tool"], Value::Null);
    assert!(!dir.path().join("created").exists());
}

#[test]
fn a_background_child_holding_stdout_does_not_hold_the_call() {
    // The tool exits at once; its background child keeps stdout open and would print later.
    let extra = "  bg:\n    command: [sh, -c, \"(sleep 30; echo late) & echo $! > bg.pid; echo '\\\"done\\\"'\"]\n";
    let (run, json, dir) = one_step(extra, "bg", "{}");
    assert_eq!(run.code, 0, "{}", run.all());
    // The result is what the tool printed before it exited.
    assert_eq!(json["steps"][0]["result"], "done", "{}", run.all());
    let pid = pid_in(dir.path().join("bg.pid"));
    assert!(
        stops_running(pid),
        "background child {pid} still runs after the call"
    );
}

#[test]
fn output_past_max_output_fails_the_call_and_kills_the_tool() {
    // Prints 200 KB, then would run on; the limit is 1 KB.
    let extra = "  flood:\n    command: [sh, -c, \"echo $$ > tool.pid; head -c 200000 /dev/zero | tr '\\\\0' x; sleep 1000\"]\n    max_output: 1KB\n    timeout: 20\n";
    let (run, json, dir) = one_step(extra, "flood", "{}");
    assert_eq!(run.code, 1, "{}", run.all());
    let error = step_error(&json);
    assert!(
        error.contains(
            "tool `flood`: printed more than 1 KB on stdout, the limit of its `max_output`"
        ),
        "{error}"
    );
    let pid = pid_in(dir.path().join("tool.pid"));
    assert!(
        stops_running(pid),
        "tool {pid} still runs after the call failed"
    );
}

#[test]
fn many_independent_steps_wait_for_a_slot_under_a_low_open_files_limit() {
    // 200 tools at once would need far more than 256 file descriptors.
    let dir = TempDir::new("cli-command-tools");
    workspace(
        &dir,
        "  nap:\n    command: [sh, -c, \"sleep 0.2; echo '{\\\"ok\\\": true}'\"]\n",
    );
    let steps: String = (0..200)
        .map(|i| format!("  - {{id: s{i}, tool: nap, args: {{}}}}\n"))
        .collect();
    dir.write("plan.yaml", &format!("goal: many at once\nsteps:\n{steps}"));
    // `ulimit -n` lowers the hard limit too, so agenthelm cannot raise it back.
    let script = format!(
        "ulimit -n 256 && exec {} execute plan.yaml --yes --json",
        bin()
    );
    let out = std::process::Command::new("sh")
        .current_dir(dir.path())
        .env("HOME", dir.path().join(".home"))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .args(["-c", &script])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 200);
    assert!(
        steps.iter().all(|s| s["status"] == "completed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_compensating_program_is_found_before_anything_runs() {
    // Step `b`'s compensation calls `undo_b`, whose program does not exist.
    let dir = TempDir::new("cli-command-tools");
    workspace(&dir, "  undo_b:\n    command: [./tools/not-there.sh]\n");
    dir.write(
        "plan.yaml",
        "goal: make two things\nsteps:\n  - {id: a, tool: create, args: {name: a}}\n  - {id: b, tool: create, args: {name: b}, depends_on: [a], compensate_tool: undo_b}\n",
    );
    for command in [
        &["execute", "plan.yaml", "--yes"][..],
        &["execute", "plan.yaml", "--dry-run"],
        &["show", "plan.yaml"],
    ] {
        let run = run(dir.path(), command);
        assert_eq!(run.code, 2, "{command:?}: {}", run.all());
        assert!(
            run.stderr.contains(
                "tool `undo_b` (used by the compensation of step `b`) cannot run: program"
            ) && run.stderr.contains("not-there.sh` does not exist"),
            "{command:?}: {}",
            run.stderr
        );
    }
    // Nothing ran: step `a` created nothing.
    assert!(!dir.path().join("created").exists());
}

#[test]
fn resume_checks_the_programs_the_rest_of_the_run_needs_before_anything_runs() {
    use agenthelm::store::{RunStore, SqliteStore};
    use agenthelm::{Event, EventKind, Plan};

    // A run that stopped before its first step; since then the program of `b`'s compensation
    // was removed.
    let dir = TempDir::new("cli-command-tools-resume");
    dir.write("tools/undo.sh", "#!/bin/sh\necho '\"undone\"'\n");
    std::fs::set_permissions(
        dir.path().join("tools/undo.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    workspace(&dir, "  undo_b:\n    command: [./tools/undo.sh]\n");
    let plan = Plan::from_yaml(
        "goal: make two things\napproved: true\nsteps:\n  - {id: a, tool: create, args: {name: a}}\n  - {id: b, tool: create, args: {name: b}, depends_on: [a], compensate_tool: undo_b}\n",
    )
    .unwrap();
    let store = SqliteStore::open(dir.path().join(".agenthelm/agenthelm.db")).unwrap();
    store.begin_run("run-stopped", &plan).unwrap();
    let mut started = Event::new(EventKind::RunStarted {
        goal: plan.goal.clone(),
        steps: plan.steps.len(),
        budget: None,
    });
    started.run_id = Some("run-stopped".into());
    store.append_batch(&[started]).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("tools/undo.sh")).unwrap();

    let resumed = run(dir.path(), &["resume", "run-stopped"]);
    assert_eq!(resumed.code, 2, "{}", resumed.all());
    assert!(
        resumed
            .stderr
            .contains("tool `undo_b` (used by the compensation of step `b`) cannot run"),
        "{}",
        resumed.stderr
    );
    assert!(!dir.path().join("created").exists(), "a step ran");
    let store = SqliteStore::open(dir.path().join(".agenthelm/agenthelm.db")).unwrap();
    assert_eq!(store.load_run("run-stopped").unwrap().events.len(), 1);
}

/// The environment a tool declared with `extra` (YAML keys under the tool) sees.
fn tool_env(extra: &str) -> Value {
    let tool = format!(
        "  env_dump:\n    command: [python3, -c, \"import json, os; print(json.dumps(dict(os.environ)))\"]\n{extra}"
    );
    let (run, json, _dir) = one_step(&tool, "env_dump", "{}");
    assert_eq!(run.code, 0, "{}", run.all());
    json["steps"][0]["result"].clone()
}

#[test]
fn a_tool_gets_no_api_key_unless_it_is_passed_on() {
    // `agenthelm` runs with OPENAI_API_KEY set (see `common::agenthelm`).
    let plain = tool_env("");
    assert_eq!(plain.get("OPENAI_API_KEY"), None, "{plain}");
    assert!(
        plain.get("PATH").is_some() && plain.get("HOME").is_some(),
        "{plain}"
    );
    assert!(plain.get("AGENTHELM_RUN_ID").is_some(), "{plain}");

    // The tool sees the key; the printed result has it redacted (docs/guardrails.md).
    let passed = tool_env("    pass_env: [OPENAI_API_KEY]\n    env: {MODE: test}\n");
    assert_eq!(passed["OPENAI_API_KEY"], "[redacted:OPENAI_API_KEY]");
    assert_eq!(passed["MODE"], "test");
    assert_eq!(passed.get("OPENAI_BASE_URL"), None, "only what is named");

    let inherited = tool_env("    inherit_env: true\n");
    assert_eq!(inherited["OPENAI_API_KEY"], "[redacted:OPENAI_API_KEY]");
    assert_eq!(inherited["OPENAI_BASE_URL"], "http://127.0.0.1:9/v1");
}
