//! Structure of the page, on runs made by hand: every kind of status, hostile text, empty and
//! very large plans.

use super::graph;
use super::render_html;
use super::run_view::RunView;
use crate::lm::TokenUsage;
use crate::plan::{Plan, PlanStep, StepStatus};
use crate::store::{RunSummary, StoredRun};
use crate::trace::{CallPurpose, Event, EventKind};
use serde_json::json;
use std::sync::Arc;

const T0: u64 = 1_780_000_000_000;

fn at(ms: u64, step: Option<&str>, kind: EventKind) -> Event {
    Event {
        timestamp_ms: T0 + ms,
        run_id: Some(Arc::from("run-1")),
        step_id: step.map(Arc::from),
        agent: step.map(|_| Arc::from("worker")),
        kind,
    }
}

fn started(ms: u64, step: &str) -> Event {
    at(ms, Some(step), EventKind::StepStarted { direct_tool: None })
}

fn finished(
    ms: u64,
    step: &str,
    status: StepStatus,
    duration_ms: f64,
    error: Option<&str>,
) -> Event {
    at(
        ms,
        Some(step),
        EventKind::StepFinished {
            status,
            result: None,
            result_call: None,
            duration_ms,
            error: error.map(str::to_owned),
        },
    )
}

fn stored(plan: Plan, events: Vec<Event>, success: Option<bool>) -> StoredRun {
    StoredRun {
        summary: RunSummary {
            run_id: "run-1".into(),
            goal: plan.goal.clone(),
            steps: plan.steps.len(),
            started_ms: T0,
            finished_ms: success.map(|_| events.last().map_or(T0, |e| e.timestamp_ms)),
            success,
            error: None,
        },
        plan,
        events,
    }
}

fn chain(n: usize) -> Plan {
    let mut plan = Plan::new("long chain");
    for i in 0..n {
        let step = PlanStep::new(format!("s{i}"), "link");
        plan.steps.push(if i == 0 {
            step
        } else {
            step.depends_on([format!("s{}", i - 1)])
        });
    }
    plan
}

