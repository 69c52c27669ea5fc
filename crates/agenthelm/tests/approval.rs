//! Approval of tool calls whose contract requires it: handlers, edited arguments, parallel
//! steps and rollback (DESIGN.md section 3, point 7).

mod common;

use agenthelm::prelude::*;
use agenthelm::trace::{CallPurpose, RunPhase};
use agenthelm::RunState;
use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Transfer money.
#[tool(requires_approval, compensating_tool = "refund")]
fn transfer(
    /// Amount in cents.
    amount: u32,
    to: String,
) -> String {
    format!("sent {amount} to {to}")
}

/// Refund a transfer.
#[tool(requires_approval)]
fn refund(amount: u32, to: String) -> String {
    format!("refunded {amount} to {to}")
}

/// Always fails.
#[tool]
fn explode() -> Result<String, ToolError> {
    Err(ToolError::new("exploded"))
}

fn bank() -> (AgentRegistry, Arc<ScriptedLm>) {
    let (agent, lm) = tool_agent("bank", tools![transfer, refund, explode]);
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    (registry, lm)
}

fn pay(id: &str, amount: u32) -> PlanStep {
    PlanStep::new(id, format!("pay {amount}"))
        .agent("bank")
        .tool("transfer")
        .args(json!({"amount": amount, "to": id}))
}

fn approvals(result: &RunResult) -> Vec<(String, bool, Option<String>)> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Approval {
                tool,
                approved,
                reason,
                ..
            } => Some((tool.clone(), *approved, reason.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn deny_all_is_the_default_and_the_tool_never_runs() {
    let (registry, lm) = bank();
    let mut plan = approved("pay", vec![pay("a", 100)]);
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    let error = plan.get_step("a").unwrap().error.clone().unwrap();
    assert!(
        error.starts_with("tool `transfer` was not approved"),
        "{error}"
    );
    assert_eq!(plan.get_step("a").unwrap().result, None);
    assert!(
        lm.requests().is_empty(),
        "a denial is final, not handed to the model"
    );
    let decisions = approvals(&result);
    assert_eq!(decisions.len(), 1);
    assert!(!decisions[0].1);
    // Nothing ran, so there is nothing to undo.
    assert!(result.rollback.unwrap().compensated.is_empty());
}

#[tokio::test]
async fn auto_approve_runs_the_tool() {
    let (registry, _) = bank();
    let mut plan = approved("pay", vec![pay("a", 100)]);
    let result = Orchestrator::new(registry)
        .approval_handler(AutoApprove)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(result.success, "{result:?}");
    assert_eq!(result.answer.as_deref(), Some("sent 100 to a"));
    assert_eq!(approvals(&result), [("transfer".to_owned(), true, None)]);
    let approval = result
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Approval { .. }))
        .unwrap();
    assert_eq!(approval.step_id.as_deref(), Some("a"));
    assert_eq!(approval.agent.as_deref(), Some("bank"));
    assert!(approval.run_id.is_some());
}

#[tokio::test]
async fn a_closure_decides_from_the_request() {
    let seen = Arc::new(Mutex::new(Vec::<ApprovalRequest>::new()));
    let record = Arc::clone(&seen);
    let handler = move |request: &ApprovalRequest| {
        record.lock().unwrap().push(request.clone());
        if request.args["amount"].as_u64().unwrap_or(u64::MAX) <= 500 {
            ApprovalDecision::Approve
        } else {
            ApprovalDecision::deny("over the limit")
        }
    };
    let (registry, _) = bank();
    let mut plan = approved("pay", vec![pay("small", 100), pay("big", 10_000)]);
    let result = Orchestrator::new(registry)
        .approval_handler(handler)
        .enable_rollback(false)
        .execute(&mut plan)
        .await
        .unwrap();
    assert_eq!(status(&plan, "small"), StepStatus::Completed);
    assert_eq!(status(&plan, "big"), StepStatus::Failed);
    assert_eq!(
        plan.get_step("big").unwrap().error.as_deref(),
        Some("tool `transfer` was not approved: over the limit")
    );
    assert!(approvals(&result).contains(&(
        "transfer".into(),
        false,
        Some("over the limit".into())
    )));
    let requests = seen.lock().unwrap();
    assert_eq!(requests.len(), 2);
    let big = requests
        .iter()
        .find(|r| r.step_id.as_deref() == Some("big"))
        .unwrap();
    assert_eq!(big.tool, "transfer");
    assert_eq!(big.agent.as_deref(), Some("bank"));
    assert_eq!(big.purpose, CallPurpose::Execute);
    assert_eq!(big.description, "Transfer money.");
    assert_eq!(big.args, json!({"amount": 10_000, "to": "big"}));
    assert_eq!(big.run_id, result.run_id);
}

