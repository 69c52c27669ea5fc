//! Bad workspace files and plan files: exit code 2 and a one-line message naming file, line, key.

mod common;
use common::*;

fn bad_workspace(text: &str) -> Run {
    let dir = TempDir::new("cli-files");
    dir.write("agenthelm.yaml", text);
    dir.write("plan.yaml", "goal: g\nsteps: []\n");
    run(dir.path(), &["show", "plan.yaml"])
}

fn assert_bad(run: &Run, needle: &str) {
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "one line expected: {line}");
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains(needle), "`{needle}` not in: {line}");
    assert!(
        !line.contains("panicked") && !line.contains("backtrace"),
        "{line}"
    );
}

#[test]
fn unknown_key_in_the_workspace() {
    let run = bad_workspace("model: m/x\nagents:\n  a:\n    rol: x\n");
    assert_bad(
        &run,
        "agenthelm.yaml:4: `agents.a.rol`: unknown field `rol`",
    );
}

#[test]
fn wrong_type_in_the_workspace() {
    let run = bad_workspace("tools:\n  t:\n    command: [x]\n    timeout: soon\n");
    assert_bad(&run, "agenthelm.yaml:4: `tools.t.timeout`: invalid type");
}

#[test]
fn command_must_be_a_list() {
    let run = bad_workspace("tools:\n  t:\n    command: python3 t.py\n");
    assert_bad(&run, "agenthelm.yaml:3: `tools.t.command`: invalid type");
}

#[test]
fn agent_uses_an_undefined_tool() {
    let run = bad_workspace(
        "tools:\n  real:\n    command: [x]\nagents:\n  a:\n    tools:\n      - real\n      - imaginary\n",
    );
    assert_bad(
        &run,
        "agenthelm.yaml:6: `agents.a.tools`: tool `imaginary` is not defined under `tools:` (defined: real)",
    );
}

#[test]
fn default_agent_is_undefined() {
    let run = bad_workspace("model: m/x\n\ndefault_agent: ghost\nagents:\n  a: {}\n");
    assert_bad(
        &run,
        "agenthelm.yaml:3: `default_agent`: agent `ghost` is not defined under `agents:` (defined: a)",
    );
}

#[test]
fn compensating_tool_is_undefined() {
    let run = bad_workspace("tools:\n  t:\n    command: [x]\n    compensating_tool: undo\n");
    assert_bad(
        &run,
        "agenthelm.yaml:4: `tools.t.compensating_tool`: tool `undo` is not defined",
    );
}

#[test]
fn parameters_that_are_not_a_schema() {
    let run = bad_workspace(
        "tools:\n  t:\n    command: [x]\n    parameters:\n      type: object\n      required: path\n",
    );
    assert_bad(
        &run,
        "agenthelm.yaml:6: `tools.t.parameters.required`: not a JSON schema",
    );
    let run =
        bad_workspace("tools:\n  t:\n    command: [x]\n    parameters:\n      type: string\n");
    assert_bad(
        &run,
        "agenthelm.yaml:5: `tools.t.parameters.type`: not a JSON schema",
    );
}

#[test]
fn empty_command_and_bad_timeout() {
    // The timeout is read by the tool contract's own deserialization, so it is reported as the
    // file is parsed (alone); the empty command is found by the checks after parsing.
    let run = bad_workspace("tools:\n  t:\n    command: []\n    timeout: -1\n");
    assert_bad(
        &run,
        "agenthelm.yaml:4: `tools.t.timeout`: expected a positive number of seconds, got -1",
    );
    let run = bad_workspace("tools:\n  t:\n    command: []\n    timeout: 2\n");
    assert_bad(
        &run,
        "agenthelm.yaml:3: `tools.t.command`: must name a program",
    );
}

#[test]
fn yaml_syntax_error() {
    let run = bad_workspace("model: [unclosed\n");
    assert_bad(&run, "agenthelm.yaml:");
}

#[test]
fn missing_workspace_and_missing_config_flag() {
    let dir = TempDir::new("cli-files");
    dir.write("plan.yaml", "goal: g\n");
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_bad(&run, "no agenthelm.yaml found in");
    let run = common::run(dir.path(), &["--config", "nope.yaml", "show", "plan.yaml"]);
    assert_bad(&run, "--config nope.yaml: no such workspace file");
}

fn bad_plan(plan: &str) -> Run {
    let dir = TempDir::new("cli-files");
    workspace(&dir, "");
    dir.write("plan.yaml", plan);
    run(dir.path(), &["execute", "plan.yaml", "--yes"])
}

#[test]
fn plan_with_an_unknown_field() {
    let run = bad_plan("goal: g\nsteps:\n  - id: a\n    tool: echo\n    agnet: worker\n");
    assert_bad(&run, "plan.yaml:5: `steps[0].agnet`: unknown field `agnet`");
}

#[test]
fn plan_with_a_wrong_type() {
    let run = bad_plan("goal: g\nsteps:\n  - id: a\n    depends_on: 7\n");
    assert_bad(&run, "plan.yaml:4: `steps[0].depends_on`: invalid type");
}

#[test]
fn plan_step_names_an_unknown_agent_and_tool() {
    let run = bad_plan(
        "goal: g\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    agent: nobody\n    tool: echo\n  - id: c\n    tool: teleport\n",
    );
    assert_bad(
        &run,
        "plan.yaml:6: `steps[1].agent`: step `b` names agent `nobody`, which is not registered",
    );
    assert_bad(
        &run,
        "plan.yaml:9: `steps[2].tool`: step `c`: agent `worker` has no tool `teleport`",
    );
}

#[test]
fn plan_with_a_cycle_and_an_unknown_dependency() {
    let run = bad_plan(
        "goal: g\nsteps:\n  - id: a\n    tool: echo\n    depends_on: [b]\n  - id: b\n    tool: echo\n    depends_on: [a, zz]\n",
    );
    assert_bad(&run, "`steps[1].depends_on`: step `b` depends on `zz`");
    assert_bad(&run, "dependency cycle");
    assert_bad(&run, "plan.yaml:5:");
}

#[test]
fn missing_plan_file() {
    let dir = TempDir::new("cli-files");
    workspace(&dir, "");
    let run = run(dir.path(), &["execute", "absent.yaml", "--yes"]);
    assert_bad(&run, "absent.yaml: cannot read the plan file");
}

#[test]
fn bad_arguments_exit_2() {
    let dir = TempDir::new("cli-files");
    let run = run(dir.path(), &["execute"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let run = common::run(dir.path(), &["show", "p.yaml", "--format", "png"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let run = common::run(dir.path(), &["execute", "p.yaml", "--max-parallel", "0"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let run = common::run(dir.path(), &["frobnicate"]);
    assert_eq!(run.code, 2, "{}", run.all());
}
