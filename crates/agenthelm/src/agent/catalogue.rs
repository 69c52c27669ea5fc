//! What a plan may use (agents, their tools, a default agent, extra tools) and the one check of a
//! plan against it, shared by the orchestrator and the planner.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Agent, AgentRegistry};
use crate::plan::graph::Graph;
use crate::plan::{env_references_in, validate, Plan, PlanProblem, PlanStep, Template};
use crate::redact::Redactor;
use crate::tool::{Tool, ToolSet};

/// What a catalogue knows of one agent.
#[derive(Clone)]
pub struct AgentInfo {
    /// The agent's name.
    pub name: String,
    /// What it is good at, when it says.
    pub description: Option<String>,
    /// Its tools, when it has a known set. A step routed to it may name only these; with
    /// `None` any tool name is accepted (the agent may know it).
    pub tools: Option<ToolSet>,
}

impl AgentInfo {
    /// An agent called `name` with no description and no known tools.
    pub fn new(name: impl Into<String>) -> Self {
        AgentInfo {
            name: name.into(),
            description: None,
            tools: None,
        }
    }

    /// Sets the agent's tools.
    pub fn with_tools(mut self, tools: ToolSet) -> Self {
        self.tools = Some(tools);
        self
    }

    /// What `agent` says of itself: name, description and tools.
    pub fn of(agent: &dyn Agent) -> Self {
        AgentInfo {
            name: agent.name().to_owned(),
            description: agent.description().map(str::to_owned),
            tools: agent.tools().cloned(),
        }
    }

    /// The agent's tool names, when known.
    pub fn tool_names(&self) -> Option<Vec<&str>> {
        self.tools.as_ref().map(|tools| tools.names().collect())
    }
}

impl fmt::Debug for AgentInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentInfo")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("tools", &self.tool_names())
            .finish()
    }
}

/// What a plan may use, and the check of a plan against it: [`check`](Catalogue::check) reports
/// every structural problem ([`Plan::validate`]) and every misfit with the agents and tools at
/// once.
///
/// - A step runs with the agent it names, or with the default agent. A step that names no
///   agent may also call one of the extra tools directly; with no default agent that is all it
///   may do.
/// - A step that names an agent whose tools are known may name only those tools. The extra
///   tools do not widen that: for such a step they are reachable only as compensating tools.
/// - Compensating tools (the step's own, or the one its tool's contract names) are looked up
///   among the agent's tools, then the extra tools.
/// - With [`strict_args`](Catalogue::strict_args), and always in a step with no agent (its
///   tool is called directly), a step's arguments must fit its tool's schema; values holding a `{{steps.<id>.result}}` reference are filled in at run time and
///   are not checked.
///
/// ```
/// use agenthelm::agent::{AgentInfo, Catalogue};
/// use agenthelm::plan::PlanProblem;
/// use agenthelm::prelude::*;
///
/// /// Read a file.
/// #[tool]
/// fn read(path: String) -> String { path }
///
/// /// Delete a file.
/// #[tool]
/// fn delete(path: String) -> String { path }
///
/// let catalogue = Catalogue::new()
///     .agent(AgentInfo::new("reader").with_tools(tools![read]))
///     .extra_tools(&tools![delete]);
/// let mut plan = Plan::new("tidy up");
/// plan.steps.push(PlanStep::new("rm", "remove").agent("reader").tool("delete"));
/// assert_eq!(
///     catalogue.check(&plan),
///     [PlanProblem::UnknownTool { step: "rm".into(), agent: Some("reader".into()), tool: "delete".into() }]
/// );
/// ```
#[derive(Clone, Debug, Default)]
pub struct Catalogue {
    agents: Vec<AgentInfo>,
    default_agent: Option<AgentInfo>,
    extra_tools: ToolSet,
    strict_args: bool,
    /// The variables plans may read as `{{env.NAME}}`, each with whether it is set.
    env: BTreeMap<String, bool>,
}

impl Catalogue {
    /// A catalogue with no agents and no tools.
    pub fn new() -> Self {
        Self::default()
    }

