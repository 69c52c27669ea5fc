//! Budgets stop a run: a model call whose worst case would cross the cost limit is not made,
//! a limit crossed by a call or by time stops the run like a failure (rollback included), the
//! error gives the figures, and a resumed run keeps what it spent.

use agenthelm::budget::{Budget, BudgetKind, Unpriced};
use agenthelm::lm::{ModelPrice, Pricing};
use agenthelm::orchestrate::{CancelToken, OrchestratorError, ReplayOptions};
use agenthelm::prelude::*;
use agenthelm::store::{RunStore, SqliteStore};
use agenthelm::{Event, PlanError, RunState};
use agenthelm_test_support::TempDir;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Side effects, in order: "create x", "remove x".
type Calls = Arc<Mutex<Vec<String>>>;

/// Each answer reads 1,000 tokens and writes 500: $0.015 at $10 per million tokens each way.
/// The worst case of a call (4,096 output tokens assumed) is about $0.041.
const PRICE: ModelPrice = ModelPrice {
    input: 10.0,
    output: 10.0,
};

fn model(answers: usize, pricing: Pricing) -> (Arc<ScriptedLm>, Lm) {
    let replies = (0..answers)
        .map(|i| ScriptedReply::text(format!("thought {i}")).with_usage(1000, 500))
        .collect();
    let scripted = Arc::new(ScriptedLm::new(replies));
    let lm = Lm::from_arc(scripted.clone()).with_pricing(pricing);
    (scripted, lm)
}

fn priced() -> Pricing {
    Pricing::new().with("scripted", PRICE)
}

fn tools(calls: &Calls, suspend: Option<(CancelToken, Arc<AtomicBool>)>) -> ToolSet {
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
    let recorder = |kind: &'static str, calls: Calls| {
        move |args: Value, _call| {
            let calls = calls.clone();
            async move {
                let name = args["name"].as_str().unwrap_or_default();
                calls.lock().unwrap().push(format!("{kind} {name}"));
                Ok(json!(null))
            }
        }
    };
    let create = FnTool::new(
        "create",
        "Create",
        schema.clone(),
        recorder("create", calls.clone()),
    )
    .unwrap()
    .compensating_tool("remove");
    let remove = FnTool::new(
        "remove",
        "Remove",
        schema.clone(),
        recorder("remove", calls.clone()),
    )
    .unwrap();
    // Waits long. With a token: the first call suspends the run (as a stopping server would)
    // while it waits, later calls return at once.
    let stall = FnTool::new("stall", "Wait", schema, move |_args, _call| {
        let suspend = suspend.clone();
        async move {
            match suspend {
                Some((_, once)) if once.load(Ordering::SeqCst) => return Ok(json!(null)),
                Some((token, once)) => {
                    once.store(true, Ordering::SeqCst);
                    token.suspend();
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(json!(null))
        }
    })
    .unwrap();
    let nap = FnTool::new(
        "nap",
        "Wait a little",
        json!({"type": "object"}),
        |_args, _call| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(json!("rested"))
        },
    )
    .unwrap();
    ToolSet::new()
        .with(create)
        .with(remove)
        .with(stall)
        .with(nap)
}

fn orchestrator(lm: Lm, calls: &Calls) -> Orchestrator {
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new("thinker", lm, ToolSet::new()))
        .unwrap();
    Orchestrator::new(registry)
        .tools(tools(calls, None))
        .grace_period(Duration::from_millis(50))
}

/// `make` creates x; then each of `thoughts` asks the thinker's model once, one after the other.
fn plan(thoughts: &[&str]) -> Plan {
    let mut plan = Plan::new("think within a budget");
    plan.steps.push(
        PlanStep::new("make", "create x")
            .tool("create")
            .args(json!({"name": "x"})),
    );
    let mut previous = "make".to_owned();
    for id in thoughts {
        plan.steps.push(
            PlanStep::new(*id, format!("think about {id}"))
                .agent("thinker")
                .depends_on([previous.as_str()]),
        );
        previous = (*id).to_owned();
    }
    plan.approved = true;
    plan
}

