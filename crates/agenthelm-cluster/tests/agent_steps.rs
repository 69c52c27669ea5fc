//! An agent's step (a ReAct loop with a model and a tool) carried out by a worker: the
//! coordinator's run sees the worker's model and tool calls, in its result and its journal, and
//! weighs them against the run's budget. Coordinator and worker run in this process, against
//! real PostgreSQL and NATS servers (skipped, and said, only when they cannot be had).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agenthelm::budget::Budget;
use agenthelm::store::{PostgresStore, RunStore};
use agenthelm::{
    AgentRegistry, EventKind, FnTool, Lm, Orchestrator, Plan, PlanStep, ScriptedLm, ScriptedReply,
    StepStatus, ToolAgent, ToolSet,
};
use agenthelm_cluster::{ClusterSettings, Coordinator, Worker, WorkerOptions};
use agenthelm_test_support::{NatsServer, PgServer};
use serde_json::json;

/// The `note` tool, counting its calls in `calls`.
fn note_tool(calls: &Arc<AtomicUsize>) -> FnTool {
    let calls = Arc::clone(calls);
    FnTool::new(
        "note",
        "writes a note",
        json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        move |_, _| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(json!("noted")) }
        },
    )
    .unwrap()
}

/// Agent `writer` with `replies`, and its `note` tool counting into `calls`.
fn writer(replies: Vec<ScriptedReply>, calls: &Arc<AtomicUsize>) -> Orchestrator {
    let lm = Lm::from_model(ScriptedLm::new(replies));
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new(
            "writer",
            lm,
            ToolSet::new().with(note_tool(calls)),
        ))
        .unwrap();
    Orchestrator::new(registry)
}

/// Each step of the worker's agent: a tool call, then an answer; 165 tokens in all.
fn one_step_of_replies() -> Vec<ScriptedReply> {
    vec![
        ScriptedReply::tool_call("note", json!({"text": "hi"})).with_usage(100, 10),
        ScriptedReply::text("done").with_usage(50, 5),
    ]
}

struct Cluster {
    coordinator: Orchestrator,
    store: Arc<PostgresStore>,
    here: Arc<AtomicUsize>,
    there: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
    _nats: NatsServer,
}

/// A coordinator and one worker for pool `writer`, whose agent answers with `replies`.
async fn cluster(replies: Vec<ScriptedReply>, budget: Budget) -> Option<Cluster> {
    let pg = PgServer::shared()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()?;
    let nats = NatsServer::start()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()?;
    let url = pg.database();
    let settings = ClusterSettings::new(nats.url());
    let (here, there) = (Arc::default(), Arc::default());
    let worker = Worker::connect(
        Arc::new(PostgresStore::open(&url).unwrap()),
        settings.clone(),
        writer(replies, &there),
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let options = WorkerOptions {
            pools: vec!["writer".into()],
            concurrency: 2,
        };
        worker.run(&options, stopped).await
    });
    let store = Arc::new(PostgresStore::open(&url).unwrap());
    let remote = Coordinator::connect(Arc::clone(&store), settings)
        .await
        .unwrap();
    // The coordinator's own model would fail the test if it were asked anything.
    let coordinator = writer(Vec::new(), &here)
        .store_shared(Arc::clone(&store) as Arc<dyn RunStore>)
        .budget(budget)
        .remote_runs(Arc::new(remote));
    Some(Cluster {
        coordinator,
        store,
        here,
        there,
        stop,
        _nats: nats,
    })
}

fn plan(steps: &[&str]) -> Plan {
    let mut plan = Plan::new("write notes");
    let mut previous: Option<&str> = None;
    for id in steps {
        let mut step = PlanStep::new(*id, "write a note").agent("writer");
        if let Some(before) = previous {
            step = step.depends_on([before]);
        }
        plan.steps.push(step);
        previous = Some(id);
    }
    plan.approved = true;
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_step_runs_its_model_and_tool_on_the_worker_and_the_run_sees_them() {
    let Some(cluster) = cluster(one_step_of_replies(), Budget::default()).await else {
        return;
    };
    let mut plan = plan(&["w"]);
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        cluster.coordinator.execute(&mut plan),
    )
    .await
    .expect("the run ends")
    .unwrap();
    assert!(result.success, "{:?}", result.error);
    assert_eq!(result.answer.as_deref(), Some("done"));
    assert_eq!(result.token_usage.total(), 165);
    assert_eq!(cluster.there.load(Ordering::SeqCst), 1);
    assert_eq!(
        cluster.here.load(Ordering::SeqCst),
        0,
        "the coordinator ran a tool"
    );

    let run_id = result.run_id.clone().unwrap();
    let journal = cluster.store.load_run(&run_id).unwrap();
    let kinds = |name: &str| {
        journal
            .events
            .iter()
            .filter(|e| e.kind.name() == name)
            .count()
    };
    assert_eq!((kinds("llm_call"), kinds("tool_call")), (2, 1));
    assert!(journal.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::StepFinished {
            status: StepStatus::Completed,
            ..
        }
    )));
    let _ = cluster.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_s_model_calls_count_against_the_run_s_budget() {
    let replies = [one_step_of_replies(), one_step_of_replies()].concat();
    let Some(cluster) = cluster(replies, Budget::new().max_tokens(100)).await else {
        return;
    };
    let mut plan = plan(&["first", "second"]);
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        cluster.coordinator.execute(&mut plan),
    )
    .await
    .expect("the run ends")
    .unwrap();
    assert!(!result.success);
    let error = result.error.clone().unwrap_or_default();
    assert!(error.contains("token"), "{error}");
    // The first step spent 165 tokens of 100: the second never started.
    assert_eq!(plan.get_step("second").unwrap().status, StepStatus::Skipped);
    assert_eq!(cluster.there.load(Ordering::SeqCst), 1);
    let _ = cluster.stop.send(true);
}
