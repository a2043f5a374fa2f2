//! Partition replication across three `gregor broker` processes on 127.0.0.1, driven by
//! librdkafka: followers copy the leader's batches byte for byte; acks=all waits for the ISR;
//! a follower paused with SIGSTOP leaves the ISR after `replica.lag.time.max.ms`, acks=all
//! goes on while the ISR holds `min.insync.replicas` and is refused with
//! NOT_ENOUGH_REPLICAS when it does not (acks=1 still succeeds); resumed, the follower
//! catches up and rejoins the ISR (the Gregor client writes and reads through it too). A
//! deposed leader truncates an acks=1 tail no follower had. An idempotent producer's
//! records survive a SIGKILLed leader once each, in order, and an aborted transaction stays
//! hidden on the new leader. With the rack-aware replica selector a consumer with
//! `client.rack` is sent to the in-sync follower of its rack and reads there (KIP-392), as
//! librdkafka's own statistics show. Every process is killed by its guard, on every path.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use support::cluster::*;
use support::replicated::*;

/// `replica.lag.time.max.ms` in these tests: short, so ISR changes are quick to see.
const LAG_MS: u64 = 1500;

/// The concatenated `.log` files of `topic`-0 in `node_dir`, in offset order.
fn segment_bytes(node_dir: &Path, topic: &str) -> Vec<u8> {
    let dir = node_dir.join(format!("{topic}-0"));
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_copy_the_leader_and_a_paused_follower_leaves_and_rejoins_the_isr() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| {
        vec![
            format!("replica.lag.time.max.ms={LAG_MS}"),
            "replica.fetch.backoff.ms=200".into(),
            // Long enough that a paused follower is still registered (not fenced) while
            // the test looks at its ISR membership.
            "broker.session.timeout.ms=30000".into(),
        ]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "rep", "2").await;
    create(&addr(0), "all3", "3").await;
    let b = addr(0);
    let (leader, replicas, isr) = tokio::task::spawn_blocking(move || {
        wait_for("rep metadata", || partition_state(&b, "rep"))
    })
    .await
    .unwrap();
    assert_eq!(replicas.len(), 3);
    assert_eq!(isr, vec![1, 2, 3]);
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();

    // A follower refuses a produce and names the leader (KIP-951, Produce v12).
    let follower_addr = addr((leader_at + 1) % 3);
    let refused = tokio::task::spawn_blocking(move || produce_raw(&follower_addr, "rep"))
        .await
        .unwrap();
    assert_eq!(
        refused,
        (6, leader),
        "NOT_LEADER_OR_FOLLOWER, with the current leader"
    );

    // acks=all through a broker that is not the leader's address: librdkafka routes.
    let all = producer(&addr((leader_at + 1) % 3), "all", true);
    let started = Instant::now();
    send(&all, "rep", 2000, "a").await.unwrap();
    eprintln!("2000 acks=all records to RF 3 in {:?}", started.elapsed());

    // Every replica holds the same bytes once the followers caught up.
    let leader_dir = root.path().join(format!("node-{leader}"));
    let deadline = Instant::now() + WAIT;
    loop {
        let want = segment_bytes(&leader_dir, "rep");
        let same = nodes
            .iter()
            .all(|n| segment_bytes(&root.path().join(format!("node-{}", n.id)), "rep") == want);
        if same && !want.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "replicas never became identical");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A paused follower (of both topics) leaves the ISR; acks=all with
    // min.insync.replicas=2 goes on.
    let b = addr(0);
    let (all3_leader, _, _) = tokio::task::spawn_blocking(move || {
        wait_for("all3 metadata", || partition_state(&b, "all3"))
    })
    .await
    .unwrap();
    let follower_at = nodes
        .iter()
        .position(|n| n.id != leader && n.id != all3_leader)
        .unwrap();
    let follower = nodes[follower_at].id;
    procs[follower_at].signal(libc::SIGSTOP);
    let others: Vec<i32> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|&id| id != follower)
        .collect();
    let left_after = wait_isr(addr(leader_at), "rep", others.clone()).await;
    eprintln!("follower {follower} paused: left the ISR after {left_after:?} (lag {LAG_MS} ms)");
    assert!(
        left_after >= Duration::from_millis(LAG_MS / 2),
        "left before its lag time could pass: {left_after:?}"
    );
    let all = producer(&addr(leader_at), "all", true);
    send(&all, "rep", 500, "b").await.unwrap();
    // The Gregor client too writes acks=all while the follower is out.
    let lines: String = (0..100).map(|i| format!("g-{i:06}\n")).collect();
    let leader_addr = addr(leader_at);
    let wrote = gregor_cli(
        &[
            "produce",
            "rep",
            "--partition",
            "0",
            "--acks",
            "all",
            "--brokers",
            &leader_addr,
        ],
        &lines,
    );
    assert!(wrote.0, "gregor produce: {}", wrote.1);

    // min.insync.replicas=3 with a follower out: acks=all refused, acks=1 written.
    let all3_leader_at = nodes.iter().position(|n| n.id == all3_leader).unwrap();
    wait_isr(addr(all3_leader_at), "all3", others.clone()).await;
    let strict = producer(&addr(leader_at), "all", false);
    let refused = send(&strict, "all3", 1, "c").await;
    assert!(
        matches!(
            refused,
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::NotEnoughReplicas
            ))
        ),
        "{refused:?}"
    );
    let one = producer(&addr(leader_at), "1", false);
    send(&one, "all3", 10, "d").await.unwrap();

    // Resumed, the follower catches up and rejoins both ISRs.
    procs[follower_at].signal(libc::SIGCONT);
    let back_after = wait_isr(addr(leader_at), "rep", vec![1, 2, 3]).await;
    // At the partition's own leader: the acks=all below is checked against its view.
    wait_isr(addr(all3_leader_at), "all3", vec![1, 2, 3]).await;
    eprintln!("follower {follower} resumed: back in the ISR after {back_after:?}");
    // Metadata may come from a broker that applied the expansion before the leader did
    // (as in Kafka, where the leader learns it from the AlterPartition answer): a producer
    // that retries NOT_ENOUGH_REPLICAS, as clients do by default, gets through.
    let retrying = producer(&addr(leader_at), "all", true);
    send(&retrying, "all3", 10, "e").await.unwrap();
    let follower_dir = root.path().join(format!("node-{follower}"));
    let deadline = Instant::now() + WAIT;
    while segment_bytes(&follower_dir, "rep") != segment_bytes(&leader_dir, "rep") {
        assert!(
            Instant::now() < deadline,
            "the resumed follower never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything acknowledged, read back with the Gregor client through the follower's
    // address (it routes to the leader).
    let follower_addr = addr(follower_at);
    let consume_started = Instant::now();
    let (ok, out) = gregor_cli(
        &[
            "consume",
            "rep",
            "--from-beginning",
            "--count",
            "2600",
            "--timeout-ms",
            "10000",
            "--brokers",
            &follower_addr,
        ],
        "",
    );
    assert!(ok, "gregor consume: {out}");
    eprintln!(
        "gregor consume read back in {:?}",
        consume_started.elapsed()
    );
    let read: Vec<&str> = out.lines().collect();
    assert_eq!(read.len(), 2600);
    assert_eq!(read[0], "a-000000");
    assert_eq!(read[2599], "g-000099");
    drop(procs);
}

/// Keeps the broker librdkafka last said it fetches partition 0 of a topic from.
#[derive(Clone, Default)]
struct FetchedFrom(Arc<Mutex<Option<(i32, i32)>>>);

impl ClientContext for FetchedFrom {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            if let Some(p) = topic.partitions.get(&0) {
                *self.0.lock().unwrap() = Some((p.broker, p.leader));
            }
        }
    }
}

