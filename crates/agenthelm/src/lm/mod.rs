//! Language models: the [`LanguageModel`] trait, the shared [`Lm`] handle, chat messages, token
//! usage, the HTTP providers behind [`Lm::new`], and [`ScriptedLm`], a model that answers from a
//! script (for tests and demos).
//!
//! `Lm::new("provider/model")` knows these providers:
//!
//! | provider | wire format | key variable | base URL variable |
//! |---|---|---|---|
//! | `openai` | OpenAI chat completions | `OPENAI_API_KEY` | `OPENAI_BASE_URL` |
//! | `anthropic` | Anthropic messages | `ANTHROPIC_API_KEY` | `ANTHROPIC_BASE_URL` |
//! | `mistral` | OpenAI chat completions | `MISTRAL_API_KEY` | `MISTRAL_BASE_URL` |
//! | `groq` | OpenAI chat completions | `GROQ_API_KEY` | `GROQ_BASE_URL` |
//! | `openrouter` | OpenAI chat completions | `OPENROUTER_API_KEY` | `OPENROUTER_BASE_URL` |
//! | `deepseek` | OpenAI chat completions | `DEEPSEEK_API_KEY` | `DEEPSEEK_BASE_URL` |
//! | `together` | OpenAI chat completions | `TOGETHER_API_KEY` | `TOGETHER_BASE_URL` |
//! | `ollama` | OpenAI chat completions | none | `OLLAMA_BASE_URL` or `OLLAMA_HOST` |
//!
//! Any other OpenAI-compatible server (vLLM, llama.cpp, LM Studio, ...) works through
//! [`Lm::builder`] with a [`base_url`](LmBuilder::base_url), or `OPENAI_BASE_URL`. When the base
//! URL is the user's own, the key is optional.
//!
//! Every [`Lm`] prices its calls with a [`Pricing`] table ([`Pricing::builtin`] unless replaced):
//! a completion whose model is in the table gets its [`Completion::cost_usd`]; any other keeps
//! `None` (unknown, never 0).
//!
//! Calls can be held to a [`RateLimit`] (requests and tokens per minute) by a [`RateLimiter`]
//! shared by every handle built with it ([`LmBuilder::rate_limiter`], [`LmBuilder::rate_limits`]):
//! a call waits for its turn rather than fail. Every HTTP model also heeds what the service says
//! (a 429 with `Retry-After`, or rate-limit headers saying nothing is left) by pausing its limiter,
//! so the other calls sharing it wait too instead of all running into the limit.

mod anthropic;
mod anthropic_stream;
mod builder;
mod digest;
mod http;
mod limiter;
mod message;
mod openai;
mod openai_stream;
mod pricing;
mod rate_headers;
mod rate_limit;
mod scripted;
mod secret;
mod stream;

pub use builder::{provider_key_variables, provider_names, LmBuilder};
pub use digest::RequestDigest;
pub use limiter::{RateLimiter, RatePermit};
pub use message::{
    Completion, CompletionRequest, Message, ResponseFormat, Role, TokenUsage, ToolCall, ToolChoice,
    ToolDefinition,
};
pub use pricing::{ModelPrice, Pricing, PricingError};
pub use rate_limit::{RateLimit, RateLimitCause, RateLimitError, RateLimits, RateWait};
pub use scripted::{ScriptedLm, ScriptedReply};
pub use secret::ApiKey;
pub use stream::{DeltaSink, StreamDelta};

use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A chat model that can call tools.
///
/// Implement it to plug in any model service; [`Lm`] wraps it for sharing.
#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// The `provider/model` id, used in events and for pricing.
    fn model_id(&self) -> &str;

    /// One request, one complete answer.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LmError>;

    /// One request, the answer handed to `on_delta` piece by piece as the model writes it, then
    /// returned whole (the same [`Completion`] [`complete`](LanguageModel::complete) gives).
    ///
    /// The default calls [`complete`](LanguageModel::complete) and hands its text over as one
    /// piece, so every model can be used where streaming is asked for. The HTTP providers
    /// stream for real (server-sent events).
    async fn stream(
        &self,
        request: &CompletionRequest,
        on_delta: &mut DeltaSink<'_>,
    ) -> Result<Completion, LmError> {
        let completion = self.complete(request).await?;
        if let Some(text) = completion.text.as_ref().filter(|t| !t.is_empty()) {
            on_delta(StreamDelta::Text(text.clone()));
        }
        Ok(completion)
    }
}

/// A shared handle to a language model, with the price table its calls are costed by.
/// Cloning is cheap.
///
/// ```
/// use agenthelm::prelude::*;
///
/// let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text("hi")]));
/// assert_eq!(lm.model_id(), "scripted");
/// ```
#[derive(Clone)]
pub struct Lm {
    model: Arc<dyn LanguageModel>,
    pricing: Arc<Pricing>,
}

