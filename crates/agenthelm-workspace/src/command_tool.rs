//! Command tools: a program declared in the workspace file becomes a [`Tool`].
//!
//! The program runs without a shell, in the workspace file's folder, in a process group of its
//! own. It reads its arguments as one JSON object on stdin. Exit status 0 means success and its
//! stdout is the result (JSON when it parses as JSON, else the trimmed text); any other status is
//! a failure whose message is its stderr. When the call is dropped (a timeout, a cancelled step)
//! the whole process group is killed, so no grandchild is left behind; when the program ends,
//! whatever it left running in its group is killed too. Its stdout is read up to a limit
//! (`max_output`, default [`DEFAULT_MAX_OUTPUT`]); past it the call fails and the group is killed.
//!
//! The tool learns which piece of work it serves from environment variables:
//! [`IDEMPOTENCY_KEY_VAR`] (the same when the same work is attempted again, so a tool can make a
//! repeat harmless), [`RUN_ID_VAR`] and [`STEP_ID_VAR`].

use agenthelm::tool::{ChildEnv, Tool, ToolCallInfo, ToolError, ToolSpec};
use async_trait::async_trait;
use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::byte_size::ByteSize;
use crate::workspace::ToolConfig;

/// Environment variable with a key that stays the same when the same work is attempted again.
pub const IDEMPOTENCY_KEY_VAR: &str = "AGENTHELM_IDEMPOTENCY_KEY";
/// Environment variable with the plan run's id (empty outside a plan).
pub const RUN_ID_VAR: &str = "AGENTHELM_RUN_ID";
/// Environment variable with the plan step's id (empty outside a plan).
pub const STEP_ID_VAR: &str = "AGENTHELM_STEP_ID";

/// The most stdout one call may print unless the tool's `max_output` says otherwise.
pub const DEFAULT_MAX_OUTPUT: ByteSize = ByteSize(10 << 20);

/// Most of a tool's stderr that goes into an error message, in characters.
const MAX_ERROR_CHARS: usize = 2000;
/// Most of a tool's stderr that is kept, in bytes; the rest is read and dropped, so a tool that
/// floods stderr can neither fill memory nor block on a full pipe.
const MAX_STDERR_BYTES: usize = 64 * 1024;

/// A tool that runs a program.
///
/// ```
/// use agenthelm::tool::ToolSpec;
/// use agenthelm_workspace::CommandTool;
/// use serde_json::json;
///
/// let spec = ToolSpec::new("count", "Count words", json!({"type": "object"}));
/// let tool = CommandTool::new(spec, vec!["wc".into(), "-w".into()], std::path::Path::new("."));
/// assert_eq!(tool.argv(), ["wc", "-w"]);
/// ```
#[derive(Debug, Clone)]
pub struct CommandTool {
    spec: ToolSpec,
    argv: Vec<String>,
    dir: PathBuf,
    max_output: ByteSize,
    env: BTreeMap<String, String>,
    pass_env: Vec<String>,
    inherit_env: bool,
}

impl CommandTool {
    /// A tool that runs `argv` in `dir`. A relative program path with a `/` in it is taken
    /// relative to `dir`; a bare name is looked up in `PATH`.
    pub fn new(spec: ToolSpec, argv: Vec<String>, dir: &Path) -> Self {
        CommandTool {
            spec,
            argv,
            dir: dir.to_path_buf(),
            max_output: DEFAULT_MAX_OUTPUT,
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            inherit_env: false,
        }
    }

    /// The same tool with another environment. By default the program gets only
    /// [`BASE_ENV`](agenthelm::tool::BASE_ENV) from this process (no API keys), the
    /// `AGENTHELM_*` variables of the call,
    /// and nothing else; `env` adds variables, `pass_env` names more of this process's
    /// variables to pass on, and `inherit_env` passes the whole environment.
    pub fn with_env(
        mut self,
        env: BTreeMap<String, String>,
        pass_env: Vec<String>,
        inherit_env: bool,
    ) -> Self {
        self.env = env;
        self.pass_env = pass_env;
        self.inherit_env = inherit_env;
        self
    }

    /// The same tool with another limit on what one call may print on stdout (default
    /// [`DEFAULT_MAX_OUTPUT`]). A call that prints more fails and its process group is killed;
    /// more than the limit is never held in memory.
    pub fn with_max_output(mut self, max_output: ByteSize) -> Self {
        self.max_output = max_output;
        self
    }

    /// The tool a workspace declares as `name`, running in `dir` (the workspace's folder).
    pub fn from_config(name: &str, config: &ToolConfig, dir: &Path) -> Self {
        let mut spec = ToolSpec::new(name, config.description.clone(), config.parameters.clone());
        spec.contract = config.contract.clone();
        CommandTool::new(spec, config.command.clone(), dir)
            .with_max_output(config.max_output.unwrap_or(DEFAULT_MAX_OUTPUT))
            .with_env(
                config.env.clone(),
                config.pass_env.clone(),
                config.inherit_env,
            )
    }

