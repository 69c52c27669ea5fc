//! Group commits: store calls that arrive while the store is busy go together as one call.

use std::sync::Arc;

use agenthelm::store::StoreError;
use tokio::sync::{mpsc, oneshot};

/// At most this many requests go into one transaction of a [`Batcher`].
const MAX_BATCH: usize = 256;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
