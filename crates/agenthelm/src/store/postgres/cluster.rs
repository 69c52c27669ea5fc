//! The cluster's side of the PostgreSQL store (DESIGN.md §10): run leases that fence a
//! coordinator's writes, and work (one step carried to a worker pool) whose attempts are
//! numbered, so that a late worker of an earlier attempt cannot write over a later one.
//!
//! Lease and work times are the database's clock, not the caller's: coordinators and workers on
//! hosts whose clocks disagree still agree on when a lease ran out.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, Row};

use super::{
    col, end_run, event_rows, insert_events, insert_run, io, update_plan, EventRow, PostgresStore,
    RunEnd,
};
use crate::plan::Plan;
use crate::store::{Claim, EventFilter, Owner, RunStore, RunSummary, StoreError, StoredRun};
use crate::trace::Event;

/// The database's clock in milliseconds since the Unix epoch, as SQL.
macro_rules! db_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// A coordinator's hold on a run: every write it makes through
/// [`fenced`](PostgresStore::fenced) checks the epoch in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLease {
    /// The run.
    pub run_id: String,
    /// Who holds it (a coordinator's name, unique among live coordinators).
    pub holder: String,
    /// Grows by one at each takeover: a write under an older epoch is refused.
    pub epoch: i64,
}

/// One step carried to a worker pool, known by its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// The idempotency key: the same work dispatched again is the same row.
    pub key: String,
    /// The run it belongs to.
    pub run_id: String,
    /// The plan step it carries out.
    pub step_id: String,
    /// The worker pool that runs it.
    pub pool: String,
    /// What the worker needs to run it.
    pub payload: serde_json::Value,
}

/// How a work ended, as its attempt reported it (or as the reconciler gave it up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkOutcome {
    /// Whether it succeeded.
    pub success: bool,
    /// What it produced (`null` when it failed).
    pub value: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
    /// The attempt that ended it (0 when it never started).
    pub attempt: i64,
}

impl WorkOutcome {
    /// A success of `attempt` that produced `value`.
    pub fn succeeded(value: serde_json::Value, attempt: i64) -> Self {
        WorkOutcome {
            success: true,
            value,
            error: None,
            attempt,
        }
    }

    /// A failure of `attempt` for `reason`.
    pub fn failed(reason: impl Into<String>, attempt: i64) -> Self {
        WorkOutcome {
            success: false,
            value: serde_json::Value::Null,
            error: Some(reason.into()),
            attempt,
        }
    }
}

/// What [`dispatch_work`](PostgresStore::dispatch_work) found.
#[derive(Debug, Clone, PartialEq)]
pub enum Dispatched {
    /// The work is new: recorded, to be published.
    New,
    /// The key was dispatched already and has not finished.
    Pending,
    /// The key was dispatched already and finished so.
    Finished(WorkOutcome),
}

/// What [`start_attempt`](PostgresStore::start_attempt) found.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptStart {
    /// Run it: this is attempt `attempt` (from 1); `earlier` attempts were started before.
    Run {
        /// This attempt's number: the one its journal and its finish must name.
        attempt: i64,
        /// The work to run.
        work: Work,
        /// How many attempts were started before this one (superseded now).
        earlier: i64,
    },
    /// It finished already: nothing to run.
    Finished(WorkOutcome),
    /// No work has that key.
    Unknown,
}

