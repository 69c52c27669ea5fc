//! The OpenAI chat-completions wire format, spoken by OpenAI and by most other services and local
//! servers (Mistral, Groq, OpenRouter, DeepSeek, Together, Ollama, vLLM, llama.cpp, ...).

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};

use super::http::{header, Request, Transport};
use super::openai_stream::OpenAiDecoder;
use super::{
    Completion, CompletionRequest, DeltaSink, LanguageModel, LmError, Message, ResponseFormat,
    Role, TokenUsage, ToolCall, ToolChoice,
};

/// A model behind an OpenAI-compatible `/chat/completions` endpoint.
#[derive(Debug)]
pub(crate) struct OpenAiModel {
    transport: Transport,
    /// The model name sent to the service (the part after `provider/`).
    wire_model: String,
    /// `…/chat/completions`.
    url: String,
    /// OpenAI's own API wants `max_completion_tokens`; others still read `max_tokens`.
    hosted_openai: bool,
    /// Answer length limit for requests that set none.
    max_tokens: Option<u32>,
    /// Set once the server refused a `json_schema` response format: from then on the schema is
    /// sent as `{"type": "json_object", "schema": ..}`, which llama.cpp-style servers enforce.
    json_object_only: AtomicBool,
    /// Set once the server refused `stream_options`: streamed requests go without it (and
    /// without usage, which such servers do not stream anyway).
    no_stream_options: AtomicBool,
}

impl OpenAiModel {
    pub(crate) fn new(
        transport: Transport,
        wire_model: String,
        base_url: &str,
        hosted_openai: bool,
        max_tokens: Option<u32>,
    ) -> Self {
        OpenAiModel {
            transport,
            wire_model,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            hosted_openai,
            max_tokens,
            json_object_only: AtomicBool::new(false),
            no_stream_options: AtomicBool::new(false),
        }
    }

    fn headers(&self) -> Result<HeaderMap, LmError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.transport.key {
            header(
                &mut headers,
                "authorization",
                &format!("Bearer {}", key.expose()),
            )?;
        }
        Ok(headers)
    }

    fn body(&self, request: &CompletionRequest, json_object_only: bool) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.wire_model));
        body.insert(
            "messages".into(),
            Value::Array(request.messages.iter().map(message).collect()),
        );
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        }
                    })
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            if let Some(choice) = &request.tool_choice {
                body.insert("tool_choice".into(), tool_choice(choice));
            }
        }
        match &request.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::Json) => {
                body.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) if json_object_only => {
                body.insert(
                    "response_format".into(),
                    json!({"type": "json_object", "schema": schema}),
                );
            }
            Some(ResponseFormat::JsonSchema { name, schema }) => {
                body.insert(
                    "response_format".into(),
                    json!({
                        "type": "json_schema",
                        "json_schema": {"name": schema_name(name), "schema": schema, "strict": false}
                    }),
                );
            }
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(max) = request.max_tokens.or(self.max_tokens) {
            let field = if self.hosted_openai {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(field.into(), json!(max));
        }
        Value::Object(body)
    }

    fn parse(&self, answer: Value) -> Result<Completion, LmError> {
        let answer: ChatAnswer = self.transport.decode(answer)?;
        if let Some(error) = answer.error {
            return Err(self.transport.failed(error.to_string()));
        }
        let Some(choice) = answer.choices.into_iter().next() else {
            return Err(self
                .transport
                .malformed("the answer has no choices".to_owned()));
        };
        let message = choice.message;
        let tool_calls = message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, call)| ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: call.function.name,
                arguments: arguments(call.function.arguments),
            })
            .collect();
        let text = content_text(message.content).or(message.refusal);
        let usage = answer.usage.unwrap_or_default();
        Ok(Completion {
            text,
            tool_calls,
            usage: TokenUsage::new(
                usage.prompt_tokens.unwrap_or(0),
                usage.completion_tokens.unwrap_or(0),
            ),
            cost_usd: None,
            model: answer
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.wire_model.clone()),
        })
    }

    async fn send(
        &self,
        request: &CompletionRequest,
        json_object_only: bool,
    ) -> Result<Value, LmError> {
        let body = self.body(request, json_object_only);
        let schema_sent = !json_object_only
            && matches!(
                request.response_format,
                Some(ResponseFormat::JsonSchema { .. })
            );
        // A server that rejects `json_schema` may say so with a 500 (llama.cpp does): retrying
        // the same request would not help, falling back to `json_object` does.
        let permanent = |status: u16, body: &str| schema_sent && schema_refused(status, body);
        self.transport
            .post_json(&self.url, self.headers()?, &body, &permanent)
            .await
    }
}

