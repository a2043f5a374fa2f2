//! Shutdown joins everything: once `BrokerHandle::shutdown` returns, no connection and no
//! background task (periodic jobs, cleaner, coordinator timers) still holds the broker, so
//! none can touch its files after the clean-shutdown marker is written.

mod common;

use std::sync::Arc;

use common::{client_config, start_broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_only_after_every_task_let_go_of_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &[
            ("log.cleaner.backoff.ms", "10"),
            ("log.retention.check.interval.ms", "10"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    )
    .await;
    let bootstrap = broker.local_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = client_config(&bootstrap).create().unwrap();
    let compacted = NewTopic::new("compacted", 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "1048576")
        .set("min.cleanable.dirty.ratio", "0.01");
    let created = admin
        .create_topics(&[compacted], &AdminOptions::new())
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    // Enough overwritten keys that the cleaner is busy rewriting when shutdown starts.
    let producer: FutureProducer = client_config(&bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap();
    let value = vec![b'x'; 100];
    let mut acks = Vec::new();
    for i in 0..100_000u32 {
        let key = (i % 1000).to_string();
        let record = FutureRecord::to("compacted").key(&key).payload(&value);
        acks.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    let shared = broker.broker.clone();
    // The client keeps its connection open across the shutdown.
    broker.shutdown().await.unwrap();
    assert_eq!(
        Arc::strong_count(&shared),
        1,
        "a task still holds the broker after shutdown returned"
    );
    assert!(dir.path().join(".kafka_cleanshutdown").exists());
    drop(producer);
}
