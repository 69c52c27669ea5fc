//! `agenthelm run "task"`: one agent, one task, live tool calls, answer, tokens and cost.
//!
//! The task runs as a one-step plan (step `task`, routed to the agent, the task as its
//! description) through the orchestrator, journaled to the workspace's run store by the
//! library's own code path: `runs`, `traces` and `runs report` show it like any plan run,
//! `agenthelm resume` can continue it, and what its tools did is rolled back if it fails.

use agenthelm::orchestrate::CancelToken;
use agenthelm::{AgentRegistry, EventKind, Orchestrator, Plan, PlanStep, RunResult, ToolAgent};
use agenthelm_workspace::{open_store, Assembly, ModelNeed, WorkspaceError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::execute::{run_error, watch_ctrl_c};
use super::Session;
use crate::approval::CliApproval;
use crate::cli::RunArgs;
use crate::exit::{BadInput, Failed};
use crate::live::LiveText;
use crate::render::{self, Palette};

/// The step id of the task in its one-step plan.
const STEP: &str = "task";

/// Runs `agenthelm run`.
pub async fn run(session: &Session, args: &RunArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), args.model.as_deref());
    let outcome = run_task(&assembly, args).await;
    // MCP servers are stopped also when the task failed or was interrupted.
    assembly.shutdown().await;
    outcome
}

async fn run_task(assembly: &Assembly<'_>, args: &RunArgs) -> anyhow::Result<()> {
    let name = pick_agent(assembly, args.agent.as_deref())?;
    let store = open_store(assembly.workspace)?;
    let mut registry = AgentRegistry::new();
    registry
        .register(assembly.agent(&name, ModelNeed::Required).await?)
        .map_err(|e| BadInput(e.to_string()))?;
    let run_id = Arc::new(OnceLock::new());
    let seen = Arc::clone(&run_id);
    let location = store.location.display().to_string();
    let palette = Palette::stderr();
    let live = LiveText::for_stdout();
    let shows = live.clone();
    let orchestrator = Orchestrator::new(registry)
        // Every command tool, and the compensations of the agent's MCP tools: rollback can
        // reach them even when the agent does not list them.
        .tools(assembly.orchestrator_tools())
        .budget(assembly.budget())
        .approval_handler(CliApproval::new(args.approve_tools))
        // Ctrl-C stops the running tools at once (there is no other step to wait for).
        .grace_period(Duration::ZERO)
        .redact(assembly.redactor()?)
        .store_shared(Arc::clone(&store.store))
        .on_event(move |event| {
            if let (Some(live), EventKind::LlmCall { .. }) = (&shows, &event.kind) {
                live.call_ended();
            }
            if let (Some(id), EventKind::RunStarted { .. }) = (&event.run_id, &event.kind) {
                if seen.set(id.to_string()).is_ok() {
                    crate::out::note(&palette.dim(&format!("Run {id} (kept in {location})")));
                }
            }
            // The run and its one step are the task itself: only what happens inside is shown.
            let own = matches!(
                event.kind,
                EventKind::RunStarted { .. }
                    | EventKind::StepStarted { .. }
                    | EventKind::StepFinished { .. }
            );
            if let Some(line) = (!own)
                .then(|| render::progress_line(event, palette))
                .flatten()
            {
                if let Some(live) = &shows {
                    live.interrupt();
                }
                crate::out::note(&line);
            }
        });
    // At a terminal, the model's text shows as it is written.
    let orchestrator = match &live {
        Some(live) => {
            let live = Arc::clone(live);
            orchestrator.on_text(move |delta| live.text(delta))
        }
        None => orchestrator,
    };
    let mut plan = one_step_plan(&name, &args.task);
    let cancel = CancelToken::new();
    let stop_on_ctrl_c = watch_ctrl_c(cancel.clone(), "Interrupted: stopping the running tools")?;
    let outcome = orchestrator
        .execute_with_cancel(&mut plan, cancel.clone())
        .await;
    stop_on_ctrl_c.abort();
    let result = outcome.map_err(run_error)?;
    if cancel.is_cancelled() && !result.success {
        return Err(Failed(format!(
            "interrupted: running tools were stopped{}",
            rollback_note(&result)
        ))
        .into());
    }
    report(&name, &result, live.as_deref())
}

/// The task as a plan: one step for the agent, with the task as its description.
fn one_step_plan(agent: &str, task: &str) -> Plan {
    let mut plan = Plan::new(task);
    plan.steps.push(PlanStep::new(STEP, task).agent(agent));
    plan.approved = true;
    plan
}

/// What rollback did after a failed task, for the end of its error message.
fn rollback_note(result: &RunResult) -> String {
    let Some(rollback) = &result.rollback else {
        return String::new();
    };
    if !rollback.failed.is_empty() {
        let tools: Vec<&str> = rollback.failed.iter().map(|f| f.tool.as_str()).collect();
        format!(
            "; what its tools did could NOT all be undone ({})",
            tools.join(", ")
        )
    } else if !rollback.compensated.is_empty() {
        "; what its tools did was undone".to_owned()
    } else {
        String::new()
    }
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

/// Prints the answer (stdout: unless `live` showed it already) and usage (stderr); a failed
/// run becomes exit code 1.
pub fn report(name: &str, result: &RunResult, live: Option<&LiveText>) -> anyhow::Result<()> {
    let palette = Palette::stderr();
    if let Some(answer) = &result.answer {
        if !live.is_some_and(|live| live.showed(answer)) {
            crate::out::line(answer)?;
        }
    }
    crate::out::note(&palette.dim(&render::usage_line(&result.usage())));
    if result.success {
        return Ok(());
    }
    // A plan run's error names its step; the step's own error is the agent's.
    let error = result
        .steps
        .iter()
        .find_map(|s| s.error.as_deref())
        .or(result.error.as_deref())
        .unwrap_or("no answer");
    Err(Failed(format!(
        "agent `{name}` failed: {error}{}",
        rollback_note(result)
    ))
    .into())
}

/// The agent, showing its tool calls on standard error as they happen (and, at a terminal,
/// its model's text on standard output: the view is returned for [`report`]).
pub async fn live_agent(
    assembly: &Assembly<'_>,
    name: &str,
    approve_tools: bool,
) -> anyhow::Result<(ToolAgent, Option<Arc<LiveText>>)> {
    Ok(live(
        assembly.agent(name, ModelNeed::Required).await?,
        approve_tools,
    ))
}

/// `agent` with approval from the command line and its tool calls shown on standard error;
/// at a terminal, its model's text shows on standard output as it is written.
pub fn live(agent: ToolAgent, approve_tools: bool) -> (ToolAgent, Option<Arc<LiveText>>) {
    let palette = Palette::stderr();
    let live = LiveText::for_stdout();
    let shows = live.clone();
    let agent = agent
        .approval_handler(CliApproval::new(approve_tools))
        .on_event(move |event| {
            if let (Some(live), EventKind::LlmCall { .. }) = (&shows, &event.kind) {
                live.call_ended();
            }
            if let Some(line) = render::progress_line(event, palette) {
                if let Some(live) = &shows {
                    live.interrupt();
                }
                crate::out::note(&line);
            }
        });
    let agent = match &live {
        Some(view) => {
            let view = Arc::clone(view);
            agent.on_text(move |delta| view.text(delta))
        }
        None => agent,
    };
    (agent, live)
}