impl ConsumerContext for FetchedFrom {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_client_rack_reads_from_the_follower_in_its_rack() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |n| {
        vec![
            format!("broker.rack=rack-{}", n.id),
            "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector"
                .into(),
        ]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "near", "2").await;
    let leader = in_sync_leader(addr(0), "near").await;
    let all = producer(&addr(0), "all", true);
    send(&all, "near", 300, "n").await.unwrap();
    let follower = nodes.iter().map(|n| n.id).find(|&id| id != leader).unwrap();

    let context = FetchedFrom::default();
    let mut config = client(&addr(0));
    config
        .set("group.id", "near-readers")
        .set("client.rack", format!("rack-{follower}"))
        .set("statistics.interval.ms", "200")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<FetchedFrom> = config.create_with_context(context.clone()).unwrap();
    let fetched = tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("near", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut values = Vec::new();
        let deadline = Instant::now() + WAIT;
        // Until everything is read and the statistics (every 200 ms) name the follower.
        let at_follower = || {
            context
                .0
                .lock()
                .unwrap()
                .is_some_and(|(b, _)| b == follower)
        };
        while values.len() < 300 || (!at_follower() && Instant::now() < deadline) {
            assert!(Instant::now() < deadline, "read {} of 300", values.len());
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                values.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
        }
        let from = context.0.lock().unwrap().expect("librdkafka statistics");
        (values, from)
    })
    .await
    .unwrap();
    let (values, (broker, stats_leader)) = fetched;
    assert_eq!(values.len(), 300);
    assert_eq!(values[0], "n-000000");
    assert_eq!(values[299], "n-000299");
    assert_eq!(stats_leader, leader);
    assert_eq!(
        broker, follower,
        "librdkafka fetches from the follower in its rack, not the leader {leader}"
    );
    drop(procs);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_truncates_what_its_followers_never_had() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| {
        vec![
            format!("replica.lag.time.max.ms={LAG_MS}"),
            "replica.fetch.backoff.ms=200".into(),
            "broker.session.timeout.ms=2000".into(),
            "broker.heartbeat.interval.ms=200".into(),
        ]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "div", "2").await;
    let leader = in_sync_leader(addr(0), "div").await;
    let old_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let followers: Vec<usize> = (0..3).filter(|&i| i != old_at).collect();
    let all = producer(&addr(old_at), "all", true);
    send(&all, "div", 100, "a").await.unwrap();

    // Both followers paused: the leader still takes acks=1 writes they never fetch (the
    // quorum is down too, so its ISR cannot shrink).
    for &f in &followers {
        procs[f].signal(libc::SIGSTOP);
    }
    // A follower's fetch parked at the leader when it was paused may still be answered with
    // the first records (it reads the answer when it resumes); the second lot can reach no
    // follower, which cannot send another fetch while paused. The pause between the lots
    // lets the leader answer the parked fetches first even on a loaded machine (one CI run
    // saw the answer built only after the second lot had started with a 300 ms pause).
    let one = producer(&addr(old_at), "1", false);
    send(&one, "div", 50, "x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&one, "div", 50, "w").await.unwrap();
    let old_dir = root.path().join(format!("node-{leader}"));
    assert!(contains(&segment_bytes(&old_dir, "div"), b"w-000049"));

    // The leader paused, the followers back: it is fenced and one of them takes over.
    procs[old_at].signal(libc::SIGSTOP);
    for &f in &followers {
        procs[f].signal(libc::SIGCONT);
    }
    let candidates: Vec<i32> = followers.iter().map(|&f| nodes[f].id).collect();
    let started = Instant::now();
    let new_leader = wait_leader_among(addr(followers[0]), "div", candidates).await;
    eprintln!(
        "leader {leader} paused: broker {new_leader} leads after {:?}",
        started.elapsed()
    );
    let new_at = nodes.iter().position(|n| n.id == new_leader).unwrap();
    let all = producer(&addr(new_at), "all", true);
    send(&all, "div", 20, "y").await.unwrap();

    // The old leader resumes as a follower: its divergent tail goes (truncated to the end of
    // the epoch the new leader shares with it), the new leader's records come.
    procs[old_at].signal(libc::SIGCONT);
    let new_dir = root.path().join(format!("node-{new_leader}"));
    let deadline = Instant::now() + WAIT;
    loop {
        let want = segment_bytes(&new_dir, "div");
        if segment_bytes(&old_dir, "div") == want {
            assert!(contains(&want, b"y-000019"));
            assert!(
                !contains(&want, b"w-000000"),
                "the acks=1 tail no follower had is gone (x-000049 replicated: {}, w-000049: {})",
                contains(&want, b"x-000049"),
                contains(&want, b"w-000049")
            );
            break;
        }
        assert!(Instant::now() < deadline, "the old leader never converged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_isr(addr(new_at), "div", vec![1, 2, 3]).await;
    drop(procs);
}

/// A retried idempotent batch the leader already holds is answered (acks=all) only once it
/// is replicated, as its first attempt would have been: with both followers paused, the
/// producer's retries after each timeout find a duplicate, and none of them is acknowledged
/// until the followers resume and fetch it. (Acknowledging the duplicate at once would
/// confirm a record only this leader has, lost if it dies.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_acknowledged_only_once_replicated() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| Vec::new()).await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "retried", "2").await;
    let leader = in_sync_leader(addr(0), "retried").await;
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let mut c = client(&addr(leader_at));
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("request.timeout.ms", "1000")
        .set("retry.backoff.ms", "100")
        .set("message.timeout.ms", "60000");
    let p: FutureProducer = c.create().unwrap();
    let record = |v: &'static str| {
        FutureRecord::<(), str>::to("retried")
            .partition(0)
            .payload(v)
    };
    p.send(record("before"), Duration::from_secs(10))
        .await
        .expect("acknowledged while every replica runs");

    // Both followers paused (and with them the quorum, so the ISR stays [1, 2, 3]).
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader_at).collect();
    for &f in &followers {
        procs[f].signal(libc::SIGSTOP);
    }
    let pending = tokio::spawn({
        let p = p.clone();
        async move { p.send(record("retried"), Duration::from_secs(60)).await }
    });
    // Four request timeouts: the first attempt and at least two retries of the same batch.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let early = pending.is_finished();
    for &f in &followers {
        procs[f].signal(libc::SIGCONT);
    }
    assert!(
        !early,
        "a retry was acknowledged while no follower had the batch"
    );
    let delivery = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("acknowledged once the followers resume")
        .unwrap()
        .map_err(|(e, _)| e)
        .expect("delivered");
    assert_eq!(
        (delivery.partition, delivery.offset),
        (0, 1),
        "written once, after the first record"
    );
    let bootstrap = addr(leader_at);
    let values = tokio::task::spawn_blocking(move || {
        read_values(&bootstrap, "retried", "read_uncommitted", 2)
    })
    .await
    .unwrap();
    assert_eq!(
        values,
        ["before", "retried"],
        "the batch is in the log once"
    );
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_moves_with_the_leader_duplicates_refused_aborts_hidden() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| {
        vec![
            "broker.session.timeout.ms=2000".into(),
            "broker.heartbeat.interval.ms=200".into(),
            "replica.fetch.backoff.ms=200".into(),
            "transaction.state.log.num.partitions=3".into(),
        ]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "moved", "2").await;
    let leader = in_sync_leader(addr(0), "moved").await;
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_at).collect();

    // An aborted and a committed transaction, replicated before the leader dies. Markers
    // and KIP-890's verification reach only partitions led by the coordinator's own broker
    // until part 3 (WriteTxnMarkers), so the transactional id is one the leader coordinates.
    let bootstrap = addr(survivors[0]);
    tokio::task::spawn_blocking(move || {
        let transactional_id = coordinated_by(&bootstrap, leader);
        let mut c = client(&bootstrap);
        c.set("transactional.id", &transactional_id)
            .set("linger.ms", "5");
        let p: ThreadedProducer<DefaultProducerContext> = c.create().unwrap();
        p.init_transactions(WAIT).unwrap();
        for (tag, commit) in [("aborted", false), ("committed", true)] {
            p.begin_transaction().unwrap();
            for i in 0..10 {
                let value = format!("{tag}-{i}");
                p.send(
                    BaseRecord::<(), str>::to("moved")
                        .payload(&value)
                        .partition(0),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            }
            if commit {
                p.commit_transaction(WAIT).unwrap();
            } else {
                p.abort_transaction(WAIT).unwrap();
            }
        }
    })
    .await
    .unwrap();

    // An idempotent acks=all producer keeps sending while the leader is SIGKILLed.
    const ROUNDS: usize = 40;
    let all = producer(&addr(survivors[0]), "all", true);
    let rounds_done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = rounds_done.clone();
    let sender = tokio::spawn(async move {
        for round in 0..ROUNDS {
            send(&all, "moved", 100, &format!("i{round:02}"))
                .await
                .unwrap();
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let deadline = Instant::now() + WAIT;
    while rounds_done.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "the producer never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    procs[leader_at].kill();
    let at_kill = rounds_done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        at_kill < ROUNDS,
        "the leader died while the producer was sending"
    );
    let candidates: Vec<i32> = survivors.iter().map(|&i| nodes[i].id).collect();
    let new_leader = wait_leader_among(addr(survivors[0]), "moved", candidates).await;
    eprintln!("leader {leader} SIGKILLed after {at_kill} of {ROUNDS} rounds: {new_leader} leads");
    tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("the producer finished")
        .unwrap();

    // read_committed at the new leader: no aborted record; every acknowledged record
    // exactly once, in the order sent.
    let bootstrap = addr(survivors[0]);
    let values = tokio::task::spawn_blocking(move || {
        read_values(&bootstrap, "moved", "read_committed", ROUNDS * 100 + 10)
    })
    .await
    .unwrap();
    assert!(
        values.iter().all(|v| !v.starts_with("aborted")),
        "an aborted record is visible"
    );
    let committed: Vec<&String> = values
        .iter()
        .filter(|v| v.starts_with("committed"))
        .collect();
    assert_eq!(committed.len(), 10);
    let idempotent: Vec<String> = values.into_iter().filter(|v| v.starts_with('i')).collect();
    let want: Vec<String> = (0..ROUNDS)
        .flat_map(|r| (0..100).map(move |i| format!("i{r:02}-{i:06}")))
        .collect();
    assert_eq!(
        idempotent.len(),
        want.len(),
        "every acknowledged record, none twice"
    );
    assert_eq!(idempotent, want, "in the order sent");
    drop(procs);
}

/// A transactional id whose transaction coordinator is broker `broker`: the leader of its
/// `__transaction_state` partition (created here by a first transactional producer).
fn coordinated_by(bootstrap: &str, broker: i32) -> String {
    use gregor_broker::group::coordinator::partition_for_key;
    use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
    let mut c = client(bootstrap);
    c.set("transactional.id", "warm-up");
    let warm_up: ThreadedProducer<DefaultProducerContext> = c.create().unwrap();
    warm_up.init_transactions(WAIT).unwrap();
    let leaders = wait_for("__transaction_state leaders", || {
        let c: BaseConsumer = client(bootstrap).create().ok()?;
        let meta = c
            .fetch_metadata(Some("__transaction_state"), Duration::from_secs(5))
            .ok()?;
        let t = meta.topics().first()?;
        let leaders: Vec<i32> = t.partitions().iter().map(|p| p.leader()).collect();
        (!leaders.is_empty() && leaders.iter().all(|&l| l >= 0)).then_some(leaders)
    });
    (0..1000)
        .map(|k| format!("mover-{k}"))
        .find(|id| leaders[partition_for_key(id, leaders.len() as i32) as usize] == broker)
        .unwrap_or_else(|| {
            panic!("broker {broker} leads no __transaction_state partition: {leaders:?}")
        })
}

/// Runs the `gregor` CLI (the Gregor client) with `stdin`, bounded by 60 s; whether it
/// succeeded and its stdout (or stderr when it failed).
fn gregor_cli(args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_gregor"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gregor");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&text).into_owned(),
    )
}

