//! Producer interceptors: application hooks that see (and may change) every record before
//! it is serialized, and every record's outcome, success or failure.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::record::{ProducerRecord, RecordMetadata};

/// Hooks called by the producer for every record, in the order interceptors were added.
pub trait ProducerInterceptor<K = Bytes, V = Bytes>: Send + Sync {
    /// Called first in `send`, before serialization and partitioning; the returned record
    /// is the one sent.
    fn on_send(&self, record: ProducerRecord<K, V>) -> ProducerRecord<K, V> {
        record
    }

    /// Called once per record with its outcome: the acknowledgement, or the error that made
    /// `send` fail or the record fail later. Runs on the producer's task: keep it short.
    fn on_acknowledgement(&self, _result: &Result<RecordMetadata>) {}
}

/// The outcome callback handed to the accumulator with each record (type-erased, since the
/// accumulator only sees bytes).
pub(crate) type AckHook = Arc<dyn Fn(&Result<RecordMetadata>) + Send + Sync>;

/// A producer's interceptor chain.
pub(crate) struct Interceptors<K, V> {
    chain: Arc<Vec<Arc<dyn ProducerInterceptor<K, V>>>>,
}

impl<K, V> Interceptors<K, V> {
    pub fn on_send(&self, record: ProducerRecord<K, V>) -> ProducerRecord<K, V> {
        self.chain.iter().fold(record, |r, i| i.on_send(r))
    }
}

impl<K: 'static, V: 'static> Interceptors<K, V> {
    pub fn new(chain: Vec<Arc<dyn ProducerInterceptor<K, V>>>) -> Interceptors<K, V> {
        Interceptors {
            chain: Arc::new(chain),
        }
    }

    /// The acknowledgement callback for records, or `None` without interceptors.
    pub fn ack_hook(&self) -> Option<AckHook> {
        if self.chain.is_empty() {
            return None;
        }
        let chain = self.chain.clone();
        Some(Arc::new(move |result| {
            for i in chain.iter() {
                i.on_acknowledgement(result);
            }
        }))
    }
}

/// Resolves one accepted record: tells the interceptors, then the record's future. A reply
/// dropped unresolved (the producer went away) reports [`Error::Closed`].
pub(crate) struct Reply {
    tx: Option<oneshot::Sender<Result<RecordMetadata>>>,
    on_ack: Option<AckHook>,
}

impl Reply {
    pub fn new(tx: oneshot::Sender<Result<RecordMetadata>>, on_ack: Option<AckHook>) -> Reply {
        Reply {
            tx: Some(tx),
            on_ack,
        }
    }

    pub fn send(mut self, result: Result<RecordMetadata>) {
        self.resolve(result);
    }

    fn resolve(&mut self, result: Result<RecordMetadata>) {
        let Some(tx) = self.tx.take() else { return };
        if let Some(hook) = &self.on_ack {
            hook(&result);
        }
        let _ = tx.send(result);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.resolve(Err(Error::Closed));
    }
}
