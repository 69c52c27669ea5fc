//! Crash-safety of journaled runs: the store is made to fail at every single journal write in
//! turn (the process "dies" there: nothing after it is recorded or done), then the run is
//! resumed from what the store holds. Checked each time: the run ends as an uninterrupted run
//! does, completed work is not repeated, and no compensation runs twice.

mod pg_store;

use agenthelm::orchestrate::{CancelToken, InterruptedSteps, OrchestratorError};
use agenthelm::prelude::*;
use agenthelm::store::{
    EventFilter, JsonlStore, RunStore, RunSummary, SqliteStore, StoreError, StoredRun,
};
use agenthelm::trace::RunPhase;
use agenthelm::RunState;
use agenthelm_test_support::TempDir;
use pg_store::postgres_store;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Every tool call with a side effect, in order: ("create" | "remove", name).
type Calls = Arc<Mutex<Vec<(String, String)>>>;

fn tools(calls: &Calls) -> ToolSet {
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let recorder = |kind: &'static str, calls: Calls| {
        move |args: Value, _call| {
            let calls = calls.clone();
            async move {
                let name = args["name"].as_str().unwrap_or_default().to_owned();
                calls.lock().unwrap().push((kind.to_owned(), name.clone()));
                Ok(json!(format!("{kind}d {name}")))
            }
        }
    };
    let create = FnTool::new(
        "create",
        "Create a thing",
        schema.clone(),
        recorder("create", calls.clone()),
    )
    .unwrap()
    .compensating_tool("remove");
    let remove = FnTool::new(
        "remove",
        "Remove a thing",
        schema.clone(),
        recorder("remove", calls.clone()),
    )
    .unwrap();
    let fail = FnTool::new("fail", "Always fails", schema, |_args, _call| async {
        Err(ToolError::new("the last step always fails"))
    })
    .unwrap();
    ToolSet::new().with(create).with(remove).with(fail)
}

/// a and b in parallel, c after both, d after c. `d_fails` makes d fail, which rolls back.
fn plan(d_fails: bool) -> Plan {
    let step = |id: &str, tool: &str| {
        PlanStep::new(id, format!("do {id}"))
            .agent("worker")
            .tool(tool)
            .args(json!({"name": id}))
    };
    let mut plan = Plan::new("crash test");
    plan.steps = vec![
        step("a", "create"),
        step("b", "create"),
        step("c", "create").depends_on(["a", "b"]),
        step("d", if d_fails { "fail" } else { "create" }).depends_on(["c"]),
    ];
    plan.approved = true;
    plan
}

fn orchestrator(calls: &Calls, store: Arc<dyn RunStore>) -> Orchestrator {
    orchestrator_in(calls, store, RollbackMode::Sequential)
}

fn orchestrator_in(calls: &Calls, store: Arc<dyn RunStore>, mode: RollbackMode) -> Orchestrator {
    let mut registry = AgentRegistry::new();
    let lm = Lm::from_model(ScriptedLm::new(vec![]));
    registry
        .register(ToolAgent::new("worker", lm, tools(calls)))
        .unwrap();
    Orchestrator::new(registry)
        .store_shared(store)
        .rollback_mode(mode)
}

/// A store that works until its `fail_at`-th append, then fails that and every later write,
/// like a process that died at that moment.
struct DyingStore {
    inner: Arc<dyn RunStore>,
    appends: AtomicUsize,
    fail_at: usize,
}

impl DyingStore {
    fn dead(&self) -> bool {
        self.appends.load(Ordering::SeqCst) >= self.fail_at
    }
}

impl RunStore for DyingStore {
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        self.inner.begin_run(run_id, plan)
    }
    fn append(&self, event: &Event) -> Result<(), StoreError> {
        if self.appends.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_at {
            return Err(StoreError::Backend(
                "injected: the process died here".into(),
            ));
        }
        self.inner.append(event)
    }
    fn finish_run(
        &self,
        run_id: &str,
        success: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.dead() {
            return Err(StoreError::Backend(
                "injected: the process died here".into(),
            ));
        }
        self.inner.finish_run(run_id, success, error)
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

fn count(calls: &Calls, kind: &str, name: &str) -> usize {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, n)| k == kind && n == name)
        .count()
}

