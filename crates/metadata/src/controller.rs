//! The controller: validates admin requests against the metadata image and turns them into
//! records, which it writes through a [`MetadataWriter`] (the metadata quorum).
//!
//! It is the only writer of the metadata log. Writing and applying are two steps: the
//! controller validates a change against the image of everything written so far and writes
//! the batch; it is committed once a majority of the quorum stored it. Brokers apply
//! committed batches from the quorum's commit stream, on their own; a caller that needs its
//! change visible waits until its broker applied [`Controller::last_written`].

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::config::validate_topic_config;
use crate::image::MetadataImage;
use crate::log::MetadataLogError;
use crate::record::{ConfigResource, MetadataRecord};

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
    /// This node is not the active controller (NOT_CONTROLLER).
    #[error("{0}")]
    NotController(String),
    /// The quorum did not commit in time (REQUEST_TIMED_OUT).
    #[error("{0}")]
    Timeout(String),
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

/// Where the controller writes: the metadata log, replicated or not.
pub trait MetadataWriter: Send {
    /// The image after everything committed so far.
    fn image(&self) -> Arc<MetadataImage>;
    /// Writes `records` as one batch and returns the offset of its last record once the
    /// batch is committed (and applied to [`Self::image`]).
    fn write(&mut self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError>;
}

/// The controller and where it writes.
pub struct Controller {
    writer: Box<dyn MetadataWriter>,
    /// Offset of the last record this controller wrote; -1 before its first write.
    last_written: i64,
}

/// A new topic as requested.
pub struct NewTopic<'a> {
    pub name: &'a str,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub configs: &'a [(String, String)],
}

impl Controller {
    /// A controller writing through `writer`.
    pub fn new(writer: Box<dyn MetadataWriter>) -> Controller {
        Controller {
            writer,
            last_written: -1,
        }
    }

    /// The image after everything committed so far.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.writer.image()
    }

    /// Offset of the last record this controller wrote (-1 before its first write).
    pub fn last_written(&self) -> i64 {
        self.last_written
    }

    /// Writes `records` as the next batch; returns once it is committed.
    fn commit(&mut self, records: Vec<MetadataRecord>) -> Result<(), ControllerError> {
        if records.is_empty() {
            return Ok(());
        }
        let last = self.writer.write(records)?;
        assert!(last > self.last_written, "the metadata log only grows");
        self.last_written = last;
        Ok(())
    }

    /// Writes the records of a whole image (a metadata log of an earlier release being
    /// imported) as one batch.
    pub fn import(&mut self, image: &MetadataImage) -> Result<(), ControllerError> {
        self.commit(image.to_records())
    }

    /// Registers (or re-registers with a new endpoint) broker `node_id`.
    pub fn register_broker(
        &mut self,
        node_id: i32,
        host: &str,
        port: u16,
    ) -> Result<(), ControllerError> {
        let unchanged = self
            .image()
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
        if self.image().topics.contains_key(topic.name) {
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
        let brokers: Vec<i32> = self.image().brokers.keys().copied().collect();
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
        let image = self.image();
        let topic = image.topic(name).ok_or_else(|| {
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
        let image = self.image();
        let topic = image.topic(name).ok_or_else(|| {
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
        let brokers: Vec<i32> = self.image().brokers.keys().copied().collect();
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
        if self.image().topic(name).is_none() {
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

    /// The cluster's id: the one recorded, else `proposed`, recorded now.
    pub fn claim_cluster_id(&mut self, proposed: String) -> Result<String, ControllerError> {
        if let Some(id) = self.image().cluster_id.clone() {
            return Ok(id);
        }
        self.commit(vec![MetadataRecord::ClusterId {
            cluster_id: proposed.clone(),
        }])?;
        Ok(proposed)
    }

    /// Reserves the next `size` producer ids durably; returns the first of them.
    pub fn allocate_producer_ids(&mut self, size: i64) -> Result<i64, ControllerError> {
        assert!(size > 0, "a producer id block is not empty");
        let start = self.image().next_producer_id;
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

    use crate::record::MetadataBatch;

    /// A writer that commits at once, in memory.
    struct MemoryWriter {
        image: Arc<MetadataImage>,
    }

    impl MetadataWriter for MemoryWriter {
        fn image(&self) -> Arc<MetadataImage> {
            self.image.clone()
        }

        fn write(&mut self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError> {
            let batch = MetadataBatch {
                base_offset: self.image.next_offset(),
                epoch: 0,
                records,
            };
            let (next, _) = self
                .image
                .apply_batch(&batch)
                .map_err(|e| ControllerError::Internal(e.to_string()))?;
            self.image = Arc::new(next);
            Ok(batch.last_offset())
        }
    }

    fn controller() -> Controller {
        let mut c = Controller::new(Box::new(MemoryWriter {
            image: Arc::new(MetadataImage::default()),
        }));
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
    fn create_grow_alter_delete() {
        let mut c = controller();
        let cfg = vec![("segment.bytes".to_string(), "1024".to_string())];
        c.create_topic(new_topic("t", 2, &cfg), false).unwrap();
        c.create_partitions("t", 4, false).unwrap();
        c.alter_topic_configs("t", &[("retention.ms".into(), Some("1000".into()))], false)
            .unwrap();
        c.create_topic(new_topic("gone", 1, &[]), false).unwrap();
        c.delete_topic("gone").unwrap();
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
        let mut c = controller();
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
    fn producer_id_blocks_never_repeat() {
        let mut c = controller();
        let a = c.allocate_producer_ids(1000).unwrap();
        let b = c.allocate_producer_ids(1000).unwrap();
        assert_eq!(b, a + 1000);
        assert_eq!(c.image().next_producer_id, b + 1000);
    }

    #[test]
    fn last_written_follows_each_committed_batch() {
        let mut c = controller();
        assert_eq!(c.last_written(), 0, "the registration");
        let id = c.create_topic(new_topic("t", 3, &[]), false).unwrap();
        assert_eq!(c.last_written(), 4, "topic and three partitions");
        assert!(c
            .create_topic(new_topic("u", 1, &[]), true)
            .unwrap()
            .is_nil());
        assert_eq!(c.last_written(), 4, "validate-only writes nothing");
        c.create_partitions("t", 4, false).unwrap();
        assert_eq!(c.last_written(), 5);
        assert_eq!(c.image().topic("t").unwrap().topic_id, id);
    }

    #[test]
    fn the_cluster_id_is_claimed_once() {
        let mut c = controller();
        assert_eq!(c.claim_cluster_id("first".into()).unwrap(), "first");
        assert_eq!(c.claim_cluster_id("second".into()).unwrap(), "first");
        assert_eq!(c.image().cluster_id.as_deref(), Some("first"));
    }
}
