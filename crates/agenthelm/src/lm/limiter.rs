//! The [`RateLimiter`]: a sliding-window log of the calls let through, shared by every handle
//! that uses it, and a line that callers wait in.
//!
//! Why a log rather than a token bucket (GCRA, as in `governor`): a bucket of burst `N` lets `N`
//! calls through at once and then one every `window / N`, so a sliding window can hold up to
//! `2N - 1` of them; a bucket of burst 1 keeps to `N` but spaces every call out even when the
//! budget is unused. The log keeps the exact promise "no window of the limit's length holds
//! more than `N` calls (and `T` tokens)" and still lets a burst of `N` go at once. It costs one
//! entry per call in the last window, which is what the limit allows anyway.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

use super::rate_limit::{RateLimit, RateLimitCause, RateWait};

tokio::task_local! {
    /// Who hears about waits of the calls made in this task: set by
    /// [`Lm::complete_observed`](super::Lm::complete_observed). A task-local rather than a
    /// parameter because the calls pass through [`LanguageModel::complete`](super::LanguageModel),
    /// whose signature has no room for it, on their way to the limiter.
    static ON_WAIT: Arc<dyn Fn(&RateWait) + Send + Sync>;
}

/// Runs `call` with `on_wait` told of every rate-limit wait inside it.
pub(crate) async fn observing<T>(
    on_wait: Arc<dyn Fn(&RateWait) + Send + Sync>,
    call: impl std::future::Future<Output = T>,
) -> T {
    ON_WAIT.scope(on_wait, call).await
}

/// Tells the task's observer, if any, that a wait begins.
fn announce(wait: RateWait) {
    // Outside `observing` there is no one to tell, which is fine.
    let _ = ON_WAIT.try_with(|on_wait| on_wait(&wait));
}

/// A wait is announced again only when it turns out longer than announced by more than this
/// (timer granularity is not news).
const ANNOUNCE_SLACK: Duration = Duration::from_millis(50);

/// Lets calls through at the pace a [`RateLimit`] allows, and holds them back while the service
/// says its own limit is used up. Clones share one budget.
///
/// A call *waits* for its turn, it never fails for it. Callers are served in the order they
/// came. The guarantee: in any window of the limit's length, at most `requests` calls are let
/// through, and the tokens charged to the calls let through add up to at most `tokens`. A call
/// is charged an estimate when it is let through (see [`acquire`](RateLimiter::acquire)) and
/// its actual use once known ([`RatePermit::settle`]); a call bigger than the whole budget goes
/// alone, once the window is empty.
///
/// The promise is kept at the moment each call is let through; what reaches the service is
/// later by the time to send it, which differs a little from call to call.
///
/// ```
/// use agenthelm::lm::{RateLimit, RateLimiter};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agenthelm::lm::RateLimitError> {
/// let limiter = RateLimiter::new(RateLimit::per(2, Duration::from_millis(100))?);
/// let started = tokio::time::Instant::now();
/// for _ in 0..3 {
///     let permit = limiter.acquire(0).await; // the third waits until the first leaves the window
///     drop(permit); // nothing to settle: no tokens counted
/// }
/// assert!(started.elapsed() >= Duration::from_millis(100));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    shared: Arc<Shared>,
}

struct Shared {
    limit: RateLimit,
    window: Mutex<Window>,
    /// The line: held by the caller whose turn it is (tokio's mutex is first come, first
    /// served).
    turn: tokio::sync::Mutex<()>,
    /// Wakes the caller whose turn it is when a call turned out cheaper than charged, so that
    /// it need not sleep out a wait computed from the estimate.
    cheaper: tokio::sync::Notify,
}

/// What the limiter knows: the calls let through within the last window, the callers in line,
/// and a pause the service asked for.
#[derive(Default)]
struct Window {
    sent: VecDeque<Sent>,
    waiting: VecDeque<Queued>,
    paused_until: Option<Instant>,
    next_id: u64,
}

/// A call let through.
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: u64,
    at: Instant,
    tokens: u64,
}

/// A caller in line, with the tokens it will be charged (for estimates of those behind it).
#[derive(Debug, Clone, Copy)]
struct Queued {
    id: u64,
    tokens: u64,
}

