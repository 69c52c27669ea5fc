//! `agenthelm replay RUN_ID`: run a stored run again from its journal, with no model called and
//! no tool run, and report whether it was reproduced or where it first went another way.

use std::sync::Arc;

use agenthelm::orchestrate::{ReplayOptions, ReplayReport};
use agenthelm::OrchestratorError;
use agenthelm_workspace::{Assembly, PlanFile};

use super::execute;
use super::Session;
use crate::cli::ReplayArgs;
use crate::exit::Failed;
use crate::render;

/// Runs `agenthelm replay`: exit 0 when the run was reproduced, 1 when it diverged, 2 for an
/// unknown run or a broken workspace.
pub async fn run(session: &Session, args: &ReplayArgs) -> anyhow::Result<()> {
    let file = args.plan.as_deref().map(PlanFile::load).transpose()?;
    let workspace = session.workspace(args.plan.as_deref())?;
    let assembly = Assembly::new(&workspace, session.user(), None);
    let outcome = replay(&assembly, args, file).await;
    // MCP servers (started to learn their tools' schemas) are stopped in every case.
    assembly.shutdown().await;
    outcome
}

async fn replay(
    assembly: &Assembly<'_>,
    args: &ReplayArgs,
    file: Option<PlanFile>,
) -> anyhow::Result<()> {
    let store = agenthelm_workspace::open_store(assembly.workspace)?;
    let orchestrator = assembly
        .orchestrator()
        .await?
        .store_shared(Arc::clone(&store.store));
    let options = ReplayOptions {
        live_tools: args.live_tools,
        live_models: args.live_models,
    };
    let replayed = match file {
        Some(file) => {
            // Checked here so that its problems are named with their place in the file.
            orchestrator
                .check(&file.plan)
                .map_err(|e| file.problems(e))?;
            orchestrator
                .replay_plan(&args.run_id, file.plan, options)
                .await
        }
        None => orchestrator.replay(&args.run_id, options).await,
    };
    let report = replayed.map_err(|e| match e {
        // An unknown run id is bad input; other store errors name the store.
        OrchestratorError::NotRecorded(e) => crate::exit::read_error(e),
        e => execute::run_error(e),
    })?;
    if args.json {
        crate::out::json(&report)?;
    } else {
        crate::out::line(&summary(&report))?;
    }
    match &report.divergence {
        None => Ok(()),
        Some(divergence) => Err(Failed(format!(
            "run {} diverged at step `{}`",
            report.run_id, divergence.step
        ))
        .into()),
    }
}

/// What was compared, then "reproduced" or the first divergence, in a few lines.
fn summary(report: &ReplayReport) -> String {
    let live: Vec<&str> = [(report.live_models, "models"), (report.live_tools, "tools")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, side)| *side)
        .collect();
    let mut text = format!(
        "Replayed run {}: {} step(s) compared, {} model answer(s) and {} tool result(s) taken from the journal",
        report.run_id, report.steps_compared, report.model_calls_served, report.tool_calls_served
    );
    if !live.is_empty() {
        text.push_str(&format!(" ({} live)", live.join(" and ")));
    }
    text.push('\n');
    let Some(divergence) = &report.divergence else {
        text.push_str("reproduced: the run took the recorded path to the end");
        return text;
    };
    text.push_str(&format!("diverged at step `{}`", divergence.step));
    if let Some(call) = &divergence.call {
        text.push_str(&format!(", {call}"));
    }
    text.push_str(&format!(": {}\n", divergence.kind.describe()));
    text.push_str(&format!(
        "  recorded: {}\n  now:      {}",
        render::shorten(&divergence.expected, 200),
        render::shorten(&divergence.actual, 200)
    ));
    // Control characters are escaped on the way out (`out::line`).
    text
}
