//! Transactions against a real broker: librdkafka's transactional producer and
//! read_committed consumer, plus raw requests for the KIP-890 checks clients never trigger.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{client_config, producer_batch, restart_broker, start_broker, RawConnection};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    describe_producers_request, AddPartitionsToTxnRequest, ApiKey, DescribeProducersRequest,
    DescribeTransactionsRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ListTransactionsRequest, ProduceRequest, ProducerId, RequestKind, ResponseKind, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

type TxnProducer = ThreadedProducer<DefaultProducerContext>;

fn txn_producer(bootstrap: &str, transactional_id: &str, extra: &[(&str, &str)]) -> TxnProducer {
    let mut c = client_config(bootstrap);
    c.set("transactional.id", transactional_id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let p: TxnProducer = c.create().expect("transactional producer");
    p.init_transactions(TIMEOUT).expect("init_transactions");
    p
}

fn send(p: &TxnProducer, topic: &str, partition: i32, value: &str) {
    p.send(
        BaseRecord::<(), str>::to(topic)
            .payload(value)
            .partition(partition),
    )
    .map_err(|(e, _)| e)
    .expect("send");
}

/// Writes one non-transactional record to partition 0 of `topic` and waits for it.
fn send_plain(bootstrap: &str, topic: &str, value: &str) {
    let plain: ThreadedProducer<DefaultProducerContext> =
        client_config(bootstrap).create().unwrap();
    plain
        .send(BaseRecord::<(), str>::to(topic).payload(value).partition(0))
        .map_err(|(e, _)| e)
        .unwrap();
    plain.flush(TIMEOUT).unwrap();
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(bootstrap).create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

/// A consumer assigned to every partition of `topic` from the beginning.
fn reader(bootstrap: &str, topic: &str, partitions: i32, isolation: &str) -> BaseConsumer {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", format!("reader-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// Values read within `window` (stops early once `expect` values have arrived).
fn read_values(c: &BaseConsumer, expect: usize, window: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + window;
    let mut out = Vec::new();
    while out.len() < expect && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            out.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborted_transactions_are_visible_only_to_read_uncommitted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "txn-iso", 2).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let p = txn_producer(&b, "iso-tx", &[]);
        for (round, commit) in [(0, true), (1, false), (2, true)] {
            p.begin_transaction().unwrap();
            for i in 0..6 {
                send(&p, "txn-iso", i % 2, &format!("r{round}-{i}"));
            }
            if commit {
                p.commit_transaction(TIMEOUT).unwrap();
            } else {
                p.flush(TIMEOUT).unwrap();
                p.abort_transaction(TIMEOUT).unwrap();
            }
        }
        let committed = reader(&b, "txn-iso", 2, "read_committed");
        let got = sorted(read_values(&committed, 12, TIMEOUT));
        let want: Vec<String> = sorted(
            [0, 2]
                .iter()
                .flat_map(|r| (0..6).map(move |i| format!("r{r}-{i}")))
                .collect(),
        );
        assert_eq!(got, want, "read_committed sees the committed rounds only");
        assert!(read_values(&committed, 1, Duration::from_millis(800)).is_empty());
        let uncommitted = reader(&b, "txn-iso", 2, "read_uncommitted");
        let all = read_values(&uncommitted, 18, TIMEOUT);
        assert_eq!(all.len(), 18, "read_uncommitted sees aborted records too");
        assert!(all.iter().any(|v| v.starts_with("r1-")));
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_transaction_holds_read_committed_consumers_at_the_lso() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "txn-lso", 1).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        // A plain (non-transactional) record before the transaction is readable at once.
        send_plain(&b, "txn-lso", "before");

        let p = txn_producer(&b, "lso-tx", &[]);
        p.begin_transaction().unwrap();
        send(&p, "txn-lso", 0, "inside");
        p.flush(TIMEOUT).unwrap();
        // Written after the transaction began: held back with it.
        send_plain(&b, "txn-lso", "after");

        let c = reader(&b, "txn-lso", 1, "read_committed");
        assert_eq!(read_values(&c, 3, Duration::from_secs(2)), vec!["before"]);
        p.commit_transaction(TIMEOUT).unwrap();
        assert_eq!(read_values(&c, 2, TIMEOUT), vec!["inside", "after"]);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "txn-fence", 1).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let first = txn_producer(&b, "fence-tx", &[]);
        first.begin_transaction().unwrap();
        send(&first, "txn-fence", 0, "zombie");
        first.flush(TIMEOUT).unwrap();

        let second = txn_producer(&b, "fence-tx", &[]);
        let err = first.commit_transaction(TIMEOUT).unwrap_err();
        let fenced = match &err {
            KafkaError::Transaction(e) => e.is_fatal(),
            _ => false,
        };
        assert!(fenced, "the zombie's commit fails fatally: {err:?}");

        second.begin_transaction().unwrap();
        send(&second, "txn-fence", 0, "live");
        second.commit_transaction(TIMEOUT).unwrap();
        let c = reader(&b, "txn-fence", 1, "read_committed");
        assert_eq!(read_values(&c, 2, Duration::from_secs(3)), vec!["live"]);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_past_its_timeout_is_aborted_by_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "200",
    )];
    let broker = start_broker(dir.path(), &overrides).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "txn-timeout", 1).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let p = txn_producer(
            &b,
            "timeout-tx",
            &[
                ("transaction.timeout.ms", "1000"),
                ("socket.timeout.ms", "1000"),
            ],
        );
        p.begin_transaction().unwrap();
        send(&p, "txn-timeout", 0, "stuck");
        p.flush(TIMEOUT).unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        assert!(
            p.commit_transaction(TIMEOUT).is_err(),
            "the coordinator aborted it"
        );

        send_plain(&b, "txn-timeout", "later");
        let c = reader(&b, "txn-timeout", 1, "read_committed");
        assert_eq!(read_values(&c, 2, Duration::from_secs(3)), vec!["later"]);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_mid_transaction_ends_in_an_abort_by_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "200",
    )];
    let broker = start_broker(dir.path(), &overrides).await;
    let port = broker.local_addr.port();
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "txn-restart", 1).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let p = txn_producer(
            &b,
            "restart-tx",
            &[
                ("transaction.timeout.ms", "2000"),
                ("socket.timeout.ms", "2000"),
            ],
        );
        p.begin_transaction().unwrap();
        send(&p, "txn-restart", 0, "lost");
        p.flush(TIMEOUT).unwrap();
        // The producer disappears with its transaction open.
        drop(p);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
    let broker = restart_broker(dir.path(), port, &overrides).await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        send_plain(&b, "txn-restart", "after-restart");
        let c = reader(&b, "txn-restart", 1, "read_committed");
        assert_eq!(
            read_values(&c, 2, Duration::from_secs(8)),
            vec!["after-restart"],
            "the open transaction was aborted after the restart and the LSO moved on"
        );
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

