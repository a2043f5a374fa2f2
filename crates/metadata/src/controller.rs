//! The single-node controller: validates admin requests and turns them into metadata records.
//!
//! It is the only writer of the metadata log. Writing and applying are two steps: the
//! controller validates a change against its own image, appends the batch (durably), and
//! queues the committed batch; brokers take the queue ([`Controller::take_committed`]) and
//! apply it to their own images. With a replicated quorum, "appended" becomes "replicated to
//! a majority" and the queue becomes the quorum's commit stream; the validation stays.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use crate::config::validate_topic_config;
use crate::image::MetadataImage;
use crate::log::{MetadataLog, MetadataLogError};
use crate::record::{ConfigResource, MetadataBatch, MetadataRecord};

/// Longest legal topic name, as in Kafka.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;

/// Why the controller refused a change. Each maps to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    UnknownTopic(String),
    /// The controller built records that do not apply to its own image: a bug, not the
    /// client's fault.
    #[error("internal controller error: {0}")]
    Internal(String),
    #[error(transparent)]
    Log(#[from] MetadataLogError),
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let err = |why: &str| {
        Err(ControllerError::InvalidTopic(format!(
            "topic name '{name}' is illegal: {why}"
        )))
    };
    if name.is_empty() {
        return err("it is empty");
    }
    if name == "." || name == ".." {
        return err("'.' and '..' are not allowed");
    }
    if name.chars().count() > TOPIC_NAME_MAX_CHARS {
        return err("it is longer than 249 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return err("it may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The single-node controller and the metadata log it owns.
pub struct Controller {
    log: MetadataLog,
    /// The image after every batch appended so far.
    image: Arc<MetadataImage>,
    /// The epoch batches are appended at (a quorum of one never changes it).
    epoch: i32,
    /// Batches appended but not yet taken by the broker to apply.
    committed: Vec<MetadataBatch>,
}

/// A new topic as requested.
pub struct NewTopic<'a> {
    pub name: &'a str,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: &'a [(String, String)],
}

impl Controller {
    /// Opens the metadata log at `path` and replays it.
    pub fn open(path: &Path) -> Result<Controller, ControllerError> {
        let (log, image) = MetadataLog::open(path)?;
        Ok(Controller {
            log,
            epoch: image.epoch,
            image: Arc::new(image),
            committed: Vec::new(),
        })
    }

    /// The image after everything appended so far.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.clone()
    }

    /// The batches appended since the last call, in log order, for the broker to apply.
    pub fn take_committed(&mut self) -> Vec<MetadataBatch> {
        std::mem::take(&mut self.committed)
    }

    /// Appends `records` durably as the next batch and queues it for the broker.
    fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<(), ControllerError> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = MetadataBatch {
            base_offset: self.image.next_offset(),
            epoch: self.epoch,
            records,
        };
        let (next, _) = self
            .image
            .apply_batch(&batch)
            .map_err(|e| ControllerError::Internal(e.to_string()))?;
        self.log.append(&batch)?;
        self.image = Arc::new(next);
        self.committed.push(batch);
        Ok(())
    }

    /// Registers (or re-registers with a new endpoint) broker `node_id`.
    pub fn register_broker(
        &mut self,
        node_id: i32,
        host: &str,
        port: u16,
    ) -> Result<(), ControllerError> {
        let unchanged = self
            .image
            .brokers
            .get(&node_id)
            .is_some_and(|b| b.host == host && b.port == port);
        if unchanged {
            return Ok(());
        }
        self.commit(vec![MetadataRecord::RegisterBroker {
            node_id,
            host: host.to_string(),
            port,
            rack: None,
        }])
    }

    /// Creates a topic and returns its id (nil when `validate_only`). `num_partitions` and
    /// `replication_factor` must already be resolved from the broker defaults when the
    /// client sent -1.
    pub fn create_topic(
        &mut self,
        topic: NewTopic<'_>,
        validate_only: bool,
    ) -> Result<Uuid, ControllerError> {
        validate_topic_name(topic.name)?;
        if self.image.topics.contains_key(topic.name) {
            return Err(ControllerError::TopicAlreadyExists(format!(
                "topic '{}' already exists",
                topic.name
            )));
        }
        if topic.num_partitions < 1 {
            return Err(ControllerError::InvalidPartitions(format!(
                "number of partitions must be at least 1, got {}",
                topic.num_partitions
            )));
        }
        let brokers: Vec<i32> = self.image.brokers.keys().copied().collect();
        if topic.replication_factor < 1 || topic.replication_factor as usize > brokers.len() {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "replication factor {} is invalid: it must be between 1 and the number of available brokers ({})",
                topic.replication_factor,
                brokers.len()
            )));
        }
        let mut seen = BTreeMap::new();
        for (k, v) in topic.configs {
            validate_topic_config(k, v).map_err(ControllerError::InvalidConfig)?;
            if seen.insert(k.clone(), v.clone()).is_some() {
                return Err(ControllerError::InvalidConfig(format!(
                    "config '{k}' is given twice"
                )));
            }
        }
        if validate_only {
            return Ok(Uuid::nil());
        }
        let topic_id = Uuid::new_v4();
        let mut records = vec![MetadataRecord::Topic {
            name: topic.name.to_string(),
            topic_id,
        }];
        records.extend(
            (0..topic.num_partitions).map(|p| {
                partition_record(topic_id, p, &brokers, topic.replication_factor as usize)
            }),
        );
        records.extend(
            seen.into_iter()
                .map(|(name, value)| MetadataRecord::Config {
                    resource: ConfigResource::Topic(topic.name.to_string()),
                    name,
                    value: Some(value),
                }),
        );
        self.commit(records)?;
        Ok(topic_id)
    }

    /// Deletes a topic and everything it holds.
    pub fn delete_topic(&mut self, name: &str) -> Result<(), ControllerError> {
        let topic = self.image.topic(name).ok_or_else(|| {
            ControllerError::UnknownTopic(format!("topic '{name}' does not exist"))
        })?;
        let topic_id = topic.topic_id;
        self.commit(vec![MetadataRecord::RemoveTopic { topic_id }])
    }

    /// Grows a topic to `total` partitions; shrinking is refused.
    pub fn create_partitions(
        &mut self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let topic = self.image.topic(name).ok_or_else(|| {
            ControllerError::UnknownTopic(format!("topic '{name}' does not exist"))
        })?;
        let current = topic.partitions.len() as i32;
        if total < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the count can only grow, so {total} is refused"
            )));
        }
        if total == current {
            return Err(ControllerError::InvalidPartitions(format!(
                "topic '{name}' already has {current} partitions"
            )));
        }
        let rf = topic
            .partitions
            .values()
            .next()
            .map(|p| p.replicas.len())
            .unwrap_or(1);
        let brokers: Vec<i32> = self.image.brokers.keys().copied().collect();
        if rf > brokers.len() {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "topic '{name}' needs {rf} replicas but only {} brokers are available",
                brokers.len()
            )));
        }
        if validate_only {
            return Ok(());
        }
        let topic_id = topic.topic_id;
        let records = (current..total)
            .map(|p| partition_record(topic_id, p, &brokers, rf))
            .collect();
        self.commit(records)
    }

    /// Sets (`Some`) or removes (`None`) topic config keys after validating each one.
    pub fn alter_topic_configs(
        &mut self,
        name: &str,
        changes: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        if self.image.topic(name).is_none() {
            return Err(ControllerError::UnknownTopic(format!(
                "topic '{name}' does not exist"
            )));
        }
        for (k, v) in changes {
            match v {
                Some(v) => validate_topic_config(k, v).map_err(ControllerError::InvalidConfig)?,
                None => {
                    if crate::config::topic_config(k).is_none() {
                        return Err(ControllerError::InvalidConfig(format!(
                            "unknown topic config '{k}'"
                        )));
                    }
                }
            }
        }
        if validate_only {
            return Ok(());
        }
        self.commit(config_records(
            ConfigResource::Topic(name.to_string()),
            changes,
        ))
    }

    /// Reserves the next `size` producer ids durably; returns the first of them.
    pub fn allocate_producer_ids(&mut self, size: i64) -> Result<i64, ControllerError> {
        assert!(size > 0, "a producer id block is not empty");
        let start = self.image.next_producer_id;
        self.commit(vec![MetadataRecord::ProducerIds {
            next_block_start: start + size,
        }])?;
        Ok(start)
    }

    /// Records broker config changes the broker has already validated.
    pub fn alter_broker_configs(
        &mut self,
        node_id: i32,
        changes: &[(String, Option<String>)],
    ) -> Result<(), ControllerError> {
        self.commit(config_records(ConfigResource::Broker(node_id), changes))
    }
}

