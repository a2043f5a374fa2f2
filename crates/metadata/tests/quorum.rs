//! The metadata quorum with three voters on 127.0.0.1, each with its own directory and real
//! TCP between them: election, replication of batches to every voter, refusal at followers,
//! failover when the leader stops, catch-up of a restarted voter (from the log, and from a
//! snapshot once the log was trimmed), a full restart that keeps everything, and observers
//! (learners) that follow the log without voting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use gregor_metadata::quorum::{ProposeError, Quorum, QuorumConfig, QuorumEvent};
use gregor_metadata::{MetadataImage, MetadataRecord};
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One voter and the image its committed events build.
struct Voter {
    quorum: Quorum,
    events: UnboundedReceiver<QuorumEvent>,
    image: MetadataImage,
    /// Offsets of the whole images received (start-up, installed snapshots).
    images: Vec<i64>,
}

impl Voter {
    async fn start(
        id: i32,
        voters: &BTreeMap<i32, SocketAddr>,
        root: &Path,
        snapshot_every: u64,
    ) -> Voter {
        let mut config = QuorumConfig::new(id, voters.clone(), root.join(format!("node-{id}")));
        config.snapshot_every_entries = snapshot_every;
        let (quorum, events) = Quorum::start(config).await.expect("voter starts");
        Voter {
            quorum,
            events,
            image: MetadataImage::default(),
            images: Vec::new(),
        }
    }

    /// An observer (learner) of the voters in `voters`.
    async fn observe(id: i32, voters: &BTreeMap<i32, SocketAddr>, root: &Path) -> Voter {
        let mut config = QuorumConfig::new(id, voters.clone(), root.join(format!("node-{id}")));
        config.observer_listen = Some("127.0.0.1:0".parse().unwrap());
        let (quorum, events) = Quorum::start(config).await.expect("observer starts");
        Voter {
            quorum,
            events,
            image: MetadataImage::default(),
            images: Vec::new(),
        }
    }

    /// Applies every event received so far to the voter's image.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                QuorumEvent::Image(image) => {
                    self.images.push(image.offset);
                    self.image = (*image).clone()
                }
                QuorumEvent::Batch(batch) => {
                    self.image = self
                        .image
                        .apply_batch(&batch)
                        .expect("committed batches follow each other")
                        .0
                }
            }
        }
    }

    /// Waits until the voter's image has topic `name`.
    async fn wait_for_topic(&mut self, name: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.drain();
            if self.image.topic(name).is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::Topic {
        name: name.into(),
        topic_id: Uuid::new_v4(),
    }
}

