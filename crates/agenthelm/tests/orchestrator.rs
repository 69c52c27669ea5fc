//! The orchestrator's guarantees (DESIGN.md section 3, points 1-5, 7 and 8); rollback and
//! approval have files of their own.

mod common;

use agenthelm::plan::PlanProblem;
use agenthelm::prelude::*;
use agenthelm::{OrchestratorError, PlanError, RetryPolicy};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

fn registry_with(agents: Vec<FnAgent>) -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    for agent in agents {
        registry.register(agent).unwrap();
    }
    registry
}

// --- 1. Approval and validation first ------------------------------------------------------

#[tokio::test]
async fn an_unapproved_plan_is_refused_and_nothing_runs() {
    let agent = FnAgent::echo("worker");
    let orchestrator = Orchestrator::new(registry_with(vec![agent.clone()]));
    let mut plan = approved("do things", vec![PlanStep::new("a", "a").agent("worker")]);
    plan.approved = false;
    let err = orchestrator.execute(&mut plan).await.unwrap_err();
    assert_eq!(
        err,
        OrchestratorError::NotApproved {
            goal: "do things".into()
        }
    );
    assert!(err.to_string().contains("not approved"));
    assert_eq!(agent.calls(), 0);
    assert_eq!(status(&plan, "a"), StepStatus::Pending);
}

/// Create a record.
#[tool(compensating_tool = "delete_record")]
fn create_record(name: String) -> String {
    format!("rec-{name}")
}

/// Create a thing whose undo tool does not exist.
#[tool(compensating_tool = "vanish")]
fn make_thing(name: String) -> String {
    name
}

/// Delete a record.
#[tool]
fn delete_record(name: String) -> String {
    format!("deleted {name}")
}

#[tokio::test]
async fn an_invalid_plan_lists_every_problem_and_nothing_runs() {
    let worker = FnAgent::echo("worker");
    let (clerk, lm) = tool_agent("clerk", tools![create_record, delete_record, make_thing]);
    let mut registry = registry_with(vec![worker.clone()]);
    registry.register(clerk).unwrap();
    let orchestrator = Orchestrator::new(registry);
    let mut plan = approved(
        "broken",
        vec![
            PlanStep::new("ok", "fine").agent("worker"),
            PlanStep::new("ghost", "who?").agent("nobody"),
            PlanStep::new("orphan", "no agent at all"),
            PlanStep::new("typo", "bad tool")
                .agent("clerk")
                .tool("create_recrod"),
            PlanStep::new("undo", "bad undo")
                .agent("clerk")
                .tool("create_record")
                .compensate("uncreate", json!({})),
            PlanStep::new("thing", "tool's own undo missing")
                .agent("clerk")
                .tool("make_thing")
                .args(json!({"name": "x"})),
            PlanStep::new("peek", "uses a result it does not wait for")
                .agent("worker")
                .args(json!({"text": "{{steps.ok.result}}"})),
            PlanStep::new("loop1", "")
                .agent("worker")
                .depends_on(["loop2"]),
            PlanStep::new("loop2", "")
                .agent("worker")
                .depends_on(["loop1"]),
        ],
    );
    let err = orchestrator.execute(&mut plan).await.unwrap_err();
    let OrchestratorError::InvalidPlan(PlanError::Invalid(problems)) = &err else {
        panic!("{err:?}")
    };
    let expected = [
        PlanProblem::UnknownAgent {
            step: "ghost".into(),
            agent: "nobody".into(),
        },
        PlanProblem::NoAgent {
            step: "orphan".into(),
        },
        PlanProblem::UnknownTool {
            step: "typo".into(),
            agent: Some("clerk".into()),
            tool: "create_recrod".into(),
        },
        PlanProblem::UnknownCompensatingTool {
            step: "undo".into(),
            tool: "uncreate".into(),
        },
        PlanProblem::UnknownCompensatingTool {
            step: "thing".into(),
            tool: "vanish".into(),
        },
        PlanProblem::BadReference {
            step: "peek".into(),
            reference: "ok".into(),
        },
        PlanProblem::Cycle {
            steps: vec!["loop1".into(), "loop2".into()],
        },
    ];
    for problem in &expected {
        assert!(
            problems.contains(problem),
            "missing {problem:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    let text = err.to_string();
    for needle in [
        "`nobody`",
        "`orphan`",
        "`create_recrod`",
        "`uncreate`",
        "`vanish`",
        "loop1 -> loop2 -> loop1",
    ] {
        assert!(text.contains(needle), "`{needle}` not in {text}");
    }
    assert!(text.contains("7 problems"), "{text}");
    // Nothing ran.
    assert_eq!(worker.calls(), 0);
    assert!(lm.requests().is_empty());
    assert!(plan.steps.iter().all(|s| s.status == StepStatus::Pending));
    // check() gives the same answer without running.
    assert_eq!(
        orchestrator.check(&plan).unwrap_err(),
        PlanError::Invalid(problems.clone())
    );
}

#[tokio::test]
async fn a_default_agent_takes_steps_that_name_none() {
    let default = FnAgent::echo("fallback");
    let orchestrator = Orchestrator::new(AgentRegistry::new()).default_agent(default.clone());
    let mut plan = approved("g", vec![PlanStep::new("a", "first thing")]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success, "{result:?}");
    assert_eq!(result.answer.as_deref(), Some("fallback did first thing"));
    assert_eq!(default.calls(), 1);
    assert_eq!(result.steps[0].agent.as_deref(), Some("fallback"));
}

// --- 2. Dependency-driven parallelism ------------------------------------------------------

#[tokio::test]
async fn a_step_starts_when_its_own_dependencies_finish_not_batch_by_batch() {
    // `slow` blocks until `fast2` runs; `fast2` depends only on `fast1`. A scheduler that waits
    // for the whole first batch (slow, fast1) before starting fast2 would never finish.
    let release = Arc::new(Notify::new());
    let wait = Arc::clone(&release);
    let slow = FnAgent::new("slow", move |_| {
        let wait = Arc::clone(&wait);
        async move {
            wait.notified().await;
            AgentResult::ok("slow done")
        }
    });
    let wake = Arc::clone(&release);
    let fast = FnAgent::new("fast", move |task| {
        if task.starts_with("second") {
            wake.notify_one();
        }
        async move { AgentResult::ok(task) }
    });
    let orchestrator = Orchestrator::new(registry_with(vec![slow, fast]));
    let mut plan = approved(
        "branches",
        vec![
            PlanStep::new("slow1", "first slow").agent("slow"),
            PlanStep::new("fast1", "first fast").agent("fast"),
            PlanStep::new("fast2", "second fast")
                .agent("fast")
                .depends_on(["fast1"]),
            PlanStep::new("join", "join")
                .agent("fast")
                .depends_on(["slow1", "fast2"]),
        ],
    );
    let result = tokio::time::timeout(Duration::from_secs(20), orchestrator.execute(&mut plan))
        .await
        .expect("fast2 waited for the slow branch")
        .unwrap();
    assert!(result.success);
    assert!(plan.steps.iter().all(|s| s.status == StepStatus::Completed));
    // join ran last, after both of its dependencies.
    let started: Vec<String> = result
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepStarted { .. }))
        .map(|e| e.step_id.as_deref().unwrap().to_owned())
        .collect();
    assert_eq!(started.last().map(String::as_str), Some("join"));
    let pos = |id: &str| started.iter().position(|s| s == id).unwrap();
    assert!(pos("fast1") < pos("fast2"));
}

