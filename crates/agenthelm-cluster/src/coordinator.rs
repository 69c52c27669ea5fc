//! The coordinator: an orchestrator's [`RemoteRuns`], so that it schedules and journals runs
//! here and sends every step and compensating action to the pool of its agent.
//!
//! A run is owned through a lease with an epoch: every journal write and every dispatch checks
//! the epoch in the same transaction, so a coordinator that lost its lease (it was stopped past
//! it and another took the run over) cannot write anything more for the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agenthelm::exec::StepContext;
use agenthelm::orchestrate::{
    RemoteOutcome, RemoteRun, RemoteRunner, RemoteRuns, StepWork, UndoWork,
};
use agenthelm::store::{
    Claim, Dispatched, FencedStore, Lease, PostgresStore, RunLease, StoreError, Work, WorkOutcome,
};
use agenthelm::{Event, EventKind};

use crate::error::ClusterError;
use crate::queue::{Notifications, WorkQueue};
use crate::settings::ClusterSettings;
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
        let shared = &self.shared;
        let run_id = self.lease.run_id.as_str();
        // Journal before acting: what led to the work (a decision just made) is on record.
        let _permit = ctx.sink().before_action().map_err(|e| e.source)?;
        // Listening before dispatching: a quick worker's wake-up is not missed.
        let mut done = match shared.queue.subscribe(&work::done_subject(run_id)).await {
            Ok(done) => Some(done),
            Err(e) => {
                tracing::warn!(error = %e, "no wake-ups from workers: polling the store");
                None
            }
        };
        let payload = serde_json::to_value(&job)
            .map_err(|e| StoreError::Backend(format!("work `{key}` cannot be written: {e}")))?;
        let record = Work {
            key: key.to_owned(),
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
            pool: pool.to_owned(),
            payload,
        };
        let outcome = match shared.store.dispatch_work(&self.lease, &record)? {
            Dispatched::Finished(outcome) => (outcome, false),
            Dispatched::New => {
                self.publish(pool, key).await;
                (self.wait(key, done.as_mut()).await?, true)
            }
            Dispatched::Pending => (self.wait(key, done.as_mut()).await?, false),
        };
        // Events the run's state has not seen: a resumed run loaded some already.
        let events = self.journal.fresh_work_events(key)?;
        charge_budget(ctx, &events);
        ctx.sink().adopt(events);
        Ok(outcome)
    }

    /// Publishes work recorded as dispatched; when NATS is away the reconciler publishes it
    /// later (the store says it is not published yet).
    async fn publish(&self, pool: &str, key: &str) {
        let shared = &self.shared;
        match shared.queue.publish(pool, key, key.as_bytes()).await {
            Ok(()) => {
                if let Err(e) = shared.store.mark_published(key) {
                    tracing::warn!(work = key, error = %e, "published work not marked so: it may be published again (harmless)");
                }
            }
            Err(e) => {
                tracing::warn!(work = key, error = %e, "work not published yet: the reconciler will")
            }
        }
    }

    /// Waits until the work has an outcome in the store: woken by a worker's notice, and
    /// looking every `poll` in any case.
    async fn wait(
        &self,
        key: &str,
        mut done: Option<&mut Notifications>,
    ) -> Result<WorkOutcome, StoreError> {
        let poll = self.shared.settings.poll;
        loop {
            if self.lost.load(Ordering::Acquire) {
                return Err(StoreError::Fenced {
                    run_id: self.lease.run_id.clone(),
                    epoch: self.lease.epoch,
                });
            }
            match self.shared.store.work_outcome(key) {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => {}
                // The store is away: the run waits for it (nothing is decided meanwhile).
                Err(e) => {
                    tracing::warn!(work = key, error = %e, "cannot read the work's outcome yet")
                }
            }
            wake_or_poll(done.as_deref_mut(), key, poll).await;
        }
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

/// Returns when a notice names `key`, or after `poll`.
async fn wake_or_poll(done: Option<&mut Notifications>, key: &str, poll: Duration) {
    let Some(done) = done else {
        tokio::time::sleep(poll).await;
        return;
    };
    let _ = tokio::time::timeout(poll, async {
        while let Some(notice) = done.next().await {
            if notice == key.as_bytes() {
                return;
            }
        }
        // The subscription ended (NATS went away): poll from here on.
        std::future::pending::<()>().await;
    })
    .await;
}
