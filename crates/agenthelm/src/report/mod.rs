//! A picture of a run: one self-contained HTML page.
//!
//! [`render_html`] turns a [`StoredRun`] (as loaded from a [`RunStore`](crate::store::RunStore))
//! into a page with:
//!
//! - a header: goal, run id, outcome, start and end, duration, tokens and cost;
//! - the plan's dependency graph, laid out in layers, each step coloured by its final status
//!   (completed, failed, skipped, compensated, running, pending);
//! - a timeline (Gantt chart) of steps, LLM calls, tool calls and compensations on one time
//!   axis, with the details of each bar in its hover title;
//! - a table of the steps (status, agent, duration, error) and the outcome of the rollback.
//!
//! The page loads nothing: its style sheet and drawings are inline, with no script, font or
//! network access, so it can be mailed, attached to a ticket or opened offline. All text from
//! the run (ids, errors, tool output) is escaped.
//!
//! Large plans: the graph is drawn for up to 400 steps (wide layers wrap into several columns
//! and the panel scrolls), the timeline for up to 300 rows (thinner rows past 60); past those
//! limits the page says so, and the table always lists every step.
//!
//! ```
//! use agenthelm::prelude::*;
//! use agenthelm::store::{JsonlStore, RunStore};
//! use serde_json::json;
//!
//! /// Say hello.
//! #[tool]
//! fn greet(name: String) -> String {
//!     format!("hello {name}")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("agenthelm-report-doc-{}", std::process::id()));
//! let mut registry = AgentRegistry::new();
//! registry.register(ToolAgent::new("greeter", Lm::from_model(ScriptedLm::new(vec![])), tools![greet]))?;
//! let orchestrator = Orchestrator::new(registry).store(JsonlStore::open(&dir)?);
//!
//! let mut plan = Plan::new("greet <everyone>");
//! plan.steps.push(PlanStep::new("hi", "greet Ada").agent("greeter").tool("greet").args(json!({"name": "Ada"})));
//! plan.approved = true;
//! let result = orchestrator.execute(&mut plan).await?;
//!
//! let run_id = result.run_id.ok_or("a run with a store has an id")?;
//! let run = JsonlStore::open(&dir)?.load_run(&run_id)?;
//! let html = agenthelm::report::render_html(&run);
//! assert!(html.starts_with("<!DOCTYPE html>"));
//! assert!(html.contains("greet &lt;everyone&gt;"));
//! std::fs::write(dir.join("run.html"), html)?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

mod escape;
mod graph;
mod run_view;
mod style;
mod time_format;
mod timeline;

use std::fmt::Write;

use crate::plan::StepStatus;
use crate::store::StoredRun;
use escape::escape;
use run_view::{RunOutcome, RunView};
use time_format::{duration, utc};

/// The page for `run`: a complete HTML document, self-contained (no script, font, image or
/// other request), readable in any browser. See the [module documentation](self).
pub fn render_html(run: &StoredRun) -> String {
    let view = RunView::new(run);
    let mut out = String::with_capacity(16 * 1024 + run.events.len() * 400);
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><title>{title}</title><style>{css}</style></head><body><main>"#,
        title = escape(&format!("Run {} · {}", run.summary.run_id, goal(run))),
        css = style::CSS
    );
    header(&view, &mut out);
    graph_section(&view, &mut out);
    timeline_section(&view, &mut out);
    steps_table(&view, &mut out);
    decisions_section(&view, &mut out);
    rollback_section(&view, &mut out);
    out.push_str("</main></body></html>\n");
    out
}

fn goal(run: &StoredRun) -> &str {
    if run.plan.goal.is_empty() {
        &run.summary.goal
    } else {
        &run.plan.goal
    }
}