#[tokio::test]
async fn approve_with_args_uses_the_edited_arguments() {
    let (registry, _) = bank();
    let handler = |request: &ApprovalRequest| {
        let mut edited = request.args.clone();
        edited["amount"] = json!(50);
        ApprovalDecision::ApproveWithArgs(edited)
    };
    let mut plan = approved("pay", vec![pay("a", 100)]);
    let result = Orchestrator::new(registry)
        .approval_handler(handler)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(result.success);
    assert_eq!(
        plan.get_step("a").unwrap().result,
        Some(json!("sent 50 to a"))
    );
    let args = result.events.iter().find_map(|e| match &e.kind {
        EventKind::ToolCall { args, .. } => Some(args.clone()),
        _ => None,
    });
    assert_eq!(args, Some(json!({"amount": 50, "to": "a"})));
    assert_eq!(
        approvals(&result),
        [(
            "transfer".into(),
            true,
            Some("approved with edited arguments".into())
        )]
    );
}

#[tokio::test]
async fn edited_arguments_are_validated_again() {
    let (registry, _) = bank();
    let handler = |_: &ApprovalRequest| ApprovalDecision::ApproveWithArgs(json!({"amount": -5}));
    let mut plan = approved("pay", vec![pay("a", 100)]);
    let result = Orchestrator::new(registry)
        .approval_handler(handler)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    let error = plan.get_step("a").unwrap().error.clone().unwrap();
    assert!(
        error.starts_with("invalid arguments for tool `transfer`"),
        "{error}"
    );
    assert!(error.contains("`to`: required field is missing"), "{error}");
    assert!(error.contains("`amount`"), "{error}");
    let attempts = result.events.iter().find_map(|e| match &e.kind {
        EventKind::ToolCall { attempts, .. } => Some(*attempts),
        _ => None,
    });
    assert_eq!(attempts, Some(0), "the tool never ran");
}

/// A handler that answers only once `expected` requests are waiting, so it proves that the
/// requests of parallel steps are made at the same time, and records each one.
struct Gathering {
    barrier: tokio::sync::Barrier,
    requests: Mutex<Vec<ApprovalRequest>>,
}

#[agenthelm::async_trait]
impl ApprovalHandler for Gathering {
    async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision {
        self.requests.lock().unwrap().push(request.clone());
        self.barrier.wait().await;
        ApprovalDecision::Approve
    }
}

#[tokio::test]
async fn parallel_steps_ask_concurrently_with_distinct_call_ids() {
    let handler = Arc::new(Gathering {
        barrier: tokio::sync::Barrier::new(3),
        requests: Mutex::new(Vec::new()),
    });
    struct Shared(Arc<Gathering>);
    #[agenthelm::async_trait]
    impl ApprovalHandler for Shared {
        async fn approve(&self, request: &ApprovalRequest) -> ApprovalDecision {
            self.0.approve(request).await
        }
    }
    let (registry, _) = bank();
    let mut plan = approved("pay", vec![pay("a", 1), pay("b", 2), pay("c", 3)]);
    let orchestrator = Orchestrator::new(registry).approval_handler(Shared(Arc::clone(&handler)));
    let result = tokio::time::timeout(Duration::from_secs(20), orchestrator.execute(&mut plan))
        .await
        .expect("approvals of parallel steps were asked one at a time")
        .unwrap();
    assert!(result.success);
    let requests = handler.requests.lock().unwrap();
    let mut ids: Vec<&str> = requests.iter().map(|r| r.call_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{requests:?}");
    // Each Approval event names the call it decided.
    let event_ids: Vec<String> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Approval { call_id, .. } => Some(call_id.clone()),
            _ => None,
        })
        .collect();
    let mut sorted = event_ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
}

