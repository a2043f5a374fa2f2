//! The admin client: topics, partitions, configs, cluster, consumer groups, offsets,
//! records and transactions (ListTransactions, DescribeTransactions, DescribeProducers).
//!
//! Every method is bounded by `default.api.timeout.ms`; each request by
//! `request.timeout.ms`. Methods acting on several items return one result per item, whose
//! error ([`AdminError`]) carries the Kafka error code, its name (`TOPIC_ALREADY_EXISTS`)
//! and the broker's message. Methods acting on a single resource return the broker's error
//! as [`Error::Broker`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_producers_request::TopicRequest as DescribeProducersTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, DescribeProducersRequest,
    DescribeTransactionsRequest, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
    ListOffsetsRequest, ListTransactionsRequest, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, ProducerId, RequestKind,
    ResponseKind, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{ConfigError, Error, Result};
use crate::metadata::Cluster;
use crate::requests::{by_topic, list_offsets_topics, offset_commit_topics, topic_name};

const ADMIN_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "request.timeout.ms",
    "default.api.timeout.ms",
];

/// Validated admin client settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub request_timeout: Duration,
    pub default_api_timeout: Duration,
}

impl AdminConfig {
    /// Validates `config`; unknown keys are errors naming the key.
    pub fn from_config(config: &ClientConfig) -> Result<AdminConfig, ConfigError> {
        if let Some(k) = config.keys().find(|k| !ADMIN_KEYS.contains(k)) {
            return Err(ConfigError::Unknown(k.to_string()));
        }
        const I32: i64 = i32::MAX as i64;
        let ms = |v: i64| Duration::from_millis(v as u64);
        Ok(AdminConfig {
            bootstrap_servers: config.bootstrap_servers()?,
            client_id: config
                .get("client.id")
                .unwrap_or("gregor-admin")
                .to_string(),
            request_timeout: ms(config.int("request.timeout.ms", 30_000, 1, I32)?),
            default_api_timeout: ms(config.int("default.api.timeout.ms", 60_000, 1, I32)?),
        })
    }
}

/// A per-item error returned by the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct AdminError {
    /// The Kafka error code.
    pub code: i16,
    /// The Kafka name of the code, e.g. `TOPIC_ALREADY_EXISTS`.
    pub name: String,
    /// The broker's error message, if it sent one.
    pub message: Option<String>,
}

impl AdminError {
    fn from_code(code: i16, message: Option<String>) -> Option<AdminError> {
        ResponseError::try_from_code(code).map(|e| AdminError {
            code,
            name: error_name(e),
            message: message.filter(|m| !m.is_empty()),
        })
    }

    fn check(code: i16, message: Option<&StrBytes>) -> ItemResult<()> {
        match AdminError::from_code(code, message.map(|m| m.to_string())) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The error as the protocol crate's enum.
    pub fn response_error(&self) -> ResponseError {
        ResponseError::try_from_code(self.code).unwrap_or(ResponseError::UnknownServerError)
    }
}

impl From<AdminError> for Error {
    fn from(e: AdminError) -> Error {
        Error::Broker {
            error: e.response_error(),
            message: e.message,
        }
    }
}

/// The result of one item of a multi-item admin call.
pub type ItemResult<T> = std::result::Result<T, AdminError>;

pub use gregor_protocol::errors::error_name;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker default.
    pub num_partitions: i32,
    /// -1 for the broker default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, num_partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions,
            replication_factor,
            configs: Vec::new(),
        }
    }

    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.push((key.into(), value.into()));
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: i32,
    /// -1 when there is no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Eligible leader replicas (KIP-966; empty from a broker without them).
    pub elr: Vec<i32>,
    /// Replicas on brokers that are not live.
    pub offline: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: String,
    pub internal: bool,
    /// Sorted by partition id.
    pub partitions: Vec<PartitionDescription>,
}

/// A partition reassignment under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    /// Every replica now: the target ones first, then those being removed.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// A config resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

impl ConfigResource {
    fn kind(&self) -> i8 {
        match self {
            ConfigResource::Topic(_) => 2,
            ConfigResource::Broker(_) => 4,
        }
    }

    fn name(&self) -> String {
        match self {
            ConfigResource::Topic(t) => t.clone(),
            ConfigResource::Broker(id) => id.to_string(),
        }
    }
}

/// Where a config value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Unknown,
    DynamicTopic,
    DynamicBroker,
    DynamicDefaultBroker,
    StaticBroker,
    Default,
    DynamicBrokerLogger,
    Other(i8),
}

impl ConfigSource {
    fn from_i8(v: i8) -> ConfigSource {
        match v {
            0 => ConfigSource::Unknown,
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            o => ConfigSource::Other(o),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive or unset values.
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub is_default: bool,
}

/// One incremental config change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: i32,
    /// `(id, host, port)`, sorted by id.
    pub brokers: Vec<(i32, String, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Decoded when the group's protocol type is `consumer`, else empty.
    pub assignment: Vec<(String, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The chosen assignor (e.g. `range`).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Which offset `list_offsets` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    MaxTimestamp,
    /// The earliest offset whose timestamp is at least this (ms).
    Timestamp(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::MaxTimestamp => -3,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// Filters of [`AdminClient::list_transactions`]; an empty filter lists every transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTransactionsFilter {
    /// Only transactions in one of these states (e.g. `Ongoing`, `CompleteCommit`).
    pub states: Vec<String>,
    /// Only transactions of one of these producer ids.
    pub producer_ids: Vec<i64>,
    /// Only ongoing transactions running for at least this many ms (ListTransactions v1;
    /// the call fails with [`Error::UnsupportedApi`] against a broker without it).
    pub min_duration_ms: Option<i64>,
}

/// One transactional id as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The coordinator's state name, e.g. `Ongoing`.
    pub state: String,
}

/// The merged answer of every broker to ListTransactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionListings {
    /// Sorted by transactional id.
    pub transactions: Vec<TransactionListing>,
    /// State filters no broker knows (sorted, deduplicated).
    pub unknown_state_filters: Vec<String>,
}

/// A transaction as its coordinator describes it (DescribeTransactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    /// The coordinator's state name, e.g. `Ongoing`, `CompleteCommit`, `Empty`.
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// When the current transaction started (ms since the epoch); `None` outside one.
    pub start_time_ms: Option<i64>,
    /// The partitions in the current transaction, sorted.
    pub partitions: Vec<(String, i32)>,
}

/// One active producer of a partition (DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateDescription {
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    /// Timestamp (ms) of the producer's last write, -1 if unknown.
    pub last_timestamp: i64,
    /// `None` when the producer is not transactional or no marker was written yet.
    pub coordinator_epoch: Option<i32>,
    /// First offset of the producer's open transaction on this partition, if any.
    pub current_txn_start_offset: Option<i64>,
}

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