#[tokio::test]
async fn independent_steps_run_at_the_same_time() {
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let b = Arc::clone(&barrier);
    let agent = FnAgent::new("meet", move |task| {
        let b = Arc::clone(&b);
        async move {
            b.wait().await;
            AgentResult::ok(task)
        }
    });
    let orchestrator = Orchestrator::new(registry_with(vec![agent]));
    let mut plan = approved(
        "wide",
        ["a", "b", "c"]
            .map(|id| PlanStep::new(id, id).agent("meet"))
            .to_vec(),
    );
    let result = tokio::time::timeout(Duration::from_secs(20), orchestrator.execute(&mut plan))
        .await
        .expect("independent steps ran one after another")
        .unwrap();
    assert!(result.success);
}

fn in_flight_agent(now: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> FnAgent {
    FnAgent::new("busy", move |task| {
        let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
        async move {
            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            AgentResult::ok(task)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_is_respected() {
    for (limit, expected_peak) in [(Some(2), 2), (Some(1), 1), (None, 7)] {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let agent = in_flight_agent(Arc::clone(&now), Arc::clone(&peak));
        let mut orchestrator = Orchestrator::new(registry_with(vec![agent]));
        if let Some(limit) = limit {
            orchestrator = orchestrator.max_concurrency(limit);
        }
        let steps = (0..7)
            .map(|i| PlanStep::new(format!("s{i}"), "work").agent("busy"))
            .collect();
        let mut plan = approved("many", steps);
        let result = orchestrator.execute(&mut plan).await.unwrap();
        assert!(result.success);
        assert_eq!(
            peak.load(Ordering::SeqCst),
            expected_peak,
            "limit {limit:?}"
        );
        assert_eq!(now.load(Ordering::SeqCst), 0);
    }
}

// --- 3. Data flows along edges -------------------------------------------------------------

#[tokio::test]
async fn dependency_results_are_in_the_task_text() {
    let research = FnAgent::new("research", |_| async { AgentResult::ok("Rust is fast") });
    let stats = FnAgent::new("stats", |_| async { AgentResult::ok("42 crates") });
    let writer = FnAgent::echo("writer");
    let orchestrator = Orchestrator::new(registry_with(vec![research, stats, writer.clone()]));
    let mut plan = approved(
        "report",
        vec![
            PlanStep::new("find", "find facts").agent("research"),
            PlanStep::new("count", "count crates").agent("stats"),
            PlanStep::new("write", "Write the summary")
                .agent("writer")
                .depends_on(["find", "count"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success);
    let task = writer.tasks.lock().unwrap()[0].clone();
    assert!(task.starts_with("Write the summary"), "{task}");
    assert!(task.contains("- find: Rust is fast"), "{task}");
    assert!(task.contains("- count: 42 crates"), "{task}");
    assert_eq!(
        plan.get_step("find").unwrap().result,
        Some(json!("Rust is fast"))
    );
}

#[tokio::test]
async fn templates_pass_results_into_arguments() {
    let log = Log::default();
    let creator = logging_tool(
        "create",
        &log,
        json!({"id": 42, "name": "report", "tags": ["a", "b"]}),
    );
    let user = logging_tool("use", &log, json!("used"));
    let (agent, lm) = tool_agent("clerk", ToolSet::new().with(creator).with(user));
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    let mut plan = approved(
        "flow",
        vec![
            PlanStep::new("make", "make").agent("clerk").tool("create"),
            PlanStep::new("mid", "mid")
                .agent("clerk")
                .tool("use")
                .depends_on(["make"]),
            PlanStep::new("use", "use it")
                .agent("clerk")
                .tool("use")
                .depends_on(["mid"])
                .args(json!({
                    "id": "{{steps.make.result.id}}",
                    "whole": "{{steps.make.result}}",
                    "note": "made {{ steps.make.result.name }} #{{steps.make.result.id}}",
                    "first_tag": ["{{steps.make.result.tags.0}}"]
                })),
        ],
    );
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(result.success, "{result:?}");
    assert!(lm.requests().is_empty());
    let used = log.entries().last().unwrap().clone();
    let args: Value = serde_json::from_str(used.strip_prefix("use ").unwrap()).unwrap();
    assert_eq!(
        args,
        json!({
            "id": 42,
            "whole": {"id": 42, "name": "report", "tags": ["a", "b"]},
            "note": "made report #42",
            "first_tag": ["a"]
        })
    );
    // The plan keeps the templates, not the filled-in values.
    assert_eq!(
        plan.get_step("use").unwrap().args["id"],
        "{{steps.make.result.id}}"
    );
}

// --- 4. Direct dispatch --------------------------------------------------------------------

#[tokio::test]
async fn fully_specified_tool_steps_make_no_model_call() {
    let log = Log::default();
    let (agent, lm) = tool_agent("clerk", tools![create_record, delete_record]);
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    let mut plan = approved(
        "direct",
        vec![
            PlanStep::new("a", "make a")
                .agent("clerk")
                .tool("create_record")
                .args(json!({"name": "a"})),
            PlanStep::new("b", "make b")
                .agent("clerk")
                .tool("create_record")
                .args(json!({"name": "b"})),
        ],
    );
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(result.success, "{result:?}");
    assert!(lm.requests().is_empty(), "the model was asked");
    assert_eq!(result.iterations, 0);
    assert_eq!(plan.get_step("a").unwrap().result, Some(json!("rec-a")));
    assert_eq!(
        result.steps[0].direct_tool.as_deref(),
        Some("create_record")
    );
    let direct: Vec<Option<String>> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepStarted { direct_tool } => Some(direct_tool.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        direct,
        [Some("create_record".into()), Some("create_record".into())]
    );
    assert!(log.entries().is_empty());
}

#[tokio::test]
async fn a_step_whose_arguments_do_not_validate_goes_to_the_agent() {
    let lm = Arc::new(ScriptedLm::new(vec![
        ScriptedReply::tool_call("create_record", json!({"name": "fixed"})).with_usage(5, 5),
        ScriptedReply::text("created rec-fixed").with_usage(5, 1),
    ]));
    let agent = ToolAgent::new(
        "clerk",
        Lm::from_arc(lm.clone()),
        tools![create_record, delete_record],
    );
    let mut registry = AgentRegistry::new();
    registry.register(agent).unwrap();
    let mut plan = approved(
        "fix args",
        vec![PlanStep::new("a", "Create a record for Ada")
            .agent("clerk")
            .tool("create_record")
            .args(json!({"nme": "Ada"}))],
    );
    let result = Orchestrator::new(registry)
        .execute(&mut plan)
        .await
        .unwrap();
    assert!(result.success, "{result:?}");
    assert_eq!(lm.requests().len(), 2);
    let prompt = &lm.requests()[0].messages[1].content;
    assert!(
        prompt.contains("create_record") && prompt.contains("nme"),
        "{prompt}"
    );
    assert_eq!(result.steps[0].direct_tool, None);
    assert_eq!(
        plan.get_step("a").unwrap().result,
        Some(json!("created rec-fixed"))
    );
    assert_eq!(result.token_usage, TokenUsage::new(10, 6));
    assert_eq!(result.iterations, 2);
}

#[tokio::test]
async fn bad_arguments_for_an_orchestrator_tool_refuse_the_plan_naming_the_field() {
    let log = Log::default();
    let orchestrator =
        Orchestrator::new(AgentRegistry::new()).tools(tools![create_record, delete_record]);
    let mut plan = approved(
        "bad",
        vec![PlanStep::new("a", "make")
            .tool("create_record")
            .args(json!({"name": 7}))],
    );
    // No agent could take the step over, so the plan is refused before anything runs.
    let error = orchestrator
        .execute(&mut plan)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`name`") && error.contains("expected string"),
        "{error}"
    );
    assert_eq!(plan.get_step("a").unwrap().status, StepStatus::Pending);
    assert!(log.entries().is_empty());
    // And with good arguments the orchestrator's own tool runs without any agent.
    let mut plan = approved(
        "good",
        vec![PlanStep::new("a", "make")
            .tool("create_record")
            .args(json!({"name": "x"}))],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success);
    assert_eq!(result.answer.as_deref(), Some("rec-x"));
}

// --- 5. Failure ----------------------------------------------------------------------------

#[tokio::test]
async fn failure_marks_failed_lets_running_steps_finish_and_skips_the_rest() {
    // `steady` is running when `bad` fails: it is released by the StepFinished(failed) event,
    // so it finishes after the failure is known, and its dependent must never start.
    let failed_seen = Arc::new(Notify::new());
    let signal = Arc::clone(&failed_seen);
    let wait = Arc::clone(&failed_seen);
    let steady = FnAgent::new("steady", move |task| {
        let wait = Arc::clone(&wait);
        async move {
            wait.notified().await;
            AgentResult::ok(task)
        }
    });
    let bad = FnAgent::new("bad", |_| async { AgentResult::fail("disk on fire") });
    let after = FnAgent::echo("after");
    let orchestrator =
        Orchestrator::new(registry_with(vec![steady, bad, after.clone()])).on_event(move |e| {
            if let EventKind::StepFinished {
                status: StepStatus::Failed,
                ..
            } = e.kind
            {
                signal.notify_one();
            }
        });
    let mut plan = approved(
        "fail",
        vec![
            PlanStep::new("steady", "keeps going").agent("steady"),
            PlanStep::new("bad", "breaks").agent("bad"),
            PlanStep::new("after_bad", "x")
                .agent("after")
                .depends_on(["bad"]),
            PlanStep::new("after_steady", "y")
                .agent("after")
                .depends_on(["steady"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(status(&plan, "bad"), StepStatus::Failed);
    assert_eq!(
        plan.get_step("bad").unwrap().error.as_deref(),
        Some("disk on fire")
    );
    assert_eq!(status(&plan, "steady"), StepStatus::Completed);
    assert_eq!(status(&plan, "after_bad"), StepStatus::Skipped);
    assert_eq!(status(&plan, "after_steady"), StepStatus::Skipped);
    assert_eq!(after.calls(), 0);
    let error = result.error.as_deref().unwrap();
    assert!(error.contains("step `bad` failed: disk on fire"), "{error}");
    assert_eq!(result.answer, None);
    let rollback = result.rollback.as_ref().unwrap();
    assert_eq!(rollback.nothing_to_undo, ["steady"]);
    assert!(rollback.compensated.is_empty() && rollback.failed.is_empty());
    let outcome = |id: &str| result.steps.iter().find(|o| o.id == id).unwrap().clone();
    assert_eq!(outcome("bad").status, StepStatus::Failed);
    assert_eq!(outcome("bad").error.as_deref(), Some("disk on fire"));
    assert_eq!(outcome("after_bad").status, StepStatus::Skipped);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_step_is_cancelled_after_the_grace_period() {
    let hang = FnAgent::new("hang", |_| std::future::pending::<AgentResult>());
    let bad = FnAgent::new("bad", |_| async { AgentResult::fail("broken") });
    let orchestrator =
        Orchestrator::new(registry_with(vec![hang, bad])).grace_period(Duration::from_secs(5));
    let mut plan = approved(
        "hang",
        vec![
            PlanStep::new("forever", "never ends").agent("hang"),
            PlanStep::new("bad", "fails").agent("bad"),
        ],
    );
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(3600), orchestrator.execute(&mut plan))
        .await
        .expect("the hanging step was never cancelled")
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(!result.success);
    assert_eq!(status(&plan, "forever"), StepStatus::Failed);
    let error = plan.get_step("forever").unwrap().error.clone().unwrap();
    assert!(
        error.contains("cancelled") && error.contains("`bad`"),
        "{error}"
    );
    let finished = result
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepFinished { .. }))
        .count();
    assert_eq!(finished, 2);
}

#[tokio::test(start_paused = true)]
async fn the_grace_period_counts_from_the_failure_not_from_each_finished_step() {
    // After `bad` fails at t=0, `slow` finishes at t=8s and `forever` never does. With a 10 s
    // grace period `forever` must be cancelled at t=10s, not 10 s after `slow` finished.
    let hang = FnAgent::new("hang", |_| std::future::pending::<AgentResult>());
    let slow = FnAgent::new("slow", |_| async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        AgentResult::ok("slow")
    });
    let bad = FnAgent::new("bad", |_| async { AgentResult::fail("broken") });
    let orchestrator = Orchestrator::new(registry_with(vec![hang, slow, bad]))
        .grace_period(Duration::from_secs(10));
    let mut plan = approved(
        "grace",
        vec![
            PlanStep::new("forever", "").agent("hang"),
            PlanStep::new("slow", "").agent("slow"),
            PlanStep::new("bad", "").agent("bad"),
        ],
    );
    let started = tokio::time::Instant::now();
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(status(&plan, "slow"), StepStatus::Completed);
    assert_eq!(status(&plan, "forever"), StepStatus::Failed);
    assert!(!result.success);
}

#[tokio::test]
async fn panicking_tools_and_agents_become_failed_steps() {
    let boom_tool = FnTool::new("boom", "panics", json!({"type": "object"}), |_, _| async {
        panic!("tool exploded")
    })
    .unwrap();
    let orchestrator = Orchestrator::new(registry_with(vec![FnAgent::new("crash", |_| async {
        panic!("agent exploded")
    })]))
    .tools(ToolSet::new().with(boom_tool))
    .enable_rollback(false);

    let mut plan = approved("p", vec![PlanStep::new("t", "tool").tool("boom")]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    let error = plan.get_step("t").unwrap().error.clone().unwrap();
    assert!(error.contains("panicked: tool exploded"), "{error}");

    let mut plan = approved("p", vec![PlanStep::new("a", "agent").agent("crash")]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    let error = plan.get_step("a").unwrap().error.clone().unwrap();
    assert!(error.contains("panicked: agent exploded"), "{error}");
}

#[tokio::test]
async fn an_agent_failing_without_a_message_still_gets_an_error() {
    let silent = FnAgent::new("silent", |_| async { AgentResult::default() });
    let orchestrator = Orchestrator::new(registry_with(vec![silent]));
    let mut plan = approved("p", vec![PlanStep::new("a", "x").agent("silent")]);
    orchestrator.execute(&mut plan).await.unwrap();
    let error = plan.get_step("a").unwrap().error.clone().unwrap();
    assert!(error.contains("`silent`"), "{error}");
}

// --- 7. Retries and timeouts ---------------------------------------------------------------

fn flaky_tool(fail_times: usize, attempts: Arc<Mutex<Vec<tokio::time::Instant>>>) -> FnTool {
    FnTool::new(
        "flaky",
        "fails a few times",
        json!({"type": "object"}),
        move |_, info| {
            let attempts = Arc::clone(&attempts);
            async move {
                let mut seen = attempts.lock().unwrap();
                seen.push(tokio::time::Instant::now());
                assert_eq!(info.attempt as usize, seen.len());
                if seen.len() <= fail_times {
                    Err(ToolError::new(format!("attempt {} failed", seen.len())))
                } else {
                    Ok(json!("finally"))
                }
            }
        },
    )
    .unwrap()
    .retries(3)
    .compensating_tool("unflake")
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_and_a_fixed_failure_is_no_failure() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let log = Log::default();
    let tools = ToolSet::new()
        .with(flaky_tool(2, Arc::clone(&attempts)))
        .with(logging_tool("unflake", &log, json!("undone")));
    let policy = RetryPolicy {
        initial: Duration::from_millis(100),
        multiplier: 2.0,
        max: Duration::from_secs(10),
        jitter: 0.0,
    };
    let orchestrator = Orchestrator::new(AgentRegistry::new())
        .tools(tools)
        .retry_policy(policy);
    let mut plan = approved("retry", vec![PlanStep::new("a", "x").tool("flaky")]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success, "{result:?}");
    assert_eq!(status(&plan, "a"), StepStatus::Completed);
    assert!(result.rollback.is_none());
    assert!(log.entries().is_empty(), "nothing was compensated");
    let times = attempts.lock().unwrap().clone();
    assert_eq!(times.len(), 3);
    assert_eq!(times[1] - times[0], Duration::from_millis(100));
    assert_eq!(times[2] - times[1], Duration::from_millis(200));
    let recorded = result.events.iter().find_map(|e| match &e.kind {
        EventKind::ToolCall {
            attempts, error, ..
        } => Some((*attempts, error.clone())),
        _ => None,
    });
    assert_eq!(recorded, Some((3, None)));
}

#[tokio::test(start_paused = true)]
async fn retries_give_up_after_the_contract_limit() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let orchestrator = Orchestrator::new(AgentRegistry::new()).tools(
        ToolSet::new()
            .with(flaky_tool(usize::MAX, Arc::clone(&attempts)))
            .with(logging_tool("unflake", &Log::default(), json!(null))),
    );
    let mut plan = approved("retry", vec![PlanStep::new("a", "x").tool("flaky")]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(!result.success);
    assert_eq!(attempts.lock().unwrap().len(), 4, "1 attempt + 3 retries");
    assert_eq!(
        plan.get_step("a").unwrap().error.as_deref(),
        Some("attempt 4 failed")
    );
}

/// Takes its time.
#[tool(timeout = 1, retries = 1)]
async fn sleepy(seconds: u64) -> String {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    "awake".to_owned()
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_cut_off_at_the_timeout() {
    let orchestrator = Orchestrator::new(AgentRegistry::new())
        .tools(tools![sleepy])
        .retry_policy(RetryPolicy {
            initial: Duration::from_millis(500),
            jitter: 0.0,
            ..RetryPolicy::default()
        });
    let mut plan = approved(
        "slow",
        vec![PlanStep::new("a", "x")
            .tool("sleepy")
            .args(json!({"seconds": 60}))],
    );
    let started = tokio::time::Instant::now();
    let result = orchestrator.execute(&mut plan).await.unwrap();
    // Two attempts of 1 s with a 0.5 s pause between them.
    assert_eq!(started.elapsed(), Duration::from_millis(2500));
    assert!(!result.success);
    let error = plan.get_step("a").unwrap().error.clone().unwrap();
    assert_eq!(error, "tool `sleepy` timed out after 1.000s");
    let attempts = result.events.iter().find_map(|e| match &e.kind {
        EventKind::ToolCall { attempts, .. } => Some(*attempts),
        _ => None,
    });
    assert_eq!(attempts, Some(2));

    // Within the limit it just works.
    let mut plan = approved(
        "quick",
        vec![PlanStep::new("a", "x")
            .tool("sleepy")
            .args(json!({"seconds": 0}))],
    );
    assert!(orchestrator.execute(&mut plan).await.unwrap().success);
}

// --- 8. Events, answer, totals -------------------------------------------------------------

#[tokio::test]
async fn every_action_is_an_event_with_run_step_and_agent() {
    let live = Arc::new(Mutex::new(Vec::<Event>::new()));
    let sink = Arc::clone(&live);
    let lm = Arc::new(ScriptedLm::new(vec![
        ScriptedReply::tool_call("create_record", json!({"name": "z"}))
            .with_usage(3, 2)
            .with_cost(0.01),
        ScriptedReply::text("made z")
            .with_usage(4, 1)
            .with_cost(0.02),
    ]));
    let agent = ToolAgent::new(
        "clerk",
        Lm::from_arc(lm),
        tools![create_record, delete_record],
    );
    let mut registry = registry_with(vec![FnAgent::echo("helper")]);
    registry.register(agent).unwrap();
    let orchestrator =
        Orchestrator::new(registry).on_event(move |e| sink.lock().unwrap().push(e.clone()));
    let mut plan = approved(
        "events",
        vec![
            PlanStep::new("direct", "d")
                .agent("clerk")
                .tool("create_record")
                .args(json!({"name": "d"})),
            PlanStep::new("think", "make z")
                .agent("clerk")
                .depends_on(["direct"]),
            PlanStep::new("help", "help out").agent("helper"),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success, "{result:?}");
    let events = &result.events;
    assert_eq!(
        *live.lock().unwrap(),
        *events,
        "observers saw the same events, in order"
    );

    let run_id = result.run_id.clone().unwrap();
    assert!(events
        .iter()
        .all(|e| e.run_id.as_deref() == Some(run_id.as_str())));
    let k = kinds(events);
    assert_eq!(k.first().map(String::as_str), Some("run_started"));
    assert_eq!(k.last().map(String::as_str), Some("run_finished"));
    for id in ["direct", "think", "help"] {
        let of_step: Vec<&Event> = events
            .iter()
            .filter(|e| e.step_id.as_deref() == Some(id))
            .collect();
        let names = kinds(&of_step.iter().map(|e| (*e).clone()).collect::<Vec<_>>());
        assert_eq!(
            names.first().map(String::as_str),
            Some("step_started"),
            "{id}: {names:?}"
        );
        assert_eq!(
            names.last().map(String::as_str),
            Some("step_finished"),
            "{id}: {names:?}"
        );
        let agent = if id == "help" { "helper" } else { "clerk" };
        assert!(
            of_step.iter().all(|e| e.agent.as_deref() == Some(agent)),
            "{id}"
        );
    }
    let tool_calls: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCall { tool, call_id, .. } => {
                Some((e.step_id.as_deref().unwrap(), tool.as_str())).filter(|_| !call_id.is_empty())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        tool_calls,
        [("direct", "create_record"), ("think", "create_record")]
    );
    let llm_calls = events
        .iter()
        .filter(|e| {
            matches!(e.kind, EventKind::LlmCall { .. }) && e.step_id.as_deref() == Some("think")
        })
        .count();
    assert_eq!(llm_calls, 2);
    // Totals are summed over the steps.
    assert_eq!(result.token_usage, TokenUsage::new(7, 3));
    assert!((result.total_cost_usd - 0.03).abs() < 1e-12);
    assert_eq!(result.iterations, 2);
    // Two steps nothing depends on: both are in the answer, in plan order.
    assert_eq!(
        result.answer.as_deref(),
        Some("[think] made z\n\n[help] helper did help out")
    );
    let finished = events.iter().find_map(|e| match &e.kind {
        EventKind::RunFinished { success, .. } => Some(*success),
        _ => None,
    });
    assert_eq!(finished, Some(true));
    // Events survive JSON (for journals and traces).
    for event in events {
        let text = serde_json::to_string(event).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, event, "{text}");
    }
}

#[tokio::test]
async fn the_answer_is_the_final_step_result() {
    let orchestrator = Orchestrator::new(registry_with(vec![FnAgent::echo("w")]));
    let mut plan = approved(
        "chain",
        vec![
            PlanStep::new("a", "first").agent("w"),
            PlanStep::new("b", "second").agent("w").depends_on(["a"]),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert_eq!(result.answer.as_deref(), Some("w did second"));
    assert!(result.run_id.as_deref().unwrap().starts_with("run-"));
    // Each run gets its own id.
    let again = orchestrator.execute(&mut plan).await.unwrap();
    assert_ne!(again.run_id, result.run_id);
}

#[tokio::test]
async fn completed_steps_are_kept_and_feed_later_steps() {
    let w = FnAgent::echo("w");
    let orchestrator = Orchestrator::new(registry_with(vec![w.clone()]));
    let mut plan = approved(
        "resume",
        vec![
            PlanStep::new("a", "first").agent("w"),
            PlanStep::new("b", "second").agent("w").depends_on(["a"]),
        ],
    );
    plan.mark_completed("a", json!("earlier answer")).unwrap();
    plan.mark_failed("b", "old error").unwrap();
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success);
    assert_eq!(w.calls(), 1, "a was not run again");
    assert!(w.tasks.lock().unwrap()[0].contains("- a: earlier answer"));
    assert_eq!(plan.get_step("b").unwrap().error, None);
}

/// A plan with no steps would do nothing and report success (issue 14): it is a plan problem.
#[tokio::test]
async fn an_empty_plan_is_a_plan_problem() {
    let mut plan = approved("nothing", vec![]);
    let err = Orchestrator::new(AgentRegistry::new())
        .execute(&mut plan)
        .await
        .unwrap_err();
    let OrchestratorError::InvalidPlan(PlanError::Invalid(problems)) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(problems, &[PlanProblem::NoSteps]);
    assert_eq!(err.to_string(), "invalid plan: the plan has no steps");
}

#[tokio::test(start_paused = true)]
async fn tools_get_a_stable_call_id_and_idempotency_key_across_attempts() {
    let infos = Arc::new(Mutex::new(Vec::<agenthelm::tool::ToolCallInfo>::new()));
    let record = Arc::clone(&infos);
    let tool = FnTool::new(
        "put",
        "idempotent put",
        json!({"type": "object"}),
        move |_, info| {
            let mut seen = record.lock().unwrap();
            seen.push(info);
            let fail = seen.len() < 3;
            async move {
                if fail {
                    Err(ToolError::new("try again"))
                } else {
                    Ok(json!("stored"))
                }
            }
        },
    )
    .unwrap()
    .retries(2);
    let orchestrator = Orchestrator::new(AgentRegistry::new()).tools(ToolSet::new().with(tool));
    let mut plan = approved("put", vec![PlanStep::new("store", "x").tool("put")]);
    let result = orchestrator.execute(&mut plan).await.unwrap();
    assert!(result.success);
    let infos = infos.lock().unwrap();
    assert_eq!(
        infos.iter().map(|i| i.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let run_id = result.run_id.clone().unwrap();
    for info in infos.iter() {
        assert_eq!(info.call_id, infos[0].call_id);
        assert_eq!(info.idempotency_key, infos[0].idempotency_key);
        assert_eq!(info.run_id.as_deref(), Some(run_id.as_str()));
        assert_eq!(info.step_id.as_deref(), Some("store"));
    }
    let key = &infos[0].idempotency_key;
    assert!(key.contains(&run_id) && key.contains("store"), "{key}");
}

#[tokio::test]
async fn the_rollback_finishes_even_if_the_run_is_cancelled() {
    let log = Log::default();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let ended = Arc::new(Notify::new());
    let slow_undo = {
        let (log, started, release, ended) =
            (log.clone(), started.clone(), release.clone(), ended.clone());
        FnTool::new(
            "slow_undo",
            "undoes slowly",
            json!({"type": "object"}),
            move |_, _| {
                let (log, started, release, ended) =
                    (log.clone(), started.clone(), release.clone(), ended.clone());
                async move {
                    log.push("undo started");
                    started.notify_one();
                    release.notified().await;
                    log.push("undo finished");
                    ended.notify_one();
                    Ok(Value::Null)
                }
            },
        )
        .unwrap()
    };
    let tools = ToolSet::new()
        .with(logging_tool("make", &log, json!("made")).compensating_tool("slow_undo"))
        .with(slow_undo)
        .with(failing_tool("fail", &log, "boom"));
    let orchestrator = Arc::new(Orchestrator::new(AgentRegistry::new()).tools(tools));
    let run = {
        let orchestrator = Arc::clone(&orchestrator);
        tokio::spawn(async move {
            let mut plan = approved(
                "shielded",
                vec![
                    PlanStep::new("a", "make").tool("make"),
                    PlanStep::new("x", "fail").tool("fail").depends_on(["a"]),
                ],
            );
            orchestrator.execute(&mut plan).await
        })
    };
    started.notified().await;
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(20), ended.notified())
        .await
        .expect("the rollback stopped when the run was cancelled");
    assert_eq!(log.count("undo finished"), 1);
}

#[tokio::test]
async fn a_user_agents_events_and_usage_join_the_run() {
    let agent = FnAgent::new("noter", |task| async move {
        let mut result = AgentResult::ok(task);
        result.events.push(Event::new(EventKind::Note {
            message: "thinking".into(),
        }));
        // A run's usage is what its record holds: an agent that calls a model itself reports
        // the call as an event, which the run's totals (and every view of the run) count.
        result.events.push(Event::new(EventKind::LlmCall {
            model: "own/model".into(),
            usage: TokenUsage::new(10, 2),
            cost_usd: Some(0.25),
            latency_ms: 1.0,
            tool_calls: 0,
            error: None,
            exchange: None,
        }));
        result
    });
    let orchestrator = Orchestrator::new(registry_with(vec![agent]));
    let mut plan = approved(
        "notes",
        vec![
            PlanStep::new("a", "one").agent("noter"),
            PlanStep::new("b", "two").agent("noter"),
        ],
    );
    let result = orchestrator.execute(&mut plan).await.unwrap();
    let notes: Vec<&Event> = result
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Note { .. }))
        .collect();
    assert_eq!(notes.len(), 2);
    for note in notes {
        assert_eq!(note.run_id.as_deref(), result.run_id.as_deref());
        assert!(matches!(note.step_id.as_deref(), Some("a" | "b")));
        assert_eq!(note.agent.as_deref(), Some("noter"));
    }
    assert_eq!(result.token_usage, TokenUsage::new(20, 4));
    assert_eq!(result.total_cost_usd, 0.5);
    assert_eq!(result.iterations, 2);
}

#[tokio::test]
async fn one_orchestrator_runs_several_plans_at_once_without_mixing_them() {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let b = Arc::clone(&barrier);
    let agent = FnAgent::new("w", move |task| {
        let b = Arc::clone(&b);
        async move {
            b.wait().await;
            AgentResult::ok(task)
        }
    });
    let orchestrator = Orchestrator::new(registry_with(vec![agent]));
    // A repeated dependency is harmless.
    let plan = |goal: &str| {
        approved(
            goal,
            vec![
                PlanStep::new("a", goal).agent("w"),
                PlanStep::new("b", "then").agent("w").depends_on(["a", "a"]),
            ],
        )
    };
    let (mut one, mut two) = (plan("one"), plan("two"));
    let (r1, r2) = tokio::time::timeout(
        Duration::from_secs(20),
        futures::future::join(
            orchestrator.execute(&mut one),
            orchestrator.execute(&mut two),
        ),
    )
    .await
    .expect("the two runs did not proceed together");
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(r1.success && r2.success);
    assert_ne!(r1.run_id, r2.run_id);
    assert!(r1
        .events
        .iter()
        .all(|e| e.run_id.as_deref() == r1.run_id.as_deref()));
    assert!(r2
        .events
        .iter()
        .all(|e| e.run_id.as_deref() == r2.run_id.as_deref()));
    assert_eq!(one.get_step("a").unwrap().result, Some(json!("one")));
    assert_eq!(two.get_step("a").unwrap().result, Some(json!("two")));
}

#[test]
fn outside_a_tokio_runtime_execute_is_an_error_not_a_panic() {
    let mut plan = Plan::new("no runtime");
    plan.approved = true;
    let orchestrator = Orchestrator::new(AgentRegistry::new());
    let outcome = futures::executor::block_on(orchestrator.execute(&mut plan));
    assert!(
        matches!(outcome, Err(agenthelm::OrchestratorError::NoRuntime)),
        "{outcome:?}"
    );
}
