//! The work queue: a NATS JetStream work-queue stream with one durable pull consumer per worker
//! pool (DESIGN.md §10).
//!
//! Work for pool `p` is published on `<prefix>.p` (`agenthelm.work.p` by default) with its
//! idempotency key as `Nats-Msg-Id`, so a re-publish within the duplicate window is dropped by
//! the server. A worker of pool `p` pulls from the consumer `pool-p`, keeps a long job alive with
//! [`Delivery::in_progress`] and acks when the outcome is committed; an unacked delivery comes
//! back after `ack_wait`, up to `max_deliver` times, after which it shows up in
//! [`WorkQueue::exhausted`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use async_nats::{header::NATS_MESSAGE_ID, Client, Event, Subscriber};
use futures::StreamExt;
use tokio::sync::watch;

/// The durable consumer of pool `p` is named `pool-p`.
const CONSUMER_PREFIX: &str = "pool-";
/// The longest pause between two failed pulls.
const MAX_PULL_BACKOFF: Duration = Duration::from_secs(2);

/// How the work stream and its consumers are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// The JetStream stream's name (`AGENTHELM_WORK`).
    pub stream: String,
    /// Work for pool `p` goes to `<subject_prefix>.p` (`agenthelm.work`); the stream takes
    /// `<subject_prefix>.*`.
    pub subject_prefix: String,
    /// How long a delivery may go without an ack or an in-progress beat before it is
    /// redelivered (30 s).
    pub ack_wait: Duration,
    /// How many times one piece of work is delivered at most (5).
    pub max_deliver: i64,
    /// Copies of the stream in a NATS cluster (1).
    pub replicas: usize,
    /// How long the server remembers a `Nats-Msg-Id` to drop a duplicate (2 min).
    pub duplicate_window: Duration,
    /// How long [`WorkQueue::connect`] waits for the server, and how long a JetStream request
    /// (publish ack, consumer set-up, ack confirmation) waits for its answer (5 s).
    pub connect_timeout: Duration,
    /// How long one pull request stays at the server before [`PoolConsumer::next`] sends
    /// another (5 s); after a reconnect, pulling resumes within this time plus 5 s.
    pub pull_expiry: Duration,
    /// How many reconnect attempts in a row before the client gives up for good and every
    /// call fails with [`QueueError::Closed`]; `None` (the default) tries forever.
    pub max_reconnects: Option<usize>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            stream: "AGENTHELM_WORK".to_owned(),
            subject_prefix: "agenthelm.work".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
            pull_expiry: Duration::from_secs(5),
            max_reconnects: None,
        }
    }
}

/// What went wrong with the work queue. Messages name the server (its URL without user name or
/// password) and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The server's URL, without credentials.
        url: String,
        /// Why.
        reason: String,
    },
    /// An operation on the server failed.
    #[error("NATS at {url}: cannot {doing}: {reason}")]
    Operation {
        /// The server's URL, without credentials.
        url: String,
        /// What was being done, e.g. `publish work to agenthelm.work.gpu`.
        doing: String,
        /// Why.
        reason: String,
    },
    /// A pool name that cannot be a subject token or a consumer name.
    #[error(
        "pool name {0:?} is not usable: use letters, digits, '-' and '_' only (no '.', '*', '>' \
         or spaces)"
    )]
    InvalidPool(String),
    /// The client can no longer send anything: the connection is closed for good.
    #[error("the connection to NATS at {url} is closed")]
    Closed {
        /// The server's URL, without credentials.
        url: String,
    },
}

/// The server's URL for messages (credentials removed) and the secrets to scrub from the
/// client library's error texts.
#[derive(Debug)]
struct Server {
    shown: String,
    secrets: Vec<String>,
}

