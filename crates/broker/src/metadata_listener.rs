//! The broker's side of the metadata log: applies committed batches to the broker's own
//! image, brings the hosted partitions in line with what each batch changed, and only then
//! publishes the image and the effective config to request handlers.
//!
//! Writing metadata (the controller validates and writes through the quorum) and applying
//! it (this listener) are two steps, as in KRaft: a thread of its own takes the quorum's
//! committed batches in log order ([`MetadataListener::spawn`]) and applies each; a caller
//! that needs its own change visible waits for its offset ([`MetadataListener::wait_applied`]).
//!
//! Architecture invariant: a batch's partitions are hosted (or their failure is reported)
//! before the image that shows them is published, so a topic visible in Metadata is
//! writable and readable here unless its log could not be opened, and then the change's
//! caller got an error.

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use gregor_metadata::quorum::QuorumEvent;
use gregor_metadata::{ConfigResource, MetadataBatch, MetadataDelta, MetadataImage};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::BrokerConfig;
use crate::replica_manager::{ReplicaManager, Scope};

/// Why a committed batch did not (yet) take effect on this broker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyFailure {
    /// The batch does not fit this broker's image: the broker's copy of the metadata has
    /// diverged from the log (a bug). Nothing of the batch is published.
    #[error("the metadata change does not apply to this broker's image: {0}")]
    Image(String),
    /// The image was published but a partition could not be opened; it stays offline.
    #[error("a partition of the change could not be hosted: {0}")]
    Storage(String),
    /// The change is committed but this broker has not applied it in time.
    #[error("the change is committed but not yet applied on this broker: {0}")]
    NotYet(String),
}

/// How far the listener got.
struct Applied {
    /// Offset of the last record applied; -1 before the first.
    offset: i64,
    /// The last failure and the offset of the batch's last record.
    failure: Option<(i64, ApplyFailure)>,
}

/// The published image and effective config, and the steps that change them.
pub struct MetadataListener {
    node_id: i32,
    /// Configuration from file and overrides only.
    static_config: BrokerConfig,
    image: RwLock<Arc<MetadataImage>>,
    /// The static configuration with this broker's dynamic configs on top.
    config: RwLock<Arc<BrokerConfig>>,
    applied: Mutex<Applied>,
    /// Notified whenever `applied` moves.
    applied_moved: Condvar,
    /// The offset of the published image, for tasks that follow metadata changes.
    published: tokio::sync::watch::Sender<i64>,
}

impl MetadataListener {
    pub fn new(node_id: i32, static_config: BrokerConfig) -> MetadataListener {
        MetadataListener {
            node_id,
            config: RwLock::new(Arc::new(static_config.clone())),
            static_config,
            image: RwLock::new(Arc::new(MetadataImage::default())),
            applied: Mutex::new(Applied {
                offset: -1,
                failure: None,
            }),
            applied_moved: Condvar::new(),
            published: tokio::sync::watch::Sender::new(-1),
        }
    }

    /// Starts the thread that applies the quorum's events, in order, until the quorum stops.
    pub fn spawn(
        listener: Arc<MetadataListener>,
        replicas: Arc<ReplicaManager>,
        mut events: UnboundedReceiver<QuorumEvent>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("metadata-listener".into())
            .spawn(move || {
                let mut next = None;
                while let Some(event) = next.take().or_else(|| events.blocking_recv()) {
                    let (offset, result) = match event {
                        QuorumEvent::Image(image) => {
                            let offset = image.offset;
                            (offset, listener.load(image, &replicas))
                        }
                        QuorumEvent::Batch(batch) => {
                            // The batches already waiting are applied as one: partitions go
                            // straight to their latest state, so a broker catching up (at
                            // start-up, or after a pause) does not act out every leadership
                            // of the log's history, as Kafka's loader publishes a caught-up
                            // image.
                            let mut batches = vec![batch];
                            while let Ok(event) = events.try_recv() {
                                match event {
                                    QuorumEvent::Batch(b) => batches.push(b),
                                    other => {
                                        next = Some(other);
                                        break;
                                    }
                                }
                            }
                            listener.apply(&batches, &replicas)
                        }
                    };
                    if let Err(e) = &result {
                        tracing::error!(offset, error = %e, "a committed metadata change was not fully applied on this broker");
                    }
                    listener.note_applied(offset, result.err());
                }
            })
    }

    fn note_applied(&self, offset: i64, failure: Option<ApplyFailure>) {
        let mut applied = self.applied.lock().expect("applied lock poisoned");
        applied.offset = applied.offset.max(offset);
        if let Some(f) = failure {
            applied.failure = Some((offset, f));
        }
        self.applied_moved.notify_all();
    }