/// Steps whose end the store recorded before the crash.
fn finished_before_crash(store: &dyn RunStore, run_id: &str) -> Vec<String> {
    store
        .load_run(run_id)
        .unwrap()
        .events
        .iter()
        .filter(|e| e.kind.name() == "step_finished")
        .filter_map(|e| e.step_id.as_deref().map(str::to_owned))
        .collect()
}

async fn uninterrupted(d_fails: bool, mode: RollbackMode) -> (Plan, usize) {
    let calls = Calls::default();
    let dir = TempDir::new("clean");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let mut plan = plan(d_fails);
    let result = orchestrator_in(&calls, store.clone(), mode)
        .execute(&mut plan)
        .await
        .unwrap();
    let run_id = result.run_id.unwrap();
    let writes = store.load_run(&run_id).unwrap().events.len();
    (plan, writes)
}

async fn crash_at_every_write_then_resume(d_fails: bool, mode: RollbackMode) {
    crash_at_every_write_then_resume_in(d_fails, mode, Backend::Sqlite).await
}

/// Which store a crash test journals to.
#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// One store's place (a file, or a database), opened anew by each "process".
enum Place {
    Sqlite(TempDir),
    #[cfg(feature = "postgres")]
    Postgres(String),
}

impl Place {
    /// A fresh place of `backend`; `None` (the skip said) when it is not installed.
    fn fresh(backend: Backend) -> Option<Place> {
        match backend {
            Backend::Sqlite => Some(Place::Sqlite(TempDir::new("crash"))),
            #[cfg(feature = "postgres")]
            Backend::Postgres => match agenthelm_test_support::PgServer::shared() {
                Ok(pg) => Some(Place::Postgres(pg.database())),
                Err(why) => {
                    eprintln!("PostgreSQL store skipped: {why}");
                    None
                }
            },
        }
    }

    fn open(&self) -> Arc<dyn RunStore> {
        match self {
            Place::Sqlite(dir) => Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap()),
            #[cfg(feature = "postgres")]
            Place::Postgres(url) => Arc::new(agenthelm::store::PostgresStore::open(url).unwrap()),
        }
    }
}