impl PostgresStore {
    /// Takes run `run_id`'s lease for `holder` for `ttl`: a new lease at epoch 1, or a lease
    /// that ran out at its epoch + 1. Refused with [`StoreError::Leased`] while another lease
    /// is live (even one of the same holder: a second lease would fence the first).
    pub fn lease_run(
        &self,
        run_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<RunLease, StoreError> {
        let (id, who, ttl_ms) = (run_id.to_owned(), holder.to_owned(), millis(ttl));
        let epoch = self.call(move |db, shown| async move {
            let e = |e: tokio_postgres::Error| io(&shown, e);
            // One statement checks and takes: a concurrent claimant waits on the row (or on the
            // key being inserted) and then sees the winner's lease, which is live.
            let taken = db
                .query_opt(
                    concat!(
                        "INSERT INTO agenthelm_leases AS l (run_id, holder, epoch, expires_ms)
                         VALUES ($1, $2, 1, ",
                        db_now_ms!(),
                        " + $3)
                         ON CONFLICT (run_id) DO UPDATE
                           SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
                               expires_ms = EXCLUDED.expires_ms
                           WHERE l.expires_ms < ",
                        db_now_ms!(),
                        " RETURNING epoch"
                    ),
                    &[&id, &who, &ttl_ms],
                )
                .await
                .map_err(e)?;
            if let Some(row) = taken {
                return col::<i64>(&shown, &row, 0);
            }
            let held = db
                .query_one(
                    "SELECT holder, expires_ms FROM agenthelm_leases WHERE run_id = $1",
                    &[&id],
                )
                .await
                .map_err(e)?;
            Err(StoreError::Leased {
                run_id: id.clone(),
                holder: col(&shown, &held, 0)?,
                expires_ms: col(&shown, &held, 1)?,
            })
        })?;
        Ok(RunLease {
            run_id: run_id.to_owned(),
            holder: holder.to_owned(),
            epoch,
        })
    }

    /// Extends `lease` to `ttl` from now. [`StoreError::Fenced`] when another coordinator took
    /// the run over (a lease that ran out but was not taken is renewed).
    pub fn renew_lease(&self, lease: &RunLease, ttl: Duration) -> Result<(), StoreError> {
        let (id, epoch, ttl_ms) = (lease.run_id.clone(), lease.epoch, millis(ttl));
        let renewed = self.call(move |db, shown| async move {
            db.execute(
                concat!(
                    "UPDATE agenthelm_leases SET expires_ms = ",
                    db_now_ms!(),
                    " + $3 WHERE run_id = $1 AND epoch = $2"
                ),
                &[&id, &epoch, &ttl_ms],
            )
            .await
            .map_err(|e| io(&shown, e))
        })?;
        match renewed {
            0 => Err(fenced_error(lease)),
            _ => Ok(()),
        }
    }

    /// Lets `lease` run out now, so another coordinator may take the run at once. Nothing
    /// happens when it is no longer ours.
    pub fn release_lease(&self, lease: &RunLease) -> Result<(), StoreError> {
        let (id, epoch) = (lease.run_id.clone(), lease.epoch);
        self.call(move |db, shown| async move {
            db.execute(
                "UPDATE agenthelm_leases SET expires_ms = 0 WHERE run_id = $1 AND epoch = $2",
                &[&id, &epoch],
            )
            .await
            .map_err(|e| io(&shown, e))?;
            Ok(())
        })
    }

    /// Unfinished runs that a coordinator may take over, oldest first, at most `limit`: those
    /// whose lease ran out, and those that have work but were never leased.
    pub fn orphaned_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |db, shown| async move {
            let rows = db
                .query(
                    concat!(
                        "SELECT r.run_id FROM agenthelm_runs r
                         LEFT JOIN agenthelm_leases l ON l.run_id = r.run_id
                         WHERE r.finished_ms IS NULL AND (
                           (l.run_id IS NOT NULL AND l.expires_ms < ",
                        db_now_ms!(),
                        ") OR (l.run_id IS NULL AND EXISTS
                             (SELECT 1 FROM agenthelm_work w WHERE w.run_id = r.run_id)))
                         ORDER BY r.started_ms, r.run_id LIMIT $1"
                    ),
                    &[&limit],
                )
                .await
                .map_err(|e| io(&shown, e))?;
            rows.iter().map(|r| col(&shown, r, 0)).collect()
        })
    }

    /// This store as seen by the holder of `lease`: its writes are made only while the lease's
    /// epoch is still the run's (see [`FencedStore`]).
    pub fn fenced(&self, lease: RunLease) -> FencedStore {
        FencedStore {
            store: self.share(),
            lease,
            seen: Arc::default(),
        }
    }

    /// Records `work` as dispatched (not yet published) under `lease`. When its key was
    /// dispatched before, changes nothing and says what is there. [`StoreError::Fenced`] when
    /// the lease is no longer the run's.
    pub fn dispatch_work(&self, lease: &RunLease, work: &Work) -> Result<Dispatched, StoreError> {
        let mut dispatched = self.dispatch_works(lease, std::slice::from_ref(work))?;
        dispatched
            .pop()
            .ok_or_else(|| StoreError::UnknownWork(work.key.clone()))
    }

