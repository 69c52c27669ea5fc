//! The coordinator: an orchestrator's [`RemoteRuns`], so that it schedules and journals runs
//! here and sends every step and compensating action to the pool of its agent.
//!
//! A run is owned through a lease with an epoch: every journal write and every dispatch checks
//! the epoch in the same transaction, so a coordinator that lost its lease (it was stopped past
//! it and another took the run over) cannot write anything more for the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agenthelm::exec::StepContext;
use agenthelm::orchestrate::{
    RemoteOutcome, RemoteRun, RemoteRunner, RemoteRuns, StepWork, UndoWork,
};
use agenthelm::store::{
    Claim, Dispatched, FencedStore, Lease, PostgresStore, RunLease, StoreError, Work, WorkOutcome,
};
use agenthelm::{Event, EventKind};
use tokio::sync::OnceCell;

use crate::batch::Batcher;
use crate::error::ClusterError;
use crate::queue::WorkQueue;
use crate::settings::ClusterSettings;
use crate::wakeup::{Wakeup, Wakeups};
use crate::work::{self, Job};

/// How many times a step is sent again after its waiting calls were decided.
const MAX_ROUNDS: u32 = 20;

/// Runs plans on a cluster: this process schedules and journals, workers carry the steps out.
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
}

/// What every run of a coordinator uses.
struct Shared {
    store: Arc<PostgresStore>,
    queue: WorkQueue,
    settings: ClusterSettings,
    /// Who holds the leases: this process on this host.
    holder: String,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("holder", &self.shared.holder)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// A coordinator journaling to `store` and sending work through the NATS server of
    /// `settings`. Give it to an orchestrator with
    /// [`Orchestrator::remote_runs`](agenthelm::Orchestrator::remote_runs): every run that
    /// orchestrator executes or resumes is then leased, journaled and carried out through it.
    pub async fn connect(
        store: Arc<PostgresStore>,
        settings: ClusterSettings,
    ) -> Result<Self, ClusterError> {
        let queue = WorkQueue::connect(&settings.nats_url, settings.queue.clone()).await?;
        let owner = agenthelm::store::Owner::this_process();
        Ok(Coordinator {
            shared: Arc::new(Shared {
                store,
                queue,
                settings,
                holder: format!("coordinator {} on {}", owner.pid, owner.host),
            }),
        })
    }

    /// How long a lease lasts without renewal: a run whose coordinator stopped is taken over
    /// after this.
    pub fn lease(&self) -> std::time::Duration {
        self.shared.settings.lease
    }

    /// Unfinished runs whose coordinator stopped (their lease ran out): what a coordinator
    /// that watches for them takes over, oldest first.
    pub fn orphaned_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.shared.store.orphaned_runs(limit)
    }
}

impl RemoteRuns for Coordinator {
    /// Leases the run (refused while another coordinator's lease is live) and keeps the lease
    /// renewed while the run goes on.
    fn open(&self, run_id: &str) -> Result<RemoteRun, StoreError> {
        let shared = &self.shared;
        let lease = shared
            .store
            .lease_run(run_id, &shared.holder, shared.settings.lease)?;
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(keep_lease(
            Arc::clone(shared),
            lease.clone(),
            Arc::clone(&lost),
        ));
        let journal = shared.store.fenced(lease.clone());
        let runner = ClusterRunner {
            shared: Arc::clone(shared),
            lease: lease.clone(),
            journal: journal.clone(),
            lost: Arc::clone(&lost),
            desk: OnceCell::new(),
        };
        Ok(RemoteRun {
            journal: Arc::new(journal),
            runner: Arc::new(runner),
            claim: Claim::new(LeaseHold {
                shared: Arc::clone(shared),
                lease,
                lost,
                keeper,
            }),
        })
    }
}

/// A run's lease, held while the run goes on: released (unless lost) when the run ends.
struct LeaseHold {
    shared: Arc<Shared>,
    lease: RunLease,
    lost: Arc<AtomicBool>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lease for LeaseHold {
    /// The keeper renews the lease on its own clock; this only says whether it was lost.
    fn refresh(&self) -> Result<(), StoreError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(StoreError::Fenced {
                run_id: self.lease.run_id.clone(),
                epoch: self.lease.epoch,
            });
        }
        Ok(())
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.keeper.abort();
        if self.lost.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.shared.store.release_lease(&self.lease) {
            tracing::warn!(run = %self.lease.run_id, error = %e, "could not release the run's lease");
        }
    }
}

