//! Producer interceptors against a real broker: records changed on send, every outcome
//! (success, failure inside `send`, failure reported by the broker) acknowledged.

mod common;

use common::{config, start_broker};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gregor_client::consumer::fetch_once;
use gregor_client::{
    AdminClient, Error, NewTopic, Producer, ProducerInterceptor, ProducerRecord, RecordMetadata,
};

/// Tags every record with a header and upper-cases its value; logs every outcome.
#[derive(Default)]
struct Tagger {
    outcomes: Mutex<Vec<Result<RecordMetadata, String>>>,
}

impl ProducerInterceptor for Tagger {
    fn on_send(&self, record: ProducerRecord) -> ProducerRecord {
        let value = record
            .value
            .as_ref()
            .map(|v| Bytes::from(v.to_ascii_uppercase()));
        ProducerRecord { value, ..record }.with_header("tagged", Some(Bytes::from_static(b"yes")))
    }

    fn on_acknowledgement(&self, result: &gregor_client::error::Result<RecordMetadata>) {
        self.outcomes
            .lock()
            .unwrap()
            .push(result.clone().map_err(|e| e.to_string()));
    }
}

/// Counts outcomes, to check that interceptors run in order and all of them hear of each.
#[derive(Default)]
struct Second {
    seen: Mutex<Vec<Option<Bytes>>>,
    acks: Mutex<usize>,
}

impl ProducerInterceptor for Second {
    fn on_send(&self, record: ProducerRecord) -> ProducerRecord {
        self.seen.lock().unwrap().push(record.value.clone());
        record
    }

    fn on_acknowledgement(&self, _: &gregor_client::error::Result<RecordMetadata>) {
        *self.acks.lock().unwrap() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interceptors_modify_records_and_see_every_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let cfg = config(
        &broker,
        &[
            ("max.request.size", "100000"),
            ("retries", "0"),
            ("enable.idempotence", "false"),
        ],
    );
    let admin = AdminClient::new(&config(&broker, &[])).unwrap();
    let created = admin
        .create_topics(
            vec![NewTopic {
                name: "small".into(),
                num_partitions: 1,
                replication_factor: -1,
                configs: vec![("max.message.bytes".into(), "2000".into())],
            }],
            false,
        )
        .await
        .unwrap();
    assert!(created[0].1.is_ok(), "{created:?}");

    let tagger = Arc::new(Tagger::default());
    let second = Arc::new(Second::default());
    let producer = Producer::builder(&cfg)
        .interceptor(tagger.clone())
        .interceptor(second.clone())
        .build()
        .unwrap();

    // 1. Success: the broker stores what on_send returned.
    let ok = producer
        .send_and_wait(ProducerRecord::new("small", "hello").with_partition(0))
        .await
        .unwrap();
    // 2. Failure inside send: the partition does not exist.
    let e = producer
        .send(ProducerRecord::new("small", "x").with_partition(5))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRecord(_)), "{e}");
    // 3. Failure reported later by the broker: bigger than the topic's max.message.bytes.
    let e = producer
        .send(ProducerRecord::new("small", "y".repeat(5000)).with_partition(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("MessageTooLarge"), "{e}");
    producer.close(Duration::from_secs(5)).await.unwrap();

    let stored = fetch_once(&cfg, "small", 0, 0, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].value.as_deref(), Some(&b"HELLO"[..]));
    assert_eq!(
        stored[0].headers,
        vec![("tagged".to_string(), Some(Bytes::from_static(b"yes")))]
    );

    let outcomes = tagger.outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(outcomes[0], Ok(ok));
    assert!(outcomes[1].as_ref().unwrap_err().contains("partition 5"));
    assert!(outcomes[2]
        .as_ref()
        .unwrap_err()
        .contains("MessageTooLarge"));
    // The second interceptor saw the first one's output, and every outcome.
    assert_eq!(
        second.seen.lock().unwrap()[0].as_deref(),
        Some(&b"HELLO"[..])
    );
    assert_eq!(*second.acks.lock().unwrap(), 3);
}
