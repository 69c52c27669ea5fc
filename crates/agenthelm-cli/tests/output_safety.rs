//! What reaches a terminal or a pipe (issue 14): control characters from tools, models and plan
//! files are shown escaped in every human-readable output, and a reader that closes the pipe
//! early ends the command quietly with its own exit code.

mod common;

use agenthelm::store::{RunStore, SqliteStore};
use agenthelm::{Plan, PlanStep};
use agenthelm_test_support::{MockServer, Reply};
use common::*;
use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

/// A tool that prints a window title and a clear screen on stdout (`say`) or on stderr and
/// fails (`fail`); either waits for the file `go` first.
const HOSTILE_TOOL: &str = r#"
import json, os, sys, time
json.load(sys.stdin)
for _ in range(4000):
    if os.path.exists("go"):
        break
    time.sleep(0.005)
attack = "\x1b]0;pwned\x07\x1b[2J"
if sys.argv[1] == "say":
    print("said " + attack)
else:
    sys.stderr.write("failed " + attack + "\n")
    sys.exit(1)
"#;

const HOSTILE_WORKSPACE: &str = r#"
default_agent: worker
agents:
  worker:
    tools: [say, fail]
tools:
  say:
    command: [python3, hostile.py, say]
  fail:
    command: [python3, hostile.py, fail]
"#;

/// Step ids, a description and the goal carry the attack too (YAML `\e` is ESC, `\a` BEL).
const HOSTILE_PLAN: &str = r#"
goal: "goal \e]0;pwned\a\e[2J"
steps:
  - id: "said\e[2J"
    tool: say
    description: "describe \e]0;pwned\a\e[2J"
  - id: "failed\a"
    tool: fail
    depends_on: ["said\e[2J"]
"#;

fn hostile_workspace() -> TempDir {
    let dir = TempDir::new("cli-output-safety");
    dir.write("hostile.py", HOSTILE_TOOL);
    dir.write("agenthelm.yaml", HOSTILE_WORKSPACE);
    dir.write("plan.yaml", HOSTILE_PLAN);
    dir.write("go", "");
    dir
}

/// No ESC or BEL byte in either stream, and the escaped form is shown instead.
fn assert_escaped(what: &str, run: &Run) {
    assert_escaped_as(what, run, "\\x1b");
}

/// Like [`assert_escaped`], with the escaped form the output's own syntax uses.
fn assert_escaped_as(what: &str, run: &Run, escaped_esc: &str) {
    let all = run.all();
    assert!(
        !all.contains(['\x1b', '\x07']),
        "{what}: a raw control character reached the output:\n{all:?}"
    );
    assert!(
        all.contains(escaped_esc),
        "{what}: no escaped ESC in:\n{all}"
    );
}

#[test]
fn control_characters_are_escaped_in_every_human_output() {
    let dir = hostile_workspace();
    for (format, escaped_esc) in [
        ("table", "\\x1b"),
        ("mermaid", "\\x1b"),
        ("dot", "\\x1b"),
        // YAML's own escape in a double-quoted string.
        ("yaml", "\\e"),
    ] {
        let show = run(dir.path(), &["show", "plan.yaml", "-f", format]);
        assert_eq!(show.code, 0, "{}", show.all());
        assert_escaped_as(&format!("show -f {format}"), &show, escaped_esc);
    }
    let execute = run(dir.path(), &["execute", "plan.yaml", "--yes"]);
    assert_eq!(execute.code, 1, "{}", execute.all());
    assert_escaped("execute", &execute);
    assert!(execute.stderr.contains("failed \\x1b]0;pwned\\x07\\x1b[2J"));

    let list = run(dir.path(), &["runs", "list"]);
    assert_escaped("runs list", &list);
    let run_id = list
        .stdout
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("run-")))
        .expect("a run id in runs list")
        .to_owned();
    assert_escaped("runs show", &run(dir.path(), &["runs", "show", &run_id]));
    assert_escaped("traces list", &run(dir.path(), &["traces", "list"]));
    let traces = run(dir.path(), &["traces", "list", "--json"]);
    let traces: serde_json::Value = serde_json::from_str(&traces.stdout).unwrap();
    for trace in traces.as_array().unwrap() {
        let id = trace["id"].as_str().unwrap();
        let shown = run(dir.path(), &["traces", "show", id]);
        assert_eq!(shown.code, 0, "{}", shown.all());
        assert_escaped(&format!("traces show {id}"), &shown);
    }
}

#[test]
fn arguments_quoted_in_usage_errors_do_not_reach_the_terminal_raw() {
    let dir = hostile_workspace();
    for args in [&["x\x1b[2J"][..], &["show", "plan.yaml", "--x\x1b]0;t\x07"]] {
        // At a terminal, where clap would write what it quotes as it is.
        let usage = run_in_pty(dir.path(), args, "never asked", &[], &[]);
        assert_eq!(usage.code, 2, "{}", usage.all());
        assert!(
            !usage.stdout.contains("\x1b[2J") && !usage.stdout.contains("\x1b]0;t"),
            "{args:?}: {:?}",
            usage.stdout
        );
    }
}

