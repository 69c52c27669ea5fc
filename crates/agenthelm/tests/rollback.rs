//! Saga rollback (DESIGN.md section 3, point 6).

mod common;

use agenthelm::prelude::*;
use common::*;
use serde_json::json;
use std::sync::Arc;

/// Tools that log into one shared journal: `create` returns `{"id": "<name>-id"}`, `delete`
/// undoes it, `fail` always fails.
fn journal_tools(log: &Log) -> ToolSet {
    let create = creating_tool(log);
    let delete = logging_tool("delete", log, json!("deleted"));
    let purge = logging_tool("purge", log, json!("purged"));
    let fail = failing_tool("fail", log, "boom");
    ToolSet::new()
        .with(create)
        .with(delete)
        .with(purge)
        .with(fail)
}

fn orchestrator_with(tools: ToolSet) -> (Orchestrator, Arc<ScriptedLm>) {
    let (agent, lm) = tool_agent("clerk", tools);
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    (Orchestrator::new(registry), lm)
}

fn create(id: &str) -> PlanStep {
    PlanStep::new(id, format!("create {id}"))
        .agent("clerk")
        .tool("create")
        .args(json!({"name": id}))
}

fn fail(id: &str) -> PlanStep {
    PlanStep::new(id, "fails").agent("clerk").tool("fail")
}

fn undo_entries(log: &Log) -> Vec<String> {
    log.entries()
        .into_iter()
        .filter(|e| {
            ["delete ", "purge ", "stuck "]
                .iter()
                .any(|p| e.starts_with(p))
        })
        .collect()
}

