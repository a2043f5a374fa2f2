//! WriteTxnMarkers (API key 27, v1): a transaction coordinator on another broker ends a
//! transaction on the partitions this broker leads, as Kafka's coordinators do; and
//! [`send`], the same request from this broker's coordinator to another leader. Each
//! marker is written like a local one (`Broker::write_local_txn_marker`) and answered once
//! every in-sync replica has it, so a coordinator that completes the transaction after the
//! answers cannot lose a marker with the partition's leader.

use std::time::Duration;

use gregor_metadata::image::BrokerImage;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};

use super::wire::{code, s, NONE};
use crate::blocking::block_in_place_or_run;
use crate::broker::Broker;
use crate::coordinator_services::TxnMarker;
use crate::partition::{AppendError, ReplicationWait};

/// The version this broker sends and serves (Kafka 4 dropped v0).
const VERSION: i16 = 1;
/// How long a marker waits for the partition's in-sync replicas.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sent marker request may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn write_txn_markers(
    broker: &Broker,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let deadline = tokio::time::Instant::now() + REPLICATION_TIMEOUT;
    let mut results = Vec::with_capacity(request.markers.len());
    for m in request.markers {
        let marker = TxnMarker {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for index in t.partition_indexes {
                let error = write_one(broker, t.name.0.as_str(), index, marker, deadline).await;
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(error),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// Writes one marker here and waits for its replication; the partition's error code.
async fn write_one(
    broker: &Broker,
    topic: &str,
    index: i32,
    marker: TxnMarker,
    deadline: tokio::time::Instant,
) -> i16 {
    let partition = match broker.led_partition(topic, index) {
        Ok(p) => p,
        Err(e) => return code(e),
    };
    let now = broker.clock.now_ms();
    let written =
        block_in_place_or_run(|| broker.write_local_txn_marker(topic, index, marker, now));
    let offset = match written {
        Ok(Some(offset)) => offset,
        Ok(None) => return code(ResponseError::UnknownTopicOrPartition),
        Err(AppendError::NotLeader) => return code(ResponseError::NotLeaderOrFollower),
        Err(AppendError::Producer(c, message)) => {
            tracing::info!(topic, partition = index, code = c, %message, "transaction marker refused");
            return c;
        }
        Err(e) => {
            tracing::error!(topic, partition = index, error = %e, "cannot write a transaction marker");
            return code(ResponseError::KafkaStorageError);
        }
    };
    match partition.wait_replicated(offset + 1, deadline).await {
        Ok(()) => NONE,
        Err(ReplicationWait::TimedOut) => code(ResponseError::RequestTimedOut),
        Err(ReplicationWait::NotLeader) => code(ResponseError::NotLeaderOrFollower),
    }
}

/// Why a sent marker was not written.
#[derive(Debug)]
pub enum NotWritten {
    /// Worth sending again (to the partition's leader as it is then): no answer, a leader
    /// that moved, a replication timeout.
    Retriable(String),
    /// Refused for good: the producer has a newer epoch there, or a newer coordinator wrote
    /// its last marker (TRANSACTION_COORDINATOR_FENCED): this coordinator must stop.
    Refused(String),
}

impl std::fmt::Display for NotWritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotWritten::Retriable(why) | NotWritten::Refused(why) => f.write_str(why),
        }
    }
}

/// Sends `marker` for `topic`-`index` to its leader `leader` and returns once it is written
/// there (and replicated), or why not.
pub fn send(
    broker: &Broker,
    leader: &BrokerImage,
    topic: &str,
    index: i32,
    marker: TxnMarker,
) -> Result<(), NotWritten> {
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(vec![WritableTxnMarkerTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partition_indexes(vec![index])])]);
    let response: WriteTxnMarkersResponse = broker
        .inter_broker
        .call(
            (leader.host.as_str(), leader.port),
            ApiKey::WriteTxnMarkers,
            VERSION,
            &request,
            SEND_TIMEOUT,
        )
        .map_err(|e| NotWritten::Retriable(format!("broker {}: {e}", leader.node_id)))?;
    let error = response
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == index)
        .map(|p| p.error_code)
        .ok_or_else(|| {
            NotWritten::Retriable(format!(
                "broker {} did not answer for {topic}-{index}",
                leader.node_id
            ))
        })?;
    let why = || {
        format!(
            "broker {} answered {:?} for {topic}-{index}",
            leader.node_id,
            ResponseError::try_from_code(error)
        )
    };
    match ResponseError::try_from_code(error) {
        None => Ok(()),
        Some(ResponseError::InvalidProducerEpoch | ResponseError::TransactionCoordinatorFenced) => {
            Err(NotWritten::Refused(why()))
        }
        Some(_) => Err(NotWritten::Retriable(why())),
    }
}
