use async_trait::async_trait;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{Completion, CompletionRequest, LanguageModel, LmError, TokenUsage, ToolCall};

/// A language model that answers from a script, one reply per request, in order.
///
/// Use it in tests and demos: it needs no network, and it records every request it received so a
/// test can check what the agent sent. A request after the last reply is an error.
///
/// ```
/// use agenthelm::prelude::*;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// /// Add two numbers.
/// #[tool]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// let lm = ScriptedLm::new(vec![
///     ScriptedReply::tool_call("add", json!({"a": 2, "b": 3})),
///     ScriptedReply::text("2 + 3 = 5"),
/// ]);
/// let agent = ToolAgent::new("math", Lm::from_model(lm), tools![add]);
/// let result = agent.run("What is 2 + 3?").await;
/// assert_eq!(result.answer.as_deref(), Some("2 + 3 = 5"));
/// # }
/// ```
#[derive(Debug)]
pub struct ScriptedLm {
    model: String,
    replies: Vec<ScriptedReply>,
    next: AtomicUsize,
    requests: Mutex<Vec<CompletionRequest>>,
}

impl ScriptedLm {
    /// A model that gives `replies` in order.
    pub fn new(replies: Vec<ScriptedReply>) -> Self {
        ScriptedLm {
            model: "scripted".to_owned(),
            replies,
            next: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Reports `model` as its id (for events and pricing).
    pub fn with_model_id(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many replies are left.
    pub fn remaining(&self) -> usize {
        self.replies
            .len()
            .saturating_sub(self.next.load(Ordering::SeqCst))
    }
}

#[async_trait]
impl LanguageModel for ScriptedLm {
    fn model_id(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LmError> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.clone());
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let Some(reply) = self.replies.get(index) else {
            return Err(LmError::ScriptExhausted {
                model: self.model.clone(),
                replies: self.replies.len(),
            });
        };
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        match &reply.answer {
            Answer::Error(message) => Err(LmError::Failed {
                model: self.model.clone(),
                message: message.clone(),
            }),
            Answer::Text(text) => Ok(self.completion(reply, Some(text.clone()), Vec::new())),
            Answer::ToolCalls(calls) => {
                let calls = calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, arguments))| ToolCall {
                        id: format!("call_{index}_{i}"),
                        name: name.clone(),
                        arguments: arguments.clone(),
                    })
                    .collect();
                Ok(self.completion(reply, None, calls))
            }
        }
    }
}

impl ScriptedLm {
    fn completion(
        &self,
        reply: &ScriptedReply,
        text: Option<String>,
        tool_calls: Vec<ToolCall>,
    ) -> Completion {
        Completion {
            text,
            tool_calls,
            usage: reply.usage,
            cost_usd: reply.cost_usd,
            model: self.model.clone(),
        }
    }
}

/// One reply of a [`ScriptedLm`]'s script.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedReply {
    answer: Answer,
    usage: TokenUsage,
    cost_usd: Option<f64>,
    delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Text(String),
    ToolCalls(Vec<(String, Value)>),
    Error(String),
}

impl ScriptedReply {
    fn new(answer: Answer) -> Self {
        ScriptedReply {
            answer,
            usage: TokenUsage::default(),
            cost_usd: None,
            delay: Duration::ZERO,
        }
    }

    /// A final text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Answer::Text(text.into()))
    }

    /// A request to call one tool.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::new(Answer::ToolCalls(vec![(name.into(), arguments)]))
    }

    /// A request to call several tools at once.
    pub fn tool_calls(calls: impl IntoIterator<Item = (impl Into<String>, Value)>) -> Self {
        Self::new(Answer::ToolCalls(
            calls.into_iter().map(|(n, a)| (n.into(), a)).collect(),
        ))
    }

    /// A failed model call with this message.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Answer::Error(message.into()))
    }

    /// Reports this token usage for the reply.
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = TokenUsage::new(input_tokens, output_tokens);
        self
    }

    /// Reports this price for the reply.
    pub fn with_cost(mut self, usd: f64) -> Self {
        self.cost_usd = Some(usd);
        self
    }

    /// Waits this long before answering.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}
