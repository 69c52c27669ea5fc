//! The PostgreSQL run store: one database shared by several processes and hosts.
//!
//! [`RunStore`] is synchronous and is called from inside Tokio tasks, where a blocking client
//! that runs its own runtime would panic. So one thread of the store's own owns a
//! current-thread runtime and the connection; each method sends it a job and blocks on the
//! answer (as [`SqliteStore`](super::SqliteStore) blocks on its file). Jobs run one at a time,
//! each in its own transaction.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio_postgres::{Client, NoTls, Row};

mod cluster;

pub use cluster::{
    AttemptJournal, AttemptStart, Dispatched, FencedStore, RunLease, Work, WorkOutcome,
};

use super::claim::ClaimRecord;
use super::{Claim, EventFilter, Lease, Owner, RunStore, RunSummary, StoreError, StoredRun};
use crate::plan::Plan;
use crate::trace::{now_ms, Event};

/// Schema migrations, in order; `agenthelm_meta.schema_version` is how many have been applied.
/// 1: runs, events, claims. 2: the cluster's run leases and work, and which work wrote an event.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE agenthelm_runs (
        run_id      TEXT PRIMARY KEY,
        goal        TEXT NOT NULL,
        steps       BIGINT NOT NULL,
        plan        TEXT NOT NULL,
        started_ms  BIGINT NOT NULL,
        finished_ms BIGINT,
        success     BOOLEAN,
        error       TEXT
    );
    CREATE INDEX agenthelm_runs_by_start ON agenthelm_runs (started_ms DESC);
    CREATE TABLE agenthelm_events (
        id           BIGSERIAL PRIMARY KEY,
        run_id       TEXT,
        timestamp_ms BIGINT NOT NULL,
        kind         TEXT NOT NULL,
        step_id      TEXT,
        agent        TEXT,
        tool         TEXT,
        success      BOOLEAN,
        duration_ms  DOUBLE PRECISION,
        body         TEXT NOT NULL
    );
    CREATE INDEX agenthelm_events_by_run ON agenthelm_events (run_id, id);
    CREATE INDEX agenthelm_events_by_time ON agenthelm_events (timestamp_ms);
    CREATE TABLE agenthelm_claims (
        run_id       TEXT PRIMARY KEY,
        host         TEXT NOT NULL,
        pid          BIGINT NOT NULL,
        token        TEXT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    );
"#,
    r#"
    CREATE TABLE agenthelm_leases (
        run_id     TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        epoch      BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE TABLE agenthelm_work (
        key           TEXT PRIMARY KEY,
        run_id        TEXT NOT NULL,
        step_id       TEXT NOT NULL,
        pool          TEXT NOT NULL,
        payload       TEXT NOT NULL,
        state         TEXT NOT NULL
                      CHECK (state IN ('dispatched', 'running', 'done', 'failed')),
        published     BOOLEAN NOT NULL DEFAULT FALSE,
        attempt       BIGINT NOT NULL DEFAULT 0,
        worker        TEXT,
        outcome       TEXT,
        dispatched_ms BIGINT NOT NULL,
        updated_ms    BIGINT NOT NULL
    );
    CREATE INDEX agenthelm_work_by_state ON agenthelm_work (state, published, dispatched_ms);
    CREATE INDEX agenthelm_work_by_run ON agenthelm_work (run_id);
    ALTER TABLE agenthelm_events ADD COLUMN work TEXT;
    CREATE INDEX agenthelm_events_by_work ON agenthelm_events (work, id) WHERE work IS NOT NULL;
"#,
];

/// The advisory lock key that serializes migrations of one database ("AHLM").
const MIGRATION_LOCK: i64 = 0x4148_4C4D;

