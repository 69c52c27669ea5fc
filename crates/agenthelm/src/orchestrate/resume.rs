//! Picking up a run after its process stopped: rebuilding its state from the journal.

use std::collections::{HashMap, HashSet};

use super::rollback::Undo;
use super::RunResult;
use crate::plan::{Plan, StepStatus};
use crate::trace::Effect;
use crate::trace::{Event, EventKind};

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

/// A run's state as its journal tells it.
pub(crate) struct Recovered {
    pub plan: Plan,
    pub undo_log: Vec<Undo>,
    pub failure: Option<(Option<String>, String)>,
    /// Compensating actions that finished, by (step position, action), with their success.
    pub actions_done: HashMap<(usize, usize), bool>,
    /// Compensating actions that started and never finished: they are not run again.
    pub actions_uncertain: HashSet<(usize, usize)>,
    /// Effects recorded by interrupted attempts of steps that will run again, by step position.
    /// The new attempt reuses the same call ids (and idempotency keys), so an effect it records
    /// again replaces the old one instead of being undone twice.
    pub carried: HashMap<usize, Vec<Effect>>,
    /// What happened to the steps that were running, for the record.
    pub interrupted: Vec<String>,
    /// Whether the journal records the run's end, and how it ended.
    pub finished: Option<bool>,
    /// Usage and cost of the model calls made before the restart.
    pub totals: RunResult,
}

/// Replays `events` over `plan` (as it was when the run began).
pub(crate) fn recover(mut plan: Plan, events: &[Event], rule: InterruptedSteps) -> Recovered {
    let index: HashMap<String, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let at = |event: &Event| {
        event
            .step_id
            .as_deref()
            .and_then(|id| index.get(id).copied())
    };
    let mut running: Vec<bool> = vec![false; plan.steps.len()];
    let mut effects: Vec<Vec<Effect>> = vec![Vec::new(); plan.steps.len()];
    let mut recovered = Recovered {
        plan: Plan::new(String::new()),
        undo_log: Vec::new(),
        failure: None,
        actions_done: HashMap::new(),
        actions_uncertain: HashSet::new(),
        carried: HashMap::new(),
        interrupted: Vec::new(),
        finished: None,
        totals: RunResult::default(),
    };
    let mut actions_started = HashSet::new();
    let mut rollback_started = false;
    for event in events {
        match (&event.kind, at(event)) {
            (EventKind::StepStarted { .. }, Some(i)) => running[i] = true,
            (EventKind::Effect { effect }, Some(i)) => {
                // The outcome of a call replaces the intent recorded before it.
                effects[i].retain(|e| e.call_id != effect.call_id);
                effects[i].push(effect.clone());
            }
            (EventKind::ToolCall { call_id, .. }, Some(i)) => {
                // A call that ended without recording an effect did not leave its intent behind.
                effects[i].retain(|e| !(e.in_progress && &e.call_id == call_id));
            }
            (
                EventKind::StepFinished {
                    status,
                    result,
                    error,
                    ..
                },
                Some(i),
            ) => {
                running[i] = false;
                let step = &mut plan.steps[i];
                step.status = *status;
                step.result = result.clone();
                step.error = error.clone();
                let done = std::mem::take(&mut effects[i]);
                if *status == StepStatus::Completed || !done.is_empty() {
                    recovered.undo_log.push(Undo {
                        step: i,
                        effects: done,
                    });
                }
                if *status == StepStatus::Failed && recovered.failure.is_none() {
                    let error = error.clone().unwrap_or_default();
                    recovered.failure = Some((Some(step.id.clone()), error));
                }
            }
            (EventKind::RollbackStarted { .. }, _) => rollback_started = true,
            (EventKind::CompensationStarted { action, .. }, Some(i)) => {
                actions_started.insert((i, *action));
            }
            (
                EventKind::CompensationFinished {
                    action, success, ..
                },
                Some(i),
            ) => {
                recovered.actions_done.insert((i, *action), *success);
            }
            (EventKind::RunFinished { success, .. }, _) => recovered.finished = Some(*success),
            (
                EventKind::LlmCall {
                    usage,
                    cost_usd,
                    error,
                    ..
                },
                _,
            ) => {
                let totals = &mut recovered.totals;
                totals.token_usage += *usage;
                totals.iterations += 1;
                match cost_usd {
                    Some(cost) => totals.total_cost_usd += cost,
                    None if error.is_none() => totals.unpriced_calls += 1,
                    None => {}
                }
            }
            _ => {}
        }
    }
    let stopping = recovered.failure.is_some() || rollback_started;
    for i in (0..plan.steps.len()).filter(|&i| running[i]) {
        let step = &mut plan.steps[i];
        let partial = std::mem::take(&mut effects[i]);
        let rerun = !stopping && rule == InterruptedSteps::Rerun;
        if rerun {
            recovered.carried.insert(i, partial);
        } else if !partial.is_empty() {
            recovered.undo_log.push(Undo {
                step: i,
                effects: partial,
            });
        }
        if !rerun {
            step.status = StepStatus::Failed;
            step.error = Some("interrupted: the process stopped while this step ran".into());
            recovered
                .interrupted
                .push(format!("{} (marked failed)", step.id));
            if recovered.failure.is_none() {
                recovered.failure = Some((
                    Some(step.id.clone()),
                    step.error.clone().unwrap_or_default(),
                ));
            }
        } else {
            step.status = StepStatus::Pending;
            recovered
                .interrupted
                .push(format!("{} (run again)", step.id));
        }
    }
    if rollback_started && recovered.failure.is_none() {
        recovered.failure = Some((None, "the run was stopped".into()));
    }
    recovered.actions_uncertain = actions_started
        .into_iter()
        .filter(|key| !recovered.actions_done.contains_key(key))
        .collect();
    recovered.plan = plan;
    recovered
}
