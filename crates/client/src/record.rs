//! What a producer sends and what it gets back: the record, the metadata of its write, and
//! the topic-partition pair batches are keyed by. A leaf, shared by the producer's façade
//! and its internals (accumulator, interceptors, sender) so they need not import each other.

use bytes::Bytes;

/// A topic and partition.
pub(crate) type Tp = (String, i32);

/// A record to send. Keys and values are bytes unless the producer has other serializers
/// (see [`ProducerBuilder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord<K = Bytes, V = Bytes> {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<K>,
    pub value: Option<V>,
    /// Header names must be distinct: the batch encoder keeps one value per name.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation time in ms since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl<K, V> Default for ProducerRecord<K, V> {
    fn default() -> Self {
        ProducerRecord {
            topic: String::new(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }
}

impl ProducerRecord {
    /// A keyless record with `value`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord::typed(topic, None, Some(value.into()))
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }
}

impl<K, V> ProducerRecord<K, V> {
    /// A record with a key and value of the producer's types (`None` is null).
    pub fn typed(topic: impl Into<String>, key: Option<K>, value: Option<V>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            key,
            value,
            ..ProducerRecord::default()
        }
    }

    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where an acknowledged record was written. `offset` is -1 with acks=0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Create time, or the broker's log-append time when the topic uses it.
    pub timestamp: i64,
}
