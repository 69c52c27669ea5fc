//! The workspace file `agenthelm.yaml`: where it is, what it may say, and the checks that make a
//! mistake in it an error naming the file, line and key.

use agenthelm::budget::Budget;
use agenthelm::mcp::McpServerConfig;
use agenthelm::store::Durability;
use agenthelm::{RollbackMode, ToolContract};
use serde::de::{DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::byte_size::ByteSize;
use crate::cluster::ClusterConfig;
use crate::error::WorkspaceError;
use crate::rate_limits::RateLimitConfig;
use crate::redact_config::RedactConfig;
use crate::source::{parse_yaml, read_input, SourceError, SourceErrors};

/// The name of the workspace file.
pub const FILE_NAME: &str = "agenthelm.yaml";

/// What `agenthelm.yaml` declares. Maps are keyed by name.
///
/// New top-level sections (`mcp_servers:`, `store:`) are added as new optional fields here.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Default model for agents and the planner, as `provider/model`.
    #[serde(default)]
    pub model: Option<String>,
    /// The agent that takes steps naming no agent.
    #[serde(default)]
    pub default_agent: Option<String>,
    /// Agents by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub agents: BTreeMap<String, AgentConfig>,
    /// Command tools by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tools: BTreeMap<String, ToolConfig>,
    /// MCP servers by name; agents list their tools as `server.tool` or `server.*`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub mcp_servers: BTreeMap<String, McpServerConfig>,
    /// Where runs are kept (default: SQLite at `.agenthelm/agenthelm.db`).
    #[serde(default, deserialize_with = "store_setting")]
    pub store: Option<StoreConfig>,
    /// How a failed run is undone: `sequential` (the default) or `parallel`. A plan file's own
    /// `rollback:` wins.
    #[serde(default)]
    pub rollback: Option<RollbackMode>,
    /// `agenthelm serve`: who may use the server.
    #[serde(default)]
    pub server: Option<ServerConfig>,
    /// What is redacted from journals, exports and output besides the providers' API keys.
    #[serde(default)]
    pub redact: Option<RedactConfig>,
    /// Limits every plan run of the workspace is kept within:
    /// `budget: {max_cost_usd: 0.5, max_tokens: 200000, max_llm_calls: 40, max_duration: 10m,
    /// unpriced: refuse}`. A plan file's own `budget:` can tighten them, not loosen them.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Rate limits for model calls, by provider (`openai`) or model (`openai/gpt-4o`), shared
    /// by every agent and the planner of the process; a model's entry wins over its provider's.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    /// Steps on worker pools across machines: `cluster: {nats: nats://host:4222, pools:
    /// {research: [researcher, writer]}}`. Needs `store: {backend: postgres}`.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// The `server:` section: `server: {users: {alice: {token_env: ALICE_TOKEN}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Users by name, each with the environment variable that holds their token. With none,
    /// the server makes one owner token on its first start.
    #[serde(default, deserialize_with = "null_as_default")]
    pub users: BTreeMap<String, ServerUser>,
}

/// One user of the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerUser {
    /// The environment variable holding the user's token (the token itself never goes in the
    /// file).
    pub token_env: String,
}

/// The run store: `store: path/to/runs.db` (SQLite), `store: {backend: sqlite|jsonl, path: ...}`,
/// or `store: {backend: postgres, url: postgres://...}` (the URL may come from
/// `AGENTHELM_STORE_URL` instead). Paths are relative to the workspace file's folder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Which kind of store.
    #[serde(default)]
    pub backend: StoreBackend,
    /// The database file (sqlite) or folder (jsonl); default under `.agenthelm/`.
    #[serde(default)]
    pub path: Option<String>,
    /// The database URL (postgres only); when absent, `AGENTHELM_STORE_URL` is read.
    #[serde(default)]
    pub url: Option<String>,
    /// `normal` (the default: survives a crash of the process) or `full` (survives a power
    /// loss too, at the cost of a disk flush per write).
    #[serde(default)]
    pub durability: Durability,
}

/// The kinds of run store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One SQLite database file (the default).
    #[default]
    Sqlite,
    /// A folder with one JSON-lines file per run.
    Jsonl,
    /// A PostgreSQL database, shared by several processes and hosts.
    Postgres,
}

