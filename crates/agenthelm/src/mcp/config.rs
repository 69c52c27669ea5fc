//! How to reach an MCP server, and the contract rules its tools get.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::tool::ToolContract;

pub use crate::tool::BASE_ENV;

/// How long a server may take to start and answer `initialize` unless configured otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything needed to start (or reach) one MCP server and to use its tools.
///
/// It deserializes from the entry of a server under `mcp_servers:` in a workspace file:
///
/// ```
/// use agenthelm::mcp::{McpServerConfig, McpTransport};
/// use std::collections::BTreeMap;
///
/// let yaml = r#"
/// files:
///   command: [npx, -y, "@modelcontextprotocol/server-filesystem", /tmp/work]
///   env: { NODE_ENV: production }
///   pass_env: [GITHUB_TOKEN]
///   startup_timeout: 20
///   tools:
///     write_file: { compensating_tool: delete_file, requires_approval: true, retries: 1, timeout: 10 }
/// remote:
///   url: http://127.0.0.1:3001/mcp
/// "#;
/// let servers: BTreeMap<String, McpServerConfig> = yaml_serde::from_str(yaml)?;
/// let files = &servers["files"];
/// assert!(matches!(
///     &files.transport,
///     McpTransport::Command { command, pass_env, .. } if command[0] == "npx" && pass_env == &["GITHUB_TOKEN"]
/// ));
/// assert_eq!(files.startup_timeout.as_secs(), 20);
/// assert_eq!(files.tools["write_file"].compensating_tool.as_deref(), Some("delete_file"));
/// assert!(matches!(servers["remote"].transport, McpTransport::Url { .. }));
/// # Ok::<(), yaml_serde::Error>(())
/// ```
///
/// `Debug` output hides the values of `env` and `headers`: they often hold keys and tokens.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct McpServerConfig {
    /// Where the server is: a program to start, or a URL.
    pub transport: McpTransport,
    /// Limit on starting the server and completing the `initialize` handshake.
    pub startup_timeout: Duration,
    /// Contract rules for some of the server's tools, keyed by the server's tool name.
    pub tools: BTreeMap<String, ToolOverride>,
}

/// Where an MCP server is.
#[derive(Clone, PartialEq)]
pub enum McpTransport {
    /// A program started as a child process that speaks MCP on its stdin and stdout.
    ///
    /// The program does not get this process's whole environment (it may hold API keys meant
    /// for other services): only [`BASE_ENV`], the variables named in `pass_env`, and `env` —
    /// unless `inherit_env` is set.
    Command {
        /// Program and arguments (no shell is involved).
        command: Vec<String>,
        /// Environment variables set for the program.
        env: BTreeMap<String, String>,
        /// Names of this process's environment variables passed on to the program (for
        /// example a token the server needs), in addition to [`BASE_ENV`].
        pass_env: Vec<String>,
        /// Pass this process's whole environment to the program.
        inherit_env: bool,
    },
    /// A server reached over MCP's streamable HTTP transport.
    Url {
        /// The endpoint, e.g. `http://127.0.0.1:3001/mcp`.
        url: String,
        /// Extra HTTP headers sent with each request (e.g. `Authorization`).
        headers: BTreeMap<String, String>,
    },
}

/// Contract rules for one MCP tool, set in configuration because MCP itself has no way to say
/// them. All fields are optional; unset ones keep the default contract.
///
/// It deserializes like a [`ToolContract`] (the same keys, `timeout` in seconds, unknown keys
/// refused): the contract's own deserialization is the one place that reads them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "ToolContract")]
pub struct ToolOverride {
    /// The tool that undoes this one. A name of the same server's tool, or of any other tool
    /// the agent or orchestrator has.
    pub compensating_tool: Option<String>,
    /// Ask the approval handler before every call.
    pub requires_approval: Option<bool>,
    /// Extra attempts after a failure.
    pub retries: Option<u32>,
    /// Limit on each attempt, in seconds.
    pub timeout: Option<Duration>,
    /// A failed call may still have changed something (so a failed step is compensated too).
    pub partial_effects: Option<bool>,
    /// Free-form labels.
    pub tags: Option<Vec<String>>,
    /// What the tool changes outside the process.
    pub side_effects: Option<Vec<String>>,
    /// A repeat with the same idempotency key does nothing more.
    pub idempotent: Option<bool>,
}