async fn crash_at_every_write_then_resume_in(d_fails: bool, mode: RollbackMode, backend: Backend) {
    let (expected, writes) = uninterrupted(d_fails, mode).await;
    assert!(
        writes > 10,
        "a run of 4 steps journals more than 10 events, got {writes}"
    );
    let mut uncertain_compensations = 0;
    for fail_at in 1..=writes {
        let calls = Calls::default();
        let Some(place) = Place::fresh(backend) else {
            return;
        };
        let durable = place.open();
        let dying = Arc::new(DyingStore {
            inner: durable.clone(),
            appends: AtomicUsize::new(0),
            fail_at,
        });
        let mut plan = plan(d_fails);
        let outcome = orchestrator_in(&calls, dying, mode)
            .execute(&mut plan)
            .await;
        let run_id = match outcome {
            Err(OrchestratorError::Halted { run_id, .. }) => run_id,
            other => panic!("crash at write {fail_at}: the run must halt, got {other:?}"),
        };
        assert_eq!(durable.list_runs(1).unwrap()[0].run_id, run_id);
        let finished = finished_before_crash(&*durable, &run_id);

        // The process restarts: same store file, new orchestrator, resume.
        let reopened = place.open();
        let (resumed, result) = orchestrator_in(&calls, reopened.clone(), mode)
            .resume(&run_id)
            .await
            .unwrap_or_else(|e| panic!("crash at write {fail_at}: resume failed: {e}"));

        for step in ["a", "b", "c", "d"] {
            let creates = count(&calls, "create", step);
            if finished.iter().any(|s| s == step) {
                assert!(
                    creates <= 1,
                    "crash at write {fail_at}: finished step {step} ran again ({creates} times)"
                );
            } else {
                assert!(
                    creates <= 2,
                    "crash at write {fail_at}: step {step} ran {creates} times"
                );
            }
            assert!(
                count(&calls, "remove", step) <= 1,
                "crash at write {fail_at}: step {step} was compensated twice"
            );
        }
        let statuses: Vec<(String, StepStatus)> = resumed
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.status))
            .collect();
        let expected_statuses: Vec<(String, StepStatus)> = expected
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.status))
            .collect();
        let uncertain = result
            .rollback
            .as_ref()
            .map(|r| {
                r.failed
                    .iter()
                    .filter(|f| f.error.contains("not run again"))
                    .count()
            })
            .unwrap_or(0);
        if uncertain == 0 {
            assert_eq!(
                statuses, expected_statuses,
                "crash at write {fail_at}: final state differs"
            );
        } else {
            uncertain_compensations += 1;
        }
        assert_eq!(result.success, !d_fails, "crash at write {fail_at}");
        // Every event of finished work is in the store, and the run is recorded as ended.
        let stored = reopened.load_run(&run_id).unwrap();
        assert_eq!(
            stored.summary.success,
            Some(!d_fails),
            "crash at write {fail_at}"
        );
        for step in &resumed.steps {
            if step.status == StepStatus::Completed {
                assert!(
                    stored
                        .events
                        .iter()
                        .any(|e| e.kind.name() == "step_finished"
                            && e.step_id.as_deref() == Some(step.id.as_str())),
                    "crash at write {fail_at}: no end of {} on record",
                    step.id
                );
            }
        }
    }
    if !d_fails {
        assert_eq!(uncertain_compensations, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_succeeds_survives_a_crash_at_every_journal_write() {
    crash_at_every_write_then_resume(false, RollbackMode::Sequential).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_rolls_back_survives_a_crash_at_every_journal_write() {
    crash_at_every_write_then_resume(true, RollbackMode::Sequential).await;
}

/// a and b are undone at the same time once c is: a crash can leave both in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_rollback_survives_a_crash_at_every_journal_write() {
    crash_at_every_write_then_resume(true, RollbackMode::Parallel).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_rolls_back_survives_a_crash_at_every_journal_write_on_postgres() {
    crash_at_every_write_then_resume_in(true, RollbackMode::Sequential, Backend::Postgres).await;
}

#[tokio::test]
async fn an_interrupted_step_can_be_failed_instead_of_rerun() {
    let calls = Calls::default();
    let dir = TempDir::new("rule");
    let db = dir.join("runs.db");
    let durable: Arc<dyn RunStore> = Arc::new(SqliteStore::open(&db).unwrap());
    // Writes: run_started, step_started(a), effect(a) -> dies while a and b run.
    let dying = Arc::new(DyingStore {
        inner: durable.clone(),
        appends: AtomicUsize::new(0),
        fail_at: 4,
    });
    let mut plan = plan(false);
    assert!(orchestrator(&calls, dying)
        .execute(&mut plan)
        .await
        .is_err());
    let run_id = durable.list_runs(1).unwrap()[0].run_id.clone();
    let (resumed, result) = orchestrator(&calls, durable.clone())
        .on_interrupted_steps(InterruptedSteps::Fail)
        .resume(&run_id)
        .await
        .unwrap();
    assert!(!result.success);
    assert!(resumed.steps.iter().any(|s| s.status == StepStatus::Failed
        && s.error
            .as_deref()
            .is_some_and(|e| e.contains("interrupted"))));
    assert_eq!(resumed.get_step("d").unwrap().status, StepStatus::Skipped);
    let resumed_event = durable
        .load_run(&run_id)
        .unwrap()
        .events
        .into_iter()
        .find(|e| e.kind.name() == "run_resumed");
    assert!(resumed_event.is_some(), "the resume is on record");
}

#[tokio::test]
async fn resuming_needs_a_store_and_an_unfinished_run() {
    let calls = Calls::default();
    let dir = TempDir::new("finished");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let orchestrator = orchestrator(&calls, store.clone());
    let mut plan = plan(false);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    let run_id = result.run_id.unwrap();
    let again = orchestrator.resume(&run_id).await;
    assert!(
        matches!(
            again,
            Err(OrchestratorError::AlreadyFinished { success: true, .. })
        ),
        "{again:?}"
    );
    let unknown = orchestrator.resume("run-nope").await;
    assert!(
        matches!(&unknown, Err(OrchestratorError::NotRecorded(StoreError::UnknownRun(id))) if id == "run-nope")
    );
    let no_store = Orchestrator::new(AgentRegistry::new())
        .resume(&run_id)
        .await;
    assert!(matches!(no_store, Err(OrchestratorError::NoStore)));
}

#[tokio::test]
async fn a_store_that_cannot_record_the_run_means_nothing_runs() {
    let calls = Calls::default();
    let dir = TempDir::new("dead");
    let durable: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let dead = Arc::new(DyingStore {
        inner: durable,
        appends: AtomicUsize::new(0),
        fail_at: 1,
    });
    let mut plan = plan(false);
    let outcome = orchestrator(&calls, dead).execute(&mut plan).await;
    // Recorded as begun (its plan is in the store), so it can be resumed once the store works.
    assert!(
        matches!(outcome, Err(OrchestratorError::Halted { .. })),
        "{outcome:?}"
    );
    assert!(calls.lock().unwrap().is_empty(), "no tool may run untraced");
    assert_eq!(plan.steps.len(), 4, "the caller keeps the plan");
}

#[tokio::test]
async fn cancelling_a_journaled_run_rolls_back_and_is_on_record() {
    let calls = Calls::default();
    let dir = TempDir::new("cancel");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let cancel = CancelToken::new();
    cancel.cancel();
    let mut plan = plan(false);
    let result = orchestrator(&calls, store.clone())
        .execute_with_cancel(&mut plan, cancel)
        .await
        .unwrap();
    assert!(!result.success);
    assert!(plan.steps.iter().all(|s| s.status == StepStatus::Skipped));
    let summary = &store.list_runs(5).unwrap()[0];
    assert_eq!(summary.success, Some(false));
    assert!(summary
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("the run was cancelled")));
}

#[tokio::test]
async fn a_suspended_run_is_not_rolled_back_or_ended_and_resumes() {
    let calls = Calls::default();
    let dir = TempDir::new("suspend");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let cancel = CancelToken::new();
    cancel.suspend();
    let mut plan = plan(false);
    let error = orchestrator(&calls, store.clone())
        .execute_with_cancel(&mut plan, cancel)
        .await
        .unwrap_err();
    let OrchestratorError::Suspended { run_id } = error else {
        panic!("not suspended: {error:?}");
    };
    // Nothing ran, nothing was skipped or undone, and the run is unfinished.
    assert!(calls.lock().unwrap().is_empty());
    assert!(plan.steps.iter().all(|s| s.status == StepStatus::Pending));
    assert_eq!(store.list_runs(5).unwrap()[0].success, None);
    let (plan, result) = orchestrator(&calls, store.clone())
        .resume(&run_id)
        .await
        .unwrap();
    assert!(result.success, "{:?}", result.error);
    assert!(plan.success());
    assert_eq!(count(&calls, "create", "d"), 1);
    assert_eq!(count(&calls, "remove", "a"), 0);
}

#[test]
fn sqlite_store_rejects_foreign_and_damaged_files() {
    let dir = TempDir::new("foreign");
    let damaged = dir.join("damaged.db");
    std::fs::write(
        &damaged,
        b"this is not a database at all, just text that is long enough",
    )
    .unwrap();
    let err = SqliteStore::open(&damaged).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("damaged.db"), "{err}");

    let foreign = dir.join("foreign.db");
    {
        let store = SqliteStore::open(&foreign).unwrap();
        drop(store);
    }
    // Another program's database: same engine, other tables, no AgentHelm id.
    let other = dir.join("other.db");
    std::fs::copy(&foreign, &other).unwrap();
    let status = std::process::Command::new("python3")
        .args(["-c", &format!(
            "import sqlite3; c=sqlite3.connect('{}'); c.execute('PRAGMA application_id=7'); c.commit()",
            other.display()
        )])
        .status();
    if status.is_ok_and(|s| s.success()) {
        let err = SqliteStore::open(&other).unwrap_err();
        assert!(err.to_string().contains("another program"), "{err}");
    }
}

#[test]
fn a_fresh_store_opened_by_many_at_once_is_made_once_without_errors() {
    // Each opener has its own connection, as separate processes do; they start together.
    const OPENERS: usize = 20;
    for round in 0..3 {
        let dir = TempDir::new("fresh-race");
        let path = dir.join("store").join("runs.db");
        let start = Arc::new(std::sync::Barrier::new(OPENERS));
        let openers: Vec<_> = (0..OPENERS)
            .map(|i| {
                let (path, start) = (path.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    let store = SqliteStore::open(&path)?;
                    store.begin_run(&format!("run-{i}"), &Plan::new("race"))?;
                    Ok::<_, StoreError>(())
                })
            })
            .collect();
        let errors: Vec<String> = openers
            .into_iter()
            .filter_map(|t| t.join().unwrap().err().map(|e| e.to_string()))
            .collect();
        assert!(errors.is_empty(), "round {round}: {errors:#?}");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.list_runs(100).unwrap().len(), OPENERS);
    }
}

