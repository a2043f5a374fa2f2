//! Consumer groups driven by librdkafka: queue and pub/sub modes, resuming after commits,
//! rebalances on leave, static membership, cooperative-sticky, persistence across restarts,
//! and the group admin APIs.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{client_config, start_broker, RawConnection};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Short delays keep the tests fast; the 3 s default is measured in the benchmarks.
const BROKER: &[(&str, &str)] = &[("group.initial.rebalance.delay.ms", "200")];

async fn setup(
    dir: &std::path::Path,
    topic: &str,
    partitions: i32,
    records: usize,
) -> gregor_broker::BrokerHandle {
    let broker = start_broker(dir, BROKER).await;
    let bootstrap = broker.local_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = client_config(&bootstrap).create().unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(r[0].is_ok());
    produce(&bootstrap, topic, 0, records).await;
    broker
}

/// Produces values `"{i}"` for i in `from..from + count`, keyed so they spread over partitions.
async fn produce(bootstrap: &str, topic: &str, from: usize, count: usize) {
    let producer: FutureProducer = client_config(bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let deliveries: Vec<_> = (from..from + count)
        .map(|i| {
            let v = i.to_string();
            producer
                .send_result(FutureRecord::to(topic).key(&v).payload(&v))
                .expect("enqueued")
        })
        .collect();
    for d in deliveries {
        d.await.unwrap().expect("delivered");
    }
}

fn consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> StreamConsumer {
    let mut c = client_config(bootstrap);
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().unwrap()
}

/// Receives from several consumers at once until `total` records arrived or `TIMEOUT`.
async fn drain(consumers: &[&StreamConsumer], total: usize) -> Vec<Vec<(i32, i64, String)>> {
    let mut got: Vec<Vec<(i32, i64, String)>> = vec![Vec::new(); consumers.len()];
    let deadline = Instant::now() + TIMEOUT;
    // Distinct (consumer, value) pairs: redeliveries after a rebalance do not count twice.
    let distinct = |got: &Vec<Vec<(i32, i64, String)>>| {
        got.iter()
            .enumerate()
            .flat_map(|(i, rs)| rs.iter().map(move |r| (i, r.2.clone())))
            .collect::<HashSet<_>>()
            .len()
    };
    while distinct(&got) < total && Instant::now() < deadline {
        for (i, c) in consumers.iter().enumerate() {
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(50), c.recv()).await {
                let v = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                got[i].push((m.partition(), m.offset(), v));
            }
        }
    }
    got
}