#[test]
fn at_a_colour_terminal_only_the_palettes_own_colours_are_raw() {
    let dir = hostile_workspace();
    for args in [
        &["execute", "plan.yaml", "--yes"][..],
        &["show", "plan.yaml"],
    ] {
        let shown = run_in_pty(dir.path(), args, "never asked", &[], &[]);
        let text = &shown.stdout;
        assert!(
            text.contains("\x1b["),
            "{args:?}: no colours at all: {text:?}"
        );
        for raw in ["\x1b[2J", "\x1b]0;pwned", "\x07"] {
            assert!(!text.contains(raw), "{args:?}: {raw:?} in {text:?}");
        }
        assert!(text.contains("\\x1b[2J"), "{args:?}: {text:?}");
    }
}

#[test]
fn a_model_error_body_is_shown_escaped() {
    let dir = hostile_workspace();
    dir.write(
        "agenthelm.yaml",
        "model: openai/test-model\nagents:\n  writer: {}\n",
    );
    let server = MockServer::always(Reply::raw(500, "overloaded \x1b]0;pwned\x07\x1b[2J"));
    let out = agenthelm(dir.path())
        .args(["run", "write a poem"])
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("overloaded"), "{}", run.all());
    assert_escaped("run with a failing model", &run);
}

#[test]
fn json_output_stays_json_with_controls_escaped() {
    let dir = hostile_workspace();
    let execute = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    assert_eq!(execute.code, 1, "{}", execute.all());
    assert!(
        !execute.all().contains(['\x1b', '\x07']),
        "{}",
        execute.all()
    );
    let json: serde_json::Value = serde_json::from_str(&execute.stdout).unwrap();
    assert_eq!(json["goal"], "goal \x1b]0;pwned\x07\x1b[2J");
}

/// Runs the binary with stdout a small pipe (one page) whose reader takes one line and closes
/// it, then lets the hostile tool go on (file `go`); returns the exit code and stderr. Output
/// larger than the pipe meets the closed end whatever the timing.
fn read_one_line_and_close(dir: &TempDir, args: &[&str]) -> (i32, String) {
    let (reader, writer) = small_pipe();
    let mut cmd = agenthelm(dir.path());
    cmd.args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The parent's copy of the write end goes with the command.
    drop(cmd);
    let mut first = String::new();
    let mut reader = BufReader::with_capacity(1, reader);
    reader.read_line(&mut first).unwrap();
    drop(reader);
    assert!(!first.is_empty(), "agenthelm {args:?} printed nothing");
    dir.write("go", "");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

/// A pipe of one page, both ends closed on exec (the child gets the write end as its stdout).
fn small_pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes; each is owned once below.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096);
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// A plan whose table is far larger than a pipe's buffer.
fn big_plan(last_tool: &str) -> String {
    let mut plan = String::from("goal: many steps\nsteps:\n");
    for i in 0..1500 {
        plan.push_str(&format!(
            "  - {{id: s{i}, tool: say, description: \"step number {i} of a long plan\"}}\n"
        ));
    }
    plan.push_str(&format!("  - {{id: last, tool: {last_tool}}}\n"));
    plan
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = hostile_workspace();
    dir.write("big.yaml", &big_plan("say"));
    for args in [
        &["completions", "bash"][..],
        &["show", "big.yaml"],
        &["show", "big.yaml", "-f", "json"],
        &["show", "big.yaml", "-f", "mermaid"],
    ] {
        let (code, stderr) = read_one_line_and_close(&dir, args);
        assert_eq!(code, 0, "agenthelm {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "agenthelm {args:?}: {stderr}");
    }
    // A run whose goal alone is larger than a pipe's buffer.
    let store = SqliteStore::open(dir.path().join(".agenthelm/agenthelm.db")).unwrap();
    let mut plan = Plan::new("g".repeat(200_000));
    plan.steps.push(PlanStep::new("a", "a step"));
    store.begin_run("run-big-goal", &plan).unwrap();
    for args in [
        &["runs", "list", "--json"][..],
        &["runs", "show", "run-big-goal"],
    ] {
        let (code, stderr) = read_one_line_and_close(&dir, args);
        assert_eq!(code, 0, "agenthelm {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "agenthelm {args:?}: {stderr}");
    }
}

#[test]
fn execute_into_a_closed_pipe_keeps_the_runs_exit_code() {
    let dir = hostile_workspace();
    // One step, with a description larger than a pipe's buffer: the plan table alone fills it.
    let long = "d".repeat(200_000);
    dir.write(
        "long.yaml",
        &format!("goal: g\nsteps:\n  - {{id: a, tool: fail, description: {long}}}\n"),
    );
    // The tool goes on only once the reader is gone, so the summary meets the closed pipe.
    std::fs::remove_file(dir.path().join("go")).unwrap();
    let (code, stderr) = read_one_line_and_close(&dir, &["execute", "long.yaml", "--yes"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("failed"), "{stderr}");
}
