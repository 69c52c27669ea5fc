//! Plans: steps with dependencies, their run state, validation, and YAML/JSON forms.
//!
//! ```
//! use agenthelm::prelude::*;
//!
//! let mut plan = Plan::new("Research and summarize");
//! plan.steps.push(PlanStep::new("a", "Search topic A").agent("researcher"));
//! plan.steps.push(PlanStep::new("b", "Search topic B").agent("researcher"));
//! plan.steps.push(PlanStep::new("c", "Combine").agent("writer").depends_on(["a", "b"]));
//! plan.validate().unwrap();
//!
//! let ready: Vec<&str> = plan.ready_steps().iter().map(|s| s.id.as_str()).collect();
//! assert_eq!(ready, ["a", "b"]);
//!
//! let yaml = plan.to_yaml().unwrap();
//! assert_eq!(Plan::from_yaml(&yaml).unwrap(), plan);
//! ```

mod error;
mod format;
pub(crate) mod graph;
mod strict;
mod template;
pub(crate) mod validate;

pub use error::{PlanError, PlanProblem};
pub use strict::check_yaml;
pub(crate) use template::fill_env;
pub use template::{
    env_references_in, references_in, resolve_templates, try_resolve_templates, Reference, Segment,
    Template, UnresolvedReference,
};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::fmt;

use crate::budget::Budget;

/// Where a step is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started.
    #[default]
    Pending,
    /// Started and not finished.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Never started because the run stopped first.
    Skipped,
    /// Completed, then undone by rollback.
    Compensated,
}

impl StepStatus {
    /// Whether the step will not change state again in this run.
    pub fn is_final(self) -> bool {
        !matches!(self, StepStatus::Pending | StepStatus::Running)
    }

    /// The lowercase name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Compensated => "compensated",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How rollback orders the compensations of the steps it undoes.
///
/// Either way a step is undone only after every step that depends on it (directly or through
/// other steps) is undone, and a step's own compensating actions run one after the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackMode {
    /// One compensation at a time, newest completion first (the default).
    #[default]
    Sequential,
    /// Steps that do not depend on each other are undone at the same time, up to the
    /// orchestrator's concurrency limit.
    Parallel,
}

/// One step of a plan.
///
/// Plan files written by the Python library read as they are: `agent` and `tool` are accepted
/// for `agent_name` and `tool_name`, and `null` for an empty `depends_on` or `args`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    /// Unique id within the plan.
    pub id: String,
    /// The agent that does the step; `None` for the orchestrator's default agent.
    #[serde(default, alias = "agent", skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// The tool to call. With valid `args` and an agent that has the tool, the orchestrator
    /// calls it directly, without a model.
    #[serde(default, alias = "tool", skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// What the step does.
    #[serde(default)]
    pub description: String,
    /// The tool's arguments: a JSON object whose strings may hold `{{steps.<id>.result}}`.
    #[serde(default = "empty_object", deserialize_with = "null_as_empty_object")]
    pub args: Value,
    /// Ids of the steps that must complete first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub depends_on: Vec<String>,
    /// Tool that undoes this step during rollback, overriding the tool's own compensating tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate_tool: Option<String>,
    /// Arguments for the compensation (default: the step's `args`); `{{result}}` is the step's
    /// own result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate_args: Option<Value>,
    /// Run state.
    #[serde(default)]
    pub status: StepStatus,
    /// The step's output once completed.
    ///
    /// In YAML and JSON an absent `result` is no result, while `result: null` is a result that
    /// is JSON null (a step may complete with nothing to report), so both survive a round trip.
    #[serde(
        default,
        deserialize_with = "present_as_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Value>,
    /// The error once failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn null_as_empty_object<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.unwrap_or_else(empty_object))
}

