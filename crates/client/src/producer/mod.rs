//! The producer: `send` runs interceptors and serializers, then appends records to
//! per-partition batches; a background sender task turns ready batches into Produce requests.
//! With `transactional.id` the records belong to transactions (`transaction`, `txn_state`,
//! `txn_requests`).

pub(crate) mod shared;
mod transaction;
pub(crate) mod txn_requests;
pub(crate) mod txn_state;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use crate::accumulator::{estimate_record_size, RecordData, State, BATCH_OVERHEAD};
use crate::config::{ClientConfig, PartitionerKind, ProducerConfig};
use crate::error::{Error, Result};
use crate::interceptor::{AckHook, Interceptors, ProducerInterceptor, Reply};
use crate::metadata::Cluster;
use crate::partitioner::{DefaultPartitioner, Partitioner, RoundRobinPartitioner};
use crate::serialization::{BytesSerializer, Serializer};
use txn_state::TransactionManager;

pub use crate::accumulator::ProducerIdentity;
pub use crate::record::{ProducerRecord, RecordMetadata};
pub(crate) use shared::{Inner, MetricsInner};

/// Resolves once the record is acknowledged (or has definitely failed).
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// A snapshot of producer metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProducerMetrics {
    /// Records acknowledged (or written, with acks=0).
    pub records_sent: u64,
    /// Encoded batch bytes acknowledged.
    pub bytes_sent: u64,
    /// Batches acknowledged.
    pub batches_sent: u64,
    /// `bytes_sent / batches_sent`.
    pub batch_size_avg: f64,
    /// Produce requests completed.
    pub requests: u64,
    pub request_latency_avg_ms: f64,
    pub request_latency_max_ms: f64,
    /// Records that failed for good.
    pub record_errors: u64,
    /// Retried batches.
    pub retries: u64,
    /// Buffer memory held by unacknowledged records.
    pub buffer_bytes_in_use: u64,
}

/// An asynchronous Kafka producer of `K` keys and `V` values (bytes by default).
///
/// `send` returns once the record is buffered; await the [`DeliveryFuture`] for the
/// acknowledgement. Must be created inside a Tokio runtime.
pub struct Producer<K = Bytes, V = Bytes> {
    inner: Arc<Inner>,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
    key_serializer: Box<dyn Serializer<K>>,
    value_serializer: Box<dyn Serializer<V>>,
    interceptors: Interceptors<K, V>,
    ack_hook: Option<AckHook>,
}

impl<K, V> std::fmt::Debug for Producer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("client_id", &self.inner.config.client_id)
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Builds a [`Producer`] with serializers, a partitioner and interceptors.
pub struct ProducerBuilder<K = Bytes, V = Bytes> {
    config: ClientConfig,
    key_serializer: Box<dyn Serializer<K>>,
    value_serializer: Box<dyn Serializer<V>>,
    partitioner: Option<Arc<dyn Partitioner>>,
    interceptors: Vec<Arc<dyn ProducerInterceptor<K, V>>>,
}

impl<K: 'static, V: 'static> ProducerBuilder<K, V> {
    /// A producer of `K` keys and `V` values using these serializers.
    pub fn new(
        config: &ClientConfig,
        key_serializer: impl Serializer<K> + 'static,
        value_serializer: impl Serializer<V> + 'static,
    ) -> ProducerBuilder<K, V> {
        ProducerBuilder {
            config: config.clone(),
            key_serializer: Box::new(key_serializer),
            value_serializer: Box::new(value_serializer),
            partitioner: None,
            interceptors: Vec::new(),
        }
    }