    /// Records every one of `works` as [`dispatch_work`](Self::dispatch_work) does, in one
    /// transaction (one commit for work dispatched at the same time); the answers are in
    /// `works`' order. Nothing is recorded when the lease is no longer the run's.
    pub fn dispatch_works(
        &self,
        lease: &RunLease,
        works: &[Work],
    ) -> Result<Vec<Dispatched>, StoreError> {
        let mut rows = Vec::with_capacity(works.len());
        for work in works {
            if work.run_id != lease.run_id {
                return Err(StoreError::Backend(format!(
                    "work `{}` belongs to run `{}`, not to run `{}` whose lease was given",
                    work.key, work.run_id, lease.run_id
                )));
            }
            let payload = serde_json::to_string(&work.payload).map_err(|e| io(&self.shown, e))?;
            rows.push((work.clone(), payload));
        }
        let lease = lease.clone();
        self.call(move |db, shown| async move {
            hold_epoch(&db, &shown, &lease).await?;
            let mut answers = Vec::with_capacity(rows.len());
            for (work, payload) in &rows {
                answers.push(dispatch_in(&db, &shown, work, payload).await?);
            }
            Ok(answers)
        })
    }

    /// Notes that work `key` was published to its pool, so the reconciler leaves it alone.
    pub fn mark_published(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.call(move |db, shown| async move {
            let changed = db
                .execute(
                    "UPDATE agenthelm_work SET published = TRUE WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(|e| io(&shown, e))?;
            match changed {
                0 => Err(StoreError::UnknownWork(key)),
                _ => Ok(()),
            }
        })
    }

    /// Notes that every work of `keys` was published (see
    /// [`mark_published`](Self::mark_published)), in one transaction; keys of no work are
    /// passed over.
    pub fn mark_all_published(&self, keys: &[String]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        self.call(move |db, shown| async move {
            db.execute(
                "UPDATE agenthelm_work SET published = TRUE WHERE key = ANY($1) AND NOT published",
                &[&keys],
            )
            .await
            .map_err(|e| io(&shown, e))?;
            Ok(())
        })
    }

    /// Work dispatched longer than `older_than` ago and still not published (its dispatcher
    /// died between commit and publish), oldest first, at most `limit`: for the reconciler.
    pub fn unpublished_work(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<Vec<Work>, StoreError> {
        let (age_ms, limit) = (millis(older_than), limit.min(i64::MAX as usize) as i64);
        self.call(move |db, shown| async move {
            let rows = db
                .query(
                    concat!(
                        "SELECT key, run_id, step_id, pool, payload FROM agenthelm_work
                         WHERE state = 'dispatched' AND NOT published AND dispatched_ms < ",
                        db_now_ms!(),
                        " - $1 ORDER BY dispatched_ms, key LIMIT $2"
                    ),
                    &[&age_ms, &limit],
                )
                .await
                .map_err(|e| io(&shown, e))?;
            rows.iter().map(|r| work_from(&shown, r, 0)).collect()
        })
    }

    /// Starts the next attempt of work `key` for `worker`, superseding any earlier one (whose
    /// journal and finish are refused from now on). Nothing starts when it finished already or
    /// there is no such work.
    pub fn start_attempt(&self, key: &str, worker: &str) -> Result<AttemptStart, StoreError> {
        let mut started = self.start_attempts(std::slice::from_ref(&key.to_owned()), worker)?;
        started
            .pop()
            .ok_or_else(|| StoreError::UnknownWork(key.to_owned()))
    }

    /// Starts an attempt of every work of `keys` as [`start_attempt`](Self::start_attempt)
    /// does, in one transaction (one commit for work delivered at the same time); the answers
    /// are in `keys`' order.
    pub fn start_attempts(
        &self,
        keys: &[String],
        worker: &str,
    ) -> Result<Vec<AttemptStart>, StoreError> {
        let (keys, worker) = (keys.to_vec(), worker.to_owned());
        self.call(move |db, shown| async move {
            let mut answers = Vec::with_capacity(keys.len());
            for &i in &in_key_order(&keys, |key| key) {
                answers.push((i, start_in(&db, &shown, &keys[i], &worker).await?));
            }
            Ok(in_given_order(answers))
        })
    }

    /// The journal of attempt `attempt` of work `key`: its events are written only while that
    /// attempt is the work's running one (see [`AttemptJournal`]).
    pub fn attempt_journal(&self, key: &str, attempt: i64) -> AttemptJournal {
        AttemptJournal {
            store: self.share(),
            key: key.to_owned(),
            attempt,
        }
    }

    /// Records how attempt `attempt` of work `key` ended; the first writer wins.
    /// [`StoreError::Superseded`] when a later attempt took the work over or it finished
    /// otherwise; `Ok` when exactly this outcome is there already (a retry after a lost answer
    /// to the commit). `outcome.attempt` must be `attempt`.
    pub fn finish_attempt(
        &self,
        key: &str,
        attempt: i64,
        outcome: &WorkOutcome,
    ) -> Result<(), StoreError> {
        let finish = (key.to_owned(), attempt, outcome.clone());
        let mut answers = self.finish_attempts(std::slice::from_ref(&finish))?;
        answers
            .pop()
            .ok_or_else(|| StoreError::UnknownWork(key.to_owned()))?
    }

    /// Records how each attempt of `finished` (work key, attempt, outcome) ended, as
    /// [`finish_attempt`](Self::finish_attempt) does, in one transaction (one commit for
    /// attempts that end at the same time); each answer, in `finished`' order, is that
    /// attempt's own. `Err` as a whole when the transaction failed: then none is recorded.
    pub fn finish_attempts(
        &self,
        finished: &[(String, i64, WorkOutcome)],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut rows = Vec::with_capacity(finished.len());
        for (key, attempt, outcome) in finished {
            if outcome.attempt != *attempt {
                return Err(StoreError::Backend(format!(
                    "the outcome of work `{key}` names attempt {}, not attempt {attempt} that finishes",
                    outcome.attempt
                )));
            }
            let text = serde_json::to_string(outcome).map_err(|e| io(&self.shown, e))?;
            rows.push((key.clone(), *attempt, outcome.clone(), text));
        }
        self.call(move |db, shown| async move {
            let mut answers = Vec::with_capacity(rows.len());
            for &i in &in_key_order(&rows, |row| &row.0) {
                let (key, attempt, outcome, text) = &rows[i];
                let answer = finish_in(&db, &shown, key.clone(), *attempt, outcome, text).await?;
                answers.push((i, answer));
            }
            Ok(in_given_order(answers))
        })
    }

    /// Gives work `key` up as failed for `reason` (say its deliveries ran out), unless it
    /// finished already. `true` when it did; `false` when it had finished or there is no such
    /// work.
    pub fn fail_work(&self, key: &str, reason: &str) -> Result<bool, StoreError> {
        let (key, reason) = (key.to_owned(), reason.to_owned());
        self.call(move |db, shown| async move {
            let e = |e: tokio_postgres::Error| io(&shown, e);
            let row = db
                .query_opt(
                    "SELECT attempt FROM agenthelm_work
                     WHERE key = $1 AND state IN ('dispatched', 'running') FOR UPDATE",
                    &[&key],
                )
                .await
                .map_err(e)?;
            let Some(row) = row else { return Ok(false) };
            let outcome = WorkOutcome::failed(reason, col(&shown, &row, 0)?);
            let text = serde_json::to_string(&outcome).map_err(|e| io(&shown, e))?;
            db.execute(
                concat!(
                    "UPDATE agenthelm_work SET state = 'failed', outcome = $2, updated_ms = ",
                    db_now_ms!(),
                    " WHERE key = $1"
                ),
                &[&key, &text],
            )
            .await
            .map_err(e)?;
            Ok(true)
        })
    }

    /// How work `key` ended; `None` while it has not (or when there is no such work).
    pub fn work_outcome(&self, key: &str) -> Result<Option<WorkOutcome>, StoreError> {
        let key = key.to_owned();
        self.call(move |db, shown| async move {
            Ok(finished_outcome(&db, &shown, &key).await?.flatten())
        })
    }

    /// The events that attempts of work `key` of run `run_id` wrote, in journal order.
    pub fn work_events(&self, run_id: &str, key: &str) -> Result<Vec<Event>, StoreError> {
        let (run_id, key) = (run_id.to_owned(), key.to_owned());
        self.call(move |db, shown| async move {
            let rows = db
                .query(
                    "SELECT body FROM agenthelm_events WHERE run_id = $1 AND work = $2 ORDER BY id",
                    &[&run_id, &key],
                )
                .await
                .map_err(|e| io(&shown, e))?;
            rows.iter()
                .map(|r| {
                    serde_json::from_str::<Event>(col(&shown, r, 0)?)
                        .map_err(|e| super::damaged(&shown, &run_id, e))
                })
                .collect()
        })
    }
}

/// A run store whose writes are made only while the holder's lease is still the run's: each
/// checks the lease's epoch in its own transaction, holding the lease row (`FOR SHARE`) so a
/// takeover waits for it to commit. A write after a takeover is refused with
/// [`StoreError::Fenced`] and leaves nothing behind. Reads are the store's.
///
/// It is the coordinator's view of the run, so it also hands out each event a worker's attempt
/// journaled once ([`fresh_work_events`](Self::fresh_work_events)): the run state takes in what
/// [`load_run`](RunStore::load_run) did not already give it, and nothing twice.
pub struct FencedStore {
    store: PostgresStore,
    lease: RunLease,
    /// Ids of the events of workers' attempts handed out so far (clones share them).
    seen: Arc<Mutex<HashSet<i64>>>,
}

impl Clone for FencedStore {
    fn clone(&self) -> Self {
        FencedStore {
            store: self.store.share(),
            lease: self.lease.clone(),
            seen: Arc::clone(&self.seen),
        }
    }
}

impl std::fmt::Debug for FencedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedStore")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .finish()
    }
}

