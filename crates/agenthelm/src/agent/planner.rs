//! The planner: a model turns a goal into a [`Plan`] that is checked against the tools and agents
//! it may use, and repaired by the model until it is valid.

use async_trait::async_trait;
use serde_json::{json, Value};
use std::fmt;
use std::fmt::Write;
use std::sync::Arc;

use super::llm_call::ask_model;
use super::{Agent, AgentInfo, AgentRegistry, AgentResult, Catalogue, StepContext};
use crate::exec::{EventSink, Observer};
use crate::lm::{CompletionRequest, Lm, LmError, Message, ResponseFormat};
use crate::plan::{Plan, PlanProblem, Reference, StepStatus};
use crate::tool::ToolSet;
use crate::trace::Event;

/// The name checks give the agent that runs steps naming none, which the planner does not know.
/// It never reaches the model: problems about that agent's tools are worded without it.
const UNNAMED_DEFAULT_AGENT: &str = "default agent";

/// An agent that writes plans: it asks its model for a plan of a goal, checks the plan, and when
/// something is wrong asks again, listing the exact problems.
///
/// The plan is asked for in its JSON form (`goal`, `reasoning`, `steps` with the
/// [`PlanStep`](crate::PlanStep) fields), with the provider's structured output where it has it.
/// A reply that wraps the JSON in prose or a ```` ```json ```` fence is read too. A plan is
/// accepted only when its JSON has the right shape and it passes a [`Catalogue`] check: its ids
/// are unique, its dependencies exist and form no cycle, every tool is one the planner was given
/// (and one its step's agent has), every agent is known, and every step's arguments fit its
/// tool's schema. The problems go back to the model in words that say what it may use. The
/// planner never returns a step that uses a tool it was not given. After `max_repairs` rounds
/// (default 2) it gives up with [`PlannerError::Invalid`], naming the problems that remained.
///
/// ```
/// use agenthelm::prelude::*;
/// use serde_json::json;
///
/// /// Search the web.
/// #[tool]
/// fn search(query: String) -> String { format!("results for {query}") }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let reply = json!({
///     "goal": "Research Rust",
///     "reasoning": "One search is enough.",
///     "steps": [{"id": "s1", "description": "Search", "tool_name": "search",
///                "args": {"query": "rust"}, "depends_on": []}]
/// });
/// let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text(reply.to_string())]));
/// let planner = PlannerAgent::new("planner", lm, tools![search]).max_steps(5);
/// let plan = planner.plan("Research Rust").await.unwrap();
/// assert!(!plan.approved);
/// assert_eq!(plan.steps[0].tool_name.as_deref(), Some("search"));
/// # }
/// ```
pub struct PlannerAgent {
    name: String,
    lm: Lm,
    tools: ToolSet,
    role: Option<String>,
    max_steps: usize,
    max_repairs: u32,
    agents: Option<Vec<AgentInfo>>,
    observers: Vec<Observer>,
}

/// Why no plan came out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlannerError {
    /// The model call failed.
    #[error("planner `{planner}`: {source}")]
    Lm {
        /// The planner's name.
        planner: String,
        /// The model's error.
        source: LmError,
    },
    /// Every reply, the repairs included, was an invalid plan.
    #[error(
        "planner `{planner}` got no valid plan in {attempts} replies; the last one had {}: {}",
        count(problems.len()),
        problems.join("; ")
    )]
    Invalid {
        /// The planner's name.
        planner: String,
        /// How many replies were read.
        attempts: u32,
        /// What was wrong with the last one.
        problems: Vec<String>,
    },
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 problem".to_owned()
    } else {
        format!("{n} problems")
    }
}

impl PlannerAgent {
    /// A planner called `name` that plans with `lm` and may use `tools` in its steps.
    pub fn new(name: impl Into<String>, lm: Lm, tools: ToolSet) -> Self {
        PlannerAgent {
            name: name.into(),
            lm,
            tools,
            role: None,
            max_steps: 10,
            max_repairs: 2,
            agents: None,
            observers: Vec::new(),
        }
    }

