//! `agenthelm replay RUN_ID`: a stored run runs again from its journal, with no tool process
//! started, and a changed tool schema is named at the first step it changes.

mod common;
use common::*;
use serde_json::Value;

/// Executes a plan whose direct step creates `created/made`; gives the run id.
fn recorded_run(dir: &TempDir) -> String {
    workspace(dir, "");
    dir.write(
        "plan.yaml",
        "goal: make a file\nsteps:\n  - id: make\n    tool: create\n    args: { name: made }\n",
    );
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    json["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn a_replay_reproduces_the_run_without_running_the_tool() {
    let dir = TempDir::new("cli-replay");
    let run_id = recorded_run(&dir);
    let marker = dir.path().join("created").join("made");
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();

    let replay = run(dir.path(), &["replay", &run_id]);
    assert_eq!(replay.code, 0, "{}", replay.all());
    assert!(replay.stdout.contains("reproduced"), "{}", replay.all());
    assert!(
        replay
            .stdout
            .contains("1 tool result(s) taken from the journal"),
        "{}",
        replay.all()
    );
    assert!(!marker.exists(), "the tool ran again");

    let json = run(dir.path(), &["replay", &run_id, "--json"]);
    assert_eq!(json.code, 0, "{}", json.all());
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["reproduced"], true);
    assert_eq!(report["tool_calls_served"], 1);
    assert!(!marker.exists());
}

#[test]
fn a_changed_tool_schema_names_the_divergent_step() {
    let dir = TempDir::new("cli-replay-schema");
    let run_id = recorded_run(&dir);
    let yaml = dir.read("agenthelm.yaml");
    let changed = yaml.replacen("required: [name]", "required: [name, owner]", 1);
    assert_ne!(yaml, changed);
    dir.write("agenthelm.yaml", &changed);

    let replay = run(dir.path(), &["replay", &run_id]);
    assert_eq!(replay.code, 1, "{}", replay.all());
    assert!(
        replay.stdout.contains("diverged at step `make`"),
        "{}",
        replay.all()
    );
    assert!(replay.stdout.contains("schema"), "{}", replay.all());
    assert!(replay.stdout.contains("owner"), "{}", replay.all());
}

#[test]
fn live_tools_run_the_tool_again() {
    let dir = TempDir::new("cli-replay-live");
    let run_id = recorded_run(&dir);
    let marker = dir.path().join("created").join("made");
    std::fs::remove_file(&marker).unwrap();

    let replay = run(dir.path(), &["replay", &run_id, "--live-tools"]);
    assert_eq!(replay.code, 0, "{}", replay.all());
    assert!(marker.exists());
}

#[test]
fn an_unknown_run_is_bad_input() {
    let dir = TempDir::new("cli-replay-unknown");
    workspace(&dir, "");
    let replay = run(dir.path(), &["replay", "run-nope"]);
    assert_eq!(replay.code, 2, "{}", replay.all());
    assert!(replay.stderr.contains("run-nope"), "{}", replay.all());
}

#[test]
fn a_changed_plan_file_names_the_step_it_changes() {
    let dir = TempDir::new("cli-replay-plan");
    let run_id = recorded_run(&dir);
    dir.write(
        "fixed.yaml",
        "goal: make a file\nsteps:\n  - id: make\n    tool: create\n    args: { name: other }\n",
    );

    let replay = run(dir.path(), &["replay", &run_id, "--plan", "fixed.yaml"]);
    assert_eq!(replay.code, 1, "{}", replay.all());
    assert!(
        replay
            .stdout
            .contains("diverged at step `make`, make#1: the tool is called with other arguments"),
        "{}",
        replay.all()
    );
    assert!(!dir.path().join("created").join("other").exists());
}
