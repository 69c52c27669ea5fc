//! Rate limits for model calls: what a limit is ([`RateLimit`]), which limit applies to which
//! model ([`RateLimits`]), and what a caller is told when a call waits ([`RateWait`]).
//!
//! The waiting itself is done by [`RateLimiter`](super::RateLimiter).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::RateLimiter;

/// At most so many requests and/or tokens in any window of a given length (a minute unless
/// told otherwise).
///
/// ```
/// use agenthelm::lm::RateLimit;
/// use std::time::Duration;
///
/// let limit = RateLimit::requests_per_minute(60)?.with_tokens(90_000)?;
/// assert_eq!(limit.requests(), Some(60));
/// assert_eq!(limit.tokens(), Some(90_000));
/// assert_eq!(limit.window(), Duration::from_secs(60));
///
/// // Shorter windows are for tests and for services that count per second.
/// let fast = RateLimit::per(3, Duration::from_secs(1))?;
/// assert_eq!(fast.requests(), Some(3));
///
/// assert!(RateLimit::requests_per_minute(0).is_err()); // would stop every call forever
/// # Ok::<(), agenthelm::lm::RateLimitError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    requests: Option<u64>,
    tokens: Option<u64>,
    window: Duration,
}

/// Why a [`RateLimit`] cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// A limit of zero requests or tokens: no call could ever be made.
    #[error("a rate limit of 0 {0} would stop every call: give at least 1")]
    Zero(&'static str),
    /// A window of no length.
    #[error("a rate limit's window must be longer than zero")]
    EmptyWindow,
}

const MINUTE: Duration = Duration::from_secs(60);

impl RateLimit {
    /// At most `requests` requests per minute.
    pub fn requests_per_minute(requests: u64) -> Result<Self, RateLimitError> {
        Self::per(requests, MINUTE)
    }

    /// At most `tokens` tokens (read and written) per minute, with no limit on requests.
    pub fn tokens_per_minute(tokens: u64) -> Result<Self, RateLimitError> {
        Self::tokens_per(tokens, MINUTE)
    }

    /// At most `requests` requests in any `window`.
    pub fn per(requests: u64, window: Duration) -> Result<Self, RateLimitError> {
        Ok(RateLimit {
            requests: Some(positive(requests, "requests")?),
            tokens: None,
            window: non_empty(window)?,
        })
    }

    /// At most `tokens` tokens in any `window`, with no limit on requests.
    pub fn tokens_per(tokens: u64, window: Duration) -> Result<Self, RateLimitError> {
        Ok(RateLimit {
            requests: None,
            tokens: Some(positive(tokens, "tokens")?),
            window: non_empty(window)?,
        })
    }

    /// This limit, and at most `tokens` tokens in the same window.
    pub fn with_tokens(self, tokens: u64) -> Result<Self, RateLimitError> {
        Ok(RateLimit {
            tokens: Some(positive(tokens, "tokens")?),
            ..self
        })
    }

    /// This limit, and at most `requests` requests in the same window.
    pub fn with_requests(self, requests: u64) -> Result<Self, RateLimitError> {
        Ok(RateLimit {
            requests: Some(positive(requests, "requests")?),
            ..self
        })
    }

    /// No limit of its own: a limiter with it only waits when the service says so.
    pub(crate) fn unlimited() -> Self {
        RateLimit {
            requests: None,
            tokens: None,
            window: MINUTE,
        }
    }

    /// Requests allowed per window, if limited.
    pub fn requests(&self) -> Option<u64> {
        self.requests
    }

    /// Tokens allowed per window, if limited.
    pub fn tokens(&self) -> Option<u64> {
        self.tokens
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }
}

fn positive(value: u64, what: &'static str) -> Result<u64, RateLimitError> {
    if value == 0 {
        Err(RateLimitError::Zero(what))
    } else {
        Ok(value)
    }
}

fn non_empty(window: Duration) -> Result<Duration, RateLimitError> {
    if window.is_zero() {
        Err(RateLimitError::EmptyWindow)
    } else {
        Ok(window)
    }
}

