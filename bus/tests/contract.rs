//! One contract, two backends: every test here runs unchanged against the embedded log
//! and against a throwaway `nats-server -js` on a free port.
//!
//! The NATS binary is `$PAMPA_NATS_SERVER`, else `nats-server` on the PATH (it must be
//! 2.10 or newer; `ops/test.sh` installs one).

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use pampa_bus::{
    runner::{requeue_of, BoxError},
    BusConfig, BusError, ConsumerSpec, EventLog, Handler, HandlerError, OutgoingEvent, Runner,
    StoredEvent,
};
use tokio::sync::watch;

struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_nats() -> NatsServer {
    let bin = std::env::var("PAMPA_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (set PAMPA_NATS_SERVER): {e}"));
    let server = NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nats-server did not listen on {port}");
}

/// A backend under test, with whatever keeps it alive.
struct Backend {
    log: EventLog,
    config: BusConfig,
    _nats: Option<NatsServer>,
    _dir: tempfile::TempDir,
}

fn test_config() -> BusConfig {
    BusConfig {
        max_deliver: 3,
        ack_wait: Duration::from_secs(1),
        retry_backoff: Duration::from_millis(20),
        ..BusConfig::default()
    }
}

async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let log = EventLog::open(&config, dir.path()).await.unwrap();
    Backend {
        log,
        config,
        _nats: None,
        _dir: dir,
    }
}

async fn jetstream() -> Backend {
    let nats = start_nats().await;
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig {
        url: nats.url.clone(),
        ..test_config()
    };
    let log = EventLog::open(&config, dir.path()).await.unwrap();
    Backend {
        log,
        config,
        _nats: Some(nats),
        _dir: dir,
    }
}

fn event(subject: &str, id: &str, body: &str) -> OutgoingEvent {
    OutgoingEvent {
        subject: subject.into(),
        id: id.into(),
        headers: vec![("Event-Type".into(), subject.into())],
        payload: body.as_bytes().to_vec(),
    }
}

