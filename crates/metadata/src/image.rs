//! The immutable picture of the cluster that metadata records build, and the delta a batch
//! makes to it.
//!
//! Readers hold an `Arc<MetadataImage>` and never see a half-applied change: a batch is
//! applied to a copy, which then replaces the current image as a whole. The maps are
//! persistent (`imbl`): a copy shares every unchanged node with the original, so applying a
//! batch costs its own size times a logarithm, not the size of the image (a 100,000-partition
//! image is not copied per change). [`MetadataImage::apply_batch`] also returns a
//! [`MetadataDelta`] naming what changed, so a broker acts on the change only.

use std::collections::{BTreeMap, BTreeSet};

use imbl::{HashMap, OrdMap};
use uuid::Uuid;

use crate::record::{ConfigResource, MetadataBatch, MetadataRecord};

/// A registered broker: its advertised endpoint and its membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// The broker process that registered (a restart registers a new one).
    pub incarnation_id: Uuid,
    /// The offset of the registration: heartbeats must name it.
    pub epoch: i64,
    /// A fenced broker is not live: it leads and serves nothing, its replicas are offline.
    pub fenced: bool,
}

/// One partition's assignment and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's broker id, -1 when the partition has none.
    pub leader: i32,
    /// Bumped at every leader change; never decreases.
    pub leader_epoch: i32,
    /// Bumped at every change of the partition (leader, ISR, replicas); never decreases.
    pub partition_epoch: i32,
    /// Eligible leader replicas (KIP-966): out of the ISR but known to hold every committed
    /// record, because they left it while the ISR was below `min.insync.replicas` (when the
    /// high watermark cannot move). Never overlaps the ISR.
    pub elr: Vec<i32>,
    /// While a reassignment moves the partition (KIP-455): the replicas being added (they
    /// copy the log until they are in the ISR) and those to remove once every target replica
    /// is in sync. Both are among `replicas`, never overlap, and are empty otherwise.
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

impl PartitionImage {
    /// Whether a reassignment is moving the partition.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition will have once its reassignment completes (its replicas
    /// when none is under way).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas the partition had before its reassignment started.
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

/// One topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: OrdMap<i32, PartitionImage>,
}

/// The whole cluster metadata at one point of the log.
#[derive(Debug, Clone)]
pub struct MetadataImage {
    /// Offset of the last record applied; -1 for the empty image.
    pub offset: i64,
    /// Epoch of the batch that record came in.
    pub epoch: i32,
    pub brokers: OrdMap<i32, BrokerImage>,
    pub topics: OrdMap<String, TopicImage>,
    pub topic_names_by_id: HashMap<Uuid, String>,
    /// Explicitly set configs per resource (defaults are not stored).
    pub configs: HashMap<ConfigResource, BTreeMap<String, String>>,
    /// The first producer id not yet handed out in any block.
    pub next_producer_id: i64,
    /// The cluster's id, once the first controller wrote it.
    pub cluster_id: Option<String>,
}

impl Default for MetadataImage {
    fn default() -> MetadataImage {
        MetadataImage {
            offset: -1,
            epoch: 0,
            brokers: OrdMap::new(),
            topics: OrdMap::new(),
            topic_names_by_id: HashMap::new(),
            configs: HashMap::new(),
            next_producer_id: 0,
            cluster_id: None,
        }
    }
}

/// What one batch changed: brokers act on this instead of rescanning the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    /// Topics created, or whose partitions were added or changed, with the partitions.
    pub changed_partitions: BTreeMap<Uuid, BTreeSet<i32>>,
    /// Topics removed: (name, id).
    pub removed_topics: Vec<(String, Uuid)>,
    /// Resources whose explicit configs changed.
    pub changed_configs: BTreeSet<ConfigResource>,
    /// Brokers registered or re-registered.
    pub changed_brokers: BTreeSet<i32>,
}

impl MetadataDelta {
    /// Adds what a `later` batch changed: the two batches' changes against the image after
    /// both. Removals are acted on before changes, so a topic removed and created again
    /// (a new id) in between still ends up hosted afresh.
    pub fn merge(&mut self, later: MetadataDelta) {
        for (topic_id, partitions) in later.changed_partitions {
            self.changed_partitions
                .entry(topic_id)
                .or_default()
                .extend(partitions);
        }
        self.removed_topics.extend(later.removed_topics);
        self.changed_configs.extend(later.changed_configs);
        self.changed_brokers.extend(later.changed_brokers);
    }
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

