//! The consumer: manual partition assignment ([`Consumer::assign`]) or classic group
//! membership ([`Consumer::subscribe`]: JoinGroup/SyncGroup/Heartbeat/LeaveGroup with the
//! range assignor), pipelined fetching (one fetch in flight per leader), offset reset, and
//! (with `group.id`) committed offsets via the group coordinator. [`fetch_once`] is a
//! one-shot fetch helper kept for simple reads.
//!
//! Limitations: `read_committed` is passed to the broker (reads stop at the last stable
//! offset) but aborted transactional records are not filtered out client-side; the batch
//! decoder always verifies CRCs, so `check.crcs = false` has no effect.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest, FetchResponse,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, RequestKind, ResponseKind,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::mpsc;

use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{ConfigError, Error, Result};
use crate::metadata::{is_metadata_error, Cluster};
use crate::requests::{by_topic, list_offsets_topics, offset_commit_topics, topic_name};

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Producer id stamped on the record's batch (-1 when not idempotent).
    pub producer_id: i64,
}

impl ConsumerRecord {
    /// The application's view of one decoded record of `topic`/`partition`.
    fn from_record(
        topic: &str,
        partition: i32,
        r: kafka_protocol::records::Record,
    ) -> ConsumerRecord {
        ConsumerRecord {
            topic: topic.to_string(),
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            producer_id: r.producer_id,
        }
    }
}

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    None,
}

/// Validated consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    pub fetch_min_bytes: i32,
    pub fetch_max_wait: Duration,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
    pub max_poll_records: usize,
    /// 0 = read_uncommitted, 1 = read_committed.
    pub isolation_level: i8,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// Accepted for compatibility; the batch decoder always verifies v2 batch CRCs.
    pub check_crcs: bool,
    pub request_timeout: Duration,
    pub retry_backoff: Duration,
    /// Group membership (`subscribe`) settings.
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Used as the rebalance timeout.
    pub max_poll_interval: Duration,
}

const CONSUMER_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "group.id",
    "auto.offset.reset",
    "fetch.min.bytes",
    "fetch.max.wait.ms",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "max.poll.records",
    "isolation.level",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "check.crcs",
    "request.timeout.ms",
    "retry.backoff.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
];

impl ConsumerConfig {
    /// Validates `config` for a consumer. Unknown keys are rejected so typos surface.
    pub fn from_config(config: &ClientConfig) -> Result<ConsumerConfig, ConfigError> {
        if let Some(k) = config.keys().find(|k| !CONSUMER_KEYS.contains(k)) {
            return Err(ConfigError::Unknown(k.to_string()));
        }
        const I32: i64 = i32::MAX as i64;
        let ms = |v: i64| Duration::from_millis(v as u64);
        let auto_offset_reset = match config.get("auto.offset.reset") {
            None => OffsetReset::Latest,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "earliest" => OffsetReset::Earliest,
                "latest" => OffsetReset::Latest,
                "none" => OffsetReset::None,
                _ => {
                    return Err(ClientConfig::invalid(
                        "auto.offset.reset",
                        raw,
                        "expected earliest, latest or none",
                    ))
                }
            },
        };
        let isolation_level = match config.get("isolation.level") {
            None => 0,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "read_uncommitted" => 0,
                "read_committed" => 1,
                _ => {
                    return Err(ClientConfig::invalid(
                        "isolation.level",
                        raw,
                        "expected read_uncommitted or read_committed",
                    ))
                }
            },
        };
        if let Some(raw) = config.get("partition.assignment.strategy") {
            let ok = raw
                .split(',')
                .map(str::trim)
                .all(|s| s == "range" || s == "org.apache.kafka.clients.consumer.RangeAssignor");
            if !ok {
                return Err(ClientConfig::invalid(
                    "partition.assignment.strategy",
                    raw,
                    "only the range assignor is supported",
                ));
            }
        }
        let group_id = match config.get("group.id") {
            None => None,
            Some("") => {
                return Err(ClientConfig::invalid(
                    "group.id",
                    "",
                    "must not be empty (leave it unset for no group)",
                ))
            }
            Some(g) => Some(g.to_string()),
        };
        Ok(ConsumerConfig {
            bootstrap_servers: config.bootstrap_servers()?,
            client_id: config
                .get("client.id")
                .unwrap_or("gregor-consumer")
                .to_string(),
            group_id,
            auto_offset_reset,
            fetch_min_bytes: config.int("fetch.min.bytes", 1, 0, I32)? as i32,
            fetch_max_wait: ms(config.int("fetch.max.wait.ms", 500, 0, I32)?),
            fetch_max_bytes: config.int("fetch.max.bytes", 52_428_800, 0, I32)? as i32,
            max_partition_fetch_bytes: config.int("max.partition.fetch.bytes", 1_048_576, 0, I32)?
                as i32,
            max_poll_records: config.int("max.poll.records", 500, 1, I32)? as usize,
            isolation_level,
            enable_auto_commit: config.boolean("enable.auto.commit", true)?,
            auto_commit_interval: ms(config.int("auto.commit.interval.ms", 5_000, 0, I32)?),
            check_crcs: config.boolean("check.crcs", true)?,
            request_timeout: ms(config.int("request.timeout.ms", 30_000, 1, I32)?),
            retry_backoff: ms(config.int("retry.backoff.ms", 100, 0, I32)?),
            session_timeout: ms(config.int("session.timeout.ms", 45_000, 1, I32)?),
            heartbeat_interval: ms(config.int("heartbeat.interval.ms", 3_000, 1, I32)?),
            max_poll_interval: ms(config.int("max.poll.interval.ms", 300_000, 1, I32)?),
        })
    }
}