    /// The agents of `registry`, in registration order.
    pub fn from_registry(registry: &AgentRegistry) -> Self {
        registry.agents().fold(Self::new(), |catalogue, agent| {
            catalogue.agent(AgentInfo::of(&**agent))
        })
    }

    /// Adds an agent steps may name.
    pub fn agent(mut self, agent: AgentInfo) -> Self {
        self.agents.push(agent);
        self
    }

    /// Sets the agent for steps that name none.
    pub fn default_agent(mut self, agent: AgentInfo) -> Self {
        self.default_agent = Some(agent);
        self
    }

    /// Adds tools held outside the agents (an orchestrator's own).
    pub fn extra_tools(mut self, tools: &ToolSet) -> Self {
        self.extra_tools.extend(tools);
        self
    }

    /// Whether arguments that do not fit their tool's schema are problems (default: no, as the
    /// orchestrator then hands the step to its agent instead of calling the tool). In a step
    /// with no agent they are always problems: nothing else could run the step.
    pub fn strict_args(mut self, strict: bool) -> Self {
        self.strict_args = strict;
        self
    }

    /// Lets steps read the variables `redactor` allows as `{{env.NAME}}` (see
    /// [`Redactor::env_var`]); any other `{{env.NAME}}`, or one of a variable that is not set,
    /// is a problem.
    pub fn env_from(mut self, redactor: &Redactor) -> Self {
        self.env = redactor
            .env_names()
            .map(|name| (name.to_owned(), redactor.env_status(name) == Some(true)))
            .collect();
        self
    }

    /// The agents steps may name, in the order they were added.
    pub fn agents(&self) -> &[AgentInfo] {
        &self.agents
    }

    /// Every problem of `plan` (empty when it may run), structural ones first, then step by step.
    pub fn check(&self, plan: &Plan) -> Vec<PlanProblem> {
        self.analyze(plan).0
    }

    /// Like [`check`](Self::check), with the plan's dependency graph.
    pub(crate) fn analyze(&self, plan: &Plan) -> (Vec<PlanProblem>, Graph) {
        let (mut problems, graph) = validate::analyze(plan);
        for step in &plan.steps {
            self.check_step(step, &mut problems);
            self.check_env(step, &mut problems);
        }
        (problems, graph)
    }

    /// `{{env.NAME}}` only for the variables allowed, and set: a plan written by a model must
    /// not read the environment.
    fn check_env(&self, step: &PlanStep, problems: &mut Vec<PlanProblem>) {
        let fields = [
            ("args", Some(&step.args)),
            ("compensate_args", step.compensate_args.as_ref()),
        ];
        for (field, value) in fields {
            for name in value.map(env_references_in).unwrap_or_default() {
                let allowed = self.env.get(name);
                if allowed != Some(&true) {
                    problems.push(PlanProblem::BadEnvReference {
                        step: step.id.clone(),
                        field,
                        name: name.to_owned(),
                        allowed: allowed.is_some(),
                    });
                }
            }
        }
    }

    fn check_step(&self, step: &PlanStep, problems: &mut Vec<PlanProblem>) {
        let agent = match self.agent_for(step) {
            Ok(agent) => agent,
            Err(problem) => return problems.push(problem),
        };
        let tool = step
            .tool_name
            .as_deref()
            .and_then(|name| self.step_tool(step, agent, name, problems));
        if agent.is_none() && tool.is_none() {
            // A step naming a tool that no one has was told so above.
            let unknown = step
                .tool_name
                .as_deref()
                .is_some_and(|name| !self.some_agent_has(name));
            if !unknown {
                problems.push(PlanProblem::NoAgent {
                    step: step.id.clone(),
                });
            }
            return;
        }
        if let Some(tool) = tool {
            self.check_tool_use(step, agent, tool, problems);
        }
        if let Some(comp) = &step.compensate_tool {
            if self.find_tool(agent, comp).is_none() {
                problems.push(unknown_compensation(step, comp));
            }
        }
    }

