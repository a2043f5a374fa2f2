//! The broker's side of the metadata log: applies committed batches to the broker's own
//! image, brings the hosted partitions in line with what each batch changed, and only then
//! publishes the image and the effective config to request handlers.
//!
//! Writing metadata (the controller validates and appends) and applying it (this listener)
//! are two steps, as in KRaft; with a replicated quorum the listener is fed the quorum's
//! committed batches instead of the local controller's.
//!
//! Architecture invariant: a batch's partitions are hosted (or their failure is reported)
//! before the image that shows them is published, so a topic visible in Metadata is
//! writable and readable here unless its log could not be opened, and then the change's
//! caller got an error.

use std::sync::{Arc, RwLock};

use gregor_metadata::image::ApplyError;
use gregor_metadata::{ConfigResource, MetadataBatch, MetadataImage};
use gregor_storage::error::StorageError;

use crate::config::BrokerConfig;
use crate::replica_manager::{ReplicaManager, Scope};

/// Why a committed batch did not fully take effect on this broker.
#[derive(Debug, thiserror::Error)]
pub enum ApplyFailure {
    /// The batch does not fit this broker's image: the broker's copy of the metadata has
    /// diverged from the log (a bug). Nothing of the batch is published.
    #[error("the metadata change does not apply to this broker's image: {0}")]
    Image(#[from] ApplyError),
    /// The image was published but a partition could not be opened; it stays offline.
    #[error("a partition of the change could not be hosted: {0}")]
    Storage(#[from] StorageError),
}

/// The published image and effective config, and the steps that change them.
pub struct MetadataListener {
    node_id: i32,
    /// Configuration from file and overrides only.
    static_config: BrokerConfig,
    image: RwLock<Arc<MetadataImage>>,
    /// The static configuration with this broker's dynamic configs on top.
    config: RwLock<Arc<BrokerConfig>>,
}

impl MetadataListener {
    pub fn new(node_id: i32, static_config: BrokerConfig) -> MetadataListener {
        MetadataListener {
            node_id,
            config: RwLock::new(Arc::new(static_config.clone())),
            static_config,
            image: RwLock::new(Arc::new(MetadataImage::default())),
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
        Ok(synced?)
    }

    /// Applies one committed batch: the partitions it changed first, then the image.
    pub fn apply(
        &self,
        batch: &MetadataBatch,
        replicas: &ReplicaManager,
    ) -> Result<(), ApplyFailure> {
        let current = self.image();
        let (next, delta) = current.apply_batch(batch)?;
        let next = Arc::new(next);
        let own_config_changed = delta
            .changed_configs
            .contains(&ConfigResource::Broker(self.node_id));
        let (config, scope) = if own_config_changed {
            (self.effective_config(&next), Scope::Everything)
        } else {
            (self.config(), Scope::Delta(&delta))
        };
        let synced = replicas.apply_delta(&next, scope, &config);
        self.publish(next, config);
        Ok(synced?)
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
        *published = image;
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
