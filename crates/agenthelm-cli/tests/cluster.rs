//! The cluster with real processes: `agenthelm execute` as coordinator, `agenthelm worker`s,
//! PostgreSQL and NATS servers of the test's own, and failures made with `kill -9` and
//! `SIGSTOP` (docs/cluster.md lists what each failure must do).

mod common;

use agenthelm_test_support::{NatsServer, PgServer};
use common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tool that logs what it does beside itself (with the worker that ran it: its parent),
/// makes its effect once per idempotency key, and can kill its worker at a chosen point
/// (`KILL_AT=do:b:after`) or take its time (`TOOL_SLEEP`, seconds; `SLOW=name` for one name).
const TOOL: &str = r#"
import json, os, sys, time, signal
mode = sys.argv[1]
args = json.load(sys.stdin)
name = args["name"]
key = os.environ.get("AGENTHELM_IDEMPOTENCY_KEY", "")
log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.log")
def note(line):
    with open(log, "a") as f:
        f.write(line + "\n")
worker = os.getppid()
note(f"begin {mode} {name} {key} {worker}")
if os.environ.get("KILL_AT") == f"{mode}:{name}:before":
    os.kill(worker, signal.SIGKILL)
    time.sleep(5)
pause = float(os.environ.get("TOOL_SLEEP", "0.05"))
if os.environ.get("SLOW") == name:
    pause = float(os.environ.get("SLOW_FOR", "3"))
time.sleep(pause)
if mode == "do" and args.get("fail"):
    note(f"end {mode} {name} {key} {worker}")
    print("failed on purpose", file=sys.stderr)
    sys.exit(1)
word = "effect" if mode == "do" else "undone"
with open(log) as f:
    done = any(l.split()[:3] == [word, name, key] for l in f)
if not done:
    note(f"{word} {name} {key}")
if os.environ.get("KILL_AT") == f"{mode}:{name}:after":
    os.kill(worker, signal.SIGKILL)
    time.sleep(5)
note(f"end {mode} {name} {key} {worker}")
print(json.dumps({"name": name, "worker": worker}))
"#;

const TOKEN: &str = "cluster-token-0123456789abcdef";

const TOOLS: &str = r#"
tools:
  make:
    command: [python3, tool.py, do]
    pass_env: [KILL_AT, TOOL_SLEEP, SLOW, SLOW_FOR]
    parameters:
      type: object
      properties: {name: {type: string}, fail: {type: boolean}}
      required: [name]
    compensating_tool: unmake
  unmake:
    command: [python3, tool.py, undo]
    pass_env: [KILL_AT, TOOL_SLEEP, SLOW, SLOW_FOR]
    parameters:
      type: object
      properties: {name: {type: string}}
      required: [name]
"#;

/// a → b → c, then d fails: a, b and c are undone.
const FAILING: &str = r#"goal: make a chain, then fail
steps:
  - {id: a, tool: make, args: {name: a}}
  - {id: b, tool: make, args: {name: b}, depends_on: [a]}
  - {id: c, tool: make, args: {name: c}, depends_on: [b]}
  - {id: d, tool: make, args: {name: d, fail: true}, depends_on: [c]}
"#;

/// a → b → c, all succeed.
const PASSING: &str = r#"goal: make a chain
steps:
  - {id: a, tool: make, args: {name: a}}
  - {id: b, tool: make, args: {name: b}, depends_on: [a]}
  - {id: c, tool: make, args: {name: c}, depends_on: [b]}
"#;

/// A workspace on its own database and NATS server, with short timings so failures show fast.
struct Cluster {
    dir: TempDir,
    nats: NatsServer,
    /// A PostgreSQL server of this test's own, for tests that stop it.
    pg: Option<PgServer>,
    workers: Vec<Child>,
}

impl Cluster {
    /// `None` (after saying why) when PostgreSQL or NATS cannot be had here.
    fn start(plan: &str) -> Option<Cluster> {
        Self::start_with(plan, TOOLS, false)
    }

