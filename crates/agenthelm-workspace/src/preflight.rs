//! Checks made before a plan runs, that need the workspace's own declarations.

use agenthelm::Plan;
use std::collections::BTreeMap;

use crate::{CommandTool, Workspace, WorkspaceError};

/// Checks, before `plan` runs, that every command tool it can reach has a program that can
/// be run, so that a missing one is not found only when its step starts, after earlier
/// steps did work that must then be rolled back. A step reaches the tool it names (or, when
/// it names none, every tool of its agent), its `compensate_tool`, and the compensating
/// tools of those. Every problem is reported at once.
pub fn check_programs(workspace: &Workspace, plan: &Plan) -> Result<(), WorkspaceError> {
    let config = &workspace.config;
    let mut reached: BTreeMap<&str, String> = BTreeMap::new();
    for step in &plan.steps {
        let agent = step
            .agent_name
            .as_ref()
            .or(config.default_agent.as_ref())
            .and_then(|name| config.agents.get(name));
        let named = match &step.tool_name {
            Some(tool) => std::slice::from_ref(tool),
            None => agent.map_or(&[][..], |a| &a.tools),
        };
        for name in named {
            reached
                .entry(name)
                .or_insert_with(|| format!("step `{}`", step.id));
        }
        let compensations = named
            .iter()
            .filter_map(|name| config.tools.get(name)?.contract.compensating_tool.as_ref())
            .chain(&step.compensate_tool);
        for name in compensations {
            reached
                .entry(name)
                .or_insert_with(|| format!("the compensation of step `{}`", step.id));
        }
    }
    let problems: Vec<String> = reached
        .into_iter()
        .filter_map(|(name, user)| {
            let tool = CommandTool::from_config(name, config.tools.get(name)?, &workspace.dir);
            let why = tool.check_program().err()?;
            Some(format!(
                "tool `{name}` (used by {user}) cannot run: {why} (in {})",
                workspace.dir.display()
            ))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(WorkspaceError::MissingPrograms(problems))
    }
}