/// The environment variable naming the PostgreSQL store's URL when `store.url` is absent.
pub const STORE_URL_ENV: &str = "AGENTHELM_STORE_URL";

impl StoreConfig {
    /// Where the store is, for a workspace in `dir`.
    pub fn location(&self, dir: &Path) -> PathBuf {
        match (&self.path, self.backend) {
            (Some(path), _) => dir.join(path),
            (None, StoreBackend::Sqlite) => dir.join(".agenthelm").join("agenthelm.db"),
            (None, StoreBackend::Jsonl) => dir.join(".agenthelm").join("runs"),
            // A database has no place on disk here; this folder keeps the server's own files.
            (None, StoreBackend::Postgres) => dir.join(".agenthelm"),
        }
    }
}

/// `store:` is either a path string (SQLite) or a map; a map keeps serde's own errors, which name
/// the key and line.
fn store_setting<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StoreConfig>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Option<StoreConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(
                "a path, or a map with `backend` (sqlite, jsonl or postgres) and `path` or `url`",
            )
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E: serde::de::Error>(self, path: &str) -> Result<Self::Value, E> {
            Ok(Some(StoreConfig {
                backend: StoreBackend::Sqlite,
                path: Some(path.to_owned()),
                url: None,
                durability: Durability::Normal,
            }))
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
            StoreConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(Visit)
}

/// One agent: a ToolAgent with a model and some of the workspace's tools.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// What the agent is for.
    #[serde(default)]
    pub role: Option<String>,
    /// Overrides the workspace's `model`.
    #[serde(default)]
    pub model: Option<String>,
    /// The most model calls per task.
    #[serde(default)]
    pub max_iters: Option<u32>,
    /// The longest answer per model call, in tokens (also what a cost budget counts as a
    /// call's worst case).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Names of tools under `tools:`, and MCP tools as `server.tool` or `server.*`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tools: Vec<String>,
}

/// One command tool: a program that gets its arguments as JSON on stdin.
///
/// Besides `command`, `description` and `parameters`, its entry takes the keys of a
/// [`ToolContract`] (`compensating_tool`, `requires_approval`, `retries`, `timeout` in seconds,
/// `tags`, `side_effects`, `partial_effects`), read by the contract's own deserialization.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolConfig {
    /// What the tool does, for models and people.
    pub description: String,
    /// Program and arguments, run without a shell in the workspace file's folder.
    pub command: Vec<String>,
    /// JSON schema of the arguments object (default: any object).
    pub parameters: Value,
    /// Rollback, approval, retry and timeout rules; the timeout kills the tool's whole process
    /// group.
    pub contract: ToolContract,
    /// The most stdout one call may print (`max_output`); `None` for the default,
    /// [`crate::DEFAULT_MAX_OUTPUT`].
    pub max_output: Option<ByteSize>,
    /// Variables set for the program (`env`).
    pub env: BTreeMap<String, String>,
    /// Names of this process's variables passed on to the program (`pass_env`), besides
    /// [`agenthelm::tool::BASE_ENV`].
    pub pass_env: Vec<String>,
    /// Pass this process's whole environment, API keys included (`inherit_env: true`).
    pub inherit_env: bool,
}

/// The keys of a tool entry that are not contract rules.
const TOOL_KEYS: [&str; 7] = [
    "description",
    "command",
    "parameters",
    "max_output",
    "env",
    "pass_env",
    "inherit_env",
];

impl<'de> Deserialize<'de> for ToolConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ToolVisitor)
    }
}

struct ToolVisitor;

impl<'de> Visitor<'de> for ToolVisitor {
    type Value = ToolConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tool: a map with `command` and optionally `description`, `parameters` and contract rules")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ToolConfig, A::Error> {
        let mut own = OwnKeys::default();
        let contract = ToolContract::deserialize(serde::de::value::MapAccessDeserializer::new(
            ContractKeys { map, own: &mut own },
        ))?;
        let command = own
            .command
            .ok_or_else(|| serde::de::Error::missing_field("command"))?;
        Ok(ToolConfig {
            description: own.description.unwrap_or_default(),
            command,
            parameters: own.parameters.unwrap_or_else(any_object),
            contract,
            max_output: own.max_output,
            env: own.env.unwrap_or_default(),
            pass_env: own.pass_env.unwrap_or_default(),
            inherit_env: own.inherit_env.unwrap_or_default(),
        })
    }
}

