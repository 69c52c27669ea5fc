//! Streamed OpenAI chat completions: `data: {chunk}` events, then `data: [DONE]`.
//!
//! Each chunk's `choices[0].delta` carries more `content`, or pieces of `tool_calls` by
//! `index`. With `stream_options.include_usage` the last chunk before `[DONE]` has no choices and
//! the answer's `usage`; servers that ignore the option (llama.cpp) send none. Then the usage is
//! estimated, so that budgets and rate limits still count the call: the answer's tokens as the
//! number of chunks that carried some of it (such servers send one token a chunk), the prompt's
//! as the request's size at four bytes a token. Some servers (llama.cpp) also send
//! each tool-call piece in the legacy `function_call` field: it is read only when a chunk has no
//! `tool_calls`, so a call is never taken twice.
//!
//! A stream is complete when the answer gave its `finish_reason` and `[DONE]` followed; a
//! `[DONE]` without a finish reason is how llama.cpp ends a stream it dropped to serve a newer
//! request, and counts as cut (worth another attempt when nothing was shown yet).

use serde::Deserialize;
use serde_json::Value;

use super::openai::Usage;
use super::stream::{DecodeError, Decoder, Step, StreamDelta, ToolCalls};
use super::{Completion, LmError, TokenUsage};

/// Puts a streamed chat completion together.
pub(crate) struct OpenAiDecoder {
    /// The `provider/model` id, for errors.
    model_id: String,
    /// The model asked for, when the chunks do not name one.
    wire_model: String,
    answered_by: Option<String>,
    text: Option<String>,
    refusal: Option<String>,
    calls: ToolCalls,
    usage: Option<TokenUsage>,
    /// Chunks that carried some of the answer, and the prompt's estimated tokens: the usage
    /// when the server reports none.
    pieces: u64,
    prompt_estimate: u64,
    /// The answer said why it ended (`finish_reason`): a `[DONE]` before that means the server
    /// stopped the stream early.
    finished: bool,
}

impl OpenAiDecoder {
    /// A decoder for one answer; `prompt_estimate` is the request's tokens, estimated.
    pub(crate) fn new(model_id: &str, wire_model: &str, prompt_estimate: u64) -> Self {
        OpenAiDecoder {
            model_id: model_id.to_owned(),
            wire_model: wire_model.to_owned(),
            answered_by: None,
            text: None,
            refusal: None,
            calls: ToolCalls::default(),
            usage: None,
            pieces: 0,
            prompt_estimate,
            finished: false,
        }
    }

    fn malformed(&self, message: String) -> DecodeError {
        DecodeError::Fatal(LmError::Malformed {
            model: self.model_id.clone(),
            message,
        })
    }
}