#[cfg(unix)]
#[test]
fn store_files_are_private_and_a_read_only_folder_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("perms");
    let path = dir.join("nested").join("runs.db");
    SqliteStore::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let folder = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(folder, 0o700);

    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    let outcome = SqliteStore::open(locked.join("runs.db"));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Root ignores permissions; elsewhere the error names the file.
    if let Err(err) = outcome {
        assert!(err.to_string().contains("runs.db"), "{err}");
    }
}

#[tokio::test]
async fn every_backend_keeps_runs_lists_them_and_answers_queries() {
    let dir = TempDir::new("backends");
    let mut stores: Vec<Arc<dyn RunStore>> = vec![
        Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap()),
        Arc::new(JsonlStore::open(dir.join("jsonl")).unwrap()),
    ];
    stores.extend(postgres_store());
    for store in stores {
        let calls = Calls::default();
        let orchestrator = orchestrator(&calls, store.clone());
        let mut ok = plan(false);
        let first = orchestrator.execute(&mut ok).await.unwrap();
        let mut failing = plan(true);
        let second = orchestrator.execute(&mut failing).await.unwrap();
        let runs = store.list_runs(10).unwrap();
        assert_eq!(runs.len(), 2);
        let by_id: HashMap<_, _> = runs.iter().map(|r| (r.run_id.clone(), r)).collect();
        assert_eq!(by_id[first.run_id.as_deref().unwrap()].success, Some(true));
        assert_eq!(
            by_id[second.run_id.as_deref().unwrap()].success,
            Some(false)
        );

        let stored = store.load_run(second.run_id.as_deref().unwrap()).unwrap();
        assert_eq!(stored.plan.steps.len(), 4);
        assert_eq!(
            stored.events.len(),
            second.events.len(),
            "every event is kept"
        );

        let failed_tools = store
            .query(&EventFilter {
                kinds: vec!["tool_call".into()],
                success: Some(false),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(failed_tools.len(), 1);
        assert_eq!(failed_tools[0].kind.tool(), Some("fail"));
        let removes = store
            .query(&EventFilter {
                tool: Some("remove".into()),
                kinds: vec!["tool_call".into()],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(removes.len(), 3, "a, b and c were undone");
        let last_two = store
            .query(&EventFilter {
                limit: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(last_two.len(), 2);
        assert_eq!(last_two[1].kind.name(), "run_finished");
    }
}

/// Records everything but the run's end in the run list, like a process killed in its last
/// instant.
struct NoEndStore(Arc<dyn RunStore>);

impl RunStore for NoEndStore {
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        self.0.begin_run(run_id, plan)
    }
    fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.0.append(event)
    }
    fn finish_run(&self, _: &str, _: bool, _: Option<&str>) -> Result<(), StoreError> {
        Err(StoreError::Backend(
            "injected: the process died here".into(),
        ))
    }
    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        self.0.load_run(run_id)
    }
    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.0.list_runs(limit)
    }
    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        self.0.query(filter)
    }
}