fn s(v: &StrBytes) -> String {
    v.to_string()
}

macro_rules! expect_response {
    ($resp:expr, $variant:ident) => {
        match $resp {
            ResponseKind::$variant(r) => r,
            _ => {
                return Err(Error::Protocol(
                    concat!("unexpected response to ", stringify!($variant)).into(),
                ))
            }
        }
    };
}

fn ids(v: &[kafka_protocol::messages::BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}

fn sorted(partitions: impl Iterator<Item = PartitionDescription>) -> Vec<PartitionDescription> {
    let mut v: Vec<PartitionDescription> = partitions.collect();
    v.sort_by_key(|p| p.partition);
    v
}

fn not_in_response(topic: &str) -> AdminError {
    AdminError::from_code(
        ResponseError::UnknownTopicOrPartition.code(),
        Some(format!("topic {topic} not in the response")),
    )
    .expect("non-zero code")
}

fn topic_error(code: i16, topic: &str) -> AdminError {
    AdminError::from_code(code, Some(format!("topic {topic}"))).expect("non-zero code")
}

async fn call(conn: &Connection, key: ApiKey, request: RequestKind) -> Result<ResponseKind> {
    conn.send(key, &request)?.await
}

/// The broker error behind a client error, as a per-item error.
fn item_error(e: &Error) -> Option<AdminError> {
    match e {
        Error::Broker { error, message } => Some(AdminError {
            code: error.code(),
            name: error_name(*error),
            message: message.clone(),
        }),
        _ => None,
    }
}

fn is_coordinator_code(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        )
    )
}

/// The admin client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct AdminClient {
    config: AdminConfig,
    cluster: Cluster,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("config", &self.config)
            .finish()
    }
}

const RETRY_BACKOFF: Duration = Duration::from_millis(100);

impl AdminClient {
    /// Validates the configuration; no connection is opened until the first call.
    pub fn new(config: &ClientConfig) -> Result<AdminClient> {
        let config = AdminConfig::from_config(config)?;
        let cluster = Cluster::new(
            config.bootstrap_servers.clone(),
            &config.client_id,
            config.request_timeout,
        );
        Ok(AdminClient { config, cluster })
    }

    pub fn config(&self) -> &AdminConfig {
        &self.config
    }

    fn timeout_ms(&self) -> i32 {
        self.config
            .request_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32
    }

