//! The consumer: manual partition assignment ([`Consumer::assign`]) or classic group
//! membership ([`Consumer::subscribe`], [`Consumer::subscribe_pattern`]; see `group`),
//! pipelined fetching (one fetch in flight per leader), offset reset, key/value
//! deserialization, and (with `group.id`) committed offsets via the group coordinator.
//! [`fetch_once`] is a one-shot fetch helper kept for simple reads.
//!
//! `isolation.level=read_committed`: fetches stop at the last stable offset and records of
//! aborted transactions are dropped (`txn_filter`); control batches are never returned, at
//! either isolation level, and positions move past them.
//!
//! Limitation: the batch decoder always verifies CRCs, so `check.crcs = false` has no effect.

mod assignor;
mod config;
mod group;
mod rebalance;
mod txn_filter;

pub use assignor::Assignor;
pub use config::{ConsumerConfig, OffsetReset};
pub use group::ConsumerGroupMetadata;
pub use rebalance::RebalanceListener;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ListOffsetsRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::mpsc;

use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::metadata::{is_metadata_error, Cluster};
use crate::requests::{by_topic, list_offsets_topics, topic_name};
use crate::serialization::{BytesDeserializer, Deserializer};
use group::{Membership, Subscription};
use txn_filter::{AbortedFilter, BatchInfo};

/// A record read back from a partition; keys and values are bytes unless the consumer has
/// other deserializers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord<K = Bytes, V = Bytes> {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<K>,
    pub value: Option<V>,
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

    /// This record with its key and value deserialized (nulls stay null); on failure the
    /// error and the record itself.
    fn deserialize<K, V>(
        self,
        keys: &dyn Deserializer<K>,
        values: &dyn Deserializer<V>,
    ) -> std::result::Result<ConsumerRecord<K, V>, Box<(Error, ConsumerRecord)>> {
        let key = self
            .key
            .as_ref()
            .map(|k| keys.deserialize(&self.topic, k.clone()))
            .transpose();
        let value = self
            .value
            .as_ref()
            .map(|v| values.deserialize(&self.topic, v.clone()))
            .transpose();
        match (key, value) {
            (Ok(key), Ok(value)) => Ok(ConsumerRecord {
                topic: self.topic,
                partition: self.partition,
                offset: self.offset,
                timestamp: self.timestamp,
                key,
                value,
                headers: self.headers,
                producer_id: self.producer_id,
            }),
            (Err(e), _) | (_, Err(e)) => Err(Box::new((
                Error::RecordDeserialization {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: self.offset,
                    message: e.to_string(),
                },
                self,
            ))),
        }
    }
}

/// A topic name and partition index.
pub type TopicPartition = (String, i32);

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

/// Network state shared with background commit and heartbeat tasks.
struct Shared {
    cluster: Cluster,
    config: ConsumerConfig,
    /// A dedicated connection to the group coordinator (JoinGroup may block for long).
    coordinator: tokio::sync::Mutex<Option<Arc<Connection>>>,
    membership: std::sync::Mutex<Membership>,
    /// Set when the group is rebalancing and this member must rejoin.
    rejoin: AtomicBool,
    /// Set when this member was fenced (its partitions are lost, not revoked).
    lost: AtomicBool,
}

/// A Kafka consumer of `K` keys and `V` values (bytes by default), with manual partition
/// assignment or group subscription.
pub struct Consumer<K = Bytes, V = Bytes> {
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
    /// Topics or pattern given to `subscribe*` (group-managed assignment), `None` if manual.
    subscription: Option<Subscription>,
    listener: Option<Box<dyn RebalanceListener>>,
    key_deserializer: Box<dyn Deserializer<K>>,
    value_deserializer: Box<dyn Deserializer<V>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl<K, V> Drop for Consumer<K, V> {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl<K, V> std::fmt::Debug for Consumer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.assignment)
            .finish()
    }
}

impl Shared {
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
    /// Creates a bytes consumer from Kafka-style configuration. No connection is made until
    /// used.
    pub fn new(config: &ClientConfig) -> Result<Consumer> {
        Consumer::with_deserializers(config, BytesDeserializer, BytesDeserializer)
    }
}

impl<K, V> Consumer<K, V> {
    /// Creates a consumer of `K` keys and `V` values read with these deserializers.
    pub fn with_deserializers(
        config: &ClientConfig,
        key_deserializer: impl Deserializer<K> + 'static,
        value_deserializer: impl Deserializer<V> + 'static,
    ) -> Result<Consumer<K, V>> {
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
                lost: AtomicBool::new(false),
            }),
            subscription: None,
            listener: None,
            key_deserializer: Box::new(key_deserializer),
            value_deserializer: Box::new(value_deserializer),
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

    /// Takes up to `max.poll.records` buffered records of unpaused partitions, deserialized.
    /// A record that fails to deserialize stays buffered at the partition's position and its
    /// error is returned by the next `poll`.
    fn drain(&mut self) -> Vec<ConsumerRecord<K, V>> {
        let max = self.shared.config.max_poll_records;
        let mut out = Vec::new();
        let n = self.assignment.len();
        'partitions: for i in 0..n {
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
                let offset = r.offset;
                match r.deserialize(&*self.key_deserializer, &*self.value_deserializer) {
                    Ok(typed) => out.push(typed),
                    Err(failed) => {
                        let (e, r) = *failed;
                        s.buffer.push_front(r);
                        s.position = Some(pos);
                        self.pending_error = Some(e);
                        break 'partitions;
                    }
                }
                pos = offset + 1;
            }
            if s.buffer.is_empty() {
                // Everything fetched was returned or skipped (control batches, aborted
                // transactions): the position moves past it.
                pos = pos.max(s.fetch_offset);
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
                let mut aborted = (self.shared.config.isolation_level == 1).then(|| {
                    AbortedFilter::new(p.aborted_transactions.as_deref().unwrap_or_default())
                });
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
                    // Control batches never reach the application; with read_committed
                    // neither do aborted transactions. The offsets are passed either way.
                    let keep = BatchInfo::from_records(&set.records).is_some_and(|info| {
                        match aborted.as_mut() {
                            Some(filter) => filter.keep(&info),
                            None => !info.control,
                        }
                    });
                    if keep {
                        for r in set.records {
                            if r.offset >= s.fetch_offset {
                                s.buffer
                                    .push_back(ConsumerRecord::from_record(&topic, tp.1, r));
                            }
                        }
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
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord<K, V>>> {
        let deadline = Instant::now() + timeout;
        self.maybe_auto_commit();
        loop {
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
            self.refresh_pattern().await;
            if self.subscription.is_some() && self.shared.rejoin.load(Ordering::SeqCst) {
                self.join_group().await?;
            }
            self.update_positions().await?;
            let out = self.drain();
            if out.is_empty() {
                if let Some(e) = self.pending_error.take() {
                    return Err(e);
                }
            }
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
