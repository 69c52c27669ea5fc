//! `agenthelm traces list|show|filter|export`: tool calls and LLM calls kept in the store.
//!
//! Every run is replayed into its [`RunState`], and its traces are the state's call records.
//! A trace's id is `RUN_ID/N`: the run it belongs to and the record's `seq`, the position (from
//! 1) of its event in that run's journal. Journals only grow, so the id never changes.

use agenthelm::store::RunStore;
use agenthelm::trace::{ApprovalRecord, CallPurpose, LlmCallRecord, ToolCallRecord};
use agenthelm::RunState;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

use super::Session;
use crate::cli::{ExportFormat, TraceFilterArgs, TraceStatus, TracesAction, TracesArgs};
use crate::exit::BadInput;
use crate::render::{self, Palette};
use agenthelm_workspace::timestamp::{format_ms, now_ms, parse_time};

/// Runs `agenthelm traces`.
pub fn run(session: &Session, args: &TracesArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let store = agenthelm_workspace::open_store(&workspace)?.store;
    match &args.action {
        TracesAction::List { limit, json } => {
            let traces = collect(store.as_ref(), None, &Conditions::default(), Some(*limit))?;
            print_list(&traces, *json)
        }
        TracesAction::Filter {
            filter,
            limit,
            json,
        } => {
            let conditions = Conditions::from_args(filter, now_ms())?;
            let traces = collect(store.as_ref(), filter.run.as_deref(), &conditions, *limit)?;
            print_list(&traces, *json)
        }
        TracesAction::Show { id, json } => {
            let (run_id, seq) = parse_id(id)?;
            let run = load_one(store.as_ref(), run_id, Detail::Full)?;
            let (trace, call) = Trace::at(&run, seq).ok_or_else(|| {
                BadInput(format!(
                    "no trace `{id}`: event {seq} of run {run_id} is not a tool call or LLM call"
                ))
            })?;
            if *json {
                crate::out::json(&trace)?;
            } else {
                crate::out::line(&details(&trace, call))?;
            }
            Ok(())
        }
        TracesAction::Export {
            output,
            format,
            filter,
        } => {
            let conditions = Conditions::from_args(filter, now_ms())?;
            let traces = collect(store.as_ref(), filter.run.as_deref(), &conditions, None)?;
            let text = match format {
                ExportFormat::Json => serde_json::to_string_pretty(&traces)? + "\n",
                ExportFormat::Csv => csv(&traces),
                ExportFormat::Md => markdown(&traces),
            };
            crate::out::private_file(output, text.as_bytes())?;
            crate::out::note(&format!(
                "Wrote {} traces to {}",
                traces.len(),
                output.display()
            ));
            Ok(())
        }
    }
}

/// A stored run, replayed.
struct Run {
    id: String,
    state: RunState,
}

/// The ids of the runs to read traces from: `only` that one, else every run in the store.
fn run_ids(store: &dyn RunStore, only: Option<&str>) -> anyhow::Result<Vec<String>> {
    Ok(match only {
        Some(run) => vec![run.to_owned()],
        None => store
            .list_runs(usize::MAX)
            .map_err(crate::exit::read_error)?
            .into_iter()
            .map(|r| r.run_id)
            .collect(),
    })
}

/// How much of a run to read: listings show no arguments or outputs, so they read the
/// outline ([`RunStore::load_run_outline`]).
#[derive(Debug, Clone, Copy)]
enum Detail {
    Full,
    Outline,
}

fn load_one(store: &dyn RunStore, run_id: &str, detail: Detail) -> anyhow::Result<Run> {
    let stored = match detail {
        Detail::Full => store.load_run(run_id),
        Detail::Outline => store.load_run_outline(run_id),
    }
    .map_err(crate::exit::read_error)?;
    Ok(Run {
        id: run_id.to_owned(),
        state: RunState::replay(&stored.plan, &stored.events),
    })
}

