//! `agenthelm runs list|show|report`: past runs from the workspace's store.

use agenthelm::budget::Budget;
use agenthelm::store::{RunSummary, StoredRun};
use agenthelm::trace::{CompensationState, LedgerEntry, Usage};
use agenthelm::{RunState, TokenUsage};
use serde::Serialize;

use super::Session;
use crate::cli::{RunsAction, RunsArgs};
use crate::render::{self, Palette};
use agenthelm_workspace::timestamp::{format_ms, now_ms, parse_time};
use agenthelm_workspace::ReviewSummary;

use crate::exit::BadInput;

/// Runs `agenthelm runs`.
pub fn run(session: &Session, args: &RunsArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let store = agenthelm_workspace::open_store(&workspace)?.store;
    match &args.action {
        RunsAction::List { limit, json } => {
            let runs = store.list_runs(*limit).map_err(crate::exit::read_error)?;
            if *json {
                crate::out::json(&runs)?;
            } else {
                crate::out::line(&list_table(&runs, Palette::stdout()))?;
            }
        }
        RunsAction::Show { run_id, json } => {
            // The digest shows no arguments, outputs or results: they are not read.
            let stored = store
                .load_run_outline(run_id)
                .map_err(crate::exit::read_error)?;
            let digest = Digest::of(&stored);
            if *json {
                crate::out::json(&digest)?;
            } else {
                crate::out::line(&digest.render(Palette::stdout()))?;
            }
        }
        RunsAction::Prune {
            older_than,
            keep_failed,
            json,
        } => {
            let before = parse_time(older_than, now_ms()).map_err(BadInput)?;
            let size_before = store.size_on_disk();
            let deleted = store
                .prune(before, *keep_failed)
                .map_err(crate::exit::read_error)?;
            let size_after = store.size_on_disk();
            if *json {
                crate::out::json(&serde_json::json!({
                    "deleted": deleted,
                    "ended_before": format_ms(before),
                    "kept_failed": keep_failed,
                    "size_before": size_before,
                    "size_after": size_after,
                }))?;
            } else {
                let kept = if *keep_failed {
                    " (failed runs kept)"
                } else {
                    ""
                };
                let size = match (size_before, size_after) {
                    (Some(b), Some(a)) => format!("; the store went from {} to {}", mb(b), mb(a)),
                    _ => String::new(),
                };
                crate::out::line(&format!(
                    "Deleted {} run(s) that ended before {}{kept}{size}.",
                    deleted.len(),
                    format_ms(before)
                ))?;
            }
        }
        RunsAction::Report { run_id, output } => {
            let stored = store.load_run(run_id).map_err(crate::exit::read_error)?;
            let html = agenthelm::report::render_html(&stored);
            crate::out::private_file(output, html.as_bytes())?;
            crate::out::note(&format!(
                "Wrote the report of {run_id} to {}",
                output.display()
            ));
        }
    }
    Ok(())
}

/// A size in MB with a decimal, or in KB below a megabyte.
fn mb(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    }
}

/// How a run ended, in one word.
fn run_state(summary: &RunSummary) -> &'static str {
    match summary.success {
        Some(true) => "succeeded",
        Some(false) => "failed",
        None => "unfinished",
    }
}

fn list_table(runs: &[RunSummary], palette: Palette) -> String {
    if runs.is_empty() {
        return "No runs yet.".to_owned();
    }
    let mut table = render::table(palette);
    table.set_header(["run", "started", "state", "steps", "goal"]);
    for run in runs {
        let state = match run.success {
            Some(true) => palette.ok(run_state(run)),
            Some(false) => palette.bad(run_state(run)),
            None => palette.warn(run_state(run)),
        };
        table.add_row([
            render::safe(&run.run_id),
            format_ms(run.started_ms),
            state,
            run.steps.to_string(),
            render::shorten(&run.goal, 60),
        ]);
    }
    table.to_string()
}

/// What `runs show` tells about a run, rebuilt from its events.
#[derive(Debug, Serialize)]
struct Digest {
    run_id: String,
    goal: String,
    state: &'static str,
    started: String,
    finished: Option<String>,
    error: Option<String>,
    /// How many times the run was resumed.
    resumes: usize,
    steps: Vec<StepLine>,
    rollback: Vec<UndoLine>,
    /// The review of its plan, when it was submitted for one (`agenthelm serve`).
    review: Option<ReviewSummary>,
    /// The limits the run was kept within, when it had any.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<Budget>,
    /// Decisions on tool calls that needed approval, and calls still waiting for one.
    approvals: Vec<DecisionLine>,
    token_usage: TokenUsage,
    total_cost_usd: f64,
    unpriced_calls: u32,
    #[serde(skip)]
    usage: Usage,
    /// Some model call has no price: `total_cost_usd` is a lower bound.
    cost_incomplete: bool,
    events: usize,
}