fn spec(name: &str, filter: &str) -> ConsumerSpec {
    ConsumerSpec {
        name: name.into(),
        filter: filter.into(),
        max_deliver: 3,
        ack_wait: Duration::from_secs(1),
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_embedded { $( #[tokio::test] async fn $name() { super::$name(super::embedded().await).await } )* }
        mod on_jetstream { $( #[tokio::test] async fn $name() { super::$name(super::jetstream().await).await } )* }
    };
}

contract!(
    publish_then_consume_in_order,
    unacked_deliveries_come_back,
    duplicate_ids_are_stored_once,
    concurrent_publishes_keep_order_and_dedup,
    a_consumer_reading_during_publishes_misses_none,
    publish_batch_acks_in_order_and_dedups,
    nak_redelivers_after_the_delay,
    runner_dead_letters_after_max_deliver_and_retry_requeues,
    permanent_errors_go_straight_to_dead_letters,
    a_slow_input_holds_one_slot_not_the_batch,
    a_panicking_handler_dead_letters_its_input,
    replay_reads_from_a_start_time,
    blobs_round_trip_and_missing_is_an_error,
    a_body_published_with_its_event_reads_back_at_any_size,
    a_body_reads_back_more_times_than_a_stream_may_have_consumers,
);

async fn publish_then_consume_in_order(b: Backend) {
    for i in 1..=3 {
        let ack = b
            .log
            .publish(&event(
                "mail.received",
                &format!("id-{i}"),
                &format!("body {i}"),
            ))
            .await
            .unwrap();
        assert!(!ack.duplicate);
    }
    b.log
        .publish(&event("mail.delivered", "other", "not for this consumer"))
        .await
        .unwrap();
    let mut consumer = b
        .log
        .consumer(spec("deliver", "mail.received"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = consumer.fetch(10, Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty(), "events went missing: {seen:?}");
        for d in batch {
            assert_eq!(d.attempt, 1);
            seen.push(String::from_utf8(d.event.payload.clone()).unwrap());
            assert_eq!(d.event.header("Event-Type"), Some("mail.received"));
            d.ack().await.unwrap();
        }
    }
    assert_eq!(seen, vec!["body 1", "body 2", "body 3"]);
    assert!(consumer
        .fetch(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
}

/// A consumer that fetches while publishers are still writing (so the embedded log has
/// commits waiting for their fsync, which it must hide without moving the cursor past
/// them) gets every event exactly once, in sequence order.
async fn a_consumer_reading_during_publishes_misses_none(b: Backend) {
    const PUBLISHERS: usize = 20;
    const EACH: usize = 50;
    let log = std::sync::Arc::new(b.log);
    let mut consumer = log.consumer(spec("reader", "mail.received")).await.unwrap();
    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..PUBLISHERS {
        let log = log.clone();
        publishers.spawn(async move {
            for i in 0..EACH {
                log.publish(&event("mail.received", &format!("r-{p}-{i}"), "x"))
                    .await
                    .unwrap();
            }
        });
    }
    let mut seen = Vec::new();
    while seen.len() < PUBLISHERS * EACH {
        let batch = consumer.fetch(64, Duration::from_secs(5)).await.unwrap();
        assert!(
            !batch.is_empty(),
            "events went missing after {}",
            seen.len()
        );
        for d in batch {
            assert_eq!(d.attempt, 1, "{} handed out twice", d.event.id);
            seen.push((d.event.sequence, d.event.id.clone()));
            d.ack().await.unwrap();
        }
    }
    while let Some(done) = publishers.join_next().await {
        done.unwrap();
    }
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "out of order");
    let ids: std::collections::HashSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), PUBLISHERS * EACH);
    assert!(consumer
        .fetch(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
}

async fn unacked_deliveries_come_back(b: Backend) {
    b.log
        .publish(&event("mail.received", "lost-ack", "x"))
        .await
        .unwrap();
    {
        let mut consumer = b
            .log
            .consumer(spec("deliver", "mail.received"))
            .await
            .unwrap();
        let batch = consumer.fetch(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(batch.len(), 1);
        // The consumer dies here without settling anything.
    }
    let mut consumer = b
        .log
        .consumer(spec("deliver", "mail.received"))
        .await
        .unwrap();
    let batch = consumer.fetch(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.len(), 1, "the unacked event must be handed out again");
    assert_eq!(batch[0].event.id, "lost-ack");
    assert_eq!(batch[0].attempt, 2);
    for d in batch {
        d.ack().await.unwrap();
    }
    assert!(consumer
        .fetch(10, Duration::from_millis(1500))
        .await
        .unwrap()
        .is_empty());
}

async fn duplicate_ids_are_stored_once(b: Backend) {
    let first = b
        .log
        .publish(&event("mail.received", "same", "once"))
        .await
        .unwrap();
    let second = b
        .log
        .publish(&event("mail.received", "same", "twice"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.sequence, second.sequence);
    let all = b
        .log
        .replay("mail.>", chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].payload, b"once");
}

/// A batch is stored in its own order with one ack per event, in that order; an id
/// already in the log, and one repeated inside the batch, are acked as duplicates with
/// the stored sequence, and nothing is stored twice. An empty batch is no error.
async fn publish_batch_acks_in_order_and_dedups(b: Backend) {
    assert!(b.log.publish_batch(&[]).await.unwrap().is_empty());
    let before = b
        .log
        .publish(&event("dns.query", "b-0", "first"))
        .await
        .unwrap();
    // 300 events: more than one multi-row INSERT on the embedded log.
    let mut batch: Vec<OutgoingEvent> = (1..=300)
        .map(|i| event("dns.query", &format!("b-{i}"), &format!("p{i}")))
        .collect();
    batch.insert(100, event("dns.query", "b-0", "again"));
    batch.push(event("dns.query", "b-7", "again"));
    let acks = b.log.publish_batch(&batch).await.unwrap();
    assert_eq!(acks.len(), batch.len());
    assert!(acks[100].duplicate);
    assert_eq!(acks[100].sequence, before.sequence);
    let last = acks[acks.len() - 1];
    assert!(last.duplicate);
    assert_eq!(last.sequence, acks[6].sequence);
    let fresh: Vec<u64> = acks
        .iter()
        .filter(|a| !a.duplicate)
        .map(|a| a.sequence)
        .collect();
    assert_eq!(fresh.len(), 300);
    assert!(fresh.windows(2).all(|w| w[0] < w[1]), "acks out of order");
    assert!(fresh[0] > before.sequence);
    let all = b
        .log
        .replay("dns.query", chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap();
    let payloads: Vec<String> = all
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect();
    let expected: Vec<String> = std::iter::once("first".to_owned())
        .chain((1..=300).map(|i| format!("p{i}")))
        .collect();
    assert_eq!(payloads, expected);
    assert_eq!(all[1].sequence, fresh[0]);
    // Each ack names the sequence its own event was stored at.
    for (event, ack) in batch.iter().zip(&acks).filter(|(_, a)| !a.duplicate) {
        let stored = all.iter().find(|e| e.sequence == ack.sequence).unwrap();
        assert_eq!(stored.id, event.id);
    }
}

/// Many publishes at once (which the embedded log writes as one multi-row insert), with
/// the same id twice among them: every event once, in sequence order, each duplicate
/// acked with the stored sequence.
async fn concurrent_publishes_keep_order_and_dedup(b: Backend) {
    let log = std::sync::Arc::new(b.log);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let log = log.clone();
        // Ids 0..299, except that 150..299 reuse 0..149's id every tenth time.
        let id = if i >= 150 && i % 10 == 0 {
            format!("c-{}", i - 150)
        } else {
            format!("c-{i}")
        };
        tasks.spawn(async move {
            let ack = log
                .publish(&event("mail.received", &id, &format!("p{i}")))
                .await
                .unwrap();
            (id, ack)
        });
    }
    let mut acks: std::collections::HashMap<String, Vec<pampa_bus::PublishAck>> =
        std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (id, ack) = done.unwrap();
        acks.entry(id).or_default().push(ack);
    }
    for (id, acks) in &acks {
        assert_eq!(
            acks.iter().filter(|a| !a.duplicate).count(),
            1,
            "{id}: {acks:?}"
        );
        assert!(
            acks.iter().all(|a| a.sequence == acks[0].sequence),
            "{id}: {acks:?}"
        );
    }
    let all = log
        .replay("mail.>", chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(all.len(), acks.len());
    assert!(all.windows(2).all(|w| w[0].sequence < w[1].sequence));
    for stored in &all {
        assert_eq!(acks[&stored.id][0].sequence, stored.sequence);
    }
}

async fn nak_redelivers_after_the_delay(b: Backend) {
    b.log
        .publish(&event("mail.received", "naked", "x"))
        .await
        .unwrap();
    let mut consumer = b
        .log
        .consumer(spec("deliver", "mail.received"))
        .await
        .unwrap();
    let mut batch = consumer.fetch(1, Duration::from_secs(2)).await.unwrap();
    batch
        .pop()
        .unwrap()
        .nak(Duration::from_millis(100))
        .await
        .unwrap();
    let again = consumer.fetch(1, Duration::from_secs(3)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
}

/// Fails transiently until `healthy` is set, then succeeds with one output.
struct Flaky {
    calls: Arc<AtomicU32>,
    healthy: watch::Receiver<bool>,
    permanent: bool,
}

impl Handler for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn process(
        &self,
        event: &StoredEvent,
        _attempt: u32,
    ) -> Result<Vec<OutgoingEvent>, HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if *self.healthy.borrow() {
            return Ok(vec![event_out(event)]);
        }
        let error: BoxError = "the store is down".into();
        Err(if self.permanent {
            HandlerError::Permanent(error)
        } else {
            HandlerError::Transient(error)
        })
    }
}

fn event_out(input: &StoredEvent) -> OutgoingEvent {
    event("mail.done", &format!("{}-done", input.id), "done")
}

async fn wait_for_events(log: &EventLog, filter: &str, count: usize) -> Vec<StoredEvent> {
    for _ in 0..200 {
        let events = log
            .replay(filter, chrono::DateTime::UNIX_EPOCH)
            .await
            .unwrap();
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{filter}: fewer than {count} events after 10 s");
}

async fn dead_letter_flow(b: Backend, permanent: bool) {
    b.log
        .publish(&event("mail.received", "poison", "payload"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let (set_healthy, healthy) = watch::channel(false);
    let (stop, shutdown) = watch::channel(false);
    let runner = Runner::new(
        b.log.clone(),
        Flaky {
            calls: calls.clone(),
            healthy,
            permanent,
        },
        "mail.received",
        &b.config,
    );
    let task = tokio::spawn(runner.run(shutdown));

    let dead = wait_for_events(&b.log, "dead.flaky", 1).await;
    assert_eq!(dead[0].payload, b"payload");
    assert_eq!(dead[0].header("Dead-Subject"), Some("mail.received"));
    assert!(dead[0]
        .header("Dead-Reason")
        .unwrap()
        .contains("the store is down"));
    let expected_calls = if permanent { 1 } else { b.config.max_deliver };
    assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
    assert!(b
        .log
        .replay("mail.done", chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap()
        .is_empty());

    // Once the cause is fixed, re-queueing the dead letter gets it processed.
    set_healthy.send(true).unwrap();
    let requeued = requeue_of(&dead[0]).expect("dead letter names its subject");
    assert_eq!(requeued.subject, "mail.received");
    assert!(requeued.header("Pampa-Retry").is_some());
    b.log.publish(&requeued).await.unwrap();
    let done = wait_for_events(&b.log, "mail.done", 1).await;
    assert_eq!(done.len(), 1);
    stop.send(true).unwrap();
    task.await.unwrap();
}

async fn runner_dead_letters_after_max_deliver_and_retry_requeues(b: Backend) {
    dead_letter_flow(b, false).await;
}

async fn permanent_errors_go_straight_to_dead_letters(b: Backend) {
    dead_letter_flow(b, true).await;
}

/// Takes `slow` seconds over the input with id "slow", none over the others.
struct SlowOnOne {
    slow: Duration,
}

impl Handler for SlowOnOne {
    fn name(&self) -> &str {
        "slow_on_one"
    }
    async fn process(
        &self,
        event: &StoredEvent,
        _attempt: u32,
    ) -> Result<Vec<OutgoingEvent>, HandlerError> {
        if event.id == "slow" {
            tokio::time::sleep(self.slow).await;
        }
        Ok(vec![event_out(event)])
    }
}

/// With two slots, a slow input and the fast ones fetched with it: the fast ones are all
/// done long before the slow one (a runner that waits for whole batches would hold the
/// fast ones behind it).
async fn a_slow_input_holds_one_slot_not_the_batch(b: Backend) {
    b.log
        .publish(&event("mail.received", "slow", "x"))
        .await
        .unwrap();
    for i in 0..6 {
        b.log
            .publish(&event("mail.received", &format!("fast-{i}"), "x"))
            .await
            .unwrap();
    }
    let (stop, shutdown) = watch::channel(false);
    let runner = Runner::new(
        b.log.clone(),
        SlowOnOne {
            slow: Duration::from_secs(8),
        },
        "mail.received",
        &b.config,
    )
    .concurrency(2);
    let started = std::time::Instant::now();
    let task = tokio::spawn(runner.run(shutdown));
    let done = wait_for_events(&b.log, "mail.done", 6).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the fast inputs took {:?}: they waited for the slow one",
        started.elapsed()
    );
    assert!(done.iter().all(|e| e.id.starts_with("fast-")));
    // Shutdown lets the slow one finish, and its output is stored.
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(wait_for_events(&b.log, "mail.done", 7).await.len(), 7);
}

/// Panics on every input.
struct Panics;

impl Handler for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    async fn process(
        &self,
        _event: &StoredEvent,
        _attempt: u32,
    ) -> Result<Vec<OutgoingEvent>, HandlerError> {
        panic!("a bug in the stage")
    }
}

/// A panic fails the input for good, into dead letters, and the stage goes on (instead
/// of the input coming back after every ack wait, forever).
async fn a_panicking_handler_dead_letters_its_input(b: Backend) {
    b.log
        .publish(&event("mail.received", "boom", "x"))
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task =
        tokio::spawn(Runner::new(b.log.clone(), Panics, "mail.received", &b.config).run(shutdown));
    let dead = wait_for_events(&b.log, "dead.panics", 1).await;
    assert!(dead[0]
        .header("Dead-Reason")
        .unwrap()
        .contains("panicked: a bug in the stage"));
    stop.send(true).unwrap();
    task.await.unwrap();
}

async fn replay_reads_from_a_start_time(b: Backend) {
    b.log
        .publish(&event("mail.received", "old", "old"))
        .await
        .unwrap();
    // The log's clock has millisecond resolution; step past it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.log
        .publish(&event("mail.received", "new", "new"))
        .await
        .unwrap();
    b.log
        .publish(&event("mail.delivered", "new-delivered", "d"))
        .await
        .unwrap();
    let recent = b.log.replay("mail.received", since).await.unwrap();
    assert_eq!(
        recent.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["new"]
    );
    let everything = b
        .log
        .replay("mail.>", chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(everything.len(), 3);
    assert!(everything.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert!(b.log.replay("access.>", since).await.unwrap().is_empty());
    // Replay has no side effects on durable consumers.
    let mut consumer = b
        .log
        .consumer(spec("deliver", "mail.received"))
        .await
        .unwrap();
    assert_eq!(
        consumer
            .fetch(10, Duration::from_secs(2))
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn blobs_round_trip_and_missing_is_an_error(b: Backend) {
    let body = b"Subject: hi\r\n\r\nhello\r\n".repeat(10_000);
    let blob = b
        .log
        .put_blob("0193a1b2-0000-7000-8000-00000000abcd", &body)
        .await
        .unwrap();
    assert_eq!(blob.size, body.len() as u64);
    assert_eq!(b.log.get_blob(&blob).await.unwrap(), body);
    let mut missing = blob.clone();
    missing.key = "0193a1b2-0000-7000-8000-00000000ffff".into();
    assert!(matches!(
        b.log.get_blob(&missing).await,
        Err(BusError::BlobMissing(_))
    ));
    let mut corrupt = blob;
    corrupt.sha256 = "00".repeat(32);
    assert!(matches!(
        b.log.get_blob(&corrupt).await,
        Err(BusError::BlobCorrupt { .. })
    ));
}

async fn a_body_published_with_its_event_reads_back_at_any_size(b: Backend) {
    // One body stored in the log itself, one past INLINE_BODY_MAX (a file on the
    // embedded backend); both behave the same.
    let sizes = [4 * 1024, pampa_bus::embedded::INLINE_BODY_MAX + 1];
    let mut consumer = b
        .log
        .consumer(spec("deliver", "mail.received"))
        .await
        .unwrap();
    for (i, size) in sizes.into_iter().enumerate() {
        let key = format!("0193a1b2-0000-7000-8000-0000000000{i:02}");
        let bytes: Vec<u8> = (0..size).map(|n| b'a' + (n % 26) as u8).collect();
        let blob = pampa_bus::blob::blob_ref(&key, &bytes);
        let outgoing = event("mail.received", &key, &key);
        let ack = b
            .log
            .publish_with_body(&outgoing, &blob, bytes.clone())
            .await
            .unwrap();
        assert!(!ack.duplicate);
        // A client's retry of the same message is one event, and the body still reads.
        let again = b
            .log
            .publish_with_body(&outgoing, &blob, bytes.clone())
            .await
            .unwrap();
        assert!(again.duplicate && again.sequence == ack.sequence);
        let batch = consumer.fetch(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(batch.len(), 1, "size {size}");
        assert_eq!(batch[0].event.id, key);
        assert_eq!(b.log.get_blob(&blob).await.unwrap(), bytes, "size {size}");
        for delivery in batch {
            delivery.ack().await.unwrap();
        }
    }
}

/// Every stage reads the body of every message: reads must leave nothing behind on the
/// server. (They once each left a JetStream consumer for 30 s, and nats-server 2.15 caps a
/// stream at 1,000 consumers: the 1,001st read within 30 s failed.)
async fn a_body_reads_back_more_times_than_a_stream_may_have_consumers(b: Backend) {
    let body = b"Subject: again\r\n\r\nand again\r\n".repeat(100);
    let blob = b
        .log
        .put_blob("0193a1b2-0000-7000-8000-00000000beef", &body)
        .await
        .unwrap();
    for read in 0..1_100 {
        let got = b.log.get_blob(&blob).await;
        assert_eq!(got.ok().as_deref(), Some(&body[..]), "read {read}");
    }
}

#[tokio::test]
async fn embedded_bodies_survive_reopen_go_with_retention_and_old_files_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let small = pampa_bus::blob::blob_ref("0193a1b2-0000-7000-8000-000000000001", b"small");
    let large_bytes = vec![b'x'; pampa_bus::embedded::INLINE_BODY_MAX * 2];
    let large = pampa_bus::blob::blob_ref("0193a1b2-0000-7000-8000-000000000002", &large_bytes);
    // A body an older version wrote as a file, before bodies moved into the log.
    let old = pampa_bus::blob::blob_ref("0193a1b2-0000-7000-8000-000000000003", b"old");
    pampa_bus::blob::FileBlobStore::new(dir.path().join("blobs"))
        .put(&old, b"old")
        .await
        .unwrap();
    {
        let log = EventLog::open(&config, dir.path()).await.unwrap();
        log.publish_with_body(
            &event("mail.received", "small", "s"),
            &small,
            b"small".to_vec(),
        )
        .await
        .unwrap();
        log.publish_with_body(
            &event("mail.received", "large", "l"),
            &large,
            large_bytes.clone(),
        )
        .await
        .unwrap();
    }
    let log = EventLog::open(&config, dir.path()).await.unwrap();
    assert_eq!(log.get_blob(&small).await.unwrap(), b"small");
    assert_eq!(log.get_blob(&large).await.unwrap(), large_bytes);
    assert_eq!(log.get_blob(&old).await.unwrap(), b"old");
    let EventLog::Embedded(embedded) = &log else {
        unreachable!()
    };
    // More bodies than one purge slice holds: the purge goes on slice by slice.
    let many: Vec<_> = (0..300)
        .map(|i| pampa_bus::blob::blob_ref(&format!("0193a1b2-0000-7000-8000-1{i:011}"), b"x"))
        .collect();
    futures::future::try_join_all(many.iter().map(|blob| log.put_blob(&blob.key, b"x")))
        .await
        .unwrap();
    let (events, bodies) = embedded
        .purge_before(std::time::SystemTime::now() + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((events, bodies), (2, 303));
    assert!(matches!(
        log.get_blob(&many[299]).await,
        Err(BusError::BlobMissing(_))
    ));
    for gone in [&small, &large, &old] {
        assert!(matches!(
            log.get_blob(gone).await,
            Err(BusError::BlobMissing(_))
        ));
    }
}

#[tokio::test]
async fn embedded_log_survives_reopen_with_in_flight_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    {
        let log = EventLog::open(&config, dir.path()).await.unwrap();
        log.publish(&event("mail.received", "a", "a"))
            .await
            .unwrap();
        let mut consumer = log
            .consumer(spec("deliver", "mail.received"))
            .await
            .unwrap();
        assert_eq!(
            consumer
                .fetch(10, Duration::from_secs(1))
                .await
                .unwrap()
                .len(),
            1
        );
    }
    // A new process: the in-flight event is handed out at once, not after the ack wait.
    let log = EventLog::open(&config, dir.path()).await.unwrap();
    let mut consumer = log
        .consumer(spec("deliver", "mail.received"))
        .await
        .unwrap();
    let batch = consumer
        .fetch(10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].attempt, 2);
}

#[tokio::test]
async fn unknown_bus_urls_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig {
        url: "kafka://x".into(),
        ..BusConfig::default()
    };
    let err = EventLog::open(&config, dir.path()).await.err().unwrap();
    assert!(err.to_string().contains("kafka://x"), "{err}");
}

/// The duplicate window is shared by every writer of one embedded log: an id a CLI tool
/// published is a duplicate for the server, and an id the server published before a
/// restart is one for the next process.
#[tokio::test]
async fn embedded_window_sees_other_writers_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config();
    let server = EventLog::open(&config, dir.path()).await.unwrap();
    // The server's window is loaded before the tool writes.
    assert!(
        !server
            .publish(&event("x.a", "first", "1"))
            .await
            .unwrap()
            .duplicate
    );
    let tool = EventLog::open_tool(&config, dir.path()).await.unwrap();
    let by_tool = tool.publish(&event("x.a", "from-tool", "2")).await.unwrap();
    assert!(!by_tool.duplicate);
    assert!(
        tool.publish(&event("x.a", "first", "1"))
            .await
            .unwrap()
            .duplicate
    );
    let again = server
        .publish(&event("x.a", "from-tool", "2"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, by_tool.sequence);
    drop((server, tool));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reopened = EventLog::open(&config, dir.path()).await.unwrap();
    let ack = reopened.publish(&event("x.a", "first", "1")).await.unwrap();
    assert!(ack.duplicate);
    assert_eq!(ack.sequence, 1);
    let events = reopened
        .replay("x.a", chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
}

/// A log written before the duplicate window had a UNIQUE index on event ids; opening it
/// rebuilds the table once, keeping every event, its sequence and the consumers' place.
#[tokio::test]
async fn embedded_log_from_before_the_window_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log/events.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let legacy = write_legacy_log(&path).await;
    assert!(legacy.contains("UNIQUE"));
    let config = test_config();
    let log = EventLog::open(&config, dir.path()).await.unwrap();
    let events = log
        .replay("old.>", chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
        .await
        .unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, vec![3, 7]);
    // AUTOINCREMENT's high-water mark (9, above the highest row left) is kept.
    let next = log.publish(&event("old.c", "c", "c")).await.unwrap();
    assert_eq!(next.sequence, 10);
    // Old ids inside the window are still duplicates.
    assert!(
        log.publish(&event("old.a", "a", "a"))
            .await
            .unwrap()
            .duplicate
    );
    let mut consumer = log.consumer(spec("old", "old.>")).await.unwrap();
    let batch = consumer
        .fetch(10, Duration::from_millis(200))
        .await
        .unwrap();
    let ids: Vec<&str> = batch.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(ids, vec!["b", "c"], "the consumer's cursor (at 3) is kept");
}

/// Writes a log in the schema of the first embedded log, with sqlx directly: rows at
/// sequences 3 and 7, a high-water mark of 9, and a consumer whose cursor is at 3.
async fn write_legacy_log(path: &std::path::Path) -> String {
    use sqlx::{Connection, SqliteConnection};
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::raw_sql(&format!(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE events (
             seq INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT NOT NULL UNIQUE,
             subject TEXT NOT NULL, headers BLOB NOT NULL, payload BLOB NOT NULL,
             published_at INTEGER NOT NULL);
         CREATE INDEX events_subject_seq ON events (subject, seq);
         CREATE INDEX events_published_at ON events (published_at);
         CREATE TABLE consumers (name TEXT PRIMARY KEY, filter TEXT NOT NULL, cursor INTEGER NOT NULL);
         CREATE TABLE pending (consumer TEXT NOT NULL, seq INTEGER NOT NULL, deliveries INTEGER NOT NULL,
             visible_at INTEGER NOT NULL, PRIMARY KEY (consumer, seq));
         INSERT INTO events VALUES (3, 'a', 'old.a', x'90', x'61', {now});
         INSERT INTO events VALUES (7, 'b', 'old.b', x'90', x'62', {now});
         INSERT INTO events VALUES (9, 'gone', 'old.gone', x'90', x'67', {now});
         DELETE FROM events WHERE seq = 9;
         INSERT INTO consumers VALUES ('old', 'old.>', 3);"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'events'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    sql
}