fn values(records: &[(i32, i64, String)]) -> Vec<usize> {
    let mut v: Vec<usize> = records.iter().map(|r| r.2.parse().unwrap()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_splits_partitions_and_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), "queue", 4, 400).await;
    let b = broker.local_addr.to_string();
    let c1 = consumer(&b, "workers", &[]);
    let c2 = consumer(&b, "workers", &[]);
    c1.subscribe(&["queue"]).unwrap();
    c2.subscribe(&["queue"]).unwrap();
    let got = drain(&[&c1, &c2], 400).await;
    let all: Vec<(i32, i64, String)> = got.concat();
    assert_eq!(
        values(&all),
        (0..400).collect::<Vec<_>>(),
        "every record exactly once"
    );
    let p1: HashSet<i32> = got[0].iter().map(|r| r.0).collect();
    let p2: HashSet<i32> = got[1].iter().map(|r| r.0).collect();
    assert!(
        !p1.is_empty() && !p2.is_empty(),
        "both members got partitions: {p1:?} {p2:?}"
    );
    assert!(p1.is_disjoint(&p2), "no partition is shared: {p1:?} {p2:?}");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_mode_each_group_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), "news", 2, 200).await;
    let b = broker.local_addr.to_string();
    let c1 = consumer(&b, "readers-a", &[]);
    let c2 = consumer(&b, "readers-b", &[]);
    c1.subscribe(&["news"]).unwrap();
    c2.subscribe(&["news"]).unwrap();
    let got = drain(&[&c1, &c2], 400).await;
    assert_eq!(values(&got[0]), (0..200).collect::<Vec<_>>());
    assert_eq!(values(&got[1]), (0..200).collect::<Vec<_>>());
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_consumer_resumes_after_commit_even_across_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), "resume", 1, 100).await;
    let port = broker.local_addr.port();
    let b = broker.local_addr.to_string();
    {
        let c = consumer(&b, "resumers", &[]);
        c.subscribe(&["resume"]).unwrap();
        let got = drain(&[&c], 100).await;
        assert_eq!(got[0].len(), 100);
        // Commit after record 59 (next offset 60), as an application that processed 60.
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("resume", 0, Offset::Offset(60))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
        let committed = c.committed(TIMEOUT).unwrap();
        assert_eq!(
            committed.find_partition("resume", 0).unwrap().offset(),
            Offset::Offset(60)
        );
    }
    broker.shutdown().await.unwrap();
    let broker = common::restart_broker(dir.path(), port, BROKER).await;
    let c = consumer(&b, "resumers", &[]);
    c.subscribe(&["resume"]).unwrap();
    let got = drain(&[&c], 40).await;
    assert_eq!(
        values(&got[0]),
        (60..100).collect::<Vec<_>>(),
        "no redelivery of committed records"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_member_hands_its_partitions_to_the_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), "handover", 4, 0).await;
    let b = broker.local_addr.to_string();
    let stay = consumer(&b, "pair", &[]);
    stay.subscribe(&["handover"]).unwrap();
    {
        let leave = consumer(&b, "pair", &[]);
        leave.subscribe(&["handover"]).unwrap();
        produce(&b, "handover", 0, 200).await;
        let got = drain(&[&stay, &leave], 200).await;
        assert!(!got[1].is_empty(), "the second member had partitions");
        stay.commit_consumer_state(CommitMode::Sync).unwrap();
        leave.commit_consumer_state(CommitMode::Sync).unwrap();
        // Dropping closes the consumer, which sends LeaveGroup.
    }
    produce(&b, "handover", 200, 200).await;
    let got = drain(&[&stay], 200).await;
    // At-least-once: records read before the rebalance but not committed may come again.
    let mut seen = values(&got[0]);
    seen.dedup();
    assert_eq!(
        seen,
        (200..400).collect::<Vec<_>>(),
        "the survivor reads every partition, from the commits"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_rejoins_and_cooperative_sticky_works() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), "sticky", 4, 200).await;
    let b = broker.local_addr.to_string();
    let coop = [("partition.assignment.strategy", "cooperative-sticky")];
    let c1 = consumer(&b, "coop", &coop);
    let c2 = consumer(&b, "coop", &coop);
    c1.subscribe(&["sticky"]).unwrap();
    c2.subscribe(&["sticky"]).unwrap();
    let got = drain(&[&c1, &c2], 200).await;
    assert_eq!(values(&got.concat()), (0..200).collect::<Vec<_>>());

    let fixed = [("group.instance.id", "worker-1")];
    {
        let s = consumer(&b, "static", &fixed);
        s.subscribe(&["sticky"]).unwrap();
        let got = drain(&[&s], 200).await;
        assert_eq!(got[0].len(), 200);
    }
    // The same instance id comes back within the session timeout and is accepted.
    let s = consumer(&b, "static", &fixed);
    s.subscribe(&["sticky"]).unwrap();
    produce(&b, "sticky", 200, 20).await;
    let got = drain(&[&s], 220).await;
    assert!(
        got[0].iter().any(|r| r.2 == "219"),
        "the rejoined static member consumes"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_admin_list_describe_delete_and_offset_delete() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), "admin", 2, 10).await;
    let b = broker.local_addr.to_string();
    {
        let c = consumer(&b, "to-delete", &[]);
        c.subscribe(&["admin"]).unwrap();
        drain(&[&c], 10).await;
        c.commit_consumer_state(CommitMode::Sync).unwrap();
        let groups = c.fetch_group_list(Some("to-delete"), TIMEOUT).unwrap();
        let g = &groups.groups()[0];
        assert_eq!(g.state(), "Stable");
        assert_eq!(g.protocol_type(), "consumer");
        assert_eq!(g.members().len(), 1);
        // OffsetDelete is refused while the group is subscribed to the topic.
        let addr = broker.local_addr;
        let codes = tokio::task::spawn_blocking(move || offset_delete(addr, "to-delete", "admin"))
            .await
            .unwrap();
        assert_eq!(codes, (0, vec![86, 86]), "GROUP_SUBSCRIBED_TO_TOPIC");
    }
    let admin: AdminClient<DefaultClientContext> = client_config(&b).create().unwrap();
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    // Once the member left, offsets can be deleted, then the group itself.
    let addr = broker.local_addr;
    let codes = tokio::task::spawn_blocking(move || offset_delete(addr, "to-delete", "admin"))
        .await
        .unwrap();
    assert_eq!(codes, (0, vec![0, 0]));
    let r = admin.delete_groups(&["to-delete"], &opts).await.unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let r = admin.delete_groups(&["to-delete"], &opts).await.unwrap();
    assert!(r[0].is_err(), "a deleted group is not found again");
    let list = admin.inner().fetch_group_list(None, TIMEOUT).unwrap();
    assert!(list.groups().iter().all(|g| g.name() != "to-delete"));
    broker.shutdown().await.unwrap();
}