    /// The agent `step` names, or the default agent when it names none.
    fn agent_for(&self, step: &PlanStep) -> Result<Option<&AgentInfo>, PlanProblem> {
        let Some(name) = &step.agent_name else {
            return Ok(self.default_agent.as_ref());
        };
        match self.agents.iter().find(|a| &a.name == name) {
            Some(agent) => Ok(Some(agent)),
            None => Err(PlanProblem::UnknownAgent {
                step: step.id.clone(),
                agent: name.clone(),
            }),
        }
    }

    /// The tool `step` calls: one of its agent's tools, else an extra tool where one is
    /// reachable. A tool outside an agent's known list is a problem; with unknown tools
    /// there is nothing to say (the agent may know it).
    fn step_tool<'c>(
        &'c self,
        step: &PlanStep,
        agent: Option<&'c AgentInfo>,
        name: &str,
        problems: &mut Vec<PlanProblem>,
    ) -> Option<&'c Arc<dyn Tool>> {
        let own = agent.and_then(|a| a.tools.as_ref());
        if let Some(tool) = own.and_then(|tools| tools.get(name)) {
            return Some(tool);
        }
        // Naming an agent grants its tools and no others: the extra tools stay out of reach
        // unless the step names no agent or its agent's tools are not known.
        let reachable = step.agent_name.is_none() || own.is_none();
        if let Some(tool) = self.extra_tools.get(name).filter(|_| reachable) {
            return Some(tool);
        }
        // An agent whose tools are not known may have it. With no agent, a tool some agent
        // has is a missing agent (said by the caller); one nobody has is unknown.
        let unknown_to = match (agent, own) {
            (Some(agent), Some(_)) => Some(Some(agent.name.clone())),
            (None, _) if !self.some_agent_has(name) => Some(None),
            _ => None,
        };
        if let Some(agent) = unknown_to {
            problems.push(PlanProblem::UnknownTool {
                step: step.id.clone(),
                agent,
                tool: name.to_owned(),
            });
        }
        None
    }

    /// Whether some agent lists tool `name`.
    fn some_agent_has(&self, name: &str) -> bool {
        self.agents.iter().chain(&self.default_agent).any(|a| {
            a.tools
                .as_ref()
                .is_some_and(|tools| tools.get(name).is_some())
        })
    }

    /// The tool's own compensation (unless the step overrides it) and its arguments.
    fn check_tool_use(
        &self,
        step: &PlanStep,
        agent: Option<&AgentInfo>,
        tool: &Arc<dyn Tool>,
        problems: &mut Vec<PlanProblem>,
    ) {
        let spec = tool.spec();
        if step.compensate_tool.is_none() {
            if let Some(comp) = &spec.contract.compensating_tool {
                if self.find_tool(agent, comp).is_none() {
                    problems.push(unknown_compensation(step, comp));
                }
            }
        }
        // A step with no agent calls its tool directly: arguments that do not fit could only
        // fail it once the run is under way.
        let must_fit = self.strict_args || agent.is_none();
        if must_fit && step.args.is_object() {
            let misfits = spec.argument_problems(&step.args);
            for misfit in misfits {
                if !misfit.locate(&step.args).is_some_and(holds_reference) {
                    problems.push(PlanProblem::InvalidArgs {
                        step: step.id.clone(),
                        tool: spec.name.clone(),
                        path: misfit.path,
                        message: misfit.message,
                    });
                }
            }
        }
    }

    /// A tool by name: the agent's own first, then the extra tools (as rollback finds them).
    fn find_tool<'c>(
        &'c self,
        agent: Option<&'c AgentInfo>,
        name: &str,
    ) -> Option<&'c Arc<dyn Tool>> {
        agent
            .and_then(|agent| agent.tools.as_ref())
            .and_then(|tools| tools.get(name))
            .or_else(|| self.extra_tools.get(name))
    }
}

impl From<&AgentRegistry> for Catalogue {
    fn from(registry: &AgentRegistry) -> Self {
        Catalogue::from_registry(registry)
    }
}

fn unknown_compensation(step: &PlanStep, tool: &str) -> PlanProblem {
    PlanProblem::UnknownCompensatingTool {
        step: step.id.clone(),
        tool: tool.to_owned(),
    }
}

/// Whether `value` is a string with a reference in it, which is filled in at run time.
fn holds_reference(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| Template::parse(text).references().next().is_some())
}