#[derive(Default)]
struct OwnKeys {
    description: Option<String>,
    command: Option<Vec<String>>,
    parameters: Option<Value>,
    max_output: Option<ByteSize>,
    env: Option<BTreeMap<String, String>>,
    pass_env: Option<Vec<String>>,
    inherit_env: Option<bool>,
}

/// A tool entry as the contract sees it: the tool's own keys are taken out on the way (read in
/// place, so errors keep their line and key), the rest is passed on.
struct ContractKeys<'a, A> {
    map: A,
    own: &'a mut OwnKeys,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ContractKeys<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key_seed(ToolKey { own: self.own })? {
            match key.as_str() {
                "description" => self.own.description = Some(self.map.next_value()?),
                "command" => self.own.command = Some(self.map.next_value()?),
                "parameters" => self.own.parameters = Some(self.map.next_value()?),
                "max_output" => self.own.max_output = Some(self.map.next_value()?),
                "env" => self.own.env = Some(self.map.next_value()?),
                "pass_env" => self.own.pass_env = Some(self.map.next_value()?),
                "inherit_env" => self.own.inherit_env = Some(self.map.next_value()?),
                _ => {
                    let key: serde::de::value::StringDeserializer<A::Error> =
                        key.into_deserializer();
                    return seed.deserialize(key).map(Some);
                }
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A key of a tool entry: the tool's own, or a contract rule. An unknown key, or one of the
/// tool's own keys given twice, is an error raised while the key is read, so that it names the
/// key. (The contract finds its own duplicates.)
struct ToolKey<'a> {
    own: &'a OwnKeys,
}

impl<'de> DeserializeSeed<'de> for ToolKey<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let key = String::deserialize(deserializer)?;
        let seen = match key.as_str() {
            "description" => self.own.description.is_some(),
            "command" => self.own.command.is_some(),
            "parameters" => self.own.parameters.is_some(),
            "max_output" => self.own.max_output.is_some(),
            "env" => self.own.env.is_some(),
            "pass_env" => self.own.pass_env.is_some(),
            "inherit_env" => self.own.inherit_env.is_some(),
            _ => false,
        };
        if seen {
            let field = TOOL_KEYS
                .iter()
                .find(|k| **k == key)
                .copied()
                .unwrap_or_default();
            return Err(serde::de::Error::duplicate_field(field));
        }
        if TOOL_KEYS.contains(&key.as_str()) || contract_keys().contains(&key.as_str()) {
            return Ok(key);
        }
        let expected: Vec<String> = TOOL_KEYS
            .iter()
            .chain(contract_keys())
            .map(|k| format!("`{k}`"))
            .collect();
        Err(serde::de::Error::custom(format_args!(
            "unknown field `{key}`, expected one of {}",
            expected.join(", ")
        )))
    }
}

/// The keys a [`ToolContract`] reads, as its own deserialization declares them.
fn contract_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<&'static [&'static str]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys: &'static [&'static str] = &[];
        // Fails by design once the names are known.
        let _ = ToolContract::deserialize(FieldNames(&mut keys));
        keys
    })
}

/// A deserializer that only learns which fields a struct has.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("only field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A workspace file that was read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// Where the file is (absolute).
    pub file: PathBuf,
    /// Its folder: tools run here and relative paths start here.
    pub dir: PathBuf,
    /// What it says.
    pub config: WorkspaceConfig,
}

/// Finds `agenthelm.yaml` in `start` or its parents.
///
/// A file found this way is used only when it is trusted, as git treats a repository it finds
/// (`safe.directory`): owned by the current user or by root, and not writable by others. Its
/// tools run as the current user, so a file someone else planted or can change in a folder above
/// must not be picked up silently; such a file is an error that says how to use it anyway
/// (`--config PATH`, which names it on purpose, or fixing its owner or permissions).
pub fn discover(start: &Path) -> Result<Option<PathBuf>, SourceError> {
    let found = start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|file| file.is_file());
    if let Some(file) = &found {
        check_trusted(file)?;
    }
    Ok(found)
}