fn header(view: &RunView<'_>, out: &mut String) {
    let run = view.run;
    let (label, colour) = match view.outcome {
        RunOutcome::Succeeded => ("succeeded", style::status_colour(StepStatus::Completed)),
        RunOutcome::Failed => ("failed", style::status_colour(StepStatus::Failed)),
        RunOutcome::Unfinished => ("unfinished", style::status_colour(StepStatus::Running)),
    };
    let finished = view.finished_ms();
    let cost = if view.llm_calls == 0 {
        "–".to_owned()
    } else if view.cost_incomplete {
        format!("${:.6} + unpriced calls", view.cost_usd)
    } else {
        format!("${:.6}", view.cost_usd)
    };
    let facts: [(&str, String); 9] = [
        (
            "status",
            format!(
                r#"<span class="badge" id="run-status" style="background:{colour}">{label}</span>"#
            ),
        ),
        ("started", escape(&utc(run.summary.started_ms))),
        (
            "ended",
            finished.map_or("–".to_owned(), |t| escape(&utc(t))),
        ),
        (
            "duration",
            finished.map_or_else(
                || escape(&duration(view.span_ms)) + " so far",
                |t| escape(&duration(t.saturating_sub(run.summary.started_ms) as f64)),
            ),
        ),
        ("steps", step_counts(view)),
        (
            "tokens (in / out)",
            format!("{} / {}", view.usage.input_tokens, view.usage.output_tokens),
        ),
        ("cost", escape(&cost)),
        ("LLM calls", view.llm_calls.to_string()),
        ("tool calls", view.tool_calls.to_string()),
    ];
    let _ = write!(
        out,
        r#"<header><h1 id="goal">{}</h1><div class="sub">run <span id="run-id">{}</span></div><dl class="facts">"#,
        escape(goal(run)),
        escape(&run.summary.run_id)
    );
    for (name, value) in facts {
        let _ = write!(out, "<div><dt>{name}</dt><dd>{value}</dd></div>");
    }
    out.push_str("</dl>");
    if let Some(error) = &run.summary.error {
        let _ = write!(
            out,
            r#"<p class="bad" id="run-error">{}</p>"#,
            escape(error)
        );
    }
    out.push_str("</header>");
}

/// "5: 3 completed, 1 failed, 1 skipped".
fn step_counts(view: &RunView<'_>) -> String {
    let parts: Vec<String> = style::ALL_STATUSES
        .iter()
        .filter_map(|&status| {
            let n = view.steps.iter().filter(|s| s.status == status).count();
            (n > 0).then(|| format!("{n} {status}"))
        })
        .collect();
    if parts.is_empty() {
        "0".to_owned()
    } else {
        format!("{}: {}", view.steps.len(), parts.join(", "))
    }
}

