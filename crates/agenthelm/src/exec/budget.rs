//! Keeping a run within its [`Budget`]: what was spent, what calls in flight may still cost,
//! and the signal that stops the run once a limit is reached.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::budget::{Budget, BudgetExceeded, BudgetKind, Unpriced};
use crate::lm::{CompletionRequest, Lm, TokenUsage};
use crate::trace::Usage;

/// The output a request that sets no `max_tokens` is assumed to be able to write, for the
/// worst case of its cost.
pub const ASSUMED_MAX_OUTPUT_TOKENS: u32 = 4096;

/// Bytes of prompt per token in the estimate of a request's input tokens: low on purpose (most
/// text is about four bytes a token), so the estimate errs on the side of the budget.
const BYTES_PER_TOKEN: usize = 3;

/// A run's budget, and what the run has spent against it. Shared by the run and every step's
/// [`StepContext`](super::StepContext); the first limit reached is kept and wakes the run.
///
/// ```
/// use agenthelm::budget::Budget;
/// use agenthelm::exec::BudgetGuard;
/// use agenthelm::trace::Usage;
/// use std::time::Duration;
///
/// let guard = BudgetGuard::new(Budget::new().max_llm_calls(1), Usage::default(), Duration::ZERO);
/// assert!(guard.check().is_ok());
/// assert!(guard.exceeded().is_none());
/// ```
#[derive(Debug)]
pub struct BudgetGuard {
    budget: Budget,
    spent: Mutex<Spent>,
    /// Running time before this process took the run over (a resumed run's earlier attempts).
    taken_before: Duration,
    started: Instant,
    exceeded: OnceLock<BudgetExceeded>,
    tripped: Notify,
}

#[derive(Debug, Default)]
struct Spent {
    cost_usd: f64,
    tokens: u64,
    calls: u64,
    /// Worst cases of the calls in flight.
    reserved_cost_usd: f64,
    reserved_calls: u64,
}

/// A model call admitted by [`BudgetGuard::admit`]: its worst case counts against the budget
/// until [`settle`](Self::settle) replaces it with what the call spent (or dropping it releases
/// it, for a call that was never made).
#[derive(Debug)]
#[must_use = "settle the reservation with what the call spent"]
pub struct Reservation<'a> {
    guard: &'a BudgetGuard,
    cost_usd: f64,
}

impl BudgetGuard {
    /// A guard of `budget` for a run that has spent `spent` and run for `taken` so far
    /// (nothing, for a new run).
    pub fn new(budget: Budget, spent: Usage, taken: Duration) -> Self {
        BudgetGuard {
            budget,
            spent: Mutex::new(Spent {
                cost_usd: spent.cost_usd,
                tokens: spent.tokens.total(),
                calls: u64::from(spent.calls),
                ..Spent::default()
            }),
            taken_before: taken,
            started: Instant::now(),
            exceeded: OnceLock::new(),
            tripped: Notify::new(),
        }
    }

    /// The budget kept.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The first limit reached, if any.
    pub fn exceeded(&self) -> Option<&BudgetExceeded> {
        self.exceeded.get()
    }

    /// Whether the run may go on (start a step): no limit reached, time left.
    pub fn check(&self) -> Result<(), BudgetExceeded> {
        if let Some(exceeded) = self.exceeded() {
            return Err(exceeded.clone());
        }
        if let Some(max) = self.budget.max_duration {
            let taken = self.taken();
            if taken >= max {
                return Err(self.trip(BudgetExceeded::crossed(
                    BudgetKind::Duration,
                    taken.as_secs_f64(),
                    max.as_secs_f64(),
                )));
            }
        }
        Ok(())
    }

