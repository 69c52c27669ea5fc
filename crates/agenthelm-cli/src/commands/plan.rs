//! `agenthelm plan "goal"`: the planner writes a plan using the workspace's agents and tools; the
//! plan is shown, saved with `-o`, or executed at once with `--approve`.

use agenthelm::PlannerAgent;
use anyhow::Context;

use super::execute::{self, View};
use super::Session;
use crate::cli::PlanArgs;
use crate::exit::{BadInput, Failed};
use crate::render::{self, Palette};
use agenthelm_workspace::{Assembly, ModelNeed};

/// Runs `agenthelm plan`.
pub async fn run(session: &Session, args: &PlanArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), args.model.as_deref());
    let outcome = plan(&assembly, args, session).await;
    // MCP servers the agents use are stopped also after a failure or Ctrl-C.
    assembly.shutdown().await;
    outcome
}

async fn plan(assembly: &Assembly<'_>, args: &PlanArgs, session: &Session) -> anyhow::Result<()> {
    let lm = assembly.lm(None, ModelNeed::Required)?;
    // The planner sees the agents' names, roles and tools; their models are not needed for that.
    let registry = assembly.registry(ModelNeed::OnDemand).await?;
    let palette = Palette::stderr();
    crate::out::note(&palette.dim(&format!("Planning with {} ...", lm.model_id())));
    let planner = PlannerAgent::new("planner", lm, assembly.tools.clone()).agents(&registry);
    let (outcome, trace) = crate::interrupt::or_ctrl_c(planner.plan_traced(&args.goal)).await?;
    crate::out::note(&palette.dim(&render::usage_line(&trace.usage())));
    let mut plan = outcome.map_err(|e| Failed(e.to_string()))?;

    let view = View::new(args.execution.json);
    view.show_plan(&plan, super::execute::default_agent(assembly))?;
    if let Some(file) = &args.output {
        let text = plan.to_yaml()?;
        std::fs::write(file, text)
            .with_context(|| format!("cannot write the plan to {}", file.display()))?;
        view.say(&format!("Saved the plan to {}", file.display()))?;
    }
    if !args.approve {
        let next = match &args.output {
            Some(file) => format!("agenthelm execute {}", file.display()),
            None => "agenthelm plan ... -o plan.yaml, then agenthelm execute plan.yaml".to_owned(),
        };
        view.say(&palette.dim(&format!("Not executed. Next: {next}")))?;
        return Ok(());
    }
    let store = agenthelm_workspace::open_store(assembly.workspace)?;
    let journaled =
        execute::orchestrator(assembly, &args.execution, session.user(), &store).await?;
    journaled.orchestrator.check(&plan).map_err(|e| {
        BadInput(format!(
            "the planner's plan does not fit the workspace: {e}"
        ))
    })?;
    assembly.check_programs(&plan)?;
    execute::execute(&journaled, &mut plan, &args.execution).await
}
