//! Redaction end to end (issue 13, item 3): an API key, a token read as `{{env.NAME}}` and an
//! e-mail address planted in a tool's arguments and result and in a model's prompt appear
//! nowhere in the store (SQLite with its WAL, or JSON lines), the trace export, the OTLP
//! payloads, the HTML report or the command's output, while the tool and the model got the
//! real values.

mod common;
use agenthelm_test_support::{MockServer, Reply};
use common::*;
use serde_json::Value;
use std::path::Path;

/// The model's key: the CLI's model sends it to the loopback server, and the plan plants it.
const KEY: &str = "sk-test-PLANTED-7f3a9c2e5b";
const TOKEN: &str = "mail-token-PLANTED-41d8";
const EMAIL: &str = "planted.person@example.com";

/// Records the arguments it got in `received.jsonl` (outside the store), answers with them.
const SEND_PY: &str = r#"
import json, os, signal, sys
args = json.load(sys.stdin)
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "received.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\n")
print(json.dumps({"sent_to": args.get("to"), "with": args.get("key"), "auth": args.get("token")}))
sys.stdout.flush()
stop = os.path.join(here, "stop-after-send")
if os.path.exists(stop):
    os.unlink(stop)
    os.kill(os.getppid(), signal.SIGKILL)
"#;

fn bench(store: &str) -> TempDir {
    let dir = TempDir::new("cli-redaction");
    dir.write("send.py", SEND_PY);
    dir.write(
        "agenthelm.yaml",
        &format!(
            r#"model: openai/test-model
store: {store}
agents:
  writer:
    role: writes notes
tools:
  send:
    description: Send a message
    command: [python3, send.py]
redact:
  env: [MAIL_TOKEN]
  presets: [email]
"#
        ),
    );
    dir.write(
        "plan.yaml",
        &format!(
            r#"goal: write to {EMAIL}
steps:
  - id: send
    description: send to {EMAIL}
    tool: send
    args: {{to: {EMAIL}, key: {KEY}, token: "{{{{env.MAIL_TOKEN}}}}"}}
  - id: draft
    description: draft a note to {EMAIL}, signed with {KEY}
    agent: writer
    depends_on: [send]
"#
        ),
    );
    dir
}

fn with_secrets(dir: &Path, model: &LlmServer) -> std::process::Command {
    let mut command = agenthelm(dir);
    command
        .env("OPENAI_API_KEY", KEY)
        .env("OPENAI_BASE_URL", &model.base_url)
        .env("MAIL_TOKEN", TOKEN);
    command
}