/// Renews the lease every third of its time; once it is lost, says so (the run's writes fail
/// the epoch check from then on anyway).
async fn keep_lease(shared: Arc<Shared>, lease: RunLease, lost: Arc<AtomicBool>) {
    let every = shared.settings.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match shared.store.renew_lease(&lease, shared.settings.lease) {
            Ok(()) => {}
            Err(e @ StoreError::Fenced { .. }) => {
                tracing::error!(run = %lease.run_id, error = %e, "lost the run: another coordinator took it over");
                lost.store(true, Ordering::Release);
                return;
            }
            // The store is away: the run's own writes fail and stop it; try again meanwhile.
            Err(e) => {
                tracing::warn!(run = %lease.run_id, error = %e, "could not renew the run's lease")
            }
        }
    }
}

/// Sends one run's work to the workers (the coordinator's side of [`RemoteRunner`]).
struct ClusterRunner {
    shared: Arc<Shared>,
    lease: RunLease,
    /// The run's journal, fenced by the lease; it also hands out workers' events once.
    journal: FencedStore,
    lost: Arc<AtomicBool>,
    /// How the run's work is sent and waited for: set up with its first work.
    desk: OnceCell<Desk>,
}

#[agenthelm::async_trait]
impl RemoteRunner for ClusterRunner {
    async fn run_step(&self, work: StepWork, ctx: &StepContext) -> RemoteOutcome {
        let pool = self
            .shared
            .settings
            .pool_of(work.agent.as_deref())
            .to_owned();
        let mut round = 1;
        loop {
            let key = work::step_key(&work.run_id, &work.step_id, round);
            let job = Job::Step(work.clone());
            let (outcome, fresh) = match self.carry_out(&key, &pool, &work.step_id, job, ctx).await
            {
                Ok(done) => done,
                Err(error) => return self.halt(ctx, error),
            };
            let outcome = work::to_step(&outcome);
            // A call waits for a decision. Parked in an earlier round: the decision may be on
            // record now. Parked in this one: this coordinator's handler (a terminal prompt)
            // may decide; a handler that defers (serve) leaves the run waiting for a person.
            let decided = outcome == RemoteOutcome::Parked
                && (!fresh || ctx.decide_waiting_calls().await > 0);
            if !decided {
                return outcome;
            }
            round += 1;
            if round > MAX_ROUNDS {
                // A worker that parks a call decided on record again and again: stop asking.
                return RemoteOutcome::Failed {
                    error: format!("its calls were decided {MAX_ROUNDS} times and it still waits for a decision"),
                };
            }
        }
    }

    async fn undo(&self, work: UndoWork, ctx: &StepContext) -> Option<Result<(), String>> {
        let pool = self
            .shared
            .settings
            .pool_of(work.agent.as_deref())
            .to_owned();
        let key = work::undo_key(&work.run_id, &work.step_id, work.action);
        let step_id = work.step_id.clone();
        match self
            .carry_out(&key, &pool, &step_id, Job::Undo(work), ctx)
            .await
        {
            Ok((outcome, _)) => Some(work::to_undo(&outcome)),
            Err(error) => {
                self.halt(ctx, error);
                None
            }
        }
    }
}

impl ClusterRunner {
    /// Records the work (fenced by the lease), publishes it, waits for its outcome and takes
    /// in the events its attempts journaled. The flag says whether the outcome is this call's
    /// (`true`) or was there already (work a previous coordinator sent).
    async fn carry_out(
        &self,
        key: &str,
        pool: &str,
        step_id: &str,
        job: Job,
        ctx: &StepContext,
    ) -> Result<(WorkOutcome, bool), StoreError> {
        let desk = self.desk().await;
        let run_id = self.lease.run_id.as_str();
        // Journal before acting: what led to the work (a decision just made) is on record.
        let _permit = ctx.sink().before_action().map_err(|e| e.source)?;
        // Listening before dispatching: a quick worker's wake-up is not missed.
        let wakeup = desk.wakeups.watch(key);
        let payload = serde_json::to_value(&job)
            .map_err(|e| StoreError::Backend(format!("work `{key}` cannot be written: {e}")))?;
        let record = Work {
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
            pool: pool.to_owned(),
            payload,
        };
        let ((outcome, events), ours) = match desk.dispatches.ask(record).await? {
            Dispatched::Finished(_) => (self.finished(key).await?, false),
            Dispatched::New => {
                self.publish(desk, pool, key).await;
                (self.wait(key, &wakeup).await?, true)
            }
            Dispatched::Pending => (self.wait(key, &wakeup).await?, false),
        };
        // Events the run's state has not seen: a resumed run loaded some already.
        charge_budget(ctx, &events);
        ctx.sink().adopt(events);
        Ok((outcome, ours))
    }

