//! Group consumer tests against a real broker: assignor selection, the rebalance listener
//! (eager, cooperative, lost) and pattern subscriptions.

mod common;

use common::{config, start_broker};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gregor_broker::BrokerHandle;
use gregor_client::connection::Connection;
use gregor_client::{Consumer, Producer, ProducerRecord, RebalanceListener, TopicPartition};
use kafka_protocol::messages::{ApiKey, GroupId, LeaveGroupRequest, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
}

/// Records every callback.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
}

fn sorted(p: &[TopicPartition]) -> Vec<TopicPartition> {
    let mut v = p.to_vec();
    v.sort();
    v
}

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Revoked(sorted(p)));
    }
    fn on_partitions_assigned(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Assigned(sorted(p)));
    }
    fn on_partitions_lost(&mut self, p: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Lost(sorted(p)));
    }
}

async fn broker(dir: &std::path::Path) -> BrokerHandle {
    start_broker(
        dir,
        &[
            ("num.partitions", "4"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    )
    .await
}

async fn produce(broker: &BrokerHandle, topic: &str, partitions: i32) {
    let producer = Producer::new(&config(broker, &[])).unwrap();
    for p in 0..partitions {
        producer
            .send_and_wait(ProducerRecord::new(topic, format!("v{p}")).with_partition(p))
            .await
            .unwrap();
    }
    producer.close(Duration::from_secs(5)).await.unwrap();
}

fn group_consumer(broker: &BrokerHandle, group: &str, strategy: &str) -> Consumer {
    Consumer::new(&config(
        broker,
        &[
            ("group.id", group),
            ("auto.offset.reset", "earliest"),
            ("heartbeat.interval.ms", "100"),
            ("session.timeout.ms", "6000"),
            ("max.poll.interval.ms", "10000"),
            ("partition.assignment.strategy", strategy),
        ],
    ))
    .unwrap()
}

/// Polls `c` until `done(c)` holds; panics after 20 s.
async fn poll_until(c: &mut Consumer, done: impl Fn(&Consumer) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(c) {
        assert!(Instant::now() < deadline, "gave up: {:?}", c.assignment());
        c.poll(Duration::from_millis(50)).await.unwrap();
    }
}

/// Polls `c` in the background until `stop` is set.
fn keep_polling(mut c: Consumer, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            c.poll(Duration::from_millis(50)).await.unwrap();
        }
        c
    })
}

