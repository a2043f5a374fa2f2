//! The Gregor consumer reading fetches the broker sends from its segment files (reads of 16
//! KiB and more go out with `sendfile`): plain and compressed batches come back byte for
//! byte, in order, against a real in-process broker.

mod common;

use std::time::{Duration, Instant};

use common::{config, start_broker};
use gregor_client::consumer::Consumer;
use gregor_client::{Producer, ProducerRecord};

fn value(tag: &str, i: usize) -> String {
    format!("{tag}-{i:05}-{}", "y".repeat(900 + i % 100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gregor_consumer_reads_records_sent_from_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let n = 1000;
    for (tag, codec) in [("plain", "none"), ("lz4", "lz4")] {
        let producer = Producer::new(&config(
            &broker,
            &[("linger.ms", "20"), ("compression.type", codec)],
        ))
        .unwrap();
        for i in 0..n {
            producer
                .send(ProducerRecord::new(tag, value(tag, i)))
                .await
                .unwrap();
        }
        producer.close(Duration::from_secs(10)).await.unwrap();
        let before = gregor_broker::zero_copy::bytes_sent_from_files();
        let mut c = Consumer::new(&config(&broker, &[("auto.offset.reset", "earliest")])).unwrap();
        c.assign(vec![(tag, 0)]).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < n && Instant::now() < deadline {
            for r in c.poll(Duration::from_secs(1)).await.unwrap() {
                got.push((
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
        let expected: Vec<(i64, String)> = (0..n).map(|i| (i as i64, value(tag, i))).collect();
        assert!(got == expected, "{tag}: {} records, in order", got.len());
        assert!(
            gregor_broker::zero_copy::bytes_sent_from_files() > before,
            "{tag}: sent from the files"
        );
    }
    broker.shutdown().await.unwrap();
}
