//! Rollback modes: sequential (one compensation at a time, newest first) and parallel (steps
//! that do not depend on each other undone at the same time, a step only after its dependents).
//! Overlap is shown with barriers and in-flight counters, never with wall-clock thresholds.

mod common;

use agenthelm::report::render_html;
use agenthelm::store::{RunStore, SqliteStore};
use agenthelm::PlanError;
use agenthelm_test_support::TempDir;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;

use agenthelm::prelude::*;

/// How the `delete` tool behaves for some names.
#[derive(Default)]
struct Undoing {
    log: Log,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// These names' deletions wait until all of them are under way at once.
    together: Option<(Arc<Barrier>, HashSet<&'static str>)>,
    /// These names' deletions take a while after any barrier.
    slow: HashSet<&'static str>,
    /// These names' deletions fail.
    failing: HashSet<&'static str>,
}

impl Undoing {
    fn together(mut self, names: &[&'static str]) -> Self {
        self.together = Some((
            Arc::new(Barrier::new(names.len())),
            names.iter().copied().collect(),
        ));
        self
    }

    async fn delete(&self, name: &str) -> Result<Value, ToolError> {
        self.log.push(format!("start {name}"));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let outcome = self.work(name).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.log.push(format!("end {name}"));
        outcome
    }

    async fn work(&self, name: &str) -> Result<Value, ToolError> {
        if let Some((barrier, names)) = &self.together {
            if names.contains(name) {
                // A guard against hanging forever, not a measurement: the barrier only opens
                // when the deletions run at the same time.
                let met = tokio::time::timeout(Duration::from_secs(20), barrier.wait()).await;
                if met.is_err() {
                    return Err(ToolError::new(format!("{name} was undone alone")));
                }
            }
        }
        if self.slow.contains(name) {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        if self.failing.contains(name) {
            return Err(ToolError::new(format!("cannot delete {name}")));
        }
        Ok(json!(format!("deleted {name}")))
    }

    fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    fn position(&self, entry: &str) -> usize {
        let entries = self.log.entries();
        entries
            .iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("`{entry}` is not in {entries:?}"))
    }
}

fn name_schema() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
}

fn tools(undoing: &Arc<Undoing>) -> ToolSet {
    let create = FnTool::new("create", "create a thing", name_schema(), |args, _| {
        let name = args["name"].as_str().unwrap_or("?").to_owned();
        async move { Ok(json!(format!("{name}-id"))) }
    })
    .unwrap()
    .compensating_tool("delete");
    let delete = {
        let undoing = Arc::clone(undoing);
        FnTool::new("delete", "delete a thing", name_schema(), move |args, _| {
            let undoing = Arc::clone(&undoing);
            async move {
                let name = args["name"].as_str().unwrap_or("?").to_owned();
                undoing.delete(&name).await
            }
        })
        .unwrap()
    };
    let note = FnTool::new("note", "changes nothing", name_schema(), |_, _| async {
        Ok(json!("noted"))
    })
    .unwrap();
    let fail = FnTool::new("fail", "always fails", name_schema(), |_, _| async {
        Err(ToolError::new("boom"))
    })
    .unwrap();
    ToolSet::new()
        .with(create)
        .with(delete)
        .with(note)
        .with(fail)
}

fn orchestrator(undoing: &Arc<Undoing>) -> Orchestrator {
    let (agent, _lm) = tool_agent("clerk", tools(undoing));
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    Orchestrator::new(registry)
}

fn step(id: &str, tool: &str, deps: &[&str]) -> PlanStep {
    PlanStep::new(id, format!("{tool} {id}"))
        .agent("clerk")
        .tool(tool)
        .args(json!({"name": id}))
        .depends_on(deps.iter().copied())
}

/// a and b do not depend on each other; the payment waits for both and fails.
fn two_bookings() -> Plan {
    approved(
        "two bookings",
        vec![
            step("a", "create", &[]),
            step("b", "create", &[]),
            step("pay", "fail", &["a", "b"]),
        ],
    )
}

/// y is independent; x is undone only after z, which depends on x through m (nothing to undo).
fn chain_through_a_step_with_nothing_to_undo() -> Plan {
    approved(
        "chain",
        vec![
            step("x", "create", &[]),
            step("y", "create", &[]),
            step("m", "note", &["x"]),
            step("z", "create", &["m"]),
            step("pay", "fail", &["z", "y"]),
        ],
    )
}

fn compensated(result: &RunResult) -> HashSet<String> {
    let report = result.rollback.as_ref().expect("the run rolled back");
    report.compensated.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_are_undone_at_the_same_time() {
    // Once set on the orchestrator, once in the plan (which wins over the orchestrator).
    for plan_level in [false, true] {
        let undoing = Arc::new(Undoing::default().together(&["a", "b"]));
        let mut plan = two_bookings();
        let mut orchestrator = orchestrator(&undoing);
        if plan_level {
            plan.rollback = Some(RollbackMode::Parallel);
        } else {
            orchestrator = orchestrator.rollback_mode(RollbackMode::Parallel);
        }
        let result = orchestrator.execute(&mut plan).await.unwrap();
        let report = result.rollback.as_ref().unwrap();
        assert!(report.fully_undone(), "{report:?}");
        assert_eq!(
            compensated(&result),
            HashSet::from(["a".into(), "b".into()])
        );
        assert_eq!(undoing.most_in_flight(), 2);
        assert_eq!(status(&plan, "a"), StepStatus::Compensated);
        assert_eq!(status(&plan, "b"), StepStatus::Compensated);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_mode_and_the_concurrency_limit_undo_one_step_at_a_time() {
    let configurations: [(Option<RollbackMode>, Option<RollbackMode>, Option<usize>); 3] = [
        // The default.
        (None, None, None),
        // The plan's setting wins over the orchestrator's.
        (
            Some(RollbackMode::Parallel),
            Some(RollbackMode::Sequential),
            None,
        ),
        // Parallel, but at most one at a time.
        (Some(RollbackMode::Parallel), None, Some(1)),
    ];
    for (orchestrator_mode, plan_mode, limit) in configurations {
        let undoing = Arc::new(Undoing {
            slow: HashSet::from(["a", "b"]),
            ..Undoing::default()
        });
        let mut orchestrator = orchestrator(&undoing);
        if let Some(mode) = orchestrator_mode {
            orchestrator = orchestrator.rollback_mode(mode);
        }
        if let Some(limit) = limit {
            orchestrator = orchestrator.max_concurrency(limit);
        }
        let mut plan = two_bookings();
        plan.rollback = plan_mode;
        let result = orchestrator.execute(&mut plan).await.unwrap();
        assert_eq!(
            compensated(&result),
            HashSet::from(["a".into(), "b".into()])
        );
        assert_eq!(
            undoing.most_in_flight(),
            1,
            "{orchestrator_mode:?} / {plan_mode:?} / {limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_is_undone_only_after_the_steps_that_depend_on_it() {
    let undoing = Arc::new(Undoing {
        slow: HashSet::from(["z"]),
        ..Undoing::default().together(&["y", "z"])
    });
    let mut plan = chain_through_a_step_with_nothing_to_undo();
    let result = orchestrator(&undoing)
        .rollback_mode(RollbackMode::Parallel)
        .execute(&mut plan)
        .await
        .unwrap();
    let report = result.rollback.as_ref().unwrap();
    assert!(report.fully_undone(), "{report:?}");
    assert_eq!(report.nothing_to_undo, ["m"]);
    assert_eq!(
        compensated(&result),
        HashSet::from(["x".into(), "y".into(), "z".into()])
    );
    // y and z together (the barrier opened), x only once z, which depends on it, was undone.
    assert_eq!(undoing.most_in_flight(), 2);
    assert!(undoing.position("end z") < undoing.position("start x"));
    assert_eq!(
        report.compensated.last().map(String::as_str),
        Some("x"),
        "{:?}",
        report.compensated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_compensation_is_recorded_and_the_parallel_rollback_goes_on() {
    let undoing = Arc::new(Undoing {
        failing: HashSet::from(["z"]),
        slow: HashSet::from(["z"]),
        ..Undoing::default()
    });
    let mut plan = chain_through_a_step_with_nothing_to_undo();
    let result = orchestrator(&undoing)
        .rollback_mode(RollbackMode::Parallel)
        .execute(&mut plan)
        .await
        .unwrap();
    let report = result.rollback.as_ref().unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].step, "z");
    assert!(report.failed[0].error.contains("cannot delete z"));
    // x still waited for z's attempt, and was undone after it.
    assert!(undoing.position("end z") < undoing.position("start x"));
    assert_eq!(
        compensated(&result),
        HashSet::from(["x".into(), "y".into()])
    );
    assert_eq!(status(&plan, "z"), StepStatus::Completed);
    assert!(result.error.unwrap().contains("could NOT undo: `z`"));
}

/// The `x` and `width` of every compensation bar of the timeline.
fn compensation_bars(html: &str) -> Vec<(f64, f64)> {
    let attr = |chunk: &str, name: &str| -> f64 {
        let rest = chunk.split(&format!(r#" {name}=""#)).nth(1).unwrap();
        rest.split('"').next().unwrap().parse().unwrap()
    };
    html.split(r#"<rect class="bar compensation""#)
        .skip(1)
        .map(|chunk| (attr(chunk, "x"), attr(chunk, "width")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_shows_parallel_compensations_as_overlapping_bars() {
    let dir = TempDir::new("parallel-timeline");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let undoing = Arc::new(Undoing {
        slow: HashSet::from(["a", "b"]),
        ..Undoing::default().together(&["a", "b"])
    });
    let mut plan = two_bookings();
    plan.rollback = Some(RollbackMode::Parallel);
    let result = orchestrator(&undoing)
        .store_shared(Arc::clone(&store))
        .execute(&mut plan)
        .await
        .unwrap();
    let run = store.load_run(result.run_id.as_deref().unwrap()).unwrap();
    let bars = compensation_bars(&render_html(&run));
    assert_eq!(bars.len(), 2, "{bars:?}");
    let [(x1, w1), (x2, w2)] = [bars[0], bars[1]];
    // Both bars began before either ended (the barrier made sure), so they overlap on the axis.
    assert!(x1 < x2 + w2 && x2 < x1 + w1, "{bars:?}");
}

#[test]
fn plan_files_carry_the_rollback_mode() {
    let yaml = "goal: g\nrollback: parallel\nsteps: []\n";
    let plan = Plan::from_yaml(yaml).unwrap();
    assert_eq!(plan.rollback, Some(RollbackMode::Parallel));
    assert_eq!(Plan::from_yaml(&plan.to_yaml().unwrap()).unwrap(), plan);
    assert_eq!(Plan::from_json(&plan.to_json().unwrap()).unwrap(), plan);
    let json = r#"{"goal": "g", "rollback": "sequential"}"#;
    assert_eq!(
        Plan::from_json(json).unwrap().rollback,
        Some(RollbackMode::Sequential)
    );
    // Without it nothing is written, so plan files stay as the Python library writes them.
    let plain = Plan::new("g");
    assert_eq!(plain.rollback, None);
    assert!(!plain.to_yaml().unwrap().contains("rollback"));
    assert!(!plain.to_json().unwrap().contains("rollback"));
}

#[test]
fn an_unknown_rollback_mode_names_its_line_and_field() {
    let yaml = "goal: g\nsteps: []\nrollback: sideways\n";
    match Plan::from_yaml(yaml) {
        Err(PlanError::Parse {
            line,
            path,
            message,
            ..
        }) => {
            assert_eq!(line, Some(3));
            assert_eq!(path.as_deref(), Some("rollback"));
            assert!(message.contains("sideways"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
