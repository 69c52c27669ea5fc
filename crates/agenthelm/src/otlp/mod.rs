//! OpenTelemetry export: a finished run's events as spans, sent over OTLP/HTTP with the JSON
//! encoding (`POST {endpoint}/v1/traces`, `Content-Type: application/json`).
//!
//! One trace per run, its id derived from the run id (the same run always lands in the same
//! trace, so exporting a run twice updates rather than duplicates it in most back ends):
//!
//! ```text
//! run                         agenthelm.run
//! ├── step                    step <id>
//! │   ├── LLM call            chat <model>          gen_ai.* attributes, tokens
//! │   ├── tool call           execute_tool <tool>
//! │   └── compensation        compensate <tool>
//! │       └── tool call       execute_tool <tool>   (the compensating call)
//! └── …
//! ```
//!
//! Attributes follow the OpenTelemetry GenAI conventions where they exist
//! (`gen_ai.request.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.agent.name`) and use `agenthelm.*` for the
//! rest (step id, cost, attempts, status). A failed step, call or compensation has status ERROR
//! with its message. Tool arguments and outputs are not exported: they may hold personal data,
//! and the run store keeps them.
//!
//! No OpenTelemetry SDK is needed: spans are built from the events after the run, by the pure
//! [`spans_of`], and sent with one request.
//!
//! ```no_run
//! use agenthelm::otlp::OtlpExporter;
//! # async fn demo(events: Vec<agenthelm::Event>) -> Result<(), agenthelm::otlp::OtlpError> {
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318, or explicitly:
//! let exporter = match OtlpExporter::from_env() {
//!     Some(exporter) => exporter?,
//!     None => OtlpExporter::new("http://127.0.0.1:4318")?,
//! };
//! let sent = exporter.export(&events).await?;
//! println!("{sent} spans exported");
//! # Ok(()) }
//! ```

mod config;
mod spans;
mod wire;

pub use config::{
    OtlpError, OtlpExporter, DEFAULT_TIMEOUT, ENDPOINT_ENV, HEADERS_ENV, MAX_SPANS_PER_REQUEST,
    TRACES_ENDPOINT_ENV,
};
pub use spans::spans_of;
pub use wire::{export_request, trace_id_of, AttributeValue, Span, SpanKind, SpanStatus};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StepStatus;
    use crate::trace::{Event, EventKind};
    use serde_json::{json, Value};
    use std::sync::Arc;

    fn event(run: Option<&str>, step: Option<&str>, ms: u64, kind: EventKind) -> Event {
        Event {
            timestamp_ms: 1_000 + ms,
            run_id: run.map(Arc::from),
            step_id: step.map(Arc::from),
            agent: Some(Arc::from("helper")),
            kind,
        }
    }

    #[test]
    fn events_without_a_run_make_an_agent_trace() {
        let call = EventKind::LlmCall {
            model: "local-model".into(),
            usage: crate::lm::TokenUsage::new(7, 3),
            cost_usd: None,
            latency_ms: 5.0,
            tool_calls: 0,
            error: Some("model overloaded".into()),
            exchange: None,
        };
        let spans = spans_of(&[event(None, None, 10, call)]);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "invoke_agent helper");
        assert_eq!(
            spans[1].parent_span_id.as_deref(),
            Some(spans[0].span_id.as_str())
        );
        assert_eq!(
            spans[1].status,
            SpanStatus::Error("model overloaded".into())
        );
        assert_eq!(
            spans[1].attribute("gen_ai.usage.input_tokens"),
            Some(&AttributeValue::Int(7))
        );
        assert_eq!(
            spans[1].attribute("gen_ai.provider.name"),
            None,
            "no provider prefix"
        );
        assert_eq!(spans[1].start_unix_nano, 1_005_000_000);
        assert_eq!(spans[1].end_unix_nano, 1_010_000_000);
        assert!(spans_of(&[]).is_empty());
    }

    #[test]
    fn resumed_steps_and_unfinished_compensations_are_told_apart() {
        let run = Some("r");
        let spans = spans_of(&[
            event(
                run,
                Some("a"),
                0,
                EventKind::StepStarted { direct_tool: None },
            ),
            // The process died; the resumed run starts `a` again.
            event(
                run,
                None,
                5,
                EventKind::RunResumed {
                    interrupted: vec!["a".into()],
                },
            ),
            event(
                run,
                Some("a"),
                6,
                EventKind::StepStarted { direct_tool: None },
            ),
            event(
                run,
                Some("a"),
                9,
                EventKind::StepFinished {
                    status: StepStatus::Completed,
                    result: None,
                    result_call: None,
                    duration_ms: 3.0,
                    error: None,
                },
            ),
            event(
                run,
                Some("a"),
                10,
                EventKind::CompensationStarted {
                    action: 0,
                    tool: "undo".into(),
                    args: Value::Null,
                },
            ),
        ]);
        let steps: Vec<&Span> = spans.iter().filter(|s| s.name == "step a").collect();
        assert_eq!(steps.len(), 2);
        assert_ne!(steps[0].span_id, steps[1].span_id);
        assert_eq!(
            steps[0].attribute("agenthelm.step.status"),
            None,
            "the interrupted attempt"
        );
        assert_eq!(
            steps[1].attribute("agenthelm.step.attempt"),
            Some(&AttributeValue::Int(2))
        );
        assert_eq!(
            spans[0].attribute("agenthelm.run.resumed"),
            Some(&AttributeValue::Int(1))
        );
        let compensation = spans.iter().find(|s| s.name == "compensate undo").unwrap();
        assert_eq!(
            compensation.parent_span_id.as_deref(),
            Some(steps[1].span_id.as_str())
        );
        assert!(
            matches!(&compensation.status, SpanStatus::Error(m) if m.contains("no end on record"))
        );
    }

    #[test]
    fn json_mapping_uses_strings_for_64_bit_numbers() {
        let spans = spans_of(&[event(
            Some("r"),
            Some("a"),
            0,
            EventKind::StepStarted {
                direct_tool: Some("t".into()),
            },
        )]);
        let body = export_request(&spans);
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
        assert_eq!(span["startTimeUnixNano"], "1000000000");
        assert_eq!(span["kind"], 1);
        assert_eq!(
            span["attributes"][0],
            json!({"key": "agenthelm.step.id", "value": {"stringValue": "a"}})
        );
        assert_eq!(
            body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
            "agenthelm"
        );
        assert_eq!(
            serde_json::to_value(AttributeValue::from(u64::MAX)).unwrap(),
            json!({"intValue": i64::MAX.to_string()})
        );
    }
}