impl From<ToolContract> for ToolOverride {
    /// The rules a written contract sets: every field that differs from the default contract.
    fn from(contract: ToolContract) -> Self {
        let ToolContract {
            compensating_tool,
            requires_approval,
            retries,
            timeout,
            tags,
            side_effects,
            partial_effects,
            idempotent,
        } = contract;
        ToolOverride {
            compensating_tool,
            requires_approval: requires_approval.then_some(true),
            retries: (retries > 0).then_some(retries),
            timeout,
            partial_effects: partial_effects.then_some(true),
            tags: (!tags.is_empty()).then_some(tags),
            side_effects: (!side_effects.is_empty()).then_some(side_effects),
            idempotent: idempotent.then_some(true),
        }
    }
}

impl ToolOverride {
    /// Applies the fields that are set to `contract`.
    pub fn apply(&self, contract: &mut ToolContract) {
        if let Some(tool) = &self.compensating_tool {
            contract.compensating_tool = Some(tool.clone());
        }
        if let Some(required) = self.requires_approval {
            contract.requires_approval = required;
        }
        if let Some(retries) = self.retries {
            contract.retries = retries;
        }
        if let Some(timeout) = self.timeout {
            contract.timeout = Some(timeout);
        }
        if let Some(partial) = self.partial_effects {
            contract.partial_effects = partial;
        }
        if let Some(tags) = &self.tags {
            contract.tags = tags.clone();
        }
        if let Some(side_effects) = &self.side_effects {
            contract.side_effects = side_effects.clone();
        }
        if let Some(idempotent) = self.idempotent {
            contract.idempotent = idempotent;
        }
    }
}

impl McpServerConfig {
    /// A server started as `program args...` (no shell), with the default start-up timeout.
    ///
    /// ```
    /// use agenthelm::mcp::McpServerConfig;
    /// use std::time::Duration;
    ///
    /// let config = McpServerConfig::command(["mcp-server-time", "--local-timezone", "UTC"])
    ///     .env("TZ", "UTC")
    ///     .startup_timeout(Duration::from_secs(10));
    /// assert_eq!(config.startup_timeout, Duration::from_secs(10));
    /// ```
    pub fn command(argv: impl IntoIterator<Item = impl Into<String>>) -> Self {
        McpServerConfig {
            transport: McpTransport::Command {
                command: argv.into_iter().map(Into::into).collect(),
                env: BTreeMap::new(),
                pass_env: Vec::new(),
                inherit_env: false,
            },
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            tools: BTreeMap::new(),
        }
    }

