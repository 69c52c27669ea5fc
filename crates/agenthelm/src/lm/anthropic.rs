//! The Anthropic messages API: content blocks, `tool_use` / `tool_result`, a top-level system
//! prompt, and a required answer length.

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::anthropic_stream::AnthropicDecoder;
use super::http::{header, Request, Transport};
use super::{
    Completion, CompletionRequest, DeltaSink, LanguageModel, LmError, Message, ResponseFormat,
    Role, TokenUsage, ToolCall, ToolChoice,
};

/// The API version this client speaks.
const API_VERSION: &str = "2023-06-01";

/// A Claude model behind the messages API.
#[derive(Debug)]
pub(crate) struct AnthropicModel {
    transport: Transport,
    wire_model: String,
    /// `…/messages`.
    url: String,
    max_tokens: u32,
}

impl AnthropicModel {
    pub(crate) fn new(
        transport: Transport,
        wire_model: String,
        base_url: &str,
        max_tokens: u32,
    ) -> Self {
        AnthropicModel {
            transport,
            wire_model,
            url: format!("{}/messages", base_url.trim_end_matches('/')),
            max_tokens,
        }
    }

    fn headers(&self) -> Result<HeaderMap, LmError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.transport.key {
            header(&mut headers, "x-api-key", key.expose())?;
        }
        header(&mut headers, "anthropic-version", API_VERSION)?;
        Ok(headers)
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let mut system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        // The messages API has no response-format switch: the shape is asked for in words.
        let format_instruction = request
            .response_format
            .as_ref()
            .and_then(|format| match format {
                ResponseFormat::Text => None,
                ResponseFormat::Json => {
                    Some("Reply with a single JSON object and nothing else.".to_owned())
                }
                ResponseFormat::JsonSchema { schema, .. } => Some(format!(
                    "Reply with a single JSON object that matches this JSON schema, and nothing \
                 else:\n{schema}"
                )),
            });
        if let Some(instruction) = &format_instruction {
            system.push(instruction);
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(self.wire_model));
        body.insert(
            "max_tokens".into(),
            json!(request.max_tokens.unwrap_or(self.max_tokens)),
        );
        if !system.is_empty() {
            body.insert("system".into(), json!(system.join("\n\n")));
        }
        body.insert("messages".into(), Value::Array(turns(&request.messages)));
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description, "input_schema": t.parameters})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            if let Some(choice) = &request.tool_choice {
                body.insert("tool_choice".into(), tool_choice(choice));
            }
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        Value::Object(body)
    }

    fn parse(&self, answer: Value) -> Result<Completion, LmError> {
        let answer: MessagesAnswer = self.transport.decode(answer)?;
        if let Some(error) = answer.error {
            return Err(self.transport.failed(error.to_string()));
        }
        let Some(blocks) = answer.content else {
            return Err(self
                .transport
                .malformed("the answer has no content".to_owned()));
        };
        let mut text: Option<String> = None;
        let mut tool_calls = Vec::new();
        for block in blocks {
            match block {
                Block::Text { text: part } => text.get_or_insert_with(String::new).push_str(&part),
                Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: input,
                }),
                Block::Other => {}
            }
        }
        let usage = answer.usage.unwrap_or_default();
        Ok(Completion {
            text,
            tool_calls,
            usage: TokenUsage::new(
                usage.input_tokens.unwrap_or(0)
                    + usage.cache_creation_input_tokens.unwrap_or(0)
                    + usage.cache_read_input_tokens.unwrap_or(0),
                usage.output_tokens.unwrap_or(0),
            ),
            cost_usd: None,
            model: answer
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.wire_model.clone()),
        })
    }
}

#[async_trait]
impl LanguageModel for AnthropicModel {
    fn model_id(&self) -> &str {
        &self.transport.model
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LmError> {
        let body = self.body(request);
        let answer = self
            .transport
            .post_json(&self.url, self.headers()?, &body, &|_, _| false)
            .await?;
        self.parse(answer)
    }

    async fn stream(
        &self,
        request: &CompletionRequest,
        on_delta: &mut DeltaSink<'_>,
    ) -> Result<Completion, LmError> {
        let mut body = self.body(request);
        if let Value::Object(fields) = &mut body {
            fields.insert("stream".into(), json!(true));
        }
        let sent = Request {
            headers: self.headers()?,
            body: &body,
            permanent: &|_, _| false,
        };
        let decoder = || AnthropicDecoder::new(&self.transport.model, &self.wire_model);
        let whole = |answer: Value| self.parse(answer);
        self.transport
            .post_stream(&self.url, sent, decoder, &whole, on_delta)
            .await
    }
}

/// The conversation as alternating user / assistant turns of content blocks: tool results are
/// user turns, and consecutive turns of one role are merged (the API requires alternation).
fn turns(messages: &[Message]) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User => ("user", vec![text_block(&message.content)]),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
                    "content": message.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !message.content.trim().is_empty() {
                    blocks.push(text_block(&message.content));
                }
                for call in &message.tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": input_object(&call.arguments),
                    }));
                }
                if blocks.is_empty() {
                    blocks.push(text_block(""));
                }
                ("assistant", blocks)
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// `tool_use.input` must be an object.
fn input_object(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(parsed @ Value::Object(_)) => parsed,
            _ => json!({}),
        },
        _ => json!({}),
    }
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    }
}

#[derive(Deserialize)]
struct MessagesAnswer {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Option<Vec<Block>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking and other blocks this client does not use.
    #[serde(other)]
    Other,
}

/// Token counts of an answer (or, streamed, of its start and end events).
#[derive(Deserialize, Default)]
pub(super) struct Usage {
    #[serde(default)]
    pub(super) input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) cache_read_input_tokens: Option<u64>,
}
