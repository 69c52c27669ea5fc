//! `agenthelm execute plan.yaml`: check, show, confirm, execute with live progress, summarize.

use agenthelm::orchestrate::CancelToken;
use agenthelm::otlp::OtlpExporter;
use agenthelm::store::RunStore;
use agenthelm::{EventKind, Orchestrator, OrchestratorError, Plan, RunResult};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal};
use std::sync::{Arc, OnceLock};

use super::Session;
use crate::approval::CliApproval;
use crate::cli::{ExecuteArgs, ExecutionArgs};
use crate::exit::{BadInput, Failed, Signalled};
use crate::progress::Progress;
use crate::render::{self, Palette};
use crate::telemetry;
use agenthelm_workspace::{Assembly, OpenStore, PlanFile, UserConfig};

/// Runs `agenthelm execute`.
pub async fn run(session: &Session, args: &ExecuteArgs) -> anyhow::Result<()> {
    let mut file = PlanFile::load(&args.plan)?;
    let workspace = session.workspace(Some(&args.plan))?;
    let assembly = Assembly::new(&workspace, session.user(), None);
    let store = agenthelm_workspace::open_store(&workspace)?;
    let outcome = check_and_execute(&assembly, &mut file, args, session.user(), &store).await;
    // MCP servers are stopped also when the plan failed or was interrupted.
    assembly.shutdown().await;
    outcome
}

/// The workspace's default agent, for the plan table.
pub fn default_agent<'a>(assembly: &'a Assembly<'_>) -> Option<&'a str> {
    assembly.workspace.config.default_agent.as_deref()
}

async fn check_and_execute(
    assembly: &Assembly<'_>,
    file: &mut PlanFile,
    args: &ExecuteArgs,
    user: &UserConfig,
    store: &OpenStore,
) -> anyhow::Result<()> {
    let journaled = orchestrator(assembly, &args.execution, user, store).await?;
    journaled
        .orchestrator
        .check(&file.plan)
        .map_err(|e| file.problems(e))?;
    assembly.check_programs(&file.plan)?;
    let view = View::new(args.execution.json);
    let shown_plan = journaled.orchestrator.redacted_plan(&file.plan);
    view.show_plan(&shown_plan, default_agent(assembly))?;
    if args.dry_run {
        if args.execution.json {
            let plan: Value = serde_json::from_str(&shown_plan.to_json()?)?;
            crate::out::json(&json!({"dry_run": true, "valid": true, "plan": plan}))?;
        }
        view.say("Dry run: the plan is valid; nothing was executed.")?;
        return Ok(());
    }
    if !args.yes {
        confirm(&format!(
            "Execute {} steps of this plan? [y/N] ",
            file.plan.steps.len()
        ))?;
    }
    execute(&journaled, &mut file.plan, &args.execution).await
}

/// An orchestrator that journals to the workspace's store.
pub struct Journaled {
    /// The orchestrator.
    pub orchestrator: Orchestrator,
    /// The store it journals to.
    pub store: Arc<dyn RunStore>,
    /// The run's live progress on standard error.
    pub progress: Arc<Progress>,
    /// Where the run's spans go when it ends, if anywhere.
    pub exporter: Option<OtlpExporter>,
}

impl Journaled {
    /// Exports the spans of the run that just ended, when an OTLP endpoint is set.
    pub async fn export(&self, run_id: Option<&str>) {
        if let (Some(exporter), Some(run_id)) = (&self.exporter, run_id) {
            telemetry::export(exporter, self.store.as_ref(), run_id).await;
        }
    }
}

/// The orchestrator for a workspace, with the execution options applied (for checking plans).
pub async fn configured(
    assembly: &Assembly<'_>,
    options: &ExecutionArgs,
    user: &UserConfig,
) -> anyhow::Result<Orchestrator> {
    let orchestrator = assembly
        .orchestrator()
        .await?
        .enable_rollback(!options.no_rollback)
        .approval_handler(CliApproval::new(options.approve_tools));
    let limit = options
        .max_parallel
        .map(|n| n as usize)
        .or(user.max_parallel)
        .unwrap_or_else(crate::limits::default_max_parallel);
    Ok(orchestrator.max_concurrency(limit))
}

