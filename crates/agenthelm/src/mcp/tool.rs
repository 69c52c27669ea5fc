//! An MCP server's tool as an AgentHelm [`Tool`], and what its results become.

use async_trait::async_trait;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{json, Value};
use std::fmt;

use super::server::McpServer;
use crate::tool::{compile_parameters, Tool, ToolCallInfo, ToolError, ToolSpec};

/// One tool of an MCP server. Calling it sends `tools/call` to the server (starting the server
/// first if needed).
///
/// Made by [`McpServer::tools`] or [`McpServers::resolve`](super::McpServers::resolve); its
/// contract comes from the server's configured tool rules.
#[derive(Clone)]
pub struct McpTool {
    spec: ToolSpec,
    server: McpServer,
}

impl McpTool {
    pub(super) fn new(server: McpServer, tool: rmcp::model::Tool) -> Self {
        let name = tool.name.to_string();
        let parameters = Value::Object((*tool.input_schema).clone());
        // A schema that does not compile would reject every call locally; let the server judge.
        let (parameters, compiled) = match compile_parameters(&parameters) {
            Ok(compiled) => (parameters, Some(compiled)),
            Err(_) => (json!({"type": "object"}), None),
        };
        let description = tool
            .description
            .map(|d| d.into_owned())
            .or(tool.title)
            .unwrap_or_default();
        let mut spec = ToolSpec::new(name, description, parameters);
        if let Some(compiled) = compiled {
            spec = spec.with_compiled(compiled);
        }
        if let Some(rules) = server.config().tools.get(&spec.name) {
            rules.apply(&mut spec.contract);
        }
        McpTool { spec, server }
    }

    /// The server this tool belongs to.
    pub fn server(&self) -> &McpServer {
        &self.server
    }
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, _call: &ToolCallInfo) -> Result<Value, ToolError> {
        self.server.call_tool(&self.spec.name, args).await
    }
}

impl fmt::Debug for McpTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTool")
            .field("server", &self.server.name())
            .field("spec", &self.spec)
            .finish()
    }
}

/// Turns a `tools/call` result into a tool result: an error result into [`ToolError::Failed`]
/// with the server's message; otherwise the structured content if any, else the content.
pub(super) fn call_result(result: CallToolResult) -> Result<Value, ToolError> {
    if result.is_error == Some(true) {
        let message = match content_value(&result.content) {
            Value::String(text) if !text.trim().is_empty() => text,
            Value::Null => match &result.structured_content {
                Some(structured) => structured.to_string(),
                None => "the tool reported an error without a message".to_owned(),
            },
            other => other.to_string(),
        };
        return Err(ToolError::Failed(message));
    }
    Ok(match result.structured_content {
        Some(structured) => structured,
        None => content_value(&result.content),
    })
}

/// Text-only content becomes its text (parsed when it is JSON); anything else (images,
/// resources) becomes the list of content blocks as JSON.
fn content_value(content: &[ContentBlock]) -> Value {
    let texts: Option<Vec<&str>> = content
        .iter()
        .map(|block| block.as_text().map(|t| t.text.as_str()))
        .collect();
    match texts {
        _ if content.is_empty() => Value::Null,
        Some(texts) => {
            let text = texts.join("\n");
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        None => serde_json::to_value(content).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(content: Vec<ContentBlock>, is_error: bool) -> CallToolResult {
        let mut result = CallToolResult::success(content);
        result.is_error = Some(is_error);
        result
    }

    #[test]
    fn text_becomes_text_or_json() {
        let text = call_result(result(vec![ContentBlock::text("hello")], false));
        assert_eq!(text, Ok(json!("hello")));
        let parsed = call_result(result(vec![ContentBlock::text("{\"a\": 1}")], false));
        assert_eq!(parsed, Ok(json!({"a": 1})));
        let joined = call_result(result(
            vec![ContentBlock::text("one"), ContentBlock::text("two")],
            false,
        ));
        assert_eq!(joined, Ok(json!("one\ntwo")));
        assert_eq!(call_result(result(vec![], false)), Ok(Value::Null));
    }

    #[test]
    fn structured_content_wins() {
        let mut both = result(vec![ContentBlock::text("42")], false);
        both.structured_content = Some(json!({"result": 42}));
        assert_eq!(call_result(both), Ok(json!({"result": 42})));
    }

    #[test]
    fn other_content_is_kept_as_blocks() {
        let mixed = call_result(result(
            vec![
                ContentBlock::text("see"),
                ContentBlock::image("AAAA", "image/png"),
            ],
            false,
        ))
        .unwrap();
        assert_eq!(mixed[1]["type"], "image");
        assert_eq!(mixed[1]["mimeType"], "image/png");
    }

    #[test]
    fn error_results_carry_the_message() {
        let failed = call_result(result(vec![ContentBlock::text("disk full")], true));
        assert_eq!(failed, Err(ToolError::Failed("disk full".into())));
        let silent = call_result(result(vec![], true)).unwrap_err();
        assert!(silent.to_string().contains("without a message"));
    }
}