    /// The program and its arguments.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The folder the program runs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks that the program exists and can be run: a path (relative to the tool's folder
    /// when it contains a `/`) must be an executable file, a bare name must be one in `PATH`.
    /// The error says which and why, for a check before anything runs.
    pub fn check_program(&self) -> Result<(), String> {
        let program = self.program();
        let written = self.argv.first().map(String::as_str).unwrap_or_default();
        let is_path = program.components().count() > 1 || program.is_absolute();
        if is_path {
            return executable(&program).map_err(|why| format!("program `{written}` {why}"));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        if std::env::split_paths(&path).any(|dir| executable(&dir.join(&program)).is_ok()) {
            return Ok(());
        }
        Err(format!(
            "program `{}` is not found in PATH",
            program.display()
        ))
    }

    fn program(&self) -> PathBuf {
        let program = Path::new(self.argv.first().map(String::as_str).unwrap_or_default());
        if program.is_relative() && program.components().count() > 1 {
            self.dir.join(program)
        } else {
            program.to_path_buf()
        }
    }

    fn fail(&self, message: impl std::fmt::Display) -> ToolError {
        ToolError::Failed(format!("tool `{}`: {message}", self.spec.name))
    }
}

/// Whether `path` is a file that may be executed; else why not.
fn executable(path: &Path) -> Result<(), &'static str> {
    let meta = std::fs::metadata(path).map_err(|_| "does not exist")?;
    if !meta.is_file() {
        return Err("is not a file");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("is not executable");
        }
    }
    Ok(())
}

/// The running program, whose whole process group is killed when this is dropped: after the
/// call, or when the call is cancelled (a timeout, a cancelled step, a runtime shutting down).
struct Group(Box<dyn ChildWrapper>);

impl Drop for Group {
    fn drop(&mut self) {
        // SIGKILL to the group. A group that is already gone is the usual, good outcome. While
        // any member lives the group id cannot be reused, so this cannot reach a stranger.
        let _ = self.0.start_kill();
    }
}

#[async_trait]
impl Tool for CommandTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, args: Value, call: &ToolCallInfo) -> Result<Value, ToolError> {
        let program = self.program();
        tracing::debug!(tool = %self.spec.name, program = %program.display(), dir = %self.dir.display(), "starting command tool");
        let mut command = tokio::process::Command::new(&program);
        let env = ChildEnv::new(&self.env, &self.pass_env, self.inherit_env);
        if env.clear {
            command.env_clear();
        }
        command
            .envs(&env.vars)
            .args(self.argv.iter().skip(1))
            .current_dir(&self.dir)
            .env(IDEMPOTENCY_KEY_VAR, &call.idempotency_key)
            .env(RUN_ID_VAR, call.run_id.as_deref().unwrap_or_default())
            .env(STEP_ID_VAR, call.step_id.as_deref().unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut wrapped = CommandWrap::from(command);
        #[cfg(unix)]
        wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
        wrapped.wrap(KillOnDrop);
        let mut group = Group(wrapped.spawn().map_err(|e| {
            self.fail(format!(
                "cannot start `{}` (in {}): {e}",
                program.display(),
                self.dir.display()
            ))
        })?);
        let input = serde_json::to_vec(&args).map_err(|e| self.fail(e))?;
        let mut output = Output::default();
        let status = self.run_to_exit(&mut group, input, &mut output).await?;
        tracing::debug!(tool = %self.spec.name, %status, stdout_bytes = output.stdout.len(), "command tool finished");
        // Background processes the tool left in its group are killed too: a tool that returned
        // leaves nothing running.
        drop(group);
        if !status.success() {
            return Err(self.fail(failure_message(status, &output.stderr)));
        }
        parse_output(&output.stdout).map_err(|e| self.fail(e))
    }
}

/// What a tool printed. Filled while it is read, so that what was read before the reading
/// stopped is kept.
#[derive(Default)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl CommandTool {
    /// Feeds `input` to the program, reads its output into `output` and waits for it to exit.
    ///
    /// The program's exit ends the call, not the end of its output: a background child that
    /// inherited stdout may keep the pipe open for as long as it lives. After the exit, what is
    /// still in the pipes is read for [`DRAIN_WINDOW`]; then reading stops, and the caller's
    /// drop of the group kills whatever is left.
    async fn run_to_exit(
        &self,
        group: &mut Group,
        input: Vec<u8>,
        output: &mut Output,
    ) -> Result<ExitStatus, ToolError> {
        let stdin = group.0.stdin().take();
        let stdout = group.0.stdout().take();
        let stderr = group.0.stderr().take();
        let lost = |e: ReadError| match e {
            ReadError::Io(e) => self.fail(format!("lost track of the process: {e}")),
            ReadError::TooLong => self.fail(format!(
                "printed more than {} on stdout, the limit of its `max_output`; its process \
                 group was killed",
                self.max_output
            )),
        };
        let limit = usize::try_from(self.max_output.0).unwrap_or(usize::MAX);
        let reads = read_output(stdin, input, stdout, stderr, limit, output);
        tokio::pin!(reads);
        tokio::select! {
            read = &mut reads => {
                read.map_err(lost)?;
                group.0.wait().await.map_err(|e| lost(e.into()))
            }
            status = group.0.wait() => {
                if let Ok(read) = tokio::time::timeout(DRAIN_WINDOW, &mut reads).await {
                    read.map_err(lost)?;
                }
                status.map_err(|e| lost(e.into()))
            }
        }
    }
}