    /// The registered brokers that are not fenced, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Whether broker `id` is registered and not fenced.
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// The offset the next record of the log takes.
    pub fn next_offset(&self) -> i64 {
        self.offset + 1
    }

    /// Returns a new image with the batch applied, and what it changed; `self` is unchanged.
    /// The batch must start right after the last record applied and its epoch may not go
    /// back.
    pub fn apply_batch(
        &self,
        batch: &MetadataBatch,
    ) -> Result<(MetadataImage, MetadataDelta), ApplyError> {
        if batch.records.is_empty() {
            return Err(ApplyError("an empty batch".into()));
        }
        if batch.base_offset != self.next_offset() {
            return Err(ApplyError(format!(
                "batch at offset {} does not follow offset {}",
                batch.base_offset, self.offset
            )));
        }
        if batch.epoch < self.epoch {
            return Err(ApplyError(format!(
                "batch of epoch {} after epoch {}",
                batch.epoch, self.epoch
            )));
        }
        let mut next = self.clone();
        let mut delta = MetadataDelta::default();
        for (offset, record) in (batch.base_offset..).zip(&batch.records) {
            next.apply(record, offset, &mut delta)?;
        }
        next.offset = batch.last_offset();
        next.epoch = batch.epoch;
        Ok((next, delta))
    }

