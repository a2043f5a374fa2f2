//! Followers copy their leaders' logs with Kafka's own Fetch (v12, the replica id set to this
//! broker), as Kafka's replica fetcher threads do.
//!
//! [`run`] keeps one fetcher task per (leader, slot): every partition this broker follows goes
//! to slot hash(partition) mod `num.replica.fetchers` of its leader, and the set is
//! recomputed whenever the metadata changes. A fetcher holds one connection to its leader's
//! advertised listener and sends one fetch after another for all its partitions: the fetch
//! offset is the follower's LEO, the last fetched epoch its latest epoch, the current leader
//! epoch the one the metadata gave it. For each partition in the answer it
//!
//! - appends the batches as they are (`Partition::append_as_follower`, refused if the
//!   partition moved to another leader epoch meanwhile) and takes the leader's HW and log
//!   start offset;
//! - truncates where the leader says the logs diverge (a diverging epoch), or starts over at
//!   the leader's log start when it no longer has the fetch offset;
//! - backs off for `replica.fetch.backoff.ms` on an error (a stale epoch, storage trouble),
//!   while the other partitions go on; a leader that does not know its leadership yet is
//!   asked again after 20 ms.
//!
//! A connection error drops the connection and retries after the backoff. Each request waits
//! at most `replica.fetch.wait.max.ms` + `replica.socket.timeout.ms`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::config::ReplicaFetchConfig;
use crate::partition::{AppendError, Partition};
use crate::replica_manager::TopicIdPartition;
use crate::replication_throttle::{is_throttled, UNLIMITED};

/// The Fetch version followers send.
const FETCH_VERSION: i16 = 12;
/// FetchRequest.session_epoch of a full fetch outside any fetch session.
const NO_SESSION: i32 = -1;

/// A fetcher's identity: the leader it fetches from and its slot among that leader's.
type FetcherKey = (i32, usize);

struct Fetcher {
    endpoint: (String, u16),
    assignment: watch::Sender<Vec<Arc<Partition>>>,
    task: JoinHandle<()>,
}

/// Keeps the fetchers in line with the partitions this broker follows, until shutdown.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut metadata = broker.subscribe_metadata();
    let mut fetchers: HashMap<FetcherKey, Fetcher> = HashMap::new();
    loop {
        metadata.borrow_and_update();
        sync(&broker, &mut fetchers);
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = metadata.changed() => if changed.is_err() { break },
        }
    }
    for fetcher in fetchers.into_values() {
        fetcher.task.abort();
        let _ = fetcher.task.await;
    }
}

/// Starts, re-assigns and stops fetchers so each followed partition has exactly one.
fn sync(broker: &Arc<Broker>, fetchers: &mut HashMap<FetcherKey, Fetcher>) {
    let slots = broker.config().replica_fetch().fetchers;
    let image = broker.image();
    let mut wanted: HashMap<FetcherKey, Vec<Arc<Partition>>> = HashMap::new();
    for p in broker.replicas.all() {
        let leader = p.leader();
        if leader >= 0 && leader != broker.node_id {
            wanted
                .entry((leader, slot(p.topic_id, p.index, slots)))
                .or_default()
                .push(p);
        }
    }
    let endpoint_of = |leader: i32| image.brokers.get(&leader).map(|b| (b.host.clone(), b.port));
    fetchers.retain(|key, fetcher| {
        let keep =
            wanted.contains_key(key) && endpoint_of(key.0).as_ref() == Some(&fetcher.endpoint);
        if !keep {
            fetcher.task.abort();
        }
        keep
    });
    for (key, mut partitions) in wanted {
        partitions.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
        if let Some(fetcher) = fetchers.get(&key) {
            fetcher.assignment.send_if_modified(|current| {
                let same = current.len() == partitions.len()
                    && current
                        .iter()
                        .zip(&partitions)
                        .all(|(a, b)| Arc::ptr_eq(a, b));
                if !same {
                    *current = partitions;
                }
                !same
            });
            continue;
        }
        let Some(endpoint) = endpoint_of(key.0) else {
            tracing::warn!(leader = key.0, "no endpoint known for a partition leader");
            continue;
        };
        let (assignment, receiver) = watch::channel(partitions);
        let task = tokio::spawn(fetch_from_leader(
            broker.clone(),
            key.0,
            endpoint.clone(),
            receiver,
        ));
        fetchers.insert(
            key,
            Fetcher {
                endpoint,
                assignment,
                task,
            },
        );
    }
}