/// Refuses a found workspace file that is owned by someone else (not root) or writable by others.
#[cfg(unix)]
fn check_trusted(file: &Path) -> Result<(), SourceError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).map_err(|e| {
        SourceError::whole_file(file, format!("cannot read the workspace file: {e}"))
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let why = if meta.uid() != me && meta.uid() != 0 {
        format!("it is owned by user id {} (you are {me})", meta.uid())
    } else if meta.mode() & 0o002 != 0 {
        format!("it is writable by others (mode {:o})", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(SourceError::whole_file(
        file,
        format!(
            "not using this workspace file found by searching the folders: {why}, and its \
             tools would run as you. If you trust it, pass `--config {}`; or make it yours \
             and not writable by others (chown, chmod o-w)",
            file.display()
        ),
    ))
}

/// Elsewhere files have no owner and mode to check.
#[cfg(not(unix))]
fn check_trusted(_file: &Path) -> Result<(), SourceError> {
    Ok(())
}

impl Workspace {
    /// Reads and checks the workspace file at `file`.
    ///
    /// Every mistake is an error naming the file, line and key: what parsing finds (the first
    /// one), or else every name that refers to nothing and every schema that is not a schema.
    pub fn load(file: &Path) -> Result<Workspace, WorkspaceError> {
        let text = read_input(file, "workspace file")?;
        Workspace::from_text(file, &text)
    }

    /// Checks `text` as the workspace file at `file` (which need not exist: its folder is where
    /// tools run and relative paths start).
    pub fn from_text(file: &Path, text: &str) -> Result<Workspace, WorkspaceError> {
        let config = parse(file, text)?;
        let problems = check(file, text, &config);
        if !problems.is_empty() {
            return Err(SourceErrors(problems).into());
        }
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        tracing::info!(
            file = %file.display(),
            agents = config.agents.len(),
            tools = config.tools.len(),
            "workspace loaded"
        );
        Ok(Workspace { file, dir, config })
    }

    /// The run store's settings: `store:`, or the default (SQLite under `.agenthelm/`).
    pub fn store_config(&self) -> StoreConfig {
        self.config.store.clone().unwrap_or(StoreConfig {
            backend: StoreBackend::Sqlite,
            path: None,
            url: None,
            durability: Durability::Normal,
        })
    }
}

/// Parses the text, naming the file, line and key of the first problem. Nothing is checked
/// beyond the shape (see [`Workspace::from_text`] for the checks).
pub fn parse(file: &Path, text: &str) -> Result<WorkspaceConfig, SourceError> {
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    }) {
        return Ok(WorkspaceConfig::default());
    }
    parse_yaml(file, text)
}

/// Checks what parsing cannot: names that refer to nothing, schemas that are not schemas.
fn check(file: &Path, text: &str, config: &WorkspaceConfig) -> Vec<SourceError> {
    let mut problems = Vec::new();
    let mut fail = |key: String, message: String| {
        problems.push(SourceError::at_key(file, text, &key, message));
    };
    let defined = |names: &mut dyn Iterator<Item = &String>| {
        let names: Vec<&str> = names.map(String::as_str).collect();
        if names.is_empty() {
            "none are defined".to_owned()
        } else {
            format!("defined: {}", names.join(", "))
        }
    };
    if let Some(agent) = &config.default_agent {
        if !config.agents.contains_key(agent) {
            fail(
                "default_agent".into(),
                format!(
                    "agent `{agent}` is not defined under `agents:` ({})",
                    defined(&mut config.agents.keys())
                ),
            );
        }
    }
    for (name, agent) in &config.agents {
        for tool in &agent.tools {
            if config.tools.contains_key(tool) {
                continue;
            }
            // `server.tool`: the server must be configured; its tools are known once it runs.
            let message = match tool.split_once('.') {
                Some((server, _)) if config.mcp_servers.contains_key(server) => continue,
                Some((server, _)) => format!(
                    "`{tool}` is neither a tool under `tools:` nor a tool of an MCP server: \
                     `{server}` is not defined under `mcp_servers:` ({})",
                    defined(&mut config.mcp_servers.keys())
                ),
                _ => format!(
                    "tool `{tool}` is not defined under `tools:` ({})",
                    defined(&mut config.tools.keys())
                ),
            };
            fail(format!("agents.{name}.tools"), message);
        }
        for (key, value) in [
            ("max_iters", agent.max_iters),
            ("max_tokens", agent.max_tokens),
        ] {
            if value == Some(0) {
                fail(format!("agents.{name}.{key}"), "must be at least 1".into());
            }
        }
    }
    for (name, tool) in &config.tools {
        check_tool(name, tool, config, &mut fail);
    }
    for name in config.mcp_servers.keys() {
        if name.contains('.') || name.trim().is_empty() {
            fail(
                "mcp_servers".into(),
                format!(
                    "server name `{name}` must be non-empty and have no `.` (tools are named \
                     `server.tool`)"
                ),
            );
        }
    }
    for (key, message) in crate::rate_limits::problems(&config.rate_limits) {
        fail(key, message);
    }
    if let Some(cluster) = &config.cluster {
        let agents: Vec<&str> = config.agents.keys().map(String::as_str).collect();
        for (key, message) in cluster.problems(&agents) {
            fail(key, message);
        }
        if config.store.as_ref().map(|s| s.backend) != Some(StoreBackend::Postgres) {
            fail(
                "cluster".into(),
                "needs a store every machine shares: `store: {backend: postgres, url: ...}` (or \
                 AGENTHELM_STORE_URL)"
                    .into(),
            );
        }
    }
    if let Some(store) = &config.store {
        if store.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            let key = if text.contains("path:") {
                "store.path"
            } else {
                "store"
            };
            fail(
                key.into(),
                "must not be empty (leave it out for the default)".into(),
            );
        }
        match (store.backend, &store.path, &store.url) {
            (StoreBackend::Postgres, Some(_), _) => fail(
                "store.path".into(),
                "is for the sqlite and jsonl stores; a postgres store is named by `url` (or \
                 AGENTHELM_STORE_URL)"
                    .into(),
            ),
            (StoreBackend::Sqlite | StoreBackend::Jsonl, _, Some(_)) => fail(
                "store.url".into(),
                "is for `backend: postgres`; a sqlite or jsonl store is named by `path`".into(),
            ),
            (StoreBackend::Postgres, None, Some(url)) if url.trim().is_empty() => fail(
                "store.url".into(),
                "must not be empty (leave it out to read AGENTHELM_STORE_URL)".into(),
            ),
            _ => {}
        }
    }
    problems
}