type Job = Box<dyn FnOnce(Result<Arc<Client>, StoreError>) -> BoxFuture + Send>;
type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A run store in a PostgreSQL database, shared by every process that opens the same URL.
///
/// An appended event is committed (with the server's `synchronous_commit`, on by default)
/// before `append` returns. A lost connection fails the write in progress with a clear error
/// (the run stops; nothing is retried behind its back, so nothing is written twice) and is made
/// again for the next call. Connections are made without TLS for now.
pub struct PostgresStore {
    /// The URL with its password masked: what errors name.
    shown: PathBuf,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or libpq's
    /// `key=value` form) and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let shown = PathBuf::from(mask_password(url));
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| io(&shown, e))?;
        let worker = Worker {
            url: url.to_owned(),
            shown: shown.clone(),
            client: None,
        };
        std::thread::Builder::new()
            .name("agenthelm-postgres".into())
            .spawn(move || runtime.block_on(worker.run(queue)))
            .map_err(|e| io(&shown, e))?;
        let store = PostgresStore { shown, jobs };
        store.migrate()?;
        Ok(store)
    }

    /// The database's URL, its password masked.
    pub fn url(&self) -> &Path {
        &self.shown
    }

    /// Another handle on the same connection thread, for the fenced and attempt views.
    fn share(&self) -> PostgresStore {
        PostgresStore {
            shown: self.shown.clone(),
            jobs: self.jobs.clone(),
        }
    }

    /// The columns a run's plan fills: run id, goal, number of steps and the plan as JSON.
    fn plan_columns(&self, run_id: &str, plan: &Plan) -> Result<PlanColumns, StoreError> {
        let body = serde_json::to_string(plan).map_err(|e| io(&self.shown, e))?;
        Ok((
            run_id.to_owned(),
            plan.goal.clone(),
            plan.steps.len() as i64,
            body,
        ))
    }

    /// Runs `job` in a transaction on the store's thread and waits for its answer.
    fn call<T, F, Fut>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>, PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        call(&self.jobs, &self.shown, job)
    }

    /// Checks the database is ours (or empty) and applies the missing migrations, under an
    /// advisory lock so that processes opening a fresh database at once migrate it once.
    fn migrate(&self) -> Result<(), StoreError> {
        self.call(|db, shown| async move {
            let e = |e: tokio_postgres::Error| io(&shown, e);
            db.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(e)?;
            let ours: bool = col(
                &shown,
                &db.query_one("SELECT to_regclass('agenthelm_meta') IS NOT NULL", &[])
                    .await
                    .map_err(e)?,
                0,
            )?;
            let version = if ours {
                let row = db
                    .query_opt(
                        "SELECT value FROM agenthelm_meta WHERE key = 'schema_version'",
                        &[],
                    )
                    .await
                    .map_err(e)?;
                let text: String = match &row {
                    Some(row) => col(&shown, row, 0)?,
                    None => String::new(),
                };
                text.parse::<i64>().map_err(|_| StoreError::Corrupt {
                    path: shown.clone(),
                    message: format!("its schema version `{text}` is not a number"),
                })?
            } else {
                let tables: i64 = col(
                    &shown,
                    &db.query_one(
                        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                        &[],
                    )
                    .await
                    .map_err(e)?,
                    0,
                )?;
                if tables > 0 {
                    return Err(StoreError::Corrupt {
                        path: shown.clone(),
                        message: "it is a PostgreSQL database of another program (it has tables and no `agenthelm_meta`)".into(),
                    });
                }
                db.batch_execute("CREATE TABLE agenthelm_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    .await
                    .map_err(e)?;
                0
            };
            let supported = MIGRATIONS.len() as i64;
            if version > supported {
                return Err(StoreError::TooNew {
                    path: shown.clone(),
                    found: version,
                    supported,
                });
            }
            for migration in &MIGRATIONS[version as usize..] {
                db.batch_execute(migration).await.map_err(e)?;
            }
            db.execute(
                "INSERT INTO agenthelm_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&supported.to_string()],
            )
            .await
            .map_err(e)?;
            Ok(())
        })
    }
}