    /// A cluster whose workspace declares `tools` (YAML, with the `tools:` key), on a
    /// PostgreSQL server of its own when `own_postgres` (else the shared one).
    fn start_with(plan: &str, tools: &str, own_postgres: bool) -> Option<Cluster> {
        let own = own_postgres.then(PgServer::start).transpose();
        let pg = match own.and_then(|own| Ok((PgServer::shared()?, own))) {
            Ok(pg) => pg,
            Err(why) => {
                eprintln!("cluster test skipped: {why}");
                return None;
            }
        };
        let url = match &pg.1 {
            Some(own) => own.database(),
            None => pg.0.database(),
        };
        let nats = match NatsServer::start() {
            Ok(nats) => nats,
            Err(why) => {
                eprintln!("cluster test skipped: {why}");
                return None;
            }
        };
        let dir = TempDir::new("cli-cluster");
        dir.write(
            "agenthelm.yaml",
            &format!(
                "{tools}store: {{backend: postgres, url: \"{}\"}}\ncluster:\n  nats: {}\n  ack_wait: 1s\n  max_deliver: 3\n  lease: 2s\n",
                url,
                nats.url()
            ),
        );
        dir.write("tool.py", TOOL);
        dir.write("plan.yaml", plan);
        Some(Cluster {
            dir,
            nats,
            pg: pg.1,
            workers: Vec::new(),
        })
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = agenthelm(self.dir.path());
        command.args(args).envs(env.iter().copied());
        command
    }

    /// Starts a worker for the pool of the workspace's own tools; returns its pid.
    fn worker(&mut self, env: &[(&str, &str)]) -> u32 {
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("worker-{}.log", self.workers.len())),
        )
        .unwrap();
        let child = self
            .command(&["worker", "--pool", "default"], env)
            .env("RUST_LOG", "agenthelm_cluster=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.workers.push(child);
        pid
    }

    fn execute(&self) -> Child {
        self.command(&["execute", "plan.yaml", "--yes", "--json"], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default()
    }

    /// Waits (up to 30 s) until the tool log holds `line`.
    fn wait_for_log(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(line) {
            assert!(
                Instant::now() < deadline,
                "no `{line}` in the log:\n{}\n{}",
                self.log(),
                self.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn worker_logs(&self) -> String {
        (0..self.workers.len())
            .filter_map(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("worker-{n}.log"))).ok()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    fn a_worker_lives(&mut self) -> bool {
        self.workers
            .iter_mut()
            .any(|w| matches!(w.try_wait(), Ok(None)))
    }

    /// Asserts that two calls began with `prefix`, under the same idempotency key.
    fn assert_begun_twice_with_one_key(&self, prefix: &str) {
        let keys: Vec<String> = self
            .log()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_owned())
            .collect();
        assert_eq!(keys.len(), 2, "{}", self.log());
        assert_eq!(keys[0], keys[1], "the key changed: {}", self.log());
    }

    /// How many lines of the log start with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.log().lines().filter(|l| l.starts_with(prefix)).count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

/// Waits for a command, with a limit, and reads what it printed.
fn finish(child: Child, cluster: &Cluster) -> Run {
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let run = output(child.wait_with_output().unwrap());
    drop(watchdog);
    if run.code != 0 && run.code != 1 {
        eprintln!("worker logs:\n{}", cluster.worker_logs());
    }
    run
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.all()))
}

/// `id=status` of each step of a run as `runs show --json` prints it.
fn step_statuses(shown: &Value) -> Vec<String> {
    shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s["id"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

#[test]
fn steps_and_compensations_run_on_a_worker_not_in_the_coordinator() {
    let Some(mut cluster) = Cluster::start(FAILING) else {
        return;
    };
    let worker = cluster.worker(&[]).to_string();
    let run = finish(cluster.execute(), &cluster);
    assert_eq!(run.code, 1, "{}", run.all());
    let result = json(&run);
    assert_eq!(
        result["rollback"]["compensated"],
        serde_json::json!(["c", "b", "a"]),
        "{result}"
    );
    // Every call ran on the worker, once.
    for line in cluster.log().lines().filter(|l| l.starts_with("begin ")) {
        assert!(line.ends_with(&worker), "not run by the worker: {line}");
    }
    assert_eq!(cluster.count("begin do "), 4, "{}", cluster.log());
    assert_eq!(cluster.count("begin undo "), 3, "{}", cluster.log());
}

#[test]
fn a_worker_killed_mid_step_has_the_step_redelivered_with_the_same_key_and_done_once() {
    let Some(mut cluster) = Cluster::start(PASSING) else {
        return;
    };
    // The first worker dies right after b's effect, before it could report it.
    let first = cluster.worker(&[("KILL_AT", "do:b:after")]);
    let run = cluster.execute();
    cluster.wait_for_log("effect b ");
    assert!(agenthelm_test_support::stops_running(first));
    cluster.worker(&[]);
    let run = finish(run, &cluster);
    assert_eq!(run.code, 0, "{}", run.all());
    cluster.assert_begun_twice_with_one_key("begin do b ");
    assert_eq!(cluster.count("effect b "), 1, "{}", cluster.log());
    assert_eq!(cluster.count("begin do c "), 1, "{}", cluster.log());
}

#[test]
fn a_long_step_sends_heartbeats_and_is_not_redelivered() {
    let Some(mut cluster) = Cluster::start(PASSING) else {
        return;
    };
    cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "3.5")]);
    cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "3.5")]);
    let run = finish(cluster.execute(), &cluster);
    assert_eq!(run.code, 0, "{}", run.all());
    // 3.5 s against an AckWait of 1 s: kept by in-progress heartbeats.
    assert_eq!(cluster.count("begin do b "), 1, "{}", cluster.log());
}

