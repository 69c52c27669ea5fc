//! Streamed Anthropic messages: `message_start` (model, input usage), content blocks opened by
//! `content_block_start` and filled by `content_block_delta` (`text_delta`, `input_json_delta`),
//! `message_delta` (output usage), then `message_stop`. `ping` is ignored; an `error` event ends
//! the call (an overload is worth another attempt when nothing was shown yet).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::anthropic::Usage;
use super::stream::{DecodeError, Decoder, Step, StreamDelta, ToolCalls};
use super::{Completion, LmError, TokenUsage};

/// Puts a streamed message together.
pub(crate) struct AnthropicDecoder {
    model_id: String,
    wire_model: String,
    answered_by: Option<String>,
    text: Option<String>,
    calls: ToolCalls,
    /// Which tool call each `tool_use` block is, by block index.
    call_of_block: BTreeMap<usize, usize>,
    /// Input and output usage as last reported (`message_delta` counts are cumulative).
    input: Option<u64>,
    output: Option<u64>,
}

impl AnthropicDecoder {
    pub(crate) fn new(model_id: &str, wire_model: &str) -> Self {
        AnthropicDecoder {
            model_id: model_id.to_owned(),
            wire_model: wire_model.to_owned(),
            answered_by: None,
            text: None,
            calls: ToolCalls::default(),
            call_of_block: BTreeMap::new(),
            input: None,
            output: None,
        }
    }

    fn note_usage(&mut self, usage: Option<Usage>) {
        let Some(usage) = usage else { return };
        let input = [
            usage.input_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
        ];
        if input.iter().any(Option::is_some) {
            self.input = Some(input.iter().map(|n| n.unwrap_or(0)).sum());
        }
        if let Some(output) = usage.output_tokens {
            self.output = Some(output);
        }
    }

    fn error(&self, error: Option<Value>) -> DecodeError {
        let error = error.unwrap_or(Value::Null);
        let kind = error.get("type").and_then(Value::as_str).unwrap_or("error");
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        let failed = LmError::Failed {
            model: self.model_id.clone(),
            message: format!("{kind}: {message}"),
        };
        // Overload and server trouble pass; a bad request does not.
        match kind {
            "overloaded_error" | "api_error" | "rate_limit_error" => DecodeError::Transient(failed),
            _ => DecodeError::Fatal(failed),
        }
    }
}

impl Decoder for AnthropicDecoder {
    fn event(
        &mut self,
        _event: Option<&str>,
        data: &str,
        emit: &mut dyn FnMut(StreamDelta),
    ) -> Result<Step, DecodeError> {
        // The `type` in the data names the event as well as the `event:` line does.
        let event: Event = serde_json::from_str(data).map_err(|e| {
            DecodeError::Fatal(LmError::Malformed {
                model: self.model_id.clone(),
                message: format!("a stream event is not what was expected ({e})"),
            })
        })?;
        match event {
            Event::MessageStart { message } => {
                if let Some(model) = message.model.filter(|m| !m.is_empty()) {
                    self.answered_by = Some(model);
                }
                self.note_usage(message.usage);
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text } => {
                    let all = self.text.get_or_insert_with(String::new);
                    if !text.is_empty() {
                        all.push_str(&text);
                        emit(StreamDelta::Text(text));
                    }
                }
                Block::ToolUse { id, name, input } => {
                    let call = self.call_of_block.len();
                    self.call_of_block.insert(index, call);
                    // A non-empty `input` here is the whole input (not how the service sends
                    // it today, but valid); an empty one is filled by the deltas.
                    let arguments = match input {
                        Some(Value::Object(fields)) if !fields.is_empty() => {
                            Value::Object(fields).to_string()
                        }
                        _ => String::new(),
                    };
                    self.calls
                        .add(call, Some(&id), Some(&name), &arguments, emit);
                }
                Block::Other => {}
            },
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => {
                    self.text.get_or_insert_with(String::new).push_str(&text);
                    if !text.is_empty() {
                        emit(StreamDelta::Text(text));
                    }
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    if let Some(&call) = self.call_of_block.get(&index) {
                        self.calls.add(call, None, None, &partial_json, emit);
                    }
                }
                BlockDelta::Other => {}
            },
            Event::MessageDelta { usage } => self.note_usage(usage),
            Event::MessageStop => return Ok(Step::Done),
            Event::Error { error } => return Err(self.error(error)),
            Event::Other => {}
        }
        Ok(Step::Continue)
    }

    fn finish(self) -> Result<Completion, LmError> {
        Ok(Completion {
            text: self.text,
            tool_calls: self.calls.finish(),
            usage: TokenUsage::new(self.input.unwrap_or(0), self.output.unwrap_or(0)),
            cost_usd: None,
            model: self.answered_by.unwrap_or(self.wire_model),
        })
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        usage: Option<Usage>,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: Option<Value>,
    },
    /// `ping`, `content_block_stop` and events this client does not use.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Option<Value>,
    },
    /// Thinking and other blocks this client does not use.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    /// Thinking, signatures and deltas this client does not use.
    #[serde(other)]
    Other,
}