impl FencedStore {
    /// The lease its writes are made under.
    pub fn lease(&self) -> &RunLease {
        &self.lease
    }

    /// The events that attempts of work `key` journaled and that this store has not handed out
    /// yet, neither in a [`load_run`](RunStore::load_run) nor in an earlier call; in journal
    /// order.
    pub fn fresh_work_events(&self, key: &str) -> Result<Vec<Event>, StoreError> {
        let (run_id, key) = (self.lease.run_id.clone(), key.to_owned());
        let events = self.store.call(move |db, shown| async move {
            attempt_events(&db, &shown, &run_id, &key).await
        })?;
        Ok(self.unseen(events))
    }

    /// How work `key` ended and the events of its attempts not handed out yet (as
    /// [`fresh_work_events`](Self::fresh_work_events) gives them), read in one transaction;
    /// `None` while it has not ended (or when there is no such work).
    pub fn finished_work(
        &self,
        key: &str,
    ) -> Result<Option<(WorkOutcome, Vec<Event>)>, StoreError> {
        let (run_id, key) = (self.lease.run_id.clone(), key.to_owned());
        let finished = self.store.call(move |db, shown| async move {
            let Some(Some(outcome)) = finished_outcome(&db, &shown, &key).await? else {
                return Ok(None);
            };
            let events = attempt_events(&db, &shown, &run_id, &key).await?;
            Ok(Some((outcome, events)))
        })?;
        Ok(finished.map(|(outcome, events)| (outcome, self.unseen(events))))
    }