impl Server {
    fn new(urls: &str) -> Server {
        let mut secrets = Vec::new();
        let shown = urls
            .split(',')
            .map(|url| {
                let url = url.trim();
                let (scheme, rest) = url.find("://").map_or(("", url), |i| url.split_at(i + 3));
                let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
                match authority.rfind('@') {
                    Some(at) => {
                        let userinfo = &authority[..at];
                        secrets.push(userinfo.to_owned());
                        secrets.extend(userinfo.split(':').map(str::to_owned));
                        format!("{scheme}***@{}", &rest[at + 1..])
                    }
                    None => url.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        secrets.retain(|s| !s.is_empty());
        // The longest first, so that `user:pass` goes before `user` and `pass`.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Server { shown, secrets }
    }

    fn scrub(&self, text: impl std::fmt::Display) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    fn failed(&self, doing: impl Into<String>, reason: impl std::fmt::Display) -> QueueError {
        QueueError::Operation {
            url: self.shown.clone(),
            doing: doing.into(),
            reason: self.scrub(reason),
        }
    }

    fn closed(&self) -> QueueError {
        QueueError::Closed {
            url: self.shown.clone(),
        }
    }
}

/// A connection to the work queue; cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub struct WorkQueue {
    client: Client,
    jetstream: jetstream::Context,
    settings: Arc<QueueSettings>,
    server: Arc<Server>,
    link: watch::Receiver<Link>,
}

/// The state of the connection, as the client's events tell it.
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    /// How many times the client has (re)connected.
    connects: u64,
    /// The client gave up: nothing will be sent or received any more.
    closed: bool,
}

/// Follows the client's events in `link` (and logs the lost and regained connections).
fn follow_events(
    options: async_nats::ConnectOptions,
    link: watch::Sender<Link>,
    shown: String,
) -> async_nats::ConnectOptions {
    let link = Arc::new(link);
    options.event_callback(move |event| {
        let link = link.clone();
        let shown = shown.clone();
        async move {
            match event {
                Event::Connected => {
                    tracing::debug!(server = %shown, "connected to NATS");
                    link.send_modify(|l| l.connects += 1);
                }
                Event::Disconnected => {
                    tracing::warn!(server = %shown, "lost the connection to NATS; reconnecting")
                }
                Event::Closed => link.send_modify(|l| l.closed = true),
                _ => {}
            }
        }
    })
}

impl WorkQueue {
    /// Connects and makes sure the stream exists: subjects `<subject_prefix>.*`, retention
    /// WorkQueue, file storage, the duplicate window. Re-running it on an existing stream is
    /// fine (a changed duplicate window or replica count is applied).
    ///
    /// Connecting is bounded by `settings.connect_timeout`, and so is each JetStream request
    /// that sets up the stream. Once connected, the client reconnects on its own (for as long
    /// as a clone of this queue lives).
    pub async fn connect(url: &str, settings: QueueSettings) -> Result<WorkQueue, QueueError> {
        let server = Arc::new(Server::new(url));
        let (link_sender, link) = watch::channel(Link::default());
        let options = async_nats::ConnectOptions::new()
            .name("agenthelm")
            .connection_timeout(settings.connect_timeout)
            .max_reconnects(settings.max_reconnects);
        let options = follow_events(options, link_sender, server.shown.clone());
        let client = tokio::time::timeout(settings.connect_timeout, options.connect(url))
            .await
            .map_err(|_| QueueError::Connect {
                url: server.shown.clone(),
                reason: format!("no answer within {:?}", settings.connect_timeout),
            })?
            .map_err(|e| QueueError::Connect {
                url: server.shown.clone(),
                reason: server.scrub(e),
            })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(settings.connect_timeout);
        let queue = WorkQueue {
            client,
            jetstream,
            settings: Arc::new(settings),
            server,
            link,
        };
        queue.ensure_stream().await?;
        Ok(queue)
    }

