//! Gregor's cluster metadata, kept as a log.
//!
//! Every change (broker registered, topic created, partitions added or changed, config
//! altered, topic removed) is a versioned [`MetadataRecord`]; records are appended in
//! [`MetadataBatch`]es, each at its offset and epoch, to the metadata log
//! ([`log::MetadataLog`]) and applied to an immutable [`image::MetadataImage`], which also
//! says what each batch changed ([`MetadataDelta`]). On start the log is replayed to rebuild
//! the image. The single-node [`controller::Controller`] validates requests and turns them
//! into batches; a replicated quorum can later carry the very same batches.

pub mod config;
pub mod controller;
pub mod controller_op;
mod frame;
pub mod image;
pub mod log;
pub mod quorum;
pub mod record;

pub use controller::{Controller, ControllerError};
pub use controller_op::{ControllerOp, ControllerReply};
pub use image::{MetadataDelta, MetadataImage, PartitionImage, TopicImage};
pub use record::{ConfigResource, MetadataBatch, MetadataRecord};
