//! `agenthelm execute`: parallel steps, rollback, --json, --dry-run, --max-parallel,
//! --no-rollback, confirmation, exit codes.

mod common;
use common::*;
use serde_json::Value;

const SAGA: &str = r#"goal: create three things, then fail
steps:
  - id: a
    tool: create
    args: { name: a }
  - id: b
    tool: create
    args: { name: b }
  - id: c
    tool: create
    args: { name: c }
    depends_on: [a]
  - id: boom
    tool: fail
    depends_on: [b, c]
  - id: never
    tool: echo
    depends_on: [boom]
"#;

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.all()))
}

fn status_of<'a>(json: &'a Value, id: &str) -> &'a str {
    json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()["status"]
        .as_str()
        .unwrap()
}

#[test]
fn a_failure_rolls_back_completed_steps_and_exits_1() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    dir.write("plan.yaml", SAGA);
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let json = json_of(&run);
    assert_eq!(json["success"], false);
    for id in ["a", "b", "c"] {
        assert_eq!(status_of(&json, id), "compensated", "{id}");
    }
    assert_eq!(status_of(&json, "boom"), "failed");
    assert_eq!(status_of(&json, "never"), "skipped");
    let mut undone: Vec<String> = json["rollback"]["compensated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    // c finished after a (it depends on it), so it is undone before a.
    let pos = |id: &str| undone.iter().position(|s| s == id).unwrap();
    assert!(pos("c") < pos("a"), "{undone:?}");
    undone.sort();
    assert_eq!(undone, ["a", "b", "c"]);
    assert!(json["rollback"]["failed"].as_array().unwrap().is_empty());
    // The compensating tool really ran: nothing is left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join("created"))
            .unwrap()
            .count(),
        0
    );
    // Progress and the summary went to stderr; the last line is the one-line error.
    assert!(run.stderr.contains("↺ rolling back"), "{}", run.stderr);
    assert!(run.stderr.contains("Rolled back: "), "{}", run.stderr);
    let last = run.stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("error: plan failed: step `boom` failed"),
        "{last}"
    );
}

#[test]
fn no_rollback_leaves_the_work_in_place() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    dir.write("plan.yaml", SAGA);
    let run = run(
        dir.path(),
        &["execute", "plan.yaml", "--yes", "--json", "--no-rollback"],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    let json = json_of(&run);
    assert_eq!(status_of(&json, "a"), "completed");
    assert_eq!(json["rollback"], Value::Null);
    assert_eq!(
        std::fs::read_dir(dir.path().join("created"))
            .unwrap()
            .count(),
        3
    );
}

#[test]
fn a_compensation_that_fails_is_reported() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    // `delete` of a file that is already gone fails: the report names the step.
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: a\n    tool: create\n    args: { name: a }\n  - id: gone\n    tool: create\n    args: { name: x }\n    compensate_tool: delete\n    compensate_args: { name: never-created }\n  - id: boom\n    tool: fail\n    depends_on: [a, gone]\n",
    );
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let json = json_of(&run);
    assert_eq!(json["rollback"]["failed"][0]["step"], "gone");
    assert_eq!(json["rollback"]["compensated"], serde_json::json!(["a"]));
    assert!(
        run.stderr.contains("Could not undo: gone"),
        "{}",
        run.stderr
    );
}

#[test]
fn independent_steps_run_at_the_same_time() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    // Each call waits inside the tool until all three are inside: only parallel steps pass.
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: x\n    tool: barrier\n    args: { name: x, expect: 3 }\n  - id: y\n    tool: barrier\n    args: { name: y, expect: 3 }\n  - id: z\n    tool: barrier\n    args: { name: z, expect: 3 }\n",
    );
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("wave 1 (in parallel): x, y, z"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Plan succeeded"), "{}", run.stdout);
}

#[test]
fn max_parallel_1_runs_one_step_at_a_time() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: x\n    tool: barrier\n    args: { name: x, expect: 1 }\n  - id: y\n    tool: barrier\n    args: { name: y, expect: 1 }\n  - id: z\n    tool: barrier\n    args: { name: z, expect: 1 }\n",
    );
    let run = run(
        dir.path(),
        &["execute", "plan.yaml", "--yes", "--max-parallel", "1"],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    // Each call saw only itself inside.
    let seen = dir.read("seen.log");
    assert_eq!(seen.lines().count(), 3, "{seen}");
    assert!(seen.lines().all(|l| l.ends_with(" 1")), "{seen}");
}

