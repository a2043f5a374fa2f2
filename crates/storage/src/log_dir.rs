//! One `log.dirs` entry: partition directories, the clean-shutdown marker
//! and the offset checkpoint files.
//!
//! Exists so that the broker can tell, per log directory, whether the
//! previous run shut down cleanly and how far each partition was known to
//! be fsynced (recovery point) and where each log starts (log start offset).
//!
//! File formats (Kafka's text checkpoints): `recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint` and `replication-offset-checkpoint` (the high
//! watermarks, so a restarted replica does not expose what was never committed) contain a line `0`, a line with the
//! entry count, then `<topic> <partition> <offset>` per line. The marker
//! `.kafka_cleanshutdown`, whose presence means the previous run closed every
//! log cleanly, holds `{"version":0,"broker_epoch":N}` as Kafka's does: the
//! broker epoch that run had, which the next registration sends so the
//! controller knows the replicas here lost nothing (KIP-966). An empty marker
//! (an older release, or a node that never registered) is clean with no epoch.
//!
//! Crash behaviour: checkpoints are replaced atomically (tmp file + fsync +
//! rename + directory fsync). The marker is removed as soon as the directory
//! is opened (and the removal fsynced), so a crash during this run is seen
//! as unclean by the next one; it is only recreated by
//! [`LogDir::mark_clean_shutdown`] after all logs were closed.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::clock::SharedClock;
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::log::{Log, Recovery};
use crate::open_files::{OpenFiles, DEFAULT_OPEN_FILES};

pub const CLEAN_SHUTDOWN_MARKER: &str = ".kafka_cleanshutdown";
pub const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_OFFSET_CHECKPOINT: &str = "log-start-offset-checkpoint";
pub const HIGH_WATERMARK_CHECKPOINT: &str = "replication-offset-checkpoint";

/// One partition's line in each checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointEntry {
    pub topic: String,
    pub partition: i32,
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

impl CheckpointEntry {
    /// The entry of `log` (partition `partition` of `topic`) with its high watermark.
    pub fn of(topic: &str, partition: i32, log: &Log, high_watermark: i64) -> CheckpointEntry {
        CheckpointEntry {
            topic: topic.to_string(),
            partition,
            recovery_point: log.recovery_point(),
            log_start_offset: log.log_start_offset(),
            high_watermark,
        }
    }
}

type Offsets = HashMap<(String, i32), i64>;

/// One log directory.
#[derive(Debug)]
pub struct LogDir {
    path: PathBuf,
    clean_shutdown: bool,
    /// The broker epoch the clean-shutdown marker named.
    previous_broker_epoch: Option<i64>,
    recovery_points: Offsets,
    log_start_offsets: Offsets,
    high_watermarks: Offsets,
    /// Handed to every log opened here.
    clock: SharedClock,
    /// The open-file budget of every log opened here.
    files: OpenFiles,
}

/// Splits `<topic>-<partition>` at the last '-'.
pub fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    if topic.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_owned(), partition.parse().ok()?))
}

fn read_offsets(path: &Path) -> Result<Offsets, StorageError> {
    let mut out = HashMap::new();
    for line in checkpoint::read(path)? {
        let parsed = match line.as_slice() {
            [t, p, o] => p
                .parse::<i32>()
                .ok()
                .zip(o.parse::<i64>().ok())
                .map(|(p, o)| (t, p, o)),
            _ => None,
        };
        let (topic, partition, offset) = parsed.ok_or_else(|| {
            StorageError::CorruptMessage(format!(
                "malformed checkpoint entry {line:?} in {}",
                path.display()
            ))
        })?;
        out.insert((topic.clone(), partition), offset);
    }
    Ok(out)
}

