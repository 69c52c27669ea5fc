//! Confirmation and tool approval at a real pseudo-terminal, and without one.

mod common;
use common::*;
use serde_json::Value;

const GUARDED: &str = "  guarded:\n    description: Needs a yes\n    command: [python3, tools/t.py, create]\n    parameters:\n      type: object\n      properties: { name: { type: string } }\n      required: [name]\n    requires_approval: true\n";

fn setup() -> TempDir {
    let dir = TempDir::new("cli-pty");
    workspace(&dir, GUARDED);
    dir.write(
        "plan.yaml",
        "goal: guarded work\nsteps:\n  - id: g\n    tool: guarded\n    args: { name: approved-file }\n",
    );
    dir
}

#[test]
fn confirmation_and_approval_at_a_terminal() {
    let dir = setup();
    let run = run_in_pty(
        dir.path(),
        &["execute", "plan.yaml"],
        "[y/N]",
        &["y", "y"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("Execute 1 steps of this plan? [y/N]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Approval needed for step `g`: run tool `guarded`"),
        "{}",
        run.stdout
    );
    assert!(dir.path().join("created/approved-file").exists());
}

#[test]
fn denied_at_the_terminal() {
    let dir = setup();
    let run = run_in_pty(
        dir.path(),
        &["execute", "plan.yaml", "--yes"],
        "[y/N]",
        &["n"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("guarded not approved: denied at the terminal"),
        "{}",
        run.stdout
    );
    assert!(!dir.path().join("created").exists());
}

#[test]
fn declining_the_plan_runs_nothing() {
    let dir = setup();
    let run = run_in_pty(dir.path(), &["execute", "plan.yaml"], "[y/N]", &["no"], &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("not executed: the plan was not confirmed"),
        "{}",
        run.stdout
    );
    assert!(!dir.path().join("created").exists());
}

#[test]
fn without_a_terminal_approval_is_denied_unless_approve_tools() {
    let dir = setup();
    let denied = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(denied.code, 1, "{}", denied.all());
    let json: Value = serde_json::from_str(&denied.stdout).unwrap();
    let error = json["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("no terminal to ask (pass --approve-tools"),
        "{error}"
    );
    assert!(!dir.path().join("created").exists());

    let allowed = run(
        dir.path(),
        &["execute", "plan.yaml", "--yes", "--approve-tools"],
    );
    assert_eq!(allowed.code, 0, "{}", allowed.all());
    assert!(dir.path().join("created/approved-file").exists());
}

/// `traces filter --json` with extra arguments.
fn traces(dir: &std::path::Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["traces", "filter", "--json", "--tool", "guarded"];
    args.extend_from_slice(extra);
    let out = run(dir, &args);
    assert_eq!(out.code, 0, "{}", out.all());
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn decisions_are_recorded_with_the_os_user_and_found_by_who_made_them() {
    let dir = setup();
    let asked = run_in_pty(
        dir.path(),
        &["execute", "plan.yaml", "--yes"],
        "[y/N]",
        &["y"],
        &[("USER", "carol")],
    );
    assert_eq!(asked.code, 0, "{}", asked.stdout);
    let mut flagged = agenthelm(dir.path());
    flagged
        .env("USER", "dave")
        .args(["execute", "plan.yaml", "--yes", "--approve-tools"]);
    let flagged = output(flagged.output().unwrap());
    assert_eq!(flagged.code, 0, "{}", flagged.all());

    let by_carol = traces(dir.path(), &["--approved-by", "carol"]);
    assert_eq!(by_carol.len(), 1, "{by_carol:?}");
    assert_eq!(by_carol[0]["approval"], "approve");
    let by_dave = traces(dir.path(), &["--approved-by", "dave (--approve-tools)"]);
    assert_eq!(by_dave.len(), 1, "{by_dave:?}");
    assert_ne!(by_dave[0]["run_id"], by_carol[0]["run_id"]);
    assert!(traces(dir.path(), &["--approved-by", "mallory"]).is_empty());

    let run_id = by_carol[0]["run_id"].as_str().unwrap();
    let shown = run(dir.path(), &["runs", "show", run_id]);
    assert!(
        shown
            .stdout
            .contains("Approval: g guarded approved by carol"),
        "{}",
        shown.stdout
    );
    let report = run(dir.path(), &["runs", "report", run_id, "-o", "run.html"]);
    assert_eq!(report.code, 0, "{}", report.all());
    let html = dir.read("run.html");
    assert!(html.contains("<td>carol</td>"), "{html}");
}

const SLOW: &str = "  slow:\n    description: Takes a while\n    command: [python3, -c, \"import sys, time; sys.stdin.read(); time.sleep(1.5); print('{}')\"]\n";

fn slow_plan() -> TempDir {
    let dir = TempDir::new("cli-pty-progress");
    workspace(&dir, SLOW);
    dir.write(
        "plan.yaml",
        "goal: slow work\nsteps:\n  - id: slow-step\n    tool: slow\n",
    );
    dir
}

#[test]
fn a_run_at_a_terminal_shows_a_live_block_of_running_steps() {
    let dir = slow_plan();
    let run = run_in_pty(dir.path(), &["execute", "plan.yaml", "--yes"], "", &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    // The block: the running step with its elapsed time, then the counts, redrawn in place.
    assert!(
        run.stdout.contains("slow-step (tool slow)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("0 of 1 done · 1 running"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\x1b[2K"),
        "no line was redrawn: {:?}",
        run.stdout
    );
    // A start is shown in the block only; what ended stays in the history.
    assert!(
        !run.stdout.contains("▶ slow-step started"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("✔"), "{}", run.stdout);
}

#[test]
fn no_color_at_a_terminal_keeps_plain_lines() {
    let dir = slow_plan();
    let env = [("NO_COLOR", "1")];
    let run = run_in_pty(
        dir.path(),
        &["execute", "plan.yaml", "--yes"],
        "",
        &[],
        &env,
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("▶ slow-step started (tool slow)"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("running"), "{}", run.stdout);
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
}

#[test]
fn an_approval_prompt_is_not_drawn_over_by_the_block() {
    let dir = TempDir::new("cli-pty-progress");
    workspace(&dir, &format!("{SLOW}{GUARDED}"));
    dir.write(
        "plan.yaml",
        "goal: slow and guarded\nsteps:\n  - id: slow-step\n    tool: slow\n  - id: g\n    tool: guarded\n    args: { name: approved-file }\n",
    );
    let run = run_in_pty(
        dir.path(),
        &["execute", "plan.yaml", "--yes"],
        "[y/N]",
        &["y"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("0 of 2 done"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("Approval needed for step `g`: run tool `guarded`"),
        "{}",
        run.stdout
    );
    assert!(dir.path().join("created/approved-file").exists());
}
