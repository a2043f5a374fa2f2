//! The records of the metadata log: each one is a single, self-contained change, with a
//! version, grouped into batches that carry their log offset and leader epoch.
//!
//! The record types follow Kafka's KRaft records (`RegisterBrokerRecord`, `FenceBrokerRecord`,
//! `UnfenceBrokerRecord`, `TopicRecord`, `PartitionRecord`, `PartitionChangeRecord`,
//! `ConfigRecord`, `RemoveTopicRecord`, `ProducerIdsRecord`). Each is stored as `{"type": ..., "version": N, fields...}`; records
//! written before versions existed have no `version` and read as version 0. A record of a
//! version newer than this release knows is refused rather than misread.

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
    /// A broker process announced itself with its advertised endpoint. Version 1 adds the
    /// process's incarnation id, the broker epoch and whether it is fenced (a new
    /// registration is fenced until the broker has caught up with the metadata log).
    RegisterBroker {
        node_id: i32,
        host: String,
        port: u16,
        rack: Option<String>,
        /// Random per broker process; nil in version 0.
        #[serde(default)]
        incarnation_id: Uuid,
        /// The broker epoch; `None` when written by the controller, where it is the offset
        /// of this record (as in Kafka). A snapshot writes it out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broker_epoch: Option<i64>,
        /// Version 0 brokers were live.
        #[serde(default)]
        fenced: bool,
    },
    /// The broker stopped heartbeating (or asked to be): its replicas are offline.
    FenceBroker { node_id: i32, broker_epoch: i64 },
    /// The broker is heartbeating and has caught up with the metadata log.
    UnfenceBroker { node_id: i32, broker_epoch: i64 },
    /// A topic exists with this name and id (its partitions follow as `Partition` records).
    Topic { name: String, topic_id: Uuid },
    /// A partition's full assignment and leadership (creation, or a complete restatement).
    /// Version 1 adds `partition_epoch` (0 when read from version 0); version 2 the eligible
    /// leader replicas (KIP-966; empty when read from older versions); version 3 the
    /// replicas a reassignment is adding and removing (KIP-455; empty before).
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        #[serde(default)]
        partition_epoch: i32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        elr: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding_replicas: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing_replicas: Vec<i32>,
    },
    /// A change to an existing partition; `None` fields are unchanged. A new leader bumps the
    /// leader epoch; every change bumps the partition epoch (as Kafka's
    /// `PartitionChangeRecord`). Version 1 adds the eligible leader replicas; version 2 the
    /// replicas a reassignment is adding and removing.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isr: Option<Vec<i32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replicas: Option<Vec<i32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elr: Option<Vec<i32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adding_replicas: Option<Vec<i32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        removing_replicas: Option<Vec<i32>>,
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
    /// The cluster's id, written once by the first active controller; every node's
    /// `meta.properties` must name the same.
    ClusterId { cluster_id: String },
}

impl MetadataRecord {
    /// The version of this record type that this release writes (and the newest it reads).
    pub fn current_version(&self) -> u16 {
        match self {
            MetadataRecord::Partition { .. } => 3,
            MetadataRecord::PartitionChange { .. } => 2,
            MetadataRecord::RegisterBroker { .. } => 1,
            MetadataRecord::FenceBroker { .. }
            | MetadataRecord::UnfenceBroker { .. }
            | MetadataRecord::Topic { .. }
            | MetadataRecord::Config { .. }
            | MetadataRecord::RemoveTopic { .. }
            | MetadataRecord::ProducerIds { .. }
            | MetadataRecord::ClusterId { .. } => 0,
        }
    }

    /// A new partition with `replicas`, all in the ISR, led by the first at epoch 0.
    pub fn new_partition(topic_id: Uuid, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
        assert!(!replicas.is_empty(), "a partition has replicas");
        MetadataRecord::Partition {
            topic_id,
            partition,
            leader: replicas[0],
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            elr: Vec::new(),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// The record type's name, as in logs and errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetadataRecord::RegisterBroker { .. } => "RegisterBroker",
            MetadataRecord::FenceBroker { .. } => "FenceBroker",
            MetadataRecord::UnfenceBroker { .. } => "UnfenceBroker",
            MetadataRecord::Topic { .. } => "Topic",
            MetadataRecord::Partition { .. } => "Partition",
            MetadataRecord::PartitionChange { .. } => "PartitionChange",
            MetadataRecord::Config { .. } => "Config",
            MetadataRecord::RemoveTopic { .. } => "RemoveTopic",
            MetadataRecord::ProducerIds { .. } => "ProducerIds",
            MetadataRecord::ClusterId { .. } => "ClusterId",
        }
    }
}

/// A record as stored: its version beside its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    #[serde(default)]
    pub version: u16,
    #[serde(flatten)]
    pub record: MetadataRecord,
}

impl StoredRecord {
    /// `record` at the version this release writes.
    pub fn current(record: MetadataRecord) -> StoredRecord {
        StoredRecord {
            version: record.current_version(),
            record,
        }
    }

    /// The record, if its version is one this release understands.
    pub fn into_known(self) -> Result<MetadataRecord, String> {
        if self.version > self.record.current_version() {
            return Err(format!(
                "{} record of version {} is newer than this release reads (up to {})",
                self.record.type_name(),
                self.version,
                self.record.current_version()
            ));
        }
        Ok(self.record)
    }
}

/// Records appended (and applied) as one unit, at a position of the metadata log.
///
/// Invariant: the records take offsets `base_offset ..= last_offset()`, one each, and the
/// batch directly follows the one before it in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataBatch {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Epoch of the controller (leader) that appended the batch.
    pub epoch: i32,
    pub records: Vec<MetadataRecord>,
}

impl MetadataBatch {
    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        assert!(!self.records.is_empty(), "a metadata batch is never empty");
        self.base_offset + self.records.len() as i64 - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unversioned_records_read_as_version_zero() {
        let old = r#"{"type":"Partition","topic_id":"7abbeb48-d304-4cfc-9230-59a4a5ea3355","partition":0,"replicas":[1],"isr":[1],"leader":1,"leader_epoch":0}"#;
        let stored: StoredRecord = serde_json::from_str(old).unwrap();
        assert_eq!(stored.version, 0);
        match stored.into_known().unwrap() {
            MetadataRecord::Partition {
                partition_epoch, ..
            } => assert_eq!(partition_epoch, 0),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn current_records_round_trip_with_their_version() {
        let record = MetadataRecord::PartitionChange {
            topic_id: Uuid::new_v4(),
            partition: 3,
            leader: Some(2),
            isr: Some(vec![2, 3]),
            replicas: None,
            elr: None,
            adding_replicas: None,
            removing_replicas: None,
        };
        let text = serde_json::to_string(&StoredRecord::current(record.clone())).unwrap();
        assert!(text.contains(r#""version":2"#), "{text}");
        assert!(
            !text.contains("replicas"),
            "unchanged fields are not written: {text}"
        );
        let back: StoredRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.into_known().unwrap(), record);
    }

    #[test]
    fn newer_versions_are_refused() {
        let text = r#"{"type":"Topic","version":9,"name":"t","topic_id":"7abbeb48-d304-4cfc-9230-59a4a5ea3355"}"#;
        let stored: StoredRecord = serde_json::from_str(text).unwrap();
        let err = stored.into_known().unwrap_err();
        assert!(err.contains("Topic record of version 9"), "{err}");
    }
}