    /// Replaces the partitioner named by `partitioner.class`.
    pub fn partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = Some(partitioner);
        self
    }

    /// Adds an interceptor; interceptors run in the order they were added.
    pub fn interceptor(mut self, interceptor: Arc<dyn ProducerInterceptor<K, V>>) -> Self {
        self.interceptors.push(interceptor);
        self
    }

    /// Validates the configuration and starts the producer's sender task.
    pub fn build(self) -> Result<Producer<K, V>> {
        let config = ProducerConfig::from_config(&self.config)?;
        let partitioner = self
            .partitioner
            .unwrap_or_else(|| match config.partitioner {
                PartitionerKind::Default => Arc::new(DefaultPartitioner::new()),
                PartitionerKind::RoundRobin => Arc::new(RoundRobinPartitioner::new()),
            });
        let cluster = Cluster::new(
            config.bootstrap_servers.clone(),
            &config.client_id,
            config.request_timeout,
        );
        let mut state = State::new(config.enable_idempotence, config.buffer_memory);
        state.txn = config
            .transactional_id
            .as_ref()
            .map(|_| TransactionManager::default());
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            closed: AtomicBool::new(false),
            txn_coordinator: tokio::sync::Mutex::new(None),
            config,
            cluster,
            partitioner,
            wake_sender: Notify::new(),
            completed: Notify::new(),
            metrics: Mutex::new(MetricsInner::default()),
        });
        let sender = tokio::spawn(crate::sender::run(inner.clone()));
        let interceptors = Interceptors::new(self.interceptors);
        Ok(Producer {
            inner,
            sender: Mutex::new(Some(sender)),
            key_serializer: self.key_serializer,
            value_serializer: self.value_serializer,
            ack_hook: interceptors.ack_hook(),
            interceptors,
        })
    }
}

impl Producer {
    /// A bytes producer using the partitioner named by `partitioner.class` (default:
    /// murmur2/sticky).
    pub fn new(config: &ClientConfig) -> Result<Producer> {
        Producer::builder(config).build()
    }

    /// A bytes producer with a custom partitioner.
    pub fn with_partitioner(
        config: &ClientConfig,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<Producer> {
        Producer::builder(config).partitioner(partitioner).build()
    }

    /// A builder for a bytes producer (use [`ProducerBuilder::new`] for other key and value
    /// types).
    pub fn builder(config: &ClientConfig) -> ProducerBuilder {
        ProducerBuilder::new(config, BytesSerializer, BytesSerializer)
    }
}

impl<K, V> Producer<K, V> {
    /// The validated configuration.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The producer id and epoch in use (idempotence only; `None` before the first send, or
    /// for a transactional producer before `init_transactions`).
    pub fn identity(&self) -> Option<ProducerIdentity> {
        self.inner.state.lock().unwrap().idempotence.identity
    }

    /// Runs the interceptors, serializes, then buffers `record`; returns a future for its
    /// acknowledgement.
    ///
    /// Waits (up to `max.block.ms`) only for the topic's metadata and for buffer space;
    /// then fails with [`Error::MaxBlockTimeout`]. The interceptors hear of every failure.
    pub async fn send(&self, record: ProducerRecord<K, V>) -> Result<DeliveryFuture> {
        let record = self.interceptors.on_send(record);
        let result = match self.serialize(record) {
            Ok(record) => self.append(record).await,
            Err(e) => Err(e),
        };
        if let (Err(e), Some(hook)) = (&result, &self.ack_hook) {
            hook(&Err(e.clone()));
        }
        result
    }

    fn serialize(&self, record: ProducerRecord<K, V>) -> Result<ProducerRecord> {
        let topic = &record.topic;
        let key = match &record.key {
            Some(k) => Some(self.key_serializer.serialize(topic, k)?),
            None => None,
        };
        let value = match &record.value {
            Some(v) => Some(self.value_serializer.serialize(topic, v)?),
            None => None,
        };
        Ok(ProducerRecord {
            topic: record.topic,
            partition: record.partition,
            key,
            value,
            headers: record.headers,
            timestamp: record.timestamp,
        })
    }

