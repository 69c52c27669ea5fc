use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::approval::{ApprovalHandler, DenyAll};
use super::cancel::CancelToken;
use super::registry::AgentRegistry;
use super::run::Run;
use crate::agent::{Agent, AgentResult};
use crate::plan::graph::Graph;
use crate::plan::validate;
use crate::plan::{Plan, PlanError, PlanProblem};
use crate::tool::{RetryPolicy, Tool, ToolSet};
use crate::trace::{Event, Observer};

/// Runs approved plans: routes each step to its agent, runs independent steps at the same time,
/// and undoes completed work with compensating tools when a step fails.
///
/// What it guarantees:
///
/// 1. An unapproved plan is refused, and a plan is checked in full before any step runs
///    (duplicate or unknown ids, cycles, unknown agents and tools); every problem is reported.
/// 2. A step starts as soon as all its dependencies have completed, up to
///    [`max_concurrency`](Orchestrator::max_concurrency) at a time.
/// 3. A step sees its dependencies' results in its task text and through
///    `{{steps.<id>.result}}` in its arguments.
/// 4. A step that names a tool its agent has, with valid arguments, is run by calling the tool
///    directly: no model call.
/// 5. When a step fails no new step starts; running steps get a grace period to finish; steps
///    never started are `skipped`.
/// 6. With rollback on (the default), the work of completed steps is undone in reverse order of
///    completion by calling compensating tools directly; failures to undo are reported.
/// 7. Tool contracts (approval, retries with backoff, timeouts) hold for every call, also in
///    parallel steps and during rollback.
/// 8. Every model call, tool call, approval, step and compensation is an [`Event`].
///
/// ```
/// use agenthelm::prelude::*;
/// use serde_json::json;
///
/// /// Reserve a seat.
/// #[tool(compensating_tool = "cancel")]
/// fn reserve(seat: String) -> String { format!("reserved {seat}") }
///
/// /// Cancel a reservation.
/// #[tool]
/// fn cancel(seat: String) -> String { format!("cancelled {seat}") }
///
/// /// Charge a card.
/// #[tool]
/// fn charge(amount: u32) -> Result<String, ToolError> { Err(ToolError::new("card declined")) }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lm = Lm::from_model(ScriptedLm::new(vec![]));
/// let mut registry = AgentRegistry::new();
/// registry.register(ToolAgent::new("booker", lm, tools![reserve, cancel, charge]))?;
///
/// let mut plan = Plan::new("book a trip");
/// plan.steps.push(PlanStep::new("seat", "reserve").agent("booker").tool("reserve").args(json!({"seat": "12A"})));
/// plan.steps.push(PlanStep::new("pay", "charge").agent("booker").tool("charge")
///     .args(json!({"amount": 300})).depends_on(["seat"]));
/// plan.approved = true;
///
/// let result = Orchestrator::new(registry).execute(&mut plan).await?;
/// assert!(!result.success);
/// assert_eq!(plan.get_step("seat").unwrap().status, StepStatus::Compensated);
/// assert_eq!(plan.get_step("pay").unwrap().status, StepStatus::Failed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Orchestrator {
    // Shared with the task that runs a plan, so a run goes on to its end (rollback included)
    // even when the caller stops waiting for it.
    config: Arc<Config>,
}

/// Everything an orchestrator is set up with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) registry: AgentRegistry,
    pub(crate) default_agent: Option<Arc<dyn Agent>>,
    pub(crate) tools: ToolSet,
    pub(crate) rollback: bool,
    pub(crate) approval: Arc<dyn ApprovalHandler>,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) retry: RetryPolicy,
    pub(crate) grace: Duration,
    pub(crate) observers: Vec<Observer>,
}

/// Why a plan was not run at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrchestratorError {
    /// The plan's `approved` flag is not set.
    #[error("plan `{goal}` is not approved: review it, then set `approved` to true")]
    NotApproved {
        /// The plan's goal.
        goal: String,
    },
    /// The plan is not valid for this orchestrator's agents and tools; nothing ran.
    #[error(transparent)]
    InvalidPlan(#[from] PlanError),
}

