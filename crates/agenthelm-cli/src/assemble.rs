//! Turning a workspace into the library's pieces: command tools, models, agents, orchestrator.

use agenthelm::lm::{Completion, CompletionRequest};
use agenthelm::tool::ToolSpec;
use agenthelm::{AgentRegistry, LanguageModel, Lm, LmError, ToolAgent, ToolSet};
use async_trait::async_trait;
use std::time::Duration;

use crate::command_tool::CommandTool;
use crate::exit::BadInput;
use crate::user_config::UserConfig;
use crate::workspace::{ToolConfig, Workspace};

/// How a model that cannot be built is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelNeed {
    /// The command talks to the model: a model that cannot be built is bad input.
    Required,
    /// Plan steps may never need a model (direct tool calls): the error is reported by the
    /// step that first asks the model.
    OnDemand,
}

/// The workspace with its tools and models resolved.
pub struct Assembly<'w> {
    /// The workspace.
    pub workspace: &'w Workspace,
    /// Every command tool of the workspace.
    pub tools: ToolSet,
    /// `--model`: overrides every model of the workspace.
    forced_model: Option<String>,
    user_model: Option<String>,
}

impl<'w> Assembly<'w> {
    /// Builds the workspace's tools; `forced_model` (from `--model`) overrides every model.
    pub fn new(workspace: &'w Workspace, user: &UserConfig, forced_model: Option<&str>) -> Self {
        let mut tools = ToolSet::new();
        for (name, config) in &workspace.config.tools {
            tools.insert(command_tool(name, config, workspace));
        }
        Assembly {
            workspace,
            tools,
            forced_model: forced_model.map(str::to_owned),
            user_model: user.model.clone(),
        }
    }

    /// The model id for `agent` (or for the planner, with `None`).
    pub fn model_id(&self, agent: Option<&str>) -> Option<String> {
        let agent_model = agent
            .and_then(|a| self.workspace.config.agents.get(a))
            .and_then(|a| a.model.clone());
        self.forced_model
            .clone()
            .or(agent_model)
            .or_else(|| self.workspace.config.model.clone())
            .or_else(|| self.user_model.clone())
    }

    /// The model for `agent` (or for the planner, with `None`).
    pub fn lm(&self, agent: Option<&str>, need: ModelNeed) -> anyhow::Result<Lm> {
        let id = self.model_id(agent);
        let built = match &id {
            Some(id) => Lm::new(id).map_err(|e| e.to_string()),
            None => Err(format!(
                "no model is configured: set `model:` in {} or pass --model",
                self.workspace.file.display()
            )),
        };
        match (built, need) {
            (Ok(lm), _) => Ok(lm),
            (Err(message), ModelNeed::Required) => Err(BadInput(message).into()),
            (Err(message), ModelNeed::OnDemand) => Ok(Lm::from_model(Unavailable {
                id: id.unwrap_or_else(|| "none".to_owned()),
                message,
            })),
        }
    }

    /// The tools an agent lists.
    pub fn agent_tools(&self, agent: &str) -> ToolSet {
        let mut set = ToolSet::new();
        if let Some(config) = self.workspace.config.agents.get(agent) {
            for name in &config.tools {
                if let Some(tool) = self.tools.get(name) {
                    set.insert(std::sync::Arc::clone(tool));
                }
            }
        }
        set
    }

    /// The agent called `name`, as the workspace declares it.
    pub fn agent(&self, name: &str, need: ModelNeed) -> anyhow::Result<ToolAgent> {
        let Some(config) = self.workspace.config.agents.get(name) else {
            let defined: Vec<&str> = self
                .workspace
                .config
                .agents
                .keys()
                .map(String::as_str)
                .collect();
            return Err(BadInput(format!(
                "agent `{name}` is not defined in {} (defined: {})",
                self.workspace.file.display(),
                if defined.is_empty() {
                    "none".to_owned()
                } else {
                    defined.join(", ")
                }
            ))
            .into());
        };
        let mut agent = ToolAgent::new(name, self.lm(Some(name), need)?, self.agent_tools(name));
        if let Some(role) = &config.role {
            agent = agent.role(role);
        }
        if let Some(max_iters) = config.max_iters {
            agent = agent.max_iters(max_iters);
        }
        Ok(agent)
    }

    /// Every agent of the workspace, registered by name.
    pub fn registry(&self, need: ModelNeed) -> anyhow::Result<AgentRegistry> {
        let mut registry = AgentRegistry::new();
        for name in self.workspace.config.agents.keys() {
            registry
                .register(self.agent(name, need)?)
                .map_err(|e| BadInput(e.to_string()))?;
        }
        Ok(registry)
    }

    /// The agent for `--agent`, else the workspace's default agent, else its only agent.
    pub fn pick_agent(&self, requested: Option<&str>) -> anyhow::Result<String> {
        let config = &self.workspace.config;
        if let Some(name) = requested.or(config.default_agent.as_deref()) {
            return Ok(name.to_owned());
        }
        let mut names = config.agents.keys();
        match (names.next(), names.next()) {
            (Some(only), None) => Ok(only.clone()),
            (None, _) => Err(BadInput(format!(
                "{} defines no agents: add one under `agents:`",
                self.workspace.file.display()
            ))
            .into()),
            _ => Err(BadInput(format!(
                "{} defines several agents and no default_agent: choose one with --agent",
                self.workspace.file.display()
            ))
            .into()),
        }
    }
}

fn command_tool(name: &str, config: &ToolConfig, workspace: &Workspace) -> CommandTool {
    let mut spec = ToolSpec::new(name, config.description.clone(), config.parameters.clone());
    let contract = &mut spec.contract;
    contract.compensating_tool = config.compensating_tool.clone();
    contract.requires_approval = config.requires_approval;
    contract.retries = config.retries;
    contract.timeout = config.timeout.map(Duration::from_secs_f64);
    contract.tags = config.tags.clone();
    contract.side_effects = config.side_effects.clone();
    contract.partial_effects = config.partial_effects;
    CommandTool::new(spec, config.command.clone(), &workspace.dir)
}

/// Stands in for a model that could not be built; says why when it is asked something.
struct Unavailable {
    id: String,
    message: String,
}

#[async_trait]
impl LanguageModel for Unavailable {
    fn model_id(&self) -> &str {
        &self.id
    }

    async fn complete(&self, _request: &CompletionRequest) -> Result<Completion, LmError> {
        Err(LmError::Config(self.message.clone()))
    }
}