    /// Admits a call of `lm` with `request` when the budget allows it, reserving its worst
    /// case; otherwise the limit it would cross is reached, and the call must not be made.
    pub fn admit(
        &self,
        lm: &Lm,
        request: &CompletionRequest,
    ) -> Result<Reservation<'_>, BudgetExceeded> {
        self.check()?;
        let mut spent = self.lock();
        if let Some(max) = self.budget.max_llm_calls {
            if spent.calls + spent.reserved_calls >= max {
                let made = (spent.calls + spent.reserved_calls) as f64;
                return Err(self.trip(BudgetExceeded::would_cross(
                    BudgetKind::LlmCalls,
                    made,
                    max as f64,
                    "the run needs another",
                )));
            }
        }
        if let Some(max) = self.budget.max_tokens {
            if spent.tokens >= max {
                return Err(self.trip(BudgetExceeded::would_cross(
                    BudgetKind::Tokens,
                    spent.tokens as f64,
                    max as f64,
                    "the run needs another model call",
                )));
            }
        }
        let cost_usd = match self.budget.max_cost_usd {
            Some(max) => self.worst_cost(lm, request, &spent, max)?,
            None => 0.0,
        };
        spent.reserved_calls += 1;
        spent.reserved_cost_usd += cost_usd;
        Ok(Reservation {
            guard: self,
            cost_usd,
        })
    }

    /// The most a call could cost, when that keeps the run within `max`.
    fn worst_cost(
        &self,
        lm: &Lm,
        request: &CompletionRequest,
        spent: &Spent,
        max: f64,
    ) -> Result<f64, BudgetExceeded> {
        let model = lm.model_id();
        let Some(price) = lm.pricing().lookup(model) else {
            return match self.budget.unpriced {
                Unpriced::Allow => Ok(0.0),
                Unpriced::Refuse => Err(self.trip(unpriced(model, spent.cost_usd, max))),
            };
        };
        let output = request.max_tokens.unwrap_or(ASSUMED_MAX_OUTPUT_TOKENS);
        let worst = price.cost(TokenUsage::new(input_estimate(request), u64::from(output)));
        if spent.cost_usd + spent.reserved_cost_usd + worst > max {
            let why = format!("the next call to {model} may cost up to ${worst:.3}");
            return Err(self.trip(BudgetExceeded::would_cross(
                BudgetKind::Cost,
                spent.cost_usd,
                max,
                &why,
            )));
        }
        Ok(worst)
    }

    fn settle(&self, reserved_cost_usd: f64, used: Option<(TokenUsage, Option<f64>)>) {
        let mut spent = self.lock();
        spent.reserved_calls = spent.reserved_calls.saturating_sub(1);
        spent.reserved_cost_usd = (spent.reserved_cost_usd - reserved_cost_usd).max(0.0);
        let Some((tokens, cost_usd)) = used else {
            return;
        };
        spent.calls += 1;
        spent.tokens += tokens.total();
        spent.cost_usd += cost_usd.unwrap_or(0.0);
        let crossed = match (self.budget.max_cost_usd, self.budget.max_tokens) {
            (Some(max), _) if spent.cost_usd > max => Some(BudgetExceeded::crossed(
                BudgetKind::Cost,
                spent.cost_usd,
                max,
            )),
            (_, Some(max)) if spent.tokens > max => Some(BudgetExceeded::crossed(
                BudgetKind::Tokens,
                spent.tokens as f64,
                max as f64,
            )),
            _ => None,
        };
        drop(spent);
        if let Some(crossed) = crossed {
            self.trip(crossed);
        }
    }

    /// Counts a model call made elsewhere (by a worker carrying a step out, its event taken in
    /// from the journal): what it used and cost (`None`: unpriced, counted as free). A limit
    /// crossed now is reached, so the run stops before its next step.
    pub fn record(&self, tokens: TokenUsage, cost_usd: Option<f64>) {
        // As if admitted with no worst case, then settled.
        self.lock().reserved_calls += 1;
        self.settle(0.0, Some((tokens, cost_usd)));
    }

    /// Resolves once a limit is reached, the time limit included (which nothing else trips).
    pub async fn tripped(&self) {
        let deadline = self
            .budget
            .max_duration
            .map(|max| tokio::time::Instant::now() + max.saturating_sub(self.taken()));
        loop {
            let notified = self.tripped.notified();
            if self.exceeded().is_some() {
                return;
            }
            match deadline {
                Some(deadline) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(deadline) => { let _ = self.check(); }
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Keeps the first limit reached and wakes the run.
    fn trip(&self, exceeded: BudgetExceeded) -> BudgetExceeded {
        let first = self.exceeded.get_or_init(|| exceeded).clone();
        self.tripped.notify_waiters();
        first
    }

    fn taken(&self) -> Duration {
        self.taken_before + self.started.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spent> {
        self.spent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reservation<'_> {
    /// Replaces the call's worst case with what it used and cost (`None`: unpriced, counted
    /// as free); a limit crossed now is reached.
    pub fn settle(mut self, tokens: TokenUsage, cost_usd: Option<f64>) {
        let reserved = std::mem::take(&mut self.cost_usd);
        self.guard.settle(reserved, Some((tokens, cost_usd)));
        std::mem::forget(self);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.guard.settle(self.cost_usd, None);
    }
}

fn unpriced(model: &str, spent: f64, max: f64) -> BudgetExceeded {
    BudgetExceeded {
        kind: BudgetKind::Cost,
        spent,
        limit: max,
        message: format!(
            "cost budget cannot be kept: model `{model}` has no price (add it to the price table, or set `budget.unpriced: allow` to count it as free)"
        ),
    }
}

/// Tokens the prompt may take: every message's text, tool calls and tool definitions, at
/// [`BYTES_PER_TOKEN`].
fn input_estimate(request: &CompletionRequest) -> u64 {
    let messages: usize = request
        .messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.to_string().len())
                    .sum::<usize>()
        })
        .sum();
    let tools: usize = request
        .tools
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
        .sum();
    ((messages + tools).div_ceil(BYTES_PER_TOKEN)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::{Message, ModelPrice, Pricing, ScriptedLm};

    fn priced_lm(input: f64, output: f64) -> Lm {
        Lm::from_model(ScriptedLm::new(vec![]))
            .with_pricing(Pricing::new().with("scripted", ModelPrice::new(input, output)))
    }

    fn request(max_tokens: u32) -> CompletionRequest {
        CompletionRequest {
            messages: vec![Message::user("x".repeat(300))],
            max_tokens: Some(max_tokens),
            ..CompletionRequest::default()
        }
    }

    #[test]
    fn calls_made_elsewhere_count_and_trip_the_budget() {
        let guard = BudgetGuard::new(
            Budget::new().max_tokens(1000),
            Usage::default(),
            Duration::ZERO,
        );
        guard.record(TokenUsage::new(300, 300), Some(0.01));
        assert!(guard.check().is_ok());
        guard.record(TokenUsage::new(300, 300), None);
        let exceeded = guard.check().unwrap_err();
        assert_eq!(exceeded.kind, BudgetKind::Tokens);
        assert_eq!(exceeded.spent, 1200.0);
        // Nothing stays reserved: the next admission sees only what was spent.
        assert_eq!(guard.lock().reserved_calls, 0);
    }

    #[test]
    fn a_call_whose_worst_case_would_cross_the_cost_limit_is_refused() {
        // $1 per million tokens each way: 100 input tokens (300 bytes) + 1000 output = $0.0011.
        let lm = priced_lm(1.0, 1.0);
        let spent = Usage::of_totals(TokenUsage::new(0, 0), 0.0005, 1, 0);
        let guard = BudgetGuard::new(Budget::new().max_cost_usd(0.002), spent, Duration::ZERO);
        let first = guard.admit(&lm, &request(1000)).unwrap();
        // The first call's worst case is reserved: a second at the same time would cross.
        let error = guard.admit(&lm, &request(1000)).unwrap_err();
        assert_eq!(error.kind, BudgetKind::Cost);
        assert!(
            error.to_string().starts_with(
                "cost budget exceeded: $0.001 spent of $0.002, and the next call to scripted may cost up to $0.001"
            ),
            "{error}"
        );
        assert_eq!(guard.exceeded(), Some(&error));
        first.settle(TokenUsage::new(100, 10), Some(0.00011));
    }

    #[test]
    fn spending_past_a_limit_trips_the_guard_with_the_figures() {
        let lm = Lm::from_model(ScriptedLm::new(vec![]));
        let guard = BudgetGuard::new(
            Budget::new().max_tokens(100),
            Usage::default(),
            Duration::ZERO,
        );
        guard
            .admit(&lm, &request(10))
            .unwrap()
            .settle(TokenUsage::new(90, 30), None);
        let exceeded = guard.exceeded().unwrap();
        assert_eq!(
            exceeded.to_string(),
            "token budget exceeded: 120 tokens used of 100 tokens"
        );
        assert_eq!(guard.check(), Err(exceeded.clone()));
    }

    #[test]
    fn calls_are_counted_with_those_in_flight_and_released_when_not_made() {
        let lm = Lm::from_model(ScriptedLm::new(vec![]));
        let spent = Usage::of_totals(TokenUsage::default(), 0.0, 1, 0);
        let guard = BudgetGuard::new(Budget::new().max_llm_calls(2), spent, Duration::ZERO);
        let second = guard.admit(&lm, &request(1)).unwrap();
        drop(second); // never made: the call is not counted
        let second = guard.admit(&lm, &request(1)).unwrap();
        let error = guard.admit(&lm, &request(1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "model call budget exceeded: 2 calls made of 2 calls, and the run needs another"
        );
        second.settle(TokenUsage::default(), None);
    }

    #[test]
    fn an_unpriced_model_is_refused_under_a_cost_limit_unless_allowed() {
        let lm = Lm::from_model(ScriptedLm::new(vec![])).with_pricing(Pricing::new());
        let refuse = BudgetGuard::new(
            Budget::new().max_cost_usd(1.0),
            Usage::default(),
            Duration::ZERO,
        );
        let error = refuse.admit(&lm, &request(1)).unwrap_err();
        assert!(
            error.to_string().contains("`scripted` has no price"),
            "{error}"
        );
        let allow = BudgetGuard::new(
            Budget::new().max_cost_usd(1.0).unpriced(Unpriced::Allow),
            Usage::default(),
            Duration::ZERO,
        );
        allow
            .admit(&lm, &request(1))
            .unwrap()
            .settle(TokenUsage::new(5, 5), None);
        assert!(allow.exceeded().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_limit_counts_earlier_running_time_and_trips_by_itself() {
        let guard = BudgetGuard::new(
            Budget::new().max_duration(Duration::from_secs(10)),
            Usage::default(),
            Duration::from_secs(8),
        );
        assert!(guard.check().is_ok());
        tokio::time::timeout(Duration::from_secs(60), guard.tripped())
            .await
            .unwrap();
        let exceeded = guard.exceeded().unwrap();
        assert_eq!(exceeded.kind, BudgetKind::Duration);
        assert!(exceeded.spent >= 10.0, "{exceeded:?}");
    }
}