#[test]
fn dry_run_checks_and_shows_but_runs_nothing() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    dir.write("plan.yaml", SAGA);
    let run = run(dir.path(), &["execute", "plan.yaml", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run
        .stdout
        .contains("Dry run: the plan is valid; nothing was executed."));
    assert!(run.stdout.contains("boom ← b, c"), "{}", run.stdout);
    assert!(!dir.path().join("created").exists());
    let run = common::run(dir.path(), &["execute", "plan.yaml", "--dry-run", "--json"]);
    let json = json_of(&run);
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["plan"]["steps"][3]["id"], "boom");
}

#[test]
fn without_yes_and_without_a_terminal_it_refuses() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    dir.write("plan.yaml", SAGA);
    let run = run(dir.path(), &["execute", "plan.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("refusing to execute without confirmation"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("created").exists());
}

#[test]
fn success_exits_0_with_results_in_json() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: make\n    tool: create\n    args: { name: one }\n  - id: show\n    agent: worker\n    tool: echo\n    args: { made: \"{{steps.make.result.id}}\" }\n    depends_on: [make]\n",
    );
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let json = json_of(&run);
    assert_eq!(json["success"], true);
    assert_eq!(json["steps"][1]["result"]["args"]["made"], "one");
    assert_eq!(json["steps"][1]["direct_tool"], "echo");
    assert_eq!(json["token_usage"]["input_tokens"], 0);
}

#[test]
fn the_example_runs_and_rolls_back() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = TempDir::new("cli-execute");
    // A copy, so the test leaves the repository as it was.
    for file in [
        "agenthelm.yaml",
        "plan.yaml",
        "tools/booking.py",
        "tools/reserve_car.sh",
    ] {
        dir.write(
            file,
            &std::fs::read_to_string(root.join("examples/trip").join(file)).unwrap(),
        );
    }
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let json = json_of(&run);
    assert_eq!(status_of(&json, "pay"), "failed");
    for id in ["flight", "hotel", "car"] {
        assert_eq!(status_of(&json, id), "compensated", "{id}");
    }
    assert!(json["steps"][3]["error"]
        .as_str()
        .unwrap()
        .contains("card declined"));
    assert_eq!(
        std::fs::read_dir(dir.path().join("bookings"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn ctrl_c_stops_the_run_and_rolls_back() {
    let dir = TempDir::new("cli-execute");
    workspace(&dir, "");
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: a\n    tool: create\n    args: { name: a }\n  - id: b\n    tool: gate\n    args: { name: b }\n    depends_on: [a]\n  - id: c\n    tool: create\n    args: { name: c }\n    depends_on: [b]\n",
    );
    let mut child = agenthelm(dir.path())
        .args(["execute", "plan.yaml", "--yes", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // stderr is read on a thread, so the test can wait for the CLI to acknowledge Ctrl-C.
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    // Wait until `a` is done and `b` is running, then press Ctrl-C.
    let waiting = dir.path().join("waiting");
    for _ in 0..2000 {
        if waiting.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(waiting.exists(), "step b never started");
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Only once the run is cancelled may `b` finish: then `c` must never start.
    let acknowledged = lines.iter().any(|line| line.starts_with("Interrupted"));
    assert!(acknowledged, "the CLI never acknowledged Ctrl-C");
    dir.write("go", "");
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: reader.join().unwrap(),
    };
    assert_eq!(run.code, 1, "{}", run.all());
    let json = json_of(&run);
    assert_eq!(status_of(&json, "a"), "compensated");
    assert_eq!(status_of(&json, "c"), "skipped");
    assert!(!dir.path().join("created/c").exists());
    assert!(!dir.path().join("created/a").exists());
}

#[test]
fn a_step_cannot_call_a_tool_its_agent_was_not_given() {
    let dir = TempDir::new("cli-execute");
    // `danger` is a workspace tool (so the orchestrator holds it for compensations), but the
    // worker agent was not given it.
    workspace(
        &dir,
        "  danger:\n    description: Creates a file\n    command: [python3, tools/t.py, create]\n",
    );
    dir.write(
        "plan.yaml",
        "goal: g\nsteps:\n  - id: sneak\n    agent: worker\n    tool: danger\n    args: { name: x }\n",
    );
    for args in [
        &["execute", "plan.yaml", "--yes"][..],
        &["execute", "plan.yaml", "--dry-run"],
        &["show", "plan.yaml"],
    ] {
        let run = run(dir.path(), args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(
            run.stderr.contains(
                "plan.yaml:5: `steps[0].tool`: step `sneak`: agent `worker` has no tool `danger`"
            ),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!dir.path().join("created").exists(), "the tool ran");
}