impl LogDir {
    /// Opens (creating) the directory, consumes the clean-shutdown marker
    /// and loads both checkpoints.
    pub fn open(path: &Path, clock: SharedClock) -> Result<LogDir, StorageError> {
        fs::create_dir_all(path)?;
        let marker = path.join(CLEAN_SHUTDOWN_MARKER);
        let previous_broker_epoch = match fs::read_to_string(&marker) {
            Ok(text) => marker_broker_epoch(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let clean_shutdown = match fs::remove_file(&marker) {
            Ok(()) => {
                checkpoint::sync_dir(path)?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e.into()),
        };
        Ok(LogDir {
            path: path.to_path_buf(),
            clean_shutdown,
            previous_broker_epoch: previous_broker_epoch.filter(|_| clean_shutdown),
            recovery_points: read_offsets(&path.join(RECOVERY_POINT_CHECKPOINT))?,
            log_start_offsets: read_offsets(&path.join(LOG_START_OFFSET_CHECKPOINT))?,
            high_watermarks: read_offsets(&path.join(HIGH_WATERMARK_CHECKPOINT))?,
            clock,
            files: OpenFiles::new(DEFAULT_OPEN_FILES),
        })
    }

    /// Opens this directory's logs under `files` (shared with the broker's other logs).
    pub fn with_open_files(mut self, files: OpenFiles) -> LogDir {
        self.files = files;
        self
    }

    /// The open-file budget of this directory's logs.
    pub fn open_files(&self) -> &OpenFiles {
        &self.files
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the previous run left the clean-shutdown marker.
    pub fn was_clean_shutdown(&self) -> bool {
        self.clean_shutdown
    }

    /// The broker epoch the previous run shut down cleanly with, if it did and had one.
    pub fn previous_broker_epoch(&self) -> Option<i64> {
        self.previous_broker_epoch
    }

    /// Checkpointed recovery point of a partition, if any.
    pub fn recovery_point(&self, topic: &str, partition: i32) -> Option<i64> {
        self.recovery_points
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// Checkpointed log start offset of a partition, if any.
    pub fn log_start_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.log_start_offsets
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// Checkpointed high watermark of a partition, if any.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.high_watermarks
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// The clock handed to every log opened here.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// Directory of a partition inside this log dir.
    pub fn partition_path(&self, topic: &str, partition: i32) -> PathBuf {
        self.path.join(format!("{topic}-{partition}"))
    }

    /// Opens (creating if needed) a partition's log with the recovery
    /// information of this directory.
    pub fn open_log(
        &self,
        topic: &str,
        partition: i32,
        config: LogConfig,
    ) -> Result<Log, StorageError> {
        let recovery = Recovery {
            clean_shutdown: self.clean_shutdown,
            recovery_point: self.recovery_point(topic, partition).unwrap_or(0),
            log_start_offset: self.log_start_offset(topic, partition),
            clock: self.clock.clone(),
            files: self.files.clone(),
        };
        Log::open(self.partition_path(topic, partition), config, recovery)
    }

    /// `(topic, partition)` of every partition directory present.
    pub fn partition_dirs(&self) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().and_then(parse_partition_dir))
            .collect();
        out.sort();
        out
    }

    /// Atomically rewrites the three checkpoints from one entry per partition.
    pub fn write_checkpoints(&self, entries: &[CheckpointEntry]) -> Result<(), StorageError> {
        for e in entries {
            assert!(
                !e.topic.contains(char::is_whitespace),
                "topic names contain no whitespace"
            );
        }
        let lines = |offset: fn(&CheckpointEntry) -> i64| -> Vec<String> {
            entries
                .iter()
                .map(|e| format!("{} {} {}", e.topic, e.partition, offset(e)))
                .collect()
        };
        checkpoint::write(
            &self.path.join(RECOVERY_POINT_CHECKPOINT),
            &lines(|e| e.recovery_point),
        )?;
        checkpoint::write(
            &self.path.join(LOG_START_OFFSET_CHECKPOINT),
            &lines(|e| e.log_start_offset),
        )?;
        checkpoint::write(
            &self.path.join(HIGH_WATERMARK_CHECKPOINT),
            &lines(|e| e.high_watermark),
        )?;
        Ok(())
    }

    /// Creates the clean-shutdown marker naming `broker_epoch` (if the broker had one);
    /// call after every log was closed and the checkpoints were written.
    pub fn mark_clean_shutdown(&self, broker_epoch: Option<i64>) -> Result<(), StorageError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path.join(CLEAN_SHUTDOWN_MARKER))?;
        if let Some(epoch) = broker_epoch {
            io::Write::write_all(
                &mut f,
                format!("{{\"version\":0,\"broker_epoch\":{epoch}}}").as_bytes(),
            )?;
        }
        f.sync_all()?;
        checkpoint::sync_dir(&self.path)?;
        Ok(())
    }
}

