//! What a model call asked and answered, as the journal keeps it for replay.

use serde::{Deserialize, Serialize};

use crate::lm::ToolCall;

/// What a model was asked (as a [`RequestDigest`](crate::lm::RequestDigest)) and what it
/// answered: kept with each [`LlmCall`](super::EventKind::LlmCall) event so that a replay can
/// give the same answer without calling the model, and tell when the question changed.
///
/// Only the answer is kept, not the request (the conversation so far would repeat in every
/// call of a step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelExchange {
    /// The request's digest, as [`RequestDigest`](crate::lm::RequestDigest) writes it.
    pub request_digest: String,
    /// The answer's text, if it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The tool calls the answer asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, PlanStep};
    use crate::trace::{Event, EventKind, RunState};
    use serde_json::json;
    use std::sync::Arc;

    fn llm_call(exchange: Option<ModelExchange>) -> Event {
        Event {
            step_id: Some(Arc::from("a")),
            ..Event::new(EventKind::LlmCall {
                model: "m".into(),
                usage: Default::default(),
                cost_usd: None,
                latency_ms: 1.0,
                tool_calls: 1,
                error: None,
                exchange,
            })
        }
    }

    fn exchange() -> ModelExchange {
        ModelExchange {
            request_digest: "0".repeat(32),
            text: Some("thinking".into()),
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "lookup".into(),
                arguments: json!({"word": "saga"}),
            }],
        }
    }

    #[test]
    fn a_journal_written_before_answers_were_kept_still_reads() {
        let old = r#"{"timestamp_ms":1,"type":"llm_call","model":"m","usage":{"input_tokens":1,"output_tokens":2},"latency_ms":3.0}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        assert!(matches!(
            event.kind,
            EventKind::LlmCall { exchange: None, .. }
        ));
        let written = serde_json::to_value(&event).unwrap();
        assert!(written.get("exchange").is_none());
    }

    #[test]
    fn the_answer_is_kept_once_and_left_out_of_outlines() {
        let event = llm_call(Some(exchange()));
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(text.matches("thinking").count(), 1);
        let read: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(read, event);
        let mut outline = read.kind;
        outline.strip_payloads();
        assert!(matches!(outline, EventKind::LlmCall { exchange: None, .. }));
    }

    #[test]
    fn the_run_state_keeps_each_answer_and_where_its_step_started() {
        let mut plan = Plan::new("g");
        plan.steps.push(PlanStep::new("a", "do a"));
        let started = Event {
            step_id: Some(Arc::from("a")),
            ..Event::new(EventKind::StepStarted { direct_tool: None })
        };
        let state = RunState::replay(&plan, &[started, llm_call(Some(exchange()))]);
        assert_eq!(state.steps()[0].started_seq, Some(1));
        let call = &state.llm_calls()[0];
        assert_eq!(call.seq, 2);
        assert_eq!(call.exchange, Some(exchange()));
    }
}
