//! What people see: colours, plan tables and graphs, live progress lines, run summaries.

use agenthelm::budget::{Budget, Unpriced};
use agenthelm::lm::RateLimitCause;
use agenthelm::trace::{CallPurpose, Usage};
use agenthelm::{Event, EventKind, Plan, RunResult, StepStatus};
use comfy_table::{presets, ContentArrangement, Table};
use owo_colors::OwoColorize;
use std::io::IsTerminal;

/// Whether to colour text for one output stream: never with `NO_COLOR` or off a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    on: bool,
}

impl Palette {
    /// Colours for standard output.
    pub fn stdout() -> Self {
        Self::for_terminal(std::io::stdout().is_terminal())
    }

    /// Colours for standard error.
    pub fn stderr() -> Self {
        Self::for_terminal(std::io::stderr().is_terminal())
    }

    fn for_terminal(is_terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Palette {
            on: is_terminal && !no_color,
        }
    }

    /// Whether colours are on.
    pub fn enabled(self) -> bool {
        self.on
    }

    /// `text` as it may reach this stream: every control character escaped (`\x1b`), except
    /// line breaks, tabs and, when colours are on, the palette's own colour sequences.
    pub fn clean(self, text: &str) -> String {
        let keep: &[&str] = if self.on { &COLOUR_SEQUENCES } else { &[] };
        crate::out::escape_controls(text, keep)
    }

    /// Good news.
    pub fn ok(self, text: &str) -> String {
        self.paint(text, |t| t.green().to_string())
    }

    /// Bad news.
    pub fn bad(self, text: &str) -> String {
        self.paint(text, |t| t.red().to_string())
    }

    /// Needs attention.
    pub fn warn(self, text: &str) -> String {
        self.paint(text, |t| t.yellow().to_string())
    }

    /// Less important.
    pub fn dim(self, text: &str) -> String {
        self.paint(text, |t| t.dimmed().to_string())
    }

    /// More important.
    pub fn bold(self, text: &str) -> String {
        self.paint(text, |t| t.bold().to_string())
    }

    /// A step status in its colour.
    pub fn status(self, status: StepStatus) -> String {
        match status {
            StepStatus::Completed => self.ok(status.as_str()),
            StepStatus::Failed => self.bad(status.as_str()),
            StepStatus::Compensated | StepStatus::Skipped => self.warn(status.as_str()),
            _ => status.as_str().to_owned(),
        }
    }

    fn paint(self, text: &str, colour: impl Fn(&str) -> String) -> String {
        if self.on {
            colour(text)
        } else {
            text.to_owned()
        }
    }
}

/// Every sequence [`Palette`] writes (owo-colors' codes for the colours it uses).
const COLOUR_SEQUENCES: [&str; 8] = [
    "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[39m", "\x1b[0m", "\x1b[22m",
];

/// Text from outside (tools, models, plan and store files) with its control characters
/// escaped, before it is laid out: so a colour terminal cannot be steered by it either, and
/// table widths and cuts count the escaped text.
pub fn safe(text: &str) -> String {
    crate::out::escape_controls(text, &[])
}

/// An empty table in the house style.
pub fn table(palette: Palette) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if !palette.enabled() {
        table.force_no_tty();
    }
    table
}

/// A JSON value on one short line (strings without quotes).
pub fn short_json(value: &serde_json::Value, limit: usize) -> String {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    shorten(&text, limit)
}

