//! The transactional Gregor producer and the read_committed Gregor consumer against a real
//! broker, and across clients with librdkafka's transactional producer and read_committed
//! consumer.

mod common;

use common::{config, start_broker};

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gregor_broker::BrokerHandle;
use gregor_client::{
    AdminClient, Consumer, ConsumerGroupMetadata, Error, NewTopic, Producer, ProducerRecord,
};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

async fn create_topic(broker: &BrokerHandle, topic: NewTopic) {
    let admin = AdminClient::new(&config(broker, &[])).unwrap();
    let results = admin.create_topics(vec![topic], false).await.unwrap();
    assert!(results[0].1.is_ok(), "{results:?}");
}

fn txn_producer(broker: &BrokerHandle, id: &str, extra: &[(&str, &str)]) -> Producer {
    let mut pairs = vec![("transactional.id", id)];
    pairs.extend_from_slice(extra);
    Producer::new(&config(broker, &pairs)).unwrap()
}

async fn send(p: &Producer, topic: &str, partition: i32, value: &str) {
    p.send(ProducerRecord::new(topic, value.to_string()).with_partition(partition))
        .await
        .unwrap_or_else(|e| panic!("send {value}: {e}"));
}

/// A consumer of `isolation` assigned to every partition of `topic` from the beginning.
fn reader(broker: &BrokerHandle, topic: &str, partitions: i32, isolation: &str) -> Consumer {
    let mut c = Consumer::new(&config(
        broker,
        &[
            ("isolation.level", isolation),
            ("auto.offset.reset", "earliest"),
            ("fetch.max.wait.ms", "100"),
        ],
    ))
    .unwrap();
    c.assign((0..partitions).map(|p| (topic, p)).collect())
        .unwrap();
    c
}