fn budget_events(events: &[Event]) -> Vec<(BudgetKind, f64, f64, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BudgetExceeded {
                budget,
                spent,
                limit,
                message,
            } => Some((*budget, *spent, *limit, message.clone())),
            _ => None,
        })
        .collect()
}

fn status(plan: &Plan, id: &str) -> StepStatus {
    plan.get_step(id).unwrap().status
}

#[tokio::test]
async fn a_call_whose_worst_case_would_cross_the_cost_limit_is_not_made_and_the_run_rolls_back() {
    let calls = Calls::default();
    let (scripted, lm) = model(5, priced());
    let mut plan = plan(&["one", "two", "three"]);
    // The plan's own budget: $0.015 + $0.015 spent, and the third call may cost $0.041.
    plan.budget = Some(Budget::new().max_cost_usd(0.07));
    let result = orchestrator(lm, &calls).execute(&mut plan).await.unwrap();

    assert!(!result.success);
    let error = result.error.as_deref().unwrap();
    assert!(
        error.starts_with(
            "cost budget exceeded: $0.030 spent of $0.070, and the next call to scripted may cost up to $0.04"
        ),
        "{error}"
    );
    assert!(error.contains("rolled back 1 step"), "{error}");
    assert_eq!(scripted.requests().len(), 2, "the third call is not made");
    assert_eq!(*calls.lock().unwrap(), ["create x", "remove x"]);
    assert_eq!(status(&plan, "make"), StepStatus::Compensated);
    assert_eq!(status(&plan, "two"), StepStatus::Completed);
    assert_eq!(status(&plan, "three"), StepStatus::Failed);
    let exceeded = budget_events(&result.events);
    assert_eq!(exceeded.len(), 1, "{exceeded:?}");
    let (kind, spent, limit, _) = &exceeded[0];
    assert_eq!((*kind, *limit), (BudgetKind::Cost, 0.07));
    assert!((spent - 0.03).abs() < 1e-9, "{spent}");
}

#[tokio::test]
async fn crossing_the_token_limit_stops_the_run_before_the_next_step() {
    let calls = Calls::default();
    let (scripted, lm) = model(5, priced());
    let mut plan = plan(&["one", "two", "three"]);
    let result = orchestrator(lm, &calls)
        .budget(Budget::new().max_tokens(2000))
        .execute(&mut plan)
        .await
        .unwrap();

    assert!(!result.success);
    assert!(
        result
            .error
            .as_deref()
            .unwrap()
            .starts_with("token budget exceeded: 3000 tokens used of 2000 tokens"),
        "{:?}",
        result.error
    );
    // The second call was within the budget when it was made; nothing starts after it.
    assert_eq!(scripted.requests().len(), 2);
    assert_eq!(status(&plan, "two"), StepStatus::Completed);
    assert_eq!(status(&plan, "three"), StepStatus::Skipped);
    assert_eq!(*calls.lock().unwrap(), ["create x", "remove x"]);
}

#[tokio::test]
async fn the_model_call_limit_refuses_the_call_past_it() {
    let calls = Calls::default();
    let (scripted, lm) = model(5, priced());
    let mut plan = plan(&["one", "two"]);
    let result = orchestrator(lm, &calls)
        .budget(Budget::new().max_llm_calls(1))
        .execute(&mut plan)
        .await
        .unwrap();
    assert_eq!(scripted.requests().len(), 1);
    let error = result.error.unwrap();
    assert!(
        error.starts_with(
            "model call budget exceeded: 1 call made of 1 call, and the run needs another"
        ),
        "{error}"
    );
    // The refused step says why it failed.
    let two = plan.get_step("two").unwrap();
    assert!(
        two.error
            .as_deref()
            .unwrap()
            .contains("model call budget exceeded"),
        "{two:?}"
    );
}

