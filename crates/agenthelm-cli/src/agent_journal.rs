//! Tracing `agenthelm run` (one ToolAgent, one task) into the run store.
//!
//! The task is kept as a run of a one-step plan (step `task`, the agent's name), so `runs`,
//! `traces` and `runs report` show it like a plan run, and `agenthelm resume` can run an
//! interrupted task again (the re-run rule for interrupted steps). Every event the agent emits
//! (LLM calls, tool calls, approvals) is written as it happens; a write that fails stops the
//! agent at once (its running tools are killed), so nothing goes on untraced.

use agenthelm::store::{RunStore, StoreError};
use agenthelm::{AgentResult, Event, EventKind, Plan, PlanStep, StepStatus};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

use crate::exit::BadInput;

/// The step id of the task in its one-step plan.
const STEP: &str = "task";

/// One agent run being written to a store.
pub struct AgentJournal {
    store: Arc<dyn RunStore>,
    run_id: Arc<str>,
    agent: Arc<str>,
    started: Instant,
    failure: Arc<Failure>,
}

#[derive(Default)]
struct Failure {
    error: Mutex<Option<StoreError>>,
    notify: Notify,
}

impl Failure {
    fn record(&self, error: StoreError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(error);
            // A stored permit: the waiter wakes even if it starts waiting later.
            self.notify.notify_one();
        }
    }
}

impl AgentJournal {
    /// Records the run and the start of its task; a store that cannot record it is bad input
    /// (nothing has run).
    pub fn begin(store: Arc<dyn RunStore>, agent: &str, task: &str) -> anyhow::Result<Self> {
        let run_id: Arc<str> = Arc::from(new_run_id());
        let mut plan = Plan::new(task);
        plan.steps.push(PlanStep::new(STEP, task).agent(agent));
        plan.approved = true;
        let journal = AgentJournal {
            store,
            run_id,
            agent: Arc::from(agent),
            started: Instant::now(),
            failure: Arc::default(),
        };
        let begun = journal
            .store
            .begin_run(&journal.run_id, &plan)
            .and_then(|()| {
                journal.store.append_batch(&[
                    journal.event(EventKind::RunStarted {
                        goal: task.to_owned(),
                        steps: 1,
                    }),
                    journal.event(EventKind::StepStarted { direct_tool: None }),
                ])
            });
        begun.map_err(|e| {
            BadInput(format!(
                "the task was not started because the run store cannot record it: {e}"
            ))
        })?;
        Ok(journal)
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn event(&self, kind: EventKind) -> Event {
        let mut event = Event::new(kind);
        event.run_id = Some(Arc::clone(&self.run_id));
        event.step_id = Some(Arc::from(STEP));
        event.agent = Some(Arc::clone(&self.agent));
        event
    }

    /// An observer for the agent that writes each of its events, marked with this run.
    pub fn observer(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let store = Arc::clone(&self.store);
        let run_id = Arc::clone(&self.run_id);
        let agent = Arc::clone(&self.agent);
        let failure = Arc::clone(&self.failure);
        move |event: &Event| {
            let mut event = event.clone();
            event.run_id.get_or_insert_with(|| Arc::clone(&run_id));
            event.step_id.get_or_insert_with(|| Arc::from(STEP));
            event.agent.get_or_insert_with(|| Arc::clone(&agent));
            if let Err(e) = store.append(&event) {
                failure.record(e);
            }
        }
    }

    /// Resolves when a write has failed, with its error.
    pub async fn failed(&self) -> StoreError {
        self.failure.notify.notified().await;
        let slot = self
            .failure
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.clone()
            .unwrap_or_else(|| StoreError::Backend("the journal failed".into()))
    }

    /// Records how the task ended.
    pub fn finish(&self, result: &AgentResult) -> Result<(), StoreError> {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let status = if result.success {
            StepStatus::Completed
        } else {
            StepStatus::Failed
        };
        self.store.append_batch(&[
            self.event(EventKind::StepFinished {
                status,
                result: result.answer.clone().map(serde_json::Value::String),
                duration_ms,
                error: result.error.clone(),
            }),
            self.event(EventKind::RunFinished {
                success: result.success,
                duration_ms,
            }),
        ])?;
        self.store
            .finish_run(&self.run_id, result.success, result.error.as_deref())
    }
}

/// A run id like the orchestrator's: `run-<ms since the epoch, hex>-<8 hex digits>`.
fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Nanoseconds and the process id keep two ids of the same millisecond apart.
    let salt = now.subsec_nanos() ^ std::process::id().rotate_left(16);
    format!("run-{:x}-{salt:08x}", now.as_millis())
}