/// Values read within `window` (stops early once `expect` values have arrived).
async fn read_values(c: &mut Consumer, expect: usize, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while out.len() < expect && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(100)).await.unwrap() {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn round_values(rounds: &[usize], per_round: usize) -> Vec<String> {
    sorted(
        rounds
            .iter()
            .flat_map(|r| (0..per_round).map(move |i| format!("r{r}-{i}")))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_are_visible_to_read_committed_and_aborted_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(&broker, NewTopic::new("tx-iso", 2, 1)).await;
    let p = txn_producer(&broker, "iso-tx", &[]);
    p.init_transactions(TIMEOUT).await.unwrap();
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        let before = p.identity().unwrap();
        p.begin_transaction().unwrap();
        for i in 0..6 {
            send(&p, "tx-iso", i % 2, &format!("r{round}-{i}")).await;
        }
        if commit {
            p.commit_transaction(TIMEOUT).await.unwrap();
        } else {
            p.flush(TIMEOUT).await.unwrap();
            p.abort_transaction(TIMEOUT).await.unwrap();
        }
        // EndTxn v5 (KIP-890): every transaction ends with a new epoch.
        let after = p.identity().unwrap();
        assert_eq!(after.producer_id, before.producer_id);
        assert_eq!(after.epoch, before.epoch + 1, "round {round}");
    }

    let mut committed = reader(&broker, "tx-iso", 2, "read_committed");
    let got = read_values(&mut committed, 12, TIMEOUT).await;
    assert_eq!(sorted(got), round_values(&[0, 2], 6));
    assert!(read_values(&mut committed, 1, Duration::from_millis(800))
        .await
        .is_empty());
    // Positions moved past the aborted records and every control batch: each partition
    // holds 9 records and 3 markers.
    for partition in 0..2 {
        assert_eq!(committed.position("tx-iso", partition).await.unwrap(), 12);
    }

    let mut uncommitted = reader(&broker, "tx-iso", 2, "read_uncommitted");
    let all = read_values(&mut uncommitted, 18, TIMEOUT).await;
    assert_eq!(
        sorted(all),
        round_values(&[0, 1, 2], 6),
        "no control records"
    );
    p.close(TIMEOUT).await.unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_drops_records_not_sent_yet() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(&broker, NewTopic::new("tx-drop", 1, 1)).await;
    // A long linger keeps the records queued until the abort.
    let p = txn_producer(&broker, "drop-tx", &[("linger.ms", "60000")]);
    p.init_transactions(TIMEOUT).await.unwrap();
    p.begin_transaction().unwrap();
    let mut futures = Vec::new();
    for i in 0..3 {
        futures.push(
            p.send(ProducerRecord::new("tx-drop", format!("dropped-{i}")).with_partition(0))
                .await
                .unwrap(),
        );
    }
    p.abort_transaction(TIMEOUT).await.unwrap();
    for f in futures {
        assert!(matches!(f.await, Err(Error::TransactionAborted)));
    }
    // The producer goes on with the next transaction.
    p.begin_transaction().unwrap();
    send(&p, "tx-drop", 0, "kept").await;
    p.commit_transaction(TIMEOUT).await.unwrap();
    let mut c = reader(&broker, "tx-drop", 1, "read_uncommitted");
    assert_eq!(
        read_values(&mut c, 2, Duration::from_secs(3)).await,
        vec!["kept"]
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_read_committed_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(&broker, NewTopic::new("tx-lso", 1, 1)).await;
    let plain = Producer::new(&config(&broker, &[])).unwrap();
    let plain_send = |v: &'static str| {
        let plain = &plain;
        async move {
            plain
                .send_and_wait(ProducerRecord::new("tx-lso", v).with_partition(0))
                .await
                .unwrap();
        }
    };
    plain_send("before").await;
    let p = txn_producer(&broker, "lso-tx", &[]);
    p.init_transactions(TIMEOUT).await.unwrap();
    p.begin_transaction().unwrap();
    send(&p, "tx-lso", 0, "inside").await;
    p.flush(TIMEOUT).await.unwrap();
    plain_send("after").await;

    let mut c = reader(&broker, "tx-lso", 1, "read_committed");
    assert_eq!(
        read_values(&mut c, 3, Duration::from_secs(2)).await,
        vec!["before"]
    );
    let mut u = reader(&broker, "tx-lso", 1, "read_uncommitted");
    assert_eq!(read_values(&mut u, 3, TIMEOUT).await.len(), 3);
    p.commit_transaction(TIMEOUT).await.unwrap();
    assert_eq!(
        read_values(&mut c, 2, TIMEOUT).await,
        vec!["inside", "after"]
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(&broker, NewTopic::new("tx-fence", 2, 1)).await;
    let first = txn_producer(&broker, "fence-tx", &[]);
    first.init_transactions(TIMEOUT).await.unwrap();
    first.begin_transaction().unwrap();
    send(&first, "tx-fence", 0, "zombie").await;
    first.flush(TIMEOUT).await.unwrap();

    let second = txn_producer(&broker, "fence-tx", &[]);
    second.init_transactions(TIMEOUT).await.unwrap();

    let e = first.commit_transaction(TIMEOUT).await.unwrap_err();
    assert!(matches!(e, Error::ProducerFenced(_)), "{e}");
    assert!(e.is_fatal());
    // The fenced producer can do nothing more.
    let e = first
        .send(ProducerRecord::new("tx-fence", "late").with_partition(1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ProducerFenced(_)), "{e}");
    assert!(first.begin_transaction().unwrap_err().is_fatal());
    assert!(first
        .abort_transaction(TIMEOUT)
        .await
        .unwrap_err()
        .is_fatal());

    second.begin_transaction().unwrap();
    send(&second, "tx-fence", 0, "live").await;
    second.commit_transaction(TIMEOUT).await.unwrap();
    let mut c = reader(&broker, "tx-fence", 2, "read_committed");
    assert_eq!(
        read_values(&mut c, 2, Duration::from_secs(3)).await,
        vec!["live"]
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_makes_the_transaction_abortable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(
        &broker,
        NewTopic::new("tx-small", 1, 1).with_config("max.message.bytes", "1000"),
    )
    .await;
    let p = txn_producer(&broker, "abortable-tx", &[]);
    p.init_transactions(TIMEOUT).await.unwrap();
    p.begin_transaction().unwrap();
    send(&p, "tx-small", 0, "fits").await;
    let too_big = p
        .send(ProducerRecord::new("tx-small", "x".repeat(5000)).with_partition(0))
        .await
        .unwrap();
    assert!(too_big.await.is_err(), "the broker refuses the record");
    let e = p.commit_transaction(TIMEOUT).await.unwrap_err();
    assert!(e.is_abortable(), "{e}");
    let e = p
        .send(ProducerRecord::new("tx-small", "more").with_partition(0))
        .await
        .unwrap_err();
    assert!(e.is_abortable(), "{e}");
    p.abort_transaction(TIMEOUT).await.unwrap();
    // Retried in a new transaction.
    p.begin_transaction().unwrap();
    send(&p, "tx-small", 0, "retried").await;
    p.commit_transaction(TIMEOUT).await.unwrap();
    let mut c = reader(&broker, "tx-small", 1, "read_committed");
    assert_eq!(
        read_values(&mut c, 2, Duration::from_secs(3)).await,
        vec!["retried"]
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_calls_in_the_wrong_state_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(&broker, NewTopic::new("tx-state", 2, 1)).await;
    let invalid = |r: Result<(), Error>| matches!(r, Err(Error::InvalidTransactionState(_)));
    let p = txn_producer(&broker, "state-tx", &[]);
    assert!(invalid(p.begin_transaction()), "begin before init");
    p.init_transactions(TIMEOUT).await.unwrap();
    assert!(invalid(p.init_transactions(TIMEOUT).await), "init twice");
    assert!(
        invalid(p.commit_transaction(TIMEOUT).await),
        "commit without begin"
    );
    assert!(
        invalid(p.abort_transaction(TIMEOUT).await),
        "abort without begin"
    );
    let sent = p
        .send(ProducerRecord::new("tx-state", "outside").with_partition(1))
        .await
        .map(drop);
    assert!(invalid(sent), "send to a new partition without begin");
    let offsets = [("tx-state".to_string(), 0, 1)];
    assert!(
        invalid(
            p.send_offsets_to_transaction(&offsets, &ConsumerGroupMetadata::new("g"), TIMEOUT)
                .await
        ),
        "offsets without begin"
    );
    p.begin_transaction().unwrap();
    assert!(invalid(p.begin_transaction()), "nested begin");
    // An empty transaction commits without bothering the coordinator.
    p.commit_transaction(TIMEOUT).await.unwrap();
    p.begin_transaction().unwrap();
    send(&p, "tx-state", 0, "inside").await;
    p.commit_transaction(TIMEOUT).await.unwrap();
    assert!(invalid(p.commit_transaction(TIMEOUT).await), "commit twice");

    // A producer without transactional.id has no transactions.
    let plain = Producer::new(&config(&broker, &[])).unwrap();
    assert!(invalid(plain.init_transactions(TIMEOUT).await));
    assert!(invalid(plain.begin_transaction()));
    broker.shutdown().await.unwrap();
}

/// Consume-transform-produce: the consumed offsets go into the transaction and become the
/// group's committed offsets only when it commits; a read_committed consumer asking for them
/// meanwhile (OffsetFetch require_stable) waits for the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_are_committed_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("group.initial.rebalance.delay.ms", "0")]).await;
    create_topic(&broker, NewTopic::new("ctp-in", 1, 1)).await;
    create_topic(&broker, NewTopic::new("ctp-out", 1, 1)).await;
    let plain = Producer::new(&config(&broker, &[])).unwrap();
    for i in 0..10 {
        plain
            .send_and_wait(ProducerRecord::new("ctp-in", format!("{i}")).with_partition(0))
            .await
            .unwrap();
    }
    let group_config = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            ("group.id", "ctp"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
        ];
        pairs.extend_from_slice(extra);
        config(&broker, &pairs)
    };
    let mut consumer = Consumer::new(&group_config(&[])).unwrap();
    consumer.subscribe(vec!["ctp-in"]).unwrap();
    let p = txn_producer(&broker, "ctp-tx", &[]);
    p.init_transactions(TIMEOUT).await.unwrap();
    p.begin_transaction().unwrap();
    let mut read = 0;
    let deadline = Instant::now() + TIMEOUT;
    while read < 10 && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            send(&p, "ctp-out", 0, &format!("out-{v}")).await;
            read += 1;
        }
    }
    assert_eq!(read, 10);
    let metadata = consumer.group_metadata().unwrap();
    assert_eq!(metadata.group_id, "ctp");
    assert!(metadata.generation_id >= 1, "{metadata:?}");
    assert_eq!(
        Some((metadata.member_id.clone(), metadata.generation_id)),
        consumer.group_membership()
    );
    p.send_offsets_to_transaction(&consumer.positions(), &metadata, TIMEOUT)
        .await
        .unwrap();
    p.flush(TIMEOUT).await.unwrap();

    // Not committed yet: the admin client (no require_stable) sees no offset.
    let admin = AdminClient::new(&config(&broker, &[])).unwrap();
    assert!(admin
        .list_consumer_group_offsets("ctp")
        .await
        .unwrap()
        .is_empty());
    // A read_committed consumer's OffsetFetch is held back (UNSTABLE_OFFSET_COMMIT, retried)
    // until the transaction ends.
    let waiter = Consumer::new(&group_config(&[])).unwrap();
    let pending = tokio::spawn(async move {
        let started = Instant::now();
        let offsets = waiter.committed(&[("ctp-in".to_string(), 0)]).await;
        (offsets, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = reader(&broker, "ctp-out", 1, "read_committed");
    assert!(read_values(&mut out, 1, Duration::from_millis(500))
        .await
        .is_empty());
    p.commit_transaction(TIMEOUT).await.unwrap();

    let (offsets, waited) = pending.await.unwrap();
    assert_eq!(offsets.unwrap(), vec![Some(10)]);
    assert!(waited >= Duration::from_millis(400), "waited {waited:?}");
    let listed = admin.list_consumer_group_offsets("ctp").await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|(t, p, o, _)| (t.as_str(), *p, *o))
            .collect::<Vec<_>>(),
        vec![("ctp-in", 0, 10)]
    );
    let values: BTreeSet<String> = read_values(&mut out, 10, TIMEOUT)
        .await
        .into_iter()
        .collect();
    assert_eq!(values.len(), 10);
    assert!(values.contains("out-9"));
    consumer.close().await.unwrap();
    broker.shutdown().await.unwrap();
}

fn rd_config(bootstrap: &str, extra: &[(&str, &str)]) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("socket.timeout.ms", "10000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_transactions_read_by_a_gregor_read_committed_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(&broker, NewTopic::new("rd-tx", 2, 1)).await;
    let bootstrap = broker.local_addr.to_string();
    tokio::task::spawn_blocking(move || {
        let p: ThreadedProducer<DefaultProducerContext> = rd_config(
            &bootstrap,
            &[("transactional.id", "rd-tx"), ("linger.ms", "5")],
        )
        .create()
        .unwrap();
        p.init_transactions(TIMEOUT).unwrap();
        for (round, commit) in [(0, true), (1, false), (2, true)] {
            p.begin_transaction().unwrap();
            for i in 0..6 {
                let value = format!("r{round}-{i}");
                p.send(
                    BaseRecord::<(), str>::to("rd-tx")
                        .payload(&value)
                        .partition(i % 2),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            }
            if commit {
                p.commit_transaction(TIMEOUT).unwrap();
            } else {
                p.flush(TIMEOUT).unwrap();
                p.abort_transaction(TIMEOUT).unwrap();
            }
        }
    })
    .await
    .unwrap();
    let mut committed = reader(&broker, "rd-tx", 2, "read_committed");
    let got = read_values(&mut committed, 12, TIMEOUT).await;
    assert_eq!(sorted(got), round_values(&[0, 2], 6));
    assert!(read_values(&mut committed, 1, Duration::from_millis(800))
        .await
        .is_empty());
    let mut uncommitted = reader(&broker, "rd-tx", 2, "read_uncommitted");
    let all = read_values(&mut uncommitted, 18, TIMEOUT).await;
    assert_eq!(sorted(all), round_values(&[0, 1, 2], 6));
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gregor_transactions_read_by_a_librdkafka_read_committed_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    create_topic(&broker, NewTopic::new("gr-tx", 2, 1)).await;
    let p = txn_producer(&broker, "gr-tx", &[]);
    p.init_transactions(TIMEOUT).await.unwrap();
    for (round, commit) in [(0, true), (1, false), (2, true)] {
        p.begin_transaction().unwrap();
        for i in 0..6 {
            send(&p, "gr-tx", i % 2, &format!("r{round}-{i}")).await;
        }
        if commit {
            p.commit_transaction(TIMEOUT).await.unwrap();
        } else {
            p.flush(TIMEOUT).await.unwrap();
            p.abort_transaction(TIMEOUT).await.unwrap();
        }
    }
    let bootstrap = broker.local_addr.to_string();
    let (committed, extra) = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rd_config(
            &bootstrap,
            &[
                ("group.id", "rd-reader"),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("fetch.wait.max.ms", "100"),
            ],
        )
        .create()
        .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset("gr-tx", p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let read = |expect: usize, window: Duration| {
            let deadline = Instant::now() + window;
            let mut out = Vec::new();
            while out.len() < expect && Instant::now() < deadline {
                if let Some(m) = c.poll(Duration::from_millis(100)) {
                    let m = m.expect("consume");
                    out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
                }
            }
            out
        };
        (read(12, TIMEOUT), read(1, Duration::from_millis(800)))
    })
    .await
    .unwrap();
    assert_eq!(sorted(committed), round_values(&[0, 2], 6));
    assert!(extra.is_empty(), "{extra:?}");
    broker.shutdown().await.unwrap();
}