    /// Partitions a serialized record and appends it to its batch.
    ///
    /// The common case (metadata known, buffer memory free) reads the clock once and takes
    /// the state lock once.
    async fn append(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let config = &self.inner.config;
        let max_block_ms = config.max_block.as_millis() as u64;
        // `max.block.ms` runs from the first wait, if any.
        let mut deadline: Option<Instant> = None;
        if config.transactional_id.is_some() {
            let st = self.inner.state.lock().unwrap();
            if st.closed {
                return Err(Error::Closed);
            }
            if let Some(txn) = &st.txn {
                txn.check_send()?;
            }
        } else if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let ProducerRecord {
            topic,
            partition,
            key,
            value,
            headers,
            timestamp,
        } = record;
        if topic.is_empty() {
            return Err(Error::InvalidRecord("empty topic name".into()));
        }
        let size = estimate_record_size(key.as_ref(), value.as_ref(), &headers);
        if size + BATCH_OVERHEAD > config.max_request_size {
            return Err(Error::RecordTooLarge {
                size,
                key: "max.request.size",
                limit: config.max_request_size,
            });
        }
        if size > config.buffer_memory {
            return Err(Error::RecordTooLarge {
                size,
                key: "buffer.memory",
                limit: config.buffer_memory,
            });
        }
        let known = self.inner.cluster.with_cache(|c| c.partition_count(&topic));
        let partitions = match known {
            Some(n) => n,
            None => {
                let at = *deadline.get_or_insert_with(|| Instant::now() + config.max_block);
                self.inner
                    .cluster
                    .wait_for_partitions(&topic, at, config.retry_backoff, max_block_ms)
                    .await?
            }
        };
        let partition = match partition {
            Some(p) if p < 0 || p >= partitions => {
                return Err(Error::InvalidRecord(format!(
                    "partition {p} of topic {topic} does not exist ({partitions} partitions)"
                )))
            }
            Some(p) => p,
            None => self.inner.partitioner.partition(
                &topic,
                key.as_deref(),
                value.as_deref(),
                partitions,
            ),
        };
        let data = RecordData {
            key: key.as_deref(),
            value: value.as_deref(),
            headers: &headers,
            timestamp: timestamp.unwrap_or_else(now_ms),
        };
        let (reply, rx) = oneshot::channel();
        let mut parts = Some((topic, reply));
        // Reserve buffer memory (waiting for completions to free some if need be). The
        // reservation becomes the record's share of its batch (released with the batch).
        let limit = config.buffer_memory;
        let fast = {
            let mut st = self.inner.state.lock().unwrap();
            if !st.closed && st.buffer_used + size <= limit {
                st.buffer_used += size;
                let (topic, reply) = parts.take().expect("unused");
                Some(self.append_reserved(&mut st, topic, partition, &data, size, reply))
            } else {
                None
            }
        };
        let wake = match fast {
            Some(result) => result?,
            None => {
                let at = *deadline.get_or_insert_with(|| Instant::now() + config.max_block);
                let mut reserved = false;
                let got = self
                    .inner
                    .wait_for(at, |st| {
                        if st.closed {
                            return true;
                        }
                        if st.buffer_used + size <= limit {
                            reserved = true;
                            st.buffer_used += size;
                            true
                        } else {
                            false
                        }
                    })
                    .await;
                if !got {
                    return Err(Error::MaxBlockTimeout {
                        what: format!(
                            "{size} bytes of buffer memory (buffer.memory = {limit}, {} in use)",
                            self.inner.state.lock().unwrap().buffer_used
                        ),
                        max_block_ms,
                    });
                }
                let mut st = self.inner.state.lock().unwrap();
                if !reserved {
                    debug_assert!(st.closed, "memory is reserved unless the producer closed");
                    return Err(Error::Closed);
                }
                let (topic, reply) = parts.take().expect("not used by the fast path");
                self.append_reserved(&mut st, topic, partition, &data, size, reply)?
            }
        };
        if wake {
            self.inner.wake_sender.notify_one();
        }
        Ok(DeliveryFuture { rx })
    }