/// Starts member `a` alone on topic `t` (4 partitions), then adds member `b` and polls both
/// until `b` owns two partitions. Returns both members.
async fn second_member_joins(
    broker: &BrokerHandle,
    group: &str,
    strategy: &str,
    la: &Recorder,
    lb: &Recorder,
) -> (Consumer, Consumer) {
    let mut a = group_consumer(broker, group, strategy);
    a.set_rebalance_listener(la.clone());
    a.subscribe(vec!["t"]).unwrap();
    poll_until(&mut a, |c| c.assignment().len() == 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let task = keep_polling(a, stop.clone());
    let mut b = group_consumer(broker, group, strategy);
    b.set_rebalance_listener(lb.clone());
    b.subscribe(vec!["t"]).unwrap();
    poll_until(&mut b, |c| c.assignment().len() == 2).await;
    // Give `a` time to finish its side of the last rebalance.
    let deadline = Instant::now() + Duration::from_secs(10);
    while la.events().last() != Some(&Event::Assigned(Vec::new()))
        && !matches!(la.events().last(), Some(Event::Assigned(p)) if p.len() == 2)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    (task.await.unwrap(), b)
}

fn all_partitions() -> Vec<TopicPartition> {
    (0..4).map(|p| ("t".to_string(), p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roundrobin_strategy_interleaves_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    produce(&broker, "t", 4).await;
    let (la, lb) = (Recorder::default(), Recorder::default());
    let (a, b) = second_member_joins(
        &broker,
        "rr",
        "org.apache.kafka.clients.consumer.RoundRobinAssignor",
        &la,
        &lb,
    )
    .await;
    let (pa, pb) = (sorted(&a.assignment()), sorted(&b.assignment()));
    // Range would hand out [0, 1] and [2, 3].
    let even = vec![("t".to_string(), 0), ("t".to_string(), 2)];
    let odd = vec![("t".to_string(), 1), ("t".to_string(), 3)];
    assert!(
        (pa == even && pb == odd) || (pa == odd && pb == even),
        "{pa:?} {pb:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eager_listener_revokes_everything_then_assigns_anew() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    produce(&broker, "t", 4).await;
    let (la, lb) = (Recorder::default(), Recorder::default());
    let (a, b) = second_member_joins(&broker, "eager", "range", &la, &lb).await;
    assert_eq!(
        la.events(),
        vec![
            Event::Assigned(all_partitions()),
            Event::Revoked(all_partitions()),
            Event::Assigned(sorted(&a.assignment())),
        ]
    );
    assert_eq!(lb.events(), vec![Event::Assigned(sorted(&b.assignment()))]);
    // Range: consecutive halves.
    let mut both = vec![sorted(&a.assignment()), sorted(&b.assignment())];
    both.sort();
    assert_eq!(
        both,
        vec![
            all_partitions()[..2].to_vec(),
            all_partitions()[2..].to_vec()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cooperative_sticky_moves_only_what_changes_with_a_second_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    produce(&broker, "t", 4).await;
    let (la, lb) = (Recorder::default(), Recorder::default());
    let (a, b) = second_member_joins(&broker, "coop", "cooperative-sticky", &la, &lb).await;
    let (pa, pb) = (sorted(&a.assignment()), sorted(&b.assignment()));
    assert_eq!(pa.len(), 2);
    let mut union = [pa.clone(), pb.clone()].concat();
    union.sort();
    assert_eq!(union, all_partitions());
    let events = la.events();
    assert_eq!(events[0], Event::Assigned(all_partitions()));
    // Only the partitions that moved to b were revoked from a; nothing new was assigned.
    let revoked: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Revoked(_) | Event::Lost(_)))
        .collect();
    assert_eq!(revoked, vec![&Event::Revoked(pb.clone())], "{events:?}");
    assert!(
        events[1..]
            .iter()
            .all(|e| !matches!(e, Event::Assigned(p) if !p.is_empty())),
        "{events:?}"
    );
    // b got its partitions only in the rebalance after a revoked them (first one: nothing).
    assert_eq!(
        lb.events(),
        vec![Event::Assigned(Vec::new()), Event::Assigned(pb)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fenced_member_reports_partitions_lost_not_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    produce(&broker, "t", 4).await;
    let l = Recorder::default();
    let mut a = group_consumer(&broker, "lost", "range");
    a.set_rebalance_listener(l.clone());
    a.subscribe(vec!["t"]).unwrap();
    poll_until(&mut a, |c| c.assignment().len() == 4).await;
    let (member_id, _) = a.group_membership().expect("in the group");

    // Another party removes the member from the group behind its back.
    let conn = Connection::connect(
        &broker.local_addr.to_string(),
        "admin",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("lost")))
        .with_member_id(StrBytes::from_string(member_id.clone()));
    let ResponseKind::LeaveGroup(r) = conn
        .send_versioned(ApiKey::LeaveGroup, 1, &RequestKind::LeaveGroup(request))
        .unwrap()
        .await
        .unwrap()
    else {
        panic!("unexpected response");
    };
    assert_eq!(r.error_code, 0);

    poll_until(&mut a, |_| l.events().len() >= 3).await;
    assert_eq!(
        l.events(),
        vec![
            Event::Assigned(all_partitions()),
            Event::Lost(all_partitions()),
            Event::Assigned(all_partitions()),
        ]
    );
    assert_ne!(a.group_membership().unwrap().0, member_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pattern_subscription_picks_up_new_matching_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    produce(&broker, "rx-a", 4).await;
    produce(&broker, "xrx-a", 4).await;
    let mut c = Consumer::new(&config(
        &broker,
        &[
            ("group.id", "pattern"),
            ("auto.offset.reset", "earliest"),
            ("heartbeat.interval.ms", "100"),
            ("metadata.max.age.ms", "300"),
        ],
    ))
    .unwrap();
    c.subscribe_pattern("rx-.*").unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while records.len() < 4 && Instant::now() < deadline {
        records.extend(c.poll(Duration::from_millis(50)).await.unwrap());
    }
    assert_eq!(c.subscription(), vec!["rx-a".to_string()]);
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.topic == "rx-a"));

    // A topic created later joins the subscription on the next topic-list check.
    produce(&broker, "rx-b", 4).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while records.len() < 8 && Instant::now() < deadline {
        records.extend(c.poll(Duration::from_millis(50)).await.unwrap());
    }
    assert_eq!(
        c.subscription(),
        vec!["rx-a".to_string(), "rx-b".to_string()]
    );
    assert_eq!(records.iter().filter(|r| r.topic == "rx-b").count(), 4);
    assert_eq!(c.assignment().len(), 8);
    assert!(c.subscribe_pattern("(").is_err());
    c.close().await.unwrap();
}