impl Lm {
    /// The model named by a `provider/model` id, such as `openai/gpt-4o-mini`, with its key
    /// and base URL from the environment (see the [module docs](crate::lm) for the providers).
    ///
    /// A missing key is an error here, naming the variable to set:
    ///
    /// ```
    /// use agenthelm::{Lm, LmError};
    ///
    /// let error = Lm::builder("groq/llama-3.1-8b-instant")
    ///     .env(|_| None) // as if nothing were set
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, LmError::MissingKey { .. }));
    /// assert!(error.to_string().contains("GROQ_API_KEY"));
    /// ```
    pub fn new(model: &str) -> Result<Lm, LmError> {
        Self::builder(model).build()
    }

    /// A builder for `model` with options: base URL, key, timeout, retries.
    pub fn builder(model: &str) -> LmBuilder {
        LmBuilder::new(model)
    }

    /// Wraps a model.
    pub fn from_model(model: impl LanguageModel + 'static) -> Self {
        Self::from_arc(Arc::new(model))
    }

    /// Wraps a shared model.
    pub fn from_arc(model: Arc<dyn LanguageModel>) -> Self {
        Lm {
            model,
            pricing: Pricing::shared_builtin(),
        }
    }

    /// Prices this handle's calls with `pricing` instead of the built-in table.
    ///
    /// ```
    /// use agenthelm::prelude::*;
    /// use agenthelm::lm::{CompletionRequest, ModelPrice, Pricing};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let model = ScriptedLm::new(vec![ScriptedReply::text("hi").with_usage(2_000, 1_000)])
    ///     .with_model_id("acme/small");
    /// let lm = Lm::from_model(model)
    ///     .with_pricing(Pricing::new().with("acme/small", ModelPrice::new(1.0, 2.0)));
    /// let completion = lm.complete(&CompletionRequest::default()).await.unwrap();
    /// assert_eq!(completion.cost_usd, Some(0.004));
    /// # }
    /// ```
    pub fn with_pricing(self, pricing: Pricing) -> Self {
        self.with_shared_pricing(Arc::new(pricing))
    }

    /// Prices this handle's calls with a shared table.
    pub fn with_shared_pricing(mut self, pricing: Arc<Pricing>) -> Self {
        self.pricing = pricing;
        self
    }

    /// The table this handle's calls are priced with.
    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    /// The model's `provider/model` id.
    pub fn model_id(&self) -> &str {
        self.model.model_id()
    }

    /// Sends one request. When the model did not price the answer itself, its cost comes
    /// from the pricing table: by the `provider/model` id, else by the model that answered;
    /// `None` when neither is priced.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, LmError> {
        let completion = self.model.complete(request).await?;
        Ok(self.priced(completion))
    }

    /// Sends one request and hands the answer to `on_delta` as it arrives (see
    /// [`LanguageModel::stream`]); returns the whole answer, priced like
    /// [`complete`](Lm::complete)'s.
    ///
    /// A failed attempt is tried again (by the retry rules of [`LmBuilder::max_retries`]) only
    /// while nothing has reached `on_delta`; once something has, an error (such as a stream
    /// that ends early, [`LmError::StreamCut`]) ends the call.
    ///
    /// ```
    /// use agenthelm::prelude::*;
    /// use agenthelm::lm::{CompletionRequest, StreamDelta};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text("hi")]));
    /// let mut shown = String::new();
    /// let answer = lm
    ///     .stream(&CompletionRequest::default(), &mut |delta| {
    ///         if let StreamDelta::Text(text) = delta {
    ///             shown.push_str(&text);
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(answer.text.as_deref(), Some("hi"));
    /// assert_eq!(shown, "hi");
    /// # }
    /// ```
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        on_delta: &mut DeltaSink<'_>,
    ) -> Result<Completion, LmError> {
        let completion = self.model.stream(request, on_delta).await?;
        Ok(self.priced(completion))
    }

    /// [`stream`](Lm::stream), telling `on_wait` each time the call begins to wait for a rate
    /// limit (as [`complete_observed`](Lm::complete_observed) does).
    pub async fn stream_observed(
        &self,
        request: &CompletionRequest,
        on_delta: &mut DeltaSink<'_>,
        on_wait: impl Fn(&RateWait) + Send + Sync + 'static,
    ) -> Result<Completion, LmError> {
        limiter::observing(Arc::new(on_wait), self.stream(request, on_delta)).await
    }

    /// [`complete`](Lm::complete), telling `on_wait` each time the call begins to wait for a
    /// rate limit (see [`RateLimiter`]), so that the wait can be shown while it lasts.
    ///
    /// ```
    /// use agenthelm::prelude::*;
    /// use agenthelm::lm::CompletionRequest;
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let lm = Lm::from_model(ScriptedLm::new(vec![ScriptedReply::text("hi")]));
    /// let waits = Arc::new(Mutex::new(Vec::new()));
    /// let seen = Arc::clone(&waits);
    /// let answer = lm
    ///     .complete_observed(&CompletionRequest::default(), move |wait| {
    ///         seen.lock().unwrap().push(*wait)
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(answer.text.as_deref(), Some("hi"));
    /// assert!(waits.lock().unwrap().is_empty()); // no limit, no wait
    /// # }
    /// ```
    pub async fn complete_observed(
        &self,
        request: &CompletionRequest,
        on_wait: impl Fn(&RateWait) + Send + Sync + 'static,
    ) -> Result<Completion, LmError> {
        limiter::observing(Arc::new(on_wait), self.complete(request)).await
    }
}