/// The `broker_epoch` of a clean-shutdown marker's text, if it names one.
fn marker_broker_epoch(text: &str) -> Option<i64> {
    let rest = &text[text.find("\"broker_epoch\"")? + "\"broker_epoch\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| c != '-' && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_dir_names() {
        assert_eq!(
            parse_partition_dir("my-topic-12"),
            Some(("my-topic".into(), 12))
        );
        assert_eq!(parse_partition_dir("t-0"), Some(("t".into(), 0)));
        assert_eq!(parse_partition_dir("t-x"), None);
        assert_eq!(parse_partition_dir("-3"), None);
        assert_eq!(parse_partition_dir("nodash"), None);
        assert_eq!(parse_partition_dir("t--1"), Some(("t-".into(), 1)));
        assert_eq!(parse_partition_dir("t-"), None);
    }

    #[test]
    fn marker_and_checkpoints() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("logs");
        let ld = LogDir::open(&root, crate::clock::system()).unwrap();
        assert!(!ld.was_clean_shutdown());
        let entry = |topic: &str, partition, recovery_point, log_start_offset, high_watermark| {
            CheckpointEntry {
                topic: topic.into(),
                partition,
                recovery_point,
                log_start_offset,
                high_watermark,
            }
        };
        ld.write_checkpoints(&[entry("a-b", 3, 100, 7, 90), entry("c", 0, 5, 0, 5)])
            .unwrap();
        assert_eq!(
            fs::read_to_string(root.join(RECOVERY_POINT_CHECKPOINT)).unwrap(),
            "0\n2\na-b 3 100\nc 0 5\n"
        );
        fs::create_dir(root.join("a-b-3")).unwrap();
        fs::create_dir(root.join("c-0")).unwrap();
        fs::write(root.join("not-a-partition"), b"").unwrap();
        ld.mark_clean_shutdown(Some(42)).unwrap();
        drop(ld);

        let ld = LogDir::open(&root, crate::clock::system()).unwrap();
        assert!(ld.was_clean_shutdown());
        assert_eq!(ld.previous_broker_epoch(), Some(42));
        assert!(!root.join(CLEAN_SHUTDOWN_MARKER).exists());
        assert_eq!(ld.recovery_point("a-b", 3), Some(100));
        assert_eq!(ld.log_start_offset("a-b", 3), Some(7));
        assert_eq!(ld.high_watermark("a-b", 3), Some(90));
        assert_eq!(ld.recovery_point("c", 0), Some(5));
        assert_eq!(ld.recovery_point("c", 1), None);
        assert_eq!(
            ld.partition_dirs(),
            vec![("a-b".into(), 3), ("c".into(), 0)]
        );
        drop(ld);

        // The marker was consumed: the next open sees an unclean shutdown.
        let ld = LogDir::open(&root, crate::clock::system()).unwrap();
        assert!(!ld.was_clean_shutdown());
        assert_eq!(ld.previous_broker_epoch(), None);
        // An empty marker (an older release) is clean without an epoch.
        ld.mark_clean_shutdown(None).unwrap();
        drop(ld);
        let ld = LogDir::open(&root, crate::clock::system()).unwrap();
        assert!(ld.was_clean_shutdown());
        assert_eq!(ld.previous_broker_epoch(), None);
        assert_eq!(
            marker_broker_epoch(r#"{"version":0, "broker_epoch" : -7}"#),
            Some(-7)
        );
    }
}