#[tokio::test]
async fn compensations_that_require_approval_ask_during_rollback() {
    let seen = Arc::new(Mutex::new(Vec::<ApprovalRequest>::new()));
    let record = Arc::clone(&seen);
    let handler = move |request: &ApprovalRequest| {
        record.lock().unwrap().push(request.clone());
        match (request.purpose, request.step_id.as_deref()) {
            (CallPurpose::Compensate, Some("b")) => ApprovalDecision::deny("keep b's money"),
            _ => ApprovalDecision::Approve,
        }
    };
    let (registry, _) = bank();
    let mut plan = approved(
        "pay then fail",
        vec![
            pay("a", 1),
            pay("b", 2).depends_on(["a"]),
            PlanStep::new("x", "explode")
                .agent("bank")
                .tool("explode")
                .depends_on(["b"]),
        ],
    );
    let result = Orchestrator::new(registry)
        .approval_handler(handler)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    let requests = seen.lock().unwrap();
    let undo: Vec<(&str, &str)> = requests
        .iter()
        .filter(|r| r.purpose == CallPurpose::Compensate)
        .map(|r| (r.step_id.as_deref().unwrap(), r.tool.as_str()))
        .collect();
    assert_eq!(undo, [("b", "refund"), ("a", "refund")]);
    let mut ids: Vec<&str> = requests.iter().map(|r| r.call_id.as_str()).collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        all,
        "every request has its own call id: {requests:?}"
    );
    assert_eq!(all, 4);

    assert_eq!(status(&plan, "a"), StepStatus::Compensated);
    assert_eq!(status(&plan, "b"), StepStatus::Completed);
    let rollback = result.rollback.unwrap();
    assert_eq!(rollback.compensated, ["a"]);
    assert_eq!(rollback.failed.len(), 1);
    assert_eq!(rollback.failed[0].step, "b");
    assert!(
        rollback.failed[0].error.contains("keep b's money"),
        "{:?}",
        rollback.failed
    );
    // A compensation is on record as started only once it is approved: a denied one never
    // started (so a resumed run cannot mistake it for one that may have run), and an approved
    // one is recorded after its approval, right before the call.
    let kinds_for = |step: &str| -> Vec<String> {
        result
            .events
            .iter()
            .filter(|e| e.step_id.as_deref() == Some(step))
            .map(|e| e.kind.name().to_owned())
            .collect()
    };
    let b = kinds_for("b");
    assert!(!b.contains(&"compensation_started".to_owned()), "{b:?}");
    let a = kinds_for("a");
    let approval = a.iter().rposition(|k| k == "approval").unwrap();
    let started = a.iter().position(|k| k == "compensation_started").unwrap();
    let call = a.iter().rposition(|k| k == "tool_call").unwrap();
    assert!(approval < started && started < call, "{a:?}");
}

#[test]
fn deny_builds_a_denial_with_a_reason() {
    assert_eq!(
        ApprovalDecision::deny("no"),
        ApprovalDecision::Deny {
            reason: Some("no".into())
        }
    );
}

#[tokio::test]
async fn a_tool_agent_in_a_plan_uses_the_orchestrators_handler() {
    // On its own the agent would deny (its handler is DenyAll); in a plan the orchestrator's
    // AutoApprove decides.
    let lm = Arc::new(ScriptedLm::new(vec![
        ScriptedReply::tool_call("transfer", json!({"amount": 7, "to": "z"})),
        ScriptedReply::text("paid"),
    ]));
    let agent = ToolAgent::new("payer", Lm::from_arc(lm.clone()), tools![transfer, refund]);
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    let mut plan = approved(
        "pay",
        vec![PlanStep::new("p", "pay z 7 cents").agent("payer")],
    );
    let result = Orchestrator::new(registry)
        .approval_handler(AutoApprove)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(result.success, "{result:?}");
    let tool_answer = lm.requests()[1].messages.last().unwrap().content.clone();
    assert_eq!(tool_answer, "sent 7 to z");
    assert_eq!(approvals(&result), [("transfer".into(), true, None)]);
}

#[tokio::test]
async fn a_panicking_handler_fails_that_call_only() {
    // A bug in user code: the handler panics for b (while running) and for a's undo.
    let handler = |request: &ApprovalRequest| match (request.purpose, request.step_id.as_deref()) {
        (CallPurpose::Execute, Some("b")) => panic!("handler bug on b"),
        (CallPurpose::Compensate, Some("a")) => panic!("handler bug on undo a"),
        _ => ApprovalDecision::Approve,
    };
    let (registry, _) = bank();
    let mut plan = approved(
        "panics",
        vec![
            pay("a", 1),
            pay("c", 3).depends_on(["a"]),
            pay("b", 2).depends_on(["c"]),
        ],
    );
    let result = Orchestrator::new(registry)
        .approval_handler(handler)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    let error = plan.get_step("b").unwrap().error.clone().unwrap();
    assert!(error.contains("handler bug on b"), "{error}");
    // The rollback went on past the panic: c was undone, a's undo is reported as failed.
    let rollback = result.rollback.unwrap();
    assert_eq!(rollback.compensated, ["c"]);
    assert_eq!(rollback.failed.len(), 1, "{rollback:?}");
    assert_eq!(rollback.failed[0].step, "a");
    assert!(
        rollback.failed[0].error.contains("handler bug on undo a"),
        "{rollback:?}"
    );
    assert_eq!(status(&plan, "c"), StepStatus::Compensated);
    assert_eq!(status(&plan, "a"), StepStatus::Completed);
}