    /// The image as the records that rebuild it (a snapshot of the log up to `offset`):
    /// brokers, each topic with its partitions, configs, the producer id block.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records: Vec<MetadataRecord> = self
            .cluster_id
            .iter()
            .map(|id| MetadataRecord::ClusterId {
                cluster_id: id.clone(),
            })
            .collect();
        records.extend(
            self.brokers
                .values()
                .map(|b| MetadataRecord::RegisterBroker {
                    node_id: b.node_id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    incarnation_id: b.incarnation_id,
                    broker_epoch: Some(b.epoch),
                    fenced: b.fenced,
                }),
        );
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
            });
            records.extend(
                topic
                    .partitions
                    .values()
                    .map(|p| MetadataRecord::Partition {
                        topic_id: topic.topic_id,
                        partition: p.partition,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        elr: p.elr.clone(),
                        adding_replicas: p.adding_replicas.clone(),
                        removing_replicas: p.removing_replicas.clone(),
                    }),
            );
        }
        let mut resources: Vec<&ConfigResource> = self.configs.keys().collect();
        resources.sort();
        for resource in resources {
            for (name, value) in &self.configs[resource] {
                records.push(MetadataRecord::Config {
                    resource: resource.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        if self.next_producer_id > 0 {
            records.push(MetadataRecord::ProducerIds {
                next_block_start: self.next_producer_id,
            });
        }
        records
    }

    /// The image a snapshot describes: `records` (from [`Self::to_records`]) as of log
    /// offset `offset` and epoch `epoch`.
    pub fn restore(
        offset: i64,
        epoch: i32,
        records: &[MetadataRecord],
    ) -> Result<MetadataImage, ApplyError> {
        let mut image = MetadataImage::default();
        let mut delta = MetadataDelta::default();
        for record in records {
            image.apply(record, offset, &mut delta)?;
        }
        image.offset = offset;
        image.epoch = epoch;
        Ok(image)
    }

    /// Applies `record`, which sits at `offset` of the log.
    fn apply(
        &mut self,
        record: &MetadataRecord,
        offset: i64,
        delta: &mut MetadataDelta,
    ) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
                incarnation_id,
                broker_epoch,
                fenced,
            } => {
                let epoch = broker_epoch.unwrap_or(offset);
                if let Some(old) = self.brokers.get(node_id).filter(|b| b.epoch > epoch) {
                    return Err(ApplyError(format!(
                        "broker {node_id} would go back from epoch {} to {epoch}",
                        old.epoch
                    )));
                }
                self.brokers.insert(
                    *node_id,
                    BrokerImage {
                        node_id: *node_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        incarnation_id: *incarnation_id,
                        epoch,
                        fenced: *fenced,
                    },
                );
                delta.changed_brokers.insert(*node_id);
            }
            MetadataRecord::FenceBroker {
                node_id,
                broker_epoch,
            }
            | MetadataRecord::UnfenceBroker {
                node_id,
                broker_epoch,
            } => {
                let broker = self
                    .brokers
                    .get_mut(node_id)
                    .filter(|b| b.epoch == *broker_epoch)
                    .ok_or_else(|| {
                        ApplyError(format!(
                            "{} of broker {node_id} at an epoch {broker_epoch} it is not registered with",
                            record.type_name()
                        ))
                    })?;
                broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
                delta.changed_brokers.insert(*node_id);
            }
            MetadataRecord::Topic { name, topic_id } => {
                if self.topics.contains_key(name) {
                    return Err(ApplyError(format!("topic {name} already exists")));
                }
                if self.topic_names_by_id.contains_key(topic_id) {
                    return Err(ApplyError(format!("topic id {topic_id} is taken")));
                }
                self.topic_names_by_id.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: OrdMap::new(),
                    },
                );
                delta.changed_partitions.entry(*topic_id).or_default();
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                elr,
                adding_replicas,
                removing_replicas,
            } => {
                let image = PartitionImage {
                    partition: *partition,
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    elr: elr.clone(),
                    adding_replicas: adding_replicas.clone(),
                    removing_replicas: removing_replicas.clone(),
                };
                check_partition(&image)?;
                let topic = self.topic_mut(topic_id)?;
                if let Some(old) = topic.partitions.get(partition) {
                    check_epochs_advance(old, &image)?;
                }
                topic.partitions.insert(*partition, image);
                delta
                    .changed_partitions
                    .entry(*topic_id)
                    .or_default()
                    .insert(*partition);
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
                elr,
                adding_replicas,
                removing_replicas,
            } => {
                let topic = self.topic_mut(topic_id)?;
                let old = topic.partitions.get(partition).ok_or_else(|| {
                    ApplyError(format!(
                        "change of unknown partition {topic_id}-{partition}"
                    ))
                })?;
                let mut next = old.clone();
                if let Some(leader) = leader {
                    if *leader != old.leader {
                        next.leader = *leader;
                        next.leader_epoch += 1;
                    }
                }
                if let Some(isr) = isr {
                    next.isr = isr.clone();
                }
                if let Some(replicas) = replicas {
                    next.replicas = replicas.clone();
                }
                if let Some(elr) = elr {
                    next.elr = elr.clone();
                }
                if let Some(adding) = adding_replicas {
                    next.adding_replicas = adding.clone();
                }
                if let Some(removing) = removing_replicas {
                    next.removing_replicas = removing.clone();
                }
                next.partition_epoch += 1;
                check_partition(&next)?;
                topic.partitions.insert(*partition, next);
                delta
                    .changed_partitions
                    .entry(*topic_id)
                    .or_default()
                    .insert(*partition);
            }
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => {
                let mut entry = self.configs.get(resource).cloned().unwrap_or_default();
                match value {
                    Some(v) => {
                        entry.insert(name.clone(), v.clone());
                    }
                    None => {
                        entry.remove(name);
                    }
                }
                self.configs.insert(resource.clone(), entry);
                delta.changed_configs.insert(resource.clone());
            }
            MetadataRecord::ClusterId { cluster_id } => {
                if let Some(existing) = self.cluster_id.as_ref().filter(|c| *c != cluster_id) {
                    return Err(ApplyError(format!(
                        "the cluster id is {existing}; it cannot become {cluster_id}"
                    )));
                }
                self.cluster_id = Some(cluster_id.clone());
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
                let resource = ConfigResource::Topic(name.clone());
                if self.configs.remove(&resource).is_some() {
                    delta.changed_configs.insert(resource);
                }
                delta.changed_partitions.remove(topic_id);
                delta.removed_topics.push((name, *topic_id));
            }
        }
        Ok(())
    }

    fn topic_mut(&mut self, topic_id: &Uuid) -> Result<&mut TopicImage, ApplyError> {
        let name = self
            .topic_names_by_id
            .get(topic_id)
            .ok_or_else(|| ApplyError(format!("partition of unknown topic id {topic_id}")))?;
        Ok(self
            .topics
            .get_mut(name)
            .expect("the id index matches the topics"))
    }
}

