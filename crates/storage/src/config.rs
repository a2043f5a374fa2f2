//! Per-log configuration.
//!
//! Exists to gather the topic-level settings that influence how a partition
//! log is written (segment rolling, index density, flushing, size limits and
//! timestamp handling, retention and compaction). Defaults match Apache Kafka's broker defaults.

/// Which timestamp is stored in a batch's `maxTimestamp` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Keep the producer-supplied timestamps (`message.timestamp.type=CreateTime`).
    #[default]
    CreateTime,
    /// Overwrite with the broker's clock at append time (`LogAppendTime`).
    LogAppendTime,
}

/// Settings for one partition log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this.
    pub segment_ms: u64,
    /// `index.interval.bytes`: bytes between two offset-index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fsync after this many messages (`u64::MAX` = never).
    pub flush_interval_messages: u64,
    /// `flush.ms`: fsync when this much time passed since the last flush.
    pub flush_interval_ms: u64,
    /// `max.message.bytes`: largest accepted record batch.
    pub max_message_bytes: u64,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `retention.ms`: delete segments whose newest batch is older than
    /// this (-1 = unlimited).
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the log would
    /// still hold at least this many bytes without them (-1 = unlimited).
    pub retention_bytes: i64,
    /// `file.delete.delay.ms`: how long the `.deleted` files of a removed
    /// segment are kept before they are unlinked.
    pub file_delete_delay_ms: u64,
    /// `cleanup.policy` contains `delete`.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long tombstones survive compaction.
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`: a segment is compacted only when its newest
    /// batch is at least this old.
    pub min_compaction_lag_ms: u64,
    /// `max.compaction.lag.ms`: a dirty segment older than this forces a
    /// compaction whatever the dirty ratio.
    pub max_compaction_lag_ms: u64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: u64::MAX,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            file_delete_delay_ms: 60_000,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: u64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}