    /// Appends a record whose `size` bytes of buffer memory are reserved (given back on
    /// failure). Returns whether the sender needs waking.
    fn append_reserved(
        &self,
        st: &mut State,
        mut topic: String,
        partition: i32,
        data: &RecordData<'_>,
        size: usize,
        reply: oneshot::Sender<Result<RecordMetadata>>,
    ) -> Result<bool> {
        if st.closed {
            st.buffer_used -= size;
            return Err(Error::Closed);
        }
        let transactional = match st.txn.as_mut() {
            Some(txn) => {
                let tp = (topic, partition);
                if let Err(e) = txn.record_partition(&tp) {
                    st.buffer_used -= size;
                    return Err(e);
                }
                topic = tp.0;
                true
            }
            None => false,
        };
        // Built only once accepted: a dropped `Reply` reports an outcome of its own.
        let reply = Reply::new(reply, self.ack_hook.clone());
        let wake = st.append(
            topic,
            partition,
            data,
            reply,
            size,
            self.inner.config.batch_size,
        );
        // The sender looks at a partition when it gets a new batch or one fills up; a
        // transactional producer also has partitions to add to the transaction.
        Ok(wake || transactional)
    }

    /// Like [`Self::send`], but hands the acknowledgement (metadata or error) to `callback`
    /// instead of returning a future: `Ok(())` means the record was accepted and `callback`
    /// will be called exactly once, from a Tokio task; an `Err` means it was not accepted
    /// (the callback is then not called).
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord<K, V>,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<()> {
        let delivery = self.send(record).await?;
        tokio::spawn(async move { callback(delivery.await) });
        Ok(())
    }

    /// Sends `record` and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord<K, V>) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends everything buffered now and waits until every accepted record is resolved
    /// (acknowledged or failed). Fails with [`Error::Timeout`] if `timeout` passes first.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.state.lock().unwrap().flushing += 1;
        self.inner.wake_sender.notify_one();
        let done = self
            .inner
            .wait_for(Instant::now() + timeout, |st| st.unacked == 0)
            .await;
        let mut st = self.inner.state.lock().unwrap();
        st.flushing -= 1;
        if done {
            Ok(())
        } else {
            Err(Error::Timeout {
                op: "flush",
                pending: st.unacked,
            })
        }
    }

    /// Stops accepting records, sends everything accepted and stops the sender task.
    ///
    /// Fails with [`Error::Timeout`] (records stay pending and the sender keeps running, so a
    /// later `close` can finish) if `timeout` passes first. Nothing accepted is dropped
    /// silently: every record's future resolves.
    pub async fn close(&self, timeout: Duration) -> Result<()> {
        self.inner.state.lock().unwrap().closed = true;
        self.inner.closed.store(true, Ordering::Release);
        self.flush(timeout).await.map_err(|e| match e {
            Error::Timeout { pending, .. } => Error::Timeout {
                op: "close",
                pending,
            },
            other => other,
        })?;
        self.inner.state.lock().unwrap().shutdown = true;
        self.inner.wake_sender.notify_one();
        let handle = self.sender.lock().unwrap().take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        Ok(())
    }

    /// A snapshot of the producer metrics.
    pub fn metrics(&self) -> ProducerMetrics {
        // Read state and release it before locking metrics: the sender locks metrics while
        // holding state, so the reverse order could deadlock.
        let buffer = self.inner.state.lock().unwrap().buffer_used as u64;
        let m = self.inner.metrics.lock().unwrap();
        ProducerMetrics {
            records_sent: m.records_sent,
            bytes_sent: m.bytes_sent,
            batches_sent: m.batches_sent,
            batch_size_avg: if m.batches_sent == 0 {
                0.0
            } else {
                m.bytes_sent as f64 / m.batches_sent as f64
            },
            requests: m.requests,
            request_latency_avg_ms: if m.requests == 0 {
                0.0
            } else {
                m.latency_total.as_secs_f64() * 1000.0 / m.requests as f64
            },
            request_latency_max_ms: m.latency_max.as_secs_f64() * 1000.0,
            record_errors: m.record_errors,
            retries: m.retries,
            buffer_bytes_in_use: buffer,
        }
    }
}

impl<K, V> Drop for Producer<K, V> {
    /// Dropping without `close` stops accepting records; the sender task keeps delivering
    /// what was accepted (bounded by `delivery.timeout.ms`) and then exits.
    fn drop(&mut self) {
        let mut st = self.inner.state.lock().unwrap();
        st.closed = true;
        st.shutdown = true;
        drop(st);
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake_sender.notify_one();
    }
}
