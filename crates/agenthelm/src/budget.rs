//! Budgets: hard limits on what one plan run may spend (USD, tokens, model calls, wall time).
//!
//! A [`Budget`] is set on the orchestrator (`Orchestrator::budget`), in `agenthelm.yaml` and
//! in a plan file (a `budget:` key beside `goal`); where several apply, each limit is the
//! tightest of them ([`Budget::tighter`]). It is written the same way everywhere:
//!
//! ```
//! use agenthelm::budget::{Budget, Unpriced};
//! use std::time::Duration;
//!
//! let budget: Budget = serde_json::from_str(
//!     r#"{"max_cost_usd": 0.5, "max_tokens": 200000, "max_llm_calls": 40, "max_duration": "10m", "unpriced": "refuse"}"#,
//! ).unwrap();
//! assert_eq!(budget.max_duration, Some(Duration::from_secs(600)));
//! assert_eq!(budget.unpriced, Unpriced::Refuse);
//!
//! let error = serde_json::from_str::<Budget>(r#"{"max_cost_usd": -1}"#).unwrap_err();
//! assert!(error.to_string().contains("max_cost_usd"));
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

use crate::duration;

/// Limits on one plan run. `None` is no limit; the default has none.
///
/// Crossing a limit stops the run like a failure: no step or model call starts after it,
/// running steps get the grace period, and completed work is rolled back. A model call whose
/// worst case (its prompt's estimated tokens and its `max_tokens`, at the model's price) would
/// cross [`max_cost_usd`](Self::max_cost_usd) is not made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BudgetText", into = "BudgetText")]
pub struct Budget {
    /// Most USD the run's model calls may cost.
    pub max_cost_usd: Option<f64>,
    /// Most tokens (input and output) the run's model calls may use.
    pub max_tokens: Option<u64>,
    /// Most model calls the run may make.
    pub max_llm_calls: Option<u64>,
    /// Longest the run may take, counting only the time it is running (not the time it waits,
    /// stopped, for a person or a restart).
    pub max_duration: Option<Duration>,
    /// What a cost limit does with a model that has no price.
    pub unpriced: Unpriced,
}

/// What a cost budget does with a model whose price is unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unpriced {
    /// Refuse to call it: the budget could not be kept (the default).
    #[default]
    Refuse,
    /// Call it and count it as free.
    Allow,
}

impl Budget {
    /// A budget with no limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the most USD the run may spend.
    pub fn max_cost_usd(mut self, usd: f64) -> Self {
        self.max_cost_usd = Some(usd);
        self
    }

    /// Sets the most tokens the run may use.
    pub fn max_tokens(mut self, tokens: u64) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Sets the most model calls the run may make.
    pub fn max_llm_calls(mut self, calls: u64) -> Self {
        self.max_llm_calls = Some(calls);
        self
    }

    /// Sets the longest the run may take.
    pub fn max_duration(mut self, duration: Duration) -> Self {
        self.max_duration = Some(duration);
        self
    }

    /// Sets what a cost limit does with a model that has no price.
    pub fn unpriced(mut self, unpriced: Unpriced) -> Self {
        self.unpriced = unpriced;
        self
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_cost_usd.is_some()
            || self.max_tokens.is_some()
            || self.max_llm_calls.is_some()
            || self.max_duration.is_some()
    }

