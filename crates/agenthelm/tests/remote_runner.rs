//! A coordinator hands steps and compensations to a `RemoteRunner`; a worker with the same
//! tools carries them out and journals what it does. Here the worker is a second orchestrator
//! in the same process: the cluster crate tests the same hook across processes.

mod common;

use agenthelm::exec::EventSink;
use agenthelm::orchestrate::{RemoteOutcome, RemoteRunner, StepWork, UndoWork};
use agenthelm::prelude::*;
use agenthelm::store::{RunStore, SqliteStore};
use agenthelm::{EventKind, RunState};
use agenthelm_test_support::TempDir;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `create` (undone by `delete`) and `fail`, logging into `log`.
fn tools(log: &Log) -> ToolSet {
    ToolSet::new()
        .with(creating_tool(log))
        .with(logging_tool("delete", log, json!("deleted")))
        .with(failing_tool("fail", log, "boom"))
}

fn orchestrator(log: &Log) -> Orchestrator {
    let (agent, _lm) = tool_agent("clerk", tools(log));
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    Orchestrator::new(registry)
}

/// A worker in this process, journaling into the run's store.
struct InProcessWorker {
    worker: Orchestrator,
    store: Arc<dyn RunStore>,
    steps: AtomicUsize,
    undos: AtomicUsize,
}

#[agenthelm::async_trait]
impl RemoteRunner for InProcessWorker {
    async fn run_step(&self, work: StepWork, ctx: &StepContext) -> RemoteOutcome {
        self.steps.fetch_add(1, Ordering::SeqCst);
        let sink = EventSink::journaled(Vec::new(), Some(Arc::clone(&self.store)));
        let outcome = self.worker.run_step_work(&work, sink.clone()).await;
        ctx.sink().adopt(sink.take());
        outcome.unwrap()
    }

    async fn undo(&self, work: UndoWork, ctx: &StepContext) -> Option<Result<(), String>> {
        self.undos.fetch_add(1, Ordering::SeqCst);
        let sink = EventSink::journaled(Vec::new(), Some(Arc::clone(&self.store)));
        let outcome = self.worker.run_undo_work(&work, sink.clone(), false).await;
        ctx.sink().adopt(sink.take());
        Some(outcome.unwrap())
    }
}

fn create(id: &str) -> PlanStep {
    PlanStep::new(id, format!("create {id}"))
        .agent("clerk")
        .tool("create")
        .args(json!({"name": id}))
}

#[tokio::test]
async fn steps_and_compensations_run_on_the_worker_and_the_journal_holds_them_once() {
    let dir = TempDir::new("remote-runner");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let (here, there) = (Log::default(), Log::default());
    let runner = Arc::new(InProcessWorker {
        worker: orchestrator(&there),
        store: Arc::clone(&store),
        steps: AtomicUsize::new(0),
        undos: AtomicUsize::new(0),
    });
    let coordinator = orchestrator(&here)
        .store_shared(Arc::clone(&store))
        .remote(runner.clone());
    let mut plan = approved(
        "remote saga",
        vec![
            create("a"),
            create("b").depends_on(["a"]),
            PlanStep::new("c", "fails")
                .agent("clerk")
                .tool("fail")
                .depends_on(["b"]),
        ],
    );
    let result = coordinator.execute(&mut plan).await.unwrap();

    assert!(!result.success);
    assert!(
        here.entries().is_empty(),
        "the coordinator ran {:?}",
        here.entries()
    );
    assert_eq!(
        there.entries(),
        [
            "create a",
            "create b",
            "fail {}",
            r#"delete {"name":"b"}"#,
            r#"delete {"name":"a"}"#
        ]
    );
    assert_eq!(runner.steps.load(Ordering::SeqCst), 3);
    assert_eq!(runner.undos.load(Ordering::SeqCst), 2);
    assert_eq!(status(&plan, "a"), StepStatus::Compensated);
    assert_eq!(status(&plan, "b"), StepStatus::Compensated);
    assert_eq!(status(&plan, "c"), StepStatus::Failed);
    let rollback = result.rollback.as_ref().unwrap();
    assert_eq!(rollback.compensated, ["b", "a"]);

    // The journal: the worker's calls once each, and the state rebuilt from it agrees.
    let run_id = result.run_id.clone().unwrap();
    let stored = store.load_run(&run_id).unwrap();
    let calls: Vec<_> = stored
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCall { tool, .. } => Some(tool.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["create", "create", "fail", "delete", "delete"]);
    let state = RunState::replay(&stored.plan, &stored.events);
    let statuses: Vec<_> = state.steps().iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Failed
        ]
    );
    // Each event is in the journal once: the coordinator did not write the adopted ones again.
    assert_eq!(stored.events.len(), result.events.len());
}

#[tokio::test]
async fn a_step_the_worker_cannot_carry_out_fails_with_a_clear_error() {
    let dir = TempDir::new("remote-runner-unknown");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let runner = Arc::new(InProcessWorker {
        // The worker has no agent `clerk`.
        worker: Orchestrator::new(AgentRegistry::new()),
        store: Arc::clone(&store),
        steps: AtomicUsize::new(0),
        undos: AtomicUsize::new(0),
    });
    let coordinator = orchestrator(&Log::default())
        .store_shared(Arc::clone(&store))
        .remote(runner);
    let mut plan = approved("unknown", vec![create("a")]);
    let result = coordinator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    let error = plan.steps[0].error.clone().unwrap_or_default();
    assert!(error.contains("no tool `create`"), "{error}");
}