impl RateLimiter {
    /// A limiter keeping to `limit`, with nothing sent yet.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            shared: Arc::new(Shared {
                limit,
                window: Mutex::new(Window::default()),
                turn: tokio::sync::Mutex::new(()),
                cheaper: tokio::sync::Notify::new(),
            }),
        }
    }

    /// A limiter with no limit of its own, which waits only when the service says so.
    pub(crate) fn unlimited() -> Self {
        Self::new(RateLimit::unlimited())
    }

    /// The limit kept.
    pub fn limit(&self) -> RateLimit {
        self.shared.limit
    }

    /// Whether calls are charged tokens (so an estimate is worth making).
    pub(crate) fn counts_tokens(&self) -> bool {
        self.shared.limit.tokens().is_some()
    }

    /// Waits until a call charged `tokens` may go, in line behind the callers already waiting,
    /// and lets it through. The permit says how long that took; settle it with the call's
    /// actual use, or drop it to keep the estimate charged (the safe choice when unknown).
    ///
    /// When the call runs inside [`Lm::complete_observed`](super::Lm::complete_observed), the
    /// wait is reported as it begins.
    pub async fn acquire(&self, tokens: u64) -> RatePermit {
        let started = Instant::now();
        let tokens = self.charge(tokens);
        let place = self.join_line(started, tokens);
        let mut announced = place.expected.filter(|at| *at > started);
        if let Some(at) = announced {
            announce(RateWait {
                cause: place.cause,
                wait: at - started,
            });
        }
        let _turn = self.shared.turn.lock().await;
        loop {
            // Made before looking, so that a settlement in between still wakes this caller.
            let cheaper = self.shared.cheaper.notified();
            let now = Instant::now();
            let (at, cause) = {
                let mut window = self.lock();
                match window.admit_at(&self.shared.limit, now, place.id, tokens) {
                    Ok(()) => {
                        return RatePermit {
                            limiter: self.clone(),
                            id: place.disarm(),
                            waited: now - started,
                        }
                    }
                    Err(later) => later,
                }
            };
            if announced.is_none_or(|a| at > a + ANNOUNCE_SLACK) {
                announce(RateWait {
                    cause,
                    wait: at - now,
                });
                announced = Some(at);
            }
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = cheaper => {}
            }
        }
    }

    /// Holds every call back for `wait` from now (longer pauses already in place stay): the
    /// service said its limit is used up.
    pub fn pause_for(&self, wait: Duration) {
        let Some(until) = Instant::now().checked_add(wait) else {
            return;
        };
        let mut window = self.lock();
        window.paused_until = Some(window.paused_until.map_or(until, |p| p.max(until)));
    }

    /// A charge that can be let through: never more than the whole budget.
    fn charge(&self, tokens: u64) -> u64 {
        match self.shared.limit.tokens() {
            Some(budget) => tokens.min(budget),
            None => 0,
        }
    }

    /// Gets in line at `now`, with when this caller can expect its turn.
    fn join_line(&self, now: Instant, tokens: u64) -> Place<'_> {
        let mut window = self.lock();
        let id = window.new_id();
        window.prune(&self.shared.limit, now);
        let (at, cause) = window.expected(&self.shared.limit, now, tokens);
        window.waiting.push_back(Queued { id, tokens });
        Place {
            limiter: self,
            id,
            armed: true,
            expected: Some(at),
            cause,
        }
    }

    fn settle(&self, id: u64, tokens: u64) {
        let mut window = self.lock();
        let Some(sent) = window.sent.iter_mut().find(|s| s.id == id) else {
            return; // it left the window already
        };
        let cheaper = tokens < sent.tokens;
        sent.tokens = tokens;
        drop(window);
        if cheaper {
            self.shared.cheaper.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // The window stays consistent whatever panicked while holding it: every change is one
        // push, pop or assignment.
        self.shared
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.shared.limit)
            .finish_non_exhaustive()
    }
}

/// A caller's place in line; leaving it (a call given up while waiting) takes it out of the
/// estimates of those behind.
struct Place<'l> {
    limiter: &'l RateLimiter,
    id: u64,
    armed: bool,
    expected: Option<Instant>,
    cause: RateLimitCause,
}

impl Place<'_> {
    /// The caller got through (and the window already took it out of line).
    fn disarm(mut self) -> u64 {
        self.armed = false;
        self.id
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.limiter.lock().waiting.retain(|q| q.id != self.id);
        }
    }
}

