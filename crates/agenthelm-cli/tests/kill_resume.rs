//! Kill-and-resume: the real `agenthelm execute` is killed with SIGKILL at many moments (during
//! steps, at step boundaries, during rollback), then `agenthelm resume` finishes the run.
//!
//! The tools are slow command tools (python3) that log every call with its idempotency key:
//! `begin MODE NAME KEY PID`, then `effect NAME KEY` (do) or `undone NAME KEY` (undo) written
//! only once per key, then `end MODE NAME KEY PID`. Kill moments come from progress, never from
//! fixed sleeps:
//!
//! - tool triggers: the tool itself sends SIGKILL to agenthelm (its parent) just before its work
//!   (`before`: the step is running) or just after it (`after`: the work is done but agenthelm
//!   never heard of it), for every step and every compensation;
//! - journal triggers: the test watches the store and kills agenthelm as soon as the journal
//!   holds N events, for every N an uninterrupted run reaches.
//!
//! SIGKILL on agenthelm does not stop a command tool (it runs in its own process group), so an
//! orphaned tool may finish its work after the kill. The test waits for orphans before resuming,
//! as a person would before running `agenthelm resume`. The documented rule then says: a step
//! that was running is run again with the same idempotency key (so its effect happens once when
//! the tool honours the key, as these do); a compensation that had started is never run again
//! and is reported as "could not undo" (its orphan may still have done the work).

mod common;
use agenthelm::store::{EventFilter, RunStore, SqliteStore, StoredRun};
use agenthelm::{EventKind, StepStatus};
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A chain whose last step fails: a → b → c → d(fails), then c, b, a are undone.
const FAILING: &str = r#"goal: make a chain, then fail
steps:
  - {id: a, tool: make, args: {name: a}}
  - {id: b, tool: make, args: {name: b}, depends_on: [a]}
  - {id: c, tool: make, args: {name: c}, depends_on: [b]}
  - {id: d, tool: make, args: {name: d, fail: true}, depends_on: [c]}
"#;

/// A diamond that succeeds: a, then b and c in parallel, then d.
const SUCCEEDING: &str = r#"goal: make a diamond
steps:
  - {id: a, tool: make, args: {name: a}}
  - {id: b, tool: make, args: {name: b}, depends_on: [a]}
  - {id: c, tool: make, args: {name: c}, depends_on: [a]}
  - {id: d, tool: make, args: {name: d}, depends_on: [b, c]}
"#;

const STEPS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Trigger {
    /// `KILL_AT=mode:name:when`: the tool kills agenthelm.
    Tool(String),
    /// The test kills agenthelm once the journal holds this many events.
    Journal(usize),
}

/// One line of the tools' log.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    word: String,
    mode: String,
    name: String,
    key: String,
}

fn parse_log(text: &str) -> Vec<Line> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[0] {
                "begin" | "end" => Line {
                    word: f[0].into(),
                    mode: f[1].into(),
                    name: f[2].into(),
                    key: f[3].into(),
                },
                word => Line {
                    word: word.into(),
                    mode: if word == "effect" { "do" } else { "undo" }.into(),
                    name: f[1].into(),
                    key: f[2].into(),
                },
            }
        })
        .collect()
}

fn count(lines: &[Line], word: &str, mode: &str, name: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.word == word && l.mode == mode && l.name == name)
        .count()
}

struct Bench {
    dir: TempDir,
}