/// The orchestrator for a workspace, with the execution options applied, every run journaled
/// to `store`, and live progress on standard error (starting with the run's id).
pub async fn orchestrator(
    assembly: &Assembly<'_>,
    options: &ExecutionArgs,
    user: &UserConfig,
    store: &OpenStore,
) -> anyhow::Result<Journaled> {
    let mut orchestrator = configured(assembly, options, user).await?;
    // With a `cluster:` section this process coordinates: workers carry the steps out.
    if let Some(coordinator) = crate::cluster::coordinator(assembly.workspace, store).await? {
        orchestrator = orchestrator.remote_runs(Arc::new(coordinator));
    }
    let palette = Palette::stderr();
    let progress = Arc::new(Progress::new(options.json));
    let shown = Arc::clone(&progress);
    // The run's id is announced once, when the run is recorded as started or resumed.
    let seen = OnceLock::new();
    let location = store.location.display().to_string();
    let orchestrator = orchestrator
        .store_shared(Arc::clone(&store.store))
        .on_event(move |event| {
            if let (Some(id), EventKind::RunStarted { .. } | EventKind::RunResumed { .. }) =
                (&event.run_id, &event.kind)
            {
                if seen.set(id.to_string()).is_ok() {
                    crate::out::note(&palette.dim(&format!("Run {id} (kept in {location})")));
                }
            }
            if let EventKind::RunResumed { interrupted } = &event.kind {
                let what = if interrupted.is_empty() {
                    "no step was running".to_owned()
                } else {
                    format!("interrupted steps: {}", interrupted.join(", "))
                };
                crate::out::note(&format!("Resuming ({})", render::safe(&what)));
            }
            shown.event(event);
        });
    Ok(Journaled {
        orchestrator,
        progress,
        store: Arc::clone(&store.store),
        exporter: telemetry::exporter(options.otlp_endpoint.as_deref())?,
    })
}

/// Executes a checked plan (the caller had it confirmed), prints the summary, and turns a failed
/// run into exit code 1.
pub async fn execute(
    journaled: &Journaled,
    plan: &mut Plan,
    options: &ExecutionArgs,
) -> anyhow::Result<()> {
    plan.approved = true;
    let cancel = CancelToken::new();
    let stop_on_ctrl_c = watch_ctrl_c(
        cancel.clone(),
        "Interrupted: no new steps start; finished work is being rolled back",
    )?;
    let outcome = journaled
        .orchestrator
        .execute_with_cancel(plan, cancel)
        .await;
    stop_on_ctrl_c.abort();
    journaled.progress.finish();
    let result = outcome.map_err(run_error)?;
    journaled.export(result.run_id.as_deref()).await;
    // The result is redacted already; the plan handed back holds the real values.
    report(
        &journaled.orchestrator.redacted_plan(plan),
        &result,
        options,
    )
}

/// Why a run did not start or did not finish, as the error the command ends with.
///
/// A store that fails once the run is under way ends the command with exit code 1: the run
/// began, stopped where it was without rollback, and can be continued with `agenthelm resume`
/// once the store works. Every other reason means nothing ran (bad input, exit code 2).
pub fn run_error(error: OrchestratorError) -> anyhow::Error {
    match error {
        OrchestratorError::Halted {
            run_id: id,
            source: e,
        } => Failed(format!(
            "run {id} stopped: {e}. No further step was started and nothing was rolled back; \
             when the store works again, continue with `agenthelm resume {id}`"
        ))
        .into(),
        OrchestratorError::Suspended { run_id: id } => {
            let signal = crate::interrupt::suspended_by();
            let name = signal.map_or("a signal", |s| s.as_str());
            let message = format!(
                "run {id} was stopped by {name}: no further step was started, running steps were \
                 stopped and nothing was rolled back; continue with `agenthelm resume {id}`"
            );
            match signal {
                Some(signal) => Signalled { signal, message }.into(),
                None => Failed(message).into(),
            }
        }
        OrchestratorError::NotRecorded(e) => BadInput(format!(
            "the run was not started because the run store cannot record it: {e}"
        ))
        .into(),
        e => BadInput(e.to_string()).into(),
    }
}