/// Sends `job` to the store's thread and blocks until it has run (and its transaction ended).
fn call<T, F, Fut>(
    jobs: &tokio::sync::mpsc::UnboundedSender<Job>,
    shown: &Path,
    job: F,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(Arc<Client>, PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    let path = shown.to_path_buf();
    let wrapped: Job = Box::new(move |client| {
        Box::pin(async move {
            let result = match client {
                Ok(db) => in_transaction(db, path, job).await,
                Err(e) => Err(e),
            };
            let _ = reply.send(result);
        })
    });
    let gone = || {
        StoreError::Backend(format!(
            "run store {}: its thread has stopped",
            shown.display()
        ))
    };
    jobs.send(wrapped).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// Runs `job` between `BEGIN` and `COMMIT` (`ROLLBACK` when it fails). A `COMMIT` whose answer
/// is lost is reported as such: the write may or may not have been made.
async fn in_transaction<T, F, Fut>(db: Arc<Client>, shown: PathBuf, job: F) -> Result<T, StoreError>
where
    F: FnOnce(Arc<Client>, PathBuf) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    db.batch_execute("BEGIN").await.map_err(|e| io(&shown, e))?;
    match job(Arc::clone(&db), shown.clone()).await {
        Ok(value) => match db.batch_execute("COMMIT").await {
            Ok(()) => Ok(value),
            Err(e) if e.as_db_error().is_none() => Err(io(
                &shown,
                format!("the connection was lost while committing; the write may or may not have been made: {e}"),
            )),
            Err(e) => Err(io(&shown, e)),
        },
        Err(error) => {
            let _ = db.batch_execute("ROLLBACK").await;
            Err(error)
        }
    }
}

/// The store's thread: owns the connection, makes it again when it was lost, runs jobs in turn.
struct Worker {
    url: String,
    shown: PathBuf,
    client: Option<Arc<Client>>,
}

impl Worker {
    async fn run(mut self, mut queue: tokio::sync::mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = queue.recv().await {
            let client = self.client().await;
            job(client).await;
        }
    }

    async fn client(&mut self) -> Result<Arc<Client>, StoreError> {
        if let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(client));
        }
        self.client = None;
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|e| io(&self.shown, format!("cannot connect: {e}")))?;
        let shown = self.shown.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(store = %shown.display(), error = %e, "run store connection lost");
            }
        });
        let client = Arc::new(client);
        self.client = Some(Arc::clone(&client));
        Ok(client)
    }
}

