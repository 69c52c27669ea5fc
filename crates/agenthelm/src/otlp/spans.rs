//! A run's events as spans: one trace per run, a span per step attempt, call and compensation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::ids::{at, before, span_id_of, trace_id_of};
use crate::plan::{Plan, StepStatus};
use crate::trace::{CallPurpose, Event, EventKind, RunState};

/// The value of attribute `key` of `span`, if set (see [`spans_of`] for an example).
pub fn attribute<'s>(span: &'s SpanData, key: &str) -> Option<&'s Value> {
    span.attributes
        .iter()
        .find_map(|kv| (kv.key.as_str() == key).then_some(&kv.value))
}

/// A whole number as an attribute value (OTLP integers are signed 64-bit).
fn int(n: impl TryInto<i64>) -> Value {
    Value::I64(n.try_into().unwrap_or(i64::MAX))
}

fn text(s: &str) -> Value {
    Value::from(s.to_owned())
}

/// The spans of the runs in `events` (usually one finished run's events, oldest first): one
/// root span per run, a span per step under it, and a span per LLM call, tool call and
/// compensation under its step. Events of several runs make several traces; events without a
/// run id (a lone agent's) make one trace of their own. Pure: the same events give the same
/// spans, ids included.
///
/// ```
/// use agenthelm::{Event, EventKind, StepStatus};
/// use agenthelm::otlp::{attribute, spans_of};
/// use std::sync::Arc;
///
/// let event = |step: Option<&str>, kind| Event {
///     timestamp_ms: 1_000,
///     run_id: Some(Arc::from("run-1")),
///     step_id: step.map(Arc::from),
///     agent: None,
///     kind,
/// };
/// let spans = spans_of(&[
///     event(None, EventKind::RunStarted { goal: "demo".into(), steps: 1, budget: None }),
///     event(Some("a"), EventKind::StepStarted { direct_tool: None }),
///     event(Some("a"), EventKind::StepFinished { status: StepStatus::Completed, result: None, result_call: None, duration_ms: 0.0, error: None }),
///     event(None, EventKind::RunFinished { success: true, duration_ms: 0.0 }),
/// ]);
/// assert_eq!(spans.len(), 2);
/// assert_eq!(spans[1].parent_span_id, spans[0].span_context.span_id());
/// assert_eq!(attribute(&spans[1], "agenthelm.step.id"), Some(&"a".to_owned().into()));
/// ```
pub fn spans_of(events: &[Event]) -> Vec<SpanData> {
    let mut runs: Vec<(Option<&str>, Vec<&Event>)> = Vec::new();
    for event in events {
        let run = event.run_id.as_deref();
        match runs.iter_mut().find(|(id, _)| *id == run) {
            Some((_, group)) => group.push(event),
            None => runs.push((run, vec![event])),
        }
    }
    runs.into_iter()
        .flat_map(|(run_id, events)| TraceBuilder::new(run_id, &events).build(&events))
        .collect()
}

/// Builds the spans of one run, reading its events in order.
struct TraceBuilder<'e> {
    trace_id: TraceId,
    root_id: SpanId,
    /// Every span but the root, in the order they began.
    spans: Vec<SpanData>,
    /// Latest span of each step id, and how many spans the step has had (a resumed run may
    /// start a step again).
    steps: HashMap<String, (usize, usize)>,
    /// Open compensation span of each step.
    compensations: HashMap<String, usize>,
    /// Counts spans of calls and compensations, to give each a unique id.
    calls: usize,
    first_ms: u64,
    last_ms: u64,
    run: RunFacts<'e>,
    /// The run's state, built from the same events as the spans: the root's totals and each
    /// step's final status come from it.
    state: RunState,
}

/// What the root span says about the run.
#[derive(Default)]
struct RunFacts<'e> {
    run_id: Option<&'e str>,
    agent: Option<&'e str>,
    attributes: Vec<KeyValue>,
}