#[tokio::test]
async fn a_run_killed_after_its_last_event_is_recorded_as_ended_on_resume() {
    let calls = Calls::default();
    let dir = TempDir::new("last-instant");
    let durable: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let mut plan = plan(true);
    let outcome = orchestrator(&calls, Arc::new(NoEndStore(durable.clone())))
        .execute(&mut plan)
        .await;
    assert!(
        matches!(outcome, Err(OrchestratorError::Halted { .. })),
        "{outcome:?}"
    );
    let run_id = durable.list_runs(1).unwrap()[0].run_id.clone();
    assert_eq!(durable.list_runs(1).unwrap()[0].success, None);
    let resumed = orchestrator(&calls, durable.clone()).resume(&run_id).await;
    assert!(
        matches!(
            resumed,
            Err(OrchestratorError::AlreadyFinished { success: false, .. })
        ),
        "{resumed:?}"
    );
    assert_eq!(durable.list_runs(1).unwrap()[0].success, Some(false));
    assert_eq!(count(&calls, "remove", "a"), 1, "nothing was undone twice");
}

#[tokio::test]
async fn an_outline_leaves_out_arguments_outputs_and_results_on_both_backends() {
    let dir = TempDir::new("outline");
    let stores: Vec<Arc<dyn RunStore>> = vec![
        Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap()),
        Arc::new(JsonlStore::open(dir.join("jsonl")).unwrap()),
    ];
    for store in stores {
        let calls = Calls::default();
        let mut failing = plan(true);
        // Big enough for the SQLite store to drop it in SQL, before it is read out.
        failing.steps[0].args = json!({"name": "x".repeat(10_000)});
        let run = orchestrator(&calls, store.clone())
            .execute(&mut failing)
            .await
            .unwrap();
        let id = run.run_id.as_deref().unwrap();
        let full = store.load_run(id).unwrap();
        let outline = store.load_run_outline(id).unwrap();
        assert_eq!(outline.summary, full.summary);
        assert_eq!(outline.plan, full.plan);
        let outputs = |events: &[Event]| {
            events
                .iter()
                .filter(|e| {
                    matches!(
                        &e.kind,
                        EventKind::ToolCall {
                            output: Some(_),
                            ..
                        }
                    )
                })
                .count()
        };
        assert!(outputs(&full.events) > 0);
        assert_eq!(outputs(&outline.events), 0);
        assert_eq!(outline.events.len(), full.events.len());
        for (whole, thin) in full.events.iter().zip(&outline.events) {
            let mut stripped = whole.clone();
            stripped.kind.strip_payloads();
            assert_eq!(&stripped, thin);
        }
        // The run's shape is all there: statuses, attempts, rollback.
        let whole = RunState::replay(&full.plan, &full.events);
        let thin = RunState::replay(&outline.plan, &outline.events);
        assert!(whole.result(0).is_some());
        assert_eq!(thin.result(0), None);
        let statuses = |s: &RunState| -> Vec<_> { s.steps().iter().map(|r| r.status).collect() };
        assert_eq!(statuses(&thin), statuses(&whole));
        assert_eq!(thin.rollback(), whole.rollback());
    }
}

