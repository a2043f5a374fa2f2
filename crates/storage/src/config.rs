//! Per-log configuration.
//!
//! Exists to gather the topic-level settings that influence how a partition
//! log is written (segment rolling, index density, flushing, size limits and
//! timestamp handling). Defaults match Apache Kafka's broker defaults.

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
        }
    }
}
