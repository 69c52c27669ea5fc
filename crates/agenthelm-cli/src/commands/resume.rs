//! `agenthelm resume RUN_ID`: continue an interrupted run from its journal, with the same live
//! progress, summary and exit codes as `execute`.

use agenthelm::orchestrate::{CancelToken, InterruptedSteps};
use agenthelm::OrchestratorError;

use super::execute::{self, watch_ctrl_c};
use super::Session;
use crate::cli::{Interrupted, ResumeArgs};
use crate::exit::Failed;
use agenthelm_workspace::{Assembly, OpenStore};

/// Runs `agenthelm resume`.
///
/// No confirmation is asked: the run was confirmed when it started.
pub async fn run(session: &Session, args: &ResumeArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), None);
    let outcome = resume(&assembly, session, args).await;
    // MCP servers are stopped also when the run failed or was interrupted.
    assembly.shutdown().await;
    outcome
}

async fn resume(
    assembly: &Assembly<'_>,
    session: &Session,
    args: &ResumeArgs,
) -> anyhow::Result<()> {
    let store = agenthelm_workspace::open_store(assembly.workspace)?;
    let mut journaled =
        execute::orchestrator(assembly, &args.execution, session.user(), &store).await?;
    let rule = match args.interrupted {
        Interrupted::Rerun => InterruptedSteps::Rerun,
        Interrupted::Fail => InterruptedSteps::Fail,
    };
    journaled.orchestrator = journaled.orchestrator.on_interrupted_steps(rule);
    // Checked up front so an unknown run, or a program its remaining steps and compensations
    // need and no longer find, is reported before anything runs.
    let stored = store
        .store
        .load_run(&args.run_id)
        .map_err(crate::exit::read_error)?;
    let unfinished = stored.summary.success.is_none();
    if unfinished {
        assembly.check_programs(&stored.plan)?;
    }
    drop(stored);
    let cancel = CancelToken::new();
    let stop_on_ctrl_c = watch_ctrl_c(
        cancel.clone(),
        "Interrupted: no new steps start; finished work is being rolled back",
    )?;
    let outcome = journaled
        .orchestrator
        .resume_with_cancel(&args.run_id, cancel)
        .await;
    stop_on_ctrl_c.abort();
    journaled.progress.finish();
    let (plan, result) = match outcome {
        Ok(finished) => finished,
        Err(OrchestratorError::AlreadyFinished { run_id, success }) if unfinished => {
            return record_end(&store, &run_id, success);
        }
        Err(e) => return Err(execute::run_error(e)),
    };
    journaled.export(result.run_id.as_deref()).await;
    let shown = journaled.orchestrator.redacted_plan(&plan);
    execute::report(&shown, &result, &args.execution)
}

/// The run's journal ends with its last event, but the process stopped before the run's end
/// was written to the run list: record it, and exit as the run ended.
fn record_end(store: &OpenStore, run_id: &str, success: bool) -> anyhow::Result<()> {
    let error = (!success).then_some("the plan failed (its end was recorded on resume)");
    store
        .store
        .finish_run(run_id, success, error)
        .map_err(crate::exit::read_error)?;
    let message = format!(
        "run {run_id} had already {} before its process stopped; its end is now recorded",
        if success { "succeeded" } else { "failed" }
    );
    if success {
        crate::out::note(&message);
        Ok(())
    } else {
        Err(Failed(message).into())
    }
}
