//! Failover across three `gregor broker` processes on 127.0.0.1, driven by librdkafka, with
//! Kafka's default heartbeat (2 s) and session (9 s) timings: a SIGKILLed leader is fenced
//! as soon as it missed a heartbeat and its port refuses connections (long before its
//! session would expire), a new leader from the ISR takes over, and an idempotent acks=all
//! producer that sent through it all loses, duplicates and reorders nothing; the killed
//! broker restarts and rejoins the ISR. A leader stopped with SIGTERM first moves its
//! leadership away while it still serves (controlled shutdown), so a producer waits well
//! under a second, and then exits cleanly. A leader paused with SIGSTOP is fenced after its
//! session, and the Gregor client moves to the new leader without waiting out its request
//! timeout. Every process is killed by its guard, on every
//! path.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use support::cluster::*;
use support::replicated::*;

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
    let bootstrap = bootstrap_of(&nodes);

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
    let bootstrap = bootstrap_of(&nodes);

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
    let log = std::fs::read_to_string(support::log_path(
        &root.path().join(format!("node-{leader}")),
    ))
    .unwrap();
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

/// A leader paused with SIGSTOP keeps its connections open and answers nothing: the
/// controller fences it after `broker.session.timeout.ms` (9 s) and elects a new leader, and
/// the Gregor client, whose requests to the paused broker would otherwise wait out
/// `request.timeout.ms` (30 s), notices the silence, learns the new leader from another
/// broker and resends there: nothing lost, duplicated or reordered. The paused broker then
/// resumes, is told it no longer leads, and rejoins the ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_the_gregor_client_moves_on_before_its_request_timeout() {
    const RECORDS: usize = 12_000;
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| Vec::new()).await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create(&addr(0), "paused", "2").await;
    let leader = in_sync_leader(addr(0), "paused").await;
    let leader_at = nodes.iter().position(|n| n.id == leader).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_at).collect();

    let config = gregor_client::ClientConfig::from_pairs([
        ("bootstrap.servers", bootstrap_of(&nodes).as_str()),
        ("acks", "all"),
        ("enable.idempotence", "true"),
        ("linger.ms", "1"),
        ("delivery.timeout.ms", "120000"),
    ]);
    let producer = Arc::new(gregor_client::Producer::new(&config).unwrap());
    let acked_at: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
    let sender = {
        let (producer, acked_at) = (producer.clone(), acked_at.clone());
        tokio::spawn(async move {
            let mut waits = Vec::with_capacity(RECORDS);
            for i in 0..RECORDS {
                let record = gregor_client::ProducerRecord::new("paused", format!("r-{i:06}"))
                    .with_partition(0);
                let delivery = producer.send(record).await.expect("queued");
                let acked_at = acked_at.clone();
                waits.push(tokio::spawn(async move {
                    let outcome = delivery.await.map(drop).map_err(|e| e.to_string());
                    acked_at.lock().unwrap().push(Instant::now());
                    outcome
                }));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut failed = Vec::new();
            for w in waits {
                if let Err(e) = w.await.unwrap() {
                    failed.push(e);
                }
            }
            failed
        })
    };
    let deadline = Instant::now() + WAIT;
    while acked_at.lock().unwrap().len() < 1_000 {
        assert!(Instant::now() < deadline, "the producer never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    procs[leader_at].signal(libc::SIGSTOP);
    let paused_at = Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(100), sender)
        .await
        .expect("every record answered")
        .unwrap();
    assert!(
        failed.is_empty(),
        "acks=all with idempotence retries: {failed:?}"
    );
    let mut times = acked_at.lock().unwrap().clone();
    times.sort();
    let longest = times
        .windows(2)
        .filter(|w| w[1] > paused_at)
        .map(|w| w[1] - w[0])
        .max()
        .expect("acknowledgements after the pause");
    let new_leader = leaders(&addr(survivors[0]), "paused").unwrap()[0];
    eprintln!("leader {leader} SIGSTOPped: broker {new_leader} leads; longest wait for an ack {longest:?}");
    assert_ne!(new_leader, leader);
    // Fenced after the 9 s session timeout at most (plus a check of the silence each second),
    // far below the 30 s the requests to the paused broker would otherwise wait.
    assert!(
        longest < Duration::from_secs(14),
        "produce unavailable for {longest:?}"
    );

    procs[leader_at].signal(libc::SIGCONT);
    let reader = addr(survivors[0]);
    let values = tokio::task::spawn_blocking(move || {
        read_values(&reader, "paused", "read_committed", RECORDS)
    })
    .await
    .unwrap();
    assert_exactly_once_in_order(&values, RECORDS);
    wait_isr(addr(survivors[0]), "paused", vec![1, 2, 3]).await;
    drop(procs);
}

/// A group id whose coordinator (the leader of its `__consumer_offsets` partition, with
/// `partitions` of them) is not broker `avoid`; with the coordinator's id.
fn group_not_coordinated_by(bootstrap: &str, partitions: i32, avoid: i32) -> (String, i32) {
    use gregor_broker::group::coordinator::partition_for_key;
    let leaders = wait_for("__consumer_offsets leaders", || {
        let l = leaders(bootstrap, "__consumer_offsets")?;
        (l.len() == partitions as usize && l.iter().all(|&b| b > 0)).then_some(l)
    });
    (0..1000)
        .map(|k| format!("group-{k}"))
        .map(|g| {
            let coordinator = leaders[partition_for_key(&g, partitions) as usize];
            (g, coordinator)
        })
        .find(|(_, c)| *c != avoid)
        .expect("some group is coordinated elsewhere")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_survives_its_coordinator_being_killed_without_losing_a_commit() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    const RECORDS: usize = 3000;
    let root = tempfile::tempdir().unwrap();
    let (nodes, mut procs) = start_three(root.path(), |_| {
        vec!["offsets.topic.num.partitions=3".into()]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    let bootstrap = bootstrap_of(&nodes);
    create(&addr(0), "work", "2").await;
    let data_leader = in_sync_leader(addr(0), "work").await;
    let producer = durable_producer(&bootstrap);
    let acks: Acks = Arc::default();
    paced_send(producer, "work", RECORDS, 50, acks.clone()).await;
    assert!(acks.lock().unwrap().iter().all(|(_, _, r)| r.is_ok()));

    let ids: Vec<i32> = nodes.iter().map(|n| n.id).collect();
    let outcome = tokio::task::spawn_blocking(move || {
        let consumer_of = |group: &str| -> BaseConsumer {
            let mut c = client(&bootstrap);
            c.set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "10000");
            c.create().unwrap()
        };
        // A first group creates __consumer_offsets; the test's group is coordinated by a
        // broker that does not lead the data, so killing it tests the coordinator alone.
        let warm_up = consumer_of("warm-up");
        warm_up.subscribe(&["work"]).unwrap();
        let deadline = Instant::now() + WAIT;
        while warm_up.poll(Duration::from_millis(100)).is_none() {
            assert!(Instant::now() < deadline, "the warm-up group never consumed");
        }
        drop(warm_up);
        let (group, coordinator) = group_not_coordinated_by(&bootstrap, 3, data_leader);

        let consumer = consumer_of(&group);
        consumer.subscribe(&["work"]).unwrap();
        let commit = |next: i64| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("work", 0, Offset::Offset(next))
                .unwrap();
            consumer.commit(&tpl, CommitMode::Sync)
        };
        let mut seen = vec![0usize; RECORDS];
        let mut next = 0i64;
        let mut last_committed = -1i64;
        let mut killed_at = None;
        let deadline = Instant::now() + Duration::from_secs(90);
        while (next as usize) < RECORDS || last_committed < RECORDS as i64 {
            assert!(Instant::now() < deadline, "the group stalled at offset {next}, committed {last_committed}");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let value = std::str::from_utf8(m.payload().unwrap()).unwrap();
                let i: usize = value.trim_start_matches("r-").parse().unwrap();
                seen[i] += 1;
                next = m.offset() + 1;
            }
            let due = next - last_committed.max(0) >= 200 || next as usize == RECORDS;
            if due && next > last_committed {
                match commit(next) {
                    Ok(()) => last_committed = next,
                    Err(e) => eprintln!("commit at {next} failed (retried): {e}"),
                }
            }
            if killed_at.is_none() && last_committed >= 1000 {
                let at = ids.iter().position(|&id| id == coordinator).unwrap();
                procs[at].kill();
                // The new coordinator answers with what the old one acknowledged.
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition("work", 0);
                let after_kill = wait_for("the committed offset after the kill", || {
                    let c = consumer
                        .committed_offsets(tpl.clone(), Duration::from_secs(5))
                        .ok()?;
                    c.find_partition("work", 0)?.offset().to_raw()
                });
                assert_eq!(after_kill, last_committed, "the new coordinator has the commit");
                eprintln!("coordinator {coordinator} of {group} SIGKILLed at committed offset {last_committed}");
                killed_at = Some(at);
            }
        }
        drop(consumer);
        // The next member of the group starts where the last acknowledged commit says.
        let reader = consumer_of(&group);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("work", 0);
        let committed = wait_for("the committed offset", || {
            let c = reader.committed_offsets(tpl.clone(), Duration::from_secs(5)).ok()?;
            c.find_partition("work", 0)?.offset().to_raw()
        });
        (seen, last_committed, committed, killed_at.unwrap(), procs)
    })
    .await
    .unwrap();
    let (seen, last_committed, committed, killed_at, mut procs) = outcome;
    assert_eq!(committed, last_committed, "no acknowledged commit lost");
    assert_eq!(committed, RECORDS as i64);
    let skipped: Vec<usize> = (0..RECORDS).filter(|&i| seen[i] == 0).take(5).collect();
    assert!(skipped.is_empty(), "records never consumed: {skipped:?}");

    procs[killed_at] = spawn(root.path(), &nodes[killed_at], &voters_of(&nodes));
    procs[killed_at].wait_listening();
    wait_isr(addr((killed_at + 1) % 3), "work", vec![1, 2, 3]).await;
    drop(procs);
}

