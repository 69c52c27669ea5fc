//! `agenthelm serve` killed with SIGKILL at the worst moments, then started again: while a plan
//! waits for review, while a tool call waits for a person, after a decision is on record but
//! before its call is done, during a step, and during rollback. Each time the restarted server
//! picks the run up from its journal; no effect happens twice, no compensation runs twice, no
//! decision is asked for again, and nothing that needs approval runs without one.
//!
//! The tools log every call with its idempotency key (the `LOGGING_TOOL` of the kill/resume
//! tests); `KILL_AT=mode:name:when` makes a tool kill its parent, the server, mid-call.

mod common;
// The library's loopback collector, which decodes OTLP protobuf and JSON.
#[path = "../../agenthelm/tests/otlp_collector/mod.rs"]
mod otlp_collector;
use agenthelm_test_support::{request, Answer};
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "al-token-0123456789abcdef";

fn workspace() -> TempDir {
    workspace_with("")
}

/// The workspace, with `more` (YAML) added at its end.
fn workspace_with(more: &str) -> TempDir {
    let dir = TempDir::new("cli-serve");
    let extra = r#"
  pay:
    command: [python3, tool.py, do]
    pass_env: [KILL_AT, TOOL_SLEEP]
    parameters:
      type: object
      properties: {name: {type: string}}
      required: [name]
    requires_approval: true
    compensating_tool: unmake
server:
  users:
    al: {token_env: AGENTHELM_TEST_TOKEN}
"#;
    dir.write(
        "agenthelm.yaml",
        &format!("{LOGGING_WORKSPACE}{extra}{more}"),
    );
    dir.write("tool.py", LOGGING_TOOL);
    dir
}

/// A server process and what it printed.
struct Serving {
    child: Child,
    addr: String,
    printed: Arc<Mutex<String>>,
}

impl Serving {
    /// Starts `agenthelm serve` in `dir` on a free port, with `env` added.
    fn start(dir: &TempDir, env: &[(&str, &str)]) -> Serving {
        let mut command = agenthelm(dir.path());
        command
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("AGENTHELM_TEST_TOKEN", TOKEN)
            .env("TOOL_SLEEP", "0.05")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let printed = Arc::new(Mutex::new(String::new()));
        let (found, address) = std::sync::mpsc::channel();
        let sink = Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http://") {
                    let url = line[at + 7..].split_whitespace().next().unwrap_or("");
                    let _ = found.send(url.to_owned());
                }
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let addr = address
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {}", printed.lock().unwrap()));
        Serving {
            child,
            addr,
            printed,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        request(&self.addr, method, path, Some(TOKEN), body.as_ref())
    }

    fn submit(&self, plan: &str, approve: bool) -> String {
        let answer = self.call(
            "POST",
            "/api/runs",
            Some(json!({"plan": plan, "approve": approve})),
        );
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["run_id"].as_str().unwrap().to_owned()
    }

