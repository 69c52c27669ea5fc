//! Events as they may be journaled, exported or shown: their text with secrets and personal
//! data replaced by `[redacted:<name>]` markers ([`Redactor`]).
//!
//! The event is redacted as JSON, every string at any depth, so fields added to the event kinds
//! later are covered without a change here. Identifiers are kept: they tie events to the plan
//! and to each other, and the run state matches on them.

use super::{Event, EventKind};
use crate::redact::Redactor;

/// Top-level fields of a serialized event that are identifiers or kinds, never redacted.
const IDENTIFIERS: &[&str] = &[
    "type",
    "timestamp_ms",
    "run_id",
    "step_id",
    "agent",
    "call_id",
    "tool",
    "status",
    "purpose",
    "result_call",
    "direct_tool",
    "model",
    "action",
    "steps",
    "interrupted",
    "effect",
    "exchange",
    // Settings and kinds: a run's budget, the limit a call waited for.
    "budget",
    "limit",
];

/// Objects in an event with identifiers of their own: an [`Effect`](super::Effect), and a
/// model call's [`ModelExchange`](super::ModelExchange) (whose request digest a replay
/// compares; the answer is redacted).
const NESTED: &[(&str, &[&str])] = &[
    (
        "effect",
        &["call_id", "tool", "compensating_tool", "in_progress"],
    ),
    ("exchange", &["request_digest"]),
];

impl Event {
    /// The event with its text redacted by `redactor`: `None` when nothing in it needed to be
    /// (no copy is made then, and none at all when the redactor is empty).
    ///
    /// ```
    /// use agenthelm::redact::{Preset, Redactor};
    /// use agenthelm::{Event, EventKind};
    ///
    /// let redactor = Redactor::new().preset(Preset::Email);
    /// let event = Event::new(EventKind::Note { message: "mailed ana@example.com".into() });
    /// let redacted = event.redacted(&redactor).unwrap();
    /// assert!(matches!(redacted.kind, EventKind::Note { message } if message == "mailed [redacted:email]"));
    /// ```
    pub fn redacted(&self, redactor: &Redactor) -> Option<Event> {
        if redactor.is_empty() {
            return None;
        }
        let Ok(mut value) = serde_json::to_value(self) else {
            return Some(self.left_out());
        };
        let mut changed = redactor.redact_value_except(&mut value, IDENTIFIERS);
        for (key, identifiers) in NESTED {
            if let Some(nested) = value.get_mut(*key) {
                changed |= redactor.redact_value_except(nested, identifiers);
            }
        }
        if !changed {
            return None;
        }
        Some(serde_json::from_value(value).unwrap_or_else(|_| self.left_out()))
    }

    /// What stands in for an event that could not be redacted (it could not be turned into
    /// JSON and back, which serializable events always can): a note, so that nothing unredacted
    /// is recorded.
    fn left_out(&self) -> Event {
        let message = format!(
            "a `{}` event was left out: it could not be redacted",
            self.kind.name()
        );
        Event {
            kind: EventKind::Note { message },
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Preset;
    use crate::trace::{CallPurpose, Effect};
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new()
            .preset(Preset::Email)
            .secret("API_KEY", "sk-test-PLANTED-42")
    }

    #[test]
    fn payloads_are_redacted_and_identifiers_kept() {
        let mut event = Event::new(EventKind::ToolCall {
            call_id: "ana@example.com#1".into(),
            tool: "mail".into(),
            args: json!({"to": "ana@example.com", "key": "sk-test-PLANTED-42"}),
            output: Some(json!("sent to ana@example.com")),
            error: None,
            attempts: 1,
            duration_ms: 1.0,
            purpose: CallPurpose::Execute,
        });
        event.step_id = Some("ana@example.com".into());
        let redacted = event.redacted(&redactor()).unwrap();
        assert_eq!(redacted.step_id.as_deref(), Some("ana@example.com"));
        let EventKind::ToolCall {
            call_id,
            args,
            output,
            ..
        } = redacted.kind
        else {
            panic!("kind changed: {redacted:?}");
        };
        assert_eq!(call_id, "ana@example.com#1");
        assert_eq!(
            args,
            json!({"to": "[redacted:email]", "key": "[redacted:API_KEY]"})
        );
        assert_eq!(output, Some(json!("sent to [redacted:email]")));
    }

    #[test]
    fn effects_keep_their_identifiers() {
        let event = Event::new(EventKind::Effect {
            effect: Effect {
                call_id: "s#1".into(),
                tool: "mail".into(),
                args: json!({"to": "ana@example.com"}),
                compensating_tool: Some("unmail".into()),
                in_progress: false,
            },
        });
        let redacted = event.redacted(&redactor()).unwrap();
        let EventKind::Effect { effect } = redacted.kind else {
            panic!("kind changed");
        };
        assert_eq!(effect.args, json!({"to": "[redacted:email]"}));
        assert_eq!(
            (effect.call_id.as_str(), effect.tool.as_str()),
            ("s#1", "mail")
        );
    }

    #[test]
    fn a_model_answer_is_redacted_and_its_request_digest_kept() {
        let usage = serde_json::to_value(crate::lm::TokenUsage::default()).unwrap();
        let event: Event = serde_json::from_value(json!({
            "timestamp_ms": 1, "type": "llm_call", "model": "openai/m", "usage": usage,
            "latency_ms": 1.0,
            "exchange": {"request_digest": "ana@example.com", "text": "write to ana@example.com"}
        }))
        .unwrap();
        let redacted = serde_json::to_value(event.redacted(&redactor()).unwrap()).unwrap();
        assert_eq!(redacted["exchange"]["text"], "write to [redacted:email]");
        assert_eq!(redacted["exchange"]["request_digest"], "ana@example.com");
    }

    #[test]
    fn an_event_with_nothing_to_hide_is_not_copied() {
        let event = Event::new(EventKind::Note {
            message: "all fine".into(),
        });
        assert!(event.redacted(&redactor()).is_none());
        assert!(event.redacted(&Redactor::new()).is_none());
    }

    #[test]
    fn errors_and_reasons_are_redacted() {
        let event = Event::new(EventKind::StepFinished {
            status: crate::plan::StepStatus::Failed,
            result: None,
            result_call: None,
            duration_ms: 1.0,
            error: Some("401 for key sk-test-PLANTED-42".into()),
        });
        let redacted = event.redacted(&redactor()).unwrap();
        let text = serde_json::to_string(&redacted).unwrap();
        assert!(!text.contains("PLANTED"), "{text}");
        assert!(text.contains("[redacted:API_KEY]"), "{text}");
    }
}
