//! A connection's Produce requests replicate together: the broker writes a Produce that
//! waits for its followers (acks=all) and takes the next request of the same connection
//! meanwhile, answering in the order the requests came. Three `gregor broker` processes on
//! 127.0.0.1; a follower paused with SIGSTOP (kept in the ISR by a long
//! `replica.lag.time.max.ms`) holds every acks=all write back until its request timeout.
//! Every process is killed by its guard, on every path.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use support::raw::{frame, read_frame};
use support::replicated::*;

const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 12;
/// The Produce requests' timeout: how long each waits for the paused follower.
const PRODUCE_TIMEOUT_MS: i32 = 3000;
const REQUEST_TIMED_OUT: i16 = 7;

/// A v2 batch of one keyless record holding `value`.
fn batch(value: &str) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [&record], &options).unwrap();
    buf.freeze()
}

/// Three acks=all Produce requests and a Metadata request written at once on one
/// connection, while a follower in the ISR is paused: the Produces time out together (each
/// was written while the one before waited) rather than one after the other, the answers
/// come in request order, the Metadata last, and the records are in the log in order once
/// the follower is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_requests_on_one_connection_wait_for_replication_together_and_answer_in_order() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| {
        vec![
            // The paused follower stays in the ISR (and registered) throughout.
            "replica.lag.time.max.ms=60000".into(),
            "broker.session.timeout.ms=60000".into(),
        ]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "piped", "2").await;
    let leader = in_sync_leader(addr(0), "piped").await;
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let follower_at = (leader_at + 1) % 3;
    procs[follower_at].signal(libc::SIGSTOP);

    let mut requests = Vec::new();
    for i in 1..=3 {
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("piped")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(&format!("piped-{i}"))))])]);
        frame(&mut requests, ApiKey::Produce, PRODUCE_VERSION, i, &produce);
    }
    frame(
        &mut requests,
        ApiKey::Metadata,
        METADATA_VERSION,
        4,
        &MetadataRequest::default(),
    );
    let leader_addr = addr(leader_at);
    let (answers, took) = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(leader_addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let sent = Instant::now();
        conn.write_all(&requests).unwrap();
        let mut answers = Vec::new();
        for _ in 0..4 {
            let mut body = read_frame(&mut conn);
            // Every response here has a flexible header (version 1).
            let header = ResponseHeader::decode(&mut body, 1).unwrap();
            answers.push((header.correlation_id, body, sent.elapsed()));
        }
        (answers, sent.elapsed())
    })
    .await
    .unwrap();
    procs[follower_at].signal(libc::SIGCONT);

    let order: Vec<i32> = answers.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(order, vec![1, 2, 3, 4], "answers in request order");
    let mut offsets = Vec::new();
    for (correlation, body, at) in answers.iter().take(3) {
        let mut body = body.clone();
        let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).unwrap();
        assert!(!body.has_remaining());
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(
            p.error_code, REQUEST_TIMED_OUT,
            "produce {correlation} waits for the paused follower until its timeout"
        );
        eprintln!("produce {correlation} answered after {at:?}");
        offsets.push(p.base_offset);
    }
    assert!(
        offsets.windows(2).all(|w| w[0] + 1 == w[1]),
        "written one after the other: {offsets:?}"
    );
    // One after the other would take three timeouts (9 s); together, one and a bit.
    let timeout = Duration::from_millis(PRODUCE_TIMEOUT_MS as u64);
    assert!(answers[0].2 >= timeout, "{:?}", answers[0].2);
    assert!(
        took < timeout * 2,
        "the produces waited one after the other: {took:?}"
    );

    // Back in sync, the follower has them: every write is in the log, in order.
    wait_isr(addr(0), "piped", vec![1, 2, 3]).await;
    let reader = addr(follower_at);
    let values =
        tokio::task::spawn_blocking(move || read_values(&reader, "piped", "read_uncommitted", 3))
            .await
            .unwrap();
    assert_eq!(values, vec!["piped-1", "piped-2", "piped-3"]);
    drop(procs);
}