/// `text` on one line, control characters escaped, cut to `limit` characters (of the escaped
/// text, so a cut cannot leave half an escape sequence).
pub fn shorten(text: &str, limit: usize) -> String {
    let one_line = safe(text).replace(['\n', '\t'], " ");
    if one_line.chars().count() <= limit {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(limit.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Tools as a table: name, description (first line) and parameters, `[name]` when optional.
pub fn tool_table(tools: &agenthelm::ToolSet, palette: Palette) -> String {
    let mut table = table(palette);
    table.set_header(["tool", "description", "parameters"]);
    for spec in tools.specs() {
        let description = spec.description.lines().next().unwrap_or_default();
        table.add_row([
            safe(&spec.name),
            shorten(description, 70),
            safe(&parameters(&spec.parameters)),
        ]);
    }
    table.to_string()
}

/// `a: integer, [b: string]` from an object schema.
fn parameters(schema: &serde_json::Value) -> String {
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        return "-".into();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let described: Vec<String> = properties
        .iter()
        .map(|(name, property)| {
            let kind = match property.get("type") {
                Some(serde_json::Value::String(t)) => t.clone(),
                Some(serde_json::Value::Array(types)) => types
                    .iter()
                    .filter_map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join("|"),
                _ if property.get("enum").is_some() => "enum".into(),
                _ => "any".into(),
            };
            if required.contains(&name.as_str()) {
                format!("{name}: {kind}")
            } else {
                format!("[{name}: {kind}]")
            }
        })
        .collect();
    if described.is_empty() {
        "-".into()
    } else {
        described.join(", ")
    }
}

/// A plan as a table: one row per step. A step that names no agent shows the default agent that
/// takes it, as `name (default)`.
pub fn plan_table(plan: &Plan, default_agent: Option<&str>, palette: Palette) -> String {
    let default = default_agent.map_or_else(|| "-".to_owned(), |a| format!("{a} (default)"));
    let mut table = table(palette);
    table.set_header(["step", "agent", "tool", "args", "depends on", "description"]);
    for step in &plan.steps {
        table.add_row([
            safe(&step.id),
            step.agent_name
                .as_deref()
                .map_or_else(|| default.clone(), safe),
            step.tool_name.as_deref().map_or_else(|| "-".into(), safe),
            short_json(&step.args, 40),
            safe(&step.depends_on.join(", ")),
            shorten(&step.description, 50),
        ]);
    }
    format!(
        "{} {}\n{table}",
        palette.bold("Plan:"),
        safe(&plan.goal).replace('\n', " ")
    )
}

/// Steps grouped in waves: each wave's steps only depend on earlier waves, so a wave's steps can
/// run at the same time. Steps caught in a cycle, or waiting for a step that is not in the plan,
/// are left out. Linear in steps and dependencies: each step is placed once, when its last
/// dependency is.
pub fn waves(plan: &Plan) -> Vec<Vec<&str>> {
    let index = step_index(plan);
    let n = plan.steps.len();
    let mut waiting = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, step) in plan.steps.iter().enumerate() {
        for dep in &step.depends_on {
            match index.get(dep.as_str()) {
                Some(&j) => dependents[j].push(i),
                // Never ready: the step it waits for does not exist.
                None => waiting[i] = usize::MAX / 2,
            }
            waiting[i] = waiting[i].saturating_add(1);
        }
    }
    let mut wave: Vec<Option<usize>> = vec![None; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut level = vec![0usize; n];
    while let Some(j) = ready.pop() {
        wave[j] = Some(level[j]);
        for &i in &dependents[j] {
            level[i] = level[i].max(level[j] + 1);
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push(i);
            }
        }
    }
    let mut waves: Vec<Vec<&str>> = Vec::new();
    for (i, w) in wave.iter().enumerate() {
        if let Some(w) = *w {
            if waves.len() <= w {
                waves.resize(w + 1, Vec::new());
            }
            waves[w].push(plan.steps[i].id.as_str());
        }
    }
    waves
}

/// Each step's position by id, so looking a dependency up does not scan the plan.
fn step_index(plan: &Plan) -> std::collections::HashMap<&str, usize> {
    plan.steps
        .iter()
        .enumerate()
        .map(|(i, step)| (step.id.as_str(), i))
        .collect()
}

/// The dependency graph as text: waves of steps that can run together, and each step's inputs.
pub fn plan_graph(plan: &Plan, palette: Palette) -> String {
    let mut out = format!("{}\n", palette.bold("Dependency graph:"));
    for (n, wave) in waves(plan).iter().enumerate() {
        let parallel = if wave.len() > 1 { " (in parallel)" } else { "" };
        out.push_str(&format!(
            "  wave {}{parallel}: {}\n",
            n + 1,
            safe(&wave.join(", "))
        ));
    }
    for step in plan.steps.iter().filter(|s| !s.depends_on.is_empty()) {
        out.push_str(&format!(
            "  {} ← {}\n",
            safe(&step.id),
            safe(&step.depends_on.join(", "))
        ));
    }
    out
}

/// The plan as a Mermaid flowchart.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    for (i, step) in plan.steps.iter().enumerate() {
        let label = format!(
            "{}{}",
            step.id,
            step.tool_name
                .as_deref()
                .map(|t| format!(": {t}"))
                .unwrap_or_default()
        );
        let label = safe(&label).replace('"', "#quot;");
        out.push_str(&format!("    s{i}[\"{label}\"]\n"));
    }
    let index = step_index(plan);
    for (i, step) in plan.steps.iter().enumerate() {
        for dep in &step.depends_on {
            if let Some(j) = index.get(dep.as_str()) {
                out.push_str(&format!("    s{j} --> s{i}\n"));
            }
        }
    }
    out
}