fn check_tool(
    name: &str,
    tool: &ToolConfig,
    config: &WorkspaceConfig,
    fail: &mut impl FnMut(String, String),
) {
    if tool.command.first().is_none_or(|p| p.trim().is_empty()) {
        fail(
            format!("tools.{name}.command"),
            "must name a program, like [python3, tools/my_tool.py]".into(),
        );
    }
    if let Some(comp) = &tool.contract.compensating_tool {
        if !config.tools.contains_key(comp) {
            fail(
                format!("tools.{name}.compensating_tool"),
                format!("tool `{comp}` is not defined under `tools:`"),
            );
        }
    }
    let schema_problems = agenthelm::tool::check_parameters(&tool.parameters);
    for problem in schema_problems {
        let key = if problem.path.is_empty() {
            format!("tools.{name}.parameters")
        } else {
            format!("tools.{name}.parameters.{}", problem.path)
        };
        fail(key, format!("not a JSON schema: {}", problem.message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        let file = Path::new("ws.yaml");
        match parse(file, text) {
            Err(e) => e.to_string(),
            Ok(config) => SourceErrors(check(file, text, &config)).to_string(),
        }
    }

    #[test]
    fn accepts_the_documented_shape() {
        let text = "model: openai/gpt-4o-mini\ndefault_agent: r\nagents:\n  r:\n    role: finds\n    \
                    model: ollama/llama3.2\n    max_iters: 8\n    tools: [w]\ntools:\n  w:\n    \
                    description: Write\n    command: [python3, w.py]\n    parameters:\n      type: object\n      \
                    properties: { path: { type: string } }\n      required: [path]\n    \
                    compensating_tool: w\n    requires_approval: false\n    retries: 0\n    timeout: 30\n";
        assert_eq!(errors(text), "");
        assert!(parse(Path::new("x"), "# only a comment\n").is_ok());
    }

    #[test]
    fn tool_entries_carry_a_contract() {
        let config = parse(
            Path::new("ws.yaml"),
            "tools:\n  t:\n    command: [x]\n    requires_approval: true\n    partial_effects: true\n    side_effects: [files]\n",
        )
        .unwrap();
        let tool = &config.tools["t"];
        assert_eq!(tool.parameters, serde_json::json!({"type": "object"}));
        assert!(tool.contract.requires_approval && tool.contract.partial_effects);
        assert_eq!(tool.contract.side_effects, ["files"]);
        assert!(errors("tools:\n  t:\n    command: [x]\n    command: [y]\n")
            .ends_with("`tools.t.command`: duplicate field `command`"));
        assert_eq!(
            errors("tools:\n  t:\n    command: [x]\n    timeout: 0\n"),
            "ws.yaml:4: `tools.t.timeout`: expected a positive number of seconds, got 0"
        );
        assert!(
            errors("tools:\n  t:\n    description: [not, text]\n    command: [x]\n")
                .starts_with("ws.yaml:3: `tools.t.description`: invalid type: sequence")
        );
    }

    #[test]
    fn max_output_is_a_size_with_line_and_key_on_mistakes() {
        let parsed = |size: &str| {
            let text = format!("tools:\n  t:\n    command: [x]\n    max_output: {size}\n");
            parse(Path::new("ws.yaml"), &text).map(|c| c.tools["t"].max_output)
        };
        assert_eq!(parsed("10MB").unwrap(), Some(ByteSize(10 << 20)));
        assert_eq!(parsed("4096").unwrap(), Some(ByteSize(4096)));
        assert_eq!(
            errors("tools:\n  t:\n    command: [x]\n    max_output: 10 parsecs\n"),
            "ws.yaml:4: `tools.t.max_output`: expected a size such as 10MB, 512KB or a number of \
             bytes, got \"10 parsecs\""
        );
        assert!(
            errors("tools:\n  t:\n    command: [x]\n    max_output: -5\n")
                .starts_with("ws.yaml:4: `tools.t.max_output`: must be more than 0 bytes")
        );
    }

    #[test]
    fn store_is_a_path_or_a_backend_and_path() {
        let dir = Path::new("/ws");
        let store = |text: &str| parse(Path::new("ws.yaml"), text).unwrap().store;
        assert_eq!(store("model: m\n"), None);
        assert_eq!(
            store("store: runs.db\n").unwrap().location(dir),
            Path::new("/ws/runs.db")
        );
        let jsonl = store("store:\n  backend: jsonl\n").unwrap();
        assert_eq!(jsonl.backend, StoreBackend::Jsonl);
        assert_eq!(jsonl.location(dir), Path::new("/ws/.agenthelm/runs"));
        let sqlite = store("store: {backend: sqlite, path: /tmp/x.db}\n").unwrap();
        assert_eq!(sqlite.location(dir), Path::new("/tmp/x.db"));
        assert_eq!(sqlite.durability, Durability::Normal);
        let full = store("store: {durability: full}\n").unwrap();
        assert_eq!(full.durability, Durability::Full);
        let wrong = parse(Path::new("ws.yaml"), "store: {durability: always}\n").unwrap_err();
        assert!(wrong.to_string().contains("durability"), "{wrong}");
        assert_eq!(
            StoreConfig {
                backend: StoreBackend::Sqlite,
                path: None,
                url: None,
                durability: Durability::Normal,
            }
            .location(dir),
            Path::new("/ws/.agenthelm/agenthelm.db")
        );
    }

    #[test]
    fn a_postgres_store_is_named_by_url_not_path() {
        let store = |text: &str| parse(Path::new("ws.yaml"), text).unwrap().store;
        let pg =
            store("store: {backend: postgres, url: \"postgres://ah@127.0.0.1/ah\"}\n").unwrap();
        assert_eq!(pg.backend, StoreBackend::Postgres);
        assert_eq!(pg.url.as_deref(), Some("postgres://ah@127.0.0.1/ah"));
        let path = errors("store: {backend: postgres, path: runs.db}\n");
        assert!(
            path.starts_with("ws.yaml:1: `store.path`: is for the sqlite and jsonl stores"),
            "{path}"
        );
        let url = errors("store: {backend: sqlite, url: \"postgres://x\"}\n");
        assert!(
            url.starts_with("ws.yaml:1: `store.url`: is for `backend: postgres`"),
            "{url}"
        );
        assert_eq!(errors("store: {backend: postgres}\n"), "");
    }

    #[test]
    fn a_cluster_needs_postgres_and_names_its_bad_keys() {
        let ok = "agents: {booker: {}}\nstore: {backend: postgres}\ncluster:\n  nats: nats://127.0.0.1:4222\n  pools: {travel: [booker]}\n";
        assert_eq!(errors(ok), "");
        let cluster = parse(Path::new("ws.yaml"), ok).unwrap().cluster.unwrap();
        assert_eq!(cluster.pool_of("booker"), "travel");
        let no_pg = errors("cluster: {nats: nats://127.0.0.1:4222}\n");
        assert!(
            no_pg.starts_with("ws.yaml:1: `cluster`: needs a store every machine shares"),
            "{no_pg}"
        );
        let unknown = errors("store: {backend: postgres}\ncluster:\n  pools: {travel: [booker]}\n");
        assert!(
            unknown.contains("ws.yaml:3: `cluster.pools.travel`: agent `booker` is not defined"),
            "{unknown}"
        );
        let typo = errors("store: {backend: postgres}\ncluster:\n  natz: x\n");
        assert!(
            typo.starts_with("ws.yaml:3: `cluster.natz`: unknown field"),
            "{typo}"
        );
    }

    #[test]
    fn bad_store_settings_name_line_and_key() {
        assert_eq!(
            errors("model: m\nstore:\n  backend: mysql\n"),
            "ws.yaml:3: `store.backend`: unknown variant `mysql`, expected one of `sqlite`, `jsonl`, `postgres`"
        );
        assert_eq!(
            errors("store:\n  backend: jsonl\n  file: x\n"),
            "ws.yaml:3: `store.file`: unknown field `file`, expected one of `backend`, `path`, `url`, `durability`"
        );
        assert!(errors("store: [a, b]\n")
            .starts_with("ws.yaml:1: `store`: invalid type: sequence, expected a path"));
        assert_eq!(
            errors("store:\n  path: ''\n"),
            "ws.yaml:2: `store.path`: must not be empty (leave it out for the default)"
        );
    }

    #[test]
    fn names_file_line_and_key() {
        assert_eq!(
            errors("model: m\nagents:\n  a:\n    toolz: [x]\n"),
            "ws.yaml:4: `agents.a.toolz`: unknown field `toolz`, expected one of `role`, `model`, `max_iters`, `max_tokens`, `tools`"
        );
        assert!(
            errors("tools:\n  t:\n    command: [x]\n    retries: many\n")
                .starts_with("ws.yaml:4: `tools.t.retries`: invalid type")
        );
        assert_eq!(
            errors("default_agent: nobody\n"),
            "ws.yaml:1: `default_agent`: agent `nobody` is not defined under `agents:` (none are defined)"
        );
        assert_eq!(
            errors("agents:\n  a:\n    tools: [m.t, m.*, x.t]\nmcp_servers:\n  m:\n    command: [s]\n"),
            "ws.yaml:3: `agents.a.tools`: `x.t` is neither a tool under `tools:` nor a tool of an MCP server: `x` is not defined under `mcp_servers:` (defined: m)"
        );
        assert_eq!(
            errors("mcp_servers:\n  a.b:\n    command: [s]\n"),
            "ws.yaml:1: `mcp_servers`: server name `a.b` must be non-empty and have no `.` (tools are named `server.tool`)"
        );
        let timeout = errors("mcp_servers:\n  m:\n    command: [s]\n    startup_timeout: 0\n");
        assert!(
            timeout.contains(
                "`mcp_servers.m.startup_timeout`: expected a positive number of seconds, got 0"
            ),
            "{timeout}"
        );
        assert_eq!(
            errors("agents:\n  a:\n    tools: [x]\n"),
            "ws.yaml:3: `agents.a.tools`: tool `x` is not defined under `tools:` (none are defined)"
        );
        assert_eq!(
            errors("tools:\n  t:\n    command: [x]\n    parameters:\n      type: object\n      properties:\n        p:\n          type: strin\n"),
            "ws.yaml:8: `tools.t.parameters.properties.p.type`: not a JSON schema: \"strin\" is not a JSON schema type (use one of null, boolean, object, array, number, string, integer)"
        );
    }
}