    /// A server reached over streamable HTTP at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        McpServerConfig {
            transport: McpTransport::Url {
                url: url.into(),
                headers: BTreeMap::new(),
            },
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            tools: BTreeMap::new(),
        }
    }

    /// Adds an environment variable for a command server (ignored for URL servers).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Command { env, .. } = &mut self.transport {
            env.insert(key.into(), value.into());
        }
        self
    }

    /// Passes this process's variable `name` on to a command server (ignored for URL servers).
    pub fn pass_env(mut self, name: impl Into<String>) -> Self {
        if let McpTransport::Command { pass_env, .. } = &mut self.transport {
            pass_env.push(name.into());
        }
        self
    }

    /// Passes this process's whole environment to a command server (ignored for URL servers).
    /// Off by default: the environment may hold keys meant for other services.
    pub fn inherit_env(mut self, inherit: bool) -> Self {
        if let McpTransport::Command { inherit_env, .. } = &mut self.transport {
            *inherit_env = inherit;
        }
        self
    }

    /// Adds an HTTP header for a URL server (ignored for command servers).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpTransport::Url { headers, .. } = &mut self.transport {
            headers.insert(name.into(), value.into());
        }
        self
    }

    /// Sets the limit on start-up and the `initialize` handshake.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets contract rules for the server's tool `name`.
    ///
    /// ```
    /// use agenthelm::mcp::{McpServerConfig, ToolOverride};
    ///
    /// let config = McpServerConfig::command(["my-server"]).tool(
    ///     "create_user",
    ///     ToolOverride { compensating_tool: Some("delete_user".into()), ..Default::default() },
    /// );
    /// assert!(config.tools.contains_key("create_user"));
    /// ```
    pub fn tool(mut self, name: impl Into<String>, rules: ToolOverride) -> Self {
        self.tools.insert(name.into(), rules);
        self
    }

    /// A short description of where the server is: the command line, or the URL without
    /// credentials or query. Never env values or headers.
    pub fn describe(&self) -> String {
        match &self.transport {
            McpTransport::Command { command, .. } => command.join(" "),
            McpTransport::Url { url, .. } => shown_url(url),
        }
    }
}

/// `url` without user info (`user:token@`) and query (`?key=...`), which may hold secrets.
pub(super) fn shown_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
        None => without_query.to_owned(),
    }
}

/// The shape of a server entry as written in a file; checked into [`McpServerConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "de_argv")]
    command: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    pass_env: Vec<String>,
    #[serde(default)]
    inherit_env: bool,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::tool::deserialize_secs")]
    startup_timeout: Option<Duration>,
    #[serde(default)]
    tools: BTreeMap<String, ToolOverride>,
}

impl TryFrom<RawConfig> for McpServerConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        let transport = match (raw.command, raw.url) {
            (Some(_), Some(_)) => {
                return Err("give either `command` or `url`, not both".into());
            }
            (None, None) => {
                return Err("missing `command` (program and arguments) or `url`".into());
            }
            (Some(command), None) => {
                if command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err("`command` is empty: give the program and its arguments".into());
                }
                if !raw.headers.is_empty() {
                    return Err("`headers` only apply to `url` servers".into());
                }
                McpTransport::Command {
                    command,
                    env: raw.env,
                    pass_env: raw.pass_env,
                    inherit_env: raw.inherit_env,
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "`url` must start with http:// or https://, got `{}`",
                        shown_url(&url)
                    ));
                }
                if !raw.env.is_empty() || !raw.pass_env.is_empty() || raw.inherit_env {
                    return Err(
                        "`env`, `pass_env` and `inherit_env` only apply to `command` servers"
                            .into(),
                    );
                }
                McpTransport::Url {
                    url,
                    headers: raw.headers,
                }
            }
        };
        Ok(McpServerConfig {
            transport,
            startup_timeout: raw.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT),
            tools: raw.tools,
        })
    }
}

/// `command` is a list (program and arguments) or a single program name.
fn de_argv<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Argv {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<Argv>::deserialize(d)?.map(|argv| match argv {
        Argv::One(program) => vec![program],
        Argv::Many(argv) => argv,
    }))
}

/// Shows keys only: values of environment variables and headers are often secrets.
struct Redacted<'a>(&'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

impl fmt::Debug for McpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            McpTransport::Command {
                command,
                env,
                pass_env,
                inherit_env,
            } => f
                .debug_struct("Command")
                .field("command", command)
                .field("env", &Redacted(env))
                .field("pass_env", pass_env)
                .field("inherit_env", inherit_env)
                .finish(),
            McpTransport::Url { url, headers } => f
                .debug_struct("Url")
                .field("url", &shown_url(url))
                .field("headers", &Redacted(headers))
                .finish(),
        }
    }
}