impl Window {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Forgets calls that left the window.
    fn prune(&mut self, limit: &RateLimit, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|s| s.at + limit.window() <= now)
        {
            self.sent.pop_front();
        }
        if self.paused_until.is_some_and(|p| p <= now) {
            self.paused_until = None;
        }
    }

    /// Lets caller `id` through now if the limit allows, else says when to look again.
    fn admit_at(
        &mut self,
        limit: &RateLimit,
        now: Instant,
        id: u64,
        tokens: u64,
    ) -> Result<(), (Instant, RateLimitCause)> {
        self.prune(limit, now);
        let (at, cause) = earliest(
            limit,
            self.sent.iter().copied(),
            self.paused_until,
            (now, RateLimitCause::Requests),
            tokens,
        );
        if at > now {
            return Err((at, cause));
        }
        self.waiting.retain(|q| q.id != id);
        // With no limit of its own, the limiter keeps no log (it only holds pauses).
        if limit.requests().is_some() || limit.tokens().is_some() {
            self.sent.push_back(Sent {
                id,
                at: now,
                tokens,
            });
        }
        Ok(())
    }

    /// When a caller joining the line now can expect its turn: after every caller ahead of it
    /// has had theirs, each as early as the limit allows.
    fn expected(&self, limit: &RateLimit, now: Instant, tokens: u64) -> (Instant, RateLimitCause) {
        let mut log: Vec<Sent> = self.sent.iter().copied().collect();
        // Whoever is ahead goes first: this caller's wait has the cause of theirs, if no other.
        let mut not_before = (now, RateLimitCause::Requests);
        for ahead in &self.waiting {
            let turn = earliest(
                limit,
                log.iter().copied(),
                self.paused_until,
                not_before,
                ahead.tokens,
            );
            log.push(Sent {
                id: ahead.id,
                at: turn.0,
                tokens: ahead.tokens,
            });
            not_before = turn;
        }
        earliest(
            limit,
            log.into_iter(),
            self.paused_until,
            not_before,
            tokens,
        )
    }
}

/// The earliest instant, not before `not_before` (with the cause of waiting until then), at which one more call charged `tokens` keeps
/// every window ending then within `limit`, given the calls in `log` (oldest first), and which
/// limit holds it back.
fn earliest(
    limit: &RateLimit,
    log: impl DoubleEndedIterator<Item = Sent>,
    paused_until: Option<Instant>,
    not_before: (Instant, RateLimitCause),
    tokens: u64,
) -> (Instant, RateLimitCause) {
    let window = limit.window();
    let mut at = not_before;
    let mut later = |candidate: Instant, cause| {
        if candidate > at.0 {
            at = (candidate, cause);
        }
    };
    if let Some(until) = paused_until {
        later(until, RateLimitCause::Service);
    }
    let mut charged = tokens;
    // Newest first: the call that must have left the window is the one that makes the count
    // (or the tokens) go over.
    for (newer, sent) in log.rev().enumerate() {
        let newer = newer as u64 + 1;
        if limit.requests().is_some_and(|n| newer >= n) {
            later(sent.at + window, RateLimitCause::Requests);
            break;
        }
        charged = charged.saturating_add(sent.tokens);
        if limit.tokens().is_some_and(|budget| charged > budget) {
            later(sent.at + window, RateLimitCause::Tokens);
            break;
        }
    }
    at
}

/// A call let through by a [`RateLimiter`]. Dropping it keeps the estimate charged.
#[must_use = "settle the permit with the call's actual tokens, or drop it to keep the estimate"]
pub struct RatePermit {
    limiter: RateLimiter,
    id: u64,
    waited: Duration,
}

impl RatePermit {
    /// How long the call waited for its turn.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Charges the call what it actually used instead of its estimate.
    pub fn settle(self, tokens: u64) {
        self.limiter.settle(self.id, tokens);
    }
}

