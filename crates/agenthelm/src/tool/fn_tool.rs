use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::schema::{Problem, Schema};
use super::{Tool, ToolCallInfo, ToolError, ToolSpec};

type Handler =
    dyn Fn(Value, ToolCallInfo) -> BoxFuture<'static, Result<Value, ToolError>> + Send + Sync;

/// A tool built at run time from a name, a description, a JSON schema and a closure.
///
/// This is how tools defined in a configuration file or offered by an MCP server become tools.
///
/// ```
/// use agenthelm::tool::{FnTool, ToolError};
/// use serde_json::json;
/// use std::time::Duration;
///
/// let upper = FnTool::new(
///     "upper",
///     "Upper-case a text",
///     json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
///     |args, _call| async move {
///         let text = args["text"].as_str().ok_or(ToolError::new("text missing"))?;
///         Ok(json!(text.to_uppercase()))
///     },
/// )?
/// .retries(2)
/// .timeout(Duration::from_secs(5));
/// assert_eq!(upper.spec_ref().contract.retries, 2);
/// # Ok::<(), agenthelm::tool::InvalidSchema>(())
/// ```
pub struct FnTool {
    spec: ToolSpec,
    handler: Box<Handler>,
}

/// A tool's parameter schema is not a usable JSON schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tool `{tool}` has an invalid parameter schema: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct InvalidSchema {
    /// The tool.
    pub tool: String,
    /// What is wrong, by keyword path.
    pub problems: Vec<Problem>,
}

/// What is wrong with `parameters` as the schema of a tool's arguments: it must be a JSON
/// schema (see [`check_schema`](super::schema::check_schema)) of an object, since tool arguments are a JSON object.
/// Empty when it is fine. Problems are named by keyword path, like `properties.path.type`.
///
/// ```
/// use agenthelm::tool::check_parameters;
/// use serde_json::json;
///
/// assert!(check_parameters(&json!({"type": "object", "properties": {"n": {"type": "integer"}}})).is_empty());
/// assert_eq!(check_parameters(&json!({"type": "string"}))[0].path, "type");
/// assert_eq!(check_parameters(&json!({"properties": {"n": {"type": "int"}}}))[0].path, "properties.n.type");
/// ```
pub fn check_parameters(parameters: &Value) -> Vec<Problem> {
    compile_parameters(parameters).err().unwrap_or_default()
}

/// `parameters` compiled, or what [`check_parameters`] finds wrong with it.
pub(crate) fn compile_parameters(parameters: &Value) -> Result<Schema, Vec<Problem>> {
    let schema = Schema::compile(parameters)?;
    let object_like = match parameters.get("type") {
        None => parameters.is_object(),
        Some(t) => t == "object",
    };
    if !object_like {
        return Err(vec![Problem::new(
            "type",
            "tool arguments are a JSON object, so the schema's type must be \"object\"",
        )]);
    }
    Ok(schema)
}

impl FnTool {
    /// A tool that calls `handler` with the (already validated) arguments and call information.
    ///
    /// Fails when `parameters` is not a JSON schema of an object.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
        handler: F,
    ) -> Result<Self, InvalidSchema>
    where
        F: Fn(Value, ToolCallInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        let name = name.into();
        let schema = match compile_parameters(&parameters) {
            Ok(schema) => schema,
            Err(problems) => {
                return Err(InvalidSchema {
                    tool: name,
                    problems,
                })
            }
        };
        Ok(FnTool {
            spec: ToolSpec::new(name, description, parameters).with_compiled(schema),
            handler: Box::new(move |args, call| Box::pin(handler(args, call))),
        })
    }

    /// The spec (also available through [`Tool::spec`]).
    pub fn spec_ref(&self) -> &ToolSpec {
        &self.spec
    }

    /// Sets the tool that undoes this one during rollback.
    pub fn compensating_tool(mut self, tool: impl Into<String>) -> Self {
        self.spec.contract.compensating_tool = Some(tool.into());
        self
    }

    /// Declares that a repeat with the same idempotency key does nothing more (see
    /// [`ToolContract::idempotent`](crate::ToolContract::idempotent)).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.spec.contract.idempotent = idempotent;
        self
    }

    /// Requires the approval handler's consent before each call.
    pub fn requires_approval(mut self, required: bool) -> Self {
        self.spec.contract.requires_approval = required;
        self
    }

    /// Extra attempts after a failure.
    pub fn retries(mut self, retries: u32) -> Self {
        self.spec.contract.retries = retries;
        self
    }

    /// Limit on each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.contract.timeout = Some(timeout);
        self
    }

    /// Free-form labels.
    pub fn tags(mut self, tags: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.spec.contract.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// What the tool changes outside the process.
    pub fn side_effects(mut self, effects: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.spec.contract.side_effects = effects.into_iter().map(Into::into).collect();
        self
    }

    /// Declares that a failed call may still have changed something (so it is compensated).
    pub fn partial_effects(mut self, partial: bool) -> Self {
        self.spec.contract.partial_effects = partial;
        self
    }
}

#[async_trait]
impl Tool for FnTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, call: &ToolCallInfo) -> Result<Value, ToolError> {
        (self.handler)(args, call.clone()).await
    }
}

impl fmt::Debug for FnTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}