/// Consume-transform-produce: each processor instance reads a few input records, writes
/// their transformed copies and the consumed offsets in one transaction, and is "killed"
/// (dropped without committing) at pseudo-random points. The output read with
/// read_committed holds every input record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consume_transform_produce_is_exactly_once_across_processor_kills() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("group.initial.rebalance.delay.ms", "0")]).await;
    let bootstrap = broker.local_addr.to_string();
    create_topic(&bootstrap, "ctp-in", 2).await;
    create_topic(&bootstrap, "ctp-out", 2).await;
    const INPUT: usize = 120;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let plain: ThreadedProducer<DefaultProducerContext> = client_config(&b).create().unwrap();
        for i in 0..INPUT {
            plain
                .send(
                    BaseRecord::<(), str>::to("ctp-in")
                        .payload(&format!("{i}"))
                        .partition((i % 2) as i32),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        plain.flush(TIMEOUT).unwrap();

        let mut seed = 0x2545_f491_u64;
        let mut next_rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut instance = 0;
        loop {
            instance += 1;
            assert!(instance < 60, "the processors make progress");
            let consumer: BaseConsumer = client_config(&b)
                .set("group.id", "ctp")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", "read_committed")
                .create()
                .unwrap();
            consumer.subscribe(&["ctp-in"]).unwrap();
            let producer = txn_producer(&b, "ctp-tx", &[]);
            let kill_after = 1 + next_rand(4);
            let mut done_batches = 0;
            let mut idle_polls = 0;
            let mut finished = false;
            while done_batches < kill_after {
                producer.begin_transaction().unwrap();
                let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
                let mut batch = 0;
                while batch < 10 {
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => {
                            let v = std::str::from_utf8(m.payload().unwrap()).unwrap();
                            send(&producer, "ctp-out", m.partition(), &format!("out-{v}"));
                            positions.insert(m.partition(), m.offset() + 1);
                            batch += 1;
                            idle_polls = 0;
                        }
                        Some(Err(e)) => panic!("consume: {e}"),
                        None => {
                            idle_polls += 1;
                            if idle_polls > 25 {
                                break;
                            }
                        }
                    }
                }
                if batch == 0 {
                    producer.abort_transaction(TIMEOUT).unwrap();
                    finished = idle_polls > 25;
                    break;
                }
                // A kill between writing and committing: the transaction is left open.
                if next_rand(3) == 0 {
                    producer.flush(TIMEOUT).unwrap();
                    break;
                }
                let mut tpl = TopicPartitionList::new();
                for (p, o) in &positions {
                    tpl.add_partition_offset("ctp-in", *p, Offset::Offset(*o))
                        .unwrap();
                }
                let meta = consumer.group_metadata().unwrap();
                producer
                    .send_offsets_to_transaction(&tpl, &meta, TIMEOUT)
                    .unwrap();
                producer.commit_transaction(TIMEOUT).unwrap();
                done_batches += 1;
            }
            drop(consumer);
            drop(producer);
            if finished {
                break;
            }
        }

        let out = reader(&b, "ctp-out", 2, "read_committed");
        let got = read_values(&out, INPUT, TIMEOUT);
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), INPUT, "every input record is in the output");
        assert_eq!(got.len(), INPUT, "and none twice");
        assert!(read_values(&out, 1, Duration::from_millis(800)).is_empty());
        let committed = {
            let c: BaseConsumer = client_config(&b).set("group.id", "ctp").create().unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition("ctp-in", 0);
            tpl.add_partition("ctp-in", 1);
            c.committed_offsets(tpl, TIMEOUT).unwrap()
        };
        let total: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                other => panic!("no committed offset: {other:?}"),
            })
            .sum();
        assert_eq!(
            total as usize, INPUT,
            "the group's offsets cover every input"
        );
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