fn slot(topic_id: uuid::Uuid, partition: i32, slots: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (topic_id, partition).hash(&mut h);
    (h.finish() % slots as u64) as usize
}

/// How soon a partition is fetched again from a leader that answered UNKNOWN_LEADER_EPOCH or
/// NOT_LEADER_OR_FOLLOWER: after an election the follower may apply the change a moment
/// before the new leader does, and a full `replica.fetch.backoff.ms` (1 s) would hold the
/// HW, and every acks=all produce, that long.
const LEADER_BEHIND_RETRY: Duration = Duration::from_millis(20);

/// One fetcher: fetches its partitions from `leader` until its assignment is dropped.
async fn fetch_from_leader(
    broker: Arc<Broker>,
    leader: i32,
    endpoint: (String, u16),
    mut assignment: watch::Receiver<Vec<Arc<Partition>>>,
) {
    let mut connection: Option<LeaderConnection> = None;
    let mut backoff: HashMap<TopicIdPartition, Instant> = HashMap::new();
    loop {
        let partitions = assignment.borrow_and_update().clone();
        let config = broker.config().replica_fetch();
        let now = Instant::now();
        backoff.retain(|_, until| *until > now);
        let throttled = follower_throttled(&broker, &partitions);
        let quota_spent = !throttled.is_empty()
            && broker.follower_throttle.exceeded(
                broker.config().replication_throttle_rates().1,
                now.into_std(),
            );
        let ready: Vec<Arc<Partition>> = partitions
            .iter()
            .filter(|p| !backoff.contains_key(&(p.topic_id, p.index)))
            .filter(|p| !(quota_spent && throttled.contains(&(p.topic_id, p.index))))
            .cloned()
            .collect();
        if ready.is_empty() && quota_spent {
            // Only throttled partitions are due and their quota is spent: wait for it.
            tokio::select! {
                changed = assignment.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(THROTTLE_WAIT) => {}
            }
            continue;
        }
        if ready.is_empty() {
            let wake = backoff
                .values()
                .min()
                .copied()
                .unwrap_or_else(|| now + Duration::from_secs(3600));
            tokio::select! {
                changed = assignment.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(wake) => {}
            }
            continue;
        }
        let conn = match connection.take() {
            Some(c) => c,
            None => match LeaderConnection::open(&endpoint, config.socket_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(leader, host = %endpoint.0, port = endpoint.1, error = %e, "cannot reach the partition leader");
                    tokio::time::sleep(config.backoff).await;
                    continue;
                }
            },
        };
        let sent = FetchState::of(&ready);
        let request = fetch_request(broker.node_id, &sent, &config);
        let timeout = Duration::from_millis(config.max_wait_ms as u64) + config.socket_timeout;
        let mut conn = conn;
        match conn.fetch(&request, timeout, &config).await {
            Ok(response) => {
                connection = Some(conn);
                let now = Instant::now();
                if !throttled.is_empty() {
                    let bytes = throttled_bytes(&response, &sent, &throttled);
                    let rate = broker.config().replication_throttle_rates().1;
                    broker.follower_throttle.record(bytes, rate, now.into_std());
                }
                for (key, leader_behind) in handle_response(&broker, leader, &sent, response) {
                    let wait = if leader_behind {
                        config.backoff.min(LEADER_BEHIND_RETRY)
                    } else {
                        config.backoff
                    };
                    backoff.insert(key, now + wait);
                }
            }
            Err(e) => {
                tracing::warn!(leader, host = %endpoint.0, port = endpoint.1, error = %e, "fetch from the partition leader failed");
                tokio::time::sleep(config.backoff).await;
            }
        }
    }
}

/// How long a fetcher whose due partitions are all throttled waits before looking again.
const THROTTLE_WAIT: Duration = Duration::from_millis(100);