impl Lm {
    /// `completion` with its cost, when the model did not price it itself: from the pricing
    /// table by the `provider/model` id, else by the model that answered; `None` when neither
    /// is priced.
    fn priced(&self, mut completion: Completion) -> Completion {
        if completion.cost_usd.is_none() {
            completion.cost_usd = self
                .pricing
                .cost(self.model_id(), completion.usage)
                .or_else(|| self.answered_model_cost(&completion));
        }
        completion
    }

    /// The price by the name of the model that answered, under this handle's provider.
    fn answered_model_cost(&self, completion: &Completion) -> Option<f64> {
        if completion.model.is_empty() {
            return None;
        }
        let provider = self.model_id().split_once('/').map(|(p, _)| p);
        let name = match provider {
            Some(provider) if !completion.model.contains('/') => {
                format!("{provider}/{}", completion.model)
            }
            _ => completion.model.clone(),
        };
        self.pricing.cost(&name, completion.usage)
    }
}

impl fmt::Debug for Lm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lm").field(&self.model_id()).finish()
    }
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LmError {
    /// A [`ScriptedLm`] was asked for more replies than its script has.
    #[error("scripted model `{model}` has no reply left (its script had {replies} replies)")]
    ScriptExhausted {
        /// The model id.
        model: String,
        /// How many replies the script had.
        replies: usize,
    },
    /// The model (or its script) reported an error.
    #[error("model `{model}` failed: {message}")]
    Failed {
        /// The model id.
        model: String,
        /// What it said.
        message: String,
    },
    /// The service answered with an HTTP error status.
    #[error("model `{model}` returned HTTP {status}: {message}")]
    Http {
        /// The model id.
        model: String,
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// No answer in time.
    #[error("model `{model}` did not answer within {:.1}s", after.as_secs_f64())]
    Timeout {
        /// The model id.
        model: String,
        /// The limit.
        after: Duration,
    },
    /// The answer could not be understood.
    #[error("model `{model}` sent an answer that could not be read: {message}")]
    Malformed {
        /// The model id.
        model: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model id or its settings are not usable.
    #[error("{0}")]
    Config(String),
    /// The call was not made: it would cross the run's budget (or a limit was reached already).
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetExceeded),
    /// A replayed call (see [`Orchestrator::replay`](crate::Orchestrator::replay)): the error
    /// the call had in the recorded run, or why replay could not give the recorded answer.
    #[error("{0}")]
    Replayed(String),
    /// A streamed answer stopped before its end (the connection broke, or the stream closed
    /// without the provider's end marker): what arrived is not the whole answer.
    #[error("model `{model}`: the model's stream ended before the answer was complete: {reason}")]
    StreamCut {
        /// The model id.
        model: String,
        /// What happened.
        reason: String,
    },
    /// The provider needs an API key and none was given.
    #[error(
        "model `{model}` needs an API key: set the environment variable {variable}, or pass one \
         with Lm::builder(..).api_key(..)"
    )]
    MissingKey {
        /// The model id.
        model: String,
        /// The environment variable that should hold the key.
        variable: String,
    },
}

impl LmError {
    /// A short name of the kind of error (`http`, `timeout`, `budget`, ...), for logs and
    /// spans that must not carry the message: OpenTelemetry's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            LmError::ScriptExhausted { .. } => "script_exhausted",
            LmError::Failed { .. } => "failed",
            LmError::Http { .. } => "http",
            LmError::Timeout { .. } => "timeout",
            LmError::Malformed { .. } => "malformed",
            LmError::Config(_) => "config",
            LmError::Budget(_) => "budget",
            LmError::Replayed(_) => "replayed",
            LmError::MissingKey { .. } => "missing_key",
            LmError::StreamCut { .. } => "stream_cut",
        }
    }
}
