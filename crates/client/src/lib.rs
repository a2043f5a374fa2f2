//! Gregor's native Rust client.
//!
//! * [`connection`]: one pipelined TCP connection with ApiVersions negotiation.
//! * [`metadata`]: bootstrap servers, a metadata cache and a pool of connections.
//! * [`producer`]: an asynchronous, batching, idempotent producer, transactional with
//!   `transactional.id`.
//! * [`serialization`]: key/value [`Serializer`]s and [`Deserializer`]s (bytes, string, and
//!   JSON with the `json` feature) for typed producers and consumers.
//! * [`interceptor`]: the [`ProducerInterceptor`] trait (on-send and on-acknowledgement hooks).
//! * [`partitioner`]: the [`Partitioner`] trait, the default (murmur2 / sticky) and
//!   round-robin partitioners.
//! * [`admin`]: the admin client (topics, configs, cluster, groups, offsets, records,
//!   transactions and producer states).
//! * [`consumer`]: a consumer (manual assignment, or group subscription to topics or a
//!   pattern with range / round-robin / cooperative-sticky assignors and a
//!   [`RebalanceListener`]; committed offsets; `isolation.level=read_committed`).

pub mod admin;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod interceptor;
pub mod metadata;
pub mod partitioner;
pub mod producer;
pub mod serialization;

mod accumulator;
mod in_flight;
mod record;
mod requests;
mod sender;

pub use admin::{
    AdminClient, AdminConfig, AdminError, AlterConfigOp, ClusterDescription, ConfigEntry,
    ConfigResource, ConfigSource, GroupDescription, GroupListing, ItemResult,
    ListTransactionsFilter, MemberDescription, NewTopic, OffsetSpec, OngoingReassignment,
    PartitionDescription, ProducerStateDescription, TopicDescription, TransactionDescription,
    TransactionListing, TransactionListings,
};
pub use config::{ClientConfig, ProducerConfig};
pub use consumer::{
    Assignor, Consumer, ConsumerConfig, ConsumerGroupMetadata, ConsumerRecord, OffsetReset,
    RebalanceListener, TopicPartition,
};
pub use error::{ConfigError, Error};
pub use interceptor::ProducerInterceptor;
pub use partitioner::{murmur2, DefaultPartitioner, Partitioner, RoundRobinPartitioner};
pub use producer::{
    DeliveryFuture, Producer, ProducerBuilder, ProducerMetrics, ProducerRecord, RecordMetadata,
};
pub use serialization::{
    BytesDeserializer, BytesSerializer, Deserializer, Serializer, StringDeserializer,
    StringSerializer,
};
#[cfg(feature = "json")]
pub use serialization::{JsonDeserializer, JsonSerializer};
