//! Redaction in the orchestrator: secrets and personal data never reach the journal, the
//! observers or the result, while tools and agents get the real values; `{{env.NAME}}` is
//! filled in at call time only, also after a resume; values the journal does not hold make a
//! resumed call fail with a clear message instead of reaching a tool as markers.

mod common;

use agenthelm::orchestrate::{CancelToken, OrchestratorError};
use agenthelm::plan::PlanProblem;
use agenthelm::prelude::*;
use agenthelm::redact::{Preset, Redactor};
use agenthelm::store::{JsonlStore, RunStore, SqliteStore};
use agenthelm::RunState;
use agenthelm_test_support::TempDir;
use common::FnAgent;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "tok-PLANTED-5a7c9e1b";
const EMAIL: &str = "planted.person@example.com";

/// Every call of the `send` tool, with the arguments it really got.
type Received = Arc<Mutex<Vec<Value>>>;

fn send_tool(received: &Received) -> FnTool {
    let received = received.clone();
    let schema = json!({"type": "object", "properties": {
        "to": {"type": "string"}, "token": {"type": "string"}}, "required": ["to"]});
    FnTool::new(
        "send",
        "Send a message",
        schema,
        move |args: Value, _call| {
            let received = received.clone();
            async move {
                received.lock().unwrap().push(args.clone());
                Ok(json!({"sent_to": args["to"], "auth": args["token"]}))
            }
        },
    )
    .unwrap()
}

fn redactor() -> Redactor {
    Redactor::new()
        .env_value("MAIL_TOKEN", Some(TOKEN.to_owned()))
        .preset(Preset::Email)
}

fn orchestrator(received: &Received, store: Arc<dyn RunStore>) -> (Orchestrator, FnAgent) {
    let writer = FnAgent::echo("writer");
    let mut registry = AgentRegistry::new();
    registry.register(writer.clone()).unwrap();
    let orchestrator = Orchestrator::new(registry)
        .tools(ToolSet::new().with(send_tool(received)))
        .store_shared(store)
        .redact(redactor());
    (orchestrator, writer)
}

fn plan() -> Plan {
    let mut plan = Plan::new(format!("write to {EMAIL}"));
    plan.steps.push(
        PlanStep::new("send", format!("send to {EMAIL}"))
            .tool("send")
            .args(json!({"to": EMAIL, "token": "{{env.MAIL_TOKEN}}"})),
    );
    plan.steps.push(
        PlanStep::new("draft", format!("draft a note to {EMAIL}"))
            .agent("writer")
            .depends_on(["send"]),
    );
    plan.approved = true;
    plan
}