    /// Runs `op` until it succeeds, fails non-retriably or `default.api.timeout.ms` passes.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.config.default_api_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(remaining, op()).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::RequestTimeout {
                        addr: "cluster (default.api.timeout.ms)".into(),
                        timeout_ms: self.config.default_api_timeout.as_millis() as u64,
                    })
                }
            };
            match result {
                Err(e) if e.is_retriable() && Instant::now() + RETRY_BACKOFF < deadline => {
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// Metadata for `topics` (all topics when `None`), never auto-creating.
    async fn metadata(&self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let conn = self.cluster.any_connection().await?;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        Ok(expect_response!(
            call(&conn, ApiKey::Metadata, RequestKind::Metadata(request)).await?,
            Metadata
        ))
    }

    fn broker_addr(metadata: &MetadataResponse, node: i32) -> Option<String> {
        metadata
            .brokers
            .iter()
            .find(|b| b.node_id.0 == node)
            .map(|b| format!("{}:{}", b.host.as_str(), b.port))
    }

    async fn node_connection(
        &self,
        metadata: &MetadataResponse,
        node: i32,
    ) -> Result<Arc<Connection>> {
        let addr = Self::broker_addr(metadata, node).ok_or_else(|| {
            Error::NoBrokerAvailable(format!("broker {node} is not in the metadata"))
        })?;
        self.cluster.connection(&addr).await
    }

    /// A connection to the controller (any broker if it is unknown).
    async fn controller(&self) -> Result<Arc<Connection>> {
        let metadata = self.metadata(Some(&[])).await?;
        match Self::broker_addr(&metadata, metadata.controller_id.0) {
            Some(addr) => self.cluster.connection(&addr).await,
            None => self.cluster.any_connection().await,
        }
    }

    /// A connection to the coordinator of `key`: a consumer group (`key_type` 0) or a
    /// transactional id (`key_type` 1), found with the client's shared FindCoordinator.
    async fn coordinator_of(&self, key: &str, key_type: i8) -> Result<Arc<Connection>> {
        let addr = self.cluster.find_coordinator(key, key_type).await?;
        self.cluster.connection(&addr).await
    }

    /// A connection to the coordinator of `group`.
    async fn coordinator(&self, group: &str) -> Result<Arc<Connection>> {
        self.coordinator_of(group, 0).await
    }

    // ---------------------------------------------------------------- topics

    /// Creates topics; one result per topic, in response order.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Result<Vec<(String, ItemResult<()>)>> {
        let request = CreateTopicsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(&t.name))
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
            .with_timeout_ms(self.timeout_ms())
            .with_validate_only(validate_only);
        self.retrying(|| async {
            let conn = self.controller().await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::CreateTopics,
                    RequestKind::CreateTopics(request.clone())
                )
                .await?,
                CreateTopics
            );
            Ok(r.topics
                .iter()
                .map(|t| {
                    (
                        s(&t.name.0),
                        AdminError::check(t.error_code, t.error_message.as_ref()),
                    )
                })
                .collect())
        })
        .await
    }

    /// Deletes topics by name; one result per topic.
    pub async fn delete_topics(
        &self,
        topics: Vec<String>,
    ) -> Result<Vec<(String, ItemResult<()>)>> {
        self.retrying(|| async {
            let conn = self.controller().await?;
            let version = conn.require_version(ApiKey::DeleteTopics)?;
            let mut request = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
            if version >= 6 {
                request.topics = topics
                    .iter()
                    .map(|t| DeleteTopicState::default().with_name(Some(topic_name(t))))
                    .collect();
            } else {
                request.topic_names = topics.iter().map(|t| topic_name(t)).collect();
            }
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::DeleteTopics,
                    RequestKind::DeleteTopics(request)
                )
                .await?,
                DeleteTopics
            );
            Ok(r.responses
                .iter()
                .map(|t| {
                    (
                        t.name.as_ref().map(|n| s(&n.0)).unwrap_or_default(),
                        AdminError::check(t.error_code, t.error_message.as_ref()),
                    )
                })
                .collect())
        })
        .await
    }

    /// Names of all topics (internal ones such as `__consumer_offsets` only if asked), sorted.
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<String>> {
        self.retrying(|| async {
            let m = self.metadata(None).await?;
            let mut names: Vec<String> = m
                .topics
                .iter()
                .filter(|t| t.error_code == 0 && (include_internal || !t.is_internal))
                .filter_map(|t| t.name.as_ref().map(|n| s(&n.0)))
                .collect();
            names.sort();
            Ok(names)
        })
        .await
    }

    /// Describes topics; one result per requested topic, in request order.
    pub async fn describe_topics(
        &self,
        topics: Vec<String>,
    ) -> Result<Vec<(String, ItemResult<TopicDescription>)>> {
        match self
            .retrying(|| self.describe_topic_partitions(&topics))
            .await
        {
            Err(Error::UnsupportedApi { .. }) => {}
            other => return other,
        }
        // A broker without DescribeTopicPartitions (KIP-966): Metadata, without the ELR.
        let m = self.retrying(|| self.metadata(Some(&topics))).await?;
        Ok(topics
            .iter()
            .map(|name| {
                let found = m
                    .topics
                    .iter()
                    .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name.as_str()));
                let result = match found {
                    None => Err(not_in_response(name)),
                    Some(t) if t.error_code != 0 => Err(topic_error(t.error_code, name)),
                    Some(t) => Ok(TopicDescription {
                        name: name.clone(),
                        topic_id: t.topic_id.to_string(),
                        internal: t.is_internal,
                        partitions: sorted(t.partitions.iter().map(|p| PartitionDescription {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            replicas: ids(&p.replica_nodes),
                            isr: ids(&p.isr_nodes),
                            elr: Vec::new(),
                            offline: ids(&p.offline_replicas),
                        })),
                    }),
                };
                (name.clone(), result)
            })
            .collect())
    }

    /// `topics` through DescribeTopicPartitions, following its cursor until every
    /// partition came (the broker answers at most a page of partitions at a time).
    async fn describe_topic_partitions(
        &self,
        topics: &[String],
    ) -> Result<Vec<(String, ItemResult<TopicDescription>)>> {
        use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
        use kafka_protocol::messages::DescribeTopicPartitionsRequest;
        let conn = self.cluster.any_connection().await?;
        let mut found: BTreeMap<String, ItemResult<TopicDescription>> = BTreeMap::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let request = DescribeTopicPartitionsRequest::default()
                .with_topics(
                    topics
                        .iter()
                        .map(|t| TopicRequest::default().with_name(topic_name(t)))
                        .collect(),
                )
                .with_response_partition_limit(2000)
                .with_cursor(cursor.take());
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::DescribeTopicPartitions,
                    RequestKind::DescribeTopicPartitions(request)
                )
                .await?,
                DescribeTopicPartitions
            );
            for t in &r.topics {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                if t.error_code != 0 {
                    found.insert(name.clone(), Err(topic_error(t.error_code, &name)));
                    continue;
                }
                let partitions = t.partitions.iter().map(|p| PartitionDescription {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: ids(&p.replica_nodes),
                    isr: ids(&p.isr_nodes),
                    elr: p
                        .eligible_leader_replicas
                        .as_deref()
                        .map(ids)
                        .unwrap_or_default(),
                    offline: ids(&p.offline_replicas),
                });
                let entry = found.entry(name.clone()).or_insert_with(|| {
                    Ok(TopicDescription {
                        name: name.clone(),
                        topic_id: t.topic_id.to_string(),
                        internal: t.is_internal,
                        partitions: Vec::new(),
                    })
                });
                if let Ok(d) = entry {
                    d.partitions.extend(partitions);
                }
            }
            match r.next_cursor {
                Some(next) => {
                    cursor = Some(
                        Cursor::default()
                            .with_topic_name(next.topic_name)
                            .with_partition_index(next.partition_index),
                    )
                }
                None => break,
            }
        }
        Ok(topics
            .iter()
            .map(|name| {
                let result = match found.remove(name) {
                    Some(Ok(mut d)) => {
                        d.partitions = sorted(d.partitions.into_iter());
                        Ok(d)
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(not_in_response(name)),
                };
                (name.clone(), result)
            })
            .collect())
    }

    /// Grows `topic` to `new_total` partitions.
    pub async fn create_partitions(&self, topic: &str, new_total: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(new_total)
                .with_assignments(None)])
            .with_timeout_ms(self.timeout_ms());
        self.retrying(|| async {
            let conn = self.controller().await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::CreatePartitions,
                    RequestKind::CreatePartitions(request.clone())
                )
                .await?,
                CreatePartitions
            );
            for t in &r.results {
                AdminError::check(t.error_code, t.error_message.as_ref())?;
            }
            Ok(())
        })
        .await
    }

    /// Elects leaders (ElectLeaders): `unclean` false for the preferred replica, true for
    /// any live replica of a partition without a leader; for `partitions` (`None`: every
    /// partition, where only those that needed an election are answered). One result per
    /// partition: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ... as Kafka's.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<(String, i32, ItemResult<()>)>> {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        use kafka_protocol::messages::ElectLeadersRequest;
        let topics = partitions.map(|ps| {
            by_topic(&ps.into_iter().map(|(t, p)| (t, p, ())).collect::<Vec<_>>())
                .into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic(topic_name(&t))
                        .with_partitions(ps.into_iter().map(|(p, ())| p).collect())
                })
                .collect()
        });
        let request = ElectLeadersRequest::default()
            .with_election_type(i8::from(unclean))
            .with_topic_partitions(topics)
            .with_timeout_ms(self.timeout_ms());
        self.retrying(|| async {
            let conn = self.controller().await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::ElectLeaders,
                    RequestKind::ElectLeaders(request.clone())
                )
                .await?,
                ElectLeaders
            );
            AdminError::check(r.error_code, None)?;
            Ok(r.replica_election_results
                .iter()
                .flat_map(|t| {
                    t.partition_result.iter().map(|p| {
                        (
                            t.topic.0.to_string(),
                            p.partition_id,
                            AdminError::check(p.error_code, p.error_message.as_ref()),
                        )
                    })
                })
                .collect())
        })
        .await
    }

    /// Starts, replaces or (target `None`) cancels partition reassignments
    /// (AlterPartitionReassignments); one result per partition, in request order.
    pub async fn alter_partition_reassignments(
        &self,
        items: Vec<(String, i32, Option<Vec<i32>>)>,
    ) -> Result<Vec<(String, i32, ItemResult<()>)>> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
        let topics = by_topic(&items)
            .into_iter()
            .map(|(t, ps)| {
                ReassignableTopic::default()
                    .with_name(topic_name(&t))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, target)| {
                                ReassignablePartition::default()
                                    .with_partition_index(p)
                                    .with_replicas(
                                        target.map(|r| r.into_iter().map(BrokerId).collect()),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(topics);
        self.retrying(|| async {
            let conn = self.controller().await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::AlterPartitionReassignments,
                    RequestKind::AlterPartitionReassignments(request.clone())
                )
                .await?,
                AlterPartitionReassignments
            );
            AdminError::check(r.error_code, r.error_message.as_ref())?;
            Ok(r.responses
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        (
                            t.name.0.to_string(),
                            p.partition_index,
                            AdminError::check(p.error_code, p.error_message.as_ref()),
                        )
                    })
                })
                .collect())
        })
        .await
    }

    /// The reassignments under way (ListPartitionReassignments), sorted by topic and
    /// partition.
    pub async fn list_partition_reassignments(&self) -> Result<Vec<OngoingReassignment>> {
        use kafka_protocol::messages::ListPartitionReassignmentsRequest;
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(None);
        self.retrying(|| async {
            let conn = self.controller().await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::ListPartitionReassignments,
                    RequestKind::ListPartitionReassignments(request.clone())
                )
                .await?,
                ListPartitionReassignments
            );
            AdminError::check(r.error_code, r.error_message.as_ref())?;
            let mut out: Vec<OngoingReassignment> = r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| OngoingReassignment {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        replicas: ids(&p.replicas),
                        adding: ids(&p.adding_replicas),
                        removing: ids(&p.removing_replicas),
                    })
                })
                .collect();
            out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            Ok(out)
        })
        .await
    }

    // --------------------------------------------------------------- configs

    async fn config_connection(&self, resource: &ConfigResource) -> Result<Arc<Connection>> {
        match resource {
            ConfigResource::Broker(id) => {
                let m = self.metadata(Some(&[])).await?;
                self.node_connection(&m, *id).await
            }
            ConfigResource::Topic(_) => self.cluster.any_connection().await,
        }
    }

    /// All config entries of `resource`.
    pub async fn describe_configs(&self, resource: ConfigResource) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource.kind())
                .with_resource_name(StrBytes::from_string(resource.name()))
                .with_configuration_keys(None),
        ]);
        self.retrying(|| async {
            let conn = self.config_connection(&resource).await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::DescribeConfigs,
                    RequestKind::DescribeConfigs(request.clone())
                )
                .await?,
                DescribeConfigs
            );
            let mut out = Vec::new();
            for res in &r.results {
                AdminError::check(res.error_code, res.error_message.as_ref())?;
                for c in &res.configs {
                    let source = ConfigSource::from_i8(c.config_source);
                    out.push(ConfigEntry {
                        name: s(&c.name),
                        value: c.value.as_ref().map(s),
                        source,
                        read_only: c.read_only,
                        is_default: source == ConfigSource::Default,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Applies `ops` to `resource` with IncrementalAlterConfigs.
    pub async fn alter_configs_incremental(
        &self,
        resource: ConfigResource,
        ops: Vec<AlterConfigOp>,
    ) -> Result<()> {
        let configs = ops
            .iter()
            .map(|op| {
                let (name, operation, value) = match op {
                    AlterConfigOp::Set(k, v) => (k, 0, Some(v)),
                    AlterConfigOp::Delete(k) => (k, 1, None),
                    AlterConfigOp::Append(k, v) => (k, 2, Some(v)),
                    AlterConfigOp::Subtract(k, v) => (k, 3, Some(v)),
                };
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_config_operation(operation)
                    .with_value(value.map(|v| StrBytes::from_string(v.clone())))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource.kind())
                .with_resource_name(StrBytes::from_string(resource.name()))
                .with_configs(configs),
        ]);
        self.retrying(|| async {
            let conn = self.config_connection(&resource).await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::IncrementalAlterConfigs,
                    RequestKind::IncrementalAlterConfigs(request.clone())
                )
                .await?,
                IncrementalAlterConfigs
            );
            for res in &r.responses {
                AdminError::check(res.error_code, res.error_message.as_ref())?;
            }
            Ok(())
        })
        .await
    }

    // --------------------------------------------------------------- cluster

    /// Cluster id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        self.retrying(|| async {
            let conn = self.cluster.any_connection().await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::DescribeCluster,
                    RequestKind::DescribeCluster(DescribeClusterRequest::default())
                )
                .await?,
                DescribeCluster
            );
            AdminError::check(r.error_code, r.error_message.as_ref())?;
            let mut brokers: Vec<(i32, String, i32)> = r
                .brokers
                .iter()
                .map(|b| (b.broker_id.0, s(&b.host), b.port))
                .collect();
            brokers.sort();
            Ok(ClusterDescription {
                cluster_id: s(&r.cluster_id),
                controller_id: r.controller_id.0,
                brokers,
            })
        })
        .await
    }

    // ---------------------------------------------------------------- groups

    /// Groups known to any broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.retrying(|| async {
            let m = self.metadata(Some(&[])).await?;
            let mut out: Vec<GroupListing> = Vec::new();
            for b in &m.brokers {
                let conn = self.node_connection(&m, b.node_id.0).await?;
                let r = expect_response!(
                    call(
                        &conn,
                        ApiKey::ListGroups,
                        RequestKind::ListGroups(ListGroupsRequest::default())
                    )
                    .await?,
                    ListGroups
                );
                AdminError::check(r.error_code, None)?;
                for g in &r.groups {
                    let id = s(&g.group_id.0);
                    if out.iter().all(|o| o.group_id != id) {
                        out.push(GroupListing {
                            group_id: id,
                            state: s(&g.group_state),
                            protocol_type: s(&g.protocol_type),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            Ok(out)
        })
        .await
    }

    async fn describe_group(&self, group: &str) -> Result<ItemResult<GroupDescription>> {
        self.retrying(|| async {
            let conn = self.coordinator(group).await?;
            let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::DescribeGroups,
                    RequestKind::DescribeGroups(request)
                )
                .await?,
                DescribeGroups
            );
            let g = r
                .groups
                .into_iter()
                .next()
                .ok_or_else(|| Error::Protocol("DescribeGroups returned no group".into()))?;
            if is_coordinator_code(g.error_code) {
                return Err(
                    AdminError::from_code(g.error_code, g.error_message.map(|m| s(&m)))
                        .expect("non-zero code")
                        .into(),
                );
            }
            if let Err(e) = AdminError::check(g.error_code, g.error_message.as_ref()) {
                return Ok(Err(e));
            }
            let consumer = g.protocol_type.as_str() == "consumer";
            let mut members = Vec::new();
            for m in &g.members {
                let mut assignment = Vec::new();
                let mut buf = m.member_assignment.clone();
                if consumer && buf.len() >= 2 {
                    let version = buf.get_i16();
                    let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
                        .map_err(|e| Error::Protocol(format!("cannot decode assignment: {e}")))?;
                    for t in a.assigned_partitions {
                        for p in t.partitions {
                            assignment.push((s(&t.topic.0), p));
                        }
                    }
                    assignment.sort();
                }
                members.push(MemberDescription {
                    member_id: s(&m.member_id),
                    group_instance_id: m.group_instance_id.as_ref().map(s),
                    client_id: s(&m.client_id),
                    client_host: s(&m.client_host),
                    assignment,
                });
            }
            Ok(Ok(GroupDescription {
                group_id: s(&g.group_id.0),
                state: s(&g.group_state),
                protocol_type: s(&g.protocol_type),
                protocol: s(&g.protocol_data),
                members,
            }))
        })
        .await
    }

    /// Describes groups (each at its coordinator); one result per group, in request order.
    /// A group the coordinator does not know is `GROUP_ID_NOT_FOUND`, including one the
    /// broker reports without an error but in state `Dead` (as Kafka's admin client does).
    pub async fn describe_groups(
        &self,
        groups: Vec<String>,
    ) -> Result<Vec<(String, ItemResult<GroupDescription>)>> {
        let mut out = Vec::new();
        for g in groups {
            let mut result = self.describe_group(&g).await?;
            if matches!(&result, Ok(d) if d.state == "Dead") {
                result = Err(AdminError::from_code(
                    ResponseError::GroupIdNotFound.code(),
                    Some(format!("group {g} does not exist")),
                )
                .expect("non-zero code"));
            }
            out.push((g, result));
        }
        Ok(out)
    }

    /// Deletes groups (each at its coordinator); one result per group.
    pub async fn delete_groups(
        &self,
        groups: Vec<String>,
    ) -> Result<Vec<(String, ItemResult<()>)>> {
        let mut out = Vec::new();
        for g in groups {
            let result = self
                .retrying(|| async {
                    let conn = self.coordinator(&g).await?;
                    let request =
                        DeleteGroupsRequest::default().with_groups_names(vec![group_id(&g)]);
                    let r = expect_response!(
                        call(
                            &conn,
                            ApiKey::DeleteGroups,
                            RequestKind::DeleteGroups(request)
                        )
                        .await?,
                        DeleteGroups
                    );
                    let code = r.results.first().map(|x| x.error_code).unwrap_or(0);
                    if is_coordinator_code(code) {
                        return Err(Error::from(
                            AdminError::from_code(code, None).expect("non-zero code"),
                        ));
                    }
                    Ok(
                        match AdminError::from_code(code, Some(format!("group {g}"))) {
                            Some(e) => Err(e),
                            None => Ok(()),
                        },
                    )
                })
                .await?;
            out.push((g, result));
        }
        Ok(out)
    }

    /// Committed offsets of `group`: `(topic, partition, offset, metadata)`, sorted.
    pub async fn list_consumer_group_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(String, i32, i64, Option<String>)>> {
        self.retrying(|| async {
            let conn = self.coordinator(group).await?;
            let request = OffsetFetchRequest::default()
                .with_group_id(group_id(group))
                .with_topics(None);
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::OffsetFetch,
                    RequestKind::OffsetFetch(request)
                )
                .await?,
                OffsetFetch
            );
            if let Some(e) = AdminError::from_code(r.error_code, Some(format!("group {group}"))) {
                return Err(e.into());
            }
            let mut out = Vec::new();
            for t in &r.topics {
                for p in &t.partitions {
                    let what = format!("{}-{}", t.name.as_str(), p.partition_index);
                    if let Some(e) = AdminError::from_code(p.error_code, Some(what)) {
                        return Err(e.into());
                    }
                    if p.committed_offset >= 0 {
                        out.push((
                            s(&t.name.0),
                            p.partition_index,
                            p.committed_offset,
                            p.metadata.as_ref().map(s),
                        ));
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    /// Commits offsets for `group` as an admin (generation -1, no member id): the broker
    /// accepts this only for groups without members; otherwise its error is returned per
    /// partition.
    pub async fn alter_consumer_group_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, i32, i64)>,
    ) -> Result<Vec<(String, i32, ItemResult<()>)>> {
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(offset_commit_topics(&offsets));
        self.retrying(|| async {
            let conn = self.coordinator(group).await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::OffsetCommit,
                    RequestKind::OffsetCommit(request.clone())
                )
                .await?,
                OffsetCommit
            );
            let mut out = Vec::new();
            for t in &r.topics {
                for p in &t.partitions {
                    if is_coordinator_code(p.error_code) {
                        return Err(Error::from(
                            AdminError::from_code(p.error_code, None).expect("non-zero code"),
                        ));
                    }
                    let what = format!("group {group}, {}-{}", t.name.as_str(), p.partition_index);
                    let result = match AdminError::from_code(p.error_code, Some(what)) {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                    out.push((s(&t.name.0), p.partition_index, result));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Deletes committed offsets of `group` (OffsetDelete). A group-level error (e.g.
    /// `GROUP_ID_NOT_FOUND`) fails the call; partition-level errors (e.g.
    /// `GROUP_SUBSCRIBED_TO_TOPIC`) are per item.
    pub async fn delete_consumer_group_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, ItemResult<()>)>> {
        let items: Vec<(String, i32, ())> =
            partitions.into_iter().map(|(t, p)| (t, p, ())).collect();
        let topics = by_topic(&items)
            .into_iter()
            .map(|(t, ps)| {
                OffsetDeleteRequestTopic::default()
                    .with_name(topic_name(&t))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, _)| {
                                OffsetDeleteRequestPartition::default().with_partition_index(p)
                            })
                            .collect(),
                    )
            })
            .collect();
        let request = OffsetDeleteRequest::default()
            .with_group_id(group_id(group))
            .with_topics(topics);
        self.retrying(|| async {
            let conn = self.coordinator(group).await?;
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::OffsetDelete,
                    RequestKind::OffsetDelete(request.clone())
                )
                .await?,
                OffsetDelete
            );
            if let Some(e) = AdminError::from_code(r.error_code, Some(format!("group {group}"))) {
                return Err(e.into());
            }
            let mut out = Vec::new();
            for t in &r.topics {
                for p in &t.partitions {
                    let what = format!("group {group}, {}-{}", t.name.as_str(), p.partition_index);
                    let result = match AdminError::from_code(p.error_code, Some(what)) {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                    out.push((s(&t.name.0), p.partition_index, result));
                }
            }
            Ok(out)
        })
        .await
    }

    // --------------------------------------------------------------- offsets

    /// Leaders of `(topic, partition)` items, with a per-item error for unknown ones.
    async fn leaders<V: Clone>(
        &self,
        items: &[(String, i32, V)],
    ) -> Result<(MetadataResponse, Vec<ItemResult<i32>>)> {
        let mut topics: Vec<String> = items.iter().map(|(t, _, _)| t.clone()).collect();
        topics.sort();
        topics.dedup();
        let m = self.metadata(Some(&topics)).await?;
        let leaders = items
            .iter()
            .map(|(t, p, _)| {
                let what = Some(format!("{t}-{p}"));
                let topic = m
                    .topics
                    .iter()
                    .find(|mt| mt.name.as_ref().map(|n| n.0.as_str()) == Some(t.as_str()));
                let unknown = || {
                    AdminError::from_code(
                        ResponseError::UnknownTopicOrPartition.code(),
                        what.clone(),
                    )
                    .expect("non-zero code")
                };
                match topic {
                    None => Err(unknown()),
                    Some(mt) if mt.error_code != 0 => {
                        Err(AdminError::from_code(mt.error_code, what.clone()).expect("non-zero"))
                    }
                    Some(mt) => match mt.partitions.iter().find(|mp| mp.partition_index == *p) {
                        None => Err(unknown()),
                        Some(mp) if mp.leader_id.0 < 0 => Err(AdminError::from_code(
                            ResponseError::LeaderNotAvailable.code(),
                            what.clone(),
                        )
                        .expect("non-zero code")),
                        Some(mp) => Ok(mp.leader_id.0),
                    },
                }
            })
            .collect();
        Ok((m, leaders))
    }

    /// Sends `(topic, partition, value)` items to their partition leaders, one request per
    /// node, and returns one result per item in request order. Shared by the per-partition
    /// admin calls (ListOffsets, DeleteRecords) so that leader lookup, retries on retriable
    /// partition errors and "no answer" reporting behave the same for all of them.
    ///
    /// `send` builds, sends and decodes one node's request and returns each answered
    /// partition as `(topic, partition, error_code, value)`; `value` is ignored when
    /// `error_code` is non-zero.
    async fn per_leader<V, R, F, Fut>(
        &self,
        requests: &[(String, i32, V)],
        send: F,
    ) -> Result<Vec<(String, i32, ItemResult<R>)>>
    where
        V: Clone,
        R: Clone,
        F: Fn(Arc<Connection>, Vec<(String, i32, V)>) -> Fut,
        Fut: Future<Output = Result<Vec<(String, i32, i16, R)>>>,
    {
        self.retrying(|| async {
            let (m, leaders) = self.leaders(requests).await?;
            let mut results: HashMap<(String, i32), ItemResult<R>> = HashMap::new();
            let mut per_node: HashMap<i32, Vec<(String, i32, V)>> = HashMap::new();
            for (item, leader) in requests.iter().zip(&leaders) {
                match leader {
                    Ok(node) => per_node.entry(*node).or_default().push(item.clone()),
                    Err(e) => {
                        results.insert((item.0.clone(), item.1), Err(e.clone()));
                    }
                }
            }
            for (node, items) in per_node {
                let conn = self.node_connection(&m, node).await?;
                for (topic, partition, code, value) in send(conn, items).await? {
                    let what = format!("{topic}-{partition}");
                    let result = match AdminError::from_code(code, Some(what)) {
                        Some(e) if e.response_error().is_retriable() => return Err(e.into()),
                        Some(e) => Err(e),
                        None => Ok(value),
                    };
                    results.insert((topic, partition), result);
                }
            }
            Ok(requests
                .iter()
                .map(|(t, p, _)| {
                    let result = results.get(&(t.clone(), *p)).cloned().unwrap_or_else(|| {
                        Err(AdminError {
                            code: -1,
                            name: "UNKNOWN_SERVER_ERROR".into(),
                            message: Some(format!("no answer for {t}-{p}")),
                        })
                    });
                    (t.clone(), *p, result)
                })
                .collect())
        })
        .await
    }

    /// Offsets per `(topic, partition, spec)`: `(topic, partition, Ok((offset, timestamp)))`
    /// in request order. A spec with no matching record yields offset -1.
    pub async fn list_offsets(
        &self,
        requests: Vec<(String, i32, OffsetSpec)>,
    ) -> Result<Vec<(String, i32, ItemResult<(i64, i64)>)>> {
        self.per_leader(&requests, |conn, items| async move {
            let items: Vec<(String, i32, i64)> = items
                .into_iter()
                .map(|(t, p, spec)| (t, p, spec.timestamp()))
                .collect();
            let topics = list_offsets_topics(&items);
            let request = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(topics);
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::ListOffsets,
                    RequestKind::ListOffsets(request)
                )
                .await?,
                ListOffsets
            );
            Ok(r.topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        (
                            s(&t.name.0),
                            p.partition_index,
                            p.error_code,
                            (p.offset, p.timestamp),
                        )
                    })
                })
                .collect())
        })
        .await
    }

    /// Deletes records before the given offsets (-1: the high watermark); returns the new
    /// low watermark per partition, in request order.
    pub async fn delete_records(
        &self,
        requests: Vec<(String, i32, i64)>,
    ) -> Result<Vec<(String, i32, ItemResult<i64>)>> {
        self.per_leader(&requests, |conn, items| async move {
            let topics = by_topic(&items)
                .into_iter()
                .map(|(t, ps)| {
                    DeleteRecordsTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o)| {
                                    DeleteRecordsPartition::default()
                                        .with_partition_index(p)
                                        .with_offset(o)
                                })
                                .collect(),
                        )
                })
                .collect();
            let request = DeleteRecordsRequest::default()
                .with_topics(topics)
                .with_timeout_ms(self.timeout_ms());
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::DeleteRecords,
                    RequestKind::DeleteRecords(request)
                )
                .await?,
                DeleteRecords
            );
            Ok(r.topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        (
                            s(&t.name.0),
                            p.partition_index,
                            p.error_code,
                            p.low_watermark,
                        )
                    })
                })
                .collect())
        })
        .await
    }

    // ---------------------------------------------------------- transactions

    /// Transactions known to any broker (ListTransactions sent to every broker, answers
    /// merged), sorted by transactional id. Empty filters match everything.
    pub async fn list_transactions(
        &self,
        filter: ListTransactionsFilter,
    ) -> Result<TransactionListings> {
        self.retrying(|| async {
            let m = self.metadata(Some(&[])).await?;
            let mut listed: BTreeMap<String, TransactionListing> = BTreeMap::new();
            let mut unknown: BTreeSet<String> = BTreeSet::new();
            for b in &m.brokers {
                let conn = self.node_connection(&m, b.node_id.0).await?;
                let version = conn.require_version(ApiKey::ListTransactions)?;
                let mut request = ListTransactionsRequest::default()
                    .with_state_filters(
                        filter
                            .states
                            .iter()
                            .map(|f| StrBytes::from_string(f.clone()))
                            .collect(),
                    )
                    .with_producer_id_filters(
                        filter.producer_ids.iter().map(|p| ProducerId(*p)).collect(),
                    );
                if let Some(ms) = filter.min_duration_ms {
                    if version < 1 {
                        return Err(Error::UnsupportedApi {
                            addr: conn.addr().to_string(),
                            api: "ListTransactions v1 (the duration filter)".into(),
                        });
                    }
                    request.duration_filter = ms;
                }
                let r = expect_response!(
                    call(
                        &conn,
                        ApiKey::ListTransactions,
                        RequestKind::ListTransactions(request)
                    )
                    .await?,
                    ListTransactions
                );
                AdminError::check(r.error_code, None)?;
                unknown.extend(r.unknown_state_filters.iter().map(s));
                for t in &r.transaction_states {
                    let id = s(&t.transactional_id.0);
                    listed.entry(id.clone()).or_insert(TransactionListing {
                        transactional_id: id,
                        producer_id: t.producer_id.0,
                        state: s(&t.transaction_state),
                    });
                }
            }
            Ok(TransactionListings {
                transactions: listed.into_values().collect(),
                unknown_state_filters: unknown.into_iter().collect(),
            })
        })
        .await
    }

    /// Describes transactional ids, each at its transaction coordinator (FindCoordinator
    /// key type 1, one DescribeTransactions per coordinator); one result per id, in request
    /// order. An id the coordinator does not know is `TRANSACTIONAL_ID_NOT_FOUND`.
    pub async fn describe_transactions(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, ItemResult<TransactionDescription>)>> {
        self.retrying(|| async {
            let mut results: HashMap<String, ItemResult<TransactionDescription>> = HashMap::new();
            let mut per_coordinator: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for id in &ids {
                if results.contains_key(id) || per_coordinator.values().any(|v| v.contains(id)) {
                    continue;
                }
                match self.cluster.find_coordinator(id, 1).await {
                    Ok(addr) => per_coordinator.entry(addr).or_default().push(id.clone()),
                    Err(e) if e.is_retriable() => return Err(e),
                    Err(e) => match item_error(&e) {
                        Some(ae) => {
                            results.insert(id.clone(), Err(ae));
                        }
                        None => return Err(e),
                    },
                }
            }
            for (addr, batch) in per_coordinator {
                let conn = self.cluster.connection(&addr).await?;
                let request = DescribeTransactionsRequest::default().with_transactional_ids(
                    batch
                        .iter()
                        .map(|id| TransactionalId(StrBytes::from_string(id.clone())))
                        .collect(),
                );
                let r = expect_response!(
                    call(
                        &conn,
                        ApiKey::DescribeTransactions,
                        RequestKind::DescribeTransactions(request)
                    )
                    .await?,
                    DescribeTransactions
                );
                for t in &r.transaction_states {
                    let id = s(&t.transactional_id.0);
                    let what = Some(format!("transactional id {id}"));
                    let result = match AdminError::from_code(t.error_code, what) {
                        // Moved, loading or mid-transition: ask again.
                        Some(e)
                            if is_coordinator_code(t.error_code)
                                || e.response_error().is_retriable() =>
                        {
                            return Err(e.into())
                        }
                        Some(e) => Err(e),
                        None => {
                            let mut partitions: Vec<(String, i32)> = t
                                .topics
                                .iter()
                                .flat_map(|td| td.partitions.iter().map(|p| (s(&td.topic.0), *p)))
                                .collect();
                            partitions.sort();
                            Ok(TransactionDescription {
                                transactional_id: id.clone(),
                                state: s(&t.transaction_state),
                                producer_id: t.producer_id.0,
                                producer_epoch: t.producer_epoch,
                                timeout_ms: t.transaction_timeout_ms,
                                start_time_ms: Some(t.transaction_start_time_ms)
                                    .filter(|ms| *ms >= 0),
                                partitions,
                            })
                        }
                    };
                    results.insert(id, result);
                }
            }
            Ok(ids
                .iter()
                .map(|id| {
                    let result = results.get(id).cloned().unwrap_or_else(|| {
                        Err(AdminError {
                            code: -1,
                            name: "UNKNOWN_SERVER_ERROR".into(),
                            message: Some(format!("no answer for transactional id {id}")),
                        })
                    });
                    (id.clone(), result)
                })
                .collect())
        })
        .await
    }

    /// Active producers of each `(topic, partition)` (DescribeProducers at the partition's
    /// leader), sorted by producer id; one result per partition, in request order.
    pub async fn describe_producers(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, ItemResult<Vec<ProducerStateDescription>>)>> {
        let items: Vec<(String, i32, ())> =
            partitions.into_iter().map(|(t, p)| (t, p, ())).collect();
        self.per_leader(&items, |conn, items| async move {
            let topics = by_topic(&items)
                .into_iter()
                .map(|(t, ps)| {
                    DescribeProducersTopic::default()
                        .with_name(topic_name(&t))
                        .with_partition_indexes(ps.into_iter().map(|(p, _)| p).collect())
                })
                .collect();
            let request = DescribeProducersRequest::default().with_topics(topics);
            let r = expect_response!(
                call(
                    &conn,
                    ApiKey::DescribeProducers,
                    RequestKind::DescribeProducers(request)
                )
                .await?,
                DescribeProducers
            );
            Ok(r.topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        let mut producers: Vec<ProducerStateDescription> = p
                            .active_producers
                            .iter()
                            .map(|a| ProducerStateDescription {
                                producer_id: a.producer_id.0,
                                producer_epoch: a.producer_epoch,
                                last_sequence: a.last_sequence,
                                last_timestamp: a.last_timestamp,
                                coordinator_epoch: Some(a.coordinator_epoch).filter(|e| *e >= 0),
                                current_txn_start_offset: Some(a.current_txn_start_offset)
                                    .filter(|o| *o >= 0),
                            })
                            .collect();
                        producers.sort_by_key(|x| x.producer_id);
                        (s(&t.name.0), p.partition_index, p.error_code, producers)
                    })
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafka_style() {
        assert_eq!(
            error_name(ResponseError::TopicAlreadyExists),
            "TOPIC_ALREADY_EXISTS"
        );
        assert_eq!(
            error_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        let e = AdminError::from_code(37, Some("bad".into())).unwrap();
        assert_eq!(e.name, "INVALID_PARTITIONS");
        assert_eq!(e.to_string(), "INVALID_PARTITIONS: bad");
        assert!(AdminError::from_code(0, None).is_none());
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let c = ClientConfig::from_pairs([("bootstrap.servers", "h:1"), ("acks", "1")]);
        assert_eq!(
            AdminConfig::from_config(&c).unwrap_err(),
            ConfigError::Unknown("acks".into())
        );
        let c =
            ClientConfig::from_pairs([("bootstrap.servers", "h:1"), ("request.timeout.ms", "x")]);
        assert!(AdminConfig::from_config(&c)
            .unwrap_err()
            .to_string()
            .contains("`request.timeout.ms`"));
        let c = ClientConfig::from_pairs([("bootstrap.servers", "h:1")]);
        let a = AdminConfig::from_config(&c).unwrap();
        assert_eq!(a.default_api_timeout, Duration::from_secs(60));
        assert_eq!(a.request_timeout, Duration::from_secs(30));
    }
}