/// A journaled bank whose handler always leaves the decision to a person, counting how often
/// it is asked.
fn deferring_bank(
    store: Arc<dyn agenthelm::store::RunStore>,
    asked: Arc<Mutex<usize>>,
    rule: agenthelm::orchestrate::InterruptedSteps,
) -> Orchestrator {
    let (registry, _) = bank();
    Orchestrator::new(registry)
        .store_shared(store)
        .on_interrupted_steps(rule)
        .approval_handler(move |_: &ApprovalRequest| {
            *asked.lock().unwrap() += 1;
            ApprovalDecision::Defer
        })
}

fn decide(
    store: &dyn agenthelm::store::RunStore,
    run_id: &str,
    approved: bool,
    edited: Option<serde_json::Value>,
) {
    let run = store.load_run(run_id).unwrap();
    let state = RunState::replay(&run.plan, &run.events);
    let pending: Vec<_> = state.pending_approvals().cloned().collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let request = &pending[0];
    let mut event = Event::new(EventKind::Approval {
        call_id: request.call_id.clone(),
        tool: request.tool.clone(),
        approved,
        reason: (!approved).then(|| "not today".to_owned()),
        by: Some("al".into()),
        edited_args: edited,
        asked_args: None,
    });
    event.run_id = Some(run_id.into());
    event.step_id = Some(state.steps()[request.step.unwrap()].id.clone());
    store.append(&event).unwrap();
}

fn phase(store: &dyn agenthelm::store::RunStore, run_id: &str) -> RunPhase {
    let run = store.load_run(run_id).unwrap();
    RunState::replay(&run.plan, &run.events).phase()
}

#[tokio::test]
async fn a_deferred_call_parks_its_run_until_a_person_decides() {
    use agenthelm::orchestrate::{InterruptedSteps, OrchestratorError};
    for rule in [InterruptedSteps::Rerun, InterruptedSteps::Fail] {
        let dir = agenthelm_test_support::TempDir::new("deferred-approval");
        let store: Arc<dyn agenthelm::store::RunStore> =
            Arc::new(agenthelm::store::SqliteStore::open(dir.join("runs.db")).unwrap());
        let asked = Arc::new(Mutex::new(0));
        let bank = deferring_bank(store.clone(), asked.clone(), rule);
        let mut plan = approved("pay", vec![pay("a", 100), pay("b", 7).depends_on(["a"])]);
        let parked = bank.execute(&mut plan).await;
        let Err(OrchestratorError::AwaitingApproval { run_id, steps }) = parked else {
            panic!("{parked:?}");
        };
        assert_eq!(steps, ["a"]);
        assert_eq!(phase(store.as_ref(), &run_id), RunPhase::WaitingForApproval);
        assert_eq!(store.list_runs(1).unwrap()[0].success, None, "not ended");

        // Resumed before anyone decided: it parks again under the same request.
        let again = bank.resume(&run_id).await;
        assert!(
            matches!(again, Err(OrchestratorError::AwaitingApproval { .. })),
            "{again:?}"
        );
        let run = store.load_run(&run_id).unwrap();
        let requests = run
            .events
            .iter()
            .filter(|e| e.kind.name() == "approval_requested")
            .count();
        assert_eq!(requests, 1, "asked once on record");
        assert_eq!(*asked.lock().unwrap(), 2);

        // A person approves with a smaller amount: a runs with it, without asking again; b
        // then waits in turn.
        decide(
            store.as_ref(),
            &run_id,
            true,
            Some(json!({"amount": 5, "to": "a"})),
        );
        let b_waits = bank.resume(&run_id).await;
        let Err(OrchestratorError::AwaitingApproval { steps, .. }) = b_waits else {
            panic!("{b_waits:?}");
        };
        assert_eq!(steps, ["b"]);
        assert_eq!(*asked.lock().unwrap(), 3, "a was not asked again");
        decide(store.as_ref(), &run_id, true, None);
        let (plan, result) = bank.resume(&run_id).await.unwrap();
        assert!(result.success, "{:?}", result.error);
        assert_eq!(
            plan.get_step("a").unwrap().result,
            Some(json!("sent 5 to a"))
        );
        assert_eq!(
            plan.get_step("b").unwrap().result,
            Some(json!("sent 7 to b"))
        );
        assert_eq!(phase(store.as_ref(), &run_id), RunPhase::Succeeded);
        let run = store.load_run(&run_id).unwrap();
        let state = RunState::replay(&run.plan, &run.events);
        let decided: Vec<_> = state
            .approvals()
            .iter()
            .map(|a| (a.call_id.as_str(), a.by.as_deref(), a.edited_args.clone()))
            .collect();
        assert_eq!(
            decided,
            [
                ("a#1", Some("al"), Some(json!({"amount": 5, "to": "a"}))),
                ("b#1", Some("al"), None)
            ]
        );
    }
}