impl RunStore for PostgresStore {
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        let columns = self.plan_columns(run_id, plan)?;
        self.call(move |db, shown| async move { insert_run(&db, &shown, columns).await })
    }

    fn append(&self, event: &Event) -> Result<(), StoreError> {
        self.append_batch(std::slice::from_ref(event))
    }

    fn append_batch(&self, events: &[Event]) -> Result<(), StoreError> {
        let rows = event_rows(&self.shown, events)?;
        self.call(move |db, shown| async move { insert_events(&db, &shown, &rows, None).await })
    }

    fn revise_plan(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        let columns = self.plan_columns(run_id, plan)?;
        self.call(move |db, shown| async move { update_plan(&db, &shown, columns).await })
    }

    fn finish_run(
        &self,
        run_id: &str,
        success: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let end = RunEnd::new(run_id, success, error);
        self.call(move |db, shown| async move { end_run(&db, &shown, end).await })
    }

    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        let run_id = run_id.to_owned();
        self.call(move |db, shown| async move { Ok(load_run_in(&db, &shown, run_id).await?.0) })
    }

    fn prune(&self, before_ms: u64, keep_failed: bool) -> Result<Vec<String>, StoreError> {
        self.call(move |db, shown| async move {
            let e = |e: tokio_postgres::Error| io(&shown, e);
            let rows = db
                .query(
                    "DELETE FROM agenthelm_runs WHERE finished_ms IS NOT NULL AND finished_ms < $1
                     AND (success OR NOT $2) RETURNING run_id",
                    &[&(before_ms.min(i64::MAX as u64) as i64), &keep_failed],
                )
                .await
                .map_err(e)?;
            let ids = rows
                .iter()
                .map(|r| col(&shown, r, 0))
                .collect::<Result<Vec<String>, _>>()?;
            for table in [
                "agenthelm_events",
                "agenthelm_claims",
                "agenthelm_work",
                "agenthelm_leases",
            ] {
                db.execute(
                    &format!("DELETE FROM {table} WHERE run_id = ANY($1)"),
                    &[&ids],
                )
                .await
                .map_err(e)?;
            }
            Ok(ids)
        })
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |db, shown| async move {
            let rows = db
                .query(
                    "SELECT run_id, goal, steps, started_ms, finished_ms, success, error
                     FROM agenthelm_runs ORDER BY started_ms DESC, run_id DESC LIMIT $1",
                    &[&limit],
                )
                .await
                .map_err(|e| io(&shown, e))?;
            rows.iter()
                .map(|r| summary_from(&shown, col(&shown, r, 0)?, r, 1))
                .collect()
        })
    }

    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let owned = filter.clone();
        self.call(move |db, shown| async move {
            // The indexed columns narrow the search; `matches` applies the whole filter.
            let rows = db
                .query(
                    "SELECT body FROM agenthelm_events
                     WHERE ($1::TEXT IS NULL OR run_id = $1) AND ($2::TEXT IS NULL OR tool = $2)
                       AND ($3::BIGINT IS NULL OR timestamp_ms >= $3)
                       AND ($4::BIGINT IS NULL OR timestamp_ms <= $4)
                     ORDER BY id",
                    &[
                        &owned.run_id,
                        &owned.tool,
                        &owned.since_ms.map(|t| t.min(i64::MAX as u64) as i64),
                        &owned.until_ms.map(|t| t.min(i64::MAX as u64) as i64),
                    ],
                )
                .await
                .map_err(|e| io(&shown, e))?;
            let mut events = Vec::new();
            for row in &rows {
                let event: Event = serde_json::from_str(col(&shown, row, 0)?)
                    .map_err(|e| damaged(&shown, "(query)", e))?;
                if owned.matches(&event) {
                    events.push(event);
                }
            }
            if let Some(limit) = owned.limit {
                let skip = events.len().saturating_sub(limit);
                events.drain(..skip);
            }
            Ok(events)
        })
    }

    fn claim_run(&self, run_id: &str, owner: &Owner) -> Result<Claim, StoreError> {
        let record = ClaimRecord::new(owner);
        let (id, taken) = (run_id.to_owned(), record.clone());
        self.call(move |db, shown| async move {
            let e = |e: tokio_postgres::Error| io(&shown, e);
            // A transaction-scoped lock on the run's id: no other claimant reads the row
            // between our check and our write, even when there is no row yet.
            db.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&id])
                .await
                .map_err(e)?;
            let held = db
                .query_opt(
                    "SELECT host, pid, token, heartbeat_ms FROM agenthelm_claims WHERE run_id = $1",
                    &[&id],
                )
                .await
                .map_err(e)?
                .map(|r| {
                    Ok::<_, StoreError>(ClaimRecord {
                        owner: Owner {
                            host: col(&shown, &r, 0)?,
                            pid: col::<i64>(&shown, &r, 1)? as u32,
                        },
                        token: col(&shown, &r, 2)?,
                        heartbeat_ms: col::<i64>(&shown, &r, 3)? as u64,
                    })
                })
                .transpose()?;
            ClaimRecord::may_take(held.as_ref(), &id)?;
            db.execute(
                "INSERT INTO agenthelm_claims (run_id, host, pid, token, heartbeat_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (run_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,
                   token = EXCLUDED.token, heartbeat_ms = EXCLUDED.heartbeat_ms",
                &[
                    &id,
                    &taken.owner.host,
                    &i64::from(taken.owner.pid),
                    &taken.token,
                    &(taken.heartbeat_ms as i64),
                ],
            )
            .await
            .map_err(e)?;
            Ok(())
        })?;
        Ok(Claim::new(PostgresLease {
            jobs: self.jobs.clone(),
            shown: self.shown.clone(),
            run_id: run_id.to_owned(),
            token: record.token,
        }))
    }
}

/// The columns a run's plan fills: run id, goal, number of steps and the plan as JSON.
type PlanColumns = (String, String, i64, String);

/// Records a new run; refused when its id is taken.
async fn insert_run(db: &Client, shown: &Path, columns: PlanColumns) -> Result<(), StoreError> {
    let (run_id, goal, steps, body) = columns;
    let inserted = db
        .execute(
            "INSERT INTO agenthelm_runs (run_id, goal, steps, plan, started_ms)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id) DO NOTHING",
            &[&run_id, &goal, &steps, &body, &(now_ms() as i64)],
        )
        .await
        .map_err(|e| io(shown, e))?;
    if inserted == 0 {
        return Err(StoreError::DuplicateRun(run_id));
    }
    Ok(())
}

