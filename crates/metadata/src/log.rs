//! The durable metadata log: batches of [`MetadataRecord`]s appended to one file.
//!
//! File format: a sequence of frames, each `length: u32 BE`, `crc32c: u32 BE` of the
//! payload, then `length` bytes of payload (a JSON array of records: one batch, applied
//! atomically). Every append is fsynced before it returns, so an acknowledged metadata change
//! survives a crash. On open, frames are replayed until the first torn or corrupt one; the
//! file is truncated there (a torn frame was never acknowledged).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::image::MetadataImage;
use crate::record::MetadataRecord;

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
        while let Some((records, frame_len)) = parse_frame(&contents[valid_len..]) {
            image = image
                .apply_all(&records)
                .map_err(|e| MetadataLogError::Inconsistent {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
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
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataLogError> {
        let payload = serde_json::to_vec(records).expect("metadata records always serialize");
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

/// Parses one complete, valid frame at the start of `buf`: its records and its length.
fn parse_frame(buf: &[u8]) -> Option<(Vec<MetadataRecord>, usize)> {
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
    let records = serde_json::from_slice(payload).ok()?;
    Some((records, FRAME_HEADER_BYTES + len))
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

    #[test]
    fn replays_and_drops_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/metadata.log");
        {
            let (mut log, image) = MetadataLog::open(&path).unwrap();
            assert!(image.topics.is_empty());
            log.append(&[topic("a")]).unwrap();
            log.append(&[topic("b"), topic("c")]).unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        // Tear the last frame.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let (mut log, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(image.records_applied, 1);
        log.append(&[topic("d")]).unwrap();
        drop(log);
        let (_, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.topics.keys().collect::<Vec<_>>(), vec!["a", "d"]);
    }

    #[test]
    fn corrupt_frame_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        {
            let (mut log, _) = MetadataLog::open(&path).unwrap();
            log.append(&[topic("a")]).unwrap();
            log.append(&[topic("b")]).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, image) = MetadataLog::open(&path).unwrap();
        assert_eq!(image.topics.len(), 1);
    }
}