#[test]
fn a_stopped_worker_s_late_result_is_refused_and_the_redelivered_attempt_counts() {
    let Some(mut cluster) = Cluster::start(PASSING) else {
        return;
    };
    let stuck = cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "1.5")]);
    let run = cluster.execute();
    cluster.wait_for_log("begin do b ");
    signal(stuck, nix::sys::signal::Signal::SIGSTOP);
    let second = cluster.worker(&[]);
    // The second worker takes b once its AckWait has passed, and the run goes on.
    cluster.wait_for_log("end do c ");
    signal(stuck, nix::sys::signal::Signal::SIGCONT);
    let run = finish(run, &cluster);
    assert_eq!(run.code, 0, "{}", run.all());
    // The stopped worker's tool did finish (its child was not stopped)...
    assert_eq!(cluster.count("end do b "), 2, "{}", cluster.log());
    // ...but the outcome of b is the second worker's.
    let result = json(&run);
    let b = result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "b")
        .unwrap_or_else(|| panic!("no step b: {result}"));
    assert!(
        b["result"].to_string().contains(&second.to_string()),
        "b's result is not the second worker's ({second}): {b}"
    );
    // The late worker says so in its log, and runs on.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        cluster.worker_logs().contains("late attempt"),
        "{}",
        cluster.worker_logs()
    );
}