    /// Each limit the tighter of `self`'s and `other`'s: a plan's budget can lower a
    /// workspace's limits, never raise them. Unpriced models are allowed only when both allow
    /// them.
    ///
    /// ```
    /// use agenthelm::budget::Budget;
    ///
    /// let workspace = Budget::new().max_cost_usd(1.0).max_llm_calls(40);
    /// let plan = Budget::new().max_cost_usd(2.0).max_tokens(1000);
    /// let both = workspace.tighter(&plan);
    /// assert_eq!(both, Budget::new().max_cost_usd(1.0).max_llm_calls(40).max_tokens(1000));
    /// ```
    pub fn tighter(&self, other: &Budget) -> Budget {
        fn min<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(if b < a { b } else { a }),
                (a, b) => a.or(b),
            }
        }
        Budget {
            max_cost_usd: min(self.max_cost_usd, other.max_cost_usd),
            max_tokens: min(self.max_tokens, other.max_tokens),
            max_llm_calls: min(self.max_llm_calls, other.max_llm_calls),
            max_duration: min(self.max_duration, other.max_duration),
            unpriced: if self.unpriced == Unpriced::Allow && other.unpriced == Unpriced::Allow {
                Unpriced::Allow
            } else {
                Unpriced::Refuse
            },
        }
    }

    /// [`tighter`](Self::tighter) with a budget that may not be given: without one, `self` as
    /// it is (an absent budget has no say, not even on unpriced models).
    pub fn tightened_by(&self, other: Option<&Budget>) -> Budget {
        other.map_or(*self, |other| self.tighter(other))
    }
}

/// Which limit of a [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// [`Budget::max_cost_usd`].
    Cost,
    /// [`Budget::max_tokens`].
    Tokens,
    /// [`Budget::max_llm_calls`].
    LlmCalls,
    /// [`Budget::max_duration`].
    Duration,
}

impl fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetKind::Cost => "cost",
            BudgetKind::Tokens => "token",
            BudgetKind::LlmCalls => "model call",
            BudgetKind::Duration => "duration",
        })
    }
}

/// A budget limit was reached: which, what was spent, the limit, and a message with the
/// figures (`cost budget exceeded: $0.512 spent of $0.500`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BudgetExceeded {
    /// The limit.
    pub kind: BudgetKind,
    /// What was spent when it was reached (USD, tokens, calls or seconds).
    pub spent: f64,
    /// The limit (same unit).
    pub limit: f64,
    /// The whole message.
    pub message: String,
}

impl BudgetExceeded {
    /// `spent` crossed `limit`.
    pub fn crossed(kind: BudgetKind, spent: f64, limit: f64) -> Self {
        let message = format!(
            "{kind} budget exceeded: {} of {}",
            figure(kind, spent, true),
            figure(kind, limit, false)
        );
        BudgetExceeded {
            kind,
            spent,
            limit,
            message,
        }
    }

    /// The next action would cross `limit`; `why` says what it is (`the next call to X may cost
    /// up to $0.040`). The action is not taken.
    pub fn would_cross(kind: BudgetKind, spent: f64, limit: f64, why: &str) -> Self {
        let mut exceeded = Self::crossed(kind, spent, limit);
        exceeded.message.push_str(", and ");
        exceeded.message.push_str(why);
        exceeded
    }
}

/// An amount in its unit: `$0.512`, `1200 tokens`, `40 calls`, `12.300s`.
fn figure(kind: BudgetKind, value: f64, spent: bool) -> String {
    let suffix = if spent { " spent" } else { "" };
    match kind {
        BudgetKind::Cost => format!("${value:.3}{suffix}"),
        BudgetKind::Tokens => format!(
            "{value} {}{}",
            plural(value, "token"),
            if spent { " used" } else { "" }
        ),
        BudgetKind::LlmCalls => format!(
            "{value} {}{}",
            plural(value, "call"),
            if spent { " made" } else { "" }
        ),
        BudgetKind::Duration => {
            let shown = duration::from_seconds(value)
                .map(duration::shown)
                .unwrap_or_else(|_| format!("{value}s"));
            format!("{shown}{}", if spent { " taken" } else { "" })
        }
    }
}

fn plural(value: f64, word: &str) -> String {
    if value == 1.0 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// The written form: durations as text (`10m`), and checks that give the field's name.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_llm_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_duration: Option<String>,
    #[serde(default)]
    unpriced: Unpriced,
}

impl TryFrom<BudgetText> for Budget {
    type Error = String;

