//! Replay (issue 13, item 5): a stored run runs again from its journal, with no model called
//! and no tool run, and the first point where it goes another way is named.

mod common;

use agenthelm::orchestrate::{DivergenceKind, ReplayOptions, ReplayReport};
use agenthelm::prelude::*;
use agenthelm::store::{JsonlStore, RunStore, SqliteStore};
use agenthelm_test_support::TempDir;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;

/// What can change between the recorded run and its replay.
#[derive(Clone, Copy, Default)]
struct Setup {
    /// `create` requires an `owner` too.
    create_needs_owner: bool,
    /// `lookup` requires a `lang` too.
    lookup_needs_lang: bool,
    /// The agent's role (part of its instructions).
    role: &'static str,
    /// `create` requires approval.
    approval: bool,
    /// `fail` works.
    fail_fixed: bool,
}

fn object_schema(required: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> = required
        .iter()
        .map(|name| (name.to_string(), json!({"type": "string"})))
        .collect();
    json!({"type": "object", "properties": properties, "required": required})
}

/// `create` (compensated by `delete`), `lookup` and `fail`, each logging its calls in `log`.
fn tools(log: &Log, setup: Setup) -> ToolSet {
    let create_args: &[&str] = if setup.create_needs_owner {
        &["name", "owner"]
    } else {
        &["name"]
    };
    let create = {
        let log = log.clone();
        FnTool::new(
            "create",
            "create a thing",
            object_schema(create_args),
            move |args, _| {
                log.push(format!("create {args}"));
                let id = format!("{}-id", args["name"].as_str().unwrap_or("?"));
                async move { Ok(json!({"id": id})) }
            },
        )
        .unwrap()
        .compensating_tool("delete")
        .requires_approval(setup.approval)
    };
    let lookup_args: &[&str] = if setup.lookup_needs_lang {
        &["word", "lang"]
    } else {
        &["word"]
    };
    let lookup = {
        let log = log.clone();
        FnTool::new(
            "lookup",
            "look a word up",
            object_schema(lookup_args),
            move |args, _| {
                log.push(format!("lookup {args}"));
                async move { Ok(json!("a long story of heroes")) }
            },
        )
        .unwrap()
    };
    ToolSet::new()
        .with(create)
        .with(lookup)
        .with(logging_tool("delete", log, json!("deleted")))
        .with(if setup.fail_fixed {
            fixed_fail(log)
        } else {
            failing_tool("fail", log, "card declined")
        })
}

/// `fail` as `failing_tool` makes it (same name, description and schema, so the model is
/// offered the same tools), but working.
fn fixed_fail(log: &Log) -> FnTool {
    let log = log.clone();
    FnTool::new(
        "fail",
        "fail (always fails)",
        json!({"type": "object"}),
        move |args, _| {
            log.push(format!("fail {args}"));
            async move { Ok(json!("paid")) }
        },
    )
    .unwrap()
}

/// What the clerk's model answers: look `saga` up, then the answer.
fn script() -> Vec<ScriptedReply> {
    vec![
        ScriptedReply::tool_call("lookup", json!({"word": "saga"})),
        ScriptedReply::text("A saga is a long story."),
    ]
}

/// The clerk, whose model answers from `script` (empty: any real model call fails).
fn orchestrator(
    log: &Log,
    setup: Setup,
    script: Vec<ScriptedReply>,
    store: Arc<dyn RunStore>,
) -> Orchestrator {
    let role = if setup.role.is_empty() {
        "Explains words"
    } else {
        setup.role
    };
    let agent = ToolAgent::new(
        "clerk",
        Lm::from_model(ScriptedLm::new(script)),
        tools(log, setup),
    )
    .role(role);
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    Orchestrator::new(registry).store_shared(store)
}

/// A direct step, an agent step (two model calls, one tool call) and another direct step.
fn plan() -> Plan {
    let mut plan = Plan::new("explain a word");
    plan.steps.push(
        PlanStep::new("make", "create a")
            .agent("clerk")
            .tool("create")
            .args(json!({"name": "a"})),
    );
    plan.steps.push(
        PlanStep::new("explain", "Explain the word saga")
            .agent("clerk")
            .depends_on(["make"]),
    );
    plan.steps.push(
        PlanStep::new("more", "create b")
            .agent("clerk")
            .tool("create")
            .args(json!({"name": "b"}))
            .depends_on(["explain"]),
    );
    plan.approved = true;
    plan
}

