//! The partitions this broker hosts, kept in step with the metadata image.
//!
//! Every metadata change is followed by [`ReplicaManager::sync`], which opens logs for new
//! partitions, applies changed topic configs and deletes the data of removed topics. Request
//! handlers only look partitions up.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use gregor_metadata::{ConfigResource, MetadataImage};
use gregor_storage::error::StorageError;
use gregor_storage::log_dir::LogDir;

use crate::config::BrokerConfig;
use crate::partition::Partition;

/// Lookup table of hosted partitions: topic name → partitions by index.
pub struct ReplicaManager {
    node_id: i32,
    log_dir: LogDir,
    partitions: RwLock<HashMap<String, Vec<Arc<Partition>>>>,
}

impl ReplicaManager {
    pub fn new(node_id: i32, log_dir: LogDir) -> ReplicaManager {
        ReplicaManager {
            node_id,
            log_dir,
            partitions: RwLock::new(HashMap::new()),
        }
    }

    pub fn log_dir(&self) -> &LogDir {
        &self.log_dir
    }

    /// The partition `topic`/`index`, if hosted here.
    pub fn get(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let map = self.partitions.read().expect("replica map poisoned");
        map.get(topic)?.get(usize::try_from(index).ok()?).cloned()
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        let map = self.partitions.read().expect("replica map poisoned");
        map.values().flatten().cloned().collect()
    }

    /// Brings the hosted partitions in line with `image`.
    pub fn sync(&self, image: &MetadataImage, config: &BrokerConfig) -> Result<(), StorageError> {
        let mut map = self.partitions.write().expect("replica map poisoned");
        // Topics gone (or re-created under a new id) lose their data.
        let removed: Vec<String> = map
            .iter()
            .filter(|(name, parts)| {
                image
                    .topic(name)
                    .is_none_or(|t| parts.first().is_some_and(|p| p.topic_id != t.topic_id))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in removed {
            for p in map.remove(&name).unwrap_or_default() {
                p.delete_files()?;
            }
        }
        for topic in image.topics.values() {
            let overrides = image.configs_of(&ConfigResource::Topic(topic.name.clone()));
            let log_config = config.log_config(&overrides);
            let parts = map.entry(topic.name.clone()).or_default();
            for p in parts.iter() {
                p.set_config(log_config.clone());
            }
            for (index, pimage) in topic.partitions.range(parts.len() as i32..) {
                assert_eq!(
                    *index as usize,
                    parts.len(),
                    "partitions are numbered densely"
                );
                if !pimage.replicas.contains(&self.node_id) {
                    continue;
                }
                let log = self
                    .log_dir
                    .open_log(&topic.name, *index, log_config.clone())?;
                parts.push(Arc::new(Partition::new(
                    topic.name.clone(),
                    *index,
                    topic.topic_id,
                    log,
                    pimage.leader_epoch,
                    pimage.isr.len(),
                )));
            }
        }
        Ok(())
    }

    /// Writes recovery-point and log-start-offset checkpoints and the producer-state
    /// snapshots of every partition (forgetting producers idle for `producer_expiration_ms`).
    pub fn write_checkpoints(&self, producer_expiration_ms: i64) -> Result<(), StorageError> {
        let now = crate::handlers::now_ms();
        for p in self.all() {
            p.snapshot_producers(now, producer_expiration_ms)?;
        }
        let entries: Vec<(String, i32, i64, i64)> = self
            .all()
            .iter()
            .map(|p| {
                let (recovery_point, start) = p.checkpoint_offsets();
                (p.topic.clone(), p.index, recovery_point, start)
            })
            .collect();
        self.log_dir.write_checkpoints(&entries)
    }

    /// Flushes every partition, checkpoints and marks the shutdown clean.
    pub fn shutdown(&self, producer_expiration_ms: i64) -> Result<(), StorageError> {
        for p in self.all() {
            p.flush()?;
        }
        self.write_checkpoints(producer_expiration_ms)?;
        self.log_dir.mark_clean_shutdown()
    }
}