/// The call a trace is.
#[derive(Debug, Clone, Copy)]
enum Call<'s> {
    Tool(&'s ToolCallRecord),
    Llm(&'s LlmCallRecord),
}

/// One tool call or LLM call, as shown and exported: a view of a record of a run's state.
/// It owns its fields (no arguments or outputs), so a listing keeps only its rows and not the
/// runs they came from.
#[derive(Debug, Serialize)]
struct Trace {
    id: String,
    time: String,
    /// `tool_call` or `llm_call`.
    kind: &'static str,
    /// The tool, or the model for an LLM call.
    name: String,
    run_id: String,
    step_id: Option<String>,
    agent: Option<String>,
    success: bool,
    duration_ms: f64,
    /// `execute` or `compensate` for tool calls.
    purpose: Option<&'static str>,
    error: Option<String>,
    /// For a tool call that needed approval: `approve`, `edit` or `deny`.
    approval: Option<&'static str>,
    /// Who decided on it (none for an approval handler that does not say).
    approved_by: Option<String>,
    #[serde(skip)]
    seq: usize,
    #[serde(skip)]
    at_ms: u64,
}

impl Trace {
    fn of(run: &Run, call: Call<'_>) -> Trace {
        let (seq, step, agent, at_ms, error) = match call {
            Call::Tool(c) => (c.seq, c.step, &c.agent, c.at_ms, &c.error),
            Call::Llm(c) => (c.seq, c.step, &c.agent, c.at_ms, &c.error),
        };
        let (kind, name, duration_ms, purpose) = match call {
            Call::Tool(c) => (
                "tool_call",
                c.tool.as_str(),
                c.duration_ms,
                Some(match c.purpose {
                    CallPurpose::Execute => "execute",
                    CallPurpose::Compensate => "compensate",
                }),
            ),
            Call::Llm(c) => ("llm_call", c.model.as_str(), c.latency_ms, None),
        };
        let approval = match call {
            Call::Tool(c) => run.state.approval_of(c),
            Call::Llm(_) => None,
        };
        Trace {
            id: format!("{}/{seq}", run.id),
            time: format_ms(at_ms),
            kind,
            name: name.to_owned(),
            run_id: run.id.clone(),
            step_id: step
                .and_then(|i| run.state.steps().get(i))
                .map(|s| s.id.to_string()),
            agent: agent.as_deref().map(str::to_owned),
            success: error.is_none(),
            duration_ms,
            purpose,
            error: error.clone(),
            approval: approval.map(ApprovalRecord::verdict),
            approved_by: approval.and_then(|a| a.by.clone()),
            seq,
            at_ms,
        }
    }

    /// Every call of `run`.
    fn calls(run: &Run) -> impl Iterator<Item = Call<'_>> {
        let tools = run.state.tool_calls().iter().map(Call::Tool);
        let llms = run.state.llm_calls().iter().map(Call::Llm);
        tools.chain(llms)
    }

    /// The call of `run` whose event is the `seq`th of its journal, with its trace.
    fn at(run: &Run, seq: usize) -> Option<(Trace, Call<'_>)> {
        let call = match run.state.tool_call_at(seq) {
            Some(c) => Call::Tool(c),
            None => Call::Llm(run.state.llm_call_at(seq)?),
        };
        Some((Trace::of(run, call), call))
    }

    /// Newest first; ties by run and position, so the order is the same every time.
    fn newest_first(a: &Trace, b: &Trace) -> std::cmp::Ordering {
        (b.at_ms, &b.run_id, b.seq).cmp(&(a.at_ms, &a.run_id, a.seq))
    }
}

/// The conditions of `traces filter` (the run is chosen by [`load`]).
#[derive(Debug, Default)]
struct Conditions {
    /// A tool or a model.
    name: Option<String>,
    agent: Option<String>,
    approved_by: Option<String>,
    success: Option<bool>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    min_duration_ms: Option<f64>,
    max_duration_ms: Option<f64>,
}

impl Conditions {
    fn from_args(args: &TraceFilterArgs, now_ms: u64) -> anyhow::Result<Conditions> {
        let time = |flag: &str, value: &Option<String>| -> anyhow::Result<Option<u64>> {
            value
                .as_deref()
                .map(|v| parse_time(v, now_ms).map_err(|e| BadInput(format!("{flag}: {e}")).into()))
                .transpose()
        };
        for (flag, value) in [("--min-time", args.min_time), ("--max-time", args.max_time)] {
            if value.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(BadInput(format!(
                    "{flag}: must be a number of milliseconds, 0 or more"
                ))
                .into());
            }
        }
        Ok(Conditions {
            name: args.tool.clone(),
            agent: args.agent.clone(),
            approved_by: args.approved_by.clone(),
            success: args.status.map(|s| s == TraceStatus::Success),
            since_ms: time("--since", &args.since)?,
            until_ms: time("--until", &args.until)?,
            min_duration_ms: args.min_time,
            max_duration_ms: args.max_time,
        })
    }

    fn matches(&self, trace: &Trace) -> bool {
        let d = trace.duration_ms;
        self.name.as_deref().is_none_or(|name| trace.name == name)
            && self
                .agent
                .as_deref()
                .is_none_or(|a| trace.agent.as_deref() == Some(a))
            && self
                .approved_by
                .as_deref()
                .is_none_or(|by| trace.approved_by.as_deref() == Some(by))
            && self.success.is_none_or(|s| trace.success == s)
            && self.since_ms.is_none_or(|t| trace.at_ms >= t)
            && self.until_ms.is_none_or(|t| trace.at_ms <= t)
            && self.min_duration_ms.is_none_or(|m| d >= m)
            && self.max_duration_ms.is_none_or(|m| d <= m)
    }
}