/// A partition's own consistency: distinct replicas, ISR within them, leader in the ISR.
fn check_partition(p: &PartitionImage) -> Result<(), ApplyError> {
    let distinct: BTreeSet<i32> = p.replicas.iter().copied().collect();
    if p.replicas.is_empty() || distinct.len() != p.replicas.len() {
        return Err(ApplyError(format!(
            "partition {} has replicas {:?}",
            p.partition, p.replicas
        )));
    }
    if let Some(stray) = p.isr.iter().find(|b| !distinct.contains(b)) {
        return Err(ApplyError(format!(
            "partition {}: ISR member {stray} is not a replica",
            p.partition
        )));
    }
    if let Some(stray) = p
        .elr
        .iter()
        .find(|b| !distinct.contains(b) || p.isr.contains(b))
    {
        return Err(ApplyError(format!(
            "partition {}: eligible leader replica {stray} is not a replica out of the ISR",
            p.partition
        )));
    }
    if let Some(stray) = p
        .adding_replicas
        .iter()
        .chain(&p.removing_replicas)
        .find(|b| !distinct.contains(b))
    {
        return Err(ApplyError(format!(
            "partition {}: reassigned replica {stray} is not a replica",
            p.partition
        )));
    }
    if let Some(both) = p
        .adding_replicas
        .iter()
        .find(|b| p.removing_replicas.contains(b))
    {
        return Err(ApplyError(format!(
            "partition {}: replica {both} is both added and removed",
            p.partition
        )));
    }
    if p.leader != -1 && !p.isr.contains(&p.leader) {
        return Err(ApplyError(format!(
            "partition {}: leader {} is not in the ISR {:?}",
            p.partition, p.leader, p.isr
        )));
    }
    Ok(())
}

