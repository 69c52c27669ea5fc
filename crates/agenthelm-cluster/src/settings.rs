//! How a cluster is set up: where NATS is, which pool runs which agent's work, and its timings.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::queue::QueueSettings;

/// The pool of work that names no agent.
pub const DEFAULT_POOL: &str = "default";

/// A cluster's settings, shared by its coordinators and workers.
///
/// ```
/// use agenthelm_cluster::ClusterSettings;
///
/// let settings = ClusterSettings::new("nats://127.0.0.1:4222").pool("writer", "research");
/// assert_eq!(settings.pool_of(Some("writer")), "research");
/// assert_eq!(settings.pool_of(Some("booker")), "booker");
/// assert_eq!(settings.pool_of(None), "default");
/// ```
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The NATS server (with JetStream).
    pub nats_url: String,
    /// Pools by agent; an agent not listed has a pool named after it.
    pub pools: BTreeMap<String, String>,
    /// The work queue's stream and its delivery rules.
    pub queue: QueueSettings,
    /// How long a coordinator's hold on a run lasts without renewal (renewed every third).
    pub lease: Duration,
    /// How often a coordinator looks in the store for outcomes it was not told about (a lost
    /// notification, a restart of NATS).
    pub poll: Duration,
}

impl ClusterSettings {
    /// Settings for the NATS server at `nats_url`, with the default timings: work redelivered
    /// after 30 s without a sign of life, at most 5 deliveries, leases of 15 s.
    pub fn new(nats_url: impl Into<String>) -> Self {
        ClusterSettings {
            nats_url: nats_url.into(),
            pools: BTreeMap::new(),
            queue: QueueSettings::default(),
            lease: Duration::from_secs(15),
            poll: Duration::from_secs(1),
        }
    }

    /// Sends `agent`'s work to `pool`.
    pub fn pool(mut self, agent: impl Into<String>, pool: impl Into<String>) -> Self {
        self.pools.insert(agent.into(), pool.into());
        self
    }

    /// The pool that runs `agent`'s work.
    pub fn pool_of<'a>(&'a self, agent: Option<&'a str>) -> &'a str {
        match agent {
            Some(agent) => self.pools.get(agent).map_or(agent, String::as_str),
            None => DEFAULT_POOL,
        }
    }
}