#[test]
fn the_jsonl_run_list_reads_each_file_s_first_and_last_lines() {
    let dir = TempDir::new("jsonl-list");
    let store = JsonlStore::open(dir.join("runs")).unwrap();
    store
        .begin_run("run-open", &Plan::new("still going"))
        .unwrap();
    let mut event = Event::new(EventKind::Note {
        message: "working".into(),
    });
    event.run_id = Some("run-open".into());
    store.append(&event).unwrap();
    store.begin_run("run-done", &Plan::new("done")).unwrap();
    store
        .finish_run("run-done", false, Some("it broke"))
        .unwrap();
    let listed = store.list_runs(10).unwrap();
    let by_id: HashMap<_, _> = listed.iter().map(|r| (r.run_id.as_str(), r)).collect();
    assert_eq!(by_id["run-open"].success, None);
    assert_eq!(by_id["run-open"].goal, "still going");
    assert_eq!(by_id["run-done"].success, Some(false));
    assert_eq!(by_id["run-done"].error.as_deref(), Some("it broke"));

    // A crash cut the last line short: the run is unfinished, and listing is no error.
    let file = dir.join("runs").join("run-open.jsonl");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(r#"{"record":"finished","finished_ms":"#);
    std::fs::write(&file, text).unwrap();
    let listed = store.list_runs(10).unwrap();
    assert!(listed
        .iter()
        .any(|r| r.run_id == "run-open" && r.success.is_none()));

    // A file whose first line is not a run is named as damaged.
    std::fs::write(
        dir.join("runs").join("run-bad.jsonl"),
        "{\"record\":\"finished\"}\n",
    )
    .unwrap();
    let err = store.list_runs(10).unwrap_err();
    assert!(err.to_string().contains("run-bad.jsonl"), "{err}");
}

#[tokio::test]
async fn a_reviewed_plan_is_kept_as_revised_and_starts_on_resume() {
    let dir = TempDir::new("review");
    let stores: Vec<Arc<dyn RunStore>> = vec![
        Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap()),
        Arc::new(JsonlStore::open(dir.join("jsonl")).unwrap()),
    ];
    for store in stores {
        let calls = Calls::default();
        let mut submitted = plan(false);
        submitted.approved = false;
        let id = "run-review";
        store.begin_run(id, &submitted).unwrap();
        let note = |kind| {
            let mut event = Event::new(kind);
            event.run_id = Some(id.into());
            event
        };
        store
            .append(&note(EventKind::PlanSubmitted {
                by: Some("bo".into()),
            }))
            .unwrap();
        let state = |store: &Arc<dyn RunStore>| {
            let run = store.load_run(id).unwrap();
            RunState::replay(&run.plan, &run.events)
        };
        assert_eq!(state(&store).phase(), RunPhase::AwaitingApproval);
        let orchestrator = orchestrator(&calls, store.clone());
        let refused = orchestrator.resume(id).await;
        assert!(
            matches!(refused, Err(OrchestratorError::NotApproved { .. })),
            "{refused:?}"
        );
        assert!(calls.lock().unwrap().is_empty(), "nothing ran");

        // The reviewer drops step d and approves.
        let mut revised = submitted.clone();
        revised.steps.pop();
        revised.goal = "crash test, three steps".into();
        revised.approved = true;
        store.revise_plan(id, &revised).unwrap();
        store
            .append(&note(EventKind::PlanReviewed {
                approved: true,
                by: "al".into(),
                reason: None,
                edited: true,
            }))
            .unwrap();
        assert_eq!(store.load_run(id).unwrap().plan, revised);
        assert_eq!(
            store.list_runs(1).unwrap()[0].goal,
            "crash test, three steps"
        );
        assert_eq!(store.list_runs(1).unwrap()[0].steps, 3);

        let (plan, result) = orchestrator.resume(id).await.unwrap();
        assert!(result.success, "{:?}", result.error);
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(calls.lock().unwrap().len(), 3);
        let run = store.load_run(id).unwrap();
        let kinds: Vec<&str> = run.events.iter().map(|e| e.kind.name()).collect();
        assert_eq!(
            kinds[..3],
            ["plan_submitted", "plan_reviewed", "run_started"]
        );
        assert!(!kinds.contains(&"run_resumed"), "{kinds:?}");
        assert_eq!(state(&store).phase(), RunPhase::Succeeded);
        let unknown = store.revise_plan("run-nope", &revised).unwrap_err();
        assert!(matches!(unknown, StoreError::UnknownRun(_)), "{unknown:?}");
    }
}