/// Leader and partition epochs never go back.
fn check_epochs_advance(old: &PartitionImage, new: &PartitionImage) -> Result<(), ApplyError> {
    if new.leader_epoch < old.leader_epoch || new.partition_epoch < old.partition_epoch {
        return Err(ApplyError(format!(
            "partition {}: epochs would go back from leader {} / partition {} to {} / {}",
            new.partition,
            old.leader_epoch,
            old.partition_epoch,
            new.leader_epoch,
            new.partition_epoch
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base_offset: i64, records: Vec<MetadataRecord>) -> MetadataBatch {
        MetadataBatch {
            base_offset,
            epoch: 0,
            records,
        }
    }

    fn partition(topic_id: Uuid, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
        MetadataRecord::new_partition(topic_id, partition, replicas)
    }

    #[test]
    fn a_batch_changes_a_copy_and_names_what_changed() {
        let id = Uuid::new_v4();
        let empty = MetadataImage::default();
        let (one, delta) = empty
            .apply_batch(&batch(
                0,
                vec![
                    MetadataRecord::Topic {
                        name: "t".into(),
                        topic_id: id,
                    },
                    partition(id, 0, vec![1, 2]),
                    partition(id, 1, vec![2, 1]),
                ],
            ))
            .unwrap();
        assert!(empty.topics.is_empty(), "the original is unchanged");
        assert_eq!(one.offset, 2);
        assert_eq!(
            delta.changed_partitions.get(&id).unwrap(),
            &BTreeSet::from([0, 1])
        );

        let change = MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 1,
            leader: Some(1),
            isr: Some(vec![1]),
            replicas: None,
            elr: None,
            adding_replicas: None,
            removing_replicas: None,
        };
        let (two, delta) = one.apply_batch(&batch(3, vec![change])).unwrap();
        let p = &two.topic("t").unwrap().partitions[&1];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 1, 1));
        assert_eq!(p.isr, vec![1]);
        assert_eq!(one.topic("t").unwrap().partitions[&1].leader, 2);
        assert_eq!(
            delta.changed_partitions.get(&id).unwrap(),
            &BTreeSet::from([1])
        );

        let (three, delta) = two
            .apply_batch(&batch(
                4,
                vec![MetadataRecord::RemoveTopic { topic_id: id }],
            ))
            .unwrap();
        assert!(three.topic("t").is_none());
        assert_eq!(delta.removed_topics, vec![("t".to_string(), id)]);
        assert!(delta.changed_partitions.is_empty());
    }

    #[test]
    fn merged_deltas_name_everything_either_batch_changed() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut first = MetadataDelta {
            changed_partitions: BTreeMap::from([(a, BTreeSet::from([0]))]),
            removed_topics: vec![("gone".into(), b)],
            changed_configs: BTreeSet::new(),
            changed_brokers: BTreeSet::from([1]),
        };
        first.merge(MetadataDelta {
            changed_partitions: BTreeMap::from([
                (a, BTreeSet::from([1])),
                (b, BTreeSet::from([0])),
            ]),
            removed_topics: Vec::new(),
            changed_configs: BTreeSet::from([ConfigResource::Broker(2)]),
            changed_brokers: BTreeSet::from([2]),
        });
        assert_eq!(
            first.changed_partitions,
            BTreeMap::from([(a, BTreeSet::from([0, 1])), (b, BTreeSet::from([0]))])
        );
        assert_eq!(first.removed_topics, vec![("gone".to_string(), b)]);
        assert_eq!(
            first.changed_configs,
            BTreeSet::from([ConfigResource::Broker(2)])
        );
        assert_eq!(first.changed_brokers, BTreeSet::from([1, 2]));
    }

    #[test]
    fn inconsistent_batches_are_refused() {
        let id = Uuid::new_v4();
        let (image, _) = MetadataImage::default()
            .apply_batch(&batch(
                0,
                vec![
                    MetadataRecord::Topic {
                        name: "t".into(),
                        topic_id: id,
                    },
                    partition(id, 0, vec![1]),
                ],
            ))
            .unwrap();
        // A gap in offsets.
        assert!(image
            .apply_batch(&batch(5, vec![partition(id, 1, vec![1])]))
            .is_err());
        // A leader outside the ISR.
        let bad = MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader: None,
            isr: Some(vec![]),
            replicas: None,
            elr: None,
            adding_replicas: None,
            removing_replicas: None,
        };
        assert!(image.apply_batch(&batch(2, vec![bad])).is_err());
        // Duplicate replicas.
        assert!(image
            .apply_batch(&batch(2, vec![partition(id, 1, vec![1, 1])]))
            .is_err());
        // An older epoch.
        let older = MetadataBatch {
            base_offset: 2,
            epoch: -1,
            records: vec![partition(id, 1, vec![1])],
        };
        assert!(image.apply_batch(&older).is_err());
    }

    #[test]
    fn an_image_round_trips_through_its_records() {
        let id = Uuid::new_v4();
        let (image, _) = MetadataImage::default()
            .apply_batch(&batch(
                0,
                vec![
                    MetadataRecord::RegisterBroker {
                        node_id: 1,
                        host: "127.0.0.1".into(),
                        port: 9092,
                        rack: Some("r1".into()),
                        incarnation_id: Uuid::new_v4(),
                        broker_epoch: None,
                        fenced: true,
                    },
                    MetadataRecord::RegisterBroker {
                        node_id: 2,
                        host: "127.0.0.1".into(),
                        port: 9093,
                        rack: None,
                        incarnation_id: Uuid::new_v4(),
                        broker_epoch: None,
                        fenced: true,
                    },
                    MetadataRecord::UnfenceBroker {
                        node_id: 2,
                        broker_epoch: 1,
                    },
                    MetadataRecord::Topic {
                        name: "t".into(),
                        topic_id: id,
                    },
                    partition(id, 0, vec![1]),
                    MetadataRecord::Config {
                        resource: ConfigResource::Topic("t".into()),
                        name: "retention.ms".into(),
                        value: Some("5".into()),
                    },
                    MetadataRecord::ProducerIds {
                        next_block_start: 2000,
                    },
                ],
            ))
            .unwrap();
        assert!(image.brokers[&1].fenced && !image.brokers[&2].fenced);
        assert_eq!(image.brokers[&2].epoch, 1, "the offset of its registration");
        let back = MetadataImage::restore(image.offset, 3, &image.to_records()).unwrap();
        assert_eq!((back.offset, back.epoch), (6, 3));
        assert_eq!(back.topic("t"), image.topic("t"));
        assert_eq!(back.brokers, image.brokers);
        assert_eq!(back.configs, image.configs);
        assert_eq!(back.next_producer_id, 2000);
    }
}
