//! Turning a workspace into the library's pieces: command tools, models, agents, the agent
//! registry and an orchestrator, with the compensating tools of MCP tools kept reachable for
//! rollback.
use agenthelm::budget::Budget;

use agenthelm::lm::{Completion, CompletionRequest, RateLimits};
use agenthelm::mcp::{McpError, McpServers};
use agenthelm::redact::Redactor;
use agenthelm::{
    AgentRegistry, LanguageModel, Lm, LmError, Orchestrator, Plan, ToolAgent, ToolSet,
};
use async_trait::async_trait;
use std::sync::{Arc, Mutex, PoisonError};

use crate::command_tool::CommandTool;
use crate::error::WorkspaceError;
use crate::redact_config::redactor_of;
use crate::user_config::UserConfig;
use crate::workspace::Workspace;

/// How a model that cannot be built is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelNeed {
    /// The caller talks to the model: a model that cannot be built is an error now.
    Required,
    /// Plan steps may never need a model (direct tool calls): the error is reported by the
    /// step that first asks the model.
    OnDemand,
}

/// The workspace with its tools and models resolved.
///
/// Command tools are built at once; MCP servers start when an agent that uses them is built,
/// and are stopped by [`shutdown`](Assembly::shutdown).
pub struct Assembly<'w> {
    /// The workspace.
    pub workspace: &'w Workspace,
    /// Every command tool of the workspace.
    pub tools: ToolSet,
    /// The workspace's MCP servers; each starts when an agent that uses it is built.
    pub mcp: McpServers,
    /// Compensating tools of the MCP tools given to agents, for rollback to find.
    mcp_compensations: Mutex<ToolSet>,
    /// `--model`: overrides every model of the workspace.
    forced_model: Option<String>,
    user_model: Option<String>,
    /// `rate_limits:`, one limiter per entry for every model this assembly builds (the CLI and
    /// the server assemble once per process).
    rate_limits: RateLimits,
}

impl<'w> Assembly<'w> {
    /// Builds the workspace's tools. Models come from `forced_model` when given (a command
    /// line's `--model`), else the agent's `model:`, else the workspace's, else the user's.
    pub fn new(workspace: &'w Workspace, user: &UserConfig, forced_model: Option<&str>) -> Self {
        let mut tools = ToolSet::new();
        for (name, config) in &workspace.config.tools {
            tools.insert(CommandTool::from_config(name, config, &workspace.dir));
        }
        Assembly {
            workspace,
            tools,
            mcp: McpServers::from_configs(workspace.config.mcp_servers.clone()),
            mcp_compensations: Mutex::new(ToolSet::new()),
            forced_model: forced_model.map(str::to_owned),
            user_model: user.model.clone(),
            rate_limits: crate::rate_limits::registry(&workspace.config.rate_limits),
        }
    }