    /// What the planner is for; part of its instructions.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// The most steps a plan may have (default 10; at least 1).
    pub fn max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = max_steps.max(1);
        self
    }

    /// How many times an invalid plan is sent back to be fixed (default 2).
    pub fn max_repairs(mut self, max_repairs: u32) -> Self {
        self.max_repairs = max_repairs;
        self
    }

    /// The agents steps may be assigned to: their names, descriptions and tools go into the
    /// prompt, and a step naming another agent (or a tool its agent lacks) is a problem. Without
    /// this, steps must not name agents (the orchestrator's default agent runs them).
    pub fn agents(mut self, registry: &AgentRegistry) -> Self {
        self.agents = Some(registry.agents().map(|a| AgentInfo::of(&**a)).collect());
        self
    }

    /// Calls `observer` with each event (model calls) as it happens.
    pub fn on_event(mut self, observer: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// The model.
    pub fn lm(&self) -> &Lm {
        &self.lm
    }

    /// Writes a valid, unapproved plan for `goal`.
    pub async fn plan(&self, goal: &str) -> Result<Plan, PlannerError> {
        self.plan_traced(goal).await.0
    }

    /// Like [`plan`](Self::plan), and also returns what it took: the model calls as events,
    /// tokens, cost (and unpriced calls) and the number of calls, in an [`AgentResult`] whose
    /// `answer` is the plan's YAML.
    pub async fn plan_traced(&self, goal: &str) -> (Result<Plan, PlannerError>, AgentResult) {
        let sink = EventSink::with_observers(self.observers.clone());
        let ctx = StepContext::new()
            .with_agent(self.name.clone())
            .with_sink(sink.clone());
        let mut report = AgentResult::default();
        let outcome = self.write_plan(goal, &ctx, &mut report).await;
        report.events = sink.take();
        match &outcome {
            Ok(plan) => match plan.to_yaml() {
                Ok(yaml) => {
                    report.success = true;
                    report.answer = Some(yaml);
                }
                Err(e) => report.error = Some(e.to_string()),
            },
            Err(e) => report.error = Some(e.to_string()),
        }
        (outcome, report)
    }

    async fn write_plan(
        &self,
        goal: &str,
        ctx: &StepContext,
        report: &mut AgentResult,
    ) -> Result<Plan, PlannerError> {
        let mut request = CompletionRequest {
            messages: vec![
                Message::system(self.instructions()),
                Message::user(format!("Goal: {goal}")),
            ],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "plan".to_owned(),
                schema: self.plan_schema(),
            }),
            ..CompletionRequest::default()
        };
        let mut problems = Vec::new();
        for attempt in 1..=self.max_repairs + 1 {
            report.iterations += 1;
            let completion =
                ask_model(&self.lm, &request, ctx, report)
                    .await
                    .map_err(|source| PlannerError::Lm {
                        planner: self.name.clone(),
                        source,
                    })?;
            let reply = completion.text.unwrap_or_default();
            match self.read_plan(&reply, goal) {
                Ok(plan) => return Ok(plan),
                Err(found) => problems = found,
            }
            if attempt <= self.max_repairs {
                request.messages.push(Message::assistant(reply, Vec::new()));
                request
                    .messages
                    .push(Message::user(repair_request(&problems)));
            }
        }
        Err(PlannerError::Invalid {
            planner: self.name.clone(),
            attempts: self.max_repairs + 1,
            problems,
        })
    }

    /// The plan in `reply`, or everything wrong with it.
    fn read_plan(&self, reply: &str, goal: &str) -> Result<Plan, Vec<String>> {
        let Some(json) = extract_json(reply) else {
            return Err(vec![
                "the reply contains no JSON object; reply with the plan as one JSON object"
                    .to_owned(),
            ]);
        };
        let mut plan = Plan::from_json(json).map_err(|e| vec![e.to_string()])?;
        // Run state is not the planner's to set, nor is approval.
        plan.approved = false;
        for step in &mut plan.steps {
            step.status = StepStatus::Pending;
            step.result = None;
            step.error = None;
            // Models often write "" for an optional name they leave out.
            for name in [
                &mut step.agent_name,
                &mut step.tool_name,
                &mut step.compensate_tool,
            ] {
                if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                    *name = None;
                }
            }
        }
        if plan.goal.trim().is_empty() {
            plan.goal = goal.to_owned();
        }
        let problems = self.problems(&plan);
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(problems)
        }
    }

    /// Everything wrong with `plan` for this planner's tools and agents, worded for the model.
    fn problems(&self, plan: &Plan) -> Vec<String> {
        let mut problems = Vec::new();
        if plan.steps.is_empty() {
            problems.push("the plan has no steps".to_owned());
        }
        if plan.steps.len() > self.max_steps {
            problems.push(format!(
                "the plan has {} steps; at most {} are allowed",
                plan.steps.len(),
                self.max_steps
            ));
        }
        let found = self.catalogue().check(plan);
        problems.extend(found.iter().map(|problem| self.describe(problem)));
        problems
    }

    /// What steps may use: only the planner's tools, so each agent's tools are narrowed to
    /// them, and steps that name no agent may use them all (whoever runs those steps is not
    /// known yet).
    fn catalogue(&self) -> Catalogue {
        let unnamed = AgentInfo::new(UNNAMED_DEFAULT_AGENT).with_tools(self.tools.clone());
        let catalogue = Catalogue::new()
            .default_agent(unnamed)
            .extra_tools(&self.tools)
            .strict_args(true);
        self.agents
            .iter()
            .flatten()
            .fold(catalogue, |catalogue, agent| {
                catalogue.agent(self.narrowed(agent))
            })
    }

    /// `agent` with only those of the planner's tools it has (all of them when its tools are
    /// not known).
    fn narrowed(&self, agent: &AgentInfo) -> AgentInfo {
        let has = |name: &str| agent.tools.as_ref().is_none_or(|own| own.contains(name));
        let tools = self
            .tools
            .iter()
            .filter(|tool| has(&tool.spec().name))
            .fold(ToolSet::new(), |set, tool| set.with(Arc::clone(tool)));
        AgentInfo {
            tools: Some(tools),
            ..agent.clone()
        }
    }

    /// A problem in words that tell the model what it may use instead.
    fn describe(&self, problem: &PlanProblem) -> String {
        match problem {
            PlanProblem::UnknownAgent { step, agent } => match &self.agents {
                None => format!(
                    "step `{step}` names agent `{agent}`, but no agents are available: leave \
                     agent_name out"
                ),
                Some(agents) => {
                    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
                    format!(
                        "step `{step}` names agent `{agent}`, which does not exist (agents: {})",
                        names.join(", ")
                    )
                }
            },
            PlanProblem::UnknownTool { step, tool, .. } if !self.tools.contains(tool) => format!(
                "step `{step}`: tool `{tool}` is not available (available tools: {})",
                self.tool_list()
            ),
            PlanProblem::UnknownTool {
                step,
                agent: Some(agent),
                tool,
            } => format!("step `{step}`: agent `{agent}` does not have tool `{tool}`"),
            PlanProblem::UnknownCompensatingTool { step, tool } => format!(
                "step `{step}`: compensating tool `{tool}` is not available (available tools: {})",
                self.tool_list()
            ),
            other => other.to_string(),
        }
    }

    fn tool_list(&self) -> String {
        let names: Vec<&str> = self.tools.names().collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }

    fn instructions(&self) -> String {
        let mut text = format!(
            "You are {}, a planner. Break the user's goal into a short plan of steps that \
             tools and agents will carry out.",
            self.name
        );
        if let Some(role) = &self.role {
            let _ = write!(text, " Your role: {role}.");
        }
        let _ = write!(
            text,
            "\n\nReply with one JSON object and nothing else: {{\"goal\": string, \"reasoning\": \
             string, \"steps\": [{{\"id\": string, \"description\": string, \"tool_name\": \
             string (optional), \"agent_name\": string (optional), \"args\": object, \
             \"depends_on\": [step ids]}}]}}.\n\
             Rules:\n\
             - At most {} steps. Ids are short, unique and snake_case.\n\
             - A step runs when the steps in its depends_on have finished; steps that do not \
             depend on each other run at the same time. No cycles.\n\
             - tool_name must be one of the tools below, and args must match its parameters. \
             To use the result of an earlier step in args, write \"{}\" and list that step \
             in depends_on.\n",
            self.max_steps,
            Reference::Step {
                id: "<id>",
                path: Vec::new()
            }
        );
        text.push_str("\nTools:\n");
        if self.tools.is_empty() {
            text.push_str("(none: leave tool_name out)\n");
        }
        for spec in self.tools.specs() {
            let _ = writeln!(
                text,
                "- {}: {} Parameters: {}",
                spec.name, spec.description, spec.parameters
            );
        }
        match &self.agents {
            None => text.push_str("\nLeave agent_name out: a default agent runs every step.\n"),
            Some(agents) => {
                text.push_str("\nAgents (set agent_name to the one whose tools the step needs):\n");
                for agent in agents {
                    let _ = write!(text, "- {}", agent.name);
                    if let Some(description) = &agent.description {
                        let _ = write!(text, ": {description}");
                    }
                    if let Some(tools) = agent.tool_names() {
                        let _ = write!(text, " (tools: {})", tools.join(", "));
                    }
                    text.push('\n');
                }
            }
        }
        text
    }

    /// The JSON schema of the plan's JSON form, for structured output.
    fn plan_schema(&self) -> Value {
        let mut step = json!({
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "description": {"type": "string"},
                "args": {"type": "object"},
                "depends_on": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["id", "description", "args", "depends_on"]
        });
        if !self.tools.is_empty() {
            let names: Vec<&str> = self.tools.names().collect();
            step["properties"]["tool_name"] = json!({"type": "string", "enum": names});
        }
        if let Some(agents) = self.agents.as_ref().filter(|a| !a.is_empty()) {
            let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
            step["properties"]["agent_name"] = json!({"type": "string", "enum": names});
        }
        json!({
            "type": "object",
            "properties": {
                "goal": {"type": "string"},
                "reasoning": {"type": "string"},
                "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": self.max_steps}
            },
            "required": ["goal", "reasoning", "steps"]
        })
    }
}

