//! Leader election when no in-sync replica is left, with four `gregor broker` processes on
//! 127.0.0.1: node 1 is the only controller (so the quorum survives every replica going
//! down) and nodes 2-4 hold the replicas of the tested partition, driven by librdkafka.
//!
//! - Eligible leader replicas (KIP-966, on by default): a follower stopped while the ISR was
//!   below `min.insync.replicas` holds every committed record; when the last in-sync
//!   replica is SIGKILLed, the partition waits for it rather than for an out-of-sync replica,
//!   and comes back with it, nothing committed lost, while the dead leader stays dead;
//!   `gregor topic describe` shows the ELR (DescribeTopicPartitions).
//! - Unclean election: off, the partition stays offline while its only live replica is out
//!   of the ISR; turned on for the topic, that replica leads at once and the controller logs
//!   the possible loss.
//! - ElectLeaders (API 43) through librdkafka's admin API and `gregor cluster elect-leaders`:
//!   not needed while the preferred replica leads; unclean with no live replica is
//!   ELIGIBLE_LEADERS_NOT_AVAILABLE, with an out-of-sync one it leads; preferred while the
//!   preferred replica is dead is PREFERRED_LEADER_NOT_AVAILABLE, once it is back in sync it
//!   leads again.
//!
//! Every process is killed by its guard, on every path.

mod support;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use support::cluster::*;
use support::replicated::*;
use support::BrokerProcess;

/// Node 1 (controller and broker) and nodes 2-4 (brokers only), all serving.
async fn start_four(root: &std::path::Path) -> (Vec<Node>, String, Vec<BrokerProcess>) {
    let (nodes, _) = nodes(4);
    let voters = voters_of(&nodes[..1]);
    let mut procs = vec![spawn(root, &nodes[0], &voters)];
    procs[0].wait_listening();
    for n in &nodes[1..] {
        procs.push(spawn_observer(root, n, &voters, &[]));
    }
    for p in &mut procs[1..] {
        p.wait_listening();
    }
    wait_live(format!("127.0.0.1:{}", nodes[0].port), vec![1, 2, 3, 4]).await;
    (nodes, voters, procs)
}

/// Topic `name`, one partition on replicas 2, 3, 4 (2 leads), `configs` set.
async fn create_on_2_3_4(bootstrap: &str, name: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let mut topic = NewTopic::new(
        name,
        1,
        rdkafka::admin::TopicReplication::Variable(&[&[2, 3, 4]]),
    );
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let r = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .unwrap();
    r[0].clone().unwrap();
}

/// Waits until partition 0 of `topic` has no leader, as node 1 reports it.
async fn wait_offline(bootstrap: String, topic: &'static str) {
    wait_leader_among(bootstrap, topic, vec![-1]).await;
}