    /// Waits until everything up to `offset` is applied here; fails with the failure of a
    /// batch after `since` (a caller's own change), if one did not take effect.
    pub fn wait_applied(
        &self,
        since: i64,
        offset: i64,
        timeout: Duration,
    ) -> Result<(), ApplyFailure> {
        let deadline = Instant::now() + timeout;
        let mut applied = self.applied.lock().expect("applied lock poisoned");
        while applied.offset < offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApplyFailure::NotYet(format!(
                    "offset {offset} committed, {} applied after {timeout:?}",
                    applied.offset
                )));
            }
            applied = self
                .applied_moved
                .wait_timeout(applied, left)
                .expect("applied lock poisoned")
                .0;
        }
        match &applied.failure {
            Some((at, failure)) if *at > since && *at <= offset => Err(failure.clone()),
            _ => Ok(()),
        }
    }

    /// The published image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().expect("image lock poisoned").clone()
    }

    /// The effective broker configuration.
    pub fn config(&self) -> Arc<BrokerConfig> {
        self.config.read().expect("config lock poisoned").clone()
    }

    /// The configuration from file and overrides only.
    pub fn static_config(&self) -> &BrokerConfig {
        &self.static_config
    }

    /// Takes a whole image (start-up, or a snapshot): every partition is synced.
    pub fn load(
        &self,
        image: Arc<MetadataImage>,
        replicas: &ReplicaManager,
    ) -> Result<(), ApplyFailure> {
        let config = self.effective_config(&image);
        let synced = replicas.apply_delta(&image, Scope::Everything, &config);
        self.publish(image, config);
        synced.map_err(|e| ApplyFailure::Storage(e.to_string()))
    }

    /// Applies consecutive committed batches (at least one): the partitions they changed
    /// first, then the image after all of them. Returns the offset of the last batch's last
    /// record. A batch that does not fit the image stops the application there (the later
    /// ones could not follow it either); what came before it is applied.
    pub fn apply(
        &self,
        batches: &[MetadataBatch],
        replicas: &ReplicaManager,
    ) -> (i64, Result<(), ApplyFailure>) {
        let offset = batches.last().expect("at least one batch").last_offset();
        let current = self.image();
        let mut next: Option<MetadataImage> = None;
        let mut delta = MetadataDelta::default();
        let mut failure = None;
        for batch in batches {
            match next.as_ref().unwrap_or(&current).apply_batch(batch) {
                Ok((image, changes)) => {
                    delta.merge(changes);
                    next = Some(image);
                }
                Err(e) => {
                    failure = Some(ApplyFailure::Image(e.to_string()));
                    break;
                }
            }
        }
        let Some(next) = next else {
            return (offset, Err(failure.expect("a batch was applied or failed")));
        };
        let synced = self.apply_image(Arc::new(next), &delta, replicas);
        (offset, failure.map_or(synced, Err))
    }

    /// Hosts what `delta` changed in `next`, then publishes `next`.
    fn apply_image(
        &self,
        next: Arc<MetadataImage>,
        delta: &MetadataDelta,
        replicas: &ReplicaManager,
    ) -> Result<(), ApplyFailure> {
        let own_config_changed = delta
            .changed_configs
            .contains(&ConfigResource::Broker(self.node_id));
        let (config, scope) = if own_config_changed {
            (self.effective_config(&next), Scope::Everything)
        } else {
            (self.config(), Scope::Delta(delta))
        };
        let synced = replicas.apply_delta(&next, scope, &config);
        self.publish(next, config);
        synced.map_err(|e| ApplyFailure::Storage(e.to_string()))
    }

    fn publish(&self, image: Arc<MetadataImage>, config: Arc<BrokerConfig>) {
        *self.config.write().expect("config lock poisoned") = config;
        let mut published = self.image.write().expect("image lock poisoned");
        assert!(
            image.offset >= published.offset,
            "the published metadata went back from offset {} to {}",
            published.offset,
            image.offset
        );
        let offset = image.offset;
        *published = image;
        drop(published);
        self.published.send_replace(offset);
    }

    /// A receiver that sees every later publication (its value: the image's offset).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.published.subscribe()
    }

    /// Offset of the last record applied here (-1 before the first).
    pub fn applied_offset(&self) -> i64 {
        self.applied.lock().expect("applied lock poisoned").offset
    }

    /// The static config with the image's dynamic configs of this broker applied.
    fn effective_config(&self, image: &MetadataImage) -> Arc<BrokerConfig> {
        let mut config = self.static_config.clone();
        for (k, v) in image.configs_of(&ConfigResource::Broker(self.node_id)) {
            if let Err(e) = config.set(&k, &v) {
                tracing::warn!(key = %k, error = %e, "ignoring stored dynamic broker config");
            }
        }
        Arc::new(config)
    }
}