/// The partitions among `partitions` whose copy here is throttled: a follower rate is set,
/// the topic's `follower.replication.throttled.replicas` names this broker's replica, and
/// this replica is out of the ISR.
fn follower_throttled(broker: &Broker, partitions: &[Arc<Partition>]) -> Vec<TopicIdPartition> {
    if broker.config().replication_throttle_rates().1 >= UNLIMITED {
        return Vec::new();
    }
    let image = broker.image();
    partitions
        .iter()
        .filter(|p| {
            !p.state().isr.contains(&broker.node_id)
                && is_throttled(
                    &image,
                    "follower.replication.throttled.replicas",
                    &p.topic,
                    p.index,
                    broker.node_id,
                )
        })
        .map(|p| (p.topic_id, p.index))
        .collect()
}

/// The record bytes `response` brought for the `throttled` partitions of `sent`.
fn throttled_bytes(
    response: &FetchResponse,
    sent: &[FetchState],
    throttled: &[TopicIdPartition],
) -> usize {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |d| (t.topic.0.as_str(), d)))
        .filter(|(topic, d)| {
            sent.iter().any(|s| {
                s.partition.topic == *topic
                    && s.partition.index == d.partition_index
                    && throttled.contains(&(s.partition.topic_id, s.partition.index))
            })
        })
        .map(|(_, d)| d.records.as_ref().map_or(0, |r| r.len()))
        .sum()
}

/// What one request asked for each partition.
struct FetchState {
    partition: Arc<Partition>,
    leader_epoch: i32,
    fetch_offset: i64,
}

impl FetchState {
    fn of(partitions: &[Arc<Partition>]) -> Vec<FetchState> {
        partitions
            .iter()
            .map(|p| FetchState {
                partition: p.clone(),
                leader_epoch: p.leader_epoch(),
                fetch_offset: p.log_end_offset(),
            })
            .collect()
    }
}

fn fetch_request(node_id: i32, sent: &[FetchState], config: &ReplicaFetchConfig) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for s in sent {
        let p = &s.partition;
        let partition = FetchPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(s.leader_epoch)
            .with_fetch_offset(s.fetch_offset)
            .with_last_fetched_epoch(p.last_fetched_epoch())
            .with_log_start_offset(p.log_start_offset())
            .with_partition_max_bytes(config.partition_max_bytes);
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == p.topic => t.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(config.max_wait_ms)
        .with_min_bytes(config.min_bytes)
        .with_max_bytes(config.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(NO_SESSION)
        .with_topics(topics)
}

/// Acts on one fetch response; returns the partitions to back off, each with whether its
/// leader is only behind on metadata (retried after [`LEADER_BEHIND_RETRY`]).
fn handle_response(
    broker: &Broker,
    leader: i32,
    sent: &[FetchState],
    response: FetchResponse,
) -> Vec<(TopicIdPartition, bool)> {
    let mut back_off = Vec::new();
    if response.error_code != 0 {
        tracing::warn!(
            leader,
            error_code = response.error_code,
            "the leader refused a whole fetch"
        );
        return sent
            .iter()
            .map(|s| ((s.partition.topic_id, s.partition.index), false))
            .collect();
    }
    for topic in response.responses {
        for data in topic.partitions {
            let Some(s) = sent.iter().find(|s| {
                s.partition.topic == topic.topic.0.as_str()
                    && s.partition.index == data.partition_index
            }) else {
                continue;
            };
            // The leader has not applied the metadata that makes it leader yet: it will in
            // a moment, so the partition is asked again soon, not after the full backoff.
            let leader_behind = matches!(
                ResponseError::try_from_code(data.error_code),
                Some(ResponseError::UnknownLeaderEpoch | ResponseError::NotLeaderOrFollower)
            );
            if let Err(why) = apply_partition(broker, s, data) {
                let p = &s.partition;
                tracing::debug!(topic = %p.topic, partition = p.index, leader, why, "backing off a followed partition");
                back_off.push(((p.topic_id, p.index), leader_behind));
            }
        }
    }
    back_off
}

/// Applies one partition's part of a fetch response; an `Err` says why to back off.
fn apply_partition(broker: &Broker, s: &FetchState, data: PartitionData) -> Result<(), String> {
    let p = &s.partition;
    let now_ms = broker.clock.now_ms();
    match ResponseError::try_from_code(data.error_code) {
        None if data.error_code == 0 => {}
        Some(ResponseError::OffsetOutOfRange) => return out_of_range(p, &data),
        Some(e) => return Err(format!("{e:?}")),
        None => return Err(format!("error code {}", data.error_code)),
    }
    let diverging = &data.diverging_epoch;
    if diverging.epoch >= 0 || diverging.end_offset >= 0 {
        return p
            .truncate_to_divergence(diverging.epoch, diverging.end_offset)
            .map(|_| ())
            .or_else(ignore_if_not_follower);
    }
    if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
        if let Err(e) = p.append_as_follower(records, s.leader_epoch, now_ms) {
            return ignore_if_not_follower(e);
        }
    }
    p.update_from_leader(data.high_watermark, data.log_start_offset)
        .map_err(|e| e.to_string())
}