/// The traces that match, newest first, at most `limit`, from run `only` or every run. One run
/// is loaded at a time and only the rows kept so far stay in memory: listing does not hold every
/// run's journal (with every tool output) at once.
fn collect(
    store: &dyn RunStore,
    only: Option<&str>,
    conditions: &Conditions,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Trace>> {
    let mut kept: Vec<Trace> = Vec::new();
    for run_id in run_ids(store, only)? {
        let run = load_one(store, &run_id, Detail::Outline)?;
        let matching = Trace::calls(&run)
            .map(|call| Trace::of(&run, call))
            .filter(|trace| conditions.matches(trace));
        kept.extend(matching);
        if limit.is_some_and(|limit| kept.len() > limit) {
            keep_newest(&mut kept, limit);
        }
    }
    keep_newest(&mut kept, limit);
    Ok(kept)
}

/// Sorts `traces` newest first and drops all but the `limit` newest.
fn keep_newest(traces: &mut Vec<Trace>, limit: Option<usize>) {
    traces.sort_by(Trace::newest_first);
    if let Some(limit) = limit {
        traces.truncate(limit);
    }
}

/// The run id and `seq` of a trace id `RUN_ID/N`.
fn parse_id(id: &str) -> anyhow::Result<(&str, usize)> {
    let bad = || {
        BadInput(format!(
            "`{id}` is not a trace id: they look like RUN_ID/N (see `agenthelm traces list`)"
        ))
    };
    let (run_id, n) = id.rsplit_once('/').ok_or_else(bad)?;
    let n: usize = n.parse().map_err(|_| bad())?;
    Ok((run_id, n))
}

fn print_list(traces: &[Trace], json: bool) -> anyhow::Result<()> {
    if json {
        crate::out::json(&traces)?;
        return Ok(());
    }
    if traces.is_empty() {
        crate::out::line("No traces match.")?;
        return Ok(());
    }
    let palette = Palette::stdout();
    let mut table = render::table(palette);
    table.set_header([
        "id", "time", "call", "step", "status", "duration", "decision",
    ]);
    for trace in traces {
        let call = match trace.purpose {
            Some("compensate") => format!("{} (undo)", render::safe(&trace.name)),
            Some(_) => render::safe(&trace.name),
            None => format!("llm {}", render::safe(&trace.name)),
        };
        let status = if trace.success {
            palette.ok("success")
        } else {
            palette.bad("failed")
        };
        table.add_row([
            render::safe(&trace.id),
            trace.time.clone(),
            call,
            render::safe(trace.step_id.as_deref().unwrap_or_default()),
            status,
            render::millis(trace.duration_ms),
            match (trace.approval, &trace.approved_by) {
                (Some(verdict), Some(by)) => format!("{verdict} by {}", render::safe(by)),
                (Some(verdict), None) => verdict.to_owned(),
                (None, _) => String::new(),
            },
        ]);
    }
    crate::out::line(&table.to_string())?;
    Ok(())
}

/// Everything about one trace, for people.
fn details(trace: &Trace, call: Call<'_>) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<10} {}", render::safe(&value));
    };
    field("id", trace.id.clone());
    field("time", trace.time.clone());
    field("kind", trace.kind.to_owned());
    field("run", trace.run_id.clone());
    if let Some(step) = &trace.step_id {
        field("step", step.clone());
    }
    if let Some(agent) = &trace.agent {
        field("agent", agent.clone());
    }
    field(
        "status",
        if trace.success { "success" } else { "failed" }.to_owned(),
    );
    field("duration", render::millis(trace.duration_ms));
    match call {
        Call::Tool(call) => {
            field("tool", call.tool.clone());
            field("call id", call.call_id.clone());
            field("purpose", format!("{:?}", call.purpose).to_lowercase());
            field("attempts", call.attempts.to_string());
            if let Some(approval) = trace.approval {
                let by = trace
                    .approved_by
                    .as_deref()
                    .unwrap_or("the approval handler");
                field("approval", format!("{approval} by {by}"));
            }
            field("args", call.args.to_string());
            if let Some(output) = &call.output {
                field("output", pretty(output));
            }
        }
        Call::Llm(call) => {
            field("model", call.model.clone());
            field(
                "tokens",
                format!(
                    "{} in, {} out",
                    call.tokens.input_tokens, call.tokens.output_tokens
                ),
            );
            field(
                "cost",
                call.cost_usd
                    .map_or("unknown".to_owned(), |c| format!("${c:.6}")),
            );
            field("tool calls", call.tool_calls.to_string());
        }
    }
    if let Some(error) = &trace.error {
        field("error", error.clone());
    }
    out
}

