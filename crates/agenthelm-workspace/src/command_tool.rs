//! Command tools: a program declared in the workspace file becomes a [`Tool`].
//!
//! The program runs without a shell, in the workspace file's folder, in a process group of its
//! own. It reads its arguments as one JSON object on stdin. Exit status 0 means success and its
//! stdout is the result (JSON when it parses as JSON, else the trimmed text); any other status is
//! a failure whose message is its stderr. When the call is dropped (a timeout, a cancelled step)
//! the whole process group is killed, so no grandchild is left behind.

use agenthelm::tool::{Tool, ToolCallInfo, ToolError, ToolSpec};
use async_trait::async_trait;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// Environment variable with a key that stays the same when the same work is attempted again.
pub const IDEMPOTENCY_KEY_VAR: &str = "AGENTHELM_IDEMPOTENCY_KEY";
/// Environment variable with the plan run's id (empty outside a plan).
pub const RUN_ID_VAR: &str = "AGENTHELM_RUN_ID";
/// Environment variable with the plan step's id (empty outside a plan).
pub const STEP_ID_VAR: &str = "AGENTHELM_STEP_ID";

/// Most of a tool's stderr that goes into an error message.
const MAX_ERROR_CHARS: usize = 2000;

/// A tool that runs a program.
pub struct CommandTool {
    spec: ToolSpec,
    argv: Vec<String>,
    dir: PathBuf,
}

impl CommandTool {
    /// A tool that runs `argv` in `dir`. A relative program path with a `/` in it is taken
    /// relative to `dir`; a bare name is looked up in `PATH`.
    pub fn new(spec: ToolSpec, argv: Vec<String>, dir: &Path) -> Self {
        CommandTool {
            spec,
            argv,
            dir: dir.to_path_buf(),
        }
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

/// Kills a process group when dropped: after the call, or when the call is cancelled.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.filter(|&p| p > 0) {
            // SAFETY: killpg only sends a signal; a group that is gone gives ESRCH, ignored.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
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
        let mut child = tokio::process::Command::new(&program)
            .args(self.argv.iter().skip(1))
            .current_dir(&self.dir)
            .env(IDEMPOTENCY_KEY_VAR, &call.idempotency_key)
            .env(RUN_ID_VAR, call.run_id.as_deref().unwrap_or_default())
            .env(STEP_ID_VAR, call.step_id.as_deref().unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                self.fail(format!(
                    "cannot start `{}` (in {}): {e}",
                    program.display(),
                    self.dir.display()
                ))
            })?;
        // The child leads its own group (process_group(0)), so its pid is the group id.
        let guard = GroupGuard {
            pgid: child.id().and_then(|id| i32::try_from(id).ok()),
        };
        let input = serde_json::to_vec(&args).map_err(|e| self.fail(e))?;
        let stdin = child.stdin.take();
        // Written beside the reads, so a tool that prints a lot before reading cannot deadlock.
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A tool that does not read its input closes the pipe early: not an error.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(|e| self.fail(format!("lost track of the process: {e}")))?;
        tracing::debug!(tool = %self.spec.name, status = %output.status, stdout_bytes = output.stdout.len(), "command tool finished");
        // Background processes the tool left in its group are killed too: a tool that returned
        // leaves nothing running. (While any of them lives the group id cannot be reused, so the
        // signal cannot reach an unrelated process.)
        drop(guard);
        if !output.status.success() {
            return Err(self.fail(failure_message(&output)));
        }
        parse_output(&output.stdout).map_err(|e| self.fail(e))
    }
}

fn failure_message(output: &std::process::Output) -> String {
    use std::os::unix::process::ExitStatusExt;
    let status = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".to_owned(),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
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
        assert!(parse_output(b"ok \xff\xfe")
            .unwrap_err()
            .contains("not UTF-8"));
    }
}