/// How long the pipes are still read after the program exited: enough to take what it wrote
/// just before exiting, which is already in the pipe.
const DRAIN_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

/// Writes `input` to stdin and reads stdout and stderr to their ends, all at once, so a tool
/// that prints a lot before reading cannot deadlock.
async fn read_output(
    stdin: Option<impl AsyncWrite + Unpin>,
    input: Vec<u8>,
    stdout: Option<impl AsyncRead + Unpin>,
    stderr: Option<impl AsyncRead + Unpin>,
    stdout_limit: usize,
    output: &mut Output,
) -> Result<(), ReadError> {
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A tool that does not read its input closes the pipe early: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        }
        Ok(())
    };
    tokio::try_join!(
        feed,
        read_all(stdout, Over::Fail(stdout_limit), &mut output.stdout),
        read_all(stderr, Over::Drop(MAX_STDERR_BYTES), &mut output.stderr)
    )?;
    Ok(())
}

/// Why reading a tool's output stopped early.
enum ReadError {
    Io(std::io::Error),
    /// stdout went past its limit.
    TooLong,
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// What happens to a pipe's bytes past a limit.
#[derive(Clone, Copy)]
enum Over {
    /// They are read and dropped: the pipe cannot fill up and block the tool.
    Drop(usize),
    /// Reading fails: the output is unusable.
    Fail(usize),
}

/// Reads a pipe to its end into `kept`, never holding more than the limit.
async fn read_all(
    pipe: Option<impl AsyncRead + Unpin>,
    over: Over,
    kept: &mut Vec<u8>,
) -> Result<(), ReadError> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    let (Over::Drop(limit) | Over::Fail(limit)) = over;
    let mut buffer = [0u8; 8192];
    loop {
        let n = pipe.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        let room = limit.saturating_sub(kept.len());
        if n > room && matches!(over, Over::Fail(_)) {
            return Err(ReadError::TooLong);
        }
        kept.extend_from_slice(&buffer[..n.min(room)]);
    }
}

fn failure_message(status: ExitStatus, stderr: &[u8]) -> String {
    let status = match (status.code(), signal_of(status)) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".to_owned(),
    };
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        format!("{status} (no message on stderr)")
    } else {
        let mut message: String = stderr.chars().take(MAX_ERROR_CHARS).collect();
        if message.len() < stderr.len() {
            message.push('…');
        }
        format!("{status}: {message}")
    }
}

/// The signal that ended the program, by number and name, like `9 (SIGKILL)`.
#[cfg(unix)]
fn signal_of(status: ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let number = status.signal()?;
    Some(match nix::sys::signal::Signal::try_from(number) {
        Ok(signal) => format!("{number} ({})", signal.as_str()),
        Err(_) => number.to_string(),
    })
}

#[cfg(not(unix))]
fn signal_of(_status: ExitStatus) -> Option<String> {
    None
}

/// stdout as a result: JSON when it is JSON, else the trimmed text. Output that is not text, or
/// that starts like JSON but does not parse, is an error: it is almost always a broken tool.
fn parse_output(stdout: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(stdout).map_err(|e| {
        format!(
            "printed output that is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::String(String::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Ok(value),
        Err(e) if text.starts_with(['{', '[']) => Err(format!(
            "printed output that starts like JSON but is not valid JSON ({e})"
        )),
        Err(_) => Ok(Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_is_json_or_trimmed_text() {
        assert_eq!(parse_output(b" {\"a\": 1}\n"), Ok(json!({"a": 1})));
        assert_eq!(parse_output(b"42\n"), Ok(json!(42)));
        assert_eq!(parse_output(b"  hello world \n"), Ok(json!("hello world")));
        assert_eq!(parse_output(b""), Ok(json!("")));
        assert!(parse_output(b"{\"a\": ")
            .unwrap_err()
            .contains("not valid JSON"));
        assert_eq!(
            parse_output(b"ok \xff\xfe").unwrap_err(),
            "printed output that is not UTF-8 text (invalid byte at offset 3)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn failures_name_the_status_or_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            failure_message(ExitStatus::from_raw(3 << 8), b"boom\n"),
            "exited with status 3: boom"
        );
        assert_eq!(
            failure_message(ExitStatus::from_raw(9), b""),
            "was killed by signal 9 (SIGKILL) (no message on stderr)"
        );
        let flood = "x".repeat(MAX_ERROR_CHARS * 3);
        let message = failure_message(ExitStatus::from_raw(1 << 8), flood.as_bytes());
        assert!(message.ends_with('…'));
        assert_eq!(
            message.chars().count(),
            "exited with status 1: ".len() + MAX_ERROR_CHARS + 1
        );
    }
}