#[tokio::test]
async fn a_model_without_a_price_is_refused_up_front_unless_the_budget_allows_it() {
    let calls = Calls::default();
    let (scripted, lm) = model(5, Pricing::new());
    let mut refused = plan(&["one"]);
    let cost = Budget::new().max_cost_usd(1.0);
    let error = orchestrator(lm.clone(), &calls)
        .budget(cost)
        .execute(&mut refused)
        .await
        .unwrap_err();
    let OrchestratorError::InvalidPlan(PlanError::Invalid(problems)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(problems.len(), 1);
    assert!(
        error
            .to_string()
            .contains("step `one` goes to agent `thinker`, whose model `scripted` has no price"),
        "{error}"
    );
    assert!(calls.lock().unwrap().is_empty(), "nothing ran");

    let mut allowed = plan(&["one"]);
    let result = orchestrator(lm, &calls)
        .budget(cost.unpriced(Unpriced::Allow))
        .execute(&mut allowed)
        .await
        .unwrap();
    assert!(result.success, "{:?}", result.error);
    assert_eq!(scripted.requests().len(), 1);
}

#[tokio::test]
async fn the_time_limit_stops_running_steps_after_the_grace_period() {
    let calls = Calls::default();
    let (_, lm) = model(0, priced());
    let mut plan = plan(&[]);
    plan.steps.push(
        PlanStep::new("wait", "wait")
            .tool("stall")
            .depends_on(["make"]),
    );
    let started = Instant::now();
    let result = orchestrator(lm, &calls)
        .budget(Budget::new().max_duration(Duration::from_millis(300)))
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 5 s tool was not waited for"
    );
    let error = result.error.unwrap();
    assert!(
        error.starts_with("duration budget exceeded: 0.3"),
        "{error}"
    );
    assert!(error.contains("of 0.300s"), "{error}");
    assert_eq!(status(&plan, "wait"), StepStatus::Failed);
    assert_eq!(status(&plan, "make"), StepStatus::Compensated);
}

#[tokio::test]
async fn a_resumed_run_keeps_its_budget_and_what_it_spent() {
    let calls = Calls::default();
    let dir = TempDir::new("budget-resume");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let mut plan = plan(&["one"]);
    plan.steps.push(
        PlanStep::new("wait", "wait")
            .tool("stall")
            .depends_on(["one"]),
    );
    plan.steps.push(
        PlanStep::new("two", "think again")
            .agent("thinker")
            .depends_on(["wait"]),
    );
    plan.steps.push(
        PlanStep::new("three", "think once more")
            .agent("thinker")
            .depends_on(["two"]),
    );
    // First process: one call ($0.015), then the run is suspended in `wait`.
    let cancel = CancelToken::new();
    let suspend = Some((cancel.clone(), Arc::new(AtomicBool::new(false))));
    let (first_model, lm) = model(5, priced());
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new("thinker", lm, ToolSet::new()))
        .unwrap();
    let first = Orchestrator::new(registry)
        .tools(tools(&calls, suspend))
        .grace_period(Duration::from_millis(20))
        .store_shared(store.clone())
        .budget(Budget::new().max_cost_usd(0.07));
    let error = first
        .execute_with_cancel(&mut plan, cancel)
        .await
        .unwrap_err();
    let OrchestratorError::Suspended { run_id } = error else {
        panic!("{error:?}");
    };
    assert_eq!(first_model.requests().len(), 1);

    // Second process: no budget of its own; the journal's applies, with the $0.015 spent.
    let (second_model, lm) = model(5, priced());
    let no_stall = tools(
        &calls,
        Some((CancelToken::new(), Arc::new(AtomicBool::new(true)))),
    );
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new("thinker", lm, ToolSet::new()))
        .unwrap();
    let second = Orchestrator::new(registry)
        .tools(no_stall)
        .grace_period(Duration::from_millis(20))
        .store_shared(store.clone());
    let (plan, result) = second.resume(&run_id).await.unwrap();
    let error = result.error.unwrap();
    assert!(
        error.starts_with("cost budget exceeded: $0.030 spent of $0.070"),
        "the first process's call counts: {error}"
    );
    assert_eq!(
        second_model.requests().len(),
        1,
        "`two` ran; `three` was refused"
    );
    assert_eq!(status(&plan, "three"), StepStatus::Failed);
    let stored = store.load_run(&run_id).unwrap();
    let state = RunState::replay(&stored.plan, &stored.events);
    assert_eq!(state.budget(), Some(&Budget::new().max_cost_usd(0.07)));
    assert_eq!(
        state.stop_reason().unwrap().to_string(),
        error.split("; rolled back").next().unwrap()
    );
}