#[test]
fn a_step_whose_deliveries_run_out_fails_and_the_run_rolls_back() {
    let Some(mut cluster) = Cluster::start(FAILING.replace(", fail: true", "").as_str()) else {
        return;
    };
    // Every worker that takes d dies; they are started again, as a supervisor would.
    let mut run = cluster.execute();
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.try_wait().unwrap().is_none() {
        if !cluster.a_worker_lives() {
            cluster.worker(&[("KILL_AT", "do:d:before")]);
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end:\n{}",
            cluster.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let outcome = finish(run, &cluster);
    assert_eq!(outcome.code, 1, "{}", outcome.all());
    let result = json(&outcome);
    let text = result.to_string();
    assert!(text.contains("delivered 3 times"), "{text}");
    assert_eq!(
        result["rollback"]["compensated"],
        serde_json::json!(["c", "b", "a"]),
        "{result}"
    );
    assert_eq!(cluster.count("begin do d "), 3, "{}", cluster.log());
}

#[test]
fn nats_restarted_mid_run_loses_and_repeats_nothing() {
    let Some(mut cluster) = Cluster::start(PASSING) else {
        return;
    };
    cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "1.5")]);
    let run = cluster.execute();
    cluster.wait_for_log("begin do b ");
    cluster.nats.kill();
    std::thread::sleep(Duration::from_millis(700));
    cluster.nats.restart();
    let run = finish(run, &cluster);
    assert_eq!(run.code, 0, "{}", run.all());
    for name in ["a", "b", "c"] {
        assert_eq!(
            cluster.count(&format!("effect {name} ")),
            1,
            "{}",
            cluster.log()
        );
    }
    assert_eq!(cluster.count("begin do c "), 1, "{}", cluster.log());
    // The journal has each step's start and end once.
    let result = json(&run);
    let run_id = result["run_id"].as_str().unwrap();
    let traced = json(&output(
        cluster
            .command(&["traces", "list", "-n", "100", "--json"], &[])
            .output()
            .unwrap(),
    ));
    let calls: Vec<&str> = traced
        .as_array()
        .unwrap()
        .iter()
        .filter(|call| call["run_id"] == run_id)
        .map(|call| call["step_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(calls.len(), 3, "{traced}");
}

impl Cluster {
    /// Starts `agenthelm serve` on a free port (a coordinator), logging to `serve.log`;
    /// returns its address and its place among the processes (killed with the cluster).
    fn serve(&mut self) -> (String, usize) {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = self
            .command(&["serve", "--addr", "127.0.0.1:0"], &[])
            .env("RUST_LOG", "agenthelm_cluster=info,agenthelm_server=info")
            .env("AGENTHELM_TEST_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.workers.push(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let printed = self.dir.read("serve.log");
            if let Some(at) = printed.find("http://") {
                let addr = printed[at + 7..].split_whitespace().next().unwrap_or("");
                return (addr.to_owned(), self.workers.len() - 1);
            }
            assert!(Instant::now() < deadline, "serve did not start: {printed}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn runs_show(&self, run_id: &str) -> Value {
        json(&output(
            self.command(&["runs", "show", run_id, "--json"], &[])
                .output()
                .unwrap(),
        ))
    }

    /// The id of the only run in the store.
    fn only_run(&self) -> String {
        let listed = json(&output(
            self.command(&["runs", "list", "--json"], &[])
                .output()
                .unwrap(),
        ));
        listed[0]["run_id"].as_str().unwrap().to_owned()
    }

    /// Waits (up to 40 s) until run `run_id` is in `state`.
    fn wait_for_state(&self, run_id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let shown = self.runs_show(run_id);
            if shown["state"] == state {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} is not {state}: {shown}\n{}\nserve:\n{}",
                self.log(),
                self.dir.read("serve.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_killed_coordinator_s_run_is_taken_over_and_completed_steps_do_not_run_again() {
    let Some(mut cluster) = Cluster::start(PASSING) else {
        return;
    };
    cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "1.5")]);
    let mut coordinator = cluster.execute();
    cluster.wait_for_log("begin do b ");
    coordinator.kill().unwrap();
    let _ = coordinator.wait();
    let run_id = cluster.only_run();
    cluster.serve();
    cluster.wait_for_state(&run_id, "succeeded");
    for name in ["a", "b", "c"] {
        assert_eq!(
            cluster.count(&format!("begin do {name} ")),
            1,
            "{}",
            cluster.log()
        );
        assert_eq!(
            cluster.count(&format!("effect {name} ")),
            1,
            "{}",
            cluster.log()
        );
    }
    assert!(
        cluster.dir.read("serve.log").contains("Took over 1 run"),
        "{}",
        cluster.dir.read("serve.log")
    );
}

#[test]
fn a_coordinator_stopped_past_its_lease_is_fenced_off_when_it_continues() {
    let Some(mut cluster) = Cluster::start(PASSING) else {
        return;
    };
    cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "1.5")]);
    let first = cluster.execute();
    cluster.wait_for_log("begin do b ");
    signal(first.id(), nix::sys::signal::Signal::SIGSTOP);
    let run_id = cluster.only_run();
    cluster.serve();
    cluster.wait_for_state(&run_id, "succeeded");
    let events_before = cluster.runs_show(&run_id).to_string();
    signal(first.id(), nix::sys::signal::Signal::SIGCONT);
    let first = finish(first, &cluster);
    assert_eq!(first.code, 1, "{}", first.all());
    assert!(
        first.stderr.contains("another coordinator took run"),
        "{}",
        first.all()
    );
    // Nothing of the first coordinator's landed after the takeover.
    assert_eq!(cluster.runs_show(&run_id).to_string(), events_before);
    assert_eq!(cluster.count("begin do c "), 1, "{}", cluster.log());
}

