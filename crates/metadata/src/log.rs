//! The durable metadata log: batches of [`MetadataRecord`]s appended to one file.
//!
//! File format: a sequence of frames, each `length: u32 BE`, `crc32c: u32 BE` of the
//! payload, then `length` bytes of payload: one batch, applied atomically, as a JSON object
//! `{"base_offset": N, "epoch": E, "records": [...]}` of versioned records. Files written
//! before batches had offsets hold a bare JSON array of unversioned records per frame; such a
//! frame reads as a batch at the next offset with epoch 0. Every append is fsynced before it
//! returns, so an acknowledged metadata change survives a crash. On open, frames are replayed
//! until the first torn or corrupt one; the file is truncated there (a torn frame was never
//! acknowledged). A valid frame whose batch does not apply stops the open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image::MetadataImage;
use crate::record::{MetadataBatch, MetadataRecord, StoredRecord};

/// Errors reading or writing the metadata log.
#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    #[error("metadata log I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata log {path} is inconsistent: {reason}")]
    Inconsistent { path: PathBuf, reason: String },
}

const FRAME_HEADER_BYTES: usize = 8;
/// A single metadata batch larger than this is a bug, not a real change.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The append-only metadata log file.
pub struct MetadataLog {
    path: PathBuf,
    file: File,
}

impl MetadataLog {
    /// Opens (or creates) the log at `path`, replays it and returns the image it builds.
    pub fn open(path: &Path) -> Result<(MetadataLog, MetadataImage), MetadataLogError> {
        let io = |source| MetadataLogError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(io)?;
        let mut image = MetadataImage::default();
        let mut valid_len = 0usize;
        let inconsistent = |reason: String| MetadataLogError::Inconsistent {
            path: path.to_path_buf(),
            reason,
        };
        while let Some((payload, frame_len)) = parse_frame(&contents[valid_len..]) {
            let batch = decode_batch(payload, image.next_offset())
                .map_err(|e| inconsistent(format!("frame at byte {valid_len}: {e}")))?;
            if let Some(batch) = batch {
                image = image
                    .apply_batch(&batch)
                    .map_err(|e| inconsistent(e.to_string()))?
                    .0;
            }
            valid_len += frame_len;
        }
        if valid_len < contents.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = contents.len() - valid_len,
                "metadata log had a torn tail; truncating it"
            );
            file.set_len(valid_len as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok((
            MetadataLog {
                path: path.to_path_buf(),
                file,
            },
            image,
        ))
    }

