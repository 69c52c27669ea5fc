//! Tools: named, schema-described functions that agents and plans call.
//!
//! A [`Tool`] has a [`ToolSpec`] (name, description, JSON schema of its arguments, and a
//! [`ToolContract`] with its compensating tool, approval, retry and timeout rules) and an async
//! [`call`](Tool::call). Tools come from three places:
//!
//! - the `#[tool]` attribute on a plain (sync or async) function,
//! - [`FnTool`], built at run time from a name, a schema and a closure,
//! - your own type implementing [`Tool`].
//!
//! A [`ToolSet`] is an ordered collection of tools with unique names; `tools![a, b]` builds one
//! from `#[tool]` functions (or any `Tool + Default` type).

mod child_env;
mod fn_tool;
pub mod schema;
mod set;

pub use crate::retry::RetryPolicy;
pub use child_env::{ChildEnv, BASE_ENV};
pub(crate) use fn_tool::compile_parameters;
pub use fn_tool::{check_parameters, FnTool, InvalidSchema};
pub use set::{IntoTool, ToolFactory, ToolSet};

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A callable tool.
///
/// Implement it by hand when a tool needs state; for plain functions use `#[tool]`.
///
/// ```
/// use agenthelm::tool::{Tool, ToolCallInfo, ToolError, ToolSpec};
/// use serde_json::{json, Value};
///
/// struct Clock { spec: ToolSpec }
///
/// #[agenthelm::async_trait]
/// impl Tool for Clock {
///     fn spec(&self) -> &ToolSpec { &self.spec }
///     async fn call(&self, _args: Value, _call: &ToolCallInfo) -> Result<Value, ToolError> {
///         Ok(json!("12:00"))
///     }
/// }
///
/// let clock = Clock { spec: ToolSpec::new("clock", "Tell the time", json!({"type": "object"})) };
/// assert_eq!(clock.spec().name, "clock");
/// ```
#[async_trait]
pub trait Tool: Send + Sync {
    /// Name, description, argument schema and contract.
    fn spec(&self) -> &ToolSpec;

    /// Runs the tool once. `args` were already validated against the spec's schema; retries,
    /// timeouts and approval are applied by the caller according to the contract.
    async fn call(&self, args: Value, call: &ToolCallInfo) -> Result<Value, ToolError>;
}

/// What a tool is told about the call it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallInfo {
    /// Stable id of this call within the run (the same for every attempt).
    pub call_id: String,
    /// A key that is the same when the same piece of work is attempted again (a retry, or a
    /// resumed run): a tool with side effects can use it to make a repeat harmless.
    pub idempotency_key: String,
    /// The plan run, if the call is part of one.
    pub run_id: Option<String>,
    /// The plan step, if the call is part of one.
    pub step_id: Option<String>,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
}

/// Describes a tool to models, planners and the orchestrator.
#[derive(Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// Unique name within a [`ToolSet`].
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: Value,
    /// Rollback, approval, retry and timeout rules.
    pub contract: ToolContract,
    /// `parameters`, compiled on first use (shared by clones).
    #[serde(skip)]
    compiled: CompiledParameters,
}

impl ToolSpec {
    /// A spec with the default contract (no compensation, no approval, no retries, no timeout).
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters,
            contract: ToolContract::default(),
            compiled: CompiledParameters::default(),
        }
    }

    /// What is wrong with `args` for this tool (empty when they fit): each problem names the
    /// field and the schema keyword. The schema is compiled once, on the first check; a schema
    /// that does not compile gives one problem saying why.
    ///
    /// ```
    /// use agenthelm::ToolSpec;
    /// use serde_json::json;
    ///
    /// let spec = ToolSpec::new("mail", "Send a mail", json!({
    ///     "type": "object",
    ///     "properties": {"to": {"type": "string", "format": "email"}},
    ///     "required": ["to"]
    /// }));
    /// assert!(spec.argument_problems(&json!({"to": "ada@example.com"})).is_empty());
    /// let problems = spec.argument_problems(&json!({"to": "ada at example"}));
    /// assert_eq!((problems[0].path.as_str(), problems[0].keyword.as_deref()), ("to", Some("format")));
    /// ```
    pub fn argument_problems(&self, args: &Value) -> Vec<schema::Problem> {
        match self.parameter_schema() {
            Ok(schema) => schema.validate(args),
            Err(problems) => vec![schema::unusable(&problems)],
        }
    }

    /// `parameters` compiled, from the cache when it was compiled from the same schema (a
    /// changed `parameters` field is compiled afresh).
    fn parameter_schema(&self) -> Result<schema::Schema, Vec<schema::Problem>> {
        if let Some(cached) = self.compiled.get() {
            if cached.source == self.parameters {
                return cached.schema.clone();
            }
        }
        let compiled = Arc::new(Compiled::of(&self.parameters));
        self.compiled.set(Arc::clone(&compiled));
        compiled.schema.clone()
    }

    /// Puts `schema`, compiled from `parameters`, in the cache (for a tool that compiled its
    /// schema to check it).
    pub(crate) fn with_compiled(self, schema: schema::Schema) -> Self {
        self.compiled.set(Arc::new(Compiled {
            source: schema.source().clone(),
            schema: Ok(schema),
        }));
        self
    }
}

