//! `agenthelm execute plan.yaml`: check, show, confirm, execute with live progress, summarize.

use agenthelm::orchestrate::CancelToken;
use agenthelm::{AgentResult, Orchestrator, Plan};
use serde_json::{json, Value};
use std::io::{BufRead, IsTerminal, Write};

use super::Session;
use crate::approval::CliApproval;
use crate::assemble::{Assembly, ModelNeed};
use crate::cli::{ExecuteArgs, ExecutionArgs};
use crate::exit::{BadInput, Failed};
use crate::plan_file::PlanFile;
use crate::render::{self, Palette};
use crate::user_config::UserConfig;

/// Runs `agenthelm execute`.
pub async fn run(session: &Session, args: &ExecuteArgs) -> anyhow::Result<()> {
    let mut file = PlanFile::load(&args.plan)?;
    let workspace = session.workspace(Some(&args.plan))?;
    let assembly = Assembly::new(&workspace, session.user(), None);
    let outcome = check_and_execute(&assembly, &mut file, args, session.user()).await;
    // MCP servers are stopped also when the plan failed or was interrupted.
    assembly.shutdown().await;
    outcome
}

async fn check_and_execute(
    assembly: &Assembly<'_>,
    file: &mut PlanFile,
    args: &ExecuteArgs,
    user: &UserConfig,
) -> anyhow::Result<()> {
    let orchestrator = orchestrator(assembly, &args.execution, user).await?;
    orchestrator
        .check(&file.plan)
        .map_err(|e| file.problems(e))?;
    let view = View::new(args.execution.json);
    view.show_plan(&file.plan);
    if args.dry_run {
        if args.execution.json {
            let plan: Value = serde_json::from_str(&file.plan.to_json()?)?;
            println!("{}", json!({"dry_run": true, "valid": true, "plan": plan}));
        }
        view.say("Dry run: the plan is valid; nothing was executed.");
        return Ok(());
    }
    if !args.yes {
        confirm(&format!(
            "Execute {} steps of this plan? [y/N] ",
            file.plan.steps.len()
        ))?;
    }
    execute(&orchestrator, &mut file.plan, &args.execution).await
}

/// The orchestrator for a workspace, with the execution options applied and live progress on
/// standard error.
pub async fn orchestrator(
    assembly: &Assembly<'_>,
    options: &ExecutionArgs,
    user: &UserConfig,
) -> anyhow::Result<Orchestrator> {
    let registry = assembly.registry(ModelNeed::OnDemand).await?;
    let mut orchestrator = Orchestrator::new(registry)
        // After the registry: it includes the compensations of the agents' MCP tools.
        .tools(assembly.orchestrator_tools())
        .enable_rollback(!options.no_rollback)
        .approval_handler(CliApproval::new(options.approve_tools));
    if let Some(name) = &assembly.workspace.config.default_agent {
        orchestrator = orchestrator.default_agent(assembly.agent(name, ModelNeed::OnDemand).await?);
    }
    let limit = options
        .max_parallel
        .map(|n| n as usize)
        .or(user.max_parallel);
    if let Some(limit) = limit {
        orchestrator = orchestrator.max_concurrency(limit);
    }
    let palette = Palette::stderr();
    Ok(orchestrator.on_event(move |event| {
        if let Some(line) = render::progress_line(event, palette) {
            eprintln!("{line}");
        }
    }))
}

/// Executes a checked plan (the caller had it confirmed), prints the summary, and turns a failed
/// run into exit code 1.
pub async fn execute(
    orchestrator: &Orchestrator,
    plan: &mut Plan,
    options: &ExecutionArgs,
) -> anyhow::Result<()> {
    plan.approved = true;
    let view = View::new(options.json);
    let cancel = CancelToken::new();
    let stop_on_ctrl_c = watch_ctrl_c(cancel.clone())?;
    let outcome = orchestrator.execute_with_cancel(plan, cancel).await;
    stop_on_ctrl_c.abort();
    let result = outcome.map_err(|e| BadInput(e.to_string()))?;
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result_json(plan, &result))?
        );
    }
    view.say(&render::summary(plan, &result, view.palette));
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

/// Ctrl-C cancels the run: no new step starts, running steps get their grace period, and
/// completed work is rolled back. The rollback itself is not interrupted by further Ctrl-Cs.
fn watch_ctrl_c(cancel: CancelToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before the run starts, so an early Ctrl-C is not lost.
    let mut interrupts = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        if interrupts.recv().await.is_some() {
            eprintln!("Interrupted: no new steps start; finished work is being rolled back");
            cancel.cancel();
            // Later interrupts are received and ignored, so the rollback can finish.
            while interrupts.recv().await.is_some() {}
        }
    }))
}

/// The machine-readable result of `--json`.
fn result_json(plan: &Plan, result: &AgentResult) -> Value {
    let steps: Vec<Value> = result
        .steps
        .iter()
        .map(|outcome| {
            let step = plan.get_step(&outcome.id);
            json!({
                "id": outcome.id,
                "status": outcome.status,
                "agent": outcome.agent,
                "direct_tool": outcome.direct_tool,
                "duration_ms": outcome.duration_ms,
                "error": outcome.error,
                "result": step.and_then(|s| s.result.clone()),
            })
        })
        .collect();
    json!({
        "goal": plan.goal,
        "success": result.success,
        "run_id": result.run_id,
        "answer": result.answer,
        "error": result.error,
        "steps": steps,
        "rollback": result.rollback,
        "token_usage": result.token_usage,
        "total_cost_usd": result.total_cost_usd,
        "unpriced_calls": result.unpriced_calls,
    })
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
    let mut err = std::io::stderr().lock();
    write!(err, "{question}")?;
    err.flush()?;
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
    pub fn say(&self, text: &str) {
        let text = text.trim_end();
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    /// Prints a plan as a table and a dependency graph.
    pub fn show_plan(&self, plan: &Plan) {
        self.say(&render::plan_table(plan, self.palette));
        self.say(&render::plan_graph(plan, self.palette));
    }
}