impl fmt::Debug for McpServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpServerConfig")
            .field("transport", &self.transport)
            .field("startup_timeout", &self.startup_timeout)
            .field("tools", &self.tools)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<McpServerConfig, String> {
        yaml_serde::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn command_as_list_or_single_program() {
        let list = parse("command: [a, --b]").unwrap();
        assert_eq!(list.describe(), "a --b");
        let one = parse("command: prog").unwrap();
        assert_eq!(one.describe(), "prog");
        assert_eq!(one.startup_timeout, DEFAULT_STARTUP_TIMEOUT);
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let both = parse("command: [a]\nurl: http://x").unwrap_err();
        assert!(both.contains("not both"), "{both}");
        let neither = parse("env: {A: b}").unwrap_err();
        assert!(neither.contains("missing `command`"), "{neither}");
        let empty = parse("command: []").unwrap_err();
        assert!(empty.contains("`command` is empty"), "{empty}");
        let scheme = parse("url: ftp://x").unwrap_err();
        assert!(scheme.contains("http://"), "{scheme}");
        let typo = parse("command: [a]\nstartup_timeot: 3").unwrap_err();
        assert!(typo.contains("startup_timeot"), "{typo}");
        let negative = parse("command: [a]\nstartup_timeout: -1").unwrap_err();
        assert!(
            negative.contains("positive number of seconds"),
            "{negative}"
        );
        let tool_typo = parse("command: [a]\ntools: {t: {retry: 2}}").unwrap_err();
        assert!(tool_typo.contains("retry"), "{tool_typo}");
        let env_on_url = parse("url: http://x\nenv: {A: b}").unwrap_err();
        assert!(env_on_url.contains("`env`"), "{env_on_url}");
    }

    #[test]
    fn overrides_change_only_what_they_set() {
        let config = parse(
            "command: [a]\ntools:\n  make: {compensating_tool: unmake, retries: 2, timeout: 1.5}",
        )
        .unwrap();
        let mut contract = ToolContract {
            requires_approval: true,
            ..ToolContract::default()
        };
        config.tools["make"].apply(&mut contract);
        assert_eq!(contract.compensating_tool.as_deref(), Some("unmake"));
        assert_eq!(contract.retries, 2);
        assert_eq!(contract.timeout, Some(Duration::from_millis(1500)));
        assert!(contract.requires_approval, "unset fields keep their value");
    }

    #[test]
    fn overrides_read_every_contract_key_and_name_a_bad_one() {
        let config = parse(
            "command: [a]\ntools:\n  make: {requires_approval: true, tags: [db], side_effects: [rows], partial_effects: true}",
        )
        .unwrap();
        let mut contract = ToolContract::default();
        config.tools["make"].apply(&mut contract);
        assert!(contract.requires_approval && contract.partial_effects);
        assert_eq!(contract.tags, ["db"]);
        assert_eq!(contract.side_effects, ["rows"]);
        let bad = parse("command: [a]\ntools: {t: {timeout: -2}}").unwrap_err();
        assert!(
            bad.contains("timeout") && bad.contains("positive number of seconds"),
            "{bad}"
        );
    }

    #[test]
    fn shown_urls_lose_credentials_and_queries() {
        assert_eq!(
            shown_url("https://user:tok@example.com:8443/mcp?key=sk-1#x"),
            "https://example.com:8443/mcp"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:3001/mcp"),
            "http://127.0.0.1:3001/mcp"
        );
        assert_eq!(shown_url("http://host"), "http://host");
    }

    #[test]
    fn debug_hides_env_and_header_values() {
        let command = McpServerConfig::command(["srv"]).env("API_KEY", "sk-secret-1");
        let url = McpServerConfig::url("http://127.0.0.1:1/mcp")
            .header("Authorization", "Bearer tok-secret-2");
        let shown = format!("{command:?} {url:?}");
        assert!(shown.contains("API_KEY") && shown.contains("Authorization"));
        assert!(
            !shown.contains("sk-secret-1") && !shown.contains("tok-secret-2"),
            "{shown}"
        );
    }
}