impl<'e> TraceBuilder<'e> {
    fn new(run_id: Option<&'e str>, events: &[&'e Event]) -> Self {
        let first_ms = events.iter().map(|e| e.timestamp_ms).min().unwrap_or(0);
        let last_ms = events.iter().map(|e| e.timestamp_ms).max().unwrap_or(0);
        let agent = events.iter().find_map(|e| e.agent.as_deref());
        let key = match run_id {
            Some(id) => id.to_owned(),
            // No run id: name the trace by when and by whom, which is stable for these events.
            None => format!("events-{first_ms}-{}", agent.unwrap_or("")),
        };
        let trace_id = trace_id_of(&key);
        TraceBuilder {
            root_id: span_id_of(trace_id, "run"),
            trace_id,
            spans: Vec::new(),
            steps: HashMap::new(),
            compensations: HashMap::new(),
            calls: 0,
            first_ms,
            last_ms,
            run: RunFacts {
                run_id,
                agent,
                ..RunFacts::default()
            },
            // Without the plan: the steps are those the events name.
            state: RunState::new(&Plan::new(String::new())),
        }
    }

    fn build(mut self, events: &[&'e Event]) -> Vec<SpanData> {
        for event in events {
            self.state.apply(event);
            self.read(event);
        }
        self.settle_steps();
        let mut spans = Vec::with_capacity(self.spans.len() + 1);
        spans.push(self.root());
        spans.extend(self.spans);
        spans
    }

    fn read(&mut self, event: &Event) {
        let step = event.step_id.as_deref();
        let run = &mut self.run;
        match &event.kind {
            EventKind::RunStarted { goal, steps, .. } => {
                run.attributes
                    .push(KeyValue::new("agenthelm.goal", text(goal)));
                run.attributes
                    .push(KeyValue::new("agenthelm.steps", int(*steps)));
            }
            EventKind::BudgetExceeded { message, .. } => {
                run.attributes
                    .push(KeyValue::new("agenthelm.budget.exceeded", text(message)));
            }
            EventKind::RollbackStarted { steps } => {
                run.attributes
                    .push(KeyValue::new("agenthelm.rollback.steps", int(steps.len())));
            }
            EventKind::StepStarted { direct_tool } => {
                if let Some(id) = step {
                    self.step_started(event, id, direct_tool.as_deref());
                }
            }
            EventKind::StepFinished {
                status,
                duration_ms,
                error,
                ..
            } => {
                if let Some(id) = step {
                    self.step_finished(event, id, *status, *duration_ms, error.as_deref());
                }
            }
            EventKind::LlmCall { .. } => self.llm_call(event),
            EventKind::ToolCall { .. } => self.tool_call(event),
            EventKind::CompensationStarted { action, tool, .. } => {
                let index = self.open_compensation(event, *action, tool, at(self.last_ms));
                // Until its end is seen, a compensation is in doubt.
                self.spans[index].status = Status::error(
                    "the compensation has no end on record: it may or may not have taken effect",
                );
                if let Some(id) = step {
                    self.compensations.insert(id.to_owned(), index);
                }
            }
            EventKind::CompensationFinished {
                action,
                tool,
                success,
                error,
            } => {
                let index = match step.and_then(|s| self.compensations.remove(s)) {
                    Some(i) => i,
                    // The end of a compensation whose start is not on record.
                    None => self.open_compensation(event, *action, tool, SystemTime::UNIX_EPOCH),
                };
                let span = &mut self.spans[index];
                span.end_time = at(event.timestamp_ms).max(span.start_time);
                span.attributes
                    .push(KeyValue::new("agenthelm.compensation.success", *success));
                span.status = match (success, error) {
                    (true, _) => Status::Unset,
                    (false, Some(error)) => Status::error(error.clone()),
                    (false, None) => Status::error("the compensation failed"),
                };
            }
            EventKind::RunResumed { .. }
            | EventKind::RunFinished { .. }
            | EventKind::Approval { .. }
            | EventKind::ApprovalRequested { .. }
            | EventKind::Effect { .. }
            | EventKind::PlanSubmitted { .. }
            | EventKind::PlanReviewed { .. }
            | EventKind::RunCancelled { .. }
            | EventKind::RateLimitWait { .. }
            | EventKind::Note { .. } => {}
        }
    }

    fn span(
        &self,
        key: &str,
        parent: SpanId,
        name: String,
        kind: SpanKind,
        start: SystemTime,
        end: SystemTime,
    ) -> SpanData {
        span_data(
            self.trace_id,
            span_id_of(self.trace_id, key),
            parent,
            name,
            kind,
            (start, end.max(start)),
        )
    }

    /// Span id of the latest span of `step`, else the root's.
    fn parent_of(&self, step: Option<&str>) -> SpanId {
        step.and_then(|s| self.steps.get(s))
            .map_or(self.root_id, |&(i, _)| self.spans[i].span_context.span_id())
    }

    /// A new span for step `id` (its first, or a later attempt's), starting at `start`.
    fn open_step(&mut self, event: &Event, id: &str, start: SystemTime) -> usize {
        let attempt = self.steps.get(id).map_or(1, |&(_, n)| n + 1);
        let mut span = self.span(
            &format!("step/{id}#{attempt}"),
            self.root_id,
            format!("step {id}"),
            SpanKind::Internal,
            start,
            at(self.last_ms),
        );
        span.attributes
            .push(KeyValue::new("agenthelm.step.id", text(id)));
        if let Some(agent) = event.agent.as_deref() {
            span.attributes
                .push(KeyValue::new("gen_ai.agent.name", text(agent)));
        }
        if attempt > 1 {
            span.attributes
                .push(KeyValue::new("agenthelm.step.attempt", int(attempt)));
        }
        self.spans.push(span);
        self.steps
            .insert(id.to_owned(), (self.spans.len() - 1, attempt));
        self.spans.len() - 1
    }

    fn step_started(&mut self, event: &Event, id: &str, direct_tool: Option<&str>) {
        let index = self.open_step(event, id, at(event.timestamp_ms));
        if let Some(tool) = direct_tool {
            self.spans[index]
                .attributes
                .push(KeyValue::new("agenthelm.step.direct_tool", text(tool)));
        }
    }

    fn step_finished(
        &mut self,
        event: &Event,
        id: &str,
        status: StepStatus,
        duration_ms: f64,
        error: Option<&str>,
    ) {
        let index = match self.steps.get(id) {
            Some(&(i, _)) if attribute(&self.spans[i], "agenthelm.step.status").is_none() => i,
            // No start on record (or that span ended already): a span ending here.
            _ => self.open_step(event, id, before(event.timestamp_ms, duration_ms)),
        };
        let span = &mut self.spans[index];
        span.end_time = at(event.timestamp_ms).max(span.start_time);
        span.attributes
            .push(KeyValue::new("agenthelm.step.status", status.as_str()));
        span.attributes
            .push(KeyValue::new("agenthelm.duration_ms", duration_ms));
        if status == StepStatus::Failed {
            span.status = Status::error(error.unwrap_or("the step failed").to_owned());
        }
    }

    fn llm_call(&mut self, event: &Event) {
        let EventKind::LlmCall {
            model,
            usage,
            cost_usd,
            latency_ms,
            tool_calls,
            error,
            ..
        } = &event.kind
        else {
            return;
        };
        self.calls += 1;
        let mut span = self.span(
            &format!("llm#{}", self.calls),
            self.parent_of(event.step_id.as_deref()),
            format!("chat {model}"),
            SpanKind::Client,
            before(event.timestamp_ms, *latency_ms),
            at(event.timestamp_ms),
        );
        let attrs = &mut span.attributes;
        attrs.push(KeyValue::new("gen_ai.operation.name", "chat"));
        if let Some((provider, _)) = model.split_once('/') {
            attrs.push(KeyValue::new("gen_ai.provider.name", text(provider)));
        }
        attrs.push(KeyValue::new("gen_ai.request.model", text(model)));
        attrs.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            int(usage.input_tokens),
        ));
        attrs.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            int(usage.output_tokens),
        ));
        if let Some(cost) = cost_usd {
            attrs.push(KeyValue::new("agenthelm.cost_usd", *cost));
        }
        attrs.push(KeyValue::new("agenthelm.tool_calls", int(*tool_calls)));
        self.push_call(span, event, error.as_deref());
    }

    fn tool_call(&mut self, event: &Event) {
        let EventKind::ToolCall {
            call_id,
            tool,
            error,
            attempts,
            duration_ms,
            purpose,
            ..
        } = &event.kind
        else {
            return;
        };
        self.calls += 1;
        let step = event.step_id.as_deref();
        // A compensating call belongs to the compensation that made it.
        let parent = match (purpose, step.and_then(|s| self.compensations.get(s))) {
            (CallPurpose::Compensate, Some(&c)) => self.spans[c].span_context.span_id(),
            _ => self.parent_of(step),
        };
        let mut span = self.span(
            &format!("tool#{}#{call_id}", self.calls),
            parent,
            format!("execute_tool {tool}"),
            SpanKind::Internal,
            before(event.timestamp_ms, *duration_ms),
            at(event.timestamp_ms),
        );
        let purpose = match purpose {
            CallPurpose::Execute => "execute",
            CallPurpose::Compensate => "compensate",
        };
        let attrs = &mut span.attributes;
        attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        attrs.push(KeyValue::new("gen_ai.tool.name", text(tool)));
        attrs.push(KeyValue::new("gen_ai.tool.call.id", text(call_id)));
        attrs.push(KeyValue::new("agenthelm.attempts", int(*attempts)));
        attrs.push(KeyValue::new("agenthelm.tool.purpose", purpose));
        self.push_call(span, event, error.as_deref());
    }

    /// A new compensation span under the step it undoes, from the event's time to `end`.
    fn open_compensation(
        &mut self,
        event: &Event,
        action: usize,
        tool: &str,
        end: SystemTime,
    ) -> usize {
        self.calls += 1;
        let mut span = self.span(
            &format!("compensation#{}", self.calls),
            self.parent_of(event.step_id.as_deref()),
            format!("compensate {tool}"),
            SpanKind::Internal,
            at(event.timestamp_ms),
            end,
        );
        span.attributes
            .push(KeyValue::new("agenthelm.compensation.tool", text(tool)));
        span.attributes
            .push(KeyValue::new("agenthelm.compensation.action", int(action)));
        if let Some(id) = event.step_id.as_deref() {
            span.attributes
                .push(KeyValue::new("agenthelm.step.id", text(id)));
        }
        self.spans.push(span);
        self.spans.len() - 1
    }

    fn push_call(&mut self, mut span: SpanData, event: &Event, error: Option<&str>) {
        if let Some(agent) = event.agent.as_deref() {
            span.attributes
                .push(KeyValue::new("gen_ai.agent.name", text(agent)));
        }
        if let Some(step) = event.step_id.as_deref() {
            span.attributes
                .push(KeyValue::new("agenthelm.step.id", text(step)));
        }
        if let Some(error) = error {
            span.status = Status::error(error.to_owned());
        }
        self.spans.push(span);
    }

    /// The root's attributes that total the run, from its state.
    fn run_totals(&self, success: Option<bool>) -> Vec<KeyValue> {
        let usage = self.state.usage();
        let mut attributes = Vec::new();
        if let Some(success) = success {
            attributes.push(KeyValue::new("agenthelm.run.success", success));
        }
        attributes.push(KeyValue::new(
            "agenthelm.usage.input_tokens",
            int(usage.tokens.input_tokens),
        ));
        attributes.push(KeyValue::new(
            "agenthelm.usage.output_tokens",
            int(usage.tokens.output_tokens),
        ));
        attributes.push(KeyValue::new("agenthelm.cost_usd", usage.cost_usd));
        attributes.push(KeyValue::new(
            "agenthelm.cost_incomplete",
            usage.cost_incomplete(),
        ));
        let resumes = self.state.resumes().len();
        if resumes > 0 {
            attributes.push(KeyValue::new("agenthelm.run.resumed", int(resumes)));
        }
        attributes
    }

    /// Gives each step's latest span the step's final status (a completed step may since have
    /// been compensated, a pending one skipped) and how many times it was started.
    fn settle_steps(&mut self) {
        for record in self.state.steps() {
            let Some(&(index, _)) = self.steps.get(&*record.id) else {
                continue;
            };
            let attributes = &mut self.spans[index].attributes;
            attributes.retain(|kv| kv.key.as_str() != "agenthelm.step.status");
            attributes.push(KeyValue::new(
                "agenthelm.step.status",
                record.status.as_str(),
            ));
            attributes.push(KeyValue::new(
                "agenthelm.step.attempts",
                int(record.attempts),
            ));
        }
    }

    /// The run's span: from its start (or its earliest child) to its end (or its latest).
    fn root(&mut self) -> SpanData {
        let run = std::mem::take(&mut self.run);
        let start = self
            .spans
            .iter()
            .map(|s| s.start_time)
            .chain([at(self.state.started_ms().unwrap_or(self.first_ms))])
            .min()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let end = self
            .spans
            .iter()
            .map(|s| s.end_time)
            .chain([at(self.state.end().map_or(self.last_ms, |end| end.at_ms))])
            .max()
            .unwrap_or(start);
        let mut attributes = Vec::new();
        let name = match (run.run_id, run.agent) {
            (Some(id), _) => {
                attributes.push(KeyValue::new("agenthelm.run.id", text(id)));
                "agenthelm.run".to_owned()
            }
            (None, Some(agent)) => {
                attributes.push(KeyValue::new("gen_ai.agent.name", text(agent)));
                format!("invoke_agent {agent}")
            }
            (None, None) => "agenthelm.events".to_owned(),
        };
        attributes.extend(run.attributes);
        let success = self.state.end().map(|end| end.success);
        attributes.extend(self.run_totals(success));
        let status = match success {
            Some(false) => Status::error(
                self.state
                    .stop_reason()
                    .map_or_else(|| "the run failed".to_owned(), |stop| stop.to_string()),
            ),
            _ => Status::Unset,
        };
        let mut root = span_data(
            self.trace_id,
            self.root_id,
            SpanId::INVALID,
            name,
            SpanKind::Internal,
            (start, end),
        );
        root.attributes = attributes;
        root.status = status;
        root
    }
}

/// A sampled span with no attributes yet, from the `agenthelm` instrumentation scope.
fn span_data(
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    name: String,
    kind: SpanKind,
    (start, end): (SystemTime, SystemTime),
) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: kind,
        name: Cow::Owned(name),
        start_time: start,
        end_time: end,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope(),
    }
}

/// The instrumentation scope of the spans built from a journal.
fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("agenthelm")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}
