//! AgentRegistry: the whole API of the contract.

use agenthelm::orchestrate::RegistryError;
use agenthelm::prelude::*;
use std::sync::Arc;

struct Named(&'static str);

#[agenthelm::async_trait]
impl Agent for Named {
    fn name(&self) -> &str {
        self.0
    }
    async fn run(&self, task: &str) -> AgentResult {
        AgentResult::ok(format!("{}: {task}", self.0))
    }
}

fn registry() -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    registry.register(Named("researcher")).unwrap();
    registry.register(Named("writer")).unwrap();
    registry.register(Named("editor")).unwrap();
    registry
}

#[test]
fn new_registry_is_empty() {
    let registry = AgentRegistry::new();
    assert!(registry.is_empty());
    assert_eq!(registry.len(), 0);
    assert!(registry.names().is_empty());
    assert!(registry.get("x").is_none());
    assert_eq!(format!("{registry:?}"), "[]");
}

#[test]
fn register_rejects_duplicates_and_empty_names() {
    let mut registry = registry();
    let err = registry.register(Named("writer")).unwrap_err();
    assert_eq!(err, RegistryError::Duplicate("writer".into()));
    assert_eq!(
        err.to_string(),
        "an agent named `writer` is already registered"
    );
    assert_eq!(registry.len(), 3, "a rejected agent is not added");
    assert_eq!(registry.register(Named("")), Err(RegistryError::EmptyName));
    let shared: Arc<dyn Agent> = Arc::new(Named("shared"));
    registry.register_shared(Arc::clone(&shared)).unwrap();
    assert!(registry.register_shared(shared).is_err());
}

#[tokio::test]
async fn get_index_and_contains() {
    let registry = registry();
    let writer = registry.get("writer").unwrap();
    assert_eq!(writer.name(), "writer");
    assert_eq!(
        writer.run("draft").await.answer.as_deref(),
        Some("writer: draft")
    );
    assert_eq!(registry["editor"].name(), "editor");
    assert!(registry.contains("researcher"));
    assert!(!registry.contains("Researcher"));
    assert!(registry.get("nobody").is_none());
}

#[test]
#[should_panic(
    expected = "no agent named `nobody` in the registry (registered: researcher, writer, editor)"
)]
fn index_panics_with_a_message_on_a_missing_name() {
    let registry = registry();
    let _ = registry["nobody"].name();
}

#[test]
fn names_iteration_and_len_keep_registration_order() {
    let registry = registry();
    assert_eq!(registry.names(), ["researcher", "writer", "editor"]);
    assert_eq!(
        registry.iter().collect::<Vec<_>>(),
        ["researcher", "writer", "editor"]
    );
    let mut seen = Vec::new();
    for name in &registry {
        seen.push(name);
    }
    assert_eq!(seen, ["researcher", "writer", "editor"]);
    let agents: Vec<&str> = registry.agents().map(|a| a.name()).collect();
    assert_eq!(agents, ["researcher", "writer", "editor"]);
    assert_eq!(registry.len(), 3);
    assert!(!registry.is_empty());
    assert_eq!(
        format!("{registry:?}"),
        r#"["researcher", "writer", "editor"]"#
    );
}

#[test]
fn unregister_and_clear() {
    let mut registry = registry();
    let removed = registry.unregister("writer").unwrap();
    assert_eq!(removed.name(), "writer");
    assert!(registry.unregister("writer").is_none());
    assert!(!registry.contains("writer"));
    assert_eq!(registry.names(), ["researcher", "editor"]);
    assert_eq!(registry.len(), 2);
    // The name is free again, and goes to the end of the order.
    registry.register(Named("writer")).unwrap();
    assert_eq!(registry.names(), ["researcher", "editor", "writer"]);

    let copy = registry.clone();
    registry.clear();
    assert!(registry.is_empty());
    assert_eq!(registry.len(), 0);
    assert!(registry.names().is_empty());
    assert!(registry.get("editor").is_none());
    assert_eq!(copy.len(), 3, "a clone is independent");
    registry.register(Named("editor")).unwrap();
    assert_eq!(registry.names(), ["editor"]);
}
