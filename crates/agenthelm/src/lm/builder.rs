//! Turning a `provider/model` id (plus options) into a working [`Lm`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::anthropic::AnthropicModel;
use super::http::{HttpSettings, Transport};
use super::openai::OpenAiModel;
use super::{ApiKey, Lm, LmError, Pricing, RateLimiter, RateLimits};
use crate::retry::RetryPolicy;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
}

/// A known provider: where it is and where its key comes from.
struct Provider {
    name: &'static str,
    wire: Wire,
    base_url: &'static str,
    /// The environment variable holding the key; `None` for local servers that need none.
    key_var: Option<&'static str>,
    /// The environment variable that overrides `base_url`.
    base_var: &'static str,
}

const PROVIDERS: &[Provider] = &[
    Provider {
        name: "openai",
        wire: Wire::OpenAi,
        base_url: "https://api.openai.com/v1",
        key_var: Some("OPENAI_API_KEY"),
        base_var: "OPENAI_BASE_URL",
    },
    Provider {
        name: "anthropic",
        wire: Wire::Anthropic,
        base_url: "https://api.anthropic.com/v1",
        key_var: Some("ANTHROPIC_API_KEY"),
        base_var: "ANTHROPIC_BASE_URL",
    },
    Provider {
        name: "mistral",
        wire: Wire::OpenAi,
        base_url: "https://api.mistral.ai/v1",
        key_var: Some("MISTRAL_API_KEY"),
        base_var: "MISTRAL_BASE_URL",
    },
    Provider {
        name: "groq",
        wire: Wire::OpenAi,
        base_url: "https://api.groq.com/openai/v1",
        key_var: Some("GROQ_API_KEY"),
        base_var: "GROQ_BASE_URL",
    },
    Provider {
        name: "openrouter",
        wire: Wire::OpenAi,
        base_url: "https://openrouter.ai/api/v1",
        key_var: Some("OPENROUTER_API_KEY"),
        base_var: "OPENROUTER_BASE_URL",
    },
    Provider {
        name: "deepseek",
        wire: Wire::OpenAi,
        base_url: "https://api.deepseek.com/v1",
        key_var: Some("DEEPSEEK_API_KEY"),
        base_var: "DEEPSEEK_BASE_URL",
    },
    Provider {
        name: "together",
        wire: Wire::OpenAi,
        base_url: "https://api.together.xyz/v1",
        key_var: Some("TOGETHER_API_KEY"),
        base_var: "TOGETHER_BASE_URL",
    },
    Provider {
        name: "ollama",
        wire: Wire::OpenAi,
        base_url: "http://localhost:11434/v1",
        key_var: None,
        base_var: "OLLAMA_BASE_URL",
    },
];

/// The names `Lm::new` knows, in the order they are listed in errors.
pub fn provider_names() -> impl Iterator<Item = &'static str> {
    PROVIDERS.iter().map(|p| p.name)
}

/// The environment variables the providers' API keys come from (`OPENAI_API_KEY`, ...): what
/// a redactor hides.
pub fn provider_key_variables() -> impl Iterator<Item = &'static str> {
    PROVIDERS.iter().filter_map(|p| p.key_var)
}

/// Reads an environment variable (the process environment unless replaced).
type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Builds an [`Lm`] for a `provider/model` id with options: base URL, key, timeout, retries,
/// pricing. Anything not set comes from the environment or a default.
///
/// ```
/// use agenthelm::prelude::*;
/// use std::time::Duration;
///
/// // Any OpenAI-compatible server (here a local one) by base URL; no key needed.
/// let lm = Lm::builder("openai/smollm2")
///     .base_url("http://127.0.0.1:8088/v1")
///     .timeout(Duration::from_secs(30))
///     .max_retries(2)
///     .build()
///     .unwrap();
/// assert_eq!(lm.model_id(), "openai/smollm2");
///
/// // A key passed in code never shows in Debug output.
/// let builder = Lm::builder("mistral/mistral-small-latest").api_key("sk-secret");
/// assert!(!format!("{builder:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct LmBuilder {
    model: String,
    base_url: Option<String>,
    api_key: Option<ApiKey>,
    settings: HttpSettings,
    pricing: Option<Arc<Pricing>>,
    max_tokens: Option<u32>,
    limiter: Option<RateLimiter>,
    env: EnvLookup,
}

impl LmBuilder {
    pub(crate) fn new(model: &str) -> Self {
        LmBuilder {
            model: model.trim().to_owned(),
            base_url: None,
            api_key: None,
            settings: HttpSettings::default(),
            pricing: None,
            max_tokens: None,
            limiter: None,
            env: Arc::new(|name| std::env::var(name).ok()),
        }
    }