/// Checks for `how_long` that partition 0 of `topic` stays without a leader.
async fn stays_offline(bootstrap: String, topic: &'static str, how_long: Duration) {
    tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + how_long;
        while std::time::Instant::now() < until {
            let state = partition_state(&bootstrap, topic);
            assert!(
                state.as_ref().is_none_or(|(leader, _, _)| *leader == -1),
                "{topic} must stay offline: {state:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
}

fn restart(root: &std::path::Path, node: &Node, voters: &str) -> BrokerProcess {
    let mut p = spawn_observer(root, node, voters, &[]);
    p.wait_listening();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eligible_leader_replica_takes_over_when_the_last_in_sync_replica_dies() {
    const TOPIC: &str = "elr";
    let root = tempfile::tempdir().unwrap();
    let (nodes, voters, mut procs) = start_four(root.path()).await;
    let controller = format!("127.0.0.1:{}", nodes[0].port);
    let all = bootstrap_of(&nodes);
    create_on_2_3_4(&controller, TOPIC, &[("min.insync.replicas", "2")]).await;
    assert_eq!(in_sync_leader(controller.clone(), TOPIC).await, 2);

    // 4 stops cleanly; the ISR {2, 3} is still at the minimum, the committed records below
    // are on both.
    tokio::task::block_in_place(|| procs[3].terminate());
    wait_isr(controller.clone(), TOPIC, vec![2, 3]).await;
    let committed = producer(&all, "all", true);
    send(&committed, TOPIC, 100, "c").await.unwrap();

    // 3 stops cleanly too: the ISR {2} is below the minimum, so 3 becomes an eligible
    // leader replica and nothing more commits: acks=all is refused, an acks=1 write stays
    // above the high watermark.
    tokio::task::block_in_place(|| procs[2].terminate());
    wait_isr(controller.clone(), TOPIC, vec![2]).await;
    // DescribeTopicPartitions (KIP-966) shows it, through the Gregor client.
    let c = controller.clone();
    let elr = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gregor"))
            .args([
                "topic",
                "describe",
                TOPIC,
                "--format",
                "json",
                "--brokers",
                &c,
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["partitions"][0]["eligible_leader_replicas"].clone()
    })
    .await
    .unwrap();
    assert_eq!(elr, serde_json::json!([3]));
    match send(&producer(&all, "all", false), TOPIC, 1, "refused").await {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)) => {}
        other => panic!("acks=all below min.insync.replicas: {other:?}"),
    }
    send(&producer(&all, "1", false), TOPIC, 1, "uncommitted")
        .await
        .unwrap();
    let leader = format!("127.0.0.1:{}", nodes[1].port);
    let visible =
        tokio::task::spawn_blocking(move || read_values(&leader, TOPIC, "read_uncommitted", 101))
            .await
            .unwrap();
    assert_eq!(visible.len(), 100, "the high watermark stood still");

    // The last in-sync replica dies: offline, and 4 (which missed the committed records)
    // may not lead.
    procs[1].kill();
    wait_offline(controller.clone(), TOPIC).await;
    procs[3] = restart(root.path(), &nodes[3], &voters);
    stays_offline(controller.clone(), TOPIC, Duration::from_secs(3)).await;

    // 3 returns from its clean shutdown and leads: every committed record is there, and 4
    // catches up from it and joins the ISR, so acks=all works again.
    procs[2] = restart(root.path(), &nodes[2], &voters);
    assert_eq!(
        wait_leader_among(controller.clone(), TOPIC, vec![3]).await,
        3
    );
    wait_isr(controller.clone(), TOPIC, vec![3, 4]).await;
    let reader = format!("127.0.0.1:{}", nodes[2].port);
    let values =
        tokio::task::spawn_blocking(move || read_values(&reader, TOPIC, "read_committed", 100))
            .await
            .unwrap();
    let want: Vec<String> = (0..100).map(|i| format!("c-{i:06}")).collect();
    assert_eq!(values, want, "every committed record, nothing uncommitted");
    send(&producer(&all, "all", true), TOPIC, 10, "after")
        .await
        .unwrap();
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_election_brings_an_out_of_sync_replica_back_only_when_enabled() {
    const TOPIC: &str = "unclean";
    let root = tempfile::tempdir().unwrap();
    let (nodes, voters, mut procs) = start_four(root.path()).await;
    let controller = format!("127.0.0.1:{}", nodes[0].port);
    let all = bootstrap_of(&nodes);
    create_on_2_3_4(&controller, TOPIC, &[]).await;
    assert_eq!(in_sync_leader(controller.clone(), TOPIC).await, 2);

    // 4 stops, records commit on 2 and 3, then both die.
    tokio::task::block_in_place(|| procs[3].terminate());
    wait_isr(controller.clone(), TOPIC, vec![2, 3]).await;
    send(&producer(&all, "all", true), TOPIC, 50, "c")
        .await
        .unwrap();
    procs[2].kill();
    wait_isr(controller.clone(), TOPIC, vec![2]).await;
    procs[1].kill();
    wait_offline(controller.clone(), TOPIC).await;

    // Off (the default): 4 is live but out of sync; the partition stays offline.
    procs[3] = restart(root.path(), &nodes[3], &voters);
    wait_live(controller.clone(), vec![1, 4]).await;
    stays_offline(controller.clone(), TOPIC, Duration::from_secs(3)).await;

    // On for the topic: 4 leads at once, without the records it never had, and the
    // controller says so.
    let admin: AdminClient<DefaultClientContext> = client(&controller).create().unwrap();
    let r = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic(TOPIC))
                .set("unclean.leader.election.enable", "true")],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok(), "the config is set: {:?}", r[0].as_ref().err());
    assert_eq!(
        wait_leader_among(controller.clone(), TOPIC, vec![4]).await,
        4
    );
    let log = std::fs::read_to_string(support::log_path(&root.path().join("node-1"))).unwrap();
    assert!(
        log.contains("unclean leader election"),
        "the possible loss is logged"
    );
    send(&producer(&all, "all", true), TOPIC, 5, "after")
        .await
        .unwrap();
    let reader = format!("127.0.0.1:{}", nodes[3].port);
    let values =
        tokio::task::spawn_blocking(move || read_values(&reader, TOPIC, "read_committed", 5))
            .await
            .unwrap();
    let want: Vec<String> = (0..5).map(|i| format!("after-{i:06}")).collect();
    assert_eq!(values, want, "the records 4 never had are gone");
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_unclean_and_preferred_through_librdkafka_and_the_gregor_client() {
    use support::elect::{gregor_elect, librdkafka_elect};
    const TOPIC: &str = "asked";
    let root = tempfile::tempdir().unwrap();
    let (nodes, voters, mut procs) = start_four(root.path()).await;
    let controller = format!("127.0.0.1:{}", nodes[0].port);
    let all = bootstrap_of(&nodes);
    create_on_2_3_4(&controller, TOPIC, &[]).await;
    assert_eq!(in_sync_leader(controller.clone(), TOPIC).await, 2);
    let elect = |unclean: bool| {
        let c = controller.clone();
        tokio::task::spawn_blocking(move || librdkafka_elect(&c, unclean, &[(TOPIC, 0)]))
    };
    let gregor = |args: &'static [&'static str]| {
        let c = controller.clone();
        tokio::task::spawn_blocking(move || gregor_elect(&c, args))
    };
    let only = |rows: Vec<(String, i64, String)>| {
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows[0].2.clone()
    };

    // Nothing to do: the preferred replica leads; an unclean election of a led partition
    // is not needed either; a partition that does not exist is unknown.
    let done = elect(false).await.unwrap().unwrap();
    assert_eq!(
        done,
        vec![(TOPIC.into(), 0, RDKafkaErrorCode::ElectionNotNeeded)]
    );
    let (code, rows) = gregor(&["--type", "unclean", "--topic", TOPIC])
        .await
        .unwrap();
    assert_eq!((code, only(rows)), (0, "ELECTION_NOT_NEEDED".to_string()));
    let (code, rows) = gregor(&["--topic", TOPIC, "--partition", "7"])
        .await
        .unwrap();
    assert_eq!(
        (code, only(rows)),
        (1, "UNKNOWN_TOPIC_OR_PARTITION".to_string())
    );

    // Records commit on all three; 4 stops, then 3 and 2 die: offline, no replica live.
    send(&producer(&all, "all", true), TOPIC, 40, "c")
        .await
        .unwrap();
    tokio::task::block_in_place(|| procs[3].terminate());
    wait_isr(controller.clone(), TOPIC, vec![2, 3]).await;
    send(&producer(&all, "all", true), TOPIC, 10, "d")
        .await
        .unwrap();
    procs[2].kill();
    wait_isr(controller.clone(), TOPIC, vec![2]).await;
    procs[1].kill();
    wait_offline(controller.clone(), TOPIC).await;
    let (code, rows) = gregor(&["--type", "unclean", "--topic", TOPIC])
        .await
        .unwrap();
    assert_eq!(
        (code, only(rows)),
        (1, "ELIGIBLE_LEADERS_NOT_AVAILABLE".to_string())
    );

    // 4 returns out of sync: it does not lead by itself (unclean election is off), the
    // preferred replica (2) is dead, and an unclean election through librdkafka makes 4
    // lead without the records it missed.
    procs[3] = restart(root.path(), &nodes[3], &voters);
    wait_live(controller.clone(), vec![1, 4]).await;
    stays_offline(controller.clone(), TOPIC, Duration::from_secs(1)).await;
    let (code, rows) = gregor(&["--topic", TOPIC]).await.unwrap();
    assert_eq!(
        (code, only(rows)),
        (1, "PREFERRED_LEADER_NOT_AVAILABLE".to_string())
    );
    assert_eq!(
        elect(true).await.unwrap().unwrap(),
        vec![(TOPIC.into(), 0, RDKafkaErrorCode::NoError)]
    );
    assert_eq!(
        wait_leader_among(controller.clone(), TOPIC, vec![4]).await,
        4
    );
    send(&producer(&all, "all", true), TOPIC, 5, "after")
        .await
        .unwrap();

    // 2 and 3 return, truncate to 4's log and rejoin; a preferred election through the
    // Gregor client gives the partition back to 2, with everything 4 acknowledged.
    procs[1] = restart(root.path(), &nodes[1], &voters);
    procs[2] = restart(root.path(), &nodes[2], &voters);
    wait_isr(controller.clone(), TOPIC, vec![2, 3, 4]).await;
    let (code, rows) = gregor(&["--topic", TOPIC]).await.unwrap();
    assert_eq!((code, only(rows)), (0, "ELECTED".to_string()));
    assert_eq!(
        wait_leader_among(controller.clone(), TOPIC, vec![2]).await,
        2
    );
    let reader = format!("127.0.0.1:{}", nodes[1].port);
    let values =
        tokio::task::spawn_blocking(move || read_values(&reader, TOPIC, "read_committed", 46))
            .await
            .unwrap();
    let want: Vec<String> = (0..40)
        .map(|i| format!("c-{i:06}"))
        .chain((0..5).map(|i| format!("after-{i:06}")))
        .collect();
    assert_eq!(
        values, want,
        "what 4 had and acknowledged is kept; what only 2 and 3 had is gone"
    );
    drop(procs);
}