fn legend(out: &mut String) {
    out.push_str(r#"<div class="legend">"#);
    for status in style::ALL_STATUSES {
        let _ = write!(
            out,
            r#"<span style="--c:{}">{status}</span>"#,
            style::status_colour(status)
        );
    }
    out.push_str("</div>");
}

fn graph_section(view: &RunView<'_>, out: &mut String) {
    out.push_str(r#"<section><h2>Plan</h2>"#);
    if view.steps.is_empty() {
        out.push_str(r#"<p class="note" id="graph-empty">The plan has no steps.</p></section>"#);
        return;
    }
    legend(out);
    if view.steps.len() > graph::MAX_GRAPH_STEPS {
        let _ = write!(
            out,
            r#"<p class="note" id="graph-capped">{} steps are too many to draw legibly (the graph is drawn up to {}); the table below lists every step.</p></section>"#,
            view.steps.len(),
            graph::MAX_GRAPH_STEPS
        );
        return;
    }
    out.push_str(r#"<div class="panel">"#);
    graph::render(&view.steps, out);
    out.push_str(
        r#"</div><p class="note">Arrows point from a step to the steps that depend on it. Hover a step for its details.</p></section>"#,
    );
}

fn timeline_section(view: &RunView<'_>, out: &mut String) {
    out.push_str(r#"<section><h2>Timeline</h2><div class="legend">"#);
    for (name, colour) in [
        (
            "step (by status)",
            style::status_colour(StepStatus::Completed),
        ),
        ("LLM call", style::LLM_COLOUR),
        ("tool call", style::TOOL_COLOUR),
        ("compensation", style::COMPENSATION_COLOUR),
        ("failed call", style::FAILED_CALL_COLOUR),
    ] {
        let _ = write!(out, r#"<span style="--c:{colour}">{name}</span>"#);
    }
    out.push_str(r#"</div><div class="panel">"#);
    timeline::render(view, out);
    out.push_str("</div></section>");
}

fn steps_table(view: &RunView<'_>, out: &mut String) {
    out.push_str(
        r#"<section><h2>Steps</h2><table id="steps"><thead><tr><th>step</th><th>status</th><th>agent</th><th>tool</th><th>depends on</th><th>duration</th><th>error</th></tr></thead><tbody>"#,
    );
    for s in &view.steps {
        let _ = write!(
            out,
            r#"<tr data-step="{id}" data-status="{status}"><td class="id" title="{desc}">{id}</td><td><span class="badge" style="background:{colour};color:{ink}">{status}</span></td><td>{agent}</td><td>{tool}</td><td class="id">{deps}</td><td class="num">{dur}</td><td class="err">{error}</td></tr>"#,
            id = escape(&s.step.id),
            desc = escape(&s.step.description),
            status = s.status,
            colour = style::status_colour(s.status),
            ink = style::status_text_colour(s.status),
            agent = escape(s.agent.as_deref().unwrap_or("default")),
            tool = escape(s.step.tool_name.as_deref().unwrap_or("")),
            deps = escape(&s.step.depends_on.join(", ")),
            dur = s.duration_ms.map_or(String::new(), duration),
            error = escape(s.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></section>");
}

/// Who approved the plan and each tool call that needed a decision (nothing when nobody had
/// to decide).
fn decisions_section(view: &RunView<'_>, out: &mut String) {
    if view.review.is_none() && view.decisions.is_empty() {
        return;
    }
    out.push_str(r#"<section id="decisions"><h2>Decisions</h2>"#);
    if let Some(review) = &view.review {
        let submitted = review
            .submitted_by
            .as_deref()
            .map(|by| format!("Submitted by {}. ", escape(by)))
            .unwrap_or_default();
        let decided = match &review.decision {
            Some(d) => format!(
                "{} by {}{} at {}{}.",
                if d.approved { "Approved" } else { "Rejected" },
                escape(&d.by),
                if d.edited { " after editing it" } else { "" },
                time_format::utc(d.at_ms),
                d.reason
                    .as_deref()
                    .map(|r| format!(": {}", escape(r)))
                    .unwrap_or_default()
            ),
            None => "Waiting for review.".to_owned(),
        };
        let _ = write!(out, r#"<p id="plan-review">Plan: {submitted}{decided}</p>"#);
    }
    if !view.decisions.is_empty() {
        out.push_str(
            r#"<table id="approvals"><thead><tr><th>step</th><th>tool</th><th>decision</th><th>by</th><th>at</th><th>reason</th><th>arguments asked</th><th>edited arguments</th></tr></thead><tbody>"#,
        );
        for d in &view.decisions {
            let _ = write!(
                out,
                r#"<tr><td class="id">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="err">{}</td></tr>"#,
                escape(d.step.as_deref().unwrap_or("-")),
                escape(&d.tool),
                d.what,
                escape(d.by.as_deref().unwrap_or("approval handler")),
                time_format::utc(d.at_ms),
                escape(d.reason.as_deref().unwrap_or("")),
                escape(
                    &d.asked_args
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                escape(
                    &d.edited_args
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn rollback_section(view: &RunView<'_>, out: &mut String) {
    out.push_str(r#"<section id="rollback"><h2>Rollback</h2>"#);
    let Some(rollback) = &view.rollback else {
        let text = match view.outcome {
            RunOutcome::Failed => "No rollback: nothing had to be undone, or rollback was off.",
            _ => "No rollback.",
        };
        let _ = write!(
            out,
            r#"<p class="note" id="rollback-none">{text}</p></section>"#
        );
        return;
    };
    let not_undone = rollback.not_undone();
    if not_undone.is_empty() {
        let mut undone: Vec<&str> = Vec::new();
        for action in &rollback.actions {
            if !undone.contains(&action.step.as_str()) {
                undone.push(&action.step);
            }
        }
        let _ = write!(
            out,
            r#"<p class="ok" id="rollback-outcome">All {} compensating action(s) succeeded; undone: {}.</p>"#,
            rollback.actions.len(),
            escape(&undone.join(", "))
        );
    } else {
        let _ = write!(
            out,
            r#"<p class="bad" id="rollback-outcome">Effects that could not be undone remain from: {}.</p>"#,
            escape(&not_undone.join(", "))
        );
    }
    // Completed steps the rollback left alone had nothing to undo (no compensating tool).
    let kept: Vec<&str> = view
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| s.step.id.as_str())
        .filter(|id| !rollback.actions.iter().any(|a| a.step == *id))
        .collect();
    if !kept.is_empty() {
        let _ = write!(
            out,
            r#"<p class="note" id="rollback-kept">Completed and kept, with nothing to undo: {}</p>"#,
            escape(&kept.join(", "))
        );
    }
    if !rollback.order.is_empty() {
        let _ = write!(
            out,
            r#"<p class="note">Undo order: {}</p>"#,
            escape(&rollback.order.join(" → "))
        );
    }
    out.push_str(
        r#"<table id="compensations"><thead><tr><th>step</th><th>compensating tool</th><th>outcome</th><th>error</th></tr></thead><tbody>"#,
    );
    for action in &rollback.actions {
        let outcome = match action.success {
            Some(true) => r#"<span class="ok">undone</span>"#,
            Some(false) => r#"<span class="bad">failed</span>"#,
            None => r#"<span class="bad">started, no end on record</span>"#,
        };
        let _ = write!(
            out,
            r#"<tr data-step="{}"><td class="id">{}</td><td>{}</td><td>{outcome}</td><td class="err">{}</td></tr>"#,
            escape(&action.step),
            escape(&action.step),
            escape(&action.tool),
            escape(action.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table></section>");
}

#[cfg(test)]
mod tests;