fn raw_produce(
    conn: &mut RawConnection,
    transactional_id: Option<&str>,
    topic: &str,
    batch: bytes::Bytes,
) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.into()))),
        )
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let ResponseKind::Produce(r) = conn.request(ApiKey::Produce, 9, &RequestKind::Produce(request))
    else {
        panic!("produce response")
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn add_partition(conn: &mut RawConnection, id: &str, pid: i64, epoch: i16, topic: &str) -> i16 {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(id.into())))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![0])]);
    let ResponseKind::AddPartitionsToTxn(r) = conn.request(
        ApiKey::AddPartitionsToTxn,
        3,
        &RequestKind::AddPartitionsToTxn(request),
    ) else {
        panic!("add partitions response")
    };
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn end_txn(
    conn: &mut RawConnection,
    version: i16,
    id: &str,
    pid: i64,
    epoch: i16,
    commit: bool,
) -> (i16, i64, i16) {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(id.into())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let ResponseKind::EndTxn(r) =
        conn.request(ApiKey::EndTxn, version, &RequestKind::EndTxn(request))
    else {
        panic!("end txn response")
    };
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

/// KIP-890 on the wire: a transactional write to a partition not in the transaction is
/// refused, so is a late write after the transaction ended; EndTxn v5 bumps the epoch and a
/// retry of it is answered the same; the old epoch is fenced afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_890_verification_and_epoch_bump_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    create_topic(&addr.to_string(), "kip890", 1).await;
    tokio::task::spawn_blocking(move || {
        let mut conn = RawConnection::connect(addr);
        let find = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("raw-tx"))
            .with_key_type(1);
        let ResponseKind::FindCoordinator(f) = conn.request(
            ApiKey::FindCoordinator,
            3,
            &RequestKind::FindCoordinator(find),
        ) else {
            panic!()
        };
        assert_eq!(f.error_code, 0, "{:?}", f.error_message);
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("raw-tx"))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let ResponseKind::InitProducerId(i) = conn.request(
            ApiKey::InitProducerId,
            4,
            &RequestKind::InitProducerId(init.clone()),
        ) else {
            panic!()
        };
        assert_eq!(i.error_code, 0);
        let (pid, epoch) = (i.producer_id.0, i.producer_epoch);
        let batch = |seq: i32, v: &[u8], e: i16| producer_batch(pid, e, seq, &[v], true);

        // Not added to the transaction: refused (INVALID_TXN_STATE), nothing written.
        let (c, _) = raw_produce(&mut conn, Some("raw-tx"), "kip890", batch(0, b"a", epoch));
        assert_eq!(c, 48);
        // Without a transactional id a transactional batch is refused as well.
        let (c, _) = raw_produce(&mut conn, None, "kip890", batch(0, b"a", epoch));
        assert_eq!(c, 48);
        assert_eq!(add_partition(&mut conn, "raw-tx", pid, epoch, "kip890"), 0);
        assert_eq!(
            add_partition(&mut conn, "raw-tx", pid, epoch, "no-such-topic"),
            3
        );
        let (c, offset) = raw_produce(&mut conn, Some("raw-tx"), "kip890", batch(0, b"a", epoch));
        assert_eq!((c, offset), (0, 0));

        let (c, new_pid, new_epoch) = end_txn(&mut conn, 5, "raw-tx", pid, epoch, true);
        assert_eq!(
            (c, new_pid, new_epoch),
            (0, pid, epoch + 1),
            "EndTxn v5 bumps the epoch"
        );
        let (c, again_pid, again_epoch) = end_txn(&mut conn, 5, "raw-tx", pid, epoch, true);
        assert_eq!(
            (c, again_pid, again_epoch),
            (0, pid, epoch + 1),
            "a retried EndTxn is answered the same"
        );
        // A late write of the finished transaction cannot land anywhere.
        let (c, _) = raw_produce(
            &mut conn,
            Some("raw-tx"),
            "kip890",
            batch(1, b"late", epoch),
        );
        assert_ne!(c, 0, "a late write is refused");
        assert_eq!(
            add_partition(&mut conn, "raw-tx", pid, epoch, "kip890"),
            90,
            "old epoch fenced"
        );
        // The next transaction uses the new epoch, sequences from 0.
        assert_eq!(
            add_partition(&mut conn, "raw-tx", pid, new_epoch, "kip890"),
            0
        );
        let (c, offset) = raw_produce(
            &mut conn,
            Some("raw-tx"),
            "kip890",
            batch(0, b"b", new_epoch),
        );
        assert_eq!(c, 0);
        assert!(offset >= 2, "after the first record and its commit marker");
        let (c, _, _) = end_txn(&mut conn, 3, "raw-tx", pid, new_epoch, false);
        assert_eq!(c, 0);
        // Unknown transactional id.
        let (c, _, _) = end_txn(&mut conn, 3, "nobody", pid, new_epoch, true);
        assert_eq!(c, 49, "INVALID_PRODUCER_ID_MAPPING");
        // A timeout above transaction.max.timeout.ms.
        let ResponseKind::InitProducerId(i) = conn.request(
            ApiKey::InitProducerId,
            4,
            &RequestKind::InitProducerId(init.with_transaction_timeout_ms(3_600_000)),
        ) else {
            panic!()
        };
        assert_eq!(i.error_code, 50, "INVALID_TRANSACTION_TIMEOUT");
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

fn init_txn(conn: &mut RawConnection, id: &str) -> (i64, i16) {
    let find = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(id.into()))
        .with_key_type(1);
    let ResponseKind::FindCoordinator(f) = conn.request(
        ApiKey::FindCoordinator,
        3,
        &RequestKind::FindCoordinator(find),
    ) else {
        panic!()
    };
    assert_eq!(f.error_code, 0);
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.into()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let ResponseKind::InitProducerId(i) = conn.request(
        ApiKey::InitProducerId,
        4,
        &RequestKind::InitProducerId(init),
    ) else {
        panic!()
    };
    assert_eq!(i.error_code, 0);
    (i.producer_id.0, i.producer_epoch)
}