impl Bench {
    fn new(plan: &str) -> Bench {
        let dir = TempDir::new("cli-kill-resume");
        dir.write("agenthelm.yaml", LOGGING_WORKSPACE);
        dir.write("tool.py", LOGGING_TOOL);
        dir.write("plan.yaml", plan);
        Bench { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(self.path().join(".agenthelm/agenthelm.db")).unwrap()
    }

    fn log(&self) -> Vec<Line> {
        parse_log(&std::fs::read_to_string(self.path().join("calls.log")).unwrap_or_default())
    }

    fn spawn(&self, kill_at: Option<&str>) -> Child {
        let mut cmd = agenthelm(self.path());
        cmd.args(["execute", "plan.yaml", "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(at) = kill_at {
            cmd.env("KILL_AT", at);
        }
        cmd.spawn().unwrap()
    }

    /// Waits until every tool process that began has ended (orphans included).
    fn wait_for_orphans(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            let begun = log.iter().filter(|l| l.word == "begin").count();
            let ended = log.iter().filter(|l| l.word == "end").count();
            if begun == ended {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "orphaned tools never ended: {log:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn only_run(&self) -> StoredRun {
        let store = self.store();
        let runs = store.list_runs(10).unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        store.load_run(&runs[0].run_id).unwrap()
    }
}

/// What an uninterrupted run does.
struct Baseline {
    exit: i32,
    statuses: BTreeMap<String, String>,
    /// Journal length after the last event that is followed by a tool call (a kill once the
    /// journal holds this many events always lands before the run ends).
    last_before_a_call: usize,
    events: usize,
}

fn baseline(plan: &str) -> Baseline {
    let bench = Bench::new(plan);
    let run = run(bench.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    let json: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{}", run.all()));
    let stored = bench.only_run();
    let last_before_a_call = stored
        .events
        .iter()
        .rposition(|e| {
            matches!(
                e.kind,
                EventKind::StepStarted { .. } | EventKind::CompensationStarted { .. }
            )
        })
        .unwrap()
        + 1;
    Baseline {
        exit: run.code,
        statuses: statuses(&json),
        last_before_a_call,
        events: stored.events.len(),
    }
}

fn statuses(json: &Value) -> BTreeMap<String, String> {
    json["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {json}"))
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The phase after the run's last event, before the run list records its end.
const ENDED: &str = "after the run's last event, before the run list records its end";

/// Where in the run a kill landed, from the journal and the tools' log at the moment of the kill.
fn phase(journal: &StoredRun, log: &[Line]) -> String {
    if journal
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::RunFinished { .. }))
    {
        return ENDED.into();
    }
    let (running, uncertain) = open_work(journal);
    let in_rollback = journal
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::RollbackStarted { .. }));
    let tool_state = |mode: &str, name: &str| {
        let begun = count(log, "begin", mode, name);
        let work = if mode == "do" { "effect" } else { "undone" };
        let worked = count(log, work, mode, name) > 0 || count(log, "end", mode, name) > 0;
        let recorded = journal_count(journal, name, |k| match mode {
            "do" => matches!(k, EventKind::StepStarted { .. }),
            _ => matches!(k, EventKind::CompensationStarted { .. }),
        });
        if begun < recorded {
            "recorded as started, tool not yet started"
        } else if worked {
            "tool's work done, not yet recorded"
        } else {
            "tool running"
        }
    };
    if let Some(name) = uncertain.first() {
        return format!("rollback: compensation {}", tool_state("undo", name));
    }
    if in_rollback {
        return "rollback: between compensations".into();
    }
    if let Some(name) = running.first() {
        return format!("step: {}", tool_state("do", name));
    }
    let finished = journal
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::StepFinished { .. }));
    if finished {
        "between steps (none running)".into()
    } else {
        "before the first step".into()
    }
}

fn journal_count(journal: &StoredRun, step: &str, kind: impl Fn(&EventKind) -> bool) -> usize {
    journal
        .events
        .iter()
        .filter(|e| e.step_id.as_deref() == Some(step) && kind(&e.kind))
        .count()
}

/// Steps started and not finished, and compensations started and not finished, per the journal.
fn open_work(journal: &StoredRun) -> (Vec<String>, Vec<String>) {
    let mut running = BTreeSet::new();
    let mut compensating = BTreeSet::new();
    for event in &journal.events {
        let step = event.step_id.as_deref().unwrap_or_default().to_owned();
        match &event.kind {
            EventKind::StepStarted { .. } => {
                running.insert(step);
            }
            EventKind::StepFinished { .. } => {
                running.remove(&step);
            }
            EventKind::CompensationStarted { .. } => {
                compensating.insert(step);
            }
            EventKind::CompensationFinished { .. } => {
                compensating.remove(&step);
            }
            _ => {}
        }
    }
    (
        running.into_iter().collect(),
        compensating.into_iter().collect(),
    )
}

