//! The `rate_limits:` section of a workspace: requests and tokens per minute for a provider
//! (`openai`) or a model (`openai/gpt-4o`), shared by every agent and the planner of the process.
//!
//! ```yaml
//! rate_limits:
//!   openai: {requests_per_minute: 500, tokens_per_minute: 200000}
//!   openai/gpt-4o: {requests_per_minute: 60}
//! ```

use agenthelm::lm::{RateLimit, RateLimits};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// One entry of `rate_limits:`: at least one of the two limits, each a positive whole number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed in any minute.
    #[serde(default, deserialize_with = "positive")]
    pub requests_per_minute: Option<u64>,
    /// Tokens (read and written) allowed in any minute.
    #[serde(default, deserialize_with = "positive")]
    pub tokens_per_minute: Option<u64>,
}

impl RateLimitConfig {
    /// The library's limit, or what is wrong with the entry.
    pub fn limit(&self) -> Result<RateLimit, String> {
        let limit = match (self.requests_per_minute, self.tokens_per_minute) {
            (Some(requests), Some(tokens)) => {
                RateLimit::requests_per_minute(requests).and_then(|l| l.with_tokens(tokens))
            }
            (Some(requests), None) => RateLimit::requests_per_minute(requests),
            (None, Some(tokens)) => RateLimit::tokens_per_minute(tokens),
            (None, None) => {
                return Err("give `requests_per_minute`, `tokens_per_minute` or both".to_owned())
            }
        };
        limit.map_err(|e| e.to_string())
    }
}

/// A positive whole number; zero and negative numbers are errors that say so.
fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<i64>::deserialize(d)? {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n.unsigned_abs())),
        Some(n) => Err(serde::de::Error::custom(format!(
            "expected a positive whole number, got {n}"
        ))),
    }
}

/// What is wrong with the entries of `rate_limits:`, as (key, message).
pub(crate) fn problems(limits: &BTreeMap<String, RateLimitConfig>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (key, config) in limits {
        let shape_ok = match key.split_once('/') {
            Some((provider, model)) => !provider.trim().is_empty() && !model.trim().is_empty(),
            None => !key.trim().is_empty(),
        };
        if !shape_ok {
            problems.push((
                "rate_limits".to_owned(),
                format!(
                    "`{key}` is neither a provider (`openai`) nor a `provider/model` id \
                     (`openai/gpt-4o`)"
                ),
            ));
        } else if let Err(message) = config.limit() {
            problems.push((format!("rate_limits.{key}"), message));
        }
    }
    problems
}

/// The limits of `rate_limits:` as the library's registry (entries with problems, which
/// loading the workspace reports, are left out).
pub(crate) fn registry(limits: &BTreeMap<String, RateLimitConfig>) -> RateLimits {
    limits
        .iter()
        .filter_map(|(key, config)| config.limit().ok().map(|limit| (key, limit)))
        .fold(RateLimits::new(), |limits, (key, limit)| {
            limits.with(key, limit)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Workspace;
    use std::path::Path;

    fn load(text: &str) -> Result<Workspace, String> {
        Workspace::from_text(Path::new("ws.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn limits_by_provider_and_by_model() {
        let workspace = load(
            "rate_limits:\n  openai: {requests_per_minute: 500, tokens_per_minute: 200000}\n  \
             openai/gpt-4o: {requests_per_minute: 60}\n  anthropic:\n    tokens_per_minute: 40000\n",
        )
        .unwrap();
        let limits = &workspace.config.rate_limits;
        assert_eq!(
            limits["openai"],
            RateLimitConfig {
                requests_per_minute: Some(500),
                tokens_per_minute: Some(200_000)
            }
        );
        let registry = registry(limits);
        let limit = |id: &str| registry.limiter_for(id).map(|l| l.limit());
        // The model's own entry wins; other models of the provider share the provider's.
        assert_eq!(limit("openai/gpt-4o").unwrap().requests(), Some(60));
        assert_eq!(limit("openai/gpt-4o").unwrap().tokens(), None);
        assert_eq!(limit("openai/gpt-4o-mini").unwrap().tokens(), Some(200_000));
        assert_eq!(
            limit("anthropic/claude-sonnet-4-5").unwrap().requests(),
            None
        );
        assert_eq!(limit("mistral/small"), None);
        assert!(load("rate_limits:\n")
            .unwrap()
            .config
            .rate_limits
            .is_empty());
    }

    #[test]
    fn mistakes_name_file_line_and_key() {
        let error = |text: &str| load(text).unwrap_err();
        assert_eq!(
            error("model: m\nrate_limits:\n  openai:\n    requests_per_minute: 0\n"),
            "ws.yaml:4: `rate_limits.openai.requests_per_minute`: expected a positive whole \
             number, got 0"
        );
        assert_eq!(
            error("rate_limits:\n  openai: {tokens_per_minute: -5}\n"),
            "ws.yaml:2: `rate_limits.openai.tokens_per_minute`: expected a positive whole \
             number, got -5"
        );
        assert_eq!(
            error("rate_limits:\n  openai:\n    requests_per_second: 5\n"),
            "ws.yaml:3: `rate_limits.openai.requests_per_second`: unknown field \
             `requests_per_second`, expected `requests_per_minute` or `tokens_per_minute`"
        );
        assert!(
            error("rate_limits:\n  openai:\n    requests_per_minute: many\n")
                .starts_with("ws.yaml:3: `rate_limits.openai.requests_per_minute`: invalid type"),
        );
        assert_eq!(
            error("model: m\nrate_limits:\n  groq: {}\n"),
            "ws.yaml:3: `rate_limits.groq`: give `requests_per_minute`, `tokens_per_minute` or \
             both"
        );
        assert_eq!(
            error("rate_limits:\n  openai/: {requests_per_minute: 5}\n"),
            "ws.yaml:1: `rate_limits`: `openai/` is neither a provider (`openai`) nor a \
             `provider/model` id (`openai/gpt-4o`)"
        );
    }
}
