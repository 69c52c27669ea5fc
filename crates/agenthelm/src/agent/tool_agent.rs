use async_trait::async_trait;
use futures::future::join_all;
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

use super::llm_call::ask_model;
use super::task::value_text;
use super::{Agent, AgentResult, StepContext, StepTask};
use crate::approval::{ApprovalHandler, DenyAll};
use crate::exec::{EventSink, Observer, TextDelta, TextObserver};
use crate::lm::{Completion, CompletionRequest, Lm, Message, ToolCall, ToolDefinition};
use crate::tool::{RetryPolicy, ToolSet};
use crate::trace::Event;

/// What [`ToolAgent::run_streaming`] gives: the model's text as it is written, then the result.
#[derive(Debug)]
#[non_exhaustive]
pub enum AgentStreamItem {
    /// A piece of a model answer's text.
    Text(TextDelta),
    /// The run is over (always the last item).
    Finished(Box<AgentResult>),
}

/// An agent that reasons with a language model and acts with tools (a ReAct loop).
///
/// Each turn the model either answers, which ends the task, or asks for one or more tool calls.
/// Several calls in one turn run at the same time. Each call goes through the tool's contract
/// (argument validation, approval, retries, timeout); an unknown tool or bad arguments go back to
/// the model as an error message so it can correct itself. The loop stops after `max_iters` model
/// calls.
///
/// ```
/// use agenthelm::prelude::*;
/// use serde_json::json;
///
/// /// Look up a word.
/// #[tool]
/// fn define(word: String) -> String { format!("{word}: a small example") }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let lm = Lm::from_model(ScriptedLm::new(vec![
///     ScriptedReply::tool_call("define", json!({"word": "demo"})),
///     ScriptedReply::text("A demo is a small example."),
/// ]));
/// let agent = ToolAgent::new("lexicographer", lm, tools![define])
///     .role("Explains words precisely")
///     .max_iters(4);
/// let result = agent.run("What is a demo?").await;
/// assert!(result.success);
/// assert_eq!(result.iterations, 2);
/// # }
/// ```
pub struct ToolAgent {
    name: String,
    lm: Lm,
    tools: ToolSet,
    role: Option<String>,
    max_iters: u32,
    max_tokens: Option<u32>,
    approval: Arc<dyn ApprovalHandler>,
    retry: RetryPolicy,
    observers: Vec<Observer>,
    text_observers: Vec<TextObserver>,
}

impl ToolAgent {
    /// An agent called `name` that thinks with `lm` and acts with `tools`.
    pub fn new(name: impl Into<String>, lm: Lm, tools: ToolSet) -> Self {
        ToolAgent {
            name: name.into(),
            lm,
            tools,
            role: None,
            max_iters: 10,
            max_tokens: None,
            approval: Arc::new(DenyAll),
            retry: RetryPolicy::default(),
            observers: Vec::new(),
            text_observers: Vec::new(),
        }
    }

    /// What the agent is for; part of its instructions and of its description for planners.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// The most model calls one task may take (default 10; at least 1).
    pub fn max_iters(mut self, max_iters: u32) -> Self {
        self.max_iters = max_iters.max(1);
        self
    }