/// The message that sends an invalid plan back.
fn repair_request(problems: &[String]) -> String {
    let mut text = String::from("That plan cannot be used. Problems:\n");
    for problem in problems {
        let _ = writeln!(text, "- {problem}");
    }
    text.push_str("Reply with the whole corrected plan as one JSON object.");
    text
}

/// The JSON object in a reply: the whole reply, the first ```` ``` ```` fence holding an
/// object, or the first balanced `{ ... }` in the text.
fn extract_json(reply: &str) -> Option<&str> {
    let trimmed = reply.trim();
    if trimmed.starts_with('{') && serde_json::from_str::<Value>(trimmed).is_ok() {
        return Some(trimmed);
    }
    let mut rest = reply;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        let Some(close) = body.find("```") else { break };
        let candidate = body[..close].trim();
        if candidate.starts_with('{') {
            return Some(candidate);
        }
        rest = &body[close + 3..];
    }
    balanced_object(reply)
}

/// The first `{ ... }` whose braces balance, minding strings.
fn balanced_object(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

#[async_trait]
impl Agent for PlannerAgent {
    fn name(&self) -> &str {
        &self.name
    }

    /// Plans `task` as a goal; the answer is the plan's YAML.
    async fn run(&self, task: &str) -> AgentResult {
        self.plan_traced(task).await.1
    }

    fn description(&self) -> Option<&str> {
        Some(
            self.role
                .as_deref()
                .unwrap_or("Writes a plan (YAML) for a goal"),
        )
    }
}

impl fmt::Debug for PlannerAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlannerAgent")
            .field("name", &self.name)
            .field("lm", &self.lm)
            .field("tools", &self.tools)
            .field("role", &self.role)
            .field("max_steps", &self.max_steps)
            .field("max_repairs", &self.max_repairs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_in_prose_and_fences() {
        assert_eq!(extract_json(" {\"a\": 1} "), Some("{\"a\": 1}"));
        assert_eq!(
            extract_json("Here you go:\n```json\n{\"a\": 1}\n```\nEnjoy."),
            Some("{\"a\": 1}")
        );
        assert_eq!(
            extract_json("```\nnot it\n```\n```json\n{\"b\": 2}\n```"),
            Some("{\"b\": 2}")
        );
        assert_eq!(
            extract_json("Plan: {\"a\": \"}{\", \"b\": {\"c\": 1}} done"),
            Some("{\"a\": \"}{\", \"b\": {\"c\": 1}}")
        );
        assert_eq!(extract_json("no json here"), None);
        assert_eq!(extract_json("{ unbalanced"), None);
    }
}
