//! Run stores: where plan runs and their events are kept, so runs can be listed, inspected,
//! traced and resumed after a crash.
//!
//! With a store, the orchestrator writes the plan before the first step and every event before
//! acting on it (a step's start before the step runs, its end before the steps waiting on it
//! start, a compensation before it is called). A write that fails stops the run at once: nothing
//! runs untraced.
//!
//! Three backends: [`SqliteStore`] (the default, one embedded database file), [`JsonlStore`]
//! (one JSON-lines file per run in a folder) and, with the `postgres` feature, `PostgresStore`
//! (one PostgreSQL database shared by several processes and hosts). `PostgresStore` also keeps
//! what a cluster needs (DESIGN.md §10): run leases that fence a coordinator's writes
//! (`FencedStore`), and work carried to worker pools whose attempts supersede each other
//! (`AttemptJournal`).

mod claim;
mod jsonl;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use claim::{Claim, Lease, Owner, HEARTBEAT, LEASE};

pub use jsonl::JsonlStore;
#[cfg(feature = "postgres")]
pub use postgres::{
    mask_password, AttemptJournal, AttemptStart, Dispatched, FencedStore, PostgresStore, RunLease,
    Work, WorkOutcome,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use serde::Serialize;
use std::path::PathBuf;

use crate::plan::Plan;
use crate::trace::Event;

/// How hard a store works to keep what it has written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A written event survives a crash of the process (what resume needs); a crash of the
    /// operating system or a power loss may lose the last ones. SQLite `synchronous = NORMAL`
    /// in WAL mode; JSON lines written without `fsync`. The default.
    #[default]
    Normal,
    /// A written event survives a power loss too, at the cost of a disk flush per write
    /// (SQLite `synchronous = FULL`; JSON lines `fsync`ed).
    Full,
}

/// A place that keeps runs and their events.
///
/// Implementations must make an appended event durable against a crash of this process by the
/// time `append` returns (power-loss durability is up to the backend's settings).
pub trait RunStore: Send + Sync {
    /// Records a new run and its plan, before any step runs.
    fn begin_run(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError>;

    /// Appends one event of a run (the event carries its run id).
    fn append(&self, event: &Event) -> Result<(), StoreError>;

    /// Appends several events in order, all or none where the backend can. The default appends
    /// them one by one.
    fn append_batch(&self, events: &[Event]) -> Result<(), StoreError> {
        events.iter().try_for_each(|event| self.append(event))
    }

    /// Replaces the plan of run `run_id` before it starts (a plan changed during its review).
    /// The default refuses: a store that does not override it cannot keep reviewed plans.
    fn revise_plan(&self, run_id: &str, plan: &Plan) -> Result<(), StoreError> {
        let _ = plan;
        Err(StoreError::Backend(format!(
            "this store cannot change the plan of run `{run_id}`"
        )))
    }

    /// Records how a run ended.
    fn finish_run(
        &self,
        run_id: &str,
        success: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// A run's plan (as it was when the run began), its summary and all its events, in order.
    fn load_run(&self, run_id: &str) -> Result<StoredRun, StoreError>;

    /// [`load_run`](Self::load_run) without the parts that can be big and that views listing or
    /// summing up a run do not show: tool arguments, tool outputs and step results are left out
    /// (see [`EventKind::strip_payloads`](crate::EventKind::strip_payloads)). A run whose tool
    /// printed megabytes is summed up without reading them into memory where the backend can
    /// skip them; the default loads the whole run, then strips it.
    fn load_run_outline(&self, run_id: &str) -> Result<StoredRun, StoreError> {
        let mut run = self.load_run(run_id)?;
        for event in &mut run.events {
            event.kind.strip_payloads();
        }
        Ok(run)
    }

    /// Deletes the runs that ended before `before_ms` (ms since the epoch), with their events;
    /// with `keep_failed`, only those that succeeded. Unfinished runs are never deleted (they
    /// can be resumed). Returns the ids deleted. The default refuses.
    fn prune(&self, before_ms: u64, keep_failed: bool) -> Result<Vec<String>, StoreError> {
        let _ = (before_ms, keep_failed);
        Err(StoreError::Backend(
            "this store cannot delete runs".to_owned(),
        ))
    }

    /// How many bytes the store takes on disk (its files), when it can tell.
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    /// The most recent runs first, at most `limit`.
    fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError>;

    /// Events matching `filter`, oldest first.
    fn query(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError>;

    /// Claims run `run_id` for `owner`, so no other process carries it on at the same time;
    /// the claim is released when the returned [`Claim`] is dropped. Refused with
    /// [`StoreError::Claimed`] while another live owner holds it; a dead owner's claim is taken
    /// over (see [`Owner`] and [`LEASE`]). Checking and taking is one step that other claimants
    /// cannot interleave with.
    ///
    /// The default keeps no claim: a store that does not override it lets any number of
    /// processes carry on one run. [`SqliteStore`] and [`JsonlStore`] keep claims.
    fn claim_run(&self, run_id: &str, owner: &Owner) -> Result<Claim, StoreError> {
        let _ = (run_id, owner);
        Ok(Claim::unguarded())
    }
}

/// A run as kept by a store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRun {
    /// When and how it ran.
    pub summary: RunSummary,
    /// The plan as it was when the run began.
    pub plan: Plan,
    /// Everything that happened, in order.
    pub events: Vec<Event>,
}

/// One line about a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// The plan's goal.
    pub goal: String,
    /// How many steps the plan has.
    pub steps: usize,
    /// Start, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// End, when it ended.
    pub finished_ms: Option<u64>,
    /// Whether it succeeded, when it ended.
    pub success: Option<bool>,
    /// Its error, when it failed.
    pub error: Option<String>,
}

/// Which events to return from [`RunStore::query`]. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this run.
    pub run_id: Option<String>,
    /// Only these kinds (as in [`EventKind::name`](crate::EventKind::name)).
    pub kinds: Vec<String>,
    /// Only events about this tool.
    pub tool: Option<String>,
    /// Only events of this agent.
    pub agent: Option<String>,
    /// Only successes (`true`) or failures (`false`).
    pub success: Option<bool>,
    /// Not before this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Not after this time (ms since the Unix epoch).
    pub until_ms: Option<u64>,
    /// At least this long.
    pub min_duration_ms: Option<f64>,
    /// At most this long.
    pub max_duration_ms: Option<f64>,
    /// The newest `limit` matches (still returned oldest first).
    pub limit: Option<usize>,
}