/// Rate limits by provider (`openai`) or by model (`openai/gpt-4o-mini`), each with its one
/// [`RateLimiter`]. Clones share the limiters, so every [`Lm`](super::Lm) built with the same
/// `RateLimits` (through [`LmBuilder::rate_limits`](super::LmBuilder::rate_limits)) takes its
/// turn from the same budget, whichever agent or step it serves.
///
/// A model's own entry wins over its provider's; a provider's entry is one budget shared by all
/// of that provider's models that have no entry of their own. Models with no entry at all still
/// share, by model, what the service says (a 429, rate-limit headers): when one call learns that
/// nothing is left, the others built with these `RateLimits` wait too.
///
/// ```
/// use agenthelm::lm::{RateLimit, RateLimits};
///
/// let limits = RateLimits::new()
///     .with("openai", RateLimit::requests_per_minute(500)?)
///     .with("openai/gpt-4o", RateLimit::requests_per_minute(60)?);
/// let small = limits.limiter_for("openai/gpt-4o-mini").unwrap();
/// assert_eq!(small.limit().requests(), Some(500));
/// assert_eq!(limits.limiter_for("OpenAI/gpt-4o").unwrap().limit().requests(), Some(60));
/// assert!(limits.limiter_for("anthropic/claude-sonnet-4-5").is_none());
/// # Ok::<(), agenthelm::lm::RateLimitError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    limiters: BTreeMap<String, RateLimiter>,
    /// For models with no entry: a limiter per model id, made when first asked for, that only
    /// holds calls back when the service says so.
    unlimited: Arc<Mutex<BTreeMap<String, RateLimiter>>>,
}

impl RateLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the limit for `key`: a provider name or a `provider/model` id.
    pub fn with(mut self, key: &str, limit: RateLimit) -> Self {
        self.limiters
            .insert(normal_key(key), RateLimiter::new(limit));
        self
    }

    /// The limiter for a `provider/model` id: the model's own, else its provider's.
    pub fn limiter_for(&self, model_id: &str) -> Option<&RateLimiter> {
        let id = normal_key(model_id);
        let provider = id.split_once('/').map(|(provider, _)| provider);
        self.limiters
            .get(&id)
            .or_else(|| provider.and_then(|p| self.limiters.get(p)))
    }

    /// The limiter a model built with these limits uses: its entry's, else one shared by the
    /// models of the same id that only heeds the service.
    pub(crate) fn shared_for(&self, model_id: &str) -> RateLimiter {
        if let Some(limiter) = self.limiter_for(model_id) {
            return limiter.clone();
        }
        let mut unlimited = self
            .unlimited
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unlimited
            .entry(normal_key(model_id))
            .or_insert_with(RateLimiter::unlimited)
            .clone()
    }

    /// Whether there is no limit at all.
    pub fn is_empty(&self) -> bool {
        self.limiters.is_empty()
    }
}

/// Provider names are case-insensitive (as in `Lm::new`); model names are kept as written.
fn normal_key(key: &str) -> String {
    let key = key.trim();
    match key.split_once('/') {
        Some((provider, model)) => format!("{}/{}", provider.to_ascii_lowercase(), model.trim()),
        None => key.to_ascii_lowercase(),
    }
}

/// Which limit a call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitCause {
    /// The configured number of requests per window is used up.
    Requests,
    /// The configured number of tokens per window is used up.
    Tokens,
    /// The service said so: a 429 answer, or rate-limit headers saying nothing is left.
    Service,
}

impl RateLimitCause {
    /// `requests`, `tokens` or `service`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitCause::Requests => "requests",
            RateLimitCause::Tokens => "tokens",
            RateLimitCause::Service => "service",
        }
    }
}

/// A model call is about to wait for a rate limit: why, and for how long it expects to.
///
/// Reported through [`Lm::complete_observed`](super::Lm::complete_observed) when the wait
/// begins (again if it turns out longer), so that someone watching sees it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWait {
    /// The limit waited for.
    pub cause: RateLimitCause,
    /// The expected wait, from now.
    pub wait: Duration,
}
