//! Picking up a run after its process stopped: its state replayed from the journal, and what to
//! do with the steps that were running.

use crate::plan::{Plan, StepStatus};
use crate::trace::{Event, Interruption, RunState};

/// What to do with a step that was running when the process stopped. Whether its work happened
/// cannot be known, so the choice is between doing it again and treating it as failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InterruptedSteps {
    /// Run it again (the default). Tools see the same idempotency key as in the interrupted
    /// attempt, so a tool that honours it makes the repeat harmless. Effects the interrupted
    /// attempt recorded stay on record and are undone if the run later rolls back.
    #[default]
    Rerun,
    /// Mark it failed, which rolls back the run.
    Fail,
}

/// A run's state as its journal tells it, and the decision about its interrupted steps.
pub(crate) struct Recovered {
    pub state: RunState,
    /// The entries of the `run_resumed` event that carries the decision out.
    pub interrupted: Vec<String>,
}

/// Replays `events` over `plan` (as it was when the run began) and decides, by `rule`, what
/// happens to the steps that were running. A run already stopping (a failed step, a rollback
/// under way) runs nothing again.
pub(crate) fn recover(plan: &Plan, events: &[Event], rule: InterruptedSteps) -> Recovered {
    let state = RunState::replay(plan, events);
    let going_on = state.stop_reason().is_none();
    // A parked step made no call since it was parked: whatever the rule, it runs again (and
    // finds its decision).
    let interrupted = state
        .steps()
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == StepStatus::Running)
        .map(|(i, s)| {
            Interruption {
                step: s.id.to_string(),
                rerun: going_on && (rule == InterruptedSteps::Rerun || state.is_parked(i)),
            }
            .to_entry()
        })
        .collect();
    Recovered { state, interrupted }
}