    /// The settings it was connected with.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![format!("{}.*", self.settings.subject_prefix)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: self.settings.duplicate_window,
            num_replicas: self.settings.replicas,
            ..Default::default()
        }
    }

    async fn ensure_stream(&self) -> Result<(), QueueError> {
        let config = self.stream_config();
        let doing = || format!("create the stream {}", self.settings.stream);
        match self.jetstream.create_stream(config.clone()).await {
            Ok(_) => Ok(()),
            Err(e) if already_exists(&e) => {
                self.jetstream.update_stream(config).await.map_err(|e| {
                    self.server
                        .failed(format!("update the stream {}", self.settings.stream), e)
                })?;
                Ok(())
            }
            Err(e) => Err(self.server.failed(doing(), e)),
        }
    }

    /// How many messages the stream holds now: work not yet acked (delivered or not) plus
    /// terminated or exhausted work not yet deleted.
    pub async fn stored_messages(&self) -> Result<u64, QueueError> {
        let doing = || format!("read the state of stream {}", self.settings.stream);
        let stream = self
            .jetstream
            .get_stream(self.settings.stream.as_str())
            .await
            .map_err(|e| self.server.failed(doing(), e))?;
        let info = stream.cached_info();
        Ok(info.state.messages)
    }

    fn subject(&self, pool: &str) -> Result<String, QueueError> {
        check_pool(pool)?;
        Ok(format!("{}.{pool}", self.settings.subject_prefix))
    }

    /// Publishes work for `pool` on `<subject_prefix>.<pool>` with header `Nats-Msg-Id` =
    /// `msg_id`, and waits for JetStream's ack (so it is stored). A duplicate (same id within
    /// the duplicate window) is Ok: the first copy is the one delivered.
    pub async fn publish(
        &self,
        pool: &str,
        msg_id: &str,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        let subject = self.subject(pool)?;
        let doing = || format!("publish work {msg_id:?} to {subject}");
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.to_vec().into())
            .message_id(msg_id);
        let ack = self
            .jetstream
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| self.server.failed(doing(), e))?;
        ack.await.map_err(|e| self.server.failed(doing(), e))?;
        Ok(())
    }

    /// The durable pull consumer of a pool (`pool-<pool>`, filter `<subject_prefix>.<pool>`,
    /// explicit ack, `ack_wait` and `max_deliver` from the settings); made if missing, updated
    /// to the settings if it exists.
    pub async fn consumer(&self, pool: &str) -> Result<PoolConsumer, QueueError> {
        let subject = self.subject(pool)?;
        let name = format!("{CONSUMER_PREFIX}{pool}");
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: self.settings.max_deliver,
            ..Default::default()
        };
        let consumer = self
            .jetstream
            .create_consumer_on_stream(config, self.settings.stream.as_str())
            .await
            .map_err(|e| {
                self.server.failed(
                    format!(
                        "create the consumer {name} on stream {}",
                        self.settings.stream
                    ),
                    e,
                )
            })?;
        Ok(PoolConsumer {
            consumer,
            name,
            expiry: self.settings.pull_expiry,
            server: self.server.clone(),
            link: self.link.clone(),
        })
    }

    /// Publishes `payload` on `subject` with core NATS (not stored: only current subscribers
    /// get it), e.g. a "work done" wakeup to a coordinator.
    pub async fn notify(&self, subject: &str, payload: &[u8]) -> Result<(), QueueError> {
        self.client
            .publish(subject.to_owned(), payload.to_vec().into())
            .await
            .map_err(|e| self.server.failed(format!("notify {subject}"), e))
    }

    /// Subscribes to `subject` (core NATS; wildcards allowed). The subscription is in place at
    /// the server when this returns, so a notification sent after it is received.
    pub async fn subscribe(&self, subject: &str) -> Result<Notifications, QueueError> {
        let subscriber = self.subscribed(subject).await?;
        Ok(Notifications { subscriber })
    }

    async fn subscribed(&self, subject: &str) -> Result<Subscriber, QueueError> {
        let doing = || format!("subscribe to {subject}");
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| self.server.failed(doing(), e))?;
        // The server reads a connection in order, so once it answers a request sent after the
        // subscription, it has the subscription (`flush` only writes to the socket).
        self.jetstream
            .query_account()
            .await
            .map_err(|e| self.server.failed(doing(), e))?;
        Ok(subscriber)
    }

    /// Work whose deliveries ran out (`max_deliver` reached without an ack), from every pool's
    /// consumer: built on the JetStream advisory
    /// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`. Each one is read from
    /// the stream (for its `Nats-Msg-Id`) and deleted from it, so it does not stay there
    /// forever.
    ///
    /// Advisories are core NATS messages: only work exhausted while this subscription lives is
    /// reported. The server notices exhaustion lazily: when a pull request of that pool's
    /// consumer is waiting after the last delivery's `ack_wait` (so a pool with no worker
    /// pulling reports nothing). With several subscribers, the one whose delete succeeds
    /// reports it.
    pub async fn exhausted(&self) -> Result<ExhaustedWork, QueueError> {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            self.settings.stream
        );
        let advisories = self.subscribed(&subject).await?;
        Ok(ExhaustedWork {
            advisories,
            queue: self.clone(),
        })
    }
}

