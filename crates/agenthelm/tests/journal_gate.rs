//! "Journal before acting": every action (a step's start, a tool call, a compensation) passes
//! one gate, `EventSink::before_action`, whose permit the acting functions require. Here the
//! store stops working exactly when the record of what leads to an action is written, and the
//! action must then not happen.

mod common;

use agenthelm::exec::{EventSink, StepContext};
use agenthelm::orchestrate::OrchestratorError;
use agenthelm::prelude::*;
use agenthelm::store::{EventFilter, RunStore, RunSummary, SqliteStore, StoreError, StoredRun};
use agenthelm_test_support::TempDir;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A store that refuses the first event of kind `kind` (for step `step`) and every write after
/// it, like a process that died right then.
struct DiesAt {
    inner: SqliteStore,
    /// The store's folder, removed with the store.
    _dir: TempDir,
    kind: &'static str,
    step: Option<&'static str>,
    dead: AtomicBool,
    refuse_begin: bool,
}

impl DiesAt {
    fn new(kind: &'static str, step: Option<&'static str>) -> Arc<Self> {
        let dir = TempDir::new("gate");
        Arc::new(DiesAt {
            inner: SqliteStore::open(dir.join("runs.db")).unwrap(),
            _dir: dir,
            kind,
            step,
            dead: AtomicBool::new(false),
            refuse_begin: false,
        })
    }

    fn died(&self) -> Result<(), StoreError> {
        Err(StoreError::Backend("injected: the store died".into()))
    }
}

impl RunStore for DiesAt {
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        if self.refuse_begin {
            return self.died();
        }
        self.inner.begin_run(run_id, plan)
    }
    fn append(&self, event: &Event) -> Result<(), StoreError> {
        let here = event.kind.name() == self.kind
            && (self.step.is_none() || event.step_id.as_deref() == self.step);
        if here {
            self.dead.store(true, Ordering::SeqCst);
        }
        if self.dead.load(Ordering::SeqCst) {
            return self.died();
        }
        self.inner.append(event)
    }
    fn finish_run(&self, run_id: &str, ok: bool, error: Option<&str>) -> Result<(), StoreError> {
        if self.dead.load(Ordering::SeqCst) {
            return self.died();
        }
        self.inner.finish_run(run_id, ok, error)
    }
    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        self.inner.load_run(run_id)
    }
    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.inner.list_runs(limit)
    }
    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        self.inner.query(filter)
    }
}

fn tools(log: &Log) -> ToolSet {
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
    let create = {
        let log = log.clone();
        FnTool::new("create", "create", schema.clone(), move |args, _| {
            log.push(format!("create {}", args["name"].as_str().unwrap_or("?")));
            async { Ok(json!("created")) }
        })
        .unwrap()
        .compensating_tool("remove")
    };
    let remove = {
        let log = log.clone();
        FnTool::new("remove", "remove", schema.clone(), move |args, _| {
            log.push(format!("remove {}", args["name"].as_str().unwrap_or("?")));
            async { Ok(json!("removed")) }
        })
        .unwrap()
    };
    let guarded = {
        let log = log.clone();
        FnTool::new("guarded", "needs approval", schema, move |_, _| {
            log.push("guarded");
            async { Ok(json!("done")) }
        })
        .unwrap()
        .requires_approval(true)
    };
    ToolSet::new()
        .with(create)
        .with(remove)
        .with(guarded)
        .with(failing_tool("fail", log, "boom"))
}

fn step(id: &str, tool: &str, deps: &[&str]) -> PlanStep {
    PlanStep::new(id, id)
        .agent("clerk")
        .tool(tool)
        .args(json!({"name": id}))
        .depends_on(deps.iter().copied())
}

/// a, then b; then a step with a guarded tool; then a failure, which undoes b and a.
async fn run_until_the_store_dies(
    store: Arc<DiesAt>,
    log: &Log,
) -> Result<RunResult, OrchestratorError> {
    let (agent, _lm) = tool_agent("clerk", tools(log));
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    let mut plan = approved(
        "gate",
        vec![
            step("a", "create", &[]),
            step("b", "create", &["a"]),
            step("g", "guarded", &["b"]),
            step("f", "fail", &["g"]),
        ],
    );
    Orchestrator::new(registry)
        .approval_handler(AutoApprove)
        .store_shared(store)
        .execute(&mut plan)
        .await
}

#[tokio::test]
async fn a_step_whose_start_is_not_on_record_does_not_start() {
    let log = Log::default();
    let outcome = run_until_the_store_dies(DiesAt::new("step_started", Some("b")), &log).await;
    assert!(
        matches!(outcome, Err(OrchestratorError::Halted { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        log.entries(),
        ["create a"],
        "b never started, nothing was undone"
    );
}

#[tokio::test]
async fn a_tool_call_whose_approval_is_not_on_record_is_not_made() {
    let log = Log::default();
    let outcome = run_until_the_store_dies(DiesAt::new("approval", Some("g")), &log).await;
    assert!(
        matches!(outcome, Err(OrchestratorError::Halted { .. })),
        "{outcome:?}"
    );
    assert_eq!(log.entries(), ["create a", "create b"]);
}

#[tokio::test]
async fn a_compensation_whose_start_is_not_on_record_does_not_run() {
    let log = Log::default();
    let outcome =
        run_until_the_store_dies(DiesAt::new("compensation_started", Some("b")), &log).await;
    match outcome {
        Err(OrchestratorError::Halted { run_id, source }) => {
            assert!(run_id.starts_with("run-"));
            assert!(source.to_string().contains("injected"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.count("remove"), 0, "{:?}", log.entries());
    assert_eq!(log.count("guarded"), 1);
}

#[tokio::test]
async fn a_run_the_store_cannot_begin_is_not_recorded_and_nothing_runs() {
    let log = Log::default();
    let mut store = DiesAt::new("none", None);
    Arc::get_mut(&mut store).unwrap().refuse_begin = true;
    let outcome = run_until_the_store_dies(store, &log).await;
    assert!(
        matches!(outcome, Err(OrchestratorError::NotRecorded(_))),
        "{outcome:?}"
    );
    assert!(log.entries().is_empty());
}

#[tokio::test]
async fn a_tool_called_outside_a_plan_waits_for_its_journal_too() {
    let log = Log::default();
    let store = DiesAt::new("approval", None);
    let ctx = StepContext::new()
        .with_approval(Arc::new(AutoApprove))
        .with_sink(EventSink::journaled(Vec::new(), Some(store)));
    let tools = tools(&log);
    let outcome = ctx
        .call_tool(tools.get("guarded").unwrap(), json!({}))
        .await;
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("not called"), "{error}");
    assert!(log.entries().is_empty());
    let recorded = ctx.sink().take();
    assert!(recorded.iter().any(|e| matches!(
        &e.kind,
        EventKind::ToolCall {
            attempts: 0,
            error: Some(_),
            ..
        }
    )));
}
