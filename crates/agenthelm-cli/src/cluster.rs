//! The workspace's `cluster:` section as the cluster crate's settings, and the coordinator
//! `execute` becomes with it.

use agenthelm_cluster::{ClusterSettings, Coordinator};
use agenthelm_workspace::{OpenStore, Workspace, NATS_URL_ENV};
use std::sync::Arc;

use crate::exit::BadInput;

/// The cluster's settings, when the workspace has a `cluster:` section.
pub fn settings(workspace: &Workspace) -> anyhow::Result<Option<ClusterSettings>> {
    let Some(cluster) = &workspace.config.cluster else {
        return Ok(None);
    };
    let Some(url) = cluster.nats_url() else {
        return Err(BadInput(format!(
            "{}: `cluster.nats` is not set and neither is {NATS_URL_ENV}",
            workspace.file.display()
        ))
        .into());
    };
    let mut settings = ClusterSettings::new(url);
    for agent in workspace.config.agents.keys() {
        settings = settings.pool(agent.clone(), cluster.pool_of(agent));
    }
    if let Some(ack_wait) = cluster.ack_wait {
        settings.queue.ack_wait = ack_wait;
    }
    if let Some(max_deliver) = cluster.max_deliver {
        settings.queue.max_deliver = i64::from(max_deliver);
    }
    if let Some(lease) = cluster.lease {
        settings.lease = lease;
    }
    if let Some(replicas) = cluster.replicas {
        settings.queue.replicas = replicas;
    }
    Ok(Some(settings))
}

/// The PostgreSQL store a cluster needs (the workspace check makes sure it is one).
pub fn postgres(
    workspace: &Workspace,
    store: &OpenStore,
) -> anyhow::Result<Arc<agenthelm::store::PostgresStore>> {
    store.postgres.clone().ok_or_else(|| {
        BadInput(format!(
            "{}: `cluster:` needs `store: {{backend: postgres}}`",
            workspace.file.display()
        ))
        .into()
    })
}

/// A coordinator for the workspace's cluster, when it has one.
pub async fn coordinator(
    workspace: &Workspace,
    store: &OpenStore,
) -> anyhow::Result<Option<Coordinator>> {
    let Some(settings) = settings(workspace)? else {
        return Ok(None);
    };
    let coordinator = Coordinator::connect(postgres(workspace, store)?, settings)
        .await
        .map_err(|e| BadInput(format!("cannot coordinate on the cluster: {e}")))?;
    Ok(Some(coordinator))
}
