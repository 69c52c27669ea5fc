//! The `cluster:` section: where the work queue is and which worker pool runs which agents.
//!
//! ```yaml
//! store: { backend: postgres, url: "postgres://agenthelm@127.0.0.1:5432/agenthelm" }
//! cluster:
//!   nats: nats://127.0.0.1:4222          # or AGENTHELM_NATS_URL
//!   pools: { booker: [booker], research: [researcher, writer] }
//! ```

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// The environment variable read for the NATS URL when `cluster.nats` is not set.
pub const NATS_URL_ENV: &str = "AGENTHELM_NATS_URL";

/// The `cluster:` section of `agenthelm.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server with JetStream (`nats://host:4222`); when absent, `AGENTHELM_NATS_URL`.
    #[serde(default)]
    pub nats: Option<String>,
    /// Worker pools by name, each with the agents whose steps it runs. An agent in no pool has
    /// a pool of its own, named after it.
    #[serde(default)]
    pub pools: BTreeMap<String, Vec<String>>,
    /// How long a worker may hold a piece of work without a sign of life before it is given to
    /// another (default 30s; a running step sends a sign of life every third of it).
    #[serde(default, deserialize_with = "duration_text")]
    pub ack_wait: Option<Duration>,
    /// How many times a piece of work is delivered before its step fails (default 5).
    #[serde(default)]
    pub max_deliver: Option<u32>,
    /// How long a coordinator's hold on a run lasts without renewal before another coordinator
    /// may take the run over (default 15s).
    #[serde(default, deserialize_with = "duration_text")]
    pub lease: Option<Duration>,
    /// How many NATS servers keep a copy of the work queue (default 1; 3 in production).
    #[serde(default)]
    pub replicas: Option<usize>,
}

impl ClusterConfig {
    /// The pool that runs `agent`'s work: the pool that lists it, else one named after it.
    /// (Work of no agent goes to the cluster's default pool.)
    pub fn pool_of(&self, agent: &str) -> String {
        self.pools
            .iter()
            .find(|(_, agents)| agents.iter().any(|a| a == agent))
            .map_or_else(|| agent.to_owned(), |(pool, _)| pool.clone())
    }

    /// The NATS URL: `nats:`, else `AGENTHELM_NATS_URL`.
    pub fn nats_url(&self) -> Option<String> {
        self.nats
            .clone()
            .filter(|u| !u.trim().is_empty())
            .or_else(|| {
                std::env::var(NATS_URL_ENV)
                    .ok()
                    .filter(|u| !u.trim().is_empty())
            })
    }

    /// Problems with the section, as (key, message), given the workspace's agents.
    pub(crate) fn problems(&self, agents: &[&str]) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.nats.as_deref().is_some_and(|u| u.trim().is_empty()) {
            problems.push((
                "cluster.nats".to_owned(),
                format!("must not be empty (leave it out to read {NATS_URL_ENV})"),
            ));
        }
        if self.max_deliver == Some(0) {
            problems.push((
                "cluster.max_deliver".to_owned(),
                "must be at least 1".into(),
            ));
        }
        if !matches!(self.replicas, None | Some(1..=5)) {
            problems.push(("cluster.replicas".to_owned(), "must be from 1 to 5".into()));
        }
        for (key, value) in [("ack_wait", self.ack_wait), ("lease", self.lease)] {
            if value.is_some_and(|v| v < Duration::from_secs(1)) {
                // Shorter ones would have every process hammer the servers.
                problems.push((format!("cluster.{key}"), "must be at least 1s".into()));
            }
        }
        let mut pool_of_agent: BTreeMap<&str, &str> = BTreeMap::new();
        for (pool, members) in &self.pools {
            if let Some(problem) = pool_name_problem(pool) {
                problems.push((format!("cluster.pools.{pool}"), problem));
            }
            for agent in members {
                if !agents.contains(&agent.as_str()) {
                    problems.push((
                        format!("cluster.pools.{pool}"),
                        format!("agent `{agent}` is not defined under `agents:`"),
                    ));
                }
                if let Some(other) = pool_of_agent.insert(agent, pool) {
                    problems.push((
                        format!("cluster.pools.{pool}"),
                        format!("agent `{agent}` is in pool `{other}` already: an agent's work goes to one pool"),
                    ));
                }
            }
        }
        problems
    }
}

/// Why `name` cannot name a pool (it becomes a NATS subject token and a consumer name).
pub fn pool_name_problem(name: &str) -> Option<String> {
    let fits = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (!fits).then(|| {
        format!("pool name `{name}` may hold only letters, digits, `-` and `_`, and not be empty")
    })
}

/// A duration written with a unit (`30s`, `500ms`).
fn duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| agenthelm::duration::parse(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> ClusterConfig {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn an_agent_goes_to_the_pool_that_lists_it_else_to_its_own() {
        let cluster = config("pools: {research: [researcher, writer]}");
        assert_eq!(cluster.pool_of("writer"), "research");
        assert_eq!(cluster.pool_of("booker"), "booker");
    }

    #[test]
    fn bad_pools_are_named() {
        let cluster = config("pools: {a: [x], 'b.c': [y], d: [x]}");
        let problems = cluster.problems(&["x"]);
        let text = format!("{problems:?}");
        assert!(text.contains("pool name `b.c`"), "{text}");
        assert!(text.contains("agent `y` is not defined"), "{text}");
        assert!(text.contains("agent `x` is in pool `a` already"), "{text}");
    }

    #[test]
    fn durations_are_read_with_units() {
        let cluster = config("ack_wait: 2s\nlease: 500ms\nmax_deliver: 3");
        assert_eq!(cluster.ack_wait, Some(Duration::from_secs(2)));
        assert_eq!(cluster.lease, Some(Duration::from_millis(500)));
        assert_eq!(cluster.max_deliver, Some(3));
        let error = yaml_serde::from_str::<ClusterConfig>("ack_wait: soon").unwrap_err();
        assert!(error.to_string().contains("not a duration"), "{error}");
        let hasty = config("ack_wait: 10ms\nlease: 0.5s\nreplicas: 9");
        let text = format!("{:?}", hasty.problems(&[]));
        assert!(text.contains("cluster.ack_wait"), "{text}");
        assert!(text.contains("cluster.lease"), "{text}");
        assert!(text.contains("cluster.replicas"), "{text}");
    }
}
