//! The run state a run builds live equals the state replayed from its stored journal, on random
//! plans with failures, retries and rollbacks (some compensations failing).

use agenthelm::prelude::*;
use agenthelm::store::{RunStore, SqliteStore};
use agenthelm::RunState;
use agenthelm_test_support::TempDir;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// What a step's tool does.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Succeeds; undone by `remove`.
    Create,
    /// Fails its first attempt, then succeeds (one retry); undone by `remove`.
    Flaky,
    /// Succeeds; its compensation fails.
    Stuck,
    /// Always fails.
    Fail,
}

fn tool<Fut>(name: &str, work: fn(Value) -> Fut) -> FnTool
where
    Fut: std::future::Future<Output = Result<Value, ToolError>> + Send + 'static,
{
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
    FnTool::new(name, name, schema, move |args, _call| work(args)).unwrap()
}

async fn done(_args: Value) -> Result<Value, ToolError> {
    Ok(json!("done"))
}

async fn broken(_args: Value) -> Result<Value, ToolError> {
    Err(ToolError::new("broken"))
}

fn tools() -> ToolSet {
    // Fails the first call for each step, then succeeds: the retry fixes it.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
    let flaky = FnTool::new("flaky", "flaky", schema, move |args: Value, _call| {
        let first = seen
            .lock()
            .unwrap()
            .insert(args["name"].as_str().unwrap_or_default().to_owned());
        async move {
            if first {
                Err(ToolError::new("flaky"))
            } else {
                Ok(json!("done late"))
            }
        }
    })
    .unwrap()
    .retries(1)
    .compensating_tool("remove");
    ToolSet::new()
        .with(tool("create", done).compensating_tool("remove"))
        .with(flaky)
        .with(tool("stuck", done).compensating_tool("jammed"))
        .with(tool("remove", done))
        .with(tool("jammed", broken))
        .with(tool("fail", broken))
}

fn plan_of(deps: &[Vec<usize>], kinds: &[Kind]) -> Plan {
    let mut plan = Plan::new("random");
    for (i, kind) in kinds.iter().enumerate() {
        let tool = match kind {
            Kind::Create => "create",
            Kind::Flaky => "flaky",
            Kind::Stuck => "stuck",
            Kind::Fail => "fail",
        };
        let mut step = PlanStep::new(format!("s{i}"), format!("step {i}"))
            .agent("worker")
            .tool(tool)
            .args(json!({"name": format!("s{i}")}));
        step.depends_on = deps[i].iter().map(|d| format!("s{d}")).collect();
        step.depends_on.dedup();
        plan.steps.push(step);
    }
    plan.approved = true;
    plan
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Create),
        2 => Just(Kind::Flaky),
        1 => Just(Kind::Stuck),
        1 => Just(Kind::Fail),
    ]
}

fn case() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<Kind>)> {
    (1usize..9).prop_flat_map(|n| {
        let deps = (0..n)
            .map(|i| {
                prop::collection::vec(0..i.max(1), 0..3).prop_map(move |mut d| {
                    if i == 0 {
                        d.clear();
                    }
                    d.sort_unstable();
                    d
                })
            })
            .collect::<Vec<_>>();
        (deps, prop::collection::vec(kinds(), n))
    })
}

async fn run_and_compare(deps: Vec<Vec<usize>>, kinds: Vec<Kind>) {
    let dir = TempDir::new("run-state");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new(
            "worker",
            Lm::from_model(ScriptedLm::new(vec![])),
            tools(),
        ))
        .unwrap();
    let orchestrator = Orchestrator::new(registry)
        .store_shared(Arc::clone(&store))
        .retry_policy(RetryPolicy {
            initial: std::time::Duration::ZERO,
            max: std::time::Duration::ZERO,
            ..RetryPolicy::default()
        });
    let mut plan = plan_of(&deps, &kinds);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    let stored = store.load_run(result.run_id.as_deref().unwrap()).unwrap();
    let replayed = RunState::replay(&stored.plan, &stored.events);

    // The journal holds every event the run emitted, in the same order.
    assert_eq!(stored.events, result.events);
    assert_eq!(RunState::replay(&stored.plan, &result.events), replayed);
    // What the run reported from its live state is what the journal replays to.
    for ((outcome, record), step) in result.steps.iter().zip(replayed.steps()).zip(&plan.steps) {
        assert_eq!(outcome.status, record.status, "step {}", outcome.id);
        assert_eq!(step.status, record.status, "plan step {}", outcome.id);
        assert_eq!(outcome.error, record.error);
        assert_eq!(outcome.direct_tool, record.direct_tool);
        assert_eq!(outcome.duration_ms, record.duration_ms.unwrap_or(0.0));
    }
    let usage = replayed.usage();
    assert_eq!(result.token_usage, usage.tokens);
    assert_eq!(result.unpriced_calls, usage.unpriced_calls);
    assert_eq!(result.cost_incomplete(), usage.cost_incomplete());
    assert_eq!(replayed.end().map(|e| e.success), Some(result.success));
    if let Some(report) = &result.rollback {
        let ledger = &replayed.rollback().unwrap().ledger;
        let failed = ledger
            .iter()
            .filter(|e| matches!(e.state, agenthelm::trace::CompensationState::Failed(_)))
            .count();
        assert_eq!(report.failed.len(), failed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn live_state_equals_replayed_state((deps, kinds) in case()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run_and_compare(deps, kinds));
    }
}
