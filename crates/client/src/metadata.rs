//! Cluster metadata: bootstrap servers, a cache of topics → partitions → leaders, and the
//! pool of broker connections the client shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, MetadataRequest, MetadataResponse, RequestKind, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex as AsyncMutex;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// One partition as the last metadata response described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// Node id of the leader, -1 when there is none.
    pub leader: i32,
    pub error_code: i16,
}

/// One topic as the last metadata response described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub error_code: i16,
    /// Sorted by partition id.
    pub partitions: Vec<PartitionInfo>,
}

/// A snapshot of cluster metadata.
#[derive(Debug, Clone, Default)]
pub struct MetadataCache {
    pub brokers: HashMap<i32, String>,
    /// Every broker address any response named, kept after a broker leaves `brokers` (a
    /// fenced broker is not listed) so that connections to it can still be found.
    pub addresses: HashMap<i32, String>,
    pub topics: HashMap<String, TopicMetadata>,
    pub last_refresh: Option<Instant>,
}

impl MetadataCache {
    /// Merges a Metadata response (topics not in the response are kept).
    pub fn update(&mut self, response: &MetadataResponse) {
        if !response.brokers.is_empty() {
            self.brokers = response
                .brokers
                .iter()
                .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
                .collect();
            self.addresses
                .extend(self.brokers.iter().map(|(id, a)| (*id, a.clone())));
        }
        for t in &response.topics {
            let Some(name) = t.name.as_ref() else {
                continue;
            };
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            self.topics.insert(
                name.0.to_string(),
                TopicMetadata {
                    name: name.0.to_string(),
                    error_code: t.error_code,
                    partitions,
                },
            );
        }
        self.last_refresh = Some(Instant::now());
    }

    /// Number of partitions of a usable topic.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        self.topics
            .get(topic)
            .filter(|t| t.error_code == 0 && !t.partitions.is_empty())
            .map(|t| t.partitions.len() as i32)
    }

    /// Leader node of a partition, if known.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }
}

/// Shared network state: bootstrap list, metadata cache and one connection per broker.
pub struct Cluster {
    bootstrap: Vec<String>,
    client_id: String,
    request_timeout: Duration,
    conns: AsyncMutex<HashMap<String, Arc<Connection>>>,
    cache: Mutex<MetadataCache>,
    refresh_lock: AsyncMutex<()>,
}

impl Cluster {
    pub fn new(bootstrap: Vec<String>, client_id: &str, request_timeout: Duration) -> Cluster {
        Cluster {
            bootstrap,
            client_id: client_id.to_string(),
            request_timeout,
            conns: AsyncMutex::new(HashMap::new()),
            cache: Mutex::new(MetadataCache::default()),
            refresh_lock: AsyncMutex::new(()),
        }
    }

    /// A snapshot of the metadata cache.
    pub fn snapshot(&self) -> MetadataCache {
        self.cache.lock().unwrap().clone()
    }

    pub fn with_cache<T>(&self, f: impl FnOnce(&MetadataCache) -> T) -> T {
        f(&self.cache.lock().unwrap())
    }

    /// Forgets a topic so the next use refreshes it.
    pub fn invalidate(&self, topic: &str) {
        self.cache.lock().unwrap().topics.remove(topic);
    }

    /// A live connection to `addr`, opened (and negotiated) on first use. The pool is not
    /// locked while connecting, so a broker that accepts but does not answer holds up only
    /// the callers that want it.
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>> {
        if let Some(c) = self.open_connection(addr).await {
            return Ok(c);
        }
        let c = Arc::new(Connection::connect(addr, &self.client_id, self.request_timeout).await?);
        let mut conns = self.conns.lock().await;
        match conns.get(addr) {
            // Another caller connected meanwhile: keep one connection per broker.
            Some(existing) if !existing.is_closed() => Ok(existing.clone()),
            _ => {
                conns.insert(addr.to_string(), c.clone());
                Ok(c)
            }
        }
    }

    /// The pooled connection to `addr`, if it is open.
    async fn open_connection(&self, addr: &str) -> Option<Arc<Connection>> {
        let conns = self.conns.lock().await;
        conns.get(addr).filter(|c| !c.is_closed()).cloned()
    }

    /// The `host:port` of broker `node_id` as the metadata last named it.
    pub fn address_of(&self, node_id: i32) -> Option<String> {
        self.cache.lock().unwrap().addresses.get(&node_id).cloned()
    }

    /// Closes the pooled connection to `addr`: its outstanding requests fail at once with a
    /// network error, and the next use reconnects.
    pub async fn close_connection(&self, addr: &str) {
        if let Some(c) = self.conns.lock().await.remove(addr) {
            c.close();
        }
    }