    fn try_from(text: BudgetText) -> Result<Self, String> {
        if let Some(usd) = text.max_cost_usd {
            if !(usd.is_finite() && usd > 0.0) {
                return Err(format!(
                    "budget `max_cost_usd` must be a positive number of USD, got {usd}"
                ));
            }
        }
        for (field, value) in [
            ("max_tokens", text.max_tokens),
            ("max_llm_calls", text.max_llm_calls),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "budget `{field}` must be at least 1 (leave it out for no limit)"
                ));
            }
        }
        let max_duration = text
            .max_duration
            .as_deref()
            .map(duration::parse)
            .transpose()
            .map_err(|e| format!("budget `max_duration`: {e}"))?;
        Ok(Budget {
            max_cost_usd: text.max_cost_usd,
            max_tokens: text.max_tokens,
            max_llm_calls: text.max_llm_calls,
            max_duration,
            unpriced: text.unpriced,
        })
    }
}

impl From<Budget> for BudgetText {
    fn from(budget: Budget) -> Self {
        BudgetText {
            max_cost_usd: budget.max_cost_usd,
            max_tokens: budget.max_tokens,
            max_llm_calls: budget.max_llm_calls,
            max_duration: budget.max_duration.map(duration::written),
            unpriced: budget.unpriced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_reads_and_writes_its_documented_keys() {
        let yaml = "max_cost_usd: 0.5\nmax_tokens: 200000\nmax_llm_calls: 40\nmax_duration: 10m\nunpriced: allow\n";
        let budget: Budget = yaml_serde::from_str(yaml).unwrap();
        assert_eq!(
            budget,
            Budget::new()
                .max_cost_usd(0.5)
                .max_tokens(200_000)
                .max_llm_calls(40)
                .max_duration(Duration::from_secs(600))
                .unpriced(Unpriced::Allow)
        );
        let json = serde_json::to_value(budget).unwrap();
        assert_eq!(json["max_duration"], "10m");
        assert_eq!(serde_json::from_value::<Budget>(json).unwrap(), budget);
    }

    #[test]
    fn bad_budgets_name_the_field() {
        for (yaml, field) in [
            ("max_cost_usd: -0.5\n", "max_cost_usd"),
            ("max_cost_usd: .nan\n", "max_cost_usd"),
            ("max_tokens: 0\n", "max_tokens"),
            ("max_llm_calls: 0\n", "max_llm_calls"),
            ("max_duration: 10 minutes\n", "max_duration"),
            ("max_duration: 0s\n", "max_duration"),
            ("unpriced: maybe\n", "unpriced"),
            ("max_cost: 1\n", "max_cost"),
        ] {
            let error = yaml_serde::from_str::<Budget>(yaml)
                .unwrap_err()
                .to_string();
            assert!(error.contains(field), "{yaml}: {error}");
        }
    }

    #[test]
    fn messages_give_the_figures() {
        let cost = BudgetExceeded::crossed(BudgetKind::Cost, 0.512, 0.5);
        assert_eq!(
            cost.to_string(),
            "cost budget exceeded: $0.512 spent of $0.500"
        );
        let calls =
            BudgetExceeded::would_cross(BudgetKind::LlmCalls, 40.0, 40.0, "the run needs another");
        assert_eq!(
            calls.to_string(),
            "model call budget exceeded: 40 calls made of 40 calls, and the run needs another"
        );
        let time = BudgetExceeded::crossed(BudgetKind::Duration, 90.5, 90.0);
        assert_eq!(
            time.to_string(),
            "duration budget exceeded: 90.500s taken of 90.000s"
        );
    }

    #[test]
    fn the_tighter_budget_allows_unpriced_models_only_when_both_do() {
        let allow = Budget::new().unpriced(Unpriced::Allow);
        assert_eq!(allow.tighter(&allow).unpriced, Unpriced::Allow);
        assert_eq!(allow.tighter(&Budget::new()).unpriced, Unpriced::Refuse);
        // No second budget: no say on unpriced models either.
        assert_eq!(allow.tightened_by(None), allow);
        assert_eq!(
            allow.tightened_by(Some(&Budget::new())).unpriced,
            Unpriced::Refuse
        );
        assert!(!Budget::new().is_limited());
        assert!(Budget::new().max_tokens(5).is_limited());
    }
}
