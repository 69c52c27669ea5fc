//! `agenthelm traces list|show|filter|export`: tool calls and LLM calls kept in the store.
//!
//! A trace's id is `RUN_ID/N`: the run it belongs to and the event's position (from 1) in that
//! run's journal. Journals only grow, so the id never changes.

use agenthelm::store::{EventFilter, RunStore};
use agenthelm::trace::CallPurpose;
use agenthelm::{Event, EventKind};
use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

use super::Session;
use crate::cli::{ExportFormat, TraceFilterArgs, TraceStatus, TracesAction, TracesArgs};
use crate::exit::BadInput;
use crate::render::{self, Palette};
use crate::timestamp::{format_ms, now_ms, parse_time};

/// Runs `agenthelm traces`.
pub fn run(session: &Session, args: &TracesArgs) -> anyhow::Result<()> {
    let workspace = session.workspace(None)?;
    let store = agenthelm_workspace::open_store(&workspace)?.store;
    match &args.action {
        TracesAction::List { limit, json } => {
            let traces = collect(store.as_ref(), &Conditions::default(), Some(*limit))?;
            print_list(&traces, *json)
        }
        TracesAction::Filter {
            filter,
            limit,
            json,
        } => {
            let conditions = Conditions::from_args(filter, now_ms())?;
            let traces = collect(store.as_ref(), &conditions, *limit)?;
            print_list(&traces, *json)
        }
        TracesAction::Show { id, json } => {
            let trace = find(store.as_ref(), id)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&trace)?);
            } else {
                print!("{}", details(&trace));
            }
            Ok(())
        }
        TracesAction::Export {
            output,
            format,
            filter,
        } => {
            let conditions = Conditions::from_args(filter, now_ms())?;
            let traces = collect(store.as_ref(), &conditions, None)?;
            let text = match format {
                ExportFormat::Json => serde_json::to_string_pretty(&traces)? + "\n",
                ExportFormat::Csv => csv(&traces),
                ExportFormat::Md => markdown(&traces),
            };
            std::fs::write(output, text)
                .with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!("Wrote {} traces to {}", traces.len(), output.display());
            Ok(())
        }
    }
}

/// One tool call or LLM call, as shown and exported.
#[derive(Debug, Serialize)]
pub struct Trace {
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
    #[serde(skip)]
    event: Event,
}

impl Trace {
    fn of(run_id: &str, position: usize, event: &Event) -> Option<Trace> {
        let (name, purpose, error) = match &event.kind {
            EventKind::ToolCall {
                tool,
                purpose,
                error,
                ..
            } => (
                tool.clone(),
                Some(match purpose {
                    CallPurpose::Execute => "execute",
                    CallPurpose::Compensate => "compensate",
                }),
                error.clone(),
            ),
            EventKind::LlmCall { model, error, .. } => (model.clone(), None, error.clone()),
            _ => return None,
        };
        Some(Trace {
            id: format!("{run_id}/{position}"),
            time: format_ms(event.timestamp_ms),
            kind: event.kind.name(),
            name,
            run_id: run_id.to_owned(),
            step_id: event.step_id.as_deref().map(str::to_owned),
            agent: event.agent.as_deref().map(str::to_owned),
            success: error.is_none(),
            duration_ms: event.kind.duration_ms().unwrap_or(0.0),
            purpose,
            error,
            event: event.clone(),
        })
    }
}

/// The conditions of `traces filter`: the library's filter, and a name that matches a tool or
/// a model.
#[derive(Debug, Default)]
struct Conditions {
    filter: EventFilter,
    name: Option<String>,
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
        let filter = EventFilter {
            run_id: args.run.clone(),
            agent: args.agent.clone(),
            success: args.status.map(|s| s == TraceStatus::Success),
            since_ms: time("--since", &args.since)?,
            until_ms: time("--until", &args.until)?,
            min_duration_ms: args.min_time,
            max_duration_ms: args.max_time,
            ..EventFilter::default()
        };
        Ok(Conditions {
            filter,
            name: args.tool.clone(),
        })
    }

    fn matches(&self, trace: &Trace) -> bool {
        self.filter.matches(&trace.event)
            && self.name.as_deref().is_none_or(|name| trace.name == name)
    }
}