    /// A connection to broker `node_id` as the metadata names it.
    pub async fn node_connection(&self, node_id: i32) -> Result<Arc<Connection>> {
        let addr = self.address_of(node_id).ok_or_else(|| {
            Error::NoBrokerAvailable(format!("broker {node_id} is not in the metadata"))
        })?;
        self.connection(&addr).await
    }

    /// A connection to any broker: known brokers first, then the bootstrap servers.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        self.any_connection_except(&[]).await
    }

    /// A connection to any broker but those at `avoid`: an open one to a known broker if
    /// there is one, else known brokers, then the bootstrap servers.
    async fn any_connection_except(&self, avoid: &[String]) -> Result<Arc<Connection>> {
        let mut candidates: Vec<String> = self
            .cache
            .lock()
            .unwrap()
            .brokers
            .values()
            .cloned()
            .collect();
        candidates.sort();
        candidates.extend(self.bootstrap.iter().cloned());
        candidates.retain(|a| !avoid.contains(a));
        for addr in &candidates {
            if let Some(c) = self.open_connection(addr).await {
                return Ok(c);
            }
        }
        let mut errors = Vec::new();
        for addr in candidates {
            match self.connection(&addr).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(Error::NoBrokerAvailable(errors.join("; ")))
    }

    /// The `host:port` of the coordinator of `key`: a consumer group (`key_type` 0) or a
    /// transactional id (`key_type` 1).
    pub async fn find_coordinator(&self, key: &str, key_type: i8) -> Result<String> {
        let conn = self.any_connection().await?;
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(key.to_string()))
            .with_key_type(key_type);
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
        let message = match r.error_message.as_ref().filter(|m| !m.is_empty()) {
            Some(m) => format!("FindCoordinator {key}: {}", m.as_str()),
            None => format!("FindCoordinator {key}"),
        };
        if let Some(e) = Error::broker(r.error_code, Some(message)) {
            return Err(e);
        }
        Ok(format!("{}:{}", r.host.as_str(), r.port))
    }

    /// Fetches metadata for `topics` (auto-creating them if the broker allows) and merges it
    /// into the cache.
    pub async fn refresh(&self, topics: &[String]) -> Result<()> {
        self.refresh_avoiding(topics, &[]).await
    }

    /// Like [`Cluster::refresh`], asking a broker not at `avoid` (e.g. one that stopped
    /// answering).
    pub async fn refresh_avoiding(&self, topics: &[String], avoid: &[String]) -> Result<()> {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(true);
        self.request(request, avoid).await.map(drop)
    }

    /// Fetches metadata for every topic, merges it into the cache and returns the names of
    /// the usable, non-internal topics, sorted.
    pub async fn refresh_all(&self) -> Result<Vec<String>> {
        let request = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let response = self.request(request, &[]).await?;
        let mut names: Vec<String> = response
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.is_internal)
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn request(
        &self,
        request: MetadataRequest,
        avoid: &[String],
    ) -> Result<MetadataResponse> {
        let _guard = self.refresh_lock.lock().await;
        let conn = self.any_connection_except(avoid).await?;
        let response = conn
            .send(ApiKey::Metadata, &RequestKind::Metadata(request))?
            .await?;
        let ResponseKind::Metadata(response) = response else {
            return Err(Error::Protocol("unexpected response to Metadata".into()));
        };
        self.cache.lock().unwrap().update(&response);
        Ok(response)
    }

    /// Partition count of `topic`, refreshing metadata until `deadline` if needed.
    pub async fn wait_for_partitions(
        &self,
        topic: &str,
        deadline: Instant,
        backoff: Duration,
        max_block_ms: u64,
    ) -> Result<i32> {
        let mut last_error: Option<String> = None;
        loop {
            let known = self.with_cache(|c| {
                c.topics
                    .get(topic)
                    .map(|t| (t.error_code, c.partition_count(topic)))
            });
            match known {
                Some((_, Some(n))) => return Ok(n),
                Some((code, None)) if code != 0 => {
                    let err =
                        Error::broker(code, Some(format!("topic {topic}"))).expect("non-zero code");
                    if !err.is_retriable() {
                        return Err(err);
                    }
                    last_error = Some(err.to_string());
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::MaxBlockTimeout {
                    what: format!(
                        "metadata for topic {topic}{}",
                        last_error
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    ),
                    max_block_ms,
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.refresh(&[topic.to_string()])).await {
                Ok(Ok(())) => {
                    let ok = self.with_cache(|c| c.partition_count(topic).is_some());
                    if ok {
                        continue;
                    }
                }
                Ok(Err(e)) => last_error = Some(e.to_string()),
                Err(_) => continue,
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(backoff.min(remaining)).await;
        }
    }
}

/// Whether a partition-level error code means the cached leader is stale.
pub(crate) fn is_metadata_error(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::NotLeaderOrFollower
                | ResponseError::UnknownTopicOrPartition
                | ResponseError::LeaderNotAvailable
        )
    )
}