/// Replaces a run's plan.
async fn update_plan(db: &Client, shown: &Path, columns: PlanColumns) -> Result<(), StoreError> {
    let (run_id, goal, steps, body) = columns;
    let changed = db
        .execute(
            "UPDATE agenthelm_runs SET plan = $2, goal = $3, steps = $4 WHERE run_id = $1",
            &[&run_id, &body, &goal, &steps],
        )
        .await
        .map_err(|e| io(shown, e))?;
    if changed == 0 {
        return Err(StoreError::UnknownRun(run_id));
    }
    Ok(())
}

/// How a run ended, ready to be written.
struct RunEnd {
    run_id: String,
    success: bool,
    error: Option<String>,
}

impl RunEnd {
    fn new(run_id: &str, success: bool, error: Option<&str>) -> Self {
        RunEnd {
            run_id: run_id.to_owned(),
            success,
            error: error.map(str::to_owned),
        }
    }
}

/// Records how a run ended.
async fn end_run(db: &Client, shown: &Path, end: RunEnd) -> Result<(), StoreError> {
    db.execute(
        "UPDATE agenthelm_runs SET finished_ms = $2, success = $3, error = $4 WHERE run_id = $1",
        &[&end.run_id, &(now_ms() as i64), &end.success, &end.error],
    )
    .await
    .map_err(|e| io(shown, e))?;
    Ok(())
}

/// The rows of `events`, built before they go to the store's thread.
fn event_rows(shown: &Path, events: &[Event]) -> Result<Vec<EventRow>, StoreError> {
    events
        .iter()
        .map(|event| {
            let kind = &event.kind;
            Ok(EventRow {
                run_id: event.run_id.as_deref().map(str::to_owned),
                timestamp_ms: event.timestamp_ms as i64,
                kind: kind.name().to_owned(),
                step_id: event.step_id.as_deref().map(str::to_owned),
                agent: event.agent.as_deref().map(str::to_owned),
                tool: kind.tool().map(str::to_owned),
                success: kind.succeeded(),
                duration_ms: kind.duration_ms(),
                body: serde_json::to_string(event).map_err(|e| io(shown, e))?,
            })
        })
        .collect()
}

