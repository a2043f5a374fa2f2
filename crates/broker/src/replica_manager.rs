//! The partitions this broker hosts, kept in step with the metadata.
//!
//! Hosted replicas are keyed by identity, (topic id, partition), and a broker hosts any
//! subset of a topic's partitions: those whose replica set names it. Every applied metadata
//! batch is followed by [`ReplicaManager::apply_delta`], which opens logs for new replicas,
//! hands changed leadership and ISR to existing ones, applies changed topic configs and
//! deletes the data of removed topics and replicas. Request handlers only look partitions up.
//! A replica that cannot be opened is offline on this broker alone and opened again with a
//! backoff ([`ReplicaManager::retry_offline`]); everything else keeps serving.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use gregor_metadata::{ConfigResource, MetadataDelta, MetadataImage, TopicImage};
use gregor_storage::error::StorageError;
use gregor_storage::log_dir::{CheckpointEntry, LogDir};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::partition::{Partition, PartitionState};

/// A partition's identity: its topic's id and its index.
pub type TopicIdPartition = (Uuid, i32);

/// Lookup tables of hosted partitions.
#[derive(Default)]
struct Hosted {
    by_id: HashMap<TopicIdPartition, Arc<Partition>>,
    /// Topic name → id, for every topic with at least one hosted partition.
    topic_ids: HashMap<String, Uuid>,
    /// Replicas this broker should host but could not open, retried with a backoff.
    offline: HashMap<TopicIdPartition, OfflineReplica>,
    /// Offset of the image last applied: a retry with an older image waits for the next.
    synced_offset: i64,
}

/// A replica the metadata places here that could not be opened (out of descriptors, a
/// damaged directory, a disk error): it is offline on this broker alone, answered with
/// KAFKA_STORAGE_ERROR, and opened again later.
#[derive(Clone, Debug)]
pub struct OfflineReplica {
    pub topic: String,
    pub index: i32,
    /// The last attempt's error.
    pub reason: String,
    pub failures: u32,
    pub retry_at_ms: i64,
}

/// First wait before opening an offline replica again; it doubles with each failure.
const OFFLINE_RETRY_FIRST_MS: i64 = 1_000;
const OFFLINE_RETRY_MAX_MS: i64 = 60_000;

fn offline_retry_delay_ms(failures: u32) -> i64 {
    OFFLINE_RETRY_FIRST_MS
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(OFFLINE_RETRY_MAX_MS)
}

/// Which part of the image an update covers.
pub enum Scope<'a> {
    /// Every topic (start-up, or a change of the broker's own config, which every topic
    /// inherits defaults from).
    Everything,
    /// What one batch changed.
    Delta(&'a MetadataDelta),
}

pub struct ReplicaManager {
    node_id: i32,
    log_dir: LogDir,
    hosted: RwLock<Hosted>,
    /// Held through every change of the hosted set (metadata applies, retries), so the map
    /// lock is taken only for the map's own updates: opening and deleting logs happen
    /// without it, and lookups by produce and fetch never wait for them.
    changing: Mutex<()>,
}

/// File work an update decided under the map lock and does after it: deletions first (a
/// topic re-created under the same name reuses its directories), then opens.
#[derive(Default)]
struct FileWork {
    deletes: Vec<(Arc<Partition>, &'static str)>,
    opens: Vec<PendingOpen>,
}

/// A replica to open: what its `Partition` starts with.
struct PendingOpen {
    key: TopicIdPartition,
    topic: String,
    config: gregor_storage::config::LogConfig,
    state: PartitionState,
}

impl ReplicaManager {
    pub fn new(node_id: i32, log_dir: LogDir) -> ReplicaManager {
        ReplicaManager {
            node_id,
            log_dir,
            hosted: RwLock::new(Hosted::default()),
            changing: Mutex::new(()),
        }
    }

    pub fn log_dir(&self) -> &LogDir {
        &self.log_dir
    }

    /// The partition `topic`/`index`, if hosted here.
    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let hosted = self.hosted.read().expect("replica map poisoned");
        let id = hosted.topic_ids.get(topic)?;
        hosted.by_id.get(&(*id, index)).cloned()
    }

    /// The partition with identity `id`, if hosted here.
    pub fn get_by_id(&self, id: TopicIdPartition) -> Option<Arc<Partition>> {
        let hosted = self.hosted.read().expect("replica map poisoned");
        hosted.by_id.get(&id).cloned()
    }

    /// Why the replica `id` is offline here, if it is.
    pub fn offline_reason(&self, id: TopicIdPartition) -> Option<String> {
        let hosted = self.hosted.read().expect("replica map poisoned");
        hosted.offline.get(&id).map(|o| o.reason.clone())
    }