fn already_exists(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST
    )
}

/// A pool name must be one subject token and a valid consumer name.
fn check_pool(pool: &str) -> Result<(), QueueError> {
    let usable = !pool.is_empty()
        && pool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if usable {
        Ok(())
    } else {
        Err(QueueError::InvalidPool(pool.to_owned()))
    }
}

/// A worker pool's durable pull consumer.
#[derive(Debug)]
pub struct PoolConsumer {
    consumer: jetstream::consumer::PullConsumer,
    name: String,
    expiry: Duration,
    server: Arc<Server>,
    link: watch::Receiver<Link>,
}

impl PoolConsumer {
    /// The consumer's name (`pool-<pool>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next piece of work: pulls one message at a time with an expiry, again and
    /// again, until one arrives. A pull waiting when the connection comes back is sent again at
    /// once (the server forgot it if it restarted); failed pulls (JetStream not ready yet) are
    /// retried with a growing pause. Errors only when the connection is closed for good.
    ///
    /// Dropping the future while it waits (or a reconnect while a pull is in flight) leaves a
    /// pull request at the server until it expires: a message delivered to it then comes back
    /// after `ack_wait`, one delivery more.
    pub async fn next(&mut self) -> Result<Delivery, QueueError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.link.borrow_and_update().closed {
                return Err(self.server.closed());
            }
            // Making a pull only fails when the client can no longer send anything.
            let mut pull = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(self.expiry)
                .messages()
                .await
                .map_err(|_| self.server.closed())?;
            let pulled = tokio::select! {
                pulled = pull.next() => pulled,
                Ok(()) = self.link.changed() => continue,
            };
            match pulled {
                Some(Ok(message)) => {
                    return Ok(Delivery::new(message, self.server.clone()));
                }
                None => backoff = Duration::from_millis(50),
                Some(Err(e)) => {
                    tracing::debug!(consumer = %self.name, error = %self.server.scrub(&e), "pull failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_PULL_BACKOFF);
                }
            }
        }
    }
}

/// One delivery of a piece of work. Ack it once its outcome is committed.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    deliveries: u64,
    server: Arc<Server>,
}

impl Delivery {
    fn new(message: jetstream::Message, server: Arc<Server>) -> Delivery {
        // Every JetStream delivery has an ack subject carrying the count; 1 if one ever lacks it.
        let deliveries = message
            .info()
            .map_or(1, |info| u64::try_from(info.delivered).unwrap_or(1));
        Delivery {
            message,
            deliveries,
            server,
        }
    }

    /// The work's bytes, as published.
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// The `Nats-Msg-Id` it was published with.
    pub fn msg_id(&self) -> Option<&str> {
        self.message
            .headers
            .as_ref()?
            .get(NATS_MESSAGE_ID)
            .map(|value| value.as_str())
    }

    /// How many times it has been delivered, this delivery included.
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    fn doing(&self, what: &str) -> String {
        format!(
            "{what} work {:?}",
            self.msg_id().unwrap_or("(no Nats-Msg-Id)")
        )
    }