impl Decoder for OpenAiDecoder {
    fn event(
        &mut self,
        _event: Option<&str>,
        data: &str,
        emit: &mut dyn FnMut(StreamDelta),
    ) -> Result<Step, DecodeError> {
        let data = data.trim();
        if data == "[DONE]" {
            if !self.finished {
                // llama.cpp ends a stream this way when a newer request interrupts it.
                return Err(DecodeError::Transient(super::stream::cut(
                    &self.model_id,
                    "the stream closed with [DONE] but the answer had no finish reason (did the \
                     server stop it to serve another request?)",
                )));
            }
            return Ok(Step::Done);
        }
        if data.is_empty() {
            return Ok(Step::Continue);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            self.malformed(format!("a stream chunk is not what was expected ({e})"))
        })?;
        if let Some(error) = chunk.error {
            return Err(DecodeError::Fatal(LmError::Failed {
                model: self.model_id.clone(),
                message: error_text(&error),
            }));
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.answered_by.get_or_insert(model);
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(TokenUsage::new(
                usage.prompt_tokens.unwrap_or(0),
                usage.completion_tokens.unwrap_or(0),
            ));
        }
        // One answer is asked for: pieces of other choices (n > 1) are not ours.
        let Some(choice) = chunk
            .choices
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0)
        else {
            return Ok(Step::Continue);
        };
        if choice.finish_reason.is_some() {
            self.finished = true;
        }
        let delta = choice.delta.unwrap_or_default();
        let carries = delta.content.as_ref().is_some_and(|c| !c.is_empty())
            || delta.refusal.as_ref().is_some_and(|r| !r.is_empty())
            || delta.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
            || delta.function_call.is_some();
        if carries {
            self.pieces += 1;
        }
        if let Some(content) = delta.content {
            let text = self.text.get_or_insert_with(String::new);
            if !content.is_empty() {
                text.push_str(&content);
                emit(StreamDelta::Text(content));
            }
        }
        if let Some(refusal) = delta.refusal.filter(|r| !r.is_empty()) {
            self.refusal
                .get_or_insert_with(String::new)
                .push_str(&refusal);
            emit(StreamDelta::Text(refusal));
        }
        match (
            delta.tool_calls.filter(|c| !c.is_empty()),
            delta.function_call,
        ) {
            (Some(pieces), _) => {
                for (position, piece) in pieces.into_iter().enumerate() {
                    let function = piece.function.unwrap_or_default();
                    self.calls.add(
                        piece.index.unwrap_or(position),
                        piece.id.as_deref(),
                        function.name.as_deref(),
                        function.arguments.as_deref().unwrap_or_default(),
                        emit,
                    );
                }
            }
            // The legacy field alone: a server that only speaks the old function-call API.
            (None, Some(function)) => self.calls.add(
                0,
                None,
                function.name.as_deref(),
                function.arguments.as_deref().unwrap_or_default(),
                emit,
            ),
            (None, None) => {}
        }
        Ok(Step::Continue)
    }

    fn finish(self) -> Result<Completion, LmError> {
        Ok(Completion {
            text: self.text.or(self.refusal),
            tool_calls: self.calls.finish(),
            usage: self
                .usage
                .unwrap_or(TokenUsage::new(self.prompt_estimate, self.pieces)),
            cost_usd: None,
            model: self.answered_by.unwrap_or(self.wire_model),
        })
    }
}

/// The message of an error a server put in the stream.
fn error_text(error: &Value) -> String {
    error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string())
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallPiece>>,
    #[serde(default)]
    function_call: Option<FunctionPiece>,
}

#[derive(Deserialize)]
struct ToolCallPiece {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionPiece>,
}

#[derive(Deserialize, Default)]
struct FunctionPiece {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(events: &[Value]) -> (Vec<StreamDelta>, Completion) {
        let mut decoder = OpenAiDecoder::new("openai/m", "m", 40);
        let mut seen = Vec::new();
        for event in events {
            let step = decoder
                .event(None, &event.to_string(), &mut |d| seen.push(d))
                .ok()
                .unwrap();
            assert!(matches!(step, Step::Continue));
        }
        let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        assert!(decoder
            .event(None, &finish.to_string(), &mut |d| seen.push(d))
            .is_ok());
        let done = decoder.event(None, "[DONE]", &mut |_| {}).ok().unwrap();
        assert!(matches!(done, Step::Done));
        (seen, decoder.finish().unwrap())
    }

    #[test]
    fn llama_cpp_tool_call_pieces_repeat_id_name_and_function_call() {
        let piece = |args: &str| {
            json!({"model": "smollm2", "choices": [{"index": 0, "delta": {
                "role": "assistant", "content": null,
                "function_call": {"name": "add", "arguments": args},
                "tool_calls": [{"index": 0, "id": "call_x", "type": "function",
                                "function": {"name": "add", "arguments": args}}]
            }, "finish_reason": null}]})
        };
        let (seen, completion) = decode(&[piece("{\"a\": "), piece("2}")]);
        assert_eq!(completion.tool_calls.len(), 1);
        assert_eq!(completion.tool_calls[0].id, "call_x");
        assert_eq!(completion.tool_calls[0].name, "add");
        assert_eq!(completion.tool_calls[0].arguments, json!({"a": 2}));
        assert_eq!(completion.text, None);
        // No usage chunk: estimated, one token a piece.
        assert_eq!(completion.usage, TokenUsage::new(40, 2));
        assert_eq!(completion.model, "smollm2");
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn the_legacy_field_alone_is_a_call() {
        let piece = |name: Option<&str>, args: &str| json!({"choices": [{"delta": {"function_call": {"name": name, "arguments": args}}}]});
        let (_, completion) = decode(&[piece(Some("now"), ""), piece(None, "{}")]);
        assert_eq!(completion.tool_calls.len(), 1);
        assert_eq!(completion.tool_calls[0].name, "now");
        assert_eq!(completion.tool_calls[0].id, "call_0");
        assert_eq!(completion.model, "m");
    }
}