/// [`plan`] with its last step paying with `fail`.
fn failing_plan() -> Plan {
    let mut failing = plan();
    failing.steps.truncate(2);
    failing.steps.push(
        PlanStep::new("pay", "pay")
            .agent("clerk")
            .tool("fail")
            .depends_on(["explain"]),
    );
    failing
}

/// Runs `plan` for real with `store` (approving every call); gives the run id.
async fn record(store: &Arc<dyn RunStore>, mut plan: Plan, expect_success: bool) -> String {
    record_with(store, &mut plan, Setup::default(), script(), expect_success).await
}

async fn record_with(
    store: &Arc<dyn RunStore>,
    plan: &mut Plan,
    setup: Setup,
    script: Vec<ScriptedReply>,
    expect_success: bool,
) -> String {
    let log = Log::default();
    let orchestrator =
        orchestrator(&log, setup, script, Arc::clone(store)).approval_handler(AutoApprove);
    let result = orchestrator.execute(plan).await.unwrap();
    assert_eq!(result.success, expect_success, "{:?}", result.error);
    assert!(!log.entries().is_empty());
    result.run_id.unwrap()
}

/// Replays `run_id` with a clerk whose model has no reply and whose tools log their calls;
/// no one may be asked for an approval.
async fn replay(
    store: &Arc<dyn RunStore>,
    run_id: &str,
    setup: Setup,
    options: ReplayOptions,
) -> (ReplayReport, Log) {
    replay_with(store, run_id, setup, options, Vec::new()).await
}

async fn replay_with(
    store: &Arc<dyn RunStore>,
    run_id: &str,
    setup: Setup,
    options: ReplayOptions,
    script: Vec<ScriptedReply>,
) -> (ReplayReport, Log) {
    let log = Log::default();
    let asked = Counter::default();
    let asking = {
        let asked = asked.clone();
        move |_: &ApprovalRequest| {
            asked.hit();
            ApprovalDecision::deny("not in a replay")
        }
    };
    let report = orchestrator(&log, setup, script, Arc::clone(store))
        .approval_handler(asking)
        .replay(run_id, options)
        .await
        .unwrap();
    assert_eq!(asked.get(), 0, "a replay asked for an approval");
    (report, log)
}

fn sqlite(dir: &TempDir) -> Arc<dyn RunStore> {
    Arc::new(SqliteStore::open(dir.join("runs.db")).unwrap())
}

#[tokio::test]
async fn a_replay_reproduces_the_run_without_calling_a_model_or_a_tool() {
    let dir = TempDir::new("replay-same");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    let before = store.load_run(&run_id).unwrap();
    let runs_before = store.list_runs(100).unwrap();

    let (report, log) = replay(&store, &run_id, Setup::default(), ReplayOptions::default()).await;

    assert!(report.reproduced, "{:?}", report.divergence);
    assert_eq!(report.divergence, None);
    assert!(report.replay_success);
    assert_eq!(report.recorded_success, Some(true));
    assert_eq!(report.steps_compared, 3);
    assert_eq!(report.model_calls_served, 2);
    // create a, lookup, create b.
    assert_eq!(report.tool_calls_served, 3);
    assert_eq!(log.entries(), Vec::<String>::new(), "no tool may run");
    // The stored run is as it was, and no run was added.
    assert_eq!(store.load_run(&run_id).unwrap(), before);
    assert_eq!(store.list_runs(100).unwrap(), runs_before);
}

#[tokio::test]
async fn a_new_required_parameter_on_a_direct_tool_names_the_first_step() {
    let dir = TempDir::new("replay-direct-schema");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    let setup = Setup {
        create_needs_owner: true,
        ..Setup::default()
    };

    let (report, log) = replay(&store, &run_id, setup, ReplayOptions::default()).await;

    assert!(!report.reproduced);
    let divergence = report.divergence.unwrap();
    assert_eq!(divergence.step, "make");
    assert_eq!(divergence.kind, DivergenceKind::SchemaRejects);
    assert!(divergence.actual.contains("owner"), "{divergence}");
    assert_eq!(log.entries(), Vec::<String>::new());
}