/// Sends OffsetDelete for partitions 0 and 1 of `topic`; returns (group code, partition codes).
fn offset_delete(addr: std::net::SocketAddr, group: &str, topic: &str) -> (i16, Vec<i16>) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let mut c = RawConnection::connect(addr);
    let t = offset_delete_request::OffsetDeleteRequestTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.into())))
        .with_partitions(
            (0..2)
                .map(|p| {
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(p)
                })
                .collect(),
        );
    let req = OffsetDeleteRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(vec![t]);
    let ResponseKind::OffsetDelete(r) =
        c.request(ApiKey::OffsetDelete, 0, &RequestKind::OffsetDelete(req))
    else {
        panic!("wrong response")
    };
    let codes = r
        .topics
        .first()
        .map(|t| t.partitions.iter().map(|p| p.error_code).collect())
        .unwrap_or_default();
    (r.error_code, codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_error_paths() {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &[
            ("group.max.size", "1"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    )
    .await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let s = |v: &str| StrBytes::from_string(v.to_string());
        let mut c = RawConnection::connect(addr);
        raw_find_coordinator(&mut c, "errs");
        let join = |c: &mut RawConnection, member: &str, session: i32, instance: Option<&str>| {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(s("errs")))
                .with_session_timeout_ms(session)
                .with_rebalance_timeout_ms(5000)
                .with_member_id(s(member))
                .with_group_instance_id(instance.map(s))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))]);
            let ResponseKind::JoinGroup(r) =
                c.request(ApiKey::JoinGroup, 7, &RequestKind::JoinGroup(req))
            else {
                panic!()
            };
            r
        };
        assert_eq!(
            join(&mut c, "", 10, None).error_code,
            26,
            "INVALID_SESSION_TIMEOUT"
        );
        let first = join(&mut c, "", 10_000, None);
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        assert_eq!(
            join(&mut c, "made-up", 10_000, None).error_code,
            25,
            "UNKNOWN_MEMBER_ID"
        );
        let joined = join(&mut c, first.member_id.as_str(), 10_000, None);
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(
            join(&mut c, "", 10_000, None).error_code,
            81,
            "GROUP_MAX_SIZE_REACHED"
        );
        let hb = |c: &mut RawConnection, generation: i32| {
            let req = HeartbeatRequest::default()
                .with_group_id(GroupId(s("errs")))
                .with_member_id(joined.member_id.clone())
                .with_generation_id(generation);
            let ResponseKind::Heartbeat(r) =
                c.request(ApiKey::Heartbeat, 4, &RequestKind::Heartbeat(req))
            else {
                panic!()
            };
            r.error_code
        };
        assert_eq!(hb(&mut c, 1), 0);
        assert_eq!(hb(&mut c, 7), 22, "ILLEGAL_GENERATION");
        // Syncing with the wrong generation, then committing before the assignment.
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("errs")))
            .with_member_id(joined.member_id.clone())
            .with_generation_id(9);
        let ResponseKind::SyncGroup(r) =
            c.request(ApiKey::SyncGroup, 3, &RequestKind::SyncGroup(sync))
        else {
            panic!()
        };
        assert_eq!(r.error_code, 22);
        let p = offset_commit_request::OffsetCommitRequestPartition::default()
            .with_partition_index(0)
            .with_committed_offset(5);
        let t = offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("nope")))
            .with_partitions(vec![p]);
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("errs")))
            .with_generation_id_or_member_epoch(1)
            .with_member_id(joined.member_id.clone())
            .with_topics(vec![t]);
        let ResponseKind::OffsetCommit(r) =
            c.request(ApiKey::OffsetCommit, 8, &RequestKind::OffsetCommit(commit))
        else {
            panic!()
        };
        assert_eq!(
            r.topics[0].partitions[0].error_code, 27,
            "REBALANCE_IN_PROGRESS before SyncGroup"
        );
        // Deleting a group with members, and an unknown one.
        let del = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(s("errs")), GroupId(s("ghost"))]);
        let ResponseKind::DeleteGroups(r) =
            c.request(ApiKey::DeleteGroups, 2, &RequestKind::DeleteGroups(del))
        else {
            panic!()
        };
        assert_eq!(r.results[0].error_code, 68, "NON_EMPTY_GROUP");
        assert_eq!(r.results[1].error_code, 69, "GROUP_ID_NOT_FOUND");
        let a = join(&mut c, "", 10_000, Some("inst"));
        assert_eq!(a.error_code, 81, "group.max.size counts static members too");
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_record_with_default_delay_is_under_four_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await; // group.initial.rebalance.delay.ms = 3000
    let b = broker.local_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = client_config(&b).create().unwrap();
    admin
        .create_topics(
            &[NewTopic::new("ttfr", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    produce(&b, "ttfr", 0, 1).await;
    let started = Instant::now();
    let mut c = client_config(&b);
    let c: StreamConsumer = c
        .set("group.id", "fresh")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["ttfr"]).unwrap();
    tokio::time::timeout(TIMEOUT, c.recv())
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "first record after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(2_900),
        "the initial rebalance delay was honoured: {elapsed:?}"
    );
    broker.shutdown().await.unwrap();
}

