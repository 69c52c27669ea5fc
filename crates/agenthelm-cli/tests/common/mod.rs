//! Helpers for end-to-end tests: temporary workspaces and running the built binary.
#![allow(dead_code)]

pub use agenthelm_test_support::TempDir;
use agenthelm_test_support::{MockServer, Reply};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agenthelm")
}

/// The binary in `dir`, with a private HOME, no colours forced either way, stdin empty.
pub fn agenthelm(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .env("HOME", dir.join(".home"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        // Nothing may reach the internet: a model call goes to a closed local port.
        .env("OPENAI_API_KEY", "test-key")
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .stdin(Stdio::null());
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

pub fn run(dir: &Path, args: &[&str]) -> Run {
    output(agenthelm(dir).args(args).output().unwrap())
}

pub fn output(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the binary printed at a pseudo-terminal, read by read, with the milliseconds since it
/// started: how the output arrived over time.
pub type PtyReads = Vec<(u64, String)>;

/// What a pseudo-terminal session does besides reading: answers each prompt that contains
/// `prompt` with the next of `answers`, and creates the file `seen` once the output shows
/// `marker`.
#[derive(Default)]
pub struct PtyScript<'a> {
    pub prompt: &'a str,
    pub answers: &'a [&'a str],
    pub marker: Option<(&'a str, &'a Path)>,
}

/// The binary at a pseudo-terminal (python3's pty module, which prints the reads as JSON), in
/// `dir`, with the same environment as [`agenthelm`], following `script`.
pub fn pty_command(dir: &Path, args: &[&str], script: &PtyScript, env: &[(&str, &str)]) -> Command {
    const DRIVER: &str = r#"
import codecs, json, os, pty, sys, time
binary, prompt, answers, marker, seen = sys.argv[1:6]
answers, args = json.loads(answers), sys.argv[6:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(binary, [binary] + args)
decoder = codecs.getincrementaldecoder("utf-8")("replace")
start, reads, asked, buf = time.monotonic(), [], 0, b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    buf += chunk
    reads.append([round((time.monotonic() - start) * 1000), decoder.decode(chunk)])
    while prompt and answers and buf.count(prompt.encode()) > asked:
        asked += 1
        os.write(fd, (answers.pop(0) + "\n").encode())
    if marker and marker.encode() in buf and not os.path.exists(seen):
        open(seen, "w").close()
_, status = os.waitpid(pid, 0)
print(json.dumps(reads))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let (marker, seen) = script.marker.unwrap_or(("", Path::new("")));
    let mut cmd = Command::new("python3");
    cmd.current_dir(dir)
        .env("HOME", dir.join(".home"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env("OPENAI_API_KEY", "test-key")
        .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
        .arg("-c")
        .arg(DRIVER)
        .arg(bin())
        .arg(script.prompt)
        .arg(serde_json::to_string(script.answers).unwrap())
        .arg(marker)
        .arg(seen)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The run of a [`pty_command`]: everything printed as `stdout` (the terminal mixes both
/// streams), and the reads it came in.
pub fn pty_output(out: Output) -> (Run, PtyReads) {
    let driver = output(out);
    let reads: PtyReads = serde_json::from_str(driver.stdout.trim())
        .unwrap_or_else(|e| panic!("the pty driver printed no reads ({e}): {}", driver.all()));
    let run = Run {
        code: driver.code,
        stdout: reads.iter().map(|(_, text)| text.as_str()).collect(),
        stderr: driver.stderr,
    };
    (run, reads)
}

/// Runs the binary at a pseudo-terminal: answers each prompt that contains `prompt` with the
/// next of `answers`. Returns the exit code and everything printed.
pub fn run_in_pty(
    dir: &Path,
    args: &[&str],
    prompt: &str,
    answers: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let script = PtyScript {
        prompt,
        answers,
        marker: None,
    };
    pty_output(pty_command(dir, args, &script, env).output().unwrap()).0
}

/// A command tool for tests, in python3; its first argument picks what it does.
pub const TOOL_PY: &str = r#"
import json, os, pathlib, subprocess, sys, time
mode = sys.argv[1]
args = json.load(sys.stdin)
if mode == "echo":
    print(json.dumps({"args": args, "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in
        ["AGENTHELM_IDEMPOTENCY_KEY", "AGENTHELM_RUN_ID", "AGENTHELM_STEP_ID"]}}))
elif mode == "text":
    print("   plain words  \n")
elif mode == "fail":
    sys.stderr.write("boom: the disk is full\n")
    sys.exit(3)
elif mode == "garbage":
    sys.stdout.buffer.write(b"ok \xff\xfe\xfd")
elif mode == "badjson":
    print('{"half": ')
elif mode == "hang":
    child = subprocess.Popen(["sleep", "1000"])
    pathlib.Path(args["pidfile"]).write_text(str(child.pid))
    time.sleep(1000)
elif mode == "create":
    pathlib.Path("created").mkdir(exist_ok=True)
    pathlib.Path("created", args["name"]).write_text("x")
    print(json.dumps({"id": args["name"]}))
elif mode == "delete":
    pathlib.Path("created", args["name"]).unlink()
    print(json.dumps({"deleted": args["name"]}))
elif mode == "gate":
    # Waits until the test creates the file `go`, then creates its file like `create`.
    pathlib.Path("waiting").write_text(str(os.getpid()))
    for _ in range(4000):
        if pathlib.Path("go").exists():
            break
        time.sleep(0.005)
    else:
        sys.exit("gate: never opened")
    pathlib.Path("created").mkdir(exist_ok=True)
    pathlib.Path("created", args["name"]).write_text("x")
    print(json.dumps({"id": args["name"]}))
elif mode == "barrier":
    # Concurrency without clocks: each call waits until `expect` calls are inside at once.
    pathlib.Path("inside").mkdir(exist_ok=True)
    me = pathlib.Path("inside", args["name"])
    me.write_text("x")
    seen = len(list(pathlib.Path("inside").iterdir()))
    with open("seen.log", "a") as log:
        log.write(f"{args['name']} {seen}\n")
    for _ in range(4000):
        if len(list(pathlib.Path("inside").iterdir())) >= args["expect"]:
            break
        time.sleep(0.005)
    else:
        sys.exit("barrier: the other calls never arrived")
    if args["expect"] == 1:
        # Stay inside a while, so that calls running at the same time would see each other.
        time.sleep(0.3)
        me.unlink()
    print(json.dumps({"name": args["name"]}))
else:
    sys.exit("unknown mode " + mode)
"#;

/// A workspace with the test tool under several names.
pub fn workspace(dir: &TempDir, extra_tools: &str) -> PathBuf {
    dir.write("tools/t.py", TOOL_PY);
    dir.write(
        "agenthelm.yaml",
        &format!(
            r#"model: openai/test-model
default_agent: worker
agents:
  worker:
    role: does things
    tools: [echo, create, delete, fail, barrier, gate]
tools:
  echo:
    description: Echo arguments and environment
    command: [python3, tools/t.py, echo]
  create:
    description: Create a file
    command: [python3, tools/t.py, create]
    parameters:
      type: object
      properties: {{ name: {{ type: string }} }}
      required: [name]
    compensating_tool: delete
  delete:
    description: Delete a file
    command: [python3, tools/t.py, delete]
    parameters:
      type: object
      properties: {{ name: {{ type: string }} }}
      required: [name]
  fail:
    description: Always fails
    command: [python3, tools/t.py, fail]
  gate:
    description: Waits for the test, then creates a file
    command: [python3, tools/t.py, gate]
    compensating_tool: delete
  barrier:
    description: Waits for the others
    command: [python3, tools/t.py, barrier]
{extra_tools}"#
        ),
    )
}

/// A loopback OpenAI-compatible server answering each request from a script (then HTTP 500
/// "script exhausted"), and recording every request as `{"line": "POST /v1/... HTTP/1.1",
/// "body": ..}`.
pub struct LlmServer {
    /// `http://127.0.0.1:PORT/v1`, for `OPENAI_BASE_URL`.
    pub base_url: String,
    server: MockServer,
}

impl LlmServer {
    pub fn start(replies: Vec<Value>) -> LlmServer {
        let replies = replies.into_iter().map(|r| Reply::json(200, r)).collect();
        let exhausted = Reply::json(500, json!({"error": {"message": "script exhausted"}}));
        let server = MockServer::start_then(replies, exhausted);
        LlmServer {
            base_url: format!("{}/v1", server.url()),
            server,
        }
    }

    pub fn requests(&self) -> Vec<Value> {
        self.server
            .received()
            .iter()
            .map(|r| {
                let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                let line = format!("{} {} {}", r.method, r.path, r.version);
                json!({"line": line, "body": body})
            })
            .collect()
    }
}

/// A chat-completions answer with text.
pub fn text_reply(text: &str, input: u64, output: u64) -> Value {
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
    })
}

/// A chat-completions answer asking for one tool call.
pub fn tool_reply(tool: &str, args: Value) -> Value {
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls",
                     "message": {"role": "assistant", "content": null, "tool_calls": [{
                         "id": "call_1", "type": "function",
                         "function": {"name": tool, "arguments": args.to_string()}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}
    })
}

/// A slow command tool that logs each call with its idempotency key (see kill_resume.rs):
/// `python3 tool.py do|undo` with `{"name": .., "fail": ..}` on stdin. `KILL_AT=mode:name:when`
/// makes it SIGKILL its parent before or after its work; `TOOL_SLEEP` sets its pause (s).
pub const LOGGING_TOOL: &str = r#"
import json, os, sys, time, signal
mode = sys.argv[1]
args = json.load(sys.stdin)
name = args["name"]
key = os.environ.get("AGENTHELM_IDEMPOTENCY_KEY", "")
log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.log")
def note(line):
    with open(log, "a") as f:
        f.write(line + "\n")
def kill_point(when):
    if os.environ.get("KILL_AT") == f"{mode}:{name}:{when}":
        os.kill(os.getppid(), signal.SIGKILL)
pid = os.getpid()
note(f"begin {mode} {name} {key} {pid}")
kill_point("before")
time.sleep(float(os.environ.get("TOOL_SLEEP", "0.15")))
if mode == "do" and args.get("fail"):
    kill_point("after")
    note(f"end {mode} {name} {key} {pid}")
    print("failed on purpose", file=sys.stderr)
    sys.exit(1)
word = "effect" if mode == "do" else "undone"
with open(log) as f:
    done = any(l.split()[:3] == [word, name, key] for l in f)
if not done:
    note(f"{word} {name} {key}")
kill_point("after")
note(f"end {mode} {name} {key} {pid}")
try:
    print(json.dumps({"name": name, "mode": mode}))
except BrokenPipeError:
    pass
"#;

/// A workspace with `make` (compensated by `unmake`), both [`LOGGING_TOOL`].
pub const LOGGING_WORKSPACE: &str = r#"
tools:
  make:
    command: [python3, tool.py, do]
    pass_env: [KILL_AT, TOOL_SLEEP]
    parameters:
      type: object
      properties: {name: {type: string}, fail: {type: boolean}}
      required: [name]
    compensating_tool: unmake
  unmake:
    command: [python3, tool.py, undo]
    pass_env: [KILL_AT, TOOL_SLEEP]
    parameters:
      type: object
      properties: {name: {type: string}}
      required: [name]
"#;
