//! Gregor's cluster metadata, kept as a log.
//!
//! Every change (broker registered, fenced or unfenced, topic created, partitions added or
//! changed, config altered, topic removed) is a versioned [`MetadataRecord`]; records are
//! appended in [`MetadataBatch`]es, each at its offset and epoch, to the metadata log, which
//! the Raft [`quorum`] replicates, and applied to an immutable [`image::MetadataImage`],
//! which also says what each batch changed ([`MetadataDelta`]). The active
//! [`controller::Controller`] validates requests, keeps broker sessions ([`membership`]),
//! places replicas ([`placement`]) and turns it all into batches.

pub mod balance;
pub mod config;
pub mod controller;
pub mod controller_op;
pub mod election;
mod frame;
pub mod image;
pub mod log;
pub mod membership;
pub mod placement;
pub mod quorum;
pub mod reassignment;
pub mod record;
#[cfg(test)]
mod test_images;

pub use controller::{Controller, ControllerError};
pub use controller_op::{ControllerOp, ControllerReply};
pub use image::{MetadataDelta, MetadataImage, PartitionImage, TopicImage};
pub use record::{ConfigResource, MetadataBatch, MetadataRecord};
