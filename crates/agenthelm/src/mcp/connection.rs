//! One live session with an MCP server: the child process (or HTTP endpoint) and the MCP client
//! running over it.

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{Peer, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::ServiceExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::ChildStderr;
use tokio::task::JoinHandle;

use super::config::{shown_url, McpServerConfig, McpTransport};
use super::error::McpError;
use crate::tool::ChildEnv;

/// How long a closing server gets to exit by itself before its process group is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(8);
/// How many of the server's last stderr lines are kept for error messages.
const STDERR_LINES: usize = 20;
/// Longest stderr line kept (longer ones are cut).
const STDERR_LINE_CHARS: usize = 400;

/// A started server and the client session with it.
pub(super) struct Connection {
    service: RunningService<RoleClient, ClientConfig>,
    pid: Option<u32>,
    stderr: StderrTail,
    // Declared last so it is dropped last: kills whatever is left of the process group.
    _group: Option<GroupKill>,
}

impl Connection {
    /// Starts the server (or reaches it) and completes the `initialize` handshake, within the
    /// configured start-up timeout.
    pub(super) async fn open(name: &str, config: &McpServerConfig) -> Result<Connection, McpError> {
        match &config.transport {
            McpTransport::Command {
                command,
                env,
                pass_env,
                inherit_env,
            } => {
                let env = ChildEnv::new(env, pass_env, *inherit_env);
                open_child(name, command, &env, config.startup_timeout).await
            }
            McpTransport::Url { url, headers } => {
                open_http(name, url, headers, config.startup_timeout).await
            }
        }
    }

    /// A handle for sending requests.
    pub(super) fn peer(&self) -> Peer<RoleClient> {
        self.service.peer().clone()
    }

    /// Whether the session has ended (the server exited or the connection dropped).
    pub(super) fn is_closed(&self) -> bool {
        self.service.is_closed() || self.service.peer().is_transport_closed()
    }

    /// The server process's id, for a command server.
    pub(super) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The last lines the server wrote to stderr.
    pub(super) fn stderr_tail(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// Ends the session: closes the server's stdin and waits for it to exit, then (or after the
    /// grace period) kills what is left of its process group.
    pub(super) async fn close(mut self) {
        // An error here means the client task panicked or the wait ran out; either way the
        // process group is killed when `self` drops below.
        let _ = self.service.close_with_timeout(CLOSE_GRACE).await;
    }
}

/// The identity this client gives servers in `initialize`.
fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("agenthelm", env!("CARGO_PKG_VERSION")),
    )
}

async fn open_child(
    name: &str,
    argv: &[String],
    env: &ChildEnv,
    startup_timeout: Duration,
) -> Result<Connection, McpError> {
    let spawn_error = |source| McpError::Spawn {
        server: name.to_owned(),
        program: argv.first().cloned().unwrap_or_default(),
        source,
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(spawn_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the command is empty",
        )));
    };
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    if env.clear {
        command.env_clear();
    }
    command.envs(&env.vars);
    let mut wrapped = process_wrap::tokio::CommandWrap::from(command);
    // Its own process group: a terminal's Ctrl-C does not reach the server (so a rollback
    // after Ctrl-C can still use it), and shutdown can kill everything it started.
    #[cfg(unix)]
    wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
    let (process, stderr) = TokioChildProcess::builder(wrapped)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let pid = process.id();
    let group = pid.map(GroupKill);
    let stderr = StderrTail::follow(stderr);
    let handshake = tokio::time::timeout(startup_timeout, client_config().serve(process)).await;
    match handshake {
        Ok(Ok(service)) => Ok(Connection {
            service,
            pid,
            stderr,
            _group: group,
        }),
        Ok(Err(e)) => {
            drop(group);
            Err(McpError::Initialize {
                server: name.to_owned(),
                message: e.to_string(),
                stderr: stderr.finish().await,
            })
        }
        Err(_) => {
            drop(group);
            Err(McpError::StartupTimeout {
                server: name.to_owned(),
                after: startup_timeout,
                stderr: stderr.finish().await,
            })
        }
    }
}

async fn open_http(
    name: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    startup_timeout: Duration,
) -> Result<Connection, McpError> {
    let bad_header = |header: &str| McpError::Initialize {
        server: name.to_owned(),
        // Only the header's name: its value may be a token.
        message: format!("header `{header}` has an invalid name or value"),
        stderr: Vec::new(),
    };
    let mut custom = HashMap::new();
    for (header, value) in headers {
        let header_name =
            http::HeaderName::try_from(header.as_str()).map_err(|_| bad_header(header))?;
        let mut header_value =
            http::HeaderValue::try_from(value.as_str()).map_err(|_| bad_header(header))?;
        header_value.set_sensitive(true);
        custom.insert(header_name, header_value);
    }
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom),
    );
    let handshake = tokio::time::timeout(startup_timeout, client_config().serve(transport)).await;
    match handshake {
        Ok(Ok(service)) => Ok(Connection {
            service,
            pid: None,
            stderr: StderrTail::default(),
            _group: None,
        }),
        Ok(Err(e)) => Err(McpError::Initialize {
            server: name.to_owned(),
            message: format!("{}: {e}", shown_url(url)),
            stderr: Vec::new(),
        }),
        Err(_) => Err(McpError::StartupTimeout {
            server: name.to_owned(),
            after: startup_timeout,
            stderr: Vec::new(),
        }),
    }
}

/// Kills a server's process group when dropped, so nothing it started outlives the session,
/// whatever way the session ended (closed, crashed, dropped, or a failed start).
struct GroupKill(u32);

impl Drop for GroupKill {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Ok(pgid) = i32::try_from(self.0) {
            use nix::sys::signal::{killpg, Signal};
            // ESRCH (nothing left in the group) is the usual, good outcome.
            let _ = killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// The last lines a server wrote to stderr (the rest is discarded, so a chatty server cannot
/// fill memory or block on a full pipe).
#[derive(Default)]
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl StderrTail {
    fn follow(stderr: Option<ChildStderr>) -> Self {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let reader = stderr.map(|stderr| {
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let line: String = line.chars().take(STDERR_LINE_CHARS).collect();
                    if let Ok(mut lines) = lines.lock() {
                        if lines.len() == STDERR_LINES {
                            lines.pop_front();
                        }
                        lines.push_back(line);
                    }
                }
            })
        });
        StderrTail { lines, reader }
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The lines, after giving the reader a moment to reach the end of a dead server's output.
    async fn finish(mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        self.lines()
    }
}

impl Drop for StderrTail {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}