/// The `fill` of the graph node of `step`.
fn node_fill(html: &str, step: &str) -> String {
    let start = html
        .find(&format!(r#"<g class="node" data-step="{step}""#))
        .unwrap_or_else(|| panic!("no node for {step}"));
    let rest = &html[start..];
    let fill = rest.split(r#"fill=""#).nth(1).unwrap();
    fill[..fill.find('"').unwrap()].to_owned()
}

/// A finished run with a completed, a failed, a skipped and a compensated step.
fn finished_run() -> StoredRun {
    let mut plan = Plan::new("finished");
    plan.steps = vec![
        PlanStep::new("c", "completes"),
        PlanStep::new("k", "completes, then is undone"),
        PlanStep::new("f", "fails").depends_on(["c"]),
        PlanStep::new("s", "never starts").depends_on(["f"]),
    ];
    let events = vec![
        at(
            0,
            None,
            EventKind::RunStarted {
                goal: "finished".into(),
                steps: 4,
                budget: None,
            },
        ),
        started(1, "c"),
        started(1, "k"),
        finished(10, "c", StepStatus::Completed, 9.0, None),
        finished(12, "k", StepStatus::Completed, 11.0, None),
        started(11, "f"),
        finished(20, "f", StepStatus::Failed, 9.0, Some("boom")),
        at(
            21,
            None,
            EventKind::RollbackStarted {
                steps: vec!["k".into()],
            },
        ),
        at(
            22,
            Some("k"),
            EventKind::CompensationStarted {
                action: 0,
                tool: "undo".into(),
                args: json!({}),
            },
        ),
        at(
            30,
            Some("k"),
            EventKind::CompensationFinished {
                action: 0,
                tool: "undo".into(),
                success: true,
                error: None,
            },
        ),
        at(
            31,
            None,
            EventKind::RunFinished {
                success: false,
                duration_ms: 31.0,
            },
        ),
    ];
    stored(plan, events, Some(false))
}

#[test]
fn every_status_gets_its_colour() {
    let html = render_html(&finished_run());
    for (step, status) in [
        ("c", StepStatus::Completed),
        ("k", StepStatus::Compensated),
        ("f", StepStatus::Failed),
        ("s", StepStatus::Skipped),
    ] {
        assert_eq!(
            node_fill(&html, step),
            super::style::status_colour(status),
            "{step}"
        );
        assert!(html.contains(&format!(
            r#"<tr data-step="{step}" data-status="{status}">"#
        )));
    }
    assert!(html.contains(r#"<p class="ok" id="rollback-outcome">All 1 compensating action(s) succeeded; undone: k.</p>"#));

    // A run whose process stopped: one step was running, one had not started.
    let mut plan = Plan::new("interrupted");
    plan.steps = vec![
        PlanStep::new("r", "runs"),
        PlanStep::new("p", "waits").depends_on(["r"]),
    ];
    let html = render_html(&stored(plan, vec![started(0, "r")], None));
    assert_eq!(
        node_fill(&html, "r"),
        super::style::status_colour(StepStatus::Running)
    );
    assert_eq!(
        node_fill(&html, "p"),
        super::style::status_colour(StepStatus::Pending)
    );
    assert!(html.contains(">unfinished<"));
    assert!(html.contains("so far"));
}

#[test]
fn the_six_colours_differ() {
    let mut colours: Vec<&str> = super::style::ALL_STATUSES
        .iter()
        .map(|&s| super::style::status_colour(s))
        .collect();
    colours.sort();
    colours.dedup();
    assert_eq!(colours.len(), 6);
}

#[test]
fn a_failed_compensation_leaves_the_step_completed_and_is_named() {
    let mut run = finished_run();
    for event in &mut run.events {
        if let EventKind::CompensationFinished { success, error, .. } = &mut event.kind {
            *success = false;
            *error = Some("still there".into());
        }
    }
    let html = render_html(&run);
    assert_eq!(
        node_fill(&html, "k"),
        super::style::status_colour(StepStatus::Completed)
    );
    assert!(html.contains("Effects that could not be undone remain from: k."));
    // `c` completed and had nothing to undo; `k` did and is not "kept".
    assert!(html.contains("Completed and kept, with nothing to undo: c<"));
    assert!(html.contains(r#"<span class="bad">failed</span>"#));

    // A compensation that started and has no end (the process died during rollback).
    run.events.retain(|e| {
        !matches!(
            e.kind,
            EventKind::CompensationFinished { .. } | EventKind::RunFinished { .. }
        )
    });
    run.summary.finished_ms = None;
    run.summary.success = None;
    let html = render_html(&run);
    assert!(html.contains("started, no end on record"));
    assert_eq!(
        node_fill(&html, "k"),
        super::style::status_colour(StepStatus::Completed)
    );
}

/// A run whose every piece of text (goal, ids, agent, tool, output, errors) is `text`.
fn run_with_text(text: &str) -> StoredRun {
    let mut plan = Plan::new(format!("goal {text}"));
    plan.steps = vec![PlanStep::new(text, format!("desc {text}"))
        .agent(text)
        .tool(text)];
    let events = vec![
        started(0, text),
        at(
            5,
            Some(text),
            EventKind::ToolCall {
                call_id: text.into(),
                tool: text.into(),
                args: json!({ "x": text }),
                output: Some(json!(format!(
                    "</title></svg><script>alert(2)</script>{text}"
                ))),
                error: None,
                attempts: 1,
                duration_ms: 4.0,
                purpose: CallPurpose::Execute,
            },
        ),
        at(
            6,
            Some(text),
            EventKind::LlmCall {
                model: text.into(),
                usage: TokenUsage::new(1, 2),
                cost_usd: None,
                latency_ms: 1.0,
                tool_calls: 0,
                error: Some(text.into()),
                exchange: None,
            },
        ),
        finished(7, text, StepStatus::Failed, 7.0, Some(text)),
    ];
    let mut run = stored(plan, events, Some(false));
    run.summary.run_id = text.into();
    run.summary.error = Some(text.into());
    run
}

#[test]
fn hostile_text_is_escaped_everywhere() {
    let evil = r#"<img src=x onerror="alert(1)">&'"#;
    let html = render_html(&run_with_text(evil));
    assert!(!html.contains("<img"), "raw tag in the page");
    assert!(!html.contains("<script"), "raw script in the page");
    assert!(!html.contains("</title></svg>"));
    assert!(!html.contains(r#"onerror="alert"#));
    assert!(html.contains("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;"));
    // The hostile text added no markup: the page has as many `<` as with harmless text.
    let harmless = render_html(&run_with_text("x"));
    assert_eq!(html.matches('<').count(), harmless.matches('<').count());
}

#[test]
fn an_empty_run_still_makes_a_page() {
    let html = render_html(&stored(Plan::new(""), vec![], None));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.ends_with("</html>\n"));
    assert!(html.contains(r#"id="graph-empty""#));
    assert!(html.contains(r#"id="timeline-empty""#));
    assert!(html.contains(r#"id="rollback-none""#));
    assert!(html.contains(">unfinished<"));
    assert!(!html.contains("<tr data-step"));
}

#[test]
fn large_plans_are_capped_and_the_table_keeps_every_step() {
    let n = 500;
    let plan = chain(n);
    let mut events = Vec::new();
    for i in 0..n {
        let id = format!("s{i}");
        events.push(started(i as u64, &id));
        events.push(finished(
            i as u64 + 1,
            &id,
            StepStatus::Completed,
            1.0,
            None,
        ));
    }
    let html = render_html(&stored(plan, events, Some(true)));
    assert!(html.contains(r#"id="graph-capped""#));
    assert!(!html.contains(r#"<svg id="graph""#));
    assert!(html.contains("Showing the first 300 of 500 rows"));
    assert_eq!(html.matches(r#"class="bar step""#).count(), 300);
    assert_eq!(html.matches("<tr data-step=").count(), n);
}

#[test]
fn a_wide_layer_wraps_into_columns() {
    // One root and 300 steps that depend on it: layer 1 would be 300 nodes tall.
    let mut plan = Plan::new("fan out");
    plan.steps.push(PlanStep::new("root", "start"));
    for i in 0..300 {
        plan.steps
            .push(PlanStep::new(format!("leaf{i}"), "leaf").depends_on(["root"]));
    }
    let run = stored(plan, vec![], None);
    let view = RunView::new(&run);
    let layout = graph::layout(&view.steps);
    assert!(layout.height < 24.0 * 50.0, "height {}", layout.height);
    let columns: std::collections::BTreeSet<u64> =
        layout.positions.iter().map(|p| p.0 as u64).collect();
    assert_eq!(columns.len(), 1 + 300_usize.div_ceil(24));
    let html = render_html(&run);
    assert_eq!(html.matches(r#"<g class="node""#).count(), 301);
}

#[test]
fn layers_follow_the_longest_chain_and_survive_cycles() {
    let mut plan = Plan::new("diamond");
    plan.steps = vec![
        PlanStep::new("d", "last").depends_on(["b", "c"]),
        PlanStep::new("b", "left").depends_on(["a"]),
        PlanStep::new("a", "first"),
        PlanStep::new("c", "right").depends_on(["a", "b", "missing"]),
    ];
    let run = stored(plan, vec![], None);
    assert_eq!(graph::layers(&RunView::new(&run).steps), [3, 1, 0, 2]);

    let mut cyclic = Plan::new("cycle");
    cyclic.steps = vec![
        PlanStep::new("x", "").depends_on(["y"]),
        PlanStep::new("y", "").depends_on(["x"]),
    ];
    let run = stored(cyclic, vec![], None);
    let layers = graph::layers(&RunView::new(&run).steps);
    assert_eq!(layers.len(), 2);
    assert!(render_html(&run).contains(r#"data-step="y""#));

    // Deep chains do not overflow the stack.
    let run = stored(chain(20_000), vec![], None);
    assert_eq!(
        graph::layers(&RunView::new(&run).steps).last(),
        Some(&19_999)
    );
}

#[test]
fn a_call_before_the_first_event_starts_the_axis() {
    // A planner's LLM call, written when it ended 900 ms after it began, is the first event.
    let mut plan = Plan::new("planned");
    plan.steps = vec![PlanStep::new("a", "")];
    let events = vec![
        at(
            900,
            None,
            EventKind::LlmCall {
                model: "m".into(),
                usage: TokenUsage::new(10, 5),
                cost_usd: Some(0.5),
                latency_ms: 900.0,
                tool_calls: 0,
                error: None,
                exchange: None,
            },
        ),
        started(1000, "a"),
        finished(1100, "a", StepStatus::Completed, 100.0, None),
    ];
    let mut run = stored(plan, events, Some(true));
    run.summary.started_ms = T0 + 900;
    let view = RunView::new(&run);
    let llm = view.bars.iter().find(|b| b.step.is_none()).unwrap();
    assert_eq!((llm.start_ms, llm.end_ms), (0.0, 900.0));
    let step = view.bars.iter().find(|b| b.step == Some(0)).unwrap();
    assert_eq!((step.start_ms, step.end_ms), (1000.0, 1100.0));
    assert_eq!(view.span_ms, 1100.0);
    assert!(
        render_html(&run).contains(">run</text>"),
        "the run's own row"
    );
}

/// The report, the OTLP spans and the run state agree on step states, attempts and cost, for a
/// resumed run with a failed, unpriced model call and a rollback.
#[cfg(feature = "otlp")]
#[test]
fn report_otlp_and_run_state_agree() {
    use crate::otlp::{attribute, spans_of};
    use crate::trace::{Interruption, RunState};
    use opentelemetry::Value;
    let mut plan = Plan::new("views");
    plan.steps.push(PlanStep::new("a", "a").agent("worker"));
    plan.steps.push(PlanStep::new("b", "b").agent("worker"));
    plan.steps.push(PlanStep::new("c", "c").agent("worker"));
    let resumed = Interruption {
        step: "b".into(),
        rerun: true,
    };
    let llm = |ms, cost_usd, error: Option<&str>| {
        at(
            ms,
            Some("b"),
            EventKind::LlmCall {
                model: "openai/gpt".into(),
                usage: TokenUsage::new(10, 5),
                cost_usd,
                latency_ms: 1.0,
                tool_calls: 0,
                error: error.map(str::to_owned),
                exchange: None,
            },
        )
    };
    let events = vec![
        at(
            0,
            None,
            EventKind::RunStarted {
                goal: "views".into(),
                steps: 3,
                budget: None,
            },
        ),
        started(1, "a"),
        finished(2, "a", StepStatus::Completed, 1.0, None),
        started(3, "b"),
        llm(4, Some(0.5), None),
        at(
            5,
            None,
            EventKind::RunResumed {
                interrupted: vec![resumed.to_entry()],
            },
        ),
        started(6, "b"),
        llm(7, None, Some("service unavailable")),
        finished(8, "b", StepStatus::Failed, 2.0, Some("model failed")),
        at(
            9,
            None,
            EventKind::RollbackStarted {
                steps: vec!["a".into()],
            },
        ),
        at(
            10,
            Some("a"),
            EventKind::CompensationStarted {
                action: 0,
                tool: "undo".into(),
                args: json!({}),
            },
        ),
        at(
            11,
            Some("a"),
            EventKind::CompensationFinished {
                action: 0,
                tool: "undo".into(),
                success: true,
                error: None,
            },
        ),
        at(
            12,
            None,
            EventKind::RunFinished {
                success: false,
                duration_ms: 6.0,
            },
        ),
    ];
    let run = stored(plan, events, Some(false));
    let state = RunState::replay(&run.plan, &run.events);
    let view = RunView::new(&run);
    let spans = spans_of(&run.events);

    let statuses: Vec<StepStatus> = state.steps().iter().map(|s| s.status).collect();
    use StepStatus::{Compensated, Failed, Skipped};
    assert_eq!(statuses, vec![Compensated, Failed, Skipped]);
    let viewed: Vec<StepStatus> = view.steps.iter().map(|s| s.status).collect();
    assert_eq!(viewed, statuses);
    assert_eq!(state.steps()[1].attempts, 2);
    for record in state.steps().iter().filter(|s| s.attempts > 0) {
        let span = spans
            .iter()
            .rev()
            .find(|s| {
                attribute(s, "agenthelm.step.id") == Some(&Value::from(record.id.to_string()))
                    && s.name.starts_with("step ")
            })
            .unwrap();
        assert_eq!(
            attribute(span, "agenthelm.step.status"),
            Some(&Value::from(record.status.as_str()))
        );
        assert_eq!(
            attribute(span, "agenthelm.step.attempts"),
            Some(&Value::I64(i64::from(record.attempts)))
        );
    }
    let usage = state.usage();
    assert!(usage.cost_incomplete(), "the failed call has no price");
    assert_eq!(
        (view.cost_usd, view.cost_incomplete),
        (usage.cost_usd, true)
    );
    let root = &spans[0];
    assert_eq!(
        attribute(root, "agenthelm.cost_usd"),
        Some(&Value::F64(usage.cost_usd))
    );
    assert_eq!(
        attribute(root, "agenthelm.cost_incomplete"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        attribute(root, "agenthelm.run.resumed"),
        Some(&Value::I64(1))
    );
}