#[tokio::test]
async fn both_backends_keep_runs_with_full_durability() {
    use agenthelm::store::Durability;
    let dir = TempDir::new("full-durability");
    let stores: Vec<Arc<dyn RunStore>> = vec![
        Arc::new(
            SqliteStore::open(dir.join("runs.db"))
                .unwrap()
                .with_durability(Durability::Full)
                .unwrap(),
        ),
        Arc::new(
            JsonlStore::open(dir.join("jsonl"))
                .unwrap()
                .with_durability(Durability::Full),
        ),
    ];
    for store in stores {
        let calls = Calls::default();
        let mut ok = plan(false);
        let run = orchestrator(&calls, store.clone())
            .execute(&mut ok)
            .await
            .unwrap();
        assert!(run.success);
        let stored = store.load_run(run.run_id.as_deref().unwrap()).unwrap();
        assert_eq!(stored.events.len(), run.events.len());
    }
}

/// `create` (compensated by an idempotent `remove` that records each call's idempotency key)
/// and `fail`.
fn idempotent_tools(keys: &Arc<Mutex<Vec<(String, String)>>>) -> ToolSet {
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let create = FnTool::new(
        "create",
        "Create",
        schema.clone(),
        |args: Value, _| async move { Ok(json!(format!("created {}", args["name"]))) },
    )
    .unwrap()
    .compensating_tool("remove");
    let keys = Arc::clone(keys);
    let remove = FnTool::new(
        "remove",
        "Remove",
        schema.clone(),
        move |args: Value, call: agenthelm::tool::ToolCallInfo| {
            let keys = Arc::clone(&keys);
            async move {
                let name = args["name"].as_str().unwrap_or_default().to_owned();
                keys.lock().unwrap().push((name, call.idempotency_key));
                Ok(json!(null))
            }
        },
    )
    .unwrap()
    .idempotent(true);
    let fail = FnTool::new("fail", "Fails", schema, |_, _| async {
        Err(ToolError::new("the last step always fails"))
    })
    .unwrap();
    ToolSet::new().with(create).with(remove).with(fail)
}

