//! DeleteRecords: advance partitions' log start offsets at their leaders; ListOffsets
//! earliest and fetches then see the new start, and followers delete below it when their
//! next fetch brings it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::wire::storage_error;
use super::wire::{code, NONE};
use crate::broker::Broker;

pub fn handle(broker: &Broker, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let policy = broker.topic_config_value(&name, "cleanup.policy");
            let compact_only = !policy.split(',').any(|p| p.trim() == "delete");
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    // The leader moves the log start; followers take it from its fetches.
                    let partition = match broker.led_partition(&name, p.partition_index) {
                        Ok(partition) => partition,
                        Err(e) => return result.with_error_code(code(e)),
                    };
                    if compact_only {
                        // Kafka refuses to delete records of a topic that only compacts.
                        return result.with_error_code(code(ResponseError::PolicyViolation));
                    }
                    match partition.delete_records_before(p.offset) {
                        Ok(low) => result.with_error_code(NONE).with_low_watermark(low),
                        Err(e) => result.with_error_code(storage_error(&e).0),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