impl EventFilter {
    /// Whether `event` passes the filter (the limit aside).
    pub fn matches(&self, event: &Event) -> bool {
        let kind = &event.kind;
        let within = |value: Option<f64>, min: Option<f64>, max: Option<f64>| match value {
            Some(v) => min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m),
            None => min.is_none() && max.is_none(),
        };
        self.run_id
            .as_deref()
            .is_none_or(|r| event.run_id.as_deref() == Some(r))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind.name()))
            && self.tool.as_deref().is_none_or(|t| kind.tool() == Some(t))
            && self
                .agent
                .as_deref()
                .is_none_or(|a| event.agent.as_deref() == Some(a))
            && self.success.is_none_or(|s| kind.succeeded() == Some(s))
            && self.since_ms.is_none_or(|t| event.timestamp_ms >= t)
            && self.until_ms.is_none_or(|t| event.timestamp_ms <= t)
            && within(
                kind.duration_ms(),
                self.min_duration_ms,
                self.max_duration_ms,
            )
    }
}

/// Why a store could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file or folder could not be opened, created or written.
    #[error("run store {path}: {message}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is not a database of this program, or it is damaged.
    #[error("run store {path} is not an AgentHelm store or is damaged: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was found.
        message: String,
    },
    /// The file was written by a newer version of AgentHelm.
    #[error("run store {path} has schema version {found}; this version of AgentHelm reads up to {supported}")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this version knows.
        supported: i64,
    },
    /// No run has that id.
    #[error("no run `{0}` in the store")]
    UnknownRun(String),
    /// A run with that id exists already.
    #[error("a run `{0}` is already in the store")]
    DuplicateRun(String),
    /// Another process carries on the run (see [`RunStore::claim_run`]).
    #[error("run `{run_id}` is being run by {owner}")]
    Claimed {
        /// The run.
        run_id: String,
        /// Who holds it.
        owner: Owner,
    },
    /// This process's claim on the run was taken over or removed.
    #[error("the claim on run `{0}` was lost: another process may be running it")]
    ClaimLost(String),
    /// Another coordinator holds the run's lease and it has not run out.
    #[error("run `{run_id}` is leased by `{holder}` until {expires_ms} (ms since the Unix epoch, by the database's clock)")]
    Leased {
        /// The run.
        run_id: String,
        /// Who holds the lease.
        holder: String,
        /// When it runs out unless renewed, in ms since the Unix epoch (the database's clock).
        expires_ms: i64,
    },
    /// The run's lease moved on past this coordinator's epoch: the write was not made.
    #[error("another coordinator took run `{run_id}` over: this coordinator's lease at epoch {epoch} no longer lets it write")]
    Fenced {
        /// The run.
        run_id: String,
        /// The epoch of the lease that was refused.
        epoch: i64,
    },
    /// A later attempt of the work took it over (or it was finished): the write was not made.
    #[error("a later attempt of work `{key}` took it over, or it was finished: attempt {attempt} may no longer write")]
    Superseded {
        /// The work's key.
        key: String,
        /// The attempt that was refused.
        attempt: i64,
    },
    /// No work has that key.
    #[error("no work `{0}` in the store")]
    UnknownWork(String),
    /// Anything else the backend reported.
    #[error("run store: {0}")]
    Backend(String),
}
