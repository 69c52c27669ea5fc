//! The work that travels: what a coordinator asks a worker to do, the keys that name it, and
//! how its outcome is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agenthelm::orchestrate::{RemoteOutcome, StepWork, UndoWork};
use agenthelm::store::{StoreError, WorkOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::queue::{Notifications, WorkQueue};

/// At most this many requests go into one transaction of a [`Batcher`].
const MAX_BATCH: usize = 256;

/// One piece of work, as kept in the store (the queue carries only its key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Carry out a step.
    Step(StepWork),
    /// Carry out a compensating action.
    Undo(UndoWork),
}

/// The key of round `round` of a step: the same in every attempt of that round, so a
/// redelivered step keeps its tools' idempotency keys. A new round starts only when a step is
/// run again on purpose (after it waited for a person's decision).
pub fn step_key(run_id: &str, step_id: &str, round: u32) -> String {
    format!("{run_id}/{step_id}/step/{round}")
}

/// The round of a step's key (see [`step_key`]); `None` for other keys.
pub fn round_of(key: &str) -> Option<u32> {
    let (rest, round) = key.rsplit_once('/')?;
    rest.ends_with("/step")
        .then(|| round.parse().ok())
        .flatten()
}

/// The key of compensating action `action` of a step.
pub fn undo_key(run_id: &str, step_id: &str, action: usize) -> String {
    format!("{run_id}/{step_id}/undo/{action}")
}

/// The subject a worker announces finished work of `run_id` on (core NATS, a wake-up only:
/// the outcome itself is in the store).
pub fn done_subject(run_id: &str) -> String {
    let token: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("agenthelm.done.{token}")
}

/// A step's outcome as the store keeps it.
pub fn from_step(outcome: &RemoteOutcome, attempt: i64) -> WorkOutcome {
    let error = match outcome {
        RemoteOutcome::Failed { error } => Some(error.clone()),
        _ => None,
    };
    WorkOutcome {
        success: matches!(outcome, RemoteOutcome::Completed { .. }),
        value: serde_json::to_value(outcome).unwrap_or(Value::Null),
        error,
        attempt,
    }
}

/// A compensation's outcome as the store keeps it.
pub fn from_undo(outcome: &Result<(), String>, attempt: i64) -> WorkOutcome {
    WorkOutcome {
        success: outcome.is_ok(),
        value: Value::Null,
        error: outcome.as_ref().err().cloned(),
        attempt,
    }
}

/// The step outcome a stored one stands for (one the store failed itself, say after its
/// deliveries ran out, is a failure with its reason).
pub fn to_step(outcome: &WorkOutcome) -> RemoteOutcome {
    serde_json::from_value(outcome.value.clone()).unwrap_or_else(|_| RemoteOutcome::Failed {
        error: outcome
            .error
            .clone()
            .unwrap_or_else(|| "the work failed without a reason".to_owned()),
    })
}

/// The compensation outcome a stored one stands for.
pub fn to_undo(outcome: &WorkOutcome) -> Result<(), String> {
    match (&outcome.error, outcome.success) {
        (None, true) => Ok(()),
        (error, _) => Err(error
            .clone()
            .unwrap_or_else(|| "the compensation failed without a reason".to_owned())),
    }
}

/// Store calls that arrive while the store is busy with others, made as one call for all of
/// them (one transaction, one commit): a group commit over a store's single connection. Its
/// calls block, so they run on a blocking thread and leave the runtime's threads free.
pub(crate) struct Batcher<Q, A> {
    requests: mpsc::UnboundedSender<(Q, oneshot::Sender<Result<A, StoreError>>)>,
}

