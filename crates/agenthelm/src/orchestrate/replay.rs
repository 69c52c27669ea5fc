//! Replaying a stored run: what [`Orchestrator::replay`](super::Orchestrator::replay) sets up
//! and what it reports.

use serde::Serialize;
use std::sync::Arc;

use super::orchestrator::Config;
use super::RunResult;
use crate::exec::{Divergence, DivergenceKind, ReplayOptions, ReplaySource};
use crate::plan::{Plan, PlanError};
use crate::store::StoredRun;
use crate::trace::RunState;

/// What a replay found: whether the stored run was reproduced, else the first point where the
/// replay went another way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The run replayed.
    pub run_id: String,
    /// The replay took the recorded path to the end: every step carried out the same way, with
    /// the same requests and calls, ending with the recorded status.
    pub reproduced: bool,
    /// The first difference, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// How many steps were compared (the plan's steps).
    pub steps_compared: usize,
    /// Model answers taken from the journal.
    pub model_calls_served: usize,
    /// Tool outcomes taken from the journal (compensations included).
    pub tool_calls_served: usize,
    /// Whether the recorded run succeeded (`None` when its end is not on record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_success: Option<bool>,
    /// Whether the replay succeeded.
    pub replay_success: bool,
    /// Tools ran for real.
    pub live_tools: bool,
    /// Models were called for real.
    pub live_models: bool,
}

/// A stored run made ready to replay: the configuration to run it with (no store, no observers,
/// decisions and answers from the journal) and where it starts.
pub(super) struct Prepared {
    pub config: Config,
    pub source: Arc<ReplaySource>,
    pub plan: Plan,
}

/// Sets up the replay of `stored` under `config` (the orchestrator's), running `plan` if given
/// (else the stored one), or says why the plan does not fit.
pub(super) fn prepare(
    config: &Config,
    stored: StoredRun,
    plan: Option<Plan>,
    options: ReplayOptions,
) -> Result<Prepared, Divergence> {
    let recorded = RunState::replay(&stored.plan, &stored.events);
    let source = Arc::new(ReplaySource::new(&recorded, options));
    let mut config = config.clone();
    // Nothing of the replay reaches the store or the run's watchers, and no one is asked to
    // approve anything: the recorded decisions stand.
    config.store = None;
    config.observers = Vec::new();
    config.approval = Arc::clone(&source) as _;
    config.replay = Some(Arc::clone(&source));
    // The run's own budget, as it started with it: a run stopped by its budget stops there
    // again, and a budget changed since does not change the path.
    config.budget = recorded.budget().copied().unwrap_or_default();
    // Time is not replayed: a recorded stop for time comes back where it came (see
    // `ReplaySource::recorded_stop`).
    config.budget.max_duration = None;
    // A run that stopped without a rollback was run with rollback off: so is its replay.
    if recorded.stop_reason().is_some() && recorded.end().is_some() {
        config.rollback = recorded.rollback().is_some();
    }
    let plan = plan.unwrap_or(stored.plan);
    if let Err(e) = config.check(&plan) {
        return Err(plan_changed(&e));
    }
    Ok(Prepared {
        config,
        source,
        plan,
    })
}

fn plan_changed(error: &PlanError) -> Divergence {
    Divergence {
        step: "(plan)".to_owned(),
        call: None,
        kind: DivergenceKind::PlanChanged,
        expected: "the plan fits the agents and tools".to_owned(),
        actual: error.to_string(),
    }
}

/// The report of a replay of `run_id` that could not start: the plan no longer fits.
pub(super) fn not_started(
    run_id: &str,
    divergence: Divergence,
    options: ReplayOptions,
) -> ReplayReport {
    ReplayReport {
        run_id: run_id.to_owned(),
        reproduced: false,
        divergence: Some(divergence),
        steps_compared: 0,
        model_calls_served: 0,
        tool_calls_served: 0,
        recorded_success: None,
        replay_success: false,
        live_tools: options.live_tools,
        live_models: options.live_models,
    }
}

/// Compares the replay's final step statuses with the recorded ones and sums up.
pub(super) fn report(
    run_id: &str,
    recorded_success: Option<bool>,
    source: &ReplaySource,
    plan: &Plan,
    result: &RunResult,
) -> ReplayReport {
    for step in &plan.steps {
        source.check_final(&step.id, step.status);
    }
    source.check_removed(plan.steps.iter().map(|s| s.id.as_str()));
    let divergence = source.divergence();
    let options = source.options();
    ReplayReport {
        run_id: run_id.to_owned(),
        reproduced: divergence.is_none(),
        divergence,
        steps_compared: plan.steps.len(),
        model_calls_served: source.models_served(),
        tool_calls_served: source.tools_served(),
        recorded_success,
        replay_success: result.success,
        live_tools: options.live_tools,
        live_models: options.live_models,
    }
}
