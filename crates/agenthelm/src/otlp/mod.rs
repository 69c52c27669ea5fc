//! OpenTelemetry export over OTLP/HTTP (`POST {endpoint}/v1/traces`, protobuf or JSON), with the
//! official `opentelemetry` SDK and its `opentelemetry-otlp` exporter. Two ways in:
//!
//! - **A stored run**: [`spans_of`] turns a finished run's journal into the SDK's
//!   [`SpanData`] and [`OtlpExporter`] sends them
//!   (`agenthelm execute --otlp-endpoint`). A resumed run is exported whole.
//! - **Live**: [`LiveExport`] is a `tracing` layer exporting the library's spans as they end
//!   (`agenthelm serve`), batched in the background.
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
//! Spans built from a journal are pure data (the same events give the same spans, ids
//! included) and sent with the SDK's exporter, in requests of at most
//! [`MAX_SPANS_PER_REQUEST`]. The SDK reads the standard `OTEL_*` variables (headers,
//! compression, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); this module checks the
//! endpoint, headers, timeout and protocol variables first, so that a malformed one is an error
//! naming it rather than a setting left out in silence. Requests go through the workspace's
//! reqwest; transient failures are retried (the SDK's policy) within the timeout.
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

mod export;
mod ids;
mod live;
mod spans;
mod transport;

pub use export::{
    OtlpError, OtlpExporter, DEFAULT_TIMEOUT, ENDPOINT_ENV, HEADERS_ENV, MAX_SPANS_PER_REQUEST,
    PROTOCOL_ENV, TIMEOUT_ENV, TRACES_ENDPOINT_ENV, TRACES_HEADERS_ENV, TRACES_PROTOCOL_ENV,
    TRACES_TIMEOUT_ENV,
};
pub use ids::trace_id_of;
pub use live::LiveExport;
pub use opentelemetry_otlp::Protocol;
pub use opentelemetry_sdk::trace::SpanData;
pub use spans::{attribute, spans_of};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StepStatus;
    use crate::trace::{Event, EventKind};
    use opentelemetry::trace::{SpanKind, Status};
    use opentelemetry::Value;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

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
        assert_eq!(spans[1].parent_span_id, spans[0].span_context.span_id());
        assert_eq!(spans[1].status, Status::error("model overloaded"));
        assert_eq!(spans[1].span_kind, SpanKind::Client);
        assert_eq!(
            attribute(&spans[1], "gen_ai.usage.input_tokens"),
            Some(&Value::I64(7))
        );
        assert_eq!(
            attribute(&spans[1], "gen_ai.provider.name"),
            None,
            "no provider prefix"
        );
        assert_eq!(
            spans[1].start_time,
            UNIX_EPOCH + Duration::from_millis(1_005)
        );
        assert_eq!(spans[1].end_time, UNIX_EPOCH + Duration::from_millis(1_010));
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
                    args: serde_json::Value::Null,
                },
            ),
        ]);
        let steps: Vec<&SpanData> = spans.iter().filter(|s| s.name == "step a").collect();
        assert_eq!(steps.len(), 2);
        assert_ne!(
            steps[0].span_context.span_id(),
            steps[1].span_context.span_id()
        );
        assert_eq!(
            attribute(steps[0], "agenthelm.step.status"),
            None,
            "the interrupted attempt"
        );
        assert_eq!(
            attribute(steps[1], "agenthelm.step.attempt"),
            Some(&Value::I64(2))
        );
        assert_eq!(
            attribute(&spans[0], "agenthelm.run.resumed"),
            Some(&Value::I64(1))
        );
        let compensation = spans.iter().find(|s| s.name == "compensate undo").unwrap();
        assert_eq!(compensation.parent_span_id, steps[1].span_context.span_id());
        assert!(
            matches!(&compensation.status, Status::Error { description } if description.contains("no end on record"))
        );
    }

    #[test]
    fn ids_are_those_the_hand_written_exporter_gave() {
        // Traces already in a back end keep their ids when a run is exported again.
        assert_eq!(
            trace_id_of("r").to_string(),
            "fafacf4b3664ed04f45d53252a4a0bc6"
        );
        let spans = spans_of(&[event(
            Some("r"),
            Some("a"),
            0,
            EventKind::StepStarted {
                direct_tool: Some("t".into()),
            },
        )]);
        let root = &spans[0];
        assert_eq!(root.span_context.trace_id(), trace_id_of("r"));
        assert_eq!(root.parent_span_id, opentelemetry::trace::SpanId::INVALID);
        assert_eq!(root.span_context.span_id().to_string(), "0bf36ef24e70ec05");
        assert_eq!(
            spans[1].span_context.span_id().to_string(),
            "ab364deb7ea25dd6"
        );
        assert_eq!(spans[1].instrumentation_scope.name(), "agenthelm");
        assert!(spans[1].span_context.is_sampled());
        assert_eq!(
            attribute(&spans[1], "agenthelm.step.direct_tool"),
            Some(&Value::from("t"))
        );
    }
}