fn describe_txn(conn: &mut RawConnection, id: &str) -> (i16, String, Vec<(String, Vec<i32>)>) {
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.into()))]);
    let ResponseKind::DescribeTransactions(r) = conn.request(
        ApiKey::DescribeTransactions,
        0,
        &RequestKind::DescribeTransactions(req),
    ) else {
        panic!()
    };
    let t = &r.transaction_states[0];
    (
        t.error_code,
        t.transaction_state.to_string(),
        t.topics
            .iter()
            .map(|d| (d.topic.0.to_string(), d.partitions.clone()))
            .collect(),
    )
}

/// ListTransactions, DescribeTransactions and DescribeProducers report an open transaction;
/// internal topics cannot join a transaction; an idle transactional id is forgotten after
/// transactional.id.expiration.ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_views_internal_topics_and_id_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = [
        ("transactional.id.expiration.ms", "1500"),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "100",
        ),
        (
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            "100",
        ),
    ];
    let broker = start_broker(dir.path(), &overrides).await;
    let addr = broker.local_addr;
    create_topic(&addr.to_string(), "views", 1).await;
    tokio::task::spawn_blocking(move || {
        let mut conn = RawConnection::connect(addr);
        let (pid, epoch) = init_txn(&mut conn, "view-tx");
        assert_eq!(add_partition(&mut conn, "view-tx", pid, epoch, "views"), 0);
        assert_eq!(
            add_partition(&mut conn, "view-tx", pid, epoch, "__consumer_offsets"),
            17,
            "INVALID_TOPIC_EXCEPTION for an internal topic"
        );
        let (c, offset) = raw_produce(
            &mut conn,
            Some("view-tx"),
            "views",
            producer_batch(pid, epoch, 0, &[b"x", b"y"], true),
        );
        assert_eq!((c, offset), (0, 0));

        let list = ListTransactionsRequest::default().with_state_filters(vec![
            StrBytes::from_static_str("Ongoing"),
            StrBytes::from_static_str("Nonsense"),
        ]);
        let ResponseKind::ListTransactions(l) = conn.request(
            ApiKey::ListTransactions,
            1,
            &RequestKind::ListTransactions(list),
        ) else {
            panic!()
        };
        assert_eq!(l.error_code, 0);
        assert_eq!(
            l.unknown_state_filters,
            vec![StrBytes::from_static_str("Nonsense")]
        );
        let listed: Vec<(String, i64)> = l
            .transaction_states
            .iter()
            .map(|t| (t.transactional_id.0.to_string(), t.producer_id.0))
            .collect();
        assert_eq!(listed, vec![("view-tx".to_string(), pid)]);

        assert_eq!(
            describe_txn(&mut conn, "view-tx"),
            (
                0,
                "Ongoing".to_string(),
                vec![("views".to_string(), vec![0])]
            )
        );
        let producers = DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("views")))
                .with_partition_indexes(vec![0]),
        ]);
        let ResponseKind::DescribeProducers(d) = conn.request(
            ApiKey::DescribeProducers,
            0,
            &RequestKind::DescribeProducers(producers),
        ) else {
            panic!()
        };
        let p = &d.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let active: Vec<(i64, i32, i32, i64)> = p
            .active_producers
            .iter()
            .map(|a| {
                (
                    a.producer_id.0,
                    a.producer_epoch,
                    a.last_sequence,
                    a.current_txn_start_offset,
                )
            })
            .collect();
        assert_eq!(active, vec![(pid, epoch as i32, 1, 0)]);

        let (c, _, _) = end_txn(&mut conn, 3, "view-tx", pid, epoch, true);
        assert_eq!(c, 0);
        assert_eq!(describe_txn(&mut conn, "view-tx").1, "CompleteCommit");
        // Idle past transactional.id.expiration.ms: forgotten.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while describe_txn(&mut conn, "view-tx").0 == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            describe_txn(&mut conn, "view-tx").0,
            105,
            "TRANSACTIONAL_ID_NOT_FOUND"
        );
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

