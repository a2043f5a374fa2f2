//! The records of the metadata log: each one is a single, self-contained change.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which entity a config record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
}

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A broker announced itself with its advertised endpoint.
    RegisterBroker {
        node_id: i32,
        host: String,
        port: u16,
        rack: Option<String>,
    },
    /// A topic exists with this name and id (its partitions follow as `Partition` records).
    Topic { name: String, topic_id: Uuid },
    /// A partition's assignment and leadership.
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
    },
    /// A config key set (`Some`) or removed back to its default (`None`).
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// A topic and all its partitions and configs are gone.
    RemoveTopic { topic_id: Uuid },
    /// Producer ids below `next_block_start` are handed out; never reuse them.
    ProducerIds { next_block_start: i64 },
}
