//! The worker: pulls work of its pools from the queue and carries it out with the workspace's
//! agents and tools, journaling into the run and committing the outcome (first writer wins).
//!
//! A worker also keeps the cluster tidy: it publishes work a coordinator recorded but could
//! not publish (the reconciler), and fails work whose deliveries ran out.

use std::sync::Arc;
use std::time::Duration;

use agenthelm::exec::EventSink;
use agenthelm::store::{AttemptStart, PostgresStore, RunStore, StoreError, WorkOutcome};
use agenthelm::{EventKind, Orchestrator, RunState};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::batch::Batcher;
use crate::error::ClusterError;
use crate::queue::{Delivery, Exhausted, PoolConsumer, WorkQueue};
use crate::settings::ClusterSettings;
use crate::work::{self, Job};

/// Work recorded but not published for this long is published by a reconciler.
const UNPUBLISHED_AFTER: Duration = Duration::from_secs(2);

/// How long a worker keeps a piece of work while the store cannot be reached, before it hands
/// the work back to the queue.
const STORE_PATIENCE: Duration = Duration::from_secs(600);

/// What a worker runs and how much at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerOptions {
    /// The pools whose work it takes.
    pub pools: Vec<String>,
    /// At most this many pieces of work of each pool at a time.
    pub concurrency: usize,
}

/// Carries out the work of its pools: pulls it from the queue, runs it with the workspace's
/// agents and tools under an attempt of its own, commits the outcome (first writer wins) and
/// acks; it also publishes work left unpublished and fails work whose deliveries ran out.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<PostgresStore>,
    queue: WorkQueue,
    settings: ClusterSettings,
    orchestrator: Orchestrator,
    /// This worker, as attempts name it.
    name: String,
    /// Attempts started at the same time share a commit.
    starts: Batcher<String, AttemptStart>,
    /// Attempts that end at the same time share a commit (each keeps its own answer).
    finishes: Batcher<(String, i64, WorkOutcome), ()>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker that carries work out with `orchestrator`'s agents, tools, approval handler
    /// and retry policy.
    pub async fn connect(
        store: Arc<PostgresStore>,
        settings: ClusterSettings,
        orchestrator: Orchestrator,
    ) -> Result<Self, ClusterError> {
        let queue = WorkQueue::connect(&settings.nats_url, settings.queue.clone()).await?;
        let owner = agenthelm::store::Owner::this_process();
        let name = format!("worker {} on {}", owner.pid, owner.host);
        let (starter, worker) = (Arc::clone(&store), name.clone());
        let starts = Batcher::start(move |keys: Vec<String>| {
            let started = starter.start_attempts(&keys, &worker)?;
            Ok(started.into_iter().map(Ok).collect())
        });
        let finisher = Arc::clone(&store);
        let finishes = Batcher::start(move |finished: Vec<(String, i64, WorkOutcome)>| {
            finisher.finish_attempts(&finished)
        });
        Ok(Worker {
            shared: Arc::new(Shared {
                store,
                queue,
                settings,
                orchestrator,
                name,
                starts,
                finishes,
            }),
        })
    }

    /// Takes work until `stop` turns `true`, then finishes the work under way and returns.
    pub async fn run(
        &self,
        options: &WorkerOptions,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ClusterError> {
        if options.pools.is_empty() {
            return Err(ClusterError::Settings(
                "a worker needs at least one pool".into(),
            ));
        }
        let mut pools = JoinSet::new();
        for pool in &options.pools {
            let consumer = self.shared.queue.consumer(pool).await?;
            let shared = Arc::clone(&self.shared);
            let limit = options.concurrency.max(1);
            pools.spawn(serve_pool(shared, consumer, limit, stop.clone()));
        }
        let mut tidy = JoinSet::new();
        tidy.spawn(reconcile(Arc::clone(&self.shared)));
        tidy.spawn(fail_exhausted(Arc::clone(&self.shared)));
        tracing::info!(worker = %self.shared.name, pools = ?options.pools, "worker started");
        let _ = stop.wait_for(|stop| *stop).await;
        while pools.join_next().await.is_some() {}
        tidy.abort_all();
        Ok(())
    }
}

