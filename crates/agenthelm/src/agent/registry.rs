use std::collections::HashMap;
use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use crate::agent::Agent;

/// Named agents that plan steps can be routed to.
///
/// ```
/// use agenthelm::prelude::*;
///
/// let lm = Lm::from_model(ScriptedLm::new(vec![]));
/// let mut registry = AgentRegistry::new();
/// registry.register(ToolAgent::new("researcher", lm.clone(), ToolSet::new())).unwrap();
/// registry.register(ToolAgent::new("writer", lm.clone(), ToolSet::new())).unwrap();
/// assert!(registry.register(ToolAgent::new("writer", lm, ToolSet::new())).is_err());
///
/// assert!(registry.contains("researcher"));
/// assert_eq!(registry["writer"].name(), "writer");
/// assert_eq!(registry.names(), ["researcher", "writer"]);
/// for name in &registry {
///     println!("{name}");
/// }
/// ```
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: HashMap<String, Arc<dyn Agent>>,
    order: Vec<String>,
}

/// Why an agent could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// An agent with this name is already registered.
    #[error("an agent named `{0}` is already registered")]
    Duplicate(String),
    /// The agent's name is empty.
    #[error("an agent's name must not be empty")]
    EmptyName,
}

impl AgentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an agent under its own name; a name already taken is an error.
    pub fn register(&mut self, agent: impl Agent + 'static) -> Result<(), RegistryError> {
        self.register_shared(Arc::new(agent))
    }

    /// Adds a shared agent under its own name; a name already taken is an error.
    pub fn register_shared(&mut self, agent: Arc<dyn Agent>) -> Result<(), RegistryError> {
        let name = agent.name().to_owned();
        if name.is_empty() {
            return Err(RegistryError::EmptyName);
        }
        if self.agents.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        self.order.push(name.clone());
        self.agents.insert(name, agent);
        Ok(())
    }

    /// Removes and returns the agent called `name`.
    pub fn unregister(&mut self, name: &str) -> Option<Arc<dyn Agent>> {
        let agent = self.agents.remove(name)?;
        self.order.retain(|n| n != name);
        Some(agent)
    }

    /// The agent called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Agent>> {
        self.agents.get(name)
    }

    /// Whether an agent called `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.agents.contains_key(name)
    }

    /// The names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.order.iter().map(String::as_str).collect()
    }

    /// Iterates over the names, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// Iterates over the agents, in registration order.
    pub fn agents(&self) -> impl Iterator<Item = &Arc<dyn Agent>> {
        self.order.iter().filter_map(|n| self.agents.get(n))
    }

    /// How many agents are registered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Removes every agent.
    pub fn clear(&mut self) {
        self.agents.clear();
        self.order.clear();
    }
}

impl Index<&str> for AgentRegistry {
    type Output = dyn Agent;

    /// The agent called `name`.
    ///
    /// # Panics
    /// When no agent has that name; use [`AgentRegistry::get`] to check first.
    fn index(&self, name: &str) -> &Self::Output {
        match self.agents.get(name) {
            Some(agent) => &**agent,
            None => panic!(
                "no agent named `{name}` in the registry (registered: {})",
                self.order.join(", ")
            ),
        }
    }
}

impl<'a> IntoIterator for &'a AgentRegistry {
    type Item = &'a str;
    type IntoIter = std::iter::Map<std::slice::Iter<'a, String>, fn(&'a String) -> &'a str>;

    fn into_iter(self) -> Self::IntoIter {
        self.order.iter().map(String::as_str)
    }
}

impl fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.order).finish()
    }
}
