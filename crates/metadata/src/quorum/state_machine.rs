//! The Raft state machine: the metadata image, built by applying committed entries, and its
//! snapshots.
//!
//! Each committed proposal becomes the next [`MetadataBatch`] (base offset = the image's next
//! offset, epoch = the Raft term it was written in), is applied to the image and forwarded to
//! the broker. A proposal that does not apply is refused the same way on every voter, so
//! the replicated state stays the same everywhere. A snapshot is the image as records
//! (`MetadataImage::to_records`) with its offset and epoch, kept in `raft-snapshot.json` so
//! a restart starts from it and a voter far behind is sent it instead of the log.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Mutex};

use super::log_store::{read_json, write_json};
use super::{Applied, NodeId, QuorumEvent, TypeConfig};
use crate::image::MetadataImage;
use crate::record::{MetadataBatch, MetadataRecord, StoredRecord};

const SNAPSHOT_FILE: &str = "raft-snapshot.json";

/// The image as a snapshot carries it.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    offset: i64,
    epoch: i32,
    records: Vec<StoredRecord>,
}

/// A snapshot as kept on disk.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    /// `SnapshotData` as JSON.
    data: String,
}

/// The state machine handed to the Raft node (its snapshot builder shares it).
#[derive(Clone)]
pub struct MetadataStateMachine {
    inner: Arc<Mutex<Inner>>,
    shared: Arc<std::sync::RwLock<Arc<MetadataImage>>>,
}

struct Inner {
    dir: PathBuf,
    image: Arc<MetadataImage>,
    /// `image`, readable without the async lock.
    shared: Arc<std::sync::RwLock<Arc<MetadataImage>>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    events: mpsc::UnboundedSender<QuorumEvent>,
}

impl MetadataStateMachine {
    /// The applied image, shared with readers that do not take the async lock.
    pub fn image_cell(&self) -> Arc<std::sync::RwLock<Arc<MetadataImage>>> {
        self.shared.clone()
    }

    /// Starts from the snapshot in `dir`, if any, and announces that image as the first
    /// event; the Raft node then re-applies the committed entries after it.
    pub fn open(
        dir: &Path,
        events: mpsc::UnboundedSender<QuorumEvent>,
    ) -> std::io::Result<MetadataStateMachine> {
        let snapshot: Option<StoredSnapshot> = read_json(&dir.join(SNAPSHOT_FILE))?;
        let (image, last_applied, membership) = match &snapshot {
            Some(s) => (
                decode_image(&s.data).map_err(std::io::Error::other)?,
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
            ),
            None => (MetadataImage::default(), None, StoredMembership::default()),
        };
        let image = Arc::new(image);
        let _ = events.send(QuorumEvent::Image(image.clone()));
        let shared = Arc::new(std::sync::RwLock::new(image.clone()));
        Ok(MetadataStateMachine {
            shared: shared.clone(),
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                image,
                shared,
                last_applied,
                membership,
                snapshot,
                events,
            })),
        })
    }
}

fn encode_image(image: &MetadataImage) -> String {
    let data = SnapshotData {
        offset: image.offset,
        epoch: image.epoch,
        records: image
            .to_records()
            .into_iter()
            .map(StoredRecord::current)
            .collect(),
    };
    serde_json::to_string(&data).expect("snapshots serialize")
}

fn decode_image(data: &str) -> Result<MetadataImage, String> {
    let data: SnapshotData = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let records = data
        .records
        .into_iter()
        .map(StoredRecord::into_known)
        .collect::<Result<Vec<MetadataRecord>, String>>()?;
    MetadataImage::restore(data.offset, data.epoch, &records).map_err(|e| e.to_string())
}

impl Inner {
    fn set_image(&mut self, image: Arc<MetadataImage>) {
        *self.shared.write().expect("image lock poisoned") = image.clone();
        self.image = image;
    }

    /// Applies one committed proposal; the outcome is the same on every voter.
    fn apply_proposal(&mut self, log_id: LogId<NodeId>, stored: Vec<StoredRecord>) -> Applied {
        let records = stored
            .into_iter()
            .map(StoredRecord::into_known)
            .collect::<Result<Vec<MetadataRecord>, String>>()?;
        if records.is_empty() {
            return Err("an empty proposal".into());
        }
        let batch = MetadataBatch {
            base_offset: self.image.next_offset(),
            epoch: i32::try_from(log_id.leader_id.term).unwrap_or(i32::MAX),
            records,
        };
        let (next, _) = self.image.apply_batch(&batch).map_err(|e| {
            tracing::error!(index = log_id.index, error = %e, "a committed metadata batch does not apply; skipped on every voter");
            e.to_string()
        })?;
        self.set_image(Arc::new(next));
        let range = (batch.base_offset, batch.last_offset());
        // The receiver may be gone at shutdown; the image is still right.
        let _ = self.events.send(QuorumEvent::Batch(batch));
        Ok(range)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let data = encode_image(&inner.image);
        let snapshot_id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_json(&inner.dir, SNAPSHOT_FILE, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let bytes = stored.data.clone().into_bytes();
        inner.snapshot = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut inner = self.inner.lock().await;
        let mut outcomes = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Ok((inner.image.next_offset(), inner.image.offset)),
                EntryPayload::Normal(proposal) => {
                    inner.apply_proposal(entry.log_id, proposal.records)
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok((inner.image.next_offset(), inner.image.offset))
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = String::from_utf8(snapshot.into_inner())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let image = decode_image(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e))
        })?;
        let mut inner = self.inner.lock().await;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_json(&inner.dir, SNAPSHOT_FILE, &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(offset = image.offset, snapshot = %meta.snapshot_id, "installed a metadata snapshot");
        inner.set_image(Arc::new(image));
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(stored);
        let _ = inner.events.send(QuorumEvent::Image(inner.image.clone()));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone().into_bytes())),
        }))
    }
}
