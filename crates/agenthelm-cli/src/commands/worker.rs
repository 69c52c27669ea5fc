//! `agenthelm worker`: carries out the steps and compensations coordinators send to the
//! workspace's worker pools (see `docs/cluster.md`).

use agenthelm::approval::{ApprovalDecision, ApprovalRequest, AutoApprove};
use agenthelm_cluster::{Worker, WorkerOptions, DEFAULT_POOL};
use agenthelm_workspace::{pool_name_problem, Assembly};
use std::collections::BTreeSet;

use super::Session;
use crate::cli::WorkerArgs;
use crate::exit::BadInput;

/// Runs `agenthelm worker` until Ctrl-C or SIGTERM, then finishes the work under way.
pub async fn run(session: &Session, args: &WorkerArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), None);
    let outcome = serve(&assembly, args).await;
    assembly.shutdown().await;
    outcome
}

async fn serve(assembly: &Assembly<'_>, args: &WorkerArgs) -> anyhow::Result<()> {
    let workspace = assembly.workspace;
    let Some(settings) = crate::cluster::settings(workspace)? else {
        return Err(BadInput(format!(
            "{}: a worker needs a `cluster:` section (with `nats:` and a postgres `store:`)",
            workspace.file.display()
        ))
        .into());
    };
    let pools = pools(assembly, args)?;
    let store = agenthelm_workspace::open_store(workspace)?;
    let store = crate::cluster::postgres(workspace, &store)?;
    let orchestrator = assembly.orchestrator().await?;
    // A call that needs approval waits in the store for a person (through `serve`) or for the
    // coordinator's prompt (`execute`); the worker never asks anyone itself.
    let orchestrator = if args.approve_tools {
        orchestrator.approval_handler(AutoApprove)
    } else {
        orchestrator.approval_handler(|_: &ApprovalRequest| ApprovalDecision::Defer)
    };
    let worker = Worker::connect(store, settings, orchestrator)
        .await
        .map_err(|e| BadInput(format!("cannot join the cluster: {e}")))?;
    let options = WorkerOptions {
        pools: pools.clone(),
        concurrency: args.concurrency as usize,
    };
    crate::out::note(&format!(
        "AgentHelm worker for pool(s) {} of {} (up to {} at a time each)",
        pools.join(", "),
        workspace.file.display(),
        options.concurrency
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        crate::interrupt::shutdown_signal().await;
        crate::out::note("Stopping: finishing the work under way.");
        let _ = stop.send(true);
    });
    let outcome = worker.run(&options, stopped).await;
    signal.abort();
    outcome.map_err(|e| anyhow::anyhow!("the worker stopped: {e}"))
}

/// The pools asked for, or every pool of the workspace: each agent's, and the pool of work
/// that names no agent.
fn pools(assembly: &Assembly<'_>, args: &WorkerArgs) -> anyhow::Result<Vec<String>> {
    if !args.pools.is_empty() {
        if let Some(problem) = args.pools.iter().find_map(|p| pool_name_problem(p)) {
            return Err(BadInput(format!("--pool: {problem}")).into());
        }
        return Ok(args.pools.clone());
    }
    let config = &assembly.workspace.config;
    let cluster = config.cluster.clone().unwrap_or_default();
    let mut pools: BTreeSet<String> = config
        .agents
        .keys()
        .map(|agent| cluster.pool_of(agent))
        .collect();
    pools.insert(DEFAULT_POOL.to_owned());
    Ok(pools.into_iter().collect())
}