impl fmt::Debug for ToolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolSpec")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("parameters", &self.parameters)
            .field("contract", &self.contract)
            .finish()
    }
}

/// A spec's compiled parameter schema: a cache, so it takes no part in comparisons. A clone
/// starts with what the original has compiled.
#[derive(Default)]
struct CompiledParameters(Mutex<Option<Arc<Compiled>>>);

impl CompiledParameters {
    fn get(&self) -> Option<Arc<Compiled>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, compiled: Arc<Compiled>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(compiled);
    }
}

impl Clone for CompiledParameters {
    fn clone(&self) -> Self {
        CompiledParameters(Mutex::new(self.get()))
    }
}

impl PartialEq for CompiledParameters {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

struct Compiled {
    /// The schema it was compiled from.
    source: Value,
    schema: Result<schema::Schema, Vec<schema::Problem>>,
}

impl Compiled {
    fn of(parameters: &Value) -> Self {
        Compiled {
            source: parameters.clone(),
            schema: schema::Schema::compile(parameters),
        }
    }
}

/// The rules that hold wherever a tool is called: by an agent, by a plan step or during rollback.
///
/// It deserializes from the keys a configuration file uses for them (the field names, every one
/// optional; `timeout` in seconds), so a tool declared in a file gets its contract in one step,
/// and a mistake names the key:
///
/// ```
/// use agenthelm::ToolContract;
/// use std::time::Duration;
///
/// let contract: ToolContract = yaml_serde::from_str(
///     "compensating_tool: delete_file\nrequires_approval: true\nretries: 2\ntimeout: 1.5\n",
/// )?;
/// assert_eq!(contract.compensating_tool.as_deref(), Some("delete_file"));
/// assert_eq!(contract.timeout, Some(Duration::from_millis(1500)));
/// assert!(!contract.partial_effects);
///
/// let typo = yaml_serde::from_str::<ToolContract>("retry: 2\n").unwrap_err();
/// assert!(typo.to_string().contains("unknown field `retry`"));
/// let zero = yaml_serde::from_str::<ToolContract>("timeout: 0\n").unwrap_err();
/// assert!(zero.to_string().contains("timeout: expected a positive number of seconds, got 0"));
/// # Ok::<(), yaml_serde::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolContract {
    /// The tool that undoes this one; called with the same arguments during rollback unless a
    /// plan step says otherwise.
    pub compensating_tool: Option<String>,
    /// Ask the approval handler before every call.
    pub requires_approval: bool,
    /// Extra attempts after a failed one (failures only; bad arguments and denials are final).
    pub retries: u32,
    /// Limit on each attempt.
    #[serde(
        serialize_with = "serialize_secs",
        deserialize_with = "deserialize_secs"
    )]
    pub timeout: Option<Duration>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// What the tool changes outside the process, e.g. `"filesystem"` or `"email"`.
    pub side_effects: Vec<String>,
    /// A failed call may still have changed something, so a failed step that used this tool is
    /// compensated too.
    pub partial_effects: bool,
    /// Calling it again with the same idempotency key does nothing more than the first call
    /// did. A compensation by such a tool that was running when its process stopped is run
    /// again on resume, with the same key, instead of being left for a person to check.
    pub idempotent: bool,
}

fn serialize_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_secs_f64()).serialize(s)
}

/// A duration given as a positive number of seconds (`null` for none), as configuration files
/// write them. The number is checked as it is read, so the error carries its place (line, key).
pub(crate) fn deserialize_secs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    struct Secs;

    impl<'de> serde::de::Visitor<'de> for Secs {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a positive number of seconds")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_f64<E: serde::de::Error>(self, secs: f64) -> Result<Self::Value, E> {
            crate::duration::from_seconds(secs)
                .map(Some)
                .map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, secs: i64) -> Result<Self::Value, E> {
            self.visit_f64(secs as f64)
        }

        fn visit_u64<E: serde::de::Error>(self, secs: u64) -> Result<Self::Value, E> {
            self.visit_f64(secs as f64)
        }
    }

    d.deserialize_option(Secs)
}

