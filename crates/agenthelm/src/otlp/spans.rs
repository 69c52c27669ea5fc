//! A run's events as spans: one trace per run, a span per step attempt, call and compensation.

use std::collections::HashMap;

use super::wire::{
    nanos, nanos_before, span_id_of, trace_id_of, AttributeValue, Span, SpanKind, SpanStatus,
};
use crate::plan::{Plan, StepStatus};
use crate::trace::{CallPurpose, Event, EventKind, RunState};

/// The spans of the runs in `events` (usually one finished run's events, oldest first): one
/// root span per run, a span per step under it, and a span per LLM call, tool call and
/// compensation under its step. Events of several runs make several traces; events without a
/// run id (a lone agent's) make one trace of their own. Pure: the same events give the same
/// spans, ids included.
///
/// ```
/// use agenthelm::{Event, EventKind, StepStatus};
/// use agenthelm::otlp::spans_of;
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
/// assert_eq!(spans[1].parent_span_id.as_ref(), Some(&spans[0].span_id));
/// ```
pub fn spans_of(events: &[Event]) -> Vec<Span> {
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
    trace_id: String,
    root_id: String,
    /// Every span but the root, in the order they began.
    spans: Vec<Span>,
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
    attributes: Vec<(String, AttributeValue)>,
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
            root_id: span_id_of(&trace_id, "run"),
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

    fn build(mut self, events: &[&'e Event]) -> Vec<Span> {
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
                    .push(("agenthelm.goal".into(), goal.as_str().into()));
                run.attributes
                    .push(("agenthelm.steps".into(), (*steps).into()));
            }
            EventKind::BudgetExceeded { message, .. } => {
                run.attributes
                    .push(("agenthelm.budget.exceeded".into(), message.as_str().into()));
            }
            EventKind::RollbackStarted { steps } => {
                run.attributes
                    .push(("agenthelm.rollback.steps".into(), steps.len().into()));
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
                let index = self.open_compensation(event, *action, tool, nanos(self.last_ms));
                // Until its end is seen, a compensation is in doubt.
                self.spans[index].status = SpanStatus::Error(
                    "the compensation has no end on record: it may or may not have taken effect"
                        .into(),
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
                    None => self.open_compensation(event, *action, tool, 0),
                };
                let span = &mut self.spans[index];
                span.end_unix_nano = nanos(event.timestamp_ms).max(span.start_unix_nano);
                span.attributes
                    .push(("agenthelm.compensation.success".into(), (*success).into()));
                span.status = match (success, error) {
                    (true, _) => SpanStatus::Unset,
                    (false, Some(error)) => SpanStatus::Error(error.clone()),
                    (false, None) => SpanStatus::Error("the compensation failed".into()),
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
        parent: String,
        name: String,
        kind: SpanKind,
        start: u64,
        end: u64,
    ) -> Span {
        Span {
            trace_id: self.trace_id.clone(),
            span_id: span_id_of(&self.trace_id, key),
            parent_span_id: Some(parent),
            name,
            kind,
            start_unix_nano: start,
            end_unix_nano: end.max(start),
            attributes: Vec::new(),
            status: SpanStatus::Unset,
        }
    }

    /// Span id of the latest span of `step`, else the root's.
    fn parent_of(&self, step: Option<&str>) -> String {
        step.and_then(|s| self.steps.get(s)).map_or_else(
            || self.root_id.clone(),
            |&(i, _)| self.spans[i].span_id.clone(),
        )
    }

    /// A new span for step `id` (its first, or a later attempt's), starting at `start`.
    fn open_step(&mut self, event: &Event, id: &str, start: u64) -> usize {
        let attempt = self.steps.get(id).map_or(1, |&(_, n)| n + 1);
        let mut span = self.span(
            &format!("step/{id}#{attempt}"),
            self.root_id.clone(),
            format!("step {id}"),
            SpanKind::Internal,
            start,
            nanos(self.last_ms),
        );
        span.attributes
            .push(("agenthelm.step.id".into(), id.into()));
        if let Some(agent) = event.agent.as_deref() {
            span.attributes
                .push(("gen_ai.agent.name".into(), agent.into()));
        }
        if attempt > 1 {
            span.attributes
                .push(("agenthelm.step.attempt".into(), attempt.into()));
        }
        self.spans.push(span);
        self.steps
            .insert(id.to_owned(), (self.spans.len() - 1, attempt));
        self.spans.len() - 1
    }

    fn step_started(&mut self, event: &Event, id: &str, direct_tool: Option<&str>) {
        let index = self.open_step(event, id, nanos(event.timestamp_ms));
        if let Some(tool) = direct_tool {
            self.spans[index]
                .attributes
                .push(("agenthelm.step.direct_tool".into(), tool.into()));
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
            Some(&(i, _)) if self.spans[i].attribute("agenthelm.step.status").is_none() => i,
            // No start on record (or that span ended already): a span ending here.
            _ => self.open_step(event, id, nanos_before(event.timestamp_ms, duration_ms)),
        };
        let span = &mut self.spans[index];
        span.end_unix_nano = nanos(event.timestamp_ms).max(span.start_unix_nano);
        span.attributes
            .push(("agenthelm.step.status".into(), status.as_str().into()));
        span.attributes
            .push(("agenthelm.duration_ms".into(), duration_ms.into()));
        if status == StepStatus::Failed {
            span.status = SpanStatus::Error(error.unwrap_or("the step failed").to_owned());
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
            nanos_before(event.timestamp_ms, *latency_ms),
            nanos(event.timestamp_ms),
        );
        let attrs = &mut span.attributes;
        attrs.push(("gen_ai.operation.name".into(), "chat".into()));
        if let Some((provider, _)) = model.split_once('/') {
            attrs.push(("gen_ai.provider.name".into(), provider.into()));
        }
        attrs.push(("gen_ai.request.model".into(), model.as_str().into()));
        attrs.push((
            "gen_ai.usage.input_tokens".into(),
            usage.input_tokens.into(),
        ));
        attrs.push((
            "gen_ai.usage.output_tokens".into(),
            usage.output_tokens.into(),
        ));
        if let Some(cost) = cost_usd {
            attrs.push(("agenthelm.cost_usd".into(), (*cost).into()));
        }
        attrs.push(("agenthelm.tool_calls".into(), (*tool_calls).into()));
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
            (CallPurpose::Compensate, Some(&c)) => self.spans[c].span_id.clone(),
            _ => self.parent_of(step),
        };
        let mut span = self.span(
            &format!("tool#{}#{call_id}", self.calls),
            parent,
            format!("execute_tool {tool}"),
            SpanKind::Internal,
            nanos_before(event.timestamp_ms, *duration_ms),
            nanos(event.timestamp_ms),
        );
        let purpose = match purpose {
            CallPurpose::Execute => "execute",
            CallPurpose::Compensate => "compensate",
        };
        let attrs = &mut span.attributes;
        attrs.push(("gen_ai.operation.name".into(), "execute_tool".into()));
        attrs.push(("gen_ai.tool.name".into(), tool.as_str().into()));
        attrs.push(("gen_ai.tool.call.id".into(), call_id.as_str().into()));
        attrs.push(("agenthelm.attempts".into(), u64::from(*attempts).into()));
        attrs.push(("agenthelm.tool.purpose".into(), purpose.into()));
        self.push_call(span, event, error.as_deref());
    }

    /// A new compensation span under the step it undoes, from the event's time to `end`.
    fn open_compensation(&mut self, event: &Event, action: usize, tool: &str, end: u64) -> usize {
        self.calls += 1;
        let mut span = self.span(
            &format!("compensation#{}", self.calls),
            self.parent_of(event.step_id.as_deref()),
            format!("compensate {tool}"),
            SpanKind::Internal,
            nanos(event.timestamp_ms),
            end,
        );
        span.attributes
            .push(("agenthelm.compensation.tool".into(), tool.into()));
        span.attributes
            .push(("agenthelm.compensation.action".into(), action.into()));
        if let Some(id) = event.step_id.as_deref() {
            span.attributes
                .push(("agenthelm.step.id".into(), id.into()));
        }
        self.spans.push(span);
        self.spans.len() - 1
    }

    fn push_call(&mut self, mut span: Span, event: &Event, error: Option<&str>) {
        if let Some(agent) = event.agent.as_deref() {
            span.attributes
                .push(("gen_ai.agent.name".into(), agent.into()));
        }
        if let Some(step) = event.step_id.as_deref() {
            span.attributes
                .push(("agenthelm.step.id".into(), step.into()));
        }
        if let Some(error) = error {
            span.status = SpanStatus::Error(error.to_owned());
        }
        self.spans.push(span);
    }

    /// The root's attributes that total the run, from its state.
    fn run_totals(&self, success: Option<bool>) -> Vec<(String, AttributeValue)> {
        let usage = self.state.usage();
        let mut attributes = Vec::new();
        if let Some(success) = success {
            attributes.push(("agenthelm.run.success".into(), success.into()));
        }
        attributes.push((
            "agenthelm.usage.input_tokens".into(),
            usage.tokens.input_tokens.into(),
        ));
        attributes.push((
            "agenthelm.usage.output_tokens".into(),
            usage.tokens.output_tokens.into(),
        ));
        attributes.push(("agenthelm.cost_usd".into(), usage.cost_usd.into()));
        attributes.push((
            "agenthelm.cost_incomplete".into(),
            usage.cost_incomplete().into(),
        ));
        let resumes = self.state.resumes().len();
        if resumes > 0 {
            attributes.push(("agenthelm.run.resumed".into(), resumes.into()));
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
            attributes.retain(|(key, _)| key != "agenthelm.step.status");
            attributes.push((
                "agenthelm.step.status".into(),
                record.status.as_str().into(),
            ));
            attributes.push((
                "agenthelm.step.attempts".into(),
                u64::from(record.attempts).into(),
            ));
        }
    }

    /// The run's span: from its start (or its earliest child) to its end (or its latest).
    fn root(&mut self) -> Span {
        let run = std::mem::take(&mut self.run);
        let start = self
            .spans
            .iter()
            .map(|s| s.start_unix_nano)
            .chain([nanos(self.state.started_ms().unwrap_or(self.first_ms))])
            .min()
            .unwrap_or(0);
        let end = self
            .spans
            .iter()
            .map(|s| s.end_unix_nano)
            .chain([nanos(
                self.state.end().map_or(self.last_ms, |end| end.at_ms),
            )])
            .max()
            .unwrap_or(start);
        let mut attributes: Vec<(String, AttributeValue)> = Vec::new();
        let name = match (run.run_id, run.agent) {
            (Some(id), _) => {
                attributes.push(("agenthelm.run.id".into(), id.into()));
                "agenthelm.run".to_owned()
            }
            (None, Some(agent)) => {
                attributes.push(("gen_ai.agent.name".into(), agent.into()));
                format!("invoke_agent {agent}")
            }
            (None, None) => "agenthelm.events".to_owned(),
        };
        attributes.extend(run.attributes);
        let success = self.state.end().map(|end| end.success);
        attributes.extend(self.run_totals(success));
        let status = match success {
            Some(false) => SpanStatus::Error(
                self.state
                    .stop_reason()
                    .map_or_else(|| "the run failed".to_owned(), |stop| stop.to_string()),
            ),
            _ => SpanStatus::Unset,
        };
        Span {
            trace_id: self.trace_id.clone(),
            span_id: self.root_id.clone(),
            parent_span_id: None,
            name,
            kind: SpanKind::Internal,
            start_unix_nano: start,
            end_unix_nano: end,
            attributes,
            status,
        }
    }
}