#[derive(Debug, Serialize)]
struct StepLine {
    id: String,
    /// Last status on record; `running` for a step whose end is not on record.
    status: String,
    agent: Option<String>,
    tool: Option<String>,
    /// Times the step was started (more than 1 when it was re-run after a crash).
    attempts: usize,
    duration_ms: Option<f64>,
    error: Option<String>,
}

/// The review line of `runs show`.
fn render_review(review: &ReviewSummary) -> String {
    let safe = render::safe;
    let submitted = review
        .submitted_by
        .as_deref()
        .map(|by| format!("submitted by {}, ", safe(by)))
        .unwrap_or_default();
    let decided = match (review.decision, &review.by, &review.at) {
        (Some(decision), Some(by), Some(at)) => {
            let verb = if decision == "approve" {
                "approved"
            } else {
                "rejected"
            };
            let edited = if review.edited {
                " after editing it"
            } else {
                ""
            };
            format!("{verb} by {}{edited} at {at}", safe(by))
        }
        _ => "waiting for review".to_owned(),
    };
    let reason = review
        .reason
        .as_deref()
        .map(|r| format!(": {}", safe(r)))
        .unwrap_or_default();
    format!("Plan: {submitted}{decided}{reason}\n")
}

/// A decision on a tool call (by a person or the approval handler), or a call still waiting.
#[derive(Debug, Serialize)]
struct DecisionLine {
    step: Option<String>,
    tool: String,
    /// `approve`, `edit`, `deny`, or `waiting`.
    decision: &'static str,
    /// Who decided; null for the approval handler.
    by: Option<String>,
    at: String,
    reason: Option<String>,
    /// The arguments asked for, when an edit replaced them (or the call still waits).
    asked_args: Option<serde_json::Value>,
    edited_args: Option<serde_json::Value>,
}

impl DecisionLine {
    fn all(state: &RunState) -> Vec<DecisionLine> {
        state
            .call_decisions()
            .into_iter()
            .map(|decision| {
                let record = decision.decided();
                DecisionLine {
                    step: decision.step().map(|i| state.steps()[i].id.to_string()),
                    tool: decision.tool().to_owned(),
                    decision: decision.verdict(),
                    by: record.and_then(|r| r.by.clone()),
                    at: format_ms(decision.at_ms()),
                    reason: record.and_then(|r| r.reason.clone()),
                    asked_args: decision.asked_args().cloned(),
                    edited_args: record.and_then(|r| r.edited_args.clone()),
                }
            })
            .collect()
    }

    fn render(&self, palette: Palette) -> String {
        let safe = render::safe;
        let who = self
            .by
            .as_deref()
            .map_or("the approval handler".to_owned(), safe);
        let what = match self.decision {
            "waiting" => palette.warn("waits for a decision"),
            "deny" => palette.bad(&format!("denied by {who}")),
            "edit" => format!("approved by {who} with edited arguments"),
            _ => format!("approved by {who}"),
        };
        let mut line = format!(
            "Approval: {} {} {what} ({})",
            safe(self.step.as_deref().unwrap_or("-")),
            safe(&self.tool),
            self.at
        );
        if let Some(reason) = &self.reason {
            line.push_str(&format!(": {}", safe(reason)));
        }
        let shown =
            |args: &serde_json::Value| render::safe(&render::shorten(&args.to_string(), 80));
        match (&self.asked_args, &self.edited_args) {
            (Some(asked), Some(edited)) => {
                line.push_str(&format!(" {} → {}", shown(asked), shown(edited)));
            }
            (Some(args), None) | (None, Some(args)) => line.push_str(&format!(" {}", shown(args))),
            (None, None) => {}
        }
        line.push('\n');
        line
    }
}

#[derive(Debug, Serialize)]
struct UndoLine {
    step: String,
    tool: String,
    success: Option<bool>,
    error: Option<String>,
}