    /// Those of `events` (with their ids) not handed out yet, now marked handed out.
    fn unseen(&self, events: Vec<(i64, Event)>) -> Vec<Event> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .into_iter()
            .filter(|(id, _)| seen.insert(*id))
            .map(|(_, event)| event)
            .collect()
    }

    /// Runs `write` in a transaction that first checks and holds the lease.
    fn write<F, Fut>(&self, write: F) -> Result<(), StoreError>
    where
        F: FnOnce(Arc<Client>, PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let lease = self.lease.clone();
        self.store.call(move |db, shown| async move {
            hold_epoch(&db, &shown, &lease).await?;
            write(db, shown).await
        })
    }

    /// Refuses a write about another run than the lease's: it would go unfenced.
    fn own_run(&self, run_id: Option<&str>) -> Result<(), StoreError> {
        match run_id {
            Some(other) if other != self.lease.run_id => Err(StoreError::Backend(format!(
                "a store fenced by the lease on run `{}` cannot write to run `{other}`",
                self.lease.run_id
            ))),
            _ => Ok(()),
        }
    }
}

impl RunStore for FencedStore {
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        self.own_run(Some(run_id))?;
        let columns = self.store.plan_columns(run_id, plan)?;
        self.write(move |db, shown| async move { insert_run(&db, &shown, columns).await })
    }

    fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.append_batch(std::slice::from_ref(event))
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), StoreError> {
        events
            .iter()
            .try_for_each(|event| self.own_run(event.run_id.as_deref()))?;
        let rows = event_rows(&self.store.shown, events)?;
        self.write(move |db, shown| async move { insert_events(&db, &shown, &rows, None).await })
    }

    fn revise_plan(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        self.own_run(Some(run_id))?;
        let columns = self.store.plan_columns(run_id, plan)?;
        self.write(move |db, shown| async move { update_plan(&db, &shown, columns).await })
    }

    fn finish_run(
        &self,
        run_id: &str,
        success: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.own_run(Some(run_id))?;
        let end = RunEnd::new(run_id, success, error);
        self.write(move |db, shown| async move { end_run(&db, &shown, end).await })
    }

    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        let run_id = run_id.to_owned();
        let (run, by_work) = self
            .store
            .call(move |db, shown| async move { super::load_run_in(&db, &shown, run_id).await })?;
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(by_work);
        Ok(run)
    }

    fn load_run_outline(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        self.store.load_run_outline(run_id)
    }

    fn prune(&self, before_ms: u64, keep_failed: bool) -> Result<Vec<String>, StoreError> {
        self.store.prune(before_ms, keep_failed)
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.store.list_runs(limit)
    }

    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        self.store.query(filter)
    }

    /// The lease is the claim: a coordinator stopped past its lease (alive, so its process
    /// claim would hold) must not keep the run from the coordinator that took it over.
    fn claim_run(&self, _run_id: &str, _owner: &Owner) -> Result<Claim, StoreError> {
        Ok(Claim::unguarded())
    }
}

