//! Failover across three `gregor broker` processes on 127.0.0.1, driven by librdkafka, with
//! Kafka's default heartbeat (2 s) and session (9 s) timings: a SIGKILLed leader is fenced
//! as soon as it missed a heartbeat and its port refuses connections (long before its
//! session would expire), a new leader from the ISR takes over, and an idempotent acks=all
//! producer that sent through it all loses, duplicates and reorders nothing; the killed
//! broker restarts and rejoins the ISR. A leader stopped with SIGTERM first moves its
//! leadership away while it still serves (controlled shutdown), so a producer waits well
//! under a second, and then exits cleanly. Every process is killed by its guard, on every
//! path.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use support::cluster::*;
use support::replicated::*;

/// An idempotent acks=all producer that keeps retrying through a failover.
fn durable_producer(bootstrap: &str) -> FutureProducer {
    let mut c = client(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "60000");
    c.create().unwrap()
}

/// When each acknowledgement arrived, by record index; errors as text.
type Acks = Arc<Mutex<Vec<(usize, Instant, Result<(), String>)>>>;

/// Sends `n` records `tag-<i>` to partition 0 of `topic`, `per_ms` every millisecond, each
/// acknowledgement recorded in `acks` as it arrives; returns when all are answered.
async fn paced_send(p: FutureProducer, topic: &'static str, n: usize, per_ms: usize, acks: Acks) {
    let mut waits = Vec::with_capacity(n);
    for i in 0..n {
        let value = format!("r-{i:06}");
        let delivery = p
            .send_result(
                FutureRecord::<(), String>::to(topic)
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
        let acks = acks.clone();
        waits.push(tokio::spawn(async move {
            let outcome = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("delivery future dropped".into()),
            };
            acks.lock().unwrap().push((i, Instant::now(), outcome));
        }));
        if (i + 1) % per_ms == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for w in waits {
        w.await.unwrap();
    }
}

/// Every record `r-000000`.. `r-<n-1>` once, in order.
fn assert_exactly_once_in_order(values: &[String], n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("r-{i:06}")).collect();
    assert_eq!(values.len(), n, "every acknowledged record, none twice");
    assert!(values == want.as_slice(), "in the order sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_seconds_and_nothing_acknowledged_is_lost() {
    const RECORDS: usize = 20_000;
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| Vec::new()).await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "killed", "2").await;
    let leader = in_sync_leader(addr(0), "killed").await;
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_at).collect();
    let bootstrap = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");

    let acks: Acks = Arc::default();
    let sender = tokio::spawn(paced_send(
        durable_producer(&bootstrap),
        "killed",
        RECORDS,
        2,
        acks.clone(),
    ));
    let deadline = Instant::now() + WAIT;
    while acks.lock().unwrap().len() < RECORDS / 4 {
        assert!(Instant::now() < deadline, "the producer never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    procs[leader_at].kill();
    let killed_at = Instant::now();
    let acked_before = acks.lock().unwrap().len();
    assert!(acked_before < RECORDS, "the leader died mid-stream");
    tokio::time::timeout(Duration::from_secs(90), sender)
        .await
        .expect("every record answered")
        .unwrap();
    let acks = acks.lock().unwrap().clone();
    let failed: Vec<_> = acks.iter().filter(|(_, _, r)| r.is_err()).take(3).collect();
    assert!(
        failed.is_empty(),
        "acks=all with idempotence retries through the failover: {failed:?}"
    );
    let first_after = acks
        .iter()
        .map(|(_, at, _)| *at)
        .filter(|at| *at > killed_at)
        .min()
        .expect("records acknowledged after the kill");
    let failover = first_after - killed_at;
    let new_leader = leaders(&addr(survivors[0]), "killed").unwrap()[0];
    eprintln!(
        "leader {leader} SIGKILLed after {acked_before} of {RECORDS} acks: broker {new_leader} acknowledged the next after {failover:?}"
    );
    assert!(
        failover < Duration::from_secs(6),
        "fenced long before the 9 s session timeout: {failover:?}"
    );

    let reader = addr(survivors[0]);
    let values = tokio::task::spawn_blocking(move || {
        read_values(&reader, "killed", "read_committed", RECORDS)
    })
    .await
    .unwrap();
    assert_exactly_once_in_order(&values, RECORDS);

    // The killed broker comes back as a follower, catches up and rejoins the ISR.
    procs[leader_at] = spawn(root.path(), &nodes[leader_at], &voters_of(&nodes));
    procs[leader_at].wait_listening();
    wait_isr(addr(survivors[0]), "killed", vec![1, 2, 3]).await;
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_first_and_producers_wait_under_a_second() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| Vec::new()).await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "handover", "2").await;
    let leader = in_sync_leader(addr(0), "handover").await;
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_at).collect();
    let bootstrap = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");

    // One record at a time, each awaited: the longest wait between two acknowledgements is
    // how long the partition could not take writes.
    let producer = durable_producer(&bootstrap);
    let mut acked_at = Vec::new();
    let mut sent = 0usize;
    let mut stopped_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stopped_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(3)) {
        assert!(Instant::now() < deadline, "the producer stalled");
        let value = format!("r-{sent:06}");
        producer
            .send(
                FutureRecord::<(), String>::to("handover")
                    .partition(0)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        sent += 1;
        acked_at.push(Instant::now());
        if sent == 200 {
            procs[leader_at].signal(libc::SIGTERM);
            stopped_at = Some(Instant::now());
        }
    }
    let stopped_at = stopped_at.unwrap();
    let longest = acked_at
        .windows(2)
        .filter(|w| w[1] > stopped_at)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap();
    let new_leader = leaders(&addr(survivors[0]), "handover").unwrap()[0];
    eprintln!("leader {leader} got SIGTERM: broker {new_leader} leads; longest wait for an ack {longest:?}");
    let status =
        tokio::task::block_in_place(|| procs[leader_at].wait_exit(Duration::from_secs(30)))
            .expect("the stopped broker exits");
    assert!(status.success(), "a clean exit: {status}");
    let log = std::fs::read_to_string(root.path().join(format!("node-{leader}.stderr"))).unwrap();
    for line in log
        .lines()
        .filter(|l| l.contains("shutdown") || l.contains("stopping"))
    {
        eprintln!("{line}");
    }
    assert!(
        log.contains("controlled shutdown: leadership moved away"),
        "{log}"
    );

    assert_ne!(new_leader, leader);
    assert!(
        longest < Duration::from_secs(1),
        "produce unavailable for {longest:?}"
    );

    let reader = addr(survivors[0]);
    let values = tokio::task::spawn_blocking(move || {
        read_values(&reader, "handover", "read_committed", sent)
    })
    .await
    .unwrap();
    assert_exactly_once_in_order(&values, sent);

    procs[leader_at] = spawn(root.path(), &nodes[leader_at], &voters_of(&nodes));
    procs[leader_at].wait_listening();
    wait_isr(addr(survivors[0]), "handover", vec![1, 2, 3]).await;
    drop(procs);
}