#[tokio::test]
async fn an_idempotent_compensation_in_doubt_runs_again_with_the_same_key() {
    let keys: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let orchestrator = |store: Arc<dyn RunStore>| {
        let mut registry = AgentRegistry::new();
        let lm = Lm::from_model(ScriptedLm::new(vec![]));
        registry
            .register(ToolAgent::new("worker", lm, idempotent_tools(&keys)))
            .unwrap();
        Orchestrator::new(registry).store_shared(store)
    };
    // Where the first compensation's end is written, in a run that is not interrupted.
    let dir = TempDir::new("idempotent-compensation");
    let clean: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("clean.db")).unwrap());
    let clean_run = orchestrator(clean.clone())
        .execute(&mut plan(true))
        .await
        .unwrap();
    let events = clean
        .load_run(clean_run.run_id.as_deref().unwrap())
        .unwrap()
        .events;
    let end_of_first = 1 + events
        .iter()
        .position(|e| e.kind.name() == "compensation_finished")
        .unwrap();
    keys.lock().unwrap().clear();

    // The process dies as that end is written: the compensation ran, its end is not on record.
    let durable: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let dying = Arc::new(DyingStore {
        inner: durable.clone(),
        appends: AtomicUsize::new(0),
        fail_at: end_of_first,
    });
    let halted = orchestrator(dying).execute(&mut plan(true)).await;
    let Err(OrchestratorError::Halted { run_id, .. }) = halted else {
        panic!("{halted:?}");
    };
    let first = keys.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "{first:?}");

    let (plan, result) = orchestrator(durable).resume(&run_id).await.unwrap();
    let rollback = result.rollback.unwrap();
    assert!(
        rollback.failed.is_empty(),
        "nothing left for a person: {rollback:?}"
    );
    assert!(plan
        .steps
        .iter()
        .filter(|s| s.id != "d")
        .all(|s| s.status == StepStatus::Compensated));
    let all = keys.lock().unwrap().clone();
    let again: Vec<_> = all.iter().filter(|(name, _)| *name == first[0].0).collect();
    assert_eq!(again.len(), 2, "run again after the crash: {all:?}");
    assert_eq!(again[0].1, again[1].1, "with the same idempotency key");
}

#[tokio::test]
async fn pruning_deletes_ended_runs_keeps_unfinished_ones_and_shrinks_the_store() {
    let dir = TempDir::new("prune");
    let stores: Vec<Arc<dyn RunStore>> = vec![
        Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap()),
        Arc::new(JsonlStore::open(dir.join("jsonl")).unwrap()),
    ];
    for store in stores {
        let calls = Calls::default();
        let mut big = plan(false);
        big.steps[0].args = json!({"name": "x".repeat(300_000)});
        let ok = orchestrator(&calls, store.clone())
            .execute(&mut big)
            .await
            .unwrap();
        let failed = orchestrator(&calls, store.clone())
            .execute(&mut plan(true))
            .await
            .unwrap();
        store.begin_run("run-unfinished", &plan(false)).unwrap();
        let later = now_ms() + 1_000;

        let before = store.size_on_disk().unwrap();
        let deleted = store.prune(later, true).unwrap();
        assert_eq!(deleted, [ok.run_id.clone().unwrap()]);
        assert!(store.size_on_disk().unwrap() < before, "the store shrank");
        let left: Vec<String> = store
            .list_runs(10)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(matches!(
            store.load_run(ok.run_id.as_deref().unwrap()),
            Err(StoreError::UnknownRun(_))
        ));

        // Nothing ended that long ago; then the failed run goes too, never the unfinished one.
        assert!(store.prune(0, false).unwrap().is_empty());
        assert_eq!(
            store.prune(later, false).unwrap(),
            [failed.run_id.clone().unwrap()]
        );
        let left: Vec<String> = store
            .list_runs(10)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(left, ["run-unfinished"]);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