    /// Whether the replica `topic`/`index` is placed here but could not be opened.
    pub fn is_offline(&self, topic: &str, index: i32) -> bool {
        let hosted = self.hosted.read().expect("replica map poisoned");
        hosted
            .offline
            .values()
            .any(|o| o.index == index && o.topic == topic)
    }

    /// Every replica offline here.
    pub fn offline(&self) -> Vec<OfflineReplica> {
        let hosted = self.hosted.read().expect("replica map poisoned");
        hosted.offline.values().cloned().collect()
    }

    /// Tries again to open the offline replicas whose backoff ran out, with `image` (the
    /// published one; skipped when an apply is newer). Returns how many opened.
    pub fn retry_offline(&self, image: &MetadataImage, config: &BrokerConfig) -> usize {
        let _changing = self.changing.lock().expect("replica changes poisoned");
        let now = self.log_dir.clock().now_ms();
        let mut work = FileWork::default();
        let mut due: HashMap<Uuid, BTreeSet<i32>> = HashMap::new();
        {
            let mut hosted = self.hosted.write().expect("replica map poisoned");
            if image.offset < hosted.synced_offset {
                return 0;
            }
            for ((id, index), o) in &hosted.offline {
                if o.retry_at_ms <= now {
                    due.entry(*id).or_default().insert(*index);
                }
            }
            for (id, indexes) in &due {
                match image.topic_by_id(id) {
                    Some(topic) => self.sync_topic(
                        &mut hosted,
                        &mut work,
                        image,
                        topic,
                        indexes,
                        config,
                        false,
                    ),
                    None => hosted.offline.retain(|(t, _), _| t != id),
                }
            }
        }
        // A failure is logged and rescheduled.
        let _ = self.do_file_work(work);
        let hosted = self.hosted.read().expect("replica map poisoned");
        due.iter()
            .flat_map(|(id, indexes)| indexes.iter().map(move |i| (*id, *i)))
            .filter(|key| hosted.by_id.contains_key(key))
            .count()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        let hosted = self.hosted.read().expect("replica map poisoned");
        hosted.by_id.values().cloned().collect()
    }

    /// Brings the hosted partitions in `scope` in line with `image`. A partition that cannot
    /// be opened is left unhosted and the first such error is returned after every other
    /// partition was handled.
    pub fn apply_delta(
        &self,
        image: &MetadataImage,
        scope: Scope<'_>,
        config: &BrokerConfig,
    ) -> Result<(), StorageError> {
        let _changing = self.changing.lock().expect("replica changes poisoned");
        let mut work = FileWork::default();
        let mut hosted = self.hosted.write().expect("replica map poisoned");
        hosted.synced_offset = hosted.synced_offset.max(image.offset);
        match scope {
            Scope::Everything => {
                // Hosted topics gone from the image (or re-created under a new id).
                let gone: Vec<(String, Uuid)> = hosted
                    .topic_ids
                    .iter()
                    .filter(|(name, id)| image.topic(name).is_none_or(|t| t.topic_id != **id))
                    .map(|(name, id)| (name.clone(), *id))
                    .collect();
                for (name, id) in gone {
                    Self::remove_topic(&mut hosted, &mut work, &name, id);
                }
                for topic in image.topics.values() {
                    let all: BTreeSet<i32> = topic.partitions.keys().copied().collect();
                    self.sync_topic(&mut hosted, &mut work, image, topic, &all, config, true);
                }
            }
            Scope::Delta(delta) => {
                for (name, id) in &delta.removed_topics {
                    Self::remove_topic(&mut hosted, &mut work, name, *id);
                }
                for (id, partitions) in &delta.changed_partitions {
                    if let Some(topic) = image.topic_by_id(id) {
                        let configs_changed = delta
                            .changed_configs
                            .contains(&ConfigResource::Topic(topic.name.clone()));
                        self.sync_topic(
                            &mut hosted,
                            &mut work,
                            image,
                            topic,
                            partitions,
                            config,
                            configs_changed,
                        );
                    }
                }
                for resource in &delta.changed_configs {
                    let ConfigResource::Topic(name) = resource else {
                        continue;
                    };
                    let Some(topic) = image.topic(name) else {
                        continue;
                    };
                    if !delta.changed_partitions.contains_key(&topic.topic_id) {
                        self.sync_topic(
                            &mut hosted,
                            &mut work,
                            image,
                            topic,
                            &BTreeSet::new(),
                            config,
                            true,
                        );
                    }
                }
            }
        }
        drop(hosted);
        self.do_file_work(work)
    }

