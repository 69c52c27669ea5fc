//! Stopping a run from outside (a Ctrl-C handler, a deadline, a user's button, a service
//! manager's SIGTERM).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// A signal to stop a plan run. Clones share the signal; cancelling any clone cancels all.
///
/// A run can be stopped two ways. [`cancel`](Self::cancel) ends it: no new step starts, running
/// steps get the grace period, and completed work is rolled back. [`suspend`](Self::suspend)
/// pauses it for later: no new step starts, running steps get the grace period and are then
/// aborted (a command tool's process group is killed), nothing is rolled back and the run's end
/// is not recorded, so the run stays resumable; steps aborted this way are run again on resume.
///
/// ```
/// use agenthelm::orchestrate::CancelToken;
///
/// let token = CancelToken::new();
/// let for_handler = token.clone();
/// for_handler.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    suspended: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels: every run watching this token stops starting steps and rolls back.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Suspends: every run watching this token stops starting steps, aborts its running steps
    /// after the grace period and ends without rollback and without recording its end, so that
    /// it can be resumed. The run ends with [`OrchestratorError::Suspended`].
    ///
    /// [`OrchestratorError::Suspended`]: super::OrchestratorError::Suspended
    pub fn suspend(&self) {
        self.inner.suspended.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`suspend`](Self::suspend) was called.
    pub fn is_suspended(&self) -> bool {
        self.inner.suspended.load(Ordering::SeqCst)
    }

    /// Resolves once the token is cancelled.
    pub async fn cancelled(&self) {
        self.until(Self::is_cancelled).await;
    }

    /// Resolves once the token is cancelled or suspended.
    pub(crate) async fn stop_requested(&self) {
        self.until(|token| token.is_cancelled() || token.is_suspended())
            .await;
    }

    async fn until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let notified = self.inner.notify.notified();
            if done(self) {
                return;
            }
            notified.await;
        }
    }
}