/// Every file under `dir` but the test's own, as text.
fn stored_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if ["received.jsonl", "plan.yaml", "agenthelm.yaml", "send.py"].contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            text.push_str(&stored_text(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

fn assert_clean(what: &str, text: &str) {
    for secret in [KEY, TOKEN, EMAIL] {
        assert!(!text.contains(secret), "{what} holds {secret}:\n{text}");
    }
}

fn run_id(dir: &Path) -> String {
    let listed: Value =
        serde_json::from_str(&run(dir, &["runs", "list", "--json"]).stdout).unwrap();
    listed[0]["run_id"].as_str().unwrap().to_owned()
}

fn planted_secrets_reach_no_file_export_or_output(store: &str, files: &[&str]) {
    let dir = bench(store);
    let model = LlmServer::start(vec![text_reply(&format!("Drafted for {EMAIL}."), 20, 5)]);
    let collector =
        MockServer::always(Reply::raw(200, "{}").header("content-type", "application/json"));
    let execute = output(
        with_secrets(dir.path(), &model)
            .args([
                "execute",
                "plan.yaml",
                "--yes",
                "--otlp-endpoint",
                collector.url(),
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(execute.code, 0, "{}", execute.all());

    // The tool and the model got the real values.
    let received = std::fs::read_to_string(dir.path().join("received.jsonl")).unwrap();
    let args: Value = serde_json::from_str(received.trim()).unwrap();
    assert_eq!(
        args,
        serde_json::json!({"to": EMAIL, "key": KEY, "token": TOKEN})
    );
    let prompt = model.requests()[0]["body"].to_string();
    assert!(prompt.contains(EMAIL) && prompt.contains(KEY), "{prompt}");

    // The views of the run, written after it.
    let id = run_id(dir.path());
    let report = run(dir.path(), &["runs", "report", &id, "-o", "report.html"]);
    assert_eq!(report.code, 0, "{}", report.all());
    let traces = run(dir.path(), &["traces", "export", "-o", "traces.json"]);
    assert_eq!(traces.code, 0, "{}", traces.all());
    let show = run(dir.path(), &["runs", "show", &id, "--json"]);
    assert_eq!(show.code, 0, "{}", show.all());

    for file in files {
        assert!(dir.path().join(file).exists(), "{file} is not there");
    }
    let stored = stored_text(dir.path());
    assert_clean("the store and the exported files", &stored);
    assert!(
        stored.contains("[redacted:email]"),
        "no email marker stored"
    );
    assert!(
        stored.contains("[redacted:OPENAI_API_KEY]"),
        "no key marker stored"
    );
    assert!(
        stored.contains("[redacted:MAIL_TOKEN]"),
        "no token marker stored"
    );
    let report_html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(report_html.contains("[redacted:email]"));
    let payloads: Vec<String> = collector
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(!payloads.is_empty(), "nothing was exported");
    assert_clean("the OTLP payloads", &payloads.join("\n"));
    assert!(
        payloads.join("\n").contains("[redacted:"),
        "no marker exported"
    );
    for (what, out) in [
        ("execute", &execute),
        ("runs show", &show),
        ("traces", &traces),
    ] {
        assert_clean(what, &out.all());
    }
}

#[test]
fn planted_secrets_reach_nothing_with_the_sqlite_store() {
    planted_secrets_reach_no_file_export_or_output(
        "runs.db",
        &["runs.db", "report.html", "traces.json"],
    );
}

#[test]
fn planted_secrets_reach_nothing_with_the_jsonl_store() {
    planted_secrets_reach_no_file_export_or_output(
        "{backend: jsonl, path: runs}",
        &["runs", "report.html", "traces.json"],
    );
}

#[test]
fn a_resumed_run_gets_env_values_again() {
    let dir = bench("runs.db");
    dir.write(
        "plan.yaml",
        r#"goal: send twice
steps:
  - {id: one, tool: send, args: {to: ops-team, token: "{{env.MAIL_TOKEN}}"}}
  - {id: two, tool: send, args: {to: dev-team, token: "{{env.MAIL_TOKEN}}"}, depends_on: [one]}
"#,
    );
    dir.write("stop-after-send", "");
    let model = LlmServer::start(vec![]);
    let killed = with_secrets(dir.path(), &model)
        .args(["execute", "plan.yaml", "--yes"])
        .output()
        .unwrap();
    assert_eq!(
        killed.status.code(),
        None,
        "not killed: {}",
        output(killed).all()
    );
    let id = run_id(dir.path());
    let resumed = output(
        with_secrets(dir.path(), &model)
            .args(["resume", &id])
            .output()
            .unwrap(),
    );
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let received = std::fs::read_to_string(dir.path().join("received.jsonl")).unwrap();
    let calls: Vec<Value> = received
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = calls.last().unwrap();
    assert_eq!(last["to"], "dev-team");
    assert_eq!(last["token"], TOKEN, "the resumed call got the real value");
    assert!(calls.iter().all(|c| c["token"] == TOKEN));
    assert_clean("the store", &stored_text(dir.path()));
    assert_clean("resume", &resumed.all());

    // Without the variable the check stops the resumed run before anything runs.
    dir.write("stop-after-send", "");
    let killed = with_secrets(dir.path(), &model)
        .args(["execute", "plan.yaml", "--yes"])
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None);
    let id = run_id(dir.path());
    let unset = output(
        with_secrets(dir.path(), &model)
            .env_remove("MAIL_TOKEN")
            .args(["resume", &id])
            .output()
            .unwrap(),
    );
    assert_eq!(unset.code, 2, "{}", unset.all());
    assert!(
        unset.stderr.contains("`MAIL_TOKEN` is not set"),
        "{}",
        unset.stderr
    );
}