/// Every byte under `dir`, as text.
fn all_bytes(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&all_bytes(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

async fn run_in(store: Arc<dyn RunStore>, dir: &TempDir) {
    let received = Received::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (orchestrator, writer) = orchestrator(&received, store.clone());
    let observed = seen.clone();
    let orchestrator = orchestrator.on_event(move |event| {
        observed
            .lock()
            .unwrap()
            .push(serde_json::to_string(event).unwrap())
    });
    let mut plan = plan();
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success, "{:?}", result.error);

    // The tool and the agent got the real values.
    assert_eq!(
        received.lock().unwrap()[0],
        json!({"to": EMAIL, "token": TOKEN})
    );
    assert!(writer.tasks.lock().unwrap()[0].contains(EMAIL));

    // Nothing that leaves the run holds them: the store's files, the observers, the result.
    drop(orchestrator);
    let stored = all_bytes(dir.path());
    let observed = seen.lock().unwrap().join("\n");
    let returned = serde_json::to_string(&result).unwrap();
    for (what, text) in [
        ("store", &stored),
        ("observers", &observed),
        ("result", &returned),
    ] {
        assert!(!text.contains(TOKEN), "{what} holds the token");
        assert!(!text.contains(EMAIL), "{what} holds the email");
        assert!(text.contains("[redacted:email]"), "{what}: no email marker");
    }
    assert!(
        stored.contains("{{env.MAIL_TOKEN}}"),
        "the stored plan keeps the reference"
    );
    assert!(
        stored.contains("[redacted:MAIL_TOKEN]"),
        "the tool's output is redacted"
    );
    // The run reads back whole: its state is the journal's.
    let run_id = result.run_id.unwrap();
    let loaded = store.load_run(&run_id).unwrap();
    assert_eq!(loaded.plan.goal, "write to [redacted:email]");
    assert_eq!(
        RunState::replay(&loaded.plan, &loaded.events).steps()[1].status,
        StepStatus::Completed
    );
}

#[tokio::test]
async fn a_sqlite_journal_never_holds_planted_secrets() {
    let dir = TempDir::new("redact-sqlite");
    let store = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    run_in(store, &dir).await;
}

#[tokio::test]
async fn a_jsonl_journal_never_holds_planted_secrets() {
    let dir = TempDir::new("redact-jsonl");
    let store = Arc::new(JsonlStore::open(dir.join("runs")).unwrap());
    run_in(store, &dir).await;
}

#[tokio::test]
async fn env_references_must_be_listed_and_set() {
    let received = Received::default();
    let dir = TempDir::new("redact-env");
    let store = Arc::new(JsonlStore::open(dir.join("runs")).unwrap());
    let (orchestrator, _) = orchestrator(&received, store);
    let orchestrator = orchestrator.redact(
        Redactor::new()
            .env_value("MAIL_TOKEN", Some(TOKEN.into()))
            .env_value("UNSET_TOKEN", None),
    );
    let mut plan = plan();
    plan.steps[0].args = json!({"to": "x", "token": "{{env.HOME}}"});
    plan.steps[0].compensate_args = Some(json!({"token": "{{ env.UNSET_TOKEN }}"}));
    let error = orchestrator.execute(&mut plan).await.unwrap_err();
    let OrchestratorError::InvalidPlan(error) = error else {
        panic!("not a plan error: {error:?}");
    };
    assert_eq!(
        error.problems(),
        [
            PlanProblem::BadEnvReference {
                step: "send".into(),
                field: "args",
                name: "HOME".into(),
                allowed: false
            },
            PlanProblem::BadEnvReference {
                step: "send".into(),
                field: "compensate_args",
                name: "UNSET_TOKEN".into(),
                allowed: true
            },
        ]
    );
    let message = error.to_string();
    assert!(
        message.contains("step `send`: `args` reads `{{env.HOME}}`"),
        "{message}"
    );
    assert!(message.contains("redact.env"), "{message}");
    assert!(message.contains("`UNSET_TOKEN` is not set"), "{message}");
    assert!(received.lock().unwrap().is_empty(), "nothing ran");
    // Without a redactor no variable may be read either.
    let mut plan = self::plan();
    let bare =
        Orchestrator::new(AgentRegistry::new()).tools(ToolSet::new().with(send_tool(&received)));
    plan.steps.truncate(1);
    assert!(bare.execute(&mut plan).await.is_err());
}

/// A plan of `send` then `again`, whose tool suspends the run during `send`: the run stops
/// after `send` completed, as a killed process would.
async fn interrupted_after_send(
    again_args: Value,
    received: &Received,
    store: Arc<dyn RunStore>,
) -> String {
    let cancel = CancelToken::new();
    let suspend = cancel.clone();
    let suspending = FnTool::new(
        "send",
        "Send, then stop the run",
        json!({"type": "object"}),
        move |args: Value, _call| {
            suspend.suspend();
            async move { Ok(json!({"sent_to": args["to"]})) }
        },
    )
    .unwrap();
    let orchestrator = Orchestrator::new(AgentRegistry::new())
        .tools(ToolSet::new().with(suspending))
        .store_shared(store)
        .redact(redactor());
    let mut plan = Plan::new("twice");
    plan.steps.push(
        PlanStep::new("send", "send")
            .tool("send")
            .args(json!({"to": EMAIL, "token": "{{env.MAIL_TOKEN}}"})),
    );
    plan.steps.push(
        PlanStep::new("again", "send again")
            .tool("send")
            .args(again_args)
            .depends_on(["send"]),
    );
    plan.approved = true;
    let error = orchestrator
        .execute_with_cancel(&mut plan, cancel)
        .await
        .unwrap_err();
    let OrchestratorError::Suspended { run_id } = error else {
        panic!("not suspended: {error:?}");
    };
    assert!(received.lock().unwrap().is_empty());
    run_id
}

#[tokio::test]
async fn a_resumed_run_fills_env_references_in_again() {
    let received = Received::default();
    let dir = TempDir::new("redact-resume");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    // (A literal address here would be redacted from the stored plan, and so lost.)
    let args = json!({"to": "ops-team", "token": "{{env.MAIL_TOKEN}}"});
    let run_id = interrupted_after_send(args, &received, store.clone()).await;

    let (resumed, _) = orchestrator(&received, store.clone());
    let (_, result) = resumed.resume(&run_id).await.unwrap();
    assert!(result.success, "{:?}", result.error);
    assert_eq!(
        *received.lock().unwrap(),
        [json!({"to": "ops-team", "token": TOKEN})]
    );
    let stored = all_bytes(dir.path());
    assert!(!stored.contains(TOKEN) && !stored.contains(EMAIL));
}

#[tokio::test]
async fn a_value_the_journal_lost_fails_the_resumed_call_clearly() {
    let received = Received::default();
    let dir = TempDir::new("redact-lost");
    let store: Arc<dyn RunStore> = Arc::new(JsonlStore::open(dir.join("runs")).unwrap());
    // `again` sends to the address `send` returned: redacted in the journal.
    let args = json!({"to": "{{steps.send.result.sent_to}}"});
    let run_id = interrupted_after_send(args, &received, store.clone()).await;

    let (resumed, _) = orchestrator(&received, store);
    let (plan, result) = resumed.resume(&run_id).await.unwrap();
    assert!(!result.success);
    assert!(received.lock().unwrap().is_empty(), "no tool got a marker");
    let error = plan.get_step("again").unwrap().error.clone().unwrap();
    assert!(
        error.contains("argument `to` held a value redacted from the journal (`email`)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_live_rollback_undoes_with_the_real_values() {
    let received = Received::default();
    let undone = Received::default();
    let unsend = {
        let undone = undone.clone();
        FnTool::new(
            "unsend",
            "Recall a message",
            json!({"type": "object"}),
            move |args: Value, _| {
                let undone = undone.clone();
                async move {
                    undone.lock().unwrap().push(args);
                    Ok(json!("recalled"))
                }
            },
        )
        .unwrap()
    };
    let fail = FnTool::new("fail", "Fails", json!({"type": "object"}), |_, _| async {
        Err(ToolError::new(format!("bounced: {EMAIL}")))
    })
    .unwrap();
    let dir = TempDir::new("redact-rollback");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let orchestrator = Orchestrator::new(AgentRegistry::new())
        .tools(
            ToolSet::new()
                .with(send_tool(&received).compensating_tool("unsend"))
                .with(unsend)
                .with(fail),
        )
        .store_shared(store)
        .redact(redactor());
    let mut plan = Plan::new("send then fail");
    plan.steps.push(
        PlanStep::new("send", "send")
            .tool("send")
            .args(json!({"to": EMAIL, "token": "{{env.MAIL_TOKEN}}"})),
    );
    plan.steps.push(
        PlanStep::new("fail", "fail")
            .tool("fail")
            .depends_on(["send"]),
    );
    plan.approved = true;
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(
        plan.get_step("send").unwrap().status,
        StepStatus::Compensated
    );
    // The compensation got the address the send had, and the token filled in again.
    assert_eq!(
        *undone.lock().unwrap(),
        [json!({"to": EMAIL, "token": TOKEN})]
    );
    let error = result.error.unwrap();
    assert!(
        !error.contains(EMAIL) && error.contains("[redacted:email]"),
        "{error}"
    );
    let stored = all_bytes(dir.path());
    assert!(!stored.contains(EMAIL) && !stored.contains(TOKEN));
}

#[tokio::test]
async fn a_redacted_run_replays_from_its_journal() {
    use agenthelm::orchestrate::ReplayOptions;
    let dir = TempDir::new("redact-replay");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap());
    let clerk = |script: Vec<ScriptedReply>| {
        let mut registry = AgentRegistry::new();
        let lm = Lm::from_model(ScriptedLm::new(script));
        registry
            .register(ToolAgent::new("clerk", lm, ToolSet::new()))
            .unwrap();
        Orchestrator::new(registry)
            .store_shared(store.clone())
            .redact(redactor())
    };
    let mut plan = Plan::new("greet");
    plan.steps
        .push(PlanStep::new("greet", format!("greet {EMAIL}")).agent("clerk"));
    plan.approved = true;
    let answer = format!("Hello {EMAIL}");
    let recorded = clerk(vec![ScriptedReply::text(answer)])
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(recorded.success, "{:?}", recorded.error);
    // The prompt held the address; the journal has the redacted prompt's digest, which the
    // replay (built from the redacted plan) finds again. No model is called: none is left.
    let report = clerk(vec![])
        .replay(&recorded.run_id.unwrap(), ReplayOptions::default())
        .await
        .unwrap();
    assert!(report.reproduced, "{report:?}");
    assert_eq!(report.model_calls_served, 1);
    assert!(!all_bytes(dir.path()).contains(EMAIL));
}
