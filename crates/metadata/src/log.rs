//! The metadata log of the first, single-node release, read once to import it into the
//! metadata quorum.
//!
//! File format (`__cluster_metadata-0/metadata.log`): a sequence of frames, each
//! `length: u32 BE`, `crc32c: u32 BE` of the payload, then `length` bytes of payload: a JSON
//! array of unversioned records, one batch. Frames are replayed until the first torn or
//! corrupt one (a torn tail was never acknowledged); a frame with a valid CRC that does not
//! decode or apply stops the import, since it holds acknowledged changes. The file is not
//! changed: the broker renames it once the quorum holds its contents.

use std::path::{Path, PathBuf};

use crate::image::MetadataImage;
use crate::record::{MetadataBatch, MetadataRecord, StoredRecord};

/// Errors reading a first-release metadata log.
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

/// A single metadata batch larger than this is a bug, not a real change.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The image the first-release log at `path` builds.
pub fn read_legacy_log(path: &Path) -> Result<MetadataImage, MetadataLogError> {
    let contents = std::fs::read(path).map_err(|source| MetadataLogError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let inconsistent = |reason: String| MetadataLogError::Inconsistent {
        path: path.to_path_buf(),
        reason,
    };
    let mut image = MetadataImage::default();
    let mut valid_len = 0usize;
    while let Some((payload, frame_len)) =
        crate::frame::parse(&contents[valid_len..], FRAME_BYTES_MAX)
    {
        let stored: Vec<StoredRecord> = serde_json::from_slice(payload)
            .map_err(|e| inconsistent(format!("frame at byte {valid_len}: {e}")))?;
        let records = stored
            .into_iter()
            .map(StoredRecord::into_known)
            .collect::<Result<Vec<MetadataRecord>, String>>()
            .map_err(|e| inconsistent(format!("frame at byte {valid_len}: {e}")))?;
        if !records.is_empty() {
            let batch = MetadataBatch {
                base_offset: image.next_offset(),
                epoch: 0,
                records,
            };
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
            "the metadata log has a torn tail; it is not imported"
        );
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame as the first release wrote it.
    fn frame(json: &str) -> Vec<u8> {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(json.as_bytes()).to_be_bytes());
        frame.extend_from_slice(json.as_bytes());
        frame
    }

    const ID: &str = "7abbeb48-d304-4cfc-9230-59a4a5ea3355";

    fn first_release_log() -> Vec<u8> {
        let mut bytes = frame(
            r#"[{"type":"RegisterBroker","node_id":1,"host":"127.0.0.1","port":9092,"rack":null}]"#,
        );
        bytes.extend(frame(&format!(
            r#"[{{"type":"Topic","name":"greetings","topic_id":"{ID}"}},{{"type":"Partition","topic_id":"{ID}","partition":0,"replicas":[1],"isr":[1],"leader":1,"leader_epoch":0}},{{"type":"Config","resource":{{"Topic":"greetings"}},"name":"retention.ms","value":"1000"}}]"#
        )));
        bytes.extend(frame(r#"[{"type":"ProducerIds","next_block_start":1000}]"#));
        bytes
    }

    #[test]
    fn a_first_release_log_reads_into_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        std::fs::write(&path, first_release_log()).unwrap();
        let image = read_legacy_log(&path).unwrap();
        assert_eq!(image.offset, 4, "five records at offsets 0..=4");
        let t = image.topic("greetings").unwrap();
        assert_eq!(t.topic_id.to_string(), ID);
        assert_eq!(t.partitions[&0].partition_epoch, 0);
        assert_eq!(image.next_producer_id, 1000);
        assert_eq!(image.brokers.len(), 1);
    }

    #[test]
    fn a_torn_tail_is_left_out_and_a_corrupt_frame_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let whole = first_release_log();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let image = read_legacy_log(&path).unwrap();
        assert!(image.topic("greetings").is_some());
        assert_eq!(
            image.next_producer_id, 0,
            "the torn last frame is not there"
        );
        let mut corrupt = whole.clone();
        let last = corrupt.len() - 2;
        corrupt[last] ^= 0xff;
        std::fs::write(&path, &corrupt).unwrap();
        assert_eq!(read_legacy_log(&path).unwrap().next_producer_id, 0);
    }

    #[test]
    fn a_valid_frame_that_does_not_decode_stops_the_import() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        std::fs::write(
            &path,
            frame(&format!(
                r#"[{{"type":"Topic","version":7,"name":"t","topic_id":"{ID}"}}]"#
            )),
        )
        .unwrap();
        let err = read_legacy_log(&path).expect_err("refused");
        assert!(err.to_string().contains("newer than this release"), "{err}");
    }
}
