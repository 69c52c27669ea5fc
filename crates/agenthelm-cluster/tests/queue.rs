//! The work queue against a real nats-server with JetStream (started in a temp folder; the tests
//! skip, saying why, only when nats-server cannot be found).

use std::time::{Duration, Instant};

use agenthelm_cluster::queue::{Delivery, PoolConsumer, QueueError, QueueSettings, WorkQueue};
use agenthelm_test_support::NatsServer;

/// The shared server, or a printed reason and an early return.
macro_rules! server_or_skip {
    () => {
        match NatsServer::shared() {
            Ok(server) => server,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// Settings with a stream and subjects of the test's own, so tests can share one server.
fn settings(test: &str) -> QueueSettings {
    QueueSettings {
        stream: format!("T_{}", test.to_uppercase()),
        subject_prefix: format!("test.{test}"),
        ack_wait: Duration::from_secs(1),
        pull_expiry: Duration::from_secs(1),
        ..QueueSettings::default()
    }
}

async fn connect(server: &NatsServer, settings: QueueSettings) -> WorkQueue {
    WorkQueue::connect(&server.url(), settings)
        .await
        .expect("connect to the test server")
}

/// The next delivery, failing the test after `within`.
async fn next_within(consumer: &mut PoolConsumer, within: Duration) -> Delivery {
    tokio::time::timeout(within, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery on {} within {within:?}", consumer.name()))
        .expect("pull work")
}

/// True when nothing is delivered for `quiet`.
async fn nothing_for(consumer: &mut PoolConsumer, quiet: Duration) -> bool {
    match tokio::time::timeout(quiet, consumer.next()).await {
        Err(_) => true,
        Ok(delivery) => {
            let delivery = delivery.expect("pull work");
            eprintln!(
                "unexpected delivery {:?} (#{})",
                delivery.msg_id(),
                delivery.deliveries()
            );
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_work_is_delivered_once_and_acked() {
    let server = server_or_skip!();
    let queue = connect(server, settings("roundtrip")).await;
    let mut consumer = queue.consumer("cpu").await.unwrap();
    queue
        .publish("cpu", "run1/step1/1", b"hello")
        .await
        .unwrap();

    let delivery = next_within(&mut consumer, Duration::from_secs(5)).await;
    assert_eq!(delivery.payload(), b"hello");
    assert_eq!(delivery.msg_id(), Some("run1/step1/1"));
    assert_eq!(delivery.deliveries(), 1);
    delivery.ack().await.unwrap();

    // Past ack_wait (1 s): an acked delivery does not come back, and it left the stream.
    assert!(nothing_for(&mut consumer, Duration::from_millis(1600)).await);
    assert_eq!(queue.stored_messages().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_msg_id_published_twice_is_delivered_once() {
    let server = server_or_skip!();
    let queue = connect(server, settings("dedup")).await;
    let mut consumer = queue.consumer("cpu").await.unwrap();
    queue.publish("cpu", "key-1", b"first").await.unwrap();
    queue.publish("cpu", "key-1", b"second").await.unwrap();
    assert_eq!(queue.stored_messages().await.unwrap(), 1);

    let delivery = next_within(&mut consumer, Duration::from_secs(5)).await;
    assert_eq!(delivery.payload(), b"first");
    delivery.ack().await.unwrap();
    // Done and gone from the stream, its id is still remembered (while the server runs).
    queue.publish("cpu", "key-1", b"third").await.unwrap();
    assert_eq!(queue.stored_messages().await.unwrap(), 0);
    assert!(nothing_for(&mut consumer, Duration::from_millis(1500)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_work_is_redelivered_after_ack_wait() {
    let server = server_or_skip!();
    let queue = connect(server, settings("redeliver")).await;
    let mut consumer = queue.consumer("cpu").await.unwrap();
    queue.publish("cpu", "key-r", b"work").await.unwrap();

    let first = next_within(&mut consumer, Duration::from_secs(5)).await;
    assert_eq!(first.deliveries(), 1);
    let sent = Instant::now();
    drop(first); // a worker that died without acking

    let second = next_within(&mut consumer, Duration::from_secs(5)).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "redelivered after {:?}, before ack_wait",
        sent.elapsed()
    );
    assert_eq!(second.msg_id(), Some("key-r"));
    assert_eq!(second.payload(), b"work");
    assert_eq!(second.deliveries(), 2);
    second.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_beats_keep_a_long_job_from_being_redelivered() {
    let server = server_or_skip!();
    let queue = connect(server, settings("progress")).await;
    let mut worker = queue.consumer("cpu").await.unwrap();
    let mut other_worker = queue.consumer("cpu").await.unwrap();
    queue.publish("cpu", "key-long", b"3 s job").await.unwrap();
    let delivery = next_within(&mut worker, Duration::from_secs(5)).await;

    // A 3 s job with ack_wait 1 s, beating every 300 ms; another worker of the pool pulls all
    // along and must get nothing.
    let job = async {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(300)).await;
            delivery.in_progress().await.unwrap();
        }
        delivery.ack().await.unwrap();
    };
    let (_, quiet) = tokio::join!(
        job,
        nothing_for(&mut other_worker, Duration::from_millis(3500))
    );
    assert!(quiet, "the job was redelivered while it beat");
    assert_eq!(delivery.deliveries(), 1);
    assert_eq!(queue.stored_messages().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nak_hands_work_back_and_term_drops_it() {
    let server = server_or_skip!();
    let queue = connect(
        server,
        QueueSettings {
            ack_wait: Duration::from_secs(30),
            ..settings("nak")
        },
    )
    .await;
    let mut consumer = queue.consumer("cpu").await.unwrap();
    queue.publish("cpu", "key-n", b"work").await.unwrap();

    // A nak without delay: back at once (well before the 30 s ack_wait).
    next_within(&mut consumer, Duration::from_secs(5))
        .await
        .nak(None)
        .await
        .unwrap();
    let again = next_within(&mut consumer, Duration::from_secs(5)).await;
    assert_eq!(again.deliveries(), 2);

    // With a delay: not before it.
    let naked = Instant::now();
    again.nak(Some(Duration::from_secs(1))).await.unwrap();
    let third = next_within(&mut consumer, Duration::from_secs(5)).await;
    assert!(
        naked.elapsed() >= Duration::from_millis(900),
        "{:?}",
        naked.elapsed()
    );
    assert_eq!(third.deliveries(), 3);

    // Terminated: never delivered again, and gone from the work-queue stream.
    third.term().await.unwrap();
    assert!(nothing_for(&mut consumer, Duration::from_millis(500)).await);
    assert_eq!(queue.stored_messages().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pool_sees_only_its_own_work() {
    let server = server_or_skip!();
    let queue = connect(server, settings("pools")).await;
    let mut cpu = queue.consumer("cpu").await.unwrap();
    let mut gpu = queue.consumer("gpu").await.unwrap();
    for i in 0..3 {
        queue
            .publish("gpu", &format!("g{i}"), b"gpu work")
            .await
            .unwrap();
        queue
            .publish("cpu", &format!("c{i}"), b"cpu work")
            .await
            .unwrap();
    }
    for (consumer, prefix) in [(&mut cpu, "c"), (&mut gpu, "g")] {
        for i in 0..3 {
            let delivery = next_within(consumer, Duration::from_secs(5)).await;
            assert_eq!(delivery.msg_id(), Some(format!("{prefix}{i}").as_str()));
            delivery.ack().await.unwrap();
        }
        assert!(nothing_for(consumer, Duration::from_millis(300)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_out_of_deliveries_is_reported_and_removed() {
    let server = server_or_skip!();
    let queue = connect(
        server,
        QueueSettings {
            max_deliver: 2,
            ..settings("exhausted")
        },
    )
    .await;
    let mut exhausted = queue.exhausted().await.unwrap();
    let mut consumer = queue.consumer("flaky").await.unwrap();
    queue
        .publish("flaky", "key-poison", b"crashes the worker")
        .await
        .unwrap();
    queue.publish("flaky", "key-fine", b"fine").await.unwrap();

    // A worker that acks "key-fine" and never acks "key-poison".
    let worker = tokio::spawn(async move {
        let mut poison_deliveries = 0;
        loop {
            let delivery = consumer.next().await.expect("pull work");
            if delivery.msg_id() == Some("key-fine") {
                delivery.ack().await.expect("ack");
            } else {
                poison_deliveries += 1;
                assert!(poison_deliveries <= 2, "delivered past max_deliver");
            }
        }
    });

    let report = tokio::time::timeout(Duration::from_secs(15), exhausted.next())
        .await
        .expect("no max-deliveries report within 15 s")
        .expect("the advisory subscription ended")
        .expect("read the exhausted work");
    worker.abort();
    assert_eq!(report.pool, "flaky");
    assert_eq!(report.msg_id.as_deref(), Some("key-poison"));
    assert_eq!(report.deliveries, 2);
    assert_eq!(queue.stored_messages().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_work_survives_a_nats_crash() {
    let mut server = match NatsServer::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let queue = connect(&server, settings("crash")).await;
    let mut consumer = queue.consumer("cpu").await.unwrap();
    for i in 0..3 {
        queue
            .publish("cpu", &format!("k{i}"), b"durable")
            .await
            .unwrap();
    }

    server.kill();
    server.restart();

    // The same client reconnects on its own; the stored work, the consumer and the ids of the
    // stored work all survived.
    queue
        .publish("cpu", "k1", b"a duplicate: dropped")
        .await
        .unwrap();
    assert_eq!(queue.stored_messages().await.unwrap(), 3);
    for i in 0..3 {
        let delivery = next_within(&mut consumer, Duration::from_secs(20)).await;
        assert_eq!(delivery.msg_id(), Some(format!("k{i}").as_str()));
        assert_eq!(delivery.payload(), b"durable");
        assert_eq!(delivery.deliveries(), 1);
        delivery.ack().await.unwrap();
    }

    // A worker waiting on an empty queue through a second crash gets work published after it
    // (its pull is sent again on reconnect, not after the pull's expiry).
    let waiting = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let delivery = next_within(&mut consumer, Duration::from_secs(20)).await;
            delivery.ack().await.unwrap();
            ids.push(delivery.msg_id().unwrap_or_default().to_owned());
        }
        ids
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    server.restart();
    let restarted = Instant::now();
    // Restarted, the server rebuilds its duplicate ids from the messages it still stores: the id
    // of work acked (so removed) before the crash is forgotten, and publishing it again makes
    // new work. What stops a step running twice is its attempt row in PostgreSQL, not NATS.
    queue.publish("cpu", "k0", b"again").await.unwrap();
    queue.publish("cpu", "k3", b"new").await.unwrap();
    assert_eq!(waiting.await.unwrap(), ["k0", "k3"]);
    println!(
        "a waiting worker got 2 pieces of work {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(queue.stored_messages().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_once_the_client_gives_up_reconnecting() {
    let mut server = match NatsServer::start() {
        Ok(server) => server,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let queue = connect(
        &server,
        QueueSettings {
            max_reconnects: Some(2),
            ..settings("gone")
        },
    )
    .await;
    let mut consumer = queue.consumer("cpu").await.unwrap();
    let waiting = tokio::spawn(async move { consumer.next().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    let error = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the worker still waits 20 s after the server died")
        .unwrap()
        .expect_err("no server, no work");
    assert!(matches!(error, QueueError::Closed { .. }), "{error}");
    assert!(error.to_string().contains(&server.url()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_is_a_clear_error_without_the_password() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://alice:s3cret-pw@127.0.0.1:{port}");
    let started = Instant::now();
    let error = WorkQueue::connect(
        &url,
        QueueSettings {
            connect_timeout: Duration::from_secs(2),
            ..QueueSettings::default()
        },
    )
    .await
    .expect_err("nothing listens there");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let message = error.to_string();
    assert!(matches!(error, QueueError::Connect { .. }), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");
    assert!(!message.contains("alice"), "{message}");
    println!("refused: {message}");

    // An address that never answers (or is unreachable): bounded by connect_timeout.
    let started = Instant::now();
    let error = WorkQueue::connect(
        "nats://10.255.255.1:4222",
        QueueSettings {
            connect_timeout: Duration::from_secs(1),
            ..QueueSettings::default()
        },
    )
    .await
    .expect_err("nothing answers there");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("10.255.255.1:4222"), "{error}");
    println!(
        "unanswered address: {error} (after {:?})",
        started.elapsed()
    );

    let error = WorkQueue::connect("not a url at all", QueueSettings::default())
        .await
        .expect_err("not a URL");
    assert!(error.to_string().contains("not a url at all"), "{error}");
    println!("not a URL: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_subscribers() {
    let server = server_or_skip!();
    let queue = connect(server, settings("notify")).await;
    let other = connect(server, settings("notify")).await;
    let mut wakeups = queue.subscribe("test.notify.done.*").await.unwrap();
    other
        .notify("test.notify.done.run1", b"step 3")
        .await
        .unwrap();
    let payload = tokio::time::timeout(Duration::from_secs(5), wakeups.next())
        .await
        .expect("no notification within 5 s");
    assert_eq!(payload.as_deref(), Some(&b"step 3"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_again_updates_the_stream_and_pool_names_are_checked() {
    let server = server_or_skip!();
    connect(server, settings("again")).await;
    let queue = connect(
        server,
        QueueSettings {
            duplicate_window: Duration::from_secs(30),
            ..settings("again")
        },
    )
    .await;
    queue.publish("cpu", "a", b"x").await.unwrap();
    for bad in ["", "a.b", "gpu*", "x>", "with space"] {
        assert!(
            matches!(
                queue.publish(bad, "id", b"x").await,
                Err(QueueError::InvalidPool(_))
            ),
            "{bad:?}"
        );
        assert!(matches!(
            queue.consumer(bad).await,
            Err(QueueError::InvalidPool(_))
        ));
    }
}

/// Not a timing assertion: prints the publish → next → ack round trip over 1,000 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_latency_is_printed() {
    let server = server_or_skip!();
    let queue = connect(server, settings("latency")).await;
    let mut consumer = queue.consumer("cpu").await.unwrap();
    let mut took = Vec::with_capacity(1000);
    for i in 0..1000 {
        let started = Instant::now();
        queue
            .publish("cpu", &format!("m{i}"), b"payload")
            .await
            .unwrap();
        let delivery = next_within(&mut consumer, Duration::from_secs(5)).await;
        delivery.ack().await.unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "publish -> next -> ack over 1000 messages (sync_interval: always): p50 {:?}, p99 {:?}, max {:?}",
        took[499], took[989], took[999]
    );
}

#[test]
fn the_handles_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<WorkQueue>();
    send_sync::<PoolConsumer>();
    send_sync::<Delivery>();
    send_sync::<QueueError>();
}