impl UndoLine {
    fn of(state: &RunState, entry: &LedgerEntry) -> UndoLine {
        let (success, error) = match &entry.state {
            CompensationState::Started => (None, None),
            CompensationState::Done => (Some(true), None),
            CompensationState::Failed(error) => (Some(false), Some(error.clone())),
        };
        UndoLine {
            step: state.steps()[entry.step].id.to_string(),
            tool: entry.tool.clone(),
            success,
            error,
        }
    }
}

impl Digest {
    /// The digest of `stored`, read from its replayed [`RunState`].
    fn of(stored: &StoredRun) -> Digest {
        let summary = &stored.summary;
        let state = RunState::replay(&stored.plan, &stored.events);
        let steps = stored
            .plan
            .steps
            .iter()
            .zip(state.steps())
            .map(|(planned, record)| StepLine {
                id: planned.id.clone(),
                status: record.status.to_string(),
                agent: record.agent.as_deref().map(str::to_owned),
                tool: record.direct_tool.clone().or(planned.tool_name.clone()),
                attempts: record.attempts as usize,
                duration_ms: record.duration_ms,
                error: record.error.clone(),
            })
            .collect();
        let rollback = state.rollback().map_or(&[][..], |r| &r.ledger);
        let usage = state.usage();
        Digest {
            run_id: summary.run_id.clone(),
            goal: summary.goal.clone(),
            state: run_state(summary),
            started: format_ms(summary.started_ms),
            finished: summary.finished_ms.map(format_ms),
            error: summary.error.clone(),
            resumes: state.resumes().len(),
            steps,
            rollback: rollback
                .iter()
                .map(|entry| UndoLine::of(&state, entry))
                .collect(),
            review: ReviewSummary::of(&state),
            budget: state.budget().copied(),
            approvals: DecisionLine::all(&state),
            token_usage: usage.tokens,
            total_cost_usd: usage.cost_usd,
            unpriced_calls: usage.unpriced_calls,
            cost_incomplete: usage.cost_incomplete(),
            usage: *usage,
            events: stored.events.len(),
        }
    }

    fn render(&self, palette: Palette) -> String {
        let safe = render::safe;
        let mut out = format!(
            "Run {}  ({})\nGoal: {}\nStarted {}{}\n",
            safe(&self.run_id),
            match self.state {
                "succeeded" => palette.ok(self.state),
                "failed" => palette.bad(self.state),
                other => palette.warn(other),
            },
            safe(&self.goal),
            self.started,
            self.finished
                .as_deref()
                .map(|f| format!(", finished {f}"))
                .unwrap_or_default()
        );
        if self.resumes > 0 {
            out.push_str(&format!("Resumed {} time(s)\n", self.resumes));
        }
        if let Some(review) = &self.review {
            out.push_str(&render_review(review));
        }
        if let Some(budget) = &self.budget {
            out.push_str(&format!("Budget: {}\n", render::budget_limits(budget)));
        }
        let mut table = render::table(palette);
        table.set_header(["step", "status", "by", "runs", "duration", "error"]);
        for step in &self.steps {
            let by = match (&step.tool, &step.agent) {
                (Some(tool), _) => format!("tool {}", safe(tool)),
                (None, Some(agent)) => format!("agent {}", safe(agent)),
                (None, None) => "-".to_owned(),
            };
            table.add_row([
                safe(&step.id),
                step.status.clone(),
                by,
                step.attempts.to_string(),
                step.duration_ms.map(render::millis).unwrap_or_default(),
                step.error
                    .as_deref()
                    .map(|e| render::shorten(e, 60))
                    .unwrap_or_default(),
            ]);
        }
        out.push_str(&format!("{table}\n"));
        for approval in &self.approvals {
            out.push_str(&approval.render(palette));
        }
        for undo in &self.rollback {
            let line = match (undo.success, &undo.error) {
                (Some(true), _) => {
                    format!("Undone: {} with {}\n", safe(&undo.step), safe(&undo.tool))
                }
                (Some(false), error) => palette.bad(&format!(
                    "Could not undo: {} with {}: {}\n",
                    safe(&undo.step),
                    safe(&undo.tool),
                    safe(error.as_deref().unwrap_or("failed"))
                )),
                (None, _) => palette.warn(&format!(
                    "Undo started, outcome unknown: {} with {}\n",
                    safe(&undo.step),
                    safe(&undo.tool)
                )),
            };
            out.push_str(&line);
        }
        if let Some(error) = &self.error {
            out.push_str(&palette.bad(&format!("Error: {}\n", safe(error))));
        }
        out.push_str(&format!(
            "{}; {} events\n",
            render::usage_line(&self.usage),
            self.events
        ));
        out
    }
}