/// Why a tool call did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not match the tool's schema.
    #[error("invalid arguments for tool `{tool}`: {}", join(problems))]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// Each problem, naming the field.
        problems: Vec<schema::Problem>,
    },
    /// No tool of that name is available.
    #[error("unknown tool `{tool}`{}", available_hint(available))]
    NotFound {
        /// The name asked for.
        tool: String,
        /// The names that exist.
        available: Vec<String>,
    },
    /// The approval handler said no.
    #[error("tool `{tool}` was not approved{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Denied {
        /// The tool.
        tool: String,
        /// The handler's reason.
        reason: Option<String>,
    },
    /// An attempt took longer than the contract's timeout.
    #[error("tool `{tool}` timed out after {}", crate::duration::shown(*after))]
    Timeout {
        /// The tool.
        tool: String,
        /// The timeout that was exceeded.
        after: Duration,
    },
    /// The call waits for a person's decision (the approval handler deferred it): it was not
    /// made.
    #[error("tool `{tool}` waits for a person's approval")]
    AwaitingApproval {
        /// The tool.
        tool: String,
    },
    /// The tool ran and reported a failure.
    #[error("{0}")]
    Failed(String),
}

impl ToolError {
    /// A failure with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        ToolError::Failed(message.to_string())
    }

    /// Whether another attempt could succeed: failures and timeouts yes; bad arguments, unknown
    /// tools and denials no.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ToolError::Failed(_) | ToolError::Timeout { .. })
    }

    /// A short name of the kind of error (`invalid_arguments`, `not_found`, `denied`,
    /// `timeout`, `awaiting_approval`, `failed`), for logs and spans that must not carry the
    /// message (it may quote arguments or output): OpenTelemetry's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ToolError::InvalidArguments { .. } => "invalid_arguments",
            ToolError::NotFound { .. } => "not_found",
            ToolError::Denied { .. } => "denied",
            ToolError::Timeout { .. } => "timeout",
            ToolError::AwaitingApproval { .. } => "awaiting_approval",
            ToolError::Failed(_) => "failed",
        }
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError::Failed(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::Failed(message.to_owned())
    }
}

fn join(problems: &[schema::Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn available_hint(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!(" (available: {})", available.join(", "))
    }
}

/// Turns any displayable error into a [`ToolError`], keeping a `ToolError` as it is.
/// Used by the code `#[tool]` generates.
#[doc(hidden)]
pub fn into_tool_error<E: fmt::Display + 'static>(error: E) -> ToolError {
    match (&error as &dyn std::any::Any).downcast_ref::<ToolError>() {
        Some(tool_error) => tool_error.clone(),
        None => ToolError::Failed(error.to_string()),
    }
}

/// Runs the body of a sync `#[tool]` function on tokio's blocking pool, so that a slow or
/// blocking body does not stall the other calls on its thread and cannot outlive its timeout or
/// its step's cancellation. A panic becomes a failure. Used by the code `#[tool]` generates.
#[doc(hidden)]
pub async fn run_blocking<T, F>(tool: &str, body: F) -> Result<T, ToolError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(body)
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => ToolError::Failed(format!(
                "tool `{tool}` panicked: {}",
                panic_message(panic.as_ref())
            )),
            Err(e) => ToolError::Failed(format!("tool `{tool}` did not finish: {e}")),
        })
}

/// Reads a tool's typed arguments from JSON. Used by the code `#[tool]` generates.
#[doc(hidden)]
pub fn parse_args<T: serde::de::DeserializeOwned>(tool: &str, args: Value) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(args).map_err(|e| ToolError::InvalidArguments {
        tool: tool.to_owned(),
        problems: vec![schema::Problem::new(
            e.path().to_string().trim_start_matches('.'),
            e.into_inner().to_string(),
        )],
    })
}

/// Turns a tool's return value into JSON. Used by the code `#[tool]` generates.
#[doc(hidden)]
pub fn to_output<T: Serialize + ?Sized>(tool: &str, output: &T) -> Result<Value, ToolError> {
    serde_json::to_value(output).map_err(|e| {
        ToolError::Failed(format!(
            "tool `{tool}` returned a value that is not JSON: {e}"
        ))
    })
}

/// Checks `args` against the tool's schema.
pub(crate) fn check_args(tool: &Arc<dyn Tool>, args: &Value) -> Result<(), ToolError> {
    let spec = tool.spec();
    let problems = spec.argument_problems(args);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ToolError::InvalidArguments {
            tool: spec.name.clone(),
            problems,
        })
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