impl fmt::Debug for RatePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatePermit")
            .field("waited", &self.waited)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    fn limiter(requests: u64, window_ms: u64) -> RateLimiter {
        RateLimiter::new(RateLimit::per(requests, Duration::from_millis(window_ms)).unwrap())
    }

    /// The most instants of `times` that any window of `window` holds.
    fn busiest(times: &[Instant], window: Duration) -> usize {
        let mut sorted = times.to_vec();
        sorted.sort();
        (0..sorted.len())
            .map(|i| {
                sorted[i..]
                    .iter()
                    .take_while(|t| **t < sorted[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_calls_wait_for_the_window() {
        let limiter = limiter(3, 1000);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.acquire(0).await.waited(), Duration::ZERO);
        }
        let fourth = limiter.acquire(0).await;
        assert_eq!(fourth.waited(), Duration::from_secs(1));
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_never_exceed_the_limit_in_any_window() {
        let limiter = limiter(3, 1000);
        let admitted = Arc::new(StdMutex::new(Vec::new()));
        let tasks: Vec<_> = (0..6u64)
            .map(|task| {
                let (limiter, admitted) = (limiter.clone(), Arc::clone(&admitted));
                tokio::spawn(async move {
                    for call in 0..4u64 {
                        // Uneven work between calls, so the callers interleave.
                        tokio::time::sleep(Duration::from_millis(37 * ((task + call) % 5))).await;
                        let _permit = limiter.acquire(0).await;
                        admitted.lock().unwrap().push(Instant::now());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let admitted = admitted.lock().unwrap();
        assert_eq!(admitted.len(), 24);
        assert_eq!(busiest(&admitted, Duration::from_secs(1)), 3);
        // 24 calls at 3 a second need 7 full windows after the first burst, and no more.
        let span = *admitted.iter().max().unwrap() - *admitted.iter().min().unwrap();
        assert!(span >= Duration::from_secs(7), "{span:?}");
        assert!(span < Duration::from_secs(8), "{span:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_charged_the_estimate_then_the_actual_use() {
        let limiter = RateLimiter::new(RateLimit::tokens_per(100, Duration::from_secs(1)).unwrap());
        drop(limiter.acquire(60).await); // the estimate stays charged
        let second = limiter.acquire(60).await;
        assert_eq!(second.waited(), Duration::from_secs(1), "60 + 60 > 100");
        // The second used only 10: another 60 fits beside it at once.
        second.settle(10);
        assert_eq!(limiter.acquire(60).await.waited(), Duration::ZERO);
        // More than the whole budget goes alone, once the window is empty.
        let big = limiter.acquire(5_000).await;
        assert_eq!(big.waited(), Duration::from_secs(1));
        assert_eq!(limiter.acquire(1).await.waited(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_waiting_on_an_estimate_goes_once_the_call_is_settled_cheaper() {
        let limiter = RateLimiter::new(RateLimit::tokens_per(100, Duration::from_secs(1)).unwrap());
        let first = limiter.acquire(80).await;
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(80).await.waited() }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.settle(15);
        assert_eq!(waiting.await.unwrap(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller_and_is_announced_as_the_services() {
        let limiter = RateLimiter::unlimited();
        limiter.pause_for(Duration::from_millis(300));
        let waits = Arc::new(StdMutex::new(Vec::new()));
        let seen = Arc::clone(&waits);
        let permit = observing(
            Arc::new(move |w: &RateWait| seen.lock().unwrap().push(*w)),
            {
                let limiter = limiter.clone();
                async move { limiter.acquire(0).await }
            },
        )
        .await;
        assert_eq!(permit.waited(), Duration::from_millis(300));
        assert_eq!(
            *waits.lock().unwrap(),
            vec![RateWait {
                cause: RateLimitCause::Service,
                wait: Duration::from_millis(300)
            }]
        );
        // Once over, nothing is held back, and an unlimited limiter keeps no log.
        assert_eq!(limiter.acquire(0).await.waited(), Duration::ZERO);
        assert!(limiter.lock().sent.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn callers_in_line_are_told_their_wait_at_once_and_served_in_order() {
        let limiter = limiter(1, 100);
        drop(limiter.acquire(0).await);
        let order = Arc::new(StdMutex::new(Vec::new()));
        let tasks: Vec<_> = (0..3u32)
            .map(|i| {
                let (limiter, order) = (limiter.clone(), Arc::clone(&order));
                tokio::spawn(async move {
                    let told = Arc::new(StdMutex::new(Vec::new()));
                    let seen = Arc::clone(&told);
                    let on_wait = Arc::new(move |w: &RateWait| seen.lock().unwrap().push(w.wait));
                    let permit = observing(on_wait, limiter.acquire(0)).await;
                    order.lock().unwrap().push(i);
                    let told = told.lock().unwrap().clone();
                    (permit.waited(), told)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        for (i, (waited, told)) in results.into_iter().enumerate() {
            let expected = Duration::from_millis(100 * (i as u64 + 1));
            assert_eq!(waited, expected);
            // One announcement, made when the wait began, and right.
            assert_eq!(told, vec![expected], "caller {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_leaves_the_line() {
        let limiter = limiter(1, 100);
        drop(limiter.acquire(0).await);
        let gave_up = tokio::time::timeout(Duration::from_millis(10), limiter.acquire(0)).await;
        assert!(gave_up.is_err());
        assert!(limiter.lock().waiting.is_empty());
        assert_eq!(limiter.acquire(0).await.waited(), Duration::from_millis(90));
    }
}