    /// Sends requests to this base URL (ending in `/v1` for OpenAI-compatible servers) instead
    /// of the provider's. With a base URL, any provider name is accepted and spoken to in the
    /// OpenAI format, and a key is optional.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Uses this key instead of the one in the provider's environment variable.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(ApiKey::new(key));
        self
    }

    /// Limit on each attempt of a request (default 120 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// Attempts after the first for rate limits, server errors, timeouts and connection errors
    /// (default 3). Client errors such as a bad key are never retried.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.settings.max_retries = retries;
        self
    }

    /// Backoff between attempts when the service gives no `Retry-After` (default: 0.5 s,
    /// doubling, at most 20 s, half of it random).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.backoff = policy;
        self
    }

    /// The longest `Retry-After` the client waits for (default 60 s); a service asking for more
    /// ends the call at once with its error.
    pub fn max_retry_wait(mut self, wait: Duration) -> Self {
        self.settings.max_retry_wait = wait;
        self
    }

    /// Prices calls with this table instead of [`Pricing::builtin`].
    pub fn pricing(mut self, pricing: Pricing) -> Self {
        self.pricing = Some(Arc::new(pricing));
        self
    }

    /// Answer length limit sent with every request that sets none (Anthropic requires one;
    /// default 4096 there, and the service's own default elsewhere).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Calls of the model wait for their turn at `limiter`, together with the calls of every
    /// other model given the same limiter (or a clone of it). Without one, each built model has
    /// a limiter of its own that only holds calls back when the service says so.
    ///
    /// ```
    /// use agenthelm::lm::{RateLimit, RateLimiter};
    /// use agenthelm::Lm;
    ///
    /// let shared = RateLimiter::new(RateLimit::requests_per_minute(60)?);
    /// let planner = Lm::builder("openai/gpt-4o").api_key("sk-x").rate_limiter(shared.clone()).build();
    /// let worker = Lm::builder("openai/gpt-4o").api_key("sk-x").rate_limiter(shared).build();
    /// # assert!(planner.is_ok() && worker.is_ok());
    /// # Ok::<(), agenthelm::lm::RateLimitError>(())
    /// ```
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Takes the limiter for this model from `limits`: the model's own entry, else its
    /// provider's, else one that only heeds the service, shared with the other models of the
    /// same id built with `limits` (see [`RateLimits`]).
    pub fn rate_limits(self, limits: &RateLimits) -> Self {
        let limiter = limits.shared_for(&self.model);
        self.rate_limiter(limiter)
    }

    /// Reads environment variables through `lookup` instead of the process environment (for
    /// tests and for programs that keep settings elsewhere).
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        self.env = Arc::new(lookup);
        self
    }

    /// Checks the id and settings and makes the model. Errors name what is missing: an unknown
    /// provider, or the environment variable that should hold the key.
    pub fn build(self) -> Result<Lm, LmError> {
        let (provider_name, wire_model) = self.split_id()?;
        let provider = PROVIDERS.iter().find(|p| p.name == provider_name);
        let base_from_env = provider.and_then(|p| self.var(p.base_var));
        let base_url = match (&self.base_url, provider) {
            (Some(url), _) => url.clone(),
            (None, Some(p)) => base_from_env
                .clone()
                .or_else(|| (p.name == "ollama").then(|| self.ollama_host()).flatten())
                .unwrap_or_else(|| p.base_url.to_owned()),
            (None, None) => {
                return Err(LmError::Config(format!(
                    "model `{}`: unknown provider `{provider_name}` (known: {}); for any other \
                     OpenAI-compatible server give its URL with Lm::builder(..).base_url(..)",
                    self.model,
                    provider_names().collect::<Vec<_>>().join(", ")
                )))
            }
        };
        check_url(&self.model, &base_url)?;
        // A hosted service needs its key; a server at a URL of the user's choosing may not.
        let custom_server = self.base_url.is_some() || base_from_env.is_some();
        let key = match (&self.api_key, provider.and_then(|p| p.key_var)) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(var)) => match self.var(var) {
                Some(key) => Some(ApiKey::new(key)),
                None if custom_server => None,
                None => {
                    return Err(LmError::MissingKey {
                        model: self.model.clone(),
                        variable: var.to_owned(),
                    })
                }
            },
            (None, None) => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(self.settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LmError::Config(format!("could not set up the HTTP client: {e}")))?;
        let transport = Transport {
            client,
            model: self.model.clone(),
            key,
            settings: self.settings,
            limiter: self.limiter.unwrap_or_else(RateLimiter::unlimited),
        };
        let wire = provider.map_or(Wire::OpenAi, |p| p.wire);
        let lm = match wire {
            Wire::OpenAi => Lm::from_model(OpenAiModel::new(
                transport,
                wire_model,
                &base_url,
                provider_name == "openai" && !custom_server,
                self.max_tokens,
            )),
            Wire::Anthropic => Lm::from_model(AnthropicModel::new(
                transport,
                wire_model,
                &base_url,
                self.max_tokens.unwrap_or(4096),
            )),
        };
        Ok(match self.pricing {
            Some(pricing) => lm.with_shared_pricing(pricing),
            None => lm,
        })
    }

    fn split_id(&self) -> Result<(String, String), LmError> {
        match self.model.split_once('/') {
            Some((provider, model)) if !provider.is_empty() && !model.trim().is_empty() => {
                Ok((provider.to_ascii_lowercase(), model.trim().to_owned()))
            }
            _ => Err(LmError::Config(format!(
                "model `{}`: expected `provider/model`, such as `openai/gpt-4o-mini` or \
                 `anthropic/claude-sonnet-4-5`",
                self.model
            ))),
        }
    }

    /// A variable's value; empty counts as unset.
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// Ollama's own `OLLAMA_HOST` (`host:port` or a URL) as a base URL.
    fn ollama_host(&self) -> Option<String> {
        let host = self.var("OLLAMA_HOST")?;
        let host = host.trim().trim_end_matches('/');
        let url = if host.contains("://") {
            host.to_owned()
        } else {
            format!("http://{host}")
        };
        Some(format!("{url}/v1"))
    }
}

fn check_url(model: &str, url: &str) -> Result<(), LmError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(parsed) => Err(LmError::Config(format!(
            "model `{model}`: base URL `{url}` must use http or https, not `{}`",
            parsed.scheme()
        ))),
        Err(e) => Err(LmError::Config(format!(
            "model `{model}`: base URL `{url}` is not a URL: {e}"
        ))),
    }
}

impl fmt::Debug for LmBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LmBuilder")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("settings", &self.settings)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}
