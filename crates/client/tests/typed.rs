//! Typed producers and consumers (serializers / deserializers) against a real broker.

mod common;

use common::{config, start_broker};

use std::time::{Duration, Instant};

use bytes::Bytes;
use gregor_client::{
    BytesDeserializer, Consumer, ConsumerRecord, Error, JsonDeserializer, JsonSerializer, Producer,
    ProducerBuilder, ProducerRecord, StringDeserializer, StringSerializer,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
}

async fn poll_n<K, V>(c: &mut Consumer<K, V>, n: usize) -> Vec<ConsumerRecord<K, V>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(100)).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_keys_and_json_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let producer: Producer<String, Order> =
        ProducerBuilder::new(&config(&broker, &[]), StringSerializer, JsonSerializer)
            .build()
            .unwrap();
    let orders: Vec<Order> = (0..3)
        .map(|id| Order {
            id,
            item: format!("item-{id}"),
        })
        .collect();
    for o in &orders {
        producer
            .send_and_wait(
                ProducerRecord::typed("orders", Some(format!("k{}", o.id)), Some(o.clone()))
                    .with_partition(0),
            )
            .await
            .unwrap();
    }
    // A tombstone: null value, never handed to the serializer.
    producer
        .send_and_wait(
            ProducerRecord::typed("orders", Some("k0".to_string()), None).with_partition(0),
        )
        .await
        .unwrap();
    producer.close(Duration::from_secs(5)).await.unwrap();

    // What went over the wire is plain UTF-8 and JSON.
    let mut raw = Consumer::new(&config(&broker, &[("auto.offset.reset", "earliest")])).unwrap();
    raw.assign(vec![("orders", 0)]).unwrap();
    let bytes = poll_n(&mut raw, 4).await;
    assert_eq!(bytes[1].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(
        bytes[1].value.as_deref(),
        Some(&br#"{"id":1,"item":"item-1"}"#[..])
    );

    let mut typed: Consumer<String, Order> = Consumer::with_deserializers(
        &config(&broker, &[("auto.offset.reset", "earliest")]),
        StringDeserializer,
        JsonDeserializer,
    )
    .unwrap();
    typed.assign(vec![("orders", 0)]).unwrap();
    let got = poll_n(&mut typed, 4).await;
    assert_eq!(got.len(), 4);
    for (r, o) in got.iter().zip(&orders) {
        assert_eq!(r.key.as_deref(), Some(format!("k{}", o.id).as_str()));
        assert_eq!(r.value.as_ref(), Some(o));
    }
    assert_eq!(got[3].value, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_record_stops_the_consumer_until_sought_past() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let producer = Producer::new(&config(&broker, &[])).unwrap();
    for v in [&b"ok-0"[..], &[0xff, 0xfe][..], &b"ok-2"[..]] {
        producer
            .send_and_wait(
                ProducerRecord::new("mixed", Bytes::copy_from_slice(v)).with_partition(0),
            )
            .await
            .unwrap();
    }
    producer.close(Duration::from_secs(5)).await.unwrap();

    let mut c: Consumer<Bytes, String> = Consumer::with_deserializers(
        &config(&broker, &[("auto.offset.reset", "earliest")]),
        BytesDeserializer,
        StringDeserializer,
    )
    .unwrap();
    c.assign(vec![("mixed", 0)]).unwrap();
    let mut good = Vec::new();
    let error = loop {
        match c.poll(Duration::from_millis(200)).await {
            Ok(records) => good.extend(records),
            Err(e) => break e,
        }
    };
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].value.as_deref(), Some("ok-0"));
    match &error {
        Error::RecordDeserialization {
            topic,
            partition,
            offset,
            ..
        } => assert_eq!((topic.as_str(), *partition, *offset), ("mixed", 0, 1)),
        e => panic!("unexpected {e}"),
    }
    // The position stays on the bad record: the error repeats.
    assert_eq!(c.position("mixed", 0).await.unwrap(), 1);
    assert!(matches!(
        c.poll(Duration::from_millis(200)).await,
        Err(Error::RecordDeserialization { offset: 1, .. })
    ));
    c.seek("mixed", 0, 2).unwrap();
    let rest = poll_n(&mut c, 1).await;
    assert_eq!(rest[0].value.as_deref(), Some("ok-2"));
}
