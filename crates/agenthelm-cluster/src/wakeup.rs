//! Wake-ups: a worker's notice that work finished, routed to the coordinator's step waiting
//! for it (the outcome itself is read from the store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::queue::{Notifications, WorkQueue};
use crate::work::done_subject;

/// The wake-ups of one run's finished work: one subscription to the run's [`done_subject`],
/// each notice handed to whoever waits for its key. When the subscription cannot be made or
/// ends (NATS went away), waiters only poll.
pub(crate) struct Wakeups {
    waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    router: Option<tokio::task::JoinHandle<()>>,
}

impl Wakeups {
    /// Listens for the notices of run `run_id`'s work.
    pub(crate) async fn listen(queue: &WorkQueue, run_id: &str) -> Wakeups {
        let waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
        let router = match queue.subscribe(&done_subject(run_id)).await {
            Ok(notices) => Some(tokio::spawn(route(notices, Arc::clone(&waiting)))),
            Err(e) => {
                tracing::warn!(run = run_id, error = %e, "no wake-ups from workers: polling the store");
                None
            }
        };
        Wakeups { waiting, router }
    }

    /// Starts waiting for `key`'s notice: a notice that comes from now on is kept for
    /// [`Wakeup::within`] (so register before dispatching).
    pub(crate) fn watch(&self, key: &str) -> Wakeup {
        let notify = Arc::new(Notify::new());
        lock(&self.waiting).insert(key.to_owned(), Arc::clone(&notify));
        Wakeup {
            key: key.to_owned(),
            notify,
            waiting: Arc::clone(&self.waiting),
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(router) = &self.router {
            router.abort();
        }
    }
}

/// Hands each notice to the waiter of its key.
async fn route(mut notices: Notifications, waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>>) {
    while let Some(notice) = notices.next().await {
        let Ok(key) = std::str::from_utf8(&notice) else {
            continue;
        };
        if let Some(notify) = lock(&waiting).get(key) {
            notify.notify_one();
        }
    }
}

/// A wait for one work's notice (see [`Wakeups::watch`]); it stops waiting when dropped.
pub(crate) struct Wakeup {
    key: String,
    notify: Arc<Notify>,
    waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Wakeup {
    /// Returns when the notice came (now or earlier), or after `poll`.
    pub(crate) async fn within(&self, poll: Duration) {
        let _ = tokio::time::timeout(poll, self.notify.notified()).await;
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiting);
        if waiting
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            waiting.remove(&self.key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