    /// The longest answer the model may write per call, in tokens (sent as the request's
    /// `max_tokens`). It also bounds the worst case a run's cost budget counts for each call
    /// (without it, 4,096 tokens are assumed).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens.max(1));
        self
    }

    /// Who approves tool calls when the agent runs on its own (in a plan, the orchestrator's
    /// handler is used). Default: [`DenyAll`].
    pub fn approval_handler(mut self, handler: impl ApprovalHandler + 'static) -> Self {
        self.approval = Arc::new(handler);
        self
    }

    /// Backoff between attempts of failing tool calls when the agent runs on its own.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Calls `observer` with each event as it happens when the agent runs on its own.
    pub fn on_event(mut self, observer: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Calls `observer` with the model's text as it is written, when the agent runs on its
    /// own (in a plan, the orchestrator's [`on_text`](crate::Orchestrator::on_text) observers
    /// see it). With an observer the model is asked to stream its answers; the text of every
    /// turn arrives, the final answer's as well as what the model says before it calls tools.
    ///
    /// ```
    /// use agenthelm::prelude::*;
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text("Hello!")]));
    /// let shown = Arc::new(Mutex::new(String::new()));
    /// let sink = Arc::clone(&shown);
    /// let agent = ToolAgent::new("greeter", lm, ToolSet::new())
    ///     .on_text(move |delta| sink.lock().unwrap().push_str(&delta.text));
    /// let result = agent.run("Say hello").await;
    /// assert_eq!(result.answer.as_deref(), Some("Hello!"));
    /// assert_eq!(*shown.lock().unwrap(), "Hello!");
    /// # }
    /// ```
    pub fn on_text(mut self, observer: impl Fn(&TextDelta) + Send + Sync + 'static) -> Self {
        self.text_observers.push(Arc::new(observer));
        self
    }

    /// Runs `task` on its own (as [`run`](Agent::run) does) and gives, as a stream, the
    /// model's text as it is written and, last, the result.
    ///
    /// ```
    /// use agenthelm::prelude::*;
    /// use agenthelm::agent::AgentStreamItem;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text("Hello!")]));
    /// let agent = ToolAgent::new("greeter", lm, ToolSet::new());
    /// let items: Vec<AgentStreamItem> = agent.run_streaming("Say hello").collect().await;
    /// assert!(matches!(&items[0], AgentStreamItem::Text(d) if d.text == "Hello!"));
    /// assert!(matches!(&items[1], AgentStreamItem::Finished(r) if r.success));
    /// # }
    /// ```
    pub fn run_streaming<'a>(
        &'a self,
        task: &'a str,
    ) -> impl Stream<Item = AgentStreamItem> + Send + 'a {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        let texts = sender.clone();
        let text_observer: TextObserver = Arc::new(move |delta: &TextDelta| {
            // The receiver only goes away with the stream, and then no one is listening.
            let _ = texts.unbounded_send(AgentStreamItem::Text(delta.clone()));
        });
        let run = async move {
            let result = self.run_with(task, vec![text_observer]).await;
            let _ = sender.unbounded_send(AgentStreamItem::Finished(Box::new(result)));
        };
        // Everything goes through the channel, so the result comes after the last text; the
        // run is driven alongside and yields nothing itself. The channel ends when the run
        // has dropped its senders.
        let driver = futures::stream::once(run).filter_map(|()| futures::future::ready(None));
        futures::stream::select(receiver, driver)
    }

    /// A run on its own, with these text observers besides the agent's.
    async fn run_with(&self, task: &str, extra: Vec<TextObserver>) -> AgentResult {
        let sink = EventSink::with_observers(self.observers.clone());
        let mut text_observers = self.text_observers.clone();
        text_observers.extend(extra);
        let ctx = StepContext::new()
            .with_agent(self.name.clone())
            .with_approval(Arc::clone(&self.approval))
            .with_retry(self.retry)
            .with_sink(sink.clone())
            .with_text_observers(text_observers);
        let mut result = self.think_and_act(task, &ctx).await;
        result.events = sink.take();
        result
    }

    /// The model.
    pub fn lm(&self) -> &Lm {
        &self.lm
    }

    fn instructions(&self) -> String {
        let mut text = format!("You are {}, an agent that completes tasks.", self.name);
        if let Some(role) = &self.role {
            text.push_str(&format!(" Your role: {role}."));
        }
        if !self.tools.is_empty() {
            text.push_str(
                " Call the tools you are given when they help. Several independent calls may be \
                 made at once. When a tool reports an error, fix the call or try another way.",
            );
        }
        text.push_str(" When the task is done, reply with the final answer as plain text.");
        text
    }

    fn tool_definitions(&self) -> Vec<ToolDefinition> {
        self.tools
            .specs()
            .map(|spec| ToolDefinition {
                name: spec.name.clone(),
                description: spec.description.clone(),
                parameters: spec.parameters.clone(),
            })
            .collect()
    }

    /// The reasoning loop; events go to `ctx` as they happen.
    async fn think_and_act(&self, task: &str, ctx: &StepContext) -> AgentResult {
        let mut request = CompletionRequest {
            messages: vec![Message::system(self.instructions()), Message::user(task)],
            tools: self.tool_definitions(),
            max_tokens: self.max_tokens,
            ..CompletionRequest::default()
        };
        let mut result = AgentResult::default();
        let mut last_text: Option<String> = None;
        for _ in 0..self.max_iters {
            result.iterations += 1;
            let completion = match self.ask_model(&request, ctx, &mut result).await {
                Ok(completion) => completion,
                Err(error) => {
                    result.error = Some(error);
                    result.answer = last_text;
                    return result;
                }
            };
            let text = completion.text.unwrap_or_default();
            if completion.tool_calls.is_empty() {
                result.success = true;
                result.answer = Some(text);
                return result;
            }
            if !text.trim().is_empty() {
                last_text = Some(text.clone());
            }
            let outputs =
                join_all(completion.tool_calls.iter().map(|call| self.act(call, ctx))).await;
            if ctx.is_parked() {
                // A call waits for a person: the step stops here and runs again once decided.
                result.error = Some(format!(
                    "agent `{}`: a tool call waits for a person's approval",
                    self.name
                ));
                result.answer = last_text;
                return result;
            }
            request
                .messages
                .push(Message::assistant(text, completion.tool_calls.clone()));
            for (call, output) in completion.tool_calls.iter().zip(outputs) {
                request
                    .messages
                    .push(Message::tool(call.id.clone(), output));
            }
        }
        result.error = Some(format!(
            "agent `{}` stopped after {} model calls without a final answer (raise max_iters?)",
            self.name, self.max_iters
        ));
        result.answer = last_text;
        result
    }

    async fn ask_model(
        &self,
        request: &CompletionRequest,
        ctx: &StepContext,
        result: &mut AgentResult,
    ) -> Result<Completion, String> {
        ask_model(&self.lm, request, ctx, result)
            .await
            .map_err(|e| format!("agent `{}`: {e}", self.name))
    }

    /// Runs one tool call the model asked for; the text goes back to the model.
    async fn act(&self, call: &ToolCall, ctx: &StepContext) -> String {
        let tool = match self.tools.require(&call.name) {
            Ok(tool) => tool,
            Err(e) => return format!("error: {e}"),
        };
        match ctx
            .call_tool(tool, normalize_arguments(&call.arguments))
            .await
        {
            Ok(value) => value_text(&value),
            Err(e) => format!("error: {e}"),
        }
    }
}

/// Models sometimes send the arguments object as a JSON string, or nothing for "no arguments".
fn normalize_arguments(arguments: &Value) -> Value {
    match arguments {
        Value::Null => Value::Object(Default::default()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(parsed @ Value::Object(_)) => parsed,
            _ => arguments.clone(),
        },
        other => other.clone(),
    }
}

#[async_trait]
impl Agent for ToolAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, task: &str) -> AgentResult {
        self.run_with(task, Vec::new()).await
    }

    fn description(&self) -> Option<&str> {
        self.role.as_deref()
    }

    fn tools(&self) -> Option<&ToolSet> {
        Some(&self.tools)
    }

    fn model(&self) -> Option<&Lm> {
        Some(&self.lm)
    }

    async fn run_step(&self, task: &StepTask, ctx: &StepContext) -> AgentResult {
        self.think_and_act(&task.prompt(), ctx).await
    }
}

impl fmt::Debug for ToolAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolAgent")
            .field("name", &self.name)
            .field("lm", &self.lm)
            .field("tools", &self.tools)
            .field("role", &self.role)
            .field("max_iters", &self.max_iters)
            .finish_non_exhaustive()
    }
}