type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionState {
    /// The offset of the next record `poll` returns; `None` until initialised.
    position: Option<i64>,
    /// When set, the position must come from `auto.offset.reset` (not the committed offset).
    reset_pending: bool,
    /// Next offset to fetch (>= position: records in between are buffered).
    fetch_offset: i64,
    buffer: VecDeque<ConsumerRecord>,
    paused: bool,
    in_flight: bool,
    /// Bumped by every seek/reset so stale fetch responses are dropped.
    epoch: u64,
}

struct FetchMeta {
    tp: TopicPartition,
    fetch_offset: i64,
    epoch: u64,
}

type FetchDone = (i32, Result<ResponseKind>);

/// Group membership from the last successful JoinGroup/SyncGroup.
#[derive(Debug, Clone)]
struct Membership {
    generation: i32,
    member_id: String,
}

impl Default for Membership {
    fn default() -> Membership {
        Membership {
            generation: -1,
            member_id: String::new(),
        }
    }
}

/// Network state shared with background commit and heartbeat tasks.
struct Shared {
    cluster: Cluster,
    config: ConsumerConfig,
    /// A dedicated connection to the group coordinator (JoinGroup may block for long).
    coordinator: tokio::sync::Mutex<Option<Arc<Connection>>>,
    membership: std::sync::Mutex<Membership>,
    /// Set when the group is rebalancing and this member must rejoin.
    rejoin: AtomicBool,
}

/// A Kafka consumer with manual partition assignment.
pub struct Consumer {
    shared: Arc<Shared>,
    states: HashMap<TopicPartition, PartitionState>,
    assignment: Vec<TopicPartition>,
    in_flight: HashMap<i32, Vec<FetchMeta>>,
    tx: mpsc::UnboundedSender<FetchDone>,
    rx: mpsc::UnboundedReceiver<FetchDone>,
    /// Error to surface from the next `poll` (e.g. out of range with reset = none).
    pending_error: Option<Error>,
    next_auto_commit: Instant,
    rotate: usize,
    /// Topics given to `subscribe` (group-managed assignment) or `None` (manual).
    subscription: Option<Vec<String>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.assignment)
            .finish()
    }
}

/// Sends `$request` (the payload of `RequestKind::$variant`) to the group coordinator via
/// `with_coordinator` and yields the future of the `ResponseKind::$variant` body. Shared by
/// the group-membership round trips (JoinGroup, SyncGroup), whose request and response
/// variants differ per API, hence a macro.
macro_rules! coordinator_call {
    ($shared:expr, $variant:ident, $request:expr) => {
        $shared.with_coordinator(|conn| {
            let request = $request.clone();
            async move {
                match conn
                    .send(ApiKey::$variant, &RequestKind::$variant(request))?
                    .await?
                {
                    ResponseKind::$variant(r) => Ok(r),
                    _ => Err(Error::Protocol(
                        concat!("unexpected response to ", stringify!($variant)).into(),
                    )),
                }
            }
        })
    };
}

/// Whether a group error means this member must (re)join.
fn needs_rejoin(e: &Error) -> bool {
    matches!(
        e.response_error(),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::FencedInstanceId
        )
    )
}

fn is_coordinator_error(e: &Error) -> bool {
    matches!(
        e.response_error(),
        Some(
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        )
    ) || matches!(e, Error::Network { .. } | Error::RequestTimeout { .. })
}

impl Shared {
    fn group(&self) -> Result<&str> {
        self.config.group_id.as_deref().ok_or_else(|| {
            Error::IllegalState("this operation needs `group.id` to be configured".into())
        })
    }