#[test]
fn a_worker_killed_mid_compensation_leaves_it_in_doubt_not_run_twice() {
    let Some(mut cluster) = Cluster::start(FAILING) else {
        return;
    };
    cluster.worker(&[("KILL_AT", "undo:b:after")]);
    let run = cluster.execute();
    cluster.wait_for_log("undone b ");
    cluster.worker(&[]);
    let run = finish(run, &cluster);
    assert_eq!(run.code, 1, "{}", run.all());
    let result = json(&run);
    let rollback = &result["rollback"];
    assert_eq!(
        rollback["compensated"],
        serde_json::json!(["c", "a"]),
        "{result}"
    );
    let failed = rollback["failed"].to_string();
    assert!(
        failed.contains("\"b\"") && failed.contains("not run again"),
        "{failed}"
    );
    assert_eq!(cluster.count("begin undo b "), 1, "{}", cluster.log());
}

#[test]
fn an_idempotent_compensation_cut_short_is_run_again_with_its_key() {
    let tools = TOOLS.replace(
        "  unmake:\n    command: [python3, tool.py, undo]\n",
        "  unmake:\n    command: [python3, tool.py, undo]\n    idempotent: true\n",
    );
    let Some(mut cluster) = Cluster::start_with(FAILING, &tools, false) else {
        return;
    };
    cluster.worker(&[("KILL_AT", "undo:b:after")]);
    let run = cluster.execute();
    cluster.wait_for_log("undone b ");
    cluster.worker(&[]);
    let run = finish(run, &cluster);
    assert_eq!(run.code, 1, "{}", run.all());
    let result = json(&run);
    assert_eq!(
        result["rollback"]["compensated"],
        serde_json::json!(["c", "b", "a"]),
        "{result}"
    );
    cluster.assert_begun_twice_with_one_key("begin undo b ");
    assert_eq!(cluster.count("undone b "), 1, "{}", cluster.log());
}

#[test]
fn a_coordinator_killed_during_rollback_has_it_finished_by_another_once() {
    let Some(mut cluster) = Cluster::start(FAILING) else {
        return;
    };
    cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "1.5")]);
    let mut coordinator = cluster.execute();
    cluster.wait_for_log("begin undo b ");
    coordinator.kill().unwrap();
    let _ = coordinator.wait();
    let run_id = cluster.only_run();
    cluster.serve();
    let shown = cluster.wait_for_state(&run_id, "failed");
    for name in ["a", "b", "c"] {
        assert_eq!(
            cluster.count(&format!("begin undo {name} ")),
            1,
            "{}",
            cluster.log()
        );
        assert_eq!(
            cluster.count(&format!("undone {name} ")),
            1,
            "{}",
            cluster.log()
        );
    }
    let statuses = step_statuses(&shown);
    assert_eq!(
        statuses,
        [
            "a=compensated",
            "b=compensated",
            "c=compensated",
            "d=failed"
        ],
        "{shown}"
    );
}

#[test]
fn postgres_restarted_mid_run_loses_nothing_and_the_run_goes_on() {
    let Some(mut cluster) = Cluster::start_with(PASSING, TOOLS, true) else {
        return;
    };
    cluster.worker(&[("SLOW", "b"), ("SLOW_FOR", "1.5")]);
    let run = cluster.execute();
    cluster.wait_for_log("begin do b ");
    let pg = cluster.pg.as_mut().unwrap();
    pg.stop();
    std::thread::sleep(Duration::from_millis(2500));
    pg.restart();
    let first = finish(run, &cluster);
    let run_id = cluster.only_run();
    // The run waited while the store was away. Had the coordinator needed to write then, it
    // would have stopped where it was (exit 1), for another coordinator to carry on.
    if first.code == 1 {
        assert!(first.stderr.contains("resume"), "{}", first.all());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let resumed = output(
                cluster
                    .command(&["resume", &run_id, "--json"], &[])
                    .output()
                    .unwrap(),
            );
            if !resumed.stderr.contains("is being coordinated by") {
                assert_eq!(resumed.code, 0, "{}", resumed.all());
                break;
            }
            assert!(Instant::now() < deadline, "{}", resumed.all());
            std::thread::sleep(Duration::from_millis(500));
        }
    } else {
        assert_eq!(first.code, 0, "{}", first.all());
    }
    let shown = cluster.runs_show(&run_id);
    assert_eq!(shown["state"], "succeeded", "{shown}");
    for name in ["a", "b", "c"] {
        assert_eq!(
            cluster.count(&format!("effect {name} ")),
            1,
            "{}",
            cluster.log()
        );
    }
    assert_eq!(cluster.count("begin do c "), 1, "{}", cluster.log());
    // Each step ended once in the journal.
    let ended = step_statuses(&shown);
    assert_eq!(
        ended,
        ["a=completed", "b=completed", "c=completed"],
        "{shown}"
    );
}

