//! `runs show --json`, the HTML report (`runs report`) and the OTLP export tell the same story
//! about the same stored run: each step's status and attempts, the run's cost and whether that
//! cost is incomplete (some model call has no price). The runs are written straight into a
//! workspace's store with the library, so they are exactly the same every time: a run that died,
//! was resumed, re-ran a step, failed and rolled back; a run with a failed, unpriced model call
//! beside a priced one; and a run that died and was never resumed.
//!
//! Every view is compared with [`RunState::replay`] of the stored events, and the replay itself
//! with what each run is known to hold, so a mistake shared by all views fails too.

mod common;

use agenthelm::otlp::{attribute, spans_of, SpanData};
use agenthelm::store::{RunStore, SqliteStore, StoredRun};
use agenthelm::trace::Interruption;
use agenthelm::{Event, EventKind, Plan, PlanStep, RunState, StepStatus, TokenUsage};
use common::{run, TempDir};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

const T0: u64 = 1_780_000_000_000;

/// A workspace with one agent in a fresh folder, removed when dropped.
struct Workspace(TempDir);

impl Workspace {
    fn new(label: &str) -> Workspace {
        let dir = TempDir::new(&format!("cli-run-views-{label}"));
        dir.write("agenthelm.yaml", "agents:\n  worker: {}\n");
        Workspace(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// The workspace's default store, beside agenthelm.yaml.
    fn store(&self) -> SqliteStore {
        SqliteStore::open(self.path().join(".agenthelm/agenthelm.db")).unwrap()
    }

    /// Runs the binary here; panics unless it exits 0. Returns stdout.
    fn agenthelm(&self, args: &[&str]) -> String {
        let out = run(self.path(), args);
        assert_eq!(out.code, 0, "agenthelm {args:?} failed: {}", out.all());
        out.stdout
    }
}

/// Events of run `run_id`, stamped from `T0`.
struct Journal {
    run_id: &'static str,
}

impl Journal {
    fn at(&self, ms: u64, step: Option<&str>, kind: EventKind) -> Event {
        Event {
            timestamp_ms: T0 + ms,
            run_id: Some(Arc::from(self.run_id)),
            step_id: step.map(Arc::from),
            agent: step.map(|_| Arc::from("worker")),
            kind,
        }
    }

    fn run_started(&self, ms: u64, plan: &Plan) -> Event {
        let kind = EventKind::RunStarted {
            goal: plan.goal.clone(),
            steps: plan.steps.len(),
            budget: None,
        };
        self.at(ms, None, kind)
    }

    fn started(&self, ms: u64, step: &str) -> Event {
        self.at(ms, Some(step), EventKind::StepStarted { direct_tool: None })
    }

    fn finished(&self, ms: u64, step: &str, status: StepStatus, error: Option<&str>) -> Event {
        let kind = EventKind::StepFinished {
            status,
            result: None,
            result_call: None,
            duration_ms: 1.0,
            error: error.map(str::to_owned),
        };
        self.at(ms, Some(step), kind)
    }

    fn llm(&self, ms: u64, step: &str, cost_usd: Option<f64>, error: Option<&str>) -> Event {
        let kind = EventKind::LlmCall {
            model: "openai/gpt-4o-mini".into(),
            usage: TokenUsage::new(100, 20),
            cost_usd,
            latency_ms: 1.0,
            tool_calls: 0,
            error: error.map(str::to_owned),
            exchange: None,
        };
        self.at(ms, Some(step), kind)
    }

    fn run_finished(&self, ms: u64, success: bool) -> Event {
        let kind = EventKind::RunFinished {
            success,
            duration_ms: ms as f64,
        };
        self.at(ms, None, kind)
    }
}

/// What a run is known to hold: per step (id, status, attempts), its cost and whether that cost
/// is incomplete.
struct Expected {
    steps: &'static [(&'static str, &'static str, u64)],
    cost_usd: f64,
    cost_incomplete: bool,
    resumes: u64,
}

/// The text of the report's `cost` fact.
fn html_cost(html: &str) -> &str {
    let start = html
        .find("<dt>cost</dt><dd>")
        .expect("the report has no cost")
        + "<dt>cost</dt><dd>".len();
    let len = html[start..].find("</dd>").unwrap();
    &html[start..start + len]
}

/// The report's table of steps (the rollback's table has rows per step too).
fn steps_table(html: &str) -> &str {
    let start = html
        .find(r#"<table id="steps">"#)
        .expect("the report has no table of steps");
    let len = html[start..].find("</table>").unwrap();
    &html[start..start + len]
}

/// Checks that the replayed state, `runs show --json`, the OTLP export and the HTML report of
/// `run_id` all say what `expected` says.
fn assert_views_agree(ws: &Workspace, run_id: &str, expected: &Expected) {
    let stored: StoredRun = ws.store().load_run(run_id).unwrap();

    // The run state, replayed from the journal.
    let state = RunState::replay(&stored.plan, &stored.events);
    let usage = *state.usage();
    let replayed: Vec<(String, String, u64)> = state
        .steps()
        .iter()
        .map(|s| {
            (
                s.id.to_string(),
                s.status.to_string(),
                u64::from(s.attempts),
            )
        })
        .collect();
    let wanted: Vec<(String, String, u64)> = expected
        .steps
        .iter()
        .map(|&(id, status, attempts)| (id.to_owned(), status.to_owned(), attempts))
        .collect();
    assert_eq!(replayed, wanted, "run state of {run_id}");
    assert_eq!(
        usage.cost_usd, expected.cost_usd,
        "run state cost of {run_id}"
    );
    assert_eq!(
        usage.cost_incomplete(),
        expected.cost_incomplete,
        "run state incomplete flag of {run_id}"
    );
    assert_eq!(state.resumes().len() as u64, expected.resumes);

    // `runs show --json`.
    let shown = ws.agenthelm(&["runs", "show", run_id, "--json"]);
    let shown: Value =
        serde_json::from_str(&shown).unwrap_or_else(|e| panic!("not JSON ({e}): {shown}"));
    let cli_steps: Vec<(String, String, u64)> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
                s["attempts"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no attempts in {s}")),
            )
        })
        .collect();
    assert_eq!(cli_steps, replayed, "runs show steps of {run_id}");
    assert_eq!(
        shown["total_cost_usd"].as_f64(),
        Some(usage.cost_usd),
        "runs show cost of {run_id}"
    );
    assert_eq!(
        shown["cost_incomplete"],
        json!(usage.cost_incomplete()),
        "runs show incomplete flag of {run_id}"
    );
    assert_eq!(shown["unpriced_calls"], json!(usage.unpriced_calls));
    assert_eq!(shown["resumes"], json!(expected.resumes));

    // The OTLP export: the spans the exporter sends for these events.
    let spans = spans_of(&stored.events);
    let attr = |span: &SpanData, key: &str| attribute(span, key).map(|v| v.to_string());
    let roots: Vec<&SpanData> = spans
        .iter()
        // A root has the invalid (all-zero) parent id.
        .filter(|s| s.parent_span_id.to_string() == "0000000000000000")
        .collect();
    assert_eq!(roots.len(), 1, "one trace per run");
    let root = roots[0];
    assert_eq!(root.name, "agenthelm.run");
    assert_eq!(attr(root, "agenthelm.run.id"), Some(run_id.to_string()));
    assert_eq!(
        attr(root, "agenthelm.cost_usd"),
        Some(usage.cost_usd.to_string()),
        "OTLP cost of {run_id}"
    );
    assert_eq!(
        attr(root, "agenthelm.cost_incomplete"),
        Some(usage.cost_incomplete().to_string()),
        "OTLP incomplete flag of {run_id}"
    );
    let resumed = (expected.resumes > 0).then(|| expected.resumes.to_string());
    assert_eq!(attr(root, "agenthelm.run.resumed"), resumed);
    for (id, status, attempts) in &replayed {
        let step_spans: Vec<&SpanData> = spans
            .iter()
            .filter(|s| {
                s.name == format!("step {id}")
                    && attr(s, "agenthelm.step.id").as_deref() == Some(id.as_str())
            })
            .collect();
        assert_eq!(
            step_spans.len() as u64,
            *attempts,
            "OTLP: one span per attempt of {run_id}/{id}"
        );
        if let Some(last) = step_spans.last() {
            assert_eq!(
                attr(last, "agenthelm.step.status").as_deref(),
                Some(status.as_str()),
                "OTLP status of {run_id}/{id}"
            );
            assert_eq!(
                attr(last, "agenthelm.step.attempts"),
                Some(attempts.to_string()),
                "OTLP attempts of {run_id}/{id}"
            );
        }
    }

    // The HTML report, written by `runs report`.
    let page = ws.path().join(format!("{run_id}.html"));
    ws.agenthelm(&["runs", "report", run_id, "--output", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    let table = steps_table(&html);
    assert_eq!(
        table.matches("<tr data-step=").count(),
        replayed.len(),
        "one row per step in the report's table"
    );
    for (id, status, _) in &replayed {
        let row = format!(r#"<tr data-step="{id}" data-status="{status}">"#);
        assert!(
            table.contains(&row),
            "the report does not show {run_id}/{id} as {status}"
        );
    }
    let cost = if usage.cost_incomplete() {
        format!("${:.6} + unpriced calls", usage.cost_usd)
    } else {
        format!("${:.6}", usage.cost_usd)
    };
    assert_eq!(html_cost(&html), cost, "report cost of {run_id}");
}

/// A run that died while step `b` ran, was resumed (`b` run again), failed in `b` and rolled
/// `a` back. Every model call is priced.
#[test]
fn a_resumed_run_that_rolled_back_looks_the_same_in_every_view() {
    let ws = Workspace::new("resumed");
    let run = Journal { run_id: "resumed" };
    let mut plan = Plan::new("resume, fail and roll back");
    plan.steps = vec![
        PlanStep::new("a", "make a branch").agent("worker"),
        PlanStep::new("b", "run the tests")
            .agent("worker")
            .depends_on(["a"]),
        PlanStep::new("c", "open a pull request")
            .agent("worker")
            .depends_on(["b"]),
    ];
    let store = ws.store();
    store.begin_run(run.run_id, &plan).unwrap();
    // The first process: `a` completes, `b` starts, then the process dies (no run_finished).
    store
        .append_batch(&[
            run.run_started(0, &plan),
            run.started(1, "a"),
            run.llm(2, "a", Some(0.25), None),
            run.finished(3, "a", StepStatus::Completed, None),
            run.started(4, "b"),
            run.llm(5, "b", Some(0.5), None),
        ])
        .unwrap();
    // `agenthelm resume`: `b` again, it fails, `a` is undone.
    let rerun = Interruption {
        step: "b".into(),
        rerun: true,
    };
    store
        .append_batch(&[
            run.at(
                100,
                None,
                EventKind::RunResumed {
                    interrupted: vec![rerun.to_entry()],
                },
            ),
            run.started(101, "b"),
            run.llm(102, "b", Some(0.125), None),
            run.finished(103, "b", StepStatus::Failed, Some("tests failed")),
            run.at(
                104,
                None,
                EventKind::RollbackStarted {
                    steps: vec!["a".into()],
                },
            ),
            run.at(
                105,
                Some("a"),
                EventKind::CompensationStarted {
                    action: 0,
                    tool: "delete_branch".into(),
                    args: json!({"name": "feature"}),
                },
            ),
            run.at(
                106,
                Some("a"),
                EventKind::CompensationFinished {
                    action: 0,
                    tool: "delete_branch".into(),
                    success: true,
                    error: None,
                },
            ),
            run.run_finished(107, false),
        ])
        .unwrap();
    store
        .finish_run(run.run_id, false, Some("step b failed: tests failed"))
        .unwrap();
    drop(store);

    assert_views_agree(
        &ws,
        run.run_id,
        &Expected {
            steps: &[
                ("a", "compensated", 1),
                ("b", "failed", 2),
                ("c", "skipped", 0),
            ],
            cost_usd: 0.875,
            cost_incomplete: false,
            resumes: 1,
        },
    );
}

/// A run whose step `y` made a model call that failed and has no price, beside a priced call in
/// step `x`: the cost is a lower bound in every view.
#[test]
fn a_failed_unpriced_call_makes_every_view_say_the_cost_is_incomplete() {
    let ws = Workspace::new("unpriced");
    let run = Journal { run_id: "unpriced" };
    let mut plan = Plan::new("one priced call, one failed unpriced call");
    plan.steps = vec![
        PlanStep::new("x", "summarise").agent("worker"),
        PlanStep::new("y", "ask an unknown model").agent("worker"),
        PlanStep::new("z", "report")
            .agent("worker")
            .depends_on(["y"]),
    ];
    let store = ws.store();
    store.begin_run(run.run_id, &plan).unwrap();
    store
        .append_batch(&[
            run.run_started(0, &plan),
            run.started(1, "x"),
            run.started(1, "y"),
            run.llm(2, "x", Some(0.25), None),
            run.finished(3, "x", StepStatus::Completed, None),
            run.llm(4, "y", None, Some("503 service unavailable")),
            run.finished(5, "y", StepStatus::Failed, Some("the model call failed")),
            run.run_finished(6, false),
        ])
        .unwrap();
    store
        .finish_run(run.run_id, false, Some("step y failed"))
        .unwrap();
    drop(store);

    assert_views_agree(
        &ws,
        run.run_id,
        &Expected {
            steps: &[
                ("x", "completed", 1),
                ("y", "failed", 1),
                ("z", "skipped", 0),
            ],
            cost_usd: 0.25,
            cost_incomplete: true,
            resumes: 0,
        },
    );
}

/// A run that died mid-step and was never resumed: the step is still running, once, and the
/// priced calls made so far are the whole (complete) cost.
#[test]
fn a_run_that_died_looks_the_same_in_every_view() {
    let ws = Workspace::new("died");
    let run = Journal { run_id: "died" };
    let mut plan = Plan::new("dies in the middle");
    plan.steps = vec![
        PlanStep::new("p", "prepare").agent("worker"),
        PlanStep::new("q", "long work")
            .agent("worker")
            .depends_on(["p"]),
        PlanStep::new("r", "wrap up")
            .agent("worker")
            .depends_on(["q"]),
    ];
    let store = ws.store();
    store.begin_run(run.run_id, &plan).unwrap();
    store
        .append_batch(&[
            run.run_started(0, &plan),
            run.started(1, "p"),
            run.llm(2, "p", Some(0.5), None),
            run.finished(3, "p", StepStatus::Completed, None),
            run.started(4, "q"),
            run.llm(5, "q", Some(0.0625), None),
        ])
        .unwrap();
    drop(store);

    assert_views_agree(
        &ws,
        run.run_id,
        &Expected {
            steps: &[
                ("p", "completed", 1),
                ("q", "running", 1),
                ("r", "pending", 0),
            ],
            cost_usd: 0.5625,
            cost_incomplete: false,
            resumes: 0,
        },
    );
}