impl Orchestrator {
    /// An orchestrator for the agents of `registry`, with rollback on, the [`DenyAll`] approval
    /// handler, no concurrency limit, the default [`RetryPolicy`] and a 30 s grace period.
    pub fn new(registry: AgentRegistry) -> Self {
        Orchestrator {
            config: Arc::new(Config {
                registry,
                default_agent: None,
                tools: ToolSet::new(),
                rollback: true,
                approval: Arc::new(DenyAll),
                max_concurrency: None,
                retry: RetryPolicy::default(),
                grace: Duration::from_secs(30),
                observers: Vec::new(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The agent for steps that name none.
    pub fn default_agent(mut self, agent: impl Agent + 'static) -> Self {
        self.config_mut().default_agent = Some(Arc::new(agent));
        self
    }

    /// Turns Saga rollback on failure on (the default) or off.
    pub fn enable_rollback(mut self, enabled: bool) -> Self {
        self.config_mut().rollback = enabled;
        self
    }

    /// Who approves tool calls whose contract requires approval. Default: [`DenyAll`].
    pub fn approval_handler(mut self, handler: impl ApprovalHandler + 'static) -> Self {
        self.config_mut().approval = Arc::new(handler);
        self
    }

    /// Runs at most `limit` steps at the same time (at least 1).
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.config_mut().max_concurrency = Some(limit.max(1));
        self
    }

    /// Backoff between attempts of failing tool calls.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.config_mut().retry = retry;
        self
    }

    /// How long running steps may go on after another step failed before they are cancelled.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config_mut().grace = grace;
        self
    }

    /// Tools of the orchestrator itself: steps that name one of them run it directly even
    /// without an agent, and rollback finds compensating tools here after the agent's own.
    pub fn tools(mut self, tools: ToolSet) -> Self {
        self.config_mut().tools.extend(&tools);
        self
    }

    /// Calls `observer` with each event as it happens (for progress displays and journals).
    pub fn on_event(mut self, observer: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.config_mut().observers.push(Arc::new(observer));
        self
    }

    /// The registry.
    pub fn registry(&self) -> &AgentRegistry {
        &self.config.registry
    }

    /// Runs an approved plan and updates its steps' status, result and error.
    ///
    /// `Err` only when nothing ran: the plan is not approved or not valid. A step that fails
    /// gives `Ok` with `success == false`, after rollback. Steps already `completed` are kept
    /// (their results feed later steps); others start from `pending`.
    ///
    /// The run happens on a task of its own. Once started it always finishes what it started:
    /// dropping this future does not abort steps half-way or skip the rollback (the plan's
    /// final state is then lost to the caller). To stop a run early, use
    /// [`execute_with_cancel`](Self::execute_with_cancel).
    pub async fn execute(&self, plan: &mut Plan) -> Result<AgentResult, OrchestratorError> {
        self.execute_with_cancel(plan, CancelToken::new()).await
    }

    /// Like [`execute`](Self::execute), and stops the run when `cancel` is cancelled: no new
    /// step starts, running steps get the grace period, and completed work is rolled back.
    ///
    /// ```
    /// use agenthelm::prelude::*;
    /// use agenthelm::orchestrate::CancelToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut plan = Plan::new("nothing to do");
    /// plan.approved = true;
    /// let cancel = CancelToken::new();
    /// cancel.cancel(); // e.g. from a Ctrl-C handler
    /// let result = Orchestrator::new(AgentRegistry::new())
    ///     .execute_with_cancel(&mut plan, cancel)
    ///     .await?;
    /// assert!(!result.success);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn execute_with_cancel(
        &self,
        plan: &mut Plan,
        cancel: CancelToken,
    ) -> Result<AgentResult, OrchestratorError> {
        if !plan.approved {
            return Err(OrchestratorError::NotApproved {
                goal: plan.goal.clone(),
            });
        }
        let graph = self.config.check(plan)?;
        let owned = std::mem::replace(plan, Plan::new(String::new()));
        let run = Run::new(Arc::clone(&self.config), owned, graph, cancel);
        match tokio::spawn(run.execute()).await {
            Ok((finished, result)) => {
                *plan = finished;
                Ok(result)
            }
            Err(e) => Ok(AgentResult::fail(format!(
                "the run stopped abnormally ({e}); the plan's state was lost"
            ))),
        }
    }

    /// Checks `plan` against this orchestrator's agents and tools, as [`execute`](Self::execute)
    /// does before running anything. Reports every problem at once.
    pub fn check(&self, plan: &Plan) -> Result<(), PlanError> {
        self.config.check(plan).map(drop)
    }
}

impl Config {
    /// Validates `plan` for these agents and tools and returns its dependency graph.
    pub(crate) fn check(&self, plan: &Plan) -> Result<Graph, PlanError> {
        let (mut problems, graph) = validate::analyze(plan);
        for step in &plan.steps {
            self.check_step(step, &mut problems);
        }
        if problems.is_empty() {
            Ok(graph)
        } else {
            Err(PlanError::Invalid(problems))
        }
    }

