//! Building metadata images in unit tests: apply records as the next batch, register a live
//! broker.

use uuid::Uuid;

use crate::image::MetadataImage;
use crate::record::{MetadataBatch, MetadataRecord};

/// `image` after `records`, applied as its next batch.
pub fn apply(image: &MetadataImage, records: Vec<MetadataRecord>) -> MetadataImage {
    let batch = MetadataBatch {
        base_offset: image.next_offset(),
        epoch: 1,
        records,
    };
    image.apply_batch(&batch).unwrap().0
}

/// The registration of live broker `b` on 127.0.0.1:9000+b.
pub fn register(b: i32) -> MetadataRecord {
    MetadataRecord::RegisterBroker {
        node_id: b,
        host: "127.0.0.1".into(),
        port: 9000 + b as u16,
        rack: None,
        incarnation_id: Uuid::new_v4(),
        broker_epoch: None,
        fenced: false,
    }
}