/// Answers a batch of requests: as a whole (`Err` fails every request), then one by one in the
/// requests' order.
type BatchCall<Q, A> =
    dyn Fn(Vec<Q>) -> Result<Vec<Result<A, StoreError>>, StoreError> + Send + Sync;

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// A batcher answering with `call`; it stops once the batcher is dropped and the requests
    /// under way are answered. Must be made inside a Tokio runtime.
    pub(crate) fn start(
        call: impl Fn(Vec<Q>) -> Result<Vec<Result<A, StoreError>>, StoreError> + Send + Sync + 'static,
    ) -> Self {
        let (requests, mut waiting) = mpsc::unbounded_channel();
        let call: Arc<BatchCall<Q, A>> = Arc::new(call);
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match waiting.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                answer_batch(Arc::clone(&call), batch).await;
            }
        });
        Batcher { requests }
    }

    /// Sends `request` with the next batch and waits for its answer.
    pub(crate) async fn ask(&self, request: Q) -> Result<A, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the store's batcher has stopped".to_owned());
        self.requests
            .send((request, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Sends `request` with the next batch, not waiting for it.
    pub(crate) fn tell(&self, request: Q) {
        let (reply, _) = oneshot::channel();
        let _ = self.requests.send((request, reply));
    }
}

/// Makes `call` for `batch` on a blocking thread and hands each request its answer.
async fn answer_batch<Q: Send + 'static, A: Send + 'static>(
    call: Arc<BatchCall<Q, A>>,
    batch: Vec<(Q, oneshot::Sender<Result<A, StoreError>>)>,
) {
    let (requests, replies): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
    let count = requests.len();
    let failed = |error: StoreError| (0..count).map(|_| Err(error.clone())).collect();
    let answers = match tokio::task::spawn_blocking(move || call(requests)).await {
        Ok(Ok(answers)) if answers.len() == count => answers,
        Ok(Ok(answers)) => failed(StoreError::Backend(format!(
            "the store answered {} of {count} requests",
            answers.len()
        ))),
        Ok(Err(error)) => failed(error),
        Err(e) => failed(StoreError::Backend(format!("a store call stopped: {e}"))),
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

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
    pub(crate) fn expect(&self, key: &str) -> Wakeup {
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

/// A wait for one work's notice (see [`Wakeups::expect`]); it stops waiting when dropped.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_survive_the_store() {
        for outcome in [
            RemoteOutcome::Completed {
                value: json!({"id": 7}),
                call: Some("a#1".into()),
            },
            RemoteOutcome::Failed {
                error: "boom".into(),
            },
            RemoteOutcome::Parked,
        ] {
            assert_eq!(to_step(&from_step(&outcome, 1)), outcome);
        }
        assert_eq!(to_undo(&from_undo(&Err("no".into()), 2)), Err("no".into()));
        assert_eq!(to_undo(&from_undo(&Ok(()), 2)), Ok(()));
    }

    #[test]
    fn work_failed_by_the_store_is_a_step_failure_with_its_reason() {
        let exhausted = WorkOutcome {
            success: false,
            value: Value::Null,
            error: Some("delivered 5 times without a result".into()),
            attempt: 5,
        };
        assert_eq!(
            to_step(&exhausted),
            RemoteOutcome::Failed {
                error: "delivered 5 times without a result".into()
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batcher_answers_each_request_with_its_own_answer_and_fails_a_failed_batch_whole() {
        let batcher = Batcher::start(|numbers: Vec<i64>| {
            if numbers.contains(&13) {
                return Err(StoreError::Backend("unlucky batch".into()));
            }
            Ok(numbers
                .into_iter()
                .map(|n| {
                    if n < 0 {
                        Err(StoreError::UnknownWork(n.to_string()))
                    } else {
                        Ok(n * 2)
                    }
                })
                .collect())
        });
        let answers = futures::future::join_all((100..200).map(|n| batcher.ask(n))).await;
        let doubled: Vec<i64> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(doubled, (100..200).map(|n| n * 2).collect::<Vec<_>>());
        assert!(matches!(
            batcher.ask(-1).await,
            Err(StoreError::UnknownWork(_))
        ));
        assert!(matches!(batcher.ask(13).await, Err(StoreError::Backend(_))));
        assert_eq!(batcher.ask(4).await.unwrap(), 8);
    }

    #[test]
    fn rounds_are_read_back_from_step_keys_only() {
        assert_eq!(round_of(&step_key("r", "a/b", 3)), Some(3));
        assert_eq!(round_of(&undo_key("r", "a", 3)), None);
        assert_eq!(round_of("nonsense"), None);
    }

    #[test]
    fn subjects_hold_only_safe_characters() {
        assert_eq!(done_subject("run-1a.b c*"), "agenthelm.done.run-1a_b_c_");
    }
}