/// The leader every running voter agrees on (a running one: a stopped leader is still named
/// by its followers until they time out).
async fn leader_of(voters: &BTreeMap<i32, Voter>) -> i32 {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let first = voters.values().next().unwrap().quorum.leader();
        if let Some(leader) = first {
            if voters.contains_key(&leader)
                && voters.values().all(|v| v.quorum.leader() == Some(leader))
            {
                return leader;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the running voters do not agree on a running leader");
}

async fn propose(voters: &BTreeMap<i32, Voter>, records: Vec<MetadataRecord>) -> (i64, i64) {
    let leader = leader_of(voters).await;
    voters[&leader]
        .quorum
        .propose(records, WAIT)
        .await
        .expect("the leader commits")
}

async fn start_all(
    ids: &[i32],
    addrs: &BTreeMap<i32, SocketAddr>,
    root: &Path,
    snapshot_every: u64,
) -> BTreeMap<i32, Voter> {
    let mut voters = BTreeMap::new();
    for id in ids {
        voters.insert(*id, Voter::start(*id, addrs, root, snapshot_every).await);
    }
    voters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_replicate_fail_over_and_catch_up() {
    let root = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<i32, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut voters = start_all(&[1, 2, 3], &addrs, root.path(), 1000).await;

    // A batch committed through the leader reaches every voter, at the same offsets.
    let (first, last) = propose(&voters, vec![topic("a"), topic("b")]).await;
    assert_eq!(last - first, 1);
    for v in voters.values_mut() {
        assert!(
            v.wait_for_topic("b").await,
            "voter {} sees the batch",
            v.quorum.node_id()
        );
        assert_eq!(v.image.offset, last);
    }

    // A follower refuses and names the leader.
    let leader = leader_of(&voters).await;
    let follower = *voters.keys().find(|id| **id != leader).unwrap();
    match voters[&follower]
        .quorum
        .propose(vec![topic("x")], WAIT)
        .await
    {
        Err(ProposeError::NotLeader { leader: named }) => assert_eq!(named, Some(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // The leader stops: the other two elect a new one and go on committing.
    let stopped_at = Instant::now();
    voters.remove(&leader).unwrap().quorum.shutdown().await;
    let new_leader = leader_of(&voters).await;
    assert_ne!(new_leader, leader);
    propose(&voters, vec![topic("after-failover")]).await;
    let failover = stopped_at.elapsed();
    eprintln!("failover: leader {leader} stopped, {new_leader} committed after {failover:?}");
    assert!(failover < Duration::from_secs(5), "{failover:?}");
    for v in voters.values_mut() {
        assert!(v.wait_for_topic("after-failover").await);
    }

    // The old leader comes back with its own directory and catches up from the log.
    let mut back = Voter::start(leader, &addrs, root.path(), 1000).await;
    assert!(
        back.wait_for_topic("after-failover").await,
        "the restarted voter catches up"
    );
    assert!(back.image.topic("a").is_some());
    voters.insert(leader, back);

    // Everything stopped and started again: the metadata is all there.
    let offset = voters[&new_leader].image.offset;
    for (_, v) in std::mem::take(&mut voters) {
        v.quorum.shutdown().await;
    }
    let mut voters = start_all(&[1, 2, 3], &addrs, root.path(), 1000).await;
    propose(&voters, vec![topic("after-restart")]).await;
    for v in voters.values_mut() {
        assert!(v.wait_for_topic("after-restart").await);
        assert!(v.image.topic("after-failover").is_some());
        assert_eq!(v.image.offset, offset + 1);
    }
    for (_, v) in voters {
        v.quorum.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_follow_the_log_without_voting_and_rejoin_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<i32, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut voters = start_all(&[1, 2, 3], &addrs, root.path(), 5).await;
    propose(&voters, vec![topic("before-observers")]).await;
    let mut observers = BTreeMap::new();
    for id in [4, 5] {
        observers.insert(id, Voter::observe(id, &addrs, root.path()).await);
    }
    for o in observers.values_mut() {
        assert!(
            o.wait_for_topic("before-observers").await,
            "an observer catches up"
        );
    }
    propose(&voters, vec![topic("with-observers")]).await;
    for o in observers.values_mut() {
        assert!(o.wait_for_topic("with-observers").await);
        assert!(
            matches!(
                o.quorum.propose(vec![topic("x")], WAIT).await,
                Err(ProposeError::NotLeader { .. })
            ),
            "an observer never leads"
        );
    }
    let leader = leader_of(&voters).await;
    let status = voters[&leader].quorum.status();
    assert_eq!(status.voters, [1, 2, 3].into());
    assert_eq!(status.observers, [4, 5].into());

    // The observers do not count towards a majority: two voters down, nothing commits.
    let followers: Vec<i32> = voters.keys().copied().filter(|id| *id != leader).collect();
    for id in &followers {
        voters.remove(id).unwrap().quorum.shutdown().await;
    }
    assert_eq!(
        voters[&leader]
            .quorum
            .propose(vec![topic("no-majority")], Duration::from_millis(500))
            .await,
        Err(ProposeError::Timeout)
    );
    for id in followers {
        voters.insert(id, Voter::start(id, &addrs, root.path(), 5).await);
    }

    // An observer restarted (with a new port) while the log moved on and was trimmed
    // catches up again.
    observers.remove(&4).unwrap().quorum.shutdown().await;
    for i in 0..20 {
        propose(&voters, vec![topic(&format!("later-{i}"))]).await;
    }
    let mut back = Voter::observe(4, &addrs, root.path()).await;
    assert!(
        back.wait_for_topic("later-19").await,
        "the restarted observer catches up"
    );
    assert!(back.image.topic("before-observers").is_some());
    for (_, v) in voters.into_iter().chain(observers) {
        v.quorum.shutdown().await;
    }
    back.quorum.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_of_another_cluster_neither_votes_nor_takes_entries() {
    let root = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<i32, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut voters = BTreeMap::new();
    for (id, cluster) in [(1, "cluster-a"), (2, "cluster-a"), (3, "cluster-b")] {
        let mut config =
            QuorumConfig::new(id, addrs.clone(), root.path().join(format!("node-{id}")));
        config.cluster_id = Some(cluster.to_string());
        let (quorum, events) = Quorum::start(config).await.expect("voter starts");
        voters.insert(
            id,
            Voter {
                quorum,
                events,
                image: MetadataImage::default(),
                images: Vec::new(),
            },
        );
    }
    let stranger = voters.remove(&3).unwrap();
    propose(&voters, vec![topic("only-in-a")]).await;
    for v in voters.values_mut() {
        assert!(v.wait_for_topic("only-in-a").await);
    }
    let mut stranger = stranger;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stranger.drain();
    assert!(
        stranger.image.topic("only-in-a").is_none(),
        "the node of another cluster got no entries"
    );
    assert_ne!(
        stranger.quorum.leader(),
        Some(3),
        "nor did it win an election"
    );
    for (_, v) in voters {
        v.quorum.shutdown().await;
    }
    stranger.quorum.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_far_behind_catches_up_from_a_snapshot() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let root = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<i32, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    // Snapshot (and trim the log) every 5 entries.
    let mut voters = start_all(&[1, 2, 3], &addrs, root.path(), 5).await;
    propose(&voters, vec![topic("t0")]).await;
    let leader = leader_of(&voters).await;
    let behind = *voters.keys().find(|id| **id != leader).unwrap();
    voters.remove(&behind).unwrap().quorum.shutdown().await;
    for i in 1..=30 {
        propose(&voters, vec![topic(&format!("t{i}"))]).await;
    }
    // The live voters trimmed their logs past what the stopped one has.
    let trimmed = root
        .path()
        .join(format!("node-{leader}"))
        .join("raft-snapshot.json");
    assert!(trimmed.exists(), "the leader took a snapshot");

    let mut back = Voter::start(behind, &addrs, root.path(), 5).await;
    assert!(back.wait_for_topic("t30").await, "caught up");
    assert_eq!(back.image.topics.len(), 31);
    assert!(
        back.images.iter().any(|offset| *offset > 0),
        "it was sent a snapshot, not the trimmed log: images at {:?}",
        back.images
    );
    let lead = voters.get_mut(&leader).unwrap();
    assert!(lead.wait_for_topic("t30").await);
    assert_eq!(back.image.offset, lead.image.offset);
    assert_eq!(back.image.to_records(), lead.image.to_records());
    voters.insert(behind, back);
    for (_, v) in voters {
        v.quorum.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_quorum_traffic_closes_that_connection_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let root = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<i32, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let mut voters = start_all(&[1, 2, 3], &addrs, root.path(), 1000).await;
    propose(&voters, vec![topic("before")]).await;
    for (bytes, what) in [
        (b"\x00\x00\x00\x05hello".to_vec(), "not JSON"),
        (b"\x7f\xff\xff\xff".to_vec(), "an oversized length"),
        (b"\x00\x00\x00\x02{}".to_vec(), "JSON of no request"),
        (
            b"\x00\x00\x00\x0a\x00\x12\x00\x03\x00\x00\x00\x01\xff\xff".to_vec(),
            "a Kafka ApiVersions request",
        ),
    ] {
        for addr in addrs.values() {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "{what}: the voter at {addr} closes the connection"
            );
        }
    }
    propose(&voters, vec![topic("after")]).await;
    for v in voters.values_mut() {
        assert!(v.wait_for_topic("after").await, "the quorum goes on");
    }
    for (_, v) in voters {
        v.quorum.shutdown().await;
    }
}

/// A quorum of one through the thread-owning handle, used from plain threads (no runtime):
/// it elects itself at once, commits, and after a restart has everything back.
#[test]
fn a_quorum_of_one_through_its_handle_survives_restarts() {
    use gregor_metadata::quorum::QuorumHandle;
    let root = tempfile::tempdir().unwrap();
    let voters: BTreeMap<i32, SocketAddr> = [(1, "127.0.0.1:0".parse().unwrap())].into();
    let config = QuorumConfig::new(1, voters, root.path().to_path_buf());
    let started = Instant::now();
    let (handle, _events) = QuorumHandle::start(config.clone()).unwrap();
    assert_eq!(handle.wait_until_caught_up(WAIT), Some(1));
    eprintln!("a quorum of one leads after {:?}", started.elapsed());
    let (first, _) = handle.propose(vec![topic("one")], WAIT).unwrap();
    assert_eq!(first, 0);
    assert!(handle.image().topic("one").is_some());
    handle.shutdown();

    let started = Instant::now();
    let (handle, mut events) = QuorumHandle::start(config).unwrap();
    assert_eq!(handle.wait_until_caught_up(WAIT), Some(1));
    eprintln!("restarted, it leads again after {:?}", started.elapsed());
    assert!(
        handle.image().topic("one").is_some(),
        "replayed from its log"
    );
    assert!(matches!(events.try_recv(), Ok(QuorumEvent::Image(_))));
    assert!(matches!(events.try_recv(), Ok(QuorumEvent::Batch(b)) if b.base_offset == 0));
    let (next, _) = handle.propose(vec![topic("two")], WAIT).unwrap();
    assert_eq!(next, 1, "offsets go on from the log");
}