/// `pay` needs a person's approval; `al` may decide through `serve`.
const PAYING: &str = r#"
  pay:
    command: [python3, tool.py, do]
    parameters:
      type: object
      properties: {name: {type: string}}
      required: [name]
    requires_approval: true
server:
  users:
    al: {token_env: AGENTHELM_TEST_TOKEN}
"#;

#[test]
fn a_decision_made_through_another_serve_after_a_coordinator_died_lets_the_run_go_on() {
    let tools = format!("{TOOLS}{PAYING}");
    let plan = "goal: make then pay\nsteps:\n  - {id: a, tool: make, args: {name: a}}\n  - {id: b, tool: pay, args: {name: b}, depends_on: [a]}\n";
    let Some(mut cluster) = Cluster::start_with(plan, &tools, false) else {
        return;
    };
    cluster.worker(&[]);
    let (first, index) = cluster.serve();
    let call = |addr: &str, method: &str, path: &str, body: Option<Value>| {
        agenthelm_test_support::request(addr, method, path, Some(TOKEN), body.as_ref())
    };
    let submitted = call(
        &first,
        "POST",
        "/api/runs",
        Some(serde_json::json!({"plan": plan, "approve": true})),
    );
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let run_id = submitted.body["run_id"].as_str().unwrap().to_owned();
    // The worker parks b's call; the run waits for a person.
    let deadline = Instant::now() + Duration::from_secs(30);
    let asked = loop {
        let pending = call(&first, "GET", "/api/approvals", None);
        if pending.body.as_array().is_some_and(|a| !a.is_empty()) {
            break pending.body;
        }
        assert!(
            Instant::now() < deadline,
            "nothing asked:\n{}\nserve:\n{}",
            cluster.worker_logs(),
            cluster.dir.read("serve.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(cluster.count("begin do b "), 0, "paid without a decision");
    let _ = cluster.workers[index].kill();
    let _ = cluster.workers[index].wait();

    let (second, _) = cluster.serve();
    let id = asked[0]["id"].as_str().unwrap();
    let decided = call(
        &second,
        "POST",
        &format!("/api/approvals/{id}"),
        Some(serde_json::json!({"decision": "approve"})),
    );
    assert_eq!(decided.status, 200, "{decided:?}");
    cluster.wait_for_state(&run_id, "succeeded");
    assert_eq!(cluster.count("effect a "), 1, "{}", cluster.log());
    assert_eq!(cluster.count("effect b "), 1, "{}", cluster.log());
    assert_eq!(cluster.count("begin do b "), 1, "{}", cluster.log());
}

#[test]
fn execute_decides_a_call_a_worker_parked_with_its_own_approval_rule() {
    let tools = format!("{TOOLS}{PAYING}");
    let plan = "goal: pay\nsteps:\n  - {id: b, tool: pay, args: {name: b}}\n";
    let Some(mut cluster) = Cluster::start_with(plan, &tools, false) else {
        return;
    };
    cluster.worker(&[]);
    // Without a terminal and without --approve-tools, execute refuses the call.
    let refused = finish(cluster.execute(), &cluster);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.all().contains("was not approved"),
        "{}",
        refused.all()
    );
    assert_eq!(cluster.count("begin do b "), 0, "{}", cluster.log());
    // With it, the call is approved on record and the worker makes it, once.
    let approved = cluster
        .command(&["execute", "plan.yaml", "--yes", "--approve-tools"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let approved = finish(approved, &cluster);
    assert_eq!(approved.code, 0, "{}", approved.all());
    assert_eq!(cluster.count("effect b "), 1, "{}", cluster.log());
}
