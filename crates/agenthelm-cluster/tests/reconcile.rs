//! A coordinator that dies between recording a dispatch in PostgreSQL and publishing it on
//! NATS: a worker's reconciler publishes the work, it runs once, and a late publish of the same
//! work (the coordinator coming back) does not run it again. Real PostgreSQL and NATS servers;
//! skipped (and said) only when they cannot be had.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agenthelm::orchestrate::{RemoteOutcome, StepWork};
use agenthelm::store::{Dispatched, PostgresStore, RunStore, Work};
use agenthelm::{AgentRegistry, FnTool, Orchestrator, Plan, ToolSet};
use agenthelm_cluster::work::{self, Job};
use agenthelm_cluster::{ClusterSettings, WorkQueue, Worker, WorkerOptions};
use agenthelm_test_support::{NatsServer, PgServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_recorded_but_never_published_is_published_by_the_reconciler_and_runs_once() {
    let pg = match PgServer::shared() {
        Ok(pg) => pg,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let nats = match NatsServer::start() {
        Ok(nats) => nats,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let url = pg.database();
    let store = PostgresStore::open(&url).unwrap();
    store.begin_run("r1", &Plan::new("reconcile")).unwrap();
    let lease = store
        .lease_run("r1", "a coordinator that dies", Duration::from_secs(60))
        .unwrap();
    let key = work::step_key("r1", "a", 1);
    let step = StepWork {
        run_id: "r1".into(),
        step_id: "a".into(),
        agent: None,
        direct_tool: Some("count".into()),
        description: "count once".into(),
        tool_name: Some("count".into()),
        args: json!({}),
        inputs: Vec::new(),
    };
    let record = Work {
        key: key.clone(),
        run_id: "r1".into(),
        step_id: "a".into(),
        pool: "default".into(),
        payload: serde_json::to_value(Job::Step(step)).unwrap(),
    };
    // Committed, then the coordinator is gone before its publish.
    assert_eq!(
        store.dispatch_work(&lease, &record).unwrap(),
        Dispatched::New
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let count = FnTool::new(
        "count",
        "counts its calls",
        json!({"type": "object"}),
        move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(json!("counted")) }
        },
    )
    .unwrap();
    let orchestrator = Orchestrator::new(AgentRegistry::new()).tools(ToolSet::new().with(count));
    let settings = ClusterSettings::new(nats.url());
    let worker = Worker::connect(
        Arc::new(PostgresStore::open(&url).unwrap()),
        settings.clone(),
        orchestrator,
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let options = WorkerOptions {
        pools: vec!["default".into()],
        concurrency: 2,
    };
    let running = tokio::spawn(async move { worker.run(&options, stopped).await });

    let deadline = Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        if let Some(outcome) = store.work_outcome(&key).unwrap() {
            break outcome;
        }
        assert!(Instant::now() < deadline, "the work never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        work::to_step(&outcome),
        RemoteOutcome::Completed {
            value: json!("counted"),
            call: Some("a#1".into())
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The tool call is in the run's journal, written by the worker's attempt.
    let journal = store.load_run("r1").unwrap();
    assert_eq!(journal.events.len(), 1, "{:?}", journal.events);

    // The coordinator comes back and publishes after all: nothing runs twice.
    let queue = WorkQueue::connect(&nats.url(), settings.queue.clone())
        .await
        .unwrap();
    queue
        .publish("default", &key, key.as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(store
        .unpublished_work(Duration::ZERO, 10)
        .unwrap()
        .is_empty());

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
}