    /// Appends one batch durably (fsync) before returning.
    pub fn append(&mut self, batch: &MetadataBatch) -> Result<(), MetadataLogError> {
        let payload = encode_batch(batch);
        assert!(payload.len() <= FRAME_BYTES_MAX, "metadata batch too large");
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        frame.extend_from_slice(&payload);
        let io = |source| MetadataLogError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&frame).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// A batch as stored in a frame.
#[derive(Serialize, Deserialize)]
struct StoredBatch {
    base_offset: i64,
    epoch: i32,
    records: Vec<StoredRecord>,
}

fn encode_batch(batch: &MetadataBatch) -> Vec<u8> {
    let stored = StoredBatch {
        base_offset: batch.base_offset,
        epoch: batch.epoch,
        records: batch
            .records
            .iter()
            .cloned()
            .map(StoredRecord::current)
            .collect(),
    };
    serde_json::to_vec(&stored).expect("metadata records always serialize")
}

/// The batch of a valid frame's payload; `next_offset` places a batch of the first format
/// (a bare array, no offsets). `Ok(None)`: an empty old-format frame, which changes nothing.
fn decode_batch(payload: &[u8], next_offset: i64) -> Result<Option<MetadataBatch>, String> {
    let (base_offset, epoch, stored) = if payload.first() == Some(&b'[') {
        let records: Vec<StoredRecord> =
            serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        (next_offset, 0, records)
    } else {
        let batch: StoredBatch = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        (batch.base_offset, batch.epoch, batch.records)
    };
    let records = stored
        .into_iter()
        .map(StoredRecord::into_known)
        .collect::<Result<Vec<MetadataRecord>, String>>()?;
    if records.is_empty() {
        return Ok(None);
    }
    Ok(Some(MetadataBatch {
        base_offset,
        epoch,
        records,
    }))
}

/// Parses one complete frame with a valid CRC at the start of `buf`: its payload and length.
fn parse_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    if buf.len() < FRAME_HEADER_BYTES {
        return None;
    }
    let len = u32::from_be_bytes(buf[0..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    if len > FRAME_BYTES_MAX || buf.len() < FRAME_HEADER_BYTES + len {
        return None;
    }
    let payload = &buf[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    Some((payload, FRAME_HEADER_BYTES + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: Uuid::new_v4(),
        }
    }

    /// Appends `records` as the next batch and returns the image after it.
    fn append(
        log: &mut MetadataLog,
        image: &MetadataImage,
        records: Vec<MetadataRecord>,
    ) -> MetadataImage {
        let batch = MetadataBatch {
            base_offset: image.next_offset(),
            epoch: 0,
            records,
        };
        log.append(&batch).unwrap();
        image.apply_batch(&batch).unwrap().0
    }

    #[test]
    fn replays_and_drops_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/metadata.log");
        {
            let (mut log, image) = MetadataLog::open(&path).unwrap();
            assert!(image.topics.is_empty());
            let image = append(&mut log, &image, vec![topic("a")]);
            append(&mut log, &image, vec![topic("b"), topic("c")]);
        }
        let full = std::fs::metadata(&path).unwrap().len();
        // Tear the last frame.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let (mut log, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(image.offset, 0);
        append(&mut log, &image, vec![topic("d")]);
        drop(log);
        let (_, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), vec!["a", "d"]);
        assert_eq!(image.offset, 1);
    }

    #[test]
    fn corrupt_frame_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        {
            let (mut log, image) = MetadataLog::open(&path).unwrap();
            let image = append(&mut log, &image, vec![topic("a")]);
            append(&mut log, &image, vec![topic("b")]);
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.topics.len(), 1);
    }

    /// One frame as the first release wrote it: a bare JSON array of unversioned records.
    fn old_frame(json: &str) -> Vec<u8> {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(json.as_bytes()).to_be_bytes());
        frame.extend_from_slice(json.as_bytes());
        frame
    }

    #[test]
    fn files_of_the_first_format_still_read_and_grow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let id = "7abbeb48-d304-4cfc-9230-59a4a5ea3355";
        let mut bytes = old_frame(
            r#"[{"type":"RegisterBroker","node_id":1,"host":"127.0.0.1","port":9092,"rack":null}]"#,
        );
        bytes.extend(old_frame(&format!(
            r#"[{{"type":"Topic","name":"greetings","topic_id":"{id}"}},{{"type":"Partition","topic_id":"{id}","partition":0,"replicas":[1],"isr":[1],"leader":1,"leader_epoch":0}},{{"type":"Config","resource":{{"Topic":"greetings"}},"name":"retention.ms","value":"1000"}}]"#
        )));
        bytes.extend(old_frame(
            r#"[{"type":"ProducerIds","next_block_start":1000}]"#,
        ));
        std::fs::write(&path, &bytes).unwrap();

        let (mut log, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.offset, 4, "five records at offsets 0..=4");
        let t = image.topic("greetings").unwrap();
        assert_eq!(t.topic_id.to_string(), id);
        assert_eq!(t.partitions[&0].partition_epoch, 0);
        assert_eq!(image.next_producer_id, 1000);
        let grown = append(&mut log, &image, vec![topic("later")]);
        assert_eq!(grown.offset, 5);
        drop(log);
        let (_, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.offset, 5);
        assert!(image.topic("later").is_some() && image.topic("greetings").is_some());
    }

    #[test]
    fn a_valid_frame_that_does_not_decode_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        std::fs::write(&path, old_frame(r#"[{"type":"Topic","version":7,"name":"t","topic_id":"7abbeb48-d304-4cfc-9230-59a4a5ea3355"}]"#)).unwrap();
        let err = MetadataLog::open(&path).err().expect("refused");
        assert!(err.to_string().contains("newer than this release"), "{err}");
        assert!(
            std::fs::metadata(&path).unwrap().len() > 0,
            "nothing was truncated"
        );
    }
}
