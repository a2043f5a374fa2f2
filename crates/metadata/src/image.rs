//! The immutable picture of the cluster that metadata records build.
//!
//! Readers hold an `Arc<MetadataImage>` and never see a half-applied change: a batch of
//! records is applied to a copy, which then replaces the current image as a whole.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::record::{ConfigResource, MetadataRecord};

/// A registered broker's advertised endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// One partition's assignment and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// One topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
}

/// The whole cluster metadata at one point of the log.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Number of records applied so far (the next record's position in the log).
    pub records_applied: u64,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    /// Explicitly set configs per resource (defaults are not stored).
    pub configs: HashMap<ConfigResource, BTreeMap<String, String>>,
    /// The first producer id not yet handed out in any block.
    pub next_producer_id: i64,
}

/// A record that does not fit the image it is applied to: the log is inconsistent.
#[derive(Debug, thiserror::Error)]
#[error("metadata record does not apply: {0}")]
pub struct ApplyError(pub String);

impl MetadataImage {
    /// The topic named `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// The topic with id `topic_id`, if it exists.
    pub fn topic_by_id(&self, topic_id: &Uuid) -> Option<&TopicImage> {
        self.topic_names_by_id
            .get(topic_id)
            .and_then(|n| self.topics.get(n))
    }

    /// The explicitly set configs of `resource` (empty when none).
    pub fn configs_of(&self, resource: &ConfigResource) -> BTreeMap<String, String> {
        self.configs.get(resource).cloned().unwrap_or_default()
    }

    /// Returns a new image with `records` applied in order; `self` is unchanged.
    pub fn apply_all(&self, records: &[MetadataRecord]) -> Result<MetadataImage, ApplyError> {
        let mut next = self.clone();
        for record in records {
            next.apply(record)?;
        }
        Ok(next)
    }

    fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
            } => {
                self.brokers.insert(
                    *node_id,
                    BrokerImage {
                        node_id: *node_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                    },
                );
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topics.contains_key(name) {
                    return Err(ApplyError(format!("topic {name} already exists")));
                }
                self.topic_names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
            } => {
                let name = self.topic_names_by_id.get(topic_id).ok_or_else(|| {
                    ApplyError(format!("partition of unknown topic id {topic_id}"))
                })?;
                let topic = self.topics.get_mut(name).expect("id index matches topics");
                topic.partitions.insert(
                    *partition,
                    PartitionImage {
                        partition: *partition,
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                    },
                );
            }
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => {
                let entry = self.configs.entry(resource.clone()).or_default();
                match value {
                    Some(v) => {
                        entry.insert(name.clone(), v.clone());
                    }
                    None => {
                        entry.remove(name);
                    }
                }
            }
            MetadataRecord::ProducerIds { next_block_start } => {
                if *next_block_start < self.next_producer_id {
                    return Err(ApplyError(format!(
                        "producer id block would go back from {} to {next_block_start}",
                        self.next_producer_id
                    )));
                }
                self.next_producer_id = *next_block_start;
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let name = self
                    .topic_names_by_id
                    .remove(topic_id)
                    .ok_or_else(|| ApplyError(format!("removal of unknown topic id {topic_id}")))?;
                self.topics.remove(&name);
                self.configs.remove(&ConfigResource::Topic(name));
            }
        }
        self.records_applied += 1;
        Ok(())
    }
}
