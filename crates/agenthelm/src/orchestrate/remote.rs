//! Work carried out in another process: a coordinator's orchestrator hands each started step
//! (and each compensating action) to a [`RemoteRunner`] instead of running it here, and a
//! worker with the same agents and tools carries it out with
//! [`Orchestrator::run_step_work`](super::Orchestrator::run_step_work) and
//! [`Orchestrator::run_undo_work`](super::Orchestrator::run_undo_work).
//!
//! The split follows the journal: the coordinator records what it decides (a step's start and
//! end, a compensation's end), the worker records what it does (model calls, tool calls,
//! effects, a compensation's start) in the same run's journal, and the runner hands the
//! worker's events to the coordinator's sink with [`EventSink::adopt`](crate::exec::EventSink::adopt),
//! so one run state sees everything.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::Arc;

use crate::agent::StepTask;
use crate::exec::StepContext;
use crate::store::{Claim, RunStore, StoreError};

/// A started step, as a worker needs it: which agent carries it out (or which tool is called
/// directly), with its arguments already resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepWork {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The agent that carries the step out, or whose tool is called; `None` for the
    /// orchestrator's own tools.
    pub agent: Option<String>,
    /// The tool to call directly with `args` (no model), when the step is dispatched directly.
    pub direct_tool: Option<String>,
    /// What to do.
    pub description: String,
    /// The tool the plan suggests, if any.
    pub tool_name: Option<String>,
    /// The step's arguments, references filled in.
    pub args: Value,
    /// The results of the steps it depends on, in `depends_on` order.
    pub inputs: Vec<(String, Value)>,
}

impl StepWork {
    /// The step as an agent sees it.
    pub fn task(&self) -> StepTask {
        StepTask {
            id: self.step_id.clone(),
            description: self.description.clone(),
            tool_name: self.tool_name.clone(),
            args: self.args.clone(),
            inputs: self.inputs.clone(),
        }
    }
}

/// A compensating action of a rollback, as a worker needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoWork {
    /// The run.
    pub run_id: String,
    /// The step whose work is undone.
    pub step_id: String,
    /// The agent whose tools the step used.
    pub agent: Option<String>,
    /// The action's place among the step's compensations (0-based): it names the call, so the
    /// idempotency key is the same in every attempt.
    pub action: usize,
    /// The compensating tool.
    pub tool: String,
    /// Its arguments.
    pub args: Value,
}

/// What became of a step carried out elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RemoteOutcome {
    /// The step completed with `value`; `call` names the direct tool call whose output it is.
    Completed {
        /// The step's result.
        value: Value,
        /// The tool call the result is the output of (direct dispatch).
        call: Option<String>,
    },
    /// The step failed with this error.
    Failed {
        /// Why.
        error: String,
    },
    /// A tool call of the step waits for a person's decision: the step runs again once the
    /// decision is on record.
    Parked,
}

/// Carries out a coordinator's work somewhere else: a worker with the same agents and tools
/// carries it out with [`Orchestrator::run_step_work`](super::Orchestrator::run_step_work).
///
/// Both methods are called after the coordinator's journal holds everything that led to the
/// work. Before returning, an implementation hands the events the other process journaled for
/// the work to `ctx.sink()` with [`EventSink::adopt`](crate::exec::EventSink::adopt). When the
/// coordinator may no longer write the run (its hold on it was lost, or its store is away for
/// good), it stops the journal with [`EventSink::halt`](crate::exec::EventSink::halt): the run
/// then stops where it is, as after a crash.
#[async_trait::async_trait]
pub trait RemoteRunner: Send + Sync {
    /// Carries out a started step and waits for its outcome.
    async fn run_step(&self, work: StepWork, ctx: &StepContext) -> RemoteOutcome;

    /// Carries out a compensating action and waits for its outcome: `Ok` when it undid the
    /// work, `Err` with the reason otherwise, `None` when the journal stopped (the rollback
    /// then stops where it is; a resumed run finishes it).
    async fn undo(&self, work: UndoWork, ctx: &StepContext) -> Option<Result<(), String>>;
}

/// Runs coordinated from here and carried out elsewhere: for each run, the journal its writes
/// go through (guarded so that only the one coordinator holding the run writes it) and the
/// [`RemoteRunner`] of its work. With it set
/// ([`Orchestrator::remote_runs`](super::Orchestrator::remote_runs)), every run this
/// orchestrator executes or resumes is opened here first.
pub trait RemoteRuns: Send + Sync {
    /// Takes run `run_id` for this process. Refused (with the store's error) while another
    /// coordinator holds it.
    fn open(&self, run_id: &str) -> Result<RemoteRun, StoreError>;
}

/// One run taken by a coordinator (see [`RemoteRuns`]).
pub struct RemoteRun {
    /// Where the run's events, plan and end are written, and its journal read.
    pub journal: Arc<dyn RunStore>,
    /// Who carries its steps and compensations out.
    pub runner: Arc<dyn RemoteRunner>,
    /// The hold on the run: kept while the run goes on, released when dropped.
    pub claim: Claim,
}

impl std::fmt::Debug for RemoteRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRun")
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}