#[tokio::test]
async fn a_changed_schema_offered_to_the_model_names_the_agent_step() {
    let dir = TempDir::new("replay-agent-schema");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    let setup = Setup {
        lookup_needs_lang: true,
        ..Setup::default()
    };

    let (report, log) = replay(&store, &run_id, setup, ReplayOptions::default()).await;

    let divergence = report.divergence.unwrap();
    assert_eq!(divergence.step, "explain");
    assert_eq!(divergence.kind, DivergenceKind::ToolsChanged);
    assert_eq!(divergence.call.as_deref(), Some("model call 1"));
    // The step before it was replayed from the journal; nothing ran.
    assert_eq!(report.tool_calls_served, 1);
    assert_eq!(log.entries(), Vec::<String>::new());
}

#[tokio::test]
async fn a_changed_prompt_is_a_prompt_change_at_that_step() {
    let dir = TempDir::new("replay-prompt");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    let setup = Setup {
        role: "Explains words in rhyme",
        ..Setup::default()
    };

    let (report, _) = replay(&store, &run_id, setup, ReplayOptions::default()).await;

    let divergence = report.divergence.unwrap();
    assert_eq!(divergence.step, "explain");
    assert_eq!(divergence.kind, DivergenceKind::PromptChanged);
    assert!(divergence.to_string().contains("step `explain`"));
}

#[tokio::test]
async fn live_tools_run_the_tools_for_real() {
    let dir = TempDir::new("replay-live");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    let options = ReplayOptions {
        live_tools: true,
        ..ReplayOptions::default()
    };

    let (report, log) = replay(&store, &run_id, Setup::default(), options).await;

    assert!(report.reproduced, "{:?}", report.divergence);
    assert!(report.live_tools);
    assert_eq!(report.tool_calls_served, 0);
    assert_eq!(report.model_calls_served, 2);
    assert_eq!(
        log.entries(),
        vec![
            r#"create {"name":"a"}"#,
            r#"lookup {"word":"saga"}"#,
            r#"create {"name":"b"}"#
        ]
    );
}

#[tokio::test]
async fn a_failed_and_rolled_back_run_replays_its_compensations_from_the_journal() {
    let dir = TempDir::new("replay-rollback");
    let store: Arc<dyn RunStore> = Arc::new(JsonlStore::open(dir.path()).unwrap());
    let run_id = record(&store, failing_plan(), false).await;
    let before = store.load_run(&run_id).unwrap();

    let (report, log) = replay(&store, &run_id, Setup::default(), ReplayOptions::default()).await;

    assert!(report.reproduced, "{:?}", report.divergence);
    assert!(!report.replay_success);
    assert_eq!(report.recorded_success, Some(false));
    // create a, lookup, fail, then delete (the compensation of `make`).
    assert_eq!(report.tool_calls_served, 4);
    assert_eq!(log.entries(), Vec::<String>::new());
    assert_eq!(store.load_run(&run_id).unwrap(), before);
}

#[tokio::test]
async fn an_unknown_run_is_an_error_naming_it() {
    let dir = TempDir::new("replay-unknown");
    let store = sqlite(&dir);
    let log = Log::default();
    let error = orchestrator(&log, Setup::default(), Vec::new(), store)
        .replay("run-nope", ReplayOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("run-nope"), "{error}");
}

#[tokio::test]
async fn approvals_are_taken_from_the_journal_and_no_one_is_asked() {
    let dir = TempDir::new("replay-approval");
    let store = sqlite(&dir);
    let setup = Setup {
        approval: true,
        ..Setup::default()
    };
    let run_id = record_with(&store, &mut plan(), setup, script(), true).await;

    let (report, log) = replay(&store, &run_id, setup, ReplayOptions::default()).await;

    assert!(report.reproduced, "{:?}", report.divergence);
    assert_eq!(log.entries(), Vec::<String>::new());
}

#[tokio::test]
async fn a_model_answering_otherwise_for_real_changes_the_arguments_of_the_next_call() {
    let dir = TempDir::new("replay-live-models");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    let options = ReplayOptions {
        live_models: true,
        ..ReplayOptions::default()
    };
    let other = vec![
        ScriptedReply::tool_call("lookup", json!({"word": "epic"})),
        ScriptedReply::text("An epic is a long poem."),
    ];

    let (report, log) = replay_with(&store, &run_id, Setup::default(), options, other).await;

    let divergence = report.divergence.unwrap();
    assert_eq!(divergence.step, "explain");
    assert_eq!(divergence.call.as_deref(), Some("explain#1"));
    assert_eq!(divergence.kind, DivergenceKind::ArgsChanged);
    assert!(divergence.actual.contains("epic"), "{divergence}");
    assert_eq!(report.model_calls_served, 0);
    assert_eq!(log.entries(), Vec::<String>::new());
}