/// One Produce v12 (acks=1, a record set the leader would refuse as corrupt) to partition 0
/// of `topic` at `addr`: the partition's error code and the current leader it names.
fn produce_raw(addr: &str, topic: &str) -> (i16, i32) {
    use bytes::Buf;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use std::io::Write;
    const VERSION: i16 = 12;
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(vec![0u8; 100])))])]);
    let mut requests = Vec::new();
    support::raw::frame(&mut requests, ApiKey::Produce, VERSION, 7, &request);
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(&requests).unwrap();
    let mut body = support::raw::read_frame(&mut conn);
    ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(VERSION)).unwrap();
    let response = ProduceResponse::decode(&mut body, VERSION).unwrap();
    assert!(!body.has_remaining());
    let p = &response.responses[0].partition_responses[0];
    let leader = p.current_leader.leader_id.0;
    assert!(
        response
            .node_endpoints
            .iter()
            .any(|n| n.node_id.0 == leader),
        "the response carries the leader's endpoint"
    );
    (p.error_code, leader)
}

/// CreatePartitions with a replica assignment (librdkafka's `NewPartitions::assign`): the new
/// partitions get exactly those replicas, the first leading, at every broker; a bad one is
/// refused with INVALID_REPLICA_ASSIGNMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_partitions_keep_their_replica_assignment() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| Vec::new()).await;
    let bootstrap = bootstrap_of(&nodes);
    create(&bootstrap, "grown", "1").await;
    let admin: AdminClient<DefaultClientContext> = client(&bootstrap).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let bad: [&[i32]; 1] = [&[1, 1, 2]];
    let r = admin
        .create_partitions(&[NewPartitions::new("grown", 2).assign(&bad)], &opts)
        .await
        .unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidReplicaAssignment
    );
    let wanted: [&[i32]; 2] = [&[3, 1, 2], &[2, 3, 1]];
    let r = admin
        .create_partitions(&[NewPartitions::new("grown", 3).assign(&wanted)], &opts)
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
    for n in &nodes {
        let at = format!("127.0.0.1:{}", n.port);
        let replicas = tokio::task::spawn_blocking(move || {
            wait_for("the new partitions", || {
                let c: BaseConsumer = client(&at).create().ok()?;
                let meta = c
                    .fetch_metadata(Some("grown"), Duration::from_secs(5))
                    .ok()?;
                let t = meta.topics().iter().find(|t| t.name() == "grown")?;
                let led: Vec<(i32, Vec<i32>)> = t
                    .partitions()
                    .iter()
                    .skip(1)
                    .map(|p| (p.leader(), p.replicas().to_vec()))
                    .collect();
                (led.len() == 2 && led.iter().all(|(l, _)| *l > 0)).then_some(led)
            })
        })
        .await
        .unwrap();
        assert_eq!(
            replicas,
            [(3, vec![3, 1, 2]), (2, vec![2, 3, 1])],
            "at broker {}",
            n.id
        );
    }
    drop(procs);
}