/// The journal of one attempt of a work, for the worker that runs it: its events are written
/// (marked with the work's key) only while this attempt is the work's running one, checked in
/// the same transaction with the work's row locked, so a later attempt's start waits for it.
/// Once a later attempt started or the work finished, appends are refused with
/// [`StoreError::Superseded`]. It only appends: beginning, finishing or replanning runs is the
/// coordinator's. Reads are the store's.
pub struct AttemptJournal {
    store: PostgresStore,
    key: String,
    attempt: i64,
}

impl Clone for AttemptJournal {
    fn clone(&self) -> Self {
        AttemptJournal {
            store: self.store.share(),
            key: self.key.clone(),
            attempt: self.attempt,
        }
    }
}

impl std::fmt::Debug for AttemptJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptJournal")
            .field("store", &self.store)
            .field("key", &self.key)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl AttemptJournal {
    /// The work's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The attempt it writes for.
    pub fn attempt(&self) -> i64 {
        self.attempt
    }

    fn only_appends(&self, what: &str) -> StoreError {
        StoreError::Backend(format!(
            "the journal of attempt {} of work `{}` only appends events; it cannot {what}",
            self.attempt, self.key
        ))
    }
}

impl RunStore for AttemptJournal {
    fn begin_run(&self, _run_id: &str, _plan: &Plan) -> Result<(), StoreError> {
        Err(self.only_appends("begin a run"))
    }

    fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.append_batch(std::slice::from_ref(event))
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), StoreError> {
        let rows = event_rows(&self.store.shown, events)?;
        let (key, attempt) = (self.key.clone(), self.attempt);
        self.store.call(move |db, shown| async move {
            let run_id = hold_attempt(&db, &shown, &key, attempt).await?;
            same_run(&rows, &run_id, &key)?;
            insert_events(&db, &shown, &rows, Some(&key)).await
        })
    }

    fn revise_plan(&self, _run_id: &str, _plan: &Plan) -> Result<(), StoreError> {
        Err(self.only_appends("change a run's plan"))
    }

    fn finish_run(
        &self,
        _run_id: &str,
        _success: bool,
        _error: Option<&str>,
    ) -> Result<(), StoreError> {
        Err(self.only_appends("finish a run"))
    }

    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        self.store.load_run(run_id)
    }

    fn load_run_outline(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        self.store.load_run_outline(run_id)
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        self.store.list_runs(limit)
    }

    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        self.store.query(filter)
    }
}

