//! `agenthelm show plan.yaml`: a plan file, checked, as a table or a graph.

use super::Session;
use crate::cli::{ExecutionArgs, ShowArgs, ShowFormat};
use crate::commands::execute::View;
use crate::render;
use agenthelm_workspace::{Assembly, PlanFile};

/// Runs `agenthelm show`.
pub async fn run(session: &Session, args: &ShowArgs) -> anyhow::Result<()> {
    let file = PlanFile::load(&args.plan)?;
    let workspace = session.workspace(Some(&args.plan))?;
    let assembly = Assembly::new(&workspace, session.user(), None);
    // Checking the plan needs the agents' tools, so MCP servers they use are started.
    let orchestrator =
        super::execute::configured(&assembly, &ExecutionArgs::default(), session.user()).await;
    let checked = orchestrator.map(|o| o.check(&file.plan));
    assembly.shutdown().await;
    checked?.map_err(|e| file.problems(e))?;
    assembly.check_programs(&file.plan)?;
    match args.format {
        ShowFormat::Table => {
            View::new(false).show_plan(&file.plan, super::execute::default_agent(&assembly))?
        }
        ShowFormat::Yaml => crate::out::line(&file.plan.to_yaml()?)?,
        ShowFormat::Json => crate::out::json_text(&file.plan.to_json()?)?,
        ShowFormat::Mermaid => crate::out::line(&render::mermaid(&file.plan))?,
        ShowFormat::Dot => crate::out::line(&render::dot(&file.plan))?,
    }
    Ok(())
}