/// Appends `rows` in order; `work` names the work whose attempt wrote them (none for the
/// coordinator's own events).
async fn insert_events(
    db: &Client,
    shown: &Path,
    rows: &[EventRow],
    work: Option<&str>,
) -> Result<(), StoreError> {
    let insert = db
        .prepare(
            "INSERT INTO agenthelm_events
               (run_id, timestamp_ms, kind, step_id, agent, tool, success, duration_ms, body, work)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await
        .map_err(|e| io(shown, e))?;
    for r in rows {
        db.execute(
            &insert,
            &[
                &r.run_id,
                &r.timestamp_ms,
                &r.kind,
                &r.step_id,
                &r.agent,
                &r.tool,
                &r.success,
                &r.duration_ms,
                &r.body,
                &work,
            ],
        )
        .await
        .map_err(|e| io(shown, e))?;
    }
    Ok(())
}

/// One event's row, built before it goes to the store's thread.
struct EventRow {
    run_id: Option<String>,
    timestamp_ms: i64,
    kind: String,
    step_id: Option<String>,
    agent: Option<String>,
    tool: Option<String>,
    success: Option<bool>,
    duration_ms: Option<f64>,
    body: String,
}

/// A claim row of this store; deleted when dropped.
struct PostgresLease {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    shown: PathBuf,
    run_id: String,
    token: String,
}

impl Lease for PostgresLease {
    fn refresh(&self) -> Result<(), StoreError> {
        let (run_id, token) = (self.run_id.clone(), self.token.clone());
        let updated = call(&self.jobs, &self.shown, move |db, shown| async move {
            db.execute(
                "UPDATE agenthelm_claims SET heartbeat_ms = $3 WHERE run_id = $1 AND token = $2",
                &[&run_id, &token, &(now_ms() as i64)],
            )
            .await
            .map_err(|e| io(&shown, e))
        })?;
        match updated {
            0 => Err(StoreError::ClaimLost(self.run_id.clone())),
            _ => Ok(()),
        }
    }
}

impl Drop for PostgresLease {
    fn drop(&mut self) {
        // A row left behind (the store was away) names this process: once it has ended, or its
        // heartbeat is older than the lease, the next claimant takes the run over.
        let (run_id, token) = (self.run_id.clone(), self.token.clone());
        let _ = call(&self.jobs, &self.shown, move |db, shown| async move {
            db.execute(
                "DELETE FROM agenthelm_claims WHERE run_id = $1 AND token = $2",
                &[&run_id, &token],
            )
            .await
            .map_err(|e| io(&shown, e))
        });
    }
}

/// Run `run_id` as stored, and the ids of its events that workers' attempts wrote (what a
/// coordinator that loads the run has seen of them).
pub(super) async fn load_run_in(
    db: &Client,
    shown: &Path,
    run_id: String,
) -> Result<(StoredRun, Vec<i64>), StoreError> {
    let e = |e: tokio_postgres::Error| io(shown, e);
    let row = db
        .query_opt(
            "SELECT plan, goal, steps, started_ms, finished_ms, success, error
             FROM agenthelm_runs WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .map_err(e)?;
    let Some(row) = row else {
        return Err(StoreError::UnknownRun(run_id));
    };
    let plan: String = col(shown, &row, 0)?;
    let plan: Plan = serde_json::from_str(&plan).map_err(|e| damaged(shown, &run_id, e))?;
    let summary = summary_from(shown, run_id.clone(), &row, 1)?;
    let bodies = db
        .query(
            "SELECT body, id, work IS NOT NULL FROM agenthelm_events WHERE run_id = $1 ORDER BY id",
            &[&run_id],
        )
        .await
        .map_err(e)?;
    let mut by_work = Vec::new();
    let events = bodies
        .iter()
        .map(|r| {
            if col::<bool>(shown, r, 2)? {
                by_work.push(col::<i64>(shown, r, 1)?);
            }
            serde_json::from_str::<Event>(col(shown, r, 0)?).map_err(|e| damaged(shown, &run_id, e))
        })
        .collect::<Result<_, _>>()?;
    Ok((
        StoredRun {
            summary,
            plan,
            events,
        },
        by_work,
    ))
}

fn summary_from(
    shown: &Path,
    run_id: String,
    r: &Row,
    from: usize,
) -> Result<RunSummary, StoreError> {
    Ok(RunSummary {
        run_id,
        goal: col(shown, r, from)?,
        steps: col::<i64>(shown, r, from + 1)? as usize,
        started_ms: col::<i64>(shown, r, from + 2)? as u64,
        finished_ms: col::<Option<i64>>(shown, r, from + 3)?.map(|t| t as u64),
        success: col(shown, r, from + 4)?,
        error: col(shown, r, from + 5)?,
    })
}

/// Column `index` of `row`: an error, not a panic, when someone changed the table under us.
fn col<'r, T: tokio_postgres::types::FromSql<'r>>(
    shown: &Path,
    row: &'r Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        path: shown.to_path_buf(),
        message: format!("a column does not hold what AgentHelm wrote there: {e}"),
    })
}

fn damaged(shown: &Path, run_id: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: shown.to_path_buf(),
        message: format!("run `{run_id}` has a record that cannot be read: {e}"),
    }
}

fn io(shown: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: shown.to_path_buf(),
        message: e.to_string(),
    }
}

/// `url` with its password replaced by `***`, for errors and logs: the URL form
/// (`postgres://user:secret@host/db`) and libpq's `password=secret` form.
pub fn mask_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}{tail}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::mask_password;

    #[test]
    fn passwords_are_masked_in_both_url_forms() {
        assert_eq!(
            mask_password("postgres://ah:s3cret@db:5432/runs?sslmode=disable"),
            "postgres://ah:***@db:5432/runs?sslmode=disable"
        );
        assert_eq!(
            mask_password("postgres://ah@db/runs"),
            "postgres://ah@db/runs"
        );
        assert_eq!(
            mask_password("host=db user=ah password=s3cret dbname=runs"),
            "host=db user=ah password=*** dbname=runs"
        );
    }
}