#[tokio::test]
async fn a_journal_without_model_answers_is_named_as_missing_them() {
    let dir = TempDir::new("replay-old-journal");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    // The same run as a journal written before answers were kept.
    let mut stored = store.load_run(&run_id).unwrap();
    for event in &mut stored.events {
        if let EventKind::LlmCall { exchange, .. } = &mut event.kind {
            *exchange = None;
        }
    }
    let old: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.join("old.db")).unwrap());
    old.begin_run(&run_id, &stored.plan).unwrap();
    old.append_batch(&stored.events).unwrap();
    old.finish_run(&run_id, true, None).unwrap();

    let (report, _) = replay(&old, &run_id, Setup::default(), ReplayOptions::default()).await;

    let divergence = report.divergence.unwrap();
    assert_eq!(divergence.step, "explain");
    assert_eq!(divergence.kind, DivergenceKind::MissingRecord);
    // The direct step before it replayed.
    assert_eq!(report.tool_calls_served, 1);
}

#[tokio::test]
async fn a_call_refused_for_bad_arguments_is_refused_again_and_counts_as_made() {
    let dir = TempDir::new("replay-refused");
    let store = sqlite(&dir);
    let mut script = script();
    // The model first gets the argument's name wrong, then corrects itself.
    script.insert(
        0,
        ScriptedReply::tool_call("lookup", json!({"wrd": "saga"})),
    );
    let run_id = record_with(&store, &mut plan(), Setup::default(), script, true).await;

    let (report, log) = replay(&store, &run_id, Setup::default(), ReplayOptions::default()).await;

    assert!(report.reproduced, "{:?}", report.divergence);
    assert_eq!(report.model_calls_served, 3);
    assert_eq!(log.entries(), Vec::<String>::new());
}

#[tokio::test]
async fn a_fixed_tool_run_for_real_changes_the_status_of_the_step_that_failed() {
    let dir = TempDir::new("replay-fixed");
    let store = sqlite(&dir);
    let run_id = record(&store, failing_plan(), false).await;
    let fixed = Setup {
        fail_fixed: true,
        ..Setup::default()
    };
    let options = ReplayOptions {
        live_tools: true,
        ..ReplayOptions::default()
    };

    let (report, log) = replay(&store, &run_id, fixed, options).await;

    assert!(report.replay_success, "{report:?}");
    let divergence = report.divergence.unwrap();
    assert_eq!(divergence.step, "pay");
    assert_eq!(divergence.kind, DivergenceKind::StatusChanged);
    assert_eq!(
        (divergence.expected.as_str(), divergence.actual.as_str()),
        ("failed", "completed")
    );
    assert_eq!(log.count("fail "), 1);
}

#[tokio::test]
async fn a_changed_plan_names_the_changed_step() {
    let dir = TempDir::new("replay-plan");
    let store = sqlite(&dir);
    let run_id = record(&store, plan(), true).await;
    let log = Log::default();
    let orchestrator = orchestrator(&log, Setup::default(), Vec::new(), Arc::clone(&store));

    let mut changed = plan();
    changed.steps[2].args = json!({"name": "c"});
    let report = orchestrator
        .replay_plan(&run_id, changed, ReplayOptions::default())
        .await
        .unwrap();
    let divergence = report.divergence.unwrap();
    assert_eq!(
        (divergence.step.as_str(), divergence.kind),
        ("more", DivergenceKind::ArgsChanged)
    );
    assert_eq!(divergence.call.as_deref(), Some("more#1"));

    let mut shorter = plan();
    shorter.steps.pop();
    let report = orchestrator
        .replay_plan(&run_id, shorter, ReplayOptions::default())
        .await
        .unwrap();
    let divergence = report.divergence.unwrap();
    assert_eq!(
        (divergence.step.as_str(), divergence.kind),
        ("more", DivergenceKind::PlanChanged)
    );
    assert_eq!(log.entries(), Vec::<String>::new());
}