fn pretty(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

const COLUMNS: [&str; 12] = [
    "id",
    "time",
    "kind",
    "name",
    "run_id",
    "step_id",
    "agent",
    "status",
    "duration_ms",
    "error",
    "approval",
    "approved_by",
];

fn row(trace: &Trace) -> [String; 12] {
    [
        trace.id.clone(),
        trace.time.clone(),
        trace.kind.to_owned(),
        trace.name.clone(),
        trace.run_id.clone(),
        trace.step_id.clone().unwrap_or_default(),
        trace.agent.clone().unwrap_or_default(),
        if trace.success { "success" } else { "failed" }.to_owned(),
        format!("{:.3}", trace.duration_ms),
        trace.error.clone().unwrap_or_default(),
        trace.approval.unwrap_or_default().to_owned(),
        trace.approved_by.clone().unwrap_or_default(),
    ]
}

/// RFC 4180: fields with commas, quotes or line breaks are quoted, quotes doubled. A field that
/// a spreadsheet would take for a formula is defused first ([`defuse_formula`]).
fn csv(traces: &[Trace]) -> String {
    let quote = |field: &str| {
        let field = defuse_formula(field);
        if field.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field
        }
    };
    let mut out = COLUMNS.join(",") + "\n";
    for trace in traces {
        let fields: Vec<String> = row(trace).iter().map(|f| quote(f)).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// `field` with a `'` in front when it starts like a spreadsheet formula (`=`, `+`, `-`, `@`, tab
/// or carriage return), as OWASP advises against CSV injection: a step id `=1+1` or an error
/// `=HYPERLINK(...)` stays text when the export is opened.
fn defuse_formula(field: &str) -> String {
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    }
}

/// A Markdown table; pipes and line breaks in fields are escaped so a row stays a row.
fn markdown(traces: &[Trace]) -> String {
    let cell = |field: &str| field.replace('|', "\\|").replace(['\n', '\r'], " ");
    let mut out = format!(
        "| {} |\n|{}\n",
        COLUMNS.join(" | "),
        "---|".repeat(COLUMNS.len())
    );
    for trace in traces {
        let fields: Vec<String> = row(trace).iter().map(|f| cell(f)).collect();
        let _ = writeln!(out, "| {} |", fields.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{defuse_formula, keep_newest, Trace};

    fn trace(run_id: &str, at_ms: u64, seq: usize) -> Trace {
        Trace {
            id: format!("{run_id}/{seq}"),
            time: String::new(),
            kind: "tool_call",
            name: "t".into(),
            run_id: run_id.into(),
            step_id: None,
            agent: None,
            success: true,
            duration_ms: 0.0,
            purpose: None,
            error: None,
            approval: None,
            approved_by: None,
            seq,
            at_ms,
        }
    }

    #[test]
    fn only_the_newest_rows_are_kept() {
        let mut kept = vec![
            trace("a", 1, 1),
            trace("b", 3, 1),
            trace("a", 3, 2),
            trace("b", 2, 2),
        ];
        keep_newest(&mut kept, Some(2));
        let ids: Vec<&str> = kept.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["b/1", "a/2"]);
        keep_newest(&mut kept, None);
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn formulas_are_defused_and_other_text_is_kept() {
        for formula in [
            "=1+1",
            "+1",
            "-1",
            "@SUM(A1)",
            "\tx",
            "\rx",
            "=HYPERLINK(\"x\")",
        ] {
            assert_eq!(defuse_formula(formula), format!("'{formula}"));
        }
        for text in ["a=1", "step", "", "12.5", "'quoted"] {
            assert_eq!(defuse_formula(text), text);
        }
    }
}