    /// Deletes and opens what an update decided, without the map lock; each opened replica
    /// is hosted (or recorded offline) as soon as it opened. Returns the first error.
    fn do_file_work(&self, work: FileWork) -> Result<(), StorageError> {
        let mut first_error = None;
        for (p, why) in work.deletes {
            if let Err(e) = p.delete_files() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "cannot delete the data of {why}");
                first_error.get_or_insert(e);
            }
        }
        for open in work.opens {
            let (id, index) = open.key;
            let opened = self
                .log_dir
                .open_log(&open.topic, index, open.config)
                .map(|log| {
                    Partition::open(
                        open.topic.clone(),
                        index,
                        id,
                        self.node_id,
                        log,
                        open.state,
                        self.log_dir.high_watermark(&open.topic, index),
                        self.log_dir.clock().now_ms(),
                    )
                });
            let mut hosted = self.hosted.write().expect("replica map poisoned");
            match opened {
                Ok(p) => {
                    if let Some(o) = hosted.offline.remove(&open.key) {
                        tracing::info!(topic = %open.topic, partition = index, failures = o.failures, "an offline replica opened");
                    }
                    hosted.by_id.insert(open.key, Arc::new(p));
                    hosted.topic_ids.insert(open.topic, id);
                }
                Err(e) => {
                    let failures = hosted.offline.get(&open.key).map_or(0, |o| o.failures) + 1;
                    let retry_in_ms = offline_retry_delay_ms(failures);
                    tracing::error!(topic = %open.topic, partition = index, error = %e, failures, retry_in_ms, "cannot open a hosted partition; it is offline here until it opens");
                    hosted.offline.insert(
                        open.key,
                        OfflineReplica {
                            topic: open.topic,
                            index,
                            reason: e.to_string(),
                            failures,
                            retry_at_ms: self.log_dir.clock().now_ms() + retry_in_ms,
                        },
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Opens, updates or drops the replicas of `partitions` of `topic`, and with
    /// `configs_changed` pushes the topic's log config to every hosted partition of it.
    #[allow(clippy::too_many_arguments)]
    fn sync_topic(
        &self,
        hosted: &mut Hosted,
        work: &mut FileWork,
        image: &MetadataImage,
        topic: &TopicImage,
        partitions: &BTreeSet<i32>,
        config: &BrokerConfig,
        configs_changed: bool,
    ) {
        let overrides = image.configs_of(&ConfigResource::Topic(topic.name.clone()));
        let log_config = config.log_config(&overrides);
        let hw_min_isr = if config.eligible_leader_replicas() {
            config
                .election_defaults()
                .for_overrides(&overrides)
                .min_insync_replicas
        } else {
            1
        };
        if configs_changed {
            for ((id, index), p) in hosted.by_id.iter() {
                if *id == topic.topic_id {
                    p.set_config(log_config.clone());
                    if let Some(pimage) = topic.partitions.get(index) {
                        p.apply_state(
                            PartitionState::of(pimage, hw_min_isr),
                            self.log_dir.clock().now_ms(),
                        );
                    }
                }
            }
        }
        for index in partitions {
            let key = (topic.topic_id, *index);
            let Some(pimage) = topic.partitions.get(index) else {
                continue;
            };
            let state = PartitionState::of(pimage, hw_min_isr);
            let replica_here = state.replicas.contains(&self.node_id);
            match (hosted.by_id.get(&key), replica_here) {
                (Some(p), true) => {
                    p.apply_state(state, self.log_dir.clock().now_ms());
                }
                (Some(_), false) => {
                    // This broker is no longer a replica: its copy goes.
                    let p = hosted.by_id.remove(&key).expect("just found");
                    work.deletes.push((p, "a removed replica"));
                }
                (None, true) => work.opens.push(PendingOpen {
                    key,
                    topic: topic.name.clone(),
                    config: log_config.clone(),
                    state,
                }),
                (None, false) => {
                    hosted.offline.remove(&key);
                }
            }
        }
    }

    /// Drops every hosted partition of topic `id`; its data goes with `work`.
    fn remove_topic(hosted: &mut Hosted, work: &mut FileWork, name: &str, id: Uuid) {
        if hosted.topic_ids.get(name) == Some(&id) {
            hosted.topic_ids.remove(name);
        }
        hosted.offline.retain(|(topic_id, _), _| *topic_id != id);
        let keys: Vec<TopicIdPartition> = hosted
            .by_id
            .keys()
            .filter(|(topic_id, _)| *topic_id == id)
            .copied()
            .collect();
        for key in keys {
            let p = hosted.by_id.remove(&key).expect("just listed");
            work.deletes.push((p, "a deleted topic"));
        }
    }

    /// Writes the recovery-point, log-start-offset and high-watermark checkpoints and the producer-state
    /// snapshots of every partition (forgetting producers idle for `producer_expiration_ms`).
    pub fn write_checkpoints(
        &self,
        now_ms: i64,
        producer_expiration_ms: i64,
    ) -> Result<(), StorageError> {
        for p in self.all() {
            p.snapshot_producers(now_ms, producer_expiration_ms)?;
        }
        let entries: Vec<CheckpointEntry> =
            self.all().iter().map(|p| p.checkpoint_entry()).collect();
        self.log_dir.write_checkpoints(&entries)
    }

    /// Flushes every partition, checkpoints and marks the shutdown clean, naming the broker
    /// epoch this process had.
    pub fn shutdown(
        &self,
        now_ms: i64,
        producer_expiration_ms: i64,
        broker_epoch: Option<i64>,
    ) -> Result<(), StorageError> {
        for p in self.all() {
            p.flush()?;
        }
        self.write_checkpoints(now_ms, producer_expiration_ms)?;
        self.log_dir.mark_clean_shutdown(broker_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_metadata::{MetadataBatch, MetadataRecord};

    use crate::partition::{AppendOrigin, FetchIsolation};

    fn partition(topic_id: Uuid, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
        MetadataRecord::new_partition(topic_id, partition, replicas)
    }

    fn apply(
        image: &MetadataImage,
        records: Vec<MetadataRecord>,
    ) -> (MetadataImage, MetadataDelta) {
        let batch = MetadataBatch {
            base_offset: image.next_offset(),
            epoch: 0,
            records,
        };
        image.apply_batch(&batch).unwrap()
    }

    fn one_record_batch() -> Vec<u8> {
        crate::test_batches::batch(-1, -1, -1, 1, 0)
    }

    #[test]
    fn hosts_only_the_partitions_whose_replicas_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let rm = ReplicaManager::new(1, LogDir::open(dir.path(), crate::clock::system()).unwrap());
        let config = BrokerConfig::default();
        let id = Uuid::new_v4();
        let (image, delta) = apply(
            &MetadataImage::default(),
            vec![
                MetadataRecord::Topic {
                    name: "t".into(),
                    topic_id: id,
                },
                partition(id, 0, vec![1, 2]),
                partition(id, 1, vec![2, 3]),
                partition(id, 2, vec![3, 1]),
            ],
        );
        rm.apply_delta(&image, Scope::Delta(&delta), &config)
            .unwrap();
        assert_eq!(rm.all().len(), 2);
        assert!(rm.get("t", 1).is_none());
        let p0 = rm.get("t", 0).unwrap();
        let p2 = rm.get("t", 2).unwrap();
        assert_eq!((p0.index, p2.index), (0, 2));
        assert!(Arc::ptr_eq(&p2, &rm.get_by_id((id, 2)).unwrap()));
        assert!(p0.is_leader(), "first replica leads partition 0");
        assert!(!p2.is_leader(), "broker 3 leads partition 2");
        p0.append(&one_record_batch(), AppendOrigin::Client, 0)
            .unwrap();
        assert!(matches!(
            p2.append(&one_record_batch(), AppendOrigin::Client, 0),
            Err(crate::partition::AppendError::NotLeader)
        ));

        // Leadership of partition 2 moves here; partition 0 moves away from this broker.
        let (image, delta) = apply(
            &image,
            vec![
                MetadataRecord::PartitionChange {
                    topic_id: id,
                    partition: 2,
                    leader: Some(1),
                    isr: Some(vec![1]),
                    replicas: None,
                    elr: None,
                    adding_replicas: None,
                    removing_replicas: None,
                },
                MetadataRecord::PartitionChange {
                    topic_id: id,
                    partition: 0,
                    leader: Some(2),
                    isr: Some(vec![2]),
                    replicas: Some(vec![2]),
                    elr: None,
                    adding_replicas: None,
                    removing_replicas: None,
                },
            ],
        );
        rm.apply_delta(&image, Scope::Delta(&delta), &config)
            .unwrap();
        assert!(rm.get("t", 0).is_none(), "no longer a replica");
        assert!(!dir.path().join("t-0").exists(), "its data is gone");
        let p2 = rm.get("t", 2).unwrap();
        assert!(p2.is_leader());
        assert_eq!(p2.leader_epoch(), 1);
        assert_eq!(p2.isr_size(), 1);
        p2.append(&one_record_batch(), AppendOrigin::Client, 0)
            .unwrap();
        let read = p2
            .read(0, 1 << 20, true, FetchIsolation::HighWatermark)
            .unwrap();
        assert!(!read.records.is_empty());

        // The topic goes, with everything hosted of it.
        let (image, delta) = apply(&image, vec![MetadataRecord::RemoveTopic { topic_id: id }]);
        rm.apply_delta(&image, Scope::Delta(&delta), &config)
            .unwrap();
        assert!(rm.all().is_empty());
        assert!(rm.get("t", 2).is_none());
    }
}