/// Holds the run's lease row for the rest of the transaction (a takeover waits for it) and
/// refuses when its epoch is no longer `lease`'s.
async fn hold_epoch(db: &Client, shown: &Path, lease: &RunLease) -> Result<(), StoreError> {
    let row = db
        .query_opt(
            "SELECT epoch FROM agenthelm_leases WHERE run_id = $1 FOR SHARE",
            &[&lease.run_id],
        )
        .await
        .map_err(|e| io(shown, e))?;
    let epoch = row.map(|r| col::<i64>(shown, &r, 0)).transpose()?;
    match epoch {
        Some(epoch) if epoch == lease.epoch => Ok(()),
        _ => Err(fenced_error(lease)),
    }
}

/// Locks work `key`'s row for the rest of the transaction and returns its run, while `attempt`
/// is its running attempt.
async fn hold_attempt(
    db: &Client,
    shown: &Path,
    key: &str,
    attempt: i64,
) -> Result<String, StoreError> {
    let row = db
        .query_opt(
            "SELECT run_id, attempt, state FROM agenthelm_work WHERE key = $1 FOR UPDATE",
            &[&key],
        )
        .await
        .map_err(|e| io(shown, e))?
        .ok_or_else(|| StoreError::UnknownWork(key.to_owned()))?;
    let (current, state): (i64, &str) = (col(shown, &row, 1)?, col(shown, &row, 2)?);
    if current != attempt || state != "running" {
        return Err(StoreError::Superseded {
            key: key.to_owned(),
            attempt,
        });
    }
    col(shown, &row, 0)
}

/// Refuses events of another run than the work's.
fn same_run(rows: &[EventRow], run_id: &str, key: &str) -> Result<(), StoreError> {
    match rows
        .iter()
        .filter_map(|r| r.run_id.as_deref())
        .find(|r| *r != run_id)
    {
        Some(other) => Err(StoreError::Backend(format!(
            "work `{key}` belongs to run `{run_id}`; its journal cannot write to run `{other}`"
        ))),
        None => Ok(()),
    }
}

/// Records one work under a lease the transaction holds (see
/// [`PostgresStore::dispatch_work`]).
async fn dispatch_in(
    db: &Client,
    shown: &Path,
    work: &Work,
    payload: &str,
) -> Result<Dispatched, StoreError> {
    let inserted = db
        .execute(
            concat!(
                "INSERT INTO agenthelm_work (key, run_id, step_id, pool, payload, state,
                   published, attempt, dispatched_ms, updated_ms)
                 VALUES ($1, $2, $3, $4, $5, 'dispatched', FALSE, 0, ",
                db_now_ms!(),
                ", ",
                db_now_ms!(),
                ") ON CONFLICT (key) DO NOTHING"
            ),
            &[&work.key, &work.run_id, &work.step_id, &work.pool, &payload],
        )
        .await
        .map_err(|e| io(shown, e))?;
    if inserted == 1 {
        return Ok(Dispatched::New);
    }
    match finished_outcome(db, shown, &work.key).await? {
        Some(Some(outcome)) => Ok(Dispatched::Finished(outcome)),
        Some(None) => Ok(Dispatched::Pending),
        None => Err(StoreError::UnknownWork(work.key.clone())),
    }
}

/// The positions of `items` in the order of their work keys: transactions that lock several
/// work rows lock them in one order, so two of them cannot deadlock.
fn in_key_order<T>(items: &[T], key: impl Fn(&T) -> &String) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| key(&items[a]).cmp(key(&items[b])));
    order
}

