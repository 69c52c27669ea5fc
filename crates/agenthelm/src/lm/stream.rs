//! Streamed answers: the pieces a model sends while it writes ([`StreamDelta`]), and how the
//! HTTP providers turn server-sent events into those pieces and, at the end, one [`Completion`].
//!
//! Each provider has a [`Decoder`] for its wire format; [`Transport::post_stream`]
//! (super::http) drives it over the SSE events of one attempt, so retries, rate limits and
//! error handling stay in one place.

use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::{Completion, LmError, ToolCall};

/// One piece of an answer as it arrives from a streaming model.
///
/// Text pieces concatenate to the answer's text. Tool-call pieces with the same `index` belong
/// to the same call: the first carries its id and name, and the `arguments` of all of them
/// concatenate to the call's arguments (JSON text). The final [`Completion`] holds the whole
/// answer, so a consumer that only wants to show progress can ignore what it does not show.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamDelta {
    /// More of the answer's text.
    Text(String),
    /// More of a tool call.
    ToolCall {
        /// Which call of the answer this piece belongs to.
        index: usize,
        /// The call's id, on its first piece.
        id: Option<String>,
        /// The tool's name, on its first piece.
        name: Option<String>,
        /// More of the arguments' JSON text (may be empty).
        arguments: String,
    },
}

/// Where a streaming call hands its pieces, in the order they arrive.
///
/// It runs on the task making the call, between reads of the stream: keep it quick.
pub type DeltaSink<'a> = dyn FnMut(StreamDelta) + Send + 'a;

/// What one SSE event meant for the answer.
pub(crate) enum Step {
    /// More to come.
    Continue,
    /// The answer is complete (`[DONE]`, `message_stop`).
    Done,
}

/// Why an event could not be taken.
pub(crate) enum DecodeError {
    /// The service reported a passing trouble (overload) in the stream: worth another attempt
    /// if nothing was shown yet.
    Transient(LmError),
    /// Anything else: the call ends with this error.
    Fatal(LmError),
}

/// Turns one provider's SSE events into pieces and, once the stream is complete, an answer.
pub(crate) trait Decoder: Send {
    /// Takes one event (`event` is the SSE event name, if any), handing pieces to `emit`.
    fn event(
        &mut self,
        event: Option<&str>,
        data: &str,
        emit: &mut dyn FnMut(StreamDelta),
    ) -> Result<Step, DecodeError>;

    /// The whole answer, after [`Step::Done`].
    fn finish(self) -> Result<Completion, LmError>;
}

/// A tool call being put together from its pieces.
#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Tool calls put together by index from streamed pieces.
///
/// Servers differ in what they repeat: OpenAI sends a call's id and name once, on its first
/// piece; llama.cpp repeats them in every piece. The first id and the first name of an index
/// are kept and later ones ignored (no service sends a name in parts), while `arguments` always
/// concatenate. Only what is new is passed on to the consumer.
#[derive(Debug, Default)]
pub(crate) struct ToolCalls {
    calls: BTreeMap<usize, PartialCall>,
}

impl ToolCalls {
    /// Adds a piece of call `index`, telling `emit` what it adds.
    pub fn add(
        &mut self,
        index: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
        emit: &mut dyn FnMut(StreamDelta),
    ) {
        let call = self.calls.entry(index).or_default();
        let new_id = match id.filter(|id| !id.is_empty()) {
            Some(id) if call.id.is_none() => {
                call.id = Some(id.to_owned());
                Some(id.to_owned())
            }
            _ => None,
        };
        let new_name = match name.filter(|name| !name.is_empty()) {
            Some(name) if call.name.is_empty() => {
                call.name = name.to_owned();
                Some(name.to_owned())
            }
            _ => None,
        };
        call.arguments.push_str(arguments);
        if new_id.is_some() || new_name.is_some() || !arguments.is_empty() {
            emit(StreamDelta::ToolCall {
                index,
                id: new_id,
                name: new_name,
                arguments: arguments.to_owned(),
            });
        }
    }

    /// The calls in index order; a call without an id gets `call_<index>`.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
            .into_iter()
            .map(|(index, call)| ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{index}")),
                name: call.name,
                arguments: arguments_from_text(call.arguments),
            })
            .collect()
    }
}

/// Arguments sent as JSON text: parsed when they parse, `{}` when empty, else kept as text so
/// the agent can tell the model what was wrong.
pub(crate) fn arguments_from_text(text: String) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// The error for a stream that stopped before its end marker.
pub(crate) fn cut(model: &str, reason: impl Into<String>) -> LmError {
    LmError::StreamCut {
        model: model.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_and_names_are_kept_once_and_arguments_concatenate() {
        let mut calls = ToolCalls::default();
        let mut seen = Vec::new();
        let mut emit = |d: StreamDelta| seen.push(d);
        calls.add(0, Some("c1"), Some("add"), "{\"a\":", &mut emit);
        calls.add(0, Some("c1"), Some("add"), "1}", &mut emit);
        calls.add(1, None, Some("now"), "", &mut emit);
        calls.add(0, Some("c1"), Some("add"), "", &mut emit);
        let finished = calls.finish();
        assert_eq!(finished.len(), 2);
        assert_eq!(finished[0].id, "c1");
        assert_eq!(finished[0].name, "add");
        assert_eq!(finished[0].arguments, json!({"a": 1}));
        assert_eq!(finished[1].id, "call_1");
        assert_eq!(finished[1].arguments, json!({}));
        // The repeated id and name were not passed on again; the empty repeat not at all.
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[1],
            StreamDelta::ToolCall {
                index: 0,
                id: None,
                name: None,
                arguments: "1}".into()
            }
        );
    }

    #[test]
    fn unparseable_arguments_stay_text() {
        assert_eq!(arguments_from_text("{oops".into()), json!("{oops"));
        assert_eq!(arguments_from_text(" ".into()), json!({}));
    }
}
