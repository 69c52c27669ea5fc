//! Live model text: at a terminal, `agenthelm run` prints the model's text as it arrives, and
//! the answer only once; piped, standard output carries the answer alone, as before.

mod common;
use agenthelm_test_support::{Gate, MockServer, Reply};
use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn chunk(content: &str) -> Value {
    json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "test-model",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

fn data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

const FIRST: &str = "Streaming the first part, ";
const REST: &str = "then the rest.";

/// A streamed answer whose second half waits at `gate`.
fn held_answer(gate: &Gate) -> Reply {
    let first = data(&chunk(FIRST));
    let usage = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "test-model",
                       "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}});
    let finish = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "test-model",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let body = format!(
        "{first}{}{}{}data: [DONE]\n\n",
        data(&chunk(REST)),
        data(&finish),
        data(&usage)
    );
    Reply::raw(200, body)
        .header("content-type", "text/event-stream")
        .hold_after(first.len(), gate.clone())
}

#[test]
fn run_at_a_terminal_prints_text_before_the_answer_is_complete() {
    let dir = TempDir::new("cli-stream");
    workspace(&dir, "");
    let gate = Gate::new();
    let server = MockServer::start(vec![held_answer(&gate)]);
    let base_url = format!("{}/v1", server.url());
    let seen = dir.path().join("seen-first-part");
    let script = PtyScript {
        marker: Some((FIRST.trim_end(), &seen)),
        ..PtyScript::default()
    };
    let args = ["run", "say something in two parts"];
    let child = pty_command(
        dir.path(),
        &args,
        &script,
        &[("OPENAI_BASE_URL", &base_url)],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The second half is sent only once the first is on the terminal: if the CLI waited for
    // the whole answer, it would never see it (and the gate opens after 30 s anyway).
    let started = Instant::now();
    while !seen.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let shown_early = seen.exists();
    gate.open();
    let (run, _) = pty_output(child.wait_with_output().unwrap());
    assert!(
        shown_early,
        "the first part did not show before the rest was sent:\n{}",
        run.all()
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let answer = format!("{FIRST}{REST}");
    assert_eq!(
        run.stdout.matches(&answer).count(),
        1,
        "the answer shows exactly once:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("tokens: 11 in, 7 out"),
        "{}",
        run.stdout
    );

    let requests = server.received();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].json()["stream"], true);
}

#[test]
fn run_into_a_pipe_prints_the_answer_alone_without_streaming() {
    let dir = TempDir::new("cli-stream-pipe");
    workspace(&dir, "");
    let server = LlmServer::start(vec![text_reply("The whole answer.", 5, 3)]);
    let out = agenthelm(dir.path())
        .env("OPENAI_BASE_URL", &server.base_url)
        .args(["run", "answer"])
        .output()
        .unwrap();
    let run = output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout, "The whole answer.\n");
    // Nobody watches: the model is not asked to stream.
    assert!(server.requests()[0]["body"].get("stream").is_none());
}

/// Against the real local LLM (`scripts/test` starts it and names it in
/// `AGENTHELM_TEST_LLM_URL`): at a terminal the answer arrives in pieces, over time, before the
/// run's usage line (which follows the complete answer).
#[test]
fn run_against_the_local_llm_prints_text_while_the_model_writes() {
    let Some(url) = std::env::var("AGENTHELM_TEST_LLM_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
    else {
        let why = std::env::var("AGENTHELM_TEST_LLM_SKIP")
            .unwrap_or_else(|_| "AGENTHELM_TEST_LLM_URL is not set".to_owned());
        eprintln!("skipped run_against_the_local_llm_prints_text_while_the_model_writes: {why}");
        return;
    };
    let dir = TempDir::new("cli-stream-local");
    dir.write(
        "agenthelm.yaml",
        "model: openai/smollm2\ndefault_agent: talker\nagents:\n  talker:\n    role: answers in full sentences\n    max_tokens: 60\n",
    );
    let task = "Count from one to twenty in words, separated by commas.";
    let env = [("OPENAI_BASE_URL", url.trim())];
    let script = PtyScript::default();
    let out = pty_command(dir.path(), &["run", task], &script, &env)
        .output()
        .unwrap();
    let (run, reads) = pty_output(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let started = reads.iter().position(|(_, text)| text.contains("Run run-"));
    let usage = reads.iter().position(|(_, text)| text.contains("tokens:"));
    let (Some(started), Some(usage)) = (started, usage) else {
        panic!("no run id or usage line in {reads:?}");
    };
    // The reads between the run's start and its usage line carry the answer.
    let pieces: Vec<&(u64, String)> = reads[started + 1..usage]
        .iter()
        .filter(|(_, text)| !text.trim().is_empty())
        .collect();
    assert!(
        pieces.len() >= 2,
        "the answer came in one piece, not as the model wrote it: {reads:?}"
    );
    let first_text = pieces[0].0;
    let usage_at = reads[usage].0;
    assert!(
        usage_at > first_text,
        "text showed only with the end of the run: {reads:?}"
    );
}