/// Every value of `topic`'s `partitions` partitions from the start, read_committed, sorted.
fn read_all_committed(bootstrap: &str, topic: &str, partitions: i32) -> Vec<String> {
    let all: Vec<i32> = (0..partitions).collect();
    let mut values = read_committed_partitions(bootstrap, topic, &all);
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_spanning_brokers_commits_and_aborts_everywhere() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| {
        vec!["transaction.state.log.num.partitions=3".into()]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    create_topic_rf(&addr(0), "spread", 3, 3).await.unwrap();
    let bootstrap = addr(0);
    let partition_leaders = wait_for("spread leaders", || {
        let l = leaders(&bootstrap, "spread")?;
        (l.iter().all(|&b| b > 0)).then_some(l)
    });
    let values = tokio::task::spawn_blocking(move || {
        let mut c = client(&bootstrap);
        c.set("transactional.id", "spread-txn")
            .set("linger.ms", "5");
        let p: ThreadedProducer<DefaultProducerContext> = c.create().unwrap();
        p.init_transactions(WAIT).unwrap();
        for (tag, commit) in [("aborted", false), ("committed", true)] {
            p.begin_transaction().unwrap();
            for partition in 0..3 {
                for i in 0..10 {
                    let value = format!("{tag}-{partition}-{i:02}");
                    p.send(
                        BaseRecord::<(), str>::to("spread")
                            .payload(&value)
                            .partition(partition),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap();
                }
            }
            if commit {
                p.commit_transaction(WAIT).unwrap();
            } else {
                p.abort_transaction(WAIT).unwrap();
            }
        }
        read_all_committed(&bootstrap, "spread", 3)
    })
    .await
    .unwrap();
    let distinct: std::collections::BTreeSet<i32> = partition_leaders.iter().copied().collect();
    eprintln!("partition leaders {partition_leaders:?}");
    assert!(
        distinct.len() > 1,
        "the partitions are led by several brokers"
    );
    let want: Vec<String> = (0..3)
        .flat_map(|p| (0..10).map(move |i| format!("committed-{p}-{i:02}")))
        .collect();
    assert_eq!(
        values, want,
        "the committed transaction only, on every broker"
    );
    drop(procs);
}

/// A transactional id whose coordinator (with `partitions` `__transaction_state`
/// partitions, created here by a first transactional producer) is not among `avoid`, and
/// that coordinator's id.
fn txn_id_not_coordinated_by(bootstrap: &str, partitions: i32, avoid: &[i32]) -> (String, i32) {
    use gregor_broker::group::coordinator::partition_for_key;
    use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
    let mut c = client(bootstrap);
    c.set("transactional.id", "warm-up");
    let warm_up: ThreadedProducer<DefaultProducerContext> = c.create().unwrap();
    warm_up.init_transactions(WAIT).unwrap();
    let leaders = wait_for("__transaction_state leaders", || {
        let l = leaders(bootstrap, "__transaction_state")?;
        (l.len() == partitions as usize && l.iter().all(|&b| b > 0)).then_some(l)
    });
    let all: Vec<(String, i32)> = (0..1000)
        .map(|k| format!("ctp-{k}"))
        .map(|id| {
            let c = leaders[partition_for_key(&id, partitions) as usize];
            (id, c)
        })
        .collect();
    all.iter()
        .find(|(_, c)| !avoid.contains(c))
        .or_else(|| all.iter().find(|(_, c)| *c != avoid[avoid.len() - 1]))
        .cloned()
        .expect("some transactional id is coordinated elsewhere")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_survives_its_transaction_coordinator_being_killed() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Offset, TopicPartitionList};
    const RECORDS: usize = 2000;
    let root = tempfile::tempdir().unwrap();
    let (nodes, procs) = start_three(root.path(), |_| {
        vec![
            "transaction.state.log.num.partitions=3".into(),
            "offsets.topic.num.partitions=3".into(),
        ]
    })
    .await;
    let addr = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    let bootstrap = bootstrap_of(&nodes);
    create(&addr(0), "in", "2").await;
    create(&addr(0), "out", "2").await;
    let in_leader = in_sync_leader(addr(0), "in").await;
    let out_leader = in_sync_leader(addr(0), "out").await;
    let acks: Acks = Arc::default();
    paced_send(
        durable_producer(&bootstrap),
        "in",
        RECORDS,
        50,
        acks.clone(),
    )
    .await;
    assert!(acks.lock().unwrap().iter().all(|(_, _, r)| r.is_ok()));

    let ids: Vec<i32> = nodes.iter().map(|n| n.id).collect();
    let (outputs, procs) = tokio::task::spawn_blocking(move || {
        let mut procs = procs;
        let (txn_id, coordinator) =
            txn_id_not_coordinated_by(&bootstrap, 3, &[in_leader, out_leader]);
        let (group, _) = group_not_coordinated_by_after_warm_up(&bootstrap, coordinator);
        eprintln!("{txn_id} coordinated by {coordinator}; data led by {in_leader}/{out_leader}");
        let mut c = client(&bootstrap);
        c.set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer = c.create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let new_producer = || {
            let mut c = client(&bootstrap);
            c.set("transactional.id", &txn_id)
                .set("linger.ms", "2")
                .set("transaction.timeout.ms", "20000");
            let p: ThreadedProducer<DefaultProducerContext> = c.create().unwrap();
            p.init_transactions(Duration::from_secs(30)).unwrap();
            p
        };
        let mut producer = new_producer();
        let mut committed = 0i64;
        let mut killed = false;
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed < RECORDS as i64 {
            assert!(Instant::now() < deadline, "stuck at committed input offset {committed}");
            let mut batch = Vec::new();
            while batch.len() < 100 {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => batch.push((
                        m.offset(),
                        String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
                    )),
                    _ => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let next = batch.last().unwrap().0 + 1;
            let outcome = (|| {
                producer.begin_transaction()?;
                for (_, value) in &batch {
                    let out = value.replace("r-", "t-");
                    producer
                        .send(BaseRecord::<(), str>::to("out").payload(&out).partition(0))
                        .map_err(|(e, _)| e)?;
                }
                let mut offsets = TopicPartitionList::new();
                offsets.add_partition_offset("in", 0, Offset::Offset(next))?;
                producer.send_offsets_to_transaction(
                    &offsets,
                    &consumer.group_metadata().unwrap(),
                    Duration::from_secs(30),
                )?;
                producer.commit_transaction(Duration::from_secs(30))
            })();
            match outcome {
                Ok(()) => committed = next,
                Err(e) => {
                    eprintln!("transaction ending at {next} failed: {e}: aborting and retrying");
                    let requires_abort = matches!(&e, rdkafka::error::KafkaError::Transaction(t) if t.txn_requires_abort());
                    if !requires_abort || producer.abort_transaction(Duration::from_secs(30)).is_err() {
                        producer = new_producer();
                    }
                    consumer
                        .seek("in", 0, Offset::Offset(committed), Duration::from_secs(10))
                        .unwrap();
                }
            }
            if !killed && committed >= 500 {
                let at = ids.iter().position(|&id| id == coordinator).unwrap();
                procs[at].kill();
                eprintln!("transaction coordinator {coordinator} SIGKILLed at input offset {committed}");
                killed = true;
            }
        }
        let reader = nodes_bootstrap_without(&bootstrap, coordinator, &ids);
        (read_all_committed(&reader, "out", 1), procs)
    })
    .await
    .unwrap();
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..RECORDS).map(|i| format!("t-{i:06}")).collect();
        w.sort();
        w
    };
    assert_eq!(outputs.len(), want.len(), "every input once in the output");
    assert!(outputs == want, "exactly the transformed inputs");
    drop(procs);
}

/// A group id whose coordinator is not `avoid` (creating `__consumer_offsets` first).
fn group_not_coordinated_by_after_warm_up(bootstrap: &str, avoid: i32) -> (String, i32) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut c = client(bootstrap);
    c.set("group.id", "warm-up");
    let warm_up: BaseConsumer = c.create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("in", 0);
    let _ = wait_for("__consumer_offsets", || {
        warm_up
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .ok()
    });
    group_not_coordinated_by(bootstrap, 3, avoid)
}

/// `bootstrap` without the broker `gone` (of `ids`, in order).
fn nodes_bootstrap_without(bootstrap: &str, gone: i32, ids: &[i32]) -> String {
    bootstrap
        .split(',')
        .zip(ids)
        .filter(|(_, id)| **id != gone)
        .map(|(a, _)| a)
        .collect::<Vec<_>>()
        .join(",")
}