/// The plan as a Graphviz digraph.
pub fn dot(plan: &Plan) -> String {
    let quote = |s: &str| {
        let s = safe(s);
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let mut out = String::from("digraph plan {\n    rankdir=LR;\n");
    for step in &plan.steps {
        let label = match &step.tool_name {
            Some(tool) => format!("{}\\n{tool}", step.id),
            None => step.id.clone(),
        };
        out.push_str(&format!(
            "    {} [label={}];\n",
            quote(&step.id),
            quote(&label).replace("\\\\n", "\\n")
        ));
    }
    for step in &plan.steps {
        for dep in &step.depends_on {
            out.push_str(&format!("    {} -> {};\n", quote(dep), quote(&step.id)));
        }
    }
    out.push_str("}\n");
    out
}

/// A budget's limits: `$0.500, 200000 tokens, 40 model calls, 10m (unpriced models refused)`.
pub fn budget_limits(budget: &Budget) -> String {
    let mut limits = Vec::new();
    if let Some(usd) = budget.max_cost_usd {
        limits.push(format!("${usd:.3}"));
        limits.push(match budget.unpriced {
            Unpriced::Refuse => "unpriced models refused".to_owned(),
            Unpriced::Allow => "unpriced models free".to_owned(),
        });
    }
    if let Some(tokens) = budget.max_tokens {
        limits.push(format!("{tokens} tokens"));
    }
    if let Some(calls) = budget.max_llm_calls {
        limits.push(format!("{calls} model calls"));
    }
    if let Some(time) = budget.max_duration {
        limits.push(format!("{} running", agenthelm::duration::written(time)));
    }
    limits.join(", ")
}

/// One line of live progress for an event, or `None` for events not worth a line.
pub fn progress_line(event: &Event, palette: Palette) -> Option<String> {
    let step = safe(event.step_id.as_deref().unwrap_or("-"));
    progress_text(event, &step, palette)
}

/// [`progress_line`] with the event's step id already made safe.
fn progress_text(event: &Event, step: &str, palette: Palette) -> Option<String> {
    let line = match &event.kind {
        EventKind::RunStarted { steps, .. } => format!("Running {steps} steps"),
        EventKind::StepStarted { direct_tool } => match direct_tool {
            Some(tool) => format!("  ▶ {step} started (tool {})", safe(tool)),
            None => format!(
                "  ▶ {step} started (agent {})",
                safe(event.agent.as_deref().unwrap_or("-"))
            ),
        },
        EventKind::StepFinished {
            status,
            duration_ms,
            error,
            ..
        } => {
            let mark = match status {
                StepStatus::Completed => palette.ok("✔"),
                StepStatus::Failed => palette.bad("✘"),
                _ => palette.warn("•"),
            };
            let error = error
                .as_deref()
                .map(|e| format!(": {}", shorten(e, 200)))
                .unwrap_or_default();
            format!(
                "  {mark} {step} {} in {}{error}",
                palette.status(*status),
                millis(*duration_ms)
            )
        }
        EventKind::BudgetExceeded { message, .. } => {
            palette.bad(&format!("  ■ {}: stopping", safe(message)))
        }
        // After a Ctrl-C with nothing to undo there is no rollback to announce.
        EventKind::RollbackStarted { steps } if steps.is_empty() => return None,
        EventKind::RollbackStarted { steps } => {
            palette.warn(&format!("  ↺ rolling back: {}", safe(&steps.join(", "))))
        }
        EventKind::CompensationFinished {
            tool,
            success,
            error,
            ..
        } => match (success, error) {
            (true, _) => format!("  ↺ {step} undone with {}", safe(tool)),
            (false, error) => palette.bad(&format!(
                "  ↺ {step} could NOT be undone with {}: {}",
                safe(tool),
                safe(error.as_deref().unwrap_or("failed"))
            )),
        },
        EventKind::ToolCall {
            tool,
            args,
            error,
            purpose: CallPurpose::Execute,
            ..
        } => {
            let outcome = match error {
                Some(e) => palette.bad(&format!(" → error: {}", shorten(e, 120))),
                None => String::new(),
            };
            format!("    · {}({}){outcome}", safe(tool), short_json(args, 80))
        }
        EventKind::RateLimitWait {
            model,
            limit,
            wait_ms,
        } => {
            let which = match limit {
                RateLimitCause::Service => "the service's rate limit".to_owned(),
                other => format!("the {} rate limit", other.as_str()),
            };
            palette.dim(&format!(
                "    ⏳ {step} waits {} for {which} of {}",
                millis(*wait_ms),
                safe(model)
            ))
        }
        EventKind::Approval {
            tool,
            approved: false,
            reason,
            ..
        } => palette.warn(&format!(
            "    · {} not approved{}",
            safe(tool),
            reason
                .as_deref()
                .map(|r| format!(": {}", safe(r)))
                .unwrap_or_default()
        )),
        _ => return None,
    };
    Some(line)
}

/// A duration for people: `850ms`, `2.35s`.
pub fn millis(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Tokens and cost, for the end of a run.
pub fn usage_line(usage: &Usage) -> String {
    let cost = if usage.cost_incomplete() {
        format!(
            "${:.6} (+{} calls with unknown price)",
            usage.cost_usd, usage.unpriced_calls
        )
    } else {
        format!("${:.6}", usage.cost_usd)
    };
    format!(
        "tokens: {} in, {} out; cost: {cost}",
        usage.tokens.input_tokens, usage.tokens.output_tokens
    )
}

/// The summary after a plan run: each step, what was undone and what could not be. The run's
/// error is not repeated here: the command ends with it.
pub fn summary(plan: &Plan, result: &RunResult, palette: Palette) -> String {
    let mut table = table(palette);
    table.set_header(["step", "status", "duration", "error"]);
    for outcome in &result.steps {
        table.add_row([
            safe(&outcome.id),
            palette.status(outcome.status),
            millis(outcome.duration_ms),
            outcome
                .error
                .as_deref()
                .map(|e| shorten(e, 80))
                .unwrap_or_default(),
        ]);
    }
    let mut out = format!("{table}\n");
    if let Some(rollback) = &result.rollback {
        if !rollback.compensated.is_empty() {
            out.push_str(&format!(
                "Rolled back: {}\n",
                safe(&rollback.compensated.join(", "))
            ));
        }
        if !rollback.nothing_to_undo.is_empty() {
            out.push_str(&format!(
                "Nothing to undo: {}\n",
                safe(&rollback.nothing_to_undo.join(", "))
            ));
        }
        for failure in &rollback.failed {
            out.push_str(&palette.bad(&format!(
                "Could not undo: {} ({} failed: {})\n",
                safe(&failure.step),
                safe(&failure.tool),
                safe(&failure.error)
            )));
        }
    }
    let verdict = if result.success {
        palette.ok(&format!("Plan succeeded: {}", safe(&plan.goal)))
    } else {
        // Why it failed is the command's closing `error:` line; saying it here too repeated it.
        palette.bad("Plan failed")
    };
    out.push_str(&format!("{verdict}\n{}\n", usage_line(&result.usage())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_palettes_own_colours_survive_cleaning_and_nothing_else_does() {
        let on = Palette { on: true };
        for painted in [
            on.ok("x"),
            on.bad("x"),
            on.warn("x"),
            on.dim("x"),
            on.bold("x"),
        ] {
            assert!(painted.contains('\x1b'), "{painted:?}");
            assert_eq!(on.clean(&painted), painted);
            assert!(!Palette { on: false }.clean(&painted).contains('\x1b'));
        }
        assert_eq!(on.clean("\x1b[2J"), "\\x1b[2J");
    }

    #[test]
    fn shortening_counts_the_escaped_text() {
        assert_eq!(shorten("\x1b[2Jabc", 6), "\\x1b[…");
        assert!(!shorten("ab\x1b]0;t\x07", 4).contains(['\x1b', '\x07']));
    }

    #[test]
    fn an_empty_rollback_is_not_announced() {
        let event = |steps: Vec<String>| Event {
            timestamp_ms: 0,
            run_id: None,
            step_id: None,
            agent: None,
            kind: EventKind::RollbackStarted { steps },
        };
        let off = Palette { on: false };
        assert_eq!(progress_line(&event(vec![]), off), None);
        assert_eq!(
            progress_line(&event(vec!["a".into()]), off).as_deref(),
            Some("  ↺ rolling back: a")
        );
    }

    #[test]
    fn waves_of_a_chain_listed_backwards_are_one_step_each() {
        let mut plan = Plan::new("g");
        for i in (0..5).rev() {
            let mut step = agenthelm::PlanStep::new(format!("s{i}"), "");
            if i > 0 {
                step.depends_on = vec![format!("s{}", i - 1)];
            }
            plan.steps.push(step);
        }
        let expected: Vec<Vec<String>> = (0..5).map(|i| vec![format!("s{i}")]).collect();
        assert_eq!(waves(&plan), expected);
    }
}
