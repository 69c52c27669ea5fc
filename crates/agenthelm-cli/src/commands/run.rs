//! `agenthelm run "task"`: one agent, one task, live tool calls, answer, tokens and cost.

use agenthelm::{Agent, AgentResult, ToolAgent};
use std::sync::Arc;

use super::Session;
use crate::agent_journal::AgentJournal;
use crate::approval::CliApproval;
use crate::cli::RunArgs;
use crate::exit::{BadInput, Failed};
use crate::render::{self, Palette};
use agenthelm_workspace::{Assembly, ModelNeed, WorkspaceError};

/// Runs `agenthelm run`.
pub async fn run(session: &Session, args: &RunArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), args.model.as_deref());
    let outcome = run_agent(&assembly, args).await;
    // MCP servers are stopped also when the task failed or was interrupted.
    assembly.shutdown().await;
    outcome
}

async fn run_agent(assembly: &Assembly<'_>, args: &RunArgs) -> anyhow::Result<()> {
    let name = pick_agent(assembly, args.agent.as_deref())?;
    let store = agenthelm_workspace::open_store(assembly.workspace)?;
    let agent = live_agent(assembly, &name, args.approve_tools).await?;
    let journal = AgentJournal::begin(Arc::clone(&store.store), &name, &args.task)?;
    let palette = Palette::stderr();
    eprintln!(
        "{}",
        palette.dim(&format!(
            "Run {} (kept in {})",
            journal.run_id(),
            store.location.display()
        ))
    );
    let agent = agent.on_event(journal.observer());
    // A failed write stops the agent at once: dropping its future kills its running tools.
    let traced = async {
        tokio::select! {
            result = agent.run(&args.task) => Ok(result),
            error = journal.failed() => Err(error),
        }
    };
    let result = match crate::interrupt::or_ctrl_c(traced).await {
        Ok(Ok(result)) => result,
        Ok(Err(error)) => {
            return Err(Failed(format!(
                "run {} stopped: {error}; the agent was stopped so nothing runs untraced",
                journal.run_id()
            ))
            .into())
        }
        Err(interrupted) => {
            // Best effort: the run is on record as failed rather than left unfinished.
            let _ = journal.finish(&AgentResult::fail("interrupted"));
            return Err(interrupted);
        }
    };
    journal.finish(&result).map_err(|e| {
        Failed(format!(
            "run {}: the end of the task could not be recorded: {e}",
            journal.run_id()
        ))
    })?;
    report(&name, &result)
}

/// The agent `--agent` names, else the workspace's default or only agent.
pub fn pick_agent(assembly: &Assembly<'_>, requested: Option<&str>) -> anyhow::Result<String> {
    assembly.pick_agent(requested).map_err(|e| match e {
        WorkspaceError::NoDefaultAgent { file } => BadInput(format!(
            "{} defines several agents and no default_agent: choose one with --agent",
            file.display()
        ))
        .into(),
        e => e.into(),
    })
}

/// Prints the answer (stdout) and usage (stderr); a failed run becomes exit code 1.
pub fn report(name: &str, result: &AgentResult) -> anyhow::Result<()> {
    let palette = Palette::stderr();
    if let Some(answer) = &result.answer {
        println!("{}", answer.trim_end());
    }
    eprintln!("{}", palette.dim(&render::usage_line(result)));
    if result.success {
        Ok(())
    } else {
        Err(Failed(format!(
            "agent `{name}` failed: {}",
            result.error.as_deref().unwrap_or("no answer")
        ))
        .into())
    }
}

/// The agent, showing its tool calls on standard error as they happen.
pub async fn live_agent(
    assembly: &Assembly<'_>,
    name: &str,
    approve_tools: bool,
) -> anyhow::Result<ToolAgent> {
    Ok(live(
        assembly.agent(name, ModelNeed::Required).await?,
        approve_tools,
    ))
}

/// `agent` with approval from the command line and its tool calls shown on standard error.
pub fn live(agent: ToolAgent, approve_tools: bool) -> ToolAgent {
    let palette = Palette::stderr();
    agent
        .approval_handler(CliApproval::new(approve_tools))
        .on_event(move |event| {
            if let Some(line) = render::progress_line(event, palette) {
                eprintln!("{line}");
            }
        })
}