    fn check_step(&self, step: &crate::plan::PlanStep, problems: &mut Vec<PlanProblem>) {
        let agent = match &step.agent_name {
            Some(name) => match self.registry.get(name) {
                Some(agent) => Some(agent),
                None => {
                    problems.push(PlanProblem::UnknownAgent {
                        step: step.id.clone(),
                        agent: name.clone(),
                    });
                    return;
                }
            },
            None => self.default_agent.as_ref(),
        };
        let own_tool = step
            .tool_name
            .as_deref()
            .is_some_and(|t| self.tools.contains(t));
        if agent.is_none() && !own_tool {
            problems.push(PlanProblem::NoAgent {
                step: step.id.clone(),
            });
            return;
        }
        let agent_tools = agent.and_then(|a| a.tools());
        let tools_known = agent.is_none() || agent_tools.is_some();
        let find = |name: &str| self.find_tool(agent.map(|a| &**a), name);
        if let Some(tool_name) = &step.tool_name {
            match find(tool_name) {
                Some(tool) => {
                    // The tool's own compensation is used unless the step overrides it.
                    let default_comp = tool.spec().contract.compensating_tool.as_ref();
                    let missing = default_comp.filter(|c| find(c).is_none());
                    if let (None, Some(comp)) = (&step.compensate_tool, missing) {
                        problems.push(PlanProblem::UnknownCompensatingTool {
                            step: step.id.clone(),
                            tool: comp.clone(),
                        });
                    }
                }
                None if tools_known => problems.push(PlanProblem::UnknownTool {
                    step: step.id.clone(),
                    agent: agent.map(|a| a.name().to_owned()),
                    tool: tool_name.clone(),
                }),
                None => {}
            }
        }
        if let Some(comp) = &step.compensate_tool {
            if find(comp).is_none() {
                problems.push(PlanProblem::UnknownCompensatingTool {
                    step: step.id.clone(),
                    tool: comp.clone(),
                });
            }
        }
    }

    /// The agent that runs `step`.
    pub(crate) fn agent_for(&self, step: &crate::plan::PlanStep) -> Option<&Arc<dyn Agent>> {
        match &step.agent_name {
            Some(name) => self.registry.get(name),
            None => self.default_agent.as_ref(),
        }
    }

    /// A tool by name: the agent's own first, then the orchestrator's.
    pub(crate) fn find_tool<'s>(
        &'s self,
        agent: Option<&'s dyn Agent>,
        name: &str,
    ) -> Option<&'s Arc<dyn Tool>> {
        agent
            .and_then(|a| a.tools())
            .and_then(|tools| tools.get(name))
            .or_else(|| self.tools.get(name))
    }
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        f.debug_struct("Orchestrator")
            .field("registry", &config.registry)
            .field(
                "default_agent",
                &config.default_agent.as_ref().map(|a| a.name().to_owned()),
            )
            .field("tools", &config.tools)
            .field("rollback", &config.rollback)
            .field("max_concurrency", &config.max_concurrency)
            .field("retry", &config.retry)
            .field("grace", &config.grace)
            .finish_non_exhaustive()
    }
}