#[tokio::test]
async fn completed_steps_are_undone_in_reverse_completion_order() {
    let log = Log::default();
    let (orchestrator, lm) = orchestrator_with(journal_tools(&log));
    // a, then b, then c complete (a chain), then d fails.
    let mut plan = approved(
        "saga",
        vec![
            create("c").depends_on(["b"]),
            create("a"),
            create("b").depends_on(["a"]),
            fail("d").depends_on(["c"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert!(lm.requests().is_empty());
    assert_eq!(
        undo_entries(&log),
        [
            r#"delete {"name":"c"}"#,
            r#"delete {"name":"b"}"#,
            r#"delete {"name":"a"}"#
        ]
    );
    for id in ["a", "b", "c"] {
        assert_eq!(status(&plan, id), StepStatus::Compensated, "{id}");
    }
    assert_eq!(status(&plan, "d"), StepStatus::Failed);
    let rollback = result.rollback.unwrap();
    assert_eq!(rollback.compensated, ["c", "b", "a"]);
    assert!(rollback.failed.is_empty() && rollback.fully_undone());
    let error = result.error.unwrap();
    assert!(
        error.contains("step `d` failed: boom") && error.contains("rolled back 3 step(s)"),
        "{error}"
    );
    let outcome_statuses: Vec<StepStatus> = result.steps.iter().map(|o| o.status).collect();
    assert_eq!(
        outcome_statuses,
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Failed
        ]
    );

    // Events: a rollback_started naming the order, then one compensation per step.
    let started = result.events.iter().find_map(|e| match &e.kind {
        EventKind::RollbackStarted { steps } => Some(steps.clone()),
        _ => None,
    });
    assert_eq!(started.unwrap(), ["c", "b", "a"]);
    let compensations: Vec<(String, String, bool)> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CompensationFinished { tool, success, .. } => Some((
                e.step_id.as_deref().unwrap().to_owned(),
                tool.clone(),
                *success,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        compensations,
        [
            ("c".into(), "delete".into(), true),
            ("b".into(), "delete".into(), true),
            ("a".into(), "delete".into(), true)
        ]
    );
    let undo_calls = result
        .events
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::ToolCall {
                    purpose: agenthelm::trace::CallPurpose::Compensate,
                    ..
                }
            ) && e.agent.as_deref() == Some("clerk")
        })
        .count();
    assert_eq!(undo_calls, 3);
    assert_eq!(
        kinds(&result.events).last().map(String::as_str),
        Some("run_finished")
    );
}

#[tokio::test]
async fn step_override_comes_first_with_result_templates() {
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let mut plan = approved(
        "override",
        vec![
            create("a").compensate(
                "purge",
                json!({"what": "{{result.id}}", "all": "{{result}}"}),
            ),
            // Override tool without args: the step's own args are used.
            create("b").depends_on(["a"]).compensate_tool_only("purge"),
            fail("x").depends_on(["b"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(
        undo_entries(&log),
        [
            r#"purge {"name":"b"}"#,
            r#"purge {"all":{"id":"a-id"},"what":"a-id"}"#
        ]
    );
}

trait CompensateToolOnly {
    fn compensate_tool_only(self, tool: &str) -> Self;
}

impl CompensateToolOnly for PlanStep {
    fn compensate_tool_only(mut self, tool: &str) -> Self {
        self.compensate_tool = Some(tool.to_owned());
        self
    }
}

#[tokio::test]
async fn compensate_args_apply_to_the_tools_own_compensating_tool() {
    // No compensate_tool on the step: the tool's `delete` undoes it, with the step's
    // compensate_args (here the id the step created) instead of the step's args.
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let mut a = create("a");
    a.compensate_args = Some(json!({"id": "{{result.id}}"}));
    let mut plan = approved("args", vec![a, fail("x").depends_on(["a"])]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(undo_entries(&log), [r#"delete {"id":"a-id"}"#]);
    assert_eq!(result.rollback.unwrap().compensated, ["a"]);
}

#[tokio::test]
async fn default_compensation_args_are_the_resolved_step_args() {
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let mut plan = approved(
        "defaults",
        vec![
            create("a"),
            PlanStep::new("b", "create from a")
                .agent("clerk")
                .tool("create")
                .args(json!({"name": "{{steps.a.result.id}}"}))
                .depends_on(["a"]),
            fail("x").depends_on(["b"]),
        ],
    );
    orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(
        undo_entries(&log),
        [r#"delete {"name":"a-id"}"#, r#"delete {"name":"a"}"#]
    );
}

#[tokio::test]
async fn a_failing_compensation_is_recorded_and_the_rollback_goes_on() {
    let log = Log::default();
    let tools = journal_tools(&log).with(failing_tool("stuck", &log, "resource locked"));
    let (orchestrator, _) = orchestrator_with(tools);
    let mut plan = approved(
        "stuck",
        vec![
            create("a"),
            create("b").depends_on(["a"]).compensate("stuck", json!({})),
            create("c").depends_on(["b"]),
            fail("x").depends_on(["c"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(
        undo_entries(&log),
        [
            r#"delete {"name":"c"}"#,
            "stuck {}",
            r#"delete {"name":"a"}"#
        ]
    );
    assert_eq!(status(&plan, "a"), StepStatus::Compensated);
    assert_eq!(
        status(&plan, "b"),
        StepStatus::Completed,
        "its effect is still there"
    );
    assert_eq!(status(&plan, "c"), StepStatus::Compensated);
    let rollback = result.rollback.unwrap();
    assert_eq!(rollback.compensated, ["c", "a"]);
    assert_eq!(rollback.failed.len(), 1);
    assert_eq!(rollback.failed[0].step, "b");
    assert_eq!(rollback.failed[0].tool, "stuck");
    assert_eq!(rollback.failed[0].error, "resource locked");
    assert!(!rollback.fully_undone());
    let error = result.error.unwrap();
    assert!(error.contains("could NOT undo: `b` (stuck)"), "{error}");
    let failed_event = result.events.iter().any(|e| {
        matches!(&e.kind, EventKind::CompensationFinished { success: false, error: Some(err), .. } if err == "resource locked")
    });
    assert!(failed_event);
}

#[tokio::test]
async fn rollback_can_be_turned_off() {
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let orchestrator = orchestrator.enable_rollback(false);
    let mut plan = approved("no undo", vec![create("a"), fail("x").depends_on(["a"])]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert!(result.rollback.is_none());
    assert!(undo_entries(&log).is_empty());
    assert_eq!(status(&plan, "a"), StepStatus::Completed);
    assert!(!kinds(&result.events)
        .iter()
        .any(|k| k == "rollback_started" || k == "compensation_finished"));
}

#[tokio::test]
async fn a_tool_agents_inner_calls_are_undone_too() {
    let log = Log::default();
    let lm = Arc::new(ScriptedLm::new(vec![
        ScriptedReply::tool_calls([
            ("create", json!({"name": "one"})),
            ("create", json!({"name": "two"})),
        ]),
        ScriptedReply::text("made two things"),
    ]));
    let agent = ToolAgent::new("thinker", Lm::from_arc(lm), journal_tools(&log));
    let (clerk, _) = tool_agent("clerk", journal_tools(&log));
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    registry.register(clerk).unwrap();
    let mut plan = approved(
        "agent effects",
        vec![
            PlanStep::new("think", "make two things").agent("thinker"),
            fail("x").depends_on(["think"]),
        ],
    );
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    let mut undone = undo_entries(&log);
    undone.sort();
    assert_eq!(
        undone,
        [r#"delete {"name":"one"}"#, r#"delete {"name":"two"}"#]
    );
    assert_eq!(status(&plan, "think"), StepStatus::Compensated);
    assert_eq!(result.rollback.unwrap().compensated, ["think"]);
}

#[tokio::test]
async fn an_agent_effect_without_a_compensating_tool_is_reported() {
    let log = Log::default();
    let mailer = logging_tool("send_mail", &log, json!("sent")).side_effects(["email"]);
    let lm = Arc::new(ScriptedLm::new(vec![
        ScriptedReply::tool_call("send_mail", json!({"to": "ceo"})),
        ScriptedReply::text("sent"),
    ]));
    let agent = ToolAgent::new("mailer", Lm::from_arc(lm), ToolSet::new().with(mailer));
    let (clerk, _) = tool_agent("clerk", journal_tools(&log));
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    registry.register(clerk).unwrap();
    let mut plan = approved(
        "mail",
        vec![
            PlanStep::new("mail", "mail the ceo").agent("mailer"),
            fail("x").depends_on(["mail"]),
        ],
    );
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    let rollback = result.rollback.unwrap();
    assert_eq!(rollback.failed.len(), 1);
    assert_eq!(rollback.failed[0].step, "mail");
    assert!(
        rollback.failed[0].error.contains("no compensating tool"),
        "{:?}",
        rollback.failed
    );
    assert_eq!(status(&plan, "mail"), StepStatus::Completed);
}

#[tokio::test]
async fn a_failed_tool_with_partial_effects_is_compensated() {
    let log = Log::default();
    let half = failing_tool("half", &log, "crashed half-way")
        .partial_effects(true)
        .compensating_tool("purge");
    let plain_fail = failing_tool("plain", &log, "clean failure").compensating_tool("purge");
    let (orchestrator, _) = orchestrator_with(journal_tools(&log).with(half).with(plain_fail));
    let mut plan = approved(
        "partial",
        vec![PlanStep::new("h", "half")
            .agent("clerk")
            .tool("half")
            .args(json!({"n": 1}))],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(undo_entries(&log), [r#"purge {"n":1}"#]);
    assert_eq!(result.rollback.unwrap().compensated, ["h"]);

    // Without partial effects a failed step is not compensated.
    let log2 = Log::default();
    let plain_fail = failing_tool("plain", &log2, "clean failure").compensating_tool("purge");
    let (orchestrator, _) = orchestrator_with(journal_tools(&log2).with(plain_fail));
    let mut plan = approved(
        "clean",
        vec![PlanStep::new("p", "plain").agent("clerk").tool("plain")],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(undo_entries(&log2).is_empty());
    assert!(result.rollback.unwrap().compensated.is_empty());
    assert_eq!(status(&plan, "p"), StepStatus::Failed);
}

#[tokio::test]
async fn each_step_is_compensated_once() {
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let mut plan = approved(
        "once",
        vec![create("a"), create("b"), fail("x").depends_on(["a", "b"])],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(log.count("delete"), 2);
    let mut undone = result.rollback.unwrap().compensated;
    undone.sort();
    assert_eq!(undone, ["a", "b"]);
}

#[tokio::test]
async fn a_missing_compensating_tool_is_refused_up_front_or_recorded_at_run_time() {
    let log = Log::default();
    let (clerk, _) = tool_agent("clerk", journal_tools(&log));
    let mut registry = AgentRegistry::new();
    registry.register(FnAgent::echo("worker")).unwrap();
    registry.register(clerk).unwrap();
    let orchestrator = Orchestrator::new(registry);

    // Named in the plan: validation refuses it before anything runs.
    let mut plan = approved(
        "missing",
        vec![
            PlanStep::new("w", "work")
                .agent("worker")
                .compensate_tool_only("nowhere"),
            fail("x").depends_on(["w"]),
        ],
    );
    let err = orchestrator.execute(&mut plan).await.unwrap_err();
    assert!(
        err.to_string().contains("compensating tool `nowhere`"),
        "{err}"
    );
    assert!(log.entries().is_empty());

    // Used by an agent's own reasoning: the plan cannot know, so rollback records it.
    let maker = logging_tool("make", &log, json!("made")).compensating_tool("vanish");
    let lm = Arc::new(ScriptedLm::new(vec![
        ScriptedReply::tool_call("make", json!({})),
        ScriptedReply::text("made it"),
    ]));
    let mut registry = AgentRegistry::new();
    registry
        .register(ToolAgent::new(
            "maker",
            Lm::from_arc(lm),
            ToolSet::new().with(maker),
        ))
        .unwrap();
    registry
        .register(tool_agent("clerk", journal_tools(&log)).0)
        .unwrap();
    let mut plan = approved(
        "vanish",
        vec![
            PlanStep::new("m", "make").agent("maker"),
            fail("x").depends_on(["m"]),
        ],
    );
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    let rollback = result.rollback.unwrap();
    assert_eq!(rollback.failed.len(), 1, "{rollback:?}");
    assert_eq!(rollback.failed[0].tool, "vanish");
    assert_eq!(
        rollback.failed[0].error,
        "compensating tool `vanish` is not available"
    );
    assert_eq!(status(&plan, "m"), StepStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_with_partial_effects_is_compensated() {
    // The call is still running when the grace period ends and is cancelled: it may have done
    // part of its work, so its intent, recorded before it ran, is undone.
    let log = Log::default();
    let stuck = {
        let log = log.clone();
        FnTool::new(
            "upload",
            "uploads slowly",
            json!({"type": "object"}),
            move |args, _| {
                log.push(format!("upload {args}"));
                std::future::pending()
            },
        )
        .unwrap()
        .partial_effects(true)
        .compensating_tool("purge")
    };
    let (orchestrator, _) = orchestrator_with(journal_tools(&log).with(stuck));
    let orchestrator = orchestrator.grace_period(std::time::Duration::from_secs(1));
    let mut plan = approved(
        "cancelled",
        vec![
            PlanStep::new("up", "upload")
                .agent("clerk")
                .tool("upload")
                .args(json!({"file": "f"})),
            fail("x"),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert!(plan
        .get_step("up")
        .unwrap()
        .error
        .as_deref()
        .unwrap()
        .contains("cancelled"));
    assert_eq!(undo_entries(&log), [r#"purge {"file":"f"}"#]);
    assert_eq!(result.rollback.unwrap().compensated, ["up"]);
}

#[tokio::test]
async fn a_finished_call_with_partial_effects_is_compensated_once() {
    let log = Log::default();
    let upload = logging_tool("upload", &log, json!("uploaded"))
        .partial_effects(true)
        .compensating_tool("purge");
    let (orchestrator, _) = orchestrator_with(journal_tools(&log).with(upload));
    let mut plan = approved(
        "once",
        vec![
            PlanStep::new("up", "upload")
                .agent("clerk")
                .tool("upload")
                .args(json!({"file": "f"})),
            fail("x").depends_on(["up"]),
        ],
    );
    orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(undo_entries(&log), [r#"purge {"file":"f"}"#]);
    assert_eq!(status(&plan, "up"), StepStatus::Compensated);
}

/// A user agent that does its work through the step context, as `Agent::run_step` advises.
struct Installer {
    tools: ToolSet,
}

#[agenthelm::async_trait]
impl Agent for Installer {
    fn name(&self) -> &str {
        "installer"
    }
    async fn run(&self, _task: &str) -> AgentResult {
        AgentResult::fail("use run_step")
    }
    fn tools(&self) -> Option<&ToolSet> {
        Some(&self.tools)
    }
    async fn run_step(&self, task: &StepTask, ctx: &StepContext) -> AgentResult {
        let create = self.tools.get("create").unwrap();
        for name in ["x", "y"] {
            if let Err(e) = ctx
                .call_tool(create, json!({"name": format!("{}-{name}", task.id)}))
                .await
            {
                return AgentResult::fail(e.to_string());
            }
        }
        AgentResult::ok("installed")
    }
}

#[tokio::test]
async fn a_user_agents_calls_through_the_context_are_undone() {
    let log = Log::default();
    let mut registry = AgentRegistry::new();
    registry
        .register(Installer {
            tools: journal_tools(&log),
        })
        .unwrap();
    let mut plan = approved(
        "install",
        vec![
            PlanStep::new("i", "install").agent("installer"),
            PlanStep::new("x", "fail")
                .agent("installer")
                .tool("fail")
                .depends_on(["i"]),
        ],
    );
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(!result.success);
    // Newest first.
    assert_eq!(
        undo_entries(&log),
        [r#"delete {"name":"i-y"}"#, r#"delete {"name":"i-x"}"#]
    );
    assert_eq!(status(&plan, "i"), StepStatus::Compensated);
}

#[tokio::test]
async fn a_panicking_observer_does_not_stop_the_run_or_its_rollback() {
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let orchestrator = orchestrator.on_event(|event| {
        if matches!(
            event.kind,
            EventKind::StepFinished { .. } | EventKind::RunStarted { .. }
        ) {
            panic!("progress display bug");
        }
    });
    let mut plan = approved("observer", vec![create("a"), fail("x").depends_on(["a"])]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(undo_entries(&log), [r#"delete {"name":"a"}"#]);
    assert_eq!(status(&plan, "a"), StepStatus::Compensated);
    // The events are all still recorded.
    assert_eq!(
        kinds(&result.events)
            .iter()
            .filter(|k| *k == "step_finished")
            .count(),
        2
    );
}

#[tokio::test]
async fn steps_the_plan_already_completed_are_undone_last() {
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let mut done_before = create("earlier");
    done_before.status = StepStatus::Completed;
    done_before.result = Some(json!({"id": "earlier-id"}));
    let mut plan = approved(
        "resume by hand",
        vec![
            done_before,
            create("now").depends_on(["earlier"]),
            fail("pay").depends_on(["now"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(
        log.entries()
            .iter()
            .filter(|e| e.starts_with("create"))
            .count(),
        1,
        "the completed step is not run again"
    );
    assert_eq!(undo_entries(&log).len(), 2);
    assert!(
        undo_entries(&log)[0].contains("now"),
        "{:?}",
        undo_entries(&log)
    );
    assert!(
        undo_entries(&log)[1].contains("earlier"),
        "{:?}",
        undo_entries(&log)
    );
    assert_eq!(status(&plan, "earlier"), StepStatus::Compensated);
    assert_eq!(result.rollback.unwrap().compensated, ["now", "earlier"]);
}

#[tokio::test]
async fn a_step_whose_reference_has_nothing_to_fill_in_fails_without_a_call() {
    let log = Log::default();
    let (orchestrator, lm) = orchestrator_with(journal_tools(&log));
    let mut plan = approved(
        "unresolved",
        vec![
            create("a"),
            create("b")
                .args(json!({"name": "{{steps.a.result.nope}}"}))
                .depends_on(["a"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(status(&plan, "b"), StepStatus::Failed);
    let error = result.error.unwrap();
    assert!(
        error.contains("{{steps.a.result.nope}}") && error.contains("`.nope`"),
        "{error}"
    );
    // Neither the tool nor the agent's model saw the literal placeholder.
    assert!(lm.requests().is_empty());
    assert!(
        log.entries().iter().all(|e| !e.contains("{{")),
        "{:?}",
        log.entries()
    );
    assert_eq!(result.rollback.unwrap().compensated, ["a"]);
}

#[tokio::test]
async fn a_compensation_whose_reference_has_nothing_to_fill_in_is_not_undone() {
    let log = Log::default();
    let (orchestrator, _) = orchestrator_with(journal_tools(&log));
    let mut a = create("a");
    a.compensate_args = Some(json!({"id": "{{result.nope}}"}));
    let mut plan = approved(
        "unresolved-undo",
        vec![
            a,
            create("b")
                .compensate("purge", json!({"id": "{{steps.a.result.gone}}"}))
                .depends_on(["a"]),
            fail("x").depends_on(["b"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(undo_entries(&log).is_empty(), "{:?}", log.entries());
    let rollback = result.rollback.unwrap();
    assert!(rollback.compensated.is_empty(), "{rollback:?}");
    assert!(!rollback.fully_undone());
    let mut failed: Vec<(&str, &str, &str)> = rollback
        .failed
        .iter()
        .map(|f| (f.step.as_str(), f.tool.as_str(), f.error.as_str()))
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        [
            (
                "a",
                "delete",
                "cannot resolve `{{result.nope}}`: the result of the step has nothing at `.nope`"
            ),
            (
                "b",
                "purge",
                "cannot resolve `{{steps.a.result.gone}}`: the result of step `a` has nothing at `.gone`"
            ),
        ]
    );
    for id in ["a", "b"] {
        assert_ne!(status(&plan, id), StepStatus::Compensated, "{id}");
    }
}