/// Answers tagged with their positions, back in position order.
fn in_given_order<T>(mut answers: Vec<(usize, T)>) -> Vec<T> {
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// Starts the next attempt of work `key` (see [`PostgresStore::start_attempt`]).
async fn start_in(
    db: &Client,
    shown: &Path,
    key: &str,
    worker: &str,
) -> Result<AttemptStart, StoreError> {
    let started = db
        .query_opt(
            concat!(
                "UPDATE agenthelm_work SET attempt = attempt + 1, state = 'running',
                   worker = $2, published = TRUE, updated_ms = ",
                db_now_ms!(),
                " WHERE key = $1 AND state IN ('dispatched', 'running')
                 RETURNING attempt, key, run_id, step_id, pool, payload"
            ),
            &[&key, &worker],
        )
        .await
        .map_err(|e| io(shown, e))?;
    if let Some(row) = started {
        let attempt: i64 = col(shown, &row, 0)?;
        return Ok(AttemptStart::Run {
            attempt,
            work: work_from(shown, &row, 1)?,
            earlier: attempt - 1,
        });
    }
    // Finished, or not there when the update looked (a row dispatched since is news to a
    // later call).
    Ok(match finished_outcome(db, shown, key).await? {
        Some(Some(outcome)) => AttemptStart::Finished(outcome),
        _ => AttemptStart::Unknown,
    })
}

/// Records how attempt `attempt` of work `key` ended (see [`PostgresStore::finish_attempt`]):
/// the outer `Err` fails the transaction, the inner one is this attempt's answer.
async fn finish_in(
    db: &Client,
    shown: &Path,
    key: String,
    attempt: i64,
    outcome: &WorkOutcome,
    text: &str,
) -> Result<Result<(), StoreError>, StoreError> {
    let finished = db
        .execute(
            concat!(
                "UPDATE agenthelm_work SET state = CASE WHEN $3 THEN 'done' ELSE 'failed' END,
                   outcome = $4, updated_ms = ",
                db_now_ms!(),
                " WHERE key = $1 AND attempt = $2 AND state = 'running'"
            ),
            &[&key, &attempt, &outcome.success, &text],
        )
        .await
        .map_err(|e| io(shown, e))?;
    if finished == 1 {
        return Ok(Ok(()));
    }
    Ok(match finished_outcome(db, shown, &key).await? {
        None => Err(StoreError::UnknownWork(key)),
        Some(Some(there)) if there == *outcome => Ok(()),
        Some(_) => Err(StoreError::Superseded { key, attempt }),
    })
}

/// The events attempts of work `key` of run `run_id` journaled, with their ids, in order.
async fn attempt_events(
    db: &Client,
    shown: &Path,
    run_id: &str,
    key: &str,
) -> Result<Vec<(i64, Event)>, StoreError> {
    let rows = db
        .query(
            "SELECT id, body FROM agenthelm_events WHERE run_id = $1 AND work = $2 ORDER BY id",
            &[&run_id, &key],
        )
        .await
        .map_err(|e| io(shown, e))?;
    rows.iter()
        .map(|r| {
            let event = serde_json::from_str::<Event>(col(shown, r, 1)?)
                .map_err(|e| super::damaged(shown, run_id, e))?;
            Ok((col::<i64>(shown, r, 0)?, event))
        })
        .collect()
}

/// Work `key`'s outcome: `None` when there is no such work, `Some(None)` while it has not
/// finished.
async fn finished_outcome(
    db: &Client,
    shown: &Path,
    key: &str,
) -> Result<Option<Option<WorkOutcome>>, StoreError> {
    let row = db
        .query_opt(
            "SELECT state, outcome FROM agenthelm_work WHERE key = $1",
            &[&key],
        )
        .await
        .map_err(|e| io(shown, e))?;
    let Some(row) = row else { return Ok(None) };
    let state: &str = col(shown, &row, 0)?;
    if !matches!(state, "done" | "failed") {
        return Ok(Some(None));
    }
    let text: Option<&str> = col(shown, &row, 1)?;
    let text = text.ok_or_else(|| damaged_work(shown, key, "it finished without an outcome"))?;
    serde_json::from_str(text)
        .map(|outcome| Some(Some(outcome)))
        .map_err(|e| damaged_work(shown, key, e))
}

/// A work from `key, run_id, step_id, pool, payload` starting at column `from`.
fn work_from(shown: &Path, row: &Row, from: usize) -> Result<Work, StoreError> {
    let key: String = col(shown, row, from)?;
    let payload: &str = col(shown, row, from + 4)?;
    let payload = serde_json::from_str(payload).map_err(|e| damaged_work(shown, &key, e))?;
    Ok(Work {
        run_id: col(shown, row, from + 1)?,
        step_id: col(shown, row, from + 2)?,
        pool: col(shown, row, from + 3)?,
        payload,
        key,
    })
}

fn fenced_error(lease: &RunLease) -> StoreError {
    StoreError::Fenced {
        run_id: lease.run_id.clone(),
        epoch: lease.epoch,
    }
}

fn damaged_work(shown: &Path, key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: shown.to_path_buf(),
        message: format!("work `{key}` has a record that cannot be read: {e}"),
    }
}

/// `duration` in whole milliseconds, as PostgreSQL's BIGINT holds it.
fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}