/// Kills one run at `trigger`, resumes it, checks everything; returns the phase the kill hit,
/// or `None` when the run ended before a journal trigger could fire (allowed only after the
/// last tool call).
fn kill_and_resume(plan: &str, base: &Baseline, trigger: &Trigger) -> Option<String> {
    let bench = Bench::new(plan);
    let mut child = match trigger {
        Trigger::Tool(at) => bench.spawn(Some(at)),
        Trigger::Journal(n) => {
            // Opened first so the test can watch the journal from the start.
            let store = bench.store();
            let mut child = bench.spawn(None);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if store.query(&EventFilter::default()).unwrap().len() >= *n {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            child
        }
    };
    let status = child.wait().unwrap();
    let log_at_kill = bench.log();
    let killed = status.signal() == Some(libc::SIGKILL);
    if !killed {
        match trigger {
            Trigger::Journal(n) if *n > base.last_before_a_call => return None,
            _ => panic!("{trigger:?}: the run was not killed ({status:?}); log: {log_at_kill:?}"),
        }
    }
    let at_kill = bench.only_run();
    if at_kill.summary.success.is_some() {
        // The kill came after the run was over (while it printed its summary).
        assert!(
            matches!(trigger, Trigger::Journal(n) if *n > base.last_before_a_call),
            "{trigger:?}: the run ended before the kill"
        );
        return None;
    }
    let phase = match trigger {
        // The tool knows exactly where it was; the log may already show more (orphans go on).
        Trigger::Tool(at) if phase(&at_kill, &log_at_kill) != ENDED => {
            let (work, when) = match at.split(':').collect::<Vec<_>>()[..] {
                [mode, _, when] => (mode, when),
                _ => panic!("bad trigger {at}"),
            };
            let state = if when == "before" {
                "tool running"
            } else {
                "tool's work done, not yet recorded"
            };
            match work {
                "do" => format!("step: {state}"),
                _ => format!("rollback: compensation {state}"),
            }
        }
        _ => phase(&at_kill, &log_at_kill),
    };
    let (running_at_kill, uncertain) = open_work(&at_kill);
    bench.wait_for_orphans();

    // Nothing was done without being on record first.
    let log = bench.log();
    for name in STEPS {
        let started = journal_count(&at_kill, name, |k| {
            matches!(k, EventKind::StepStarted { .. })
        });
        assert!(
            count(&log, "begin", "do", name) <= started,
            "{trigger:?}: step {name} ran without a journaled start"
        );
        let comp = journal_count(&at_kill, name, |k| {
            matches!(k, EventKind::CompensationStarted { .. })
        });
        assert!(
            count(&log, "begin", "undo", name) <= comp,
            "{trigger:?}: {name} compensated without a journaled intent"
        );
    }

    let resumed = run(bench.path(), &["resume", &at_kill.summary.run_id, "--json"]);
    let context = format!("{trigger:?} (phase {phase}): {}", resumed.all());
    assert_eq!(resumed.code, base.exit, "{context}");
    if phase == ENDED {
        // Only the run list missed the end: resume records it and exits as the run ended.
        assert!(
            resumed.stderr.contains("its end is now recorded"),
            "{context}"
        );
        let finished = bench.only_run();
        assert_eq!(finished.summary.success, Some(base.exit == 0), "{context}");
        assert_eq!(finished.events, at_kill.events, "{context}");
        return Some(phase);
    }
    let json: Value = serde_json::from_str(&resumed.stdout).unwrap_or_else(|_| panic!("{context}"));
    bench.wait_for_orphans();
    let log = bench.log();

    // The run ends in the same state as an uninterrupted one, except that a compensation whose
    // outcome the kill made unknown is reported (never re-run).
    let mut expected = base.statuses.clone();
    let unknown: Vec<String> = json["rollback"]["failed"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|x| x["step"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(unknown, uncertain, "{context}");
    for name in &uncertain {
        expected.insert(name.clone(), StepStatus::Completed.to_string());
    }
    assert_eq!(statuses(&json), expected, "{context}");

    // Side effects: once per step that does work; undone exactly once where the plan fails.
    let failing = base.exit == 1;
    for name in STEPS {
        let effects = count(&log, "effect", "do", name);
        let undos = count(&log, "undone", "undo", name);
        if failing && name == "d" {
            assert_eq!((effects, undos), (0, 0), "{context}");
        } else if failing && uncertain.iter().any(|u| u == name) {
            // A compensation on record as started is never run again: undone only if its
            // orphaned tool did it, and left for a person to check if the kill came before the
            // tool began (the journal cannot tell the two apart).
            let begun = count(&log, "begin", "undo", name);
            assert_eq!((effects, undos), (1, begun), "{name}: {context}");
        } else if failing {
            assert_eq!((effects, undos), (1, 1), "{name}: {context}");
        } else {
            assert_eq!((effects, undos), (1, 0), "{name}: {context}");
        }
        // A step runs twice only when it was running at the kill (the re-run rule), with the
        // same idempotency key both times.
        let runs: Vec<&Line> = log
            .iter()
            .filter(|l| l.word == "begin" && l.mode == "do" && l.name == name)
            .collect();
        let allowed = if running_at_kill.iter().any(|r| r == name) {
            2
        } else {
            1
        };
        assert!(
            !runs.is_empty() && runs.len() <= allowed,
            "{name} ran {} times (allowed {allowed}): {context}",
            runs.len()
        );
        assert!(runs.iter().all(|l| l.key == runs[0].key), "{context}");
        // No compensation ever runs twice.
        assert!(count(&log, "begin", "undo", name) <= 1, "{name}: {context}");
    }

    // The store holds every event of finished work: the journal before the kill is kept as it
    // was, and the finished run has each step's end and each compensation's start and outcome.
    let finished = bench.only_run();
    assert_eq!(finished.summary.success, Some(base.exit == 0), "{context}");
    assert_eq!(
        &finished.events[..at_kill.events.len()],
        &at_kill.events[..]
    );
    assert!(finished.events.len() >= base.events, "{context}");
    for name in STEPS {
        let ends = journal_count(&finished, name, |k| {
            matches!(k, EventKind::StepFinished { .. })
        });
        assert!(ends >= 1, "{name} has no recorded end: {context}");
        let intents = journal_count(&finished, name, |k| {
            matches!(k, EventKind::CompensationStarted { .. })
        });
        let outcomes = journal_count(&finished, name, |k| {
            matches!(k, EventKind::CompensationFinished { .. })
        });
        let begun = count(&log, "begin", "undo", name);
        let unknown = usize::from(uncertain.iter().any(|u| u == name));
        assert_eq!(intents, begun.max(unknown), "{name}: {context}");
        assert_eq!(outcomes + unknown, intents, "{name}: {context}");
    }
    assert!(matches!(
        finished.events.last().map(|e| &e.kind),
        Some(EventKind::RunFinished { .. })
    ));

    // A finished run cannot be resumed again.
    let again = run(bench.path(), &["resume", &at_kill.summary.run_id]);
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.stderr.contains("already finished"), "{}", again.all());
    Some(phase)
}

/// Runs every trigger (three at a time: the tools mostly sleep) and returns how often each
/// phase was hit.
fn sweep(plan: &'static str, base: &Baseline, triggers: Vec<Trigger>) -> BTreeMap<String, usize> {
    let phases = std::sync::Mutex::new(BTreeMap::new());
    let queue = std::sync::Mutex::new(triggers);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| loop {
                let Some(trigger) = queue.lock().unwrap().pop() else {
                    return;
                };
                if let Some(phase) = kill_and_resume(plan, base, &trigger) {
                    *phases.lock().unwrap().entry(phase).or_insert(0) += 1;
                }
            });
        }
    });
    let phases = phases.into_inner().unwrap();
    let total: usize = phases.values().sum();
    eprintln!("{total} kill points: {phases:#?}");
    phases
}