/// The leader does not have the fetch offset: below its log start, start over there; past
/// its end (only after an unclean election), cut back to its HW.
fn out_of_range(p: &Partition, data: &PartitionData) -> Result<(), String> {
    let leo = p.log_end_offset();
    tracing::info!(topic = %p.topic, partition = p.index, leo, leader_log_start = data.log_start_offset, leader_hw = data.high_watermark, "the leader does not have this replica's fetch offset");
    let outcome = if data.log_start_offset >= 0 && leo < data.log_start_offset {
        p.truncate_fully_and_start_at(data.log_start_offset)
    } else if data.high_watermark >= 0 && leo > data.high_watermark {
        p.truncate_to(data.high_watermark)
    } else {
        return Err("offset out of range".into());
    };
    outcome.or_else(ignore_if_not_follower)
}

/// A partition that became leader meanwhile is simply no longer fetched.
fn ignore_if_not_follower(e: AppendError) -> Result<(), String> {
    match e {
        AppendError::NotFollower => Ok(()),
        other => Err(other.to_string()),
    }
}

/// One connection to a leader's client listener, one request at a time.
struct LeaderConnection {
    stream: TcpStream,
    correlation_id: i32,
}

impl LeaderConnection {
    async fn open(
        endpoint: &(String, u16),
        timeout: Duration,
    ) -> std::io::Result<LeaderConnection> {
        let connect = TcpStream::connect((endpoint.0.as_str(), endpoint.1));
        let stream = tokio::time::timeout(timeout, connect).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
        })??;
        stream.set_nodelay(true)?;
        Ok(LeaderConnection {
            stream,
            correlation_id: 0,
        })
    }

    async fn fetch(
        &mut self,
        request: &FetchRequest,
        timeout: Duration,
        config: &ReplicaFetchConfig,
    ) -> std::io::Result<FetchResponse> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("gregor-replica-fetcher")));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(
                &mut buf,
                ApiKey::Fetch.request_header_version(FETCH_VERSION),
            )
            .map_err(|e| invalid(e.to_string()))?;
        request
            .encode(&mut buf, FETCH_VERSION)
            .map_err(|e| invalid(e.to_string()))?;
        let len = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let size = self.stream.read_u32().await? as usize;
            // A response larger than asked for (plus one batch per partition over the
            // limits) is refused before anything is allocated for it.
            let bound = config.response_max_bytes as usize * 2 + (16 << 20);
            if size > bound {
                return Err(invalid(format!("a {size}-byte fetch response")));
            }
            let mut body = vec![0; size];
            self.stream.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        };
        let mut body = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no fetch response in time")
            })??;
        let response_header = ResponseHeader::decode(
            &mut body,
            ApiKey::Fetch.response_header_version(FETCH_VERSION),
        )
        .map_err(|e| invalid(e.to_string()))?;
        if response_header.correlation_id != self.correlation_id {
            return Err(invalid(format!(
                "correlation id {} answered to request {}",
                response_header.correlation_id, self.correlation_id
            )));
        }
        let response =
            FetchResponse::decode(&mut body, FETCH_VERSION).map_err(|e| invalid(e.to_string()))?;
        if body.has_remaining() {
            return Err(invalid("trailing bytes after a fetch response".into()));
        }
        Ok(response)
    }
}
