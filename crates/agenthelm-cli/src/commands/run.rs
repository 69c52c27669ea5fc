//! `agenthelm run "task"`: one agent, one task, live tool calls, answer, tokens and cost.

use agenthelm::{Agent, AgentResult, ToolAgent};

use super::Session;
use crate::approval::CliApproval;
use crate::assemble::{Assembly, ModelNeed};
use crate::cli::RunArgs;
use crate::exit::Failed;
use crate::render::{self, Palette};

/// Runs `agenthelm run`.
pub async fn run(session: &Session, args: &RunArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), args.model.as_deref());
    let outcome = run_agent(&assembly, args).await;
    assembly.shutdown().await;
    outcome
}

async fn run_agent(assembly: &Assembly<'_>, args: &RunArgs) -> anyhow::Result<()> {
    let name = assembly.pick_agent(args.agent.as_deref())?;
    let agent = live_agent(assembly, &name, args.approve_tools).await?;
    let result = crate::interrupt::or_ctrl_c(agent.run(&args.task)).await?;
    report(&name, &result)
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