impl OpenAiModel {
    /// Sends `request` asking for a stream, and reads it.
    async fn send_streaming(
        &self,
        request: &CompletionRequest,
        json_object_only: bool,
        with_options: bool,
        on_delta: &mut DeltaSink<'_>,
    ) -> Result<Completion, LmError> {
        let mut body = self.body(request, json_object_only);
        if let Value::Object(fields) = &mut body {
            fields.insert("stream".into(), json!(true));
            if with_options {
                // The usage comes in a last chunk only when asked for.
                fields.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        let schema_sent = !json_object_only
            && matches!(
                request.response_format,
                Some(ResponseFormat::JsonSchema { .. })
            );
        let permanent = |status: u16, text: &str| {
            (schema_sent && schema_refused(status, text))
                || (with_options && options_refused(status, text))
        };
        let sent = Request {
            headers: self.headers()?,
            body: &body,
            permanent: &permanent,
        };
        let prompt_estimate = body.to_string().len() as u64 / 4;
        let decoder =
            || OpenAiDecoder::new(&self.transport.model, &self.wire_model, prompt_estimate);
        let whole = |answer: Value| self.parse(answer);
        self.transport
            .post_stream(&self.url, sent, decoder, &whole, on_delta)
            .await
    }

    /// [`send_streaming`](Self::send_streaming), without `stream_options` from the first
    /// refusal on.
    async fn stream_with_options(
        &self,
        request: &CompletionRequest,
        json_object_only: bool,
        on_delta: &mut DeltaSink<'_>,
    ) -> Result<Completion, LmError> {
        let with_options = !self.no_stream_options.load(Ordering::Relaxed);
        match self
            .send_streaming(request, json_object_only, with_options, on_delta)
            .await
        {
            Err(LmError::Http {
                status, message, ..
            }) if with_options && options_refused(status, &message) => {
                self.no_stream_options.store(true, Ordering::Relaxed);
                self.send_streaming(request, json_object_only, false, on_delta)
                    .await
            }
            other => other,
        }
    }

    /// Whether `error` says the server does not take the `json_schema` response format that
    /// `request` asked for: then it is asked with `json_object` from now on (and this call is
    /// sent again).
    fn falls_back_to_json_object(
        &self,
        request: &CompletionRequest,
        json_object_only: bool,
        error: &LmError,
    ) -> bool {
        let LmError::Http {
            status, message, ..
        } = error
        else {
            return false;
        };
        let refused = !json_object_only
            && matches!(
                request.response_format,
                Some(ResponseFormat::JsonSchema { .. })
            )
            && schema_refused(*status, message);
        if refused {
            self.json_object_only.store(true, Ordering::Relaxed);
        }
        refused
    }
}

#[async_trait]
impl LanguageModel for OpenAiModel {
    fn model_id(&self) -> &str {
        &self.transport.model
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LmError> {
        let json_object_only = self.json_object_only.load(Ordering::Relaxed);
        let answer = match self.send(request, json_object_only).await {
            Err(error) if self.falls_back_to_json_object(request, json_object_only, &error) => {
                self.send(request, true).await?
            }
            other => other?,
        };
        self.parse(answer)
    }

    async fn stream(
        &self,
        request: &CompletionRequest,
        on_delta: &mut DeltaSink<'_>,
    ) -> Result<Completion, LmError> {
        let json_object_only = self.json_object_only.load(Ordering::Relaxed);
        match self
            .stream_with_options(request, json_object_only, on_delta)
            .await
        {
            Err(error) if self.falls_back_to_json_object(request, json_object_only, &error) => {
                self.stream_with_options(request, true, on_delta).await
            }
            other => other,
        }
    }
}

/// Whether an error answer says the server does not take `stream_options`.
fn options_refused(status: u16, body: &str) -> bool {
    matches!(status, 400 | 422) && body.to_ascii_lowercase().contains("stream_options")
}

/// Whether an error answer to a `json_schema` request says the server does not take it.
fn schema_refused(status: u16, body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    matches!(status, 400 | 422 | 500)
        && (body.contains("json_schema") || body.contains("response_format"))
}

/// OpenAI allows `[a-zA-Z0-9_-]{1,64}` as a schema name.
fn schema_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "answer".to_owned()
    } else {
        cleaned
    }
}

fn message(message: &Message) -> Value {
    match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.as_deref().unwrap_or_default(),
            "content": message.content,
        }),
        Role::Assistant if message.tool_calls.is_empty() => {
            json!({"role": "assistant", "content": message.content})
        }
        // `content` stays a string, never null: some servers (llama.cpp) reject null.
        Role::Assistant => json!({
            "role": "assistant",
            "content": message.content,
            "tool_calls": message.tool_calls.iter().map(|call| json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments_text(&call.arguments)},
            })).collect::<Vec<_>>(),
        }),
    }
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

/// Arguments go over the wire as a JSON string.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Arguments come back as a JSON string (sometimes an object, sometimes empty).
fn arguments(raw: Option<Value>) -> Value {
    match raw {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        // Unparseable text is kept as it is, so the agent can tell the model what was wrong.
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        Some(other) => other,
    }
}

/// `content` is a string, or (on some servers) a list of parts with text.
fn content_text(content: Option<Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s),
        Value::Array(parts) => {
            let text: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            Some(text)
        }
        _ => None,
    }
}

#[derive(Deserialize)]
struct ChatAnswer {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<AnswerToolCall>>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct AnswerToolCall {
    #[serde(default)]
    id: Option<String>,
    function: AnswerFunction,
}

#[derive(Deserialize)]
struct AnswerFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

/// Token counts of an answer (or, streamed, of its last chunk).
#[derive(Deserialize, Default)]
pub(super) struct Usage {
    #[serde(default)]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(super) completion_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_parsed_leniently() {
        assert_eq!(arguments(Some(json!("{\"a\":1}"))), json!({"a": 1}));
        assert_eq!(arguments(Some(json!(""))), json!({}));
        assert_eq!(arguments(None), json!({}));
        assert_eq!(arguments(Some(json!({"a": 1}))), json!({"a": 1}));
        assert_eq!(arguments(Some(json!("{oops"))), json!("{oops"));
    }

    #[test]
    fn schema_names_are_made_acceptable() {
        assert_eq!(schema_name("plan v1!"), "plan_v1_");
        assert_eq!(schema_name(""), "answer");
        assert_eq!(schema_name(&"x".repeat(80)).len(), 64);
    }

    #[test]
    fn schema_refusal_is_recognised() {
        assert!(schema_refused(
            500,
            "1 validation error: response_format.json_schema"
        ));
        assert!(!schema_refused(500, "out of memory"));
        assert!(!schema_refused(401, "bad key for response_format"));
    }
}
