//! What can go wrong with a workspace: a file that says something wrong (naming file, line and
//! key), a model, agent, MCP server or run store that cannot be used, or user settings that
//! cannot be read or written.

use agenthelm::mcp::McpError;
use agenthelm::orchestrate::RegistryError;
use agenthelm::store::StoreError;
use std::path::PathBuf;

use crate::source::{SourceError, SourceErrors};

/// Why a workspace could not be loaded or assembled.
///
/// [`is_bad_input`](WorkspaceError::is_bad_input) tells a mistake in what the user wrote (a file,
/// a name, a setting) from a failure of something that was started (an MCP server that did not
/// answer, a file that could not be read).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkspaceError {
    /// One problem in a file, with its file, line and key.
    #[error(transparent)]
    File(#[from] SourceError),
    /// Several problems in one file, all reported at once.
    #[error(transparent)]
    Files(#[from] SourceErrors),
    /// A model that is needed cannot be built: no model is configured, or its id is wrong.
    #[error("{message}")]
    Model {
        /// The agent it is for; `None` for the planner.
        agent: Option<String>,
        /// The model id, when one is configured.
        model: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// No agent of that name is declared.
    #[error("agent `{name}` is not defined in {} (defined: {})", file.display(), names(defined))]
    UnknownAgent {
        /// The workspace file.
        file: PathBuf,
        /// The name asked for.
        name: String,
        /// The agents that are declared.
        defined: Vec<String>,
    },
    /// An agent is needed and the workspace declares none.
    #[error("{} defines no agents: add one under `agents:`", file.display())]
    NoAgents {
        /// The workspace file.
        file: PathBuf,
    },
    /// An agent is needed, several are declared, and none is the default.
    #[error("{} defines several agents and no default_agent: choose one by name", file.display())]
    NoDefaultAgent {
        /// The workspace file.
        file: PathBuf,
    },
    /// An agent's MCP tools could not be resolved: a wrong tool name, a program that does not
    /// start, or a server that fails.
    ///
    /// The MCP error is part of the message (it is not also given as the source, so that a
    /// report of the whole chain does not say it twice).
    #[error("{}: agent `{agent}`: {error}", file.display())]
    Mcp {
        /// The workspace file.
        file: PathBuf,
        /// The agent whose tools they are.
        agent: String,
        /// What went wrong (boxed: it is large).
        error: Box<McpError>,
    },
    /// The agents could not be registered.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The run store the workspace names (or its default one) cannot be opened.
    #[error("cannot use the run store: {error} ({})", origin(file, *configured))]
    Store {
        /// The workspace file.
        file: PathBuf,
        /// Where the store is.
        location: PathBuf,
        /// Whether the file names the store (`store:`), or it is the default one.
        configured: bool,
        /// Why it cannot be used (part of the message).
        error: StoreError,
    },
    /// The `redact:` section cannot be applied (its patterns are checked when the file is
    /// read, so this is rare).
    #[error("{}: redact: {message}", file.display())]
    Redact {
        /// The workspace file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `HOME` is not set, so there are no user settings.
    #[error("HOME is not set, so there is no ~/.agenthelm")]
    NoHome,
    /// A user setting was given a value it cannot have, or is unknown.
    #[error("{0}")]
    InvalidSetting(String),
    /// Command tools a plan can reach whose programs cannot be run, one message each (naming
    /// the tool, the step and the program). Found before the plan runs.
    #[error("{}", .0.join("; "))]
    MissingPrograms(Vec<String>),
    /// Reading or writing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, like `read` or `write`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The user settings could not be written as YAML.
    #[error("cannot write the settings as YAML")]
    Yaml(#[source] yaml_serde::Error),
}

impl WorkspaceError {
    /// Whether the error is a mistake in what the user wrote or chose (a file, a name, a model
    /// id, a store location), as opposed to something that failed while it ran.
    pub fn is_bad_input(&self) -> bool {
        match self {
            WorkspaceError::Mcp { error, .. } => !matches!(
                **error,
                McpError::StartupTimeout { .. }
                    | McpError::Initialize { .. }
                    | McpError::Request { .. }
            ),
            WorkspaceError::Io { .. } | WorkspaceError::Yaml(_) => false,
            _ => true,
        }
    }

    /// A read or write error for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        WorkspaceError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn names(defined: &[String]) -> String {
    if defined.is_empty() {
        "none".to_owned()
    } else {
        defined.join(", ")
    }
}

fn origin(file: &std::path::Path, configured: bool) -> String {
    if configured {
        format!("`store:` in {}", file.display())
    } else {
        format!(
            "the default store of {}; choose another with `store:`",
            file.display()
        )
    }
}