    fn run(&self, id: &str) -> Value {
        let answer = self.call("GET", &format!("/api/runs/{id}"), None);
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    /// Waits until run `id` is in `state`.
    fn wait_for(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.run(id);
            if run["state"] == state {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "never {state}: {run:#}\n{}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pending(&self) -> Vec<Value> {
        let answer = self.call("GET", "/api/approvals", None);
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body.as_array().unwrap().clone()
    }

    fn printed(&self) -> String {
        self.printed.lock().unwrap().clone()
    }

    /// SIGKILL, as a crash.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the server to die by itself (a tool killed it).
    fn wait_killed(mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the server was not killed: {}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of the tools' log that start with `prefix` (`begin do b`, `effect b`, `undone b`).
fn logged(dir: &TempDir, prefix: &str) -> usize {
    std::fs::read_to_string(dir.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix} ")))
        .count()
}

const PAY: &str = "goal: make then pay\nsteps:\n  - {id: a, tool: make, args: {name: a}}\n  - {id: b, tool: pay, args: {name: b}, depends_on: [a]}\n";

#[test]
fn a_plan_under_review_survives_a_kill_and_runs_once_approved() {
    let dir = workspace();
    let first = Serving::start(&dir, &[]);
    let id = first.submit(PAY.replace("tool: pay", "tool: make").as_str(), false);
    first.kill();
    let second = Serving::start(&dir, &[]);
    assert_eq!(second.run(&id)["state"], "awaiting_approval");
    assert_eq!(logged(&dir, "begin do a"), 0, "nothing ran");
    let answer = second.call("POST", &format!("/api/runs/{id}/approve"), None);
    assert_eq!(answer.status, 200, "{answer:?}");
    second.wait_for(&id, "succeeded");
    assert_eq!((logged(&dir, "effect a"), logged(&dir, "effect b")), (1, 1));
}

/// Submits [`PAY`] to a server, kills it while b's call waits for a person, starts another
/// and approves the call there (checking it is the same request and nothing was called).
fn approve_after_a_kill(dir: &TempDir) -> (Serving, String) {
    let first = Serving::start(dir, &[]);
    let id = first.submit(PAY, true);
    first.wait_for(&id, "waiting_for_approval");
    let asked = first.pending();
    assert_eq!(asked.len(), 1, "{asked:?}");
    first.kill();

    let second = Serving::start(dir, &[]);
    assert_eq!(
        second.pending(),
        asked,
        "the same request, with the same id"
    );
    assert_eq!(
        logged(dir, "begin do b"),
        0,
        "not called without a decision"
    );
    let path = format!("/api/approvals/{}", asked[0]["id"].as_str().unwrap());
    let answer = second.call("POST", &path, Some(json!({"decision": "approve"})));
    assert_eq!(answer.status, 200, "{answer:?}");
    (second, id)
}

#[test]
fn a_waiting_tool_call_survives_a_kill_with_its_id_and_runs_once_approved() {
    let dir = workspace();
    let (second, id) = approve_after_a_kill(&dir);
    let run = second.wait_for(&id, "succeeded");
    assert_eq!(run["approvals"][0]["by"], "al");
    assert_eq!(logged(&dir, "effect b"), 1);
    assert_eq!(logged(&dir, "effect a"), 1, "a is not run again");

    // `runs show` tells who decided.
    let shown = common::run(dir.path(), &["runs", "show", &id, "--json"]);
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["review"]["decision"], "approve", "{shown}");
    assert_eq!(shown["review"]["by"], "al");
    assert_eq!(shown["approvals"][0]["decision"], "approve");
    assert_eq!(shown["approvals"][0]["by"], "al");
    assert_eq!(shown["approvals"][0]["step"], "b");
    let text = common::run(dir.path(), &["runs", "show", &id]).stdout;
    assert!(text.contains("Approval: b pay approved by al"), "{text}");
    assert!(
        text.contains("Plan: submitted by al, approved by al"),
        "{text}"
    );

    // The token is never printed nor journaled.
    assert!(!second.printed().contains(TOKEN));
    let journal = std::fs::read(dir.path().join(".agenthelm/agenthelm.db")).unwrap();
    assert!(!journal.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
}

#[test]
fn a_decision_on_record_before_a_crash_is_honoured_and_not_asked_again() {
    let dir = workspace();
    let first = Serving::start(&dir, &[]);
    let id = first.submit(PAY, true);
    first.wait_for(&id, "waiting_for_approval");
    let path = format!(
        "/api/approvals/{}",
        first.pending()[0]["id"].as_str().unwrap()
    );
    first.kill();
    // This server dies inside the approved call, before its work.
    let second = Serving::start(&dir, &[("KILL_AT", "do:b:before")]);
    let answer = second.call("POST", &path, Some(json!({"decision": "approve"})));
    assert_eq!(answer.status, 200, "{answer:?}");
    second.wait_killed();
    assert_eq!(logged(&dir, "effect b"), 0);

    let third = Serving::start(&dir, &[]);
    let run = third.wait_for(&id, "succeeded");
    assert!(third.pending().is_empty(), "not asked again");
    assert_eq!(run["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(
        logged(&dir, "begin do b"),
        2,
        "called again after the crash"
    );
    assert_eq!(
        logged(&dir, "effect b"),
        1,
        "with the same key: the work happened once"
    );
}

#[test]
fn a_step_cut_by_a_kill_runs_again_once_and_a_cut_rollback_never_undoes_twice() {
    let dir = workspace();
    // Killed right after b's work, before the step's end is on record.
    let first = Serving::start(&dir, &[("KILL_AT", "do:b:after")]);
    let plan = "goal: chain\nsteps:\n  - {id: a, tool: make, args: {name: a}}\n  - {id: b, tool: make, args: {name: b}, depends_on: [a]}\n  - {id: c, tool: make, args: {name: c}, depends_on: [b]}\n";
    let id = first.submit(plan, true);
    first.wait_killed();
    let second = Serving::start(&dir, &[]);
    second.wait_for(&id, "succeeded");
    assert_eq!(logged(&dir, "begin do b"), 2);
    assert_eq!(
        (
            logged(&dir, "effect a"),
            logged(&dir, "effect b"),
            logged(&dir, "effect c")
        ),
        (1, 1, 1)
    );
    drop(second);

    // Killed in the middle of the rollback of a failed run.
    let failing = "goal: fail\nsteps:\n  - {id: x, tool: make, args: {name: x}}\n  - {id: y, tool: make, args: {name: y}, depends_on: [x]}\n  - {id: z, tool: make, args: {name: z, fail: true}, depends_on: [y]}\n";
    let third = Serving::start(&dir, &[("KILL_AT", "undo:y:after")]);
    let id = third.submit(failing, true);
    third.wait_killed();
    let fourth = Serving::start(&dir, &[]);
    let run = fourth.wait_for(&id, "failed");
    assert_eq!(
        logged(&dir, "begin undo y"),
        1,
        "a compensation never runs twice"
    );
    assert_eq!(logged(&dir, "undone y"), 1);
    assert_eq!(
        logged(&dir, "undone x"),
        1,
        "the rollback went on after the restart"
    );
    let undone: Vec<&str> = run["rollback"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["step"].as_str().unwrap())
        .collect();
    assert_eq!(undone, ["y", "x"], "{run:#}");
}

#[test]
fn sigterm_stops_the_server_and_its_runs_resume_at_the_next_start() {
    let dir = workspace();
    let first = Serving::start(&dir, &[("TOOL_SLEEP", "1.5")]);
    let plan = "goal: two\nsteps:\n  - {id: a, tool: make, args: {name: x1}}\n  - {id: b, tool: make, args: {name: x2}, depends_on: [a]}\n";
    let id = first.submit(plan, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while logged(&dir, "begin do x1") == 0 {
        assert!(Instant::now() < deadline, "a never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A browser follows a run that waits for a person: its stream stays open, and must not
    // keep the server from stopping.
    let waiting = first.submit(PAY, true);
    first.wait_for(&waiting, "waiting_for_approval");
    let mut stream = std::net::TcpStream::connect(&first.addr).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "GET /api/runs/{waiting}/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
            first.addr
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut first = first;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(first.child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still serving");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}: {}", first.printed());
    assert!(first.printed().contains("Stopping"), "{}", first.printed());
    let second = Serving::start(&dir, &[]);
    second.wait_for(&id, "succeeded");
    assert_eq!(
        (logged(&dir, "effect x1"), logged(&dir, "effect x2")),
        (1, 1)
    );
}

#[test]
fn a_plan_whose_program_is_missing_is_refused_before_anything_runs() {
    let dir = workspace();
    let yaml = dir.read("agenthelm.yaml");
    dir.write(
        "agenthelm.yaml",
        &yaml.replace(
            "server:",
            "  ghost:\n    command: [no-such-program-for-agenthelm]\nserver:",
        ),
    );
    let serving = Serving::start(&dir, &[]);
    let plan = "goal: haunt\nsteps:\n  - {id: a, tool: make, args: {name: a}}\n  - {id: b, tool: ghost, args: {}, depends_on: [a]}\n";
    let answer = serving.call(
        "POST",
        "/api/runs",
        Some(json!({"plan": plan, "approve": true})),
    );
    assert_eq!(answer.status, 422, "{answer:?}");
    let problem = answer.body["problems"][0]["message"].as_str().unwrap();
    assert!(
        problem.contains("tool `ghost` (used by step `b`) cannot run"),
        "{problem}"
    );
    assert_eq!(logged(&dir, "begin do a"), 0, "nothing ran");
}

#[test]
fn live_spans_of_served_runs_reach_the_collector_while_it_serves() {
    let dir = workspace();
    let collector = otlp_collector::Collector::start();
    let serving = Serving::start(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=serve-secret"),
            // The SDK's batch delay (5 s by default), short so the spans come while serving.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let plan = "goal: two\nsteps:\n  - {id: a, tool: make, args: {name: s1}}\n  - {id: b, tool: make, args: {name: s2}, depends_on: [a]}\n";
    let id = serving.submit(plan, true);
    serving.wait_for(&id, "succeeded");
    let spans = collector.wait_for_span("invoke_workflow agenthelm", Duration::from_secs(20));
    let run = spans
        .iter()
        .find(|s| s.name == "invoke_workflow agenthelm")
        .unwrap_or_else(|| panic!("no run span: {spans:#?}\n{}", serving.printed()));
    assert_eq!(run.str("agenthelm.run_id"), Some(id.as_str()));
    assert!(run.parent_span_id.is_empty());
    let steps: Vec<&otlp_collector::Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == run.span_id && s.str("agenthelm.step_id").is_some())
        .collect();
    assert_eq!(steps.len(), 2, "{spans:#?}");
    for step in &steps {
        let call = spans
            .iter()
            .find(|s| s.parent_span_id == step.span_id && s.name == "execute_tool make")
            .unwrap_or_else(|| panic!("no tool call under {step:?}"));
        assert_eq!(call.str("gen_ai.tool.name"), Some("make"));
        assert_eq!(call.trace_id, run.trace_id);
    }
    assert!(collector
        .requests()
        .iter()
        .all(|r| r.header("x-api-key") == Some("serve-secret")));

    // SIGTERM: the export is flushed and shut down, and the server stops cleanly.
    let mut serving = serving;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(serving.child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = serving.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still serving");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}: {}", serving.printed());
    assert!(
        !serving.printed().contains("not exported"),
        "{}",
        serving.printed()
    );
}

#[test]
fn a_malformed_collector_setting_stops_serve_before_it_serves() {
    let dir = workspace();
    let out = output(
        agenthelm(dir.path())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("AGENTHELM_TEST_TOKEN", TOKEN)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("OTEL_EXPORTER_OTLP_ENDPOINT: OTLP endpoint `localhost:4318` is not usable"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("serves"), "{}", out.stderr);
}

#[test]
fn on_a_postgres_store_a_waiting_call_survives_a_kill_and_runs_once_approved() {
    let pg = match agenthelm_test_support::PgServer::shared() {
        Ok(pg) => pg,
        Err(why) => return eprintln!("PostgreSQL serve test skipped: {why}"),
    };
    let dir = workspace_with(&format!(
        "store: {{backend: postgres, url: \"{}\"}}\n",
        pg.database()
    ));
    let (second, id) = approve_after_a_kill(&dir);
    second.wait_for(&id, "succeeded");
    assert_eq!(logged(&dir, "effect b"), 1);
    assert_eq!(logged(&dir, "effect a"), 1, "a is not run again");
    // The run is in the database, for every other user of it.
    let listed = common::run(dir.path(), &["runs", "list", "--json"]);
    assert!(listed.stdout.contains(&id), "{}", listed.all());
}
