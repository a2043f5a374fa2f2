//! Client errors. Every error is `Clone` because one batch failure is reported to every
//! record of the batch.

use kafka_protocol::error::ResponseError;

/// A configuration problem, always naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required configuration `{0}`")]
    Missing(&'static str),
    #[error("invalid value {value:?} for configuration `{key}`: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unknown configuration `{0}`")]
    Unknown(String),
}

/// Anything that can go wrong in the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Network-level failure (connect, read, write, peer closed).
    #[error("network error talking to {addr}: {message}")]
    Network { addr: String, message: String },
    /// A request was not answered within `request.timeout.ms`.
    #[error("request to {addr} timed out after {timeout_ms} ms")]
    RequestTimeout { addr: String, timeout_ms: u64 },
    /// Encoding or decoding a protocol message failed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker supports no version of an API that this client also supports.
    #[error("broker {addr} supports no usable version of {api}")]
    UnsupportedApi { addr: String, api: String },
    /// An error code returned by the broker.
    #[error("broker returned {error:?}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        error: ResponseError,
        message: Option<String>,
    },
    /// `send` could not get buffer space (or metadata) within `max.block.ms`.
    #[error("{what} not available within max.block.ms = {max_block_ms} ms")]
    MaxBlockTimeout { what: String, max_block_ms: u64 },
    /// The record was not acknowledged within `delivery.timeout.ms`.
    #[error("record for {topic}-{partition} expired: not acknowledged within delivery.timeout.ms = {delivery_timeout_ms} ms ({last_error})")]
    DeliveryTimeout {
        topic: String,
        partition: i32,
        delivery_timeout_ms: u64,
        last_error: String,
    },
    /// The record can never be sent (bigger than `max.request.size` or `buffer.memory`).
    #[error("record of {size} bytes exceeds {key} = {limit}")]
    RecordTooLarge {
        size: usize,
        key: &'static str,
        limit: usize,
    },
    /// The topic name or explicit partition is unusable.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// The producer was closed (or closing) when the call was made.
    #[error("producer is closed")]
    Closed,
    /// `flush` or `close` did not finish in time; records are still pending.
    #[error("{op} timed out with {pending} record(s) still unacknowledged")]
    Timeout { op: &'static str, pending: usize },
    /// A consumer partition has no committed offset and `auto.offset.reset` is `none`.
    #[error("no committed offset for {topic}-{partition} and auto.offset.reset = none")]
    NoOffsetForPartition { topic: String, partition: i32 },
    /// A consumer's fetch position is out of range and `auto.offset.reset` is `none`.
    #[error("fetch position {offset} of {topic}-{partition} is out of range and auto.offset.reset = none")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A key or value could not be serialized or deserialized.
    #[error("serialization error: {0}")]
    Serialization(String),
    /// A fetched record's key or value could not be deserialized; the consumer's position
    /// stays at this record until the application seeks past it.
    #[error("cannot deserialize record {topic}-{partition}@{offset}: {message}")]
    RecordDeserialization {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    /// The call is not valid in the consumer's current state.
    #[error("illegal state: {0}")]
    IllegalState(String),
    /// A bootstrap server or broker address could not be resolved / reached at all.
    #[error("no broker reachable: {0}")]
    NoBrokerAvailable(String),
    /// Another producer with the same `transactional.id` took over (PRODUCER_FENCED, or
    /// INVALID_PRODUCER_EPOCH from the transaction coordinator). Fatal: close the producer.
    #[error("producer fenced: {0}")]
    ProducerFenced(String),
    /// The transactional producer hit an error it cannot recover from (e.g. authorization,
    /// an unknown producer id mapping). Fatal: close the producer.
    #[error("fatal transactional error: {0}")]
    TransactionFatal(Box<Error>),
    /// A record or request of the current transaction failed: the transaction cannot commit.
    /// Call `abort_transaction`, then a new transaction may retry the work.
    #[error("transaction must be aborted: {0}")]
    TransactionAbortable(Box<Error>),
    /// The record was not sent because its transaction was aborted.
    #[error("record dropped: its transaction was aborted")]
    TransactionAborted,
    /// A transactional call made in the wrong state (e.g. `send` outside a transaction,
    /// `commit_transaction` without `begin_transaction`).
    #[error("invalid transaction state: {0}")]
    InvalidTransactionState(String),
    /// A transactional call did not finish in time. Retriable: calling the same method again
    /// resumes it.
    #[error("{op} did not complete within {timeout_ms} ms")]
    TransactionTimeout { op: &'static str, timeout_ms: u64 },
}

impl Error {
    pub(crate) fn broker(code: i16, message: Option<String>) -> Option<Error> {
        ResponseError::try_from_code(code).map(|error| Error::Broker { error, message })
    }

    /// The broker error behind this error, if any.
    pub fn response_error(&self) -> Option<ResponseError> {
        match self {
            Error::Broker { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Whether the transactional producer must be closed (fenced or another fatal error).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::ProducerFenced(_) | Error::TransactionFatal(_))
    }

    /// Whether the current transaction must be aborted (after which the producer is usable).
    pub fn is_abortable(&self) -> bool {
        matches!(self, Error::TransactionAbortable(_))
    }

    /// Whether trying again (after a metadata refresh / backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Network { .. }
            | Error::RequestTimeout { .. }
            | Error::TransactionTimeout { .. } => true,
            Error::Broker { error, .. } => error.is_retriable(),
            _ => false,
        }
    }

    /// Whether the error means our metadata is stale.
    pub fn invalidates_metadata(&self) -> bool {
        matches!(
            self.response_error(),
            Some(
                ResponseError::NotLeaderOrFollower
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::LeaderNotAvailable
            )
        ) || matches!(self, Error::Network { .. } | Error::RequestTimeout { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