/// Matching traces, newest first, at most `limit`.
fn collect(
    store: &dyn RunStore,
    conditions: &Conditions,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Trace>> {
    let run_ids: Vec<String> = match &conditions.filter.run_id {
        Some(run) => vec![run.clone()],
        None => store
            .list_runs(usize::MAX)
            .map_err(crate::exit::read_error)?
            .into_iter()
            .map(|r| r.run_id)
            .collect(),
    };
    let mut traces = Vec::new();
    for run_id in run_ids {
        let stored = store.load_run(&run_id).map_err(crate::exit::read_error)?;
        traces.extend(
            stored
                .events
                .iter()
                .enumerate()
                .filter_map(|(i, event)| Trace::of(&run_id, i + 1, event))
                .filter(|trace| conditions.matches(trace)),
        );
    }
    traces.sort_by(|a, b| {
        (b.event.timestamp_ms, &b.run_id, position(b)).cmp(&(
            a.event.timestamp_ms,
            &a.run_id,
            position(a),
        ))
    });
    if let Some(limit) = limit {
        traces.truncate(limit);
    }
    Ok(traces)
}

fn position(trace: &Trace) -> usize {
    trace
        .id
        .rsplit_once('/')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// The trace with id `RUN_ID/N`.
fn find(store: &dyn RunStore, id: &str) -> anyhow::Result<Trace> {
    let bad = || {
        BadInput(format!(
            "`{id}` is not a trace id: they look like RUN_ID/N (see `agenthelm traces list`)"
        ))
    };
    let (run_id, n) = id.rsplit_once('/').ok_or_else(bad)?;
    let n: usize = n.parse().map_err(|_| bad())?;
    let stored = store.load_run(run_id).map_err(crate::exit::read_error)?;
    n.checked_sub(1)
        .and_then(|i| stored.events.get(i))
        .and_then(|event| Trace::of(run_id, n, event))
        .ok_or_else(|| {
            BadInput(format!(
                "no trace `{id}`: event {n} of run {run_id} is not a tool call or LLM call"
            ))
            .into()
        })
}

fn print_list(traces: &[Trace], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(traces)?);
        return Ok(());
    }
    if traces.is_empty() {
        println!("No traces match.");
        return Ok(());
    }
    let palette = Palette::stdout();
    let mut table = render::table(palette);
    table.set_header(["id", "time", "call", "step", "status", "duration"]);
    for trace in traces {
        let call = match trace.purpose {
            Some("compensate") => format!("{} (undo)", trace.name),
            Some(_) => trace.name.clone(),
            None => format!("llm {}", trace.name),
        };
        let status = if trace.success {
            palette.ok("success")
        } else {
            palette.bad("failed")
        };
        table.add_row([
            trace.id.clone(),
            trace.time.clone(),
            call,
            trace.step_id.clone().unwrap_or_default(),
            status,
            render::millis(trace.duration_ms),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Everything about one trace, for people.
fn details(trace: &Trace) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<10} {value}");
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
    match &trace.event.kind {
        EventKind::ToolCall {
            call_id,
            tool,
            args,
            output,
            attempts,
            purpose,
            ..
        } => {
            field("tool", tool.clone());
            field("call id", call_id.clone());
            field("purpose", format!("{purpose:?}").to_lowercase());
            field("attempts", attempts.to_string());
            field("args", args.to_string());
            if let Some(output) = output {
                field("output", pretty(output));
            }
        }
        EventKind::LlmCall {
            model,
            usage,
            cost_usd,
            tool_calls,
            ..
        } => {
            field("model", model.clone());
            field(
                "tokens",
                format!("{} in, {} out", usage.input_tokens, usage.output_tokens),
            );
            field(
                "cost",
                cost_usd.map_or("unknown".to_owned(), |c| format!("${c:.6}")),
            );
            field("tool calls", tool_calls.to_string());
        }
        _ => {}
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

const COLUMNS: [&str; 10] = [
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
];

fn row(trace: &Trace) -> [String; 10] {
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
    ]
}

/// RFC 4180: fields with commas, quotes or line breaks are quoted, quotes doubled.
fn csv(traces: &[Trace]) -> String {
    let quote = |field: &str| {
        if field.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field.to_owned()
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
