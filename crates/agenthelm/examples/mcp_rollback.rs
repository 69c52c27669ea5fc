//! A plan whose steps call an MCP server's tools, rolled back through MCP compensations.
//!
//! ```sh
//! cargo run -p agenthelm --example mcp_rollback -- npx -y @modelcontextprotocol/server-memory
//! ```
//!
//! The plan stores two entities and a relation in the memory server, then a step fails; the
//! orchestrator undoes the relation (`delete_relations`, set as the compensating tool in the
//! server's config) and the entities (`delete_entities`, named by the step), newest first.

use agenthelm::mcp::{McpServerConfig, McpServers, ToolOverride};
use agenthelm::prelude::*;
use serde_json::json;

/// Fails on purpose, to trigger the rollback.
#[tool]
fn publish(channel: String) -> Result<String, ToolError> {
    Err(ToolError::new(format!("channel `{channel}` is read-only")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        return Err("usage: mcp_rollback MEMORY-SERVER-COMMAND [ARGS...]".into());
    }
    let memory_file = std::env::temp_dir().join("agenthelm-example-memory.jsonl");
    let memory = McpServerConfig::command(argv)
        .env("MEMORY_FILE_PATH", memory_file.display().to_string())
        .tool(
            "create_relations",
            ToolOverride {
                compensating_tool: Some("delete_relations".into()),
                ..ToolOverride::default()
            },
        );
    let servers = McpServers::from_configs([("memory", memory)]);
    let mut tools = servers.resolve(["memory.*"]).await?;
    tools.extend(&tools![publish]);

    let mut registry = AgentRegistry::new();
    // Every step names its tool, so no model is needed.
    registry.register(ToolAgent::new(
        "keeper",
        Lm::from_model(ScriptedLm::new(vec![])),
        tools,
    ))?;

    let mut plan = Plan::new("record who programmed the Analytical Engine, then publish it");
    plan.steps.push(
        PlanStep::new("people", "store the entities")
            .agent("keeper")
            .tool("create_entities")
            .args(json!({"entities": [
                {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]},
                {"name": "Engine", "entityType": "machine", "observations": []}
            ]}))
            .compensate("delete_entities", json!({"entityNames": ["Ada", "Engine"]})),
    );
    plan.steps.push(
        PlanStep::new("link", "relate them")
            .agent("keeper")
            .tool("create_relations")
            .args(json!({"relations": [{"from": "Ada", "to": "Engine", "relationType": "programmed"}]}))
            .depends_on(["people"]),
    );
    plan.steps.push(
        PlanStep::new("publish", "announce it")
            .agent("keeper")
            .tool("publish")
            .args(json!({"channel": "news"}))
            .depends_on(["link"]),
    );
    plan.approved = true;

    let result = Orchestrator::new(registry).execute(&mut plan).await?;
    for step in &plan.steps {
        println!("{:<8} {:?}", step.id, step.status);
    }
    let graph = servers
        .get("memory")
        .ok_or("memory server missing")?
        .call_tool("read_graph", json!({}))
        .await?;
    println!(
        "success: {}; memory after rollback: {graph}",
        result.success
    );
    servers.shutdown().await;
    Ok(())
}
