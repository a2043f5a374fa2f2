//! Gregor's native Rust client.
//!
//! * [`connection`]: one pipelined TCP connection with ApiVersions negotiation.
//! * [`metadata`]: bootstrap servers, a metadata cache and a pool of connections.
//! * [`producer`]: an asynchronous, batching, idempotent producer.
//! * [`partitioner`]: the [`Partitioner`] trait, the default (murmur2 / sticky) and
//!   round-robin partitioners.
//! * [`admin`]: the admin client (topics, configs, cluster, groups, offsets, records).
//! * [`consumer`]: a consumer (manual assignment or group subscription, committed offsets).

pub mod admin;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod metadata;
pub mod partitioner;
pub mod producer;

mod accumulator;
mod requests;
mod sender;

pub use admin::{
    AdminClient, AdminConfig, AdminError, AlterConfigOp, ClusterDescription, ConfigEntry,
    ConfigResource, ConfigSource, GroupDescription, GroupListing, ItemResult, MemberDescription,
    NewTopic, OffsetSpec, PartitionDescription, TopicDescription,
};
pub use config::{ClientConfig, ProducerConfig};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
pub use error::{ConfigError, Error};
pub use partitioner::{murmur2, DefaultPartitioner, Partitioner, RoundRobinPartitioner};
pub use producer::{DeliveryFuture, Producer, ProducerMetrics, ProducerRecord, RecordMetadata};