fn tool_triggers(steps: &[&str], undos: &[&str]) -> Vec<Trigger> {
    let mut triggers = Vec::new();
    for (mode, names) in [("do", steps), ("undo", undos)] {
        for name in names {
            for when in ["before", "after"] {
                triggers.push(Trigger::Tool(format!("{mode}:{name}:{when}")));
            }
        }
    }
    triggers
}

/// A kill once the journal holds N events, for every N an uninterrupted run reaches.
fn journal_triggers(base: &Baseline) -> Vec<Trigger> {
    (1..base.events).map(Trigger::Journal).collect()
}

fn covered(phases: &BTreeMap<String, usize>, prefix: &str) -> bool {
    phases
        .iter()
        .any(|(phase, n)| phase.starts_with(prefix) && *n > 0)
}

#[test]
fn a_failing_plan_killed_anywhere_resumes_to_the_same_end() {
    let mut triggers = tool_triggers(&["a", "b", "c", "d"], &["c", "b", "a"]);
    let base = baseline(FAILING);
    triggers.extend(journal_triggers(&base));
    let phases = sweep(FAILING, &base, triggers);
    for phase in [
        "step: tool running",
        "step: tool's work done, not yet recorded",
        "rollback: compensation tool running",
        "rollback: compensation tool's work done, not yet recorded",
    ] {
        assert!(covered(&phases, phase), "{phase} never hit: {phases:?}");
    }
}