#[tokio::test]
async fn a_denied_deferred_call_fails_its_step_and_rolls_back() {
    use agenthelm::orchestrate::{InterruptedSteps, OrchestratorError};
    let dir = agenthelm_test_support::TempDir::new("deferred-denial");
    let store: Arc<dyn agenthelm::store::RunStore> =
        Arc::new(agenthelm::store::SqliteStore::open(dir.join("runs.db")).unwrap());
    let asked = Arc::new(Mutex::new(0));
    let bank = deferring_bank(store.clone(), asked, InterruptedSteps::Rerun);
    let mut plan = approved("pay", vec![pay("a", 100)]);
    let Err(OrchestratorError::AwaitingApproval { run_id, .. }) = bank.execute(&mut plan).await
    else {
        panic!("not parked");
    };
    decide(store.as_ref(), &run_id, false, None);
    let (plan, result) = bank.resume(&run_id).await.unwrap();
    assert!(!result.success);
    let error = plan.get_step("a").unwrap().error.clone().unwrap();
    assert!(error.contains("not approved: not today"), "{error}");
    assert_eq!(phase(store.as_ref(), &run_id), RunPhase::Failed);
    let run = store.load_run(&run_id).unwrap();
    assert!(
        !run.events
            .iter()
            .any(|e| e.kind.name() == "tool_call" && e.kind.succeeded() == Some(true)),
        "the transfer never ran"
    );
}

#[tokio::test]
async fn each_decision_is_on_record_with_who_made_it_and_the_arguments_asked_and_approved() {
    let (registry, _lm) = bank();
    let mut plan = approved("pay", vec![pay("a", 100), pay("b", 7)]);
    // A policy that halves large amounts and denies small ones, under a name of its own.
    let policy = |request: &ApprovalRequest| match request.args["amount"].as_u64() {
        Some(amount) if amount >= 100 => ApprovalDecision::ApproveWithArgs(
            json!({"amount": amount / 2, "to": request.args["to"]}),
        ),
        _ => ApprovalDecision::deny("too small to bother"),
    };
    let result = Orchestrator::new(registry)
        .approval_handler(policy.decided_by("payments-policy"))
        .max_concurrency(1)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success, "b was denied");
    let state = RunState::replay(&plan, &result.events);
    let decisions = state.approvals();
    // a's transfer (edited), b's (denied), and the refund that would undo a (denied: $50).
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(decisions[2].tool, "refund");
    let edit = &decisions[0];
    assert_eq!(edit.verdict(), "edit");
    assert_eq!(edit.by.as_deref(), Some("payments-policy"));
    assert_eq!(edit.asked_args, Some(json!({"amount": 100, "to": "a"})));
    assert_eq!(edit.edited_args, Some(json!({"amount": 50, "to": "a"})));
    let deny = &decisions[1];
    assert_eq!(
        (deny.verdict(), deny.by.as_deref(), deny.reason.as_deref()),
        ("deny", Some("payments-policy"), Some("too small to bother"))
    );
    assert_eq!(
        deny.asked_args, None,
        "the call's own event has its arguments"
    );
    // Each call finds the decision about it.
    let call = &state.tool_calls()[0];
    assert_eq!(call.args, json!({"amount": 50, "to": "a"}));
    assert_eq!(state.approval_of(call).map(|a| a.seq), Some(edit.seq));
    assert!(state.call_decisions()[0].asked_args().is_some());
}

#[test]
fn the_terminal_records_the_os_user_and_plain_handlers_no_one() {
    assert_eq!(
        TerminalApproval::new().decider(),
        Some(agenthelm::approval::os_user())
    );
    assert!(!agenthelm::approval::os_user().is_empty());
    assert_eq!(AutoApprove.decider(), None);
}
