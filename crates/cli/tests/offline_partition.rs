//! A replica that cannot be opened is offline alone (issue #17): a broker whose partition
//! directory was replaced by a file still starts and serves its other partitions, answers
//! KAFKA_STORAGE_ERROR for the damaged one (Metadata and Produce) and reports it in its
//! metrics, and opens it once the damage is gone; a CreateTopics whose partition cannot be
//! created answers an error instead of success. librdkafka drives it; the broker is killed by
//! its guard on every path.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use support::cluster::client;
use support::{free_port, BrokerProcess};

const WAIT: Duration = Duration::from_secs(30);

fn producer(bootstrap: &str) -> FutureProducer {
    client(bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "3000")
        .create()
        .unwrap()
}

async fn send(p: &FutureProducer, topic: &str, value: &str) -> Result<i64, KafkaError> {
    p.send(
        FutureRecord::<(), str>::to(topic)
            .partition(0)
            .payload(value),
        Duration::from_secs(5),
    )
    .await
    .map(|d| d.offset)
    .map_err(|(e, _)| e)
}

/// The error Metadata gives partition 0 of `topic`, if it lists the topic.
fn metadata_error(bootstrap: &str, topic: &str) -> Option<Option<RDKafkaRespErr>> {
    let c: BaseConsumer = client(bootstrap).create().ok()?;
    let meta = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let t = meta.topics().iter().find(|t| t.name() == topic)?;
    Some(t.partitions().first()?.error())
}

/// Sends until a record is acknowledged (the partition opened), within `WAIT`.
async fn send_until_accepted(p: &FutureProducer, topic: &str) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        match send(p, topic, "after").await {
            Ok(offset) => return offset,
            Err(e) => assert!(Instant::now() < deadline, "{topic} never opened: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn replace_with_file(path: &Path) {
    std::fs::remove_dir_all(path).unwrap();
    std::fs::write(path, b"not a partition directory").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_cannot_be_opened_is_offline_alone() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let listener = format!("metrics.listener=http://127.0.0.1:{metrics_port}");
    let overrides = [listener.as_str(), "auto.create.topics.enable=false"];
    let bootstrap = format!("127.0.0.1:{port}");
    let admin = |b: &str| -> AdminClient<DefaultClientContext> { client(b).create().unwrap() };
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));

    let mut broker = BrokerProcess::start(dir.path(), port, &overrides);
    let created = admin(&bootstrap)
        .create_topics(
            &[
                NewTopic::new("healthy", 1, TopicReplication::Fixed(1)),
                NewTopic::new("damaged", 1, TopicReplication::Fixed(1)),
            ],
            &opts,
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let p = producer(&bootstrap);
    for topic in ["healthy", "damaged"] {
        for i in 0..5 {
            send(&p, topic, &format!("{topic}-{i}")).await.unwrap();
        }
    }
    drop(p);
    broker.kill();

    // The damaged partition's directory becomes a file: it cannot be opened.
    replace_with_file(&dir.path().join("damaged-0"));
    let broker = BrokerProcess::start(dir.path(), port, &overrides);
    let p = producer(&bootstrap);
    assert_eq!(
        send(&p, "healthy", "healthy-5").await.unwrap(),
        5,
        "the healthy partition serves"
    );
    assert_eq!(
        metadata_error(&bootstrap, "damaged"),
        Some(Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR))
    );
    assert_eq!(metadata_error(&bootstrap, "healthy"), Some(None));
    let refused = send(&p, "damaged", "refused").await;
    assert!(refused.is_err(), "{refused:?}");
    let (_, text) = support::http::get(metrics_port, "/metrics");
    assert_eq!(
        support::http::value(&text, "kafka_server_replicamanager_offline_replicas"),
        1.0
    );

    // A new topic whose partition directory cannot be made is not acknowledged.
    std::fs::write(dir.path().join("blocked-0"), b"in the way").unwrap();
    let created = admin(&bootstrap)
        .create_topics(
            &[NewTopic::new("blocked", 1, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &created[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::KafkaStorageError))
        ),
        "{created:?}"
    );
    assert_eq!(send(&p, "healthy", "healthy-6").await.unwrap(), 6);

    // The damage gone, both open on the broker's retry and take records.
    std::fs::remove_file(dir.path().join("damaged-0")).unwrap();
    std::fs::remove_file(dir.path().join("blocked-0")).unwrap();
    send_until_accepted(&p, "damaged").await;
    send_until_accepted(&p, "blocked").await;
    assert_eq!(metadata_error(&bootstrap, "damaged"), Some(None));
    let (_, text) = support::http::get(metrics_port, "/metrics");
    assert_eq!(
        support::http::value(&text, "kafka_server_replicamanager_offline_replicas"),
        0.0
    );
    drop(broker);
}