/// Prints a finished run's summary (or JSON) and turns a failed run into exit code 1.
pub fn report(plan: &Plan, result: &RunResult, options: &ExecutionArgs) -> anyhow::Result<()> {
    let view = View::new(options.json);
    if options.json {
        crate::out::json(&result_json(plan, result))?;
    }
    view.say(&render::summary(plan, result, view.palette))?;
    if let Some(id) = &result.run_id {
        view.say(&view.palette.dim(&format!("Run id: {id}")))?;
    }
    if result.success {
        Ok(())
    } else {
        Err(Failed(format!(
            "plan failed: {}",
            result.error.as_deref().unwrap_or("a step failed")
        ))
        .into())
    }
}

/// Ctrl-C cancels the run (after printing `notice`) and rolls it back; SIGTERM and SIGHUP
/// suspend it, resumable ([`crate::interrupt::watch_run`]).
pub fn watch_ctrl_c(
    cancel: CancelToken,
    notice: &'static str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    crate::interrupt::watch_run(cancel, notice)
}

/// The machine-readable result of `--json`. It borrows from the run: a step result may be
/// megabytes, and is not copied to be printed.
#[derive(Serialize)]
struct ResultJson<'r> {
    goal: &'r str,
    success: bool,
    run_id: Option<&'r str>,
    answer: Option<&'r str>,
    error: Option<&'r str>,
    steps: Vec<StepJson<'r>>,
    rollback: &'r Option<agenthelm::orchestrate::RollbackReport>,
    token_usage: &'r agenthelm::TokenUsage,
    total_cost_usd: f64,
    unpriced_calls: u32,
}

#[derive(Serialize)]
struct StepJson<'r> {
    id: &'r str,
    status: agenthelm::StepStatus,
    agent: Option<&'r str>,
    direct_tool: Option<&'r str>,
    duration_ms: f64,
    error: Option<&'r str>,
    result: Option<&'r Value>,
}

fn result_json<'r>(plan: &'r Plan, result: &'r RunResult) -> ResultJson<'r> {
    let steps = result
        .steps
        .iter()
        .map(|outcome| StepJson {
            id: &outcome.id,
            status: outcome.status,
            agent: outcome.agent.as_deref(),
            direct_tool: outcome.direct_tool.as_deref(),
            duration_ms: outcome.duration_ms,
            error: outcome.error.as_deref(),
            result: plan.get_step(&outcome.id).and_then(|s| s.result.as_ref()),
        })
        .collect();
    ResultJson {
        goal: &plan.goal,
        success: result.success,
        run_id: result.run_id.as_deref(),
        answer: result.answer.as_deref(),
        error: result.error.as_deref(),
        steps,
        rollback: &result.rollback,
        token_usage: &result.token_usage,
        total_cost_usd: result.total_cost_usd,
        unpriced_calls: result.unpriced_calls,
    }
}

/// Asks a yes/no question at the terminal; refuses when there is no terminal.
pub fn confirm(question: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(BadInput(
            "refusing to execute without confirmation: standard input is not a terminal \
             (pass --yes to execute anyway)"
                .into(),
        )
        .into());
    }
    crate::out::prompt(question);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failed("not executed: the plan was not confirmed".into()).into())
    }
}

/// Where human-readable text goes: standard output, or standard error when standard output
/// carries JSON.
pub struct View {
    json: bool,
    /// Colours for that stream.
    pub palette: Palette,
}

impl View {
    /// A view for `--json` or not.
    pub fn new(json: bool) -> Self {
        let palette = if json {
            Palette::stderr()
        } else {
            Palette::stdout()
        };
        View { json, palette }
    }

    /// Prints text.
    pub fn say(&self, text: &str) -> anyhow::Result<()> {
        let text = text.trim_end();
        if self.json {
            crate::out::note(text);
            Ok(())
        } else {
            crate::out::line(text)
        }
    }

    /// Prints a plan as a table and a dependency graph; `default_agent` takes steps naming none.
    pub fn show_plan(&self, plan: &Plan, default_agent: Option<&str>) -> anyhow::Result<()> {
        self.say(&render::plan_table(plan, default_agent, self.palette))?;
        self.say(&render::plan_graph(plan, self.palette))
    }
}
