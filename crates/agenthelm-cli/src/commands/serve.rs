//! `agenthelm serve`: the workspace's runs over HTTP (see `docs/server.md`).

use agenthelm::agent::PlannerAgent;
use agenthelm_cluster::Coordinator;
use agenthelm_server::auth::{Users, OWNER_TOKEN_FILE};
use agenthelm_server::Runs;
use agenthelm_server::Server;
use agenthelm_workspace::{Assembly, ModelNeed};
use anyhow::Context;
use std::sync::Arc;

use super::Session;
use crate::cli::ServeArgs;
use crate::exit::BadInput;

/// Runs `agenthelm serve` until Ctrl-C or SIGTERM.
pub async fn run(session: &Session, args: &ServeArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let assembly = Assembly::new(&workspace, session.user(), None);
    let outcome = serve(&assembly, args).await;
    assembly.shutdown().await;
    outcome
}

async fn serve(assembly: &Assembly<'_>, args: &ServeArgs) -> anyhow::Result<()> {
    let store = agenthelm_workspace::open_store(assembly.workspace)?;
    let postgres =
        assembly.workspace.store_config().backend == agenthelm_workspace::StoreBackend::Postgres;
    let store_dir = if postgres {
        // The server's own files stay on this host, beside the workspace file.
        assembly
            .workspace
            .store_config()
            .location(&assembly.workspace.dir)
    } else if store.location.is_dir() {
        store.location.clone()
    } else {
        store
            .location
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    };
    let users = Users::load(assembly.workspace.config.server.as_ref(), &store_dir)
        .map_err(|e| BadInput(e.to_string()))?;
    let mut orchestrator = assembly.orchestrator().await?;
    // With a `cluster:` section the server coordinates: workers carry the steps out, and runs
    // another coordinator left behind are taken over.
    let coordinator = crate::cluster::coordinator(assembly.workspace, &store).await?;
    if let Some(coordinator) = &coordinator {
        orchestrator = orchestrator.remote_runs(Arc::new(coordinator.clone()));
    }
    // A plan whose command tools cannot run is refused before anything runs, as `execute` does.
    let workspace = assembly.workspace.clone();
    let mut builder = Server::builder(orchestrator, store.store.clone(), users.clone())
        .max_runs(args.max_runs as usize)
        .tools(assembly.orchestrator_tools())
        .preflight(
            move |plan| match agenthelm_workspace::check_programs(&workspace, plan) {
                Err(agenthelm_workspace::WorkspaceError::MissingPrograms(problems)) => problems,
                Err(other) => vec![other.to_string()],
                Ok(()) => Vec::new(),
            },
        );
    // Plans from goals need a model; without one the API takes plans only.
    if let Ok(lm) = assembly.lm(None, ModelNeed::Required) {
        let registry = assembly.registry(ModelNeed::OnDemand).await?;
        builder = builder
            .planner(PlannerAgent::new("planner", lm, assembly.tools.clone()).agents(&registry));
    }
    let server = builder.build();
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| BadInput(format!("cannot listen on {}: {e}", args.addr)))?;
    let address = listener.local_addr().context("no local address")?;
    let picked_up = server.recover();
    let url = format!("http://{address}");
    crate::out::note(&format!(
        "AgentHelm serves {} at {url} (runs in {})",
        assembly.workspace.file.display(),
        store.location.display()
    ));
    if picked_up > 0 {
        crate::out::note(&format!("Picked up {picked_up} unfinished run(s)."));
    }
    match users.owner_token() {
        Some(token) => crate::out::note(&format!(
            "Sign in with the owner token (kept in {}): {url}/?token={token}",
            store_dir.join(OWNER_TOKEN_FILE).display()
        )),
        None => crate::out::note("Users sign in with their tokens (server.users)."),
    }
    let runs = server.runs().clone();
    let watch = coordinator.map(|c| tokio::spawn(take_over_orphans(c, runs.clone())));
    server
        .serve(listener, crate::interrupt::shutdown_signal())
        .await
        .context("the server stopped")?;
    if let Some(watch) = watch {
        watch.abort();
    }
    crate::out::note("Stopping: running runs are suspended and picked up at the next start.");
    runs.suspend_all(std::time::Duration::from_secs(10)).await;
    Ok(())
}

/// Takes over the runs whose coordinator stopped (its lease ran out), looking twice per lease.
async fn take_over_orphans(coordinator: Coordinator, runs: Arc<Runs>) {
    let every = coordinator.lease() / 2;
    loop {
        tokio::time::sleep(every).await;
        match coordinator.orphaned_runs(256) {
            Ok(orphans) => {
                let taken = runs.take_over(&orphans);
                if taken > 0 {
                    crate::out::note(&format!(
                        "Took over {taken} run(s) another coordinator left."
                    ));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for runs to take over"),
        }
    }
}