fn present_as_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl PlanStep {
    /// A pending step with no agent, tool, arguments or dependencies.
    pub fn new(id: impl Into<String>, description: impl Into<String>) -> Self {
        PlanStep {
            id: id.into(),
            agent_name: None,
            tool_name: None,
            description: description.into(),
            args: empty_object(),
            depends_on: Vec::new(),
            compensate_tool: None,
            compensate_args: None,
            status: StepStatus::Pending,
            result: None,
            error: None,
        }
    }

    /// Routes the step to an agent.
    pub fn agent(mut self, name: impl Into<String>) -> Self {
        self.agent_name = Some(name.into());
        self
    }

    /// Names the tool to call.
    pub fn tool(mut self, name: impl Into<String>) -> Self {
        self.tool_name = Some(name.into());
        self
    }

    /// Sets the tool's arguments (a JSON object).
    pub fn args(mut self, args: Value) -> Self {
        self.args = args;
        self
    }

    /// Sets the steps that must complete first.
    pub fn depends_on(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.depends_on = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Sets how rollback undoes this step: `tool` with `args` (`{{result}}` is the step's result).
    pub fn compensate(mut self, tool: impl Into<String>, args: Value) -> Self {
        self.compensate_tool = Some(tool.into());
        self.compensate_args = Some(args);
        self
    }
}

/// A goal broken into steps, with the run state of each, and whether a person approved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// What the plan achieves.
    pub goal: String,
    /// Why the steps are what they are (from the planner).
    #[serde(default)]
    pub reasoning: String,
    /// The steps, in the order they were written.
    #[serde(default, deserialize_with = "null_as_default")]
    pub steps: Vec<PlanStep>,
    /// Whether the plan may run. The orchestrator refuses a plan that is not approved.
    #[serde(default)]
    pub approved: bool,
    /// How a rollback of this plan is ordered; `None` leaves it to whoever runs the plan (the
    /// orchestrator's own setting). Written `rollback: sequential` or `rollback: parallel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackMode>,
    /// Limits for runs of this plan, beside those of whoever runs it (the tighter of each
    /// applies). Written `budget: {max_cost_usd: 0.5, max_duration: 10m}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

impl Plan {
    /// An empty, unapproved plan.
    pub fn new(goal: impl Into<String>) -> Self {
        Plan {
            goal: goal.into(),
            reasoning: String::new(),
            steps: Vec::new(),
            approved: false,
            rollback: None,
            budget: None,
        }
    }

    /// The pending steps whose dependencies have all completed, in plan order.
    pub fn ready_steps(&self) -> Vec<&PlanStep> {
        let completed: std::collections::HashSet<&str> = self
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Completed)
            .map(|s| s.id.as_str())
            .collect();
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Pending)
            .filter(|s| s.depends_on.iter().all(|d| completed.contains(d.as_str())))
            .collect()
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&PlanStep> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The step with this id, to change.
    pub fn step_mut(&mut self, id: &str) -> Option<&mut PlanStep> {
        self.steps.iter_mut().find(|s| s.id == id)
    }

    /// The seed's name for [`ready_steps`](Self::ready_steps), kept for code written against it.
    pub fn get_ready_steps(&self) -> Vec<&PlanStep> {
        self.ready_steps()
    }

    /// The seed's name for [`step`](Self::step), kept for code written against it.
    pub fn get_step(&self, id: &str) -> Option<&PlanStep> {
        self.step(id)
    }

    /// The seed's name for [`step_mut`](Self::step_mut), kept for code written against it.
    pub fn get_step_mut(&mut self, id: &str) -> Option<&mut PlanStep> {
        self.step_mut(id)
    }

    /// Marks a step completed with its result.
    pub fn mark_completed(&mut self, id: &str, result: Value) -> Result<(), PlanError> {
        let step = self.step_or_err(id)?;
        step.status = StepStatus::Completed;
        step.result = Some(result);
        step.error = None;
        Ok(())
    }

    /// Marks a step failed with its error.
    pub fn mark_failed(&mut self, id: &str, error: impl Into<String>) -> Result<(), PlanError> {
        let step = self.step_or_err(id)?;
        step.status = StepStatus::Failed;
        step.error = Some(error.into());
        Ok(())
    }

    fn step_or_err(&mut self, id: &str) -> Result<&mut PlanStep, PlanError> {
        self.step_mut(id)
            .ok_or_else(|| PlanError::UnknownStep(id.to_owned()))
    }

    /// Whether every step is in a final state (completed, failed, skipped or compensated).
    pub fn is_complete(&self) -> bool {
        self.steps.iter().all(|s| s.status.is_final())
    }

    /// Whether every step completed.
    pub fn success(&self) -> bool {
        self.steps.iter().all(|s| s.status == StepStatus::Completed)
    }

    /// Checks the plan's structure: at least one step, non-empty unique ids, known dependencies, no cycles, object
    /// arguments, and `{{steps.<id>.result}}` references only to steps this one waits for.
    /// Reports every problem at once.
    pub fn validate(&self) -> Result<(), PlanError> {
        let (problems, _) = validate::analyze(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Invalid(problems))
        }
    }

    /// The plan as YAML.
    pub fn to_yaml(&self) -> Result<String, PlanError> {
        yaml_serde::to_string(self).map_err(|e| PlanError::Serialize(e.to_string()))
    }

    /// Reads a plan from YAML. Errors name the line, column and field.
    pub fn from_yaml(text: &str) -> Result<Plan, PlanError> {
        format::from_yaml(text)
    }

    /// The plan as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, PlanError> {
        serde_json::to_string_pretty(self).map_err(|e| PlanError::Serialize(e.to_string()))
    }

    /// Reads a plan from JSON. Errors name the line, column and field.
    pub fn from_json(text: &str) -> Result<Plan, PlanError> {
        format::from_json(text)
    }
}