#[tokio::test]
async fn a_run_stopped_by_its_budget_replays_the_same_way_under_any_budget() {
    let calls = Calls::default();
    let dir = TempDir::new("budget-replay");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let (_, lm) = model(5, priced());
    let mut plan = plan(&["one", "two", "three"]);
    let result = orchestrator(lm, &calls)
        .store_shared(store.clone())
        .budget(Budget::new().max_cost_usd(0.07))
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    let run_id = result.run_id.unwrap();

    // No answers left and no budget of its own: everything comes from the journal.
    let (replay_model, lm) = model(0, priced());
    let report = orchestrator(lm, &Calls::default())
        .store_shared(store)
        .replay(&run_id, ReplayOptions::default())
        .await
        .unwrap();
    assert!(report.reproduced, "{:?}", report.divergence);
    assert_eq!(report.model_calls_served, 2);
    assert!(replay_model.requests().is_empty());
}

/// Replays `run_id` from `store` with no model answers and no budget of its own.
async fn replay(store: Arc<dyn RunStore>, run_id: &str) -> agenthelm::orchestrate::ReplayReport {
    let (_, lm) = model(0, priced());
    orchestrator(lm, &Calls::default())
        .store_shared(store)
        .replay(run_id, ReplayOptions::default())
        .await
        .unwrap()
}

/// `make`, then `nap` (400 ms), which outlives a stop that comes while it runs.
fn napping_plan() -> Plan {
    let mut plan = plan(&[]);
    plan.steps.push(
        PlanStep::new("nap", "rest")
            .tool("nap")
            .depends_on(["make"]),
    );
    plan
}

#[tokio::test]
async fn runs_stopped_from_outside_replay_to_the_same_stop() {
    // The time limit: reached while `nap` runs; `nap` finishes within the grace period.
    let dir = TempDir::new("budget-replay-stops");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let calls = Calls::default();
    let (_, lm) = model(0, priced());
    let timed = orchestrator(lm, &calls)
        .grace_period(Duration::from_secs(5))
        .store_shared(store.clone())
        .budget(Budget::new().max_duration(Duration::from_millis(150)));
    let result = timed.execute(&mut napping_plan()).await.unwrap();
    assert!(result
        .error
        .unwrap()
        .starts_with("duration budget exceeded"));
    let report = replay(store.clone(), &result.run_id.unwrap()).await;
    assert!(report.reproduced, "{:?}", report.divergence);

    // A cancel (a person, Ctrl-C) while `nap` runs.
    let (_, lm) = model(0, priced());
    let cancel = CancelToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        canceller.cancel();
    });
    let result = orchestrator(lm, &calls)
        .grace_period(Duration::from_secs(5))
        .store_shared(store.clone())
        .execute_with_cancel(&mut napping_plan(), cancel)
        .await
        .unwrap();
    assert!(result.error.unwrap().starts_with("the run was cancelled"));
    let report = replay(store, &result.run_id.unwrap()).await;
    assert!(report.reproduced, "{:?}", report.divergence);
    assert_eq!(
        report.tool_calls_served, 3,
        "create, nap and the compensation"
    );
}

#[test]
fn running_time_leaves_out_the_time_a_run_stood_still() {
    let event = |at: u64, kind: EventKind| Event {
        timestamp_ms: at,
        run_id: Some("r".into()),
        step_id: None,
        agent: None,
        kind,
    };
    let events = [
        event(
            1_000,
            EventKind::RunStarted {
                goal: "g".into(),
                steps: 0,
                budget: Some(Budget::new().max_duration(Duration::from_secs(60))),
            },
        ),
        event(
            3_000,
            EventKind::Note {
                message: "working".into(),
            },
        ),
        // Stopped for an hour; resumed.
        event(
            3_603_000,
            EventKind::RunResumed {
                interrupted: vec![],
            },
        ),
        event(
            3_604_000,
            EventKind::Note {
                message: "working".into(),
            },
        ),
    ];
    let state = RunState::replay(&Plan::new("g"), &events);
    assert_eq!(state.running_time(), Duration::from_secs(3));
}