#[test]
fn a_succeeding_plan_killed_anywhere_resumes_to_the_same_end() {
    let mut triggers = tool_triggers(&["a", "b", "c", "d"], &[]);
    let base = baseline(SUCCEEDING);
    triggers.extend(journal_triggers(&base));
    let phases = sweep(SUCCEEDING, &base, triggers);
    for phase in [
        "step: tool running",
        "step: tool's work done, not yet recorded",
    ] {
        assert!(covered(&phases, phase), "{phase} never hit: {phases:?}");
    }
}

/// Issue 14: two `resume`s of one run started at the same moment. The run is claimed by one
/// process at a time, so exactly one carries it on and the other is refused (exit 2) naming the
/// owner; no step runs a third time and no compensation runs twice.
#[test]
fn two_resumes_at_once_carry_the_run_on_once() {
    let bench = Bench::new(FAILING);
    // SIGKILL while step b runs: a is done, b is to be run again, c and d never started.
    let status = bench.spawn(Some("do:b:before")).wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    bench.wait_for_orphans();
    let run_id = bench.only_run().summary.run_id;

    let resume = || {
        let mut cmd = agenthelm(bench.path());
        // Slow tools, so the second resume starts while the first still works.
        cmd.args(["resume", &run_id])
            .env("TOOL_SLEEP", "0.4")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let resumes = [resume(), resume()];
    let pids: Vec<u32> = resumes.iter().map(Child::id).collect();
    let mut ends: Vec<(i32, u32, String)> = resumes
        .into_iter()
        .zip(&pids)
        .map(|(child, &pid)| {
            let out = output(child.wait_with_output().unwrap());
            (out.code, pid, out.stderr)
        })
        .collect();
    ends.sort();
    let codes: Vec<i32> = ends.iter().map(|e| e.0).collect();
    assert_eq!(codes, [1, 2], "{ends:#?}");
    let (owner, refused) = (ends[0].1, &ends[1].2);
    assert!(
        refused.contains(&format!("is already being run by process {owner} on ")),
        "{refused}"
    );
    bench.wait_for_orphans();

    let log = bench.log();
    // b ran in the killed execute and once more on resume; the rest once each.
    let expected_begins = [
        ("do", "a", 1),
        ("do", "b", 2),
        ("do", "c", 1),
        ("do", "d", 1),
    ]
    .into_iter()
    .chain([("undo", "a", 1), ("undo", "b", 1), ("undo", "c", 1)]);
    for (mode, name, times) in expected_begins {
        assert_eq!(
            count(&log, "begin", mode, name),
            times,
            "{mode} {name}: {log:?}"
        );
    }
    for (word, mode) in [("effect", "do"), ("undone", "undo")] {
        for name in STEPS {
            assert!(count(&log, word, mode, name) <= 1, "{word} {name}: {log:?}");
        }
    }
    let journal = bench.only_run();
    let finished = journal
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RunFinished { .. }))
        .count();
    assert_eq!(finished, 1);
}

/// Issue 14: `resume` of a run that `execute` is still running is refused (exit 2) naming the
/// `execute` process, and takes nothing from it: every step and compensation runs once.
#[test]
fn resume_while_execute_runs_the_run_is_refused() {
    let bench = Bench::new(FAILING);
    let mut cmd = agenthelm(bench.path());
    cmd.args(["execute", "plan.yaml", "--yes"])
        .env("TOOL_SLEEP", "0.3")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut execute = cmd.spawn().unwrap();
    // As soon as the first tool has begun, the run is in the store and under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bench.log().is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let run_id = bench.only_run().summary.run_id;
    let refused = run(bench.path(), &["resume", &run_id]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!(
            "is already being run by process {} on ",
            execute.id()
        )),
        "{}",
        refused.stderr
    );
    assert_eq!(execute.wait().unwrap().code(), Some(1));
    let log = bench.log();
    for (mode, names) in [("do", &STEPS[..]), ("undo", &["a", "b", "c"][..])] {
        for name in names {
            assert_eq!(
                count(&log, "begin", mode, name),
                1,
                "{mode} {name}: {log:?}"
            );
        }
    }
}