    async fn coordinator(&self) -> Result<Arc<Connection>> {
        let mut cached = self.coordinator.lock().await;
        if let Some(c) = cached.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let group = self.group()?.to_string();
        let conn = self.cluster.any_connection().await?;
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.clone()))
            .with_key_type(0);
        let ResponseKind::FindCoordinator(r) = conn
            .send(
                ApiKey::FindCoordinator,
                &RequestKind::FindCoordinator(request),
            )?
            .await?
        else {
            return Err(Error::Protocol(
                "unexpected response to FindCoordinator".into(),
            ));
        };
        if let Some(e) = Error::broker(r.error_code, Some(format!("FindCoordinator {group}"))) {
            return Err(e);
        }
        let timeout = self
            .config
            .request_timeout
            .max(self.config.max_poll_interval + Duration::from_secs(5));
        let c = Arc::new(
            Connection::connect(
                &format!("{}:{}", r.host.as_str(), r.port),
                &self.config.client_id,
                timeout,
            )
            .await?,
        );
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` against the coordinator, rediscovering it on coordinator errors.
    async fn with_coordinator<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let result = match self.coordinator().await {
                Ok(c) => op(c).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e)
                    if (is_coordinator_error(&e) || e.is_retriable())
                        && Instant::now() < deadline =>
                {
                    if is_coordinator_error(&e) {
                        *self.coordinator.lock().await = None;
                    }
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    async fn commit(&self, offsets: &[(String, i32, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let group = self.group()?.to_string();
        let member = self.membership.lock().unwrap().clone();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_generation_id_or_member_epoch(member.generation)
            .with_member_id(StrBytes::from_string(member.member_id))
            .with_retention_time_ms(-1)
            .with_topics(offset_commit_topics(offsets));
        self.with_coordinator(|conn| {
            let request = request.clone();
            async move {
                let ResponseKind::OffsetCommit(r) = conn
                    .send(ApiKey::OffsetCommit, &RequestKind::OffsetCommit(request))?
                    .await?
                else {
                    return Err(Error::Protocol(
                        "unexpected response to OffsetCommit".into(),
                    ));
                };
                for t in &r.topics {
                    for p in &t.partitions {
                        let what =
                            format!("OffsetCommit {}-{}", t.name.as_str(), p.partition_index);
                        if let Some(e) = Error::broker(p.error_code, Some(what)) {
                            if needs_rejoin(&e) {
                                self.rejoin.store(true, Ordering::SeqCst);
                            }
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
        })
        .await
    }

    async fn committed(&self, partitions: &[TopicPartition]) -> Result<Vec<Option<i64>>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let group = self.group()?.to_string();
        let items: Vec<(String, i32, ())> = partitions
            .iter()
            .map(|(t, p)| (t.clone(), *p, ()))
            .collect();
        let topics: Vec<OffsetFetchRequestTopic> = by_topic(&items)
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(&t))
                    .with_partition_indexes(ps.into_iter().map(|(p, _)| p).collect())
            })
            .collect();
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_topics(Some(topics));
        let found: HashMap<TopicPartition, i64> = self
            .with_coordinator(|conn| {
                let request = request.clone();
                let group = group.clone();
                async move {
                    let ResponseKind::OffsetFetch(r) = conn
                        .send(ApiKey::OffsetFetch, &RequestKind::OffsetFetch(request))?
                        .await?
                    else {
                        return Err(Error::Protocol("unexpected response to OffsetFetch".into()));
                    };
                    if let Some(e) =
                        Error::broker(r.error_code, Some(format!("OffsetFetch {group}")))
                    {
                        return Err(e);
                    }
                    let mut found = HashMap::new();
                    for t in &r.topics {
                        for p in &t.partitions {
                            let what =
                                format!("OffsetFetch {}-{}", t.name.as_str(), p.partition_index);
                            if let Some(e) = Error::broker(p.error_code, Some(what)) {
                                return Err(e);
                            }
                            if p.committed_offset >= 0 {
                                found.insert(
                                    (t.name.to_string(), p.partition_index),
                                    p.committed_offset,
                                );
                            }
                        }
                    }
                    Ok(found)
                }
            })
            .await?;
        Ok(partitions.iter().map(|tp| found.get(tp).copied()).collect())
    }

    /// The leader of each partition, refreshing metadata for unknown ones.
    async fn leaders(&self, partitions: &[TopicPartition]) -> Result<HashMap<TopicPartition, i32>> {
        let lookup = |c: &crate::metadata::MetadataCache| {
            partitions
                .iter()
                .filter_map(|(t, p)| c.leader(t, *p).map(|l| ((t.clone(), *p), l)))
                .collect::<HashMap<_, _>>()
        };
        let mut found = self.cluster.with_cache(lookup);
        if found.len() < partitions.len() {
            let mut topics: Vec<String> = partitions
                .iter()
                .filter(|tp| !found.contains_key(*tp))
                .map(|(t, _)| t.clone())
                .collect();
            topics.sort();
            topics.dedup();
            self.cluster.refresh(&topics).await?;
            found = self.cluster.with_cache(lookup);
        }
        Ok(found)
    }

    /// ListOffsets at `timestamp` (-2 earliest, -1 latest) for each partition.
    async fn list_offsets(
        &self,
        partitions: &[TopicPartition],
        timestamp: i64,
    ) -> Result<HashMap<TopicPartition, i64>> {
        let leaders = self.leaders(partitions).await?;
        let mut per_node: HashMap<i32, Vec<(String, i32, i64)>> = HashMap::new();
        for tp in partitions {
            let node = leaders.get(tp).ok_or_else(|| {
                Error::NoBrokerAvailable(format!("no leader for {}-{}", tp.0, tp.1))
            })?;
            per_node
                .entry(*node)
                .or_default()
                .push((tp.0.clone(), tp.1, timestamp));
        }
        let mut out = HashMap::new();
        for (node, items) in per_node {
            let conn = self.cluster.node_connection(node).await?;
            let topics = list_offsets_topics(&items);
            let request = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_isolation_level(self.config.isolation_level)
                .with_topics(topics);
            let ResponseKind::ListOffsets(r) = conn
                .send(ApiKey::ListOffsets, &RequestKind::ListOffsets(request))?
                .await?
            else {
                return Err(Error::Protocol("unexpected response to ListOffsets".into()));
            };
            for t in &r.topics {
                for p in &t.partitions {
                    let what = format!("ListOffsets {}-{}", t.name.as_str(), p.partition_index);
                    if let Some(e) = Error::broker(p.error_code, Some(what)) {
                        if e.invalidates_metadata() {
                            self.cluster.invalidate(t.name.as_str());
                        }
                        return Err(e);
                    }
                    out.insert((t.name.to_string(), p.partition_index), p.offset);
                }
            }
        }
        Ok(out)
    }
}

/// The range assignor: for each topic, the members subscribed to it (sorted by member id)
/// get consecutive partition ranges, the first `partitions % members` one extra.
pub(crate) fn range_assign(
    members: &[(String, Vec<String>)],
    partition_counts: &HashMap<String, i32>,
) -> Vec<(String, Vec<TopicPartition>)> {
    let mut ids: Vec<&String> = members.iter().map(|(m, _)| m).collect();
    ids.sort();
    ids.dedup();
    let mut plan: Vec<(String, Vec<TopicPartition>)> =
        ids.iter().map(|m| ((*m).clone(), Vec::new())).collect();
    let mut topics: Vec<&String> = partition_counts.keys().collect();
    topics.sort();
    for topic in topics {
        let count = partition_counts[topic];
        let subscribed: Vec<usize> = plan
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| members.iter().any(|(id, ts)| id == m && ts.contains(topic)))
            .map(|(i, _)| i)
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        let n = subscribed.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (k, i) in subscribed.into_iter().enumerate() {
            let len = per + i32::from((k as i32) < extra);
            for p in next..next + len {
                plan[i].1.push((topic.clone(), p));
            }
            next += len;
        }
    }
    plan
}

/// Splits a fetched record set into complete batches, ignoring a truncated trailing batch.
/// Returns each batch's bytes and the offset following it.
fn split_batches(mut data: Bytes) -> Vec<(Bytes, i64)> {
    let mut out = Vec::new();
    while data.len() >= 27 {
        let base_offset = (&data[0..8]).get_i64();
        let length = (&data[8..12]).get_i32();
        if length < 0 {
            break;
        }
        let total = 12 + length as usize;
        if data.len() < total {
            break;
        }
        let next = if data[16] >= 2 && total >= 27 {
            base_offset + (&data[23..27]).get_i32() as i64 + 1
        } else {
            base_offset + 1
        };
        out.push((data.split_to(total), next));
    }
    out
}

impl Consumer {
    /// Creates a consumer from Kafka-style configuration. No connection is made until used.
    pub fn new(config: &ClientConfig) -> Result<Consumer> {
        let config = ConsumerConfig::from_config(config)?;
        let cluster = Cluster::new(
            config.bootstrap_servers.clone(),
            &config.client_id,
            config.request_timeout + config.fetch_max_wait,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Consumer {
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            shared: Arc::new(Shared {
                cluster,
                config,
                coordinator: tokio::sync::Mutex::new(None),
                membership: std::sync::Mutex::new(Membership::default()),
                rejoin: AtomicBool::new(false),
            }),
            subscription: None,
            heartbeat: None,
            states: HashMap::new(),
            assignment: Vec::new(),
            in_flight: HashMap::new(),
            tx,
            rx,
            pending_error: None,
            rotate: 0,
        })
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.shared.config
    }

    /// Replaces the assignment. Positions of partitions that stay assigned are kept.
    /// Fails when the consumer is subscribed (call `unsubscribe` first).
    pub fn assign<T: Into<String>>(&mut self, partitions: Vec<(T, i32)>) -> Result<()> {
        if self.subscription.is_some() {
            return Err(Error::IllegalState(
                "assign is not allowed while subscribed; call unsubscribe first".into(),
            ));
        }
        self.set_assignment(partitions.into_iter().map(|(t, p)| (t.into(), p)).collect());
        Ok(())
    }

    fn set_assignment(&mut self, partitions: Vec<TopicPartition>) {
        let mut new: Vec<TopicPartition> = Vec::new();
        for tp in partitions {
            if !new.contains(&tp) {
                new.push(tp);
            }
        }
        self.states.retain(|tp, _| new.contains(tp));
        for tp in &new {
            self.states.entry(tp.clone()).or_default();
        }
        self.assignment = new;
    }

    /// Joins the consumer group (`group.id`) and consumes the partitions of `topics` that
    /// the range assignor gives this member. The join happens in `poll`.
    pub fn subscribe<T: Into<String>>(&mut self, topics: Vec<T>) -> Result<()> {
        self.shared.group()?;
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Err(Error::IllegalState(
                "subscribe needs at least one topic".into(),
            ));
        }
        if self.subscription.is_none() {
            self.set_assignment(Vec::new());
        }
        self.subscription = Some(topics);
        self.shared.rejoin.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The subscribed topics (empty when not subscribed).
    pub fn subscription(&self) -> Vec<String> {
        self.subscription.clone().unwrap_or_default()
    }

    /// Leaves the group (committing positions first when auto commit is on) and drops the
    /// assignment.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        if self.subscription.take().is_none() {
            return Ok(());
        }
        let result = self.leave_group().await;
        self.set_assignment(Vec::new());
        result
    }

    async fn leave_group(&mut self) -> Result<()> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let member = std::mem::take(&mut *self.shared.membership.lock().unwrap());
        if self.shared.config.enable_auto_commit && member.generation >= 0 {
            let offsets = self.positions();
            *self.shared.membership.lock().unwrap() = member.clone();
            let r = self.shared.commit(&offsets).await;
            *self.shared.membership.lock().unwrap() = Membership::default();
            if let Err(e) = r {
                tracing::warn!("commit before leaving the group failed: {e}");
            }
        }
        if member.member_id.is_empty() {
            return Ok(());
        }
        let group = self.shared.group()?.to_string();
        let request = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group)))
            .with_member_id(StrBytes::from_string(member.member_id));
        let conn = self.shared.coordinator().await?;
        let ResponseKind::LeaveGroup(r) = conn
            .send(ApiKey::LeaveGroup, &RequestKind::LeaveGroup(request))?
            .await?
        else {
            return Err(Error::Protocol("unexpected response to LeaveGroup".into()));
        };
        match Error::broker(r.error_code, Some("LeaveGroup".into())) {
            Some(e) if !needs_rejoin(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// JoinGroup + SyncGroup until this member has an assignment for a stable generation.
    async fn join_group(&mut self) -> Result<()> {
        let Some(topics) = self.subscription.clone() else {
            return Ok(());
        };
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let c = self.shared.config.clone();
        let group = self.shared.group()?.to_string();
        if c.enable_auto_commit && !self.assignment.is_empty() {
            if let Err(e) = self.commit_positions().await {
                tracing::debug!("commit before rebalance failed: {e}");
            }
        }
        let mut metadata = BytesMut::new();
        metadata.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .encode(&mut metadata, 0)
            .map_err(|e| Error::Protocol(format!("cannot encode subscription: {e}")))?;
        let metadata = metadata.freeze();
        let deadline = Instant::now() + c.max_poll_interval + c.request_timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    op: "join group",
                    pending: 0,
                });
            }
            self.shared.rejoin.store(false, Ordering::SeqCst);
            let member_id = self.shared.membership.lock().unwrap().member_id.clone();
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_session_timeout_ms(c.session_timeout.as_millis() as i32)
                .with_rebalance_timeout_ms(c.max_poll_interval.as_millis() as i32)
                .with_member_id(StrBytes::from_string(member_id))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(metadata.clone())]);
            let join = coordinator_call!(self.shared, JoinGroup, request).await?;
            match ResponseError::try_from_code(join.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    self.shared.membership.lock().unwrap().member_id = join.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    *self.shared.membership.lock().unwrap() = Membership::default();
                    continue;
                }
                Some(ResponseError::RebalanceInProgress) => continue,
                Some(error) => {
                    return Err(Error::Broker {
                        error,
                        message: Some(format!("JoinGroup {group}")),
                    })
                }
            }
            let member_id = join.member_id.to_string();
            let assignments = if join.leader.as_str() == member_id {
                self.assign_partitions(&join.members).await?
            } else {
                Vec::new()
            };
            let request = SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_generation_id(join.generation_id)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str("range")))
                .with_assignments(assignments);
            let sync = coordinator_call!(self.shared, SyncGroup, request).await?;
            match ResponseError::try_from_code(sync.error_code) {
                None => {}
                Some(ResponseError::UnknownMemberId) => {
                    *self.shared.membership.lock().unwrap() = Membership::default();
                    continue;
                }
                Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {
                    self.shared.membership.lock().unwrap().member_id = member_id;
                    continue;
                }
                Some(error) => {
                    return Err(Error::Broker {
                        error,
                        message: Some(format!("SyncGroup {group}")),
                    })
                }
            }
            let mut assigned = Vec::new();
            let mut buf = sync.assignment.clone();
            if buf.len() >= 2 {
                let version = buf.get_i16();
                let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
                    .map_err(|e| Error::Protocol(format!("cannot decode assignment: {e}")))?;
                for t in a.assigned_partitions {
                    for p in t.partitions {
                        assigned.push((t.topic.to_string(), p));
                    }
                }
            }
            assigned.sort();
            *self.shared.membership.lock().unwrap() = Membership {
                generation: join.generation_id,
                member_id,
            };
            self.set_assignment(assigned);
            self.start_heartbeat();
            return Ok(());
        }
    }

    /// The leader's job: range-assign the members' subscribed topics.
    async fn assign_partitions(
        &self,
        members: &[JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let mut subs: Vec<(String, Vec<String>)> = Vec::new();
        for m in members {
            let mut buf = m.metadata.clone();
            let mut topics = Vec::new();
            if buf.len() >= 2 {
                let version = buf.get_i16();
                let s = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
                    .map_err(|e| Error::Protocol(format!("cannot decode subscription: {e}")))?;
                topics = s.topics.iter().map(|t| t.to_string()).collect();
            }
            subs.push((m.member_id.to_string(), topics));
        }
        let mut all: Vec<String> = subs.iter().flat_map(|(_, t)| t.clone()).collect();
        all.sort();
        all.dedup();
        self.shared.cluster.refresh(&all).await?;
        let counts: HashMap<String, i32> = self.shared.cluster.with_cache(|c| {
            all.iter()
                .filter_map(|t| c.partition_count(t).map(|n| (t.clone(), n)))
                .collect()
        });
        let plan = range_assign(&subs, &counts);
        let mut out = Vec::new();
        for (member, partitions) in plan {
            let mut topics: Vec<AssignedTopic> = Vec::new();
            for (t, p) in partitions {
                match topics.iter_mut().find(|a| a.topic.as_str() == t) {
                    Some(a) => a.partitions.push(p),
                    None => topics.push(
                        AssignedTopic::default()
                            .with_topic(topic_name(&t))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            let mut buf = BytesMut::new();
            buf.put_i16(0);
            ConsumerProtocolAssignment::default()
                .with_assigned_partitions(topics)
                .encode(&mut buf, 0)
                .map_err(|e| Error::Protocol(format!("cannot encode assignment: {e}")))?;
            out.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(buf.freeze()),
            );
        }
        Ok(out)
    }

    fn start_heartbeat(&mut self) {
        let shared = self.shared.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(shared.config.heartbeat_interval).await;
                if shared.rejoin.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(group) = shared.group() else { return };
                let member = shared.membership.lock().unwrap().clone();
                let request = HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                    .with_generation_id(member.generation)
                    .with_member_id(StrBytes::from_string(member.member_id));
                let result = match shared.coordinator().await {
                    Ok(conn) => {
                        match conn.send(ApiKey::Heartbeat, &RequestKind::Heartbeat(request)) {
                            Ok(f) => f.await,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                let error = match result {
                    Ok(ResponseKind::Heartbeat(r)) => Error::broker(r.error_code, None),
                    Ok(_) => Some(Error::Protocol("unexpected response to Heartbeat".into())),
                    Err(e) => Some(e),
                };
                match error {
                    None => {}
                    Some(e) if needs_rejoin(&e) => {
                        if e.response_error() == Some(ResponseError::UnknownMemberId) {
                            *shared.membership.lock().unwrap() = Membership::default();
                        }
                        shared.rejoin.store(true, Ordering::SeqCst);
                        return;
                    }
                    Some(e) => {
                        tracing::debug!("heartbeat failed: {e}");
                        if is_coordinator_error(&e) {
                            *shared.coordinator.lock().await = None;
                        }
                    }
                }
            }
        }));
    }

    /// The assigned partitions, in assignment order.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.clone()
    }

    fn state_mut(&mut self, topic: &str, partition: i32) -> Result<&mut PartitionState> {
        self.states
            .get_mut(&(topic.to_string(), partition))
            .ok_or_else(|| {
                Error::IllegalState(format!("partition {topic}-{partition} is not assigned"))
            })
    }

    fn set_position(state: &mut PartitionState, offset: i64) {
        state.position = Some(offset);
        state.fetch_offset = offset;
        state.reset_pending = false;
        state.buffer.clear();
        state.epoch += 1;
    }

    /// Makes the next `poll` of this partition start at `offset`.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::IllegalState(format!(
                "cannot seek {topic}-{partition} to negative offset {offset}"
            )));
        }
        let s = self.state_mut(topic, partition)?;
        Self::set_position(s, offset);
        Ok(())
    }

    /// Seeks to the log start (`earliest = true`) or end of the given partitions.
    pub async fn seek_to(&mut self, partitions: &[TopicPartition], earliest: bool) -> Result<()> {
        let ts = if earliest { -2 } else { -1 };
        let offsets = self.shared.list_offsets(partitions, ts).await?;
        for (tp, o) in offsets {
            if let Some(s) = self.states.get_mut(&tp) {
                Self::set_position(s, o);
            }
        }
        Ok(())
    }

    /// The offset of the next record `poll` will return for the partition, initialising it
    /// (committed offset, else `auto.offset.reset`) if needed.
    pub async fn position(&mut self, topic: &str, partition: i32) -> Result<i64> {
        self.state_mut(topic, partition)?;
        self.update_positions().await?;
        self.state_mut(topic, partition)?
            .position
            .ok_or_else(|| Error::IllegalState(format!("no position for {topic}-{partition}")))
    }

    /// Stops returning (and fetching) records of these partitions until resumed.
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for (t, p) in partitions {
            self.state_mut(t, *p)?.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for (t, p) in partitions {
            self.state_mut(t, *p)?.paused = false;
        }
        Ok(())
    }

    /// Number of fetch requests currently in flight (at most one per leader).
    pub fn fetches_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assignment
            .iter()
            .filter(|tp| self.states.get(*tp).is_some_and(|s| s.paused))
            .cloned()
            .collect()
    }

    /// Commits explicit offsets (the offset of the *next* record to read) and waits.
    pub async fn commit_sync(&self, offsets: &[(String, i32, i64)]) -> Result<()> {
        self.shared.commit(offsets).await
    }

    /// Commits explicit offsets in the background; the handle yields the outcome.
    pub fn commit_async(
        &self,
        offsets: Vec<(String, i32, i64)>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let shared = self.shared.clone();
        tokio::spawn(async move { shared.commit(&offsets).await })
    }

    /// The current positions of all assigned partitions that have one.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.assignment
            .iter()
            .filter_map(|tp| {
                let pos = self.states.get(tp)?.position?;
                Some((tp.0.clone(), tp.1, pos))
            })
            .collect()
    }

    /// Commits the current positions of all assigned partitions and waits.
    pub async fn commit_positions(&self) -> Result<()> {
        self.shared.commit(&self.positions()).await
    }

    /// The committed offsets of `partitions` for this group (`None` when there is none).
    pub async fn committed(&self, partitions: &[TopicPartition]) -> Result<Vec<Option<i64>>> {
        self.shared.committed(partitions).await
    }

    /// Commits positions when auto commit is on (and leaves the group when subscribed),
    /// then drops the consumer.
    pub async fn close(mut self) -> Result<()> {
        if self.subscription.is_some() {
            return self.unsubscribe().await;
        }
        if self.shared.config.group_id.is_some() && self.shared.config.enable_auto_commit {
            self.commit_positions().await?;
        }
        Ok(())
    }

    fn maybe_auto_commit(&mut self) {
        let c = &self.shared.config;
        if c.group_id.is_none() || !c.enable_auto_commit || Instant::now() < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = Instant::now() + c.auto_commit_interval;
        let offsets = self.positions();
        if offsets.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.commit(&offsets).await {
                tracing::warn!("auto commit failed: {e}");
            }
        });
    }

    /// Gives every assigned partition without a position one: the committed offset (when a
    /// group is configured and no reset is pending), else `auto.offset.reset`.
    async fn update_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|tp| self.states[*tp].position.is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let need_reset = if self.shared.config.group_id.is_some() {
            let (fresh, mut resets): (Vec<_>, Vec<_>) = missing
                .into_iter()
                .partition(|tp| !self.states[tp].reset_pending);
            let committed = self.shared.committed(&fresh).await?;
            for (tp, c) in fresh.into_iter().zip(committed) {
                match c {
                    Some(o) => Self::set_position(self.states.get_mut(&tp).unwrap(), o),
                    None => resets.push(tp),
                }
            }
            resets
        } else {
            missing
        };
        if need_reset.is_empty() {
            return Ok(());
        }
        let ts = match self.shared.config.auto_offset_reset {
            OffsetReset::Earliest => -2,
            OffsetReset::Latest => -1,
            OffsetReset::None => {
                let (topic, partition) = need_reset[0].clone();
                return Err(Error::NoOffsetForPartition { topic, partition });
            }
        };
        let offsets = self.shared.list_offsets(&need_reset, ts).await?;
        for (tp, o) in offsets {
            if let Some(s) = self.states.get_mut(&tp) {
                if s.position.is_none() {
                    Self::set_position(s, o);
                }
            }
        }
        Ok(())
    }

    /// Takes up to `max.poll.records` buffered records of unpaused partitions.
    fn drain(&mut self) -> Vec<ConsumerRecord> {
        let max = self.shared.config.max_poll_records;
        let mut out = Vec::new();
        let n = self.assignment.len();
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let tp = &self.assignment[(self.rotate + i) % n];
            let Some(s) = self.states.get_mut(tp) else {
                continue;
            };
            let Some(mut pos) = s.position else {
                continue;
            };
            if s.paused {
                continue;
            }
            while out.len() < max {
                let Some(r) = s.buffer.pop_front() else {
                    break;
                };
                if r.offset < pos {
                    continue;
                }
                pos = r.offset + 1;
                out.push(r);
            }
            s.position = Some(pos);
        }
        if n > 0 {
            self.rotate = (self.rotate + 1) % n;
        }
        out
    }

    /// Starts a fetch to every leader that has fetchable partitions and none in flight.
    async fn send_fetches(&mut self) {
        let max_buffered = self.shared.config.max_poll_records;
        let fetchable: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|tp| {
                let s = &self.states[*tp];
                s.position.is_some() && !s.paused && !s.in_flight && s.buffer.len() < max_buffered
            })
            .cloned()
            .collect();
        if fetchable.is_empty() {
            return;
        }
        let leaders = match self.shared.leaders(&fetchable).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("metadata refresh for fetch failed: {e}");
                return;
            }
        };
        let mut per_node: HashMap<i32, Vec<TopicPartition>> = HashMap::new();
        for tp in fetchable {
            if let Some(node) = leaders.get(&tp) {
                if !self.in_flight.contains_key(node) {
                    per_node.entry(*node).or_default().push(tp);
                }
            }
        }
        let c = self.shared.config.clone();
        for (node, tps) in per_node {
            let conn = match self.shared.cluster.node_connection(node).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("cannot connect to broker {node}: {e}");
                    continue;
                }
            };
            let mut metas = Vec::new();
            let mut items = Vec::new();
            for tp in tps {
                let s = self.states.get_mut(&tp).unwrap();
                s.in_flight = true;
                items.push((tp.0.clone(), tp.1, s.fetch_offset));
                metas.push(FetchMeta {
                    fetch_offset: s.fetch_offset,
                    epoch: s.epoch,
                    tp,
                });
            }
            let topics = by_topic(&items)
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(topic_name(&t))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o)| {
                                    FetchPartition::default()
                                        .with_partition(p)
                                        .with_fetch_offset(o)
                                        .with_current_leader_epoch(-1)
                                        .with_last_fetched_epoch(-1)
                                        .with_log_start_offset(-1)
                                        .with_partition_max_bytes(c.max_partition_fetch_bytes)
                                })
                                .collect(),
                        )
                })
                .collect();
            let request = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(c.fetch_max_wait.as_millis().min(i32::MAX as u128) as i32)
                .with_min_bytes(c.fetch_min_bytes)
                .with_max_bytes(c.fetch_max_bytes)
                .with_isolation_level(c.isolation_level)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(topics);
            let tx = self.tx.clone();
            match conn.send(ApiKey::Fetch, &RequestKind::Fetch(request)) {
                Ok(fut) => {
                    tokio::spawn(async move {
                        let _ = tx.send((node, fut.await));
                    });
                }
                Err(e) => {
                    let _ = tx.send((node, Err(e)));
                }
            }
            self.in_flight.insert(node, metas);
        }
    }

    /// Applies one fetch response: buffers records, schedules resets, refreshes metadata.
    async fn handle_fetch(&mut self, node: i32, result: Result<ResponseKind>) {
        let metas = self.in_flight.remove(&node).unwrap_or_default();
        for m in &metas {
            if let Some(s) = self.states.get_mut(&m.tp) {
                s.in_flight = false;
            }
        }
        let response: FetchResponse = match result {
            Ok(ResponseKind::Fetch(r)) => r,
            Ok(_) => {
                tracing::warn!("unexpected response to Fetch");
                return;
            }
            Err(e) => {
                tracing::debug!("fetch from broker {node} failed: {e}");
                if e.invalidates_metadata() {
                    for m in &metas {
                        self.shared.cluster.invalidate(&m.tp.0);
                    }
                }
                tokio::time::sleep(self.shared.config.retry_backoff).await;
                return;
            }
        };
        if response.error_code != 0 {
            tracing::debug!("fetch error code {}", response.error_code);
            tokio::time::sleep(self.shared.config.retry_backoff).await;
            return;
        }
        let mut backoff = false;
        for t in response.responses {
            let topic = t.topic.to_string();
            for p in t.partitions {
                let tp = (topic.clone(), p.partition_index);
                let Some(meta) = metas.iter().find(|m| m.tp == tp) else {
                    continue;
                };
                let Some(s) = self.states.get_mut(&tp) else {
                    continue;
                };
                if s.epoch != meta.epoch || s.fetch_offset != meta.fetch_offset {
                    continue; // sought (or reset) since the request was sent
                }
                if p.error_code != 0 {
                    if p.error_code == ResponseError::OffsetOutOfRange.code() {
                        if self.shared.config.auto_offset_reset == OffsetReset::None {
                            self.pending_error = Some(Error::OffsetOutOfRange {
                                topic: topic.clone(),
                                partition: tp.1,
                                offset: meta.fetch_offset,
                            });
                        } else {
                            s.position = None;
                            s.reset_pending = true;
                            s.buffer.clear();
                            s.epoch += 1;
                        }
                    } else {
                        if is_metadata_error(p.error_code) {
                            self.shared.cluster.invalidate(&topic);
                        }
                        tracing::debug!("fetch {topic}-{} error {}", tp.1, p.error_code);
                        backoff = true;
                    }
                    continue;
                }
                let Some(records) = p.records else {
                    continue;
                };
                for (mut batch, next) in split_batches(records) {
                    let set = match RecordBatchDecoder::decode(&mut batch) {
                        Ok(set) => set,
                        Err(e) => {
                            self.pending_error = Some(Error::Protocol(format!(
                                "corrupt batch in {topic}-{} at offset {}: {e}",
                                tp.1, s.fetch_offset
                            )));
                            break;
                        }
                    };
                    for r in set.records {
                        if r.control || r.offset < s.fetch_offset {
                            continue;
                        }
                        s.buffer
                            .push_back(ConsumerRecord::from_record(&topic, tp.1, r));
                    }
                    s.fetch_offset = s.fetch_offset.max(next);
                }
            }
        }
        if backoff {
            tokio::time::sleep(self.shared.config.retry_backoff).await;
        }
    }

    /// Returns up to `max.poll.records` records, waiting at most `timeout` for some.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        self.maybe_auto_commit();
        loop {
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
            if self.subscription.is_some() && self.shared.rejoin.load(Ordering::SeqCst) {
                self.join_group().await?;
            }
            self.update_positions().await?;
            let out = self.drain();
            // Keep a fetch in flight per leader so the next poll finds data ready.
            self.send_fetches().await;
            if !out.is_empty() {
                return Ok(out);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(out);
            }
            match tokio::time::timeout(remaining, self.rx.recv()).await {
                Ok(Some((node, result))) => self.handle_fetch(node, result).await,
                Ok(None) | Err(_) => return Ok(Vec::new()),
            }
            while let Ok((node, result)) = self.rx.try_recv() {
                self.handle_fetch(node, result).await;
            }
        }
    }
}
/// Fetches once from `topic`/`partition` starting at `offset` (read-uncommitted), waiting at
/// most `max_wait` for data. Uses `bootstrap.servers` (and optionally `client.id`,
/// `request.timeout.ms`) from `config`.
pub async fn fetch_once(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait: Duration,
) -> Result<Vec<ConsumerRecord>> {
    let timeout = config.int("request.timeout.ms", 30_000, 1, i32::MAX as i64)? as u64;
    let cluster = Cluster::new(
        config.bootstrap_servers()?,
        config.get("client.id").unwrap_or("gregor-fetch"),
        Duration::from_millis(timeout) + max_wait,
    );
    cluster.refresh(&[topic.to_string()]).await?;
    let leader = cluster
        .with_cache(|c| c.leader(topic, partition))
        .ok_or_else(|| Error::NoBrokerAvailable(format!("no leader for {topic}-{partition}")))?;
    let conn = cluster.node_connection(leader).await?;
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(1)
        .with_max_bytes(64 * 1024 * 1024)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(32 * 1024 * 1024)])]);
    let ResponseKind::Fetch(response) = conn
        .send(ApiKey::Fetch, &RequestKind::Fetch(request))?
        .await?
    else {
        return Err(Error::Protocol("unexpected response to Fetch".into()));
    };
    if let Some(e) = Error::broker(response.error_code, Some("Fetch".into())) {
        return Err(e);
    }
    let mut out = Vec::new();
    for t in &response.responses {
        for p in t
            .partitions
            .iter()
            .filter(|p| p.partition_index == partition)
        {
            if let Some(e) = Error::broker(p.error_code, Some(format!("Fetch {topic}-{partition}")))
            {
                return Err(e);
            }
            let Some(records) = p.records.clone() else {
                continue;
            };
            let mut buf = records;
            let sets = RecordBatchDecoder::decode_all(&mut buf)
                .map_err(|e| Error::Protocol(format!("cannot decode fetched batches: {e}")))?;
            for set in sets {
                for r in set.records {
                    if r.control || r.offset < offset {
                        continue;
                    }
                    out.push(ConsumerRecord::from_record(topic, partition, r));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_splits_consecutive_ranges() {
        let members = vec![
            ("b".to_string(), vec!["t1".to_string(), "t2".to_string()]),
            ("a".to_string(), vec!["t1".to_string(), "t2".to_string()]),
            ("c".to_string(), vec!["t1".to_string()]),
        ];
        let counts: HashMap<String, i32> = [("t1".to_string(), 7), ("t2".to_string(), 3)]
            .into_iter()
            .collect();
        let plan = range_assign(&members, &counts);
        let get = |m: &str| plan.iter().find(|(id, _)| id == m).unwrap().1.clone();
        let tp = |t: &str, p: i32| (t.to_string(), p);
        assert_eq!(
            get("a"),
            vec![
                tp("t1", 0),
                tp("t1", 1),
                tp("t1", 2),
                tp("t2", 0),
                tp("t2", 1)
            ]
        );
        assert_eq!(get("b"), vec![tp("t1", 3), tp("t1", 4), tp("t2", 2)]);
        assert_eq!(get("c"), vec![tp("t1", 5), tp("t1", 6)]);
    }
}
