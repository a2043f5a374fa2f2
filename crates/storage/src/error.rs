//! Storage error type.
//!
//! Exists so that the broker can map storage failures onto Kafka error codes:
//! `CorruptMessage` -> CORRUPT_MESSAGE, `MessageTooLarge` -> MESSAGE_TOO_LARGE,
//! `InvalidRecord` -> INVALID_RECORD, `OffsetOutOfRange` -> OFFSET_OUT_OF_RANGE,
//! and `Io` -> KAFKA_STORAGE_ERROR (or similar).

/// Errors returned by the storage layer.
#[derive(thiserror::Error, Debug)]
pub enum StorageError {
    /// A record batch failed structural or CRC validation.
    #[error("corrupt message: {0}")]
    CorruptMessage(String),
    /// A record batch (or record set) exceeds the configured size limit.
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// The record set is well-formed but semantically invalid.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A read asked for an offset outside `[log_start, log_end]`.
    #[error("offset {offset} is out of range; log start offset is {log_start}, log end offset is {log_end}")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// An underlying I/O failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