    /// The run's desk, set up on first use.
    async fn desk(&self) -> &Desk {
        self.desk
            .get_or_init(|| Desk::open(&self.shared, &self.lease))
            .await
    }

    /// Publishes work recorded as dispatched; when NATS is away the reconciler publishes it
    /// later (the store says it is not published yet).
    async fn publish(&self, desk: &Desk, pool: &str, key: &str) {
        match self.shared.queue.publish(pool, key, key.as_bytes()).await {
            // Noted with others, off the step's path: until then the reconciler may publish it
            // again, which the queue drops (same message id).
            Ok(()) => desk.published.tell(key.to_owned()),
            Err(e) => {
                tracing::warn!(work = key, error = %e, "work not published yet: the reconciler will")
            }
        }
    }

    /// Waits until the work has an outcome in the store: woken by a worker's notice, and
    /// looking every `poll` in any case. Gives the outcome and the events not taken in yet.
    async fn wait(
        &self,
        key: &str,
        wakeup: &Wakeup,
    ) -> Result<(WorkOutcome, Vec<Event>), StoreError> {
        let poll = self.shared.settings.poll;
        loop {
            if self.lost.load(Ordering::Acquire) {
                return Err(StoreError::Fenced {
                    run_id: self.lease.run_id.clone(),
                    epoch: self.lease.epoch,
                });
            }
            // The work was not finished when it was dispatched: its notice (or the poll) comes
            // first.
            wakeup.within(poll).await;
            match self.read_finished(key).await {
                Ok(Some(finished)) => return Ok(finished),
                Ok(None) => {}
                // The store is away: the run waits for it (nothing is decided meanwhile).
                Err(e) => {
                    tracing::warn!(work = key, error = %e, "cannot read the work's outcome yet")
                }
            }
        }
    }

    /// The outcome of work that finished, and its events not taken in yet.
    async fn finished(&self, key: &str) -> Result<(WorkOutcome, Vec<Event>), StoreError> {
        self.read_finished(key)
            .await?
            .ok_or_else(|| StoreError::UnknownWork(key.to_owned()))
    }

    /// Work `key`'s outcome and fresh events, once it finished; read off the runtime's threads.
    async fn read_finished(
        &self,
        key: &str,
    ) -> Result<Option<(WorkOutcome, Vec<Event>)>, StoreError> {
        let (journal, key) = (self.journal.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || journal.finished_work(&key))
            .await
            .map_err(|e| StoreError::Backend(format!("reading a work's outcome stopped: {e}")))?
    }

    /// Stops the run's journal: this coordinator may not (or cannot) go on with it.
    fn halt(&self, ctx: &StepContext, error: StoreError) -> RemoteOutcome {
        let message = error.to_string();
        ctx.sink().halt(error);
        RemoteOutcome::Failed { error: message }
    }
}

/// Counts the model calls a worker made against the run's budget, so a spent budget stops the
/// run as it would here.
fn charge_budget(ctx: &StepContext, events: &[Event]) {
    let Some(budget) = ctx.budget() else {
        return;
    };
    for event in events {
        if let EventKind::LlmCall {
            usage, cost_usd, ..
        } = &event.kind
        {
            budget.record(*usage, *cost_usd);
        }
    }
}

/// How one run's work goes out and its outcomes come back: dispatches of steps started at the
/// same time share a commit (fenced by the lease like every dispatch), published work is noted
/// in batches, and one subscription wakes every waiting step.
struct Desk {
    dispatches: Batcher<Work, Dispatched>,
    published: Batcher<String, ()>,
    wakeups: Wakeups,
}

impl Desk {
    async fn open(shared: &Arc<Shared>, lease: &RunLease) -> Desk {
        let (store, fence) = (Arc::clone(&shared.store), lease.clone());
        let dispatches = Batcher::start(move |works: Vec<Work>| {
            let dispatched = store.dispatch_works(&fence, &works)?;
            Ok(dispatched.into_iter().map(Ok).collect())
        });
        let store = Arc::clone(&shared.store);
        let published = Batcher::start(move |keys: Vec<String>| {
            if let Err(e) = store.mark_all_published(&keys) {
                tracing::warn!(error = %e, "published work not marked so: it may be published again (harmless)");
            }
            Ok(keys.iter().map(|_| Ok(())).collect())
        });
        Desk {
            dispatches,
            published,
            wakeups: Wakeups::listen(&shared.queue, &lease.run_id).await,
        }
    }
}
