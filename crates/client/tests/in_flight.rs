//! `max.in.flight.requests.per.connection`, observed on the wire: the broker advertises a
//! counting proxy on 127.0.0.1, so every producer connection goes through it. The proxy
//! holds each Produce response for a while (so requests pile up at the client) and records
//! the most Produce requests outstanding at once on one connection: read from the client,
//! response not yet written back. That count never exceeds what the client itself has in
//! flight, so it stays within the client's limit if the limit is honoured.

mod common;

use common::{config, start_broker};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gregor_broker::BrokerHandle;
use gregor_client::{Producer, ProducerRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PRODUCE: i16 = 0;

/// Most Produce requests seen outstanding on one connection.
#[derive(Default)]
struct Counter {
    max: AtomicUsize,
}

/// Reads one length-prefixed frame (length included).
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let n = i32::from_be_bytes(len);
    if n < 0 {
        return None;
    }
    let mut frame = vec![0u8; 4 + n as usize];
    frame[..4].copy_from_slice(&len);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// Proxies one client connection to `broker`, answering each Produce `delay` after it
/// arrived (not sooner than the broker).
async fn proxy_connection(
    client: TcpStream,
    broker: std::net::SocketAddr,
    delay: Duration,
    counter: Arc<Counter>,
) {
    let Ok(upstream) = TcpStream::connect(broker).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    let (mut up_r, mut up_w) = upstream.into_split();
    // Api key and arrival of each request awaiting its response (responses come in order).
    let pending: Arc<Mutex<VecDeque<(i16, Instant)>>> = Arc::default();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let requests = {
        let (pending, outstanding, counter) = (pending.clone(), outstanding.clone(), counter);
        tokio::spawn(async move {
            while let Some(frame) = read_frame(&mut client_r).await {
                let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                // The tests use acks=all: every request, Produce too, has a response.
                pending.lock().unwrap().push_back((api_key, Instant::now()));
                if api_key == PRODUCE {
                    let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                    counter.max.fetch_max(now, Ordering::SeqCst);
                }
                if up_w.write_all(&frame).await.is_err() {
                    return;
                }
            }
        })
    };
    while let Some(frame) = read_frame(&mut up_r).await {
        let Some((api_key, arrived)) = pending.lock().unwrap().pop_front() else {
            break;
        };
        if api_key == PRODUCE {
            // Each Produce is answered `delay` after it arrived: pipelined requests overlap.
            tokio::time::sleep_until((arrived + delay).into()).await;
        }
        if api_key == PRODUCE {
            // Counted as answered before the client can see the answer: otherwise the
            // client's next request could be counted before this one is uncounted.
            outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        if client_w.write_all(&frame).await.is_err() {
            break;
        }
    }
    requests.abort();
}

/// A broker whose advertised address is a counting proxy; returns both.
async fn broker_behind_proxy(
    dir: &std::path::Path,
    delay: Duration,
) -> (BrokerHandle, Arc<Counter>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let advertised = format!("PLAINTEXT://{proxy}");
    let broker = start_broker(dir, &[("advertised.listeners", advertised.as_str())]).await;
    let upstream = broker.local_addr;
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(proxy_connection(client, upstream, delay, c.clone()));
        }
    });
    (broker, counter)
}

/// Sends `n` records of 1000 bytes to partition 0 (one batch each with batch.size=1000) with
/// `max.in.flight.requests.per.connection = max_in_flight`; returns the most Produce
/// requests the proxy saw outstanding on one connection, and how long delivery took.
async fn produce_through_proxy(max_in_flight: &str, n: usize) -> (usize, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (broker, counter) = broker_behind_proxy(dir.path(), Duration::from_millis(40)).await;
    let producer = Producer::new(&config(
        &broker,
        &[
            ("max.in.flight.requests.per.connection", max_in_flight),
            ("batch.size", "1000"),
            ("linger.ms", "0"),
        ],
    ))
    .unwrap();
    // Connect and fetch metadata first: only the timed part pipelines Produce requests.
    producer
        .send_and_wait(ProducerRecord::new("inflight", "warm-up").with_partition(0))
        .await
        .unwrap();
    assert_eq!(counter.max.load(Ordering::SeqCst), 1);
    let start = Instant::now();
    let mut futures = Vec::new();
    for i in 0..n {
        let value = format!("{i:0>1000}");
        futures.push(
            producer
                .send(ProducerRecord::new("inflight", value).with_partition(0))
                .await
                .unwrap(),
        );
    }
    let mut last = 0;
    for f in futures {
        let md = f.await.unwrap();
        assert!(md.offset > last, "acknowledged in order");
        last = md.offset;
    }
    let took = start.elapsed();
    assert_eq!(last, n as i64, "every record written once");
    producer.close(Duration::from_secs(5)).await.unwrap();
    broker.shutdown().await.unwrap();
    (counter.max.load(Ordering::SeqCst), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_limits_pipelined_produce_requests() {
    // 20 one-record batches to one partition, each Produce answered 40 ms after it arrived.
    let (one, serial) = produce_through_proxy("1", 20).await;
    let (five, pipelined) = produce_through_proxy("5", 20).await;
    eprintln!("max.in.flight=1: {one} outstanding, {serial:?}; =5: {five}, {pipelined:?}");
    assert_eq!(one, 1, "max.in.flight.requests.per.connection=1");
    // The sender keeps issuing requests while batches are queued, up to the limit.
    assert_eq!(five, 5, "max.in.flight.requests.per.connection=5");
    // One at a time takes at least 20 x 40 ms; five overlapping take about a fifth of it.
    assert!(serial >= Duration::from_millis(750), "{serial:?}");
    assert!(
        pipelined * 2 < serial,
        "pipelining must shorten delivery: {pipelined:?} vs {serial:?}"
    );
}