/// FindCoordinator for `group` (which creates `__consumer_offsets`), as every client sends
/// before its first group request: a broker serves only the groups of the offsets
/// partitions it leads.
fn raw_find_coordinator(c: &mut RawConnection, group: &str) {
    use kafka_protocol::messages::*;
    let req = FindCoordinatorRequest::default()
        .with_key(kafka_protocol::protocol::StrBytes::from_string(
            group.into(),
        ))
        .with_key_type(0);
    let ResponseKind::FindCoordinator(r) = c.request(
        ApiKey::FindCoordinator,
        3,
        &RequestKind::FindCoordinator(req),
    ) else {
        panic!()
    };
    assert_eq!(r.error_code, 0, "FindCoordinator for {group}");
}

/// A raw JoinGroup (v5+, so static membership is possible) that loops through
/// MEMBER_ID_REQUIRED; returns (member id, generation, leader).
fn raw_join(
    c: &mut RawConnection,
    group: &str,
    topic: &str,
    instance: Option<&str>,
) -> (String, i32, String) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    let s = |v: &str| StrBytes::from_string(v.to_string());
    // ConsumerProtocolSubscription v0 for one topic.
    let mut meta = vec![0u8, 0, 0, 0, 0, 1];
    meta.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    meta.extend_from_slice(topic.as_bytes());
    meta.extend_from_slice(&[0, 0, 0, 0]);
    raw_find_coordinator(c, group);
    let mut member = String::new();
    loop {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(&member))
            .with_group_instance_id(instance.map(s))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(bytes::Bytes::from(meta.clone()))]);
        let ResponseKind::JoinGroup(r) =
            c.request(ApiKey::JoinGroup, 7, &RequestKind::JoinGroup(req))
        else {
            panic!()
        };
        match r.error_code {
            79 => member = r.member_id.to_string(),
            0 => {
                return (
                    r.member_id.to_string(),
                    r.generation_id,
                    r.leader.to_string(),
                )
            }
            e => panic!("join failed with {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_member_is_evicted_after_its_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path(), "evict", 2, 0).await;
    let b = broker.local_addr.to_string();
    let addr = broker.local_addr;
    // A member that joins, takes its assignment, and then never heartbeats (a killed process).
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        let (id, generation, _) = raw_join(&mut c, "evictors", "evict", None);
        use kafka_protocol::messages::*;
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(kafka_protocol::protocol::StrBytes::from_string(
                "evictors".into(),
            )))
            .with_member_id(kafka_protocol::protocol::StrBytes::from_string(id))
            .with_generation_id(generation);
        let ResponseKind::SyncGroup(r) =
            c.request(ApiKey::SyncGroup, 3, &RequestKind::SyncGroup(sync))
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
    })
    .await
    .unwrap();
    let started = Instant::now();
    let survivor = consumer(&b, "evictors", &[]);
    survivor.subscribe(&["evict"]).unwrap();
    produce(&b, "evict", 0, 100).await;
    // Both partitions reach the survivor once the silent member's 6 s session has expired.
    let got = drain(&[&survivor], 100).await;
    assert_eq!(values(&got[0]), (0..100).collect::<Vec<_>>());
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "not before the session timeout"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_keeps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("group.initial.rebalance.delay.ms", "0")]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        use kafka_protocol::messages::*;
        use kafka_protocol::protocol::StrBytes;
        let mut c = RawConnection::connect(addr);
        let (old_id, generation, leader) = raw_join(&mut c, "statics", "t", Some("instance-1"));
        assert_eq!(leader, old_id);
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string("statics".into())))
            .with_member_id(StrBytes::from_string(old_id.clone()))
            .with_group_instance_id(Some(StrBytes::from_string("instance-1".into())))
            .with_generation_id(generation)
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(old_id.clone()))
                    .with_assignment(bytes::Bytes::from_static(b"mine")),
            ]);
        let ResponseKind::SyncGroup(r) =
            c.request(ApiKey::SyncGroup, 3, &RequestKind::SyncGroup(sync))
        else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        // The process restarts: same instance id, no member id. No rebalance: same generation.
        let mut c2 = RawConnection::connect(addr);
        let (new_id, new_generation, _) = raw_join(&mut c2, "statics", "t", Some("instance-1"));
        assert_ne!(new_id, old_id);
        assert_eq!(
            new_generation, generation,
            "a static rejoin does not rebalance"
        );
        // The old incarnation is fenced.
        let hb = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string("statics".into())))
            .with_member_id(StrBytes::from_string(old_id))
            .with_group_instance_id(Some(StrBytes::from_string("instance-1".into())))
            .with_generation_id(generation);
        let ResponseKind::Heartbeat(r) =
            c.request(ApiKey::Heartbeat, 3, &RequestKind::Heartbeat(hb))
        else {
            panic!()
        };
        assert_eq!(r.error_code, 82, "FENCED_INSTANCE_ID");
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
