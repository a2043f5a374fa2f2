//! Gregor's cluster metadata, kept as a log.
//!
//! Every change (broker registered, topic created, partitions added, config altered, topic
//! removed) is a [`MetadataRecord`] appended to the metadata log ([`log::MetadataLog`]) and
//! applied to an immutable [`image::MetadataImage`]. On start the log is replayed to rebuild
//! the image. The single-node [`controller::Controller`] validates requests and turns them
//! into records; a replicated quorum can later carry the very same records.

pub mod config;
pub mod controller;
pub mod image;
pub mod log;
pub mod record;

pub use controller::{Controller, ControllerError};
pub use image::{MetadataImage, PartitionImage, TopicImage};
pub use record::{ConfigResource, MetadataRecord};