fn config_records(
    resource: ConfigResource,
    changes: &[(String, Option<String>)],
) -> Vec<MetadataRecord> {
    changes
        .iter()
        .map(|(name, value)| MetadataRecord::Config {
            resource: resource.clone(),
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Assigns replicas round-robin over the brokers, starting at a partition-dependent broker.
fn partition_record(topic_id: Uuid, partition: i32, brokers: &[i32], rf: usize) -> MetadataRecord {
    assert!(
        rf >= 1 && rf <= brokers.len(),
        "replication factor checked by the caller"
    );
    let replicas: Vec<i32> = (0..rf)
        .map(|i| brokers[(partition as usize + i) % brokers.len()])
        .collect();
    MetadataRecord::Partition {
        topic_id,
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller(dir: &Path) -> Controller {
        let mut c = Controller::open(&dir.join("metadata.log")).unwrap();
        c.register_broker(1, "127.0.0.1", 9092).unwrap();
        c
    }

    fn new_topic<'a>(name: &'a str, parts: i32, configs: &'a [(String, String)]) -> NewTopic<'a> {
        NewTopic {
            name,
            num_partitions: parts,
            replication_factor: 1,
            configs,
        }
    }

    #[test]
    fn create_grow_alter_delete_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut c = controller(dir.path());
            let cfg = vec![("segment.bytes".to_string(), "1024".to_string())];
            c.create_topic(new_topic("t", 2, &cfg), false).unwrap();
            c.create_partitions("t", 4, false).unwrap();
            c.alter_topic_configs("t", &[("retention.ms".into(), Some("1000".into()))], false)
                .unwrap();
            c.create_topic(new_topic("gone", 1, &[]), false).unwrap();
            c.delete_topic("gone").unwrap();
        }
        let c = Controller::open(&dir.path().join("metadata.log")).unwrap();
        let image = c.image();
        let t = image.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 4);
        assert!(image.topic("gone").is_none());
        let cfg = image.configs_of(&ConfigResource::Topic("t".into()));
        assert_eq!(cfg.get("segment.bytes").map(String::as_str), Some("1024"));
        assert_eq!(cfg.get("retention.ms").map(String::as_str), Some("1000"));
    }

    #[test]
    fn refuses_bad_requests() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = controller(dir.path());
        c.create_topic(new_topic("t", 2, &[]), false).unwrap();
        assert!(matches!(
            c.create_topic(new_topic("t", 1, &[]), false),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            c.create_topic(new_topic("bad name", 1, &[]), false),
            Err(ControllerError::InvalidTopic(_))
        ));
        assert!(matches!(
            c.create_topic(new_topic("x", 0, &[]), false),
            Err(ControllerError::InvalidPartitions(_))
        ));
        let bad = vec![("segment.bytes".to_string(), "nope".to_string())];
        assert!(matches!(
            c.create_topic(new_topic("y", 1, &bad), false),
            Err(ControllerError::InvalidConfig(_))
        ));
        let rf3 = NewTopic {
            name: "z",
            num_partitions: 1,
            replication_factor: 3,
            configs: &[],
        };
        assert!(matches!(
            c.create_topic(rf3, false),
            Err(ControllerError::InvalidReplicationFactor(_))
        ));
        assert!(matches!(
            c.create_partitions("t", 1, false),
            Err(ControllerError::InvalidPartitions(_))
        ));
        assert!(matches!(
            c.delete_topic("nope"),
            Err(ControllerError::UnknownTopic(_))
        ));
        c.create_topic(new_topic("v", 1, &[]), true).unwrap();
        assert!(
            c.image().topic("v").is_none(),
            "validate_only creates nothing"
        );
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("ok.name_1-2").is_ok());
    }

    #[test]
    fn producer_id_blocks_never_repeat_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let mut c = controller(dir.path());
            let a = c.allocate_producer_ids(1000).unwrap();
            let b = c.allocate_producer_ids(1000).unwrap();
            assert_eq!(b, a + 1000);
            b
        };
        let mut c = Controller::open(&dir.path().join("metadata.log")).unwrap();
        assert_eq!(c.allocate_producer_ids(10).unwrap(), first + 1000);
    }

    #[test]
    fn committed_batches_are_queued_in_order_for_the_broker() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = controller(dir.path());
        let registered = c.take_committed();
        assert_eq!(registered.len(), 1);
        assert_eq!(registered[0].base_offset, 0);
        let id = c.create_topic(new_topic("t", 3, &[]), false).unwrap();
        assert!(c
            .create_topic(new_topic("u", 1, &[]), true)
            .unwrap()
            .is_nil());
        c.create_partitions("t", 4, false).unwrap();
        let batches = c.take_committed();
        assert_eq!(batches.len(), 2, "validate-only writes nothing");
        assert_eq!(batches[0].base_offset, 1);
        assert_eq!(batches[0].records.len(), 4);
        assert_eq!(batches[1].base_offset, 5);
        assert!(c.take_committed().is_empty());
        // A broker that applies them ends where the controller is.
        let (image, _) = MetadataImage::default()
            .apply_batch(&registered[0])
            .unwrap();
        let (image, delta) = image.apply_batch(&batches[0]).unwrap();
        assert_eq!(delta.changed_partitions[&id].len(), 3);
        let (image, _) = image.apply_batch(&batches[1]).unwrap();
        assert_eq!(image.offset, c.image().offset);
        assert_eq!(image.topic("t").unwrap().partitions.len(), 4);
    }
}