/// KIP-890 part 2 on the wire: with Produce v12 a transactional write adds its partition to
/// the transaction itself (no AddPartitionsToTxn); after EndTxn v5 bumped the epoch, a late
/// write on the old epoch is fenced and the new epoch starts the next transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_v12_adds_partitions_implicitly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    create_topic(&addr.to_string(), "tv2", 1).await;
    tokio::task::spawn_blocking(move || {
        let mut conn = RawConnection::connect(addr);
        let (pid, epoch) = init_txn(&mut conn, "tv2-tx");
        let produce_v12 = |conn: &mut RawConnection, seq: i32, e: i16, v: &[u8]| {
            let request = ProduceRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tv2-tx"))))
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("tv2")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(producer_batch(pid, e, seq, &[v], true)))])]);
            let ResponseKind::Produce(r) =
                conn.request(ApiKey::Produce, 12, &RequestKind::Produce(request))
            else {
                panic!()
            };
            let p = &r.responses[0].partition_responses[0];
            (p.error_code, p.base_offset)
        };
        assert_eq!(produce_v12(&mut conn, 0, epoch, b"one"), (0, 0));
        assert_eq!(
            describe_txn(&mut conn, "tv2-tx"),
            (0, "Ongoing".to_string(), vec![("tv2".to_string(), vec![0])])
        );
        let (c, new_pid, new_epoch) = end_txn(&mut conn, 5, "tv2-tx", pid, epoch, true);
        assert_eq!((c, new_pid, new_epoch), (0, pid, epoch + 1));
        let (c, _) = produce_v12(&mut conn, 1, epoch, b"late");
        assert_eq!(
            c, 47,
            "a late write on the old epoch is fenced (INVALID_PRODUCER_EPOCH)"
        );
        assert_eq!(produce_v12(&mut conn, 0, new_epoch, b"two").0, 0);
        assert_eq!(describe_txn(&mut conn, "tv2-tx").1, "Ongoing");
        let (c, _, _) = end_txn(&mut conn, 5, "tv2-tx", pid, new_epoch, false);
        assert_eq!(c, 0);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