/// Pulls the pool's work while it has room, each piece on a task of its own.
async fn serve_pool(
    shared: Arc<Shared>,
    mut consumer: PoolConsumer,
    limit: usize,
    mut stop: watch::Receiver<bool>,
) {
    let room = Arc::new(Semaphore::new(limit));
    let mut running = JoinSet::new();
    loop {
        // Only what it can start now: work held but not started would wait out its AckWait.
        let Ok(permit) = Arc::clone(&room).acquire_owned().await else {
            break;
        };
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match delivery {
            Ok(delivery) => {
                let shared = Arc::clone(&shared);
                running.spawn(async move {
                    handle(&shared, delivery).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take work from the queue; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// Carries out one delivery: claims the next attempt, runs it with heartbeats, commits the
/// outcome and acks. A late attempt (a later one took the work over) acks nothing: the
/// message belongs to the attempt that has it now.
async fn handle(shared: &Arc<Shared>, delivery: Delivery) {
    let Ok(key) = std::str::from_utf8(delivery.payload()).map(str::to_owned) else {
        tracing::warn!("a message on the work queue is not a work key: dropped");
        let _ = delivery.term().await;
        return;
    };
    // While the store is away the work is kept (in progress), not handed back: a hand-back
    // counts as a delivery, and an outage must not spend the work's deliveries.
    let started = patiently(&delivery, || shared.starts.ask(key.clone())).await;
    let (attempt, record, earlier) = match started {
        Ok(AttemptStart::Run {
            attempt,
            work,
            earlier,
        }) => (attempt, work, earlier),
        Ok(AttemptStart::Finished(_)) => {
            notify(shared, &key).await;
            let _ = delivery.ack().await;
            return;
        }
        Ok(AttemptStart::Unknown) => {
            tracing::warn!(work = %key, "work not in the store: dropped");
            let _ = delivery.term().await;
            return;
        }
        Err(e) => {
            tracing::warn!(work = %key, error = %e, "cannot start the work; it comes back later");
            let _ = delivery.nak(Some(Duration::from_secs(1))).await;
            return;
        }
    };
    tracing::info!(work = %key, attempt, "carrying out work");
    let delivery = Arc::new(delivery);
    let beat = tokio::spawn(heartbeat(
        Arc::clone(&delivery),
        shared.settings.queue.ack_wait / 3,
    ));
    let outcome = carry_out_apart(shared, &key, attempt, earlier, record.payload).await;
    beat.abort();
    let kept = match outcome {
        // The outcome waits here for the store: the work is not done again for an outage.
        Ok(outcome) => {
            patiently(&delivery, || {
                shared.finishes.ask((key.clone(), attempt, outcome.clone()))
            })
            .await
        }
        Err(e) => Err(e),
    };
    match kept {
        // The outcome is committed: the coordinator may go on while the queue takes the ack.
        Ok(()) => {
            notify(shared, &key).await;
            let _ = delivery.ack().await;
        }
        Err(e @ StoreError::Superseded { .. }) => {
            tracing::warn!(work = %key, attempt, error = %e, "late attempt: its outcome is not kept");
        }
        Err(e) => {
            tracing::warn!(work = %key, attempt, error = %e, "outcome not kept; the work comes back");
            let _ = delivery.nak(Some(Duration::from_secs(1))).await;
        }
    }
}

/// Carries the work out on a blocking thread: its journal writes block on the store, and the
/// runtime's threads must stay free for the queue (pulls, acks, heartbeats) and other work.
async fn carry_out_apart(
    shared: &Arc<Shared>,
    key: &str,
    attempt: i64,
    earlier: i64,
    payload: serde_json::Value,
) -> Result<WorkOutcome, StoreError> {
    let (shared, key) = (Arc::clone(shared), key.to_owned());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        runtime.block_on(carry_out(&shared, &key, attempt, earlier, payload))
    })
    .await
    .map_err(|e| StoreError::Backend(format!("the work's thread stopped: {e}")))?
}

/// Runs the work's job under attempt `attempt`, journaling through it.
async fn carry_out(
    shared: &Shared,
    key: &str,
    attempt: i64,
    earlier: i64,
    payload: serde_json::Value,
) -> Result<WorkOutcome, StoreError> {
    let journal: Arc<dyn RunStore> = Arc::new(shared.store.attempt_journal(key, attempt));
    // A step run again after it waited for a decision finds the decision in the run's state.
    let sink = match work::round_of(key) {
        Some(round) if round > 1 => {
            let run = shared.store.load_run(work::run_of(key))?;
            let state = RunState::replay(&run.plan, &run.events);
            EventSink::for_run(Vec::new(), Some(journal), state)
        }
        _ => EventSink::journaled(Vec::new(), Some(journal)),
    };
    let orchestrator = &shared.orchestrator;
    match serde_json::from_value::<Job>(payload) {
        Ok(Job::Step(step)) => {
            let outcome = orchestrator.run_step_work(&step, sink).await?;
            Ok(work::from_step(&outcome, attempt))
        }
        Ok(Job::Undo(undo)) => {
            // An earlier attempt that began the call may have had its effect.
            let in_doubt = earlier > 0
                && shared
                    .store
                    .work_events(&undo.run_id, key)?
                    .iter()
                    .any(|e| matches!(e.kind, EventKind::CompensationStarted { .. }));
            let outcome = orchestrator.run_undo_work(&undo, sink, in_doubt).await?;
            Ok(work::from_undo(&outcome, attempt))
        }
        Err(e) => Ok(WorkOutcome::failed(
            format!("work `{key}` cannot be read by this worker: {e}"),
            attempt,
        )),
    }
}

/// Runs `op` against the store, trying again every second while the store cannot be reached
/// (for up to [`STORE_PATIENCE`]) and meanwhile telling the queue the work goes on.
async fn patiently<T, F: std::future::Future<Output = Result<T, StoreError>>>(
    delivery: &Delivery,
    op: impl Fn() -> F,
) -> Result<T, StoreError> {
    let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
    loop {
        match op().await {
            Err(e @ StoreError::Io { .. }) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "the store cannot be reached; trying again");
                let _ = delivery.in_progress().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Tells the queue the work is still being carried out, so it is not given to another worker.
async fn heartbeat(delivery: Arc<Delivery>, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = delivery.in_progress().await {
            tracing::warn!(error = %e, "could not tell the queue the work goes on");
        }
    }
}

/// Wakes the coordinator waiting for `key`.
async fn notify(shared: &Shared, key: &str) {
    if let Err(e) = shared
        .queue
        .notify(&work::done_subject(work::run_of(key)), key.as_bytes())
        .await
    {
        // The coordinator finds the outcome by polling the store.
        tracing::debug!(work = key, error = %e, "no wake-up sent");
    }
}

/// Publishes work recorded as dispatched whose coordinator did not publish it (it died
/// between its commit and its publish, or NATS was away). The queue drops a second copy of
/// work that was published after all (same message id).
async fn reconcile(shared: Arc<Shared>) {
    loop {
        match shared.store.unpublished_work(UNPUBLISHED_AFTER, 100) {
            Ok(unpublished) => {
                for work in unpublished {
                    let published = shared
                        .queue
                        .publish(&work.pool, &work.key, work.key.as_bytes())
                        .await;
                    if published.is_ok() {
                        tracing::info!(work = %work.key, "reconciler published work left unpublished");
                        let _ = shared.store.mark_published(&work.key);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "reconciler cannot read the store"),
        }
        tokio::time::sleep(UNPUBLISHED_AFTER / 2).await;
    }
}

/// Fails work whose deliveries ran out, so its step fails (and its run rolls back).
async fn fail_exhausted(shared: Arc<Shared>) {
    loop {
        match shared.queue.exhausted().await {
            Ok(mut exhausted) => {
                while let Some(spent) = exhausted.next().await {
                    match spent {
                        Ok(Exhausted {
                            msg_id: Some(key),
                            deliveries,
                            ..
                        }) => fail_spent(&shared, &key, deliveries).await,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read work whose deliveries ran out")
                        }
                    }
                }
                tracing::warn!("the watch for spent work ended; watching again");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for work whose deliveries ran out yet")
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Fails spent work `key` in the store. Its message is gone from the queue, so only the store
/// can end the work now: a store that is away is tried again.
async fn fail_spent(shared: &Shared, key: &str, deliveries: u64) {
    let reason = format!(
        "the work was delivered {deliveries} times without an outcome (workers died or stalled on it)"
    );
    let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
    loop {
        match shared.store.fail_work(key, &reason) {
            Ok(true) => {
                tracing::warn!(work = %key, "{reason}");
                notify(shared, key).await;
            }
            Ok(false) => {}
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(work = %key, error = %e, "cannot fail spent work yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => tracing::error!(work = %key, error = %e, "spent work left unfailed"),
        }
        return;
    }
}