    /// Acks it and waits for the server to confirm (a double ack): once this returns Ok, the
    /// work is gone from the queue.
    pub async fn ack(&self) -> Result<(), QueueError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| self.server.failed(self.doing("ack"), e))
    }

    /// Says the work is still being done: restarts the `ack_wait` clock.
    pub async fn in_progress(&self) -> Result<(), QueueError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| self.server.failed(self.doing("mark in progress"), e))
    }

    /// Hands it back for redelivery, after `delay` if given (else at once).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<(), QueueError> {
        self.message
            .ack_with(AckKind::Nak(delay))
            .await
            .map_err(|e| self.server.failed(self.doing("nak"), e))
    }

    /// Gives up on it: never delivered again (the server removes it from the work-queue
    /// stream).
    pub async fn term(&self) -> Result<(), QueueError> {
        self.message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| self.server.failed(self.doing("terminate"), e))
    }
}

/// Core NATS notifications on one subject (see [`WorkQueue::subscribe`]).
#[derive(Debug)]
pub struct Notifications {
    subscriber: Subscriber,
}

impl Notifications {
    /// The next notification's payload; `None` once the connection is closed for good.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        self.subscriber
            .next()
            .await
            .map(|message| message.payload.to_vec())
    }
}

/// A piece of work that reached `max_deliver` without an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    /// The pool whose consumer gave up on it.
    pub pool: String,
    /// Its `Nats-Msg-Id` (`None` if it was published without one).
    pub msg_id: Option<String>,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// The advisory's fields that matter here.
#[derive(serde::Deserialize)]
struct MaxDeliveriesAdvisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

/// Work whose deliveries ran out (see [`WorkQueue::exhausted`]).
#[derive(Debug)]
pub struct ExhaustedWork {
    advisories: Subscriber,
    queue: WorkQueue,
}

impl ExhaustedWork {
    /// The next exhausted piece of work, already deleted from the stream. `None` once the
    /// connection is closed for good.
    pub async fn next(&mut self) -> Option<Result<Exhausted, QueueError>> {
        loop {
            let advisory = self.advisories.next().await?;
            let Ok(advisory) = serde_json::from_slice::<MaxDeliveriesAdvisory>(&advisory.payload)
            else {
                tracing::warn!(subject = %advisory.subject, "unreadable max-deliveries advisory; skipped");
                continue;
            };
            match self.take(advisory).await {
                Ok(Some(exhausted)) => return Some(Ok(exhausted)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads the message named by `advisory` and deletes it; `None` when it is not ours (another
    /// pool prefix) or someone else deleted it first.
    async fn take(&self, advisory: MaxDeliveriesAdvisory) -> Result<Option<Exhausted>, QueueError> {
        let Some(pool) = advisory.consumer.strip_prefix(CONSUMER_PREFIX) else {
            return Ok(None);
        };
        let server = &self.queue.server;
        let doing = |what: &str| {
            format!(
                "{what} message {} of stream {}",
                advisory.stream_seq, advisory.stream
            )
        };
        let stream = self
            .queue
            .jetstream
            .get_stream_no_info(advisory.stream.as_str())
            .await
            .map_err(|e| server.failed(doing("find the stream of"), e))?;
        let message = match stream.get_raw_message(advisory.stream_seq).await {
            Ok(message) => message,
            Err(e) if read_found_nothing(&e) => return Ok(None),
            Err(e) => return Err(server.failed(doing("read exhausted"), e)),
        };
        match stream.delete_message(advisory.stream_seq).await {
            Ok(_) => {}
            Err(e) if delete_found_nothing(&e) => return Ok(None),
            Err(e) => return Err(server.failed(doing("delete exhausted"), e)),
        }
        let msg_id = message
            .headers
            .get(NATS_MESSAGE_ID)
            .map(|value| value.as_str().to_owned());
        Ok(Some(Exhausted {
            pool: pool.to_owned(),
            msg_id,
            deliveries: advisory.deliveries,
        }))
    }
}

fn read_found_nothing(error: &stream::RawMessageError) -> bool {
    match error.kind() {
        stream::RawMessageErrorKind::NoMessageFound => true,
        stream::RawMessageErrorKind::JetStream(e) => is_no_message(&e),
        _ => false,
    }
}

fn delete_found_nothing(error: &stream::DeleteMessageError) -> bool {
    matches!(error.kind(), stream::DeleteMessageErrorKind::JetStream(e) if is_no_message(&e))
}

fn is_no_message(error: &jetstream::Error) -> bool {
    error.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
}