    /// Checks, before `plan` runs, that every command tool it can reach has a program that can
    /// be run; see [`check_programs`](crate::check_programs).
    pub fn check_programs(&self, plan: &Plan) -> Result<(), WorkspaceError> {
        crate::preflight::check_programs(self.workspace, plan)
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
    pub fn lm(&self, agent: Option<&str>, need: ModelNeed) -> Result<Lm, WorkspaceError> {
        let id = self.model_id(agent);
        let built = match &id {
            Some(id) => Lm::builder(id)
                .rate_limits(&self.rate_limits)
                .build()
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no model is configured: set `model:` in {} or pass --model",
                self.workspace.file.display()
            )),
        };
        tracing::info!(
            agent = agent.unwrap_or("planner"),
            model = id.as_deref().unwrap_or("none"),
            ok = built.is_ok(),
            "model"
        );
        match (built, need) {
            (Ok(lm), _) => Ok(lm),
            (Err(message), ModelNeed::Required) => Err(WorkspaceError::Model {
                agent: agent.map(str::to_owned),
                model: id,
                message,
            }),
            (Err(message), ModelNeed::OnDemand) => Ok(Lm::from_model(Unavailable {
                id: id.unwrap_or_else(|| "none".to_owned()),
                message,
            })),
        }
    }

    /// The tools an agent lists: command tools, and MCP tools (`server.tool`, `server.*`),
    /// starting the MCP servers they come from.
    pub async fn agent_tools(&self, agent: &str) -> Result<ToolSet, WorkspaceError> {
        let mut set = ToolSet::new();
        let Some(config) = self.workspace.config.agents.get(agent) else {
            return Ok(set);
        };
        let mut references = Vec::new();
        for name in &config.tools {
            match self.tools.get(name) {
                Some(tool) => {
                    set.insert(Arc::clone(tool));
                }
                None if self.mcp.is_reference(name) => references.push(name.as_str()),
                None => {}
            }
        }
        if references.is_empty() {
            return Ok(set);
        }
        let context = |error: McpError| WorkspaceError::Mcp {
            file: self.workspace.file.clone(),
            agent: agent.to_owned(),
            error: Box::new(error),
        };
        let mcp_tools = self.mcp.resolve(&references).await.map_err(context)?;
        self.keep_compensations(&references, &mcp_tools)
            .await
            .map_err(context)?;
        set.extend(&mcp_tools);
        Ok(set)
    }

    /// Finds, on the same servers, the compensating tools that `tools` name, so that rollback
    /// can call them even when the agent does not list them.
    async fn keep_compensations(
        &self,
        references: &[&str],
        tools: &ToolSet,
    ) -> Result<(), McpError> {
        let mut servers: Vec<&str> = references
            .iter()
            .filter_map(|r| r.split_once('.').map(|(server, _)| server))
            .collect();
        servers.dedup();
        for server in servers.into_iter().filter_map(|s| self.mcp.get(s)) {
            let offered = server.tools().await?;
            for tool in tools.iter().filter(|t| offered.contains(&t.spec().name)) {
                let Some(compensation) = &tool.spec().contract.compensating_tool else {
                    continue;
                };
                let Some(found) = offered.get(compensation) else {
                    continue;
                };
                let mut kept = self
                    .mcp_compensations
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if !kept.contains(compensation) && !self.tools.contains(compensation) {
                    kept.insert(Arc::clone(found));
                }
            }
        }
        Ok(())
    }

    /// The orchestrator's own tools: every command tool, and the compensating tools of the
    /// MCP tools that agents built so far use.
    pub fn orchestrator_tools(&self) -> ToolSet {
        let mut set = self.tools.clone();
        set.extend(
            &self
                .mcp_compensations
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        set
    }

    /// Stops the MCP servers that were started (closing stdin, then killing process groups).
    pub async fn shutdown(&self) {
        self.mcp.shutdown().await;
    }

    /// The agent called `name`, as the workspace declares it.
    pub async fn agent(&self, name: &str, need: ModelNeed) -> Result<ToolAgent, WorkspaceError> {
        let Some(config) = self.workspace.config.agents.get(name) else {
            return Err(WorkspaceError::UnknownAgent {
                file: self.workspace.file.clone(),
                name: name.to_owned(),
                defined: self.workspace.config.agents.keys().cloned().collect(),
            });
        };
        let lm = self.lm(Some(name), need)?;
        let mut agent = ToolAgent::new(name, lm, self.agent_tools(name).await?);
        if let Some(role) = &config.role {
            agent = agent.role(role);
        }
        if let Some(max_iters) = config.max_iters {
            agent = agent.max_iters(max_iters);
        }
        if let Some(max_tokens) = config.max_tokens {
            agent = agent.max_tokens(max_tokens);
        }
        Ok(agent)
    }

    /// Every agent of the workspace, registered by name.
    pub async fn registry(&self, need: ModelNeed) -> Result<AgentRegistry, WorkspaceError> {
        let mut registry = AgentRegistry::new();
        for name in self.workspace.config.agents.keys() {
            registry.register(self.agent(name, need).await?)?;
        }
        Ok(registry)
    }

    /// An orchestrator for the workspace: every agent (models built on demand, so plans of
    /// direct tool calls need none), the default agent, and as its own tools every command tool
    /// and the compensating tools of the agents' MCP tools, so rollback can reach them.
    ///
    /// The workspace's `rollback:` mode and `budget:` are applied; everything else (store, approval, whether to
    /// roll back, concurrency) is the caller's to set.
    pub async fn orchestrator(&self) -> Result<Orchestrator, WorkspaceError> {
        let redactor = self.redactor()?;
        let registry = self.registry(ModelNeed::OnDemand).await?;
        // After the registry: it includes the compensations of the agents' MCP tools.
        let mut orchestrator = Orchestrator::new(registry)
            .tools(self.orchestrator_tools())
            .rollback_mode(self.workspace.config.rollback.unwrap_or_default())
            .redact(redactor)
            .budget(self.budget());
        if let Some(name) = &self.workspace.config.default_agent {
            orchestrator = orchestrator.default_agent(self.agent(name, ModelNeed::OnDemand).await?);
        }
        Ok(orchestrator)
    }

    /// What runs of this workspace redact before anything is journaled, exported or shown:
    /// the API keys of the providers (when set), the server users' tokens, the `redact.env`
    /// variables (which plans may read as `{{env.NAME}}`), `redact.patterns` and
    /// `redact.presets`. Secrets shorter than
    /// [`MIN_SECRET_LEN`](agenthelm::redact::MIN_SECRET_LEN) are not redacted: a warning
    /// names them.
    pub fn redactor(&self) -> Result<Redactor, WorkspaceError> {
        let redactor = redactor_of(&self.workspace.config, |name| std::env::var(name).ok())
            .map_err(|e| WorkspaceError::Redact {
                file: self.workspace.file.clone(),
                message: e.to_string(),
            })?;
        if !redactor.skipped().is_empty() {
            tracing::warn!(
                secrets = redactor.skipped().join(", "),
                "values too short to redact (fewer than {} characters)",
                agenthelm::redact::MIN_SECRET_LEN
            );
        }
        Ok(redactor)
    }

    /// The workspace's `budget:` (no limits when it has none).
    pub fn budget(&self) -> Budget {
        self.workspace.config.budget.unwrap_or_default()
    }

    /// The agent `requested`, else the workspace's default agent, else its only agent.
    pub fn pick_agent(&self, requested: Option<&str>) -> Result<String, WorkspaceError> {
        let config = &self.workspace.config;
        if let Some(name) = requested.or(config.default_agent.as_deref()) {
            return Ok(name.to_owned());
        }
        let mut names = config.agents.keys();
        let file = self.workspace.file.clone();
        match (names.next(), names.next()) {
            (Some(only), None) => Ok(only.clone()),
            (None, _) => Err(WorkspaceError::NoAgents { file }),
            _ => Err(WorkspaceError::NoDefaultAgent { file }),
        }
    }
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
